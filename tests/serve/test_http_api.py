"""The HTTP API's endpoints, good and bad input (issue 5, acceptance 3), over real TCP.

One store for the module: the seed schema with 1,100 more players (more than the default limit
of 1,000 rows), written by `viewstore run --http --http-token` and followed by `viewstore serve`
on the same data directory; a few recorded transactions give the history (two of them touch
every player, so that a stream of them takes several steps). Every test runs against both
servers (`api` is parametrized: "run" is the ingesting process's LiveSource, "serve" the
follower's FollowerSource). Nothing writes after the fixture, so the recorded LSNs and
Postgres's results stay the truth.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psycopg
import pytest
from helpers import create_test_database, drop_test_database, pg_exec
from runner import kill9, wait_caught_up
from serve_support import (
    SELECT_SQL,
    VIEW,
    canonical,
    history_diffs,
    postgres_rows_json,
    seed,
    start_run_http,
    start_serve,
    stop,
    stream_diffs,
    wait_http,
    wait_view_ready,
    write_views,
)

from viewstore.ingest.lsn import Lsn
from viewstore.render import json_value

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PLAYERS = 1105


@dataclass
class Env:
    dsn: str
    data: Path
    bases: dict[str, str]
    procs: dict[str, subprocess.Popen[bytes]]
    # (applied LSN once caught up after each recorded transaction, Postgres's view rows then)
    points: list[tuple[Lsn, list[str]]] = field(default_factory=list)
    history_start: int = 0
    clients: dict[str, httpx.Client] = field(default_factory=dict)


@pytest.fixture(scope="module")
def env(pg_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    name, dsn = create_test_database(pg_server.dsn)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        tmp = tmp_path_factory.mktemp("http_api")
        seed(dsn, extra_players=PLAYERS - 5)
        data = tmp / "data"
        run, run_base = start_run_http(dsn, data, write_views(tmp), token=TOKEN, reap=False)
        procs["run"] = run
        wait_http(run_base, run, data.with_suffix(".log"))
        env = Env(dsn, data, {"run": run_base}, procs)
        env.points.append((wait_caught_up(dsn, data), postgres_rows_json(dsn)))
        wait_view_ready(data)
        for sql in (
            # Every player's total changes: 2 x 1105 lines, more than a step's 1000.
            "INSERT INTO player_scores (player_id, score) SELECT id, 1.25 FROM players",
            "UPDATE player_scores SET score = score + 0.5 WHERE score = 1.25",
            "INSERT INTO players (name) VALUES ('Zelda')",
            "DELETE FROM player_scores WHERE player_id = 2",
            "UPDATE players SET name = 'Luigi II' WHERE id = 4",
        ):
            pg_exec(dsn, sql)
            env.points.append((wait_caught_up(dsn, data), postgres_rows_json(dsn)))
        env.points.pop(0)  # the view may have been built after that point
        env.history_start = Lsn.parse(_get(run_base, "/views").json()[0]["history_from"])
        serve, serve_base = start_serve(data, token=TOKEN, reap=False)
        procs["serve"] = serve
        wait_http(serve_base, serve, data.with_suffix(".serve.log"))
        env.bases["serve"] = serve_base
        with (
            httpx.Client(base_url=run_base, timeout=30) as env.clients["run"],
            httpx.Client(base_url=serve_base, timeout=30) as env.clients["serve"],
        ):
            yield env
    finally:
        for proc in procs.values():
            stop(proc)
        drop_test_database(pg_server.dsn, name)


@dataclass
class Api:
    kind: str
    base: str
    env: Env

    def get(self, path: str, params: Any = None, **kw: Any) -> httpx.Response:
        headers = kw.pop("headers", AUTH)
        return self.env.clients[self.kind].get(path, params=params, headers=headers, **kw)

    def lines(self, path: str, params: Any = None, headers: Any = None) -> list[dict[str, Any]]:
        """A stream that ends by itself (until=), as parsed NDJSON lines."""
        r = self.get(path, params, headers=headers or AUTH)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/x-ndjson")
        return [json.loads(line) for line in r.text.splitlines()]


@pytest.fixture(params=["run", "serve"])
def api(request: pytest.FixtureRequest, env: Env) -> Api:
    return Api(request.param, env.bases[request.param], env)


def _get(base: str, path: str, **kw: Any) -> httpx.Response:
    return httpx.get(base + path, headers=AUTH, timeout=30, **kw)


def assert_error(r: httpx.Response, status: int, *words: str) -> dict[str, Any]:
    """A 4xx with a JSON body {"error": ..., "hint": ...} whose error mentions `words`."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    assert isinstance(body.get("error"), str) and body["error"], body
    assert set(body) <= {"error", "hint"}, body
    for w in words:
        assert w in body["error"], (w, body)
    return body


