"""The HTTP API: reads, as-of reads, change subscriptions, health and metrics, the leaderboard page.

    GET /views                              every view: columns and types, rows, applied LSN
    GET /views/{name}?col=v&order_by=&desc=&limit=&as_of=
                                            rows now (or as of an LSN, inclusive)
    GET /views/{name}/changes?since=&snapshot=&until=
                                            a long-lived stream (store.feed): NDJSON, or
                                            Server-Sent Events for Accept: text/event-stream
    GET /views/{name}/history               the retained range: first and last LSN, times
    GET /views/{name}/top?order_by=&desc=&limit=&as_of=|at=&points=
                                            the top N now, or as of an LSN or a commit time,
                                            with each row's values up to then (the chart)
    GET /healthz                            liveness (never needs the token)
    GET /metrics                            Prometheus text
    GET /                                   the live leaderboard page
    GET /openapi.json, /docs                the OpenAPI document FastAPI generates

The same app serves `viewstore run --http` and `viewstore demo` (`HttpAlongside`: a thread of
the ingesting process, a `LiveSource` over the pipeline's own store) and `viewstore serve` (a
`FollowerSource` of a store another process writes). A background task polls the source's
applied LSN every few milliseconds and wakes the subscribers when it moves.

Every error is JSON, `{"error": "...", "hint": "..."}`, with a 4xx status that says what kind:
400 bad input, 401 missing or wrong token, 404 unknown view, 410 history no longer there,
421 a Host header that is not a loopback name on a loopback server, 503 not ready yet.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException

from viewstore.errors import ConfigError, NotFound, NotReady, StoreError, ViewstoreError
from viewstore.ingest.lsn import Lsn
from viewstore.render import json_value
from viewstore.store import asofread
from viewstore.store.feed import Feed, ViewGone
from viewstore.store.sources import Source
from viewstore.store.viewcatalog import stored_views
from viewstore.store.viewread import find_view, query_rows, row_count

log = logging.getLogger("viewstore")

PAGE = Path(__file__).with_name("static") / "leaderboard.html"
_TYPE_NAMES = {
    16: "boolean", 17: "bytea", 18: "char", 19: "name", 20: "bigint", 21: "smallint",
    23: "integer", 25: "text", 26: "oid", 114: "json", 700: "real", 701: "double precision",
    1042: "character", 1043: "character varying", 1082: "date", 1114: "timestamp",
    1184: "timestamptz", 1700: "numeric", 2950: "uuid", 3802: "jsonb",
}  # fmt: skip
_RESERVED = {"order_by", "desc", "limit", "as_of"}
_DOC_PATHS = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}


# -- payloads ----------------------------------------------------------------------------------


class ErrorBody(BaseModel):
    error: str
    hint: str | None = None


class ColumnModel(BaseModel):
    name: str
    type: str = Field(description="Postgres type name")


class RankingModel(BaseModel):
    function: str = Field(description="row_number, rank or dense_rank")
    column: str | None = Field(description="the column holding it (None: ORDER BY ... LIMIT's)")
    top: int | None = Field(description="Top-K: the view holds the rows numbered up to this")
    partitioned: bool = Field(description="numbered within each PARTITION BY group")


class ViewModel(BaseModel):
    name: str
    columns: list[ColumnModel]
    key: list[str] = Field(description="columns that identify a row (empty: hidden key)")
    rows: int
    applied_lsn: str
    history_from: str | None = Field(description="first LSN as-of reads and since= accept")
    ranking: RankingModel | None = Field(
        default=None, description="a window view: what it ranks (the page shows it as the rank)"
    )


class RowsModel(BaseModel):
    view: str
    lsn: str = Field(description="the rows are the view as of this LSN")
    columns: list[str]
    rows: list[dict[str, Any]] = Field(description="numeric values are exact decimal text")
    truncated: bool = Field(description="more rows matched than `limit`")


class PointModel(BaseModel):
    lsn: str
    commit_time: str | None = Field(description="null: the rows the view was built with")


class MarkModel(BaseModel):
    lsn: str
    change: PointModel | None = Field(
        description="the view's last change at or before `lsn` (null: none since first_lsn)"
    )


class HistoryRangeModel(BaseModel):
    view: str
    first_lsn: str = Field(description="the first LSN `as_of` accepts")
    first_reason: str = Field(description="'build' (the view's) or 'retention' (its cutoff)")
    first_change: PointModel | None = Field(
        description="the view's first change after first_lsn: the earliest time `at` accepts"
    )
    last_lsn: str = Field(description="the applied LSN")
    last_commit_time: str | None = Field(description="of the last transaction applied")
    marks: list[MarkModel] = Field(description="evenly spaced LSNs from first to last")


class SeriesPoint(BaseModel):
    lsn: str
    commit_time: str | None
    value: Any = Field(description="the ordered column after the change; null: row deleted")


class TopModel(BaseModel):
    view: str
    lsn: str = Field(description="the rows are the view as of this LSN")
    live: bool = Field(description="`lsn` is the applied LSN: the view now")
    applied_lsn: str
    change: PointModel | None = Field(
        description="the view's last change at or before `lsn` (null: its history's start)"
    )
    previous_lsn: str | None = Field(description="the view's change before `change`")
    next_lsn: str | None = Field(description="the view's first change after `lsn`")
    order_by: str
    desc: bool
    columns: list[str]
    rows: list[dict[str, Any]] = Field(description="numeric values are exact decimal text")
    row_count: int = Field(description="rows the view had as of `lsn`")
    series: list[list[SeriesPoint]] | None = Field(
        description="with points > 0: each row's changes up to `lsn`, in the order of `rows`"
    )


class HealthModel(BaseModel):
    status: str
    applied_lsn: str
    ingest: str | None = Field(description="'running' or the pipeline's error (run --http)")


class ChangeLine(BaseModel):
    """One line of /views/{name}/changes (documentation: the stream is NDJSON or SSE)."""

    lsn: str | None = None
    commit_time: str | None = None
    diff: int | None = Field(None, description="+1: the row is in the view; -1: it left")
    row: dict[str, Any] | None = None
    snapshot: bool | None = Field(None, description="part of the initial snapshot")
    progress: str | None = Field(None, description="every change up to this LSN was sent")
    end: str | None = Field(None, description="`until` reached; the stream ends")
    error: str | None = Field(None, description="the stream ends for this reason")


# -- server state ------------------------------------------------------------------------------


@dataclass
class IngestMetrics:
    """What the ingesting process reports (run --http); None fields are unknown."""

    received_lsn: Callable[[], Lsn | None] = lambda: None
    apply_latency: Callable[[], tuple[int, float, float]] = lambda: (0, 0.0, 0.0)
    failure: Callable[[], str | None] = lambda: None


@dataclass
class ServerConfig:
    source: Source
    token: str | None = None
    poll_interval: float = 0.005  # seconds between looks at the applied LSN
    slow_after: float = 30.0  # a subscriber that takes longer to accept one step is cut off
    heartbeat: float = 15.0  # a progress line after this long without one
    max_limit: int = 100_000
    default_limit: int = 1000
    ingest: IngestMetrics | None = None
    # Host header names the server answers to (`hosting.allowed_hosts`); None: any.
    allowed_hosts: frozenset[str] | None = None


class _SharedSteps:
    """Steps of change streams, read and encoded once for every subscriber at the same point.

    Subscribers that keep up are all at the same position of the same view: each would read the
    same history and encode the same lines when the applied LSN moves (200 subscribers at
    1,000 transactions a second saturated the event loop that way). A step from a position is
    the same for whoever takes it (history is append-only; a step that reached less far than a
    later one would is still exact, its progress line says where it stopped), so the first
    subscriber's bytes serve the others. A view rebuilt since a subscriber started has another
    view id: its key differs, so its own step runs and reports the rebuild.
    """

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._steps: OrderedDict[tuple[Any, ...], tuple[bytes, int, Lsn, bool, bool]] = (
            OrderedDict()
        )
        self.hits = 0

    def step(self, feed: Feed, store: Any, sse: bool) -> tuple[bytes, int]:
        """`feed.step(store)` encoded, and its number of lines (0: nothing new)."""
        info = feed.info
        assert info is not None
        key = (info.view_id, info.built_at, feed.position, feed.until, feed.step_rows, sse)
        hit = self._steps.get(key)
        if hit is not None:
            self.hits += 1
            data, lines, feed.position, feed.more, feed.done = hit
            return data, lines
        events = feed.step(store)
        if not events:
            return b"", 0  # not kept: news may come any moment
        data = _encode(events, sse)
        assert feed.position is not None
        self._steps[key] = (data, len(events), feed.position, feed.more, feed.done)
        if len(self._steps) > self.size:
            self._steps.popitem(last=False)
        return data, len(events)


@dataclass
class _State:
    config: ServerConfig
    applied: Lsn = field(default_factory=lambda: Lsn(0))
    moved: asyncio.Event = field(default_factory=asyncio.Event)
    subscribers: int = 0
    steps: _SharedSteps = field(default_factory=_SharedSteps)
    streamed_lines: int = 0
    slow_disconnects: int = 0

    async def wait_for_news(self, seen: Lsn, timeout: float) -> None:
        if self.applied > seen:
            return
        with suppress(TimeoutError):
            await asyncio.wait_for(self.moved.wait(), timeout)


def create_app(config: ServerConfig) -> FastAPI:
    """The FastAPI app serving `config.source`."""
    state = _State(config)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state.applied = config.source.refresh()
        task = asyncio.create_task(_poll(state))
        try:
            yield
        finally:
            task.cancel()

    app = FastAPI(
        title="viewstore",
        summary="Views over Postgres, kept current from logical replication, with history.",
        version="1",
        lifespan=lifespan,
        responses={
            400: {"model": ErrorBody},
            401: {"model": ErrorBody},
            404: {"model": ErrorBody},
        },
    )
    auth = _auth_dependency(config.token)

    if config.allowed_hosts is not None:
        app.add_middleware(_LoopbackHosts, allowed=config.allowed_hosts)

    @app.middleware("http")
    async def _protect_docs(request: Request, call_next: Any) -> Any:
        # FastAPI's own routes (the OpenAPI document and its viewers) take no dependencies.
        if config.token is not None and request.url.path in _DOC_PATHS:
            try:
                auth(request)
            except StarletteHTTPException as exc:
                return _error(exc.status_code, str(exc.detail), None, exc.headers)
        return await call_next(request)

    @app.exception_handler(ViewstoreError)
    async def _viewstore_error(_: Request, exc: ViewstoreError) -> JSONResponse:
        return _error(_status(exc), str(exc), exc.hint)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "query")
        return _error(400, f"{where}: {first.get('msg')}", "see /docs for the parameters")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        hint = "see /docs for the endpoints" if exc.status_code == 404 else None
        return _error(exc.status_code, str(exc.detail).lower(), hint, exc.headers)

    @app.get("/healthz", response_model=HealthModel, summary="Liveness; needs no token")
    async def healthz() -> HealthModel:
        failure = config.ingest.failure() if config.ingest else None
        ingest = None if config.ingest is None else failure or "running"
        return HealthModel(
            status="ok" if failure is None else "failing",
            applied_lsn=str(state.applied),
            ingest=ingest,
        )

    @app.get("/views", response_model=list[ViewModel], dependencies=[Depends(auth)])
    async def views() -> list[ViewModel]:
        return await run_in_threadpool(list_views)

    def list_views() -> list[ViewModel]:
        with config.source.reading() as store:
            applied = store.applied_lsn()
            return [
                ViewModel(
                    name=info.name,
                    columns=[
                        ColumnModel(name=c.name, type=_TYPE_NAMES.get(c.type_oid, "text"))
                        for c in info.columns
                    ],
                    key=[info.columns[i].name for i in info.key_columns],
                    rows=row_count(store, info.view_id),
                    applied_lsn=str(applied),
                    history_from=None if info.history_start is None else str(info.history_start),
                    ranking=(
                        None
                        if info.ranking is None
                        else RankingModel.model_validate(info.ranking.model_dump())
                    ),
                )
                for info in sorted(stored_views(store).values(), key=lambda i: i.name)
                if info.state == "ready"
            ]

    @app.get(
        "/views/{name}",
        response_model=RowsModel,
        dependencies=[Depends(auth)],
        summary="Rows of a view, now or as of an LSN",
        description="Any other query parameter `col=value` filters on that column (equality; "
        "the value is parsed as the column's type).",
    )
    async def rows(
        name: str,
        request: Request,
        order_by: str | None = None,
        desc: bool = False,
        limit: int | None = Query(None, ge=0, le=config.max_limit),
        as_of: str | None = Query(None, description="an LSN, e.g. 0/16B3748; inclusive"),
    ) -> RowsModel:
        filters = {k: v for k, v in request.query_params.items() if k not in _RESERVED}
        lsn = Lsn.parse(as_of) if as_of is not None else None
        n = config.default_limit if limit is None else limit

        def read() -> RowsModel:  # on a worker thread: a whole view as of an LSN takes a while
            with config.source.reading() as store:
                info = find_view(store, name)
                found = query_rows(store, info, filters, order_by, desc, n + 1, lsn)
                at = lsn if lsn is not None else store.applied_lsn()
            names = [c.name for c in info.columns]
            rows = [{c: json_value(v) for c, v in zip(names, r, strict=True)} for r in found[:n]]
            return RowsModel(
                view=info.name, lsn=str(at), columns=names, rows=rows, truncated=len(found) > n
            )

        return await run_in_threadpool(read)

    @app.get(
        "/views/{name}/history",
        response_model=HistoryRangeModel,
        dependencies=[Depends(auth)],
        summary="The retained range of a view's history: what as_of and at accept",
    )
    async def history_range(name: str, marks: int = Query(10, ge=1, le=100)) -> HistoryRangeModel:
        def read() -> HistoryRangeModel:
            with config.source.reading() as store:
                info = find_view(store, name)
                found = asofread.history_range(store, info, marks)
            return HistoryRangeModel(
                view=info.name,
                first_lsn=str(found.first_lsn),
                first_reason=found.first_reason,
                first_change=_point(found.first_change),
                last_lsn=str(found.last_lsn),
                last_commit_time=asofread.iso_time(found.last_time),
                marks=[MarkModel(lsn=str(m), change=_point(c)) for m, c in found.marks],
            )

        return await run_in_threadpool(read)

    @app.get(
        "/views/{name}/top",
        response_model=TopModel,
        dependencies=[Depends(auth)],
        summary="The top N of a view now, or as of an LSN or a commit time",
        description="Sorted and limited on the server (a view may have millions of rows). "
        "`as_of` is an LSN (inclusive), `at` an ISO 8601 time with its zone (the view's last "
        "change committed at or before it); neither: now. With `points` > 0, each row's "
        "values of `order_by` up to then, at most `points` per row, for a chart.",
    )
    async def top(
        name: str,
        order_by: str,
        desc: bool = True,
        limit: int = Query(10, ge=0, le=1000),
        as_of: str | None = Query(None, description="an LSN, e.g. 0/16B3748; inclusive"),
        at: str | None = Query(None, description="a time, e.g. 2026-12-04T14:05:03Z"),
        points: int = Query(0, ge=0, le=2000),
    ) -> TopModel:
        if as_of is not None and at is not None:
            raise ConfigError(
                "as_of and at both given", hint="give an LSN (as_of) or a time (at), not both"
            )
        lsn = Lsn.parse(as_of) if as_of is not None else None
        when = asofread.parse_time(at) if at is not None else None

        def read() -> TopModel:
            with config.source.reading() as store:
                info = find_view(store, name)
                applied = store.applied_lsn()
                if when is not None:
                    at_lsn = asofread.lsn_at_time(store, info, when)
                else:
                    at_lsn = applied if lsn is None else lsn
                found, count = asofread.top_as_of(store, info, order_by, desc, limit, at_lsn)
                where = asofread.position(store, info, at_lsn)
                lines = (
                    asofread.series(store, info, [k for k, _ in found], order_by, at_lsn, points)
                    if points
                    else None
                )
            names = [c.name for c in info.columns]
            return TopModel(
                view=info.name,
                lsn=str(at_lsn),
                live=at_lsn >= applied,
                applied_lsn=str(applied),
                change=_point(where.change),
                previous_lsn=None if where.previous is None else str(where.previous),
                next_lsn=None if where.next is None else str(where.next),
                order_by=order_by,
                desc=desc,
                columns=names,
                rows=[
                    {c: json_value(v) for c, v in zip(names, row, strict=True)} for _, row in found
                ],
                row_count=count,
                series=None
                if lines is None
                else [
                    [
                        SeriesPoint(
                            lsn=str(p), commit_time=asofread.iso_time(t), value=json_value(v)
                        )
                        for p, t, v in line
                    ]
                    for line in lines
                ],
            )

        return await run_in_threadpool(read)

    @app.get(
        "/views/{name}/changes",
        dependencies=[Depends(auth)],
        response_model=ChangeLine,
        summary="Stream a view's changes (NDJSON, or SSE for Accept: text/event-stream)",
        description="`since` is exclusive (changes committed after it; default: now), "
        "`until` inclusive (the stream ends after it). With `snapshot=true` the view as of "
        "`since` comes first. A `progress` line follows each step: reconnect with `since=` "
        "the last one to get exactly what you missed. For SSE, Last-Event-ID does the same.",
    )
    async def changes(
        name: str,
        request: Request,
        since: str | None = None,
        snapshot: bool = False,
        until: str | None = None,
    ) -> StreamingResponse:
        sse = "text/event-stream" in request.headers.get("accept", "")
        resume = request.headers.get("last-event-id") if sse and since is None else None
        since = since or resume
        feed = Feed(
            name,
            Lsn.parse(since) if since is not None else None,
            snapshot=snapshot and resume is None,
            until=Lsn.parse(until) if until is not None else None,
        )

        def start() -> list[dict[str, Any]]:  # the snapshot of a large view takes a while
            with config.source.reading() as store:
                return list(feed.start(store))

        first = await run_in_threadpool(start)  # errors here are a 4xx, not a stream
        body = _stream(state, feed, first, sse)
        media = "text/event-stream" if sse else "application/x-ndjson"
        return StreamingResponse(body, media_type=media, headers={"Cache-Control": "no-store"})

    @app.get("/metrics", response_class=PlainTextResponse, dependencies=[Depends(auth)])
    async def metrics() -> str:
        return _metrics(state)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(PAGE, media_type="text/html")

    return app


# -- helpers -----------------------------------------------------------------------------------


def _auth_dependency(token: str | None) -> Callable[[Request], None]:
    expected = (token or "").encode()  # what a client sends for a non-ASCII token: UTF-8

    def check(request: Request) -> None:
        if token is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        # Starlette decodes header bytes as latin-1, and hmac compares str only when ASCII: a
        # non-ASCII header raised TypeError (a 500). Compared as the bytes that were sent.
        sent = value.strip().encode("latin-1")
        if scheme.lower() != "bearer" or not hmac.compare_digest(sent, expected):
            what = "missing" if not given else "wrong"
            raise StarletteHTTPException(
                401,
                f"{what} bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return check


class _LoopbackHosts:
    """Refuses (421) a request whose Host is not one of `allowed`.

    A loopback server is reachable from any web page the user's browser opens: a page on a
    name the attacker re-points at 127.0.0.1 (DNS rebinding) would read the views as
    same-origin. Its requests carry that name in Host. Plain ASGI, not @app.middleware: that
    one buffers streamed responses, which hides a stalled subscriber from the send timeout."""

    def __init__(self, app: Any, allowed: frozenset[str]) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            host = _host_name(Headers(scope=scope).get("host", ""))
            if not _host_allowed(host, self.allowed):
                response = _error(
                    421,
                    f"this server answers to its loopback names only, not Host: {host or '(none)'}",
                    "use http://127.0.0.1:PORT/ or http://localhost:PORT/; to serve other "
                    "names, bind a non-loopback address with --http-token",
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _host_name(header: str) -> str:
    """The name of a Host header, without its port: `[::1]:8080` -> `::1`."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.partition(":")[0] if header.count(":") == 1 else header


