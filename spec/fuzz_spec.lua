-- Seeded protocol fuzzing of an in-process luaws echo server.
--
-- A Python child (stdlib only) opens CONNS connections (PAR at a time), completes the
-- opening handshake on each, then sends a random sequence of frames built from the seed:
-- valid messages, pings and pongs, fragmented messages, and broken or mutated frames
-- (random and reserved opcodes, RSV bits, unmasked frames, lengths that lie in either
-- direction, truncated frames, garbage, huge declared lengths with little data behind
-- them, invalid UTF-8, bad close codes and payloads, fragmented or oversized control
-- frames, continuation errors, bit flips, byte insertions and deletions in valid
-- frames), at once or in pieces, then reads whatever comes back for a short while and
-- leaves with a FIN, an RST, or a half-close. Each connection's bytes depend only on the
-- seed and its index, so one connection can be replayed alone (see below).
--
-- Meanwhile a canary luaws client in this process exchanges numbered messages with the
-- same server; it must get every echo intact. Afterwards: the server (this process) is
-- alive and serves a fresh client, every handler returned, and LiveConns is back to what
-- it was. The fuzzer also checks what the server sent on each connection: well-formed
-- frames only (unmasked, RSV 0, defined opcodes, control frames short and final, nothing
-- after a close frame, only close codes a server may send), echoes equal to the valid
-- messages sent before the first broken frame, all of them when nothing was broken, and
-- TCP closed after the server's close frame.
--
--   busted --lua=lua5.4 spec/fuzz_spec.lua                  seed 42
--   LUAWS_FUZZ_SEED=1234 busted --lua=lua5.4 spec/fuzz_spec.lua
--   LUAWS_FUZZ_CONNS=200 ...                                more connections
-- Each connection prints one line (its actions, what came back, problems found); the
-- lines of connections with problems are in the failure message. To replay connection I
-- of seed S alone (with the bytes of each action, as hex) against any luaws echo server
-- on PORT, extract the fuzzer and run it:
--   lua5.4 -e 'io.write(io.open("spec/fuzz_spec.lua"):read("a"):match("local FUZZER = %[==%[\n(.-)%]==%]"))' >/tmp/fuzzer.py
--   python3 /tmp/fuzzer.py PORT S 1 1 --only I --verbose
local support = require "support"
local websocket = support.websocket

lazy_setup(function() support.keepalive(true) end)
lazy_teardown(function() support.keepalive(false) end)

local SEED = math.tointeger(tonumber(os.getenv("LUAWS_FUZZ_SEED") or "42"))
local CONNS = math.tointeger(tonumber(os.getenv("LUAWS_FUZZ_CONNS") or "150"))
local PAR = 8

