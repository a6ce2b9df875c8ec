"""Composition of the running node: who owns which thread, in which order things start and stop.

Start order: keys → outbox → devices/intake → HTTP servers → relay → heartbeat.
Stop order is the reverse of intake: devices and the control endpoint first (no new events), then the
heartbeat, then the relay (which finishes in-flight publishes), and the database last.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import secrets
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from cloud_sync.codes import member_code_is_valid
from cloud_sync.envelope import SignedMessage, Signer
from cloud_sync.errors import CloudSyncError
from cloud_sync.loyalty import DEFAULT_RULES, EarnRules, decode_rules, earn_rules_topic
from cloud_sync.messages import EraseCommand, MemberInfo, validate_body
from cloud_sync.outbox import Limits, Outbox, OutboxStats, disk_usage
from cloud_sync.relay import Relay, RelayOptions, client_id_for
from edge import __version__
from edge.admin import create_admin_app
from edge.config import Settings
from edge.devices.base import Device
from edge.devices.cardread import CardRead, member_code_in
from edge.devices.gpio import GpioFeedback, GpioPins
from edge.devices.sim import SimButton, SimCardReader, SimScanner
from edge.feedback import FeedbackService
from edge.httpserver import TlsWsgiServer, WsgiServer
from edge.identity import Pseudonymizer
from edge.intake import Intake, ScanOutcome
from edge.keys import ensure_data_dir, init_keys, load_pseudonym_key, load_signing_key
from edge.membercodes import MemberCodeIssuer
from edge.memberlookup import MemberLookups
from edge.members import MemberDirectory
from edge.metrics import NodeCollector, make_registry
from edge.notify import IdentityNotice, Notice, Notifier
from edge.pos.api import create_pos_app
from edge.pos.events import CashierFeed
from edge.pos.pairing import Pairing
from edge.pos.pickup import PickupService
from edge.pos.redeem import OfflineAllowance, RedemptionService
from edge.pos.sales import RecordedSale, SaleService
from edge.pos.staff import StaffPin
from edge.pos.till import TillSession
from edge.reservation import ReservationService
from edge.signup import SignupService, load_vault
from kiosk_ui import KioskConfig, KioskInfo, create_app
from kiosk_ui.live import LiveFeed

if TYPE_CHECKING:
    from edge.devices.scanner import ScannerMatch

log = logging.getLogger(__name__)

OUTBOX_FILE = "outbox.sqlite3"
RECEIPT_PRUNE_INTERVAL = 3600.0
LOCAL_DB_FILE = "local.sqlite3"  # node-local state that is not an event: code counters, POS pairing
ALARM_WHEN_ABSENT = frozenset({"nfc-reader", "scanner"})
STATUS_LIGHT_INTERVAL = 1.0
CONTROL_TOKEN_FILE = "control.token"  # noqa: S105 - a file name, not a secret


def outbox_path(settings: Settings) -> Path:
    """Where the node's SQLite outbox lives."""
    return settings.data.dir / OUTBOX_FILE


def relay_options(settings: Settings) -> RelayOptions:
    """Translate validated settings into what the relay needs."""
    m = settings.mqtt
    broker = m.broker
    root = m.topic_root
    return RelayOptions(
        host=broker.host,
        port=broker.port,
        client_id=client_id_for(settings.node.store, settings.node.id),
        status_topic=f"{root}/{settings.node.store}/{settings.node.id}/status",
        reply_topic=f"{root}/{settings.node.store}/{settings.node.id}/reply",
        command_prefix=f"{root}/{settings.node.store}/{settings.node.id}/cmd",
        rules_topic=earn_rules_topic(root),
        tls=m.ssl_context() if broker.tls else None,
        username=broker.username,
        password=broker.password,
        keepalive=m.keepalive,
        window=m.window,
        connect_timeout=m.connect_timeout,
        reconnect_min=m.reconnect_min,
        reconnect_max=max(m.reconnect_min, m.reconnect_max),
        display_url=broker.display(),
    )


