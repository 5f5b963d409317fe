-- Issue 10, "Proxies and URLs": Dialer.Proxy with HTTP CONNECT (against Debian's
-- tinyproxy, started here on 127.0.0.1 with its own config file, and against a scripted
-- fake proxy for exact bytes), Basic proxy credentials from the proxy URL's user info,
-- refusals as resp + error, websocket.ProxyFromEnvironment (Go's rules, in child
-- processes with their own environment, and as tables of Go's own test cases),
-- websocket.ProxyURL, ws://user:pass@ sending Authorization, and wss:// inside the
-- tunnel.
local support = require "support"
local websocket = support.websocket
local proxy = require "luaws.proxy"

lazy_setup(function() support.keepalive(true) end)
lazy_teardown(function() support.keepalive(false) end)

local q = support.shell_quote

-- tinyproxy on 127.0.0.1 on a free port, in the foreground with its own config (extra
-- config lines appended). Returns tp = {port, url, log()}; stop it with tp.stop().
local function tinyproxy(extra)
  assert(os.execute("command -v tinyproxy >/dev/null 2>&1"),
    "tinyproxy is not installed (scripts/deps.sh installs it)")
  local conf = os.tmpname()
  local port = support.free_port()
  local f = assert(io.open(conf, "w"))
  f:write(table.concat({
    "Listen 127.0.0.1", "Port " .. port, "Timeout 30", "LogLevel Connect", "MaxClients 20",
    "Allow 127.0.0.1", table.unpack(extra or {}),
  }, "\n"), "\n")
  f:close()
  local child = support.spawn("tinyproxy -d -c " .. q(conf))
  local tp = {
    port = port, url = "http://127.0.0.1:" .. port,
    log = function() return support.output(child) end,
    stop = function() support.stop(child); os.remove(conf) end,
  }
  if not support.wait_port(port, 10) then
    local out = support.output(child)
    tp.stop()
    error("tinyproxy did not start:\n" .. out)
  end
  return tp
end

-- spec/peers/fake_proxy.py with a script (see there) -> child, port
local function fake_proxy(script)
  local cjson = require "cjson"
  local child = support.spawn(("%s %s %s"):format(support.PYTHON,
    q(support.peer("fake_proxy.py")), q(cjson.encode(script))))
  local port = support.wait_for(function()
    return tonumber(support.output(child):match("^(%d+)\n"))
  end, 10)
  assert(port, "fake_proxy.py printed no port:\n" .. support.output(child))
  return child, port
end

local function proxy_result(child)
  assert(support.wait(child, 15), "fake_proxy.py did not finish:\n" .. support.output(child))
  return support.json_result(child, "fake proxy")
end

-- Messages both ways over c, one text and one binary (the echo server sends them back).
local function round_trip(c)
  local big = support.binary(200 * 1024, 7)
  assert(c:WriteMessage(websocket.TextMessage, "hello through the tunnel"))
  local mt, data, err = c:ReadMessage()
  assert.is_nil(err)
  assert.are.equal(websocket.TextMessage, mt)
  assert.are.equal("hello through the tunnel", data)
  assert(c:WriteMessage(websocket.BinaryMessage, big))
  mt, data, err = c:ReadMessage()
  assert.is_nil(err)
  assert.are.equal(websocket.BinaryMessage, mt)
  assert.is_nil(support.diff(data, big))
end

local function dialer(proxy_url, timeout)
  return websocket.Dialer { Proxy = websocket.ProxyURL(proxy_url), HandshakeTimeout = timeout or 10 }
end

describe("issue 10: Dial through tinyproxy", function()
  it("tunnels a WebSocket to a luaws server: messages both ways, CONNECT in the proxy's log", function()
    local srv, port, state = support.echo_server()
    finally(function() srv:Close() end)
    local tp = tinyproxy()
    finally(tp.stop)
    local c, resp, err = dialer(tp.url):Dial(support.url(port, "/via?x=1"))
    assert.is_nil(err)
    finally(function() c:Close() end)
    assert.are.equal(101, resp.StatusCode)
    assert.are.equal("101 Switching Protocols", resp.Status)
    round_trip(c)
    assert.is_truthy(tp.log():find("CONNECT 127.0.0.1:" .. port .. " HTTP/1.1", 1, true), tp.log())
    -- the server got the upgrade request through the tunnel, untouched by the proxy
    local r = state.requests[1]
    assert.are.equal("/via", r.URL.Path)
    assert.are.equal("127.0.0.1:" .. port, r.Host)
    assert.is_nil(r.Header:Get("Proxy-Authorization"))
    assert.are.equal("127.0.0.1:" .. tp.port, c:RemoteAddr()) -- TCP goes to the proxy
  end)

  describe("with BasicAuth", function()
    local srv, port, tp
    lazy_setup(function()
      srv, port = support.echo_server()
      tp = tinyproxy { "BasicAuth user s3cret.pass" }
    end)
    lazy_teardown(function()
      if tp then tp.stop() end
      if srv then srv:Close() end
    end)

    it("the right credentials (percent-escaped in the URL) open the tunnel", function()
      -- %65 is "e": the user info is unescaped before it is encoded
      local c, resp, err = dialer(("http://us%%65r:s3cret.pass@127.0.0.1:%d"):format(tp.port))
        :Dial(support.url(port))
      assert.is_nil(err)
      finally(function() c:Close() end)
      assert.are.equal(101, resp.StatusCode)
      round_trip(c)
    end)

    it("no credentials: nil, resp (407 and its headers), err (the status text, as gorilla)", function()
      local c, resp, err = dialer(tp.url):Dial(support.url(port))
      assert.is_nil(c)
      assert.are.equal(407, resp.StatusCode)
      assert.are.equal("407 Proxy Authentication Required", resp.Status)
      assert.are.equal('Basic realm="Tinyproxy"', resp.Header:Get("Proxy-Authenticate"))
      assert.are.equal("Proxy Authentication Required", tostring(err))
      assert.are_not.equal(websocket.ErrBadHandshake, err)
    end)

    it("wrong credentials: nil, resp, err (tinyproxy 1.11 answers them with 401)", function()
      local c, resp, err = dialer(("http://user:wrong@127.0.0.1:%d"):format(tp.port))
        :Dial(support.url(port))
      assert.is_nil(c)
      assert.are.equal(401, resp.StatusCode)
      assert.are.equal("Unauthorized", tostring(err))
    end)

    it("a user name without a password sends no credentials (as gorilla): 407", function()
      local c, resp = dialer(("http://user@127.0.0.1:%d"):format(tp.port)):Dial(support.url(port))
      assert.is_nil(c)
      assert.are.equal(407, resp.StatusCode)
    end)
  end)

  it("a port the proxy does not allow (ConnectPort): nil, resp (403), err", function()
    local srv, port = support.echo_server()
    finally(function() srv:Close() end)
    local other, other_port = support.echo_server()
    finally(function() other:Close() end)
    local tp = tinyproxy { "ConnectPort " .. port }
    finally(tp.stop)
    local c, resp, err = dialer(tp.url):Dial(support.url(other_port))
    assert.is_nil(c)
    assert.are.equal(403, resp.StatusCode)
    assert.are.equal("Access violation", tostring(err))
    assert.are.equal("403 Access violation", resp.Status)
    -- the allowed port goes through
    local c2, _, err2 = dialer(tp.url):Dial(support.url(port))
    assert.is_nil(err2)
    finally(function() c2:Close() end)
    round_trip(c2)
  end)
end)

describe("issue 10: the proxy snippet of docs/API.md", function()
  it("runs as written, through tinyproxy to a luaws echo server", function()
    local docs = assert(support.read_file("docs/API.md"))
    local section = assert(docs:match("\n### Proxies\n(.-)\n### "), "no ### Proxies section")
    local src = assert(section:match("```lua\n(.-)```"), "no Lua snippet under ### Proxies")
    local srv, port = support.echo_server()
    finally(function() srv:Close() end)
    local tp = tinyproxy()
    finally(tp.stop)
    local status, out = support.run_child(("%s %s %s"):format(support.lua(src), q(tp.url),
      q(support.url(port, "/echo"))), 20)
    assert.are.equal(0, status, out)
    assert.are.equal("1\thello\n", out)
    assert.is_truthy(tp.log():find("CONNECT 127.0.0.1:" .. port, 1, true), tp.log())
    -- and a refusal takes the snippet's error branch
    status, out = support.run_child(("%s %s %s"):format(support.lua(src),
      q("http://127.0.0.1:" .. support.free_port()), q(support.url(port, "/echo"))), 20)
    assert.are.equal(1, status, out)
    assert.matches("^dial:\tproxyconnect tcp: dial tcp 127%.0%.0%.1:%d+: connection refused\tnil\n$", out)
  end)
end)

describe("issue 10: proxy failures", function()
  it("a proxy that is not listening: a clear error, no resp", function()
    local dead = support.free_port()
    local c, resp, err = dialer("http://127.0.0.1:" .. dead):Dial("ws://127.0.0.1:1/")
    assert.is_nil(c)
    assert.is_nil(resp)
    assert.are.equal("proxyconnect tcp: dial tcp 127.0.0.1:" .. dead .. ": connection refused",
      tostring(err))
  end)

  it("a proxy name that does not resolve: a lookup error naming it", function()
    local c, resp, err = dialer("http://proxy.invalid:3128"):Dial("ws://127.0.0.1:1/")
    assert.is_nil(c)
    assert.is_nil(resp)
    assert.matches("^proxyconnect tcp: dial tcp proxy%.invalid:3128: lookup proxy%.invalid: ",
      tostring(err))
  end)

  it("a proxy that never answers CONNECT: HandshakeTimeout bounds the dial", function()
    local child, pport = fake_proxy { answer = {}, linger = 3 }
    finally(function() support.stop(child) end)
    local t0 = websocket.Now()
    local c, resp, err = dialer("http://127.0.0.1:" .. pport, 0.3):Dial("ws://127.0.0.1:1/")
    local took = websocket.Now() - t0
    assert.is_nil(c)
    assert.is_nil(resp)
    assert.is_true(err.timeout)
    assert.matches("i/o timeout", tostring(err))
    assert.is_true(took >= 0.25 and took < 2, "took " .. took .. " s")
  end)

  it("a proxy that answers 502 with headers: resp has them, err is the status text", function()
    local child, pport = fake_proxy { answer = { { 0,
      "HTTP/1.1 502 Bad Gateway\r\nX-Why: upstream down\r\nContent-Length: 4\r\n\r\nnope" } } }
    finally(function() support.stop(child) end)
    local c, resp, err = dialer("http://127.0.0.1:" .. pport):Dial("ws://127.0.0.1:1/")
    assert.is_nil(c)
    assert.are.equal(502, resp.StatusCode)
    assert.are.equal("502 Bad Gateway", resp.Status)
    assert.are.equal("upstream down", resp.Header:Get("X-Why"))
    assert.are.equal("Bad Gateway", tostring(err))
    -- nothing was sent after CONNECT: the upgrade request never left
    assert.are.equal("", proxy_result(child).after)
  end)

  it("a proxy that does not speak HTTP: an error, no resp", function()
    local child, pport = fake_proxy { answer = { { 0, "SSH-2.0-OpenSSH_9.2\r\n\r\n" } } }
    finally(function() support.stop(child) end)
    local c, resp, err = dialer("http://127.0.0.1:" .. pport):Dial("ws://127.0.0.1:1/")
    assert.is_nil(c)
    assert.is_nil(resp)
    assert.are.equal("proxy: malformed HTTP response", tostring(err))
  end)

  it("a proxy that closes without answering: an error, no resp", function()
    local child, pport = fake_proxy { answer = {}, linger = 0 }
    finally(function() support.stop(child) end)
    local c, resp, err = dialer("http://127.0.0.1:" .. pport):Dial("ws://127.0.0.1:1/")
    assert.is_nil(c)
    assert.is_nil(resp)
    assert.matches("connection closed during the handshake", tostring(err))
  end)

  it("proxy URLs luaws cannot use: https (for now), socks4, malformed", function()
    local cases = {
      { "https://127.0.0.1:3128", "proxy: unknown scheme: https" },
      { "socks4://127.0.0.1:1080", "proxy: unknown scheme: socks4" },
      { "HTTP://127.0.0.1:notaport", 'proxy: invalid proxy URL "HTTP://127.0.0.1:notaport"' },
      { "127.0.0.1:3128", 'proxy: invalid proxy URL "127.0.0.1:3128"' },
    }
    for _, case in ipairs(cases) do
      local c, resp, err = dialer(case[1]):Dial("ws://127.0.0.1:1/")
      assert.is_nil(c)
      assert.is_nil(resp)
      assert.are.equal(case[2], tostring(err))
    end
  end)
end)

-- microsocks (Debian's) on 127.0.0.1 on a free port; args: extra arguments (-u, -P)
local function microsocks(args)
  assert(os.execute("command -v microsocks >/dev/null 2>&1"),
    "microsocks is not installed (scripts/deps.sh installs it)")
  local port = support.free_port()
  local child = support.spawn(("microsocks -i 127.0.0.1 -p %d %s"):format(port, args or ""))
  local ms = { port = port, url = "socks5://127.0.0.1:" .. port,
    stop = function() support.stop(child) end }
  if not support.wait_port(port, 10) then
    local out = support.output(child)
    ms.stop()
    error("microsocks did not start:\n" .. out)
  end
  return ms
end

local function hex(s) return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end)) end

