"""``kiosk-edge``: the node's command line (DESIGN.md, "Commands").

Exit codes: 0 success, 1 operational failure (e.g. no node running), 2 bad usage or configuration —
always one clear line on stderr, never a traceback for a problem the operator can fix.
"""

from __future__ import annotations

import json
import logging
import signal
import sqlite3
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from cloud_sync.errors import CloudSyncError
from edge import __version__
from edge.config import Settings, load_settings
from edge.errors import ConfigError, EdgeError, KeyFileError, NotRunning

F = TypeVar("F", bound=Callable[..., Any])
EXIT_FAILURE = 1
EXIT_USAGE = 2


def fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    """Print one line to stderr and exit."""
    click.echo(f"kiosk-edge: {message}", err=True)
    sys.exit(code)


def config_option(func: F) -> F:
    """``--config PATH`` on every command that reads the configuration."""
    return click.option(
        "--config",
        "config_path",
        type=click.Path(path_type=Path, dir_okay=False),
        help="TOML configuration file (default /etc/kiosk-edge/edge.toml if present).",
    )(func)


def settings_from(config_path: Path | None) -> Settings:
    """Load settings or exit 2 with the one-line reason."""
    try:
        return load_settings(config_path)
    except ConfigError as exc:
        fail(f"configuration error: {exc}", EXIT_USAGE)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kiosk-edge")
def cli() -> None:
    """The till-side edge node: identity at the till, kiosk, POS pairing, durable MQTT relay."""


# -- run ---------------------------------------------------------------------------------------------


@cli.command()
@config_option
@click.option(
    "--simulate", is_flag=True, help="Use simulated devices and open the loopback control endpoint."
)
def run(config_path: Path | None, simulate: bool) -> None:
    """Run the node until SIGTERM/SIGINT."""
    settings = settings_from(config_path)
    logging.basicConfig(
        level=settings.log.level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("waitress").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from edge.httpserver import PortUnavailable
    from edge.node import Node

    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        logging.getLogger("edge").info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    node = Node(settings, simulate=simulate)
    try:
        node.start()
    except (PortUnavailable, KeyFileError) as exc:
        fail(str(exc), EXIT_USAGE)
    except (OSError, CloudSyncError) as exc:
        fail(f"cannot start: {exc}", EXIT_FAILURE)
    try:
        while not stop.wait(3600):
            pass
    finally:
        node.stop()


# -- keys --------------------------------------------------------------------------------------------


@cli.group()
def keys() -> None:
    """The node's signing key and the pseudonymisation key."""


@keys.command("init")
@config_option
def keys_init(config_path: Path | None) -> None:
    """Create missing keys in the data directory (never overwrites)."""
    from edge.keys import init_keys

    settings = settings_from(config_path)
    try:
        result = init_keys(settings.data.dir, settings.identity.pseudonym_key_file)
    except KeyFileError as exc:
        fail(str(exc), EXIT_USAGE)
    click.echo(f"signing key: {'created' if result.created_signing else 'present'} in {settings.data.dir}")
    if settings.identity.pseudonym_key_file is not None:
        click.echo(f"pseudonymisation key: chain key from {result.pseudonym_source}")
    elif result.created_pseudonym:
        click.echo(
            f"pseudonymisation key: created {result.pseudonym_source} — STANDALONE node: its identity "
            "tokens will not match other stores'; set identity.pseudonym_key_file for a chain"
        )
    else:
        click.echo(f"pseudonymisation key: present (standalone) at {result.pseudonym_source}")


@keys.command("show")
@config_option
def keys_show(config_path: Path | None) -> None:
    """Print the node's public signing key (one line, for 'kiosk-central nodes add')."""
    from edge.keys import public_key_text

    settings = settings_from(config_path)
    try:
        click.echo(public_key_text(settings.data.dir))
    except KeyFileError as exc:
        fail(str(exc), EXIT_USAGE)


# -- POS pairing -------------------------------------------------------------------------------------


def _pairing(settings: Settings) -> Any:
    from edge.keys import ensure_data_dir
    from edge.pos.pairing import Pairing

    try:
        data_dir = ensure_data_dir(settings.data.dir)
        return Pairing(
            data_dir / "local.sqlite3",
            code_ttl=settings.pos.pair_code_ttl,
            max_failures=settings.pos.pair_max_failures,
            lockout=settings.pos.pair_lockout,
        )
    except (OSError, sqlite3.Error) as exc:
        fail(f"cannot open the node's pairing state in {settings.data.dir}: {exc}")


@cli.command()
@config_option
def pair(config_path: Path | None) -> None:
    """Print a one-time 6-digit code for pairing a POS (valid for pos.pair_code_ttl seconds)."""
    settings = settings_from(config_path)
    pairing = _pairing(settings)
    try:
        code = pairing.new_code()
    finally:
        pairing.close()
    until = time.strftime("%H:%M:%S", time.localtime(code.expires_at))
    click.echo(f"pairing code: {code.code[:3]} {code.code[3:]}")
    click.echo(
        f"valid until {until} ({settings.pos.pair_code_ttl / 60:g} min), once; enter it on the POS, "
        f"which sends it to POST /pos/v1/pair on port {settings.pos.port}"
    )


@cli.group()
def pos() -> None:
    """Paired tills: list them, revoke one."""


@pos.command("list")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def pos_list(config_path: Path | None, as_json: bool) -> None:
    """Every till ever paired with this node (revoked ones too)."""
    pairing = _pairing(settings_from(config_path))
    try:
        clients = pairing.clients()
    finally:
        pairing.close()
    if as_json:
        click.echo(json.dumps([_asdict(c) for c in clients], indent=2))
        return
    if not clients:
        click.echo("no POS paired yet (run 'kiosk-edge pair')")
        return

    def when(stamp: float | None) -> str:
        return "-" if stamp is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp))

    click.echo(f"{'POS':<20} {'name':<24} {'paired':<16} {'last seen':<16} state")
    for c in clients:
        state = "revoked " + when(c.revoked_at) if c.revoked_at is not None else "active"
        click.echo(f"{c.pos_id:<20} {c.name:<24} {when(c.paired_at):<16} {when(c.last_seen):<16} {state}")


