#!/usr/bin/python3
"""A scripted HTTP or SOCKS5 proxy for spec/issue10_proxy_spec.lua (stdlib only).

usage: fake_proxy.py SCRIPT

SCRIPT is JSON. Listens on 127.0.0.1, port chosen by the system, printed on the first
line of stdout (flushed). Accepts one connection (within 10 s), then runs its steps:
    steps     a list of ["read", KIND] and ["send", delay, text]: read one message of
              the client, KIND "head" (an HTTP head up to its blank line),
              "socks_greeting", "socks_auth" or "socks_connect" (RFC 1928/1929, by their
              length fields); or, after delay seconds, send text (Latin-1) in one send
    answer    [[delay, text], ...]: short for steps [["read", "head"], ["send", ...], ...]
    tunnel    a port on 127.0.0.1: after the steps, relay bytes both ways between the
              client and that port until one side closes
    linger    without a tunnel: seconds to go on reading what the client sends (until it
              closes), default 5
Prints one JSON line at the end: {"reads": what each read step got, "reads_hex": the same
in hex, "head": the first of them, "after": what the client sent after the last one (at
most 64 KiB), all Latin-1}.
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
    result = {"head": "", "reads": [], "after": ""}
    try:
        client, _ = ls.accept()
    except socket.timeout:
        result["error"] = "no connection within 10 s"
        print(json.dumps(result), flush=True)
        return 1
    ls.close()
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.settimeout(10)
    buf = bytearray()

    def take(n):
        while len(buf) < n:
            chunk = client.recv(65536)
            if not chunk:
                raise EOFError
            buf.extend(chunk)
        out = bytes(buf[:n])
        del buf[:n]
        return out

    def read(kind):
        if kind == "head":
            while b"\r\n\r\n" not in buf:
                chunk = client.recv(65536)
                if not chunk:
                    raise EOFError
                buf.extend(chunk)
            return take(buf.index(b"\r\n\r\n") + 4)
        if kind == "socks_greeting":
            b = take(2)
            return b + take(b[1])
        if kind == "socks_auth":
            b = take(2)
            b += take(b[1] + 1)
            return b + take(b[-1])
        if kind == "socks_connect":
            b = take(4)
            if b[3] == 1:
                return b + take(4 + 2)
            if b[3] == 4:
                return b + take(16 + 2)
            b += take(1)
            return b + take(b[4] + 2)
        raise ValueError(kind)

    steps = script.get("steps")
    if steps is None:
        steps = [["read", "head"]] + [["send", d, t] for d, t in script.get("answer", [])]
    reads = []
    try:
        for step in steps:
            if step[0] == "read":
                reads.append(read(step[1]))
            else:
                time.sleep(step[1])
                client.sendall(step[2].encode("latin-1"))
    except (EOFError, OSError) as e:
        result["error"] = "step %d: %r" % (len(reads), e)
    result["reads"] = [r.decode("latin-1") for r in reads]
    result["reads_hex"] = [r.hex() for r in reads]
    result["head"] = result["reads"][0] if reads else ""
    after = bytes(buf)
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
