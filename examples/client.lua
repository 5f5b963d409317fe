-- gorilla/websocket's examples/echo client, line for line in Lua.
-- Run from the repository root after `make`: lua5.4 examples/client.lua [-addr host:port]
-- [-tls [-cafile ca.pem]] [-url ws://host:port/path]
local root = (arg and arg[0] or ""):match("^(.-)[^/]*$") .. "../" -- find the in-tree build
package.path = root .. "lua/?.lua;" .. root .. "lua/?/init.lua;" .. package.path
package.cpath = root .. "build/?.so;" .. package.cpath

local websocket = require "luaws"
local flag, log = websocket.flag, websocket.log

local addr = flag.String("addr", "localhost:8080", "http service address")
local useTLS = flag.Bool("tls", false, "connect with wss://")
local caFile = flag.String("cafile", "", "trust this CA (PEM) instead of the system's, with -tls")
local url = flag.String("url", "", "the URL to dial (instead of -addr and -tls)")

local function main()
  flag.Parse()
  log.SetFlags(0)

  local interrupt = websocket.Chan(1)
  websocket.Notify(interrupt, websocket.Interrupt)

  local u = (useTLS.value and "wss://" or "ws://") .. addr.value .. "/echo"
  if url.value ~= "" then u = url.value end
  log.Printf("connecting to %s", u)

  local dialer = websocket.DefaultDialer
  if caFile.value ~= "" then
    dialer = websocket.Dialer{ HandshakeTimeout = 45, TLSClientConfig = { RootCAs = caFile.value } }
  end
  local c, _, err = dialer:Dial(u, nil)
  if err then
    log.Fatal("dial:", err)
  end
  local done = websocket.Chan()

  websocket.Go(function()
    while true do
      local _, message, err = c:ReadMessage()
      if err then
        log.Println("read:", err)
        break
      end
      log.Printf("client recv: %s", message)
    end
    done:Close() -- defer close(done)
  end)

  local ticker = websocket.NewTicker(1)

  while true do
    local case, t = websocket.Select(done, ticker.C, interrupt)
    if case == done then
      break
    elseif case == ticker.C then
      local ok, err = c:WriteMessage(websocket.TextMessage, websocket.FormatTime(t))
      if not ok then
        log.Println("write:", err)
        break
      end
    elseif case == interrupt then
      log.Println("interrupt")

      -- Cleanly close the connection by sending a close message and then
      -- waiting (with timeout) for the server to close the connection.
      local ok, err = c:WriteMessage(websocket.CloseMessage,
        websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
      if not ok then
        log.Println("write close:", err)
        break
      end
      websocket.Select(done, websocket.After(1))
      break
    end
  end
  ticker:Stop() -- defer ticker.Stop()
  c:Close()     -- defer c.Close()
end

main()
