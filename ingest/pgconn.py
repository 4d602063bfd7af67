"""Postgres connections: the only module of viewstore's ingest side that imports psycopg.

Two kinds of connection, both with the session settings that change how values print pinned,
so that COPY text and pgoutput text of the same value are byte-identical whatever the server,
database or role defaults say (`ALTER DATABASE ... SET timezone` would otherwise change how a
timestamptz prints between the snapshot and the stream):

- `connect`: an ordinary autocommit connection for catalog queries and the snapshot COPY.
- `ReplicationConnection`: a `replication=database` walsender connection. It speaks only the
  simple query protocol (hence `prepare_threshold=None` and no bound parameters: names are
  quoted here) and streams CopyData through libpq directly, since psycopg has no replication
  API beyond entering COPY_BOTH.

psycopg exceptions stop here: callers see `SourceError` (transient when the connection dropped)
or `SlotError`, with the DSN's password scrubbed from every message.
"""

from __future__ import annotations

import select
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import psycopg
from psycopg import errors as pgerrors
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict

from viewstore.dsn import redact, redact_text, secrets_of
from viewstore.errors import SlotError, SourceError
from viewstore.ingest.lsn import Lsn
from viewstore.ingest.walproto import encode_standby_status

# Settings that decide the text form of values (see the module docstring).
SESSION_SETTINGS = (
    ("TimeZone", "UTC"),
    ("DateStyle", "ISO, MDY"),
    ("IntervalStyle", "postgres"),
    ("extra_float_digits", "3"),
    ("bytea_output", "hex"),
    ("client_encoding", "UTF8"),
)


def quote_ident(name: str) -> str:
    """Quote an identifier for SQL text (the replication protocol has no bound parameters)."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """Quote a string literal for SQL text; standard_conforming_strings is on since PG 9.1."""
    return "'" + value.replace("'", "''") + "'"


def qualified(schema: str, table: str) -> str:
    return f"{quote_ident(schema)}.{quote_ident(table)}"


@contextmanager
def translated_errors(dsn: str, doing: str) -> Iterator[None]:
    """Turn psycopg errors into viewstore errors that name what was being done."""
    try:
        yield
    except psycopg.Error as exc:
        raise translate(exc, dsn, doing) from None


def translate(exc: psycopg.Error, dsn: str, doing: str) -> SlotError | SourceError:
    """The viewstore error for a psycopg error, with the DSN's password scrubbed."""
    # Parsing the DSN costs microseconds: only on the error path, never per message.
    detail = redact_text(str(exc).strip(), *secrets_of(dsn))
    if isinstance(exc, pgerrors.ObjectInUse):
        return SlotError(
            f"{doing}: {detail}",
            hint="another consumer uses this replication slot: stop it, or end its walsender "
            "with SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots",
        )
    if isinstance(exc, psycopg.OperationalError):
        return SourceError(
            f"{doing}: {detail} ({redact(dsn)})",
            hint="check that Postgres is running and the DSN is right",
            transient=True,
        )
    return SourceError(f"{doing}: {detail}")


def _pin_settings(conn: psycopg.Connection[Any]) -> None:
    for name, value in SESSION_SETTINGS:
        conn.execute(f"SET {quote_ident(name)} = {quote_literal(value)}")


# libpq options every connection gets unless its DSN sets them. libpq waits without limit by
# default: for a connection to a server that accepts TCP but never answers, and for a reply on
# a network path that died without a reset (a NAT entry or a firewall state dropped). TCP
# keepalives find a dead path when the connection is idle; tcp_user_timeout when data sent is
# never acknowledged. (Behind a proxy that still acknowledges, neither can: the replication
# stream also pings the server itself, see store.pipeline's stream_silence.) libpq ignores the
# TCP ones on a Unix-domain socket.
CONNECT_OPTIONS: dict[str, int] = {
    "connect_timeout": 10,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,  # ms
}


def connect_options(dsn: str) -> dict[str, Any]:
    """libpq options viewstore adds to every connection, unless the DSN sets them itself."""
    try:
        given = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        given = {}  # psycopg.connect reports a malformed DSN, in its own words
    return {k: v for k, v in CONNECT_OPTIONS.items() if k not in given}


def server_encoding(conn: psycopg.Connection[Any]) -> str:
    """The database's encoding as Postgres names it (UTF8, LATIN1, SQL_ASCII...)."""
    return conn.info.parameter_status("server_encoding") or ""