def _host_allowed(host: str, allowed: frozenset[str]) -> bool:
    # *.localhost resolves to loopback in browsers (RFC 6761), so no one else can point it here.
    return host in allowed or host.endswith(".localhost")


def _point(step: asofread.Step | None) -> PointModel | None:
    if step is None:
        return None
    return PointModel(lsn=str(Lsn(step.lsn)), commit_time=asofread.iso_time(step.commit_time))


def _status(exc: ViewstoreError) -> int:
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, ViewGone):
        return 410
    if isinstance(exc, NotReady):
        return 503
    if isinstance(exc, ConfigError):
        return 410 if "--history-retention" in str(exc) else 400
    if isinstance(exc, StoreError):
        return 503
    return 500


def _error(
    status: int, message: str, hint: str | None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(ErrorBody(error=message, hint=hint).model_dump(), status, headers)


async def _poll(state: _State) -> None:
    """Follow the applied LSN; wake the subscribers when it moves."""
    source = state.config.source
    failing = False
    while True:
        try:
            applied = source.refresh()
            failing = False
        except Exception:  # a follower catching up mid-compaction: try again next tick
            if not failing:  # once per streak, not every few milliseconds
                log.exception("reading the applied LSN failed; retrying")
            failing = True
            applied = state.applied
        if applied != state.applied:
            state.applied = applied
            state.moved.set()
            state.moved = asyncio.Event()
        await asyncio.sleep(state.config.poll_interval)


async def _stream(
    state: _State, feed: Feed, first: list[dict[str, Any]], sse: bool
) -> AsyncIterator[bytes]:
    """The subscriber's lines, one step at a time, as fast as it accepts them."""
    config = state.config
    state.subscribers += 1
    try:
        for i in range(0, len(first), 1000):
            started = time.monotonic()
            yield _encode(first[i : i + 1000], sse)
            state.streamed_lines += len(first[i : i + 1000])
            if time.monotonic() - started > config.slow_after:
                state.slow_disconnects += 1
                yield _encode([{"error": _too_slow(config, "the snapshot", feed)}], sse)
                return
        last_sent = time.monotonic()
        while not feed.done:
            assert feed.position is not None
            if not feed.more:
                await state.wait_for_news(feed.position, config.heartbeat)
            try:
                data, lines = state.steps.step(feed, config.source.read(), sse)
            except ViewstoreError as exc:
                yield _encode([{"error": str(exc)}], sse)
                return
            now = time.monotonic()
            if not lines:
                if now - last_sent >= config.heartbeat:
                    data, lines = _encode([{"progress": str(feed.position)}], sse), 1
                else:
                    continue
            started = time.monotonic()
            yield data
            state.streamed_lines += lines
            # The subscriber took this long to take the last step: behind and not catching up.
            if time.monotonic() - started > config.slow_after:
                state.slow_disconnects += 1
                yield _encode([{"error": _too_slow(config, "one step", feed)}], sse)
                return
            last_sent = time.monotonic()
    finally:
        state.subscribers -= 1


def _too_slow(config: ServerConfig, what: str, feed: Feed) -> str:
    if what == "the snapshot":
        again = f"reconnect with snapshot=true&since={feed.position} to start it again"
    else:
        again = f"reconnect with since={feed.position} to go on from here"
    return f"subscriber too slow: {what} took over {config.slow_after:g} s to send; {again}"


def _encode(events: list[dict[str, Any]], sse: bool) -> bytes:
    if not sse:
        return b"".join(json.dumps(e, separators=(",", ":")).encode() + b"\n" for e in events)
    out = []
    for e in events:
        data = json.dumps(e, separators=(",", ":"))
        if "progress" in e:  # a complete point to resume from: EventSource's Last-Event-ID
            out.append(f"id: {e['progress']}\nevent: progress\ndata: {data}\n\n")
        elif "error" in e or "end" in e:
            out.append(f"event: {'error' if 'error' in e else 'end'}\ndata: {data}\n\n")
        else:
            out.append(f"data: {data}\n\n")
    return "".join(out).encode()


def _metrics(state: _State) -> str:
    store = state.config.source.read()
    stats = store.stats()
    applied = store.applied_lsn()
    lines = [
        "# HELP viewstore_applied_lsn End LSN of the last transaction applied (durable).",
        "# TYPE viewstore_applied_lsn gauge",
        f"viewstore_applied_lsn {int(applied)}",
        "# HELP viewstore_transactions_total Transactions applied.",
        "# TYPE viewstore_transactions_total counter",
        f"viewstore_transactions_total {stats.get('transactions', 0)}",
        "# HELP viewstore_rows_total Row changes applied.",
        "# TYPE viewstore_rows_total counter",
        f"viewstore_rows_total {stats.get('rows', 0)}",
        "# HELP viewstore_subscribers Open change streams.",
        "# TYPE viewstore_subscribers gauge",
        f"viewstore_subscribers {state.subscribers}",
        "# HELP viewstore_streamed_lines_total Lines sent to subscribers.",
        "# TYPE viewstore_streamed_lines_total counter",
        f"viewstore_streamed_lines_total {state.streamed_lines}",
        "# HELP viewstore_slow_subscriber_disconnects_total Subscribers cut off for being slow.",
        "# TYPE viewstore_slow_subscriber_disconnects_total counter",
        f"viewstore_slow_subscriber_disconnects_total {state.slow_disconnects}",
        "# HELP viewstore_shared_steps_total Change-stream steps served from another "
        "subscriber's read.",
        "# TYPE viewstore_shared_steps_total counter",
        f"viewstore_shared_steps_total {state.steps.hits}",
    ]
    applied_time = store.applied_time()
    if applied_time is not None:
        lines += [
            "# HELP viewstore_applied_commit_timestamp_seconds Commit time of the last applied "
            "transaction.",
            "# TYPE viewstore_applied_commit_timestamp_seconds gauge",
            f"viewstore_applied_commit_timestamp_seconds {applied_time / 1e6:.6f}",
        ]
    ingest = state.config.ingest
    if ingest is not None:
        received = ingest.received_lsn()
        if received is not None:
            lines += [
                "# HELP viewstore_lag_bytes WAL received from Postgres but not yet applied.",
                "# TYPE viewstore_lag_bytes gauge",
                f"viewstore_lag_bytes {max(0, int(received) - int(applied))}",
            ]
        count, total, last = ingest.apply_latency()
        lines += [
            "# HELP viewstore_apply_latency_seconds Commit in Postgres to durable in the store, "
            "per commit group (its newest transaction).",
            "# TYPE viewstore_apply_latency_seconds summary",
            f"viewstore_apply_latency_seconds_count {count}",
            f"viewstore_apply_latency_seconds_sum {total:.6f}",
            "# HELP viewstore_apply_latency_last_seconds The latest group's apply latency.",
            "# TYPE viewstore_apply_latency_last_seconds gauge",
            f"viewstore_apply_latency_last_seconds {last:.6f}",
        ]
    return "\n".join(lines) + "\n"
