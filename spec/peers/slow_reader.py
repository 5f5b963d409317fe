#!/usr/bin/python3
"""Slow raw-socket WebSocket clients for spec/issue9_writepath_spec.lua (stdlib only).

usage: slow_reader.py [--tls CAFILE] ping PORT PATH SIZE
       slow_reader.py [--tls CAFILE] fail PORT PATH SIZE
       slow_reader.py stress PORT CONNS SEED FAIL_EVERY DEADLINE

--tls: ping and fail speak TLS (wss://), verifying the server (as localhost) against
CAFILE; the 4 KiB receive buffer is the TCP socket's, under the TLS records.

Every socket gets SO_RCVBUF 4096 before it connects, so that the luaws server, which
starts writing right after the upgrade, soon has a frame half sent.

ping, fail: one connection. The server writes one binary message of SIZE bytes with
payload pattern(SIZE) (below). The client reads nothing for 1 s after the handshake,
then sends one masked frame: a ping "PINGPING" (ping) or a text frame with RSV1 set
(fail), then reads everything. ping: once the message and a pong are in (or 20 s pass)
it reads 0.5 s more, sends close 1000 and reads until EOF (at most 5 s). fail: it reads
until EOF (at most 20 s). Then it prints one JSON line:
    handshake   "ok" or what went wrong
    bytes       bytes received after the 101
    frames      [{off, fin, rsv, opcode, masked, len, got}]: every frame header found
                by parsing the stream from its start (got < len: the stream ended inside
                the payload); at most 50, then frames_more counts the rest
    messages    [{opcode, len, first_diff}]: data messages reassembled; first_diff is
                the first offset where the payload differs from pattern(SIZE) (null:
                identical, and as long)
    partial     {opcode, got, first_diff} of a data frame the stream ended inside, or null
    pongs       payloads (as text) of the pong frames, in order
    closes      codes of the close frames (null: no code)
    after_close bytes that came after the first close frame
    pong_at     offsets in the stream where the bytes 8a 08 "PINGPING" start, and
    close_at    where a close frame with code 1002 (88 xx 03 ea) starts, from the first
                byte where the stream is not the data frame that was written (header,
                pattern(SIZE)) on
    sent_at     wall-clock time (time.time()) when the ping or the bad frame went out
    eof, reset  how the stream ended; timed_out: it had not ended

stress: CONNS connections to PATH /s/<id> (id 0..CONNS-1), in one process with
selectors. The server writes, on each, messages from several writers; each message is
    >HBBI  conn id, writer id, flags (1: the writer's last message), sequence number
followed by fill(conn, writer, seq, len - 8) (below). The client reads each connection
slowly (recv of 256 B .. 16 KiB, then a pause of 0 .. 3 ms), pings it every 2 .. 8 ms
(masked, payload "c<id>p<n>", at most 64 unanswered) and parses every byte: each message
must be whole and byte-exact, each writer's sequence numbers 0, 1, 2, ... without a gap,
each pong must answer the oldest unanswered ping (exactly once, in order). On the
connections with id % FAIL_EVERY == FAIL_EVERY - 1 it sends a masked text frame with
RSV1 set once 256 KiB have come in (or when every writer is done), stops pinging, and
reads until EOF: what comes must be whole frames, then a close 1002 and EOF, or EOF
(possibly inside a frame whose bytes so far are right) without a close frame. The other
connections, once every writer's last message and every pong are in, send close 1000 and
expect close 1000 and EOF. Everything must end within DEADLINE seconds. It prints one
JSON line: {"conns": [{id, fails, problems, writers: {w: {count, done}}, pings, pongs,
closes, eof, bytes, failed_at}], "elapsed", "bytes"}.

pattern(n): 8-byte units ">II" % (k, k * 2654435761 mod 2^32) for k = 0, 1, ..., cut to n.
fill(c, w, s, n): the 65536-byte block B (an LCG, as support.binary(65536, 12345) in
Lua: x = (x * 1103515245 + 12345) mod 2^31, byte = (x >> 16) mod 256), repeated, from
offset (c * 7919 + w * 104729 + s * 31) mod 65536, n bytes.
"""
import errno
import json
import random
import selectors
import socket
import ssl
import struct
import sys
import time

from raw_client import accept_key, build_frame, emit, upgrade_request

RCVBUF = 4096
TLS = None  # an ssl.SSLContext with --tls


