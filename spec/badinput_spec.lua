-- Bad input and bad peers: argument errors, bad URLs and addresses, use after close,
-- protocol limits, failing handlers, a peer that vanishes mid-frame, garbage collection.
local support = require "support"
local websocket = support.websocket

lazy_setup(function() support.keepalive(true) end)
lazy_teardown(function() support.keepalive(false) end)

local Dial = function(...) return websocket.DefaultDialer:Dial(...) end

local raises = support.raises

describe("wrong argument types raise clear errors naming the argument", function()
  local srv, port, conn
  lazy_setup(function()
    srv, port = support.echo_server()
    conn = assert(Dial(support.url(port)))
  end)
  lazy_teardown(function()
    if conn then conn:Close() end
    if srv then srv:Close() end
  end)

  -- { description, function raising the error, patterns the message must contain }
  local cases = {
    { "Dial(123)", function() local _ = websocket.DefaultDialer:Dial(123) end,
      { "bad argument #1 to 'Dial'", "string expected, got number" } },
    { "Dial(url, 'header')", function() local _ = websocket.DefaultDialer:Dial("ws://127.0.0.1:1/", "h") end,
      { "bad argument #2 to 'Dial'", "header table expected" } },
    { "Dialer.Dial called with a dot", function() local _ = websocket.DefaultDialer.Dial("ws://127.0.0.1:1/") end,
      { "bad self to 'Dial'", "d:Dial" } },
    { "Dialer('x')", function() local _ = websocket.Dialer("x") end,
      { "bad argument #1 to 'Dialer'", "table expected" } },
    { "Dialer{HandshakeTimeout='x'}", function() local _ = websocket.Dialer { HandshakeTimeout = "x" } end,
      { "HandshakeTimeout" } },
    { "WriteMessage('x', 5)", function() local _ = conn:WriteMessage("x", 5) end,
      { "bad argument #1 to 'WriteMessage'", "unknown message type x" } },
    { "WriteMessage(TextMessage, 5)", function() local _ = conn:WriteMessage(websocket.TextMessage, 5) end,
      { "bad argument #2 to 'WriteMessage'", "string expected, got number" } },
    { "WriteMessage(3, 'x')", function() local _ = conn:WriteMessage(3, "x") end,
      { "bad argument #1 to 'WriteMessage'", "unknown message type 3" } },
    { "ReadMessage called with a dot", function() local _ = conn.ReadMessage() end,
      { "bad self to 'ReadMessage'", "luaws.Conn expected" } },
    { "Upgrader('x')", function() local _ = websocket.Upgrader("x") end,
      { "bad argument #1 to 'Upgrader'", "table expected" } },
    { "Upgrader{CheckOrigin=5}", function() local _ = websocket.Upgrader { CheckOrigin = 5 } end,
      { "CheckOrigin must be a function" } },
    { "Upgrader{Subprotocols='a'}", function() local _ = websocket.Upgrader { Subprotocols = "a" } end,
      { "Subprotocols must be a list" } },
    { "HandleFunc('echo', f) without '/'", function() local _ = websocket.HandleFunc("echo", print) end,
      { "bad argument #1 to 'HandleFunc'", "'/'" } },
    { "HandleFunc('/x', 5)", function() local _ = websocket.NewServeMux():HandleFunc("/x", 5) end,
      { "bad argument #2 to 'HandleFunc'", "function expected" } },
    { "Listen(addr, 5)", function() local _ = websocket.Listen("127.0.0.1:0", 5) end,
      { "bad argument #2 to 'Listen'", "function or ServeMux expected" } },
    { "Chan(-1)", function() local _ = websocket.Chan(-1) end,
      { "bad argument #1 to 'Chan'", "non%-negative integer" } },
    { "Chan(1.5)", function() local _ = websocket.Chan(1.5) end, { "bad argument #1 to 'Chan'" } },
    { "Chan('x')", function() local _ = websocket.Chan("x") end, { "bad argument #1 to 'Chan'" } },
    { "Go(5)", function() local _ = websocket.Go(5) end, { "bad argument #1 to 'Go'", "function expected" } },
    { "Sleep('x')", function() local _ = websocket.Sleep("x") end, { "bad argument #1 to 'Sleep'" } },
    { "After('x')", function() local _ = websocket.After("x") end, { "bad argument #1 to 'After'" } },
    { "NewTicker(0)", function() local _ = websocket.NewTicker(0) end,
      { "bad argument #1 to 'NewTicker'", "positive number" } },
    { "Select(5)", function() local _ = websocket.Select(5) end,
      { "bad argument #1 to 'Select'", "channel, SendCase or Default expected" } },
    { "Select() with no cases", function() local _ = websocket.Select() end, { "no cases" } },
    { "SendCase('x', 1)", function() local _ = websocket.SendCase("x", 1) end, { "channel expected" } },
    { "Chan.Recv on a non-channel", function() local _ = websocket.Chan().Recv({}) end, { "channel expected" } },
    { "FormatCloseMessage('x')", function() local _ = websocket.FormatCloseMessage("x") end,
      { "bad argument #1 to 'FormatCloseMessage'", "number expected" } },
    { "Notify('x')", function() local _ = websocket.Notify("x") end, { "channel expected" } },
    { "Notify(ch, 'SIGNOPE')", function() local _ = websocket.Notify(websocket.Chan(), "SIGNOPE") end,
      { "unknown signal name" } },
  }

  for _, case in ipairs(cases) do
    it(case[1], function() support.raises_matching(case[2], case[3]) end)
  end

  it("every one of these errors points at the caller's line, not into luaws", function()
    local inside = {}
    for _, case in ipairs(cases) do
      local msg = raises(case[2])
      if not msg:find("^spec/badinput_spec%.lua:%d+:") then
        inside[#inside + 1] = case[1] .. " -> " .. msg
      end
    end
    assert.are.same({}, inside)
  end)
end)

describe("bad URLs and unreachable servers", function()
  for _, url in ipairs({ "http://x", "ws://", "ws://host:99999", "ws://:80/", "ws://us er@host/", "ws://a%zz@host/", "" }) do
    it(("Dial(%q) returns nil, nil, err"):format(url), function()
      local c, resp, err = Dial(url)
      assert.is_nil(c)
      assert.is_nil(resp)
      assert.is_not_nil(err)
      assert.matches("malformed ws or wss URL", tostring(err))
    end)
  end

  it("Dial of a wss:// URL nobody listens on returns an error", function()
    local c, resp, err = Dial("wss://127.0.0.1:1/")
    assert.is_nil(c)
    assert.is_nil(resp)
    assert.matches("connection refused", tostring(err))
  end)

  it("a refused connection returns an error", function()
    local port = support.free_port()
    local c, resp, err = Dial(support.url(port))
    assert.is_nil(c)
    assert.is_nil(resp)
    assert.is_not_nil(err)
    assert.matches("dial tcp 127%.0%.0%.1:" .. port .. ": connection refused", tostring(err))
  end)

  it("an unknown host returns an error, and the loop keeps running during the lookup", function()
    local dial_returned, ran_during_dial = false, nil
    websocket.Go(function() ran_during_dial = not dial_returned end)
    local d = websocket.Dialer { HandshakeTimeout = 20 }
    local c, resp, err = d:Dial("ws://no-such-host.invalid/")
    dial_returned = true
    assert.is_nil(c)
    assert.is_nil(resp)
    assert.is_not_nil(err)
    assert.matches("no%-such%-host%.invalid", tostring(err))
    assert.is_true(ran_during_dial)
  end)
end)

describe("a server that accepts but never answers the handshake", function()
  it("makes Dial return a timeout error after HandshakeTimeout", function()
    local cmd = support.python([[
import socket, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(5)
print(s.getsockname()[1], flush=True)
c, _ = s.accept()
time.sleep(10)
]])
    local child = support.spawn(cmd)
    finally(function() support.stop(child) end)
    local port = support.wait_for(function()
      return tonumber(support.output(child):match("^(%d+)\n"))
    end, 10)
    assert.is_truthy(port, "the silent server gave no port: " .. support.output(child))
    local live = websocket.LiveConns()
    local t0 = websocket.Now()
    local c, resp, err = websocket.Dialer { HandshakeTimeout = 0.5 }:Dial(support.url(port))
    assert.is_nil(c)
    assert.is_nil(resp)
    assert.matches("i/o timeout", tostring(err))
    assert.is_true(err.timeout)
    assert.is_true(websocket.Now() - t0 >= 0.45)
    assert.are.equal(live, websocket.LiveConns())
  end)
end)

describe("Listen errors", function()
  it("on an address in use returns nil, err", function()
    local srv = assert(websocket.Listen("127.0.0.1:0"))
    finally(function() srv:Close() end)
    local srv2, err = websocket.Listen("127.0.0.1:" .. srv:Port(), function() end)
    finally(function() if srv2 then srv2:Close() end end)
    assert.is_nil(srv2)
    assert.matches("in use", tostring(err))
  end)

  for _, addr in ipairs({ "nonsense", "1.2.3.4.5:80", "127.0.0.1:99999", "127.0.0.1:http" }) do
    it(("on the unparsable address %q returns nil, err"):format(addr), function()
      local ok, srv, err = pcall(websocket.Listen, addr, function() end)
      assert.is_true(ok, "Listen raised: " .. tostring(srv))
      finally(function() if srv then srv:Close() end end)
      assert.is_nil(srv)
      assert.is_not_nil(err)
      assert.matches("^listen tcp ", tostring(err))
    end)
  end
end)

describe("a Conn after errors", function()
  local srv, port, state
  lazy_setup(function() srv, port, state = support.echo_server() end)
  lazy_teardown(function() if srv then srv:Close() end end)

  it("ReadMessage after Close returns an error (no crash, no hang)", function()
    local c = assert(Dial(support.url(port)))
    assert.is_true(c:Close())
    local mt, data, err = c:ReadMessage()
    assert.is_nil(mt)
    assert.is_nil(data)
    assert.is_not_nil(err)
    assert.is_true(c:Close()) -- a second Close is harmless
  end)

  it("WriteMessage after Close returns an error", function()
    local c = assert(Dial(support.url(port)))
    c:Close()
    local ok, err = c:WriteMessage(websocket.TextMessage, "after close")
    assert.is_nil(ok)
    assert.is_not_nil(err)
    local ok2, err2 = c:WriteMessage(websocket.TextMessage, "again")
    assert.is_nil(ok2)
    assert.is_not_nil(err2)
  end)

  it("after a read error ReadMessage returns the same error again", function()
    local c = assert(Dial(support.url(port)))
    c:Close()
    local _, _, err1 = c:ReadMessage()
    local _, _, err2 = c:ReadMessage()
    assert.is_not_nil(err1)
    assert.are.equal(err1, err2)
    local c2 = assert(Dial(support.url(port)))
    finally(function() c2:Close() end)
    c2:WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(4005, "x"))
    local _, _, e1 = c2:ReadMessage()
    local _, _, e2 = c2:ReadMessage()
    assert.are.equal(4005, e1.code)
    assert.are.equal(e1, e2)
  end)

  it("WriteMessage after sending a close frame returns ErrCloseSent", function()
    local c = assert(Dial(support.url(port)))
    finally(function() c:Close() end)
    assert.is_true((c:WriteMessage(websocket.CloseMessage,
      websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))))
    local ok, err = c:WriteMessage(websocket.TextMessage, "too late")
    assert.is_nil(ok)
    assert.are.equal(websocket.ErrCloseSent, err)
    -- a second close frame too
    ok, err = c:WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""))
    assert.is_nil(ok)
    assert.are.equal(websocket.ErrCloseSent, err)
    -- and still once the close handshake is over
    local _, _, rerr = c:ReadMessage()
    assert.is_true(websocket.IsCloseError(rerr, websocket.CloseNormalClosure))
    ok, err = c:WriteMessage(websocket.TextMessage, "much too late")
    assert.is_nil(ok)
    assert.are.equal(websocket.ErrCloseSent, err)
  end)

  it("a control frame payload over 125 bytes returns an error; 125 bytes is fine", function()
    local c = assert(Dial(support.url(port)))
    finally(function() c:Close() end)
    for _, mt in ipairs({ websocket.PingMessage, websocket.PongMessage, websocket.CloseMessage }) do
      local ok, err = c:WriteMessage(mt, string.rep("p", 126))
      assert.is_nil(ok)
      assert.matches("invalid control frame", tostring(err))
    end
    assert.is_true((c:WriteMessage(websocket.PingMessage, string.rep("p", 125))))
    -- the connection is still usable
    assert.is_true((c:WriteMessage(websocket.TextMessage, "still open")))
    local _, data, err = c:ReadMessage()
    assert.is_nil(err)
    assert.are.equal("still open", data)
  end)
