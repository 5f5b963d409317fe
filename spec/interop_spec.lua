-- Interoperability of luaws with two independent WebSocket implementations, in both
-- directions: Python's websockets (Debian's 10.4, spec/peers/py_*.py) and gorilla/websocket
-- (Debian's 1.5, spec/peers/gorilla_*/main.go, compiled once per run).
--
--   peer client -> in-process luaws echo server: messages of 0 B .. 1 MiB byte-exact,
--     16 MiB text and binary messages, subprotocol negotiation, a request header in
--     r.Header (read before Upgrade, first read right after it, first read after the
--     handler yielded), pings both ways (the peer's answered by luaws, luaws' seen by its
--     pong handler), a close 4000 + text both ways, a close 1001 + text from luaws, a
--     close 1008 + text from the peer;
--   luaws client -> peer echo server: the same messages (and 16 MiB ones), fragmented
--     messages from the peer, the subprotocol and header the other way, pings both ways,
--     the 1000 close handshake, a close 1001 + text from luaws, a close 1008 + text from
--     the peer, and a text message that is not UTF-8 (in a child process, as it can
--     crash luaws).
--   over TLS (wss://, with spec/tls_certs.lua's test CA and server certificate: the peer
--     servers with --tls / -tls, the peer clients verifying with --cafile / -cafile, the
--     luaws Dialer with RootCAs), both directions: the 0 B .. 1 MiB and 16 MiB echoes and
--     the close handshake.
--
-- Children run in the background and are polled with websocket.Sleep, so the event loop
-- (and with it the in-process server) keeps running while a test waits; every child is
-- killed when the test that started it ends (defer below, on busted's finally()).
--
-- Run from the repository root: busted --lua=lua5.4 spec/interop_spec.lua
local websocket = require "luaws"
local support = require "support"

local PYTHON = "/usr/bin/python3"

-- The message script every peer shares: text and binary payloads of these sizes. The
-- payload functions are the same in spec/peers/*.
local SIZES = { 0, 1, 125, 126, 127, 65535, 65536, 1048576 }
local text, binary = support.text, support.peer_binary

local function script_of(sizes)
  local script = {}
  for _, size in ipairs(sizes) do
    script[#script + 1] = { kind = "text", size = size, mt = websocket.TextMessage, payload = text(size) }
    script[#script + 1] = { kind = "binary", size = size, mt = websocket.BinaryMessage, payload = binary(size) }
  end
  return script
end

local SCRIPT = script_of(SIZES)

-- The big messages: the peer clients' mode "big" sends these, and the peer servers check
-- any message of such a size against the shared payload (their "RECEIVED" lines).
local BIG = script_of({ 16 * 1024 * 1024 })

-- The ping payloads every peer uses, whichever side pings (spec/peers/*).
local PING_PAYLOADS = {
  "",
  "ping-1",
  (function()
    local t = {}
    for i = 0, 124 do t[#t + 1] = string.char(i) end
    return table.concat(t)
  end)(),
  "\0\255\128 binary \1",
  "\u{20AC}\u{1F600} utf-8",
}
assert(#PING_PAYLOADS[3] == 125)

-- The fragmented messages the peer servers send on "FRAGMENT-TEXT" / "FRAGMENT-BINARY"
-- (see spec/peers/py_server.py and spec/peers/gorilla_server/main.go).
local FRAGMENTED = {
  python = {
    text = "frag-one \u{20AC} " .. "" .. "two \u{1F600} " .. ("three"):rep(20000) .. " end",
    binary = (function()
      local all = {}
      for i = 0, 255 do all[#all + 1] = string.char(i) end
      return "\0\1\2" .. table.concat(all):rep(300) .. "" .. ("\255"):rep(5) .. "\128end"
    end)(),
  },
  gorilla = {
    text = "F:" .. ("\u{20AC}\u{1F600}ab"):rep(700) .. " end",
    binary = (function()
      local t = {}
      for i = 0, 4320 do t[#t + 1] = string.char(255 - i % 256) end
      return table.concat(t)
    end)(),
  },
}

local TOKENS = { python = "python-token-7f3a", gorilla = "gorilla-token-91c2" }
local LUAWS_TOKEN = "luaws-token-5d1e"

---------------------------------------------------------------------------------------
-- helpers

local q, read_file, sh_output = support.shell_quote, support.read_file, support.sh_output

local root = sh_output("pwd")
local spec_dir = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "spec"
if spec_dir:sub(1, 1) ~= "/" then spec_dir = root .. "/" .. spec_dir end
local PEERS = spec_dir .. "/peers"

local TMP = sh_output("mktemp -d /tmp/luaws-interop.XXXXXX")
assert(TMP:match("^/tmp/luaws%-interop%."), "mktemp -d failed")

local counter = 0
local function tmpname(what)
  counter = counter + 1
  return ("%s/%03d-%s"):format(TMP, counter, what)
end

-- Is process pid still running (not gone, not a zombie nobody reaped)?
local function alive(pid)
  local stat = read_file("/proc/" .. pid .. "/stat")
  if not stat then return false end
  local state = stat:match(".*%) (%a)")
  return state ~= "Z" and state ~= "X"
end

local function kill(pid)
  if pid then os.execute("kill -9 " .. pid .. " >/dev/null 2>&1") end
end

-- defer(fn): run fn when the current test ends, pass or fail. busted keeps only the
-- last function given to finally(), so the first defer of a test registers one
-- finally() that runs everything deferred, newest first.
local deferred
local function defer(fn)
  if not deferred then
    local list = {}
    deferred = list
    finally(function()
      deferred = nil
      for i = #list, 1, -1 do pcall(list[i]) end
    end)
  end
  deferred[#deferred + 1] = fn
end

-- Start argv in the background; returns its pid and the paths of its stdout and stderr.
local function spawn(argv, name)
  local words = {}
  for i, a in ipairs(argv) do words[i] = q(a) end
  local out, err, pidfile = tmpname(name .. ".out"), tmpname(name .. ".err"), tmpname(name .. ".pid")
  local ok = os.execute(("%s >%s 2>%s </dev/null & echo $! >%s"):format(
    table.concat(words, " "), q(out), q(err), q(pidfile)))
  assert(ok, "could not start " .. argv[1])
  local pid = tonumber(read_file(pidfile) or "")
  assert(pid, "no pid for " .. argv[1])
  return pid, out, err
end

-- Run the event loop (websocket.Sleep) until pred() is true or timeout seconds passed.
local function wait_until(pred, timeout)
  local deadline = websocket.Now() + timeout
  while true do
    local v = pred()
    if v then return v end
    if websocket.Now() >= deadline then return nil end
    websocket.Sleep(0.05)
  end
end

-- What a child said on stderr, for failure messages.
local function stderr_of(err_path)
  local s = read_file(err_path) or ""
  if #s > 2000 then s = s:sub(1, 2000) .. "..." end
  return s == "" and "(stderr empty)" or ("stderr:\n" .. s)
end

-- A peer client's result file: a list of lines ending with "END", parsed into
-- { echo = {["text 125"] = "ok", ...}, ping = {"ok", ...}, subprotocol = "a",
--   close = "4000 text", ["server-close"] = "1001 text", error = ... }.
local function parse_result(s)
  local r = { echo = {}, ping = {}, lines = {} }
  for line in s:gmatch("[^\n]+") do
    r.lines[#r.lines + 1] = line
    local key, rest = line:match("^(%S+) ?(.*)$")
    if key == "echo" then
      local what, verdict = rest:match("^(%S+ %S+) (.*)$")
      r.echo[what] = verdict
    elseif key == "ping" then
      local i, verdict = rest:match("^(%d+) (.*)$")
      r.ping[tonumber(i)] = verdict
    elseif key == "error" then
      r.error = (r.error and r.error .. "; " or "") .. rest
    else
      r[key] = rest
    end
  end
  return r
end

-- Wait for a peer client's result file (or its exit).
local function wait_result(path, pid, err_path, timeout)
  wait_until(function() return read_file(path) or not alive(pid) end, timeout)
  local s = read_file(path)
  assert(s, ("peer client wrote no result within %d s (%s)\n%s"):format(timeout,
    alive(pid) and "still running" or "exited", stderr_of(err_path)))
  local r = parse_result(s)
  assert(r.END, "truncated result file:\n" .. s)
  return r
end

-- "ok", or what differs between a received (mt, data) and the expected one.
local function compare(mt, data, want_mt, want)
  if mt ~= want_mt then return "type " .. tostring(mt) .. " instead of " .. want_mt end
  if type(data) ~= "string" then return "no data" end
  if #data ~= #want then return ("length %d instead of %d"):format(#data, #want) end
  if data ~= want then
    for i = 1, #data do
      if data:byte(i) ~= want:byte(i) then return "differs at byte " .. (i - 1) end
    end
  end
  return "ok"
end

-- Lists of strings (ping payloads) as one readable line, for failure messages.
local function show_list(t)
  local parts = {}
  for i, v in ipairs(t or {}) do
    parts[i] = '"' .. v:gsub('[%c"\\\128-\255]', function(ch) return ("\\%d"):format(ch:byte()) end) .. '"'
  end
  return "{" .. table.concat(parts, ", ") .. "}"
end

-- The in-process luaws echo server. Its handler records what it saw in `st`. It reads
-- the X-Interop-Token request header before Upgrade, or with late_header first right
-- after Upgrade ("after upgrade") or first once the handler has yielded ("after yield"),
-- as gorilla handlers may. Its pong handler records each pong's payload in st.pongs.
-- Two text messages are commands: "PING-ME" is echoed after the handler has pinged the
-- peer with each of PING_PAYLOADS (c:WriteControl); "CLOSE-1001" is answered by a close
-- 1001 "luaws server going away" (and reading goes on, for the peer's answer).
-- st.pongs_at_ponged is what the pong handler had seen when "PONGED" was read.
local function start_echo_server(late_header, tls)
  local st = { received = {}, done = false, handlers = 0 }
  local upgrader = websocket.Upgrader{ Subprotocols = { "a", "b" } }
  local srv, err = websocket.Listen("127.0.0.1:0", function(w, r)
    st.handlers = st.handlers + 1
    if not late_header then st.token = r.Header:Get("X-Interop-Token") end
    local c, uerr = upgrader:Upgrade(w, r)
    if not c then
      st.upgrade_err, st.done = tostring(uerr), true
      return
    end
    if late_header == "after upgrade" then st.token = r.Header:Get("X-Interop-Token") end
    st.subprotocol = c:Subprotocol()
    st.pongs, st.ping_errs = {}, {}
    c:SetPongHandler(function(data) st.pongs[#st.pongs + 1] = data end)
    while true do
      local mt, data, rerr = c:ReadMessage()
      if not mt then
        st.read_err = rerr
        break
      end
      st.received[#st.received + 1] = { mt = mt, data = data }
      local command = mt == websocket.TextMessage and data or nil
      if command == "PING-ME" then
        for i, p in ipairs(PING_PAYLOADS) do
          local ok, perr = c:WriteControl(websocket.PingMessage, p)
          if not ok then st.ping_errs[#st.ping_errs + 1] = ("ping %d: %s"):format(i, tostring(perr)) end
        end
      elseif command == "PONGED" then
        st.pongs_at_ponged = table.move(st.pongs, 1, #st.pongs, 1, {})
      end
      local ok, werr
      if command == "CLOSE-1001" then
        st.close_ok, st.close_err = c:WriteMessage(websocket.CloseMessage,
          websocket.FormatCloseMessage(websocket.CloseGoingAway, "luaws server going away"))
        ok = true
      else
        ok, werr = c:WriteMessage(mt, data)
      end
      if not ok then
        st.write_err = werr
        break
      end
    end
    if late_header == "after yield" then st.token = r.Header:Get("X-Interop-Token") end
    c:Close()
    st.done = true
  end, tls and { TLS = tls } or nil)
  assert(srv, "Listen failed: " .. tostring(err))
  return srv, st
end

-- Start a peer server; returns pid, port, stdout path, stderr path.
local function start_peer_server(argv, name)
  local pid, out, err = spawn(argv, name)
  local port = wait_until(function()
    local s = read_file(out)
    return s and tonumber(s:match("^(%d+)\n"))
  end, 15)
  if not port then
    kill(pid)
    error(("%s printed no port within 15 s\n%s"):format(name, stderr_of(err)))
  end
  return pid, port, out, err
end

-- The lines a peer server printed after its port.
local function server_lines(out)
  local s = read_file(out) or ""
  local t = {}
  for line in s:gmatch("[^\n]+") do t[#t + 1] = line end
  table.remove(t, 1)
  return t
end

local function has_line(out, prefix)
  for _, line in ipairs(server_lines(out)) do
    if line:sub(1, #prefix) == prefix then return line end
  end
  return nil
end

-- Run fn(state) in a luaws coroutine (so a hung read cannot hang the spec) and drive the
-- loop until it returns or timeout seconds pass.
local function run_luaws(fn, timeout)
  local st = { done = false }
  websocket.Go(function()
    local ok, err = xpcall(fn, debug.traceback, st)
    if not ok then st.lua_error = err end
    st.done = true
  end)
  wait_until(function() return st.done end, timeout)
  return st
end

local function assert_finished(st, timeout)
  assert(st.done, ("the luaws side did not finish within %d s"):format(timeout))
  assert(st.lua_error == nil, st.lua_error)
end

-- A luaws client in a process of its own, for a test that may crash it: it sends one
-- text message of n bytes that is not valid UTF-8 (an 0xFF byte at offset 100), reads
-- once, and prints what happened, then "DONE" (missing when the process died).
local BAD_UTF8_CLIENT = TMP .. "/bad_utf8_client.lua"
do
  local build = os.getenv("LUAWS_BUILD") or "build"
  if build:sub(1, 1) ~= "/" then build = root .. "/" .. build end
  local f = assert(io.open(BAD_UTF8_CLIENT, "w"))
  f:write(([[
package.path = %q .. package.path
package.cpath = %q .. package.cpath
local websocket = require "luaws"
local port, n = arg[1], tonumber(arg[2])
local function say(s) io.stdout:write(s, "\n"); io.stdout:flush() end
local c, _, err = websocket.DefaultDialer:Dial("ws://127.0.0.1:" .. port .. "/echo")
if not c then say("DIAL-ERROR " .. tostring(err)); say("DONE"); return end
local ok, werr = c:WriteMessage(websocket.TextMessage, ("x"):rep(100) .. "\255" .. ("x"):rep(n - 101))
say("WRITE " .. tostring(ok) .. " " .. tostring(werr))
local mt, data, rerr = c:ReadMessage()
say("READ " .. tostring(mt) .. " " .. tostring(rerr and rerr.code) .. " " .. tostring(rerr))
c:Close()
websocket.Sleep(0.2)
say("DONE")
]]):format(root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;", build .. "/?.so;"))
  f:close()
end

---------------------------------------------------------------------------------------
-- the peers

local gorilla = { err = "the gorilla peers were not built" }

local function build_gorilla()
  if sh_output("command -v go || true") == "" then
    gorilla.err = "the Go toolchain ('go') is not on PATH: cannot build the gorilla peers " ..
      "(install golang-go and golang-github-gorilla-websocket-dev)"
    return
  end
  local env = ("GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE=%s GOFLAGS="):format(q(TMP .. "/gocache"))
  for _, prog in ipairs({ "gorilla_client", "gorilla_server" }) do
    local log = TMP .. "/build-" .. prog .. ".log"
    local ok = os.execute(("cd %s && %s go build -o %s . >%s 2>&1"):format(
      q(PEERS .. "/" .. prog), env, q(TMP .. "/" .. prog), q(log)))
    if not ok then
      gorilla.err = ("go build of spec/peers/%s failed:\n%s"):format(prog, read_file(log) or "")
      return
    end
    gorilla[prog] = TMP .. "/" .. prog
  end
  gorilla.err = nil
end

-- client(url, result, mode [, cafile]): a wss:// URL is verified against cafile;
-- server([certs]): with certs (tls_certs.lua's), it serves wss:// with the server's
-- certificate.
local PEER = {
  python = {
    client = function(url, result, mode, cafile)
      return { PYTHON, PEERS .. "/py_client.py", url, result, mode, cafile and "--cafile", cafile }
    end,
    server = function(certs)
      return { PYTHON, PEERS .. "/py_server.py", certs and "--tls", certs and certs.server, certs and certs.server_key }
    end,
    check = function() end,
  },
  gorilla = {
    client = function(url, result, mode, cafile)
      return { gorilla.gorilla_client, url, result, mode, cafile and "-cafile", cafile }
    end,
    server = function(certs)
      return { gorilla.gorilla_server, certs and "-tls", certs and certs.server, certs and certs.server_key }
    end,
    check = function() assert(gorilla.err == nil, gorilla.err) end,
  },
}

-- The test certificates for the TLS tests (spec/tls_certs.lua), made on first use.
local certs
local function tls_certs()
  certs = certs or require("tls_certs").make()
  return certs
end

---------------------------------------------------------------------------------------

describe("interop", function()
  lazy_teardown(function()
    if TMP:match("^/tmp/luaws%-interop%.") then os.execute("rm -rf " .. q(TMP)) end
    if certs then certs.remove() end
  end)

  for _, name in ipairs({ "python", "gorilla" }) do
    local peer = PEER[name]
    local label = name == "python" and "Python websockets" or "gorilla/websocket"

    describe(label, function()
      if name == "gorilla" then lazy_setup(build_gorilla) end

      describe("client -> luaws server", function()
        -- Run the peer client in `mode` against a fresh luaws echo server; returns the
        -- peer's result and what the server's handler recorded.
        -- With tls, over TLS: the server has the test server certificate, the peer
        -- verifies it against the test CA.
        local function exchange(mode, timeout, late_header, tls)
          peer.check()
          local c = tls and tls_certs()
          local srv, st = start_echo_server(late_header,
            c and { CertFile = c.server, KeyFile = c.server_key })
          defer(function() srv:Close() end)
          local url = ("%s://127.0.0.1:%d/echo"):format(c and "wss" or "ws", srv:Port())
          local result = tmpname(name .. "-client.result")
          local pid, _, err = spawn(peer.client(url, result, mode, c and c.ca), name .. "-client")
          defer(function() kill(pid) end)
          local r = wait_result(result, pid, err, timeout)
          wait_until(function() return st.done end, 5)
          assert(st.done, "the luaws handler did not finish (handlers started: " .. st.handlers .. ")")
          return r, st
        end

        for _, tls in ipairs({ false, true }) do
          it("echoes text and binary messages of 0 B to 1 MiB byte-exact" .. (tls and " (over TLS, wss://)" or ""), function()
            local r, st = exchange("messages", 40, nil, tls)
            assert.is_nil(r.error, "peer client reported: " .. tostring(r.error))
            for i, m in ipairs(SCRIPT) do
              local what = m.kind .. " " .. m.size
              assert.are.equal("ok", r.echo[what], "echo of " .. what .. " as checked by the peer")
              local got = st.received[i] or {}
              assert.are.equal("ok", compare(got.mt, got.data, m.mt, m.payload),
                "message #" .. i .. " (" .. what .. ") as received by the luaws server")
            end
            assert.are.equal(#SCRIPT, #st.received, "number of messages the luaws server got")
          end)
        end

        it("negotiates the server-preferred subprotocol and passes a request header", function()
          local r, st = exchange("handshake", 20)
          assert.is_nil(r.error, "peer client reported: " .. tostring(r.error))
          assert.are.equal("a", r.subprotocol, "subprotocol the peer client got (offered b, a)")
          assert.are.equal("a", st.subprotocol, "c:Subprotocol() on the luaws side")
          assert.are.equal(TOKENS[name], st.token, "r.Header:Get('X-Interop-Token') in the handler")
        end)

        it("keeps that request header in r.Header after Upgrade, as gorilla does", function()
          local r, st = exchange("handshake", 20, "after upgrade")
          assert.is_nil(r.error, "peer client reported: " .. tostring(r.error))
          assert.are.equal(TOKENS[name], st.token,
            "r.Header:Get('X-Interop-Token') first read right after Upgrade (before any yield)")
        end)

        it("keeps that request header in r.Header after the handler yielded, as gorilla does", function()
          local r, st = exchange("handshake", 20, "after yield")
          assert.is_nil(r.error, "peer client reported: " .. tostring(r.error))
          assert.are.equal(TOKENS[name], st.token,
            "r.Header:Get('X-Interop-Token') first read after ReadMessage (the handler has yielded)")
        end)

        for _, tls in ipairs({ false, true }) do
          it("delivers the peer's close 4000 + text to luaws and echoes the close back" .. (tls and " (over TLS, wss://)" or ""), function()
            local r, st = exchange("handshake", 20, nil, tls)
            assert.is_nil(r.error, "peer client reported: " .. tostring(r.error))
            local err = st.read_err
            assert.is_truthy(err, "ReadMessage on the luaws side returned no error")
            assert.is_true(websocket.IsCloseError(err, 4000), "a CloseError 4000 expected, got " .. tostring(err))
            assert.are.equal(4000, err.code)
            assert.are.equal("bye from " .. name, err.text)
            local code = (r.close or ""):match("^(%d+)")
            assert.are.equal("4000", code, "close code the peer got back (line: " .. tostring(r.close) .. ")")
          end)
        end

        for _, tls in ipairs({ false, true }) do
          it("echoes text and binary messages of 16 MiB byte-exact" .. (tls and " (over TLS, wss://)" or ""), function()
            local r, st = exchange("big", 60, nil, tls)
            assert.is_nil(r.error, "peer client reported: " .. tostring(r.error))
            for i, m in ipairs(BIG) do
              local what = m.kind .. " " .. m.size
              assert.are.equal("ok", r.echo[what], "echo of " .. what .. " as checked by the peer")
              local got = st.received[i] or {}
              assert.are.equal("ok", compare(got.mt, got.data, m.mt, m.payload),
                "message #" .. i .. " (" .. what .. ") as received by the luaws server")
            end
            assert.are.equal(#BIG, #st.received, "number of messages the luaws server got")
          end)
        end

        it("answers the peer's pings with the same payload; its own pings' pongs reach its pong handler", function()
          local r, st = exchange("ping", 30)
          assert.is_nil(r.error, "peer client reported: " .. tostring(r.error))
          for i, p in ipairs(PING_PAYLOADS) do
            assert.are.equal("ok", r.ping[i], ("the peer's ping #%d (payload %q): its pong as checked by the peer"):format(i, p))
          end
          assert.are.same({}, st.ping_errs, "c:WriteControl(websocket.PingMessage, ...) on the luaws side")
          assert.are.equal(show_list(PING_PAYLOADS), show_list(st.pongs_at_ponged),
            "payloads the luaws pong handler had seen (inside ReadMessage) when the peer's next message was read")
          assert.are.equal(show_list(PING_PAYLOADS), show_list(st.pongs), "payloads the luaws pong handler saw in all")
          assert.is_true(websocket.IsCloseError(st.read_err, 4000), "the peer's close, got " .. tostring(st.read_err))
        end)

        it("sends a close 1001 + text that the peer reports", function()
          local r, st = exchange("close1001", 20)
          assert.is_nil(r.error, "peer client reported: " .. tostring(r.error))
          assert.is_true(st.close_ok, "writing the close 1001: " .. tostring(st.close_err))
          assert.are.equal("1001 luaws server going away", r["server-close"], "the close the peer client got")
          local err = st.read_err
          assert.is_true(websocket.IsCloseError(err, 1001), "the peer's answer: a CloseError 1001 expected, got " .. tostring(err))
        end)

        it("delivers the peer's close 1008 + text to luaws as a CloseError 1008", function()
          local r, st = exchange("close1008", 20)
          assert.is_nil(r.error, "peer client reported: " .. tostring(r.error))
          local err = st.read_err
          assert.is_truthy(err, "ReadMessage on the luaws side returned no error")
          assert.is_true(websocket.IsCloseError(err, 1008), "a CloseError 1008 expected, got " .. tostring(err))
          assert.are.equal(1008, err.code)
          assert.are.equal("policy from " .. name, err.text)
          local code = (r.close or ""):match("^(%d+)")
          assert.are.equal("1008", code, "close code the peer got back (line: " .. tostring(r.close) .. ")")
        end)
      end)

      describe("luaws client -> server", function()
        -- Start the peer server and dial it; fn(c, st) runs in a luaws coroutine.
        -- With tls, over TLS: the peer server has the test server certificate, the
        -- luaws Dialer (unless one is given) verifies it against the test CA.
        local function with_server(timeout, fn, dialer, header, tls)
          peer.check()
          local c = tls and tls_certs()
          local pid, port, out, err = start_peer_server(peer.server(c), name .. "-server")
          local conn
          defer(function() kill(pid) end)
          defer(function() if conn then conn:Close() end end)
          local url = ("%s://127.0.0.1:%d/echo"):format(c and "wss" or "ws", port)
          if c and not dialer then
            dialer = websocket.Dialer{ HandshakeTimeout = 10, TLSClientConfig = { RootCAs = c.ca } }
          end
          local st = run_luaws(function(st)
            local c, resp, derr = (dialer or websocket.DefaultDialer):Dial(url, header)
            st.resp = resp
            if not c then
              st.dial_err = tostring(derr)
              return
            end
            conn = c
            fn(c, st)
          end, timeout)
          assert_finished(st, timeout)
          assert(st.dial_err == nil, "Dial failed: " .. tostring(st.dial_err) .. "\n" .. stderr_of(err))
          return st, out, err
        end

        for _, tls in ipairs({ false, true }) do
          it("sends text and binary messages of 0 B to 1 MiB and gets them back byte-exact" .. (tls and " (over TLS, wss://)" or ""), function()
            local st = with_server(30, function(c, st)
              st.got = {}
              for i, m in ipairs(SCRIPT) do
                local ok, werr = c:WriteMessage(m.mt, m.payload)
                if not ok then
                  st.io_err = ("write #%d: %s"):format(i, tostring(werr))
                  return
                end
                local mt, data, rerr = c:ReadMessage()
                if not mt then
                  st.io_err = ("read #%d: %s"):format(i, tostring(rerr))
                  return
                end
                st.got[i] = { mt = mt, data = data }
              end
            end, nil, nil, tls)
            assert.is_nil(st.io_err)
            for i, m in ipairs(SCRIPT) do
              local got = st.got[i] or {}
              assert.are.equal("ok", compare(got.mt, got.data, m.mt, m.payload),
                ("echo #%d (%s %d)"):format(i, m.kind, m.size))
            end
          end)
        end

        it("receives a message the peer sends in several frames as one message", function()
          local st = with_server(20, function(c, st)
            st.got = {}
            for _, cmd in ipairs({ "FRAGMENT-TEXT", "FRAGMENT-BINARY", "after" }) do
              local ok, werr = c:WriteMessage(websocket.TextMessage, cmd)
              if not ok then
                st.io_err = "write " .. cmd .. ": " .. tostring(werr)
                return
              end
            end
            for i = 1, 3 do
              local mt, data, rerr = c:ReadMessage()
              if not mt then
                st.io_err = ("read #%d: %s"):format(i, tostring(rerr))
                return
              end
              st.got[i] = { mt = mt, data = data }
            end
          end)
          assert.is_nil(st.io_err)
          local want = FRAGMENTED[name]
          local got = st.got
          assert.are.equal("ok", compare(got[1].mt, got[1].data, websocket.TextMessage, want.text),
            "the fragmented text message")
          assert.are.equal("ok", compare(got[2].mt, got[2].data, websocket.BinaryMessage, want.binary),
            "the fragmented binary message")
          assert.are.equal("ok", compare(got[3].mt, got[3].data, websocket.TextMessage, "after"),
            "the message after them")
        end)

        it("offers subprotocols and request headers the peer server sees", function()
          local dialer = websocket.Dialer{ HandshakeTimeout = 10, Subprotocols = { "b", "a" } }
          local st, out = with_server(20, function(c, st)
            st.subprotocol = c:Subprotocol()
            c:WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""))
            c:ReadMessage()
          end, dialer, { ["X-Interop-Token"] = LUAWS_TOKEN })
          assert.are.equal(101, st.resp and st.resp.StatusCode, "handshake response status")
          assert.are.equal("a", st.subprotocol, "c:Subprotocol() (offered b, a; the server prefers a)")
          assert.are.equal("a", st.resp.Header:Get("Sec-WebSocket-Protocol"))
          assert.is_truthy(wait_until(function() return has_line(out, "SUBPROTOCOL") end, 5))
          assert.are.equal("SUBPROTOCOL a", has_line(out, "SUBPROTOCOL"))
          assert.are.equal("HEADER " .. LUAWS_TOKEN, has_line(out, "HEADER"))
        end)

        it("survives a text message that is not valid UTF-8 (8 KiB, in a child process)", function()
          -- Python refuses such a message with 1007; gorilla does not check UTF-8 and
          -- echoes it, so luaws itself has to fail the connection. Either way ReadMessage
          -- must return an error, and the process must live on.
          peer.check()
          local spid, port, sout, serr = start_peer_server(peer.server(), name .. "-server")
          defer(function() kill(spid) end)
          local cpid, cout, cerr = spawn({ "lua5.4", BAD_UTF8_CLIENT, tostring(port), "8192" },
            name .. "-bad-utf8-client")
          defer(function() kill(cpid) end)
          wait_until(function() return not alive(cpid) end, 10)
          local out = read_file(cout) or ""
          assert.is_truthy(out:find("\nDONE\n", 1, true) or out:find("^DONE\n"),
            ("the luaws client process %s before finishing; it printed:\n%s%s"):format(
              alive(cpid) and "hung" or "died", out, stderr_of(cerr)))
          assert.is_truthy(out:find("WRITE true nil", 1, true), out)
          local read = out:match("READ ([^\n]*)")
          assert.is_truthy(read and read:match("^nil %d+ "), "ReadMessage should fail, got: " .. tostring(read))
          if name == "python" then
            assert.are.equal("1007", read:match("^nil (%d+)"), "the peer's close code")
          else
            local line = wait_until(function() return has_line(sout, "CLOSED") end, 5)
            assert.are.equal("CLOSED 1007 invalid UTF-8 in text message", line, "the close luaws sent\n" .. stderr_of(serr))
          end
        end)

        for _, tls in ipairs({ false, true }) do
          it("completes the close handshake: sends 1000, reads the peer's 1000 as a CloseError" .. (tls and " (over TLS, wss://)" or ""), function()
            local st, out, err = with_server(20, function(c, st)
              local ok, werr = c:WriteMessage(websocket.TextMessage, "hello")
              st.hello = ok and select(2, c:ReadMessage()) or tostring(werr)
              st.close_ok, st.close_err = c:WriteMessage(websocket.CloseMessage,
                websocket.FormatCloseMessage(websocket.CloseNormalClosure, "luaws done"))
              st.mt, st.data, st.read_err = c:ReadMessage()
              st.after_ok, st.after_err = c:WriteMessage(websocket.TextMessage, "too late")
            end, nil, nil, tls)
            assert.are.equal("hello", st.hello)
            assert.is_true(st.close_ok, "writing the close: " .. tostring(st.close_err))
            assert.is_nil(st.mt, "ReadMessage after the close returned a message")
            local rerr = st.read_err
            assert.is_true(websocket.IsCloseError(rerr, 1000), "a CloseError 1000 expected, got " .. tostring(rerr))
            assert.are.equal(1000, rerr.code)
            assert.are.equal(websocket.ErrCloseSent, st.after_err, "writing after the close")
            local line = wait_until(function() return has_line(out, "CLOSED") end, 5)
            assert.are.equal("CLOSED 1000 luaws done", line, "what the peer server got\n" .. stderr_of(err))
          end)
        end

        for _, tls in ipairs({ false, true }) do
          it("sends text and binary messages of 16 MiB and gets them back byte-exact" .. (tls and " (over TLS, wss://)" or ""), function()
            local st, out, err = with_server(60, function(c, st)
              st.got = {}
              for i, m in ipairs(BIG) do
                local ok, werr = c:WriteMessage(m.mt, m.payload)
                if not ok then
                  st.io_err = ("write #%d: %s"):format(i, tostring(werr))
                  return
                end
                local mt, data, rerr = c:ReadMessage()
                if not mt then
                  st.io_err = ("read #%d: %s"):format(i, tostring(rerr))
                  return
                end
                st.got[i] = { mt = mt, data = data }
              end
              c:WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""))
              c:ReadMessage()
            end, nil, nil, tls)
            assert.is_nil(st.io_err)
            for i, m in ipairs(BIG) do
              local got = st.got[i] or {}
              assert.are.equal("ok", compare(got.mt, got.data, m.mt, m.payload),
                ("echo #%d (%s %d)"):format(i, m.kind, m.size))
              local want = ("RECEIVED %s %d"):format(m.kind, m.size)
              local line = wait_until(function() return has_line(out, want) end, 5)
              assert.are.equal(want .. " ok", line, "what the peer server received\n" .. stderr_of(err))
            end
          end)
        end

        it("pings the peer (pongs reach the pong handler with each payload) and answers its pings", function()
          local st, out, err = with_server(30, function(c, st)
            st.pongs, st.seen = {}, {}
            c:SetPongHandler(function(data) st.pongs[#st.pongs + 1] = data end)
            local function echo(what)
              local ok, werr = c:WriteMessage(websocket.TextMessage, what)
              if not ok then return "write " .. what .. ": " .. tostring(werr) end
              local mt, data, rerr = c:ReadMessage()
              if mt ~= websocket.TextMessage or data ~= what then
                return ("echo of %s: %s %q %s"):format(what, tostring(mt), tostring(data), tostring(rerr))
              end
            end
            for i, p in ipairs(PING_PAYLOADS) do
              local ok, werr = c:WriteControl(websocket.PingMessage, p)
              if not ok then
                st.io_err = ("ping #%d: %s"):format(i, tostring(werr))
                return
              end
              -- The peer answers the ping before it reads this message, so its pong is
              -- in before the echo, and ReadMessage runs the pong handler first.
              st.io_err = echo("after-ping-" .. i)
              if st.io_err then return end
              st.seen[i] = table.move(st.pongs, 1, #st.pongs, 1, {})
            end
            -- The peer server pings luaws with the same payloads on "PING-ME" (luaws
            -- answers on its own); gorilla checks the pongs when "PONGED" arrives.
            for _, cmd in ipairs({ "PING-ME", "PONGED" }) do
              st.io_err = echo(cmd)
              if st.io_err then return end
            end
            c:WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""))
            c:ReadMessage()
          end)
          assert.is_nil(st.io_err)
          for i = 1, #PING_PAYLOADS do
            assert.are.equal(show_list(table.move(PING_PAYLOADS, 1, i, 1, {})), show_list(st.seen[i]),
              ("payloads the pong handler had seen when the message after ping #%d was read"):format(i))
          end
          assert.are.equal(show_list(PING_PAYLOADS), show_list(st.pongs), "payloads the pong handler saw in all")
          for i, p in ipairs(PING_PAYLOADS) do
            local line = wait_until(function() return has_line(out, "PING " .. i .. " ") end, 5)
            assert.are.equal(("PING %d ok"):format(i), line,
              ("the peer server's ping #%d (payload %q): the pong luaws sent\n%s"):format(i, p, stderr_of(err)))
          end
        end)

        it("sends a close 1001 + text that the peer reports", function()
          local st, out, err = with_server(20, function(c, st)
            st.close_ok, st.close_err = c:WriteControl(websocket.CloseMessage,
              websocket.FormatCloseMessage(websocket.CloseGoingAway, "luaws going away"))
            st.mt, st.data, st.read_err = c:ReadMessage()
          end)
          assert.is_true(st.close_ok, "writing the close: " .. tostring(st.close_err))
          assert.is_nil(st.mt, "ReadMessage after the close returned a message")
          assert.is_true(websocket.IsCloseError(st.read_err, 1001),
            "the peer's answer: a CloseError 1001 expected, got " .. tostring(st.read_err))
          local line = wait_until(function() return has_line(out, "CLOSED") end, 5)
          assert.are.equal("CLOSED 1001 luaws going away", line, "what the peer server got\n" .. stderr_of(err))
        end)

        it("reads the peer's close 1008 + text as a CloseError 1008 and answers it", function()
          local st, out, err = with_server(20, function(c, st)
            local ok, werr = c:WriteMessage(websocket.TextMessage, "CLOSE-1008")
            st.write_err = not ok and tostring(werr) or nil
            st.mt, st.data, st.read_err = c:ReadMessage()
          end)
          assert.is_nil(st.write_err)
          assert.is_nil(st.mt, "ReadMessage returned a message instead of the close")
          local rerr = st.read_err
          assert.is_true(websocket.IsCloseError(rerr, 1008), "a CloseError 1008 expected, got " .. tostring(rerr))
          assert.are.equal(1008, rerr.code)
          assert.are.equal("policy from " .. name, rerr.text)
          local line = wait_until(function() return has_line(out, "CLOSED") end, 5)
          assert.are.equal("CLOSED 1008", line and line:gsub("%s+$", ""),
            "the close luaws answered with, as the peer server got it\n" .. stderr_of(err))
        end)
      end)
    end)
  end
end)