def pattern(n):
    units = (n + 7) // 8
    return b"".join(struct.pack(">II", k, (k * 2654435761) & 0xFFFFFFFF)
                    for k in range(units))[:n]


def lcg_block():
    x, out = 12345, bytearray(65536)
    for i in range(65536):
        x = (x * 1103515245 + 12345) % 2147483648
        out[i] = (x >> 16) % 256
    return bytes(out)


BLOCK = None


def fill(c, w, s, n):
    global BLOCK
    if BLOCK is None:
        BLOCK = lcg_block()
    off = (c * 7919 + w * 104729 + s * 31) % 65536
    return (BLOCK * ((off + n) // 65536 + 1))[off:off + n]


def frame(opcode, payload, rsv=0):
    """A masked client frame (FIN set)."""
    return build_frame(opcode, payload, masked=True, rsv=rsv)


def first_diff(got, want):
    if got == want:
        return None
    n = min(len(got), len(want))
    lo, hi = 0, n
    if got[:n] == want[:n]:
        return n
    while hi - lo > 1:  # first index where they differ
        mid = (lo + hi) // 2
        if got[:mid] == want[:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def handshake(port, path, timeout=10):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    s.settimeout(timeout)
    s.connect(("127.0.0.1", port))
    if TLS:
        s = TLS.wrap_socket(s, server_hostname="localhost")
    key, req = upgrade_request(path, port)
    s.sendall(req)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            raise ConnectionError("closed during the handshake: %r" % buf[:200])
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    accept = accept_key(key)
    if not lines[0].startswith("HTTP/1.1 101"):
        raise ConnectionError("status line %r" % lines[0])
    if ("sec-websocket-accept: " + accept).lower() not in head.decode("latin-1").lower():
        raise ConnectionError("wrong Sec-WebSocket-Accept")
    return s, rest


# -- ping, fail: one connection, the whole stream parsed at the end ----------------------

def parse_stream(buf):
    """Frame headers from the start of buf: (frames, leftover header bytes)."""
    frames, pos, n = [], 0, len(buf)
    while pos < n:
        if n - pos < 2:
            return frames, n - pos
        b0, b1 = buf[pos], buf[pos + 1]
        ln, hl = b1 & 0x7F, 2
        if ln == 126:
            if n - pos < 4:
                return frames, n - pos
            ln, hl = struct.unpack(">H", buf[pos + 2:pos + 4])[0], 4
        elif ln == 127:
            if n - pos < 10:
                return frames, n - pos
            ln, hl = struct.unpack(">Q", buf[pos + 2:pos + 10])[0], 10
        if b1 & 0x80:
            hl += 4
        start = pos + hl
        if start > n:
            return frames, n - pos
        got = min(ln, n - start)
        frames.append({"off": pos, "fin": bool(b0 & 0x80), "rsv": (b0 >> 4) & 7,
                       "opcode": b0 & 0x0F, "masked": bool(b1 & 0x80), "len": ln,
                       "got": got, "start": start})
        pos = start + got
    return frames, 0


def one_connection(mode, port, path, size):
    try:
        s, rest = handshake(port, path)
    except (OSError, ConnectionError) as e:
        emit({"handshake": "failed: %s" % e})
        return 1
    buf = bytearray(rest)
    time.sleep(1.0)
    if mode == "ping":
        s.sendall(frame(9, b"PINGPING"))
    else:
        s.sendall(frame(1, b"reserved bit", rsv=4))  # FIN + RSV1 + text: 0xC1
    sent_at = time.time()
    want = (2 if size <= 125 else 4 if size <= 65535 else 10) + size + 10  # + a pong
    eof = reset = False
    closed_sent = False
    t0 = time.monotonic()
    deadline = t0 + 20
    settle = None
    while True:
        now = time.monotonic()
        if mode == "ping" and settle is None and len(buf) >= want:
            settle = now + 0.5
        if mode == "ping" and settle is not None and now >= settle and not closed_sent:
            try:
                s.sendall(frame(8, struct.pack(">H", 1000)))
            except OSError:
                pass
            closed_sent = True
            deadline = min(deadline + 5, now + 5)
        if now >= deadline:
            if mode == "ping" and not closed_sent:
                try:
                    s.sendall(frame(8, struct.pack(">H", 1000)))
                except OSError:
                    pass
                closed_sent = True
                deadline = now + 5
                continue
            break
        s.settimeout(max(0.01, min(deadline, settle or deadline) - now))
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            reset = True
            break
        if not chunk:
            eof = True
            break
        buf += chunk
    s.close()

    frames, leftover = parse_stream(buf)
    expect = pattern(size)
    messages, partial, pongs, closes, cur = [], None, [], [], None
    after_close = 0
    for f in frames:
        payload = bytes(buf[f["start"]:f["start"] + f["got"]])
        op = f["opcode"]
        if closes and after_close == 0:
            after_close = len(buf) - f["off"]
        if f["got"] < f["len"]:
            if op in (0, 1, 2):
                so_far = (cur[1] if cur else b"") + payload
                partial = {"opcode": cur[0] if cur else op, "got": len(so_far),
                           "first_diff": first_diff(so_far, expect[:len(so_far)])}
            continue
        if op in (1, 2):
            cur = [op, payload]
        elif op == 0 and cur:
            cur[1] += payload
        elif op == 10:
            pongs.append(payload.decode("latin-1"))
        elif op == 8:
            closes.append(struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else None)
        if op in (0, 1, 2) and f["fin"] and cur:
            messages.append({"opcode": cur[0], "len": len(cur[1]),
                             "first_diff": first_diff(cur[1], expect)})
            cur = None
    raw = bytes(buf)
    # look for the pong's and the close frame's bytes only where the stream stops being
    # the data frame that was written (the pattern itself may hold 88 xx 03 ea)
    scan_from = 0
    if frames and frames[0]["opcode"] == 2:
        good = raw[:frames[0]["start"]] + expect
        d = first_diff(raw[:len(good)], good)
        scan_from = len(good) if d is None or d == min(len(raw), len(good)) else d
    pong_at, i = [], raw.find(b"\x8a\x08PINGPING", scan_from)
    while i >= 0 and len(pong_at) < 20:
        pong_at.append(i)
        i = raw.find(b"\x8a\x08PINGPING", i + 1)
    close_at, i = [], raw.find(b"\x03\xea", max(0, scan_from - 2))
    while i >= 0 and len(close_at) < 20:
        if i >= 2 and raw[i - 2] == 0x88 and raw[i - 1] < 126:
            close_at.append(i - 2)
        i = raw.find(b"\x03\xea", i + 1)
    for f in frames:
        del f["start"]
    emit({"handshake": "ok", "bytes": len(buf), "frames": frames[:50],
          "frames_more": max(0, len(frames) - 50), "leftover_header": leftover,
          "messages": messages, "partial": partial, "pongs": pongs, "closes": closes,
          "after_close": after_close, "pong_at": pong_at, "close_at": close_at,
          "eof": eof, "reset": reset, "timed_out": not (eof or reset), "sent_at": sent_at,
          "elapsed": round(time.monotonic() - t0, 3)})
    return 0


# -- stress: many connections, parsed as the bytes arrive ---------------------------------

class Conn:
    def __init__(self, cid, sock, rest, fails, rng):
        self.id, self.sock, self.fails, self.rng = cid, sock, fails, rng
        self.inbuf = bytearray(rest)
        self.out = bytearray()
        self.problems = []
        self.writers = {}
        self.outstanding = []  # ping payloads not answered yet, oldest first
        self.ping_n = 0
        self.pongs = 0
        self.closes = []
        self.eof = False
        self.bytes = 0
        self.failed_at = None  # bytes received when the bad frame went out
        self.sent_close = False
        self.done = False
        self.finished = None  # seconds from the start until this connection ended
        self.events = 0  # what the selector watches for this socket
        self.next_read = 0.0
        self.next_ping = 0.0
        # frame parsing: hdr = current frame's (fin, opcode, len) while its payload comes
        self.hdr = None
        self.payload = bytearray()
        self.msg = None  # [opcode, bytearray] of a fragmented message

    def problem(self, text):
        if len(self.problems) < 10:
            self.problems.append(text)

    @property
    def broken(self):
        return bool(self.problems)

    def all_writers_done(self, nwriters):
        return len(self.writers) == nwriters and all(w["done"] for w in self.writers.values())

    def feed(self, data):
        self.bytes += len(data)
        if self.closes:
            self.problem("%d bytes after the close frame" % len(data))
            return
        self.inbuf += data
        while not self.broken:
            b = self.inbuf
            if self.hdr is None:
                if len(b) < 2:
                    return
                b0, b1 = b[0], b[1]
                ln, hl = b1 & 0x7F, 2
                if ln == 126:
                    if len(b) < 4:
                        return
                    ln, hl = struct.unpack(">H", b[2:4])[0], 4
                elif ln == 127:
                    if len(b) < 10:
                        return
                    ln, hl = struct.unpack(">Q", b[2:10])[0], 10
                op = b0 & 0x0F
                if b1 & 0x80 or (b0 & 0x70) or op not in (0, 1, 2, 8, 9, 10) or ln > 64 << 20:
                    self.problem("bad frame header %s at stream offset %d" % (
                        bytes(b[:hl]).hex(), self.bytes - len(b)))
                    return
                del b[:hl]
                self.hdr = (bool(b0 & 0x80), op, ln)
                self.payload = bytearray()
            fin, op, ln = self.hdr
            take = min(ln - len(self.payload), len(b))
            self.payload += b[:take]
            del b[:take]
            if len(self.payload) < ln:
                return
            self.hdr = None
            self.frame(fin, op, bytes(self.payload))
            if self.closes and self.inbuf:
                self.problem("%d bytes after the close frame" % len(self.inbuf))
                return

    def frame(self, fin, op, payload):
        if op == 10:
            if self.outstanding and payload == self.outstanding[0]:
                self.outstanding.pop(0)
                self.pongs += 1
            elif payload in self.outstanding:
                self.problem("pong %r before the pongs of earlier pings" % payload)
            else:
                self.problem("pong %r answers no outstanding ping (duplicate?)" % payload)
        elif op == 9:
            self.problem("the server sent a ping")
        elif op == 8:
            code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else None
            self.closes.append(code)
            want = 1002 if self.failed_at is not None else 1000 if self.sent_close else None
            if code != want:
                self.problem("close frame %r, want %r" % (code, want))
        elif op in (1, 2):
            if self.msg is not None:
                self.problem("new data frame inside a fragmented message")
            self.msg = [op, bytearray(payload)]
        elif op == 0:
            if self.msg is None:
                self.problem("continuation without a message")
                return
            self.msg[1] += payload
        if op in (0, 1, 2) and fin and self.msg is not None:
            data = bytes(self.msg[1])
            self.msg = None
            self.message(data, whole=True)

    def message(self, data, whole):
        if len(data) < 8:
            if whole:
                self.problem("message of %d bytes has no header" % len(data))
            return
        c, w, flags, seq = struct.unpack(">HBBI", data[:8])
        if c != self.id:
            self.problem("message for connection %d on connection %d (writer %d seq %d)" %
                         (c, self.id, w, seq))
            return
        st = self.writers.setdefault(w, {"count": 0, "done": False})
        if st["done"]:
            self.problem("writer %d: message seq %d after its last one" % (w, seq))
            return
        if seq != st["count"]:
            self.problem("writer %d: seq %d, want %d" % (w, seq, st["count"]))
            return
        want = fill(c, w, seq, len(data) - 8)
        if data[8:] != want:
            self.problem("writer %d seq %d (%d bytes%s): first wrong byte at %d" % (
                w, seq, len(data), "" if whole else ", cut short by EOF",
                8 + first_diff(data[8:], want)))
            return
        if whole:
            st["count"] += 1
            st["done"] = bool(flags & 1)

    def at_eof(self):
        self.eof = True
        if self.hdr is not None or self.msg is not None:
            if self.closes:
                self.problem("EOF inside a frame after a close frame")
            elif self.failed_at is None:
                self.problem("EOF inside a frame")
            else:
                # dropped without a close frame: the bytes so far must still be right
                data = (bytes(self.msg[1]) if self.msg else b"") + bytes(self.payload)
                if self.hdr is not None and self.hdr[1] in (0, 1, 2) or self.msg:
                    self.message(data, whole=False)


def stress(port, nconns, seed, fail_every, deadline_s, nwriters=3):
    t0 = time.monotonic()
    deadline = t0 + deadline_s
    conns = []
    sel = selectors.DefaultSelector()
    for cid in range(nconns):
        rng = random.Random(seed * 1000003 + cid)
        try:
            s, rest = handshake(port, "/s/%d" % cid)
        except (OSError, ConnectionError) as e:
            emit({"handshake": "connection %d: %s" % (cid, e)})
            return 1
        s.setblocking(False)
        c = Conn(cid, s, rest, cid % fail_every == fail_every - 1, rng)
        c.next_ping = time.monotonic() + rng.uniform(0.002, 0.008)
        conns.append(c)
        sel.register(s, selectors.EVENT_READ, c)
        c.events = selectors.EVENT_READ
    for c in conns:
        if c.inbuf:
            rest, c.inbuf, c.bytes = bytes(c.inbuf), bytearray(), 0
            c.feed(rest)

    def finish(c):
        if not c.done:
            c.done = True
            c.finished = round(time.monotonic() - t0, 3)
            if c.events:
                sel.unregister(c.sock)
                c.events = 0
            c.sock.close()

    def send(c, data):
        c.out += data

    while True:
        now = time.monotonic()
        live = [c for c in conns if not c.done]
        if not live or now >= deadline:
            break
        wake = deadline
        for c in live:
            if c.broken:
                finish(c)
                continue
            # what this side sends
            if c.fails and c.failed_at is None and (
                    c.bytes >= 256 * 1024 or c.all_writers_done(nwriters)):
                send(c, frame(1, b"reserved bit", rsv=4))
                c.failed_at = c.bytes
            if (not c.fails and not c.sent_close and c.all_writers_done(nwriters)
                    and not c.outstanding):
                send(c, frame(8, struct.pack(">H", 1000)))
                c.sent_close = True
            if (c.failed_at is None and not c.sent_close and now >= c.next_ping
                    and not c.all_writers_done(nwriters)):
                if len(c.outstanding) < 64:
                    p = ("c%dp%d" % (c.id, c.ping_n)).encode()
                    c.ping_n += 1
                    c.outstanding.append(p)
                    send(c, frame(9, p))
                c.next_ping = now + c.rng.uniform(0.002, 0.008)
            if c.out:
                try:
                    k = c.sock.send(c.out)
                    del c.out[:k]
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError as e:
                    if c.failed_at is None and not c.sent_close:
                        c.problem("send: %s" % e)
            if c.failed_at is None and not c.sent_close:
                wake = min(wake, c.next_ping)
            wake = min(wake, c.next_read) if c.next_read > now else wake
            want = selectors.EVENT_READ if c.next_read <= now else 0
            if c.out:
                want |= selectors.EVENT_WRITE
                wake = min(wake, now + 0.005)
            if want != c.events:
                if c.events and want:
                    sel.modify(c.sock, want, c)
                elif want:
                    sel.register(c.sock, want, c)
                else:
                    sel.unregister(c.sock)
                c.events = want
        if all(c.done for c in conns):
            break
        timeout = max(0.0, min(wake, deadline) - time.monotonic())
        for key, ev in sel.select(timeout):
            c = key.data
            if c.done or not (ev & selectors.EVENT_READ):
                continue
            try:
                data = c.sock.recv(c.rng.randint(256, 16384))
            except (BlockingIOError, InterruptedError):
                continue
            except ConnectionResetError:
                data = b""
            if not data:
                c.at_eof()
                if not c.fails and not (c.sent_close and c.closes):
                    c.problem("EOF before the close handshake (%d bytes in, writers %s)" % (
                        c.bytes, json.dumps(c.writers)))
                finish(c)
                continue
            c.feed(data)
            c.next_read = time.monotonic() + c.rng.uniform(0, 0.003)
    for c in conns:
        if not c.done:
            c.problem("not finished within %g s (%d bytes in, writers %s, %d pings "
                      "unanswered, close sent %s, closes %s)" % (
                          deadline_s, c.bytes, json.dumps(c.writers), len(c.outstanding),
                          c.sent_close or c.failed_at is not None, c.closes))
            finish(c)
    emit({"handshake": "ok", "elapsed": round(time.monotonic() - t0, 3),
          "bytes": sum(c.bytes for c in conns),
          "conns": [{"id": c.id, "fails": c.fails, "problems": c.problems,
                     "writers": {str(w): st for w, st in c.writers.items()},
                     "pings": c.ping_n, "pongs": c.pongs, "closes": c.closes,
                     "eof": c.eof, "bytes": c.bytes, "failed_at": c.failed_at,
                     "finished": c.finished}
                    for c in conns]})
    return 0


def main():
    global TLS
    if sys.argv[1:2] == ["--tls"]:
        TLS = ssl.create_default_context(cafile=sys.argv[2])
        del sys.argv[1:3]
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode in ("ping", "fail") and len(sys.argv) == 5:
        return one_connection(mode, int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
    if mode == "stress" and len(sys.argv) == 7:
        return stress(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]),
                      int(sys.argv[5]), float(sys.argv[6]))
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
