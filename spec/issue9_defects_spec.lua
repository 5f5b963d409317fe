-- Regressions for the defects of issue 9 that a code review found (numbers as in the
-- issue). Scenarios that corrupt memory run in a child lua5.4 on the build under test:
-- under `make test SANITIZE=1` it keeps the sanitizer runtime, so ASan or UBSan ends it
-- with a report, and the plain build crashes too.
local support = require "support"
local websocket = require "luaws"
local core = require "luaws.core"

lazy_setup(function() support.keepalive(true) end)
lazy_teardown(function() support.keepalive(false) end)

local run_lua = support.run_lua

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

-- Issue 9 #6: seconds from Lua reach C as doubles; math.huge, -math.huge and NaN used to
-- be converted to integers unchecked (undefined behaviour: UBSan's float-cast-overflow,
-- which the SANITIZE=1 build enables, halts the run). Now: math.huge is never,
-- -math.huge has passed, NaN raises.
describe("issue 9: math.huge, -math.huge and NaN as seconds", function()
  local huge, nan = math.huge, 0 / 0

  it("Sleep: math.huge never returns, -math.huge returns at once, NaN raises", function()
    local woke = false
    websocket.Go(function()
      websocket.Sleep(huge)
      woke = true
    end)
    websocket.Sleep(0.3)
    assert.is_false(woke)
    local t0 = websocket.Now()
    websocket.Sleep(-huge)
    assert.is_true(websocket.Now() - t0 < 0.2)
    assert.has_error(function() websocket.Sleep(nan) end,
      "bad argument #1 to 'Sleep' (number of seconds expected, got NaN)")
  end)

  it("After: math.huge never delivers, -math.huge delivers at once, NaN raises", function()
    local never, soon = websocket.After(huge), websocket.After(0.3)
    assert.are.equal(soon, (websocket.Select(never, soon)))
    local passed = websocket.After(-huge)
    local t0 = websocket.Now()
    assert.are.equal(passed, (websocket.Select(passed, websocket.After(5))))
    assert.is_true(websocket.Now() - t0 < 1)
    assert.has_error(function() websocket.After(nan) end,
      "bad argument #1 to 'After' (number of seconds expected, got NaN)")
  end)

  it("NewTicker: math.huge never ticks, NaN and -math.huge raise, a tiny period repeats", function()
    local never = websocket.NewTicker(huge)
    finally(function() never:Stop() end)
    local soon = websocket.After(0.3)
    assert.are.equal(soon, (websocket.Select(never.C, soon)))
    assert.has_error(function() websocket.NewTicker(nan) end,
      "bad argument #1 to 'NewTicker' (positive number expected)")
    assert.has_error(function() websocket.NewTicker(-huge) end,
      "bad argument #1 to 'NewTicker' (positive number expected)")
    -- 0.1 ms rounds up to 1 ms (it used to round to 0: a timer that does not repeat)
    local fast = websocket.NewTicker(0.0001)
    finally(function() fast:Stop() end)
    for _ = 1, 3 do
      assert.are.equal(fast.C, (websocket.Select(fast.C, websocket.After(2))))
    end
  end)

  it("timer:_start refuses NaN for either time", function()
    local t = core.timer()
    assert.has_error(function() t:_start(nan) end)
    assert.has_error(function() t:_start(1, nan) end)
  end)

  it("Step: math.huge waits for the next event (no timer), NaN raises", function()
    local status, out = run_lua([[
local websocket = require "luaws"
local done = false
websocket.Go(function() websocket.Sleep(0.3) done = true end)
local t0, steps = websocket.Now(), 0
while not done do
  websocket.Step(math.huge)
  steps = steps + 1
end
print(("steps %d waited %.2f"):format(steps, websocket.Now() - t0))
print("nan", pcall(websocket.Step, 0 / 0))
]])
    assert.are.equal(0, status, out)
    local steps, waited = out:match("steps (%d+) waited ([%d.]+)")
    assert.is_truthy(steps, out)
    assert.is_true(tonumber(steps) <= 3, out)
    assert.is_true(tonumber(waited) >= 0.25, out)
    assert.matches("nan\tfalse\t[^\n]*NaN", out)
  end)

  it("Dialer.HandshakeTimeout: math.huge and -math.huge mean none, NaN raises", function()
    local srv, port = support.echo_server()
    finally(function() srv:Close() end)
    for _, timeout in ipairs({ huge, -huge }) do
      local c, _, err = websocket.Dialer{ HandshakeTimeout = timeout }:Dial(support.url(port))
      assert.is_truthy(c, tostring(err))
      assert.is_true(c:WriteMessage(websocket.TextMessage, "hi"))
      local _, data = c:ReadMessage()
      assert.are.equal("hi", data)
      c:Close()
    end
    assert.has_error(function() websocket.Dialer{ HandshakeTimeout = nan } end,
      "Dialer: HandshakeTimeout must be a number of seconds (got NaN)")
    local d = websocket.Dialer{}
    assert.has_error(function() d.HandshakeTimeout = nan end, -- checked when set
      "Dialer: HandshakeTimeout must be a number of seconds (got NaN)")
    assert.has_error(function()
      core.dial("127.0.0.1", port, "/", "127.0.0.1", nil, nil, {}, nan)
    end)
  end)

  it("Listen option HandshakeTimeout: math.huge and 2^40 s mean none, NaN raises", function()
    local upgrader = websocket.Upgrader()
    local function echo(w, r)
      local c = assert(upgrader:Upgrade(w, r))
      local mt, data = c:ReadMessage()
      if data then c:WriteMessage(mt, data) end
      c:Close()
    end
    for _, timeout in ipairs({ huge, 2.0 ^ 40, -huge }) do
      local srv = assert(websocket.Listen("127.0.0.1:0", echo, { HandshakeTimeout = timeout }))
      finally(function() srv:Close() end)
      local c = assert(websocket.DefaultDialer:Dial(support.url(srv:Port())))
      assert.is_true(c:WriteMessage(websocket.TextMessage, "hi"))
      local _, data = c:ReadMessage()
      assert.are.equal("hi", data)
      c:Close()
    end
    assert.has_error(function()
      websocket.Listen("127.0.0.1:0", echo, { HandshakeTimeout = nan })
    end, "Listen: HandshakeTimeout must be a number of seconds (got NaN)")
    assert.has_error(function() core.listen("127.0.0.1", 0, echo, nan) end)
  end)
end)

