"""The MQTT relay: moves the outbox to the broker, QoS 1, in ``seq`` order, deleting only after PUBACK.

Design (see docs/architecture.md):

* One thread owns one paho-mqtt client per connection and drives it with paho's external-loop API
  (``loop_read``/``loop_write``/``loop_misc`` under our own ``select``), so publishing, PUBACK handling and
  waking on new events happen in one thread with no locks and no polling interval.
* A fresh client per connection: paho keeps in-flight messages only in memory and would re-send them on
  its own after a reconnect; our outbox is the source of truth, so each connection starts from the oldest
  unacknowledged row instead. Duplicates are possible (at-least-once); the receiver deduplicates on ``id``.
* The in-flight window is bounded (default 100): paho 2.2 reuses message ids past 65,535 outstanding QoS 1
  messages and loses them silently, and scans all in-flight messages on each PUBACK.
* Reconnects forever with exponential back-off and full jitter, so a fleet does not stampede a broker
  that comes back.
* Presence: a retained ``status`` message (online, alarms) after each connect, and an LWT that marks
  the node offline if the connection dies; a clean stop publishes "offline, shutdown" itself.
* Requests (MQTT v5 request/response, e.g. a reward redemption the central receiver must approve): not
  events, so they bypass the outbox — a request that cannot be sent now fails now. Each carries a random
  correlation id, the node's reply topic and a message expiry equal to the caller's timeout, so the
  central side never acts on one the till has given up on; replies are matched by correlation id.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import select
import socket
import ssl
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from cloud_sync.envelope import SignedMessage
from cloud_sync.outbox import Outbox, OutboxReader, QueuedEvent

log = logging.getLogger(__name__)

FETCH_BATCH = 500
ACK_BATCH = 256
MISC_INTERVAL = 1.0
RECV_CHUNK = 65536
STOP_GRACE = 3.0
#: Repeated identical connection errors are logged at most this often (spares the SD card).
ERROR_LOG_INTERVAL = 60.0


@dataclass(frozen=True, slots=True)
class RelayOptions:
    """Everything the relay needs from configuration, already validated."""

    host: str
    port: int
    client_id: str
    status_topic: str
    tls: ssl.SSLContext | None = None
    username: str | None = None
    password: str | None = None
    keepalive: int = 30
    window: int = 100
    connect_timeout: float = 5.0
    reconnect_min: float = 0.5
    reconnect_max: float = 30.0
    display_url: str = ""
    #: where the central receiver answers this node's requests (subscribed on every connect)
    reply_topic: str | None = None
    #: the central receiver's commands to this node, ``{root}/{store}/{node}/cmd`` (``/+`` is subscribed)
    command_prefix: str | None = None
    #: called on the relay thread with (command name, payload); must be quick and must not raise
    on_command: Callable[[str, bytes], None] | None = None
    #: retained configuration the central receiver publishes for every node (the earn rules)
    rules_topic: str | None = None
    on_rules: Callable[[bytes], None] | None = None


#: Builds a sealed presence message: (state, reason) -> message.
PresenceFactory = Callable[[str, str], SignedMessage]


class _BufferedClient(mqtt.Client):
    """A paho client that reads the socket in large chunks.

    paho reads each packet a few bytes at a time — three ``recv`` calls per PUBACK — and every call releases
    and re-takes the GIL. Under load those rapid hand-offs starve the outbox writer, which needs the GIL back
    after each of its own SQLite calls (the convoy effect). One large read now serves many packets from
    memory; the relay loop drains the buffer before it waits in ``select`` again.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rbuf = bytearray()

    def _sock_recv(self, bufsize: int) -> bytes:
        if not self._rbuf:
            data = super()._sock_recv(RECV_CHUNK)
            if not data:
                return data  # end of stream: paho treats it as a lost connection
            self._rbuf += data
        chunk = bytes(self._rbuf[:bufsize])
        del self._rbuf[:bufsize]
        return chunk

    def has_buffered(self) -> bool:
        """Received bytes not yet parsed (the socket may no longer look readable)."""
        return bool(self._rbuf)


class RequestUnavailable(ConnectionError):  # noqa: N818 - reads as the condition
    """A request could not be sent (no broker connection, the relay stopping)."""


@dataclass(slots=True)
class _Request:
    topic: str
    payload: bytes
    correlation: bytes
    expiry: int
    future: Future[bytes]


