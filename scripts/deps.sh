#!/usr/bin/env bash
# Install (as root, with apt) what luaws needs to build, run and be tested on Debian 12.
# libssl-dev: TLS (src/tls.c); openssl: the specs make their certificates with it.
# libisal-dev: Intel's ISA-L, whose igzip compresses whole messages for permessage-deflate
# (src/igzip.c); zlib1g-dev does the rest of it.
# lua-luv-dev: luv's C header, so luaws's loop becomes luv's when luv is loaded after luaws
# (spec/luv_spec.lua); luaws builds and runs without it.
# lua-cqueues, lua-event, lua-socket, lua-luv (each with a Lua 5.4 build) and prosody (0.12, on
# lua5.4) are host loops that spec/embedding_spec.lua runs luaws inside; the spec starts
# its own Prosody on no ports (Debian's package also installs, and may start, a system
# service, which the specs do not use).
# tinyproxy and microsocks are the HTTP and SOCKS5 proxies spec/issue10_proxy_spec.lua
# dials through; the spec runs its own on 127.0.0.1 (tinyproxy with its own config). Debian's package starts a system service on port
# 8888 where services may start: when this script installed it, that service is stopped
# and disabled (a tinyproxy installed before is left as it was).
# chromium: a real browser's WebSocket client (headless, run as root with --no-sandbox) for
# spec/issue10_chromium_spec.lua -- ws://, wss:// and permessage-deflate as browsers speak
# them; about 300 MB installed, which the CI budget allows.
set -euo pipefail
PKGS=(build-essential pkg-config lua5.4 liblua5.4-dev libwebsockets-dev libssl-dev openssl curl
      libwebsockets-evlib-uv libuv1-dev zlib1g-dev libisal-dev luarocks lua-busted lua-cjson
      python3 python3-websockets golang-go golang-github-gorilla-websocket-dev
      lua-cqueues lua-event lua-socket lua-luv lua-luv-dev prosody tinyproxy microsocks chromium)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [[ " ${missing[*]-} " == *" tinyproxy "* ]]; then
  if [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now tinyproxy >/dev/null 2>&1 || true
  elif [ -x /etc/init.d/tinyproxy ]; then
    $SUDO service tinyproxy stop >/dev/null 2>&1 || true
    $SUDO update-rc.d tinyproxy disable >/dev/null 2>&1 || true
  fi
fi
# Node's ws for spec/interop_deflate_spec.lua (permessage-deflate interop), pinned by
# spec/peers/node/package-lock.json; nodejs/npm from Debian when missing.
if ! command -v npm >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm >/dev/null
fi
(cd "$(dirname "$0")/../spec/peers/node" && npm ci --no-audit --no-fund --loglevel=error)
