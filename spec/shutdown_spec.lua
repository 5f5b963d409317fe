-- Issue 11, "Signals and shutdown": ListenAndServe ends gracefully on SIGINT and SIGTERM
-- (1001 to every open connection, a grace period, a log line, ErrServerClosed), also
-- with Workers; Server:Shutdown and RegisterOnShutdown as Go's http.Server; a program
-- that takes a signal with Notify keeps it; Listen installs no signal handlers.
local support = require "support"
local websocket = support.websocket

lazy_setup(function() support.keepalive(true) end)
lazy_teardown(function() support.keepalive(false) end)

-- A luaws client child: dials url, echoes one message, then reads until the close and
-- prints what the read returned.
local client_lua = [=[
local websocket = require "luaws"
local c = assert(websocket.DefaultDialer:Dial(arg[1]))
assert(c:WriteMessage(websocket.TextMessage, "hi"))
print("echo", select(2, c:ReadMessage()))
io.stdout:flush()
local _, _, err = c:ReadMessage()
print("end", err and err.code, tostring(err))
]=]

local function clients(port, n)
  local client = support.lua(client_lua)
  local list = {}
  for i = 1, n do
    list[i] = support.spawn(("%s ws://127.0.0.1:%d/echo"):format(client, port))
  end
  assert(support.wait_for(function()
    for _, c in ipairs(list) do
      if not support.output(c):find("echo\thi", 1, true) then return false end
    end
    return true
  end, 10), "the clients did not get their echo")
  return list
end

local function pids_listening(port)
  return tonumber(support.sh_output("ss -Hltnp 'sport = :" .. port .. "' | grep -o 'pid=' | wc -l"))
end