@pos.command("revoke")
@config_option
@click.argument("pos_id")
def pos_revoke(config_path: Path | None, pos_id: str) -> None:
    """Void POS_ID's token at once (the till must pair again)."""
    pairing = _pairing(settings_from(config_path))
    try:
        done = pairing.revoke(pos_id)
    finally:
        pairing.close()
    if not done:
        fail(f"no active POS {pos_id!r} (see 'kiosk-edge pos list')")
    click.echo(f"POS {pos_id} revoked: its token no longer works")


@pos.command("set-pin")
@config_option
@click.option(
    "--pin-stdin", is_flag=True, help="Read the PIN from standard input (for provisioning scripts)."
)
def pos_set_pin(config_path: Path | None, pin_stdin: bool) -> None:
    """Set the staff PIN of the pairing page /pos/staff (6-12 digits; stored only as a scrypt hash)."""
    from edge.keys import ensure_data_dir
    from edge.pos.staff import check_pin_shape, set_pin

    settings = settings_from(config_path)
    if pin_stdin:
        pin = sys.stdin.readline().strip()
    else:
        pin = click.prompt("staff PIN (6-12 digits)", hide_input=True, confirmation_prompt=True)
    try:
        check_pin_shape(pin)
        set_pin(ensure_data_dir(settings.data.dir), pin)
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)
    except OSError as exc:
        fail(f"cannot store the PIN in {settings.data.dir}: {exc}")
    click.echo(f"staff PIN set; the pairing page is http://<this node>:{settings.pos.port}/pos/staff")


