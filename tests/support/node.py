"""Running a real ``kiosk-edge run --simulate`` process for the tests, and talking to it."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from tests.support.broker import free_port

KIOSK_EDGE = str(Path(sys.executable).with_name("kiosk-edge"))


def base_env() -> dict[str, str]:
    """The environment minus any KIOSK_EDGE_* the developer may have exported."""
    return {k: v for k, v in os.environ.items() if not k.startswith("KIOSK_EDGE_")}


class NodeProcess:
    """One node process with its own data dir and ports; restartable (same data, same ports)."""

    def __init__(self, workdir: Path, broker_url: str, *, simulate: bool = True, **settings: str) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = workdir / "data"
        self.admin_port = free_port()
        self.kiosk_port = free_port()
        self.pos_port = free_port()
        self.log_path = workdir / "node.log"
        self.simulate = simulate
        self.env = base_env()
        self.env.update(
            KIOSK_EDGE_DATA__DIR=str(self.data_dir),
            KIOSK_EDGE_ADMIN__PORT=str(self.admin_port),
            KIOSK_EDGE_KIOSK__PORT=str(self.kiosk_port),
            KIOSK_EDGE_POS__HOST="127.0.0.1",
            KIOSK_EDGE_POS__PORT=str(self.pos_port),
            KIOSK_EDGE_MQTT__URL=broker_url,
            KIOSK_EDGE_MQTT__RECONNECT_MIN="0.05",
            KIOSK_EDGE_MQTT__RECONNECT_MAX="0.5",
            KIOSK_EDGE_NODE__STORE="store-7",
            KIOSK_EDGE_NODE__ID="till-1",
        )
        self.env.update({f"KIOSK_EDGE_{k.upper()}": v for k, v in settings.items()})
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._conn: http.client.HTTPConnection | None = None
        self.starts = 0

    # -- process ---------------------------------------------------------------------------------

    def start(self, timeout: float = 20.0) -> NodeProcess:
        """Start and wait until the admin endpoint answers."""
        self._log = self.log_path.open("ab")
        args = [KIOSK_EDGE, "run", *(["--simulate"] if self.simulate else [])]
        self.proc = subprocess.Popen(args, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            try:
                status, _ = self.request("GET", "/status", timeout=1.0)
                if status == 200:
                    self.starts += 1
                    return self
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"node did not answer within {timeout} s:\n{self.log_text()[-3000:]}")

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        return self._end(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, like a power cut."""
        self._end(signal.SIGKILL, 10.0)

    def _end(self, sig: signal.Signals, timeout: float) -> int:
        self._close_conn()
        rc = 0
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(sig)
            rc = self.proc.wait(timeout)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        return rc

    def __enter__(self) -> NodeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            with contextlib.suppress(Exception):
                self.stop()
            if self.proc is not None:
                self.kill()

    def log_text(self) -> str:
        """Everything the node logged, across restarts."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- admin endpoint ------------------------------------------------------------------------------

    def _close_conn(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        timeout: float = 10.0,
        token: bool = True,
    ) -> tuple[int, Any]:
        """One admin request over a kept-alive connection; returns (status, parsed JSON or text).

        A kept-alive connection the server closed while idle (waitress's channel timeout) fails on reuse
        before the server reads anything: that one case is retried once on a fresh connection.
        """
        reused = self._conn is not None
        if self._conn is None:
            self._conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=timeout)
        headers = {"Content-Type": "application/json"}
        if token and method == "POST":
            headers["Authorization"] = f"Bearer {self.token()}"
        try:
            self._conn.request(
                method, path, body=json.dumps(body or {}) if method == "POST" else None, headers=headers
            )
            response = self._conn.getresponse()
            raw = response.read()
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            self._close_conn()
            if not reused:
                raise
            return self.request(method, path, body, timeout=timeout, token=token)
        except (OSError, http.client.HTTPException):
            self._close_conn()
            raise
        if response.getheader("Content-Type", "").endswith("json"):
            return response.status, json.loads(raw)
        return response.status, raw.decode()

    def token(self) -> str:
        """The control token the node wrote at start."""
        return (self.data_dir / "control.token").read_text().strip()

    def tap(self, uid_hex: str) -> dict[str, Any]:
        """Inject a tap; raises unless the node accepted it."""
        status, reply = self.request("POST", "/sim/tap", {"uid": uid_hex})
        if status != 200:
            raise RuntimeError(f"tap refused: {status} {reply}")
        return dict(reply)

    def status(self) -> dict[str, Any]:
        """The node's /status document."""
        status, reply = self.request("GET", "/status")
        assert status == 200, reply
        return dict(reply)

    def cli(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run another ``kiosk-edge`` command against this node's configuration."""
        return subprocess.run(
            [KIOSK_EDGE, *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )


def tap_many(
    node: NodeProcess, count: int, *, threads: int = 4, start: int = 0, stop_on_error: bool = False
) -> tuple[list[dict[str, Any]], list[str]]:
    """Inject ``count`` taps from several client threads (own connections); returns (accepted, errors).

    An error (refused request, node gone) is recorded, not raised, so fault tests can keep streaming
    across a crash and compare what was accepted with what arrived.
    """
    import threading

    accepted: list[dict[str, Any]] = []
    errors: list[str] = []
    lock = threading.Lock()
    counter = iter(range(start, start + count))
    token = node.token()

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", node.admin_port, timeout=10)
        try:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                body = json.dumps({"uid": f"04{i:012X}"})
                try:
                    conn.request(
                        "POST",
                        "/sim/tap",
                        body=body,
                        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
                    )
                    response = conn.getresponse()
                    reply = json.loads(response.read())
                except (OSError, http.client.HTTPException, ValueError) as exc:
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", node.admin_port, timeout=10)
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}")
                    if stop_on_error:
                        return
                    time.sleep(0.01)
                    continue
                with lock:
                    if response.status == 200:
                        accepted.append(reply)
                    else:
                        errors.append(f"{response.status}: {reply}")
        finally:
            conn.close()

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return accepted, errors
