"""A real Mosquitto per test, plus `Collector`, a reconnecting paho-mqtt subscriber that records messages.

Typical use (no global state; everything lives in the test's ``tmp_path``)::

    with Mosquitto(tmp_path / "broker") as broker, Collector(broker.url) as col:
        publish(broker.url, "a/b", b"hi")
        assert col.wait_for(lambda msgs: len(msgs) >= 1, timeout=5)

Facts this relies on (see shared/TESTING-NOTES.md, Mosquitto section):

* ready when a TCP connect to the listener succeeds (~15 ms);
* as root Mosquitto drops to user ``mosquitto`` before reading TLS keys and the log file, so the config
  says ``user root`` when we are root;
* ``persistence true`` saves on SIGTERM (``stop()``) only, not on SIGKILL (``kill()``);
* a client without a certificate on an mTLS listener is refused during/just after the TLS handshake:
  paho calls ``on_disconnect`` / ``on_connect_fail``, never ``on_connect``.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, NamedTuple
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from tests.support.tls import TlsMaterial

MOSQUITTO_BIN = shutil.which("mosquitto", path="/usr/sbin:/usr/bin:/usr/local/sbin") or "/usr/sbin/mosquitto"
HOST = "127.0.0.1"
START_TIMEOUT = 5.0
SESSION_EXPIRY = 300
_RUNNING_LINE = b" running"  # "mosquitto version 2.0.11 running", logged once the listeners are bound


class BrokerError(RuntimeError):
    """Mosquitto failed to start (the message carries the tail of its log)."""


# --------------------------------------------------------------------------------------------------
# ports


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A free TCP port on 127.0.0.1, chosen *below* the kernel's ephemeral range.

    Ports from the ephemeral range (what ``bind(0)`` hands out) can be taken by any outgoing connection
    while a broker is down between kill() and restart(), and a client reconnecting to such a port while
    nothing listens can even connect to itself (TCP simultaneous open). Ports below the range avoid both.
    """
    low, _high = _ephemeral_range()
    rng = random.SystemRandom()
    lo_bound = 20000 if low > 21000 else 10000
    if low - 1 > lo_bound:
        for _ in range(200):
            port = rng.randint(lo_bound, low - 1)
            if _port_is_free(port):
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # fallback: the kernel's choice
        sock.bind((HOST, 0))
        chosen: int = sock.getsockname()[1]
        return chosen


def _tcp_ready(port: int, timeout: float = 0.25) -> bool:
    try:
        sock = socket.create_connection((HOST, port), timeout=timeout)
    except OSError:
        return False
    with sock:
        # a connect to a port nobody listens on can succeed by connecting to itself
        return bool(sock.getsockname() != sock.getpeername())


# --------------------------------------------------------------------------------------------------
# broker


