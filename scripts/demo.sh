#!/usr/bin/env bash
# Install everything, then run the demo: an out-and-back walk through a Panda3D scene over gRPC.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
mirage demo --out demo_out "$@"
