-- Issue 10: TLS on luaws's own sockets (src/tls.c, lua/luaws/tls.lua): Listen's TLS
-- option and ListenAndServeTLS (HTTPS and wss:// on one port), the Dialer's
-- TLSClientConfig for wss://, r.TLS and resp.TLS as Go's tls.ConnectionState, Go's error
-- texts.
--
-- Certificates are made at run time with the openssl tool (spec/tls_certs.lua): a test
-- CA, a server certificate for localhost and 127.0.0.1, one by an intermediate CA, a
-- client certificate, a self-signed one, an expired one (openssl ca -startdate) and one
-- for example.com.
--
--   server: an HTTPS page and a WebSocket on one port, r.TLS; TLS 1.2 and 1.3 clients;
--     ALPN (http/1.1; only h2: no_application_protocol); Min/MaxVersion; several
--     certificates picked by SNI; a certificate file's intermediate sent; a 5 MB HTTPS
--     response then close_notify; Go's 400 for plain HTTP; ListenAndServeTLS in a child
--     until SIGTERM; Workers = 2 over TLS; ClientAuth 1..4 with ClientCAs (file, hashed
--     directory); bad files: clear errors, an encrypted key never prompts.
--   client: RootCAs (file, hashed directory), resp.TLS's fields; unknown authority,
--     expired, wrong host (URL host, ServerName, ServerName = ""), ServerName override,
--     InsecureSkipVerify; a plain HTTP server, a plain luaws server, a silent server
--     (HandshakeTimeout, no busy wait), an alert, a TLS server on ws://; Python's
--     websockets over TLS; Node's https.
--   bytes: 0 B .. 16 MiB both ways; a slow reader (also with a 64 KiB send buffer in a
--     network namespace, so ciphertext sends are cut short); 50 concurrent connections;
--     a server that writes and closes right after the upgrade; close codes both ways, a
--     write after the close handshake, close_notify.
--   Node's ws (spec/peers/node) over TLS both ways, with and without compression.
--
-- Peers: spec/peers/tls_peer.py (Python's ssl: HTTPS GETs with a chosen version, ALPN or
-- client certificate, a raw WebSocket over TLS that checks close_notify, a plain HTTP
-- request, servers that never answer, answer HTTP or an alert), spec/peers/slow_reader.py
-- --tls, py_server.py --tls, node/peer.js --tls/--cafile. The interop over TLS with
-- Python websockets and gorilla in both roles is in spec/interop_spec.lua.
--
-- Run from the repository root: busted --lua=lua5.4 spec/issue10_tls_spec.lua
local support = require "support"
local websocket = support.websocket
local tls_certs = require "tls_certs"
local cjson = require "cjson"

local PYTHON = support.PYTHON
local q = support.shell_quote
local TLS_PEER = support.peer("tls_peer.py")
local SLOW_READER = support.peer("slow_reader.py")

local certs

lazy_setup(function()
  support.keepalive(true)
  certs = tls_certs.make()
end)
lazy_teardown(function()
  support.keepalive(false)
  if certs then certs.remove() end
end)

-- helpers ------------------------------------------------------------------------------

-- The server's TLS settings: the CA-signed certificate for localhost and 127.0.0.1, plus
-- the fields of extra.
local function server_tls(extra)
  local t = { CertFile = certs.server, KeyFile = certs.server_key }
  for k, v in pairs(extra or {}) do t[k] = v end
  return t
end

-- An echo handler that also serves /page (a plain HTTP page that shows r.TLS) and
-- records each request's r in seen.requests.
local function echo_handler(seen)
  local upgrader = websocket.Upgrader{}
  return function(w, r)
    if seen then seen.requests[#seen.requests + 1] = r end
    if r.URL.Path == "/page" then
      local t = r.TLS or {}
      w:Header():Set("Content-Type", "text/plain")
      w:Write(("page over TLS: version %s, alpn %q, peer %s"):format(tostring(t.Version),
        tostring(t.NegotiatedProtocol), t.PeerCertificates and t.PeerCertificates[1] and
        t.PeerCertificates[1].Subject or "none"))
      return
    end
    local c = upgrader:Upgrade(w, r)
    if not c then return end
    while true do
      local mt, data, err = c:ReadMessage()
      if not mt then
        if seen then seen.read_errs[#seen.read_errs + 1] = err end
        break
      end
      if not c:WriteMessage(mt, data) then break end
    end
    c:Close()
  end
end

-- A TLS echo server on 127.0.0.1:0 (closed when the test ends) -> srv, port, seen.
local function tls_server(extra, handler)
  local seen = { requests = {}, read_errs = {} }
  local srv, err = websocket.Listen("127.0.0.1:0", handler or echo_handler(seen),
    { TLS = server_tls(extra) })
  assert(srv, "Listen with TLS: " .. tostring(err))
  finally(function() srv:Close() end)
  return srv, srv:Port(), seen
end

local function wss(port, path, host)
  return ("wss://%s:%d%s"):format(host or "127.0.0.1", port, path or "/")
end

-- Dial url with a Dialer of these TLS settings (and HandshakeTimeout, default 5 s) in a
-- luaws coroutine -> c (closed when the test ends), resp, err, seconds the Dial took.
local function dial(url, tls_config, timeout)
  local d = websocket.Dialer{ HandshakeTimeout = timeout or 5, TLSClientConfig = tls_config }
  local c, resp, err, took = support.run(function()
    local t0 = websocket.Now()
    local c, resp, err = d:Dial(url)
    return c, resp, err, websocket.Now() - t0
  end, (timeout or 5) + 10)
  if c then finally(function() c:Close() end) end
  return c, resp, err, took
end

-- One text message there and back on c -> the echo (or an error text).
local function echo_once(c, text)
  return support.run(function()
    local ok, werr = c:WriteMessage(websocket.TextMessage, text)
    if not ok then return "write: " .. tostring(werr) end
    local _, data, rerr = c:ReadMessage()
    return data or ("read: " .. tostring(rerr))
  end)
end

-- Run spec/peers/tls_peer.py with these arguments -> its JSON result.
local function tls_peer(...)
  local args = {}
  for i, a in ipairs({ ... }) do args[i] = q(tostring(a)) end
  local status, out = support.run_child(("%s %s %s"):format(PYTHON, q(TLS_PEER),
    table.concat(args, " ")), 20)
  assert(status == 0, "tls_peer.py " .. table.concat({ ... }, " ") .. " ended with " ..
    tostring(status) .. ":\n" .. out:sub(1, 3000))
  local line
  for l in out:gmatch("[^\n]+") do
    if l:sub(1, 1) == "{" then line = l end
  end
  assert(line, "tls_peer.py printed no result:\n" .. out:sub(1, 3000))
  local r = cjson.decode(line)
  for k, v in pairs(r) do
    if v == cjson.null then r[k] = nil end
  end
  return r
end

-- A server from tls_peer.py ("silent" or "http400") -> its port (stopped when the test ends).
local function peer_server(mode)
  local child = support.spawn(("%s %s %s"):format(PYTHON, q(TLS_PEER), mode))
  finally(function() support.stop(child) end)
  local port = support.wait_for(function()
    return tonumber(support.output(child):match("^(%d+)\n"))
  end, 10)
  assert(port, "tls_peer.py " .. mode .. " printed no port:\n" .. support.output(child))
  return port
end

local function subjects(certificates)
  local t = {}
  for i, cert in ipairs(certificates or {}) do t[i] = cert.Subject end
  return table.concat(t, " | ")
end

-- The certificate's serial number as `openssl x509 -serial` prints it (hex, upper case).
local function serial_of(file)
  return support.sh_output("openssl x509 -noout -serial -in " .. q(file)):match("serial=(%x+)")
end

local VERIFY = "tls: failed to verify certificate: x509: "

-- server -------------------------------------------------------------------------------

describe("issue 10: a TLS server (Listen's TLS option)", function()
  it("serves an HTTPS page and a wss:// WebSocket on one port, r.TLS in the handler", function()
    local _, port, seen = tls_server()
    local page = tls_peer("get", port, "/page", "--cafile", certs.ca, "--alpn", "http/1.1")
    assert.is_nil(page.error, "the HTTPS GET failed: " .. tostring(page.error))
    assert.are.equal(200, page.status, page.status_line)
    assert.are.equal([[page over TLS: version 772, alpn "http/1.1", peer none]], page.body)
    assert.are.equal("close_notify", page["end"], "how the server ended the HTTPS response")

    local c, resp, err = dial(wss(port, "/ws", "localhost"), { RootCAs = certs.ca })
    assert(c, "Dial: " .. tostring(err))
    assert.are.equal(101, resp.StatusCode)
    assert.are.equal("over tls", echo_once(c, "over tls"))

    assert.are.equal(2, #seen.requests)
    local t = seen.requests[2].TLS
    assert.is_table(t, "r.TLS of a wss:// request")
    assert.are.equal(websocket.VersionTLS13, t.Version)
    assert.is_true(t.HandshakeComplete)
    assert.is_false(t.DidResume)
    assert.are.equal("TLS_AES_256_GCM_SHA384", t.CipherSuiteName)
    assert.are.equal(0x1302, t.CipherSuite)
    assert.are.equal("localhost", t.ServerName, "the SNI the client sent")
    assert.are.equal("http/1.1", t.NegotiatedProtocol)
    assert.are.same({}, t.PeerCertificates, "no client certificate")
    assert.are.equal("localhost", seen.requests[1].TLS.ServerName, "the Python client's SNI")
  end)

  it("with several certificates the client's SNI picks one, the first when none matches (as Go)", function()
    for _, tls in ipairs({
      { Certificates = { { CertFile = certs.server, KeyFile = certs.server_key },
        { CertFile = certs.other, KeyFile = certs.other_key } } },
      { CertFile = certs.server, KeyFile = certs.server_key,
        Certificates = { { CertFile = certs.other, KeyFile = certs.other_key } } },
    }) do
      local srv = assert(websocket.Listen("127.0.0.1:0", echo_handler(), { TLS = tls }))
      finally(function() srv:Close() end)
      local port = srv:Port()
      local picked = {}
      for _, case in ipairs({ { "localhost" }, { "127.0.0.1" }, { "127.0.0.1", "example.com" },
        { "127.0.0.1", "unknown.example" } }) do
        local c, resp, err = dial(wss(port, "/", case[1]), { InsecureSkipVerify = true, ServerName = case[2] })
        assert(c, "Dial: " .. tostring(err))
        picked[#picked + 1] = (case[2] or case[1]) .. ": " .. subjects(resp.TLS.PeerCertificates)
      end
      assert.are.same({ "localhost: CN=localhost", "127.0.0.1: CN=localhost",
        "example.com: CN=example.com", "unknown.example: CN=localhost" }, picked)
      -- and verified as such
      local c, _, err = dial(wss(port, "/", "localhost"), { RootCAs = certs.ca })
      assert(c, "Dial localhost: " .. tostring(err))
      c, _, err = dial(wss(port), { RootCAs = certs.ca, ServerName = "example.com" })
      assert(c, "Dial with ServerName example.com: " .. tostring(err))
    end
  end)

  it("sends a certificate file's intermediate with it: a client that knows only the root verifies the chain", function()
    for _, tls in ipairs({
      { CertFile = certs.chained, KeyFile = certs.chained_key },
      { Certificates = { { CertFile = certs.chained, KeyFile = certs.chained_key },
        { CertFile = certs.other, KeyFile = certs.other_key } } },
    }) do
      local srv = assert(websocket.Listen("127.0.0.1:0", echo_handler(), { TLS = tls }))
      finally(function() srv:Close() end)
      local c, resp, err = dial(wss(srv:Port(), "/", "localhost"), { RootCAs = certs.ca })
      assert(c, "Dial: " .. tostring(err))
      assert.are.equal("CN=chained.localhost | CN=luaws test intermediate", subjects(resp.TLS.PeerCertificates))
      assert.are.equal("CN=luaws test intermediate", resp.TLS.PeerCertificates[1].Issuer)
      local page = tls_peer("get", srv:Port(), "/page", "--cafile", certs.ca)
      assert.is_nil(page.error, tostring(page.error))
      assert.are.equal(200, page.status)
    end
  end)

  it("sends a 5 MB HTTPS response byte-exact, then close_notify", function()
    local body = support.binary(5 * 1024 * 1024 + 17, 99)
    local srv = assert(websocket.Listen("127.0.0.1:0", function(w) w:Write(body) end, { TLS = server_tls() }))
    finally(function() srv:Close() end)
    local file = certs.dir .. "/big.bin"
    local f = assert(io.open(file, "wb"))
    f:write(body)
    f:close()
    local want = support.sh_output("sha256sum " .. q(file)):match("^%x+")
    -- the handler answers inside the read of the request, often in a wake-up that also
    -- reports the socket writeable (lws then held all but the first 256 KiB, and sent
    -- no more until the 5 s timeout): a few tries
    for i = 1, 3 do
      local r = tls_peer("get", srv:Port(), "/big", "--cafile", certs.ca, "--quiet", 1)
      assert.is_nil(r.error, tostring(r.error))
      assert.are.equal(200, r.status)
      assert.are.equal(#body, r.length, "the body's length, try " .. i)
      assert.are.equal(want, r.sha256, "the body's SHA-256")
      assert.are.equal("close_notify", r["end"])
    end
  end)

  it("leaves r.TLS nil on a plain server, and resp.TLS nil for ws://", function()
    local seen = { requests = {}, read_errs = {} }
    local srv = assert(websocket.Listen("127.0.0.1:0", echo_handler(seen)))
    finally(function() srv:Close() end)
    local c, resp, err = dial(support.url(srv:Port()))
    assert(c, "Dial: " .. tostring(err))
    assert.is_nil(resp.TLS)
    assert.is_nil(seen.requests[1].TLS)
  end)

  for _, v in ipairs({ { "1.2", websocket.VersionTLS12, "TLSv1.2" }, { "1.3", websocket.VersionTLS13, "TLSv1.3" } }) do
    it("accepts a TLS " .. v[1] .. " client (r.TLS.Version " .. v[2] .. ")", function()
      local _, port = tls_server()
      local page = tls_peer("get", port, "/page", "--cafile", certs.ca, "--version", v[1])
      assert.is_nil(page.error, "the HTTPS GET failed: " .. tostring(page.error))
      assert.are.equal(v[3], page.version)
      assert.are.equal(([[page over TLS: version %d, alpn "", peer none]]):format(v[2]), page.body)
      local ws = tls_peer("ws", port, "/ws", "--cafile", certs.ca, "--version", v[1])
      assert.is_nil(ws.error, "the WebSocket over TLS failed: " .. tostring(ws.error))
      assert.are.equal(v[3], ws.version)
      assert.are.equal("hello tls", ws.echo)
    end)
  end

  it("ALPN: negotiates http/1.1; a client offering only h2 gets a no_application_protocol alert (as Go)", function()
    local _, port = tls_server()
    local ok = tls_peer("get", port, "/page", "--cafile", certs.ca, "--alpn", "h2,http/1.1")
    assert.is_nil(ok.error, tostring(ok.error))
    assert.are.equal("http/1.1", ok.alpn)
    assert.are.equal([[page over TLS: version 772, alpn "http/1.1", peer none]], ok.body)
    local h2 = tls_peer("get", port, "/page", "--cafile", certs.ca, "--alpn", "h2")
    assert.matches("NO_APPLICATION_PROTOCOL", (h2.error or "no error"):upper():gsub(" ", "_"), 1, true)
  end)

  it("MinVersion = VersionTLS13 refuses TLS 1.2 clients; MaxVersion = VersionTLS12 refuses TLS 1.3 ones", function()
    local _, port13 = tls_server({ MinVersion = websocket.VersionTLS13 })
    local r = tls_peer("get", port13, "/page", "--cafile", certs.ca, "--version", "1.2")
    assert.matches("PROTOCOL_VERSION", (r.error or "no error"):upper():gsub(" ", "_"), 1, true)
    local c, _, err = dial(wss(port13), { RootCAs = certs.ca, MaxVersion = websocket.VersionTLS12 })
    assert.is_nil(c)
    assert.are.equal("remote error: tls: protocol version", tostring(err))
    assert.is_nil(tls_peer("get", port13, "/page", "--cafile", certs.ca, "--version", "1.3").error)

    local _, port12 = tls_server({ MaxVersion = websocket.VersionTLS12 })
    r = tls_peer("get", port12, "/page", "--cafile", certs.ca, "--version", "1.3")
    assert.matches("PROTOCOL_VERSION", (r.error or "no error"):upper():gsub(" ", "_"), 1, true)
    local c2, resp, err2 = dial(wss(port12), { RootCAs = certs.ca })
    assert(c2, "Dial: " .. tostring(err2))
    assert.are.equal(websocket.VersionTLS12, resp.TLS.Version)
  end)

  it("answers a plain HTTP request with Go's 400 (Client sent an HTTP request to an HTTPS server.)", function()
    local _, port = tls_server()
    local r = tls_peer("plain", port)
    assert.are.equal("HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n",
      r.response)
    -- and goes on serving TLS
    assert.is_nil(tls_peer("get", port, "/page", "--cafile", certs.ca).error)
  end)

  it("ListenAndServeTLS serves HTTPS and wss:// until SIGTERM, then returns ErrServerClosed", function()
    local port = support.free_port()
    local child = support.spawn(support.lua(([=[
local websocket = require "luaws"
local up = websocket.Upgrader{}
websocket.HandleFunc("/page", function(w, r) w:Write("served by ListenAndServeTLS " .. r.TLS.Version) end)
websocket.HandleFunc("/ws", function(w, r)
  local c = assert(up:Upgrade(w, r))
  while true do
    local mt, data = c:ReadMessage()
    if not mt then break end
    c:WriteMessage(mt, data)
  end
end)
print("returned", websocket.ListenAndServeTLS("127.0.0.1:%d", %q, %q))
]=]):format(port, certs.server, certs.server_key)))
    finally(function() support.stop(child) end)
    assert(support.wait_port(port, 10), "ListenAndServeTLS did not listen:\n" .. support.output(child))
    local page = tls_peer("get", port, "/page", "--cafile", certs.ca)
    assert.is_nil(page.error, tostring(page.error))
    assert.are.equal("served by ListenAndServeTLS 772", page.body)
    local c, _, err = dial(wss(port, "/ws"), { RootCAs = certs.ca })
    assert(c, "Dial: " .. tostring(err))
    assert.are.equal("lats", echo_once(c, "lats"))
    support.kill(child, "TERM")
    assert.are.equal(0, support.wait(child, 10), "exit status\n" .. support.output(child))
    assert.matches("returned\tnil\thttp: Server closed", support.output(child), 1, true)
  end)

  it("ListenAndServeTLS returns nil, err for a certificate file that does not exist (it does not block)", function()
    local status, out = support.run_child(support.lua(([=[
local websocket = require "luaws"
print("returned", websocket.ListenAndServeTLS("127.0.0.1:0", %q, %q))
]=]):format(certs.dir .. "/missing.pem", certs.server_key)), 10)
    assert.are.equal(0, status, out)
    assert.matches("returned\tnil\ttls: ", out, 1, true)
    assert.matches("missing.pem", out, 1, true)
  end)

  it("with Workers = 2 both workers answer over TLS", function()
    local port = support.free_port()
    local child = support.spawn(support.lua(([=[
local websocket = require "luaws"
local pid = require("luaws.core").getpid
local up = websocket.Upgrader{}
websocket.HandleFunc("/", function(w, r)
  local c = assert(up:Upgrade(w, r))
  c:WriteMessage(websocket.TextMessage, tostring(pid()) .. " " .. tostring(r.TLS and r.TLS.Version))
  c:ReadMessage()
end)
print(websocket.ListenAndServeTLS("127.0.0.1:%d", %q, %q, nil, { Workers = 2 }))
]=]):format(port, certs.server, certs.server_key)))
    finally(function() support.stop(child) end)
    assert(support.wait_for(function()
      return tonumber(support.sh_output("ss -Hltn 'sport = :" .. port .. "' | wc -l")) == 2
    end, 10), "2 processes did not listen:\n" .. support.output(child))
    local pids, answers = {}, 0
    support.run(function()
      local d = websocket.Dialer{ HandshakeTimeout = 5, TLSClientConfig = { RootCAs = certs.ca } }
      for _ = 1, 40 do
        local c, _, err = d:Dial(wss(port))
        assert(c, "Dial: " .. tostring(err))
        local _, data = c:ReadMessage()
        local pid, version = tostring(data):match("^(%d+) (%d+)$")
        assert(pid, "the worker's message: " .. tostring(data))
        assert.are.equal(tostring(websocket.VersionTLS13), version)
        pids[pid] = true
        answers = answers + 1
        c:Close()
        local n = 0
        for _ in pairs(pids) do n = n + 1 end
        if n == 2 and answers >= 4 then break end
      end
    end, 30)
    local list = {}
    for pid in pairs(pids) do list[#list + 1] = pid end
    assert.are.equal(2, #list, "distinct workers that answered over TLS in " .. answers ..
      " connections: " .. table.concat(list, ", "))
    support.kill(child, "TERM")
    assert.are.equal(0, support.wait(child, 10), support.output(child))
  end)
end)

describe("issue 10: client certificates on the server (ClientAuth, ClientCAs)", function()
  local function with_client(which)
    return { RootCAs = certs.ca, Certificates = { { CertFile = certs[which], KeyFile = certs[which .. "_key"] } } }
  end

  it("RequireAndVerifyClientCert: no certificate fails the handshake; the CA's client certificate is in r.TLS.PeerCertificates", function()
    local _, port, seen = tls_server({ ClientAuth = websocket.RequireAndVerifyClientCert, ClientCAs = certs.ca })
    local c, _, err = dial(wss(port), { RootCAs = certs.ca })
    assert.is_nil(c)
    assert.are.equal("remote error: tls: certificate required", tostring(err))
    local c12, _, err12 = dial(wss(port), { RootCAs = certs.ca, MaxVersion = websocket.VersionTLS12 })
    assert.is_nil(c12)
    assert.matches("^remote error: tls: ", tostring(err12))
    local cs, _, errs = dial(wss(port), with_client("self"))
    assert.is_nil(cs, "a self-signed client certificate was accepted")
    assert.matches("^remote error: tls: ", tostring(errs))
    assert.are.equal(0, #seen.requests, "no request may reach the handler")

    local c2, resp, err2 = dial(wss(port), with_client("client"))
    assert(c2, "Dial with the client certificate: " .. tostring(err2))
    assert.are.equal("cert", echo_once(c2, "cert"))
    local t = seen.requests[1].TLS
    assert.are.equal("CN=luaws test client", subjects(t.PeerCertificates),
      "r.TLS.PeerCertificates: what the client sent, its certificate file (as Go), not a " ..
      "chain OpenSSL completed from the client's RootCAs")
    assert.are.equal("CN=luaws test CA", t.PeerCertificates[1].Issuer)
    assert.are.equal(serial_of(certs.client), t.PeerCertificates[1].SerialNumber)
    assert.are.equal("CN=localhost", subjects(resp.TLS.PeerCertificates),
      "resp.TLS.PeerCertificates: the server's certificate file only, not completed from its ClientCAs")

    local page = tls_peer("get", port, "/page", "--cafile", certs.ca, "--cert", certs.client,
      "--key", certs.client_key)
    assert.is_nil(page.error, tostring(page.error))
    assert.are.equal([[page over TLS: version 772, alpn "", peer CN=luaws test client]], page.body)
  end)

  it("ClientCAs may be a directory of hashed certificates (openssl rehash)", function()
    local _, port, seen = tls_server({ ClientAuth = websocket.RequireAndVerifyClientCert, ClientCAs = certs.ca_dir })
    local c, _, err = dial(wss(port), with_client("client"))
    assert(c, "Dial: " .. tostring(err))
    assert.are.equal("CN=luaws test client", subjects(seen.requests[1].TLS.PeerCertificates))
  end)

  it("VerifyClientCertIfGiven: no certificate is fine (PeerCertificates empty), a CA-signed one is verified, a self-signed one fails", function()
    local _, port, seen = tls_server({ ClientAuth = websocket.VerifyClientCertIfGiven, ClientCAs = certs.ca })
    local c, _, err = dial(wss(port), { RootCAs = certs.ca })
    assert(c, "Dial without a certificate: " .. tostring(err))
    assert.are.same({}, seen.requests[1].TLS.PeerCertificates)
    local c2, _, err2 = dial(wss(port), with_client("client"))
    assert(c2, "Dial with the client certificate: " .. tostring(err2))
    assert.are.equal("CN=luaws test client", subjects(seen.requests[2].TLS.PeerCertificates))
    local c3, _, err3 = dial(wss(port), with_client("self"))
    assert.is_nil(c3, "a self-signed client certificate was accepted")
    assert.matches("^remote error: tls: ", tostring(err3))
  end)

  it("RequestClientCert accepts a self-signed client certificate (and none)", function()
    local _, port, seen = tls_server({ ClientAuth = websocket.RequestClientCert })
    local c, _, err = dial(wss(port), with_client("self"))
    assert(c, "Dial with a self-signed certificate: " .. tostring(err))
    assert.are.equal("CN=localhost", subjects(seen.requests[1].TLS.PeerCertificates))
    local c2, _, err2 = dial(wss(port), { RootCAs = certs.ca })
    assert(c2, "Dial without a certificate: " .. tostring(err2))
    assert.are.same({}, seen.requests[2].TLS.PeerCertificates)
  end)

  it("RequireAnyClientCert: a self-signed certificate is accepted, none fails", function()
    local _, port, seen = tls_server({ ClientAuth = websocket.RequireAnyClientCert })
    local c, _, err = dial(wss(port), with_client("self"))
    assert(c, "Dial with a self-signed certificate: " .. tostring(err))
    assert.are.equal("CN=localhost", subjects(seen.requests[1].TLS.PeerCertificates))
    local c2, _, err2 = dial(wss(port), { RootCAs = certs.ca })
    assert.is_nil(c2)
    assert.are.equal("remote error: tls: certificate required", tostring(err2))
  end)
end)

describe("issue 10: bad TLS settings", function()
  local function listen_err(extra)
    local srv, err = websocket.Listen("127.0.0.1:0", function() end, { TLS = server_tls(extra) })
    if srv then srv:Close() end
    assert.is_nil(srv, "Listen accepted the TLS settings")
    return tostring(err)
  end

  it("Listen returns nil, err naming the file: missing certificate, missing key, a key that does not match, no PEM data", function()
    local missing = certs.dir .. "/missing.pem"
    assert.are.equal("tls: cannot load certificate " .. missing .. ": No such file or directory",
      listen_err({ CertFile = missing }))
    assert.are.equal("tls: cannot load key " .. missing .. ": No such file or directory",
      listen_err({ KeyFile = missing }))
    assert.are.equal("tls: private key does not match public key (" .. certs.wrong_key .. ", " ..
      certs.server .. ")", listen_err({ KeyFile = certs.wrong_key }))
    assert.are.equal("tls: cannot load certificate " .. certs.server_key .. ": no certificate (PEM) in it",
      listen_err({ CertFile = certs.server_key }))
    assert.are.equal("tls: cannot load key " .. certs.server .. ": no private key (PEM) in it",
      listen_err({ KeyFile = certs.server }))
    assert.are.equal("tls: cannot load CAs from " .. missing .. ": No such file or directory",
      listen_err({ ClientCAs = missing, ClientAuth = websocket.RequireAndVerifyClientCert }))
    assert.are.equal("tls: cannot load CAs from " .. certs.server_key .. ": no certificate (PEM) in it",
      listen_err({ ClientCAs = certs.server_key, ClientAuth = websocket.RequireAndVerifyClientCert }))
    assert.are.equal("tls: cannot load certificate " .. certs.dir .. ": Is a directory",
      listen_err({ CertFile = certs.dir }))
    -- a file with both the certificate and the key serves
    local srv, err = websocket.Listen("127.0.0.1:0", function() end,
      { TLS = { CertFile = certs.bundle, KeyFile = certs.bundle } })
    assert(srv, tostring(err))
    srv:Close()
  end)

  it("an encrypted key file: Listen fails at once, it never asks for a passphrase on the terminal", function()
    -- OpenSSL's default passphrase callback prompts on the controlling terminal and
    -- waits: run Listen under script(1), which gives it one
    local lua = support.lua(([=[
local websocket = require "luaws"
local srv, err = websocket.Listen("127.0.0.1:0", nil, { TLS = { CertFile = %q, KeyFile = %q } })
print("returned", srv, err)
]=]):format(certs.server, certs.encrypted_key))
    local status, out = support.run_child("script -qec " .. q(lua) .. " /dev/null", 10)
    assert.is_falsy(out:find("pass phrase", 1, true), "it asked for a passphrase:\n" .. out)
    assert.are.equal(0, status, "Listen did not return within 10 s (or the child failed):\n" .. out)
    assert.matches("returned\tnil\ttls: cannot load key " .. certs.encrypted_key ..
      ": the key is encrypted (luaws asks for no passphrase)", out, 1, true)
  end)

  it("Listen without a certificate, or with CertFile but no KeyFile", function()
    local srv, err = websocket.Listen("127.0.0.1:0", function() end, { TLS = {} })
    assert.is_nil(srv)
    assert.are.equal("tls: neither Certificates nor CertFile/KeyFile given", tostring(err))
    assert.matches("CertFile and KeyFile go together", support.raises(function()
      websocket.Listen("127.0.0.1:0", function() end, { TLS = { CertFile = certs.server } })
    end), 1, true)
  end)

  it("a Dialer with a RootCAs or client certificate that cannot be loaded: nil, nil, err", function()
    local missing = certs.dir .. "/missing.pem"
    local c, resp, err = dial("wss://127.0.0.1:1/", { RootCAs = missing })
    assert.is_nil(c)
    assert.is_nil(resp)
    assert.are.equal("tls: cannot load CAs from " .. missing .. ": No such file or directory", tostring(err))
    c, resp, err = dial("wss://127.0.0.1:1/", { Certificates = { { CertFile = missing, KeyFile = certs.client_key } } })
    assert.is_nil(c)
    assert.are.equal("tls: cannot load certificate " .. missing .. ": No such file or directory", tostring(err))
  end)
end)

-- client -------------------------------------------------------------------------------

describe("issue 10: a TLS client (Dialer.TLSClientConfig, wss://)", function()
  it("verifies the server against RootCAs, a file or a hashed directory; resp.TLS is Go's ConnectionState", function()
    local _, port = tls_server()
    for _, roots in ipairs({ certs.ca, certs.ca_dir }) do
      local c, resp, err = dial(wss(port, "/", "localhost"), { RootCAs = roots })
      assert(c, "Dial with RootCAs = " .. roots .. ": " .. tostring(err))
      assert.are.equal("roots", echo_once(c, "roots"))
      local t = resp.TLS
      assert.is_table(t, "resp.TLS")
      assert.are.equal(websocket.VersionTLS13, t.Version)
      assert.is_true(t.HandshakeComplete)
      assert.are.equal(0x1302, t.CipherSuite)
      assert.are.equal("TLS_AES_256_GCM_SHA384", t.CipherSuiteName)
      assert.are.equal("localhost", t.ServerName)
      assert.are.equal("http/1.1", t.NegotiatedProtocol)
      assert.are.equal(1, #t.PeerCertificates, subjects(t.PeerCertificates))
      local cert = t.PeerCertificates[1]
      assert.are.equal("CN=localhost", cert.Subject)
      assert.are.equal("CN=luaws test CA", cert.Issuer)
      assert.are.same({ "localhost" }, cert.DNSNames)
      assert.are.same({ "127.0.0.1" }, cert.IPAddresses)
      assert.are.equal(serial_of(certs.server), cert.SerialNumber)
      local now = os.time()
      assert(cert.NotBefore <= now and now - cert.NotBefore < 3600,
        "NotBefore " .. tostring(cert.NotBefore) .. " is not about now (" .. now .. ")")
      assert.are.equal(30 * 86400, cert.NotAfter - cert.NotBefore, "the certificate is valid for 30 days")
    end
    local c, resp, err = dial(wss(port), { RootCAs = certs.ca, MaxVersion = websocket.VersionTLS12 })
    assert(c, "Dial with TLS 1.2: " .. tostring(err))
    assert.are.equal(websocket.VersionTLS12, resp.TLS.Version)
    assert.are.equal(0xC02C, resp.TLS.CipherSuite)
    assert.are.equal("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", resp.TLS.CipherSuiteName)
  end)

  it("refuses a server its CAs did not sign: certificate signed by unknown authority", function()
    local _, port = tls_server()
    local c, resp, err = dial(wss(port, "/", "localhost"))
    assert.is_nil(c)
    assert.is_nil(resp)
    assert.are.equal(VERIFY .. "certificate signed by unknown authority", tostring(err),
      "the system's CAs do not know the test CA")
    local _, self_port = tls_server({ CertFile = certs.self, KeyFile = certs.self_key })
    c, _, err = dial(wss(self_port), { RootCAs = certs.ca })
    assert.is_nil(c)
    assert.are.equal(VERIFY .. "certificate signed by unknown authority", tostring(err))
    c, _, err = dial(wss(self_port), { RootCAs = certs.self })
    assert(c, "the self-signed certificate as its own root: " .. tostring(err))
  end)

  it("refuses an expired certificate: certificate has expired or is not yet valid", function()
    local _, port = tls_server({ CertFile = certs.expired, KeyFile = certs.expired_key })
    local c, _, err = dial(wss(port), { RootCAs = certs.ca })
    assert.is_nil(c)
    assert.are.equal(VERIFY .. "certificate has expired or is not yet valid", tostring(err))
  end)

  it("checks the host name: the URL's host, or ServerName, must be in the certificate", function()
    local _, other_port, seen = tls_server({ CertFile = certs.other, KeyFile = certs.other_key })
    local c, _, err = dial(wss(other_port), { RootCAs = certs.ca })
    assert.is_nil(c)
    assert.are.equal(VERIFY .. "certificate is valid for example.com, not 127.0.0.1", tostring(err))
    c, _, err = dial(wss(other_port, "/", "localhost"), { RootCAs = certs.ca })
    assert.is_nil(c)
    assert.are.equal(VERIFY .. "certificate is valid for example.com, not localhost", tostring(err))
    -- ServerName overrides the URL's host: the name verified and the SNI sent
    local c2, resp, err2 = dial(wss(other_port), { RootCAs = certs.ca, ServerName = "example.com" })
    assert(c2, "Dial with ServerName = example.com: " .. tostring(err2))
    assert.are.equal("example.com", resp.TLS.ServerName)
    assert.are.equal("example.com", seen.requests[1].TLS.ServerName, "the SNI the server got")
    assert.are.equal("127.0.0.1:" .. other_port, seen.requests[1].Host, "the Host header is still the URL's")

    local _, port = tls_server()
    c, _, err = dial(wss(port), { RootCAs = certs.ca, ServerName = "example.com" })
    assert.is_nil(c)
    assert.are.equal(VERIFY .. "certificate is valid for localhost, 127.0.0.1, not example.com", tostring(err))

    -- an empty ServerName is Go's zero value: the URL's host is verified (it was not
    -- verified at all: any certificate the CAs signed was taken)
    c, _, err = dial(wss(other_port), { RootCAs = certs.ca, ServerName = "" })
    assert.is_nil(c, "ServerName = \"\" turned off the host name check")
    assert.are.equal(VERIFY .. "certificate is valid for example.com, not 127.0.0.1", tostring(err))
    local c3, resp3, err3 = dial(wss(port, "/", "localhost"), { RootCAs = certs.ca, ServerName = "" })
    assert(c3, "ServerName = \"\": " .. tostring(err3))
    assert.are.equal("localhost", resp3.TLS.ServerName)
  end)

  it("InsecureSkipVerify accepts any certificate (self-signed, expired, another host's)", function()
    for _, which in ipairs({ "self", "expired", "other" }) do
      local _, port = tls_server({ CertFile = certs[which], KeyFile = certs[which .. "_key"] })
      local c, resp, err = dial(wss(port), { InsecureSkipVerify = true })
      assert(c, which .. ": " .. tostring(err))
      assert.are.equal("insecure", echo_once(c, "insecure"))
      assert.are.equal(1, #resp.TLS.PeerCertificates)
    end
  end)

  it("a server that answers in plain HTTP: tls: first record does not look like a TLS handshake", function()
    local port = peer_server("http400")
    local c, resp, err, took = dial(wss(port), { RootCAs = certs.ca }, 5)
    assert.is_nil(c)
    assert.is_nil(resp)
    assert.are.equal("tls: first record does not look like a TLS handshake", tostring(err))
    assert(took < 2, "it took " .. took .. " s")
  end)

  it("a server that answers the ClientHello with an alert and closes at once: remote error: tls: handshake failure", function()
    -- the alert and the FIN arrive together: lws may report the hang-up without the
    -- bytes, which are still in the kernel
    local port = peer_server("alert")
    for _ = 1, 5 do
      local c, resp, err, took = dial(wss(port), { RootCAs = certs.ca }, 5)
      assert.is_nil(c)
      assert.is_nil(resp)
      assert.are.equal("remote error: tls: handshake failure", tostring(err))
      assert(took < 2, "it took " .. took .. " s")
    end
  end)

  it("a plain luaws server on a wss:// URL: an error within HandshakeTimeout", function()
    local srv = assert(websocket.Listen("127.0.0.1:0", echo_handler()))
    finally(function() srv:Close() end)
    local c, _, err, took = dial(wss(srv:Port()), { RootCAs = certs.ca }, 1)
    assert.is_nil(c)
    assert.is_truthy(err, "no error")
    assert(took < 1.5, "it took " .. took .. " s (HandshakeTimeout 1 s)")
  end)

  it("a TLS server on a ws:// URL: bad handshake (its 400), at once", function()
    local _, port = tls_server()
    local c, resp, err, took = dial(support.url(port), nil, 5)
    assert.is_nil(c)
    assert.are.equal(websocket.ErrBadHandshake, err)
    assert.are.equal(400, resp and resp.StatusCode)
    assert(took < 2, "it took " .. took .. " s")
  end)

  it("a server that never answers the ClientHello: an i/o timeout within HandshakeTimeout, not a hang (nor a busy wait)", function()
    local port = peer_server("silent")
    local cpu = os.clock()
    local c, resp, err, took = dial(wss(port), { RootCAs = certs.ca }, 1)
    cpu = os.clock() - cpu
    assert.is_nil(c)
    assert.is_nil(resp)
    assert.are.equal("dial tcp 127.0.0.1:" .. port .. ": i/o timeout", tostring(err))
    assert.is_true(err.timeout)
    assert(took >= 0.9 and took < 1.5, "it took " .. took .. " s (HandshakeTimeout 1 s)")
    -- the upgrade request waits for the handshake: the wait must not spin on the
    -- socket's writeable events (it took ~0.5 s of CPU per second)
    assert(cpu < 0.2, ("the 1 s wait took %.2f s of CPU"):format(cpu))
  end)

  it("talks to Python's websockets over TLS (wss://, RootCAs)", function()
    local child = support.spawn(("%s %s --tls %s %s"):format(PYTHON, q(support.peer("py_server.py")),
      q(certs.server), q(certs.server_key)))
    finally(function() support.stop(child) end)
    local port = support.wait_for(function() return tonumber(support.output(child):match("^(%d+)\n")) end, 10)
    assert(port, "py_server.py --tls printed no port:\n" .. support.output(child))
    local c, resp, err = dial(wss(port, "/echo", "localhost"), { RootCAs = certs.ca })
    assert(c, "Dial: " .. tostring(err))
    assert.are.equal("python tls", echo_once(c, "python tls"))
    assert.are.equal("CN=localhost", resp.TLS.PeerCertificates[1].Subject)
    assert.are.equal("", resp.TLS.NegotiatedProtocol, "Python's server offers no ALPN")
    local c2, _, err2 = dial(wss(port, "/echo", "localhost"), { RootCAs = certs.self })
    assert.is_nil(c2)
    assert.are.equal(VERIFY .. "certificate signed by unknown authority", tostring(err2))
  end)

  it("Node's https module fetches the HTTPS page (when node is installed)", function()
    local node = support.sh_output("command -v node || true")
    if node == "" then
      pending("node is not installed")
      return
    end
    local _, port = tls_server()
    local script = ([=[
const https = require("https"), fs = require("fs");
https.get({ host: "127.0.0.1", port: %d, path: "/page", ca: fs.readFileSync(%q), servername: "localhost",
            ALPNProtocols: ["http/1.1"] }, (res) => {
  let body = "";
  res.on("data", (d) => body += d);
  res.on("end", () => console.log(JSON.stringify({ status: res.statusCode, body, alpn: res.socket.alpnProtocol,
                                                   version: res.socket.getProtocol() })));
}).on("error", (e) => console.log(JSON.stringify({ error: String(e) })));
]=]):format(port, certs.ca)
    local path = certs.dir .. "/get.js"
    local f = assert(io.open(path, "w"))
    f:write(script)
    f:close()
    local status, out = support.run_child(q(node) .. " " .. q(path), 15)
    assert.are.equal(0, status, out)
    local r = cjson.decode(out:match("{.*}") or "{}")
    assert.is_nil(r.error, tostring(r.error))
    assert.are.equal(200, r.status)
    assert.are.equal([[page over TLS: version 772, alpn "http/1.1", peer none]], r.body)
    assert.are.equal("http/1.1", r.alpn)
    assert.are.equal("TLSv1.3", r.version)
  end)
end)

-- bytes and stress ---------------------------------------------------------------------

local pattern = support.slow_reader_pattern -- slow_reader.py's bytes

local text = support.text -- UTF-8 of exactly n bytes

describe("issue 10: bytes over TLS", function()
  it("echoes text and binary messages of 0 B .. 16 MiB byte-exact, luaws client <-> luaws server", function()
    local _, port = tls_server()
    local c, _, err = dial(wss(port), { RootCAs = certs.ca })
    assert(c, "Dial: " .. tostring(err))
    local block = support.binary(1024 * 1024, 7)
    local sizes = { 0, 1, 125, 126, 127, 4095, 4096, 16383, 16384, 16385, 65535, 65536, 65537,
      262144 + 3, 1048576, 16 * 1048576 }
    local problems = support.run(function()
      local problems = {}
      for _, n in ipairs(sizes) do
        for _, mt in ipairs({ websocket.TextMessage, websocket.BinaryMessage }) do
          local payload = mt == websocket.TextMessage and text(n) or block:rep(n // #block + 1):sub(1, n)
          local ok, werr = c:WriteMessage(mt, payload)
          if not ok then
            problems[#problems + 1] = ("write %d (%d): %s"):format(n, mt, tostring(werr))
            return problems
          end
          local got_mt, data, rerr = c:ReadMessage()
          local d = support.diff(data, payload)
          if got_mt ~= mt or d then
            problems[#problems + 1] = ("echo of %d bytes (type %d): type %s, %s %s"):format(n, mt,
              tostring(got_mt), tostring(d), tostring(rerr))
          end
        end
      end
      return problems
    end, 60)
    assert.are.same({}, problems)
  end)

  -- The slow-reader scenario (issue 9's, spec/issue9_writepath_spec.lua) over TLS: the
  -- server writes one binary message of SIZE bytes right after the upgrade; the peer
  -- (4 KiB receive buffer) reads nothing for 1 s, pings, then reads everything, sends
  -- close 1000 and reads until the end. script_of(port_file) is a Lua child that serves
  -- one such connection and prints what its handler saw as a JSON line.
  local SIZE = 3000000
  local function slow_server_script()
    return support.lua(([=[
local websocket = require "luaws"
local cjson = require "cjson"
local t = {}
for k = 0, (%d + 7) // 8 - 1 do t[k + 1] = string.pack(">I4I4", k, (k * 2654435761) & 0xFFFFFFFF) end
local payload = table.concat(t):sub(1, %d)
local seen = {}
local srv = assert(websocket.Listen("127.0.0.1:0", function(w, r)
  local c = websocket.Upgrader{}:Upgrade(w, r)
  if not c then return end
  seen.write_called_at = websocket.Now()
  seen.write_ok, seen.write_err = c:WriteMessage(websocket.BinaryMessage, payload)
  local _, _, err = c:ReadMessage()
  while not err do _, _, err = c:ReadMessage() end
  seen.read_err = err and err.code or tostring(err)
  c:Close()
  seen.done = true
end, { TLS = { CertFile = %q, KeyFile = %q } }))
local out = os.tmpname()
os.execute(("%s %s --tls %s ping %%d /slow %d >%%s 2>&1 &"):format(srv:Port(), out))
local deadline = websocket.Now() + 40
local line
while websocket.Now() < deadline and not (line and seen.done) do
  websocket.Sleep(0.05)
  local f = io.open(out)
  line = f and f:read("a"):match("({.*})")
  if f then f:close() end
end
os.remove(out)
print("PEER " .. tostring(line))
seen.write_err = seen.write_err and tostring(seen.write_err)
print("SERVER " .. cjson.encode(seen))
]=]):format(SIZE, SIZE, certs.server, certs.server_key, PYTHON, SLOW_READER, certs.ca, SIZE))
  end

  local function check_slow(status, out)
    assert.are.equal(0, status, out:sub(1, 3000))
    local peer = out:match("PEER ({[^\n]*})")
    assert(peer, "the slow reader printed no result:\n" .. out:sub(1, 3000))
    local r = cjson.decode(peer)
    local seen = cjson.decode(out:match("SERVER ({[^\n]*})") or "{}")
    assert.are.equal("ok", r.handshake)
    assert(seen.write_called_at and seen.write_called_at < r.sent_at,
      "precondition: the ping went out before the handler called WriteMessage")
    assert.are.equal(1, #r.messages, "data messages received")
    assert.are.equal(SIZE, r.messages[1].len)
    assert.are.equal(cjson.null, r.messages[1].first_diff, "the first byte that differs")
    assert.are.same({ "PINGPING" }, r.pongs, "the pongs")
    assert.are.same({ 1000 }, r.closes, "the close frames")
    assert.is_true(r.eof, "the server closed TLS and TCP")
    assert.is_true(seen.done, "the handler did not end")
    assert.is_true(seen.write_ok, tostring(seen.write_err))
    assert.are.equal(1000, seen.read_err)
  end

  it("a slow reader (4 KiB receive buffer, reads nothing for 1 s) gets 3 MB byte-exact, its pong between frames, then close 1000", function()
    check_slow(support.run_child(slow_server_script(), 50))
  end)

  it("the same with a 64 KiB send buffer (a network namespace of its own): ciphertext is written in part and the rest waits", function()
    -- Linux's send buffer on loopback grows to megabytes, and luaws hands the socket at
    -- most 256 KiB of ciphertext at a time, when it is writeable: a send is never cut
    -- short. In a network namespace whose tcp_wmem is at most 64 KiB it is, again and
    -- again (the rest of the ciphertext waits in the record's out buffer).
    if os.execute("unshare -n true >/dev/null 2>&1") ~= true then
      pending("needs unshare -n (root) to shrink the send buffer")
      return
    end
    -- the namespace's loopback starts down (SIOCSIFFLAGS: IFF_UP | IFF_RUNNING)
    local lo_up = PYTHON .. " " .. support.python([[
import fcntl, socket, struct
s = socket.socket()
fcntl.ioctl(s, 0x8914, struct.pack("16sH14x", b"lo", 0x41))
]]):match("^%S+ (.*)$")
    check_slow(support.run_child(("unshare -n sh -c %s"):format(q(
      lo_up .. " && echo '4096 16384 65536' >/proc/sys/net/ipv4/tcp_wmem && exec " ..
      slow_server_script())), 50))
  end)

  it("a server that writes right after the upgrade and closes: the client gets the connection, the messages, then the end (as over ws://)", function()
    -- the 101, the messages and the server's close_notify come in one read
    for _, scheme in ipairs({ "ws", "wss" }) do
      local srv = assert(websocket.Listen("127.0.0.1:0", function(w, r)
        local c = websocket.Upgrader{}:Upgrade(w, r)
        for i = 1, 3 do c:WriteMessage(websocket.BinaryMessage, "message " .. i) end
        c:Close()
      end, scheme == "wss" and { TLS = server_tls() } or nil))
      finally(function() srv:Close() end)
      local c, resp, err = dial(("%s://localhost:%d/"):format(scheme, srv:Port()), { RootCAs = certs.ca })
      assert(c, scheme .. ": Dial: " .. tostring(err) .. " (status " .. tostring(resp and resp.StatusCode) .. ")")
      local got = support.run(function()
        local got = {}
        for _ = 1, 4 do
          local _, data, rerr = c:ReadMessage()
          got[#got + 1] = data or tostring(rerr)
        end
        return got
      end)
      assert.are.same({ "message 1", "message 2", "message 3", "websocket: close 1006 (abnormal closure)" }, got, scheme)
    end
  end)

  it("50 concurrent TLS connections echo byte-exact", function()
    local _, port, seen = tls_server()
    local N, done, problems = 50, 0, {}
    local d = websocket.Dialer{ HandshakeTimeout = 10, TLSClientConfig = { RootCAs = certs.ca } }
    local block = support.binary(70000, 3)
    local conns = {}
    finally(function() for _, c in pairs(conns) do c:Close() end end)
    for i = 1, N do
      websocket.Go(function()
        local c, _, err = d:Dial(wss(port, "/c/" .. i))
        if not c then
          problems[#problems + 1] = ("conn %d: Dial: %s"):format(i, tostring(err))
          done = done + 1
          return
        end
        conns[i] = c
        for k = 1, 20 do
          local n = (i * 7919 + k * 104729) % 70000
          local payload = ("%d:%d:"):format(i, k) .. block:sub(1, n)
          local mt = k % 2 == 0 and websocket.TextMessage or websocket.BinaryMessage
          if mt == websocket.TextMessage then payload = text(n) end
          local ok, werr = c:WriteMessage(mt, payload)
          local got_mt, data, rerr
          if ok then got_mt, data, rerr = c:ReadMessage() end
          if not ok or got_mt ~= mt or data ~= payload then
            problems[#problems + 1] = ("conn %d message %d (%d bytes): %s"):format(i, k, #payload,
              tostring(werr or rerr or support.diff(data, payload)))
            break
          end
        end
        c:WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(1000, "done " .. i))
        local _, _, cerr = c:ReadMessage()
        if not (cerr and cerr.code == 1000) then
          problems[#problems + 1] = ("conn %d: close: %s"):format(i, tostring(cerr))
        end
        c:Close()
        done = done + 1
      end)
    end
    assert(support.wait_for(function() return done == N end, 40), done .. " of " .. N .. " connections finished")
    assert.are.same({}, problems)
    assert(support.wait_for(function() return #seen.read_errs == N end, 5))
    for _, e in ipairs(seen.read_errs) do
      assert.are.equal(1000, e.code, tostring(e))
      assert.matches("^done %d+$", e.text)
    end
  end)

  it("a busy connection keeps OpenSSL's record buffers, hands them back after a quiet second, and goes on", function()
    local core = require "luaws.core"
    local _, port = tls_server()
    local c = dial(wss(port, "/busy"), { RootCAs = certs.ca })
    assert.is_truthy(c)
    local function burst(tag, n)
      return support.run(function()
        for i = 1, n do
          local msg = tag .. i
          assert(c:WriteMessage(websocket.TextMessage, msg))
          local _, data = c:ReadMessage()
          if data ~= msg then return ("%s: got %s"):format(msg, tostring(data)) end
        end
        return "ok"
      end, 30)
    end
    assert.are.equal(0, core._tls_busy(), "a few handshake records keep nothing")
    assert.are.equal("ok", burst("a", 200))
    -- this process holds both ends: the client's socket and the server's
    assert.are.equal(2, core._tls_busy())
    assert.is_truthy(support.wait_for(function() return core._tls_busy() == 0 end, 5),
      "still busy after a quiet period")
    assert.are.equal("ok", burst("b", 20))
    assert.are.equal("ok", burst("c", 200))
    assert.are.equal(2, core._tls_busy())
  end)

  it("close handshake over TLS: the codes round-trip both ways, and the server ends TLS with close_notify", function()
    local st = {}
    local srv = assert(websocket.Listen("127.0.0.1:0", function(w, r)
      local c = websocket.Upgrader{}:Upgrade(w, r)
      if not c then return end
      local mt, data = c:ReadMessage()
      if data == "close me" then
        st.close_ok, st.close_err = c:WriteMessage(websocket.CloseMessage,
          websocket.FormatCloseMessage(websocket.CloseGoingAway, "server going away"))
      elseif mt then
        c:WriteMessage(mt, data)
      end
      st[#st + 1] = select(3, c:ReadMessage())
      c:Close()
    end, { TLS = server_tls() }))
    finally(function() srv:Close() end)
    local port = srv:Port()
    -- the client closes with 4000 + text: the server's handler reads it, the client gets it back
    local c, _, err = dial(wss(port), { RootCAs = certs.ca })
    assert(c, "Dial: " .. tostring(err))
    local cerr, late_err = support.run(function()
      assert(c:WriteMessage(websocket.TextMessage, "hello"))
      assert.are.equal("hello", select(2, c:ReadMessage()))
      assert(c:WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(4000, "client bye")))
      local err = select(3, c:ReadMessage())
      -- the server's close frame and its close_notify came in one read: the socket is
      -- closed by now, and a write still gets gorilla's ErrCloseSent (as over ws://)
      local _, late = c:WriteMessage(websocket.TextMessage, "too late")
      return err, late
    end)
    assert.is_true(websocket.IsCloseError(cerr, 4000), tostring(cerr))
    assert.are.equal(websocket.ErrCloseSent, late_err, "a write after the close handshake")
    assert(support.wait_for(function() return #st == 1 end, 5))
    assert.are.equal(4000, st[1].code)
    assert.are.equal("client bye", st[1].text)
    -- the server closes with 1001 + text
    local c2, _, err2 = dial(wss(port), { RootCAs = certs.ca })
    assert(c2, "Dial: " .. tostring(err2))
    local cerr2 = support.run(function()
      assert(c2:WriteMessage(websocket.TextMessage, "close me"))
      return select(3, c2:ReadMessage())
    end)
    assert.is_true(websocket.IsCloseError(cerr2, 1001), tostring(cerr2))
    assert.are.equal("server going away", cerr2.text)
    assert(support.wait_for(function() return #st == 2 end, 5))
    assert.are.equal(1001, st[2].code, "the client's answer, as the server read it")
    -- a raw TLS client (Python's ssl): the echo, the server's close 1000, then close_notify
    local r = tls_peer("ws", port, "/", "--cafile", certs.ca)
    assert.is_nil(r.error, tostring(r.error))
    assert.are.equal("hello tls", r.echo)
    assert.are.equal(1000, r.close)
    assert.are.equal("close_notify", r["end"], "how the server ended the TLS stream")
  end)
end)

-- Node ws ------------------------------------------------------------------------------

-- spec/peers/node/peer.js (Node's ws, installed by scripts/deps.sh with npm ci): its
-- shared messages are text and binary payloads of these sizes (binary: byte i is
-- (i * 131 + (i >> 8) * 17 + 7) & 255, as spec/interop_spec.lua's).
local NODE_DIR = support.peer("node")
local NODE_SIZES = { 0, 1, 125, 126, 127, 65535, 65536, 1048576 }
local function node_binary(n)
  local period = {}
  for base = 0, 65535, 256 do
    local block = {}
    for i = base, base + 255 do block[#block + 1] = (i * 131 + (i >> 8) * 17 + 7) & 255 end
    period[#period + 1] = string.char(table.unpack(block))
  end
  local p = table.concat(period)
  return p:rep(n // 65536 + 1):sub(1, n)
end

describe("issue 10: Node's ws over TLS", function()
  local node
  before_each(function()
    node = support.sh_output("command -v node || true")
    if node ~= "" then
      assert(support.read_file(NODE_DIR .. "/node_modules/ws/package.json"),
        "Node's ws is not installed: run `npm ci` in spec/peers/node (scripts/deps.sh does)")
    end
  end)

  for _, compress in ipairs({ false, true }) do
    it("a Node ws client (verifying with the CA) gets 0 B .. 1 MiB back byte-exact from a luaws wss:// server" ..
      (compress and ", compressed" or ""), function()
      if node == "" then
        pending("node is not installed")
        return
      end
      local upgrader = websocket.Upgrader{ EnableCompression = compress }
      local seen = { received = 0 }
      local srv = assert(websocket.Listen("127.0.0.1:0", function(w, r)
        local c = upgrader:Upgrade(w, r)
        if not c then return end
        while true do
          local mt, data, err = c:ReadMessage()
          if not mt then
            seen.err = err
            break
          end
          seen.received = seen.received + 1
          c:WriteMessage(mt, data)
        end
        c:Close()
      end, { TLS = server_tls() }))
      finally(function() srv:Close() end)
      local result = certs.dir .. "/node-client-" .. tostring(compress) .. ".result"
      local child = support.spawn(("%s %s client %s %s messages %s --cafile %s"):format(q(node),
        q(NODE_DIR .. "/peer.js"), q(wss(srv:Port(), "/echo", "localhost")), q(result),
        q(cjson.encode(compress)), q(certs.ca)))
      finally(function() support.stop(child) end)
      assert(support.wait_for(function() return support.read_file(result) end, 30),
        "the Node client wrote no result:\n" .. support.output(child))
      local lines, echoes = {}, 0
      for line in support.read_file(result):gmatch("[^\n]+") do lines[#lines + 1] = line end
      local text = table.concat(lines, "\n")
      for _, line in ipairs(lines) do
        assert(not line:match("^error"), text)
        if line:match("^echo ") then
          assert.matches(" ok$", line)
          echoes = echoes + 1
        end
      end
      assert.are.equal(2 * #NODE_SIZES, echoes, text)
      assert.are.equal(compress, text:find("extensions permessage-deflate", 1, true) ~= nil, text)
      assert.matches("\nclose 1000", text, 1, true)
      assert(support.wait_for(function() return seen.err end, 5))
      assert.are.equal(2 * #NODE_SIZES, seen.received)
      assert.are.equal(1000, seen.err.code)
    end)

    it("a luaws client (RootCAs) gets 0 B .. 1 MiB back byte-exact from a Node ws wss:// server" ..
      (compress and ", compressed" or ""), function()
      if node == "" then
        pending("node is not installed")
        return
      end
      local child = support.spawn(("%s %s server %s --tls %s %s"):format(q(node), q(NODE_DIR .. "/peer.js"),
        q(cjson.encode(compress)), q(certs.server), q(certs.server_key)))
      finally(function() support.stop(child) end)
      local port = support.wait_for(function() return tonumber(support.output(child):match("^(%d+)\n")) end, 10)
      assert(port, "the Node server printed no port:\n" .. support.output(child))
      local d = websocket.Dialer{ HandshakeTimeout = 10, EnableCompression = compress,
        TLSClientConfig = { RootCAs = certs.ca } }
      local problems, resp = support.run(function()
        local c, resp, err = d:Dial(wss(port, "/echo", "localhost"))
        if not c then return { "Dial: " .. tostring(err) } end
        local problems = {}
        for _, n in ipairs(NODE_SIZES) do
          for _, m in ipairs({ { websocket.TextMessage, text(n) }, { websocket.BinaryMessage, node_binary(n) } }) do
            assert(c:WriteMessage(m[1], m[2]))
            local mt, data, rerr = c:ReadMessage()
            if mt ~= m[1] or data ~= m[2] then
              problems[#problems + 1] = ("%d bytes (type %d): %s"):format(n, m[1],
                tostring(rerr or support.diff(data, m[2])))
            end
          end
        end
        c:WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""))
        c:ReadMessage()
        c:Close()
        return problems, resp
      end, 30)
      assert.are.same({}, problems)
      assert.are.equal(compress, (resp.Header:Get("Sec-WebSocket-Extensions") or ""):find("permessage-deflate", 1, true) ~= nil)
      assert.are.equal("CN=localhost", resp.TLS.PeerCertificates[1].Subject)
    end)
  end
end)

describe("issue 10: the TLS snippets of docs/API.md", function()
  it("run as written: the server's ListenAndServeTLS and the client's wss:// Dial", function()
    local docs = assert(support.read_file("docs/API.md"))
    local section = assert(docs:match("\n## TLS\n(.-)\n### "), "no ## TLS section")
    local server_src, client_src = section:match("```lua\n(.-)```.-```lua\n(.-)```")
    assert(server_src and client_src, "two Lua snippets expected under ## TLS")
    local cert = support.self_signed_cert()
    finally(cert.remove)
    local port = support.free_port()
    local function adapt(src)
      return (src:gsub(":8443", ":" .. port):gsub('"cert%.pem"', ("%q"):format(cert.file))
        :gsub('"key%.pem"', ("%q"):format(cert.key)))
    end
    local server = support.spawn(support.lua(adapt(server_src)))
    finally(function() support.stop(server) end)
    assert(support.wait_port(port, 10), "the snippet's server did not listen:\n" ..
      support.output(server))
    local status, out = support.run_child(support.lua(adapt(client_src)), 20)
    assert.are.equal(0, status, out)
    assert.are.equal("1\thello\n", out)
    assert.is_truthy(support.wait_for(function()
      return support.output(server):find("TLS version\t772\tTLS_AES_", 1, true)
    end, 5, 0.05), "the handler printed r.TLS:\n" .. support.output(server))
  end)
end)