class ConnectFailed(OSError):  # noqa: N818
    """The broker could not be reached or refused us; the message says why, for one log line."""


@dataclass(slots=True)
class RelayStatus:
    """A snapshot for status pages and metrics."""

    connected: bool
    broker: str
    last_error: str | None
    reconnects: int
    published: int
    acknowledged: int
    in_flight: int
    connected_since: float | None


class Relay:
    """Owns the relay thread and its MQTT connections; ``start``/``stop`` are the only entry points."""

    def __init__(
        self,
        options: RelayOptions,
        outbox: Outbox,
        presence: PresenceFactory,
        *,
        on_delivered: Callable[[int], None] | None = None,
    ) -> None:
        self.options = options
        self._on_delivered = on_delivered  # called with each PUBACKed seq, in the relay thread
        self._outbox = outbox
        self._presence = presence
        self._stopping = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._new_events = True
        self._presence_dirty = False
        self._thread: threading.Thread | None = None
        self._connected = False
        self._connected_since: float | None = None
        self._last_error: str | None = None
        self._last_logged: dict[str, float] = {}
        self.reconnects = 0
        self.published = 0
        self.acknowledged = 0
        self._in_flight = 0
        self._requests: deque[_Request] = deque()
        self._pending: dict[bytes, Future[bytes]] = {}
        self._requests_lock = threading.Lock()
        self._subscribed = False
        outbox.add_listener(self._on_new_events)

    # -- public ------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the relay thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="mqtt-relay", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = STOP_GRACE + 1.5) -> None:
        """Stop taking rows, wait (bounded) for in-flight PUBACKs, publish "offline", disconnect."""
        self._stopping.set()
        self._poke()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError(f"mqtt relay did not stop within {timeout:.1f} s")
            self._thread = None
        self._wake_r.close()
        self._wake_w.close()

    def request(self, topic: str, payload: bytes, timeout: float) -> bytes:
        """Publish a request and wait for its reply (MQTT v5 response topic + correlation data).

        Raises ``RequestUnavailable`` at once when there is no connection (or no reply topic), and
        ``TimeoutError`` when no reply came within ``timeout`` seconds.
        """
        if self.options.reply_topic is None:
            raise RequestUnavailable("this relay has no reply topic configured")
        if not (self._connected and self._subscribed) or self._stopping.is_set():
            raise RequestUnavailable(f"not connected to {self.options.display_url}")
        future: Future[bytes] = Future()
        correlation = uuid.uuid4().bytes
        with self._requests_lock:
            self._pending[correlation] = future
            # MQTT counts expiry in whole seconds: round down (never outlive the wait by a second), min 1
            self._requests.append(_Request(topic, payload, correlation, max(1, int(timeout)), future))
        self._poke()
        try:
            return future.result(timeout)
        except TimeoutError:
            raise TimeoutError(f"no reply within {timeout:g} s") from None
        finally:
            with self._requests_lock:
                self._pending.pop(correlation, None)

    def refresh_presence(self) -> None:
        """Re-publish the retained presence message (e.g. an alarm was raised or cleared)."""
        self._presence_dirty = True
        self._poke()

    def status(self) -> RelayStatus:
        """Connection state and counters."""
        return RelayStatus(
            connected=self._connected,
            broker=self.options.display_url,
            last_error=self._last_error,
            reconnects=self.reconnects,
            published=self.published,
            acknowledged=self.acknowledged,
            in_flight=self._in_flight,
            connected_since=self._connected_since,
        )

    # -- wake-ups ----------------------------------------------------------------------------------

    def _on_new_events(self) -> None:
        self._new_events = True
        self._poke()

    def _poke(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            self._wake_w.send(b"\0")

    def _drain_wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while self._wake_r.recv(4096):
                pass

    # -- thread ------------------------------------------------------------------------------------

    def _run(self) -> None:
        reader = self._outbox.reader()
        delay = self.options.reconnect_min
        try:
            while not self._stopping.is_set():
                try:
                    had_connection = _Session(self, reader).run()
                except ConnectFailed as exc:
                    had_connection = False
                    self._note_error(str(exc), delay)
                except Exception as exc:  # a bug must not end the relay: log it and reconnect
                    had_connection = False
                    log.exception("relay session failed unexpectedly: %s", exc)
                    self._last_error = f"internal error: {exc}"
                if self._stopping.is_set():
                    break
                self.reconnects += 1
                if had_connection:
                    delay = self.options.reconnect_min
                pause = random.uniform(self.options.reconnect_min / 2, delay)  # noqa: S311 - jitter, not crypto
                self._stopping.wait(pause)
                delay = min(delay * 2, self.options.reconnect_max)
        finally:
            reader.close()

    def _note_error(self, message: str, delay: float) -> None:
        self._last_error = message
        now = time.monotonic()
        if now - self._last_logged.get(message, -ERROR_LOG_INTERVAL) >= ERROR_LOG_INTERVAL:
            self._last_logged[message] = now
            log.warning(
                "mqtt: %s; events stay queued, retrying (back-off up to %g s)",
                message,
                self.options.reconnect_max,
            )
        else:
            log.debug("mqtt: %s (retry in about %.1f s)", message, delay)


class _Session:
    """One connection's worth of relaying; returns when it ends."""

    def __init__(self, relay: Relay, reader: OutboxReader) -> None:
        self.relay = relay
        self.reader = reader
        self.options = relay.options
        self.inflight: dict[int, int] = {}  # paho mid -> outbox seq
        self.presence_mid: int | None = None
        self.presence_acked = threading.Event()
        self.acked: list[int] = []
        self.buffer: deque[QueuedEvent] = deque()
        self.cursor = 0
        self.caught_up = False
        self.connack: ReasonCode | None = None
        self.lost = False
        self.refused: str | None = None

    # callbacks run inside loop_read, in this thread
    def on_connect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        self.connack = reason

    def on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        self.lost = True
        if reason.is_failure:
            self.refused = f"broker closed the connection: {reason}"

    def on_publish(self, _c: mqtt.Client, _u: Any, mid: int, reason: ReasonCode, _p: Any) -> None:
        # Message ids wrap at 65,535, so an old presence mid can come round again as an event's mid:
        # events are looked up first, and a presence mid is forgotten once acknowledged.
        seq = self.inflight.pop(mid, None)
        if seq is None:
            if mid == self.presence_mid:
                self.presence_mid = None
                self.presence_acked.set()
            return
        if reason.is_failure:
            # The broker did not take it (ACL, quota): keep the row, end this connection, retry later.
            self.refused = f"broker refused a publish: {reason}"
            self.lost = True
            return
        self.acked.append(seq)
        if self.relay._on_delivered is not None:
            self.relay._on_delivered(seq)

    def _client(self) -> _BufferedClient:
        o = self.options
        client = _BufferedClient(CallbackAPIVersion.VERSION2, client_id=o.client_id, protocol=mqtt.MQTTv5)
        client.connect_timeout = o.connect_timeout
        client.max_inflight_messages_set(o.window + 2)
        client.max_queued_messages_set(0)
        if o.tls is not None:
            client.tls_set_context(o.tls)
        if o.username:
            client.username_pw_set(o.username, o.password)
        will = self.relay._presence("offline", "connection-lost")
        client.will_set(o.status_topic, will.payload, qos=1, retain=True)
        client.on_connect = self.on_connect
        client.on_disconnect = self.on_disconnect
        client.on_publish = self.on_publish
        client.on_subscribe = self.on_subscribe
        client.on_message = self.on_message
        return client

    def on_subscribe(self, _c: mqtt.Client, _u: Any, _mid: int, reasons: list[ReasonCode], _p: Any) -> None:
        if all(not r.is_failure for r in reasons):
            self.relay._subscribed = True
        else:
            log.warning("mqtt: the broker refused the reply topic subscription: %s", reasons)

    def on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == self.options.rules_topic and self.options.on_rules is not None:
            try:
                self.options.on_rules(bytes(msg.payload))
            except Exception:
                log.exception("mqtt: the earn rules could not be applied")
            return
        prefix = self.options.command_prefix
        if prefix is not None and msg.topic.startswith(prefix + "/") and self.options.on_command is not None:
            name = msg.topic[len(prefix) + 1 :]
            try:
                self.options.on_command(name, bytes(msg.payload))
            except Exception:  # a bad command must never take the relay down
                log.exception("mqtt: command %r failed", name[:40])
            return
        if msg.topic != self.options.reply_topic:
            return
        correlation = getattr(msg.properties, "CorrelationData", None) if msg.properties else None
        with self.relay._requests_lock:
            future = self.relay._pending.pop(bytes(correlation), None) if correlation else None
        if future is None:
            log.info("mqtt: a reply arrived for no waiting request (late, or not ours); ignored")
            return
        if not future.done():
            future.set_result(bytes(msg.payload))

    def _send_requests(self, client: mqtt.Client) -> None:
        relay = self.relay
        while True:
            with relay._requests_lock:
                if not relay._requests:
                    return
                request = relay._requests.popleft()
            if request.future.done():  # the caller gave up already
                continue
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.ResponseTopic = self.options.reply_topic
            props.CorrelationData = request.correlation
            props.MessageExpiryInterval = request.expiry
            info = client.publish(request.topic, request.payload, qos=1, properties=props)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                request.future.set_exception(RequestUnavailable(f"publish failed: {info.rc}"))

    def run(self) -> bool:
        """Connect, relay until the connection ends or the relay stops; True if CONNACK succeeded."""
        relay, o = self.relay, self.options
        client = self._client()
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 0
        try:
            client.connect(o.host, o.port, o.keepalive, clean_start=True, properties=props)
        except socket.gaierror as exc:
            raise ConnectFailed(f"cannot resolve broker host {o.host!r} ({exc.strerror})") from None
        except ssl.SSLCertVerificationError as exc:
            raise ConnectFailed(f"TLS: broker certificate rejected ({exc.verify_message})") from None
        except ssl.SSLError as exc:
            raise ConnectFailed(f"TLS handshake with {o.display_url} failed ({exc.reason or exc})") from None
        except ConnectionRefusedError:
            raise ConnectFailed(f"broker {o.display_url} refused the connection (is it running?)") from None
        except TimeoutError:
            raise ConnectFailed(
                f"connecting to {o.display_url} timed out after {o.connect_timeout:g} s"
            ) from None
        except OSError as exc:
            raise ConnectFailed(f"cannot connect to {o.display_url} ({exc.strerror or exc})") from None
        try:
            return self._loop(client)
        finally:
            relay._connected = False
            relay._subscribed = False
            self._fail_requests()
            relay._connected_since = None
            relay._in_flight = 0
            with contextlib.suppress(Exception):
                client.socket() and client.socket().close()  # type: ignore[union-attr]
            self._flush_acks(wait=True)

    def _fail_requests(self) -> None:
        """The connection is gone: whoever waits for a reply learns it now, not at their timeout."""
        relay = self.relay
        with relay._requests_lock:
            waiting = list(relay._pending.values())
            relay._pending.clear()
            relay._requests.clear()
        for future in waiting:
            if not future.done():
                future.set_exception(RequestUnavailable("the broker connection was lost"))

    def _handshake_failed(self) -> ConnectFailed:
        hint = " (client certificate missing or refused?)" if self.options.tls is not None else ""
        return ConnectFailed(
            f"broker {self.options.display_url} closed the connection during the handshake{hint}"
        )

    def _io(self, client: _BufferedClient, sock: Any, next_misc: float) -> float:
        """One round of network I/O (or a wake-up); returns when ``loop_misc`` is due next."""
        relay = self.relay
        wants = [sock] if client.want_write() else []
        buffered = client.has_buffered()
        readable, writable, _ = select.select(
            [sock, relay._wake_r], wants, [], 0 if buffered else MISC_INTERVAL
        )
        if relay._wake_r in readable:
            relay._drain_wake()
        ok = MQTTErrorCode.MQTT_ERR_SUCCESS
        if (sock in readable or buffered) and client.loop_read(max_packets=self.options.window + 8) != ok:
            self.lost = True
        if sock in writable and not self.lost and client.loop_write() != ok:
            self.lost = True
        now = time.monotonic()
        if now >= next_misc:
            next_misc = now + MISC_INTERVAL
            if client.loop_misc() != ok:
                self.lost = True
        return next_misc

    def _on_connected(self, client: mqtt.Client) -> None:
        assert self.connack is not None
        if self.connack.is_failure:
            raise ConnectFailed(f"broker {self.options.display_url} refused us: {self.connack}")
        relay = self.relay
        relay._connected = True
        relay._connected_since = time.time()
        relay._last_error = None
        log.info("mqtt: connected to %s", self.options.display_url)
        self._publish_presence(client, "online", "connected")
        topics = [t for t in (self.options.reply_topic, self.options.rules_topic) if t is not None]
        if self.options.command_prefix is not None:
            topics.append(self.options.command_prefix + "/+")
        if topics:
            client.subscribe([(t, 1) for t in topics])

    def _report_loss(self, connected: bool) -> None:
        if self.refused:
            self.relay._last_error = self.refused
            log.warning("mqtt: %s", self.refused)
        elif connected:
            log.warning("mqtt: connection to %s lost; events stay queued", self.options.display_url)

    def _loop(self, client: _BufferedClient) -> bool:
        relay = self.relay
        sock = client.socket()
        if sock is None:  # paho already closed it: the peer hung up during the handshake
            raise self._handshake_failed()
        connack_deadline = time.monotonic() + self.options.connect_timeout
        connected = False
        next_misc = time.monotonic() + MISC_INTERVAL
        stop_deadline: float | None = None
        while True:
            next_misc = self._io(client, sock, next_misc)
            now = time.monotonic()
            if self.connack is not None and not connected:
                self._on_connected(client)
                connected = True
            if self.lost:
                if not connected:
                    raise self._handshake_failed()
                self._report_loss(connected)
                return connected
            if not connected and now > connack_deadline:
                timeout = self.options.connect_timeout
                raise ConnectFailed(f"broker {self.options.display_url} sent no CONNACK within {timeout:g} s")
            if relay._stopping.is_set():
                stop_deadline = stop_deadline or now + STOP_GRACE
                if not connected or not self.inflight or now >= stop_deadline:
                    self._shutdown(client, sock, connected)
                    return connected
            elif connected:
                if relay._presence_dirty:
                    relay._presence_dirty = False
                    self._publish_presence(client, "online", "alarm")
                if relay._requests:
                    self._send_requests(client)
                self._pump(client)
            if len(self.acked) >= ACK_BATCH or (self.acked and not self.inflight):
                self._flush_acks(wait=False)
            relay._in_flight = len(self.inflight)

    def _pump(self, client: mqtt.Client) -> None:
        relay = self.relay
        window = self.options.window
        while len(self.inflight) < window:
            if not self.buffer:
                if relay._new_events:
                    relay._new_events = False
                    self.caught_up = False
                if self.caught_up:
                    return
                rows = self.reader.fetch_after(self.cursor, FETCH_BATCH)
                if len(rows) < FETCH_BATCH:
                    self.caught_up = True
                if not rows:
                    return
                self.buffer.extend(rows)
            event = self.buffer.popleft()
            info = client.publish(event.topic, event.payload, qos=1)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self.buffer.appendleft(event)
                self.lost = True
                return
            self.inflight[info.mid] = event.seq
            self.cursor = event.seq
            relay.published += 1

    def _flush_acks(self, *, wait: bool) -> None:
        if self.acked:
            self.relay.acknowledged += len(self.acked)
            self.relay._outbox.acknowledge(self.acked, wait=wait)
            self.acked = []

    def _publish_presence(self, client: mqtt.Client, state: str, reason: str) -> None:
        message = self.relay._presence(state, reason)
        info = client.publish(self.options.status_topic, message.payload, qos=1, retain=True)
        self.presence_acked.clear()
        self.presence_mid = info.mid

    def _shutdown(self, client: mqtt.Client, sock: Any, connected: bool) -> None:
        if not connected:
            return
        self._publish_presence(client, "offline", "shutdown")
        deadline = time.monotonic() + 1.0
        while not self.presence_acked.is_set() and not self.lost and time.monotonic() < deadline:
            wants = [sock] if client.want_write() else []
            readable, writable, _ = select.select([sock], wants, [], 0.1)
            if sock in readable and client.loop_read(max_packets=64) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
            if sock in writable:
                client.loop_write()
        if self.inflight:
            log.warning(
                "mqtt: stopping with %d unacknowledged publish(es); they stay queued", len(self.inflight)
            )
        client.disconnect()
        with contextlib.suppress(Exception):
            client.loop_write()
        log.info("mqtt: disconnected from %s", self.options.display_url)


def client_id_for(store: str, node: str) -> str:
    """A stable MQTT client id per node, so the broker replaces a stale connection of the same node."""
    return f"kiosk-edge.{store}.{node}"[:64] or f"kiosk-edge-{os.getpid()}"