end)

describe("failing handlers", function()
  local srv, port, echoed
  lazy_setup(function()
    local up = websocket.Upgrader()
    local mux = websocket.NewServeMux()
    echoed = 0
    mux:HandleFunc("/boom", function(w, r)
      local c = assert(up:Upgrade(w, r))
      c:ReadMessage()
      error("intended handler failure (spec)")
    end)
    mux:HandleFunc("/boom-early", function(w, r)
      error("intended handler failure before Upgrade (spec)")
    end)
    mux:HandleFunc("/late", function(w, r)
      websocket.Sleep(0.05) -- yields before Upgrade (lws 4.1 refused this; luaws allows it)
      local c = assert(up:Upgrade(w, r))
      c:WriteMessage(websocket.TextMessage, "late " .. r.Header:Get("X-Late"))
      c:ReadMessage()
      c:Close()
    end)
    mux:HandleFunc("/echo", function(w, r)
      local c = assert(up:Upgrade(w, r))
      while true do
        local mt, d, err = c:ReadMessage()
        if err then break end
        c:WriteMessage(mt, d)
        echoed = echoed + 1
      end
      c:Close()
    end)
    srv, port = assert(websocket.Listen("127.0.0.1:0", mux)), nil
    port = srv:Port()
  end)
  lazy_teardown(function() if srv then srv:Close() end end)

  it("a handler that raises does not stop the server", function()
    local c = assert(Dial(support.url(port, "/boom")))
    finally(function() c:Close() end)
    assert.is_true((c:WriteMessage(websocket.TextMessage, "trigger")))
    local mt, _, err = c:ReadMessage()
    assert.is_nil(mt)
    assert.is_not_nil(err)
    assert.is_true(err.close)
    -- a second client still gets echoes
    local c2, _, err2 = Dial(support.url(port, "/echo"))
    assert.is_nil(err2)
    finally(function() c2:Close() end)
    for i = 1, 3 do
      assert.is_true((c2:WriteMessage(websocket.TextMessage, "echo " .. i)))
      local _, data = c2:ReadMessage()
      assert.are.equal("echo " .. i, data)
    end
  end)

  it("the client of a handler that raised after Upgrade gets close 1011", function()
    local c = assert(Dial(support.url(port, "/boom")))
    finally(function() c:Close() end)
    c:WriteMessage(websocket.TextMessage, "trigger")
    local _, _, err = c:ReadMessage()
    assert.is_not_nil(err)
    assert.are.equal(websocket.CloseInternalServerErr, err.code)
  end)

  it("a handler that raises before Upgrade answers 500, and the server goes on", function()
    local c, resp, err = Dial(support.url(port, "/boom-early"))
    assert.is_nil(c)
    assert.are.equal(websocket.ErrBadHandshake, err)
    assert.are.equal(500, resp.StatusCode)
    local c2 = assert(Dial(support.url(port, "/echo")))
    finally(function() c2:Close() end)
    c2:WriteMessage(websocket.TextMessage, "ok")
    assert.are.equal("ok", select(2, c2:ReadMessage()))
  end)

  it("a handler that yields before Upgrade still upgrades, with the request headers intact", function()
    local c, resp, err = Dial(support.url(port, "/late"), { ["X-Late"] = "header-after-yield" })
    assert.is_nil(err)
    assert.are.equal(101, resp.StatusCode)
    finally(function() c:Close() end)
    assert.are.same({ websocket.TextMessage, "late header-after-yield" }, { c:ReadMessage() })
  end)
end)

