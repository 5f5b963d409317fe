-- The server's per-request path: r.Header stays in C until first used and Upgrade reads
-- an untouched one in C (header.lazy, w:_ws_headers); the target comes split and
-- decoded from C. Every answer must be what the Lua table gives: the same raw requests
-- go to a handler that upgrades at once (C answers) and to one that reads r.Header
-- first (the filled table), and must get the same response, byte for byte.
local support = require "support"
local websocket = support.websocket

lazy_setup(function() support.keepalive(true) end)
lazy_teardown(function() support.keepalive(false) end)

-- Send each raw request head of the file argv[2] (separated by "\0") on its own
-- connection to port argv[1]; print each response head on one line ("|" between
-- lines), or "closed" when the server closed without one.
local sender = [[
import socket, sys
port = int(sys.argv[1])
heads = open(sys.argv[2], "rb").read().split(b"\0")
for head in heads:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(head.replace(b"PORT", str(port).encode()))
    resp = b""
    while b"\r\n\r\n" not in resp:
        chunk = s.recv(4096)
        if not chunk:
            break
        resp += chunk
    s.close()
    if b"\r\n\r\n" not in resp:
        print("closed")
    else:
        print(resp.split(b"\r\n\r\n")[0].decode("latin-1").replace("\r\n", "|"))
]]