@cli.command("pos-sim")
@config_option
@click.option(
    "--node", "node_url", help="The node's POS API, e.g. http://10.0.0.7:8081 (default: this machine)."
)
@click.option("--code", help="A pairing code from 'kiosk-edge pair' (default: ask the node on this machine).")
@click.option(
    "--count", default=100, show_default=True, type=click.IntRange(1, 10_000_000), help="Sales to send."
)
@click.option(
    "--rate",
    default=2.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Sales per second (0 = flat out).",
)
@click.option("--seed", type=int, help="Make the baskets reproducible.")
def pos_sim(  # noqa: PLR0917 - one parameter per click option
    config_path: Path | None,
    node_url: str | None,
    code: str | None,
    count: int,
    rate: float,
    seed: int | None,
) -> None:
    """A reference POS: pair with a node and play realistic sales (baskets, returns, members)."""
    from edge.pos.possim import Figures, PosClient, PosSimError, play

    settings = settings_from(config_path)
    url = node_url or f"http://127.0.0.1:{settings.pos.port}"
    if code is None:
        pairing = _pairing(settings)
        try:
            code = pairing.new_code().code
        finally:
            pairing.close()
    client = PosClient(url)

    def progress(figures: Figures) -> None:
        click.echo(
            f"  {figures.sent} sent, {figures.created} recorded, {figures.members} with a member, "
            f"p99 {figures.percentile(99):.1f} ms",
            err=True,
        )

    try:
        client.pair(code, "pos-sim", "pos-sim (reference POS)")
        click.echo(f"paired with {url} as pos-sim; sending {count} sale(s) at {rate or 'max'}/s", err=True)
        figures = play(client, count, rate, seed=seed, progress=progress)
    except PosSimError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted")
    finally:
        client.close()
    refused = ", ".join(f"{n}x {status}" for status, n in sorted(figures.refused.items())) or "none"
    click.echo(
        f"sent {figures.sent}, recorded {figures.created}, "
        f"retries answered from the receipt {figures.replayed}, "
        f"refused {refused}; members {figures.members} earning {figures.points} points; "
        f"latency p50 {figures.percentile(50):.1f} ms, p99 {figures.percentile(99):.1f} ms"
    )
    if figures.refused:
        sys.exit(EXIT_FAILURE)


def _asdict(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__slots__}


# -- admin endpoint clients ----------------------------------------------------------------------------


def admin_request(
    settings: Settings,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    *,
    token: str | None = None,
) -> tuple[int, dict[str, Any]]:
    """Call the running node's loopback admin endpoint; NotRunning if nothing answers."""
    url = f"http://127.0.0.1:{settings.admin.port}{path}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            payload = json.loads(exc.read() or b"{}")
        except ValueError:
            payload = {"detail": exc.reason}
        return exc.code, payload
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        raise NotRunning(
            f"no node is running (nothing answers on 127.0.0.1:{settings.admin.port}); "
            "start one with 'kiosk-edge run --simulate'"
        ) from exc


def _inject(config_path: Path | None, path: str, body: dict[str, Any]) -> None:
    from edge.node import CONTROL_TOKEN_FILE

    settings = settings_from(config_path)
    token_file = settings.data.dir / CONTROL_TOKEN_FILE
    try:
        token = token_file.read_text().strip()
    except FileNotFoundError:
        fail(
            f"no node is running with data dir {settings.data.dir} (no control token); "
            "start one with 'kiosk-edge run --simulate'"
        )
    except PermissionError:
        fail(f"cannot read {token_file}: run as the node's user")
    try:
        status, reply = admin_request(settings, "POST", path, body, token=token)
    except NotRunning as exc:
        fail(str(exc))
    if status == 200 and reply.get("accepted"):
        click.echo(f"accepted: {reply['schema']} id={reply['id']} seq={reply['seq']}")
        return
    if status == 200:
        click.echo(f"scanned: {reply.get('kind')} (not an identity: shown to the screens, no event queued)")
        return
    detail = reply.get("detail") or reply.get("title") or f"HTTP {status}"
    fail(str(detail), EXIT_USAGE if status == 400 else EXIT_FAILURE)


@cli.group()
def sim() -> None:
    """Inject device events into a node running with --simulate."""


@sim.command("tap")
@config_option
@click.argument("uid_hex")
def sim_tap(config_path: Path | None, uid_hex: str) -> None:
    """Present a card with UID UID_HEX (4, 7 or 10 bytes in hex)."""
    _inject(config_path, "/sim/tap", {"uid": uid_hex})


@sim.command("scan")
@config_option
@click.argument("code")
def sim_scan(config_path: Path | None, code: str) -> None:
    """Scan barcode CODE."""
    _inject(config_path, "/sim/scan", {"code": code})


@sim.command("button")
@config_option
def sim_button(config_path: Path | None) -> None:
    """Press the assistance button."""
    _inject(config_path, "/sim/button", {})


# -- status / outbox -------------------------------------------------------------------------------------


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


