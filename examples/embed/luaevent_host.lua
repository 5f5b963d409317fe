-- luaws inside a libevent loop (luaevent): a persistent read event on BackendFd() and a
-- one-shot timer re-armed from BackendTimeout() after every step; both step luaws.
-- Run from anywhere after `make`: lua5.4 examples/embed/luaevent_host.lua [count [gap]]
local here = (arg and arg[0] or ""):match("^(.-)[^/]*$")
package.path = here .. "?.lua;" .. here .. "../../lua/?.lua;" .. here .. "../../lua/?/init.lua;" .. package.path
package.cpath = here .. "../../" .. (os.getenv("LUAWS_BUILD") or "build") .. "/?.so;" .. package.cpath

local core = require "luaevent.core"
local websocket = require "luaws"

local pair = require("echo_pair").start(tonumber(arg[1]) or 5, tonumber(arg[2]) or 0.05)

local base = core.new()
local fd_event, timer
local wakeups, t0 = 0, websocket.Now()

-- Step luaws, then arm the timer for what it waits for next (or end when it is done).
local function step()
  wakeups = wakeups + 1
  websocket.Step(0)
  if timer then timer:close(); timer = nil end
  if pair.done then
    fd_event:close() -- no events left: base:loop() returns
    return
  end
  local t = websocket.BackendTimeout()
  if t >= 0 then
    -- libevent takes 0 as "no timeout": ask for the next turn of its loop instead
    timer = base:addevent(nil, core.EV_TIMEOUT, function()
      timer = nil
      step()
      return -1
    end, math.max(t, 1e-6))
  end
end

fd_event = base:addevent(websocket.BackendFd(), core.EV_READ, function()
  step()
  -- nothing returned: the event stays as it is (persistent)
end)
step() -- the first turn: what echo_pair.start set up runs, and the timer is armed
base:loop()

print(("echoed %d, wakeups %d, elapsed %.3f"):format(pair.echoed, wakeups, websocket.Now() - t0))
if pair.err then
  io.stderr:write("client: ", pair.err, "\n")
  os.exit(1)
end