describe("issue 10: SOCKS5 proxies", function()
  local srv, port
  lazy_setup(function() srv, port = support.echo_server() end)
  lazy_teardown(function() if srv then srv:Close() end end)

  it("through microsocks: an IPv4 address and a name (resolved by the proxy), messages both ways", function()
    local ms = microsocks()
    finally(ms.stop)
    for _, host in ipairs { "127.0.0.1", "127.1" } do
      local c, resp, err = dialer(ms.url):Dial(("ws://%s:%d/socks"):format(host, port))
      assert.is_nil(err, host)
      assert.are.equal(101, resp.StatusCode)
      round_trip(c)
      assert.are.equal("127.0.0.1:" .. ms.port, c:RemoteAddr())
      c:Close()
    end
  end)

  it("microsocks with a user and password: right, wrong, none", function()
    local ms = microsocks("-u user -P s3cret")
    finally(ms.stop)
    local url = "socks5://user:s3cret@127.0.0.1:" .. ms.port
    local c, _, err = dialer(url):Dial(support.url(port))
    assert.is_nil(err)
    round_trip(c)
    c:Close()
    local at = "proxy: SOCKS5 proxy at 127.0.0.1:" .. ms.port
    local c2, resp, err2 = dialer("socks5://user:wrong@127.0.0.1:" .. ms.port):Dial(support.url(port))
    assert.is_nil(c2)
    assert.is_nil(resp)
    assert.are.equal(at .. " rejected username/password", tostring(err2))
    local c3, _, err3 = dialer(ms.url):Dial(support.url(port))
    assert.is_nil(c3)
    assert.are.equal(at .. " requires authentication", tostring(err3))
  end)

  it("the proxy cannot reach the server: its reply code as gorilla's text", function()
    local ms = microsocks()
    finally(ms.stop)
    local dead = support.free_port()
    local c, resp, err = dialer(ms.url):Dial("ws://127.0.0.1:" .. dead .. "/")
    assert.is_nil(c)
    assert.is_nil(resp)
    assert.are.equal("proxy: SOCKS5 proxy at 127.0.0.1:" .. ms.port ..
      " failed to connect: connection refused", tostring(err))
  end)

  it("a SOCKS5 proxy that is not listening: proxyconnect, with the default port 1080 named", function()
    local dead = support.free_port()
    local _, _, err = dialer("socks5://127.0.0.1:" .. dead):Dial("ws://127.0.0.1:1/")
    assert.are.equal("proxyconnect tcp: dial tcp 127.0.0.1:" .. dead .. ": connection refused",
      tostring(err))
    -- socks5h:// is socks5:// (the proxy resolves names either way), port 1080
    local _, _, e = dialer("socks5h://proxy.invalid", 5):Dial("ws://127.0.0.1:1/")
    assert.matches("^proxyconnect tcp: dial tcp proxy%.invalid:1080: lookup ", tostring(e))
  end)

  -- fake SOCKS5 proxy steps: read the greeting, answer, ...
  local function socks_fake(steps, extra)
    local script = { steps = steps }
    for k, v in pairs(extra or {}) do script[k] = v end
    return fake_proxy(script)
  end

  it("the bytes: greeting with user/password offered, RFC 1929 message, CONNECT by name", function()
    local child, pport = socks_fake({
      { "read", "socks_greeting" }, { "send", 0, "\5\2" },
      { "read", "socks_auth" }, { "send", 0, "\1\0" },
      { "read", "socks_connect" }, { "send", 0, "\5\1\0\1\0\0\0\0\0\0" } })
    finally(function() support.stop(child) end)
    -- user "us@er", password "p:ss", escaped in the URL
    local c, resp, err = dialer("socks5://us%40er:p%3Ass@127.0.0.1:" .. pport)
      :Dial("ws://example.com:8080/")
    assert.is_nil(c)
    assert.is_nil(resp)
    assert.are.equal("proxy: SOCKS5 proxy at 127.0.0.1:" .. pport ..
      " failed to connect: general failure", tostring(err))
    assert.are.same({ hex "\5\2\0\2", hex "\1\5us@er\4p:ss",
      hex("\5\1\0\3\11example.com" .. string.char(8080 >> 8, 8080 & 255)) },
      proxy_result(child).reads_hex)
  end)

  it("the bytes: no user info, IPv6 and IPv4-mapped targets, wss:// port 443", function()
    local cases = {
      { "ws://[2001:db8::1]:80/", "\5\1\0\4" .. ("\32\1\13\184" .. ("\0"):rep(11) .. "\1") .. "\0\80" },
      { "ws://[::ffff:10.1.2.3]:80/", "\5\1\0\1\10\1\2\3\0\80" },
      { "wss://10.0.0.1/", "\5\1\0\1\10\0\0\1\1\187" },
    }
    for _, case in ipairs(cases) do
      local child, pport = socks_fake({ { "read", "socks_greeting" }, { "send", 0, "\5\0" },
        { "read", "socks_connect" }, { "send", 0, "\5\2\0\1\0\0\0\0\0\0" } })
      finally(function() support.stop(child) end)
      local _, _, err = dialer("socks5://127.0.0.1:" .. pport):Dial(case[1])
      assert.matches("failed to connect: connection forbidden$", tostring(err))
      assert.are.same({ hex "\5\1\0", hex(case[2]) }, proxy_result(child).reads_hex, case[1])
    end
  end)

  it("replies split across reads, a bound name, then the server's bytes in the same read", function()
    local child, pport = socks_fake({
      { "read", "socks_greeting" }, { "send", 0, "\5" }, { "send", 0.05, "\0" },
      { "read", "socks_connect" }, { "send", 0, "\5\0\0" }, { "send", 0.05, "\3\4name" },
      { "send", 0.05, "\0\80HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n" ..
        "Connection: Upgrade\r\nSec-WebSocket-Accept: bogus\r\nX-Early: socks\r\n\r\n" } })
    finally(function() support.stop(child) end)
    local c, resp, err = dialer("socks5://127.0.0.1:" .. pport):Dial("ws://127.0.0.1:1/early")
    assert.is_nil(c)
    assert.are.equal(websocket.ErrBadHandshake, err)
    assert.are.equal(101, resp.StatusCode)
    assert.are.equal("socks", resp.Header:Get("X-Early"))
    assert.matches("^GET /early HTTP/1%.1\r\n", proxy_result(child).after)
  end)

  it("a tunnel through the fake proxy to the server", function()
    local child, pport = socks_fake({ { "read", "socks_greeting" }, { "send", 0, "\5\0" },
      { "read", "socks_connect" }, { "send", 0, "\5\0\0\1\127\0\0\1\0\80" } },
      { tunnel = port })
    finally(function() support.stop(child) end)
    local c, _, err = dialer("socks5://127.0.0.1:" .. pport):Dial(support.url(port))
    assert.is_nil(err)
    round_trip(c)
    c:Close()
  end)

  it("broken proxies: gorilla's messages", function()
    local cases = {
      { { { "read", "socks_greeting" } }, "failed to read greeting from SOCKS5 proxy at %s: EOF" },
      { { { "read", "socks_greeting" }, { "send", 0, "\5" } },
        "failed to read greeting from SOCKS5 proxy at %s: unexpected EOF" },
      { { { "read", "socks_greeting" }, { "send", 0, "\4\0" } },
        "SOCKS5 proxy at %s has unexpected version 4" },
      { { { "read", "socks_greeting" }, { "send", 0, "\5\0" }, { "read", "socks_connect" } },
        "failed to read connect reply from SOCKS5 proxy at %s: EOF" },
      { { { "read", "socks_greeting" }, { "send", 0, "\5\0" }, { "read", "socks_connect" },
        { "send", 0, "\5\0\0\9" } }, "got unknown address type 9 from SOCKS5 proxy at %s" },
      { { { "read", "socks_greeting" }, { "send", 0, "\5\0" }, { "read", "socks_connect" },
        { "send", 0, "\5\42\0\1" } }, "SOCKS5 proxy at %s failed to connect: unknown error" },
    }
    for i, case in ipairs(cases) do
      local child, pport = socks_fake(case[1], { linger = 0 })
      finally(function() support.stop(child) end)
      local c, resp, err = dialer("socks5://127.0.0.1:" .. pport):Dial("ws://127.0.0.1:1/")
      assert.is_nil(c)
      assert.is_nil(resp)
      assert.are.equal("proxy: " .. case[2]:format("127.0.0.1:" .. pport), tostring(err), "case " .. i)
    end
  end)

  it("a name longer than 255 bytes cannot go into a SOCKS5 request", function()
    local long = ("a"):rep(63) .. "." .. ("b"):rep(63) .. "." .. ("c"):rep(63) .. "." .. ("d"):rep(63) .. ".ex"
    local _, _, err = dialer("socks5://127.0.0.1:1"):Dial("ws://" .. long .. "/")
    assert.are.equal("proxy: destination host name too long: " .. long, tostring(err))
  end)
end)

