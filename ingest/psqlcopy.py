"""psqlcopy: a snapshot COPY read through `psql`, Postgres's C client, in large pipe reads.

Reading COPY through psycopg costs one libpq call and one append per row in Python (~0.2 µs
of CPU a row, all of it holding the GIL, which the other snapshot workers then wait for).
`psql` reads the same protocol messages in C and writes their bytes, unchanged, to a pipe that
viewstore reads a megabyte at a time: the same bytes, ~0.04 µs a row in viewstore and ~0.07 µs
in psql, on another core. So when a usable psql is installed, the snapshot reads through it;
otherwise through psycopg (`pgconn.copy_chunks`), which gives identical chunks.

Each COPY runs in its own psql process, with the session settings viewstore pins on every
connection (`pgconn.SESSION_SETTINGS`, which decide the text form of values) and inside the
slot's exported snapshot (`SET TRANSACTION SNAPSHOT`), so it sees exactly the rows the
psycopg path would. The password travels in psql's environment (`PGPASSWORD`), never on its
command line, where `ps` would show it. A process whose reader stops (a stop, an error, a
crash of viewstore: the pipe's read end closes, psql's next write fails) ends, and its
connection and imported snapshot with it.

Which psql: `$VIEWSTORE_PSQL` if set (empty: never use psql), else the one in
`pg_config --bindir`, else `psql` on PATH.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator

# psycopg's DSN parsing through viewstore.dsn: only ingest/pgconn.py imports psycopg here.
from viewstore.dsn import SECRET_KEYS, conninfo_to_dict, make_conninfo, redact_text, secrets_of
from viewstore.errors import SourceError
from viewstore.ingest.pgconn import SESSION_SETTINGS, connect_options, quote_ident, quote_literal

__all__ = ["PsqlCopy", "find_psql"]

_READ_BYTES = 1 << 20  # one read from the pipe (its buffer is raised to this where allowed)
_F_SETPIPE_SZ = 1031  # Linux's fcntl to resize a pipe (fcntl.F_SETPIPE_SZ from Python 3.10)
_PROBE_TIMEOUT_S = 30.0
# libpq parameters psql cannot be given through its environment or command line without
# showing them to `ps`: with one of these in the DSN, the snapshot reads through psycopg.
_SECRET_PARAMS = tuple(sorted(SECRET_KEYS - {"password"}))


def find_psql() -> str | None:
    """The psql executable to read the snapshot with, or None to read it through psycopg."""
    chosen = os.environ.get("VIEWSTORE_PSQL")
    if chosen is not None:
        return chosen or None
    # pg_config's first: PATH's psql is a Perl wrapper on Debian, ~20 ms more to start each COPY.
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            bindir = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            candidate = os.path.join(bindir, "psql")
            if os.access(candidate, os.X_OK):
                return candidate
    return shutil.which("psql")


class PsqlCopy:
    """Runs `COPY ... TO STDOUT` of an exported snapshot in psql processes on `dsn`."""

    def __init__(self, psql: str, dsn: str, *, application_name: str) -> None:
        params = {k: v for k, v in conninfo_to_dict(dsn).items() if v is not None}
        self._secrets = secrets_of(dsn)
        password = params.pop("password", None)
        params["application_name"] = application_name
        params.update(connect_options(dsn))
        self.psql = psql
        self._argv = [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", make_conninfo(**params)]
        self._env = {**os.environ, "PGCLIENTENCODING": "UTF8"}
        self._env.pop("PGPASSWORD", None)
        if password is not None:
            self._env["PGPASSWORD"] = str(password)
        self.usable_reason: str | None = None
        if any(p in params for p in _SECRET_PARAMS):
            found = ", ".join(p for p in _SECRET_PARAMS if p in params)
            self.usable_reason = f"the DSN has {found}, which psql would show to ps"

    def probe(self) -> str | None:
        """None when psql connects and copies here; else why not (for a log line)."""
        if self.usable_reason is not None:
            return self.usable_reason
        try:
            done = subprocess.run(
                self._argv,
                input=b"COPY (SELECT 1) TO STDOUT;\n",
                capture_output=True,
                env=self._env,
                timeout=_PROBE_TIMEOUT_S,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return f"{self.psql} did not run: {exc}"
        if done.returncode != 0 or done.stdout != b"1\n":
            return f"{self.psql} failed: {self._detail(done.stderr)}"
        return None

    def chunks(
        self, snapshot_name: str, copy_sql: str, chunk_bytes: int, *, raw_text: bool = False
    ) -> Iterator[bytearray]:
        """The COPY's output in chunks of whole rows of about `chunk_bytes` (within one pipe
        read), the bytes `pgconn.copy_chunks` gives. Closing the generator early ends psql.
        `raw_text`: text as stored, for a SQL_ASCII database (`pgconn.read_raw_text`)."""
        settings = dict(SESSION_SETTINGS)
        if raw_text:
            settings["client_encoding"] = "SQL_ASCII"
        script = "".join(
            f"SET {quote_ident(name)} = {quote_literal(value)};\n"
            for name, value in settings.items()
        )
        script += (
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\n"
            f"SET TRANSACTION SNAPSHOT {quote_literal(snapshot_name)};\n"
            f"{copy_sql};\nCOMMIT;\n"
        )
        # psql's messages go to a file: a pipe nobody reads until the end could fill and stall it.
        with tempfile.TemporaryFile() as errors:
            proc = subprocess.Popen(
                self._argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                env=self._env,
            )
            try:
                assert proc.stdin is not None and proc.stdout is not None
                proc.stdin.write(script.encode())
                proc.stdin.close()
                torn = False
                for chunk in _chunks(proc.stdout.fileno(), chunk_bytes):
                    if not chunk.endswith(b"\n"):
                        torn = True  # only when psql died mid-row: its status says why
                        break
                    yield chunk
                if proc.wait() != 0:
                    errors.seek(0)
                    raise SourceError(f"snapshot COPY failed: {self._detail(errors.read())}")
                if torn:
                    raise SourceError("snapshot COPY failed: psql's output ended inside a row")
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                if proc.stdout is not None:
                    proc.stdout.close()

    def _detail(self, stderr: bytes) -> str:
        text = stderr.decode("utf-8", "replace").strip() or "no message"
        return redact_text(text, *self._secrets)


def _chunks(fd: int, chunk_bytes: int) -> Iterator[bytearray]:
    """What is read from `fd` until its end, in chunks that end at a newline, cut where
    `chunk_bytes` have been read (the last one ends where the data does)."""
    with contextlib.suppress(OSError):  # a larger pipe: fewer reads, fewer trips for the GIL
        fcntl.fcntl(fd, _F_SETPIPE_SZ, _READ_BYTES)
    buf = bytearray()
    while data := os.read(fd, _READ_BYTES):
        buf += data
        if len(buf) >= chunk_bytes:
            cut = buf.rfind(b"\n") + 1
            if cut:
                yield buf[:cut]
                del buf[:cut]
    if buf:
        yield buf
