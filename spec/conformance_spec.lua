-- RFC 6455 framing conformance with exact bytes, in both directions: a raw Python peer
-- (spec/peers/raw_client.py, spec/peers/raw_server.py; stdlib only) sends frames this
-- file builds byte by byte, and records every frame luaws sends back. The same table of
-- rows runs against an in-process luaws echo server and against a luaws client (which
-- echoes what it reads, too). The expectations are RFC 6455's, as gorilla/websocket
-- implements them; where the two differ (listed below the rules) they are RFC 6455's, as
-- the Autobahn test suite reads it.
--
-- What luaws must do ("fails with N": sends exactly one close frame, code N, and no
-- frame after it; ReadMessage returns an error with .code == N; nothing that arrived
-- after the bad frame is delivered or echoed; the TCP connection is closed):
--  R1  text/binary payloads of 0, 125, 126, 65535, 65536 bytes arrive byte-exact (7-, 16-, 64-bit lengths).
--  R2  a 16- or 64-bit length used for a small payload (non-minimal encoding) is accepted.
--  R3  frames luaws sends: RSV bits 0, a defined opcode, minimal length encoding; masked from a client, unmasked from a server.
--  R4  a server receiving an unmasked frame, a client receiving a masked frame: fails with 1002.
--  R5  a fragmented message (empty fragments allowed) is delivered whole, once, when its final frame arrives.
--  R6  a ping between fragments is answered at once (before the message is finished) with a pong carrying its payload.
--  R7  every ping gets one pong with the same payload, in order (a burst of 10 -> 10 pongs); an unsolicited pong is ignored.
--  R8  RSV1, RSV2 or RSV3 set (no extension is negotiated), on a data or a control frame: fails with 1002.
--  R9  opcodes 3-7 and 11-15: fails with 1002.
--  R10 a control frame with more than 125 bytes of payload, or with FIN=0: fails with 1002.
--  R11 a continuation frame with no message started, or a text/binary frame inside an unfinished message: fails with 1002.
--  R12 text messages are UTF-8 over the whole message (a character may straddle fragments); invalid: fails with 1007.
--  R13 failing fast: an invalid byte in a non-final fragment gets the 1007 within 1 s, while the message is unfinished.
--  R14 a sequence truncated at the end of the final fragment: fails with 1007.
--  R15 a close with a valid code X (1000-1003, 1007-1014, 3000-4999) is answered by one close frame with code X; the reader's CloseError has code X and the reason as .text.
--  R16 close codes 0-999, 1004, 1005, 1006, 1015, 1016-2999, 5000-65535: fails with 1002.
--  R17 an empty close payload is answered with an empty close (or one with 1000); the reader's CloseError has code 1005.
--  R18 a 1-byte close payload: fails with 1002; a close reason that is not UTF-8: fails with 1007.
--  R19 after its close frame luaws sends nothing; a server closes TCP (a client once the application calls Close).
--  R20 a bad connection does not disturb others: a luaws client exchanging messages with the same server meanwhile sees every echo intact.
--
-- Where gorilla/websocket (Debian's 1.5) does otherwise:
--   its reader gets a plain error (no .code) when it fails the connection; here .code is the code luaws sent;
--   it does not check UTF-8 in text messages (R12-R14);
--   it answers a close reason that is not UTF-8 with 1002 (R18 wants 1007; Autobahn 7.5.1 takes either);
--   it takes a 1-byte close payload as "no status" (1005) (R18 wants 1002, as Autobahn 7.3.2);
--   it refuses 1014 (not in its list; IANA registers it: R15 accepts it);
--   its answer to a close carries the code only, lws's the whole payload: the reason of luaws's answer is not checked.
--
-- Every row ends the same way: a row that is valid waits for the echoes and pongs, then
-- sends close 1000 (luaws answers 1000, the reader gets 1000); a malformed row sends, in
-- the same write as the bad frame, one valid text frame (AFTER, must not be delivered or
-- echoed) and a close 1000 (must be ignored: luaws has failed the connection already).
--
-- Run from the repository root: busted --lua=lua5.4 spec/conformance_spec.lua
local support = require "support"
local websocket = support.websocket
local cjson = require "cjson"

lazy_setup(function() support.keepalive(true) end)
lazy_teardown(function() support.keepalive(false) end)

local PYTHON = support.PYTHON
local q = support.shell_quote
local RAW_CLIENT = support.peer("raw_client.py")

local CONT, TEXT, BINARY, CLOSE, PING, PONG = 0, 1, 2, 8, 9, 10
local TYPE_NAME = { [TEXT] = "text", [BINARY] = "binary" }
local DEFINED_OPCODE = { [0] = true, [1] = true, [2] = true, [8] = true, [9] = true, [10] = true }

---------------------------------------------------------------------------------------
-- bytes

local function hex(s)
  return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

local function unhex(h)
  if h == nil or h == cjson.null then return "" end
  return (h:gsub("%x%x", function(c) return string.char(tonumber(c, 16)) end))
end

local function isnull(v) return v == nil or v == cjson.null end

local function xor_mask(s, key)
  local k = { key:byte(1, 4) }
  local out, n = {}, #s
  for i = 1, n, 4096 do
    local chunk = { s:byte(i, math.min(i + 4095, n)) }
    for j = 1, #chunk do
      chunk[j] = chunk[j] ~ k[(i + j - 2) % 4 + 1]
    end
    out[#out + 1] = string.char(table.unpack(chunk))
  end
  return table.concat(out)
end

-- frame{fin = true, rsv = 0, opcode =, mask = false, payload = "", len_form = 7|16|64,
-- key = 4 bytes}: the exact bytes of one frame. rsv holds the three RSV bits as they sit
-- in the first byte (RSV1 = 4, RSV2 = 2, RSV3 = 1). len_form defaults to the minimal
-- encoding; a larger form encodes a small length non-minimally. The masking key is
-- random (never a zero byte, so masking always changes the payload) unless given.
local function frame(f)
  local payload = f.payload or ""
  local n = #payload
  local b0 = ((f.fin == false) and 0 or 0x80) | ((f.rsv or 0) << 4) | assert(f.opcode)
  local form = f.len_form or (n <= 125 and 7 or n <= 65535 and 16 or 64)
  local mbit = f.mask and 0x80 or 0
  local head
  if form == 7 then
    assert(n <= 125, "7-bit length form for a payload over 125 bytes")
    head = string.char(b0, mbit | n)
  elseif form == 16 then
    assert(n <= 65535, "16-bit length form for a payload over 65535 bytes")
    head = string.char(b0, mbit | 126) .. string.pack(">I2", n)
  else
    head = string.char(b0, mbit | 127) .. string.pack(">I8", n)
  end
  if not f.mask then return head .. payload end
  local key = f.key or string.char(math.random(1, 255), math.random(1, 255),
    math.random(1, 255), math.random(1, 255))
  return head .. key .. xor_mask(payload, key)
end

-- A frame of a row, without its mask bit: the bit is chosen per direction when the row
-- runs (set from the raw client, clear from the raw server); wrong_mask inverts it.
local function F(opcode, payload, opts)
  local f = { opcode = opcode, payload = payload or "" }
  for k, v in pairs(opts or {}) do f[k] = v end
  return f
end

local function close_payload(code, reason)
  return string.pack(">I2", code) .. (reason or "")
end

-- Payloads: valid UTF-8 text of exactly n bytes, and binary with every byte value.
local text = support.text -- UTF-8 of exactly n bytes
local function binary(n)
  local block = {}
  for i = 0, 255 do block[i + 1] = string.char((i * 131 + 7) & 255) end
  block = table.concat(block)
  return block:rep(n // 256 + 1):sub(1, n)
end

local AFTER_TEXT = "AFTER: sent after a bad frame, must be neither delivered nor echoed"
local AFTER = F(TEXT, AFTER_TEXT)
local CLOSE_1000 = F(CLOSE, close_payload(1000))

---------------------------------------------------------------------------------------
-- the rows
--
-- name, and either send (frames written at once) or steps (as raw_client.py's, with
-- send = a list of frames); malformed = the row breaks the protocol (the AFTER frame and
-- a close 1000 are added to its last write); closes = the row ends with its own close
-- frame (nothing is added). Expectations: msgs = {{type, payload}} delivered to the
-- luaws reader (and echoed back), pongs = payloads of the pongs luaws must send, close =
-- the code of luaws's close frame ("empty": no code, or 1000), err = .code of the
-- reader's error (defaults to close), err_text, fail_fast (close within 1 s of the last
-- write). Defaults: no msgs, no pongs; close 1002 for a malformed row, 1000 otherwise.

local ROWS = {}
local function row(t) ROWS[#ROWS + 1] = t end

-- R1, R2: lengths
for _, n in ipairs({ 0, 125, 126, 65535, 65536 }) do
  local form = n <= 125 and "7-bit" or n <= 65535 and "16-bit" or "64-bit"
  row{ name = ("text of %d bytes (%s length) echoes byte-exact"):format(n, form),
    send = { F(TEXT, text(n)) }, msgs = { { TEXT, text(n) } } }
  row{ name = ("binary of %d bytes (%s length) echoes byte-exact"):format(n, form),
    send = { F(BINARY, binary(n)) }, msgs = { { BINARY, binary(n) } } }
end
row{ name = "text of 5 bytes with a 64-bit length (non-minimal) is accepted",
  send = { F(TEXT, "hello", { len_form = 64 }) }, msgs = { { TEXT, "hello" } } }
row{ name = "binary of 5 bytes with a 16-bit length (non-minimal) is accepted",
  send = { F(BINARY, "\0\1\2\3\4", { len_form = 16 }) }, msgs = { { BINARY, "\0\1\2\3\4" } } }

-- R4: masking
row{ name = "data frame with the wrong mask bit (unmasked to a server, masked to a client) -> 1002",
  send = { F(TEXT, "wrong mask", { wrong_mask = true }) }, malformed = true }
row{ name = "ping with the wrong mask bit -> 1002",
  send = { F(PING, "wrong mask", { wrong_mask = true }) }, malformed = true }

-- R5, R6, R7: fragmentation and control frames in between
row{ name = "text in 3 fragments with a ping between them: pong at once, then the whole message",
  steps = {
    { send = { F(TEXT, "frag-1 ", { fin = false }), F(PING, "mid-ping") } },
    { wait = { pong = 1 }, within = 2 },
    { send = { F(CONT, "frag-2 ", { fin = false }), F(CONT, "frag-3") } },
  },
  msgs = { { TEXT, "frag-1 frag-2 frag-3" } }, pongs = { "mid-ping" } }
row{ name = "binary in 4 fragments, one of them empty",
  send = { F(BINARY, "\0\1", { fin = false }), F(CONT, "", { fin = false }),
    F(CONT, "\255\254", { fin = false }), F(CONT, "\128end") },
  msgs = { { BINARY, "\0\1\255\254\128end" } } }
row{ name = "text of 70000 bytes in fragments of 125, 65536 and 4339 bytes",
  send = { F(TEXT, text(70000):sub(1, 125), { fin = false }),
    F(CONT, text(70000):sub(126, 125 + 65536), { fin = false }),
    F(CONT, text(70000):sub(125 + 65537)) },
  msgs = { { TEXT, text(70000) } } }
do
  local pings, pongs = {}, {}
  for i = 1, 10 do
    pings[i] = F(PING, "ping-" .. i)
    pongs[i] = "ping-" .. i
  end
  row{ name = "10 pings in one burst -> 10 pongs with their payloads, in order",
    send = pings, pongs = pongs }
end
row{ name = "ping with an empty payload -> empty pong", send = { F(PING, "") }, pongs = { "" } }
row{ name = "ping with 125 bytes of payload -> pong with the same 125 bytes",
  send = { F(PING, binary(125)) }, pongs = { binary(125) } }
row{ name = "an unsolicited pong is ignored",
  send = { F(PONG, "nobody asked"), F(TEXT, "after the pong") },
  msgs = { { TEXT, "after the pong" } } }

-- R8: reserved bits
for _, rsv in ipairs({ { 4, "RSV1" }, { 2, "RSV2" }, { 1, "RSV3" } }) do
  row{ name = ("text frame with %s set -> 1002"):format(rsv[2]),
    send = { F(TEXT, "reserved", { rsv = rsv[1] }) }, malformed = true }
  row{ name = ("ping with %s set -> 1002, no pong"):format(rsv[2]),
    send = { F(PING, "reserved", { rsv = rsv[1] }) }, malformed = true }
end

-- R9: opcodes
for _, op in ipairs({ 3, 4, 5, 6, 7, 11, 12, 13, 14, 15 }) do
  row{ name = ("reserved opcode %d -> 1002"):format(op),
    send = { F(op, "opcode " .. op) }, malformed = true }
end

-- R10: control frames
row{ name = "ping with 126 bytes of payload -> 1002, no pong",
  send = { F(PING, ("p"):rep(126)) }, malformed = true }
row{ name = "pong with 126 bytes of payload -> 1002",
  send = { F(PONG, ("p"):rep(126)) }, malformed = true }
row{ name = "close with 126 bytes of payload -> 1002",
  send = { F(CLOSE, close_payload(1000, ("r"):rep(124))) }, malformed = true }
row{ name = "fragmented ping (FIN=0) -> 1002, no pong",
  send = { F(PING, "frag", { fin = false }) }, malformed = true }

-- R11: continuation
row{ name = "continuation frame with no message started -> 1002",
  send = { F(CONT, "orphan") }, malformed = true }
row{ name = "new text frame while a fragmented text is unfinished -> 1002",
  send = { F(TEXT, "part", { fin = false }), F(TEXT, "new") }, malformed = true }
row{ name = "new binary frame while a fragmented binary is unfinished -> 1002",
  send = { F(BINARY, "part", { fin = false }), F(BINARY, "new") }, malformed = true }

-- R12, R13, R14: UTF-8
row{ name = "text with a 3-byte character split across fragments is delivered",
  send = { F(TEXT, "price \xE2", { fin = false }), F(CONT, "\x82\xAC 5") },
  msgs = { { TEXT, "price \u{20AC} 5" } } }
row{ name = "text with a 4-byte character split across 3 fragments is delivered",
  send = { F(TEXT, "\xF0\x9F", { fin = false }), F(CONT, "\x98", { fin = false }), F(CONT, "\x80!") },
  msgs = { { TEXT, "\u{1F600}!" } } }
for _, bad in ipairs({
  { "a 0xFF byte", "ab\xFFcd" },
  { "an overlong encoding (C0 AF)", "ab\xC0\xAFcd" },
  { "a UTF-16 surrogate (ED A0 80)", "ab\xED\xA0\x80cd" },
  { "a code point above U+10FFFF (F4 90 80 80)", "ab\xF4\x90\x80\x80cd" },
  { "a lone continuation byte (80)", "ab\x80cd" },
}) do
  row{ name = ("text with %s -> 1007"):format(bad[1]),
    send = { F(TEXT, bad[2]) }, malformed = true, close = 1007 }
end
row{ name = "invalid byte in the first fragment (FIN=0) -> 1007 before the message is finished",
  steps = {
    { send = { F(TEXT, "ok \xFF more", { fin = false }) } },
    { expect_close_within = 1 },
    { send = { F(CONT, " rest") }, unless_closed = true },
  },
  malformed = true, close = 1007, fail_fast = true }
row{ name = "sequence truncated at the end of the final fragment -> 1007",
  send = { F(TEXT, "ok ", { fin = false }), F(CONT, "end \xE2\x82") }, malformed = true, close = 1007 }
row{ name = "single text frame ending in a truncated sequence -> 1007",
  send = { F(TEXT, "end \xF0\x9F\x98") }, malformed = true, close = 1007 }

-- R15 - R18: close frames
for _, code in ipairs({ 1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011,
  1012, 1013, 1014, 3000, 4999 }) do
  row{ name = ("close %d without reason is answered with close %d"):format(code, code),
    send = { F(CLOSE, close_payload(code)) }, closes = true, close = code, err_text = "" }
end
for _, code in ipairs({ 0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535 }) do
  row{ name = ("close with the invalid code %d -> 1002"):format(code),
    send = { F(CLOSE, close_payload(code)) }, malformed = true }
end
row{ name = "close with an empty payload is answered with an empty close (or 1000); reader sees 1005",
  send = { F(CLOSE, "") }, closes = true, close = "empty", err = 1005 }
row{ name = "close with a 1-byte payload -> 1002",
  send = { F(CLOSE, "\3") }, malformed = true }
row{ name = "close whose reason is not UTF-8 -> 1007",
  send = { F(CLOSE, close_payload(1000, "bad \xFF reason")) }, malformed = true, close = 1007 }
row{ name = "close 1000 with a 123-byte UTF-8 reason: the reader gets the reason exactly",
  send = { F(CLOSE, close_payload(1000, text(123))) }, closes = true, close = 1000,
  err_text = text(123) }

for _, r in ipairs(ROWS) do
  r.msgs = r.msgs or {}
  r.pongs = r.pongs or {}
  r.close = r.close or (r.malformed and 1002 or 1000)
  if r.err == nil then r.err = r.close end
end

---------------------------------------------------------------------------------------
-- running a row

-- How long a raw peer waits, after its last step, for luaws to close TCP. A luaws that
-- has completed or failed the close handshake closes at once; 2 s is slack for slow CI.
local LINGER = 2

local function copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

local function build(frames, raw_masks)
  local out = {}
  for i, f in ipairs(frames) do
    local a = copy(f)
    a.mask = raw_masks
    if f.wrong_mask then a.mask = not raw_masks end
    out[i] = frame(a)
  end
  return table.concat(out)
end

-- The JSON script of a row for the raw peer (raw_masks: the raw side is the client).
local function script_of(r, raw_masks)
  local steps = {}
  for i, s in ipairs(r.steps or { { send = r.send } }) do
    steps[i] = copy(s)
    if s.send then steps[i].send = { table.unpack(s.send) } end
  end
  if r.malformed then
    for i = #steps, 1, -1 do
      if steps[i].send then
        table.insert(steps[i].send, AFTER)
        table.insert(steps[i].send, CLOSE_1000)
        break
      end
    end
  elseif not r.closes then
    steps[#steps + 1] = { wait = { data = #r.msgs, pong = #r.pongs }, within = 3 }
    steps[#steps + 1] = { send = { CLOSE_1000 } }
  end
  for _, s in ipairs(steps) do
    if s.send then s.send = hex(build(s.send, raw_masks)) end
  end
  return cjson.encode({ steps = steps, linger = LINGER })
end

local function write_tmp(content)
  local path = os.tmpname()
  local f = assert(io.open(path, "wb"))
  f:write(content)
  f:close()
  return path
end

local function result_of(child) return support.json_result(child, "raw peer") end

local function short(s)
  if #s <= 24 then return (("%q"):format(s):gsub("\\\n", "\\n")) end
  return ("%d B"):format(#s)
end

local function events_text(r)
  local t = {}
  for _, e in ipairs(r.events or {}) do
    if e.type == "close" then
      t[#t + 1] = "close(" .. (isnull(e.code) and ("no code, " .. #unhex(e.data) .. " B")
        or math.tointeger(e.code)) .. ")"
    else
      t[#t + 1] = e.type .. "(" .. short(unhex(e.data)) .. ")"
    end
  end
  return #t > 0 and table.concat(t, " ") or "nothing"
end

local function seen_text(seen)
  local t = {}
  for _, m in ipairs(seen.msgs) do t[#t + 1] = (TYPE_NAME[m[1]] or m[1]) .. "(" .. short(m[2]) .. ")" end
  t[#t + 1] = "error: " .. tostring(seen.err)
  return table.concat(t, " ")
end

-- nil, or what differs between two lists of {type, payload}
local function msgs_diff(got, want)
  for i = 1, math.max(#got, #want) do
    local g, w = got[i], want[i]
    if not g then return ("message #%d (%s %s) missing"):format(i, TYPE_NAME[w[1]], short(w[2])) end
    if not w then return ("unexpected message #%d: %s %s"):format(i, TYPE_NAME[g[1]] or g[1], short(g[2])) end
    if g[1] ~= w[1] then
      return ("message #%d is %s, want %s"):format(i, TYPE_NAME[g[1]] or g[1], TYPE_NAME[w[1]])
    end
    if g[2] ~= w[2] then
      if #g[2] ~= #w[2] then return ("message #%d has %d bytes, want %d"):format(i, #g[2], #w[2]) end
      for k = 1, #g[2] do
        if g[2]:byte(k) ~= w[2]:byte(k) then return ("message #%d differs at byte %d"):format(i, k - 1) end
      end
    end
  end
  return nil
end

local function minimal_form(n)
  return n <= 125 and 7 or n <= 65535 and 16 or 64
end

-- Check a row's outcome: r is the raw peer's result, seen what the luaws reader got.
-- All problems are collected, so that one failure tells everything about the row.
local function check(row, r, seen, luaws_is_server)
  local problems = {}
  local function expect(cond, msg) if not cond then problems[#problems + 1] = msg end end
  local ctx = ("\n  raw peer received: %s\n  luaws reader got: %s"):format(events_text(r), seen_text(seen))
  assert(r.handshake == "ok", "raw peer handshake: " .. tostring(r.handshake))
  if seen.dial_err then error("Dial failed: " .. tostring(seen.dial_err)) end

  -- what luaws sent
  local data, pongs, closes, close_at = {}, {}, {}, nil
  for i, e in ipairs(r.events) do
    if e.type == "text" or e.type == "binary" then
      data[#data + 1] = { e.type == "text" and TEXT or BINARY, unhex(e.data) }
    elseif e.type == "pong" then
      pongs[#pongs + 1] = unhex(e.data)
    elseif e.type == "close" then
      closes[#closes + 1] = e
      close_at = close_at or i
    else
      expect(false, "luaws sent a " .. e.type .. " frame")
    end
  end
  expect(#closes == 1, ("luaws sent %d close frames, want 1"):format(#closes))
  local c = closes[1]
  if c then
    if row.close == "empty" then
      expect((isnull(c.code) and unhex(c.data) == "") or c.code == 1000,
        ("close frame answering an empty close: want an empty payload or 1000, got %s"):format(
          isnull(c.code) and (#unhex(c.data) .. " bytes without a code") or math.tointeger(c.code)))
    else
      expect(c.code == row.close, ("close frame from luaws: code %s, want %d"):format(
        isnull(c.code) and "none" or math.tointeger(c.code), row.close))
    end
    expect(close_at == #r.events, "luaws sent frames after its close frame (R19)")
  end
  expect(seen.err ~= nil, "the luaws reader ended without an error")
  if seen.err then
    expect(seen.err.code == row.err, ("luaws reader's error: code %s (%s), want %s"):format(
      tostring(seen.err.code), tostring(seen.err), tostring(row.err)))
    if row.err_text then
      expect(seen.err.text == row.err_text, ("luaws reader's CloseError text: %s, want %s"):format(
        short(tostring(seen.err.text)), short(row.err_text)))
    end
  end
  local d = msgs_diff(seen.msgs, row.msgs)
  expect(not d, "delivered to the luaws reader: " .. tostring(d))
  d = msgs_diff(data, row.msgs)
  expect(not d, "echoed back by luaws: " .. tostring(d))
  for _, m in ipairs(seen.msgs) do
    expect(m[2] ~= AFTER_TEXT, "the frame sent after the bad frame was delivered")
  end
  local pd = #pongs ~= #row.pongs and ("%d pongs, want %d"):format(#pongs, #row.pongs)
  for i = 1, math.min(#pongs, #row.pongs) do
    if not pd and pongs[i] ~= row.pongs[i] then
      pd = ("pong #%d carries %s, want %s"):format(i, short(pongs[i]), short(row.pongs[i]))
    end
  end
  expect(not pd, "pongs from luaws: " .. tostring(pd))

  -- how luaws sent it (R3)
  for i, f in ipairs(r.frames) do
    expect(f.rsv == 0, ("frame #%d from luaws has RSV bits %d"):format(i, f.rsv))
    expect(DEFINED_OPCODE[f.opcode], ("frame #%d from luaws has opcode %d"):format(i, f.opcode))
    expect(f.masked == not luaws_is_server, ("frame #%d from the luaws %s is %s"):format(i,
      luaws_is_server and "server" or "client", f.masked and "masked" or "unmasked"))
    expect(f.len_form == minimal_form(f.len), ("frame #%d from luaws: %d bytes in the %d-bit length form"):format(
      i, f.len, f.len_form))
  end
  for _, pe in ipairs(r.protocol_errors) do expect(false, "luaws's frames: " .. pe) end
  expect(r.leftover == "", "luaws left an incomplete frame: " .. #r.leftover // 2 .. " bytes")

  -- timing and the end of the connection
  for _, w in ipairs(r.waits) do
    if w.what == "close" then
      expect(w.ok, ("no close frame within 1 s of the bad fragment (R13)"))
    elseif not w.skipped then
      expect(w.ok, ("step %d: the expected echoes/pongs did not arrive in time (%s)"):format(
        w.step + 1, cjson.encode(w.what)))
    end
  end
  if row.fail_fast then
    local t = r.close_after_last_send
    expect(not isnull(t) and t < 1, "close frame " .. (isnull(t) and "never came" or
      ("came %.3f s after the last write"):format(t)) .. ", want < 1 s (R13)")
  end
  expect(r.tcp_closed, "luaws did not close the TCP connection (the raw peer waited " ..
    LINGER .. " s after its last step)")

  assert(#problems == 0, table.concat(problems, "\n") .. ctx)
end

---------------------------------------------------------------------------------------

describe("RFC 6455 conformance, raw client -> luaws server", function()
  local srv, port
  local conns = {} -- per request path: { msgs = {{mt, data}}, err =, write_err =, done = }
  local good = { ok = 0, bad = {}, stop = false, done = false }

  lazy_setup(function()
    srv, port = support.server(function(c, r)
      local rec = { msgs = {} }
      conns[r.URL.Path] = rec
      support.read_echo(c, rec) -- no write_errs: echoes stop at the first failed write
      c:Close()
      rec.done = true
    end)

    -- R20: a well-behaved luaws client on the same server, exchanging messages whenever
    -- the loop runs (that is, while the rows wait for their children).
    websocket.Go(function()
      local c, _, derr = websocket.DefaultDialer:Dial(support.url(port, "/well-behaved"))
      if not c then
        good.bad[#good.bad + 1] = "Dial: " .. tostring(derr)
        good.done = true
        return
      end
      good.conn = c
      local i = 0
      while not good.stop do
        i = i + 1
        local mt = i % 2 == 1 and TEXT or BINARY
        local payload = mt == TEXT and ("good #" .. i .. " " .. text(i * 37 % 300)) or binary(i * 101 % 2000)
        local ok, werr = c:WriteMessage(mt, payload)
        if not ok then
          good.bad[#good.bad + 1] = ("write #%d: %s"):format(i, tostring(werr))
          break
        end
        local rmt, data, rerr = c:ReadMessage()
        if not rmt then
          good.bad[#good.bad + 1] = ("read #%d: %s"):format(i, tostring(rerr))
          break
        end
        if rmt ~= mt or data ~= payload then
          good.bad[#good.bad + 1] = ("echo #%d: %s"):format(i, msgs_diff({ { rmt, data } }, { { mt, payload } }))
          break
        end
        good.ok = good.ok + 1
        websocket.Sleep(0.005)
      end
      good.done = true
    end)
  end)

  lazy_teardown(function()
    good.stop = true
    support.wait_for(function() return good.done end, 2)
    if good.conn then good.conn:Close() end
    if srv then srv:Close() end
  end)

  for i, r in ipairs(ROWS) do
    it(r.name, function()
      local path = "/row-" .. i
      local file = write_tmp(script_of(r, true))
      local child = support.spawn(("%s %s %d %s %s"):format(PYTHON, q(RAW_CLIENT), port, q(path), q(file)))
      finally(function()
        support.stop(child)
        os.remove(file)
      end)
      assert(support.wait(child, 20), "raw_client.py did not finish within 20 s")
      local res = result_of(child)
      support.wait_for(function() return conns[path] and conns[path].done end, 3)
      local rec = conns[path]
      assert(rec, "the luaws handler never saw " .. path)
      assert(rec.done, "the luaws handler for " .. path .. " did not finish: " .. seen_text(rec))
      check(r, res, rec, true)
    end)
  end

  it("a well-behaved luaws client on the same server saw every echo intact meanwhile (R20)", function()
    local before = good.ok
    support.wait_for(function() return good.ok > before or good.done end, 2)
    good.stop = true
    assert(support.wait_for(function() return good.done end, 5), "the well-behaved client hung")
    assert.are.same({}, good.bad)
    assert.is_true(good.ok >= #ROWS, ("only %d exchanges during %d rows"):format(good.ok, #ROWS))
    -- and it can still close normally
    local c = good.conn
    assert(c:WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(1000, "")))
    local mt, _, err = c:ReadMessage()
    assert.is_nil(mt)
    assert.are.equal(1000, err and err.code, tostring(err))
  end)
end)

describe("RFC 6455 conformance, luaws client -> raw server", function()
  for _, r in ipairs(ROWS) do
    it(r.name, function()
      local file = write_tmp(script_of(r, false))
      local child, port = support.raw_server(file)
      local seen = { msgs = {} }
      finally(function()
        if seen.conn then seen.conn:Close() end
        support.stop(child)
        os.remove(file)
      end)
      assert(port, "raw_server.py printed no port:\n" .. support.output(child))
      support.dial(support.url(port, "/raw"), seen, function(c) support.read_echo(c, seen) end)
      support.wait_for(function() return seen.done end, 15)
      assert(seen.lua_error == nil, seen.lua_error)
      assert(seen.done, "the luaws client did not finish: " .. seen_text(seen))
      assert(support.wait(child, 10), "raw_server.py did not finish within 10 s")
      local res = result_of(child)
      assert.are.same({}, res.request.problems, "the luaws client's upgrade request")
      check(r, res, seen, false)
    end)
  end
end)