def rows_json(rows: list[dict[str, Any]]) -> list[str]:
    return sorted(canonical(r) for r in rows)


def pg_json(dsn: str, sql: str) -> list[dict[str, Any]]:
    """Rows of `sql` as the API renders them, in Postgres's order."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(sql)  # type: ignore[call-overload]
        names = [d.name for d in cur.description]
        return [{n: json_value(v) for n, v in zip(names, r, strict=True)} for r in cur.fetchall()]


# -- health and auth -------------------------------------------------------------------------


def test_healthz_needs_no_token(api: Api) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, AUTH):
        r = api.get("/healthz", headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "ok"
        assert Lsn.parse(body["applied_lsn"]) >= api.env.points[-1][0]
        assert body["ingest"] == ("running" if api.kind == "run" else None)


ENDPOINTS = [
    "/views",
    f"/views/{VIEW}",
    f"/views/{VIEW}/changes",
    f"/views/{VIEW}/history",
    f"/views/{VIEW}/top",
    "/metrics",
]


@pytest.mark.parametrize("path", ENDPOINTS)
def test_token_is_required(api: Api, path: str) -> None:
    params = {}
    if path.endswith("/changes"):  # a stream that ends at once when let in
        lsn = str(api.env.points[-1][0])
        params = {"since": lsn, "until": lsn}
    if path.endswith("/top"):
        params = {"order_by": "total_score"}
    body = assert_error(api.get(path, params, headers={}), 401, "missing bearer token")
    assert body["error"] == "missing bearer token"
    for bad in (f"Bearer {TOKEN}x", "Bearer", f"Basic {TOKEN}", TOKEN, f"Bearer {TOKEN[:-1]}"):
        r = api.get(path, params, headers={"Authorization": bad})
        assert_error(r, 401, "wrong bearer token")
        assert r.headers["www-authenticate"] == "Bearer"
    assert api.get(path, params).status_code == 200
    lower = api.get(path, params, headers={"Authorization": f"bearer {TOKEN}"})
    assert lower.status_code == 200  # the scheme is case-insensitive (RFC 7235)


def test_non_ascii_authorization_is_401_not_500(api: Api) -> None:
    # h11 sends header bytes as given; Starlette decodes them as latin-1 (issue 19.4: a 500).
    for bad in (
        "Bearer tökén".encode(),
        "Bearer tökén".encode("latin-1"),
        "Bearer €".encode(),
        "ü".encode(),
    ):
        r = api.get("/views", headers={"Authorization": bad})
        assert_error(r, 401, "wrong bearer token")
        r = api.get("/openapi.json", headers={"Authorization": bad})  # the docs' own check
        assert_error(r, 401, "wrong bearer token")
    assert api.get("/views").status_code == 200


@pytest.mark.parametrize("path", ["/views", "/healthz", "/", "/openapi.json"])
def test_loopback_server_refuses_other_host_names(api: Api, path: str) -> None:
    """DNS rebinding: a page on attacker.example re-pointed at 127.0.0.1 sends its own name in
    Host. A loopback server answers its loopback names only."""
    port = api.base.rsplit(":", 1)[1]
    for host in (
        "attacker.example",
        f"attacker.example:{port}",
        "192.168.1.10",
        "localhost.attacker.example",
        "",
    ):
        r = api.get(path, headers={**AUTH, "Host": host})
        assert_error(r, 421, "loopback names only")
    for host in (
        f"127.0.0.1:{port}",
        f"localhost:{port}",
        "LOCALHOST",
        f"[::1]:{port}",
        f"app.localhost:{port}",
    ):
        r = api.get(path, headers={**AUTH, "Host": host})
        assert r.status_code == 200, (host, r.status_code, r.text)


# -- GET /views ------------------------------------------------------------------------------


def test_views_lists_columns_key_rows_and_lsn(api: Api) -> None:
    r = api.get("/views")
    assert r.status_code == 200, r.text
    (view,) = r.json()
    assert view["name"] == VIEW
    assert view["columns"] == [
        {"name": "player_id", "type": "integer"},
        {"name": "name", "type": "text"},
        {"name": "total_score", "type": "numeric"},
    ]
    assert view["key"] == ["player_id"]
    assert view["rows"] == len(api.env.points[-1][1]) == PLAYERS + 1
    assert Lsn.parse(view["applied_lsn"]) >= api.env.points[-1][0]
    assert Lsn.parse(view["history_from"]) == api.env.history_start
    assert api.env.history_start <= api.env.points[0][0]
    assert api.get("/views", {"junk": "1", "limit": "x"}).status_code == 200  # no parameters


# -- GET /views/{name} -----------------------------------------------------------------------


def test_rows_now_equal_postgres(api: Api) -> None:
    r = api.get(f"/views/{VIEW}", {"limit": 100_000})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["view"] == VIEW
    assert body["columns"] == ["player_id", "name", "total_score"]
    assert body["truncated"] is False
    assert Lsn.parse(body["lsn"]) >= api.env.points[-1][0]
    assert rows_json(body["rows"]) == api.env.points[-1][1] == postgres_rows_json(api.env.dsn)
    # Without order_by: in key order.
    assert [row["player_id"] for row in body["rows"]] == sorted(
        row["player_id"] for row in body["rows"]
    )


def test_filters(api: Api) -> None:
    dsn = api.env.dsn
    bowser = pg_json(dsn, f"SELECT * FROM ({SELECT_SQL}) v WHERE player_id = 3")
    assert api.get(f"/views/{VIEW}", {"player_id": "3"}).json()["rows"] == bowser
    assert api.get(f"/views/{VIEW}", {"name": "Bowser"}).json()["rows"] == bowser
    both = api.get(f"/views/{VIEW}", {"name": "Bowser", "player_id": "3"}).json()
    assert both["rows"] == bowser and both["truncated"] is False
    assert api.get(f"/views/{VIEW}", {"name": "Bowser", "player_id": "4"}).json()["rows"] == []
    assert api.get(f"/views/{VIEW}", {"player_id": "999999"}).json()["rows"] == []
    # A numeric value, matched exactly (its text as Postgres prints it).
    score = bowser[0]["total_score"]
    same = pg_json(
        dsn,
        f"SELECT * FROM ({SELECT_SQL}) v WHERE total_score = {score} ORDER BY player_id",
    )
    got = api.get(f"/views/{VIEW}", {"total_score": score, "order_by": "player_id"}).json()
    assert got["rows"] == same and len(same) >= 1


@pytest.mark.parametrize(
    ("order_by", "desc", "pg_order"),
    [
        ("total_score", True, "total_score DESC, player_id"),
        ("total_score", False, "total_score, player_id"),
        ("name", False, 'name COLLATE "C", player_id'),
        ("name", True, 'name COLLATE "C" DESC, player_id'),
        ("player_id", True, "player_id DESC"),
    ],
)
def test_order_by_and_limit(api: Api, order_by: str, desc: bool, pg_order: str) -> None:
    want = pg_json(api.env.dsn, f"SELECT * FROM ({SELECT_SQL}) v ORDER BY {pg_order} LIMIT 7")
    params = {"order_by": order_by, "desc": str(desc).lower(), "limit": "7"}
    body = api.get(f"/views/{VIEW}", params).json()
    assert body["rows"] == want
    assert body["truncated"] is True


def test_truncated_and_default_limit(api: Api) -> None:
    n = PLAYERS + 1
    default = api.get(f"/views/{VIEW}").json()
    assert len(default["rows"]) == 1000 and default["truncated"] is True
    for limit, rows, truncated in [(n, n, False), (n - 1, n - 1, True), (0, 0, True), (1, 1, True)]:
        body = api.get(f"/views/{VIEW}", {"limit": limit}).json()
        assert (len(body["rows"]), body["truncated"]) == (rows, truncated), limit
    one = api.get(f"/views/{VIEW}", {"player_id": "3", "limit": "1"}).json()
    assert len(one["rows"]) == 1 and one["truncated"] is False


@functools.cache
def _cli_query(data: Path, *args: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "viewstore.cli",
            "query",
            "--data",
            str(data),
            VIEW,
            *args,
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_as_of_equals_cli_query_and_postgres_then(api: Api) -> None:
    env = api.env
    for lsn, pg_rows in env.points:
        body = api.get(f"/views/{VIEW}", {"as_of": str(lsn), "limit": 100_000}).json()
        assert body["lsn"] == str(lsn)
        assert rows_json(body["rows"]) == pg_rows, f"as of {lsn}"
    # The same reads through `viewstore query --as-of`, row for row (order too).
    lsn = str(env.points[1][0])
    http = api.get(f"/views/{VIEW}", {"as_of": lsn, "limit": 100_000}).json()["rows"]
    assert http == _cli_query(env.data, "--as-of", lsn)
    args = {"as_of": lsn, "order_by": "total_score", "desc": "true", "limit": "10"}
    http = api.get(f"/views/{VIEW}", args).json()["rows"]
    cli = _cli_query(env.data, "--as-of", lsn, "--order-by", "total_score", "--desc")
    assert http == cli[:10]
    start = str(env.history_start)
    http = api.get(f"/views/{VIEW}", {"as_of": start, "player_id": "2"}).json()["rows"]
    assert http == _cli_query(env.data, "--as-of", start, "--where", "player_id=2")
    assert len(http) == 1


# -- bad input -------------------------------------------------------------------------------


def test_unknown_view_is_404(api: Api) -> None:
    for path in ("/views/nope", "/views/nope/changes", "/views/players", "/views/public.players"):
        body = assert_error(api.get(path), 404, "unknown view")
        assert VIEW in (body["hint"] or ""), "the hint names the views there are"
    assert_error(api.get("/nope"), 404)
    assert_error(api.get("/views/a/b/c"), 404)


def test_bad_lsn_text_is_400(api: Api) -> None:
    for bad in ("yesterday", "", "0/", "/0", "1/2/3", "G/0", "-1/0", "100000000/0", "0/1.5"):
        assert_error(api.get(f"/views/{VIEW}", {"as_of": bad}), 400, "invalid LSN")
        if bad:  # since= (empty) means "now"
            r = api.get(f"/views/{VIEW}/changes", {"since": bad})
            assert_error(r, 400, "invalid LSN")
        r = api.get(f"/views/{VIEW}/changes", {"since": str(api.env.points[0][0]), "until": bad})
        assert_error(r, 400, "invalid LSN")


def test_lsn_out_of_range_is_400(api: Api) -> None:
    applied = Lsn.parse(api.get("/healthz").json()["applied_lsn"])
    future = str(Lsn(applied + (1 << 32)))
    before = str(Lsn(api.env.history_start - 1))
    assert_error(api.get(f"/views/{VIEW}", {"as_of": future}), 400, "has applied only up to")
    assert_error(api.get(f"/views/{VIEW}", {"as_of": "0/10"}), 400, "history starts at")
    assert_error(api.get(f"/views/{VIEW}", {"as_of": before}), 400, "history starts at")
    changes = f"/views/{VIEW}/changes"
    assert_error(api.get(changes, {"since": future}), 400, "has applied only up to")
    assert_error(api.get(changes, {"since": before}), 400, "history starts at")
    body = assert_error(api.get(changes, {"since": "0/10", "snapshot": "true"}), 400)
    assert "history starts at" in body["error"] and body["hint"]


def test_until_before_since_is_400(api: Api) -> None:
    lo, hi = (str(p[0]) for p in api.env.points[:2])
    body = assert_error(
        api.get(f"/views/{VIEW}/changes", {"since": hi, "until": lo}), 400, "before since"
    )
    assert body["error"] == f"until {lo} is before since {hi}"


def test_unknown_column_is_400(api: Api) -> None:
    path = f"/views/{VIEW}"
    assert_error(api.get(path, {"zzz": "1"}), 400, "no column 'zzz'")
    assert_error(api.get(path, {"order_by": "zzz"}), 400, "no column 'zzz'")
    assert_error(api.get(path, {"order_by": ""}), 400, "no column ''")
    assert_error(api.get(path, {"Player_id": "3"}), 400, "no column 'Player_id'")
    lsn = str(api.env.points[0][0])
    assert_error(api.get(path, {"order_by": "zzz", "as_of": lsn}), 400, "no column")
    assert_error(api.get(path, {"zzz": "1", "as_of": lsn}), 400, "no column")


def test_bad_values_are_400(api: Api) -> None:
    path = f"/views/{VIEW}"
    for limit in ("-1", "x", "1.5", "", "100001", "1e3", "99999999999999999999999"):
        assert_error(api.get(path, {"limit": limit}), 400, "limit")
    for desc in ("maybe", "2", ""):
        assert_error(api.get(path, {"desc": desc}), 400, "desc")
    assert_error(api.get(f"{path}/changes", {"snapshot": "maybe"}), 400, "snapshot")
    for value in ("abc", "", "1.5", "3 OR 1=1"):
        assert_error(api.get(path, {"player_id": value}), 400, "not a value of the column's type")
    assert_error(api.get(path, {"total_score": "abc"}), 400, "not a value of the column's type")
    r = api.env.clients[api.kind].post("/views", headers=AUTH)
    assert_error(r, 405)


def test_malformed_input_never_500(api: Api) -> None:
    """Every endpoint with a handful of malformed inputs: a 4xx with a JSON error, or a 200,
    never a 500. (Streams that would stay open are closed after their headers.)"""
    lsn = str(api.env.points[0][0])
    weird = [
        "", " ", "x", "-1", "0", "1e999999", "NaN", "Infinity", "-Infinity", "99999999999999999999",
        "'; DROP TABLE players; --", "\x00", "é", "%", "0/0", "FFFFFFFF/FFFFFFFF",
        "0x1/0x2", "1_0/0", " 0/1 ", "true", "a" * 5000,
    ]  # fmt: skip
    requests: list[tuple[str, dict[str, str], dict[str, Any]]] = []
    rows = f"/views/{VIEW}"
    for w in weird:
        for p in ("as_of", "limit", "desc", "order_by", "player_id", "name", "total_score", "zz"):
            requests.append((rows, {p: w}, {}))
        requests.append((rows, {"as_of": lsn, "player_id": w}, {}))
        requests.append((rows, {"as_of": lsn, "total_score": w, "order_by": "name"}, {}))
        for p in ("since", "until", "snapshot"):
            requests.append((f"{rows}/changes", {p: w}, {}))
        if "\x00" not in w and w == w.strip():  # else not a header value h11 sends
            sse = {"Accept": "text/event-stream", "Last-Event-ID": w.encode()}
            requests.append((f"{rows}/changes", {}, sse))
        requests.append((f"/views/{quote(w, safe='')}", {}, {}))
        requests.append((f"/views/{quote(w, safe='')}/changes", {}, {}))
        requests.append(("/views", {"x": w}, {}))
        requests.append(("/metrics", {"x": w}, {}))
        requests.append(("/healthz", {"x": w}, {}))
    requests.append((rows, {"player_id": "2147483648"}, {}))  # past int4
    requests.append((rows, {"player_id": "-9223372036854775809"}, {}))  # past int8
    requests.append((rows, {"as_of": lsn, "player_id": "99999999999999999999"}, {}))
    failures = []
    with httpx.Client(base_url=api.base, timeout=30) as client:
        for path, params, headers in requests:
            try:
                with client.stream("GET", path, params=params, headers={**AUTH, **headers}) as r:
                    if r.status_code >= 400:
                        r.read()
                        body = r.json()
                        ok = r.status_code < 500 and isinstance(body.get("error"), str)
                    else:  # 307: /views/ (an empty name) redirects to /views
                        ok = r.status_code in (200, 307)
                    if not ok:
                        r.read()
                        failures.append((path[:60], params, headers, r.status_code, r.text[:200]))
            except (httpx.HTTPError, json.JSONDecodeError) as exc:
                failures.append((path[:60], params, headers, repr(exc)))
    assert not failures, f"{len(failures)} of {len(requests)} requests failed: {failures[:10]}"


# -- GET /views/{name}/changes ---------------------------------------------------------------


def test_changes_since_until_are_the_history(api: Api) -> None:
    env = api.env
    since, until = env.history_start, env.points[-1][0]
    lines = api.lines(f"/views/{VIEW}/changes", {"since": str(since), "until": str(until)})
    assert lines[-1] == {"end": str(until)}
    assert "progress" in lines[-2] and Lsn.parse(lines[-2]["progress"]) == until
    assert stream_diffs(lines) == history_diffs(env.data, VIEW, since, until)
    # The two transactions that touched every player are one step each (2 x 1105 lines).
    progress = [e["progress"] for e in lines if "progress" in e]
    assert len(progress) >= 2 and progress == sorted(progress, key=Lsn.parse)
    for e in lines:
        if "diff" in e:
            assert e["diff"] in (1, -1) and set(e) == {"lsn", "commit_time", "diff", "row"}
            assert since < Lsn.parse(e["lsn"]) <= until
    # since exclusive, until inclusive: the transaction at a recorded point is in (p0, p1].
    p0, p1 = (p[0] for p in env.points[2:4])
    middle = api.lines(f"/views/{VIEW}/changes", {"since": str(p0), "until": str(p1)})
    want = history_diffs(env.data, VIEW, p0, p1)
    assert stream_diffs(middle) == want and len(want) >= 1
    assert middle[-1] == {"end": str(p1)}
    # A commit's own LSN as until includes it; as since excludes it.
    commit = want[0][0]
    at = api.lines(f"/views/{VIEW}/changes", {"since": str(p0), "until": commit})
    assert stream_diffs(at) == [w for w in want if w[0] == commit]
    after = api.lines(f"/views/{VIEW}/changes", {"since": commit, "until": str(p1)})
    assert stream_diffs(after) == [w for w in want if w[0] != commit]


def test_snapshot_is_the_view_as_of_since(api: Api) -> None:
    env = api.env
    lsn = env.points[1][0]
    lines = api.lines(
        f"/views/{VIEW}/changes", {"since": str(lsn), "until": str(lsn), "snapshot": "true"}
    )
    # The rows, then where the stream starts (a progress line), then the end.
    assert lines[-2:] == [{"progress": str(lsn)}, {"end": str(lsn)}]
    snap = lines[:-2]
    assert all(e["snapshot"] is True and e["diff"] == 1 and e["lsn"] == str(lsn) for e in snap)
    assert rows_json([e["row"] for e in snap]) == env.points[1][1]
    # since == until without a snapshot: where it starts, and the end.
    assert api.lines(f"/views/{VIEW}/changes", {"since": str(lsn), "until": str(lsn)}) == [
        {"progress": str(lsn)},
        {"end": str(lsn)},
    ]


def _sse(text: str) -> list[dict[str, str]]:
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            name, _, value = line.partition(": ")
            assert name in ("id", "event", "data") and name not in fields, block
            fields[name] = value
        events.append(fields)
    return events


def test_sse_format_and_last_event_id_resume(api: Api) -> None:
    env = api.env
    since, until = str(env.history_start), str(env.points[-1][0])
    path = f"/views/{VIEW}/changes"
    sse = {**AUTH, "Accept": "text/event-stream"}
    r = api.get(path, {"since": since, "until": until}, headers=sse)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["cache-control"] == "no-store"
    events = _sse(r.text)
    # The same lines as NDJSON, one event each.
    ndjson = api.lines(path, {"since": since, "until": until})
    assert [json.loads(e["data"]) for e in events] == ndjson
    for e in events:
        data = json.loads(e["data"])
        if "progress" in data:
            assert e == {"id": data["progress"], "event": "progress", "data": e["data"]}
        elif "end" in data:
            assert e == {"event": "end", "data": e["data"]}
        else:
            assert set(e) == {"data"}, "change lines carry no id: they are not resume points"
    # Resuming from each progress id with Last-Event-ID gives exactly the rest (after the
    # resumed stream's own first line: the progress event it starts at).
    ids = [(i, e["id"]) for i, e in enumerate(events) if "id" in e]
    assert len(ids) >= 2
    for i, event_id in ids:
        resumed = api.get(path, {"until": until}, headers={**sse, "Last-Event-ID": event_id})
        assert resumed.status_code == 200, resumed.text
        got = _sse(resumed.text)
        assert got[0] == {"id": event_id, "event": "progress", "data": events[i]["data"]}
        assert got[1:] == events[i + 1 :]
    # Last-Event-ID means no snapshot (the client had it), and since= wins over it.
    event_id = ids[0][1]
    resumed = api.get(
        path, {"until": until, "snapshot": "true"}, headers={**sse, "Last-Event-ID": event_id}
    )
    assert not any(json.loads(e["data"]).get("snapshot") for e in _sse(resumed.text))
    explicit = api.get(
        path, {"since": since, "until": until}, headers={**sse, "Last-Event-ID": until}
    )
    assert _sse(explicit.text) == events
    # A bad Last-Event-ID is a 400 like a bad since; NDJSON ignores the header.
    bad = api.get(path, {"until": until}, headers={**sse, "Last-Event-ID": "nope"})
    assert_error(bad, 400, "invalid LSN")
    ignored = api.lines(
        path, {"since": since, "until": until}, headers={**AUTH, "Last-Event-ID": "x"}
    )
    assert ignored == ndjson


# -- /metrics and /openapi.json --------------------------------------------------------------


def _metrics(api: Api) -> dict[str, float]:
    r = api.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out = {}
    for line in r.text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.split(" ")
            out[name] = float(value)
    return out


def test_metrics_names_and_values(api: Api) -> None:
    env = api.env
    m = _metrics(api)
    names = {
        "viewstore_applied_lsn",
        "viewstore_transactions_total",
        "viewstore_rows_total",
        "viewstore_subscribers",
        "viewstore_streamed_lines_total",
        "viewstore_slow_subscriber_disconnects_total",
        "viewstore_applied_commit_timestamp_seconds",
    }
    if api.kind == "run":
        names |= {
            "viewstore_lag_bytes",
            "viewstore_apply_latency_seconds_count",
            "viewstore_apply_latency_seconds_sum",
            "viewstore_apply_latency_last_seconds",
        }
    assert names <= set(m), names - set(m)
    healthz = Lsn.parse(api.get("/healthz").json()["applied_lsn"])
    assert env.points[-1][0] <= m["viewstore_applied_lsn"]
    assert abs(m["viewstore_applied_lsn"] - healthz) < 1 << 24
    assert m["viewstore_transactions_total"] >= len(env.points)
    assert m["viewstore_rows_total"] >= 2 * PLAYERS  # the two bulk transactions (not the snapshot)
    assert m["viewstore_slow_subscriber_disconnects_total"] == 0
    assert abs(m["viewstore_applied_commit_timestamp_seconds"] - time.time()) < 600
    if api.kind == "run":
        assert 0 <= m["viewstore_lag_bytes"] < 1 << 24
        assert m["viewstore_apply_latency_seconds_count"] >= 1
        assert (
            0
            < m["viewstore_apply_latency_seconds_sum"]
            < 60 * m["viewstore_apply_latency_seconds_count"]
        )
        assert 0 <= m["viewstore_apply_latency_last_seconds"] < 60
    # Streamed lines are counted; an open stream is a subscriber until it closes.
    lines = api.lines(
        f"/views/{VIEW}/changes", {"since": str(env.points[0][0]), "until": str(env.points[-1][0])}
    )
    after = _metrics(api)
    assert after["viewstore_streamed_lines_total"] - m["viewstore_streamed_lines_total"] >= len(
        lines
    )
    with httpx.Client(timeout=30) as client:
        url = f"{api.base}/views/{VIEW}/changes"
        with client.stream("GET", url, params={"snapshot": "true"}, headers=AUTH) as r:
            assert r.status_code == 200
            lines_iter = r.iter_lines()  # kept: a dropped iterator closes the stream
            assert json.loads(next(lines_iter))["snapshot"] is True
            assert _wait_gauge(api, lambda v: v == 1) == 1
    assert _wait_gauge(api, lambda v: v == 0) == 0


def _wait_gauge(api: Api, good: Any) -> float:
    deadline = time.monotonic() + 5
    while True:
        value = _metrics(api)["viewstore_subscribers"]
        if good(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def test_openapi_lists_the_paths(api: Api) -> None:
    r = api.get("/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    paths = doc["paths"]
    for path in ("/views", "/views/{name}", "/views/{name}/changes", "/healthz", "/metrics"):
        assert path in paths and "get" in paths[path], path
    params = {p["name"] for p in paths["/views/{name}"]["get"]["parameters"]}
    assert {"name", "order_by", "desc", "limit", "as_of"} <= params
    params = {p["name"] for p in paths["/views/{name}/changes"]["get"]["parameters"]}
    assert {"name", "since", "snapshot", "until"} <= params
    assert "ErrorBody" in doc["components"]["schemas"]
    assert "401" in paths["/views"]["get"]["responses"]
    # The document, like every endpoint but /healthz, needs the token.
    for path in ("/openapi.json", "/docs", "/redoc"):
        r = api.get(path, headers={})
        assert r.status_code == 401 and r.json()["error"] == "missing bearer token", path


def test_kill9_of_a_client_mid_stream_is_not_a_server_error(api: Api) -> None:
    """A subscriber process killed while it streams leaves the server serving."""
    script = Path(__file__).with_name("http_subscriber.py")
    out = api.env.data.parent / f"killed-{api.kind}.ndjson"
    url = f"{api.base}/views/{VIEW}/changes?snapshot=true"
    proc = subprocess.Popen([sys.executable, str(script), url, str(out), TOKEN])
    deadline = time.monotonic() + 20
    while not out.exists() or not out.read_text():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    kill9(proc)
    assert _wait_gauge(api, lambda v: v == 0) == 0
    assert api.get("/healthz").status_code == 200
