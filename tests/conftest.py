"""Test fixtures: one Postgres server per session, a fresh database per test.

The suite starts its own throwaway cluster (`viewstore.pgcluster`) unless `--test-dsn` or
`$VIEWSTORE_TEST_DSN` names a server to use instead. Every test that touches Postgres gets its
own database from `dsn`, and its teardown drops every replication slot of that database before
dropping it: a leaked slot would hold WAL on the server for ever. Fixtures:

    pg_server   session   the server: .dsn (admin database), .version, .owned, .log_path;
                          .restart() and .bindir skip the test when the server is not ours
    dsn         function  DSN of a new empty database, dropped with its slots afterwards
    names       function  unique slot and publication names; slots by those names are dropped
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import psycopg
import pytest
from helpers import create_test_database, drop_slots, drop_test_database, unique_name
from psycopg import sql

from viewstore.dsn import redact, redact_text, secrets_of
from viewstore.errors import ViewstoreError
from viewstore.pgcluster import ThrowawayPostgres, find_bindir

DSN_ENV = "VIEWSTORE_TEST_DSN"

_CLUSTER = pytest.StashKey[ThrowawayPostgres]()
_LOG_OFFSET = pytest.StashKey[int]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--test-dsn",
        metavar="DSN",
        default=os.environ.get(DSN_ENV) or None,
        help=f"run against this server instead of a throwaway cluster (default: ${DSN_ENV}); "
        "it needs wal_level=logical and a user who may create databases and slots",
    )


def pytest_report_header(config: pytest.Config) -> list[str]:
    # Runs before any fixture, so for our own cluster report the binaries rather than start it.
    dsn = config.getoption("--test-dsn")
    if dsn:
        try:
            with psycopg.connect(dsn, connect_timeout=10) as conn:
                row = conn.execute("SELECT version()").fetchone()
            version = row[0] if row else "unknown"
        except psycopg.Error as exc:
            version = f"unknown ({_scrub(exc, dsn)})"
        return [f"postgres: {version}", f"postgres dsn: {redact(dsn)}"]
    try:
        bindir = find_bindir()
    except ViewstoreError as exc:
        return [f"postgres: {exc} (Try: {exc.hint})"]
    version = subprocess.run(
        [bindir / "postgres", "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return [f"postgres: {version}, throwaway cluster from {bindir}"]


@dataclass
class PgServer:
    """The server under test; `cluster` is None when it is $VIEWSTORE_TEST_DSN's, not ours."""

    dsn: str
    version: int  # server_version_num, e.g. 150018
    cluster: ThrowawayPostgres | None = None

    @property
    def owned(self) -> bool:
        return self.cluster is not None

    @property
    def log_path(self) -> Path | None:
        return self.cluster.log_path if self.cluster else None

    @property
    def bindir(self) -> Path:
        """Server binaries and client tools (pg_recvlogical) matching the server."""
        return self._own("using the server's binaries").bindir

    def restart(self) -> None:
        """Restart the server (fast shutdown); connections to it are lost."""
        self._own("restarting the server").restart()

    def _own(self, what: str) -> ThrowawayPostgres:
        if self.cluster is None:
            pytest.skip(f"{what} needs the suite's own server; {DSN_ENV} names one it does not own")
        return self.cluster


@pytest.fixture(scope="session")
def pg_server(request: pytest.FixtureRequest) -> Iterator[PgServer]:
    """The session's server, started on first use; stops the run if it cannot be reached."""
    dsn = request.config.getoption("--test-dsn")
    if dsn:
        yield PgServer(dsn, _warm_up(dsn))
        return
    # SIGTERM (`timeout`, a cancelled CI job) would end Python without atexit hooks and leave
    # the server running; as an interrupt, it lets pytest tear the fixtures down first.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    cluster = ThrowawayPostgres()
    try:
        try:
            cluster.start()
        except ViewstoreError as exc:
            pytest.exit(f"cannot start a throwaway postgres: {exc}\nTry: {exc.hint}", returncode=3)
        request.config.stash[_CLUSTER] = cluster
        yield PgServer(cluster.dsn, _warm_up(cluster.dsn), cluster)
    finally:
        cluster.stop()
        if _CLUSTER in request.config.stash:
            del request.config.stash[_CLUSTER]
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"stopped by signal {signum}")


def _warm_up(dsn: str) -> int:
    # One connection up front: an unreachable server fails the run once, not every test.
    try:
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            return conn.info.server_version
    except psycopg.Error as exc:
        pytest.exit(
            f"cannot connect to the test server {redact(dsn)}: {_scrub(exc, dsn)}",
            returncode=3,
        )


def _scrub(exc: Exception, dsn: str) -> str:
    return redact_text(str(exc), *secrets_of(dsn))


@pytest.fixture
def dsn(pg_server: PgServer) -> Iterator[str]:
    """A DSN for a new, empty database of its own; dropped afterwards with all its slots."""
    name, test_dsn = create_test_database(pg_server.dsn)
    try:
        yield test_dsn
    finally:
        drop_test_database(pg_server.dsn, name)


@dataclass
class Names:
    """Unique names (`vs_test_<hex>`) for a test's own slots and publications."""

    slot: str = field(default_factory=unique_name)
    publication: str = field(default_factory=unique_name)
    issued: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.issued += [self.slot, self.publication]

    def new(self) -> str:
        """Another unique name, for a test that needs more than one slot or publication."""
        name = unique_name()
        self.issued.append(name)
        return name


@pytest.fixture
def names(pg_server: PgServer) -> Iterator[Names]:
    """Unique names; afterwards any slot by one of them is dropped, whatever its database.

    Publications need no cleanup here: they live in a database, dropped by `dsn`.
    """
    issued = Names()
    yield issued
    drop_slots(pg_server.dsn, sql.SQL("slot_name = ANY(%s)"), issued.issued)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # A failing test shows what the server logged while it ran (warnings and errors only).
    report: pytest.TestReport = yield
    cluster = item.config.stash.get(_CLUSTER, None)
    if cluster is None or not cluster.running or "pg_server" not in item.fixturenames:
        return report
    if report.when == "setup":
        item.stash[_LOG_OFFSET] = cluster.log_path.stat().st_size
    elif report.failed and _LOG_OFFSET in item.stash:
        with open(cluster.log_path, "rb") as log:
            log.seek(item.stash[_LOG_OFFSET])
            text = log.read().decode("utf-8", "replace")
        if text:
            report.sections.append(("postgres log", f"{cluster.log_path}:\n{text}"))
    return report


@pytest.fixture(autouse=True)
def _reap_viewstore_processes() -> Iterator[None]:
    """No `viewstore run` started by a test outlives it, even when the test fails."""
    yield
    from runner import reap_processes

    reap_processes()
