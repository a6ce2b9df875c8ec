#!/usr/bin/env bash
# See the whole chain on one machine: a node (simulated devices), the central receiver (SQLite), the
# reference POS, all on a local Mosquitto. Sales turn into points on the kiosk screen.
#
#   ./scripts/run-chain.sh            then open http://127.0.0.1:8080/ and, in another terminal:
#   .venv/bin/kiosk-edge sim tap 04A1B2C3D4E5F6       (the kiosk invites the unknown card to join)
#   ... join on the kiosk, tap again: the POS's next sale (every 2 s) takes the customer, and the
#   welcome screen shows their name, points, tier and stamp card as the central receiver books them.
#
# Keeps its state in ./.chain or $CHAIN_STATE (delete it to start afresh). Broker: $CHAIN_BROKER, default the local
# mqtt://127.0.0.1:1883 (installs and starts Debian's mosquitto when run as root and none answers).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
bash scripts/setup.sh
BROKER=${CHAIN_BROKER:-mqtt://127.0.0.1:1883}
STATE=${CHAIN_STATE:-"$ROOT/.chain"}
mkdir -p "$STATE" && chmod 700 "$STATE"
say() { printf 'run-chain: %s\n' "$*" >&2; }

hostport=${BROKER#*://}
host=${hostport%%:*}
port=${hostport##*:}
[[ "$port" == "$hostport" ]] && port=1883
if ! (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
  if [[ "$(id -u)" == 0 ]] && [[ "$host" == 127.0.0.1 || "$host" == localhost ]]; then
    command -v mosquitto >/dev/null || { apt-get update -qq && apt-get install -y -qq mosquitto >/dev/null; }
    say "starting mosquitto on 127.0.0.1:$port"
    mosquitto -p "$port" -d
    sleep 0.5
  else
    say "no MQTT broker answers at $BROKER; start one (e.g. 'sudo apt-get install mosquitto') or set CHAIN_BROKER"
    exit 1
  fi
fi

export KIOSK_CENTRAL_DATA__DIR="$STATE/central"
export KIOSK_CENTRAL_MQTT__URL="$BROKER"
export KIOSK_CENTRAL_MQTT__CLIENT_ID="central-chain-demo"
export KIOSK_EDGE_DATA__DIR="$STATE/node"
export KIOSK_EDGE_MQTT__URL="$BROKER"
mkdir -p "$KIOSK_CENTRAL_DATA__DIR"
if [[ ! -e "$KIOSK_CENTRAL_DATA__DIR/vault.key" ]]; then
  .venv/bin/kiosk-central vault keygen --out "$KIOSK_CENTRAL_DATA__DIR" > "$STATE/vault-node-line" 2>/dev/null
fi
# the node seals personal data to the vault's public key: vault_public_key = "x25519:..."
KIOSK_EDGE_IDENTITY__VAULT_PUBLIC_KEY=$(sed -n 's/^vault_public_key = "\(.*\)"$/\1/p' "$STATE/vault-node-line")
export KIOSK_EDGE_IDENTITY__VAULT_PUBLIC_KEY
.venv/bin/kiosk-edge keys init >/dev/null
read -r store node kport < <(.venv/bin/python -c \
  'from edge.config import load_settings; s = load_settings(); print(s.node.store, s.node.id, s.kiosk.port)')
.venv/bin/kiosk-central nodes add "$store" "$node" "$(.venv/bin/kiosk-edge keys show)" >&2

pids=()
stop() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop EXIT
trap 'stop; exit 0' INT TERM
.venv/bin/kiosk-central run &
pids+=($!)
.venv/bin/kiosk-edge run --simulate &
pids+=($!)
for _ in $(seq 1 100); do  # wait until the node answers (at most 20 s)
  .venv/bin/kiosk-edge status >/dev/null 2>&1 && break
  sleep 0.2
done
.venv/bin/kiosk-edge pos-sim --count 1000000 --rate 0.5 &
pids+=($!)
say "kiosk: http://127.0.0.1:$kport/   tap a card: .venv/bin/kiosk-edge sim tap 04A1B2C3D4E5F6"
say "ledger: .venv/bin/kiosk-central stats   reports: .venv/bin/kiosk-central report rfm   (Ctrl-C stops all)"
wait -n "${pids[@]}"
