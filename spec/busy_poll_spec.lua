-- websocket.SetBusyPoll (src/loop.c, spin): before a step sleeps, the loop polls for up
-- to the window, but only while such polls usually find work. Each case runs in a child
-- lua5.4 (its own loop) on the build under test.
local support = require "support"

lazy_setup(function() support.keepalive(true) end)
lazy_teardown(function() support.keepalive(false) end)

local function run(src, timeout)
  local status, out = support.run_child(support.lua('local websocket = require "luaws"\n' .. src),
    timeout or 60)
  return status, out
end

describe("websocket.SetBusyPoll", function()
  it("returns the previous window, 50 microseconds at first; misuse raises", function()
    local status, out = run([[
print("first", websocket.SetBusyPoll(0))
print("then", websocket.SetBusyPoll(0.001))
print("now", websocket.SetBusyPoll(0.001))
for _, bad in ipairs({ -1, 0.02, 0/0, "0", math.huge }) do
  local ok, err = pcall(websocket.SetBusyPoll, bad)
  print("bad", ok, err)
end
]])
    assert.are.equal(0, status, out)
    assert.matches("first\t5e%-05\n", out)
    assert.matches("then\t0.0\n", out, 1, true)
    assert.matches("now\t0.001\n", out, 1, true)
    local n = 0
    for line in out:gmatch("bad\tfalse\t([^\n]*)") do
      n = n + 1
      assert.matches("bad argument #1 to 'SetBusyPoll' %(number of seconds from 0 to 0.01 expected", line)
    end
    assert.are.equal(5, n, out)
  end)

  it("with a 10 ms window, echoes, timers and a deadline behave as without", function()
    local status, out = run([[
websocket.SetBusyPoll(0.01)
local srv = assert(websocket.Listen("127.0.0.1:0", function(w, r)
  local c = assert(websocket.Upgrader():Upgrade(w, r))
  while true do
    local mt, data = c:ReadMessage()
    if not mt then break end
    c:WriteMessage(mt, data)
  end
  c:Close()
end))
local c = assert(websocket.DefaultDialer:Dial("ws://127.0.0.1:" .. srv:Port() .. "/"))
local ok = 0
for i = 1, 300 do
  c:WriteMessage(websocket.TextMessage, "m" .. i)
  local _, data = c:ReadMessage()
  if data == "m" .. i then ok = ok + 1 end
end
print("echoed", ok)
local t0 = websocket.Now()
websocket.Sleep(0.05)
local slept = websocket.Now() - t0
print("slept", slept >= 0.05 and slept < 1)
c:SetReadDeadline(websocket.Now() + 0.05)
local _, _, err = c:ReadMessage()
print("deadline", err and err.timeout)
c:Close()
srv:Close()
]])
    assert.are.equal(0, status, out)
    assert.matches("echoed\t300\n", out, 1, true)
    assert.matches("slept\ttrue\n", out, 1, true)
    assert.matches("deadline\ttrue\n", out, 1, true)
  end)

  it("stops polling when events come further apart than the window", function()
    -- 200 timer wake-ups 5 ms apart with a 2 ms window: polling before each sleep
    -- would cost 0.4 s of CPU; once the polls stop finding work, luaws sleeps at once
    -- and only looks again now and then. Compared with the same wait without polling.
    local status, out = run([[
local function cpu_of_waits(window)
  websocket.SetBusyPoll(window)
  local done = false
  websocket.Go(function()
    for _ = 1, 200 do websocket.Sleep(0.005) end
    done = true
  end)
  local t0 = os.clock()
  local ch = websocket.Chan()
  websocket.Go(function()
    while not done do websocket.Sleep(0.05) end
    ch:Send(true)
  end)
  ch:Recv()
  return os.clock() - t0
end
local off = cpu_of_waits(0)
local on = cpu_of_waits(0.002)
print(("cpu off %.3f on %.3f"):format(off, on))
]], 120)
    assert.are.equal(0, status, out)
    local off, on = out:match("cpu off ([%d.]+) on ([%d.]+)\n")
    assert.is_truthy(off, out)
    assert.is_true(tonumber(on) - tonumber(off) < 0.15, out)
  end)
end)
