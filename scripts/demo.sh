#!/usr/bin/env bash
# Set up (if needed) and run the simulated experiment campaign into ./nanostrain-data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/nanostrain demo "$@"
