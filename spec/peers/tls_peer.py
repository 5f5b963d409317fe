#!/usr/bin/python3
"""TLS peers for spec/issue10_tls_spec.lua (stdlib only: ssl, socket).

Clients (each prints one JSON line and exits 0):

  tls_peer.py get PORT PATH [options]
      An HTTPS GET of PATH from 127.0.0.1:PORT, read until the server ends the stream.
      {"status": 200, "body": "...", "length": N, "sha256": "...", "version": "TLSv1.3",
       "alpn": "http/1.1" | null, "cipher": "...", "end": "close_notify" | "eof" | "reset",
       "error": null | "..."}  (with --quiet: no "body")
      "end": how the stream ended: "close_notify" (TLS's own end), "eof" (TCP ended
      without it) or "reset". "error" is set when the TLS handshake (or anything) failed:
      then it is the exception's text, e.g. containing "NO_APPLICATION_PROTOCOL".
  tls_peer.py ws PORT PATH [options]
      A WebSocket over TLS: the upgrade, a masked text frame "hello tls" and a close
      frame 1000 "bye", all in one write (one TLS record), then everything until the
      stream ends.
      {"status": 101, "echo": "hello tls", "close": 1000, "close_text": "bye",
       "end": ..., "error": ...}
  tls_peer.py plain PORT
      A plain HTTP request (no TLS) to a TLS port; {"response": "..."} (what came back
      until EOF, at most 5 s).

  options: --cafile CA (verify the server against CA; without it nothing is verified),
  --servername NAME (SNI and the name verified; default localhost), --version 1.2|1.3
  (only that version), --alpn P1,P2 (offer these protocols), --cert CERT --key KEY
  (a client certificate), --quiet 1 (get: leave the body out).

Servers (print the port on the first line of stdout, flushed; run until killed):

  tls_peer.py silent      accepts TCP connections and never reads from or writes to them
  tls_peer.py http400     accepts, reads what comes for up to 1 s, answers
                          "HTTP/1.1 400 Bad Request" and closes
  tls_peer.py alert       accepts, reads the ClientHello, answers with a fatal TLS alert
                          (handshake_failure) and closes at once
"""
import hashlib
import json
import socket
import ssl
import struct
import sys
import threading
import time


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def options(args):
    opts = {"cafile": None, "servername": "localhost", "version": None, "alpn": None,
            "cert": None, "key": None, "quiet": None}
    i = 0
    while i < len(args):
        name = args[i][2:]
        if name not in opts:
            raise SystemExit("unknown option %r" % args[i])
        opts[name] = args[i + 1]
        i += 2
    return opts


def context(opts):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if opts["cafile"]:
        ctx.load_verify_locations(opts["cafile"])
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if opts["version"]:
        v = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}[opts["version"]]
        ctx.minimum_version = ctx.maximum_version = v
    if opts["alpn"]:
        ctx.set_alpn_protocols(opts["alpn"].split(","))
    if opts["cert"]:
        ctx.load_cert_chain(opts["cert"], opts["key"])
    return ctx


def connect(port, opts):
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    s = context(opts).wrap_socket(raw, server_hostname=opts["servername"],
                                  suppress_ragged_eofs=False)
    return s


def read_to_end(s, buf, deadline=5):
    """Read until the stream ends: (bytes, how it ended)."""
    s.settimeout(deadline)
    while True:
        try:
            chunk = s.recv(65536)
        except ssl.SSLZeroReturnError:
            return buf, "close_notify"
        except ssl.SSLEOFError:
            return buf, "eof"
        except ConnectionResetError:
            return buf, "reset"
        except socket.timeout:
            return buf, "timeout"
        if not chunk:
            return buf, "close_notify"  # with suppress_ragged_eofs=False: a clean end
        buf += chunk


def info(s):
    return {"version": s.version(), "alpn": s.selected_alpn_protocol(),
            "cipher": s.cipher()[0]}


def get(port, path, opts):
    try:
        s = connect(port, opts)
    except (OSError, ssl.SSLError) as e:
        return {"error": str(e)}
    out = info(s)
    try:
        s.sendall(("GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n" % path).encode())
        data, out["end"] = read_to_end(s, b"")
    except (OSError, ssl.SSLError) as e:
        out["error"] = str(e)
        return out
    head, _, body = data.partition(b"\r\n\r\n")
    line = head.split(b"\r\n")[0].decode("latin-1")
    out["status_line"] = line
    out["status"] = int(line.split(" ")[1]) if line.startswith("HTTP/1.") else None
    if not opts["quiet"]:
        out["body"] = body.decode("latin-1")
    out["length"] = len(body)
    out["sha256"] = hashlib.sha256(body).hexdigest()
    out["error"] = None
    return out


def frame(opcode, payload):
    mask = b"\x11\x22\x33\x44"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    assert len(payload) < 126
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


def ws(port, path, opts):
    try:
        s = connect(port, opts)
    except (OSError, ssl.SSLError) as e:
        return {"error": str(e)}
    out = info(s)
    try:
        s.sendall(("GET %s HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n" % path).encode() +
                  frame(1, b"hello tls") + frame(8, struct.pack(">H", 1000) + b"bye"))
        buf = b""
        s.settimeout(10)
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
        head, _, buf = buf.partition(b"\r\n\r\n")
        line = head.split(b"\r\n")[0].decode("latin-1")
        out["status"] = int(line.split(" ")[1]) if line.startswith("HTTP/1.") else None
        buf, out["end"] = read_to_end(s, buf)
    except (OSError, ssl.SSLError) as e:
        out["error"] = str(e)
        return out
    # the frames the server sent (unmasked, short)
    pos = 0
    while pos + 2 <= len(buf):
        op, ln = buf[pos] & 0x0F, buf[pos + 1] & 0x7F
        payload = buf[pos + 2:pos + 2 + ln]
        if op == 1:
            out["echo"] = payload.decode()
        elif op == 8:
            out["close"] = struct.unpack(">H", payload[:2])[0] if ln >= 2 else None
            out["close_text"] = payload[2:].decode()
        pos += 2 + ln
    out["error"] = None
    return out


def plain(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    data = b""
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    return {"response": data.decode("latin-1")}


def serve(mode):
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)
    sys.stdout.write("%d\n" % ls.getsockname()[1])
    sys.stdout.flush()
    held = []

    def answer(c):
        c.settimeout(1)
        try:
            c.recv(4096)
        except OSError:
            pass
        try:
            c.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 11\r\n"
                      b"Connection: close\r\n\r\nBad Request")
        except OSError:
            pass
        time.sleep(0.2)
        c.close()

    def alert(c):
        c.settimeout(5)
        try:
            c.recv(4096)
            c.sendall(b"\x15\x03\x03\x00\x02\x02\x28")  # fatal handshake_failure
        except OSError:
            pass
        c.close()

    while True:
        c, _ = ls.accept()
        if mode == "alert":
            alert(c)
        elif mode == "silent":
            held.append(c)
        else:
            threading.Thread(target=answer, args=(c,), daemon=True).start()


def main():
    a = sys.argv[1:]
    if a[:1] == ["get"] and len(a) >= 3:
        emit(get(int(a[1]), a[2], options(a[3:])))
    elif a[:1] == ["ws"] and len(a) >= 3:
        emit(ws(int(a[1]), a[2], options(a[3:])))
    elif a[:1] == ["plain"] and len(a) == 2:
        emit(plain(int(a[1])))
    elif a[:1] in (["silent"], ["http400"], ["alert"]):
        serve(a[0])
    else:
        sys.stderr.write(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