class Mosquitto:
    """One Mosquitto process on 127.0.0.1:port with its config, log and persistence files in ``workdir``.

    ``port`` defaults to a free port chosen at construction, so ``.port``/``.url`` are known before
    ``start()``; ``restart()`` always reuses the same port. ``extra_config`` lines are appended verbatim.
    ``max_queued_messages`` is 0 (unlimited) by default: Mosquitto's own default (1000) silently drops
    QoS 1 messages queued for an offline persistent session beyond that.
    """

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        *,
        tls: TlsMaterial | None = None,
        require_certificate: bool = False,
        persistence: bool = False,
        max_queued_messages: int = 0,
        extra_config: str = "",
        binary: str = MOSQUITTO_BIN,
    ) -> None:
        if require_certificate and tls is None:
            raise ValueError("require_certificate needs tls material")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._port_fixed = port is not None
        self.port: int = port if port is not None else free_port()
        self.tls = tls
        self.require_certificate = require_certificate
        self.persistence = persistence
        self.max_queued_messages = max_queued_messages
        self.extra_config = extra_config
        self.binary = binary
        self.config_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self.stderr_path = self.workdir / "mosquitto.stderr"
        self.persistence_dir = self.workdir / "persistence"
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._log_offset = 0
        self.starts = 0  # how many times a process was started successfully

    # -- properties -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Mosquitto:
        """Write the config, start Mosquitto and wait (max 5 s) until its listener accepts TCP."""
        if self.running:
            raise BrokerError(f"mosquitto already running on port {self.port}")
        self._reap()
        first_try = time.monotonic()
        deadline = first_try + START_TIMEOUT
        while True:
            self._write_config()
            self._spawn()
            failure = self._wait_ready(deadline)
            if failure is None:
                self.starts += 1
                return self
            tail = self.log_tail()
            self._reap()
            in_use = "address already in use" in tail.lower()
            if in_use and not self._port_fixed and self.starts == 0:
                self.port = free_port()  # lost a race for a port we picked: pick another
                continue
            if in_use and self.starts > 0 and time.monotonic() < min(deadline, first_try + 1.0):
                time.sleep(0.05)  # restart on the same port: give a lingering socket a moment
                continue
            raise BrokerError(f"mosquitto did not start on {HOST}:{self.port}: {failure}\n{tail}")

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM and wait (Mosquitto saves persistence on SIGTERM). Idempotent."""
        self._signal(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL and wait: nothing is saved, sockets are reset by the kernel. Idempotent."""
        self._signal(signal.SIGKILL, 5.0)

    def restart(self, *, kill: bool = False) -> Mosquitto:
        """Stop (or kill) the process if it runs, then start again on the same port."""
        if kill:
            self.kill()
        else:
            self.stop()
        return self.start()

    def __enter__(self) -> Mosquitto:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of Mosquitto's log file and of its stdout/stderr."""
        parts = []
        for path in (self.log_path, self.stderr_path):
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            if text.strip():
                parts.append(f"--- {path.name} ---\n" + "\n".join(text.splitlines()[-lines:]))
        return "\n".join(parts) or "(mosquitto wrote no log)"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    # -- internals -------------------------------------------------------------------------------

    def config_text(self) -> str:
        lines = [
            "# written by tests/support/broker.py",
            "per_listener_settings false",
            "allow_anonymous true",
            f"listener {self.port} {HOST}",
            "set_tcp_nodelay true",
            f"max_queued_messages {self.max_queued_messages}",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp true",
            "log_timestamp_format %H:%M:%S",
        ]
        if self.tls is not None:
            lines += [
                f"cafile {self.tls.ca_cert}",
                f"certfile {self.tls.server_cert}",
                f"keyfile {self.tls.server_key}",
            ]
            if self.require_certificate:
                lines += ["require_certificate true", "use_identity_as_username true"]
        if self.persistence:
            self.persistence_dir.mkdir(exist_ok=True)
            lines += [
                "persistence true",
                f"persistence_location {self.persistence_dir}/",
                "persistence_file mosquitto.db",
            ]
        else:
            lines.append("persistence false")
        if os.geteuid() == 0:
            lines.append("user root")  # otherwise it drops to 'mosquitto' and cannot read our files
        if self.extra_config:
            lines.append(self.extra_config.strip())
        return "\n".join(lines) + "\n"

    def _write_config(self) -> None:
        self.config_path.write_text(self.config_text())

    def _spawn(self) -> None:
        try:
            self._log_offset = self.log_path.stat().st_size
        except FileNotFoundError:
            self._log_offset = 0
        self._stderr = self.stderr_path.open("ab")
        self._proc = subprocess.Popen(
            [self.binary, "-c", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=self._stderr,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )

    def _wait_ready(self, deadline: float) -> str | None:
        assert self._proc is not None
        delay = 0.005
        while True:
            code = self._proc.poll()
            if code is not None:
                return f"exited with status {code}"
            # A TCP connect alone could reach another process on the port (we would then be about to
            # exit with "Address already in use"): also require our own "running" log line.
            if self._logged_running() and _tcp_ready(self.port):
                return None
            if time.monotonic() >= deadline:
                return f"no TCP listener after {START_TIMEOUT} s"
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _logged_running(self) -> bool:
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                return _RUNNING_LINE in log.read()
        except OSError:
            return False

    def _signal(self, sig: signal.Signals, timeout: float) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._reap()

    def _reap(self) -> None:
        """Forget a finished (or never started) process and close our handle on its output file."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            self._proc = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


# --------------------------------------------------------------------------------------------------
# clients


class Message(NamedTuple):
    topic: str
    payload: bytes
    retain: bool


def _split_url(url: str) -> tuple[str, int, bool]:
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"unsupported broker url {url!r} (mqtt:// or mqtts://)")
    secure = parts.scheme == "mqtts"
    return parts.hostname or HOST, parts.port or (8883 if secure else 1883), secure


def make_client(
    url: str,
    *,
    client_id: str = "",
    tls: TlsMaterial | None = None,
    client_cert: bool = True,
    certfile: Path | None = None,
    keyfile: Path | None = None,
) -> tuple[mqtt.Client, str, int]:
    """A paho 2.x MQTT v5 client set up for ``url`` (TLS when mqtts); returns (client, host, port).

    For mqtts, ``tls`` must be given: its CA verifies the server; the client presents ``certfile``/
    ``keyfile`` if given, else the material's client certificate unless ``client_cert=False``.
    """
    host, port, secure = _split_url(url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    if secure:
        if tls is None:
            raise ValueError(f"{url} needs tls material (at least the CA)")
        if certfile is None and client_cert:
            certfile, keyfile = tls.client_cert, tls.client_key
        client.tls_set(
            ca_certs=str(tls.ca_cert),
            certfile=str(certfile) if certfile else None,
            keyfile=str(keyfile) if keyfile else None,
        )
    return client, host, port


def publish(
    url: str,
    topic: str,
    payload: bytes | str,
    *,
    qos: int = 1,
    retain: bool = False,
    tls: TlsMaterial | None = None,
    client_cert: bool = True,
    timeout: float = 5.0,
) -> None:
    """Connect, publish one message (waiting for its PUBACK at QoS 1), disconnect."""
    publish_many(url, [(topic, payload, retain)], qos=qos, tls=tls, client_cert=client_cert, timeout=timeout)


def publish_many(
    url: str,
    messages: Sequence[tuple[str, bytes | str, bool]],
    *,
    qos: int = 1,
    tls: TlsMaterial | None = None,
    client_cert: bool = True,
    timeout: float = 5.0,
) -> None:
    """Publish (topic, payload, retain) messages over one connection and wait until all are acknowledged."""
    client, host, port = make_client(url, tls=tls, client_cert=client_cert)
    connected = threading.Event()
    client.on_connect = lambda _c, _u, _f, rc, _p: connected.set() if not rc.is_failure else None
    client.connect(host, port, keepalive=30)
    client.loop_start()
    try:
        if not connected.wait(timeout):
            raise TimeoutError(f"publisher could not connect to {url}")
        infos = [client.publish(t, p, qos=qos, retain=r) for t, p, r in messages]
        end = time.monotonic() + timeout
        for info in infos:
            info.wait_for_publish(timeout=max(0.0, end - time.monotonic()))
            if not info.is_published():
                raise TimeoutError(f"message {info.mid} to {url} not acknowledged in {timeout} s")
    finally:
        client.disconnect()
        client.loop_stop()


class Collector:
    """A subscriber that records every message as `Message(topic, payload, retain)` and keeps reconnecting.

    * subscribes to ``topic`` at QoS 1 in every ``on_connect`` (so it survives broker restarts);
      retain handling 1 = retained messages are sent only for a new subscription, so a resumed
      session does not get them twice;
    * ``persistent=True``: fixed client id, clean_start=False and SessionExpiryInterval=300, so messages
      queued while it was away are delivered when it (or a new Collector with the same ``client_id``)
      comes back to the same broker process (or to a ``persistence=True`` broker restarted with SIGTERM);
    * QoS 1 allows duplicates after a reconnect: compare sets unless the test means duplicates.

    ``wait=True`` (default) blocks until the first subscription is acknowledged (raises TimeoutError).
    """

    def __init__(
        self,
        url: str,
        topic: str = "#",
        *,
        tls: TlsMaterial | None = None,
        client_cert: bool = True,
        certfile: Path | None = None,
        keyfile: Path | None = None,
        client_id: str | None = None,
        persistent: bool = False,
        qos: int = 1,
        wait: bool = True,
        timeout: float = 5.0,
        keepalive: int = 10,
    ) -> None:
        self.url = url
        # A flood queues the broker's PINGRESP behind thousands of messages this Python client reads one
        # by one: a keep-alive shorter than the flood makes paho drop the connection (and a clean session
        # loses what was in flight). Flood tests pass a longer one.
        self.keepalive = keepalive
        self.topic = topic
        self.qos = qos
        self.persistent = persistent
        self.client_id = client_id or f"collector-{uuid.uuid4().hex[:12]}"
        self._cond = threading.Condition()
        self._messages: list[Message] = []
        self._ready = False
        self._sub_mid: int | None = None
        self._connack_seen = False  # a CONNACK (good or bad) arrived on the current connection
        self.ready_count = 0  # subscriptions acknowledged (1 per successful (re)connect)
        self.connect_count = 0  # successful CONNACKs
        self.disconnect_count = 0
        self.failure_count = 0  # failed connection attempts (TCP/TLS errors, refused CONNACK, lost handshake)
        self.session_present: bool | None = None
        self.last_reason: str | None = None
        self._stopped = False

        self._client, host, port = make_client(
            url,
            client_id=self.client_id,
            tls=tls,
            client_cert=client_cert,
            certfile=certfile,
            keyfile=keyfile,
        )
        self._client.reconnect_delay_set(0.05, 0.5)  # type: ignore[arg-type]  # paho annotates int
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        props: Properties | None = None
        if persistent:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = SESSION_EXPIRY
        self._client.connect_async(
            host, port, keepalive=self.keepalive, clean_start=not persistent, properties=props
        )
        self._client.loop_start()
        if wait and not self.wait_ready(timeout):
            self.stop()
            raise TimeoutError(
                f"collector could not subscribe on {url} within {timeout} s ({self.last_reason})"
            )

    # -- paho callbacks (network thread) -----------------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, _userdata: Any, flags: mqtt.ConnectFlags, rc: ReasonCode, _props: Any
    ) -> None:
        with self._cond:
            self.last_reason = f"connack: {rc}"
            self._connack_seen = True
            if rc.is_failure:
                self.failure_count += 1
                self._cond.notify_all()
                return
            self.connect_count += 1
            self.session_present = bool(flags.session_present)
            options = SubscribeOptions(qos=self.qos, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
            result, mid = client.subscribe(self.topic, options=options)
            if result == MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._sub_mid = mid
            self._cond.notify_all()

    def _on_subscribe(
        self, _client: mqtt.Client, _userdata: Any, mid: int, rcs: list[ReasonCode], _props: Any
    ) -> None:
        with self._cond:
            if mid == self._sub_mid and all(not rc.is_failure for rc in rcs):
                self._ready = True
                self.ready_count += 1
            else:
                self.last_reason = f"suback: {[str(rc) for rc in rcs]}"
            self._cond.notify_all()

    def _on_connect_fail(self, _client: mqtt.Client, _userdata: Any) -> None:
        with self._cond:
            self.failure_count += 1
            self.last_reason = "connect failed"
            self._cond.notify_all()

    def _on_disconnect(
        self, _client: mqtt.Client, _userdata: Any, _flags: Any, rc: ReasonCode, _props: Any
    ) -> None:
        with self._cond:
            if not self._connack_seen:
                self.failure_count += 1  # dropped before CONNACK, e.g. refused at the TLS handshake
            self._connack_seen = False
            self._ready = False
            self._sub_mid = None
            self.disconnect_count += 1
            self.last_reason = f"disconnect: {rc}"
            self._cond.notify_all()

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self._messages.append(Message(msg.topic, bytes(msg.payload), bool(msg.retain)))
            self._cond.notify_all()

    # -- public API --------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Connected and subscribed right now."""
        with self._cond:
            return self._ready

    def wait_ready(self, timeout: float = 5.0, min_count: int = 1) -> bool:
        """Wait until subscribed on a live connection and ``ready_count >= min_count``.

        After a broker restart use ``min_count=collector.ready_count + 1`` (read before the restart)
        so a stale "ready" from before the restart cannot satisfy the wait.
        """
        with self._cond:
            return self._cond.wait_for(lambda: self._ready and self.ready_count >= min_count, timeout)

    def wait_failures(self, min_count: int = 1, timeout: float = 5.0) -> bool:
        """Wait until at least ``min_count`` connection attempts have failed."""
        with self._cond:
            return self._cond.wait_for(lambda: self.failure_count >= min_count, timeout)

    def wait_for(self, predicate: Callable[[list[Message]], bool], timeout: float = 5.0) -> bool:
        """Wait until ``predicate(messages)`` is true; it gets the live list (read it, don't keep it).

        The predicate runs under the collector's lock at most every 50 ms (not on every message, which
        would make a check over all messages quadratic in a 100,000-message test).
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                if predicate(self._messages):
                    return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(0.05, remaining))

    def wait_count(self, count: int, topic_filter: str | None = None, timeout: float = 5.0) -> bool:
        """Wait until at least ``count`` messages (matching ``topic_filter``, if given) have arrived."""
        if topic_filter is None:
            return self.wait_for(lambda msgs: len(msgs) >= count, timeout)
        # Count incrementally: a full recount under the lock every 50 ms starves the network thread
        # (70,000 topic matches hold the lock ~0.3 s on a slow host, so arrivals back up at the broker).
        seen = [0, 0]  # messages examined, matches among them

        def enough(msgs: list[Message]) -> bool:
            if len(msgs) < seen[0]:  # cleared meanwhile: start over
                seen[0] = seen[1] = 0
            for m in msgs[seen[0] :]:
                seen[1] += mqtt.topic_matches_sub(topic_filter, m.topic)
            seen[0] = len(msgs)
            return seen[1] >= count

        return self.wait_for(enough, timeout)

    def messages(self, topic_filter: str | None = None) -> list[Message]:
        with self._cond:
            msgs = list(self._messages)
        if topic_filter is None:
            return msgs
        return [m for m in msgs if mqtt.topic_matches_sub(topic_filter, m.topic)]

    def payloads(self, topic_filter: str | None = None) -> list[bytes]:
        return [m.payload for m in self.messages(topic_filter)]

    def clear(self) -> None:
        with self._cond:
            self._messages.clear()

    def stop(self) -> None:
        """Disconnect (a persistent session stays on the broker for 300 s) and stop the network thread.

        Idempotent."""
        with self._cond:
            if self._stopped:
                return
            self._stopped = True
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> Collector:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
