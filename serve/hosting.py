"""Hosting: where the HTTP app runs, and how it starts and stops.

`viewstore serve` runs the app (`serve.app.create_app`) over a store another process writes;
`viewstore run --http` and `viewstore demo` run it in a thread of the ingesting process
(`HttpAlongside`), reading the pipeline's own store. The socket is bound before anything starts,
so a bad or busy address fails first, as a ConfigError that names it.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import threading
from contextlib import suppress
from typing import Any

from fastapi import FastAPI

from viewstore.errors import ConfigError, NotReady
from viewstore.ingest.lsn import Lsn
from viewstore.serve.app import IngestMetrics, ServerConfig, create_app
from viewstore.store.sources import LiveSource

log = logging.getLogger("viewstore")


# -- running it --------------------------------------------------------------------------------


def parse_address(text: str) -> tuple[str, int]:
    """`HOST:PORT`, `:PORT` or `PORT` (host 127.0.0.1); ConfigError otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            f"--http {text!r}: expected HOST:PORT",
            hint="for example --http 127.0.0.1:8080 (or :8080; 0.0.0.0:8080 for every interface)",
        )
    return host, int(port)


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or a name) is reachable from this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return False  # bind_socket says what is wrong with it
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def check_exposure(host: str, token: str | None, insecure: bool) -> None:
    """Refuse to serve every view to the network without a token (issue 19.4), unless told
    `insecure`: a ConfigError before anything starts."""
    if token is not None or is_loopback(host):
        return
    if not insecure:
        raise ConfigError(
            f"--http {host}: serving a non-loopback address without a token would let anyone "
            "who can reach it read every view",
            hint="set --http-token (or $VIEWSTORE_HTTP_TOKEN), serve on 127.0.0.1, or add "
            "--http-insecure if the network is trusted",
        )
    log.warning(
        "serving %s without a token (--http-insecure): anyone who can reach it can read every view",
        host,
    )


def allowed_hosts(host: str) -> frozenset[str] | None:
    """The Host header names a server bound to `host` answers to: on loopback, its loopback
    names (against DNS rebinding, see serve.app); elsewhere any (None)."""
    if not is_loopback(host):
        return None
    return frozenset({"localhost", "127.0.0.1", "::1", host.lower()})


def http_server(app: FastAPI, host: str, port: int) -> Any:
    """A uvicorn server for `app` (call `.run()`, or set `.should_exit` to stop it)."""
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    return uvicorn.Server(config)


class _AddressInUse(ConfigError):
    pass


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: any free one); ConfigError if the address
    is taken or cannot be bound, so that a server fails before anything else starts."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise ConfigError(
            f"--http {host}:{port}: {exc.strerror}",
            hint="give an IP address or a name this machine resolves, e.g. 127.0.0.1",
        ) from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        sock.bind(addr)
        sock.listen(2048)  # connections wait in the backlog until the app starts
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise _AddressInUse(
                f"--http {host}:{port}: the address is already in use",
                hint=f"another program (another viewstore?) listens there: choose another "
                f"port, e.g. --http {host}:{port + 1 if port < 65535 else 8080}",
            ) from None
        raise ConfigError(
            f"--http {host}:{port}: cannot listen there: {exc.strerror}",
            hint="an address of this machine, e.g. 127.0.0.1:8080 (ports below 1024 need root)",
        ) from None
    return sock


class _PipelineSource(LiveSource):
    """The pipeline's own store, while the pipeline runs. Once it is told to stop, it closes its
    store as soon as the current transaction is done: from then on reads are refused (503,
    change streams end with an error line) and the applied LSN stays where it was, rather than
    reading a store that is closing."""

    def __init__(self, pipeline: Any) -> None:
        super().__init__(pipeline.store)
        self.pipeline = pipeline
        self.last = Lsn(0)

    @property
    def stopping(self) -> bool:
        """Told to stop, or failing: its store is about to close."""
        return bool(self.pipeline.stop.is_set() or self.pipeline.closing.is_set())

    def read(self) -> Any:
        if self.stopping:
            raise NotReady("viewstore is stopping", hint="reconnect once it runs again")
        return super().read()

    def refresh(self) -> Lsn:
        if not self.stopping:
            with suppress(Exception):  # the pipeline failed and closed its store: stay put
                self.last = super().refresh()
        return self.last


class HttpAlongside:
    """The HTTP API and the leaderboard page in a thread of the ingesting process, reading the
    pipeline's own store (`viewstore run --http`, `viewstore demo`).

    The socket is bound here, so a bad or busy address is a ConfigError before anything starts
    (with `any_port_if_busy`, a busy port is replaced by a free one: compare `port` with
    `requested_port`). A non-loopback address without a token is refused unless `insecure`
    (check_exposure). Requests wait in the backlog until the pipeline has opened its store.
    `url` is the page's address; `stop()` ends the server, dropping open change streams (their
    subscribers resume with `since=`).
    """

    def __init__(
        self,
        pipeline: Any,
        address: str,
        token: str | None = None,
        *,
        any_port_if_busy: bool = False,
        insecure: bool = False,
    ) -> None:
        self.pipeline = pipeline
        self.host, self.requested_port = parse_address(address)
        self.token = token
        check_exposure(self.host, token, insecure)
        try:
            self.socket = bind_socket(self.host, self.requested_port)
        except _AddressInUse:
            if not any_port_if_busy:
                raise
            self.socket = bind_socket(self.host, 0)
        self.port: int = self.socket.getsockname()[1]
        self.server: Any = None
        self._stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, name="http", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        """Where to point a browser (a wildcard address is browsed on loopback)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}/"

    def _serve(self) -> None:
        pipeline = self.pipeline
        while not pipeline.opened.wait(0.1):
            if self._stopping.is_set():  # the pipeline failed before opening its store
                self.socket.close()
                return
        applier = lambda: pipeline.applier  # noqa: E731 - rebuilt on every reconnect
        ingest = IngestMetrics(
            received_lsn=lambda: pipeline.received_lsn,
            apply_latency=lambda: applier().latency if applier() else (0, 0.0, 0.0),
        )
        config = ServerConfig(
            _PipelineSource(pipeline),
            self.token,
            ingest=ingest,
            allowed_hosts=allowed_hosts(self.host),
        )
        self.server = http_server(create_app(config), self.host, self.port)
        if self._stopping.is_set():
            self.socket.close()
            return
        log.info("serving %s", self.url)
        self.server.run(sockets=[self.socket])

    def stop(self) -> None:
        """Stop serving. Change streams never end by themselves: their connections are closed,
        so that the server can finish the other requests and shut down cleanly."""
        self._stopping.set()
        server = self.server
        if server is not None:
            server.should_exit = True
            if server.started:
                with suppress(RuntimeError):  # the server's loop has already ended
                    loop = server.servers[0].get_loop()
                    loop.call_soon_threadsafe(self._drop_connections)
            self.thread.join(2)
            server.force_exit = True  # a client that does not take its last bytes
        self.thread.join(5)
        self.socket.close()

    def _drop_connections(self) -> None:  # in the server's event loop
        for connection in list(self.server.server_state.connections):
            connection.transport.close()
