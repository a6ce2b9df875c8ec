"""Serving a WSGI app with waitress (a production server) on a thread this object owns."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from waitress.server import create_server

from edge.errors import EdgeError

log = logging.getLogger(__name__)


class PortUnavailable(EdgeError, OSError):  # noqa: N818
    """The configured port cannot be bound; the message names the setting."""


class WsgiServer:
    """One listening socket, one serving thread; ``stop`` closes every connection and joins."""

    def __init__(self, app: Any, host: str, port: int, *, name: str, setting: str, threads: int = 4) -> None:
        self.name = name
        try:
            self._server = create_server(
                app,
                host=host,
                port=port,
                threads=threads,
                ident=None,
                clear_untrusted_proxy_headers=True,
                channel_timeout=30,
                asyncore_loop_timeout=1,  # an int: waitress truncates 0.2 to 0 and then busy-loops
            )
        except OSError as exc:
            raise PortUnavailable(
                f"{setting} {port}: cannot listen on {host}:{port} ({exc.strerror or exc})"
            ) from None
        self._thread = threading.Thread(target=self._server.run, name=f"http-{name}", daemon=True)

    @property
    def port(self) -> int:
        """The bound port (useful when 0 was asked for)."""
        return int(self._server.effective_port)  # type: ignore[union-attr]

    def start(self) -> None:
        """Start serving."""
        self._thread.start()
        log.info("%s listening on http://%s:%d", self.name, self._server.effective_host, self.port)  # type: ignore[union-attr]

    def stop(self, timeout: float = 2.0) -> None:
        """Close the listener and every open connection, then wait for the thread. Idempotent."""
        server = self._server
        # First let the worker threads finish the requests they are serving: a finishing request pulls the
        # loop's trigger, which must still be open then (closing it first raised EBADF in a worker).
        server.task_dispatcher.shutdown(timeout=int(timeout) or 1)
        if self._thread.is_alive():
            # Close the sockets from inside the serving loop (closing them from here races its select):
            # once its map is empty, waitress's loop returns.
            server.trigger.pull_trigger(lambda: self._close_all(server))  # type: ignore[union-attr]
        else:
            self._close_all(server)
        if self._thread.is_alive():
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError(f"{self.name} server thread did not stop within {timeout:.1f} s")

    @staticmethod
    def _close_all(server: Any) -> None:
        for channel in list(server._map.values()):
            if channel is not server.trigger:
                channel.close()
        server.trigger.close()


class TlsWsgiServer:
    """Like ``WsgiServer`` but over TLS, for the POS API on the shop LAN (cheroot: waitress has no TLS).

    cheroot is imported only when TLS is configured, so a node without it does not carry the module.
    """

    def __init__(
        self,
        app: Any,
        host: str,
        port: int,
        *,
        name: str,
        setting: str,
        cert: Path,
        key: Path,
        threads: int = 8,
    ) -> None:
        import ssl

        from cheroot.ssl.builtin import BuiltinSSLAdapter
        from cheroot.wsgi import Server

        self.name = name
        self._server = Server((host, port), app, numthreads=threads, server_name=name, shutdown_timeout=2)
        try:
            adapter = BuiltinSSLAdapter(str(cert), str(key))
        except (OSError, ssl.SSLError) as exc:
            raise PortUnavailable(
                f"{setting}: cannot use the TLS certificate {cert} and key {key} ({exc})"
            ) from None
        adapter.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._server.ssl_adapter = adapter
        try:
            self._server.prepare()  # binds now, so a port in use fails start-up with the setting's name
        except OSError as exc:
            raise PortUnavailable(
                f"{setting} {port}: cannot listen on {host}:{port} ({exc.strerror or exc})"
            ) from None
        self._thread = threading.Thread(target=self._server.serve, name=f"https-{name}", daemon=True)

    @property
    def port(self) -> int:
        """The bound port (useful when 0 was asked for)."""
        return int(self._server.bind_addr[1])

    def start(self) -> None:
        """Start serving."""
        self._thread.start()
        log.info("%s listening on https://%s:%d", self.name, self._server.bind_addr[0], self.port)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop accepting, finish or drop the open connections, join. Idempotent."""
        self._server.stop()
        if self._thread.is_alive():
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError(f"{self.name} server thread did not stop within {timeout:.1f} s")