def write_control_token(data_dir: Path) -> str:
    """A fresh random token for the control endpoint, readable only by the node's user."""
    token = secrets.token_urlsafe(32)
    target = data_dir / CONTROL_TOKEN_FILE
    tmp = target.with_suffix(".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, token.encode())
    finally:
        os.close(fd)
    tmp.replace(target)
    return token


def gpio_pins(settings: Settings) -> GpioPins:
    """The configured wiring (-1 in the config = not fitted)."""
    g = settings.gpio

    def pin(value: int) -> int | None:
        return None if value < 0 else value

    return GpioPins(
        led_green=pin(g.led_green),
        led_amber=pin(g.led_amber),
        led_red=pin(g.led_red),
        buzzer=pin(g.buzzer),
        button=pin(g.button),
        buzzer_active_high=g.buzzer_active_high,
        button_pull_up=g.button_pull_up,
    )


def scanner_match(settings: Settings) -> ScannerMatch:
    """How the node recognises the barcode scanner among the input devices."""
    from edge.devices.scanner import ScannerMatch

    sc = settings.scanner
    vendor = product = None
    if sc.usb_id:
        vendor, product = (int(part, 16) for part in sc.usb_id.split(":"))
    return ScannerMatch(
        vendor=vendor,
        product=product,
        name=None if vendor is not None else (sc.name_pattern or None),
        path=str(sc.device) if sc.device else None,
    )


def real_devices(settings: Settings, intake: Intake, feedback: GpioFeedback | None) -> list[Device]:
    """The hardware back ends the configuration enables; each starts even if its hardware is missing."""
    from edge.devices.gpio import AssistButton
    from edge.devices.nfc import PcscReader
    from edge.devices.scanner import EvdevScanner

    devices: list[Device] = []
    if settings.nfc.enabled:
        devices.append(
            PcscReader(
                intake.card_tapped,
                intake.card_failed,
                readers=settings.nfc.reader_names,
                min_interval=settings.nfc.min_interval,
                find_member_code=lambda text: member_code_in(text, member_code_is_valid),
            )
        )
    if settings.scanner.enabled:
        devices.append(
            EvdevScanner(
                intake.code_scanned,
                intake.scan_failed,
                match=scanner_match(settings),
                layout=settings.scanner.layout,
                timeout=settings.scanner.inter_key_ms / 1000,
            )
        )
    if feedback is not None:
        devices.append(feedback)
        devices.append(
            AssistButton(
                intake.assistance_requested,
                gpio_pins(settings),
                min_interval_s=settings.gpio.button_min_interval,
            )
        )
    return devices


class Node:
    """The running node; ``start`` and ``stop`` are its whole lifecycle."""

    def __init__(self, settings: Settings, *, simulate: bool = False) -> None:
        self.settings = settings
        self.simulate = simulate
        self._stack = contextlib.ExitStack()
        self._stopping = threading.Event()
        self._started_at = time.time()
        self.outbox: Outbox
        self.relay: Relay
        self._devices: list[Device] = []
        self._reader: SimCardReader | None = None
        self._scanner: SimScanner | None = None
        self._button: SimButton | None = None
        self._feedback: GpioFeedback | None = None
        self.notifier: Notifier
        self.intake: Intake
        self._heartbeat: threading.Thread | None = None
        self.admin_port = 0
        self.kiosk_port = 0
        self.pos_port = 0
        self.members = MemberDirectory()
        self._lookups: MemberLookups | None = None
        #: the earn rules until the central receiver's arrive (and after a restart, until they come again)
        self._rules: EarnRules = DEFAULT_RULES
        self.till: TillSession
        self._sales: SaleService
        self._feed: LiveFeed
        self._cashier: CashierFeed

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Bring everything up; on any failure, what was started is stopped again before raising."""
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise

    def _start(self) -> None:
        s = self.settings
        data_dir = ensure_data_dir(s.data.dir)
        keys = init_keys(data_dir, s.identity.pseudonym_key_file)
        if keys.created_pseudonym:
            log.warning(
                "standalone node: generated a random pseudonymisation key %s; identity tokens will not match "
                "other stores' (set identity.pseudonym_key_file to the chain's key for that)",
                keys.pseudonym_source,
            )
        if keys.created_signing:
            log.info(
                "first start: created the node signing key in %s; register it centrally with "
                "'kiosk-central nodes add %s %s $(kiosk-edge keys show)'",
                data_dir,
                s.node.store,
                s.node.id,
            )
        signer = Signer(load_signing_key(data_dir), s.node.store, s.node.id)
        pseudonymizer = Pseudonymizer(load_pseudonym_key(keys.pseudonym_source))

        self.outbox = Outbox(
            outbox_path(s),
            signer,
            s.mqtt.topic_root,
            Limits(max_rows=s.outbox.max_rows, max_bytes=s.outbox.max_bytes),
            on_alarm=self._on_alarm,
            isolated_migration=True,  # SQLAlchemy and Alembic only in a short-lived child process
        )
        self._stack.callback(self.outbox.close)
        stats = self.outbox.stats()
        log.info("outbox %s: %d event(s) queued, last seq %d", outbox_path(s), stats.depth, stats.last_seq)

        # Registered in the reverse of the stop order (the ExitStack unwinds last-in first-out): intake
        # (devices, control endpoint) stops first, then the heartbeat, then the relay finishes in-flight
        # publishes, and the outbox closes last.
        self.relay = Relay(
            dataclasses.replace(relay_options(s), on_command=self._on_command, on_rules=self._on_rules),
            self.outbox,
            self._presence,
        )
        self.relay.start()
        self._stack.callback(self.relay.stop)

        self.notifier = Notifier()
        lookups = MemberLookups(
            self.outbox,
            self.relay.request,
            f"{s.mqtt.topic_root}/{s.node.store}/{s.node.id}/request/member",
            self._member_info,
            timeout=s.pos.redemption_timeout,
        )
        lookups.start()
        self._stack.callback(lookups.stop)
        self._lookups = lookups
        self._stack.callback(self.notifier.subscribe(self._look_up_unknown))
        if not self.simulate and s.gpio.enabled:
            self._feedback = GpioFeedback(gpio_pins(s), name="gpio")
        intake = Intake(
            self.outbox,
            pseudonymizer,
            notifier=self.notifier,
            feedback=self._feedback.signal if self._feedback else None,
            receipt_prefix=s.scanner.receipt_prefix,
        )
        self.intake = intake
        if self.simulate:
            self._reader = SimCardReader(
                lambda uid, name: intake.card_tapped(CardRead(uid, name, "simulated"))
            )
            self._scanner = SimScanner(intake.code_scanned)
            self._button = SimButton(intake.assistance_requested)
            self._devices = [self._reader, self._scanner, self._button]
        else:
            self._devices = real_devices(s, intake, self._feedback)

        token = write_control_token(data_dir)
        collector = NodeCollector(self.outbox, self.relay, self.device_states)
        kiosk = self._make_kiosk(data_dir, pseudonymizer)
        pos = self._make_pos(data_dir, pseudonymizer)
        admin = WsgiServer(
            create_admin_app(self.status, make_registry(collector), self if self.simulate else None, token),
            "127.0.0.1",
            s.admin.port,
            name="admin endpoint",
            setting="admin.port",
        )
        self._stack.callback(admin.stop)
        kiosk.start()
        pos.start()
        admin.start()
        self.admin_port, self.kiosk_port, self.pos_port = admin.port, kiosk.port, pos.port
        for device in self._devices:
            device.start()
            self._stack.callback(device.close)
        self._heartbeat = threading.Thread(target=self._run_heartbeat, name="heartbeat", daemon=True)
        self._heartbeat.start()
        self._stack.callback(self._stop_heartbeat)
        log.info(
            "node %s/%s running (%s devices), broker %s",
            s.node.store,
            s.node.id,
            "simulated" if self.simulate else "real",
            self.relay.options.display_url,
        )

    def _make_pos(self, data_dir: Path, pseudonymizer: Pseudonymizer) -> WsgiServer | TlsWsgiServer:
        """The POS API on the shop LAN: pairing, the till session, sales."""
        s = self.settings
        pairing = Pairing(
            data_dir / LOCAL_DB_FILE,
            code_ttl=s.pos.pair_code_ttl,
            max_failures=s.pos.pair_max_failures,
            lockout=s.pos.pair_lockout,
        )
        self._stack.callback(pairing.close)
        cashier = CashierFeed(self.notifier)  # subscribes itself to scans and assistance presses
        self._cashier = cashier
        self.till = TillSession(pseudonymizer, s.pos.session_window, on_change=cashier.customer_changed)
        cashier.follow(self.till)
        self._stack.callback(self.notifier.subscribe(self.till.on_notice))
        sales = SaleService(
            self.outbox, self.till, self.members, rules=self._rules, on_recorded=self._sale_recorded
        )
        self._sales = sales
        sales.rules = self._rules  # rules that arrived while the service was being built
        allowance = OfflineAllowance(data_dir / LOCAL_DB_FILE, s.pos.offline_redemptions_per_day)
        self._stack.callback(allowance.close)
        redemptions = RedemptionService(
            self.outbox,
            self.till,
            self.relay.request,
            f"{s.mqtt.topic_root}/{s.node.store}/{s.node.id}/request/redemption",
            allowance,
            timeout=s.pos.redemption_timeout,
        )
        app = create_pos_app(
            pairing,
            self.till,
            sales,
            self.members,
            node={"store": s.node.store, "node": s.node.id},
            redemptions=redemptions,
            pickups=PickupService(self.outbox),
            events=cashier,
            staff=StaffPin(data_dir, max_failures=s.pos.pair_max_failures, lockout=s.pos.pair_lockout),
        )
        server: WsgiServer | TlsWsgiServer
        if s.pos.tls_cert_file is not None and s.pos.tls_key_file is not None:
            server = TlsWsgiServer(
                app,
                s.pos.host,
                s.pos.port,
                name="POS API",
                setting="pos.port",
                cert=s.pos.tls_cert_file,
                key=s.pos.tls_key_file,
            )
        else:
            server = WsgiServer(app, s.pos.host, s.pos.port, name="POS API", setting="pos.port", threads=8)
        self._stack.callback(server.stop)
        self._stack.callback(
            cashier.close
        )  # unwinds first: ends the cashier streams the server would wait for
        return server

    def _on_command(self, name: str, payload: bytes) -> None:
        """A command from the central receiver (on the relay thread: quick, never raises)."""
        try:
            if name == "member":
                self._member_info(msgspec.json.decode(payload, type=MemberInfo))
            elif name == "erase":
                erase = msgspec.json.decode(payload, type=EraseCommand)
                tokens = [erase.member_token, *erase.tokens]
                self.members.forget_all(tokens)
                feed = getattr(self, "_feed", None)
                if feed is not None:
                    feed.forget_tokens(tokens)
                log.info("erase command: forgot %d token(s) of an erased member", len(erase.tokens))
            else:
                log.warning("unknown command %r from the central receiver ignored", name[:40])
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            log.warning("malformed %r command ignored: %s", name[:40], exc)

    def _on_rules(self, payload: bytes) -> None:
        """The chain's earn rules, retained on the broker: the till's provisional points use them."""
        try:
            rules = decode_rules(payload)
        except ValueError as exc:
            log.error("%s; the till keeps its current rules", exc)
            return
        sales = getattr(self, "_sales", None)
        if sales is not None and sales.rules != rules:
            sales.rules = rules
            log.info(
                "earn rules from the central receiver: %d minor units per point, %d promotion(s)",
                rules.minor_per_point,
                len(rules.promotions),
            )
        self._rules = rules

    def _member_info(self, info: MemberInfo) -> None:
        known = self.members.apply(info)
        feed = getattr(self, "_feed", None)
        if feed is not None:
            feed.member_updated(info.token, known)

    def _look_up_unknown(self, notice: Notice) -> None:
        if (
            isinstance(notice, IdentityNotice)
            and self._lookups is not None
            and self.members.lookup(notice.token) is None
            and not self.members.is_unknown(notice.token)
        ):
            self._lookups.want(notice.token)

    def _sale_recorded(self, sale: RecordedSale) -> None:
        if sale.survey:
            self._feed.survey_requested(sale.receipt)

    def _make_kiosk(self, data_dir: Path, pseudonymizer: Pseudonymizer) -> WsgiServer:
        """The customer screen and what it needs: live feed, member codes, the PII vault's key."""
        s = self.settings
        feed = LiveFeed(self.notifier, s.kiosk.idle_timeout)
        self._feed = feed
        if s.node.member_prefix == 0:
            log.warning(
                "node.member_prefix is 0 (standalone): member codes issued here are only unique if no other "
                "node uses prefix 0; give each node its own prefix at enrollment"
            )
        issuer = MemberCodeIssuer(data_dir / LOCAL_DB_FILE, s.node.member_prefix)
        self._stack.callback(issuer.close)
        vault, _standalone = load_vault(s.identity.vault_public_key, data_dir)
        signup = SignupService(self.outbox, pseudonymizer, issuer, vault)
        reservations = ReservationService(self.outbox, issuer, vault)
        feedback = FeedbackService(self.outbox, vault)
        kiosk_config = KioskConfig(
            display_name=s.kiosk.display_name,
            idle_timeout=s.kiosk.idle_timeout,
            default_language=s.kiosk.default_language,
            brand_color=s.kiosk.brand_color,
            accent_color=s.kiosk.accent_color,
            logo_file=s.kiosk.logo_file,
            phone_region=s.kiosk.phone_region,
            signups_per_minute=s.kiosk.signups_per_minute,
        )
        kiosk = WsgiServer(
            create_app(
                KioskInfo(s.node.store, s.node.id, __version__),
                config=kiosk_config,
                feed=feed,
                signup=signup,
                reservations=reservations,
                feedback=feedback,
                members=self.members,
            ),
            "127.0.0.1",
            s.kiosk.port,
            name="kiosk",
            setting="kiosk.port",
            threads=8,  # each open page holds one thread for its live stream
        )
        self._stack.callback(kiosk.stop)
        self._stack.callback(feed.close)  # before the server stops: ends the live streams it would wait for
        return kiosk

    def stop(self) -> None:
        """Stop intake, finish in-flight publishes, close the database. Idempotent."""
        self._stopping.set()
        self._stack.close()
        log.info("node stopped")

    def _stop_heartbeat(self) -> None:
        self._stopping.set()
        if self._heartbeat is not None:
            self._heartbeat.join(2.0)

    # -- simulator (the control endpoint's view of the devices) -------------------------------------

    def tap(self, uid: bytes) -> SignedMessage:
        """Inject a card tap into the simulated reader."""
        assert self._reader is not None
        return self._reader.tap(uid)  # type: ignore[return-value]

    def scan(self, code: str) -> ScanOutcome:
        """Inject a scan into the simulated scanner."""
        assert self._scanner is not None
        return self._scanner.scan(code)  # type: ignore[return-value]

    def press(self) -> SignedMessage:
        """Inject a press of the simulated assistance button."""
        assert self._button is not None
        return self._button.press()  # type: ignore[return-value]

    # -- status ------------------------------------------------------------------------------------

    def device_states(self) -> dict[str, str]:
        """Each device's state by name."""
        return {device.name: device.state for device in self._devices}

    def _alarms(self, stats: OutboxStats) -> list[str]:
        """Active alarms, for status, heartbeat, presence and the fault LED (one definition for all)."""
        return (["outbox_full"] if stats.full else []) + self._device_alarms()

    def status(self) -> dict[str, Any]:
        """Everything ``kiosk-edge status`` shows, as JSON-ready data."""
        stats = self.outbox.stats()
        relay = self.relay.status()
        alarms = self._alarms(stats)
        return {
            "state": "degraded" if alarms or not relay.connected else "running",
            "version": __version__,
            "store": self.settings.node.store,
            "node": self.settings.node.id,
            "simulate": self.simulate,
            "uptime_s": int(time.time() - self._started_at),
            "alarms": alarms,
            "broker": {
                "url": relay.broker,
                "connected": relay.connected,
                "last_error": relay.last_error,
                "reconnects": relay.reconnects,
                "published": relay.published,
                "acknowledged": relay.acknowledged,
                "in_flight": relay.in_flight,
            },
            "outbox": {
                "path": str(self.outbox.path),
                "depth": stats.depth,
                "bytes": stats.bytes,
                "disk_bytes": disk_usage(self.outbox.path),
                "by_type": stats.by_type,
                "oldest_age_s": round(stats.oldest_age(), 3),
                "last_seq": stats.last_seq,
                "full": stats.full,
                "evicted": stats.evicted,
                "refused": stats.refused,
                "max_rows": self.outbox.limits.max_rows,
                "max_bytes": self.outbox.limits.max_bytes,
            },
            "devices": self.device_states(),
            "kiosk_url": f"http://127.0.0.1:{self.kiosk_port}/",
        }

    # -- internals ---------------------------------------------------------------------------------

    @staticmethod
    def _summary(stats: OutboxStats) -> dict[str, int]:
        return {"depth": stats.depth, "bytes": stats.bytes, "oldest_age_s": int(stats.oldest_age())}

    def _presence(self, state: str, reason: str) -> SignedMessage:
        stats = self.outbox.stats()
        body = validate_body(
            "presence",
            {
                "state": state,
                "reason": reason,
                "version": __version__,
                "alarms": self._alarms(stats),
                "outbox": self._summary(stats),
            },
        )
        return self.outbox.seal_presence(body)

    def _on_alarm(self, _active: bool) -> None:
        # Called from the outbox writer: only flag the relay, never block here.
        relay = getattr(self, "relay", None)
        if relay is not None:
            relay.refresh_presence()

    def _device_alarms(self) -> list[str]:
        alarms = []
        for device in self._devices:
            state = device.state
            # A missing card reader or scanner stops customers identifying themselves: a fault the
            # shop must see. GPIO absent just means "not a Pi"; broken GPIO is a fault.
            if state == "error" or (state == "absent" and device.name in ALARM_WHEN_ABSENT):
                alarms.append(f"{device.name}_{state}")
        return alarms

    def _watch_devices(self, previous: list[str]) -> list[str]:
        """Every second: the status LEDs, and a fresh presence message when a device alarm changes."""
        alarms = self._device_alarms()
        if alarms != previous:
            self.relay.refresh_presence()  # central sees "reader absent" now, not at the next heartbeat
        self._cashier.set_alarms((["outbox_full"] if self.outbox.full else []) + alarms)  # sends only changes
        if self._feedback is not None:
            if alarms or self.outbox.full:
                self._feedback.show("fault")
            elif not self.relay.status().connected:
                self._feedback.show("queueing")
            else:
                self._feedback.show("online")
        return alarms

    def _prune_receipts(self) -> None:
        try:
            pruned = self._sales.prune()
        except (CloudSyncError, TimeoutError) as exc:
            log.warning("POS receipts not pruned: %s", exc)
            return
        if pruned:
            log.info("forgot %d POS receipt(s) past their retention", pruned)

    def _run_heartbeat(self) -> None:
        """Queue a status event every ``status.interval``; refresh the status LEDs every second."""
        interval = self.settings.status.interval
        next_beat = time.monotonic() + interval
        next_prune = 0.0  # first pass: forget what expired while the node was off
        device_alarms: list[str] = []
        while True:
            device_alarms = self._watch_devices(device_alarms)
            if self._stopping.wait(min(STATUS_LIGHT_INTERVAL, max(0.0, next_beat - time.monotonic()))):
                return
            if time.monotonic() < next_beat:
                continue
            next_beat += interval
            if time.monotonic() >= next_prune:
                next_prune = time.monotonic() + RECEIPT_PRUNE_INTERVAL
                self._prune_receipts()
            stats = self.outbox.stats()
            alarms = self._alarms(stats)
            try:
                self.outbox.accept(
                    "status",
                    {
                        "state": "degraded" if alarms else "online",
                        "version": __version__,
                        "uptime_s": int(time.time() - self._started_at),
                        "outbox": self._summary(stats),
                        "alarms": alarms,
                        "devices": self.device_states(),
                    },
                )
            except CloudSyncError as exc:
                log.warning("status heartbeat not queued: %s", exc)
