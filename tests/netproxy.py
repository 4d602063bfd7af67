"""A TCP proxy in front of Postgres that can go silent: the network fault of issue 19.2.

`freeze()` makes the connections open at that moment stop forwarding in both directions
without closing: no FIN, no RST, TCP itself stays healthy (the proxy's kernel acknowledges what
arrives), so nothing fails on either side, exactly like a path that drops packets or a NAT
entry that vanished. Connections opened afterwards are forwarded as usual, so a client that
gives up on the dead one can come back through the same address.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading

from psycopg.conninfo import conninfo_to_dict, make_conninfo


class FreezingProxy:
    def __init__(self, dsn: str) -> None:
        params = conninfo_to_dict(dsn)
        self.target = (str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432))
        self.listener = socket.create_server(("127.0.0.1", 0))
        params["host"], params["port"] = "127.0.0.1", str(self.listener.getsockname()[1])
        self.dsn = make_conninfo(**params)
        self._pairs: list[_Pair] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def freeze(self, *, replication_only: bool = False) -> int:
        """Silence the connections open now (only walsender ones if asked); returns how many."""
        with self._lock:
            chosen = [p for p in self._pairs if p.replication or not replication_only]
            for pair in chosen:
                pair.frozen.set()
            return len(chosen)

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        with self._lock:
            for pair in self._pairs:
                pair.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            pair = _Pair(client, server)
            with self._lock:
                self._pairs.append(pair)
            threading.Thread(target=pair.pump, daemon=True).start()


class _Pair:
    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client, self.server = client, server
        self.frozen = threading.Event()
        self.replication = False  # the startup packet asked for a walsender
        self._client_reads = 0  # the startup packet follows an SSLRequest, if any

    def pump(self) -> None:
        peers = {self.client: self.server, self.server: self.client}
        try:
            while not self.frozen.is_set():
                ready, _, _ = select.select(list(peers), [], [], 0.05)
                if self.frozen.is_set():
                    break
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return self.close()
                    if sock is self.client and self._client_reads < 2:
                        self._client_reads += 1
                        self.replication |= b"replication\x00" in data
                    peers[sock].sendall(data)
        except OSError:
            self.close()
        # Frozen: both sockets stay open and unread until the test ends.

    def close(self) -> None:
        for sock in (self.client, self.server):
            with contextlib.suppress(OSError):
                sock.close()
