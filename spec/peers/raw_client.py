#!/usr/bin/python3
"""Raw-socket WebSocket client peer for spec/conformance_spec.lua (stdlib only).

usage: raw_client.py PORT PATH SCRIPT

SCRIPT is a JSON document, given inline (starts with '{' or '[') or as a file name:
either a list of steps or {"steps": [...], "linger": 3, "reply_close": true}.

The client connects to 127.0.0.1:PORT, sends a correct HTTP/1.1 upgrade request for
PATH (random Sec-WebSocket-Key; the 101 and Sec-WebSocket-Accept are checked), then runs
the steps while a reader thread records every frame the server sends. "headers" in the
script: header lines the request carries too (e.g. a Sec-WebSocket-Extensions offer).
Steps:

    {"send": "<hex>"}                 send these bytes verbatim (the spec builds the
                                      frames: masked or not, any header bits)
    {"send": "<hex>", "unless_closed": true}
                                      ... but only if no close frame was received yet
    {"sleep": seconds}
    {"expect_close_within": seconds}  wait for the peer's close frame; the outcome goes
                                      to "waits" (ok, t = seconds waited)
    {"wait": {"data": k, "pong": p}, "within": seconds}
                                      wait until k data messages and p pongs have been
                                      received (or a close frame came, or TCP closed);
                                      the outcome goes to "waits"

When a close frame arrives and this side has not sent one (the bytes sent are parsed as
frames to know), the reader answers with a close frame echoing the code (empty payload
for an empty or 1-byte close payload), masked as a client must, unless "reply_close"
is false. After the last step it reads until the peer closes TCP or "linger" seconds
(default 3) pass, then prints one JSON line:

    handshake       "ok" or what was wrong
    response_headers the 101's headers (names in lower case)
    frames          every frame received: fin, rsv (3 bits: RSV1=4, RSV2=2, RSV3=1),
                    opcode, masked, len, len_form (7/16/64), payload (hex, unmasked),
                    t (seconds since the last send before it arrived), and for close
                    frames code (null when the payload is shorter than 2 bytes), reason
                    (hex) and reason_text (null when not UTF-8)
    events          frames reassembled: {"type": "text"|"binary"|"ping"|"pong"|"close"|
                    "opcode-N", "data": hex, ...}; a data message appears when its final
                    frame arrives; close events carry code/reason/reason_text
    protocol_errors fragmentation mistakes of the peer (continuation without a start,
                    a new data frame inside a fragmented message)
    waits           outcomes of expect_close_within / wait steps
    eof, reset      the peer closed TCP (FIN) / reset it before linger ran out;
                    tcp_closed = either
    timed_out       the peer was still connected when linger ran out (this side then
                    shuts the socket down; that does not count as eof)
    close_after_last_send  seconds between our last send and the first close frame
    sent_close, replied_close, errors (send errors and the like), leftover (hex of an
                    incomplete frame at the end)

raw_server.py imports this module and plays the same game from the server side;
slow_reader.py builds its frames and its upgrade request with it.
"""
import base64
import hashlib
import json
import os
import socket
import struct
import sys
import threading
import time

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OPNAMES = {0: "continuation", 1: "text", 2: "binary", 8: "close", 9: "ping", 10: "pong"}


def accept_key(key):
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def upgrade_request(path, port, headers=()):
    """A correct upgrade request for PATH on 127.0.0.1:PORT with a random key, plus
    HEADERS (lines) -> key, bytes."""
    key = base64.b64encode(os.urandom(16)).decode()
    extra = "".join("%s\r\n" % line for line in headers)
    return key, ("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s\r\n"
                 % (path, port, key, extra)).encode()


def load_script(arg):
    text = arg if arg.lstrip()[:1] in ("{", "[") else open(arg, encoding="utf-8").read()
    script = json.loads(text)
    if isinstance(script, list):
        script = {"steps": script}
    script.setdefault("steps", [])
    return script


def mask_bytes(data, key):
    if not data:
        return b""
    n = len(data)
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


def build_frame(opcode, payload, masked, fin=True, rsv=0):
    """rsv: the three RSV bits as they sit in the first byte (RSV1 = 4, RSV2 = 2, RSV3 = 1)."""
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload)
    mbit = 0x80 if masked else 0
    if n <= 125:
        head = bytes([b0, mbit | n])
    elif n <= 65535:
        head = bytes([b0, mbit | 126]) + struct.pack(">H", n)
    else:
        head = bytes([b0, mbit | 127]) + struct.pack(">Q", n)
    if masked:
        key = os.urandom(4)
        return head + key + mask_bytes(payload, key)
    return head + payload