local FUZZER = [==[
import base64, hashlib, json, random, socket, struct, sys, threading, time
from concurrent.futures import ThreadPoolExecutor

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CONTROL = (8, 9, 10)
DEFINED = (0, 1, 2, 8, 9, 10)
# close codes a server may send (RFC 6455 7.4, IANA registry)
SENDABLE = set(range(1000, 1004)) | set(range(1007, 1015)) | set(range(3000, 5000))
BAD_CODES = [0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]
GOOD_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999]
HUGE = [2**63 - 1, 2**63, 2**64 - 1, 2**62, 2**32 + 5, 2**31, 2**31 - 1, 10**9, 2**26, 70000]
EDGE_SIZES = [0, 1, 2, 125, 126, 127, 1000, 65535, 65536, 65537]
BAD_UTF8 = [b"\xff", b"\xfe", b"\xc0\xaf", b"\xc1\xbf", b"\xed\xa0\x80", b"\xed\xbf\xbf",
            b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", b"\x80", b"\xbf", b"\xe2\x82",
            b"\xf0\x9f\x98", b"\xf8\x88\x80\x80\x80", b"\xe0\x80\xaf"]
CHARS = ["a", "Z", "0", " ", "~", "\u00e9", "\u03b1", "\u20ac", "\u4e2d", "\U0001F600",
         "\U00010348", "\ufffd", "\U0010FFFF", "\u007f", "\u0080"]


def xor(data, key):
    if not data:
        return b""
    n = len(data)
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


class Conn:
    """The plan and outcome of one fuzz connection; everything random comes from rng."""

    def __init__(self, port, seed, index):
        self.port, self.index = port, index
        self.r = random.Random("luaws-fuzz:%d:%d" % (seed, index))
        self.actions = []     # (name, bytes, valid, message or None)
        self.expected = []    # (opcode, payload) of data messages before the first broken action
        self.clean = True     # no broken action yet
        self.problems = []
        self.sent = self.recv = 0
        self.buf = bytearray()
        self.frames = []      # (opcode, payload) of the data frames the server sent
        self.close_code, self.saw_close, self.end = None, False, None
        self.bulk = self.ending = None
        self.start_wait = 0.0

    # -- building blocks ---------------------------------------------------------------
    def size(self, cap=70000):
        r = self.r
        k = r.random()
        if k < 0.2:
            return min(cap, r.choice(EDGE_SIZES))
        if k < 0.6:
            return r.randrange(0, 126)
        if k < 0.9:
            return r.randrange(0, min(cap, 4096) + 1)
        return r.randrange(0, cap + 1)

    def text(self, n):
        out, m = [], 0
        while m < n:
            c = self.r.choice(CHARS).encode()
            if m + len(c) > n:
                c = b"x" * (n - m)
            out.append(c)
            m += len(c)
        return b"".join(out)

    def payload(self, opcode, n):
        return self.text(n) if opcode == 1 else self.r.randbytes(n)

    def frame(self, opcode, payload, fin=True, rsv=0, masked=True, announce=None, form=None):
        n = len(payload) if announce is None else announce
        b0 = (0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 15)
        mbit = 0x80 if masked else 0
        if form is None:
            form = 7 if n <= 125 else 16 if n <= 65535 else 64
        if form == 7:
            head = bytes([b0, mbit | (n & 0x7F)])
        elif form == 16:
            head = bytes([b0, mbit | 126]) + struct.pack("!H", n & 0xFFFF)
        else:
            head = bytes([b0, mbit | 127]) + struct.pack("!Q", n & (2**64 - 1))
        if not masked:
            return head + payload
        key = self.r.randbytes(4)
        return head + key + xor(payload, key)

    def close_payload(self, code, reason=b""):
        return struct.pack("!H", code) + reason

    # -- actions: (name, bytes, valid, message) ----------------------------------------
    def a_valid(self):
        op = self.r.choice((1, 2))
        p = self.payload(op, self.size())
        return "valid-%s-%d" % ("text" if op == 1 else "bin", len(p)), self.frame(op, p), True, (op, p)

    def a_nonminimal(self):
        op = self.r.choice((1, 2))
        p = self.payload(op, self.r.randrange(0, 126))
        form = self.r.choice((16, 64))
        return "nonminimal-%d-%d" % (form, len(p)), self.frame(op, p, form=form), True, (op, p)

    def a_ping(self):
        p = self.r.randbytes(self.r.randrange(0, 126))
        op = self.r.choice((9, 10))
        return ("ping" if op == 9 else "pong") + "-%d" % len(p), self.frame(op, p), True, None

    def a_frag(self):
        r = self.r
        op = r.choice((1, 2))
        p = self.payload(op, self.size(20000))
        cuts = sorted(r.randrange(0, len(p) + 1) for _ in range(r.randrange(1, 4)))
        parts, last = [], 0
        for c in cuts + [len(p)]:
            parts.append(p[last:c])
            last = c
        out = b""
        for i, part in enumerate(parts):
            out += self.frame(op if i == 0 else 0, part, fin=(i == len(parts) - 1))
            if i < len(parts) - 1 and r.random() < 0.3:
                out += self.frame(9, r.randbytes(r.randrange(0, 20)))
        return "frag-%d-parts-%d" % (len(parts), len(p)), out, True, (op, p)

    def a_slow(self):
        name, data, valid, msg = self.a_ping() if self.r.random() < 0.3 else self.a_nonminimal()
        return "slow-" + name, data, valid, msg  # sent byte by byte by run()

    def a_opcode(self):
        op = self.r.choice([3, 4, 5, 6, 7, 11, 12, 13, 14, 15])
        p = self.r.randbytes(self.r.randrange(0, 200))
        return "opcode-%d" % op, self.frame(op, p, fin=self.r.random() < 0.8), False, None

    def a_rsv(self):
        op = self.r.choice((0, 1, 2, 8, 9, 10))
        p = self.payload(op, self.r.randrange(0, 126))
        rsv = self.r.randrange(1, 8)
        return "rsv-%d-op-%d" % (rsv, op), self.frame(op, p, rsv=rsv), False, None

    def a_unmasked(self):
        op = self.r.choice((1, 2, 8, 9, 10))
        p = self.payload(op, self.r.randrange(0, 126 if op >= 8 else 3000))
        if op == 8:
            p = self.close_payload(1000)
        return "unmasked-op-%d" % op, self.frame(op, p, masked=False), False, None

    def a_lie_short(self):
        # announces more than follows: the next actions' bytes become this payload
        op = self.r.choice((1, 2, 9))
        p = self.payload(op, self.r.randrange(0, 100))
        extra = self.r.randrange(1, 3000)
        if op == 9:
            extra = min(extra, 125 - len(p)) or 1
        return "lie-short-%d+%d" % (len(p), extra), self.frame(op, p, announce=len(p) + extra), False, None

    def a_lie_long(self):
        # announces less than follows: the rest is parsed as a frame header
        op = self.r.choice((1, 2, 9))
        p = self.payload(op, self.r.randrange(1, 120))
        n = self.r.randrange(0, len(p))
        return "lie-long-%d-of-%d" % (n, len(p)), self.frame(op, p, announce=n), False, None

    def a_truncated(self):
        name, data, _, _ = self.a_valid()
        cut = self.r.randrange(1, max(2, len(data)))
        return "truncated-%d-of-%s" % (cut, name), data[:cut], False, None

    def a_garbage(self):
        n = self.r.randrange(1, 300)
        return "garbage-%d" % n, self.r.randbytes(n), False, None

    def a_huge(self):
        r = self.r
        op = r.choice((0, 1, 1, 2, 2, 8, 9))
        n = r.choice(HUGE)
        data = r.randbytes(r.randrange(0, 200))
        return "huge-op-%d-len-%d-with-%d" % (op, n, len(data)), \
            self.frame(op, data, announce=n, form=64, fin=r.random() < 0.8), False, None

    def a_bad_utf8(self):
        r = self.r
        bad = r.choice(BAD_UTF8)
        pre, post = self.text(r.randrange(0, 300)), self.text(r.randrange(0, 50))
        p = pre + bad + post
        if r.random() < 0.5:
            return "bad-utf8-%s" % bad.hex(), self.frame(1, p), False, None
        cut = r.randrange(0, len(p) + 1)
        return "bad-utf8-frag-%s" % bad.hex(), self.frame(1, p[:cut], fin=False) + self.frame(0, p[cut:]), False, None

    def a_close(self):
        r = self.r
        k = r.randrange(7)
        if k == 0:
            code = r.choice(BAD_CODES)
            return "close-bad-code-%d" % code, self.frame(8, self.close_payload(code, b"x")), False, None
        if k == 1:
            return "close-1-byte", self.frame(8, r.randbytes(1)), False, None
        if k == 2:
            return "close-bad-utf8-reason", self.frame(8, self.close_payload(1000, b"ok" + r.choice(BAD_UTF8))), False, None
        if k == 3:
            p = self.close_payload(1000, b"r" * r.randrange(124, 300))
            return "close-long-%d" % len(p), self.frame(8, p), False, None
        if k == 4:
            return "close-fragmented", self.frame(8, self.close_payload(1000), fin=False), False, None
        if k == 5:
            return "close-empty", self.frame(8, b""), False, None
        code = r.choice(GOOD_CODES)
        return "close-%d" % code, self.frame(8, self.close_payload(code, self.text(r.randrange(0, 40)))), False, None

    def a_control_rules(self):
        r = self.r
        k = r.randrange(4)
        if k == 0:
            return "ping-fragmented", self.frame(9, b"p", fin=False) + self.frame(0, b"q"), False, None
        if k == 1:
            n = r.randrange(126, 400)
            return "ping-long-%d" % n, self.frame(r.choice((9, 10)), r.randbytes(n)), False, None
        if k == 2:
            return "continuation-orphan", self.frame(0, self.text(r.randrange(0, 50)), fin=r.random() < 0.5), False, None
        return "nested-message", self.frame(1, b"first", fin=False) + self.frame(r.choice((1, 2)), b"second"), False, None

    def a_mutate(self):
        r = self.r
        name, data, _, _ = r.choice((self.a_valid, self.a_ping, self.a_frag, self.a_nonminimal))()
        data = bytearray(data)
        how = []
        for _ in range(r.randrange(1, 4)):
            k = r.randrange(6)
            if not data:
                data.append(r.randrange(256))
            i = r.randrange(len(data))
            if k == 0 or k == 1:      # flip a bit, near the header more often
                i = r.randrange(min(len(data), 14)) if k == 0 else i
                data[i] ^= 1 << r.randrange(8)
                how.append("flip@%d" % i)
            elif k == 2:
                data[i] = r.randrange(256)
                how.append("set@%d" % i)
            elif k == 3:
                data.insert(i, r.randrange(256))
                how.append("ins@%d" % i)
            elif k == 4:
                del data[i]
                how.append("del@%d" % i)
            else:
                j = min(len(data), i + r.randrange(1, 16))
                data[i:i] = data[i:j]
                how.append("dup@%d" % i)
        return "mutate-%s-%s" % (name, "+".join(how)), bytes(data), False, None

    def plan(self):
        r = self.r
        good = [self.a_valid, self.a_valid, self.a_ping, self.a_frag, self.a_nonminimal, self.a_slow]
        bad = [self.a_opcode, self.a_rsv, self.a_unmasked, self.a_lie_short, self.a_lie_long,
               self.a_truncated, self.a_garbage, self.a_huge, self.a_bad_utf8, self.a_close,
               self.a_close, self.a_control_rules, self.a_mutate, self.a_mutate, self.a_mutate]
        all_good = r.random() < 0.15          # some connections break no rule at all
        for _ in range(r.randrange(1, 9)):
            gen = r.choice(good) if all_good or r.random() < 0.45 else r.choice(bad)
            name, data, valid, msg = gen()
            self.actions.append((name, data, valid, msg))
            if not valid:
                self.clean = False
            elif self.clean and msg is not None:
                self.expected.append(msg)
        # how the bytes go out: "bulk" (one write), "actions" (one write per action, short
        # gaps), "chunks" (the whole stream cut at random points, so that frame headers
        # and lengths straddle reads)
        self.bulk = r.choice(("bulk", "actions", "chunks"))
        stream = sum(len(a[1]) for a in self.actions)
        self.cuts = sorted(set(r.randrange(1, max(2, stream)) for _ in range(r.randrange(2, 40))))
        self.gaps = [r.uniform(0, 0.03) for _ in self.actions]
        self.linger = r.uniform(0.2, 0.8)
        self.ending = r.choice(("fin", "fin", "rst", "half-close"))

    # -- running -----------------------------------------------------------------------
    def run(self):
        self.plan()
        r = self.r  # the handshake key comes from the same stream
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        try:
            key = base64.b64encode(r.randbytes(16)).decode()
            s.sendall(("GET /fuzz/%d HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                       "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
                       % (self.index, self.port, key)).encode())
            resp = b""
            while b"\r\n\r\n" not in resp:
                chunk = s.recv(4096)
                if not chunk:
                    break
                resp += chunk
            head, _, rest = resp.partition(b"\r\n\r\n")
            accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest())
            if not (head.startswith(b"HTTP/1.1 101") and accept in head):
                self.problems.append("handshake failed: %r" % resp[:200])
                self.end = "no-handshake"
                return
            self.take(rest)
            self.send_all(s)
            self.read_back(s)
        except socket.timeout:
            self.problems.append("handshake or send timed out")
            self.end = "timeout"
        finally:
            self.leave(s)
        self.check()

    def send_all(self, s):
        try:
            if self.bulk in ("bulk", "chunks"):
                data = b"".join(a[1] for a in self.actions)
                cuts = self.cuts if self.bulk == "chunks" else []
                last = 0
                for c in cuts + [len(data)]:
                    if c <= last:
                        continue
                    s.sendall(data[last:c])
                    self.sent += c - last
                    last = c
                    if c < len(data):
                        time.sleep(0.003)
                return
            for (name, data, _, _), gap in zip(self.actions, self.gaps):
                if name.startswith("slow-"):
                    for i in range(len(data)):
                        s.sendall(data[i:i + 1])
                        time.sleep(0.002)
                else:
                    s.sendall(data)
                self.sent += len(data)
                self.take_ready(s)
                time.sleep(gap)
        except (BrokenPipeError, ConnectionResetError):
            self.end = "send-failed"    # the server closed first: fine

    def take_ready(self, s):
        s.settimeout(0)
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    return
                self.take(b)
        except (BlockingIOError, ConnectionResetError, OSError):
            pass
        finally:
            s.settimeout(5)

    def read_back(self, s):
        # after a failed send the socket may still hold what the server sent before it closed
        self.start_wait = time.monotonic()
        deadline = time.monotonic() + self.linger
        close_deadline = None
        while True:
            now = time.monotonic()
            waiting_echoes = self.clean and len(self.echoes()) < len(self.expected)
            limit = deadline
            if waiting_echoes:
                limit = max(deadline, self.start_wait + 5)
            if self.saw_close:
                if close_deadline is None:
                    close_deadline = now + 3
                limit = close_deadline
            if now >= limit:
                if self.saw_close:
                    self.problems.append("TCP still open 3 s after the server's close frame")
                elif waiting_echoes:
                    self.problems.append("only %d of %d echoes within 5 s" % (len(self.echoes()), len(self.expected)))
                self.end = self.end or "timeout"
                return
            s.settimeout(max(0.01, limit - now))
            try:
                b = s.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                self.end = self.end or "rst"
                return
            except OSError as e:
                self.end = self.end or "error %s" % e
                return
            if not b:
                self.end = self.end or "eof"
                return
            self.take(b)

    def leave(self, s):
        try:
            if self.ending == "rst":
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif self.ending == "half-close":
                s.shutdown(socket.SHUT_WR)
                s.settimeout(1)
                try:
                    while s.recv(65536):
                        pass
                except OSError:
                    pass
        except OSError:
            pass
        s.close()

    # -- what the server sent --------------------------------------------------------------
    def take(self, data):
        self.recv += len(data)
        self.buf += data
        b = self.buf
        while len(b) >= 2:
            b0, b1 = b[0], b[1]
            n, pos = b1 & 0x7F, 2
            if n == 126:
                if len(b) < 4:
                    return
                n, pos = struct.unpack("!H", b[2:4])[0], 4
            elif n == 127:
                if len(b) < 10:
                    return
                n, pos = struct.unpack("!Q", b[2:10])[0], 10
            if b1 & 0x80:
                self.problems.append("masked frame from the server")
                pos += 4
            if len(b) < pos + n:
                return
            f = {"fin": bool(b0 & 0x80), "rsv": (b0 >> 4) & 7, "op": b0 & 15, "payload": bytes(b[pos:pos + n])}
            del b[:pos + n]
            self.frame_in(f)

    def frame_in(self, f):
        op, p = f["op"], f["payload"]
        if self.saw_close:
            self.problems.append("frame (opcode %d) after the server's close frame" % op)
        if f["rsv"]:
            self.problems.append("server frame with RSV %d" % f["rsv"])
        if op not in DEFINED:
            self.problems.append("server frame with opcode %d" % op)
        if op in CONTROL and (len(p) > 125 or not f["fin"]):
            self.problems.append("bad server control frame: opcode %d, %d bytes, fin %s" % (op, len(p), f["fin"]))
        if (op in (1, 2) and not f["fin"]) or op == 0:
            self.problems.append("fragmented echo (the echo server writes whole messages)")
        if op == 8:
            self.saw_close = True
            if len(p) == 1:
                self.problems.append("server close frame with a 1-byte payload")
            elif len(p) >= 2:
                self.close_code = struct.unpack("!H", p[:2])[0]
                if self.close_code not in SENDABLE:
                    self.problems.append("server sent close code %d" % self.close_code)
                try:
                    p[2:].decode("utf-8")
                except UnicodeDecodeError:
                    self.problems.append("server close reason is not UTF-8")
            else:
                self.close_code = 1005
        if op in (1, 2):
            self.frames.append((op, p))

    def echoes(self):
        return self.frames

    def check(self):
        got = self.frames
        for i, (op, p) in enumerate(got):
            if i < len(self.expected):
                wop, wp = self.expected[i]
                if op != wop or p != wp:
                    self.problems.append("echo %d differs: got opcode %d, %d bytes; sent opcode %d, %d bytes"
                                         % (i + 1, op, len(p), wop, len(wp)))
                    break
            elif self.clean:
                self.problems.append("echo %d (%d bytes) was never sent" % (i + 1, len(p)))
                break

    def report(self, verbose):
        d = {"conn": self.index, "end": self.end, "ending": self.ending, "bulk": self.bulk,
             "sent": self.sent, "recv": self.recv, "echoes": len(self.frames),
             "expected": len(self.expected), "close": self.close_code,
             "actions": [a[0] for a in self.actions], "problems": self.problems}
        if verbose:
            d["bytes"] = [a[1].hex() for a in self.actions]
        return json.dumps(d)