describe("issue 10: the CONNECT exchange, byte for byte (fake proxy)", function()
  local srv, port
  lazy_setup(function() srv, port = support.echo_server() end)
  lazy_teardown(function() if srv then srv:Close() end end)

  local ok_200 = { { 0, "HTTP/1.1 200 Connection established\r\n\r\n" } }

  it("the request: CONNECT host:port, Host, Proxy-Authorization from escaped user info", function()
    local child, pport = fake_proxy { answer = ok_200, tunnel = port }
    finally(function() support.stop(child) end)
    -- "us@er" and "p:ss w%rd", escaped as a URL must carry them
    local url = ("http://us%%40er:p%%3Ass%%20w%%25rd@127.0.0.1:%d/ignored"):format(pport)
    local c, _, err = dialer(url):Dial(support.url(port, "/exact"))
    assert.is_nil(err)
    round_trip(c)
    c:Close()
    local got = proxy_result(child)
    assert.are.equal(("CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" ..
      "Proxy-Authorization: Basic dXNAZXI6cDpzcyB3JXJk\r\n\r\n"):format(port, port), got.head)
    assert.matches("^GET /exact HTTP/1%.1\r\nHost: 127%.0%.0%.1:" .. port .. "\r\n", got.after)
    assert.is_nil(got.after:find("Proxy-Authorization", 1, true))
  end)

  it("without user info: CONNECT and Host only; the port defaults to 80 for ws://", function()
    local child, pport = fake_proxy { answer = { { 0, "HTTP/1.1 403 Forbidden\r\n\r\n" } } }
    finally(function() support.stop(child) end)
    local c, resp = dialer("http://127.0.0.1:" .. pport):Dial("ws://example.com/x")
    assert.is_nil(c)
    assert.are.equal(403, resp.StatusCode)
    assert.are.equal("CONNECT example.com:80 HTTP/1.1\r\nHost: example.com:80\r\n\r\n",
      proxy_result(child).head)
  end)

  it("an IPv6 host goes in brackets", function()
    local child, pport = fake_proxy { answer = { { 0, "HTTP/1.1 403 Forbidden\r\n\r\n" } } }
    finally(function() support.stop(child) end)
    dialer("http://127.0.0.1:" .. pport):Dial("ws://[2001:db8::1]:8080/")
    assert.are.equal("CONNECT [2001:db8::1]:8080 HTTP/1.1\r\nHost: [2001:db8::1]:8080\r\n\r\n",
      proxy_result(child).head)
  end)

  it("an answer head split across reads opens the tunnel", function()
    local child, pport = fake_proxy { tunnel = port, answer = {
      { 0, "HTTP/1.0 2" }, { 0.05, "00 Connection established\r" }, { 0.05, "\nProxy-agent: fake\r\n" },
      { 0.05, "\r" }, { 0.05, "\n" } } }
    finally(function() support.stop(child) end)
    local c, resp, err = dialer("http://127.0.0.1:" .. pport):Dial(support.url(port))
    assert.is_nil(err)
    finally(function() c:Close() end)
    assert.are.equal(101, resp.StatusCode)
    assert.is_nil(resp.Header:Get("Proxy-agent")) -- resp is the server's, not the proxy's
    round_trip(c)
  end)

  it("bytes after the proxy's head, in the same read, are the server's answer", function()
    -- The end of the 200 and the start of a 101 come in one send, the rest of the 101
    -- later. The 101's accept key cannot be right (the proxy answers before the upgrade
    -- request is sent), so the dial ends in ErrBadHandshake with that 101 as resp: the
    -- early bytes went to the upgrade response's parser.
    local child, pport = fake_proxy { answer = {
      { 0, "HTTP/1.1 200 OK\r\n" },
      { 0.1, "\r\nHTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nX-Ear" },
      { 0.1, "ly: yes\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: bogus\r\n\r\n" } } }
    finally(function() support.stop(child) end)
    local c, resp, err = dialer("http://127.0.0.1:" .. pport):Dial("ws://127.0.0.1:1/early")
    assert.is_nil(c)
    assert.are.equal(websocket.ErrBadHandshake, err)
    assert.are.equal(101, resp.StatusCode)
    assert.are.equal("yes", resp.Header:Get("X-Early"))
    assert.are.equal("bogus", resp.Header:Get("Sec-WebSocket-Accept"))
    assert.matches("^GET /early HTTP/1%.1\r\n", proxy_result(child).after)
  end)
