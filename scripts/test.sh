#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Two processes, each taking whole test files (their servers and IOCs stay with them);
# NANOSTRAIN_TEST_WORKERS=0 runs in one process, and arguments given here come last, so
# `bash scripts/test.sh -n 0 tests/core` works too.
exec .venv/bin/python -m pytest -n "${NANOSTRAIN_TEST_WORKERS:-2}" --dist loadfile "$@"