def main():
    port, seed, n, par = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    only = int(sys.argv[sys.argv.index("--only") + 1]) if "--only" in sys.argv else None
    verbose = "--verbose" in sys.argv
    lock = threading.Lock()
    totals = {"sent": 0, "recv": 0, "bad": 0, "closes": {}, "ends": {}}

    def one(i):
        c = Conn(port, seed, i)
        try:
            c.run()
        except Exception as e:  # a fuzzer bug, or a connect failure: report it as a problem
            c.problems.append("fuzzer exception: %r" % e)
            c.end = c.end or "exception"
        line = c.report(verbose)
        with lock:
            totals["sent"] += c.sent
            totals["recv"] += c.recv
            totals["closes"][str(c.close_code)] = totals["closes"].get(str(c.close_code), 0) + 1
            totals["ends"][str(c.end)] = totals["ends"].get(str(c.end), 0) + 1
            if c.problems:
                totals["bad"] += 1
            print(("BAD " if c.problems else "ok ") + line, flush=True)

    t0 = time.monotonic()
    indices = [only] if only is not None else list(range(n))
    with ThreadPoolExecutor(max_workers=par) as pool:
        list(pool.map(one, indices))
    print("fuzz done seed=%d conns=%d bad=%d sent=%d recv=%d secs=%.1f closes=%s ends=%s"
          % (seed, len(indices), totals["bad"], totals["sent"], totals["recv"], time.monotonic() - t0,
             json.dumps(totals["closes"], sort_keys=True), json.dumps(totals["ends"], sort_keys=True)),
          flush=True)