end)

describe("issue 10: Dialer.Proxy and websocket.ProxyURL", function()
  it("Proxy gets a request table; nil means no proxy", function()
    local srv, port = support.echo_server()
    finally(function() srv:Close() end)
    local seen
    local d = websocket.Dialer { Proxy = function(req) seen = req return nil end }
    local c, _, err = d:Dial(support.url(port, "/p?q=1"), { ["X-A"] = "b" })
    assert.is_nil(err)
    c:Close()
    assert.are.equal("GET", seen.Method)
    assert.are.equal("http", seen.URL.Scheme)
    assert.are.equal("127.0.0.1:" .. port, seen.URL.Host)
    assert.are.equal("/p", seen.URL.Path)
    assert.are.equal("q=1", seen.URL.RawQuery)
    assert.are.equal("b", seen.Header:Get("X-A"))
    assert.are.equal("127.0.0.1:" .. port, seen.Host)
  end)

  it("an error from Proxy is Dial's error; Proxy returning a table raises", function()
    local perr = websocket.Header() -- any value: it comes back as it is
    local d = websocket.Dialer { Proxy = function() return nil, perr end }
    local c, resp, err = d:Dial("ws://127.0.0.1:1/")
    assert.is_nil(c)
    assert.is_nil(resp)
    assert.are.equal(perr, err)
    d.Proxy = function() return {} end
    support.raises_matching(function() d:Dial("ws://127.0.0.1:1/") end,
      { "^[^\n]*issue10_proxy_spec%.lua:%d+: Dial: the Dialer's Proxy returned a table" })
  end)

  it("ProxyURL(u) gives u for every request; it needs a string", function()
    local f = websocket.ProxyURL("http://proxy.example:3128")
    assert.are.equal("http://proxy.example:3128", f({ URL = { Scheme = "http", Host = "a" } }))
    assert.are.equal("http://proxy.example:3128", f())
    support.raises_matching(function() websocket.ProxyURL(nil) end,
      { "bad argument #1 to 'ProxyURL' %(string expected, got nil%)" })
  end)

  it("DefaultDialer's Proxy is ProxyFromEnvironment, as gorilla's", function()
    assert.are.equal(websocket.ProxyFromEnvironment, websocket.DefaultDialer.Proxy)
    assert.are.equal(45, websocket.DefaultDialer.HandshakeTimeout)
  end)

end)