def read_raw_text(conn: psycopg.Connection[Any]) -> None:
    """From now on the server sends text as stored, unconverted and unchecked: for a SQL_ASCII
    database, whose bytes viewstore decodes itself (ingest.sourcetext). psycopg then returns
    text columns as bytes: only for connections that COPY or stream."""
    with translated_errors(conn.info.dsn, "cannot set client_encoding"):
        conn.execute("SET client_encoding = 'SQL_ASCII'")


def read_text_as(conn: psycopg.Connection[Any], encoding: str) -> None:
    """Read a SQL_ASCII database's text as `encoding` (a Postgres name): the server passes it
    on unconverted and psycopg decodes it in that encoding, as ingest.sourcetext does."""
    with translated_errors(conn.info.dsn, "cannot set client_encoding"):
        conn.execute(f"SET client_encoding = {quote_literal(encoding)}")


def connect(dsn: str, *, application_name: str = "viewstore") -> psycopg.Connection[Any]:
    """An autocommit connection with the value-printing settings pinned."""
    with translated_errors(dsn, "cannot connect to Postgres"):
        conn = psycopg.connect(
            dsn, autocommit=True, application_name=application_name, **connect_options(dsn)
        )
        _pin_settings(conn)
        return conn


def query(conn: psycopg.Connection[Any], sql: str, params: Sequence[Any] = ()) -> list[tuple]:
    """Run one statement and return its rows (an empty list for statements without rows)."""
    with translated_errors(conn.info.dsn, "query failed"):
        cur = conn.execute(sql, params)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


def copy_out(conn: psycopg.Connection[Any], sql: str) -> Iterator[memoryview]:
    """Stream a `COPY ... TO STDOUT` (text format): one CopyData message, one row."""
    with translated_errors(conn.info.dsn, "snapshot COPY failed"):
        cur = conn.cursor()
        with cur.copy(sql) as copy:  # type: ignore[arg-type]
            yield from copy


def copy_chunks(conn: psycopg.Connection[Any], sql: str, chunk_bytes: int) -> Iterator[bytearray]:
    """Stream a `COPY ... TO STDOUT` (text format) as whole rows, `chunk_bytes` or more at a time.

    The snapshot's hot loop (issue 14): one libpq call and one append per row, nothing else, so
    that Python keeps up with Postgres's COPY (psycopg's `Copy` iterator costs twice as much per
    row). Rows go into one `bytearray`, whose bytes the caller parses as a whole. The socket
    is waited on with `select`, which lets other threads run meanwhile. A caller that stops
    before the end must close the connection: it is still in the COPY.
    """
    pgconn = conn.pgconn
    with translated_errors(conn.info.dsn, "snapshot COPY failed"):
        pgconn.send_query(sql.encode())
        while pgconn.flush():  # psycopg's connections are non-blocking: send all of it
            select.select([], [pgconn.socket], [])
        result = pgconn.get_result()
        if result is None or result.status != pq.ExecStatus.COPY_OUT:
            _drain(pgconn)
            raise psycopg.OperationalError(_result_error(result, pgconn) or "COPY did not start")
        get = pgconn.get_copy_data
        sock = pgconn.socket
        buf = bytearray()
        while True:
            nbytes, data = get(1)
            if nbytes > 0:
                buf += data
                if len(buf) >= chunk_bytes:
                    yield buf
                    buf = bytearray()
            elif nbytes == 0:
                select.select([sock], [], [])
                pgconn.consume_input()
            else:
                break
        error = None
        while (result := pgconn.get_result()) is not None:
            if result.status != pq.ExecStatus.COMMAND_OK:
                error = _result_error(result, pgconn)
        if error is not None or nbytes == -2:
            raise psycopg.OperationalError(error or "COPY failed")
        if buf:
            yield buf


def _drain(pgconn: Any) -> None:
    while pgconn.get_result() is not None:
        pass


def _result_error(result: Any, pgconn: Any) -> str:
    message = result.error_message if result is not None else b""
    return (message or pgconn.error_message or b"").decode(errors="replace").strip()


