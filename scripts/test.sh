#!/usr/bin/env bash
# Set up (if needed) and run every check: ruff, mypy and the whole pytest suite (real Mosquitto brokers,
# started by the tests themselves on free loopback ports). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
echo "== ruff"; .venv/bin/ruff check .
echo "== ruff format"; .venv/bin/ruff format --check .
echo "== mypy"; .venv/bin/mypy
echo "== pytest"; exec .venv/bin/python -m pytest "$@"
