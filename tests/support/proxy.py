"""`TcpTap`: a tiny threaded TCP proxy that records every byte it forwards, in both directions.

Used to prove what does (or does not) cross the wire, and to cut connections on demand (`sever`).
The bytes are kept in total and per connection (`sessions()`), so a protocol stream can be parsed
connection by connection (see `tests.support.mqttwire`).
Every socket it opens is closed and every thread joined by `close()`, so it is safe under
``filterwarnings = error`` (no ResourceWarning, no stray threads).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType
from typing import NamedTuple

_HOST = "127.0.0.1"
_CHUNK = 65536


class TapSession(NamedTuple):
    """The bytes of one proxied connection: ``upstream`` client→target, ``downstream`` target→client."""

    upstream: bytes
    downstream: bytes


class _Pipe:
    """One proxied connection: the accepted client socket, its upstream socket and its own recording."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.up = bytearray()  # guarded by the tap's lock, like the tap's own buffers
        self.down = bytearray()
        self._lock = threading.Lock()
        self._open_pumps = 2
        self.threads: list[threading.Thread] = []

    def shutdown(self) -> None:
        """Unblock both pumps (their recv returns EOF); the last pump to exit closes the sockets."""
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def pump_done(self) -> bool:
        with self._lock:
            self._open_pumps -= 1
            last = self._open_pumps == 0
        if last:
            self.client.close()
            self.upstream.close()
        return last


class TcpTap:
    """Listen on 127.0.0.1:<free port>, forward each connection to 127.0.0.1:target_port, record the bytes.

    ``tap.port`` is where clients connect. ``captured()`` returns all bytes seen so far (both directions,
    in arrival order); ``captured_upstream()`` only client→target, ``captured_downstream()`` only
    target→client. ``sessions()`` returns the same bytes split per connection: one `TapSession`
    (upstream, downstream) per connection that reached the target, in the order they were accepted
    (a connection still open is included with what it has forwarded so far). ``sever()`` drops every
    current connection (new ones are still accepted).

    Bytes are recorded before they are forwarded, so a reply can never be recorded before the request
    that caused it, and a byte recorded as sent may not have reached the other side (the connection died).
    """

    def __init__(self, target_port: int, target_host: str = _HOST) -> None:
        self.target = (target_host, target_port)
        self._lock = threading.Lock()
        self._all = bytearray()
        self._up = bytearray()
        self._down = bytearray()
        self._pipes: set[_Pipe] = set()
        self._sessions: list[_Pipe] = []  # every connection that reached the target, in accept order
        self._closed = False
        self.connections = 0  # accepted connections that reached the target
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind((_HOST, 0))
            self._listener.listen(64)
            self._listener.settimeout(0.05)
        except OSError:
            self._listener.close()
            raise
        self.port: int = self._listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"tcptap-{self.port}", daemon=True)
        self._acceptor.start()

    # -- public API -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:PORT`` for convenience (the tap itself is protocol-agnostic)."""
        return f"mqtt://{_HOST}:{self.port}"

    def captured(self) -> bytes:
        with self._lock:
            return bytes(self._all)

    def captured_upstream(self) -> bytes:
        with self._lock:
            return bytes(self._up)

    def captured_downstream(self) -> bytes:
        with self._lock:
            return bytes(self._down)

    def sessions(self) -> list[TapSession]:
        """Per-connection bytes, in accept order (``len(tap.sessions()) == tap.connections``)."""
        with self._lock:
            return [TapSession(bytes(pipe.up), bytes(pipe.down)) for pipe in self._sessions]

    def clear(self) -> None:
        """Forget every byte recorded so far; sessions keep their place in ``sessions()``, emptied."""
        with self._lock:
            self._all.clear()
            self._up.clear()
            self._down.clear()
            for pipe in self._sessions:
                pipe.up.clear()
                pipe.down.clear()

    def sever(self) -> None:
        """Drop all current connections (both sides see EOF); the tap keeps accepting new ones."""
        with self._lock:
            pipes = list(self._pipes)
        for pipe in pipes:
            pipe.shutdown()
        self._join_pipes(pipes)

    def close(self) -> None:
        """Stop accepting, drop all connections, close every socket and join every thread. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._acceptor.join()
        self._listener.close()
        self.sever()

    def __enter__(self) -> TcpTap:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------------

    def _join_pipes(self, pipes: list[_Pipe]) -> None:
        for pipe in pipes:
            for thread in pipe.threads:
                thread.join(timeout=5)
                assert not thread.is_alive(), f"TcpTap pump {thread.name} did not stop"

    def _accept_loop(self) -> None:
        while not self._is_closed():
            try:
                client, _addr = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                upstream = socket.create_connection(self.target, timeout=2.0)
            except OSError:
                client.close()  # target down: the client sees the connection closed
                continue
            upstream.settimeout(None)
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pipe = _Pipe(client, upstream)
            pipe.threads = [
                threading.Thread(
                    target=self._pump,
                    args=(pipe, client, upstream, self._up, pipe.up),
                    daemon=True,
                    name=f"tcptap-{self.port}-up",
                ),
                threading.Thread(
                    target=self._pump,
                    args=(pipe, upstream, client, self._down, pipe.down),
                    daemon=True,
                    name=f"tcptap-{self.port}-down",
                ),
            ]
            with self._lock:
                closing = self._closed
                if not closing:
                    self._pipes.add(pipe)
                    self._sessions.append(pipe)
                    self.connections += 1
            if closing:
                client.close()
                upstream.close()
                return
            for thread in pipe.threads:
                thread.start()

    def _is_closed(self) -> bool:
        with self._lock:
            return self._closed

    def _pump(
        self, pipe: _Pipe, src: socket.socket, dst: socket.socket, record: bytearray, session: bytearray
    ) -> None:
        try:
            while True:
                try:
                    data = src.recv(_CHUNK)
                except OSError:
                    break
                if not data:
                    break
                with self._lock:
                    self._all += data
                    record += data
                    session += data
                try:
                    dst.sendall(data)
                except OSError:
                    break
        finally:
            pipe.shutdown()  # one side ended: end the whole connection
            if pipe.pump_done():
                with self._lock:
                    self._pipes.discard(pipe)
