-- Issue 9, "Safe defaults for bad input": options tables are checked (unknown fields,
-- fields luaws does not implement yet, wrong types, also when assigned after
-- construction), Listen and ListenAndServe refuse an address that is not a string, and
-- an IPv4 peer of a dual-stack listener shows as plain IPv4.
local support = require "support"
local websocket = support.websocket

lazy_setup(function() support.keepalive(true) end)
lazy_teardown(function() support.keepalive(false) end)

-- Call fn and return the message of the error it raises (fails when it raises none).
local function raises(fn)
  local ok, err = pcall(fn)
  assert(not ok, "expected an error, but the call returned normally")
  return tostring(err)
end

local function f() end

-- An address that cannot be listened on: if ListenAndServe does not raise, it returns
-- nil, err instead of serving forever.
local BAD_PORT = "127.0.0.1:99999"

describe("issue 9: an IPv4 peer of a dual-stack listener shows as plain IPv4", function()
  it("r.RemoteAddr, c:RemoteAddr() and c:LocalAddr() are 127.0.0.1:PORT on Listen(':0')", function()
    local seen = {}
    local up = websocket.Upgrader()
    local srv = assert(websocket.Listen(":0", function(w, r)
      seen.request_remote = r.RemoteAddr
      local c = assert(up:Upgrade(w, r))
      seen.remote, seen.localaddr = c:RemoteAddr(), c:LocalAddr()
      c:ReadMessage()
      c:Close()
    end))
    finally(function() srv:Close() end)
    local port = srv:Port()
    local c, _, err = websocket.DefaultDialer:Dial("ws://127.0.0.1:" .. port .. "/")
    assert.is_nil(err)
    finally(function() c:Close() end)
    assert(support.wait_for(function() return seen.localaddr end, 5))
    local ipv4 = "^127%.0%.0%.1:%d+$"
    assert.matches(ipv4, seen.request_remote)
    assert.matches(ipv4, seen.remote)
    assert.matches(ipv4, seen.localaddr)
    assert.are.equal(c:LocalAddr(), seen.request_remote)
    assert.are.equal(c:LocalAddr(), seen.remote)
    assert.are.equal("127.0.0.1:" .. port, seen.localaddr)
  end)

  it("an IPv6 peer still shows as [::1]:PORT", function()
    local seen = {}
    local up = websocket.Upgrader()
    local srv = assert(websocket.Listen(":0", function(w, r)
      local c = assert(up:Upgrade(w, r))
      seen.remote, seen.localaddr = c:RemoteAddr(), c:LocalAddr()
      c:ReadMessage()
      c:Close()
    end))
    finally(function() srv:Close() end)
    local c, _, err = websocket.DefaultDialer:Dial("ws://[::1]:" .. srv:Port() .. "/")
    assert.is_nil(err)
    finally(function() c:Close() end)
    assert(support.wait_for(function() return seen.localaddr end, 5))
    assert.matches("^%[::1%]:%d+$", seen.remote)
    assert.are.equal("[::1]:" .. srv:Port(), seen.localaddr)
  end)
end)
