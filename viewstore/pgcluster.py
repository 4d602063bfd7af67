"""Throwaway Postgres: a private, disposable cluster for the test suite and `viewstore demo`.

`ThrowawayPostgres` runs initdb in a fresh temporary directory, starts a server configured for
logical replication on a free port of 127.0.0.1, and removes everything on `stop()`. It trades
durability for speed (fsync, full_page_writes and synchronous_commit are off): nothing in it is
meant to survive the process that started it, and an atexit hook stops it if the caller forgets.
Postgres refuses to run as root, so as root the server runs as Debian's `postgres` user.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from psycopg.conninfo import make_conninfo

from viewstore.errors import ViewstoreError

BINDIR_ENV = "VIEWSTORE_PG_BINDIR"
SUPERUSER = "postgres"

# Where Debian's postgresql-NN packages put the server; /usr/local/bin may hold other tools
# that happen to be called pg_ctl, so this is searched before PATH.
_DEBIAN_ROOT = Path("/usr/lib/postgresql")
_SERVER_PROGRAMS = ("postgres", "initdb", "pg_ctl")
_RUN_AS = "postgres"  # the unprivileged user that runs the server when we are root

_DEFAULT_SETTINGS = {
    "wal_level": "logical",
    "max_replication_slots": "32",
    "max_wal_senders": "32",
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "log_min_messages": "warning",
}
_SETTING_NAME = re.compile(r"[a-z_][a-z0-9_.]*")
_START_TIMEOUT = 60  # seconds pg_ctl waits for the server to accept connections
_START_ATTEMPTS = 3  # another process may take the free port between our probe and the bind


def find_bindir() -> Path:
    """The directory holding `postgres`, `initdb` and `pg_ctl`.

    `$VIEWSTORE_PG_BINDIR` if set, else the newest `/usr/lib/postgresql/*/bin`, else the
    directory that `postgres` on PATH resolves to (its own pg_ctl, not PATH's).
    """
    configured = os.environ.get(BINDIR_ENV)
    if configured:
        if _has_server(Path(configured)):
            return Path(configured)
        raise ViewstoreError(
            f"postgres server binaries not found: {BINDIR_ENV}={configured} lacks one of "
            + ", ".join(_SERVER_PROGRAMS),
            hint=f"point {BINDIR_ENV} at a directory like /usr/lib/postgresql/15/bin, or unset it",
        )
    versions = sorted(_DEBIAN_ROOT.glob("*/bin"), key=lambda p: _version_key(p.parent.name))
    for bindir in reversed(versions):
        if _has_server(bindir):
            return bindir
    on_path = shutil.which("postgres")
    if on_path and _has_server(Path(on_path).resolve().parent):
        return Path(on_path).resolve().parent
    raise ViewstoreError("postgres server binaries not found", hint="apt-get install postgresql")


def _has_server(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in _SERVER_PROGRAMS)


def _version_key(name: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in name.split("."))
    except ValueError:
        return (-1,)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ThrowawayPostgres:
    """A Postgres cluster that lives in a temporary directory until `stop()`.

    `settings` are extra or overriding postgresql.conf entries, for example
    `{"wal_level": "replica"}` to provoke a preflight error. Use it as a context manager, or
    call `start()` and `stop()`; `stop()` is idempotent and also runs at interpreter exit.
    """

    superuser = SUPERUSER

    def __init__(
        self, settings: Mapping[str, str] | None = None, *, bindir: str | Path | None = None
    ) -> None:
        for name in settings or {}:
            if not _SETTING_NAME.fullmatch(name):
                raise ViewstoreError(f"bad postgres setting name: {name!r}")
        self.settings = {**_DEFAULT_SETTINGS, **(settings or {})}
        self._bindir = Path(bindir) if bindir is not None else None
        self._tmp: Path | None = None
        self._port: int | None = None
        self._running = False

    # -- where things are

    @property
    def bindir(self) -> Path:
        """The server binaries in use; client tools such as pg_recvlogical sit beside them."""
        if self._bindir is None:
            self._bindir = find_bindir()
        return self._bindir

    @property
    def base_dir(self) -> Path:
        if self._tmp is None:
            raise ViewstoreError("throwaway postgres is not started", hint="call start() first")
        return self._tmp

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def log_path(self) -> Path:
        """The server log; kept until `stop()` so a failing test can show it."""
        return self.base_dir / "postgres.log"

    @property
    def socket_dir(self) -> Path:
        return self.base_dir / "sock"

    @property
    def port(self) -> int:
        if self._port is None:
            raise ViewstoreError("throwaway postgres is not started", hint="call start() first")
        return self._port

    @property
    def dsn(self) -> str:
        """A libpq key=value DSN for the `postgres` database, as the superuser, over TCP."""
        return make_conninfo(
            host="127.0.0.1", port=str(self.port), user=self.superuser, dbname="postgres"
        )

    @property
    def running(self) -> bool:
        return self._running

    # -- lifecycle

    def start(self) -> ThrowawayPostgres:
        """initdb, then start the server and wait until it accepts connections."""
        if self._tmp is not None:
            raise ViewstoreError("throwaway postgres is already started")
        bindir = self.bindir
        self._tmp = Path(tempfile.mkdtemp(prefix="viewstore-pg-"))
        atexit.register(self.stop)
        try:
            self._hand_over(self._tmp)
            self.socket_dir.mkdir()
            self._hand_over(self.socket_dir)
            self._initdb(bindir)
            for attempt in range(1, _START_ATTEMPTS + 1):
                self._port = int(self.settings.get("port") or _free_port())
                self._write_settings()
                result = self._pg_ctl("start", "-l", str(self.log_path))
                if result.returncode == 0:
                    break
                if attempt == _START_ATTEMPTS or "port" in self.settings or not self._lost_port():
                    raise self._failure("postgres did not start", result)
            self._running = True
        except BaseException:
            self.stop()
            raise
        return self

    def restart(self) -> None:
        """Restart the server (`pg_ctl restart -m fast`), keeping its data and port."""
        result = self._pg_ctl("restart", "-m", "fast", "-l", str(self.log_path))
        if result.returncode != 0:
            self._running = False
            raise self._failure("postgres did not restart", result)
        self._running = True

    def shutdown(self, mode: str = "fast") -> None:
        """Stop the server but keep its data (`pg_ctl stop -m mode`; `immediate` is a crash:
        no shutdown checkpoint, recovery on the next start). `boot()` starts it again."""
        result = self._pg_ctl("stop", "-m", mode)
        self._running = False
        if result.returncode != 0:
            raise self._failure("postgres did not stop", result)

    def boot(self) -> None:
        """Start the server again on its data directory and port, after `shutdown()`."""
        result = self._pg_ctl("start", "-l", str(self.log_path))
        if result.returncode != 0:
            raise self._failure("postgres did not start", result)
        self._running = True

    def stop(self) -> None:
        """Stop the server and delete its directory. Safe to call more than once."""
        if self._tmp is None:
            return
        try:
            if self._running or (self.data_dir / "postmaster.pid").exists():
                # Immediate: the data is about to be deleted, a shutdown checkpoint is wasted work.
                result = self._pg_ctl("stop", "-m", "immediate")
                if result.returncode != 0:
                    self._kill_postmaster()
        finally:
            self._running = False
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
            self._port = None
            atexit.unregister(self.stop)

    def __enter__(self) -> ThrowawayPostgres:
        if self._tmp is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = f"port {self._port} in {self._tmp}" if self._tmp else "not started"
        return f"<ThrowawayPostgres {where}>"

    # -- internals

    def _initdb(self, bindir: Path) -> None:
        result = self._run(
            bindir / "initdb",
            "-D", str(self.data_dir),
            "-U", self.superuser,
            "--auth=trust",
            "-E", "UTF8",
            "--locale=C",
            "--no-sync",  # throwaway: nothing needs to survive a machine crash
        )  # fmt: skip
        if result.returncode != 0:
            hint = None
            if self._as_user():
                hint = f"the {_RUN_AS} user must be able to reach {self._tmp}; try TMPDIR=/tmp"
            raise ViewstoreError(
                f"initdb failed with exit status {result.returncode}:\n{_output(result)}", hint
            )

    def _write_settings(self) -> None:
        settings = {
            **self.settings,
            "port": str(self._port),
            "unix_socket_directories": str(self.socket_dir),
        }
        lines = [f"{name} = {_quote(value)}" for name, value in settings.items()]
        # Appended, so on a retry with another port the last `port` line wins.
        with open(self.data_dir / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write("\n# viewstore throwaway cluster\n" + "\n".join(lines) + "\n")

    def _pg_ctl(self, command: str, *args: str) -> subprocess.CompletedProcess[str]:
        return self._run(
            self.bindir / "pg_ctl", command, "-D", str(self.data_dir), "-w",
            "-t", str(_START_TIMEOUT), *args,
        )  # fmt: skip

    def _run(self, program: Path, *args: str) -> subprocess.CompletedProcess[str]:
        # Libpq and server variables from the caller's shell (PGDATA, PGPORT...) must not leak in.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        return subprocess.run(
            [*self._as_user(), str(program), *args],
            cwd=self._tmp,  # the other user may not be allowed into our working directory
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_START_TIMEOUT + 30,
            check=False,
        )

    def _as_user(self) -> Sequence[str]:
        """The command prefix that drops root privileges, or nothing when we are not root."""
        if os.geteuid() != 0:
            return ()
        if shutil.which("runuser"):
            return ("runuser", "-u", _RUN_AS, "--")
        return ("setpriv", f"--reuid={_RUN_AS}", f"--regid={_RUN_AS}", "--init-groups", "--")

    def _hand_over(self, path: Path) -> None:
        if os.geteuid() != 0:
            return
        try:
            user = pwd.getpwnam(_RUN_AS)
        except KeyError:
            raise ViewstoreError(
                f"cannot run postgres as root: there is no {_RUN_AS!r} user to run it as",
                hint="apt-get install postgresql (it creates the user), or run as another user",
            ) from None
        os.chown(path, user.pw_uid, user.pw_gid)

    def _lost_port(self) -> bool:
        tail = self._log_tail()
        return "could not bind" in tail or "already in use" in tail

    def _failure(self, what: str, result: subprocess.CompletedProcess[str]) -> ViewstoreError:
        return ViewstoreError(
            f"{what}: pg_ctl exited with status {result.returncode}\n{_output(result)}"
            f"--- last lines of {self.log_path} ---\n{self._log_tail()}",
            hint=f"the server log above says why; {BINDIR_ENV} selects other binaries",
        )

    def _log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)\n"
        return "".join(text.splitlines(keepends=True)[-lines:])

    def _kill_postmaster(self) -> None:
        # Last resort when pg_ctl cannot stop it: the first line of postmaster.pid is its pid.
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
            os.kill(pid, signal.SIGKILL)


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _output(result: subprocess.CompletedProcess[str]) -> str:
    text = (result.stdout or "") + (result.stderr or "")
    return text if text.endswith("\n") or not text else text + "\n"