describe("issue 11: ListenAndServe on SIGINT and SIGTERM", function()
  for _, sig in ipairs({ "INT", "TERM" }) do
    it("SIG" .. sig .. " ends examples/echo_server.lua promptly; clients get 1001", function()
      local port = support.free_port()
      local server = support.spawn("lua5.4 examples/echo_server.lua -addr 127.0.0.1:" .. port)
      finally(function() support.stop(server) end)
      assert(support.wait_port(port, 10), support.output(server))
      local list = clients(port, 3)
      finally(function()
        for _, c in ipairs(list) do support.stop(c) end
      end)
      local t0 = websocket.Now()
      support.kill(server, sig)
      local status = support.wait(server, 5)
      assert(status, "the server did not end within 5 s:\n" .. support.output(server))
      assert(websocket.Now() - t0 < 2, "the server took " .. websocket.Now() - t0 .. " s")
      local out = support.output(server)
      -- as gorilla's example: log.Fatal(ListenAndServe(...)) prints Go's error, status 1
      assert.are.equal(1, status)
      assert.matches("luaws: SIG" .. sig .. ": shutting down", out, 1, true)
      assert.matches("http: Server closed", out, 1, true)
      assert.is_nil(out:find("interrupted", 1, true), out)
      for _, c in ipairs(list) do
        assert(support.wait(c, 5), "a client did not end")
        assert.matches("end\t1001\t", support.output(c), 1, true)
      end
    end)
  end

  it("with Workers: every worker shuts down the same way, the parent reaps them", function()
    local port = support.free_port()
    local server = support.spawn("lua5.4 examples/echo_server.lua -workers 3 -addr 127.0.0.1:" .. port)
    finally(function() support.stop(server) end)
    assert(support.wait_for(function() return pids_listening(port) == 3 end, 10),
      "3 processes did not listen:\n" .. support.output(server))
    local list = clients(port, 6)
    finally(function()
      for _, c in ipairs(list) do support.stop(c) end
    end)
    support.kill(server, "TERM") -- the parent only: it passes the signal on
    local status = support.wait(server, 10)
    assert(status, "the parent did not end:\n" .. support.output(server))
    local out = support.output(server)
    local _, shut = out:gsub("luaws: worker %d+: shut down", "")
    assert.are.equal(2, shut, out)
    assert.are.equal(0, pids_listening(port))
    for _, c in ipairs(list) do
      assert(support.wait(c, 5), "a client did not end")
      assert.matches("end\t1001\t", support.output(c), 1, true)
    end
  end)

  it("a second signal during the grace period exits at once", function()
    -- a handler that never reads: the graceful shutdown would wait its 5 s
    local src = support.lua([=[
local websocket = require "luaws"
local up = websocket.Upgrader{}
websocket.HandleFunc("/", function(w, r)
  local c = assert(up:Upgrade(w, r))
  print("upgraded"); io.stdout:flush()
  websocket.Sleep(60)
end)
print(websocket.ListenAndServe("127.0.0.1:" .. arg[1]))
]=])
    local port = support.free_port()
    local server = support.spawn(("%s %d"):format(src, port))
    finally(function() support.stop(server) end)
    assert(support.wait_port(port, 10), support.output(server))
    local client = support.spawn(("%s ws://127.0.0.1:%d/"):format(support.lua(client_lua), port))
    finally(function() support.stop(client) end)
    assert(support.wait_for(function()
      return support.output(server):find("upgraded", 1, true)
    end, 10), support.output(server))
    support.kill(server, "INT")
    assert(support.wait_for(function()
      return support.output(server):find("shutting down", 1, true)
    end, 5))
    websocket.Sleep(0.3)
    assert.is_nil(support.status(server), "it ended before the grace period was over")
    local t0 = websocket.Now()
    support.kill(server, "INT")
    assert.are.equal(1, support.wait(server, 3))
    assert(websocket.Now() - t0 < 1)
    assert.matches("SIGINT again: exiting now", support.output(server), 1, true)
  end)

  it("a program that takes SIGINT with Notify keeps it; Listen installs no handlers", function()
    local src = support.lua([=[
local websocket = require "luaws"
local function caught(sig) -- is the signal caught (SigCgt of /proc/self/status)?
  local mask = io.open("/proc/self/status"):read("a"):match("SigCgt:%s*(%x+)")
  return (tonumber(mask, 16) >> (sig - 1)) & 1 == 1
end
local srv = assert(websocket.Listen("127.0.0.1:0", function() end))
print("after Listen, SIGTERM caught:", caught(15))
srv:Close()
local ch = websocket.Chan(1)
websocket.Notify(ch, "SIGINT")
websocket.Go(function()
  websocket.Sleep(0.2)
  print("in ListenAndServe, SIGTERM caught:", caught(15)); io.stdout:flush()
  print("program got", ch:Recv()); io.stdout:flush()
  websocket.Sleep(0.5) -- ListenAndServe must not have shut down meanwhile
  local c = websocket.DefaultDialer:Dial("ws://127.0.0.1:" .. arg[1] .. "/")
  print("still serving:", c == nil and "no" or "yes") -- the handler answers 404: no upgrade
  os.exit(0)
end)
websocket.HandleFunc("/", function(w) w:Write("ok") end)
print(websocket.ListenAndServe("127.0.0.1:" .. arg[1]))
]=])
    local port = support.free_port()
    local server = support.spawn(("%s %d"):format(src, port))
    finally(function() support.stop(server) end)
    assert(support.wait_for(function()
      return support.output(server):find("in ListenAndServe", 1, true)
    end, 10), support.output(server))
    support.kill(server, "INT")
    assert.are.equal(0, support.wait(server, 5), support.output(server))
    local out = support.output(server)
    assert.matches("after Listen, SIGTERM caught:\tfalse", out, 1, true)
    assert.matches("in ListenAndServe, SIGTERM caught:\ttrue", out, 1, true)
    assert.matches("program got\tSIGINT", out, 1, true)
    assert.is_nil(out:find("shutting down", 1, true), out)
    assert.matches("still serving:\tno", out, 1, true) -- dialed: answered (404), not refused
  end)
end)

