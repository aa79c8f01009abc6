#!/usr/bin/env bash
# Install what Mirage needs on a fresh Debian/Ubuntu machine: EGL/Mesa for headless Panda3D (and libusb for
# Open3D, the memory peer; cmake, g++ and gRPC C++ for the C++ client), then the
# Python packages (CPU torch 2.13.0 pinned in pyproject.toml) into the active Python environment:
# mirage-client (plugin_bridge/) and the runtime (the repository root) with its development and peers extras.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

missing=()
# the C++ client's toolchain (plugin_bridge/cpp, built by its test): cmake, g++, gRPC C++ and protoc
for pkg in libegl1 libegl-mesa0 libgl1-mesa-dri libusb-1.0-0 \
           cmake g++ pkg-config libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update
  $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi

PYTHON="${PYTHON:-python3}"
# the client distribution first: the runtime depends on it by name
"$PYTHON" -m pip install --quiet -e ./plugin_bridge -e ".[dev,peers]"
