-- Regression specs for issue 9, defect 9: "errors are told apart by comparing message
-- strings; pass codes from C". A failed dial's conn says why as a kind from C
-- (c:_error() -> message, kind), and the reader tells a peer's 1009 close frame from
-- luaws's own read limit by the cause C reports, not by the close text.
local support = require "support"
local websocket = support.websocket
local core = require "luaws.core"
local sched = require "luaws.sched"

-- A raw TCP server (python3, stdlib) that answers a request head in one bad way.
local server_py = [=[
import socket, sys, time
port, mode = int(sys.argv[1]), sys.argv[2]
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", port))
ls.listen(8)
while True:
    s, _ = ls.accept()
    if mode == "close":  # accept, then close during the handshake
        s.close()
        continue
    head = b""
    while b"\r\n\r\n" not in head:
        b = s.recv(4096)
        if not b:
            break
        head += b
    if mode == "ok200":
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
    elif mode == "garbage":
        s.sendall(b"hello, this is not HTTP at all\r\n\r\n")
    elif mode == "silent":  # never answer
        time.sleep(30)
    s.close()
]=]

local function start_server(mode)
  local port = support.free_port()
  local child = support.spawn(support.python(server_py) .. " " .. port .. " " .. mode)
  assert.is_truthy(support.wait_port(port, 10), "the test server did not start")
  return child, port
end

-- core.dial as the Dialer drives it (lua/luaws/client.lua), returning the conn when
-- the dial has ended.
local function raw_dial(host, port, timeout)
  local c = core.dial(host, port, "/", host .. ":" .. port, nil, nil, {}, timeout or 10)
  while c:_state() == "connecting" do sched.wait(c) end
  return c
end

local function dial(url, timeout)
  local d = websocket.Dialer{ HandshakeTimeout = timeout or 10 }
  return d:Dial(url)
end

describe("issue 9 #9: error kinds come from C", function()
  lazy_setup(function() support.keepalive(true) end)
  lazy_teardown(function() support.keepalive(false) end)

  describe("a failed dial's kind (c:_error())", function()
    it("lookup: the host name does not resolve", function()
      local c = raw_dial("no-such-host.invalid", 80)
      assert.are.equal("closed", c:_state())
      local why, kind = c:_error()
      assert.is_string(why)
      assert.are.equal("lookup", kind)
      local conn, _, err = dial("ws://no-such-host.invalid/")
      assert.is_nil(conn)
      assert.are_not.equal(websocket.ErrBadHandshake, err)
      assert.is_falsy(err.timeout)
    end)

    it("connect: nothing listens on the port", function()
      local port = support.free_port()
      local c = raw_dial("127.0.0.1", port)
      local _, kind = c:_error()
      assert.are.equal("connect", kind)
      local conn, resp, err = dial(support.url(port))
      assert.is_nil(conn)
      assert.is_nil(resp)
      assert.are_not.equal(websocket.ErrBadHandshake, err)
    end)

    it("handshake: the server answers 200", function()
      local child, port = start_server("ok200")
      finally(function() support.stop(child) end)
      local c = raw_dial("127.0.0.1", port)
      local _, kind = c:_error()
      assert.are.equal("handshake", kind)
      local conn, resp, err = dial(support.url(port))
      assert.is_nil(conn)
      assert.are.equal(websocket.ErrBadHandshake, err)
      assert.are.equal(200, resp and resp.StatusCode)
    end)

    it("handshake: the server answers garbage", function()
      local child, port = start_server("garbage")
      finally(function() support.stop(child) end)
      local c = raw_dial("127.0.0.1", port)
      local _, kind = c:_error()
      assert.are.equal("handshake", kind)
      local conn, _, err = dial(support.url(port))
      assert.is_nil(conn)
      assert.are.equal(websocket.ErrBadHandshake, err)
    end)

    it("eof: the server accepts and closes during the handshake", function()
      local child, port = start_server("close")
      finally(function() support.stop(child) end)
      local c = raw_dial("127.0.0.1", port)
      local _, kind = c:_error()
      assert.are.equal("eof", kind)
      local conn, _, err = dial(support.url(port))
      assert.is_nil(conn)
      assert.is_truthy(err)
      assert.is_falsy(err.timeout)
    end)

    it("timeout: HandshakeTimeout passes against a server that never answers", function()
      local child, port = start_server("silent")
      finally(function() support.stop(child) end)
      local c = raw_dial("127.0.0.1", port, 0.3)
      local _, kind = c:_error()
      assert.are.equal("timeout", kind)
      local conn, _, err = dial(support.url(port), 0.3)
      assert.is_nil(conn)
      assert.is_true(err.timeout)
    end)
  end)

  describe("the reader", function()
    -- A server that sends one message, or a close frame, to each client.
    local function server(send)
      local upgrader = websocket.Upgrader()
      local srv = assert(websocket.Listen("127.0.0.1:0", function(w, r)
        local c = assert(upgrader:Upgrade(w, r))
        send(c)
        c:ReadMessage() -- until the client goes
        c:Close()
      end))
      return srv, srv:Port()
    end

    it("a peer's close frame 1009 'message too big' is a CloseError, not ErrReadLimit", function()
      local srv, port = server(function(c)
        assert(c:WriteControl(websocket.CloseMessage,
          websocket.FormatCloseMessage(1009, "message too big")))
      end)
      finally(function() srv:Close() end)
      support.run(function()
        local c = assert(dial(support.url(port)))
        local mt, data, err = c:ReadMessage()
        assert.is_nil(mt)
        assert.is_nil(data)
        assert.are_not.equal(websocket.ErrReadLimit, err)
        assert.are.equal(1009, err.code)
        assert.are.equal("message too big", err.text)
        assert.is_true(websocket.IsCloseError(err, 1009))
        c:Close()
      end)
    end)

    it("luaws's own read limit: ErrReadLimit", function()
      local srv, port = server(function(c)
        assert(c:WriteMessage(websocket.BinaryMessage, ("x"):rep(100)))
      end)
      finally(function() srv:Close() end)
      support.run(function()
        local c = assert(dial(support.url(port)))
        c:SetReadLimit(10)
        local mt, _, err = c:ReadMessage()
        assert.is_nil(mt)
        assert.are.equal(websocket.ErrReadLimit, err)
        c:Close()
      end)
    end)
  end)
end)
