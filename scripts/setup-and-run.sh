#!/usr/bin/env bash
# Install dependencies, build, and run the echo server (gorilla's example, in Lua).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
make
exec lua5.4 examples/echo_server.lua "$@"
