-- gorilla/websocket's examples/command, line for line in Lua: a web page that talks to a
-- command's stdin and stdout over a WebSocket. The command runs with luv's spawn and
-- pipes, on luaws's loop (luv is loaded first: they share it), so every connection keeps
-- going while another one's command writes.
-- Run from the repository root after `make`:
--   lua5.4 examples/command.lua [-addr host:port] command [args...]
local root = (arg and arg[0] or ""):match("^(.-)[^/]*$") .. "../" -- find the in-tree build
package.path = root .. "lua/?.lua;" .. root .. "lua/?/init.lua;" .. package.path
package.cpath = root .. "build/?.so;" .. package.cpath

local uv = require "luv" -- before luaws: luaws then runs on luv's loop
local websocket = require "luaws"
local flag, log = websocket.flag, websocket.log

local addr = flag.String("addr", "127.0.0.1:8080", "http service address")
local cmdPath

-- Time allowed to write a message to the peer.
local writeWait = 10
-- Maximum message size allowed from peer.
local maxMessageSize = 8192
-- Time allowed to read the next pong message from the peer.
local pongWait = 60
-- Send pings to peer with this period. Must be less than pongWait.
local pingPeriod = pongWait * 9 / 10
-- Time to wait before force close on connection.
local closeGracePeriod = 10

-- The next chunk the pipe brings (nil at its end), read in blocking style.
local function readChunk(pipe)
  return websocket.Await(function(done)
    pipe:read_start(function(err, data)
      pipe:read_stop()
      done(err, data)
    end)
  end)
end

local function pumpStdin(ws, w)
  ws:SetReadLimit(maxMessageSize)
  ws:SetReadDeadline(websocket.Now() + pongWait)
  ws:SetPongHandler(function() ws:SetReadDeadline(websocket.Now() + pongWait) end)
  while true do
    local _, message, err = ws:ReadMessage()
    if err then break end
    if websocket.Await(uv.write, w, message .. "\n") then break end
  end
  ws:Close() -- defer ws.Close()
end

-- done: closed once r has ended (nil for stderr, which only adds its lines).
local function pumpStdout(ws, r, done)
  local buffered, err = "", nil -- bufio.Scanner: one message per line
  while true do
    local cerr, chunk = readChunk(r)
    if cerr or not chunk then err = cerr break end
    buffered = buffered .. chunk
    local failed = false
    for line in buffered:gmatch("([^\n]*)\n") do
      ws:SetWriteDeadline(websocket.Now() + writeWait)
      if not ws:WriteMessage(websocket.TextMessage, line) then
        ws:Close()
        failed = true
        break
      end
    end
    if failed then break end
    buffered = buffered:match("[^\n]*$")
  end
  if buffered ~= "" and not err then
    ws:SetWriteDeadline(websocket.Now() + writeWait)
    ws:WriteMessage(websocket.TextMessage, buffered)
  end
  if err then log.Println("scan:", err) end
  if not done then return end
  done:Close()

  ws:SetWriteDeadline(websocket.Now() + writeWait)
  ws:WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
  websocket.Sleep(closeGracePeriod)
  ws:Close()
end

local function ping(ws, done)
  local ticker <close> = websocket.NewTicker(pingPeriod)
  while true do
    local i = websocket.Select(ticker.C, done)
    if i == 1 then
      local ok, err = ws:WriteControl(websocket.PingMessage, "", websocket.Now() + writeWait)
      if not ok then log.Println("ping:", err) end
    else
      return
    end
  end
end

local function internalError(ws, msg, err)
  log.Println(msg, err)
  ws:WriteMessage(websocket.TextMessage, "Internal server error.")
end

local upgrader = websocket.Upgrader{}