@cli.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def doctor(config_path: Path | None, as_json: bool) -> None:
    """Check readers, scanner, GPIO and key files. Exit 1 if anything needed is missing."""
    from edge.doctor import run_checks, summary

    settings = settings_from(config_path)
    checks = run_checks(settings)
    node: dict[str, Any] | None = None
    try:
        _, node = admin_request(settings, "GET", "/status")
    except NotRunning:
        node = None
    counts = summary(checks)
    if as_json:
        report = {"checks": [c.as_dict() for c in checks], "summary": counts, "node": node}
        click.echo(json.dumps(report, indent=2))
    else:
        marks = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL", "off": "off "}
        for check in checks:
            click.echo(f"[{marks[check.verdict]}] {check.name:<14} {check.detail}")
        if node is None:
            click.echo("[info] node           not running")
        else:
            devices = ", ".join(f"{k} {v}" for k, v in node["devices"].items())
            click.echo(f"[info] node           {node['state']}; devices: {devices}")
    if counts["fail"]:
        sys.exit(EXIT_FAILURE)


@cli.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(config_path: Path | None, as_json: bool) -> None:
    """State, broker connection, queue depth and oldest queued event age. Exit 1 if not running."""
    settings = settings_from(config_path)
    try:
        _, data = admin_request(settings, "GET", "/status")
    except NotRunning as exc:
        from cloud_sync.outbox import read_stats
        from edge.node import outbox_path

        stats = read_stats(outbox_path(settings))
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "state": "stopped",
                        "detail": str(exc),
                        "outbox": None
                        if stats is None
                        else {"depth": stats.depth, "oldest_age_s": round(stats.oldest_age(), 3)},
                    }
                )
            )
        else:
            click.echo("state:    stopped")
            if stats is not None:
                click.echo(f"queued:   {stats.depth} event(s), oldest {_age(stats.oldest_age())}")
        fail(str(exc))
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    broker = data["broker"]
    outbox = data["outbox"]
    link = "connected" if broker["connected"] else f"DISCONNECTED ({broker['last_error'] or 'connecting'})"
    click.echo(
        f"state:    {data['state']}  ({data['store']}/{data['node']}, v{data['version']}, "
        f"up {_age(data['uptime_s'])}{', simulated devices' if data['simulate'] else ''})"
    )
    click.echo(f"broker:   {broker['url']}  {link}, reconnects {broker['reconnects']}")
    click.echo(
        f"queued:   {outbox['depth']} event(s), oldest {_age(outbox['oldest_age_s'])}, last seq "
        f"{outbox['last_seq']}"
    )
    click.echo(f"alarms:   {', '.join(data['alarms']) or 'none'}")
    click.echo("devices:  " + ", ".join(f"{k} {v}" for k, v in data["devices"].items()))
    click.echo(f"kiosk:    {data['kiosk_url']}")


@cli.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def outbox(config_path: Path | None, as_json: bool) -> None:
    """Queue depth by event type, oldest event and size on disk (read straight from the database)."""
    from cloud_sync.outbox import disk_usage, read_stats
    from edge.node import outbox_path

    settings = settings_from(config_path)
    path = outbox_path(settings)
    stats = read_stats(path)
    if stats is None:
        if as_json:
            click.echo(json.dumps({"path": str(path), "exists": False}))
            return
        click.echo(f"no outbox yet at {path} (the node creates it on first start)")
        return
    size = disk_usage(path)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "path": str(path),
                    "exists": True,
                    "depth": stats.depth,
                    "by_type": stats.by_type,
                    "payload_bytes": stats.bytes,
                    "disk_bytes": size,
                    "oldest_age_s": round(stats.oldest_age(), 3),
                    "oldest_ts": stats.oldest_created,
                    "last_seq": stats.last_seq,
                },
                indent=2,
            )
        )
        return
    click.echo(f"outbox:   {path}")
    click.echo(f"depth:    {stats.depth} event(s)")
    for etype, count in sorted(stats.by_type.items()):
        click.echo(f"  {etype:<12} {count}")
    if stats.oldest_created is not None:
        oldest = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stats.oldest_created))
        click.echo(f"oldest:   {oldest} ({_age(stats.oldest_age())} ago)")
    click.echo(f"size:     {size / 1_048_576:.2f} MiB on disk ({stats.bytes} payload bytes)")
    click.echo(f"last seq: {stats.last_seq}")


def main() -> None:
    """Console-script entry point: turn our own errors into one line and the right exit code."""
    try:
        cli.main(standalone_mode=True)
    except ConfigError as exc:
        fail(f"configuration error: {exc}", EXIT_USAGE)
    except EdgeError as exc:
        fail(str(exc))
