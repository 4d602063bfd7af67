"""serve: the HTTP API and the live leaderboard page.

`app` is the FastAPI application (routes, models, change streams, metrics); `hosting` runs it,
standalone over a follower store (`viewstore serve`) or in a thread of the ingesting process
(`viewstore run --http`, `viewstore demo`); `static/` holds the page. Only the CLI imports serve.
"""
