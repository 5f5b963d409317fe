#!/usr/bin/python3
"""Python websockets (legacy asyncio API, Debian's 10.4) echo server peer for
spec/interop_spec.lua.

usage: py_server.py

Listens on 127.0.0.1, port chosen by the system, and prints the port on the first line
of stdout. Each connection: the subprotocol is chosen by the server's preference from
["a", "b"]; every message is echoed, except the text commands
    "FRAGMENT-TEXT"    answered by a text message sent as several frames,
    "FRAGMENT-BINARY"  answered by a binary message sent as several frames.
It prints (and flushes) one line per event:
    HEADER <X-Interop-Token value>
    SUBPROTOCOL <name or None>
    CLOSED <code> <reason>           (the close frame the client sent)
"""
import asyncio
import sys

import websockets

SERVER_PROTOCOLS = ["a", "b"]

# The fragments of the two messages the FRAGMENT commands ask for. Each item is sent in
# its own frame; the empty one is an empty continuation frame.
TEXT_FRAGMENTS = ["frag-one \u20ac ", "", "two \U0001F600 ", "three" * 20000, " end"]
BINARY_FRAGMENTS = [b"\x00\x01\x02", bytes(range(256)) * 300, b"", b"\xff" * 5, b"\x80end"]


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def server_preference(client, server):
    for p in server:
        if p in client:
            return p
    return None


async def handler(ws, path):
    say("HEADER %s" % ws.request_headers.get("X-Interop-Token"))
    say("SUBPROTOCOL %s" % ws.subprotocol)
    try:
        async for msg in ws:
            if msg == "FRAGMENT-TEXT":
                await ws.send(iter(TEXT_FRAGMENTS))
            elif msg == "FRAGMENT-BINARY":
                await ws.send(iter(BINARY_FRAGMENTS))
            else:
                await ws.send(msg)
    except websockets.ConnectionClosed:
        pass
    await ws.wait_closed()
    say("CLOSED %s %s" % (ws.close_code, ws.close_reason))


async def main():
    async with websockets.serve(
        handler,
        "127.0.0.1",
        0,
        subprotocols=SERVER_PROTOCOLS,
        select_subprotocol=server_preference,
        max_size=None,
    ) as server:
        port = server.sockets[0].getsockname()[1]
        say(str(port))
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main())
