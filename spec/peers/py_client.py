#!/usr/bin/python3
"""Python websockets (legacy asyncio API, Debian's 10.4) client peer for spec/interop_spec.lua.

usage: py_client.py URL RESULT_FILE MODE [--cafile CA]

A wss:// URL is verified against CA (a PEM file) with --cafile, else the system's CAs.

Connects to URL offering the subprotocols "b, a" and an X-Interop-Token header, then
by MODE:
    messages   sends every message of the shared script (text and binary payloads of
               the sizes below) and checks each echo byte for byte;
    handshake  nothing more;
    big        the same as messages with a text and a binary message of 16 MiB;
    ping       pings the server with each of PING_PAYLOADS in turn and waits for the
               pong with that payload; then sends "PING-ME" (the luaws server pings us
               with the same payloads, answered automatically, before it echoes it)
               and "PONGED" (by then our pongs have reached it), reading both echoes;
    close1008  closes with 1008 instead of 4000 (below);
    close1001  sends "CLOSE-1001", on which the luaws server closes with 1001 + text,
               and reports that close instead of closing itself.
Then (except in close1001) it closes with 4000 and reads the close the server echoes.
It writes one line per check to RESULT_FILE (via a temporary file and rename, so the
spec never reads a half-written file), the last line being "END":
    subprotocol <name>
    extensions <the server's Sec-WebSocket-Extensions> (websockets offers permessage-deflate)
    echo <text|binary> <size> ok            (or "MISMATCH ...")
    ping <i> ok                             (or "TIMEOUT ...": no pong with that payload)
    close <code> <reason>
    server-close <code> <reason>            (close1001: the close the server started)
    error <repr>                            (anything unexpected)
"""
import asyncio
import os
import ssl
import sys

import websockets

TOKEN = "python-token-7f3a"
SIZES = [0, 1, 125, 126, 127, 65535, 65536, 1048576]
BIG_SIZES = [16 * 1024 * 1024]
PING_PAYLOADS = [
    b"",
    b"ping-1",
    bytes(range(125)),
    b"\x00\xff\x80 binary \x01",
    "\u20ac\U0001F600 utf-8".encode(),
]
UNIT = "ab\u20ac\u00e9\U0001F600-0123"  # 16 bytes of UTF-8
assert len(UNIT.encode()) == 16


def text(n):
    return UNIT * (n // 16) + "x" * (n % 16)


# byte i of binary(n) is (i * 131 + (i >> 8) * 17 + 7) & 255, which repeats every 65536
# bytes; building one period and repeating it keeps 16 MiB fast.
_PERIOD = bytes(((i * 131 + (i >> 8) * 17 + 7) & 255) for i in range(65536))


def binary(n):
    return (_PERIOD * (n // 65536 + 1))[:n]


def compare(got, want):
    if type(got) is not type(want):
        return "MISMATCH type %s" % type(got).__name__
    if got == want:
        return "ok"
    if isinstance(got, str):
        got, want = got.encode(), want.encode()
    if len(got) != len(want):
        return "MISMATCH length %d" % len(got)
    for i, (a, b) in enumerate(zip(got, want)):
        if a != b:
            return "MISMATCH at byte %d" % i
    return "ok"


async def run(url, mode, lines, cafile):
    tls = ssl.create_default_context(cafile=cafile) if url.startswith("wss:") else None
    ws = await websockets.connect(
        url,
        ssl=tls,
        subprotocols=["b", "a"],
        extra_headers={"X-Interop-Token": TOKEN},
        max_size=None,
        open_timeout=10,
        close_timeout=5,
    )
    lines.append("subprotocol %s" % ws.subprotocol)
    lines.append("extensions %s" % ws.response_headers.get("Sec-WebSocket-Extensions"))
    script = {"messages": SIZES, "big": BIG_SIZES}.get(mode, [])
    for size in script:
        for kind, payload in (("text", text(size)), ("binary", binary(size))):
            await ws.send(payload)
            got = await asyncio.wait_for(ws.recv(), 10)
            lines.append("echo %s %d %s" % (kind, size, compare(got, payload)))
    if mode == "ping":
        for i, payload in enumerate(PING_PAYLOADS, 1):
            pong_waiter = await ws.ping(payload)
            try:
                await asyncio.wait_for(pong_waiter, 5)
                lines.append("ping %d ok" % i)
            except asyncio.TimeoutError:
                lines.append("ping %d TIMEOUT no pong with payload %r within 5 s" % (i, payload))
        for cmd in ("PING-ME", "PONGED"):
            await ws.send(cmd)
            got = await asyncio.wait_for(ws.recv(), 10)
            if got != cmd:
                lines.append("error echo of %s: %r" % (cmd, got[:100]))
    if mode == "close1001":
        await ws.send("CLOSE-1001")
        try:
            got = await asyncio.wait_for(ws.recv(), 10)
            lines.append("error message instead of the close: %r" % (got[:100],))
        except websockets.ConnectionClosed:
            pass
        await ws.wait_closed()
        lines.append("server-close %s %s" % (ws.close_code, ws.close_reason))
        return
    if mode == "close1008":
        await ws.close(1008, "policy from python")
    else:
        await ws.close(4000, "bye from python")
    lines.append("close %s %s" % (ws.close_code, ws.close_reason))


def main():
    url, result, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    cafile = sys.argv[5] if sys.argv[4:5] == ["--cafile"] else None
    lines = []
    try:
        if mode not in ("messages", "handshake", "big", "ping", "close1001", "close1008"):
            raise ValueError("unknown mode %r" % mode)
        asyncio.run(asyncio.wait_for(run(url, mode, lines, cafile), 30))
    except BaseException as e:  # report it to the spec instead of dying silently
        lines.append("error %r" % (e,))
    lines.append("END")
    with open(result + ".tmp", "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    os.rename(result + ".tmp", result)


if __name__ == "__main__":
    main()
