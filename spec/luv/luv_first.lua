-- spec/luv_spec.lua runs this in a child: luv loaded before luaws, so luaws runs on luv's
-- loop; a luv timer, a luaws echo and Await; at exit a luv TCP server still listens, a
-- luv timer still repeats and a subprocess still runs (lua_close must be clean).
local uv = require "luv"
local early = uv.new_timer()
early:start(10000, 10000, function() end)
local websocket = require "luaws"
local core = require "luaws.core"

print("same loop", core.backend_fd() == uv.backend_fd())

local fired
local t = uv.new_timer()
t:start(30, 0, function() fired = true t:close() end)
websocket.Sleep(0.1)
print("luv timer fired", fired == true)

local srv = websocket.Listen("127.0.0.1:0", function(w, r)
  local c = websocket.Upgrader{}:Upgrade(w, r)
  if not c then return end
  while true do
    local mt, data = c:ReadMessage()
    if not mt then break end
    c:WriteMessage(mt, data)
  end
end)
local c = assert(websocket.DefaultDialer:Dial("ws://127.0.0.1:" .. srv:Port() .. "/"))
c:WriteMessage(websocket.TextMessage, "hello")
local _, got = c:ReadMessage()
print("echo", got)
c:Close()

print("await", websocket.Await(function(cb) uv.new_timer():start(10, 0, function() cb("late") end) end))

local tcp = uv.new_tcp()
tcp:bind("127.0.0.1", 0)
tcp:listen(8, function() end)
local out = uv.new_pipe()
uv.spawn("sleep", { args = { "3" }, stdio = { nil, out, nil } }, function() end)
out:read_start(function() end)
websocket.Sleep(0.02)
print("end")