class FrameParser:
    """Incremental frame parser: feed(bytes) -> list of complete frames (dicts)."""

    def __init__(self):
        self.buf = bytearray()

    def feed(self, data):
        self.buf += data
        frames = []
        while True:
            f = self._one()
            if f is None:
                return frames
            frames.append(f)

    def _one(self):
        b = self.buf
        if len(b) < 2:
            return None
        b0, b1 = b[0], b[1]
        masked = bool(b1 & 0x80)
        n = b1 & 0x7F
        pos, form = 2, 7
        if n == 126:
            if len(b) < 4:
                return None
            n, pos, form = struct.unpack(">H", b[2:4])[0], 4, 16
        elif n == 127:
            if len(b) < 10:
                return None
            n, pos, form = struct.unpack(">Q", b[2:10])[0], 10, 64
        key = None
        if masked:
            if len(b) < pos + 4:
                return None
            key = bytes(b[pos:pos + 4])
            pos += 4
        if len(b) < pos + n:
            return None
        payload = bytes(b[pos:pos + n])
        if masked:
            payload = mask_bytes(payload, key)
        del b[:pos + n]
        return {"fin": bool(b0 & 0x80), "rsv": (b0 >> 4) & 7, "opcode": b0 & 0x0F,
                "masked": masked, "len": n, "len_form": form, "payload": payload}


def close_fields(payload):
    out = {"code": None, "reason": "", "reason_text": ""}
    if len(payload) >= 2:
        out["code"] = struct.unpack(">H", payload[:2])[0]
        out["reason"] = payload[2:].hex()
        try:
            out["reason_text"] = payload[2:].decode("utf-8")
        except UnicodeDecodeError:
            out["reason_text"] = None
    elif len(payload) == 1:
        out["reason"] = payload.hex()
        out["reason_text"] = None
    return out


class Peer:
    """One WebSocket connection after the handshake, seen from the raw side."""

    def __init__(self, sock, is_client, script, leftover=b""):
        self.sock = sock
        self.is_client = is_client
        self.script = script
        self.reply_close = script.get("reply_close", True)
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.parser = FrameParser()
        self.sent_parser = FrameParser()
        self.t0 = time.monotonic()
        self.last_send = None
        self.frames, self.events, self.waits = [], [], []
        self.errors, self.protocol_errors = [], []
        self.msg = None  # [opcode, bytearray] of a fragmented message in progress
        self.counts = {"data": 0, "ping": 0, "pong": 0, "close": 0}
        self.first_close_t = None
        self.sent_close = False
        self.replied_close = False
        self.eof = self.reset = self.read_done = self.gave_up = False
        self.leftover = leftover
        self.reader = threading.Thread(target=self._read_loop, daemon=True)

    # -- sending ---------------------------------------------------------------------
    def send(self, data):
        with self.lock:
            for f in self.sent_parser.feed(data):
                if f["opcode"] == 8:
                    self.sent_close = True
            try:
                self.sock.sendall(data)
            except OSError as e:
                self.errors.append("send: %s" % e)
                return False
            self.last_send = time.monotonic()
            return True

    # -- receiving -------------------------------------------------------------------
    def _read_loop(self):
        try:
            if self.leftover:
                self._got(self.leftover)
            while True:
                try:
                    data = self.sock.recv(65536)
                except ConnectionResetError:
                    with self.lock:
                        self.reset = not self.gave_up
                    break
                except OSError as e:
                    with self.lock:
                        self.errors.append("recv: %s" % e)
                    break
                if not data:
                    with self.lock:
                        # our own shutdown after linger also ends recv: not the peer's doing
                        self.eof = not self.gave_up
                    break
                self._got(data)
        finally:
            with self.cond:
                self.read_done = True
                self.cond.notify_all()

    def _got(self, data):
        now = time.monotonic()
        with self.cond:
            for f in self.parser.feed(data):
                self._frame(f, now)
            self.cond.notify_all()

    def _frame(self, f, now):
        t = now - (self.last_send if self.last_send is not None else self.t0)
        rec = dict(f)
        payload = rec.pop("payload")
        rec["payload"] = payload.hex()
        rec["t"] = round(t, 6)
        op = f["opcode"]
        if op == 8:
            rec.update(close_fields(payload))
        self.frames.append(rec)
        ev = None
        if op >= 8:
            ev = {"type": OPNAMES.get(op, "opcode-%d" % op), "data": payload.hex(), "t": rec["t"]}
            if op == 8:
                ev.update(close_fields(payload))
        elif op == 0:
            if self.msg is None:
                self.protocol_errors.append("continuation frame without a message in progress")
            else:
                self.msg[1] += payload
                if f["fin"]:
                    ev = {"type": OPNAMES[self.msg[0]], "data": bytes(self.msg[1]).hex(), "t": rec["t"]}
                    self.msg = None
        elif op in (1, 2):
            if self.msg is not None:
                self.protocol_errors.append("new data frame inside a fragmented message")
                self.msg = None
            if f["fin"]:
                ev = {"type": OPNAMES[op], "data": payload.hex(), "t": rec["t"]}
            else:
                self.msg = [op, bytearray(payload)]
        else:
            ev = {"type": "opcode-%d" % op, "data": payload.hex(), "t": rec["t"]}
        if ev is None:
            return
        self.events.append(ev)
        kind = ev["type"]
        if kind in ("text", "binary"):
            self.counts["data"] += 1
        elif kind in self.counts:
            self.counts[kind] += 1
        if op == 8:
            if self.first_close_t is None:
                self.first_close_t = rec["t"]
            if not self.sent_close and self.reply_close:
                reply = payload[:2] if len(payload) >= 2 else b""
                if self.send(build_frame(8, reply, masked=self.is_client)):
                    self.replied_close = True

    # -- running a script ------------------------------------------------------------
    def _wait(self, pred, within):
        deadline = time.monotonic() + within
        with self.cond:
            while not pred():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
            return True

    def run(self):
        self.reader.start()
        for i, step in enumerate(self.script["steps"]):
            start = time.monotonic()
            if "send" in step:
                with self.lock:
                    skip = step.get("unless_closed") and self.counts["close"] > 0
                if skip:
                    self.waits.append({"step": i, "what": "send", "skipped": True})
                else:
                    self.send(bytes.fromhex(step["send"]))
            elif "sleep" in step:
                time.sleep(step["sleep"])
            elif "expect_close_within" in step:
                ok = self._wait(lambda: self.counts["close"] > 0, step["expect_close_within"])
                self.waits.append({"step": i, "what": "close", "ok": ok,
                                   "t": round(time.monotonic() - start, 6)})
            elif "wait" in step:
                want = step["wait"]
                ok = self._wait(lambda: all(self.counts.get(k, 0) >= v for k, v in want.items())
                                or self.counts["close"] > 0 or self.read_done,
                                step.get("within", 3))
                ok = ok and all(self.counts.get(k, 0) >= v for k, v in want.items())
                self.waits.append({"step": i, "what": want, "ok": ok,
                                   "t": round(time.monotonic() - start, 6)})
            else:
                self.errors.append("unknown step %d: %r" % (i, step))
        done = self._wait(lambda: self.read_done, self.script.get("linger", 3))
        with self.lock:
            self.gave_up = not self.read_done
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.reader.join(2)
        with self.lock:
            return {
                "frames": self.frames, "events": self.events, "waits": self.waits,
                "protocol_errors": self.protocol_errors, "errors": self.errors,
                "eof": self.eof, "reset": self.reset, "tcp_closed": self.eof or self.reset,
                "timed_out": not done,
                "close_after_last_send": self.first_close_t,
                "sent_close": self.sent_close, "replied_close": self.replied_close,
                "leftover": bytes(self.parser.buf).hex(),
            }


