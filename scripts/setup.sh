#!/usr/bin/env bash
# Set up everything kiosk-edge needs on Debian 12 / Raspberry Pi OS Bookworm, from a fresh clone.
#   scripts/setup.sh          what the node needs (Python venv with the package)
#   scripts/setup.sh --test   also what the test suite needs (Mosquitto, Node.js + the AsyncAPI CLI, dev tools)
# Missing Debian packages are installed with apt-get when run as root (or with password-less sudo);
# otherwise the script names them and stops. Safe to run again: it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
WITH_TEST=0
[ "${1:-}" = "--test" ] && WITH_TEST=1

say() { printf 'setup: %s\n' "$*" >&2; }

missing=()
need_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed" || missing+=("$1"); }
need_cmd() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }

need_cmd python3 python3
if command -v python3 >/dev/null 2>&1 && ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  missing+=(python3-venv)
fi
# device back ends: pyscard builds against PC/SC-lite and talks to pcscd; evdev builds against the
# kernel's input headers
need_pkg pcscd
need_pkg libpcsclite-dev
need_pkg linux-libc-dev
need_pkg gcc
need_pkg python3-dev
if [ "$WITH_TEST" = 1 ]; then
  need_pkg vsmartcard-vpcd                   # the virtual PC/SC reader the NFC tests plug their card into
  need_cmd chromium chromium                 # the kiosk tests drive Debian's Chromium through Playwright
  need_pkg fonts-noto-cjk                    # Simplified Chinese pages render (and are screenshot) with real glyphs
  need_cmd mosquitto mosquitto
  need_pkg postgresql                        # initdb/pg_ctl: the central tests start a private PostgreSQL
  need_cmd mosquitto_sub mosquitto-clients   # the benchmark's delivery check
  need_cmd node nodejs
  need_cmd npm npm
fi

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=none; fi
  if [ "$SUDO" = none ]; then
    say "missing Debian packages: ${missing[*]}"
    say "install them with: sudo apt-get install ${missing[*]}   (then run this again)"
    exit 1
  fi
  say "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || { say "Python 3.11 or newer is required (found $(python3 --version))"; exit 1; }

VENV="$ROOT/.venv"
if [ ! -x "$VENV/bin/python" ]; then
  say "creating the virtual environment in .venv"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi
extras=""
[ "$WITH_TEST" = 1 ] && extras="[dev]"
stamp="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)${extras:+-dev}"
if [ ! -e "$stamp" ]; then
  say "installing kiosk-edge${extras} into .venv"
  "$VENV/bin/python" -m pip install -q -e ".${extras}"
  rm -f "$VENV"/.installed-*
  touch "$stamp"
fi

# the kiosk's compiled message catalogs (.mo files are build output, not in git)
for po in kiosk_ui/translations/*/LC_MESSAGES/messages.po; do
  mo="${po%.po}.mo"
  if [ ! -e "$mo" ] || [ "$po" -nt "$mo" ]; then
    "$VENV/bin/pybabel" -q compile -d kiosk_ui/translations && say "compiled the kiosk translations"
    break
  fi
done

if [ "$WITH_TEST" = 1 ]; then
  NODE_DIR="$ROOT/.cache/node"
  lockhash=$(sha256sum tests/asyncapi-cli/package.json tests/asyncapi-cli/package-lock.json | sha256sum | cut -c1-16)
  if [ ! -e "$NODE_DIR/.installed-$lockhash" ]; then
    say "installing the AsyncAPI CLI (npm ci, pinned by tests/asyncapi-cli/package-lock.json)"
    rm -rf "$NODE_DIR"
    mkdir -p "$NODE_DIR"
    cp tests/asyncapi-cli/package.json tests/asyncapi-cli/package-lock.json "$NODE_DIR/"
    (cd "$NODE_DIR" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
    touch "$NODE_DIR/.installed-$lockhash"
  fi
fi
say "ready"
