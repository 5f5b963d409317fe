-- Regression specs for issue 9, defect 7: "__gc writes to sockets and calls into lws; a
-- collection can run inside any callback. __gc may only release; anything that must be
-- sent goes through the loop."
--
-- A raw client (python3, stdlib) notes each thing it receives with the phase it came in:
-- before the collection, during it (the spec collects and then keeps the CPU for 0.3 s
-- without letting the loop step), or after it. A collected Conn or Request may send
-- nothing during the collection; what it leaves to send goes out once the loop steps.
local support = require "support"
local websocket = support.websocket

local client_py = [=[
import os, socket, sys, time
port, base, mode, hold = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4] == "hold"

def phase():
    if os.path.exists(base + ".end"):
        return "after"
    if os.path.exists(base + ".start"):
        return "during"
    return "before"

s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect(("127.0.0.1", port))
if mode == "ws":
    req = ("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
else:
    req = "GET /park HTTP/1.1\r\nHost: x\r\n\r\n"
s.sendall(req.encode())
print("sent", flush=True)
if hold:  # read nothing until the collection is over: what luaws sends stays queued
    while phase() != "after":
        time.sleep(0.01)
s.settimeout(0.01)
data = b""
deadline = time.time() + 10
while time.time() < deadline:
    try:
        b = s.recv(65536)
    except socket.timeout:
        continue
    ph = phase()
    if not b:
        print("eof", ph, flush=True)
        break
    data += b
    print("bytes", len(b), ph, flush=True)
with open(base + ".data", "wb") as f:
    f.write(data)
print("done", flush=True)
]=]