describe("issue 11: Server:Shutdown and RegisterOnShutdown", function()
  it("sends 1001 to the server's connections, runs the hooks, waits for the handlers", function()
    local srv, port, state = support.echo_server()
    finally(function() srv:Close() end)
    local hooked = false
    assert(srv:RegisterOnShutdown(function() hooked = true end))
    local conns, errs = {}, {}
    for i = 1, 3 do
      conns[i] = assert(websocket.DefaultDialer:Dial(support.url(port)))
      assert(conns[i]:WriteMessage(websocket.TextMessage, "x"))
      assert(conns[i]:ReadMessage())
      websocket.Go(function()
        local _, _, err = conns[i]:ReadMessage()
        errs[i] = err
      end)
    end
    assert.are.equal(3, state.upgraded)
    local ok, err = srv:Shutdown(3)
    assert.is_true(ok, tostring(err))
    assert.is_true(hooked)
    assert.are.equal(3, state.ended)
    assert(support.wait_for(function() return #errs == 3 end, 3))
    for i = 1, 3 do
      assert.are.equal(1001, errs[i].code)
      conns[i]:Close()
    end
    -- it no longer listens
    local c, _, derr = websocket.DefaultDialer:Dial(support.url(port))
    assert.is_nil(c)
    assert.matches("connection refused", tostring(derr))
  end)

  it("after timeout closes what is still open and says so", function()
    local upgrader = websocket.Upgrader{}
    local ended = false
    local srv = assert(websocket.Listen("127.0.0.1:0", function(w, r)
      local c = assert(upgrader:Upgrade(w, r))
      websocket.Sleep(0.6) -- does not read: never sees the close
      local ok = c:WriteMessage(websocket.TextMessage, "late")
      ended = ok
    end))
    finally(function() srv:Close() end)
    local c = assert(websocket.DefaultDialer:Dial(support.url(srv:Port())))
    finally(function() c:Close() end)
    websocket.Sleep(0.05)
    local t0 = websocket.Now()
    local ok, err = srv:Shutdown(0.2)
    assert.is_nil(ok)
    assert.is_true(err.timeout)
    assert(websocket.Now() - t0 < 0.5)
    websocket.Sleep(0.6)
    assert.are.equal(nil, ended) -- its connection was closed: the late write failed
  end)

  it("misuse raises", function()
    local srv = assert(websocket.Listen("127.0.0.1:0", function() end))
    finally(function() srv:Close() end)
    assert.has_error(function() srv:Shutdown("soon") end)
    assert.has_error(function() srv:RegisterOnShutdown(42) end)
    assert.has_error(function() srv.Shutdown({}) end)
  end)
end)

describe("issue 11: a wait nothing can ever wake", function()
  local function run(src)
    return support.run_child(support.lua("ws = require 'luaws'; " .. src), 10)
  end

  it("fails with Go's deadlock error instead of hanging", function()
    for _, src in ipairs({
      "ws.Chan():Recv()",
      "local ch = ws.Chan(); ws.Go(function() ch:Recv() end); ch:Recv()",
      "local ch = ws.Chan(); ws.Go(function() ws.Sleep(0.05) end); ch:Send(1)",
    }) do
      local status, out = run(src)
      assert.are_not.equal(0, status, src)
      assert.matches("all goroutines are asleep %- deadlock!", out)
    end
  end)

  it("a wait that a timer or a signal can still end is no deadlock", function()
    local status, out = run("local ch = ws.Chan(1); ws.Go(function() ws.Sleep(0.1); ch:Send('t') end); print(ch:Recv())")
    assert.are.equal(0, status, out)
    assert.matches("^t\ttrue\n", out)
    status, out = run("local ch = ws.Chan(1); ws.Notify(ch, 'SIGUSR1'); " ..
      "local pid = require('luaws.core').getpid(); " ..
      "ws.Go(function() ws.Sleep(0.1); os.execute('kill -USR1 ' .. pid) end); print(ch:Recv())")
    assert.are.equal(0, status, out)
    assert.matches("SIGUSR1", out, 1, true)
  end)
end)
