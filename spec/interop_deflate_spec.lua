-- Issue 10: permessage-deflate against three independent implementations, both roles,
-- byte-exact for text and binary from 0 B to 16 MiB: Python's websockets (Debian's 10.4,
-- compression on by default: 12-bit windows both ways, memLevel 5), gorilla/websocket
-- (Debian's 1.5, EnableCompression: no context takeover either way) and Node's ws
-- (spec/peers/node, ws 8 from npm: perMessageDeflate with and without context takeover,
-- window bits 9 to 15).
--
--   peer client -> in-process luaws echo server (Upgrader{EnableCompression = true, ...});
--   luaws client (Dialer{EnableCompression = true, ...}) -> peer echo server.
--
-- Each test checks what both sides negotiated (the peer's view of the
-- Sec-WebSocket-Extensions answer, and c:_deflate() on the luaws side) as well as every
-- echo. The peers are spec/peers/py_client.py, py_server.py, gorilla_client,
-- gorilla_server (with their compress flags) and node/peer.js; node_modules comes from
-- `npm ci` in spec/peers/node (scripts/deps.sh runs it).
--
-- Run from the repository root: busted --lua=lua5.4 spec/interop_deflate_spec.lua
local websocket = require "luaws"
local support = require "support"
local cjson = require "cjson"

lazy_setup(function() support.keepalive(true) end)
lazy_teardown(function() support.keepalive(false) end)

local q, read_file, sh_output = support.shell_quote, support.read_file, support.sh_output
local PYTHON = support.PYTHON
local PEERS = support.peer("")
local NODE_DIR = PEERS .. "node"

local TMP = sh_output("mktemp -d /tmp/luaws-interop-deflate.XXXXXX")
assert(TMP:match("^/tmp/luaws%-interop%-deflate%."), "mktemp -d failed")

-- The shared payloads (spec/interop_spec.lua and every peer): text and binary of each size.
local SIZES = { 0, 1, 125, 126, 127, 65535, 65536, 1048576 }
local BIG = { 16 * 1024 * 1024 }
local text, binary = support.text, support.peer_binary

---------------------------------------------------------------------------------------
-- helpers

local counter = 0
local function tmpname(what)
  counter = counter + 1
  return ("%s/%03d-%s"):format(TMP, counter, what)
end

-- Start argv in the background (stopped when the test ends): its stdout and stderr paths.
local function start(argv, name)
  local words = {}
  for i, a in ipairs(argv) do words[i] = q(a) end
  local child = support.spawn("sh -c " .. q("exec " .. table.concat(words, " ")))
  finally(function() support.stop(child) end)
  return child
end

-- A peer client's result file ("echo text 125 ok", "extensions ...", "END").
local function wait_result(path, child, timeout)
  support.wait_for(function() return read_file(path) or support.status(child) end, timeout)
  local s = read_file(path)
  assert(s, ("the peer client wrote no result within %d s:\n%s"):format(timeout,
    support.output(child):sub(1, 2000)))
  local r = { echo = {}, lines = s }
  for line in s:gmatch("[^\n]+") do
    local key, rest = line:match("^(%S+) ?(.*)$")
    if key == "echo" then
      local what, verdict = rest:match("^(%S+ %S+) (.*)$")
      r.echo[what] = verdict
    elseif key == "error" then
      r.error = (r.error and r.error .. "; " or "") .. rest
    else
      r[key] = rest
    end
  end
  assert(r.END, "truncated result file:\n" .. s)
  return r
end

local function agreed(pmd)
  if not pmd then return "none" end
  return ("tx %d%s rx %d%s"):format(pmd.tx_bits, pmd.tx_no_context_takeover and "-" or "T",
    pmd.rx_bits, pmd.rx_no_context_takeover and "-" or "T")
end

-- gorilla's peers, built once
local gorilla = {}
local function build_gorilla()
  if sh_output("command -v go || true") == "" then
    gorilla.err = "the Go toolchain ('go') is not on PATH (golang-go, golang-github-gorilla-websocket-dev)"
    return
  end
  local env = ("GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE=%s GOFLAGS="):format(q(TMP .. "/gocache"))
  for _, prog in ipairs({ "gorilla_client", "gorilla_server" }) do
    local log = TMP .. "/build-" .. prog .. ".log"
    if not os.execute(("cd %s && %s go build -o %s . >%s 2>&1"):format(q(PEERS .. prog), env,
      q(TMP .. "/" .. prog), q(log))) then
      gorilla.err = ("go build of spec/peers/%s failed:\n%s"):format(prog, read_file(log) or "")
      return
    end
    gorilla[prog] = TMP .. "/" .. prog
  end
end

local function node_check()
  assert(read_file(NODE_DIR .. "/node_modules/ws/package.json"),
    "Node's ws is not installed: run `npm ci` in spec/peers/node (scripts/deps.sh does)")
end

-- The peers: client(url, result, mode) and server() argv, and what each expects.
local PEER = {
  python = {
    client = function(url, result, mode) return { PYTHON, PEERS .. "py_client.py", url, result, mode } end,
    server = function() return { PYTHON, PEERS .. "py_server.py" } end,
  },
  gorilla = {
    client = function(url, result, mode)
      assert(not gorilla.err, gorilla.err)
      return { gorilla.gorilla_client, url, result, mode, "compress" }
    end,
    server = function()
      assert(not gorilla.err, gorilla.err)
      return { gorilla.gorilla_server, "-compress" }
    end,
  },
}
local function node_peer(options)
  local json = cjson.encode(options)
  return {
    client = function(url, result, mode)
      node_check()
      return { "node", NODE_DIR .. "/peer.js", "client", url, result, mode, json }
    end,
    server = function()
      node_check()
      return { "node", NODE_DIR .. "/peer.js", "server", json }
    end,
  }
end

---------------------------------------------------------------------------------------
-- the two roles

-- The peer client in mode ("messages" or "big") against a luaws echo server with
-- Upgrader options up. Returns the peer's result and the server side's record.
local function peer_client(peer, up, mode, timeout)
  local st = { received = 0, bad = {} }
  local upgrader = websocket.Upgrader(up)
  local srv = assert(websocket.Listen("127.0.0.1:0", function(w, r)
    local c = assert(upgrader:Upgrade(w, r))
    st.pmd = c:_deflate()
    while true do
      local mt, data = c:ReadMessage()
      if not mt then break end
      st.received = st.received + 1
      if not c:WriteMessage(mt, data) then break end
    end
    c:Close()
    st.done = true
  end))
  finally(function() srv:Close() end)
  local result = tmpname("client.result")
  local child = start(peer.client(("ws://127.0.0.1:%d/echo"):format(srv:Port()), result, mode), "client")
  local r = wait_result(result, child, timeout)
  support.wait_for(function() return st.done end, 5)
  return r, st
end

-- The luaws client (Dialer options d) against the peer's echo server: sends the shared
-- messages of sizes, checks each echo byte for byte. Returns what the peer server printed
-- (its lines after the port) and the luaws side's record.
local function luaws_client(peer, d, sizes, timeout)
  local child = start(peer.server(), "server")
  local port = support.wait_for(function() return tonumber(support.output(child):match("^(%d+)\n")) end, 15)
  assert(port, "the peer server printed no port:\n" .. support.output(child))
  local st = { echo = {} }
  support.run(function()
    local c, resp, err = websocket.Dialer(d):Dial(("ws://127.0.0.1:%d/echo"):format(port))
    assert(c, "dial: " .. tostring(err))
    st.answer = resp.Header:Get("Sec-WebSocket-Extensions")
    st.pmd = c:_deflate()
    for _, n in ipairs(sizes) do
      for _, m in ipairs({ { "text", websocket.TextMessage, text(n) }, { "binary", websocket.BinaryMessage, binary(n) } }) do
        assert(c:WriteMessage(m[2], m[3]))
        local mt, data, rerr = c:ReadMessage()
        assert(mt, ("read %s %d: %s"):format(m[1], n, tostring(rerr)))
        st.echo[m[1] .. " " .. n] = (mt == m[2] and data == m[3]) and "ok" or
          ("MISMATCH type %s, %d bytes"):format(mt, #data)
      end
    end
    c:WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""))
    support.drain(c)
    c:Close()
  end, timeout)
  local lines = {}
  for line in support.output(child):gmatch("[^\n]+") do lines[#lines + 1] = line end
  table.remove(lines, 1)
  return lines, st
end

local function check_echoes(echo, sizes, who)
  for _, n in ipairs(sizes) do
    for _, kind in ipairs({ "text", "binary" }) do
      assert.are.equal("ok", echo[kind .. " " .. n], ("%s: the echo of %s %d"):format(who, kind, n))
    end
  end
end

local function line_with(lines, prefix)
  for _, l in ipairs(lines) do
    if l:sub(1, #prefix) == prefix then return l:sub(#prefix + 1) end
  end
end

---------------------------------------------------------------------------------------

local TAKEOVER = { ServerNoContextTakeover = false, ClientNoContextTakeover = false }

-- { name, peer, Upgrader/Dialer CompressionOptions, answer luaws gives the peer client,
--   agreed (luaws server), answer the peer server gives, agreed (luaws client), big? }
local CASES = {
  { "Python websockets", PEER.python, nil,
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover", "tx 15- rx 15-",
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover; " ..
    "server_max_window_bits=12; client_max_window_bits=12", "tx 12- rx 12-", true },
  { "Python websockets, context takeover allowed", PEER.python, TAKEOVER,
    "permessage-deflate", "tx 15T rx 15T",
    "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12", "tx 12T rx 12T" },
  { "gorilla/websocket", PEER.gorilla, nil,
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover", "tx 15- rx 15-",
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover", "tx 15- rx 15-", true },
  { "Node ws, perMessageDeflate: true (context takeover, messages under 1 KiB uncompressed)",
    node_peer(true), TAKEOVER,
    "permessage-deflate", "tx 15T rx 15T",
    "permessage-deflate", "tx 15T rx 15T", true },
  { "Node ws without context takeover", node_peer({ threshold = 0, serverNoContextTakeover = true,
      clientNoContextTakeover = true }), TAKEOVER,
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover", "tx 15- rx 15-",
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover", "tx 15- rx 15-" },
  { "Node ws against luaws's gorilla defaults", node_peer({ threshold = 0 }), nil,
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover", "tx 15- rx 15-",
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover", "tx 15- rx 15-" },
  { "Node ws, luaws limiting the windows (server 10, client 9 bits)", node_peer({ threshold = 0 }),
    { ServerNoContextTakeover = false, ClientNoContextTakeover = false, ServerMaxWindowBits = 10,
      ClientMaxWindowBits = 9 },
    "permessage-deflate; server_max_window_bits=10; client_max_window_bits=9", "tx 10T rx 9T",
    "permessage-deflate; server_max_window_bits=10; client_max_window_bits=9", "tx 9T rx 10T" },
}
for bits = 9, 15 do
  CASES[#CASES + 1] = { ("Node ws with %d-bit windows both ways"):format(bits),
    node_peer({ threshold = 0, serverMaxWindowBits = bits, clientMaxWindowBits = bits }), TAKEOVER,
    ("permessage-deflate; server_max_window_bits=%d; client_max_window_bits=%d"):format(bits, bits),
    ("tx %dT rx %dT"):format(bits, bits),
    ("permessage-deflate; client_max_window_bits=%d; server_max_window_bits=%d"):format(bits, bits),
    ("tx %dT rx %dT"):format(bits, bits) }
end

describe("interop with permessage-deflate", function()
  lazy_setup(build_gorilla)
  lazy_teardown(function()
    if TMP:match("^/tmp/luaws%-interop%-deflate%.") then os.execute("rm -rf " .. q(TMP)) end
  end)

  for _, case in ipairs(CASES) do
    local name, peer, opts = case[1], case[2], case[3]
    local modes = { { "messages", SIZES } }
    if case[8] then modes[2] = { "big", BIG } end
    describe(name, function()
      for _, m in ipairs(modes) do
        local mode, sizes = m[1], m[2]
        it(("client -> luaws server: %s byte-exact, compressed"):format(
          mode == "big" and "16 MiB" or "0 B to 1 MiB"), function()
          local r, st = peer_client(peer, { EnableCompression = true, CompressionOptions = opts }, mode, 60)
          assert.is_nil(r.error, "the peer client reported: " .. tostring(r.error))
          check_echoes(r.echo, sizes, "the peer client")
          assert.are.equal(#sizes * 2, st.received, "messages the luaws server got")
          assert.are.equal(case[4], r.extensions, "the answer the peer client got")
          assert.are.equal(case[5], agreed(st.pmd), "what the luaws server agreed")
        end)
        if case[6] then
          it(("luaws client -> server: %s byte-exact, compressed"):format(
            mode == "big" and "16 MiB" or "0 B to 1 MiB"), function()
            local lines, st = luaws_client(peer, { EnableCompression = true, CompressionOptions = opts },
              sizes, 60)
            check_echoes(st.echo, sizes, "the luaws client")
            assert.are.equal(case[6], st.answer, "the peer server's answer")
            assert.are.equal(case[7], agreed(st.pmd), "what the luaws client agreed")
            if mode == "big" then
              for _, n in ipairs(sizes) do
                for _, kind in ipairs({ "text", "binary" }) do
                  local l = line_with(lines, ("RECEIVED %s %d "):format(kind, n))
                  if l then assert.are.equal("ok", l, "the peer server's check of " .. kind) end
                end
              end
            end
          end)
        end
      end
    end)
  end
end)
