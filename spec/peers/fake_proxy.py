#!/usr/bin/python3
"""A scripted HTTP proxy for spec/issue10_proxy_spec.lua (stdlib only).

usage: fake_proxy.py SCRIPT

SCRIPT is JSON. Listens on 127.0.0.1, port chosen by the system, printed on the first
line of stdout (flushed). Accepts one connection (within 10 s), reads the request head
up to its blank line, then:
    answer    [[delay, text], ...]: after each delay (seconds), send text (Latin-1) in one
              send; [] sends nothing
    tunnel    a port on 127.0.0.1: after the answer, relay bytes both ways between the
              client and that port until one side closes
    linger    without a tunnel: seconds to go on reading what the client sends (until it
              closes), default 5
Prints one JSON line at the end: {"head": the request head, "after": what the client
sent after it (at most 64 KiB), both Latin-1 text}.
"""
import json
import select
import socket
import sys
import time


def main():
    script = json.loads(sys.argv[1])
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    sys.stdout.write("%d\n" % ls.getsockname()[1])
    sys.stdout.flush()
    ls.settimeout(10)
    result = {"head": "", "after": ""}
    try:
        client, _ = ls.accept()
    except socket.timeout:
        result["error"] = "no connection within 10 s"
        print(json.dumps(result), flush=True)
        return 1
    ls.close()
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    data = b""
    client.settimeout(10)
    while b"\r\n\r\n" not in data:
        chunk = client.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, after = data.partition(b"\r\n\r\n")
    result["head"] = (head + b"\r\n\r\n").decode("latin-1") if _ else data.decode("latin-1")
    for delay, text in script.get("answer", []):
        time.sleep(delay)
        client.sendall(text.encode("latin-1"))
    if script.get("tunnel"):
        server = socket.create_connection(("127.0.0.1", script["tunnel"]))
        if after:
            server.sendall(after)
        peers = {client: server, server: client}
        open_ = True
        while open_:
            readable, _, _ = select.select(list(peers), [], [], 10)
            if not readable:
                break
            for s in readable:
                chunk = s.recv(65536)
                if not chunk:
                    open_ = False
                    break
                if s is client and len(after) < 65536:
                    after += chunk
                peers[s].sendall(chunk)
        server.close()
    else:
        deadline = time.time() + script.get("linger", 5)
        while time.time() < deadline:
            r, _, _ = select.select([client], [], [], max(0.0, deadline - time.time()))
            if not r:
                break
            try:
                chunk = client.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            after += chunk
    client.close()
    result["after"] = after[:65536].decode("latin-1")
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
