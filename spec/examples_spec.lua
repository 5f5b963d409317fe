-- The examples as separate processes: examples/echo_server.lua on a free port and
-- examples/client.lua against it, interrupted with SIGINT after about 3 seconds.
local support = require "support"
local websocket = support.websocket

lazy_setup(function() support.keepalive(true) end)
lazy_teardown(function() support.keepalive(false) end)

local function lines_with(out, prefix)
  local found = {}
  for line in out:gmatch("[^\n]+") do
    local rest = line:match(prefix:gsub("%p", "%%%0") .. "(.*)$")
    if rest then found[#found + 1] = rest end
  end
  return found
end

describe("examples/echo_server.lua with examples/client.lua", function()
  local server, port

  lazy_setup(function()
    port = support.free_port()
    server = support.spawn("lua5.4 examples/echo_server.lua -addr 127.0.0.1:" .. port)
    assert(support.wait_port(port, 10), "the echo server did not start listening:\n" ..
      support.output(server))
  end)

  lazy_teardown(function() support.stop(server) end)

  it("echo a few ticks, then close cleanly on SIGINT", function()
    local client = support.spawn("lua5.4 examples/client.lua -addr 127.0.0.1:" .. port)
    finally(function() support.stop(client) end)
    local t0 = websocket.Now()
    -- the client writes once a second: let it run about 3 s, with at least 2 echoes
    support.wait_for(function()
      return #lines_with(support.output(client), "client recv: ") >= 2 and websocket.Now() - t0 >= 3
    end, 15, 0.05)
    assert.is_nil(support.status(client), "the client ended early:\n" .. support.output(client))
    support.kill(client, "INT")
    local status = support.wait(client, 10)
    local out = support.output(client)
    assert.are.equal(0, status, "client exit status; output:\n" .. out)

    assert.matches("connecting to ws://127%.0%.0%.1:" .. port .. "/echo\n", out)
    local recv = lines_with(out, "client recv: ")
    assert.is_true(#recv >= 2, "client recv lines: " .. #recv .. "\n" .. out)
    for _, payload in ipairs(recv) do
      -- FormatTime's layout: 2006-01-02 15:04:05.000000000 -0700 MST
      assert.matches("^%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d%.%d+ [+-]%d%d%d%d", payload)
    end
    assert.matches("\ninterrupt\n", out)
    assert.matches("read: websocket: close 1000 %(normal%)", out)
    -- the interrupt comes before the close reply
    assert.is_true(out:find("interrupt", 1, true) < out:find("read: websocket: close 1000", 1, true))

    -- the server logged the same messages and the client's close
    local sout
    assert.is_truthy(support.wait_for(function()
      sout = support.output(server)
      return sout:find("read: websocket: close 1000 (normal)", 1, true)
    end, 5), "server output:\n" .. (sout or ""))
    assert.are.same(recv, lines_with(sout, "server recv: "))
  end)

  it("the server answers GET / with an HTML page that points at /echo", function()
    local cmd = support.python([[
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=10)
c.request("GET", "/")
r = c.getresponse()
print(r.status)
print(r.getheader("Content-Type"))
sys.stdout.write(r.read().decode())
]])
    local status, out = support.run_child(cmd .. " " .. port, 15)
    assert.are.equal(0, status, out)
    local code, ctype, body = out:match("^(%d+)\n([^\n]*)\n(.*)$")
    assert.are.equal("200", code)
    assert.matches("^text/html", ctype)
    assert.matches("^%s*<!DOCTYPE html>", body)
    assert.matches("</html>", body, 1, true)
    assert.matches('"ws://127.0.0.1:' .. port .. '/echo"', body, 1, true)
  end)

  it("the server echoes for an in-process client too", function()
    local c, resp, err = websocket.DefaultDialer:Dial("ws://127.0.0.1:" .. port .. "/echo")
    assert.is_nil(err)
    finally(function() c:Close() end)
    assert.are.equal(101, resp.StatusCode)
    for _, mt in ipairs({ websocket.TextMessage, websocket.BinaryMessage }) do
      assert.is_true((c:WriteMessage(mt, "spec says hi " .. mt)))
      local rmt, data, rerr = c:ReadMessage()
      assert.is_nil(rerr)
      assert.are.equal(mt, rmt)
      assert.are.equal("spec says hi " .. mt, data)
    end
  end)
end)

describe("examples/echo_server.lua -cert -key with examples/client.lua -tls (issue 10)", function()
  local server, port, cert

  lazy_setup(function()
    cert = support.self_signed_cert()
    port = support.free_port()
    server = support.spawn(("lua5.4 examples/echo_server.lua -addr 127.0.0.1:%d -cert %s -key %s")
      :format(port, cert.file, cert.key))
    assert(support.wait_port(port, 10), "the echo server did not start listening:\n" ..
      support.output(server))
  end)

  lazy_teardown(function()
    support.stop(server)
    cert.remove()
  end)

  it("the client dials wss:// with -tls -cafile, echoes ticks and closes on SIGINT", function()
    local client = support.spawn(("lua5.4 examples/client.lua -addr 127.0.0.1:%d -tls -cafile %s")
      :format(port, cert.file))
    finally(function() support.stop(client) end)
    support.wait_for(function()
      return #lines_with(support.output(client), "client recv: ") >= 2
    end, 15, 0.05)
    support.kill(client, "INT")
    assert.are.equal(0, support.wait(client, 10))
    local out = support.output(client)
    assert.matches("connecting to wss://127%.0%.0%.1:" .. port .. "/echo\n", out)
    assert.is_true(#lines_with(out, "client recv: ") >= 2, out)
    assert.matches("read: websocket: close 1000 %(normal%)", out)
  end)

  it("-url dials the URL given, and without -cafile the self-signed certificate is refused", function()
    local client = support.spawn(("lua5.4 examples/client.lua -url wss://127.0.0.1:%d/echo")
      :format(port))
    finally(function() support.stop(client) end)
    local status = support.wait(client, 15)
    local out = support.output(client)
    assert.are_not.equal(0, status, out)
    assert.matches("connecting to wss://127%.0%.0%.1:" .. port .. "/echo\n", out)
    assert.matches("dial:.*certificate signed by unknown authority", out)
  end)

  it("serves its page over HTTPS, pointing at wss://", function()
    local d = websocket.Dialer{ TLSClientConfig = { RootCAs = cert.file } }
    local c, resp, err = d:Dial("wss://127.0.0.1:" .. port .. "/echo")
    assert.is_nil(err)
    c:Close()
    assert.are.equal(0x0304, resp.TLS.Version)
    local page = support.sh_output(("curl -s --cacert %s https://127.0.0.1:%d/"):format(cert.file, port))
    assert.matches('const url = "wss://127%.0%.0%.1:' .. port .. '/echo"', page)
  end)
end)

describe("examples/command.lua (issue 11: gorilla's command example on luv)", function()
  local function dial_and_collect(port, send, want)
    local got = {}
    local c = assert(websocket.DefaultDialer:Dial(("ws://127.0.0.1:%d/ws"):format(port)))
    for _, line in ipairs(send) do assert(c:WriteMessage(websocket.TextMessage, line)) end
    while #got < want do
      local _, data, err = c:ReadMessage()
      if err then break end
      got[#got + 1] = data
    end
    return c, got
  end

  it("serves its page, and a command's stdin and stdout over a WebSocket; closing kills it", function()
    local port = support.free_port()
    local server = support.spawn(("lua5.4 examples/command.lua -addr 127.0.0.1:%d cat"):format(port))
    finally(function() support.stop(server) end)
    assert(support.wait_port(port, 10), support.output(server))
    local page = support.sh_output(("curl -s http://127.0.0.1:%d/"):format(port))
    assert.matches("<title>Command Example</title>", page, 1, true)
    local c, got = dial_and_collect(port, { "hello", "second line" }, 2)
    assert.are.same({ "hello", "second line" }, got)
    local cats = support.sh_output("pgrep -P " .. support.read_file(server.pidfile):match("%d+") .. " -x cat | wc -l")
    assert.are.equal("1", cats)
    c:Close()
    assert(support.wait_for(function()
      return support.sh_output("pgrep -P " .. server.pid .. " -x cat | wc -l") == "0"
    end, 5), "cat still runs after the WebSocket closed")
  end)

  it("sends stdout and stderr lines, then a normal close when the command ends", function()
    local port = support.free_port()
    local server = support.spawn(("lua5.4 examples/command.lua -addr 127.0.0.1:%d sh -c %s"):format(
      port, support.shell_quote("echo out1; echo err1 >&2; echo out2")))
    finally(function() support.stop(server) end)
    assert(support.wait_port(port, 10), support.output(server))
    local c, got = dial_and_collect(port, {}, 3)
    table.sort(got)
    assert.are.same({ "err1", "out1", "out2" }, got)
    local _, _, err = c:ReadMessage()
    assert.are.equal(1000, err and err.code, tostring(err))
    c:Close()
  end)
end)

describe("examples/filewatch.lua (issue 11: gorilla's filewatch example on luv's fs events)", function()
  it("shows the file, then pushes its new content as soon as it changes", function()
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write("first <version>\n")
    f:close()
    local port = support.free_port()
    local server = support.spawn(("lua5.4 examples/filewatch.lua -addr 127.0.0.1:%d %s"):format(
      port, support.shell_quote(path)))
    finally(function()
      support.stop(server)
      os.remove(path)
    end)
    assert(support.wait_port(port, 10), support.output(server))
    local page = support.sh_output(("curl -s http://127.0.0.1:%d/"):format(port))
    assert.matches('<pre id="fileData">first &lt;version&gt;', page, 1, true)
    local lastMod = page:match("lastMod=(%x+)")
    assert(lastMod, page)
    local c = assert(websocket.DefaultDialer:Dial(("ws://127.0.0.1:%d/ws?lastMod=%s"):format(port, lastMod)))
    finally(function() c:Close() end)
    websocket.Go(function()
      websocket.Sleep(0.3)
      local g = assert(io.open(path, "w"))
      g:write("second\n")
      g:close()
    end)
    c:SetReadDeadline(websocket.Now() + 5) -- gorilla's polling would take 10 s
    local t0 = websocket.Now()
    local _, data, err = c:ReadMessage()
    assert.is_nil(err)
    assert.are.equal("second\n", data) -- not the unchanged first content
    assert(websocket.Now() - t0 < 2, "took " .. websocket.Now() - t0 .. " s")
  end)
end)
