#!/usr/bin/env bash
# Install dependencies, build, and run the whole test suite (busted, Lua 5.4).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
make
make soak-asan
make stress-asan
make test
