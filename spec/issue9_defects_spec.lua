-- Regressions for the defects of issue 9 that a code review found (numbers as in the
-- issue). Scenarios that corrupt memory run in a child lua5.4 on the build under test:
-- under `make test SANITIZE=1` it keeps the sanitizer runtime, so ASan or UBSan ends it
-- with a report, and the plain build crashes too.
local support = require "support"
local websocket = require "luaws"
local core = require "luaws.core"

lazy_setup(function() support.keepalive(true) end)
lazy_teardown(function() support.keepalive(false) end)

local build = os.getenv("LUAWS_BUILD") or "build"

-- Run Lua source in a child lua5.4 that loads luaws from this build; the child's shell
-- runs `prefix` first (e.g. a ulimit). -> exit status, output (stdout and stderr).
local function run_lua(src, timeout, prefix)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(([[
package.path = "lua/?.lua;lua/?/init.lua;spec/?.lua;" .. package.path
package.cpath = %q .. package.cpath
]]):format(build .. "/?.so;"), src)
  f:close()
  local cmd = "lua5.4 " .. support.shell_quote(path)
  if prefix then cmd = "bash -c " .. support.shell_quote(prefix .. "; exec " .. cmd) end
  local ok, status, out = pcall(support.run_child, cmd, timeout or 20)
  os.remove(path)
  if not ok then error(status, 0) end
  return status, out
end

describe("issue 9: the wake-up array has room for objects woken outside a step", function()
  it("64 conns woken by a passed read deadline, then 64 armed timers firing in one step", function()
    local status, out = run_lua([[
local core = require "luaws.core"
local conns, timers = {}, {}
-- dialing conns wait (armed) on a lookup that has not run yet: nothing steps before the
-- timers fire
for i = 1, 64 do
  conns[i] = core.dial("127.0.0.1", 9, "/", "127.0.0.1:9", nil, nil, {}, 0)
  conns[i]:_arm()
end
-- a passed deadline wakes each one now, outside a step
for i = 1, 64 do conns[i]:_deadline("read", -1) end
for i = 1, 64 do
  timers[i] = core.timer()
  timers[i]:_arm()
  timers[i]:_start(0)
end
local ready = {}
print("woken", core.step(0, ready))
conns, timers, ready = nil, nil, nil
collectgarbage()
print("done")
]])
    assert.are.equal(0, status, out)
    assert.matches("woken\t128\n", out, 1, true)
    assert.matches("done", out, 1, true)
    assert.is_nil(out:find("AddressSanitizer", 1, true), out)
  end)
end)

-- luaws.Request userdata the registry still holds (C's reference until the handler has
-- the request).
local function requests_in_registry()
  local reg = debug.getregistry()
  local mt, n = reg["luaws.Request"], 0
  for _, v in pairs(reg) do
    if type(v) == "userdata" and getmetatable(v) == mt then n = n + 1 end
  end
  return n
end

-- A raw client: N connections, each sending a request head and `extra` more bytes in one
-- send, after `go` exists (so that nothing reads them before all have arrived); then
-- waits until the server has closed each, and prints "closed <count>".
local flood_client = support.python([[
import os, socket, sys, time
port, n, extra, go = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
while not os.path.exists(go):
    time.sleep(0.01)
head = (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
socks = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(head + b"x" * extra)
    socks.append(s)
open(go + ".sent", "w").close()
closed, deadline = 0, time.time() + 20
for s in socks:
    s.settimeout(max(0.1, deadline - time.time()))
    try:
        while s.recv(65536):
            pass
        closed += 1
    except ConnectionResetError:
        closed += 1
    except socket.timeout:
        pass
    s.close()
print("closed", closed)
]])

describe("issue 9: a request refused for its early bytes is released", function()
  it("300 heads with more than 64 KiB after them, in one read, leave no Request behind", function()
    local srv = assert(websocket.Listen("127.0.0.1:0", function(w)
      websocket.Sleep(0.2) -- undecided for a while
      websocket.Error(w, "no", 403)
    end))
    finally(function() srv:Close() end)
    local before = requests_in_registry()
    local go = os.tmpname()
    os.remove(go)
    finally(function() os.remove(go) os.remove(go .. ".sent") end)
    local child = support.spawn(flood_client .. " " .. srv:Port() .. " 300 " ..
      (64 * 1024 + 1000) .. " " .. support.shell_quote(go))
    finally(function() support.stop(child) end)
    -- the loop does not run while the client connects and sends: each socket's head and
    -- extra bytes are all there when luaws first reads it
    io.open(go, "w"):close()
    local t0 = os.time()
    while not support.read_file(go .. ".sent") and not support.status(child) and os.time() - t0 < 20 do
      os.execute("sleep 0.05")
    end
    assert.is_truthy(support.read_file(go .. ".sent"), support.output(child))
    assert.is_truthy(support.wait(child, 30), "the client did not finish")
    assert.matches("closed 300", support.output(child), 1, true)
    collectgarbage()
    collectgarbage()
    assert.are.equal(before, requests_in_registry())
  end)
end)

describe("issue 9: a socket whose Request could not be created is closed cleanly", function()
  it("connecting while the next Request fails (injected out-of-memory) leaves the server healthy", function()
    local status, out = run_lua([[
local websocket = require "luaws"
local core = require "luaws.core"
local upgrader = websocket.Upgrader()
local srv = assert(websocket.Listen("127.0.0.1:0", function(w, r)
  local c = assert(upgrader:Upgrade(w, r))
  local mt, data = c:ReadMessage()
  if data then c:WriteMessage(mt, data) end
  c:Close()
end))
local url = "ws://127.0.0.1:" .. srv:Port() .. "/"
local d = websocket.Dialer{ HandshakeTimeout = 5 }
core._inject_fault("request")
local c, _, err = d:Dial(url)
print("refused", c == nil, tostring(err))
collectgarbage()
for i = 1, 3 do
  c = assert(d:Dial(url))
  assert(c:WriteMessage(websocket.TextMessage, "hello " .. i))
  local _, data = c:ReadMessage()
  print("echo", data)
  c:Close()
end
srv:Close()
print("done")
]])
    assert.are.equal(0, status, out)
    assert.matches("refused\ttrue", out, 1, true)
    assert.matches("injected fault", out, 1, true)
    assert.matches("echo\thello 3\ndone", out, 1, true)
    assert.is_nil(out:find("Sanitizer", 1, true), out)
  end)
end)
