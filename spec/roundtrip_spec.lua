-- In-process server and client: payload sizes, concurrency, close codes, subprotocols,
-- headers, plain HTTP, refused upgrades, addresses.
local support = require "support"
local websocket = support.websocket

lazy_setup(function() support.keepalive(true) end)
lazy_teardown(function() support.keepalive(false) end)

local Dial = function(...) return websocket.DefaultDialer:Dial(...) end

local diff, binary = support.diff, support.binary

-- Valid UTF-8 text of exactly n bytes mixing 1-, 2-, 3- and 4-byte characters.
local function text(n)
  local chars = { "a", "\u{e9}", "\u{20ac}", "\u{1f600}", "Z", "\u{3b1}", "\u{4e2d}", " " }
  local out, len, i = {}, 0, 0
  while len < n do
    i = i + 1
    local c = chars[(i - 1) % #chars + 1]
    if len + #c > n then c = "x" end
    out[#out + 1] = c
    len = len + #c
  end
  return table.concat(out)
end

describe("round trip through the in-process echo server", function()
  local srv, port, state
  lazy_setup(function() srv, port, state = support.echo_server() end)
  lazy_teardown(function() if srv then srv:Close() end end)

  local sizes = { 0, 1, 125, 126, 65535, 65536, 1024 * 1024 }
  for _, kind in ipairs({ "text", "binary" }) do
    for _, n in ipairs(sizes) do
      it(("%s message of %d bytes comes back byte-exact"):format(kind, n), function()
        local payload = kind == "text" and text(n) or binary(n, n + 1)
        assert.are.equal(n, #payload)
        if kind == "text" then assert.is_not_nil(utf8.len(payload)) end
        local mtype = kind == "text" and websocket.TextMessage or websocket.BinaryMessage
        local c, resp, err = Dial(support.url(port, "/echo"))
        assert.is_nil(err)
        finally(function() if c then c:Close() end end)
        assert.are.equal(101, resp.StatusCode)
        local ok, werr = c:WriteMessage(mtype, payload)
        assert.is_nil(werr)
        assert.is_true(ok)
        local mt, data, rerr = c:ReadMessage()
        assert.is_nil(rerr)
        assert.are.equal(mtype, mt)
        assert.is_nil(diff(data, payload))
      end)
    end
  end

  it("several sizes in a row on one connection keep their order and types", function()
    local c, _, err = Dial(support.url(port))
    assert.is_nil(err)
    finally(function() c:Close() end)
    local sent = {}
    for i, n in ipairs(sizes) do
      local mt = i % 2 == 0 and websocket.TextMessage or websocket.BinaryMessage
      local p = mt == websocket.TextMessage and text(n) or binary(n, i)
      sent[i] = { mt, p }
      assert.is_true((c:WriteMessage(mt, p)))
    end
    for i = 1, #sizes do
      local mt, data, rerr = c:ReadMessage()
      assert.is_nil(rerr)
      assert.are.equal(sent[i][1], mt)
      assert.is_nil(diff(data, sent[i][2]))
    end
  end)

  it("200 concurrent clients exchange 100 messages each, all verified, then all close", function()
    local N, M = 200, 100
    local base_live = websocket.LiveConns()
    local ended_before = state.ended
    local done, failures, verified, clean_close = 0, {}, 0, 0
    for i = 1, N do
      websocket.Go(function()
        local ok, why = pcall(function()
          local c, _, err = Dial(support.url(port, "/c" .. i))
          if not c then error("dial: " .. tostring(err)) end
          for j = 1, M do
            local mt = j % 2 == 0 and websocket.BinaryMessage or websocket.TextMessage
            local msg = ("client %03d message %03d "):format(i, j) .. string.rep(string.char(65 + j % 26), (i * j) % 300)
            local wok, werr = c:WriteMessage(mt, msg)
            if not wok then error("write " .. j .. ": " .. tostring(werr)) end
            local rmt, data, rerr = c:ReadMessage()
            if rerr then error("read " .. j .. ": " .. tostring(rerr)) end
            if rmt ~= mt or data ~= msg then error(("message %d: got %q"):format(j, tostring(data))) end
            verified = verified + 1
          end
          assert(c:WriteMessage(websocket.CloseMessage,
            websocket.FormatCloseMessage(websocket.CloseNormalClosure, "done " .. i)))
          local _, _, rerr = c:ReadMessage()
          if websocket.IsCloseError(rerr, websocket.CloseNormalClosure) then
            clean_close = clean_close + 1
          else
            error("close: " .. tostring(rerr))
          end
          c:Close()
        end)
        if not ok then failures[#failures + 1] = ("client %d: %s"):format(i, tostring(why)) end
        done = done + 1
      end)
    end
    assert.is_truthy(support.wait_for(function() return done == N end, 90))
    assert.are.same({}, failures)
    assert.are.equal(N * M, verified)
    assert.are.equal(N, clean_close)
    -- every server-side handler saw its client's close and returned
    assert.is_truthy(support.wait_for(function() return state.ended - ended_before >= N end, 10))
    assert.is_truthy(support.wait_for(function() return websocket.LiveConns() <= base_live end, 10))
  end)
end)

describe("writes from a handler (batched within a loop turn once the scheduler resumes it)", function()
  -- A server whose handler waits for the client's "go" (so that the scheduler, where
  -- writes are batched, resumes it) and then runs push(c); returns the client's conn.
  local function after_go(push)
    local up = websocket.Upgrader()
    local srv = assert(websocket.Listen("127.0.0.1:0", function(w, r)
      local c = up:Upgrade(w, r)
      if not c then return end
      c:ReadMessage()
      push(c)
    end))
    finally(function() srv:Close() end)
    local c, _, err = Dial(support.url(srv:Port()))
    assert.is_nil(err)
    finally(function() c:Close() end)
    assert.is_true(c:WriteMessage(websocket.TextMessage, "go"))
    return c
  end

  it("300 messages of mixed sizes pushed in one turn arrive complete and in order, then the close", function()
    local sizes = { 1, 10, 200, 1024, 1025, 5000, 0, 70000, 3, 125, 126, 65535, 65536 }
    local function payload(i)
      if i % 2 == 0 then return ("t%05d"):format(i) end -- text
      local n = sizes[(i - 1) % #sizes + 1]
      local tag = ("%05d:"):format(i)
      if n <= #tag then return tag:sub(1, n) end
      return tag .. binary(n - #tag, i)
    end
    local c = after_go(function(sc)
      for i = 1, 300 do
        local mt = i % 2 == 0 and websocket.TextMessage or websocket.BinaryMessage
        assert(sc:WriteMessage(mt, payload(i)))
      end
      sc:WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, "done"))
      sc:ReadMessage() -- until the client answers the close
      sc:Close()
    end)
    for i = 1, 300 do
      local mt, data, rerr = c:ReadMessage()
      assert.is_nil(rerr, "message " .. i)
      assert.are.equal(i % 2 == 0 and websocket.TextMessage or websocket.BinaryMessage, mt)
      assert.is_nil(diff(data, payload(i)), "message " .. i)
    end
    local _, _, cerr = c:ReadMessage()
    assert.is_true(websocket.IsCloseError(cerr, 1000))
    assert.are.equal("done", cerr.text)
  end)

  it("a message written just before Close() still reaches the peer", function()
    local c = after_go(function(sc)
      sc:WriteMessage(websocket.TextMessage, "first")
      sc:WriteMessage(websocket.BinaryMessage, binary(3000, 7))
      sc:WriteMessage(websocket.TextMessage, "last words")
      sc:Close()
    end)
    local mt, data = c:ReadMessage()
    assert.are.equal("first", data)
    mt, data = c:ReadMessage()
    assert.are.equal(websocket.BinaryMessage, mt)
    assert.is_nil(diff(data, binary(3000, 7)))
    mt, data = c:ReadMessage()
    assert.are.equal("last words", data)
    local _, _, rerr = c:ReadMessage()
    assert.is_true(websocket.IsCloseError(rerr, 1006))
  end)
end)

describe("close codes and texts", function()
  it("client close 4001 'bye' reaches the server, and the server's echo reaches the client", function()
    local got = {}
    local up = websocket.Upgrader()
    local srv = assert(websocket.Listen("127.0.0.1:0", function(w, r)
      local c = assert(up:Upgrade(w, r))
      local _, _, err = c:ReadMessage()
      got.err = err
      c:Close()
    end))
    finally(function() srv:Close() end)
    local c, _, err = Dial(support.url(srv:Port()))
    assert.is_nil(err)
    finally(function() c:Close() end)
    assert.is_true((c:WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(4001, "bye"))))
    local mt, data, rerr = c:ReadMessage()
    assert.is_nil(mt)
    assert.is_nil(data)
    assert.is_truthy(support.wait_for(function() return got.err end, 5))
    -- server side
    assert.are.equal(4001, got.err.code)
    assert.are.equal("bye", got.err.text)
    assert.is_true(websocket.IsCloseError(got.err, 4001))
    assert.are.equal("websocket: close 4001: bye", tostring(got.err))
    -- client side: the answer to its own close (gorilla's default close handler echoes
    -- the code without the text)
    assert.is_not_nil(rerr)
    assert.are.equal(4001, rerr.code)
    assert.are.equal("", rerr.text)
    assert.is_false(websocket.IsUnexpectedCloseError(rerr, 4001))
  end)

  it("server close 4002 with a 123-byte text reaches the client, and the client's echo the server", function()
    local got = {}
    local reason = string.rep("r", 120) .. "end"
    local up = websocket.Upgrader()
    local srv = assert(websocket.Listen("127.0.0.1:0", function(w, r)
      local c = assert(up:Upgrade(w, r))
      c:ReadMessage() -- wait for the client's "go"
      got.write = { c:WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(4002, reason)) }
      local _, _, err = c:ReadMessage()
      got.err = err
      c:Close()
    end))
    finally(function() srv:Close() end)
    local c, _, err = Dial(support.url(srv:Port()))
    assert.is_nil(err)
    finally(function() c:Close() end)
    assert.is_true((c:WriteMessage(websocket.TextMessage, "go")))
    local _, _, rerr = c:ReadMessage()
    assert.is_not_nil(rerr)
    assert.are.equal(4002, rerr.code)
    assert.are.equal(reason, rerr.text)
    assert.is_truthy(support.wait_for(function() return got.err end, 5))
    assert.are.same({ true }, got.write)
    assert.are.equal(4002, got.err.code)
    assert.are.equal("", got.err.text) -- the client's answer carries the code only
  end)

  it("a close frame without a status reads as 1005 (no status)", function()
    local srv, port = support.echo_server()
    finally(function() srv:Close() end)
    local c, _, err = Dial(support.url(port))
    assert.is_nil(err)
    finally(function() c:Close() end)
    assert.is_true((c:WriteMessage(websocket.CloseMessage, "")))
    local _, _, rerr = c:ReadMessage()
    assert.is_not_nil(rerr)
    assert.are.equal(websocket.CloseNoStatusReceived, rerr.code)
  end)
end)

describe("subprotocols", function()
  local function server(protocols)
    local seen = {}
    local up = websocket.Upgrader { Subprotocols = protocols }
    local srv = assert(websocket.Listen("127.0.0.1:0", function(w, r)
      local c, err = up:Upgrade(w, r)
      if not c then seen.err = err return end
      seen.sub = c:Subprotocol()
      seen.offered = websocket.Subprotocols(r)
      while true do
        local mt, d, rerr = c:ReadMessage()
        if rerr then break end
        c:WriteMessage(mt, d)
      end
      c:Close()
    end))
    return srv, seen
  end

  it("the server's preference wins: Upgrader{b, a} with Dialer{a, b} gives b on both sides", function()
    local srv, seen = server({ "b", "a" })
    finally(function() srv:Close() end)
    local c, resp, err = websocket.Dialer { Subprotocols = { "a", "b" } }:Dial(support.url(srv:Port()))
    assert.is_nil(err)
    finally(function() c:Close() end)
    assert.are.equal("b", c:Subprotocol())
    assert.are.equal("b", seen.sub)
    assert.are.same({ "a", "b" }, seen.offered)
    assert.are.equal("b", resp.Header:Get("Sec-WebSocket-Protocol"))
  end)

  it("without a common subprotocol the connection still opens, with Subprotocol() == ''", function()
    local srv, seen = server({ "z" })
    finally(function() srv:Close() end)
    local c, resp, err = websocket.Dialer { Subprotocols = { "a", "b" } }:Dial(support.url(srv:Port()))
    assert.is_nil(err)
    finally(function() if c then c:Close() end end)
    assert.are.equal(101, resp.StatusCode)
    assert.are.equal("", c:Subprotocol())
    assert.are.equal("", seen.sub)
    assert.is_nil(resp.Header:Get("Sec-WebSocket-Protocol"))
    assert.is_true((c:WriteMessage(websocket.TextMessage, "still works")))
    local _, data = c:ReadMessage()
    assert.are.equal("still works", data)
  end)

  it("an Upgrader without Subprotocols answers a client that offers some with none", function()
    local srv, seen = server(nil)
    finally(function() srv:Close() end)
    local c, _, err = websocket.Dialer { Subprotocols = { "chat" } }:Dial(support.url(srv:Port()))
    assert.is_nil(err)
    finally(function() c:Close() end)
    assert.are.equal("", c:Subprotocol())
    assert.are.equal("", seen.sub)
  end)

  it("two connections in a row negotiate independently", function()
    local srv, seen = server({ "b", "a" })
    finally(function() srv:Close() end)
    local c1 = assert(websocket.Dialer { Subprotocols = { "a" } }:Dial(support.url(srv:Port())))
    finally(function() c1:Close() end)
    assert.are.equal("a", c1:Subprotocol())
    assert.are.equal("a", seen.sub)
    local c2 = assert(websocket.Dialer { Subprotocols = { "b" } }:Dial(support.url(srv:Port())))
    finally(function() c2:Close() end)
    assert.are.equal("b", c2:Subprotocol())
    assert.are.equal("b", seen.sub)
  end)
end)

describe("headers and requests", function()
  it("request headers from Dial reach r.Header (lookups ignore case)", function()
    local seen = {}
    local up = websocket.Upgrader()
    local srv = assert(websocket.Listen("127.0.0.1:0", function(w, r)
      seen.xtest = r.Header:Get("x-test")
      seen.xtest_upper = r.Header:Get("X-TEST")
      seen.ua = r.Header:Get("user-agent")
      seen.host = r.Host
      seen.method, seen.path, seen.query = r.Method, r.URL.Path, r.URL.RawQuery
      seen.is_upgrade = websocket.IsWebSocketUpgrade(r)
      local c = up:Upgrade(w, r)
      if c then c:Close() end
    end))
    finally(function() srv:Close() end)
    local port = srv:Port()
    local c, _, err = Dial(support.url(port, "/path/x?a=1&b=2"),
      { ["X-Test"] = "test value", ["User-Agent"] = "luaws-spec/1" })
    assert.is_nil(err)
    finally(function() if c then c:Close() end end)
    assert.are.equal("test value", seen.xtest)
    assert.are.equal("test value", seen.xtest_upper)
    assert.are.equal("luaws-spec/1", seen.ua)
    assert.are.equal("127.0.0.1:" .. port, seen.host)
    assert.are.equal("GET", seen.method)
    assert.are.equal("/path/x", seen.path)
    assert.are.equal("a=1&b=2", seen.query)
    assert.is_true(seen.is_upgrade)
  end)

  it("IsWebSocketUpgrade reads tokens in any case, from a Header or a plain table", function()
    assert.is_true(websocket.IsWebSocketUpgrade({ Header = {
      Connection = "keep-alive, Upgrade", UPGRADE = "WebSocket" } }))
    assert.is_true(websocket.IsWebSocketUpgrade({ Header = {
      connection = { "keep-alive", "upgrade" }, upgrade = "websocket" } }))
    assert.is_false(websocket.IsWebSocketUpgrade({ Header = {
      Connection = "keep-alive", Upgrade = "websocket" } }))
    assert.is_false(websocket.IsWebSocketUpgrade({ Header = { Connection = "Upgrade" } }))
  end)

  it("a standard response header (Set-Cookie) from Upgrade reaches resp.Header", function()
    local srv, port = support.echo_server { header = { ["Set-Cookie"] = "session=abc" } }
    finally(function() srv:Close() end)
    local c, resp, err = Dial(support.url(port))
    assert.is_nil(err)
    finally(function() c:Close() end)
    assert.are.equal("session=abc", resp.Header:Get("set-cookie"))
    assert.are.equal("session=abc", resp.Header:Get("SET-COOKIE"))
  end)

  it("a custom response header (X-Resp) from Upgrade reaches resp.Header", function()
    local srv, port = support.echo_server { header = { ["X-Resp"] = "resp value" } }
    finally(function() srv:Close() end)
    local c, resp, err = Dial(support.url(port))
    assert.is_nil(err)
    finally(function() c:Close() end)
    assert.are.equal(101, resp.StatusCode)
    assert.are.equal("resp value", resp.Header:Get("X-Resp"))
  end)

  it("r.RemoteAddr is 'IP:port' as in net/http", function()
    local seen
    local srv = assert(websocket.Listen("127.0.0.1:0", function(w, r)
      seen = r.RemoteAddr
      local c = websocket.Upgrader():Upgrade(w, r)
      if c then c:Close() end
    end))
    finally(function() srv:Close() end)
    local c, _, err = Dial(support.url(srv:Port()))
    assert.is_nil(err)
    finally(function() c:Close() end)
    assert.are.equal(c:LocalAddr(), seen)
  end)

  it("a plain HTTP GET to a handler that does w:Write('hello') answers 200 with that body", function()
    local srv = assert(websocket.Listen("127.0.0.1:0", function(w, r) w:Write("hello") end))
    finally(function() srv:Close() end)
    local cmd = support.python([[
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=10)
c.request("GET", "/anything")
r = c.getresponse()
print(r.status)
print(r.getheader("Content-Type"))
print(r.read().decode())
]])
    local status, out = support.run_child(cmd .. " " .. srv:Port(), 15)
    assert.are.equal(0, status)
    assert.are.equal("200\ntext/plain; charset=utf-8\nhello\n", out)
  end)

  it("an upgrade refused by CheckOrigin answers 403 and Dial returns ErrBadHandshake", function()
    local seen = {}
    local up = websocket.Upgrader { CheckOrigin = function(r) seen.checked = true return false end }
    local srv = assert(websocket.Listen("127.0.0.1:0", function(w, r)
      local c, err = up:Upgrade(w, r)
      seen.c, seen.err = c, err
    end))
    finally(function() srv:Close() end)
    local c, resp, err = Dial(support.url(srv:Port()))
    assert.is_nil(c)
    assert.are.equal(websocket.ErrBadHandshake, err)
    assert.is_not_nil(resp)
    assert.are.equal(403, resp.StatusCode)
    assert.is_true(seen.checked)
    assert.is_nil(seen.c)
    assert.matches("origin not allowed", tostring(seen.err))
  end)

  it("the Origin header given to Dial reaches r.Header unchanged", function()
    local seen
    local up = websocket.Upgrader { CheckOrigin = function() return true end }
    local srv = assert(websocket.Listen("127.0.0.1:0", function(w, r)
      seen = r.Header:Get("Origin")
      local c = up:Upgrade(w, r)
      if c then c:Close() end
    end))
    finally(function() srv:Close() end)
    local c, _, err = Dial(support.url(srv:Port()), { Origin = "http://example.com" })
    assert.is_nil(err)
    finally(function() c:Close() end)
    assert.are.equal("http://example.com", seen)
  end)

  it("the default CheckOrigin refuses a foreign Origin with 403", function()
    local srv, port = support.echo_server()
    finally(function() srv:Close() end)
    local c, resp, err = Dial(support.url(port), { Origin = "http://evil.example" })
    assert.is_nil(c)
    assert.are.equal(websocket.ErrBadHandshake, err)
    assert.are.equal(403, resp.StatusCode)
  end)

  it("the default CheckOrigin accepts an Origin naming the request's own host", function()
    local srv, port = support.echo_server()
    finally(function() srv:Close() end)
    local c, resp, err = Dial(support.url(port), { Origin = "http://127.0.0.1:" .. port })
    assert.is_nil(err)
    finally(function() c:Close() end)
    assert.are.equal(101, resp.StatusCode)
  end)
end)

