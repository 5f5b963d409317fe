-- gorilla/websocket's examples/echo server, line for line in Lua.
-- Run from the repository root after `make`: lua5.4 examples/echo_server.lua [-addr host:port] [-quiet] [-workers n]
-- [-compress] [-cert cert.pem -key key.pem] (serve https:// and wss:// instead)
local root = (arg and arg[0] or ""):match("^(.-)[^/]*$") .. "../" -- find the in-tree build
package.path = root .. "lua/?.lua;" .. root .. "lua/?/init.lua;" .. package.path
package.cpath = root .. "build/?.so;" .. package.cpath

local websocket = require "luaws"
local flag, log = websocket.flag, websocket.log

local addr = flag.String("addr", "localhost:8080", "http service address")
local quiet = flag.Bool("quiet", false, "do not log each message or connection end (for benchmarks)")
local workers = flag.Int("workers", 1, "worker processes sharing the port")
local certFile = flag.String("cert", "", "TLS certificate file (PEM): serve https and wss")
local keyFile = flag.String("key", "", "TLS private key file (PEM), with -cert")
local compress = flag.Bool("compress", false, "negotiate permessage-deflate (Upgrader.EnableCompression)")

local upgrader = websocket.Upgrader{} -- use default options

local function echo(w, r)
  local c, err = upgrader:Upgrade(w, r, nil)
  if err then
    log.Print("upgrade:", err)
    return
  end
  while true do
    local mt, message, err = c:ReadMessage()
    if err then
      if not quiet.value then log.Println("read:", err) end
      break
    end
    if not quiet.value then log.Printf("server recv: %s", message) end
    local ok, err = c:WriteMessage(mt, message)
    if not ok then
      log.Println("write:", err)
      break
    end
  end
  c:Close() -- defer c.Close()
end

local homePage = [[
<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<title>luaws echo</title>
</head>
<body>
<p>Press "Open" to connect to the echo server at <code>%s</code>, "Send" to send the
text, "Close" to close. Messages appear below.</p>
<form>
<button id="open">Open</button>
<button id="close">Close</button>
<p><input id="input" type="text" value="Hello world!">
<button id="send">Send</button></p>
</form>
<pre id="output"></pre>
<script>
(function () {
  const url = "%s";
  const output = document.getElementById("output");
  const input = document.getElementById("input");
  let ws = null;
  function print(line) { output.textContent += line + "\n"; }
  document.getElementById("open").onclick = function (evt) {
    evt.preventDefault();
    if (ws) return;
    ws = new WebSocket(url);
    ws.onopen = function () { print("OPEN"); };
    ws.onclose = function () { print("CLOSE"); ws = null; };
    ws.onmessage = function (e) { print("RESPONSE: " + e.data); };
    ws.onerror = function () { print("ERROR"); };
  };
  document.getElementById("send").onclick = function (evt) {
    evt.preventDefault();
    if (!ws) return;
    print("SEND: " + input.value);
    ws.send(input.value);
  };
  document.getElementById("close").onclick = function (evt) {
    evt.preventDefault();
    if (ws) ws.close();
  };
})();
</script>
</body>
</html>
]]

local function home(w, r)
  local url = (r.TLS and "wss://" or "ws://") .. r.Host .. "/echo"
  w:Write(homePage:format(url, url))
end

flag.Parse()
upgrader.EnableCompression = compress.value
websocket.HandleFunc("/echo", echo)
websocket.HandleFunc("/", home)
local err
if certFile.value ~= "" then
  _, err = websocket.ListenAndServeTLS(addr.value, certFile.value, keyFile.value, nil,
    { Workers = workers.value })
else
  _, err = websocket.ListenAndServe(addr.value, nil, { Workers = workers.value })
end
log.Fatal(err)