main()
]==]

-- The canary: a well-behaved luaws client exchanging numbered messages with the server
-- until told to stop. Every echo must come back intact, in order.
local function start_canary(url, seed)
  local canary = { sent = 0, ok = 0, problems = {}, stop = false, done = false }
  websocket.Go(function()
    local ok, err = pcall(function()
      local c, _, derr = websocket.Dialer{ HandshakeTimeout = 5 }:Dial(url)
      if not c then
        canary.problems[#canary.problems + 1] = "dial: " .. tostring(derr)
        return
      end
      canary.c = c
      local n = 0
      while not canary.stop do
        n = n + 1
        local mt = (n % 2 == 0) and websocket.BinaryMessage or websocket.TextMessage
        -- sizes cycle through the three length forms
        local size = ({ 0, 17, 125, 126, 3000, 65535, 65536, 70000 })[n % 8 + 1]
        if n % 16 >= 8 then size = size // 3 end
        local head = ("canary #%d seed %d|"):format(n, seed)
        local body = head .. ("0123456789abcdef\u{20AC}"):rep(size // 19 + 1):sub(1, size)
        if mt == websocket.TextMessage then body = head .. ("abcdefghijklmnop"):rep(size // 16 + 1):sub(1, size) end
        canary.sent = canary.sent + 1
        local wok, werr = c:WriteMessage(mt, body)
        if not wok then
          canary.problems[#canary.problems + 1] = ("message %d: write: %s"):format(n, tostring(werr))
          return
        end
        c:SetReadDeadline(websocket.Now() + 10)
        local gmt, data, rerr = c:ReadMessage()
        if rerr then
          canary.problems[#canary.problems + 1] = ("message %d (%d bytes): no echo: %s")
            :format(n, #body, tostring(rerr))
          return
        end
        if gmt ~= mt or data ~= body then
          canary.problems[#canary.problems + 1] = ("message %d: corrupted echo (type %s/%s, %d/%d bytes, starts %q)")
            :format(n, tostring(gmt), mt, #(data or ""), #body, (data or ""):sub(1, 40))
          return
        end
        canary.ok = canary.ok + 1
        c:SetReadDeadline(nil)
        if n % 4 == 0 then websocket.Sleep(0.001) end
      end
    end)
    if not ok then canary.problems[#canary.problems + 1] = "raised: " .. tostring(err) end
    canary.done = true
  end)
  return canary
end

local function settle_live(want, timeout)
  return support.wait_for(function()
    collectgarbage("collect")
    return websocket.LiveConns() == want
  end, timeout or 10, 0.02)
end

local function codes(errs)
  local count, keys = {}, {}
  for _, e in ipairs(errs) do
    local k = tostring(e.code or e)
    if not count[k] then keys[#keys + 1] = k; count[k] = 0 end
    count[k] = count[k] + 1
  end
  table.sort(keys)
  local out = {}
  for _, k in ipairs(keys) do out[#out + 1] = k .. "=" .. count[k] end
  return table.concat(out, " ")
end

describe(("protocol fuzzing (seed %d, %d connections)"):format(SEED, CONNS), function()
  it("the server survives, the canary gets every echo, and nothing leaks", function()
    local srv, port, state = support.echo_server()
    finally(function() srv:Close() end)
    collectgarbage("collect")
    local baseline = websocket.LiveConns()

    local cmd = support.python(FUZZER)
    local where = ("seed %d, %d connections (LUAWS_FUZZ_SEED=%d LUAWS_FUZZ_CONNS=%d to rerun;" ..
      " see the top of spec/fuzz_spec.lua to replay one connection)"):format(SEED, CONNS, SEED, CONNS)

    local canary = start_canary(support.url(port, "/canary"), SEED)
    assert.is_truthy(support.wait_for(function() return canary.c or canary.done end, 10),
      "canary did not connect; " .. where)
    assert.are.same({}, canary.problems, where)

    local child = support.spawn(("%s %d %d %d %d"):format(cmd, port, SEED, CONNS, PAR))
    finally(function() support.stop(child) end)
    local status = support.wait(child, 60)
    local out = support.output(child)
    canary.stop = true
    assert.is_truthy(support.wait_for(function() return canary.done end, 15),
      "canary still running 15 s after the fuzzer ended; " .. where)

    local function context()
      local bad = {}
      for line in out:gmatch("[^\n]+") do
        if not line:match("^ok ") then bad[#bad + 1] = line end
      end
      return ("%s\nserver handlers: upgraded %d, ended %d; read errors: %s\ncanary: %d sent, %d ok\n%s")
        :format(where, state.upgraded, state.ended, codes(state.read_errors), canary.sent,
          canary.ok, table.concat(bad, "\n"))
    end

    assert.are.equal(0, status, "fuzzer failed or timed out; " .. context() .. "\n" .. out:sub(-4000))
    local done_line = out:match("fuzz done [^\n]*")
    assert.is_truthy(done_line, "fuzzer did not finish; " .. context())
    assert.are.equal(tostring(CONNS), done_line:match("conns=(%d+)"), context())

    -- the canary saw every echo intact
    assert.are.same({}, canary.problems, context())
    assert.are.equal(canary.sent, canary.ok, context())
    assert.is_true(canary.ok >= 20, "the canary hardly got through: " .. context())

    -- every fuzz connection reached the handler, and every handler returned
    assert.are.equal(CONNS + 1, state.upgraded, "upgraded: " .. context())
    assert.is_truthy(support.wait_for(function() return state.ended == state.upgraded - 1 end, 10),
      "handlers still running: " .. context())
    -- LiveConns: back to the baseline plus the canary (its client and server side)
    assert.is_truthy(settle_live(baseline + 2, 10),
      ("LiveConns %d, want %d; "):format(websocket.LiveConns(), baseline + 2) .. context())

    -- the server (this process) still serves a fresh client
    local c, _, err = websocket.Dialer{ HandshakeTimeout = 5 }:Dial(support.url(port, "/after"))
    assert.is_truthy(c, "fresh client: " .. tostring(err) .. "; " .. context())
    assert.is_true((c:WriteMessage(websocket.TextMessage, "after the fuzz")))
    local mt, data, rerr = c:ReadMessage()
    assert.are.equal(websocket.TextMessage, mt, tostring(rerr) .. "; " .. context())
    assert.are.equal("after the fuzz", data, context())
    c:Close()

    -- what the server sent on each fuzz connection was well-formed (the fuzzer checks)
    assert.are.equal("0", done_line:match("bad=(%d+)"),
      "the server misbehaved on some connections; " .. context())

    -- close the canary cleanly: the count goes back to the baseline
    local cc = canary.c
    assert.is_true((cc:WriteMessage(websocket.CloseMessage,
      websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))))
    cc:SetReadDeadline(websocket.Now() + 5)
    local _, _, cerr = cc:ReadMessage()
    assert.is_true(websocket.IsCloseError(cerr, websocket.CloseNormalClosure),
      "canary close: " .. tostring(cerr) .. "; " .. context())
    cc:Close()
    assert.is_truthy(settle_live(baseline, 10),
      ("LiveConns %d, want %d; "):format(websocket.LiveConns(), baseline) .. context())
  end)
end)