def read_http_head(sock, timeout=5):
    """Read up to the blank line; returns (head text, bytes after it) or raises."""
    sock.settimeout(timeout)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("connection closed during the handshake (got %r)" % buf[:200])
        buf += chunk
        if len(buf) > 65536:
            raise ConnectionError("handshake header too long")
    sock.settimeout(None)
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head.decode("latin-1"), rest


def parse_headers(lines):
    h = {}
    for line in lines:
        if ":" in line:
            k, v = line.split(":", 1)
            h[k.strip().lower()] = v.strip()
    return h


def emit(result):
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


def main():
    if len(sys.argv) != 4:
        sys.stderr.write("usage: raw_client.py PORT PATH SCRIPT\n")
        return 2
    port, path, script = int(sys.argv[1]), sys.argv[2], load_script(sys.argv[3])
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key, req = upgrade_request(path, port, script.get("headers", []))
    sock.sendall(req)
    try:
        head, rest = read_http_head(sock)
    except (OSError, ConnectionError) as e:
        emit({"handshake": "failed: %s" % e})
        return 1
    lines = head.split("\r\n")
    h = parse_headers(lines[1:])
    problem = None
    if not lines[0].startswith("HTTP/1.1 101"):
        problem = "status line %r" % lines[0]
    elif h.get("sec-websocket-accept") != accept_key(key):
        problem = "Sec-WebSocket-Accept %r, want %r" % (h.get("sec-websocket-accept"), accept_key(key))
    elif h.get("upgrade", "").lower() != "websocket":
        problem = "Upgrade header %r" % h.get("upgrade")
    if problem:
        emit({"handshake": problem})
        return 1
    result = Peer(sock, True, script, rest).run()
    result["handshake"] = "ok"
    result["response_headers"] = h
    emit(result)
    sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
