#!/usr/bin/env bash
# Set up (if needed) and run the node with the embedded defaults: SQLite in ~/.local/share/kiosk-edge,
# broker mqtt://127.0.0.1:1883 (events queue durably until one answers), kiosk on http://127.0.0.1:8080,
# simulated devices (try 'kiosk-edge sim tap 04A1B2C3D4E5F6' from another terminal).
# Extra arguments go to 'kiosk-edge run', e.g. --config /etc/kiosk-edge/edge.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/kiosk-edge run --simulate "$@"