local function serveWs(w, r)
  local ws, err = upgrader:Upgrade(w, r, nil)
  if not ws then
    log.Println("upgrade:", err)
    return
  end

  -- Go hands the command one pipe for stdout and stderr; luv takes a pipe handle once,
  -- so stderr has a pipe of its own, pumped the same way
  local outr, errr, inw = uv.new_pipe(false), uv.new_pipe(false), uv.new_pipe(false)
  local exited = websocket.Chan(1)
  local proc, perr = uv.spawn(cmdPath, { args = { table.unpack(flag.Args(), 2) },
    stdio = { inw, outr, errr } }, function(code, signal) exited:TrySend({ code, signal }) end)
  if not proc then
    internalError(ws, "start:", perr)
    outr:close()
    errr:close()
    inw:close()
    ws:Close()
    return
  end

  local stdoutDone = websocket.Chan()
  websocket.Go(pumpStdout, ws, outr, stdoutDone)
  websocket.Go(pumpStdout, ws, errr, nil)
  websocket.Go(ping, ws, stdoutDone)

  pumpStdin(ws, inw)

  -- Some commands will exit when stdin is closed.
  inw:close()

  -- Other commands need a bonk on the head.
  local ok, kerr = pcall(proc.kill, proc, "sigint")
  if not ok then log.Println("inter:", kerr) end

  if websocket.Select(stdoutDone, websocket.After(1)) == 2 then
    -- A bigger bonk on the head.
    ok, kerr = pcall(proc.kill, proc, "sigkill")
    if not ok then log.Println("term:", kerr) end
    stdoutDone:Recv()
  end

  exited:Recv() -- proc.Wait()
  outr:close()
  errr:close()
  proc:close()
end

local homeHTML = [=[
<!DOCTYPE html>
<html lang="en">
<head>
<title>Command Example</title>
<script type="text/javascript">
window.onload = function () {
    var conn;
    var msg = document.getElementById("msg");
    var log = document.getElementById("log");

    function appendLog(item) {
        var doScroll = log.scrollTop > log.scrollHeight - log.clientHeight - 1;
        log.appendChild(item);
        if (doScroll) {
            log.scrollTop = log.scrollHeight - log.clientHeight;
        }
    }

    document.getElementById("form").onsubmit = function () {
        if (!conn) {
            return false;
        }
        if (!msg.value) {
            return false;
        }
        conn.send(msg.value);
        msg.value = "";
        return false;
    };

    if (window["WebSocket"]) {
        conn = new WebSocket("ws://" + document.location.host + "/ws");
        conn.onclose = function (evt) {
            var item = document.createElement("div");
            item.innerHTML = "<b>Connection closed.</b>";
            appendLog(item);
        };
        conn.onmessage = function (evt) {
            var messages = evt.data.split('\n');
            for (var i = 0; i < messages.length; i++) {
                var item = document.createElement("div");
                item.innerText = messages[i];
                appendLog(item);
            }
        };
    } else {
        var item = document.createElement("div");
        item.innerHTML = "<b>Your browser does not support WebSockets.</b>";
        appendLog(item);
    }
};
</script>
<style type="text/css">
html {
    overflow: hidden;
}

body {
    overflow: hidden;
    padding: 0;
    margin: 0;
    width: 100%;
    height: 100%;
    background: gray;
}

#log {
    background: white;
    margin: 0;
    padding: 0.5em 0.5em 0.5em 0.5em;
    position: absolute;
    top: 0.5em;
    left: 0.5em;
    right: 0.5em;
    bottom: 3em;
    overflow: auto;
}

#log pre {
  margin: 0;
}

#form {
    padding: 0 0.5em 0 0.5em;
    margin: 0;
    position: absolute;
    bottom: 1em;
    left: 0px;
    width: 100%;
    overflow: hidden;
}

</style>
</head>
<body>
<div id="log"></div>
<form id="form">
    <input type="submit" value="Send" />
    <input type="text" id="msg" size="64"/>
</form>
</body>
</html>
]=]

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
  w:Write(homeHTML) -- http.ServeFile(w, r, "home.html")
end

-- exec.LookPath: a name with a slash as it is, else the first match in $PATH.
local function lookPath(file)
  if file:find("/", 1, true) then return file end
  for dir in (os.getenv("PATH") or ""):gmatch("[^:]+") do
    local path = dir .. "/" .. file
    if uv.fs_access(path, "x") then return path end
  end
  return nil, 'exec: "' .. file .. '": executable file not found in $PATH'
end

flag.Parse()
if #flag.Args() < 1 then
  log.Fatal("must specify at least one argument")
end
local err
cmdPath, err = lookPath(flag.Args()[1])
if not cmdPath then
  log.Fatal(err)
end
websocket.HandleFunc("/", serveHome)
websocket.HandleFunc("/ws", serveWs)
local _, lerr = websocket.ListenAndServe(addr.value)
log.Fatal(lerr)
