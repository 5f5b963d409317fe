-- luaws inside a cqueues loop: luaws's whole loop is one pollable object for cqueues
-- (pollfd: BackendFd(), events: "r", timeout: BackendTimeout(), nil for "none"), and a
-- cqueues coroutine steps luaws each time cqueues wakes it.
-- Run from anywhere after `make`: lua5.4 examples/embed/cqueues_host.lua [count [gap]]
local here = (arg and arg[0] or ""):match("^(.-)[^/]*$")
package.path = here .. "?.lua;" .. here .. "../../lua/?.lua;" .. here .. "../../lua/?/init.lua;" .. package.path
package.cpath = here .. "../../" .. (os.getenv("LUAWS_BUILD") or "build") .. "/?.so;" .. package.cpath

local cqueues = require "cqueues"
local websocket = require "luaws"

local pair = require("echo_pair").start(tonumber(arg[1]) or 5, tonumber(arg[2]) or 0.05)

local luaws_pollable = {
  pollfd = function() return websocket.BackendFd() end,
  events = function() return "r" end,
  -- cqueues asks for it each time it is about to sleep: right when luaws needs it
  timeout = function()
    local t = websocket.BackendTimeout()
    if t >= 0 then return t end
  end,
}

local wakeups, t0 = 0, websocket.Now()
local cq = cqueues.new()
cq:wrap(function()
  while not pair.done do
    cqueues.poll(luaws_pollable)
    websocket.Step(0)
    wakeups = wakeups + 1
  end
end)
assert(cq:loop())

print(("echoed %d, wakeups %d, elapsed %.3f"):format(pair.echoed, wakeups, websocket.Now() - t0))
if pair.err then
  io.stderr:write("client: ", pair.err, "\n")
  os.exit(1)
end
