-- Regressions for issue 9 (frames never interleave; messages before a protocol error are
-- delivered). Raw peers are stdlib-only Python: spec/peers/slow_reader.py (a client
-- with SO_RCVBUF 4096 that reads late and slowly, and parses every byte it gets),
-- spec/peers/raw_client.py and raw_server.py (conformance's peers).
--
--  1. A ping that arrives while a big data frame is half sent is answered between
--     frames: the pong's bytes never land inside the payload (they did at ~2.8 MB of a
--     3,000,000-byte message: enqueue-at-front put the pong ahead of a frame's unsent tail).
--  2. Failing a connection (a frame with RSV1 set) while a big frame is half sent either
--     finishes that frame and then sends the 1002 close frame, or drops TCP with no close
--     frame: never a close frame inside the payload, never a cut-short frame then a close.
--  3. Stress: 50 slow readers, 3 writer coroutines each, messages of 8 B .. 4 MiB that
--     carry (connection, writer, sequence) and a fill the peer checks byte by byte, pings
--     every few ms, a protocol error on every 10th connection. Every byte the peer gets
--     parses into whole frames, in per-writer order, with every pong once and in order.
--     LUAWS_STRESS_SEED (default 1) picks the sizes; the peer's timing is not seeded.
--  4. Read side: a valid message (or a complete fragmented one) and a malformed frame
--     in one write: the reader gets the message(s) first, then the 1002 CloseError; what
--     came after the bad frame is not delivered. The reader echoes each message, and the
--     echoes reach the peer before the 1002 close frame: luaws fails the connection when
--     the reader reaches the bad frame, as gorilla does (and as luaws answers a close
--     frame), not as soon as it arrives. Both roles, read at once and read 1 s later.
--
-- LUAWS_ISSUE9_DUMP=<file> writes the stress peer's whole JSON result to <file>.
--
-- Run from the repository root: busted --lua=lua5.4 spec/issue9_writepath_spec.lua
local support = require "support"
local websocket = support.websocket
local cjson = require "cjson"

lazy_setup(function() support.keepalive(true) end)
lazy_teardown(function() support.keepalive(false) end)

local PYTHON = support.PYTHON
local q = support.shell_quote
local SLOW_READER = support.peer("slow_reader.py")
local RAW_CLIENT = support.peer("raw_client.py")

local CONT, TEXT, BINARY, CLOSE = 0, 1, 2, 8

local function isnull(v) return v == nil or v == cjson.null end

local function result_of(child) return support.json_result(child, "peer") end

local pattern = support.slow_reader_pattern -- slow_reader.py's bytes

-- slow_reader.py's fill(c, w, s, n)
local BLOCK
local function fill(c, w, s, n)
  BLOCK = BLOCK or support.binary(65536, 12345)
  local off = (c * 7919 + w * 104729 + s * 31) % 65536
  return BLOCK:rep((off + n) // 65536 + 1):sub(off + 1, off + n)
end

local server = support.server

local function frames_text(r)
  local t = {}
  for i, f in ipairs(r.frames or {}) do
    t[i] = ("@%d op=%d fin=%s rsv=%d len=%d%s"):format(f.off, f.opcode, tostring(f.fin), f.rsv,
      f.len, f.got < f.len and (" (stream ended after %d)"):format(f.got) or "")
  end
  if (r.frames_more or 0) > 0 then t[#t + 1] = ("... %d more"):format(r.frames_more) end
  return table.concat(t, "\n    ")
end

-- Where (if anywhere) offset `at` of the stream falls inside a data frame's payload.
local function inside_data(r, at)
  for _, f in ipairs(r.frames) do
    local start = f.off + (f.len <= 125 and 2 or f.len <= 65535 and 4 or 10)
    if f.opcode <= 2 and at >= start and at < start + f.len then return at - start end
  end
end

-- One slow connection (mode "ping" or "fail") to a server that writes one binary
-- message of `size` bytes right after the upgrade, then reads until an error. Checks
-- that the peer's ping or bad frame went out after that write began.
local function slow_single(mode, size)
  local payload = pattern(size)
  local seen = {}
  local srv, port = server(function(c)
    seen.write_called_at = websocket.Now()
    seen.write_ok, seen.write_err = c:WriteMessage(BINARY, payload)
    seen.read_err = support.drain(c)
    c:Close()
    seen.done = true
  end)
  finally(function() srv:Close() end)
  local child = support.spawn(("%s %s %s %d /%s %d"):format(PYTHON, q(SLOW_READER), mode, port,
    mode, size))
  finally(function() support.stop(child) end)
  assert(support.wait(child, 45), "slow_reader.py did not finish within 45 s:\n" ..
    support.output(child):sub(1, 2000))
  local r = result_of(child)
  assert(r.handshake == "ok", "handshake: " .. tostring(r.handshake))
  support.wait_for(function() return seen.done end, 5)
  r.ctx = ("\n  frames:\n    %s\n  pongs %s, closes %s, eof %s, reset %s, bytes %d, ping/bad frame sent at %.3f"):format(
    frames_text(r), cjson.encode(r.pongs), cjson.encode(r.closes), tostring(r.eof),
    tostring(r.reset), r.bytes, r.sent_at or 0)
  -- the scenario: the handler called WriteMessage (right after the upgrade) about 1 s
  -- before the ping (or bad frame) went out, and the peer had read nothing (4 KiB
  -- receive buffer), so most of the message was still on the server's side: queued, or
  -- half sent
  assert(seen.write_called_at and seen.write_called_at < r.sent_at,
    "precondition: " .. (mode == "ping" and "the ping" or "the bad frame") ..
    " went out before the handler called WriteMessage" .. r.ctx)
  return r, seen
end

-- No offset in `offsets` (where the peer found a control frame's bytes) may fall inside
-- a data frame's payload; msg is formatted with (stream offset, payload offset).
local function assert_outside_data(r, offsets, msg)
  for _, at in ipairs(offsets) do
    local inside = inside_data(r, at)
    assert(not inside, msg:format(at, inside or -1) .. r.ctx)
  end
end

describe("write path:", function()
  it("issue 9: a control frame never lands inside a half-sent data frame", function()
    local SIZE = 3000000
    local r, seen = slow_single("ping", SIZE)
    assert_outside_data(r, r.pong_at,
      "the pong's bytes 8a 08 PINGPING are at stream offset %d, inside the data frame's payload (payload offset %d)")
    assert.are.equal(1, #r.messages, "data messages received" .. r.ctx)
    local m = r.messages[1]
    assert.are.equal(BINARY, m.opcode, "message type" .. r.ctx)
    assert.are.equal(SIZE, m.len, "message length" .. r.ctx)
    assert(isnull(m.first_diff), ("the message differs from what was written at byte %s"):format(
      tostring(m.first_diff)) .. r.ctx)
    assert.are.same({ "PINGPING" }, r.pongs, "pongs" .. r.ctx)
    assert(isnull(r.partial) and r.leftover_header == 0, "the stream ended inside a frame" .. r.ctx)
    for _, f in ipairs(r.frames) do
      assert(f.rsv == 0 and not f.masked, "a frame with RSV bits or a mask" .. r.ctx)
    end
    assert.are.same({ 1000 }, r.closes, "the server's answer to close 1000" .. r.ctx)
    assert(r.eof or r.reset, "the server did not close TCP" .. r.ctx)
    assert(seen.write_ok, "WriteMessage: " .. tostring(seen.write_err))
    assert.are.equal(1000, seen.read_err and seen.read_err.code, tostring(seen.read_err))
  end)

  it("issue 9: a failing connection finishes its half-sent frame before the close frame (or drops TCP without one)", function()
    local SIZE = 3000000
    local r, seen = slow_single("fail", SIZE)
    assert_outside_data(r, r.close_at,
      "a close 1002 frame (88 xx 03 ea) at stream offset %d, inside the data frame's payload (payload offset %d)")
    assert(r.eof or r.reset, "the server did not close TCP within 20 s" .. r.ctx)
    local f1 = r.frames[1]
    assert(f1 and f1.opcode == BINARY and f1.len == SIZE, "the first frame is not the message" .. r.ctx)
    local outcome
    if #r.messages == 1 then
      -- (a) the whole frame, byte-exact, then (optionally) the close frame, last
      assert.are.equal(SIZE, r.messages[1].len, r.ctx)
      assert(isnull(r.messages[1].first_diff), ("the message differs at byte %s"):format(
        tostring(r.messages[1].first_diff)) .. r.ctx)
      assert(#r.closes <= 1, "more than one close frame" .. r.ctx)
      if #r.closes == 1 then
        assert.are.equal(1002, r.closes[1], "close code" .. r.ctx)
        assert(r.frames[#r.frames].opcode == CLOSE and r.after_close == 0,
          "bytes after the close frame" .. r.ctx)
        outcome = "the whole frame, then close 1002"
      else
        outcome = "the whole frame, then EOF without a close frame"
      end
      assert(isnull(r.partial) and r.leftover_header == 0, "a cut-short frame after the message" .. r.ctx)
    else
      -- (b) a prefix of the frame, then EOF: no close frame at all
      assert.are.equal(0, #r.messages, r.ctx)
      assert(not isnull(r.partial), "no data at all" .. r.ctx)
      assert.are.same({}, r.closes, "a close frame after a cut-short data frame" .. r.ctx)
      assert(isnull(r.partial.first_diff), ("the frame's bytes differ from the payload at byte %s (of %d received)")
        :format(tostring(r.partial.first_diff), r.partial.got) .. r.ctx)
      assert.are.equal(1, #r.frames, "more than one frame" .. r.ctx)
      outcome = ("%d bytes of the frame, then EOF without a close frame"):format(r.partial.got)
    end
    print("    outcome: " .. outcome)
    assert.are.equal(1002, seen.read_err and seen.read_err.code, tostring(seen.read_err))
  end)

  it("issue 9: slow readers under stress", function()
    local SEED = tonumber(os.getenv("LUAWS_STRESS_SEED") or "1")
    local NCONNS, NWRITERS, NMSGS, FAIL_EVERY, DEADLINE = 50, 3, 20, 10, 60
    local MiB = 1 << 20

    -- splitmix64: uniform numbers in [0, 1), the same for a seed on every platform
    local function prng(seed)
      local x = seed
      return function()
        x = x + 0x9E3779B97F4A7C15
        local z = x
        z = (z ~ (z >> 30)) * 0xBF58476D1CE4E5B9
        z = (z ~ (z >> 27)) * 0x94D049BB133111EB
        z = z ~ (z >> 31)
        return (z >> 11) / 2.0 ^ 53
      end
    end
    -- skewed to small: 55% 8..125 B, 38.5% 126 B..64 KiB, 6% 64..512 KiB, 0.5% 512 KiB..4 MiB
    local function size(u, v)
      if u < 0.55 then return 8 + math.floor(v * 118) end
      if u < 0.935 then return math.floor(126 * (65535 / 126) ^ v) end
      if u < 0.995 then return math.floor(65536 * 8 ^ v) end
      return math.min(4 * MiB, math.floor(512 * 1024 * 8 ^ v))
    end
    -- What writer w of connection cid sends: {size, pause after it} per message (the
    -- peer does not need this: the messages describe themselves).
    local function plan(cid, w)
      local rnd, out = prng(SEED * 1000003 + cid * 16 + w), {}
      for s = 0, NMSGS - 1 do
        local n = size(rnd(), rnd())
        if cid == 1 and w == 1 and s == 3 then n = 4 * MiB end -- the top of the range, once
        out[s] = { n, rnd() < 0.3 and rnd() * 0.004 or 0 }
      end
      return out
    end
    local planned = 0
    for cid = 0, NCONNS - 1 do
      for w = 0, NWRITERS - 1 do
        for _, m in pairs(plan(cid, w)) do planned = planned + m[1] end
      end
    end

    local conns = {}
    local srv, port = server(function(c, r)
      local cid = assert(tonumber(r.URL.Path:match("^/s/(%d+)$")), r.URL.Path)
      local st = { ok = {}, err = {}, writers_done = 0 }
      conns[cid] = st
      for w = 0, NWRITERS - 1 do
        st.ok[w] = 0
        websocket.Go(function()
          local msgs = plan(cid, w)
          for s = 0, NMSGS - 1 do
            local data = string.pack(">I2BBI4", cid, w, s == NMSGS - 1 and 1 or 0, s) ..
              fill(cid, w, s, msgs[s][1] - 8)
            local ok, err = c:WriteMessage(BINARY, data)
            if not ok then
              st.err[w] = err
              break
            end
            st.ok[w] = st.ok[w] + 1
            if msgs[s][2] > 0 then websocket.Sleep(msgs[s][2]) end
          end
          st.writers_done = st.writers_done + 1
        end)
      end
      st.read_err = support.drain(c)
      c:Close()
      st.done = true
    end)
    finally(function() srv:Close() end)

    local t0 = websocket.Now()
    local child = support.spawn(("%s %s stress %d %d %d %d %d"):format(PYTHON, q(SLOW_READER), port,
      NCONNS, SEED, FAIL_EVERY, DEADLINE))
    finally(function() support.stop(child) end)
    assert(support.wait(child, DEADLINE + 30), "slow_reader.py stress did not finish within " ..
      (DEADLINE + 30) .. " s:\n" .. support.output(child):sub(1, 2000))
    local r = result_of(child)
    if os.getenv("LUAWS_ISSUE9_DUMP") then
      local f = io.open(os.getenv("LUAWS_ISSUE9_DUMP"), "w"); f:write(cjson.encode(r)); f:close()
    end
    assert(r.handshake == "ok", "handshake: " .. tostring(r.handshake))
    support.wait_for(function()
      for cid = 0, NCONNS - 1 do
        local st = conns[cid]
        if not (st and st.done and st.writers_done == NWRITERS) then return false end
      end
      return true
    end, 10)
    print(("    seed %d: %.1f MB planned, %.1f MB received in %.1f s (peer %.1f s)"):format(SEED,
      planned / 1e6, r.bytes / 1e6, websocket.Now() - t0, r.elapsed))

    local problems = {}
    local function expect(cond, msg)
      if not cond and #problems < 60 then problems[#problems + 1] = msg end
    end
    for _, pc in ipairs(r.conns) do
      local cid = math.tointeger(pc.id)
      local st = conns[cid]
      local tag = ("conn %d%s: "):format(cid, pc.fails and " (fails)" or "")
      for _, p in ipairs(pc.problems) do expect(false, tag .. "peer: " .. p) end
      if not st then
        expect(false, tag .. "the server never saw it")
      else
        expect(st.done and st.writers_done == NWRITERS, tag .. "the handler or a writer did not finish")
        for w = 0, NWRITERS - 1 do
          local got = pc.writers[tostring(w)] or { count = 0, done = false }
          if pc.fails then
            expect(got.count <= st.ok[w], ("%swriter %d: the peer got %d messages, WriteMessage succeeded %d times")
              :format(tag, w, got.count, st.ok[w]))
            local e = st.err[w]
            expect(e == nil or e == websocket.ErrCloseSent or e == websocket.ErrClosed,
              ("%swriter %d: WriteMessage failed with %s"):format(tag, w, tostring(e)))
          else
            expect(st.err[w] == nil, ("%swriter %d: WriteMessage failed: %s"):format(tag, w, tostring(st.err[w])))
            expect(st.ok[w] == NMSGS and got.count == NMSGS and got.done,
              ("%swriter %d: %d written, the peer got %d (last seen: %s)"):format(tag, w, st.ok[w],
                got.count, tostring(got.done)))
          end
        end
        local want_code = pc.fails and 1002 or 1000
        expect(st.read_err and st.read_err.code == want_code, ("%sthe handler's read ended with %s, want code %d")
          :format(tag, tostring(st.read_err), want_code))
        if not pc.fails then
          expect(pc.pongs == pc.pings, ("%s%d pings, %d pongs"):format(tag, pc.pings, pc.pongs))
        end
      end
    end
    assert(#problems == 0, #problems .. " problem(s):\n  " .. table.concat(problems, "\n  "))
  end)
end)

---------------------------------------------------------------------------------------
-- 4: the read side

local function hex(s)
  return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

-- The bytes of one frame: f = {opcode, payload, fin = true, rsv = 0 (RSV1 = 4)}, masked
-- with a fixed key when `masked`.
local function frame(f, masked)
  local payload = f[2] or ""
  local b0 = ((f.fin == false) and 0 or 0x80) | ((f.rsv or 0) << 4) | f[1]
  assert(#payload <= 125)
  if not masked then return string.char(b0, #payload) .. payload end
  local key = { 0x37, 0xfa, 0x21, 0x3d }
  local out = {}
  for i = 1, #payload do out[i] = string.char(payload:byte(i) ~ key[(i - 1) % 4 + 1]) end
  return string.char(b0, 0x80 | #payload) .. string.char(table.unpack(key)) .. table.concat(out)
end

local READ_ROWS = {
  { name = "a text message, then a frame with RSV1 set, in one write",
    send = { { TEXT, "hello" }, { TEXT, "reserved", rsv = 4 }, { TEXT, "after" } },
    msgs = { { TEXT, "hello" } } },
  { name = "a message in two fragments, a continuation with nothing to continue, then a text message, in one write",
    send = { { TEXT, "ab", fin = false }, { CONT, "cd" }, { CONT, "stray" }, { TEXT, "after" } },
    msgs = { { TEXT, "abcd" } } },
  { name = "three messages, then a reserved opcode, in one write",
    send = { { TEXT, "one" }, { BINARY, "\0two\255" }, { TEXT, "three" }, { 3, "bad opcode" },
      { TEXT, "after" } },
    msgs = { { TEXT, "one" }, { BINARY, "\0two\255" }, { TEXT, "three" } } },
}

do -- the same rows, read only once the connection has failed and TCP is closed
  local n = #READ_ROWS
  for i = 1, n do
    local r = READ_ROWS[i]
    READ_ROWS[#READ_ROWS + 1] = { name = r.name .. ", read 1 s later", send = r.send,
      msgs = r.msgs, delay = 1 }
  end
end

local function script(row, masked)
  local bytes = {}
  for i, f in ipairs(row.send) do bytes[i] = frame(f, masked) end
  -- the raw server waits a moment so that the frames arrive in a read of their own
  local steps = { { sleep = masked and 0 or 0.3 }, { send = hex(table.concat(bytes)) } }
  return cjson.encode({ steps = steps, linger = 3 })
end

local function show(s)
  return '"' .. s:gsub("[^%w%p ]", function(c) return ("\\x%02x"):format(c:byte()) end) .. '"'
end

local function seen_text(seen)
  local t = {}
  for _, m in ipairs(seen.msgs) do t[#t + 1] = ("%d:%s"):format(m[1], show(m[2])) end
  t[#t + 1] = "then " .. tostring(seen.err)
  return table.concat(t, ", ")
end

local function unhex(h)
  return (h:gsub("%x%x", function(c) return string.char(tonumber(c, 16)) end))
end

-- The luaws side read the messages before the error and echoed each (the echo must go
-- out: the connection fails only once the reader reaches the bad frame); the raw peer
-- got the echoes, then one close frame with 1002.
local function check_read(row, seen, res)
  assert(res.handshake == "ok", "raw peer handshake: " .. tostring(res.handshake))
  local events = {}
  for _, e in ipairs(res.events) do
    events[#events + 1] = e.type == "close" and ("close(" .. tostring(math.tointeger(e.code)) .. ")")
      or ("%s(%s)"):format(e.type, show(unhex(e.data)))
  end
  local got = ("\n  the luaws reader got: %s\n  its echoes failed: %s\n  the raw peer received: %s")
    :format(seen_text(seen), table.concat(seen.write_errs, ", "), table.concat(events, " "))
  assert.are.same(row.msgs, seen.msgs, "messages delivered to the luaws reader" .. got)
  assert.are.equal(1002, seen.err and seen.err.code, "the reader's error" .. got)
  assert.are.same({}, seen.write_errs, "echoing the messages before the bad frame" .. got)
  local want = {}
  for _, m in ipairs(row.msgs) do
    want[#want + 1] = ("%s(%s)"):format(m[1] == TEXT and "text" or "binary", show(m[2]))
  end
  want[#want + 1] = "close(1002)"
  assert.are.same(want, events, "what the raw peer received" .. got)
end

describe("read side:", function()
  for _, row in ipairs(READ_ROWS) do
    it("issue 9: messages before a protocol error are delivered (luaws server): " .. row.name, function()
      local seen = { msgs = {}, write_errs = {} }
      local srv, port = server(function(c)
        if row.delay then websocket.Sleep(row.delay) end
        support.read_echo(c, seen)
        c:Close()
        seen.done = true
      end)
      finally(function() srv:Close() end)
      local child = support.spawn(("%s %s %d /read %s"):format(PYTHON, q(RAW_CLIENT), port,
        q(script(row, true))))
      finally(function() support.stop(child) end)
      assert(support.wait(child, 15), "raw_client.py did not finish within 15 s")
      assert(support.wait_for(function() return seen.done end, 5), "the handler did not finish: " .. seen_text(seen))
      check_read(row, seen, result_of(child))
    end)

    it("issue 9: messages before a protocol error are delivered (luaws client): " .. row.name, function()
      local child, port = support.raw_server(script(row, false))
      local seen = { msgs = {}, write_errs = {} }
      finally(function()
        if seen.conn then seen.conn:Close() end
        support.stop(child)
      end)
      assert(port, "raw_server.py printed no port:\n" .. support.output(child))
      support.dial(support.url(port, "/read"), seen, function(c)
        if row.delay then websocket.Sleep(row.delay) end
        support.read_echo(c, seen)
      end)
      assert(support.wait_for(function() return seen.done end, 15), "the luaws client did not finish: " .. seen_text(seen))
      assert(seen.lua_error == nil, seen.lua_error)
      assert(seen.dial_err == nil, "Dial: " .. tostring(seen.dial_err))
      assert(support.wait(child, 10), "raw_server.py did not finish within 10 s")
      check_read(row, seen, result_of(child))
    end)
  end
end)