describe("a peer that vanishes in the middle of a frame", function()
  it("gives the server-side reader a 1006 CloseError", function()
    local seen = {}
    local up = websocket.Upgrader()
    local srv = assert(websocket.Listen("127.0.0.1:0", function(w, r)
      local c = assert(up:Upgrade(w, r))
      local mt, data, err = c:ReadMessage()
      seen.mt, seen.data, seen.err = mt, data, err
      c:Close()
    end))
    finally(function() srv:Close() end)
    -- A raw client: a correct handshake, then a masked binary frame header announcing
    -- 100 bytes followed by only 10, then the socket is closed.
    local cmd = support.python([[
import base64, hashlib, os, socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
key = base64.b64encode(os.urandom(16)).decode()
s.sendall(("GET /raw HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
           % (sys.argv[1], key)).encode())
resp = b""
while b"\r\n\r\n" not in resp:
    chunk = s.recv(4096)
    if not chunk:
        break
    resp += chunk
accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
ok = resp.startswith(b"HTTP/1.1 101") and accept in resp
print("handshake", "ok" if ok else "bad")
mask = os.urandom(4)
payload = b"0123456789"
s.sendall(bytes([0x82, 0x80 | 100]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
s.close()
]])
    local status, out = support.run_child(cmd .. " " .. srv:Port(), 15)
    assert.are.equal(0, status, out)
    assert.are.equal("handshake ok\n", out)
    assert.is_truthy(support.wait_for(function() return seen.err end, 5))
    assert.is_nil(seen.mt)
    assert.is_nil(seen.data)
    assert.are.equal(websocket.CloseAbnormalClosure, seen.err.code)
    assert.is_true(websocket.IsUnexpectedCloseError(seen.err, websocket.CloseNormalClosure))
  end)
end)

describe("garbage collection", function()
  it("dropped, unclosed client connections are collected and their sockets closed", function()
    local srv, port, state = support.echo_server()
    finally(function() srv:Close() end)
    collectgarbage("collect")
    websocket.Sleep(0.05)
    local baseline = websocket.LiveConns()
    local ended_before = state.ended
    do
      local conns = {}
      for i = 1, 50 do
        local c, _, err = Dial(support.url(port, "/gc" .. i))
        assert.is_nil(err)
        assert.is_true((c:WriteMessage(websocket.TextMessage, "gc " .. i)))
        assert.are.equal("gc " .. i, select(2, c:ReadMessage()))
        conns[i] = c
      end
      -- 50 client ends and 50 server ends
      assert.are.equal(baseline + 100, websocket.LiveConns())
      conns = nil -- luacheck: ignore
    end
    local back = support.wait_for(function()
      collectgarbage("collect")
      collectgarbage("collect")
      return websocket.LiveConns() <= baseline
    end, 10, 0.05)
    assert.is_true(back, "LiveConns stayed at " .. websocket.LiveConns() .. ", baseline " .. baseline)
    assert.are.equal(baseline, websocket.LiveConns())
    -- every server-side handler saw its peer go away
    assert.is_truthy(support.wait_for(function() return state.ended - ended_before == 50 end, 5))
    -- and the server still works
    local c = assert(Dial(support.url(port)))
    finally(function() c:Close() end)
    c:WriteMessage(websocket.TextMessage, "after gc")
    assert.are.equal("after gc", select(2, c:ReadMessage()))
  end)
end)
