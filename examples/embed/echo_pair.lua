-- The luaws side of the embedding examples: an echo server on 127.0.0.1 (a port the OS
-- picks) and a client goroutine that sends it `count` messages, sleeping `gap` seconds
-- (a luaws timer) after each echo, then closes with 1000 and stops the server. Nothing
-- here blocks the caller: it only starts things, which run when the host steps luaws.
--
--   local pair = require("echo_pair").start(5, 0.05)
--   -- the host's loop, until pair.done; then pair.err (nil or a message), pair.echoed
local websocket = require "luaws"

local M = {}

function M.start(count, gap)
  local pair = { done = false, echoed = 0, handlers = 0 }
  local upgrader = websocket.Upgrader{}
  local srv = assert(websocket.Listen("127.0.0.1:0", function(w, r)
    local c = upgrader:Upgrade(w, r)
    if not c then return end
    pair.handlers = pair.handlers + 1
    while true do
      local mt, data = c:ReadMessage()
      if not mt then break end
      if not c:WriteMessage(mt, data) then break end
    end
    c:Close()
    pair.handlers = pair.handlers - 1
  end))
  pair.port = srv:Port()

  local function client()
    local c, _, err = websocket.DefaultDialer:Dial("ws://127.0.0.1:" .. pair.port .. "/")
    assert(c, "dial: " .. tostring(err))
    for i = 1, count do
      local sent = ("message %d of %d"):format(i, count)
      assert(c:WriteMessage(websocket.TextMessage, sent))
      local mt, data, rerr = c:ReadMessage()
      assert(mt == websocket.TextMessage and data == sent,
        "echo " .. i .. ": " .. tostring(data or rerr))
      pair.echoed = i
      websocket.Sleep(gap)
    end
    assert(c:WriteMessage(websocket.CloseMessage,
      websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")))
    local _, _, rerr = c:ReadMessage() -- the server's close reply
    assert(websocket.IsCloseError(rerr, websocket.CloseNormalClosure), tostring(rerr))
    c:Close()
    -- the server's handler ends once it has read the close: wait for it, as the host
    -- should end with nothing of luaws left running
    while pair.handlers > 0 do websocket.Sleep(0.01) end
  end

  websocket.Go(function()
    local ok, err = pcall(client)
    srv:Close()
    if not ok then pair.err = tostring(err) end
    pair.done = true
  end)
  return pair
end

return M
