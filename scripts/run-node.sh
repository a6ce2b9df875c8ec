#!/usr/bin/env bash
# Set up (if needed) and run the node with the embedded defaults: SQLite in ~/.local/share/kiosk-edge,
# broker mqtt://127.0.0.1:1883 (events queue durably until one answers), kiosk on http://127.0.0.1:8080,
# POS API on :8081, simulated devices (try 'kiosk-edge sim tap 04A1B2C3D4E5F6' from another terminal).
#   --pos-sim   also start the reference POS (kiosk-edge pos-sim): it pairs and plays a sale every 2 s
# Other arguments go to 'kiosk-edge run', e.g. --config /etc/kiosk-edge/edge.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [[ "${1:-}" != "--pos-sim" ]]; then
  exec .venv/bin/kiosk-edge run --simulate "$@"
fi
shift
.venv/bin/kiosk-edge run --simulate "$@" &
node=$!
sim=""
stop() {
  [[ -n "$sim" ]] && kill -TERM "$sim" 2>/dev/null || true
  kill -TERM "$node" 2>/dev/null || true
}
trap stop INT TERM
for _ in $(seq 1 100); do  # wait until the node answers (at most 20 s)
  .venv/bin/kiosk-edge status "$@" >/dev/null 2>&1 && break
  kill -0 "$node" 2>/dev/null || break
  sleep 0.2
done
.venv/bin/kiosk-edge pos-sim "$@" --count 1000000 --rate 0.5 &
sim=$!
set +e
wait "$node"
rc=$?
while kill -0 "$node" 2>/dev/null; do  # a trapped signal interrupts 'wait': wait for the node's own exit code
  wait "$node"
  rc=$?
done
stop
wait "$sim" 2>/dev/null
exit "$rc"
