#!/usr/bin/python3
"""Raw-socket WebSocket server peer for spec/conformance_spec.lua (stdlib only).

usage: raw_server.py SCRIPT

Listens on 127.0.0.1, port chosen by the system, and prints the port on the first line
of stdout (flushed). It accepts one connection (within 10 s), reads the HTTP upgrade
request, checks it (GET, Upgrade: websocket, Connection: Upgrade, Sec-WebSocket-Version
13, a Sec-WebSocket-Key of 16 base64 bytes) and answers 101 with the right
Sec-WebSocket-Accept and no extension or subprotocol (unless the script has
"answer_headers": header lines the 101 carries, e.g. a Sec-WebSocket-Extensions answer).
Then it runs SCRIPT exactly as
raw_client.py does (same steps, same options; see there), sending the bytes verbatim
(server frames are normally unmasked: the spec builds them), while recording every frame
the client sends until the client closes TCP or "linger" seconds pass. A close frame
from the client is answered with an unmasked close frame echoing its code, unless
"reply_close" is false.

It prints one JSON line, the one raw_client.py prints plus:
    request         {"path": ..., "problems": [...], "headers": {...}}: what was wrong with
                    the upgrade request (empty when it was fine), its headers (names in
                    lower case)
    all_masked      every frame received was masked (RFC 6455 5.1: client frames must be)
"""
import base64
import socket
import sys

from raw_client import Peer, accept_key, emit, load_script, parse_headers, read_http_head


def main():
    if len(sys.argv) != 2:
        sys.stderr.write("usage: raw_server.py SCRIPT\n")
        return 2
    script = load_script(sys.argv[1])
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    sys.stdout.write("%d\n" % ls.getsockname()[1])
    sys.stdout.flush()
    ls.settimeout(10)
    try:
        sock, _ = ls.accept()
    except socket.timeout:
        emit({"handshake": "no connection within 10 s"})
        return 1
    ls.close()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        head, rest = read_http_head(sock)
    except (OSError, ConnectionError) as e:
        emit({"handshake": "failed: %s" % e})
        return 1
    lines = head.split("\r\n")
    parts = lines[0].split(" ")
    h = parse_headers(lines[1:])
    problems = []
    if len(parts) != 3 or parts[0] != "GET" or parts[2] != "HTTP/1.1":
        problems.append("request line %r" % lines[0])
    if h.get("upgrade", "").lower() != "websocket":
        problems.append("Upgrade %r" % h.get("upgrade"))
    if "upgrade" not in [t.strip().lower() for t in h.get("connection", "").split(",")]:
        problems.append("Connection %r" % h.get("connection"))
    if h.get("sec-websocket-version") != "13":
        problems.append("Sec-WebSocket-Version %r" % h.get("sec-websocket-version"))
    key = h.get("sec-websocket-key", "")
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            problems.append("Sec-WebSocket-Key %r is not 16 bytes" % key)
    except ValueError:
        problems.append("Sec-WebSocket-Key %r is not base64" % key)
    if rest:
        problems.append("%d bytes sent before the 101" % len(rest))
    extra = "".join("%s\r\n" % line for line in script.get("answer_headers", []))
    sock.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n%s\r\n"
                  % (accept_key(key), extra)).encode())
    result = Peer(sock, False, script, rest).run()
    result["handshake"] = "ok"
    result["request"] = {"path": parts[1] if len(parts) > 1 else None, "problems": problems,
                         "headers": h}
    result["all_masked"] = all(f["masked"] for f in result["frames"])
    emit(result)
    sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
