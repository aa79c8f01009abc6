#!/usr/bin/env bash
# Install everything, then run the test suite (long evaluations are marked `slow` and skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PYTHON="${PYTHON:-python3}"
"$PYTHON" -m pytest -q "$@"