class ReplicationConnection:
    """A walsender connection: slot creation, then a stream of CopyData frames."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        with translated_errors(dsn, "cannot open a replication connection to Postgres"):
            self.conn = psycopg.connect(
                dsn,
                replication="database",
                autocommit=True,
                prepare_threshold=None,
                application_name="viewstore",
                **connect_options(dsn),
            )
            _pin_settings(self.conn)
        self.pgconn = self.conn.pgconn
        # Its walsender's pid: after this connection is found dead, that walsender may still
        # hold the slot until wal_sender_timeout; the next connection may end it.
        self.backend_pid: int = self.pgconn.backend_pid

    def identify_system(self) -> tuple[str, int, Lsn, str]:
        """(system id, timeline, current WAL flush position, database name)."""
        with translated_errors(self.dsn, "IDENTIFY_SYSTEM failed"):
            row = self.conn.execute("IDENTIFY_SYSTEM").fetchone()
        assert row is not None
        return str(row[0]), int(row[1]), Lsn.parse(row[2]), row[3]

    def timeline_history(self, timeline: int) -> str:
        """The history file of `timeline` (TIMELINE_HISTORY): one line per ancestor timeline,
        `tli<TAB>switchpoint<TAB>reason`, the switchpoint being where that timeline ended."""
        with translated_errors(self.dsn, "TIMELINE_HISTORY failed"):
            row = self.conn.execute(f"TIMELINE_HISTORY {int(timeline)}").fetchone()
        assert row is not None
        content = row[1]
        return bytes(content).decode() if isinstance(content, bytes | memoryview) else str(content)

    def create_slot(self, slot: str, *, temporary: bool = False) -> tuple[Lsn, str]:
        """Create a pgoutput slot exporting its snapshot: (consistent point, snapshot name).

        The snapshot stays importable until this connection runs its next command, so the
        caller must finish every `SET TRANSACTION SNAPSHOT` before calling anything else here.
        A temporary slot disappears with this connection (`verify` uses one only to learn a
        snapshot and the LSN it is exactly as of).
        """
        kind = "TEMPORARY LOGICAL" if temporary else "LOGICAL"
        with translated_errors(self.dsn, f"cannot create replication slot {slot}"):
            row = self.conn.execute(
                f"CREATE_REPLICATION_SLOT {quote_ident(slot)} {kind} pgoutput EXPORT_SNAPSHOT"
            ).fetchone()
        assert row is not None
        return Lsn.parse(row[1]), row[2]

    def cancel(self) -> None:
        """Ask the server to cancel the command running on this connection (any thread)."""
        with suppress(Exception):
            self.conn.cancel_safe()

    def start(self, slot: str, lsn: Lsn, publication: str, *, raw_text: bool = False) -> None:
        """START_REPLICATION at `lsn` (the server starts at max(lsn, confirmed_flush_lsn)).
        `raw_text`: values as stored, for a SQL_ASCII database (see `read_raw_text`)."""
        if raw_text:
            read_raw_text(self.conn)
        options = f"proto_version '1', publication_names {quote_literal(quote_ident(publication))}"
        with translated_errors(self.dsn, f"cannot start replication from slot {slot}"):
            self.conn.execute(
                f"START_REPLICATION SLOT {quote_ident(slot)} LOGICAL {lsn} ({options})"
            )

    def messages(self) -> Iterator[memoryview]:
        """The CopyData payloads libpq has already received, without waiting for more.

        The hot path of ingest: one libpq call per message and nothing else, so the caller
        loops over whatever arrived in one go and checks its timers between batches.
        """
        get = self.pgconn.get_copy_data
        try:
            while True:
                nbytes, data = get(1)
                if nbytes > 0:
                    yield data  # type: ignore[misc]
                elif nbytes == 0:
                    return
                else:
                    self._raise_stream_end()
        except psycopg.Error as exc:
            raise translate(exc, self.dsn, "replication stream failed") from None

    def wait(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for data, then take in what arrived (never blocks
        longer; with 0 it only reads what the socket already holds)."""
        pgconn = self.pgconn
        try:
            if timeout > 0:
                select.select([pgconn.socket], [], [], timeout)
            pgconn.consume_input()
        except psycopg.Error as exc:
            raise translate(exc, self.dsn, "replication stream failed") from None

    def _raise_stream_end(self) -> None:
        result = self.pgconn.get_result()
        message = (
            result.error_message.decode(errors="replace").strip()
            if result is not None and result.error_message
            else self.pgconn.error_message.decode(errors="replace").strip()
        )
        raise psycopg.OperationalError(message or "the server ended the replication stream")

    def send_status(self, write: Lsn, flush: Lsn, *, reply: bool = False) -> None:
        """Standby status update. `flush` must be durable in the store: the server frees WAL
        and moves confirmed_flush_lsn up to it, and never sends what lies before it again."""
        with translated_errors(self.dsn, "cannot send standby status"):
            self.pgconn.put_copy_data(encode_standby_status(write, flush, flush, reply=reply))
            self.pgconn.flush()

    def close(self) -> None:
        with suppress(Exception):
            self.conn.close()
