-- The gorilla-shaped Conn API beyond ReadMessage/WriteMessage: read and write deadlines,
-- SetReadLimit, NextReader/NextWriter (and WriteBufferSize), WriteControl, the ping,
-- pong and close handlers, prepared messages, JSON, the close handshake and permanent
-- errors. Servers are in-process (127.0.0.1:0); one test uses a raw Python peer to see
-- the frames NextWriter puts on the wire.
local support = require "support"
local websocket = support.websocket
local Now, Sleep, Go = websocket.Now, websocket.Sleep, websocket.Go

lazy_setup(function() support.keepalive(true) end)
lazy_teardown(function() support.keepalive(false) end)

local TEXT, BINARY = websocket.TextMessage, websocket.BinaryMessage
local PING, PONG, CLOSE = websocket.PingMessage, websocket.PongMessage, websocket.CloseMessage

-- A server whose handler(c, r, st) runs on each upgraded connection; the connection is
-- closed when it returns. st.errors collects what went wrong inside (assert it empty),
-- st.conns the server-side connections, st.ended how many handlers returned.
local function serve(handler, upgrader_opts)
  local up = websocket.Upgrader(upgrader_opts)
  local st = { errors = {}, conns = {}, ended = 0 }
  local srv = assert(websocket.Listen("127.0.0.1:0", function(w, r)
    local c, err = up:Upgrade(w, r)
    if not c then
      st.errors[#st.errors + 1] = "upgrade: " .. tostring(err)
      return
    end
    st.conns[#st.conns + 1] = c
    local ok, herr = xpcall(handler, debug.traceback, c, r, st)
    if not ok then st.errors[#st.errors + 1] = herr end
    c:Close()
    st.ended = st.ended + 1
  end))
  return srv, st
end

-- Dial 127.0.0.1:port (with an optional Dialer); the connection is closed by finally.
local function dial(port, dialer, path)
  local c, resp, err = (dialer or websocket.DefaultDialer):Dial(support.url(port, path))
  assert(c, "dial: " .. tostring(err))
  assert(resp.StatusCode == 101)
  finally(function() c:Close() end)
  return c
end

-- Echo until the read fails; the error goes to st.read_err.
local function echo(c, _, st)
  while true do
    local mt, data, err = c:ReadMessage()
    if err then st.read_err = err return end
    local ok, werr = c:WriteMessage(mt, data)
    if not ok then st.write_err = werr return end
  end
end

local diff, binary = support.diff, support.binary

-- n bytes, cheap to build even for many MiB, every 4096-byte block different.
local function big(n)
  local block = binary(4096, 7)
  local parts = {}
  for i = 0, n // 4096 do
    parts[#parts + 1] = string.pack(">I4", i) .. block:sub(5)
  end
  return table.concat(parts):sub(1, n)
end

local function rss_kib()
  local s = support.read_file("/proc/self/status") or ""
  return tonumber(s:match("VmRSS:%s*(%d+)")) or 0
end

local function no_errors(st)
  assert.are.same({}, st.errors)
end

---------------------------------------------------------------------------------------

describe("SetReadDeadline", function()
  it("a peer that stops in the middle of a message trips the server's read deadline", function()
    local res = {}
    local srv, st = serve(function(c)
      local t0 = Now()
      c:SetReadDeadline(t0 + 0.3)
      local mt, data, err = c:ReadMessage()
      res.mt, res.data, res.err, res.elapsed = mt, data, err, Now() - t0
      res.again = {}
      for i = 1, 3 do res.again[i] = select(3, c:ReadMessage()) end
    end)
    finally(function() srv:Close() end)
    local c = dial(srv:Port(), websocket.Dialer { WriteBufferSize = 1024 })
    local w = assert(c:NextWriter(BINARY))
    -- more than the buffer: a non-final fragment goes out now, and nothing after it
    assert.are.equal(3000, w:Write(string.rep("x", 3000)))
    assert.is_truthy(support.wait_for(function() return res.err end, 5))
    no_errors(st)
    assert.is_nil(res.mt)
    assert.is_nil(res.data)
    assert.is_true(res.err.timeout)
    assert.is_true(res.elapsed >= 0.25, "timed out early: " .. res.elapsed)
    assert.is_true(res.elapsed < 2, "timed out late: " .. res.elapsed)
    for i = 1, 3 do assert.are.equal(res.err, res.again[i]) end
  end)

  it("wakes a reader parked in ReadMessage on a peer that sends nothing", function()
    local srv = serve(function(c)
      Sleep(3) -- sends nothing, reads nothing
    end)
    finally(function() srv:Close() end)
    local c = dial(srv:Port())
    local t0 = Now()
    assert.is_true(c:SetReadDeadline(t0 + 0.2))
    local mt, data, err = c:ReadMessage()
    local elapsed = Now() - t0
    assert.is_nil(mt)
    assert.is_nil(data)
    assert.is_not_nil(err)
    assert.is_true(err.timeout)
    assert.is_true(elapsed >= 0.15, "woke early: " .. elapsed)
    assert.is_true(elapsed < 2, "woke late: " .. elapsed)
  end)

  it("wakes a reader parked in a coroutine (server side)", function()
    local res = {}
    local srv = serve(function(c)
      c:SetReadDeadline(Now() + 0.2)
      local t0 = Now()
      res.err = select(3, c:ReadMessage())
      res.elapsed = Now() - t0
    end)
    finally(function() srv:Close() end)
    local c = dial(srv:Port())
    assert.is_truthy(support.wait_for(function() return res.err end, 5))
    assert.is_true(res.err.timeout)
    assert.is_true(res.elapsed < 2, "woke late: " .. res.elapsed)
  end)

  it("a deadline already in the past fails the next read at once", function()
    local srv = serve(function() Sleep(3) end)
    finally(function() srv:Close() end)
    local c = dial(srv:Port())
    c:SetReadDeadline(Now() - 1)
    local t0 = Now()
    local mt, data, err = c:ReadMessage()
    assert.is_nil(mt)
    assert.is_nil(data)
    assert.is_true(err.timeout)
    assert.is_true(Now() - t0 < 0.5)
  end)

  it("clearing the deadline (nil or 0) before it fires lets reads work", function()
    for _, clear in ipairs({ "nil", "0" }) do
      local go = false
      local srv = serve(function(c)
        support.wait_for(function() return go end, 5)
        c:WriteMessage(TEXT, "late " .. clear)
        c:ReadMessage()
      end)
      finally(function() srv:Close() end)
      local c = dial(srv:Port())
      c:SetReadDeadline(Now() + 0.2)
      if clear == "nil" then c:SetReadDeadline(nil) else c:SetReadDeadline(0) end
      Sleep(0.4) -- past the old deadline
      go = true
      local mt, data, err = c:ReadMessage()
      assert.is_nil(err)
      assert.are.equal(TEXT, mt)
      assert.are.equal("late " .. clear, data)
    end
  end)

  it("moving the deadline later keeps a read working past the first one", function()
    local srv = serve(function(c)
      Sleep(0.4)
      c:WriteMessage(TEXT, "in time")
      c:ReadMessage()
    end)
    finally(function() srv:Close() end)
    local c = dial(srv:Port())
    c:SetReadDeadline(Now() + 0.1)
    c:SetReadDeadline(Now() + 5)
    local _, data, err = c:ReadMessage()
    assert.is_nil(err)
    assert.are.equal("in time", data)
  end)

  it("the timeout is permanent: later reads return the same error even once data came", function()
    local go = false
    local srv = serve(function(c)
      support.wait_for(function() return go end, 5)
      c:WriteMessage(TEXT, "too late")
      Sleep(0.5)
    end)
    finally(function() srv:Close() end)
    local c = dial(srv:Port())
    c:SetReadDeadline(Now() + 0.1)
    local _, _, err = c:ReadMessage()
    assert.is_true(err.timeout)
    go = true
    Sleep(0.2)
    c:SetReadDeadline(nil)
    for _ = 1, 5 do
      local mt, data, again = c:ReadMessage()
      assert.is_nil(mt)
      assert.is_nil(data)
      assert.are.equal(err, again)
    end
    local mt, r, nerr = c:NextReader()
    assert.is_nil(mt)
    assert.is_nil(r)
    assert.are.equal(err, nerr)
  end)

  it("fires in the middle of a NextReader message: Read returns the timeout", function()
    local srv = serve(function(c)
      local w = c:NextWriter(BINARY)
      w:Write(string.rep("a", 100))
      Sleep(3) -- the rest never comes
    end, { WriteBufferSize = 64 })
    finally(function() srv:Close() end)
    local c = dial(srv:Port())
    c:SetReadDeadline(Now() + 0.3)
    local mt, r, err = c:NextReader()
    assert.is_nil(err)
    assert.are.equal(BINARY, mt)
    local got, rerr = {}, nil
    while true do
      local data, e = r:Read(1000)
      if not data then rerr = e break end
      got[#got + 1] = data
    end
    -- one full 64-byte fragment went out; the other 36 bytes wait in the writer
    assert.are.equal(string.rep("a", 64), table.concat(got))
    assert.is_not_nil(rerr)
    assert.is_true(rerr.timeout)
    assert.are.equal(rerr, select(3, c:ReadMessage()))
  end)
end)

describe("SetWriteDeadline", function()
  it("a peer that stops reading makes the writer time out, memory stays bounded, the loop keeps serving", function()
    local res = { n = 0 }
    local srv, st = serve(function(c, r)
      if r.URL.Path == "/echo" then return echo(c, r, {}) end
      local payload = string.rep("w", 64 * 1024)
      local t0 = Now()
      res.mem0, res.rss0 = collectgarbage("count"), rss_kib()
      res.maxmem, res.maxrss = res.mem0, res.rss0
      while true do
        c:SetWriteDeadline(Now() + 0.5)
        local ok, err = c:WriteMessage(BINARY, payload)
        if not ok then res.err = err break end
        res.n = res.n + 1
        res.maxmem = math.max(res.maxmem, collectgarbage("count"))
        res.maxrss = math.max(res.maxrss, rss_kib())
        if Now() - t0 > 20 then res.err = "still writing after 20 s" break end
      end
      res.elapsed = Now() - t0
      res.again = select(2, c:WriteMessage(BINARY, "x"))
    end)
    finally(function() srv:Close() end)
    dial(srv:Port(), nil, "/sink") -- never reads
    -- another connection keeps being served meanwhile
    local other = dial(srv:Port(), nil, "/echo")
    local rounds, worst, stop, other_err = 0, 0, false, nil
    local pinger_done = false
    Go(function()
      while not stop do
        local t = Now()
        local ok, werr = other:WriteMessage(TEXT, "r" .. rounds)
        local _, data, rerr = other:ReadMessage()
        if not ok or rerr or data ~= "r" .. rounds then
          other_err = tostring(werr or rerr or data)
          break
        end
        worst = math.max(worst, Now() - t)
        rounds = rounds + 1
        Sleep(0.02)
      end
      pinger_done = true
    end)
    assert.is_truthy(support.wait_for(function() return res.err end, 25))
    stop = true
    assert.is_truthy(support.wait_for(function() return pinger_done end, 5))
    no_errors(st)
    assert.is_table(res.err, tostring(res.err))
    assert.is_true(res.err.timeout)
    assert.is_true(res.elapsed < 10, "took " .. res.elapsed .. " s")
    assert.are.equal(res.err, res.again) -- a write timeout is permanent
    assert.is_true(res.n > 0)
    assert.is_true(res.n * 64 < 128 * 1024, ("wrote %d KiB before timing out"):format(res.n * 64))
    assert.is_true(res.maxmem - res.mem0 < 16 * 1024,
      ("Lua heap grew by %d KiB"):format(math.floor(res.maxmem - res.mem0)))
    assert.is_true(res.maxrss - res.rss0 < 128 * 1024,
      ("RSS grew by %d KiB"):format(res.maxrss - res.rss0))
    assert.is_nil(other_err)
    assert.is_true(rounds >= 5, "the other connection made only " .. rounds .. " round trips")
    assert.is_true(worst < 1, "a round trip on the other connection took " .. worst .. " s")
  end)

  it("a write deadline in the past fails the next write at once, for good", function()
    local srv, st = serve(echo)
    finally(function() srv:Close() end)
    local c = dial(srv:Port())
    c:SetWriteDeadline(Now() - 1)
    local t0 = Now()
    local ok, err = c:WriteMessage(TEXT, "x")
    assert.is_nil(ok)
    assert.is_true(err.timeout)
    assert.is_true(Now() - t0 < 0.5)
    c:SetWriteDeadline(nil)
    local ok2, err2 = c:WriteMessage(TEXT, "y")
    assert.is_nil(ok2)
    assert.are.equal(err, err2)
    no_errors(st)
  end)

  it("clearing a write deadline before it passes keeps writes working", function()
    local srv, st = serve(echo)
    finally(function() srv:Close() end)
    local c = dial(srv:Port())
    c:SetWriteDeadline(Now() + 0.1)
    c:SetWriteDeadline(nil)
    Sleep(0.3)
    assert.is_true((c:WriteMessage(TEXT, "still fine")))
    local _, data, err = c:ReadMessage()
    assert.is_nil(err)
    assert.are.equal("still fine", data)
    no_errors(st)
  end)
end)

describe("SetReadLimit", function()
  local N = 1000

  -- The server reads with limit N and answers "ok <len>" for each message.
  local function limited_server()
    local res = {}
    local srv, st = serve(function(c)
      assert(c:SetReadLimit(N))
      while true do
        local _, data, err = c:ReadMessage()
        if err then
          res.err = err
          res.again = select(3, c:ReadMessage())
          return
        end
        c:WriteMessage(TEXT, "ok " .. #data)
      end
    end)
    return srv, st, res
  end

  it("a message of exactly n bytes is delivered; n+1 fails with ErrReadLimit and close 1009", function()
    local srv, st, res = limited_server()
    finally(function() srv:Close() end)
    local c = dial(srv:Port())
    assert.is_true((c:WriteMessage(BINARY, string.rep("a", N))))
    local _, data, err = c:ReadMessage()
    assert.is_nil(err)
    assert.are.equal("ok " .. N, data)
    assert.is_true((c:WriteMessage(BINARY, string.rep("b", N + 1))))
    local mt, d2, cerr = c:ReadMessage()
    assert.is_nil(mt)
    assert.is_nil(d2)
    assert.is_not_nil(cerr)
    assert.are.equal(websocket.CloseMessageTooBig, cerr.code)
    assert.is_true(websocket.IsCloseError(cerr, 1009))
    assert.is_truthy(support.wait_for(function() return res.err end, 5))
    no_errors(st)
    assert.are.equal(websocket.ErrReadLimit, res.err)
    assert.are.equal(websocket.ErrReadLimit, res.again)
  end)

  it("counts the whole message across fragments (client WriteBufferSize = 16)", function()
    for _, extra in ipairs({ 0, 1 }) do
      local srv, st, res = limited_server()
      finally(function() srv:Close() end)
      local c = dial(srv:Port(), websocket.Dialer { WriteBufferSize = 16 })
      local w = assert(c:NextWriter(TEXT))
      local total = N + extra
      local sent = 0
      while sent < total do
        local n = math.min(7, total - sent)
        assert.are.equal(n, w:Write(string.rep("f", n)))
        sent = sent + n
      end
      assert.is_true((w:Close()))
      local _, data, err = c:ReadMessage()
      if extra == 0 then
        assert.is_nil(err)
        assert.are.equal("ok " .. N, data)
      else
        assert.is_nil(data)
        assert.is_true(websocket.IsCloseError(err, 1009), tostring(err))
        assert.is_truthy(support.wait_for(function() return res.err end, 5))
        assert.are.equal(websocket.ErrReadLimit, res.err)
      end
      no_errors(st)
    end
  end)

  it("works on the client side too: the server's read sees close 1009", function()
    local res = {}
    local srv, st = serve(function(c)
      c:ReadMessage() -- "go": the client has set its limit
      c:WriteMessage(BINARY, string.rep("a", N))
      c:WriteMessage(BINARY, string.rep("b", N + 1))
      res.err = select(3, c:ReadMessage())
    end)
    finally(function() srv:Close() end)
    local c = dial(srv:Port())
    c:SetReadLimit(N)
    assert.is_true((c:WriteMessage(TEXT, "go")))
    local _, data, err = c:ReadMessage()
    assert.is_nil(err)
    assert.are.equal(N, #data)
    local _, d2, lerr = c:ReadMessage()
    assert.is_nil(d2)
    assert.are.equal(websocket.ErrReadLimit, lerr)
    assert.is_truthy(support.wait_for(function() return res.err end, 5))
    no_errors(st)
    assert.is_true(websocket.IsCloseError(res.err, 1009), tostring(res.err))
  end)

  -- gorilla checks the limit as the reader parses frames, so it covers a message that
  -- reached the socket before SetReadLimit was called but had not been read yet.
  it("applies to a message that arrived before SetReadLimit but was not read yet", function()
    local res = {}
    local srv, st = serve(function(c)
      c:WriteMessage(BINARY, string.rep("b", N + 1)) -- at once, right after the upgrade
      res.err = select(3, c:ReadMessage())
    end)
    finally(function() srv:Close() end)
    local c = dial(srv:Port())
    Sleep(0.2) -- the message is in by now, unread
    c:SetReadLimit(N)
    local mt, data, err = c:ReadMessage()
    assert.is_nil(mt, ("a %s-byte message was delivered past a read limit of %d"):format(
      tostring(data and #data), N))
    assert.is_nil(data)
    assert.are.equal(websocket.ErrReadLimit, err)
    assert.is_truthy(support.wait_for(function() return res.err end, 5))
    assert.is_true(websocket.IsCloseError(res.err, 1009), tostring(res.err))
    no_errors(st)
  end)
end)

describe("NextReader", function()
  it("reads a 20 MiB message in chunks of at most 64 KiB, then EOF", function()
    local SIZE = 20 * 1024 * 1024
    local payload = big(SIZE)
    local srv, st = serve(function(c)
      c:WriteMessage(BINARY, payload)
      c:WriteMessage(TEXT, "after")
      c:ReadMessage()
    end)
    finally(function() srv:Close() end)
    local c = dial(srv:Port())
    local mt, r, err = c:NextReader()
    assert.is_nil(err)
    assert.are.equal(BINARY, mt)
    local sum, chunks, biggest, bad = 0, 0, 0, nil
    while true do
      local data, rerr = r:Read(65536)
      if not data then
        assert.are.equal(websocket.EOF, rerr)
        break
      end
      assert.is_true(#data > 0)
      if not bad and data ~= payload:sub(sum + 1, sum + #data) then
        bad = "chunk " .. (chunks + 1) .. " at offset " .. sum .. " differs"
      end
      sum = sum + #data
      chunks = chunks + 1
      biggest = math.max(biggest, #data)
    end
    assert.is_nil(bad)
    assert.are.equal(SIZE, sum)
    assert.is_true(biggest <= 65536, "a chunk of " .. biggest .. " bytes")
    assert.is_true(chunks >= SIZE // 65536)
    -- EOF again, then the next message reads normally
    local d, e = r:Read(10)
    assert.is_nil(d)
    assert.are.equal(websocket.EOF, e)
    local mt2, data2, err2 = c:ReadMessage()
    assert.is_nil(err2)
    assert.are.equal(TEXT, mt2)
    assert.are.equal("after", data2)
    no_errors(st)
  end)

  it("ReadAll returns the whole message; a text message keeps its type", function()
    local payload = string.rep("text ", 50000)
    local srv, st = serve(function(c)
      c:WriteMessage(TEXT, payload)
      c:WriteMessage(BINARY, "")
      c:ReadMessage()
    end)
    finally(function() srv:Close() end)
    local c = dial(srv:Port())
    local mt, r = c:NextReader()
    assert.are.equal(TEXT, mt)
    assert.is_nil(diff(r:ReadAll(), payload))
    local mt2, r2 = c:NextReader()
    assert.are.equal(BINARY, mt2)
    assert.are.equal("", r2:ReadAll())
    no_errors(st)
  end)

  it("ReadMessage before the reader reached EOF discards the rest (message already whole)", function()
    local srv, st = serve(function(c)
      c:WriteMessage(BINARY, string.rep("A", 300000))
      c:WriteMessage(TEXT, "B")
      c:ReadMessage()
    end)
    finally(function() srv:Close() end)
    local c = dial(srv:Port())
    local _, r = c:NextReader()
    assert.are.equal("AAAAAAAAAA", r:Read(10))
    local mt, data, err = c:ReadMessage()
    assert.is_nil(err)
    assert.are.equal(TEXT, mt)
    assert.are.equal("B", data)
    -- the old reader is finished
    local d, e = r:Read(10)
    assert.is_nil(d)
    assert.are.equal(websocket.EOF, e)
    no_errors(st)
  end)

  it("ReadMessage before EOF discards the rest even while it is still arriving", function()
    local srv, st = serve(function(c)
      local w = c:NextWriter(BINARY)
      w:Write(string.rep("A", 200))
      Sleep(0.3)
      w:Write(string.rep("Z", 5000))
      w:Close()
      c:WriteMessage(TEXT, "next")
      c:WriteMessage(TEXT, "next2")
      c:ReadMessage()
    end, { WriteBufferSize = 128 })
    finally(function() srv:Close() end)
    local c = dial(srv:Port())
    local mt, r = c:NextReader()
    assert.are.equal(BINARY, mt)
    local first = r:Read(50)
    assert.are.equal(string.rep("A", 50), first)
    local mt2, data, err = c:ReadMessage()
    assert.is_nil(err)
    assert.are.equal(TEXT, mt2)
    assert.are.equal("next", data)
    local _, r3 = c:NextReader()
    assert.are.equal("next2", r3:ReadAll())
    no_errors(st)
  end)

  it("a second NextReader also discards the unfinished one", function()
    local srv, st = serve(function(c)
      c:WriteMessage(TEXT, "one two three")
      c:WriteMessage(TEXT, "four")
      c:ReadMessage()
    end)
    finally(function() srv:Close() end)
    local c = dial(srv:Port())
    local _, r1 = c:NextReader()
    assert.are.equal("one", r1:Read(3))
    local _, r2 = c:NextReader()
    assert.are.equal("four", r2:ReadAll())
    assert.are.equal(websocket.EOF, select(2, r1:Read(1)))
    no_errors(st)
  end)
end)

describe("NextWriter", function()
  it("several Writes and Close arrive as one whole message", function()
    local srv, st = serve(echo)
    finally(function() srv:Close() end)
    local c = dial(srv:Port(), websocket.Dialer { WriteBufferSize = 100 })
    local parts, want = {}, {}
    for i = 1, 50 do
      parts[i] = ("part %02d;"):format(i) .. string.rep(string.char(64 + i % 26), i * 7)
      want[#want + 1] = parts[i]
    end
    local w = assert(c:NextWriter(TEXT))
    for i = 1, #parts do assert.are.equal(#parts[i], w:Write(parts[i])) end
    assert.is_true((w:Close()))
    local mt, data, err = c:ReadMessage()
    assert.is_nil(err)
    assert.are.equal(TEXT, mt)
    assert.is_nil(diff(data, table.concat(want)))
    -- the writer is spent
    local ok, werr = w:Write("more")
    assert.is_nil(ok)
    assert.is_not_nil(werr)
    no_errors(st)
  end)

  it("sends a fragment as soon as WriteBufferSize is reached, before Close (Upgrader)", function()
    local go, res = false, {}
    local srv, st = serve(function(c)
      local w = c:NextWriter(BINARY)
      w:Write(string.rep("s", 300)) -- past the 256-byte buffer
      support.wait_for(function() return go end, 5)
      w:Write("tail")
      w:Close()
      res.closed = true
      c:ReadMessage()
    end, { WriteBufferSize = 256 })
    finally(function() srv:Close() end)
    local c = dial(srv:Port())
    local mt, r = c:NextReader()
    assert.are.equal(BINARY, mt)
    local early = r:Read(1000)
    assert.is_nil(res.closed)
    assert.is_true(#early >= 256, "got " .. #early .. " bytes before Close")
    go = true
    local rest = assert(r:ReadAll())
    assert.are.equal(string.rep("s", 300) .. "tail", early .. rest)
    no_errors(st)
  end)

  -- A raw peer that prints each frame it receives: FRAME opcode fin length.
  local raw_server = [[
import socket, sys, hashlib, base64, struct
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(1)
s.settimeout(20)
print("PORT", s.getsockname()[1], flush=True)
conn, _ = s.accept()
conn.settimeout(20)
buf = b""
while b"\r\n\r\n" not in buf:
    d = conn.recv(4096)
    if not d: sys.exit(1)
    buf += d
head, buf = buf.split(b"\r\n\r\n", 1)
key = [l.split(b":", 1)[1].strip() for l in head.split(b"\r\n")
       if l.lower().startswith(b"sec-websocket-key:")][0]
acc = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
             b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + acc + b"\r\n\r\n")
def need(n):
    global buf
    while len(buf) < n:
        d = conn.recv(65536)
        if not d: sys.exit(2)
        buf += d
    r, buf = buf[:n], buf[n:]
    return r
while True:
    h = need(2)
    fin, op, ln = h[0] >> 7, h[0] & 15, h[1] & 127
    if ln == 126: ln = struct.unpack(">H", need(2))[0]
    elif ln == 127: ln = struct.unpack(">Q", need(8))[0]
    mask = need(4) if h[1] & 128 else b"\0\0\0\0"
    p = bytes(b ^ mask[i % 4] for i, b in enumerate(need(ln)))
    print("FRAME", op, fin, ln, flush=True)
    if op == 8:
        conn.sendall(b"\x88\x02" + p[:2])
        break
]]

  -- Write `writes` (a list of sizes) through NextWriter with dialer, then close; the
  -- frames a raw peer saw -> list of {op, fin, len}.
  local function frames_for(dialer, writes)
    local child = support.spawn(support.python(raw_server))
    finally(function() support.stop(child) end)
    local port = support.wait_for(function()
      return tonumber(support.output(child):match("PORT (%d+)"))
    end, 10)
    assert.is_truthy(port, support.output(child))
    local c = dial(port, dialer)
    local w = assert(c:NextWriter(BINARY))
    for _, n in ipairs(writes) do assert.are.equal(n, w:Write(string.rep("d", n))) end
    assert.is_true((w:Close()))
    assert.is_true((c:WriteMessage(CLOSE, websocket.FormatCloseMessage(1000, ""))))
    c:ReadMessage()
    assert.are.equal(0, support.wait(child, 10), support.output(child))
    local frames = {}
    for op, fin, len in support.output(child):gmatch("FRAME (%d+) (%d+) (%d+)") do
      frames[#frames + 1] = { op = tonumber(op), fin = tonumber(fin), len = tonumber(len) }
    end
    assert.are.equal(CLOSE, table.remove(frames).op)
    return frames
  end

  local function show(frames)
    local t = {}
    for i, f in ipairs(frames) do t[i] = ("{op=%d fin=%d len=%d}"):format(f.op, f.fin, f.len) end
    return table.concat(t, " ")
  end

  local function check_frames(frames, limit, total)
    local sum = 0
    for i, f in ipairs(frames) do
      assert.are.equal(i == 1 and BINARY or 0, f.op, "opcode of frame " .. i)
      assert.are.equal(i == #frames and 1 or 0, f.fin, "FIN of frame " .. i)
      assert.is_true(f.len <= limit, ("frame %d carries %d bytes, WriteBufferSize is %d; frames: %s"):format(
        i, f.len, limit, show(frames)))
      sum = sum + f.len
    end
    assert.are.equal(total, sum)
  end

  it("fragments hold at most WriteBufferSize bytes (Dialer{WriteBufferSize=100}, Write of 250)", function()
    local frames = frames_for(websocket.Dialer { WriteBufferSize = 100 }, { 250, 30 })
    check_frames(frames, 100, 280)
    assert.is_true(#frames >= 3, show(frames))
  end)

  it("fragments hold at most 4096 bytes by default (Write of 10000)", function()
    local frames = frames_for(nil, { 10000 })
    check_frames(frames, 4096, 10000)
    assert.is_true(#frames >= 3, show(frames))
  end)

  it("another coroutine's WriteMessage waits for the open NextWriter: no interleaving", function()
    local srv, st = serve(echo)
    finally(function() srv:Close() end)
    local c = dial(srv:Port(), websocket.Dialer { WriteBufferSize = 4 })
    local log, done = {}, 0
    Go(function()
      local w = assert(c:NextWriter(TEXT))
      log[#log + 1] = "A open"
      for i = 1, 5 do
        assert(w:Write(("A%d-chunk;"):format(i)))
        Sleep(0.03)
      end
      assert(w:Close())
      log[#log + 1] = "A closed"
      done = done + 1
    end)
    Go(function()
      Sleep(0.01) -- A has its writer open by now
      assert(c:WriteMessage(TEXT, "B-whole-message"))
      log[#log + 1] = "B sent"
      done = done + 1
    end)
    assert.is_truthy(support.wait_for(function() return done == 2 end, 5))
    local got = {}
    for i = 1, 2 do
      local _, data, err = c:ReadMessage()
      assert.is_nil(err)
      got[i] = data
    end
    assert.are.same({ "A1-chunk;A2-chunk;A3-chunk;A4-chunk;A5-chunk;", "B-whole-message" }, got)
    assert.are.same({ "A open", "A closed", "B sent" }, log)
    no_errors(st)
  end)

  it("two other coroutines waiting on an open NextWriter both get their turn", function()
    local srv, st = serve(echo)
    finally(function() srv:Close() end)
    local c = dial(srv:Port(), websocket.Dialer { WriteBufferSize = 4 })
    local sent = {}
    Go(function()
      local w = assert(c:NextWriter(TEXT))
      w:Write("A-part-1;")
      Sleep(0.1)
      w:Write("A-part-2")
      assert(w:Close())
      sent[#sent + 1] = "A"
    end)
    for _, name in ipairs({ "B", "C" }) do
      Go(function()
        Sleep(0.02)
        assert(c:WriteMessage(TEXT, name .. "-whole"))
        sent[#sent + 1] = name
      end)
    end
    assert.is_truthy(support.wait_for(function() return #sent == 3 end, 5),
      "writers that finished: " .. table.concat(sent, ","))
    local got = {}
    for i = 1, 3 do
      local _, data, err = c:ReadMessage()
      assert.is_nil(err)
      got[data] = true
    end
    assert.are.same({ ["A-part-1;A-part-2"] = true, ["B-whole"] = true, ["C-whole"] = true }, got)
    no_errors(st)
  end)
end)

describe("WriteControl", function()
  it("sends ping, pong and close; a payload over 125 bytes returns an error; a data type raises", function()
    local srv, st = serve(echo)
    finally(function() srv:Close() end)
    local c = dial(srv:Port())
    assert.is_true(c:WriteControl(PING, "ping data"))
    assert.is_true(c:WriteControl(PONG, "unsolicited pong", Now() + 1))
    assert.is_true(c:WriteControl(PING, string.rep("p", 125)))
    local ok, err = c:WriteControl(PING, string.rep("p", 126))
    assert.is_nil(ok)
    assert.is_not_nil(err)
    ok, err = c:WriteControl(PONG, string.rep("p", 200))
    assert.is_nil(ok)
    assert.is_not_nil(err)
    ok, err = c:WriteControl(CLOSE, websocket.FormatCloseMessage(1000, string.rep("r", 124)))
    assert.is_nil(ok)
    assert.is_not_nil(err)
    assert.has_error(function() c:WriteControl(TEXT, "x") end)
    assert.has_error(function() c:WriteControl(BINARY, "x") end)
    -- the connection still works after the refused ones
    assert.is_true((c:WriteMessage(TEXT, "alive")))
    local _, data = c:ReadMessage()
    assert.are.equal("alive", data)
    assert.is_true(c:WriteControl(CLOSE, websocket.FormatCloseMessage(1000, "bye"), Now() + 1))
    local _, _, cerr = c:ReadMessage()
    assert.is_true(websocket.IsCloseError(cerr, 1000), tostring(cerr))
    no_errors(st)
  end)
end)

describe("ping and pong handlers", function()
  it("a ping is answered at once even if the server never reads; the client's pong handler runs inside its ReadMessage", function()
    local go = false
    local srv, st = serve(function(c)
      support.wait_for(function() return go end, 5) -- no ReadMessage here
      c:WriteMessage(TEXT, "bye")
    end)
    finally(function() srv:Close() end)
    local c = dial(srv:Port())
    local pongs, handler_co = {}, nil
    c:SetPongHandler(function(data)
      pongs[#pongs + 1] = data
      handler_co = coroutine.running()
    end)
    assert.is_true(c:WriteControl(PING, "hello"))
    Sleep(0.3) -- the pong is here by now, but nobody reads yet
    assert.are.same({}, pongs)
    local reader_co, res
    Go(function()
      reader_co = coroutine.running()
      res = { c:ReadMessage() }
    end)
    assert.is_truthy(support.wait_for(function() return #pongs > 0 end, 3))
    assert.are.same({ "hello" }, pongs)
    assert.are.equal(reader_co, handler_co)
    assert.is_nil(res) -- still reading
    go = true
    assert.is_truthy(support.wait_for(function() return res end, 5))
    assert.are.same({ TEXT, "bye" }, res)
    no_errors(st)
  end)

  it("SetPingHandler replaces the automatic pong; the handler runs in the server's ReadMessage", function()
    local reading, pings = false, {}
    local srv, st = serve(function(c, _, st)
      c:SetPingHandler(function(data)
        pings[#pings + 1] = { data = data, co = coroutine.running() }
      end)
      support.wait_for(function() return reading end, 5)
      st.reader_co = coroutine.running()
      echo(c, nil, st)
    end)
    finally(function() srv:Close() end)
    local c = dial(srv:Port())
    local pongs = {}
    c:SetPongHandler(function(data) pongs[#pongs + 1] = data end)
    assert.is_true(c:WriteControl(PING, "p1"))
    Sleep(0.3)
    assert.are.same({}, pings) -- the server is not reading yet
    reading = true
    assert.is_true((c:WriteMessage(TEXT, "m1")))
    local _, data, err = c:ReadMessage()
    no_errors(st)
    assert.is_nil(err)
    assert.are.equal("m1", data)
    assert.are.equal(1, #pings)
    assert.are.equal("p1", pings[1].data)
    assert.are.equal(st.reader_co, pings[1].co)
    -- a pong would have come before the echo of m1
    assert.are.same({}, pongs)
    no_errors(st)
  end)

  it("a ping handler that writes a pong itself: the client gets that pong", function()
    local srv, st = serve(function(c, r, st)
      c:SetPingHandler(function(data)
        assert(c:WriteControl(PONG, "re:" .. data, Now() + 1))
      end)
      echo(c, r, st)
    end)
    finally(function() srv:Close() end)
    local c = dial(srv:Port())
    local pongs = {}
    c:SetPongHandler(function(data) pongs[#pongs + 1] = data end)
    assert.is_true(c:WriteControl(PING, "p1"))
    assert.is_true((c:WriteMessage(TEXT, "m1")))
    local _, data, err = c:ReadMessage()
    assert.is_nil(err)
    assert.are.equal("m1", data)
    assert.are.same({ "re:p1" }, pongs)
    no_errors(st)
  end)

  it("an error returned by the pong handler ends the read, for good", function()
    local srv, st = serve(function(c)
      c:ReadMessage()
      c:ReadMessage()
    end)
    finally(function() srv:Close() end)
    local c = dial(srv:Port())
    local herr = { msg = "pong handler says no" }
    c:SetPongHandler(function() return herr end)
    assert.is_true(c:WriteControl(PING, "x"))
    local mt, data, err = c:ReadMessage()
    assert.is_nil(mt)
    assert.is_nil(data)
    assert.are.equal(herr, err)
    assert.are.equal(herr, select(3, c:ReadMessage()))
    no_errors(st)
  end)

  it("PingHandler/PongHandler/CloseHandler return the defaults, or the handler set", function()
    local res = {}
    local srv, st = serve(function(c)
      res.ping, res.pong, res.close = c:PingHandler(), c:PongHandler(), c:CloseHandler()
      local h = function() end
      c:SetPingHandler(h)
      c:SetPongHandler(h)
      c:SetCloseHandler(h)
      res.same = c:PingHandler() == h and c:PongHandler() == h and c:CloseHandler() == h
      c:SetPingHandler(nil)
      c:SetPongHandler(nil)
      c:SetCloseHandler(nil)
      res.reset = c:PingHandler() ~= h and c:PongHandler() ~= h and c:CloseHandler() ~= h
      c:ReadMessage() -- "go"
      -- the default ping handler answers with a pong carrying the data
      res.ping("from default handler")
      c:WriteMessage(TEXT, "after pong")
      c:ReadMessage() -- "close now"
      -- the default close handler sends a close frame with the code
      c:CloseHandler()(websocket.CloseGoingAway, "ignored text")
      c:ReadMessage()
    end)
    finally(function() srv:Close() end)
    local c = dial(srv:Port())
    local pongs = {}
    c:SetPongHandler(function(data) pongs[#pongs + 1] = data end)
    assert.is_true((c:WriteMessage(TEXT, "go")))
    local _, data = c:ReadMessage()
    assert.are.equal("after pong", data)
    assert.are.equal("function", type(res.ping))
    assert.are.equal("function", type(res.pong))
    assert.are.equal("function", type(res.close))
    assert.is_true(res.same)
    assert.is_true(res.reset)
    assert.are.same({ "from default handler" }, pongs)
    assert.is_true((c:WriteMessage(TEXT, "close now")))
    local _, _, err = c:ReadMessage()
    assert.is_true(websocket.IsCloseError(err, websocket.CloseGoingAway), tostring(err))
    assert.are.equal("", err.text)
    -- the client's defaults are functions too
    assert.are.equal("function", type(c:PingHandler()))
    assert.are.equal("function", type(c:CloseHandler()))
    no_errors(st)
  end)
end)

describe("SetCloseHandler", function()
  it("the default handler answers the peer's close with the same code", function()
    local res = {}
    local srv, st = serve(function(c)
      res.err = select(3, c:ReadMessage())
    end)
    finally(function() srv:Close() end)
    local c = dial(srv:Port())
    assert.is_true((c:WriteMessage(CLOSE, websocket.FormatCloseMessage(4002, "bye"))))
    local _, _, err = c:ReadMessage()
    assert.is_true(websocket.IsCloseError(err, 4002), tostring(err))
    assert.is_truthy(support.wait_for(function() return res.err end, 5))
    assert.are.equal(4002, res.err.code)
    assert.are.equal("bye", res.err.text)
    no_errors(st)
  end)

  it("a custom handler gets (code, text) inside ReadMessage and its own close frame reaches the peer", function()
    local res = {}
    local srv, st = serve(function(c)
      c:SetCloseHandler(function(code, text)
        res.code, res.text, res.co = code, text, coroutine.running()
        assert(c:WriteControl(CLOSE, websocket.FormatCloseMessage(4321, "custom"), Now() + 1))
      end)
      res.reader_co = coroutine.running()
      res.err = select(3, c:ReadMessage())
      res.again = select(3, c:ReadMessage())
    end)
    finally(function() srv:Close() end)
    local c = dial(srv:Port())
    assert.is_true((c:WriteMessage(CLOSE, websocket.FormatCloseMessage(4001, "client bye"))))
    local _, _, err = c:ReadMessage()
    assert.is_not_nil(err)
    assert.are.equal(4321, err.code)
    assert.are.equal("custom", err.text)
    assert.is_truthy(support.wait_for(function() return res.err end, 5))
    no_errors(st)
    assert.are.equal(4001, res.code)
    assert.are.equal("client bye", res.text)
    assert.are.equal(res.reader_co, res.co)
    assert.are.equal(4001, res.err.code)
    assert.are.equal(res.err, res.again)
  end)
end)

describe("prepared messages", function()
  it("one PreparedMessage goes to 50 server-side connections and from a client, byte-exact", function()
    local text_data = string.rep("prepared \u{20ac} ", 3000)
    local bin_data = binary(100000, 99)
    local pt = websocket.NewPreparedMessage(TEXT, text_data)
    local pb = websocket.NewPreparedMessage(BINARY, bin_data)
    local srv, st = serve(function(c, r, st)
      echo(c, r, st)
    end)
    finally(function() srv:Close() end)
    local N = 50
    local clients = {}
    for i = 1, N do clients[i] = dial(srv:Port()) end
    assert.is_truthy(support.wait_for(function() return #st.conns == N end, 5))
    for _, sc in ipairs(st.conns) do
      assert.is_true((sc:WritePreparedMessage(pt)))
      assert.is_true((sc:WritePreparedMessage(pb)))
    end
    local ok = 0
    for i = 1, N do
      local mt1, d1, e1 = clients[i]:ReadMessage()
      local mt2, d2, e2 = clients[i]:ReadMessage()
      assert.is_nil(e1)
      assert.is_nil(e2)
      assert.are.equal(TEXT, mt1)
      assert.are.equal(BINARY, mt2)
      assert.is_nil(diff(d1, text_data))
      assert.is_nil(diff(d2, bin_data))
      ok = ok + 1
    end
    assert.are.equal(N, ok)
    -- the same prepared messages from the client side (masked) through the echo
    local c = clients[1]
    assert.is_true((c:WritePreparedMessage(pb)))
    assert.is_true((c:WritePreparedMessage(pt)))
    local mt1, d1 = c:ReadMessage()
    local mt2, d2 = c:ReadMessage()
    assert.are.equal(BINARY, mt1)
    assert.is_nil(diff(d1, bin_data))
    assert.are.equal(TEXT, mt2)
    assert.is_nil(diff(d2, text_data))
    no_errors(st)
  end)
end)

describe("JSON", function()
  it("WriteJSON/ReadJSON round-trip a nested table", function()
    local srv, st = serve(echo)
    finally(function() srv:Close() end)
    local c = dial(srv:Port())
    local v = {
      name = "luaws", version = 3, ratio = 0.25, ok = true, off = false,
      list = { 1, 2, 3, "four" },
      nested = { a = { b = { c = "deep", d = { 10, 20 } } }, empty_text = "" },
      unicode = "\u{e9}\u{20ac}\u{1f600}",
    }
    assert.is_true((c:WriteJSON(v)))
    local got, err = c:ReadJSON()
    assert.is_nil(err)
    assert.are.same(v, got)
    no_errors(st)
  end)

  it("ReadJSON on a message that is not JSON returns nil, err; the connection still works", function()
    local srv, st = serve(echo)
    finally(function() srv:Close() end)
    local c = dial(srv:Port())
    assert.is_true((c:WriteMessage(TEXT, "this is {not json")))
    local v, err = c:ReadJSON()
    assert.is_nil(v)
    assert.is_not_nil(err)
    assert.is_true((c:WriteJSON({ x = 1 })))
    local v2, err2 = c:ReadJSON()
    assert.is_nil(err2)
    assert.are.same({ x = 1 }, v2)
    no_errors(st)
  end)
end)

describe("close handshake", function()
  it("after sending a close frame writes return ErrCloseSent; the reader gets the answer 1000", function()
    local srv, st = serve(echo)
    finally(function() srv:Close() end)
    local c = dial(srv:Port())
    assert.is_true((c:WriteMessage(CLOSE, websocket.FormatCloseMessage(1000, ""))))
    local ok, err = c:WriteMessage(TEXT, "after close")
    assert.is_nil(ok)
    assert.are.equal(websocket.ErrCloseSent, err)
    ok, err = c:WriteMessage(CLOSE, websocket.FormatCloseMessage(1000, ""))
    assert.is_nil(ok)
    assert.are.equal(websocket.ErrCloseSent, err)
    ok, err = c:WriteControl(PING, "x")
    assert.is_nil(ok)
    assert.are.equal(websocket.ErrCloseSent, err)
    local mt, data, rerr = c:ReadMessage()
    assert.is_nil(mt)
    assert.is_nil(data)
    assert.is_true(websocket.IsCloseError(rerr, 1000), tostring(rerr))
    assert.are.equal(1000, rerr.code)
    assert.is_truthy(support.wait_for(function() return st.read_err end, 5))
    assert.are.equal(1000, st.read_err.code)
    no_errors(st)
  end)
end)

describe("permanent errors", function()
  it("after a close error, 100 further reads return the same error object at once", function()
    local srv, st = serve(function(c)
      c:WriteMessage(CLOSE, websocket.FormatCloseMessage(4005, "go away"))
      c:ReadMessage()
    end)
    finally(function() srv:Close() end)
    local c = dial(srv:Port())
    local _, _, err = c:ReadMessage()
    assert.are.equal(4005, err.code)
    local t0 = Now()
    for i = 1, 100 do
      local mt, data, again = c:ReadMessage()
      assert.is_nil(mt)
      assert.is_nil(data)
      assert.are.equal(err, again, "read " .. i)
    end
    assert.is_true(Now() - t0 < 1)
    assert.are.equal(err, select(3, c:NextReader()))
    no_errors(st)
  end)

  it("after the peer drops the connection (1006), 100 further reads return the same error", function()
    local srv, st = serve(function(c)
      c:Close() -- no close frame
    end)
    finally(function() srv:Close() end)
    local c = dial(srv:Port())
    local _, _, err = c:ReadMessage()
    assert.is_not_nil(err)
    assert.are.equal(websocket.CloseAbnormalClosure, err.code)
    local t0 = Now()
    for i = 1, 100 do
      assert.are.equal(err, select(3, c:ReadMessage()), "read " .. i)
    end
    assert.is_true(Now() - t0 < 1)
    no_errors(st)
  end)
end)

local function rss_kib()
  local f = io.open("/proc/self/status")
  local s = f:read("a")
  f:close()
  return tonumber(s:match("VmRSS:%s*(%d+)"))
end

describe("streaming a 100 MiB message", function()
  it("NextReader reads it in chunks while memory stays bounded (no whole-message buffer)", function()
    local MiB = 1024 * 1024
    local block = string.rep("0123456789abcdef", MiB // 16)
    local window = block:sub(1, 65536 + 16) -- any chunk is a slice of this
    local srv, st = serve(function(c)
      local w = assert(c:NextWriter(BINARY))
      for _ = 1, 100 do assert(w:Write(block)) end
      assert(w:Close())
      c:ReadMessage() -- until the client closes
    end, { WriteBufferSize = MiB })
    finally(function() srv:Close() end)
    local c = dial(srv:Port())
    c:SetReadLimit(0) -- over the default limit (32 MiB): the reader takes it in pieces
    collectgarbage()
    local base, peak = rss_kib(), 0
    local mt, r, err = c:NextReader()
    assert.is_nil(err)
    assert.are.equal(BINARY, mt)
    local total, bad, n = 0, 0, 0
    while true do
      local data, rerr = r:Read(65536)
      if not data then
        assert.are.equal(websocket.EOF, rerr)
        break
      end
      -- every chunk is a run of the 16-byte pattern, starting where the last one ended
      local off = total % 16
      if #data > 65536 or data ~= window:sub(off + 1, off + #data) then bad = bad + 1 end
      total = total + #data
      n = n + 1
      if n % 160 == 0 then
        collectgarbage()
        peak = math.max(peak, rss_kib() - base)
      end
    end
    assert.are.equal(100 * MiB, total)
    assert.are.equal(0, bad)
    -- the message is 100 MiB; what the process holds while reading it stays far below
    -- (the writer is in this process too: its 1 MiB fragments and Lua garbage count).
    -- Under ASan freed memory sits in its quarantine, so RSS says nothing there.
    if not (os.getenv("LD_PRELOAD") or ""):find("asan", 1, true) then
      assert.is_true(peak < 40 * 1024, ("RSS grew by %d KiB while streaming"):format(peak))
    end
    assert.are.same({}, st.errors)
  end)
end)

describe("a peer that never answers our close frame", function()
  it("is dropped after the close timeout (5 s): the reader gets a 1006 CloseError", function()
    local got = {}
    local srv, st = serve(function(c)
      assert(c:WriteMessage(CLOSE, websocket.FormatCloseMessage(1000, "bye")))
      got.t0 = Now()
      local _, _, err = c:ReadMessage()
      got.err, got.t1 = err, Now()
    end)
    finally(function() srv:Close() end)
    local c = dial(srv:Port()) -- and never reads, so it never answers
    assert.is_truthy(support.wait_for(function() return got.err end, 12))
    local waited = got.t1 - got.t0
    assert.is_true(waited > 3 and waited < 9, "dropped after " .. waited .. " s")
    assert.are.equal(1006, got.err.code)
    assert.are.same({}, st.errors)
    c:Close()
  end)
end)
