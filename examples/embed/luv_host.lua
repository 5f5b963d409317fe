-- luaws inside luv's loop, luaws keeping a loop of its own (for hosts that cannot share
-- one): a luv poll handle watches BackendFd() and a luv timer is re-armed from
-- BackendTimeout() after every step.
-- Run from anywhere after `make`: lua5.4 examples/embed/luv_host.lua [count [gap]]
local here = (arg and arg[0] or ""):match("^(.-)[^/]*$")
package.path = here .. "?.lua;" .. here .. "../../lua/?.lua;" .. here .. "../../lua/?/init.lua;" .. package.path
package.cpath = here .. "../../" .. (os.getenv("LUAWS_BUILD") or "build") .. "/?.so;" .. package.cpath

local uv = require "luv"
-- luaws shares luv's loop when luv is loaded (then luaws's own loop runs everything);
-- this example keeps them apart to show the protocol of hosts that cannot share
package.loaded["luaws.own_loop"] = true
local websocket = require "luaws"

local pair = require("echo_pair").start(tonumber(arg[1]) or 5, tonumber(arg[2]) or 0.05)

local poll = uv.new_poll(websocket.BackendFd())
local timer = uv.new_timer()
local wakeups, t0 = 0, websocket.Now()

local function step()
  websocket.Step(0)
  wakeups = wakeups + 1
  timer:stop()
  if pair.done then
    poll:stop()
    return
  end
  local wait = websocket.BackendTimeout()
  if wait >= 0 then timer:start(math.ceil(wait * 1000), 0, step) end
end

poll:start("r", step)
step()
uv.run()

print(("echoed %d, wakeups %d, elapsed %.3f"):format(pair.echoed, wakeups, websocket.Now() - t0))
if pair.err then
  io.stderr:write("client: ", pair.err, "\n")
  os.exit(1)
end