-- SetReadDeadline / SetWriteDeadline convert in conn.c and conn.lua, which the lead is
-- rewriting for issue 9: these cases (tagged #lead) wait for that change.
describe("issue 9: math.huge, -math.huge and NaN as connection deadlines #lead", function()
  local huge, nan = math.huge, 0 / 0

  -- A connection to an echo server that answers each message after `delay` seconds.
  local function slow_echo(delay)
    local upgrader = websocket.Upgrader()
    local srv = assert(websocket.Listen("127.0.0.1:0", function(w, r)
      local c = assert(upgrader:Upgrade(w, r))
      while true do
        local mt, data = c:ReadMessage()
        if not data then break end
        websocket.Sleep(delay)
        if not c:WriteMessage(mt, data) then break end
      end
      c:Close()
    end))
    local c = assert(websocket.DefaultDialer:Dial(support.url(srv:Port())))
    return c, srv
  end

  it("SetReadDeadline(math.huge) never times out", function()
    local c, srv = slow_echo(0.3)
    finally(function() c:Close() srv:Close() end)
    assert.is_true(c:SetReadDeadline(huge))
    assert.is_true(c:WriteMessage(websocket.TextMessage, "late"))
    local _, data, err = c:ReadMessage()
    assert.are.equal("late", data, tostring(err))
  end)

  it("SetReadDeadline(-math.huge) has passed: the read returns a timeout error", function()
    local c, srv = slow_echo(0.3)
    finally(function() c:Close() srv:Close() end)
    c:SetReadDeadline(-huge)
    local _, data, err = c:ReadMessage()
    assert.is_nil(data)
    assert.is_true(err and err.timeout == true, tostring(err))
  end)

  it("SetReadDeadline(NaN) raises", function()
    local c, srv = slow_echo(0)
    finally(function() c:Close() srv:Close() end)
    assert.has_error(function() c:SetReadDeadline(nan) end)
  end)

  it("SetWriteDeadline(math.huge) never times out", function()
    local c, srv = slow_echo(0)
    finally(function() c:Close() srv:Close() end)
    assert.is_true(c:SetWriteDeadline(huge))
    websocket.Sleep(0.1)
    assert.is_true(c:WriteMessage(websocket.TextMessage, "hi"))
    local _, data = c:ReadMessage()
    assert.are.equal("hi", data)
  end)

  it("SetWriteDeadline(-math.huge) has passed: the write returns a timeout error", function()
    local c, srv = slow_echo(0)
    finally(function() c:Close() srv:Close() end)
    c:SetWriteDeadline(-huge)
    local ok, err = c:WriteMessage(websocket.TextMessage, "hi")
    assert.is_falsy(ok)
    assert.is_true(err and err.timeout == true, tostring(err))
  end)

  it("SetWriteDeadline(NaN) raises", function()
    local c, srv = slow_echo(0)
    finally(function() c:Close() srv:Close() end)
    assert.has_error(function() c:SetWriteDeadline(nan) end)
  end)
end)

-- Issue 9 #8: loading luaws used to set the process's soft limit on open files to 16384
-- (raising a lower one, lowering a higher one) and lws's log level, once per Lua state.
describe("issue 9: the open-files limit is the program's", function()
  -- Child code: prints "<stage> <soft> <hard>" from /proc/self/limits.
  local limits = [[
local function limits(stage)
  for line in io.lines("/proc/self/limits") do
    local soft, hard = line:match("^Max open files%s+(%S+)%s+(%S+)")
    if soft then print(stage, soft, hard) end
  end
end
]]
  local function stages(out)
    local t = {}
    for stage, soft, hard in out:gmatch("(%S+)\t(%S+)\t(%S+)\n") do
      t[stage] = { soft = tonumber(soft), hard = tonumber(hard) }
    end
    return t
  end
  -- require, Listen and one connection (the lws context exists then)
  local serve = limits .. [[
limits("before")
local websocket = require "luaws"
limits("required")
local srv = assert(websocket.Listen("127.0.0.1:0", function(w, r)
  local c = assert(websocket.Upgrader():Upgrade(w, r))
  c:ReadMessage()
  c:Close()
end))
local c = assert(websocket.DefaultDialer:Dial("ws://127.0.0.1:" .. srv:Port() .. "/"))
c:Close()
limits("listening")
]]

  it("a soft limit below 16384 stays as it is", function()
    local status, out = run_lua(serve, 20, "ulimit -Sn 256")
    assert.are.equal(0, status, out)
    local s = stages(out)
    assert.are.equal(256, s.before.soft, out)
    assert.are.equal(256, s.required.soft, out)
    assert.are.equal(256, s.listening.soft, out)
  end)

  it("a soft limit above 16384 (the hard limit here) is never lowered", function()
    local status, out = run_lua(serve, 20, "ulimit -Sn $(ulimit -Hn)")
    assert.are.equal(0, status, out)
    local s = stages(out)
    assert.is_true(s.before.soft > 16384, "this machine's hard limit is too low for the test:\n" .. out)
    assert.are.equal(s.before.soft, s.required.soft, out)
    assert.are.equal(s.before.soft, s.listening.soft, out)
  end)

  it("websocket.SetMaxOpenFiles(n) raises the soft limit (within the hard one), never lowers it", function()
    local status, out = run_lua(limits .. [[
local websocket = require "luaws"
print("raise", websocket.SetMaxOpenFiles(3000))
limits("raised")
print("lower", websocket.SetMaxOpenFiles(100))
limits("kept")
print("beyond", websocket.SetMaxOpenFiles(10000000))
limits("hard")
print("bad", pcall(websocket.SetMaxOpenFiles, 10))
local srv = assert(websocket.Listen("127.0.0.1:0", function() end))
print("late", pcall(websocket.SetMaxOpenFiles, 5000))
]], 20, "ulimit -Sn 256")
    assert.are.equal(0, status, out)
    local s = stages(out)
    assert.matches("raise\t3000\t3000\n", out, 1, true)
    assert.are.equal(3000, s.raised.soft, out)
    assert.matches("lower\t3000\t100\n", out, 1, true)
    assert.are.equal(3000, s.kept.soft, out)
    assert.are.equal(s.hard.hard, s.hard.soft, out)
    assert.matches("bad\tfalse\t[^\n]*SetMaxOpenFiles", out)
    assert.matches("late\tfalse\t[^\n]*before the first Listen or Dial", out)
  end)

  it("a descriptor beyond libwebsockets' table is refused cleanly, and accepting resumes", function()
    -- a table of 64 slots, a soft limit of 1024: the server's sockets come after 80 open
    -- files, so they are beyond the table until the files are closed
    local status, out = run_lua([[
local websocket = require "luaws"
local srv = assert(websocket.Listen("127.0.0.1:0", function(w, r)
  local c = assert(websocket.Upgrader():Upgrade(w, r))
  local mt, data = c:ReadMessage()
  if data then c:WriteMessage(mt, data) end
  c:Close()
end))
local port = srv:Port()
local files = {}
for i = 1, 80 do files[i] = assert(io.open("/dev/null")) end
-- a client outside this loop: connects, and finds the connection closed
local p = io.popen("python3 -c 'import socket,sys; s=socket.create_connection((\"127.0.0.1\"," ..
  port .. ")); s.settimeout(5); print(\"peer got\", repr(s.recv(10)))' 2>&1 &")
websocket.Sleep(1)
for i = 1, 80 do files[i]:close() end
files = nil
collectgarbage()
websocket.Sleep(0.3)
local c, _, err = websocket.DefaultDialer:Dial("ws://127.0.0.1:" .. port .. "/")
assert(c, tostring(err))
c:WriteMessage(websocket.TextMessage, "after")
local _, data = c:ReadMessage()
print("echo", data)
c:Close()
print(p:read("a"))
p:close()
]], 20, "ulimit -Sn 1024; export LUAWS_MAX_FDS=64")
    assert.are.equal(0, status, out)
    assert.matches("beyond libwebsockets' table of 64", out, 1, true)
    assert.matches("peer got b''", out, 1, true)
    assert.matches("echo\tafter", out, 1, true)
    assert.is_nil(out:find("too high", 1, true), out)
    local _, n = out:gsub("beyond libwebsockets' table", "")
    assert.are.equal(1, n, out)
  end)

  it("websocket.SetLibwebsocketsLogLevel is kept; luaws's default keeps lws quiet", function()
    local status, out = run_lua([[
local websocket = require "luaws"
websocket.SetLibwebsocketsLogLevel(1 | 2 | 4)
local srv = assert(websocket.Listen("127.0.0.1:0", function() end))
srv:Close()
print("bad", pcall(websocket.SetLibwebsocketsLogLevel, "all"))
]])
    assert.are.equal(0, status, out)
    assert.matches("N: LWS: ", out, 1, true) -- lws's notices at context creation
    assert.matches("bad\tfalse\t[^\n]*SetLibwebsocketsLogLevel", out)
    status, out = run_lua([[
local websocket = require "luaws"
local srv = assert(websocket.Listen("127.0.0.1:0", function() end))
srv:Close()
print("quiet")
]])
    assert.are.equal(0, status, out)
    assert.are.equal("quiet\n", out)
  end)
end)