describe("issue 10: wss:// inside the tunnel", function()
  -- a self-signed certificate for 127.0.0.1 (and localhost), made with openssl
  local dir, cert, key
  lazy_setup(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. q(dir)))
    cert, key = dir .. "/cert.pem", dir .. "/key.pem"
    assert(os.execute(("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 " ..
      "-addext subjectAltName=IP:127.0.0.1,DNS:localhost -keyout %s -out %s >/dev/null 2>&1")
      :format(q(key), q(cert))), "openssl could not make a certificate")
  end)
  lazy_teardown(function() if dir then os.execute("rm -rf " .. q(dir)) end end)

  local function tls_echo_server()
    local up = websocket.Upgrader {}
    local srv = assert(websocket.Listen("127.0.0.1:0", function(w, r)
      local c = up:Upgrade(w, r)
      if not c then return end
      support.read_echo(c, { msgs = {} })
      c:Close()
    end, { TLS = { CertFile = cert, KeyFile = key } }))
    return srv, srv:Port()
  end

  it("TLS runs inside tinyproxy's tunnel: verified, messages both ways", function()
    local srv, port = tls_echo_server()
    finally(function() srv:Close() end)
    local tp = tinyproxy()
    finally(tp.stop)
    local d = websocket.Dialer { Proxy = websocket.ProxyURL(tp.url), HandshakeTimeout = 10,
      TLSClientConfig = { RootCAs = cert } }
    local c, resp, err = d:Dial(("wss://127.0.0.1:%d/tls"):format(port))
    assert.is_nil(err)
    finally(function() c:Close() end)
    assert.are.equal(101, resp.StatusCode)
    assert.is_truthy(resp.TLS, "resp.TLS: the connection state")
    round_trip(c)
    assert.is_truthy(tp.log():find("CONNECT 127.0.0.1:" .. port .. " HTTP/1.1", 1, true), tp.log())
  end)

  it("TLS runs inside a SOCKS5 tunnel too (microsocks)", function()
    local srv, port = tls_echo_server()
    finally(function() srv:Close() end)
    local ms = microsocks()
    finally(ms.stop)
    local d = websocket.Dialer { Proxy = websocket.ProxyURL(ms.url), HandshakeTimeout = 10,
      TLSClientConfig = { RootCAs = cert } }
    local c, resp, err = d:Dial(("wss://127.0.0.1:%d/tls"):format(port))
    assert.is_nil(err)
    finally(function() c:Close() end)
    assert.is_truthy(resp.TLS)
    round_trip(c)
  end)

  it("an unknown CA inside the tunnel is Dial's TLS error, not the proxy's", function()
    local srv, port = tls_echo_server()
    finally(function() srv:Close() end)
    local tp = tinyproxy()
    finally(tp.stop)
    local d = websocket.Dialer { Proxy = websocket.ProxyURL(tp.url), HandshakeTimeout = 10 }
    local c, resp, err = d:Dial(("wss://127.0.0.1:%d/"):format(port))
    assert.is_nil(c)
    assert.is_nil(resp)
    assert.matches("x509: certificate signed by unknown authority", tostring(err), 1, true)
  end)

  it("the CONNECT exchange stays plain: TLS starts after the proxy's 200 (fake proxy)", function()
    local srv, port = tls_echo_server()
    finally(function() srv:Close() end)
    local child, pport = fake_proxy { tunnel = port, answer = {
      { 0, "HTTP/1.1 200 Connection established\r" }, { 0.05, "\n\r\n" } } }
    finally(function() support.stop(child) end)
    local d = websocket.Dialer { Proxy = websocket.ProxyURL("http://u:p@127.0.0.1:" .. pport),
      HandshakeTimeout = 10, TLSClientConfig = { RootCAs = cert } }
    local c, _, err = d:Dial(("wss://127.0.0.1:%d/"):format(port))
    assert.is_nil(err)
    round_trip(c)
    c:Close()
    local got = proxy_result(child)
    assert.are.equal(("CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" ..
      "Proxy-Authorization: Basic dTpw\r\n\r\n"):format(port, port), got.head)
    -- the client's first bytes in the tunnel are a TLS handshake record, no plain GET
    assert.are.equal(0x16, got.after:byte(1))
    assert.is_nil(got.after:find("GET /", 1, true))
  end)

  it("ProxyFromEnvironment: HTTPS_PROXY carries wss://, HTTP_PROXY does not (child processes)", function()
    local srv, port = tls_echo_server()
    finally(function() srv:Close() end)
    local tp = tinyproxy()
    finally(tp.stop)
    local script = support.lua([[
local websocket = require "luaws"
local d = websocket.Dialer { Proxy = websocket.ProxyFromEnvironment, HandshakeTimeout = 10,
  TLSClientConfig = { RootCAs = arg[1], ServerName = "localhost" } }
local c, _, err = d:Dial(arg[2])
if not c then print("error", err) return end
assert(c:WriteMessage(websocket.TextMessage, "tls env"))
print("ok", (select(2, c:ReadMessage())))
c:Close()
]])
    -- "127.1" is 127.0.0.1 to the resolver and a name to Go's rules (see below)
    local url = ("wss://127.1:%d/"):format(port)
    local connect = "CONNECT 127.1:" .. port .. " HTTP/1.1"
    local unset = "env -u HTTP_PROXY -u http_proxy -u HTTPS_PROXY -u https_proxy -u NO_PROXY " ..
      "-u no_proxy -u REQUEST_METHOD "
    local status, out = support.run_child(unset .. q("HTTP_PROXY=http://127.0.0.1:" ..
      support.free_port()) .. " " .. q("HTTPS_PROXY=" .. tp.url) .. " " .. script .. " " ..
      q(cert) .. " " .. q(url), 20)
    assert.are.equal(0, status, out)
    assert.are.equal("ok\ttls env\n", out)
    assert.is_truthy(tp.log():find(connect, 1, true), tp.log())
    local before = select(2, tp.log():gsub(connect:gsub("%p", "%%%0"), ""))
    status, out = support.run_child(unset .. q("HTTP_PROXY=" .. tp.url) .. " " .. script .. " " ..
      q(cert) .. " " .. q(url), 20)
    assert.are.equal(0, status, out)
    assert.are.equal("ok\ttls env\n", out)
    assert.are.equal(before, select(2, tp.log():gsub(connect:gsub("%p", "%%%0"), "")))
  end)

  it("wss:// gives the proxy the port 443 by default", function()
    local child, pport = fake_proxy { answer = { { 0, "HTTP/1.1 403 Forbidden\r\n\r\n" } } }
    finally(function() support.stop(child) end)
    local c, resp = dialer("http://127.0.0.1:" .. pport):Dial("wss://example.com/x")
    assert.is_nil(c)
    assert.are.equal(403, resp.StatusCode)
    assert.are.equal("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
      proxy_result(child).head)
  end)
