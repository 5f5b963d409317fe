-- luaws inside a LuaSocket select loop: socket.select() takes any object with a getfd()
-- method, so luaws's loop goes in the read set as BackendFd(), with BackendTimeout() as
-- select's timeout (LuaSocket also takes a negative timeout as "no limit").
-- Run from anywhere after `make`: lua5.4 examples/embed/socket_select_host.lua [count [gap]]
local here = (arg and arg[0] or ""):match("^(.-)[^/]*$")
package.path = here .. "?.lua;" .. here .. "../../lua/?.lua;" .. here .. "../../lua/?/init.lua;" .. package.path
package.cpath = here .. "../../" .. (os.getenv("LUAWS_BUILD") or "build") .. "/?.so;" .. package.cpath

local socket = require "socket"
local websocket = require "luaws"

local pair = require("echo_pair").start(tonumber(arg[1]) or 5, tonumber(arg[2]) or 0.05)

local luaws_fd = { getfd = function() return websocket.BackendFd() end }
local wakeups, t0 = 0, websocket.Now()
while not pair.done do
  -- the host's other sockets would go in this set too
  socket.select({ luaws_fd }, nil, websocket.BackendTimeout())
  websocket.Step(0)
  wakeups = wakeups + 1
end

print(("echoed %d, wakeups %d, elapsed %.3f"):format(pair.echoed, wakeups, websocket.Now() - t0))
if pair.err then
  io.stderr:write("client: ", pair.err, "\n")
  os.exit(1)
end