local function send_all(port, heads)
  local path = os.tmpname()
  local f = assert(io.open(path, "wb"))
  f:write(table.concat(heads, "\0"))
  f:close()
  local status, out = support.run_child(support.python(sender) .. " " .. port .. " " .. path, 30)
  os.remove(path)
  assert.are.equal(0, status, out)
  local lines = {}
  for line in out:gmatch("[^\n]+") do lines[#lines + 1] = line end
  return lines
end

local KEY = "dGhlIHNhbXBsZSBub25jZQ=="
local ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

-- A request head; fields replace the standard ones by name (false drops one), extra
-- lines go after them.
local function head(fields, extra, method, target)
  local std = {
    { "Host", "127.0.0.1:PORT" }, { "Upgrade", "websocket" }, { "Connection", "Upgrade" },
    { "Sec-WebSocket-Key", KEY }, { "Sec-WebSocket-Version", "13" },
  }
  local out = { (method or "GET") .. " " .. (target or "/ws") .. " HTTP/1.1" }
  for _, f in ipairs(std) do
    local v = f[2]
    if fields and fields[f[1]] ~= nil then v = fields[f[1]] end
    if v then out[#out + 1] = f[1] .. ": " .. v end
  end
  for _, line in ipairs(extra or {}) do out[#out + 1] = line end
  return table.concat(out, "\r\n") .. "\r\n\r\n"
end

-- name, head, the status it must get (and the Accept for a 101)
local cases = {
  { "a standard request", head(), 101 },
  { "Connection with more tokens", head { Connection = "keep-alive, Upgrade" }, 101 },
  { "tokens trimmed of every isspace byte", head { Connection = "\vUPGRADE\f" }, 101 },
  { "empty tokens around", head { Connection = ",, upgrade ,," }, 101 },
  { "a token that only starts with upgrade", head { Connection = "upgradex" }, 400 },
  { "Connection over two lines", head({ Connection = "keep-alive" }, { "Connection: upgrade" }), 101 },
  { "no Connection", head { Connection = false }, 400 },
  { "Upgrade in another case", head { Upgrade = "WebSocket" }, 101 },
  { "Upgrade not websocket", head { Upgrade = "websocket/13" }, 400 },
  { "versions 8 and 13", head { ["Sec-WebSocket-Version"] = "8, 13" }, 101 },
  { "version 8 only", head { ["Sec-WebSocket-Version"] = "8" }, 400 },
  { "no version", head { ["Sec-WebSocket-Version"] = false }, 400 },
  { "POST", head(nil, nil, "POST"), 405 },
  { "POST and no Connection (the Connection check comes first)", head({ Connection = false }, nil, "POST"), 400 },
  { "no key", head { ["Sec-WebSocket-Key"] = false }, 400 },
  { "a blank key", head { ["Sec-WebSocket-Key"] = "" }, 400 },
  { "two keys: the first counts", head(nil, { "Sec-WebSocket-Key: b3RoZXIga2V5IGhlcmUhIQ==" }), 101 },
  { "Origin of the same host", head(nil, { "Origin: http://127.0.0.1:PORT" }), 101 },
  { "Origin with user info and a path, any case", head(nil, { "Origin: HTTPS://u:p@127.0.0.1:PORT/x?y" }), 101 },
  { "Origin of another host", head(nil, { "Origin: http://evil.example" }), 403 },
  { "Origin null", head(nil, { "Origin: null" }), 403 },
  { "two Origins: the first counts", head(nil, { "Origin: http://evil.example", "Origin: http://127.0.0.1:PORT" }), 403 },
  { "no Host and an Origin with an empty host", head({ Host = false }, { "Origin: http://" }), 101 },
}

local function serve(touch, upgrader)
  local seen = {}
  local srv = assert(websocket.Listen("127.0.0.1:0", function(w, r)
    if touch then local _ = r.Header.anything end
    local c, err = upgrader:Upgrade(w, r)
    seen[#seen + 1] = c and "ok" or tostring(err)
    if c then c:Close() end
  end))
  return srv, seen
end

describe("Upgrade on an untouched r.Header (read in C) and on a filled one", function()
  local configs = {
    { "", {} }, -- Upgrade's one C call
    { " (EnableCompression)", { EnableCompression = true } }, -- C answers, Lua's way
    { " (a CheckOrigin that reads nothing)", { CheckOrigin = function() return true end } },
    { " (Subprotocols)", { Subprotocols = { "chat" } } },
  }
  for _, config in ipairs(configs) do
    local compression = config[2].EnableCompression or false
    local any_origin = config[2].CheckOrigin ~= nil
    it("give the same response to every request" .. config[1], function()
      local up = websocket.Upgrader(config[2])
      local heads = {}
      for i, case in ipairs(cases) do heads[i] = case[2] end
      local ext = head(nil, { "Sec-WebSocket-Extensions: x-webkit-deflate-frame",
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits" })
      heads[#heads + 1] = ext
      local srv1, seen1 = serve(false, up)
      finally(function() srv1:Close() end)
      local srv2, seen2 = serve(true, up)
      finally(function() srv2:Close() end)
      local got1 = send_all(srv1:Port(), heads)
      local got2 = send_all(srv2:Port(), heads)
      assert.are.equal(#heads, #got1)
      for i, case in ipairs(cases) do
        assert.are.equal(got2[i], got1[i], case[1])
        local want = case[3]
        if any_origin and want == 403 then want = 101 end
        assert.are.equal("HTTP/1.1 " .. want, got1[i]:sub(1, 12), case[1] .. ": " .. got1[i])
        if want == 101 then
          assert.is_truthy(got1[i]:find("Sec-WebSocket-Accept: " .. ACCEPT, 1, true), case[1])
        end
      end
      assert.are.equal(got2[#heads], got1[#heads])
      assert.are.equal(compression, got1[#heads]:find("permessage-deflate", 1, true) ~= nil)
      assert.is_truthy(support.wait_for(function() return #seen1 == #heads and #seen2 == #heads end, 5))
      assert.are.same(seen2, seen1)
    end)
  end

  it("take the key from r.Header as CheckOrigin left it", function()
    local up = websocket.Upgrader { CheckOrigin = function(r)
      r.Header = { ["sec-websocket-key"] = "" }
      return true
    end }
    local srv, seen = serve(false, up)
    finally(function() srv:Close() end)
    local got = send_all(srv:Port(), { head() })
    assert.are.equal("HTTP/1.1 400", got[1]:sub(1, 12))
    assert.is_truthy(support.wait_for(function() return #seen == 1 end, 5))
    assert.matches("Sec%-WebSocket%-Key", seen[1])
  end)

  it("and with a CheckOrigin that reads r.Header (which fills it)", function()
    local origin
    local up = websocket.Upgrader { CheckOrigin = function(r)
      origin = r.Header:Get("Origin")
      return true
    end }
    local srv = serve(false, up)
    finally(function() srv:Close() end)
    local got = send_all(srv:Port(), { head(nil, { "Origin: http://elsewhere" }) })
    assert.are.equal("HTTP/1.1 101", got[1]:sub(1, 12))
    assert.are.equal("http://elsewhere", origin)
  end)
end)

describe("the request a handler gets", function()
  it("has the target split and decoded, and r.Header filled on first use", function()
    local seen = {}
    local srv = assert(websocket.Listen("127.0.0.1:0", function(w, r)
      seen.path, seen.raw, seen.query, seen.uri = r.URL.Path, r.URL.RawPath, r.URL.RawQuery,
        r.RequestURI
      seen.host, seen.method, seen.proto, seen.tls = r.Host, r.Method, r.Proto, r.TLS
      seen.names = {}
      for k, v in pairs(r.Header) do seen.names[k] = v end
      seen.get = r.Header:Get("X-TWICE")
      seen.values = r.Header:Values("x-twice")
      w:Write("ok")
    end))
    finally(function() srv:Close() end)
    local got = send_all(srv:Port(), {
      "GET /a%20b%zz%4/%2F%41?x=%20&y HTTP/1.1\r\nHost: h.example\r\nX-Twice: 1\r\n" ..
      "x-twice: 2\r\nX-Empty:\r\nUser-Agent:  spaced out \t\r\n\r\n",
    })
    assert.are.equal("HTTP/1.1 200", got[1]:sub(1, 12))
    assert.are.equal("/a b%zz%4//A", seen.path)
    assert.are.equal("/a%20b%zz%4/%2F%41", seen.raw)
    assert.are.equal("x=%20&y", seen.query)
    assert.are.equal("/a%20b%zz%4/%2F%41?x=%20&y", seen.uri)
    assert.are.equal("h.example", seen.host)
    assert.are.equal("GET", seen.method)
    assert.are.equal("HTTP/1.1", seen.proto)
    assert.is_nil(seen.tls)
    assert.are.same({ host = "h.example", ["x-twice"] = { "1", "2" }, ["x-empty"] = "",
      ["user-agent"] = "spaced out" }, seen.names)
    assert.are.equal("1", seen.get)
    assert.are.same({ "1", "2" }, seen.values)
  end)

  it("without a Host header has r.Host \"\" and a query-less target", function()
    local seen = {}
    local srv = assert(websocket.Listen("127.0.0.1:0", function(w, r)
      seen.host, seen.query, seen.path = r.Host, r.URL.RawQuery, r.URL.Path
      seen.header = r.Header:Get("host")
      w:Write("ok")
    end))
    finally(function() srv:Close() end)
    local got = send_all(srv:Port(), { "GET /p HTTP/1.1\r\n\r\n" })
    assert.are.equal("HTTP/1.1 200", got[1]:sub(1, 12))
    assert.are.equal("", seen.host)
    assert.are.equal("", seen.query)
    assert.are.equal("/p", seen.path)
    assert.is_nil(seen.header)
  end)

  it("can have r.Header assigned to before anything read it", function()
    local seen = {}
    local srv = assert(websocket.Listen("127.0.0.1:0", function(w, r)
      r.Header["X-Added"] = "yes"
      seen.added, seen.ua = r.Header:Get("x-added"), r.Header:Get("User-Agent")
      w:Write("ok")
    end))
    finally(function() srv:Close() end)
    send_all(srv:Port(), { "GET / HTTP/1.1\r\nUser-Agent: ua\r\n\r\n" })
    assert.are.equal("yes", seen.added)
    assert.are.equal("ua", seen.ua)
  end)
end)

describe("Upgrade's misuse errors", function()
  it("name the argument and point at the caller", function()
    local up = websocket.Upgrader()
    local msgs = {}
    local srv = assert(websocket.Listen("127.0.0.1:0", function(w, r)
      local function try(fn)
        local ok, err = pcall(fn)
        msgs[#msgs + 1] = ok and "no error" or err
      end
      -- not tail calls: the message must point at these lines
      try(function() local _ = up.Upgrade({}, w, r) end)
      try(function() local _ = up:Upgrade({}, r) end)
      try(function() local _ = up:Upgrade(w, 5) end)
      try(function() local _ = up:Upgrade(w, r, 5) end)
      w:Write("ok")
    end))
    finally(function() srv:Close() end)
    send_all(srv:Port(), { head() })
    assert.is_truthy(support.wait_for(function() return #msgs == 4 end, 5))
    local here = "handshake_path_spec.lua:%d+: "
    assert.matches(here .. "bad self to 'Upgrade' %(luaws.Upgrader expected", msgs[1])
    assert.matches(here .. "bad argument to 'Upgrade' %(luaws.ResponseWriter expected%)", msgs[2])
    assert.matches(here .. "bad argument #2 to 'Upgrade' %(request expected%)", msgs[3])
    assert.matches(here .. "bad argument #3 to 'Upgrade' %(header table expected%)", msgs[4])
  end)
end)