-- events: {"bytes", n, phase} and {"eof", phase}, from the client's output
local function events(out)
  local list = {}
  for line in out:gmatch("[^\n]+") do
    local n, ph = line:match("^bytes (%d+) (%a+)$")
    if n then list[#list + 1] = { "bytes", tonumber(n), ph } end
    ph = line:match("^eof (%a+)$")
    if ph then list[#list + 1] = { "eof", ph } end
  end
  return list
end

local function during(list)
  local out = {}
  for _, e in ipairs(list) do
    if e[#e] == "during" then out[#out + 1] = e end
  end
  return out
end

local function touch(path)
  local f = assert(io.open(path, "w"))
  f:close()
end

-- Collect twice (the second frees what the first finalized) and keep the CPU for
-- 0.3 s more, all without a step of the loop; the markers tell the client when.
local function collect_without_loop(base)
  touch(base .. ".start")
  collectgarbage()
  collectgarbage()
  local t = os.clock() + 0.3
  while os.clock() < t do end
  touch(base .. ".end")
end

local function cleanup(base)
  for _, ext in ipairs({ ".start", ".end", ".data" }) do os.remove(base .. ext) end
end

-- The client's whole output once it has seen EOF (or given up).
local function finish(child)
  assert.is_truthy(support.wait(child, 15), "the client did not finish")
  return support.output(child)
end

-- The frames after the 101 response head: a list of {first byte, payload}, and the
-- bytes left over after the last whole frame.
local function frames_after_101(data)
  local head_end = data:find("\r\n\r\n", 1, true)
  assert.is_truthy(head_end, "no response head")
  assert.are.equal("HTTP/1.1 101", data:sub(1, 12))
  local frames, at = {}, head_end + 4
  while at + 1 <= #data do
    local b0, b1 = data:byte(at, at + 1)
    local len, p = b1 & 0x7f, at + 2
    if len == 126 then len, p = string.unpack(">I2", data, p) elseif len == 127 then
      len, p = string.unpack(">I8", data, p)
    end
    if p + len - 1 > #data then break end
    frames[#frames + 1] = { b0, data:sub(p, p + len - 1) }
    at = p + len
  end
  return frames, #data - at + 1
end

describe("issue 9 #7: __gc only releases; what must be sent goes through the loop", function()
  lazy_setup(function() support.keepalive(true) end)
  lazy_teardown(function() support.keepalive(false) end)

  it("a collected Conn: nothing reaches the peer during the collection, EOF after the loop steps", function()
    local base = os.tmpname()
    finally(function() cleanup(base) end)
    local collected = setmetatable({}, { __mode = "k" })
    local upgrader = websocket.Upgrader()
    local handled = false
    local srv = assert(websocket.Listen("127.0.0.1:0", function(w, r)
      local c = assert(upgrader:Upgrade(w, r))
      collected[c] = true
      assert(c:WriteMessage(websocket.TextMessage, "from a handler that lets go"))
      handled = true -- and every reference to c goes with this coroutine
    end))
    finally(function() srv:Close() end)
    local child = support.spawn(support.python(client_py) .. " " .. srv:Port() .. " " ..
      support.shell_quote(base) .. " ws go")
    finally(function() support.stop(child) end)

    assert.is_truthy(support.wait_for(function()
      return handled and support.output(child):find("bytes")
    end, 10), "the handler did not run, or the client got nothing")
    websocket.Sleep(0.1) -- all the message has arrived
    collect_without_loop(base)
    assert.is_nil(next(collected), "the Conn was not collected")
    websocket.Sleep(0.3)

    local list = events(finish(child))
    assert.are.same({}, during(list))
    assert.are.same({ "eof", "after" }, list[#list])
    local frames, extra = frames_after_101(support.read_file(base .. ".data"))
    assert.are.same({ { 0x81, "from a handler that lets go" } }, frames)
    assert.are.equal(0, extra)
  end)

  it("a collected Conn with messages still queued: the loop sends all of them, then EOF", function()
    local base = os.tmpname()
    finally(function() cleanup(base) end)
    local collected = setmetatable({}, { __mode = "k" })
    local upgrader = websocket.Upgrader()
    local SIZE = 256 * 1024
    local written
    -- The handler writes with the raw primitive until it answers false: luaws's own
    -- send queue then holds more than its 1 MiB limit (the kernel's buffers are full,
    -- the client reads nothing); and it lets go of c without waiting for a drain.
    local srv = assert(websocket.Listen("127.0.0.1:0", function(w, r)
      local c = assert(upgrader:Upgrade(w, r))
      collected[c] = true
      local n, ok = 0, true
      while ok and n < 200 do
        n = n + 1
        ok = c:_write(websocket.BinaryMessage, support.binary(SIZE, n))
        assert(ok ~= nil)
      end
      assert(ok == false, "the send queue never filled")
      written = n
    end))
    finally(function() srv:Close() end)
    -- the client reads nothing until the collection is over (a 4 KiB receive buffer)
    local child = support.spawn(support.python(client_py) .. " " .. srv:Port() .. " " ..
      support.shell_quote(base) .. " ws hold")
    finally(function() support.stop(child) end)

    assert.is_truthy(support.wait_for(function() return written end, 10))
    websocket.Sleep(0.2)
    collect_without_loop(base)
    assert.is_nil(next(collected), "the Conn was not collected")
    assert.is_truthy(support.wait_for(function()
      return support.output(child):find("done")
    end, 20), "the client did not finish")

    local list = events(finish(child))
    assert.are.same({ "eof", "after" }, list[#list])
    local frames, extra = frames_after_101(support.read_file(base .. ".data"))
    assert.are.equal(written, #frames, ("%d messages written, %d whole ones received, then %d bytes")
      :format(written, #frames, extra))
    for i, f in ipairs(frames) do
      assert.are.equal(0x82, f[1])
      assert.is_nil(support.diff(f[2], support.binary(SIZE, i)), "message " .. i)
    end
    assert.are.equal(0, extra)
  end)

  it("a collected unanswered Request: its 500 goes out after the loop steps, not during the collection", function()
    local base = os.tmpname()
    finally(function() cleanup(base) end)
    local collected = setmetatable({}, { __mode = "k" })
    local parked = false
    -- The handler lets go of w and r and parks on a channel nobody else knows: the
    -- scheduler keeps no parked coroutine alive, so coroutine, w and Request are
    -- garbage together.
    local srv = assert(websocket.Listen("127.0.0.1:0", function(w, r)
      collected[w.req] = true
      w, r = nil, nil
      parked = true
      websocket.Chan():Recv()
      error("unreachable")
    end))
    finally(function() srv:Close() end)
    local child = support.spawn(support.python(client_py) .. " " .. srv:Port() .. " " ..
      support.shell_quote(base) .. " http go")
    finally(function() support.stop(child) end)

    assert.is_truthy(support.wait_for(function() return parked end, 10))
    websocket.Sleep(0.1)
    assert.is_truthy(next(collected))
    collect_without_loop(base)
    assert.is_nil(next(collected), "the Request was not collected")
    websocket.Sleep(0.3)

    local list = events(finish(child))
    assert.are.same({}, during(list))
    assert.are.same({ "eof", "after" }, list[#list])
    local data = support.read_file(base .. ".data")
    assert.are.equal("HTTP/1.1 500", data:sub(1, 12))
    assert.is_truthy(data:find("500 Internal Server Error", 1, true))
  end)
end)
