-- Regression spec for issue 9's close lifecycle: a server whose close handshake has
-- completed closes TCP at once (RFC 6455 §7.1.1), also when its handler then calls
-- Close() as gorilla's echo example does. The handler's Close() must not start a second,
-- slower close (FIN and a 2 s linger waiting for the peer) over the one under way.
local support = require "support"
local websocket = support.websocket

-- Opens n connections; on each: handshake, a masked close frame (1000), read until the
-- server's close frame has come, then keep the socket open without reading or closing.
local client_py = [=[
import socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
socks = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(4096)
    buf = buf.split(b"\r\n\r\n", 1)[1]
    s.sendall(bytes([0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8]))
    s.settimeout(5)
    while not buf.startswith(b"\x88\x02\x03\xe8"):
        buf += s.recv(4096)
    socks.append(s)
print("closed", n, flush=True)
time.sleep(4)
]=]

describe("issue 9: a completed close handshake closes TCP at once", function()
  lazy_setup(function() support.keepalive(true) end)
  lazy_teardown(function() support.keepalive(false) end)

  local function open_fds()
    local p = io.popen("ls /proc/" .. support.self_pid .. "/fd")
    local n = 0
    for _ in p:lines() do n = n + 1 end
    p:close()
    return n
  end

  it("even when the handler calls Close() after the close error", function()
    local srv, port, state = support.echo_server()
    finally(function() srv:Close() end)
    local N = 20
    local before = open_fds()
    local child = support.spawn(support.python(client_py) .. " " .. port .. " " .. N)
    finally(function() support.stop(child) end)
    assert(support.wait_for(function()
      return support.output(child):find("closed " .. N, 1, true)
    end, 10), "the client did not finish: " .. support.output(child))
    assert(support.wait_for(function() return state.ended == N end, 5))
    -- the client keeps its sockets open: a server that lingers holds its side for 2 s
    local after
    support.wait_for(function()
      after = open_fds()
      return after <= before
    end, 1.5)
    assert(after <= before, ("%d descriptors open before the connections, %d after 1.5 s"):format(before, after))
  end)
end)
