"""The real PC/SC stack for tests: a private ``pcscd`` with the vsmartcard virtual reader, and a card.

``pcscd`` is the real daemon (Debian's package) started in the foreground with a private reader-config
folder that declares the ``vpcd`` driver on a free port. Only one ``pcscd`` can run on a machine (it
owns ``/run/pcscd``), so the tests share one per session and restart it themselves for fault tests.

``VirtualCard`` speaks the vpcd socket protocol: every message is a 2-byte big-endian length, then the
payload; a 1-byte payload is a control byte (00 power off, 01 power on, 02 reset, 04 get ATR), anything
longer an APDU. Card present = an open TCP connection to the reader's port; removed = closed.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.support.broker import free_port

PCSCD = "/usr/sbin/pcscd"
VPCD_DRIVER = "/usr/lib/pcsc/drivers/serial/libifdvpcd.so"
READER_NAME = "Virtual PCD 00 00"  # the first of the two readers one vpcd config declares
RUN_DIR = Path("/run/pcscd")

# ATRs as PC/SC part 3 builds them for contactless memory cards (RID A0 00 00 03 06, standard 03,
# card name 2 bytes), and one ISO 14443-4 card.
ATR_ULTRALIGHT = bytes.fromhex("3B8F8001804F0CA0000003060300030000000068")
ATR_CLASSIC_1K = bytes.fromhex("3B8F8001804F0CA000000306030001000000006A")
ATR_ISO14443_4 = bytes.fromhex("3B8180018080")

SW_OK = b"\x90\x00"
GET_UID = bytes.fromhex("FFCA000000")

ApduHandler = Callable[[bytes], bytes | None]


def free_port_pair() -> int:
    """A free TCP port P with P+1 also free (one vpcd config listens on both)."""
    for _ in range(200):
        port = free_port()
        if port >= 65535:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("0.0.0.0", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free pair of ports")


class Pcscd:
    """A foreground ``pcscd`` with a private config folder; ``stop``/``start`` for fault tests."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.conf_dir = workdir / "reader.conf.d"
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port_pair()
        self.log_path = workdir / "pcscd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.set_reader(present=True)

    def set_reader(self, *, present: bool) -> None:
        """Declare (or remove) the virtual reader; takes effect at the next start or ``rescan``."""
        conf = self.conf_dir / "vpcd"
        if present:
            conf.write_text(
                'FRIENDLYNAME "Virtual PCD"\n'
                f"DEVICENAME   /dev/null:0x{self.port:X}\n"
                f"LIBPATH      {VPCD_DRIVER}\n"
                f"CHANNELID    0x{self.port:X}\n"
            )
        elif conf.exists():
            conf.unlink()

    def start(self, timeout: float = 10.0) -> None:
        """Start the daemon and wait until its socket answers (and the reader listens, if declared)."""
        _stop_stale_pcscd()
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [PCSCD, "--foreground", "--info", "-c", str(self.conf_dir)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        want_reader = (self.conf_dir / "vpcd").exists()
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pcscd exited with {self.proc.returncode}: {self.log_tail()}")
            if (RUN_DIR / "pcscd.comm").exists() and (not want_reader or _listening(self.port)):
                return
            time.sleep(0.02)
        raise RuntimeError(f"pcscd did not become ready: {self.log_tail()}")

    def stop(self, *, kill: bool = False) -> None:
        """Stop (SIGTERM) or kill (SIGKILL) the daemon and wait for it to be gone."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        if kill:  # a killed pcscd leaves its socket and pid file behind, as after a crash
            return
        for name in ("pcscd.comm", "pcscd.pid"):
            with contextlib.suppress(FileNotFoundError):
                (RUN_DIR / name).unlink()

    def rescan(self) -> None:
        """Ask the running daemon to re-read its reader config (a serial reader "plugged" or "unplugged")."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGUSR1)

    @property
    def running(self) -> bool:
        """Whether the daemon process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, chars: int = 2000) -> str:
        """The end of the daemon's log, for failure messages."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        try:
            probe.connect(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _running_pcscds() -> list[int]:
    """Every live pcscd process on the machine (zombies excluded)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "pcscd":
                continue
            if " Z " in (entry / "stat").read_text().split(")", 1)[1][:4]:
                continue
        except OSError:
            continue
        found.append(int(entry.name))
    return found


def _stop_stale_pcscd() -> None:
    """Remove what a killed pcscd left; refuse to run beside a live one (it owns /run/pcscd).

    Two daemons would share (and delete) each other's socket in /run/pcscd: a benchmark or a second
    test run on the same machine must not silently break this one, so that is an error, not a wait.
    """
    others = _running_pcscds()
    if others:
        raise RuntimeError(
            f"another pcscd (pid {others[0]}) is running; the PC/SC tests need the machine's only one "
            "(stop it, or wait for the benchmark or test run that started it)"
        )
    for name in ("pcscd.comm", "pcscd.pid"):
        with contextlib.suppress(FileNotFoundError):
            (RUN_DIR / name).unlink()


class VirtualCard:
    """A contactless card on the virtual reader: present while connected, answering APDUs.

    ``handler`` gets each APDU and returns the response (``None`` = pull the card away right there,
    as a customer lifting it mid-read). The default answers GET UID with ``uid`` and ``90 00``.
    """

    def __init__(
        self,
        port: int,
        uid: bytes = bytes.fromhex("04A2B3C4D5E680"),
        *,
        atr: bytes = ATR_ULTRALIGHT,
        handler: ApduHandler | None = None,
    ) -> None:
        self.port = port
        self.uid = uid
        self.atr = atr
        self.handler = handler or self.answer_uid
        self.apdus: list[bytes] = []
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._closing = False
        self.inserted_at: float | None = None

    def answer_uid(self, apdu: bytes) -> bytes | None:
        """GET UID → the UID and 90 00; anything else → 6D 00 (instruction not supported)."""
        if apdu == GET_UID:
            return self.uid + SW_OK
        return b"\x6d\x00"

    def insert(self) -> VirtualCard:
        """Put the card on the reader (connect to vpcd)."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(None)
        self._sock = sock
        self._closing = False
        self.inserted_at = time.perf_counter()
        self._thread = threading.Thread(target=self._serve, args=(sock,), name="virtual-card", daemon=True)
        self._thread.start()
        return self

    def remove(self) -> None:
        """Lift the card off the reader."""
        self._closing = True
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> VirtualCard:
        return self.insert()

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def _serve(self, sock: socket.socket) -> None:
        try:
            while True:
                head = _recv_exact(sock, 2)
                if head is None:
                    return
                (length,) = struct.unpack(">H", head)
                payload = _recv_exact(sock, length)
                if payload is None:
                    return
                if length == 1:
                    if payload[0] == 0x04:
                        _send(sock, self.atr)
                    continue
                self.apdus.append(payload)
                reply = self.handler(payload)
                if reply is None:  # pulled away mid-read
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
                    return
                _send(sock, reply)
        except OSError:
            if not self._closing:
                raise


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        try:
            chunk = sock.recv(size - len(data))
            # the driver sends power bytes that get no reply; without QUICKACK after every recv the next
            # APDU waits ~40 ms for a delayed ACK
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        except OSError:
            return None
        if not chunk:
            return None
        data += chunk
    return data


def _send(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(struct.pack(">H", len(payload)) + payload)


def ntag_memory(ndef_message: bytes, pages: int = 45) -> bytes:
    """NTAG213-like memory: UID pages, a capability container for NDEF, then the NDEF TLV."""
    cc = bytes([0xE1, 0x10, (pages - 4) * 4 // 8, 0x00])
    tlv = (
        bytes([0x03, len(ndef_message)]) + ndef_message + b"\xfe"
        if len(ndef_message) < 0xFF
        else (b"\x03\xff" + struct.pack(">H", len(ndef_message)) + ndef_message + b"\xfe")
    )
    memory = bytes(12) + cc + tlv
    return memory.ljust(pages * 4, b"\x00")


def ntag_handler(uid: bytes, memory: bytes) -> ApduHandler:
    """Answer GET UID and READ BINARY (FF B0 00 page 10: four pages) like an ACR122U with an NTAG."""

    def handle(apdu: bytes) -> bytes | None:
        if apdu == GET_UID:
            return uid + SW_OK
        if len(apdu) == 5 and apdu[:3] == b"\xff\xb0\x00":
            start = apdu[3] * 4
            if start >= len(memory):
                return b"\x63\x00"
            return memory[start : start + apdu[4]].ljust(apdu[4], b"\x00") + SW_OK
        return b"\x6d\x00"

    return handle


@contextlib.contextmanager
def inserted(card: VirtualCard) -> Iterator[VirtualCard]:
    """``with inserted(card):`` the card lies on the reader for the block."""
    card.insert()
    try:
        yield card
    finally:
        card.remove()
