"""One central worker: a shared-subscription MQTT v5 consumer that acknowledges only committed batches.

Delivery model (DESIGN.md, Durability): nodes publish at QoS 1, so every event arrives at least once.
This worker subscribes to ``$share/{group}/{root}/+/+/event/#`` with a stable client id, a persistent
session (``clean_start=False`` and a session expiry) and paho-mqtt's ``manual_ack``. paho's network
thread only queues what arrives; the batch thread commits up to ``batch_max`` messages in one transaction
(``Ingestor``) and only then sends their PUBACKs, in arrival order. A worker that dies or is killed
before the commit never acknowledged the batch, so the broker delivers it again (to this worker when it
comes back to its session, or on a clustered broker to another member of the group), and the unique
event id absorbs whatever had already been committed.

Message ids belong to one connection: after a reconnect the broker redelivers the unacknowledged
messages under new ids, so a PUBACK for an id of the old connection could acknowledge the wrong message.
Each delivery is tagged with its connection's generation and acknowledged only if that connection is
still the current one.

A database error (PostgreSQL restarting, a deadlock, a full disk) fails the whole transaction: the batch
is retried with back-off, never acknowledged before it commits and never dropped.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from cloud_sync.central.config import MqttSection
from cloud_sync.central.ingest import Incoming, Ingestor, Outcome
from cloud_sync.central.responder import Outgoing, Responder

log = logging.getLogger(__name__)

_BACKOFF_MIN = 0.5
_BACKOFF_MAX = 15.0


@dataclass(frozen=True, slots=True)
class _Delivery:
    generation: int
    mid: int
    qos: int
    message: Incoming
    response_topic: str | None = None
    correlation: bytes | None = None


@dataclass(frozen=True, slots=True)
class _Push:
    docs: list[dict[str, Any]]


@dataclass
class WorkerCounters:
    """Plain counters the metrics collector reads at scrape time (the hot path only adds to ints)."""

    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (status, type or reason)
    batches: int = 0
    batch_seconds: float = 0.0
    db_errors: int = 0
    acked: int = 0
    not_acked_stale: int = 0
    connects: int = 0
    connected: bool = False
    requests: int = 0
    replies: int = 0
    pushes: int = 0
    request_errors: int = 0


class IngestWorker:
    """Owns the MQTT client and the batch thread; ``start`` and ``stop`` are its whole lifecycle."""

    def __init__(
        self,
        mqtt_cfg: MqttSection,
        ingestor: Ingestor,
        responder: Responder | None = None,
        *,
        retained: Sequence[Outgoing] = (),
    ) -> None:
        self._cfg = mqtt_cfg
        #: published retained on every connect: what every node should know (the earn rules)
        self._retained = list(retained)
        self._ingestor = ingestor
        self._responder = responder
        self._queue: queue.Queue[_Delivery] = queue.Queue()
        # requests and pushes have their own thread: a till waiting ~3 s for an answer never queues
        # behind a batch commit
        self._requests: queue.Queue[_Delivery | _Push] = queue.Queue(maxsize=10_000)
        self._request_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._generation = 0
        self._thread: threading.Thread | None = None
        self.counters = WorkerCounters()
        self.subscription = f"$share/{mqtt_cfg.share_group}/{mqtt_cfg.topic_root}/+/+/event/#"
        self.request_subscription = f"$share/{mqtt_cfg.share_group}/{mqtt_cfg.topic_root}/+/+/request/#"
        self._client = self._make_client()

    # -- MQTT ------------------------------------------------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self._cfg.client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=True,
        )
        broker = self._cfg.broker
        if broker.username:
            client.username_pw_set(broker.username, broker.password)
        if broker.tls:
            client.tls_set_context(self._cfg.ssl_context())
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        # paho sends at most 20 QoS 1 messages before their PUBACKs by default: the member pushes after a
        # batch (one per customer) would trickle out at 20 per broker round trip
        client.max_inflight_messages_set(self._cfg.receive_maximum)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def _on_connect(self, client: mqtt.Client, _userdata: Any, flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            log.error("broker %s refused the connection: %s", self._cfg.broker.display(), reason)
            return
        with self._lock:
            self._generation += 1
            self.counters.connects += 1
            self.counters.connected = True
        log.info(
            "connected to %s as %s (session %s); subscribing to %s",
            self._cfg.broker.display(),
            self._cfg.client_id,
            "resumed" if flags.session_present else "new",
            self.subscription,
        )
        topics = [(self.subscription, SubscribeOptions(qos=1))]
        if self._responder is not None:
            topics.append((self.request_subscription, SubscribeOptions(qos=1)))
        client.subscribe(topics)
        for outgoing in self._retained:
            client.publish(outgoing.topic, outgoing.payload, qos=1, retain=True)

    def _on_disconnect(
        self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        with self._lock:
            self._generation += 1  # ids of the old connection must never be acknowledged on a new one
            self.counters.connected = False
        if not self._stop.is_set():
            log.warning("lost the broker (%s); reconnecting, unacknowledged messages will come again", reason)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            topic = repr(msg._topic)  # paho keeps the raw bytes there; dead-lettered as bad-topic
        incoming = Incoming(topic, bytes(msg.payload))
        if self._responder is not None and "/request/" in topic:
            props = msg.properties
            response = getattr(props, "ResponseTopic", None) if props else None
            correlation = getattr(props, "CorrelationData", None) if props else None
            delivery = _Delivery(
                self._generation,
                msg.mid,
                msg.qos,
                incoming,
                response,
                bytes(correlation) if correlation else None,
            )
            try:
                self._requests.put_nowait(delivery)
            except queue.Full:  # a flood: the till times out and declines; never block the network thread
                self.counters.request_errors += 1
                self._ack_one(delivery)
            return
        self._queue.put(_Delivery(self._generation, msg.mid, msg.qos, incoming))

    # -- requests and pushes -------------------------------------------------------------------------------
    def schedule_push(self, docs: list[dict[str, Any]]) -> None:
        """After a commit: send the new member figures to the nodes concerned (on the request thread)."""
        if self._responder is not None:
            try:
                self._requests.put_nowait(_Push(list(docs)))
            except queue.Full:
                log.warning("push queue full; %d events' member figures not pushed", len(docs))

    def _publish(self, outgoing: Outgoing) -> None:
        props = None
        if outgoing.correlation is not None:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.CorrelationData = outgoing.correlation
        self._client.publish(outgoing.topic, outgoing.payload, qos=1, properties=props)

    def _ack_one(self, delivery: _Delivery) -> None:
        """PUBACK one delivery, unless its connection is gone (its id would name another message now)."""
        if delivery.qos == 0:
            return
        with self._lock:
            current = self._generation
        if delivery.generation != current:
            self.counters.not_acked_stale += 1  # redelivered on the new connection; dedup absorbs it
            return
        self._client.ack(delivery.mid, delivery.qos)
        self.counters.acked += 1

    def _run_requests(self) -> None:
        assert self._responder is not None
        while not self._stop.is_set():
            try:
                job = self._requests.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                if isinstance(job, _Push):
                    for outgoing in self._responder.pushes(job.docs):
                        self._publish(outgoing)
                        self.counters.pushes += 1
                    continue
                self.counters.requests += 1
                reply = self._responder.answer(
                    job.message.topic, job.message.payload, job.response_topic, job.correlation
                )
                if reply is not None:
                    self._publish(reply)
                    self.counters.replies += 1
            except Exception:  # the database down, say: the till times out and declines; keep serving
                self.counters.request_errors += 1
                log.exception("request handling failed")
            finally:
                if isinstance(job, _Delivery):
                    self._ack_one(job)

    # -- batches ---------------------------------------------------------------------------------------
    def _next_batch(self) -> list[_Delivery]:
        try:
            first = self._queue.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self._cfg.batch_wait_ms / 1000
        while len(batch) < self._cfg.batch_max:
            remaining = deadline - time.monotonic()
            try:
                batch.append(
                    self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                )
            except queue.Empty:
                break
        return batch

    def _commit(self, batch: list[_Delivery]) -> list[Outcome] | None:
        """Ingest with retries; None if the worker is stopping before the batch could commit."""
        delay = _BACKOFF_MIN
        while True:
            started = time.perf_counter()
            try:
                outcomes = self._ingestor.ingest([d.message for d in batch])
            except Exception as exc:  # any database failure: nothing committed, so retry the whole batch
                self.counters.db_errors += 1
                log.error(
                    "batch of %d not committed (%s: %s); retrying in %.1f s",
                    len(batch),
                    exc.__class__.__name__,
                    str(exc).splitlines()[0] if str(exc) else "",
                    delay,
                )
                if self._stop.wait(delay):
                    return None
                delay = min(delay * 2, _BACKOFF_MAX)
                continue
            self.counters.batches += 1
            self.counters.batch_seconds += time.perf_counter() - started
            return outcomes

    def _ack(self, batch: list[_Delivery]) -> None:
        for delivery in batch:
            self._ack_one(delivery)

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = self._next_batch()
            if not batch:
                continue
            outcomes = self._commit(batch)
            if outcomes is None:
                break
            self._ack(batch)
            for outcome in outcomes:
                self.counters.outcomes[(outcome.status, outcome.reason or outcome.event_type or "")] += 1
                if outcome.status == "dead":
                    log.warning("dead-lettered a message: %s", outcome.reason)

    # -- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> None:
        """Connect (in the background, retrying) and start committing batches."""
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self._cfg.session_expiry
        props.ReceiveMaximum = self._cfg.receive_maximum
        broker = self._cfg.broker
        self._client.connect_async(
            broker.host, broker.port, keepalive=self._cfg.keepalive, clean_start=False, properties=props
        )
        self._client.loop_start()
        self._thread = threading.Thread(target=self._run, name="central-batches", daemon=True)
        self._thread.start()
        if self._responder is not None:
            self._request_thread = threading.Thread(
                target=self._run_requests, name="central-requests", daemon=True
            )
            self._request_thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the batch being committed, acknowledge it, then leave; queued batches stay unacknowledged
        (the broker keeps them in this worker's session)."""
        self._stop.set()
        for thread in (self._thread, self._request_thread):
            if thread is not None:
                thread.join(timeout)
        self._client.disconnect()
        self._client.loop_stop()

    @property
    def queued(self) -> int:
        """Deliveries received but not yet committed."""
        return self._queue.qsize()

    @property
    def requests_queued(self) -> int:
        """Requests and post-commit pushes waiting for the request thread (it falls behind if this grows)."""
        return self._requests.qsize()
