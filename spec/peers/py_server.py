#!/usr/bin/python3
"""Python websockets (legacy asyncio API, Debian's 10.4) echo server peer for
spec/interop_spec.lua.

usage: py_server.py [--tls CERT KEY]

Listens on 127.0.0.1, port chosen by the system, and prints the port on the first line
of stdout. With --tls it speaks TLS (wss://) with that certificate and key. Each connection: the subprotocol is chosen by the server's preference from
["a", "b"]; every message is echoed, except the text commands
    "FRAGMENT-TEXT"    answered by a text message sent as several frames,
    "FRAGMENT-BINARY"  answered by a binary message sent as several frames,
    "CLOSE-1008"       answered by a close 1008 "policy from python",
and "PING-ME", which is echoed after the server has pinged the client with each of
PING_PAYLOADS in turn and waited for the pong with that payload.
It prints (and flushes) one line per event:
    HEADER <X-Interop-Token value>
    SUBPROTOCOL <name or None>
    EXTENSIONS <its Sec-WebSocket-Extensions answer> (websockets answers permessage-deflate)
    RECEIVED <text|binary> <size> ok (or "MISMATCH ..."): a message of a size in
                                     BIG_SIZES, checked against the shared payload
    PING <i> ok                      (or "TIMEOUT ..."), for "PING-ME"
    CLOSED <code> <reason>           (the close frame the client sent)
"""
import asyncio
import ssl
import sys

import websockets

SERVER_PROTOCOLS = ["a", "b"]

# The shared payloads (as in spec/interop_spec.lua and spec/peers/py_client.py).
BIG_SIZES = [16 * 1024 * 1024]
UNIT = "ab\u20ac\u00e9\U0001F600-0123"  # 16 bytes of UTF-8
PING_PAYLOADS = [
    b"",
    b"ping-1",
    bytes(range(125)),
    b"\x00\xff\x80 binary \x01",
    "\u20ac\U0001F600 utf-8".encode(),
]


def text(n):
    return UNIT * (n // 16) + "x" * (n % 16)


# byte i is (i * 131 + (i >> 8) * 17 + 7) & 255, which repeats every 65536 bytes
_PERIOD = bytes(((i * 131 + (i >> 8) * 17 + 7) & 255) for i in range(65536))


def binary(n):
    return (_PERIOD * (n // 65536 + 1))[:n]


def check_big(msg, data):
    """The RECEIVED line for msg, whose bytes (UTF-8 for a text message) are data."""
    kind = "text" if isinstance(msg, str) else "binary"
    want = text(len(data)).encode() if kind == "text" else binary(len(data))
    if data == want:
        return "RECEIVED %s %d ok" % (kind, len(data))
    at = next(i for i, (a, b) in enumerate(zip(data, want)) if a != b)
    return "RECEIVED %s %d MISMATCH at byte %d" % (kind, len(data), at)


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
    say("EXTENSIONS %s" % ws.response_headers.get("Sec-WebSocket-Extensions"))
    try:
        async for msg in ws:
            data = msg.encode() if isinstance(msg, str) else msg
            if len(data) in BIG_SIZES:
                say(check_big(msg, data))
            if msg == "CLOSE-1008":
                await ws.close(1008, "policy from python")
                break
            if msg == "PING-ME":
                for i, payload in enumerate(PING_PAYLOADS, 1):
                    pong_waiter = await ws.ping(payload)
                    try:
                        await asyncio.wait_for(pong_waiter, 5)
                        say("PING %d ok" % i)
                    except asyncio.TimeoutError:
                        say("PING %d TIMEOUT no pong with payload %r within 5 s" % (i, payload))
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
    tls = None
    if sys.argv[1:2] == ["--tls"]:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(sys.argv[2], sys.argv[3])
    async with websockets.serve(
        handler,
        "127.0.0.1",
        0,
        subprotocols=SERVER_PROTOCOLS,
        select_subprotocol=server_preference,
        max_size=None,
        ssl=tls,
    ) as server:
        port = server.sockets[0].getsockname()[1]
        say(str(port))
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main())
