-- Issue 11, embedding: the host protocol (wait on BackendFd() at most BackendTimeout()
-- seconds, then Step(0)) must not make a host spin. A fresh luaws, with nothing
-- started, has nothing to wait for; goroutines ready to run mean "do not wait".
local support = require "support"

describe("issue 11: BackendTimeout", function()
  it("says 'no timeout' while nothing is active, 0 while goroutines are ready, else the next timer", function()
    local status, out = support.run_child("lua5.4 -e " .. support.shell_quote([[
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = (os.getenv("LUAWS_BUILD") or "build") .. "/?.so;" .. package.cpath
local ws = require "luaws"
print("fresh", ws.BackendTimeout(), ws.BackendTimeout())
local fired = false
ws.Go(function() ws.Sleep(0.3); fired = true end)
print("ready", ws.BackendTimeout())
ws.Step(0)
local t = ws.BackendTimeout()
print("timer", t > 0.2 and t <= 0.3)
-- a host loop: sleep as told, then step; count the wake-ups until the goroutine ran
local wakeups = 0
while not fired do
  local wait = ws.BackendTimeout()
  if wait > 0 then os.execute("sleep " .. wait) end
  ws.Step(0)
  wakeups = wakeups + 1
  assert(wakeups < 50, "the host spins")
end
print("done", wakeups <= 3)
print("idle", ws.BackendTimeout())
]]), 20)
    assert.are.equal(0, status, out)
    assert.matches("fresh\t%-1%.?0?\t%-1", out)
    assert.matches("ready\t0\n", out, 1, true)
    assert.matches("timer\ttrue", out, 1, true)
    assert.matches("done\ttrue", out, 1, true)
    assert.matches("idle\t%-1", out)
  end)
end)