describe("addresses", function()
  local addr = "^127%.0%.0%.1:(%d+)$"

  it("LocalAddr()/RemoteAddr() look like 127.0.0.1:PORT and match across the two ends", function()
    local seen = {}
    local up = websocket.Upgrader()
    local srv = assert(websocket.Listen("127.0.0.1:0", function(w, r)
      local c = assert(up:Upgrade(w, r))
      local mt, d = c:ReadMessage()
      seen.localaddr, seen.remoteaddr = c:LocalAddr(), c:RemoteAddr()
      c:WriteMessage(mt, d)
      c:ReadMessage()
      c:Close()
    end))
    finally(function() srv:Close() end)
    local port = srv:Port()
    local c, _, err = Dial(support.url(port))
    assert.is_nil(err)
    finally(function() c:Close() end)
    assert.is_true((c:WriteMessage(websocket.TextMessage, "x")))
    assert.are.equal("x", select(2, c:ReadMessage()))
    assert.matches(addr, c:LocalAddr())
    assert.are.equal("127.0.0.1:" .. port, c:RemoteAddr())
    assert.are.equal("127.0.0.1:" .. port, seen.localaddr)
    assert.are.equal(c:LocalAddr(), seen.remoteaddr)
    assert.are_not.equal(tostring(port), c:LocalAddr():match(addr))
  end)

  it("server-side LocalAddr()/RemoteAddr() are set right after Upgrade", function()
    local seen = {}
    local up = websocket.Upgrader()
    local srv = assert(websocket.Listen("127.0.0.1:0", function(w, r)
      local c = assert(up:Upgrade(w, r))
      seen.localaddr, seen.remoteaddr = c:LocalAddr(), c:RemoteAddr()
      c:ReadMessage()
      c:Close()
    end))
    finally(function() srv:Close() end)
    local port = srv:Port()
    local c, _, err = Dial(support.url(port))
    assert.is_nil(err)
    finally(function() c:Close() end)
    assert.are.equal("127.0.0.1:" .. port, seen.localaddr)
    assert.are.equal(c:LocalAddr(), seen.remoteaddr)
  end)
end)