end)

describe("issue 10: ws://user:pass@host sends Authorization: Basic", function()
  local srv, port, state
  before_each(function() srv, port, state = support.echo_server() end)
  after_each(function() srv:Close() end)

  local function auth_seen(url, header)
    local c, _, err = websocket.DefaultDialer:Dial(url, header)
    assert.is_nil(err)
    c:Close()
    local r = state.requests[#state.requests]
    return r.Header:Get("Authorization"), r
  end

  it("user and password, unescaped, as Go's http.Client does for http URLs", function()
    local got, r = auth_seen(("ws://user:pass@127.0.0.1:%d/"):format(port))
    assert.are.equal("Basic dXNlcjpwYXNz", got)
    assert.are.equal("127.0.0.1:" .. port, r.Host) -- no user info in Host
    -- "us:er" cannot be written as such; "p@ss" can be escaped
    assert.are.equal("Basic dXM6ZXI6cEBzcw==",
      auth_seen(("ws://us%%3Aer:p%%40ss@127.0.0.1:%d/"):format(port)))
  end)

  it("a user name alone: an empty password", function()
    assert.are.equal("Basic dXNlcjo=", auth_seen(("ws://user@127.0.0.1:%d/"):format(port)))
  end)

  it("an Authorization header given to Dial wins", function()
    assert.are.equal("Bearer t0ken", auth_seen(("ws://user:pass@127.0.0.1:%d/"):format(port),
      { Authorization = "Bearer t0ken" }))
  end)

  it("without user info nothing is sent", function()
    assert.is_nil(auth_seen(support.url(port)))
  end)
end)

describe("issue 10: ProxyFromEnvironment in a process with its own environment", function()
  -- Go never proxies localhost or a loopback address, and Dial's address is 127.0.0.1:
  -- the children dial "127.1", which resolves to 127.0.0.1 but is a name to Go's rules.
  local child_src = [[
local websocket = require "luaws"
local d = os.getenv("LUAWS_SPEC_DIALER") == "plain" and websocket.Dialer{} or websocket.DefaultDialer
for i = 1, #arg do
  local c, resp, err = d:Dial(arg[i])
  if c then
    assert(c:WriteMessage(websocket.TextMessage, "env"))
    local _, data = c:ReadMessage()
    print(arg[i], "ok", data)
    c:Close()
  else
    print(arg[i], "error", tostring(err), resp and resp.StatusCode)
  end
end
]]
  local unset = "env -u HTTP_PROXY -u http_proxy -u HTTPS_PROXY -u https_proxy " ..
    "-u NO_PROXY -u no_proxy -u REQUEST_METHOD "

  local srv, port, tp, dead, script
  lazy_setup(function()
    srv, port = support.echo_server()
    tp = tinyproxy()
    dead = support.free_port()
    script = support.lua(child_src)
  end)
  lazy_teardown(function()
    if tp then tp.stop() end
    if srv then srv:Close() end
  end)

  -- Run the child with env (a list of "NAME=value") on urls; returns its output lines
  -- as {url = "ok env" | "error <err> <status>"}.
  local function run(env, urls)
    local vars, args = {}, {}
    for i, e in ipairs(env) do vars[i] = q(e) end
    for i, u in ipairs(urls) do args[i] = q(u) end
    local status, out = support.run_child(unset .. table.concat(vars, " ") .. " " .. script ..
      " " .. table.concat(args, " "), 20)
    assert.are.equal(0, status, out)
    local got = {}
    for line in out:gmatch("[^\n]+") do
      local u, rest = line:match("^(%S+)\t(.*)$")
      if u then got[u] = rest:gsub("\t", " ") end
    end
    return got, out
  end

  local function tunnelled(host)
    return tp.log():find("CONNECT " .. host .. ":" .. port .. " HTTP/1.1", 1, true) ~= nil
  end

  it("HTTP_PROXY carries ws:// to a name; localhost and 127.0.0.1 go direct", function()
    local name = ("ws://127.1:%d/"):format(port)
    local lo = ("ws://127.0.0.1:%d/"):format(port)
    local lh = ("ws://localhost:%d/"):format(port)
    local got, out = run({ "HTTP_PROXY=" .. tp.url }, { name, lo, lh })
    assert.are.same({ [name] = "ok env", [lo] = "ok env", [lh] = "ok env" }, got, out)
    assert.is_true(tunnelled("127.1"), tp.log())
    assert.is_false(tunnelled("127.0.0.1"), tp.log())
    assert.is_false(tunnelled("localhost"), tp.log())
  end)

  it("lower-case http_proxy, and host:port without a scheme, as Go", function()
    local name = ("ws://127.1:%d/lower"):format(port)
    local got, out = run({ "http_proxy=127.0.0.1:" .. tp.port }, { name })
    assert.are.equal("ok env", got[name], out)
  end)

  it("a dead HTTP_PROXY fails the dial; NO_PROXY entries bypass it", function()
    local name = ("ws://127.1:%d/"):format(port)
    local proxy_env = "HTTP_PROXY=http://127.0.0.1:" .. dead
    local got, out = run({ proxy_env }, { name })
    assert.are.equal("error proxyconnect tcp: dial tcp 127.0.0.1:" .. dead ..
      ": connection refused nil", got[name], out)
    for _, no_proxy in ipairs { "127.1", "example.com, 127.1", "127.1:" .. port, "*",
      " .1 , 127.1 ", "no_proxy=127.1" } do
      local env = no_proxy:find("=") and no_proxy or "NO_PROXY=" .. no_proxy
      got, out = run({ proxy_env, env }, { name })
      assert.are.equal("ok env", got[name], env .. ": " .. out)
    end
    -- entries that do not match it: another port, a leading dot (subdomains only)
    for _, no_proxy in ipairs { "127.1:1", ".127.1", "example.com" } do
      got, out = run({ proxy_env, "NO_PROXY=" .. no_proxy }, { name })
      assert.matches("^error proxyconnect tcp", got[name], 1, false)
    end
  end)

  it("http_proxy never makes libwebsockets proxy a dial itself: a Dialer without Proxy goes direct", function()
    -- lws 4.1.6 reads $http_proxy when luaws creates its client vhost and, unless told
    -- otherwise, sends every connect through it with its own CONNECT
    local name = ("ws://127.1:%d/"):format(port)
    local got, out = run({ "http_proxy=http://127.0.0.1:" .. dead, "LUAWS_SPEC_DIALER=plain" }, { name })
    assert.are.equal("ok env", got[name], out)
  end)

  it("HTTP_PROXY may name a SOCKS5 proxy", function()
    local ms = microsocks()
    finally(ms.stop)
    local name = ("ws://127.1:%d/"):format(port)
    local got, out = run({ "HTTP_PROXY=" .. ms.url }, { name })
    assert.are.equal("ok env", got[name], out)
    ms.stop() -- and it was used: without it the dial fails
    got, out = run({ "HTTP_PROXY=" .. ms.url }, { name })
    assert.matches("^error proxyconnect tcp", got[name], 1, false)
  end)

  it("HTTPS_PROXY is not used for ws://", function()
    local name = ("ws://127.1:%d/"):format(port)
    local got, out = run({ "HTTPS_PROXY=http://127.0.0.1:" .. dead }, { name })
    assert.are.equal("ok env", got[name], out)
  end)

  it("in a CGI process (REQUEST_METHOD set) HTTP_PROXY is refused, as Go", function()
    local name = ("ws://127.1:%d/"):format(port)
    local got, out = run({ "HTTP_PROXY=" .. tp.url, "REQUEST_METHOD=GET" }, { name })
    assert.are.equal("error refusing to use HTTP_PROXY value in CGI environment; " ..
      "see golang.org/s/cgihttpproxy nil", got[name], out)
  end)
end)

describe("issue 10: ProxyFromEnvironment's rules, Go's test tables (x/net/http/httpproxy)", function()
  -- proxy_test.go's UseProxyTests with its noProxy list: match = the proxy is used
  local no_proxy = "foobar.com, .barbaz.net, *.wildcard.io, 192.168.1.1, 192.168.1.2:81, " ..
    "192.168.1.3:80, 10.0.0.0/30, 2001:db8::52:0:1, [2001:db8::52:0:2]:443, " ..
    "[2001:db8::52:0:3]:80, 2002:db8:a::45/64"
  local use_proxy_tests = {
    { "localhost", false }, { "127.0.0.1", false }, { "127.0.0.2", false },
    { "[::1]", false }, { "[::2]", true },
    { "192.168.1.1", false }, { "192.168.1.2", true }, { "192.168.1.3", false },
    { "192.168.1.4", true }, { "10.0.0.2", false },
    { "[2001:db8::52:0:1]", false }, { "[2001:db8::52:0:2]", true },
    { "[2001:db8::52:0:3]", false }, { "[2002:db8:a::123]", false },
    { "[fe80::424b:c8be:1643:a1b6]", true },
    { "barbaz.net", true }, { "www.barbaz.net", false }, { "foobar.com", false },
    { "www.foobar.com", false }, { "foofoobar.com", true }, { "baz.com", true },
    { "localhost.net", true }, { "local.localhost", true }, { "barbarbaz.net", true },
    { "wildcard.io", true }, { "nested.wildcard.io", false }, { "awildcard.io", true },
  }

  local function uses_proxy(cfg, scheme, host)
    local got, err = proxy.proxy_func(cfg)({ Scheme = scheme, Host = host })
    assert.is_nil(err)
    return got ~= nil
  end

  it("TestUseProxy: every host of UseProxyTests", function()
    local wrong = {}
    for _, t in ipairs(use_proxy_tests) do
      local cfg = { HTTPProxy = "http://proxy.example", NoProxy = no_proxy }
      if uses_proxy(cfg, "http", t[1] .. ":80") ~= t[2] then wrong[#wrong + 1] = t[1] end
    end
    assert.are.same({}, wrong)
  end)

  it("TestAllNoProxy: NO_PROXY=* bypasses every host; TestInvalidNoProxy: ':1' is ignored", function()
    for _, t in ipairs(use_proxy_tests) do
      assert.is_false(uses_proxy({ HTTPProxy = "proxy", NoProxy = "*" }, "http", t[1] .. ":80"), t[1])
    end
    assert.is_true(uses_proxy({ HTTPProxy = "proxy", NoProxy = ":1" }, "http", "example.com:80"))
  end)

  it("TestProxyForURL: proxyForURLTests", function()
    -- { config, request URL's scheme and host, wanted proxy (nil: none), wanted error }
    local cases = {
      { { HTTPProxy = "127.0.0.1:8080" }, nil, "http://127.0.0.1:8080" },
      { { HTTPProxy = "cache.corp.example.com:1234" }, nil, "http://cache.corp.example.com:1234" },
      { { HTTPProxy = "cache.corp.example.com" }, nil, "http://cache.corp.example.com" },
      { { HTTPProxy = "localhost" }, nil, "http://localhost" },
      { { HTTPProxy = "https://cache.corp.example.com" }, nil, "https://cache.corp.example.com" },
      { { HTTPProxy = "http://127.0.0.1:8080" }, nil, "http://127.0.0.1:8080" },
      { { HTTPProxy = "https://127.0.0.1:8080" }, nil, "https://127.0.0.1:8080" },
      { { HTTPProxy = "socks5://127.0.0.1" }, nil, "socks5://127.0.0.1" },
      { { HTTPProxy = "foo://host" }, nil, "foo://host" },
      { { HTTPProxy = "http.proxy.tld", HTTPSProxy = "secure.proxy.tld" },
        { "http", "insecure.tld" }, "http://http.proxy.tld" },
      { { HTTPProxy = "http.proxy.tld", HTTPSProxy = "secure.proxy.tld" },
        { "https", "secure.tld" }, "http://secure.proxy.tld" },
      { { HTTPProxy = "http.proxy.tld", HTTPSProxy = "https://secure.proxy.tld" },
        { "https", "secure.tld" }, "https://secure.proxy.tld" },
      { { HTTPProxy = "http.proxy.tld" }, { "https", "secure.tld" }, nil },
      { { HTTPProxy = "http.proxy.tld" }, { "ftp", "insecure.tld" }, nil },
      { { HTTPProxy = "http://10.1.2.3:8080", CGI = true }, nil, nil,
        "refusing to use HTTP_PROXY value in CGI environment; see golang.org/s/cgihttpproxy" },
      { { HTTPSProxy = "https://secure.proxy.tld", CGI = true }, { "https", "secure.tld" },
        "https://secure.proxy.tld" },
      { {}, nil, nil },
      { { NoProxy = "example.com", HTTPProxy = "proxy" }, { "http", "example.com" }, nil },
      { { NoProxy = ".example.com", HTTPProxy = "proxy" }, { "http", "example.com" }, "http://proxy" },
      { { NoProxy = "ample.com", HTTPProxy = "proxy" }, { "http", "example.com" }, "http://proxy" },
      { { NoProxy = "example.com", HTTPProxy = "proxy" }, { "http", "foo.example.com" }, nil },
      { { NoProxy = ".foo.com", HTTPProxy = "proxy" }, { "http", "example.com" }, "http://proxy" },
      { { NoProxy = ".示例.com", HTTPProxy = "proxy" }, { "http", "www.示例.com" }, nil },
      { { NoProxy = "xn--fsq092h.com", HTTPProxy = "proxy" }, { "http", "www.示例.com" }, nil },
      { { NoProxy = "示例.com", HTTPProxy = "proxy" }, { "http", "www.xn--fsq092h.com" }, nil },
    }
    for i, case in ipairs(cases) do
      local req = case[2] or { "http", "example.com" }
      local got, err = proxy.proxy_func(case[1])({ Scheme = req[1], Host = req[2] })
      assert.are.equal(case[3], got, "case " .. i)
      assert.are.equal(case[4], err and tostring(err), "case " .. i)
    end
  end)

  it("more of Go's edges: ports, case, spaces, IPv4-mapped loopback, zones", function()
    local cases = {
      -- { NO_PROXY, request host, proxied? }
      { "foo.com:8080", "foo.com:8080", false },
      { "foo.com:8080", "foo.com:80", true },
      { "foo.com:8080", "foo.com", true },     -- the scheme's port, 80
      { "foo.com:80", "foo.com", false },
      { "FOO.com", "www.Foo.COM", false },     -- both sides lower-cased
      { "  foo.com  ,bar.com", "bar.com", false },
      { "", "[::ffff:127.0.0.1]:80", false },  -- loopback (IPv4-mapped)
      { "", "LOCALHOST", true },               -- Go compares "localhost" before lower-casing
      { "", "localhost:9999", false },
      { "10.0.0.0/8", "10.200.1.1", false },
      { "10.0.0.0/8", "11.0.0.1", true },
      { "10.0.0.0/8", "[::ffff:10.1.1.1]", false }, -- IPv4-mapped is IPv4
      { "192.168.1.1", "[::ffff:192.168.1.1]:80", false },
      { "010.0.0.1", "10.0.0.1", true },       -- not an IP (leading zero): a name
      { "fe80::1", "[fe80::1%25eth0]", false }, -- the zone is dropped (netip's AsSlice)
      { "example.com", "[1000::%25.example.com]:123", true }, -- an IP never matches a name
      { "[::1]", "example.com", true },
    }
    for _, case in ipairs(cases) do
      local got = uses_proxy({ HTTPProxy = "proxy", NoProxy = case[1] }, "http", case[2])
      assert.are.equal(case[3], got, ("NO_PROXY=%q, host %q"):format(case[1], case[2]))
    end
  end)
end)
