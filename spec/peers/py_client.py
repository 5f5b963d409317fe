#!/usr/bin/python3
"""Python websockets (legacy asyncio API, Debian's 10.4) client peer for spec/interop_spec.lua.

usage: py_client.py URL RESULT_FILE MODE

Connects to URL offering the subprotocols "b, a" and an X-Interop-Token header; in MODE
"messages" sends every message of the shared script (text and binary payloads of the
sizes below) and checks each echo byte for byte (MODE "handshake" skips that); then
closes with 4000 and reads the close the server echoes.
It writes one line per check to RESULT_FILE (via a temporary file and rename, so the
spec never reads a half-written file), the last line being "END":
    subprotocol <name>
    echo <text|binary> <size> ok            (or "MISMATCH ...")
    close <code> <reason>
    error <repr>                            (anything unexpected)
"""
import asyncio
import os
import sys

import websockets

TOKEN = "python-token-7f3a"
SIZES = [0, 1, 125, 126, 127, 65535, 65536, 1048576]
UNIT = "ab\u20ac\u00e9\U0001F600-0123"  # 16 bytes of UTF-8
assert len(UNIT.encode()) == 16


def text(n):
    return UNIT * (n // 16) + "x" * (n % 16)


def binary(n):
    return bytes(((i * 131 + (i >> 8) * 17 + 7) & 255) for i in range(n))


def compare(got, want):
    if type(got) is not type(want):
        return "MISMATCH type %s" % type(got).__name__
    if isinstance(got, str):
        got, want = got.encode(), want.encode()
    if len(got) != len(want):
        return "MISMATCH length %d" % len(got)
    for i, (a, b) in enumerate(zip(got, want)):
        if a != b:
            return "MISMATCH at byte %d" % i
    return "ok"


async def run(url, mode, lines):
    ws = await websockets.connect(
        url,
        subprotocols=["b", "a"],
        extra_headers={"X-Interop-Token": TOKEN},
        max_size=None,
        open_timeout=10,
        close_timeout=5,
    )
    lines.append("subprotocol %s" % ws.subprotocol)
    for size in SIZES if mode == "messages" else []:
        for kind, payload in (("text", text(size)), ("binary", binary(size))):
            await ws.send(payload)
            got = await asyncio.wait_for(ws.recv(), 10)
            lines.append("echo %s %d %s" % (kind, size, compare(got, payload)))
    await ws.close(4000, "bye from python")
    lines.append("close %s %s" % (ws.close_code, ws.close_reason))


def main():
    url, result, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    lines = []
    try:
        if mode not in ("messages", "handshake"):
            raise ValueError("unknown mode %r" % mode)
        asyncio.run(asyncio.wait_for(run(url, mode, lines), 30))
    except BaseException as e:  # report it to the spec instead of dying silently
        lines.append("error %r" % (e,))
    lines.append("END")
    with open(result + ".tmp", "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    os.rename(result + ".tmp", result)


if __name__ == "__main__":
    main()