describe("Server:Close", function()
  it("keeps established connections working", function()
    local srv, port = support.echo_server()
    local c, _, err = Dial(support.url(port))
    assert.is_nil(err)
    finally(function() c:Close() end)
    assert.is_true(srv:Close())
    assert.is_true((c:WriteMessage(websocket.TextMessage, "after Close")))
    local _, data, rerr = c:ReadMessage()
    assert.is_nil(rerr)
    assert.are.equal("after Close", data)
    assert.is_true(srv:Close()) -- twice is harmless
  end)

  it("stops accepting: a later Dial is refused", function()
    local srv, port, state = support.echo_server()
    srv:Close()
    websocket.Sleep(0.1)
    local c, resp, err = Dial(support.url(port))
    finally(function() if c then c:Close() end end)
    assert.is_nil(c)
    assert.is_nil(resp, "an HTTP answer came from a closed server: " ..
      tostring(resp and resp.StatusCode))
    assert.matches("connection refused", tostring(err))
    assert.are.equal(0, state.upgraded)
  end)

  it("releases the port: Listen on it works again", function()
    local srv, port = support.echo_server()
    srv:Close()
    websocket.Sleep(0.1)
    local srv2, err = websocket.Listen("127.0.0.1:" .. port, function() end)
    finally(function() if srv2 then srv2:Close() end end)
    assert.is_nil(err)
    assert.are.equal(port, srv2:Port())
  end)
end)
