-- gorilla/websocket's examples/filewatch in Lua: a page that shows a file and is sent
-- the file's new content when it changes. gorilla polls the file every 10 s; here luv's
-- fs events (inotify) say when it changed, on luaws's loop (luv is loaded first: they
-- share it), and the file ticker only catches what an event could miss.
-- Run from the repository root after `make`:
--   lua5.4 examples/filewatch.lua [-addr host:port] filename
local root = (arg and arg[0] or ""):match("^(.-)[^/]*$") .. "../" -- find the in-tree build
package.path = root .. "lua/?.lua;" .. root .. "lua/?/init.lua;" .. package.path
package.cpath = root .. "build/?.so;" .. package.cpath

local uv = require "luv" -- before luaws: luaws then runs on luv's loop
local websocket = require "luaws"
local flag, log = websocket.flag, websocket.log

-- Time allowed to write the file to the client.
local writeWait = 10
-- Time allowed to read the next pong message from the client.
local pongWait = 60
-- Send pings to client with this period. Must be less than pongWait.
local pingPeriod = pongWait * 9 / 10
-- Poll file for changes with this period (besides the fs events).
local filePeriod = 10

local addr = flag.String("addr", ":8080", "http service address")
local filename
local upgrader = websocket.Upgrader{ ReadBufferSize = 1024, WriteBufferSize = 1024 }

-- A modification time as nanoseconds since the epoch (Go's UnixNano).
local function nanos(stat) return stat.mtime.sec * 1000000000 + stat.mtime.nsec end

-- readFileIfModified(lastMod) -> content or nil, lastMod, err (an error text)
local function readFileIfModified(lastMod)
  local err, fi = websocket.Await(uv.fs_stat, filename)
  if err then return nil, lastMod, err end
  if not (nanos(fi) > lastMod) then return nil, lastMod, nil end
  local f, ferr = io.open(filename, "rb")
  if not f then return nil, nanos(fi), ferr end
  local p = f:read("a")
  f:close()
  return p, nanos(fi), nil
end

local function reader(ws)
  ws:SetReadLimit(512)
  ws:SetReadDeadline(websocket.Now() + pongWait)
  ws:SetPongHandler(function() ws:SetReadDeadline(websocket.Now() + pongWait) end)
  while true do
    local _, _, err = ws:ReadMessage()
    if err then break end
  end
  ws:Close() -- defer ws.Close()
end

local function writer(ws, lastMod)
  local lastError = ""
  local pingTicker <close> = websocket.NewTicker(pingPeriod)
  local fileTicker <close> = websocket.NewTicker(filePeriod)
  -- the file changed (luv's fs event): as a tick of fileTicker, at once
  local changed = websocket.Chan(1)
  local watch = uv.new_fs_event()
  watch:start(filename, {}, function() changed:TrySend(true) end)
  while true do
    local i = websocket.Select(fileTicker.C, changed, pingTicker.C)
    if i ~= 3 then
      local p, err
      p, lastMod, err = readFileIfModified(lastMod)
      if err then
        if err ~= lastError then
          lastError = err
          p = lastError
        end
      else
        lastError = ""
      end
      if p then
        ws:SetWriteDeadline(websocket.Now() + writeWait)
        if not ws:WriteMessage(websocket.TextMessage, p) then break end
      end
    else
      ws:SetWriteDeadline(websocket.Now() + writeWait)
      if not ws:WriteMessage(websocket.PingMessage, "") then break end
    end
  end
  watch:close()
  ws:Close()
end

local function serveWs(w, r)
  local ws, err = upgrader:Upgrade(w, r, nil)
  if not ws then
    if not err.handshake then log.Println(err) end
    return
  end
  local lastMod = 0
  local n = tonumber((r.URL.RawQuery or ""):match("lastMod=(%x+)") or "", 16)
  if n then lastMod = n end
  websocket.Go(writer, ws, lastMod)
  reader(ws)
end

local homeHTML = [=[
<!DOCTYPE html>
<html lang="en">
    <head>
        <title>WebSocket Example</title>
    </head>
    <body>
        <pre id="fileData">{{.Data}}</pre>
        <script type="text/javascript">
            (function() {
                var data = document.getElementById("fileData");
                var conn = new WebSocket("ws://{{.Host}}/ws?lastMod={{.LastMod}}");
                conn.onclose = function(evt) {
                    data.textContent = 'Connection closed';
                }
                conn.onmessage = function(evt) {
                    console.log('file updated');
                    data.textContent = evt.data;
                }
            })();
        </script>
    </body>
</html>
]=]

-- html/template's escaping of text in an element
local function escape(s)
  return (s:gsub("[&<>\"']", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;",
    ['"'] = "&#34;", ["'"] = "&#39;" }))
end

local function serveHome(w, r)
  if r.URL.Path ~= "/" then
    websocket.Error(w, "Not found", 404)
    return
  end
  if r.Method ~= "GET" then
    websocket.Error(w, "Method not allowed", 405)
    return
  end
  w:Header():Set("Content-Type", "text/html; charset=utf-8")
  local p, lastMod, err = readFileIfModified(0)
  if err then
    p = err
    lastMod = 0
  end
  local v = { Host = escape(r.Host), Data = escape(p), LastMod = ("%x"):format(lastMod) }
  w:Write((homeHTML:gsub("{{%.(%a+)}}", v)))
end

flag.Parse()
if #flag.Args() ~= 1 then
  log.Fatal("filename not specified")
end
filename = flag.Args()[1]
websocket.HandleFunc("/", serveHome)
websocket.HandleFunc("/ws", serveWs)
local _, err = websocket.ListenAndServe(addr.value)
log.Fatal(err)
