-- Issue 9, "Safe defaults for bad input": options tables are checked (unknown fields,
-- fields luaws does not implement yet, wrong types, also when assigned after
-- construction), Listen and ListenAndServe refuse an address that is not a string, and
-- an IPv4 peer of a dual-stack listener shows as plain IPv4.
local support = require "support"
local websocket = support.websocket

lazy_setup(function() support.keepalive(true) end)
lazy_teardown(function() support.keepalive(false) end)

local raises = support.raises

local function f() end

-- An address that cannot be listened on: if ListenAndServe does not raise, it returns
-- nil, err instead of serving forever.
local BAD_PORT = "127.0.0.1:99999"

describe("issue 9: options tables are checked", function()
  -- { description, function raising the error, patterns the message must contain }
  local cases = {
    -- gorilla fields that luaws does not implement yet
    { "Dialer{NetDial=f}", function() websocket.Dialer { NetDial = f } end,
      { "^[^\n]*Dialer: NetDial is not implemented yet" } },
    { "Dialer{NetDialContext=f}", function() websocket.Dialer { NetDialContext = f } end,
      { "Dialer: NetDialContext is not implemented yet" } },
    { "Dialer{NetDialTLSContext=f}", function() websocket.Dialer { NetDialTLSContext = f } end,
      { "Dialer: NetDialTLSContext is not implemented yet" } },
    { "Dialer{Jar={}}", function() websocket.Dialer { Jar = {} } end,
      { "Dialer: Jar is not implemented yet" } },
    { "Dialer{TLSClientConfig=true}", function() websocket.Dialer { TLSClientConfig = true } end,
      { "Dialer: TLSClientConfig must be a table %(got boolean%)" } },
    { "Dialer{Jar={}}", function() websocket.Dialer { Jar = {} } end,
      { "Dialer: Jar is not implemented yet" } },
    { "Dialer{EnableCompression=1}", function() websocket.Dialer { EnableCompression = 1 } end,
      { "Dialer: EnableCompression must be a boolean %(got number%)" } },
    { "Dialer{CompressionOptions={Level=10}}",
      function() websocket.Dialer { CompressionOptions = { Level = 10 } } end,
      { "Dialer: CompressionOptions.Level must be an integer from %-2 to 9 %(got integer%)" } },
    { "Dialer{WriteBufferPool={}}", function() websocket.Dialer { WriteBufferPool = {} } end,
      { "Dialer: WriteBufferPool is not implemented yet" } },
    { "Upgrader{EnableCompression='yes'}", function() websocket.Upgrader { EnableCompression = "yes" } end,
      { "Upgrader: EnableCompression must be a boolean %(got string%)" } },
    { "Upgrader{CompressionOptions={ServerMaxWindowBits=16}}",
      function() websocket.Upgrader { CompressionOptions = { ServerMaxWindowBits = 16 } } end,
      { "Upgrader: CompressionOptions.ServerMaxWindowBits must be an integer from 8 to 15" } },
    { "Upgrader{CompressionOptions={MemLevel=0}}",
      function() websocket.Upgrader { CompressionOptions = { MemLevel = 0 } } end,
      { "Upgrader: CompressionOptions.MemLevel must be an integer from 1 to 9" } },
    { "Upgrader{CompressionOptions={ClientNoContextTakeover=1}}",
      function() websocket.Upgrader { CompressionOptions = { ClientNoContextTakeover = 1 } } end,
      { "Upgrader: CompressionOptions.ClientNoContextTakeover must be a boolean" } },
    { "Upgrader{CompressionOptions={Window=10}}",
      function() websocket.Upgrader { CompressionOptions = { Window = 10 } } end,
      { "Upgrader: unknown field 'Window' in CompressionOptions" } },
    { "Upgrader{CompressionOptions=true}",
      function() websocket.Upgrader { CompressionOptions = true } end,
      { "Upgrader: CompressionOptions must be a table %(got boolean%)" } },
    { "Upgrader{WriteBufferPool={}}", function() websocket.Upgrader { WriteBufferPool = {} } end,
      { "Upgrader: WriteBufferPool is not implemented yet" } },

    -- unknown fields, with a hint when only the case is wrong
    { "Dialer{HandshakeTimout=5}", function() websocket.Dialer { HandshakeTimout = 5 } end,
      { "Dialer: unknown field 'HandshakeTimout'" } },
    { "Dialer{handshakeTimeout=5}", function() websocket.Dialer { handshakeTimeout = 5 } end,
      { "Dialer: unknown field 'handshakeTimeout'", "did you mean HandshakeTimeout%?" } },
    { "Dialer{5}", function() websocket.Dialer { 5 } end, { "Dialer: unknown field 1" } },
    { "Upgrader{CheckOrign=f}", function() websocket.Upgrader { CheckOrign = f } end,
      { "Upgrader: unknown field 'CheckOrign'" } },
    { "Listen(addr, h, {ReadTimeout=5})",
      function() websocket.Listen("127.0.0.1:0", f, { ReadTimeout = 5 }) end,
      { "Listen: unknown field 'ReadTimeout'" } },
    { "Listen(addr, h, {Workers=2}) (an option of ListenAndServe only)",
      function() websocket.Listen("127.0.0.1:0", f, { Workers = 2 }) end,
      { "Listen: unknown field 'Workers'" } },
    { "ListenAndServe(addr, h, {ReadTimeout=5})",
      function() websocket.ListenAndServe(BAD_PORT, f, { ReadTimeout = 5 }) end,
      { "ListenAndServe: unknown field 'ReadTimeout'" } },

    -- wrong types
    { "Upgrader{WriteBufferSize='big'}", function() websocket.Upgrader { WriteBufferSize = "big" } end,
      { "Upgrader: WriteBufferSize must be a non%-negative number of bytes %(got string%)" } },
    { "Upgrader{WriteBufferSize=-1}", function() websocket.Upgrader { WriteBufferSize = -1 } end,
      { "Upgrader: WriteBufferSize must be a non%-negative number of bytes %(got number%)" } },
    { "Upgrader{ReadBufferSize='x'}", function() websocket.Upgrader { ReadBufferSize = "x" } end,
      { "Upgrader: ReadBufferSize must be" } },
    { "Upgrader{HandshakeTimeout='x'}", function() websocket.Upgrader { HandshakeTimeout = "x" } end,
      { "Upgrader: HandshakeTimeout must be a number of seconds" } },
    { "Upgrader{Error=5}", function() websocket.Upgrader { Error = 5 } end,
      { "Upgrader: Error must be a function %(got number%)" } },
    { "Upgrader{Subprotocols={'a', 5}}", function() websocket.Upgrader { Subprotocols = { "a", 5 } } end,
      { "Upgrader: Subprotocols must be a list of strings" } },
    { "Dialer{HandshakeTimeout='x'}", function() websocket.Dialer { HandshakeTimeout = "x" } end,
      { "Dialer: HandshakeTimeout must be a number of seconds %(got string%)" } },
    { "Dialer{HandshakeTimeout=0/0}", function() websocket.Dialer { HandshakeTimeout = 0 / 0 } end,
      { "Dialer: HandshakeTimeout must be a number of seconds" } },
    { "Dialer{WriteBufferSize='big'}", function() websocket.Dialer { WriteBufferSize = "big" } end,
      { "Dialer: WriteBufferSize must be" } },
    { "Dialer{ReadBufferSize=true}", function() websocket.Dialer { ReadBufferSize = true } end,
      { "Dialer: ReadBufferSize must be" } },
    { "Dialer{Subprotocols={5}}", function() websocket.Dialer { Subprotocols = { 5 } } end,
      { "Dialer: Subprotocols must be a list of strings" } },
    { "Listen(addr, h, {ReusePort='yes'})",
      function() websocket.Listen("127.0.0.1:0", f, { ReusePort = "yes" }) end,
      { "Listen: ReusePort must be a boolean %(got string%)" } },
    { "ListenAndServe(addr, h, {HandshakeTimeout='x'})",
      function() websocket.ListenAndServe(BAD_PORT, f, { HandshakeTimeout = "x" }) end,
      { "ListenAndServe: HandshakeTimeout must be a number of seconds" } },
    { "ListenAndServe(addr, h, {Workers=1.5})",
      function() websocket.ListenAndServe(BAD_PORT, f, { Workers = 1.5 }) end,
      { "ListenAndServe: Workers must be a whole number of at least 1" } },
    { "ListenAndServe(addr, h, {Workers='2'})",
      function() websocket.ListenAndServe(BAD_PORT, f, { Workers = "2" }) end,
      { "ListenAndServe: Workers must be a whole number of at least 1 %(got string%)" } },
    { "ListenAndServe(addr, h, 5)", function() websocket.ListenAndServe(BAD_PORT, f, 5) end,
      { "bad argument #3 to 'ListenAndServe' %(table expected, got number%)" } },
  }

  for _, case in ipairs(cases) do
    it(case[1] .. " raises", function() support.raises_matching(case[2], case[3]) end)
  end

  it("every one of these errors points at the caller's line, not into luaws", function()
    local inside = {}
    for _, case in ipairs(cases) do
      local ok, msg = pcall(case[2])
      if ok or not tostring(msg):find("^spec/issue9_options_spec%.lua:%d+:") then
        inside[#inside + 1] = case[1] .. " -> " .. (ok and "no error" or tostring(msg))
      end
    end
    assert.are.same({}, inside)
  end)

  it("fields assigned after construction are checked too, at the assignment", function()
    local d = websocket.Dialer { HandshakeTimeout = 5 }
    assert.matches("^spec/issue9_options_spec%.lua:%d+: Dialer: NetDial is not implemented yet",
      raises(function() d.NetDial = f end))
    assert.matches("Dialer: HandshakeTimeout must be a number of seconds",
      raises(function() d.HandshakeTimeout = "x" end))
    assert.matches("Dialer: unknown field 'Foo'", raises(function() d.Foo = 1 end))
    assert.are.equal(5, d.HandshakeTimeout) -- a refused assignment changes nothing
    assert.is_nil(d.NetDial)

    local u = websocket.Upgrader {}
    assert.matches("Upgrader: WriteBufferSize must be", raises(function() u.WriteBufferSize = "big" end))
    assert.matches("Upgrader: EnableCompression must be a boolean",
      raises(function() u.EnableCompression = 1 end))
    assert.matches("Upgrader: CompressionOptions.Level must be",
      raises(function() u.CompressionOptions = { Level = 1.5 } end))
    u.WriteBufferSize = 100
    assert.matches("Upgrader: WriteBufferSize must be", raises(function() u.WriteBufferSize = "big" end))
    assert.are.equal(100, u.WriteBufferSize)

    assert.matches("Dialer: NetDial is not implemented yet",
      raises(function() websocket.DefaultDialer.NetDial = f end))
  end)

  it("a Dialer with a NetDial never reaches Dial and connects directly", function()
    local srv, port = support.echo_server()
    finally(function() srv:Close() end)
    local d = websocket.Dialer {}
    local ok = pcall(function() d.NetDial = function() error("never called") end end)
    assert.is_false(ok)
    local c, _, err = d:Dial(support.url(port))
    assert.is_nil(err) -- the NetDial was refused, so this Dialer is a plain one
    c:Close()
  end)

  it("Proxy is a function option (issue 10): a function is taken, anything else raises", function()
    local d = websocket.Dialer { Proxy = websocket.ProxyFromEnvironment }
    assert.are.equal(websocket.ProxyFromEnvironment, d.Proxy)
    assert.matches("Dialer: Proxy must be a function %(got string%)",
      raises(function() d.Proxy = "http://127.0.0.1:3128" end))
    assert.matches("Dialer: Proxy must be a function %(got boolean%)",
      raises(function() websocket.Dialer { Proxy = false } end))
    assert.are.equal(websocket.ProxyFromEnvironment, d.Proxy)
  end)

  it("valid fields are accepted, readable, writable and listed by pairs", function()
    local u = websocket.Upgrader {
      CheckOrigin = function() return true end, Subprotocols = { "a" }, Error = f,
      WriteBufferSize = 1024, ReadBufferSize = 1024, HandshakeTimeout = 10,
      EnableCompression = false, -- gorilla's default: no compression
    }
    assert.are.equal(1024, u.WriteBufferSize)
    u.WriteBufferSize = 2048
    assert.are.equal(2048, u.WriteBufferSize)
    u.CheckOrigin = nil
    assert.is_nil(u.CheckOrigin)
    local d = websocket.Dialer {
      HandshakeTimeout = 45, Subprotocols = { "a", "b" }, ReadBufferSize = 1024,
      WriteBufferSize = 1024, EnableCompression = false,
    }
    local names = {}
    for k in pairs(d) do names[#names + 1] = k end
    table.sort(names)
    assert.are.same({ "EnableCompression", "HandshakeTimeout", "ReadBufferSize",
      "Subprotocols", "WriteBufferSize" }, names)
    assert.are.equal(45, websocket.DefaultDialer.HandshakeTimeout)
  end)
end)

describe("issue 9: Listen and ListenAndServe take an address string", function()
  for _, name in ipairs({ "Listen", "ListenAndServe" }) do
    for _, addr in ipairs({ 8080, false, {} }) do
      it(("%s(%s) raises"):format(name, tostring(addr):gsub(":.*", "")), function()
        local msg = raises(function() websocket[name](addr, f) end)
        assert.matches("^spec/issue9_options_spec%.lua:%d+: bad argument #1 to '" .. name ..
          "' %(\"host:port\" string expected, got " .. type(addr) .. "%)", msg)
      end)
    end
  end

  it("Listen still takes ':0', 'localhost:0', '127.0.0.1:0' and '[::1]:0'", function()
    for _, addr in ipairs({ ":0", "localhost:0", "127.0.0.1:0", "[::1]:0" }) do
      local srv, err = websocket.Listen(addr, f)
      assert(srv, addr .. ": " .. tostring(err))
      assert.is_true(srv:Port() > 0)
      srv:Close()
    end
  end)

  it("an address string that cannot be listened on still returns nil, err", function()
    for _, addr in ipairs({ "127.0.0.1", BAD_PORT, "example.com:0" }) do
      local srv, err = websocket.Listen(addr, f)
      assert.is_nil(srv)
      assert.matches("^listen tcp ", tostring(err))
    end
  end)
end)

describe("issue 9: an IPv4 peer of a dual-stack listener shows as plain IPv4", function()
  -- Listen(":0"), dial it at host (a literal address) and wait for the handler, which
  -- records r.RemoteAddr, c:RemoteAddr() and c:LocalAddr() -> the addresses, the client
  -- connection and the port.
  local function addresses_seen(host)
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
    local c, _, err = websocket.DefaultDialer:Dial("ws://" .. host .. ":" .. port .. "/")
    assert.is_nil(err)
    finally(function() c:Close() end)
    assert(support.wait_for(function() return seen.localaddr end, 5))
    return seen, c, port
  end

  it("r.RemoteAddr, c:RemoteAddr() and c:LocalAddr() are 127.0.0.1:PORT on Listen(':0')", function()
    local seen, c, port = addresses_seen("127.0.0.1")
    local ipv4 = "^127%.0%.0%.1:%d+$"
    assert.matches(ipv4, seen.request_remote)
    assert.matches(ipv4, seen.remote)
    assert.matches(ipv4, seen.localaddr)
    assert.are.equal(c:LocalAddr(), seen.request_remote)
    assert.are.equal(c:LocalAddr(), seen.remote)
    assert.are.equal("127.0.0.1:" .. port, seen.localaddr)
  end)

  it("an IPv6 peer still shows as [::1]:PORT", function()
    local seen, _, port = addresses_seen("[::1]")
    assert.matches("^%[::1%]:%d+$", seen.remote)
    assert.are.equal("[::1]:" .. port, seen.localaddr)
  end)
end)
