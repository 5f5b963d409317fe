-- Issue 10: permessage-deflate (RFC 7692) with exact bytes, both roles. A raw Python
-- peer (spec/peers/raw_client.py, raw_server.py) offers or answers the extension with
-- the header lines a row gives and sends frames this file builds byte by byte; the
-- compressed payloads are RFC 7692 section 7.2.3's own examples, and what luaws sends
-- back is checked byte for byte (luaws compresses with zlib at level 1, which produces
-- those examples: "Hello" is f2 48 cd c9 c9 07 00, and again with context takeover
-- f2 00 11 00 00).
--
--   negotiation: what the luaws server answers to every kind of offer (several offers,
--     parameters with and without values, quoted values, invalid, duplicate and
--     out-of-range parameters: that offer is skipped), and which answers the luaws
--     client accepts (an invalid or unasked-for one fails the dial with ErrBadHandshake);
--   frames: RSV1 on a data message's first frame inflates it (one frame or several,
--     with and without context takeover, an uncompressed message between compressed
--     ones, a block with BFINAL, a stored block, two blocks, an empty message); RSV1 on
--     a continuation or a control frame, or without the extension, fails with 1002;
--     data that does not inflate with 1007, as do invalid UTF-8 inflated from a text
--     message and a message cut short inside a block;
--   the read limit counts inflated bytes: a 1 MiB frame that inflates to 1 GiB is
--     refused with 1009 while the process grows by a few MiB;
--   sending: WriteMessage, NextWriter, WritePreparedMessage, SetCompressionLevel and
--     EnableWriteCompression, and the streams of connections without context takeover
--     going back to the loop's pool between messages.
--
-- Run from the repository root: busted --lua=lua5.4 spec/issue10_deflate_spec.lua
local support = require "support"
local websocket = support.websocket
local cjson = require "cjson"
local core = require "luaws.core"

lazy_setup(function() support.keepalive(true) end)
lazy_teardown(function() support.keepalive(false) end)

local q = support.shell_quote
local PYTHON = support.PYTHON
local RAW_CLIENT = support.peer("raw_client.py")

local CONT, TEXT, BINARY, CLOSE, PING = 0, 1, 2, 8, 9

---------------------------------------------------------------------------------------
-- bytes

local function hex(s)
  return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

local function unhex(h)
  if h == nil or h == cjson.null then return "" end
  return (h:gsub("%s", ""):gsub("%x%x", function(c) return string.char(tonumber(c, 16)) end))
end

local function xor_mask(s, key)
  local k, out = { key:byte(1, 4) }, {}
  for i = 1, #s do out[i] = string.char(s:byte(i) ~ k[(i - 1) % 4 + 1]) end
  return table.concat(out)
end

-- The bytes of one frame: f = {opcode, payload, fin = true, rsv = RSV bits (RSV1 = 4)},
-- masked when mask is true.
local function frame(f, mask)
  local payload = f.payload or ""
  local n = #payload
  local b0 = ((f.fin == false) and 0 or 0x80) | ((f.rsv or 0) << 4) | f.opcode
  local mbit = mask and 0x80 or 0
  local head
  if n <= 125 then
    head = string.char(b0, mbit | n)
  elseif n <= 65535 then
    head = string.char(b0, mbit | 126) .. string.pack(">I2", n)
  else
    head = string.char(b0, mbit | 127) .. string.pack(">I8", n)
  end
  if not mask then return head .. payload end
  local key = string.char(math.random(1, 255), math.random(1, 255), math.random(1, 255),
    math.random(1, 255))
  return head .. key .. xor_mask(payload, key)
end

-- A compressed data frame (RSV1) with the payload given in hex; a plain one; others.
local function Z(hexpayload, opts)
  local f = { opcode = TEXT, rsv = 4, payload = unhex(hexpayload) }
  for k, v in pairs(opts or {}) do f[k] = v end
  return f
end
local function P(opcode, payload, opts)
  local f = { opcode = opcode, payload = payload or "" }
  for k, v in pairs(opts or {}) do f[k] = v end
  return f
end

local CLOSE_1000 = P(CLOSE, string.pack(">I2", 1000))

-- The RFC 7692 section 7.2.3 payloads.
local HELLO = "f2 48 cd c9 c9 07 00"            -- 7.2.3.1, and the first of 7.2.3.2
local HELLO_AGAIN = "f2 00 11 00 00"            -- 7.2.3.2: the second, with context takeover
local HELLO_STORED = "00 05 00 fa ff 48 65 6c 6c 6f 00" -- 7.2.3.3: no compression
local HELLO_BFINAL = "f3 48 cd c9 c9 07 00 00"  -- 7.2.3.4: BFINAL set, padded with 0x00
local HELLO_TWO_BLOCKS = "f2 48 05 00 00 00 ff ff ca c9 c9 07 00" -- 7.2.3.5

---------------------------------------------------------------------------------------
-- running a row in either role

local EXT = "Sec-WebSocket-Extensions: "
local GORILLA_ANSWER = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
local TAKEOVER = { ServerNoContextTakeover = false, ClientNoContextTakeover = false }

-- How a row negotiates: the Upgrader's or Dialer's options, the raw client's offer and
-- the raw server's answer (nil: no header).
local MODES = {
  none = { opts = {}, offer = nil, answer = nil },
  plain_peer = { opts = { EnableCompression = true }, offer = nil, answer = nil },
  default = { opts = { EnableCompression = true }, offer = "permessage-deflate",
    answer = GORILLA_ANSWER },
  takeover = { opts = { EnableCompression = true, CompressionOptions = TAKEOVER },
    offer = "permessage-deflate", answer = "permessage-deflate" },
}

-- The handler of both roles: record each message, then echo it (or what row.echo does),
-- after row.setup(c); st.pmd: what c negotiated; st.err: the read error at the end.
local function serve(c, row, st)
  st.pmd = c:_deflate()
  if row.setup then row.setup(c) end
  while true do
    local mt, data, err = c:ReadMessage()
    if not mt then
      st.err = err
      break
    end
    st.msgs[#st.msgs + 1] = { mt, data }
    local ok, werr
    if row.echo then ok, werr = row.echo(c, mt, data) else ok, werr = c:WriteMessage(mt, data) end
    if not ok then st.write_err = werr end
  end
  st.pmd_after = c:_deflate()
end

local AFTER = P(TEXT, "AFTER: sent after a bad frame, must be neither delivered nor echoed")

-- The raw peer's steps for a row: its frames in one write (a malformed row adds AFTER
-- and a close 1000 to it), then for a valid one the wait for the echoes and the close.
local function steps_of(row, mask)
  local bytes = {}
  for i, f in ipairs(row.send) do bytes[i] = frame(f, mask) end
  if row.close then
    bytes[#bytes + 1] = frame(AFTER, mask)
    bytes[#bytes + 1] = frame(CLOSE_1000, mask)
    return { { send = hex(table.concat(bytes)) }, { expect_close_within = 3 } }
  end
  return {
    { send = hex(table.concat(bytes)) },
    { wait = { data = #(row.echoes or row.msgs) }, within = 5 },
    { send = hex(frame(CLOSE_1000, mask)) },
    { expect_close_within = 3 },
  }
end

-- Against the in-process luaws server. Returns the raw client's result and st.
local function run_server(row)
  local mode = MODES[row.mode or "default"]
  local st = { msgs = {} }
  local upgrader = websocket.Upgrader(mode.opts)
  local srv = assert(websocket.Listen("127.0.0.1:0", function(w, r)
    local c, err = upgrader:Upgrade(w, r)
    if not c then
      st.upgrade_err, st.done = err, true
      return
    end
    serve(c, row, st)
    c:Close()
    st.done = true
  end))
  local child
  finally(function()
    support.stop(child)
    srv:Close()
  end)
  local offer = row.offer or mode.offer
  local script = { headers = offer and { EXT .. offer } or {}, steps = steps_of(row, true),
    linger = 2 }
  child = support.spawn(("%s %s %d /echo %s"):format(PYTHON, q(RAW_CLIENT), srv:Port(),
    q(cjson.encode(script))))
  assert.is_truthy(support.wait(child, 20), "the raw client did not finish")
  local r = support.json_result(child, "raw client")
  support.wait_for(function() return st.done end, 5)
  assert.is_true(st.done, "the luaws handler did not finish")
  return r, st
end

-- Against the raw server, with the luaws client. Returns the raw server's result and st.
local function run_client(row)
  local mode = MODES[row.mode or "default"]
  local answer = row.answer or mode.answer
  local script = { answer_headers = answer and { EXT .. answer } or {},
    steps = steps_of(row, false), linger = 2 }
  local child, port = support.raw_server(cjson.encode(script))
  finally(function() support.stop(child) end)
  assert.is_truthy(port, "the raw server printed no port")
  local st = { msgs = {} }
  websocket.Go(function()
    local c, _, err = websocket.Dialer(mode.opts):Dial(support.url(port, "/echo"))
    if not c then
      st.dial_err, st.done = err, true
      return
    end
    serve(c, row, st)
    c:Close()
    st.done = true
  end)
  assert.is_truthy(support.wait(child, 20), "the raw server did not finish")
  support.wait_for(function() return st.done end, 5)
  assert.is_true(st.done, "the luaws client did not finish")
  return support.json_result(child, "raw server"), st
end

-- The data frames a peer received: "rsv opcode fin payload-hex" each.
local function data_frames(r)
  local out = {}
  for _, f in ipairs(r.frames or {}) do
    if f.opcode < 8 then
      out[#out + 1] = ("%d %d %s %s"):format(f.rsv, f.opcode, f.fin and "fin" or "more", f.payload)
    end
  end
  return out
end

local function close_code(r)
  for _, f in ipairs(r.frames or {}) do
    if f.opcode == CLOSE then return f.code == cjson.null and "empty" or f.code end
  end
  return nil
end

-- The frame a row expects luaws to send: compressed text unless given otherwise.
local function echo(payload_hex, rsv, opcode)
  return ("%d %d fin %s"):format(rsv or 4, opcode or TEXT, (payload_hex:gsub("%s", "")))
end

local function check_row(row, r, st)
  assert.are.equal("ok", r.handshake)
  if row.close then
    assert.are.equal(row.close, close_code(r), "the close code luaws sent")
    assert.is_truthy(st.err, "the luaws reader's error")
    assert.are.equal(row.close, st.err.code, "the luaws reader's error code: " .. tostring(st.err))
    for _, m in ipairs(st.msgs) do
      assert.are_not.equal(AFTER.payload, m[2], "a message sent after the bad frame was delivered")
    end
  else
    assert.are.equal(1000, close_code(r), "the close code luaws sent")
  end
  local want = {}
  for i, m in ipairs(row.msgs or {}) do want[i] = { m[1], m[2] } end
  assert.are.same(want, st.msgs, "the messages the luaws reader got")
  if row.echoes then assert.are.same(row.echoes, data_frames(r), "the frames luaws sent") end
end

---------------------------------------------------------------------------------------
-- the rows: each runs against the luaws server and the luaws client

local ROWS = {}
local function row(t) ROWS[#ROWS + 1] = t end

-- RFC 7692 7.2.3.1: one frame; without context takeover every "Hello" is the same bytes
row{ name = "'Hello' compressed in one frame, twice, without context takeover (7.2.3.1)",
  send = { Z(HELLO), Z(HELLO) }, msgs = { { TEXT, "Hello" }, { TEXT, "Hello" } },
  echoes = { echo(HELLO), echo(HELLO) } }
-- 7.2.3.1: the same message in two frames, RSV1 on the first only
row{ name = "'Hello' compressed in two frames (7.2.3.1)",
  send = { Z("f2 48 cd", { fin = false }), P(CONT, unhex("c9 c9 07 00")) },
  msgs = { { TEXT, "Hello" } }, echoes = { echo(HELLO) } }
-- 7.2.3.2: with context takeover the second "Hello" refers back to the first
row{ name = "'Hello' twice with context takeover: the second is f2 00 11 00 00 (7.2.3.2)",
  mode = "takeover",
  send = { Z(HELLO), Z(HELLO_AGAIN) }, msgs = { { TEXT, "Hello" }, { TEXT, "Hello" } },
  echoes = { echo(HELLO), echo(HELLO_AGAIN) } }
row{ name = "an uncompressed message between compressed ones keeps the window as it was",
  mode = "takeover",
  send = { Z(HELLO), P(TEXT, "Hello"), Z(HELLO_AGAIN) },
  msgs = { { TEXT, "Hello" }, { TEXT, "Hello" }, { TEXT, "Hello" } },
  -- luaws compresses all three echoes: its own window holds "Hello" twice at the third
  echoes = { echo(HELLO), echo(HELLO_AGAIN), echo("02 13 00 00") } }
row{ name = "a DEFLATE block with no compression (7.2.3.3)",
  send = { Z(HELLO_STORED) }, msgs = { { TEXT, "Hello" } }, echoes = { echo(HELLO) } }
row{ name = "a block with BFINAL set and 0x00 padding (7.2.3.4); the window goes on after it",
  mode = "takeover",
  send = { Z(HELLO_BFINAL), Z(HELLO_AGAIN) }, msgs = { { TEXT, "Hello" }, { TEXT, "Hello" } },
  echoes = { echo(HELLO), echo(HELLO_AGAIN) } }
row{ name = "two DEFLATE blocks in one message (7.2.3.5)",
  send = { Z(HELLO_TWO_BLOCKS) }, msgs = { { TEXT, "Hello" } }, echoes = { echo(HELLO) } }
row{ name = "a compressed binary message",
  send = { Z(HELLO, { opcode = BINARY }) }, msgs = { { BINARY, "Hello" } },
  echoes = { echo(HELLO, 4, BINARY) } }
row{ name = "an empty message: 00 (7.2.3.6), and an empty payload taken as one too",
  send = { Z("00"), Z("") }, msgs = { { TEXT, "" }, { TEXT, "" } },
  echoes = { echo("00"), echo("00") } }
row{ name = "an empty message with context takeover: 00 again, the window unchanged",
  mode = "takeover",
  send = { Z(HELLO), Z("00"), Z(HELLO_AGAIN) },
  msgs = { { TEXT, "Hello" }, { TEXT, "" }, { TEXT, "Hello" } },
  echoes = { echo(HELLO), echo("00"), echo(HELLO_AGAIN) } }
row{ name = "a compressed message in three frames with a ping between them",
  send = { Z("f2 48", { fin = false }), P(PING, "mid"), P(CONT, unhex("cd c9"), { fin = false }),
    P(CONT, unhex("c9 07 00")) },
  msgs = { { TEXT, "Hello" } }, echoes = { echo(HELLO) } }
row{ name = "uncompressed messages are legal on a compressed connection",
  send = { P(TEXT, "plain"), P(BINARY, "\0\1\2") },
  msgs = { { TEXT, "plain" }, { BINARY, "\0\1\2" } },
  echoes = { echo("2a c8 49 cc cc 03 00"), echo("62 60 64 02 00", 4, BINARY) } }

-- what luaws sends, per connection
row{ name = "SetCompressionLevel(0): stored blocks, the bytes of 7.2.3.3",
  setup = function(c) assert(c:SetCompressionLevel(0)) end,
  send = { Z(HELLO) }, msgs = { { TEXT, "Hello" } }, echoes = { echo(HELLO_STORED) } }
row{ name = "EnableWriteCompression(false): sent uncompressed (RSV1 clear)",
  setup = function(c) assert(c:EnableWriteCompression(false)) end,
  send = { Z(HELLO), Z(HELLO) }, msgs = { { TEXT, "Hello" }, { TEXT, "Hello" } },
  echoes = { echo(hex("Hello"), 0), echo(hex("Hello"), 0) } }
row{ name = "EnableWriteCompression(false), then true again, with context takeover",
  mode = "takeover",
  echo = function(c, mt, data)
    c:EnableWriteCompression(data ~= "plain")
    return c:WriteMessage(mt, data)
  end,
  send = { Z(HELLO), P(TEXT, "plain"), Z(HELLO_AGAIN) },
  msgs = { { TEXT, "Hello" }, { TEXT, "plain" }, { TEXT, "Hello" } },
  echoes = { echo(HELLO), echo(hex("plain"), 0), echo(HELLO_AGAIN) } }
row{ name = "WritePreparedMessage: the compressed frame, shared without context takeover",
  echo = function(c, mt, data) return c:WritePreparedMessage(websocket.NewPreparedMessage(mt, data)) end,
  send = { Z(HELLO), Z(HELLO) }, msgs = { { TEXT, "Hello" }, { TEXT, "Hello" } },
  echoes = { echo(HELLO), echo(HELLO) } }
do
  local pm = websocket.NewPreparedMessage(TEXT, "Hello")
  row{ name = "WritePreparedMessage with context takeover: compressed against the connection's window",
    mode = "takeover",
    echo = function(c) return c:WritePreparedMessage(pm) end,
    send = { Z(HELLO), Z(HELLO) }, msgs = { { TEXT, "Hello" }, { TEXT, "Hello" } },
    echoes = { echo(HELLO), echo(HELLO_AGAIN) } }
end
row{ name = "a prepared ping is never compressed",
  echo = function(c, mt, data)
    assert(c:WritePreparedMessage(websocket.NewPreparedMessage(websocket.PingMessage, "p")))
    return c:WriteMessage(mt, data)
  end,
  send = { Z(HELLO) }, msgs = { { TEXT, "Hello" } }, echoes = { echo(HELLO) } }

-- malformed: fails with close, and nothing after the bad frame is delivered
row{ name = "RSV1 on a continuation frame -> 1002",
  send = { P(TEXT, "Hel", { fin = false }), P(CONT, "lo", { rsv = 4 }) }, close = 1002 }
row{ name = "RSV1 on the continuation of a compressed message -> 1002",
  send = { Z("f2 48 cd", { fin = false }), P(CONT, unhex("c9 c9 07 00"), { rsv = 4 }) }, close = 1002 }
row{ name = "RSV1 on a ping -> 1002", send = { P(PING, "x", { rsv = 4 }) }, close = 1002 }
row{ name = "RSV1 on a close frame -> 1002",
  send = { P(CLOSE, string.pack(">I2", 1000), { rsv = 4 }) }, close = 1002 }
row{ name = "RSV2 on a compressed connection -> 1002", send = { Z(HELLO, { rsv = 6 }) }, close = 1002 }
row{ name = "RSV3 on a compressed connection -> 1002", send = { P(TEXT, "x", { rsv = 1 }) }, close = 1002 }
row{ name = "RSV1 without permessage-deflate negotiated (not enabled) -> 1002", mode = "none",
  send = { Z(HELLO) }, close = 1002 }
row{ name = "RSV1 when the peer did not offer or answer it -> 1002", mode = "plain_peer",
  send = { Z(HELLO) }, close = 1002 }
row{ name = "compressed data that does not inflate (reserved block type) -> 1007",
  send = { Z(HELLO), Z("ff") }, msgs = { { TEXT, "Hello" } }, close = 1007 }
row{ name = "a stored block cut short (10 bytes announced, 3 sent) -> 1007",
  send = { Z("00 0a 00 f5 ff 48 65 6c", { opcode = BINARY }) }, close = 1007 }
row{ name = "invalid UTF-8 inflated from a text message -> 1007",
  send = { Z("00 01 00 fe ff ff 00") }, close = 1007 }
row{ name = "the same bytes in a binary message are fine",
  send = { Z("00 01 00 fe ff ff 00", { opcode = BINARY }) }, msgs = { { BINARY, "\255" } },
  echoes = { echo("fa 0f 00", 4, BINARY) } }

describe("issue 10: permessage-deflate, exact bytes", function()
  for _, role in ipairs({ "server", "client" }) do
    describe("luaws " .. role, function()
      for _, rw in ipairs(ROWS) do
        it(rw.name, function()
          local r, st
          if role == "server" then r, st = run_server(rw) else r, st = run_client(rw) end
          check_row(rw, r, st)
        end)
      end
    end)
  end
end)

---------------------------------------------------------------------------------------
-- negotiation

-- The luaws server's answer to offers (a list of Sec-WebSocket-Extensions header lines),
-- with Upgrader options opts; also what the connection agreed (c:_deflate()).
local function server_answer(opts, offers)
  local st = {}
  local upgrader = websocket.Upgrader(opts)
  local srv = assert(websocket.Listen("127.0.0.1:0", function(w, r)
    local c, err = upgrader:Upgrade(w, r)
    if not c then
      st.upgrade_err, st.done = err, true
      return
    end
    st.pmd = c:_deflate()
    st.err = support.drain(c)
    c:Close()
    st.done = true
  end))
  local child
  finally(function()
    support.stop(child)
    srv:Close()
  end)
  local headers = {}
  for i, o in ipairs(offers) do headers[i] = EXT .. o end
  local script = { headers = headers, linger = 2,
    steps = { { send = hex(frame(CLOSE_1000, true)) }, { expect_close_within = 3 } } }
  child = support.spawn(("%s %s %d /echo %s"):format(PYTHON, q(RAW_CLIENT), srv:Port(),
    q(cjson.encode(script))))
  assert.is_truthy(support.wait(child, 20), "the raw client did not finish")
  local r = support.json_result(child, "raw client")
  support.wait_for(function() return st.done end, 5)
  assert.are.equal("ok", r.handshake)
  return r.response_headers["sec-websocket-extensions"], st.pmd
end

-- The luaws client (Dialer options opts) against a raw server answering `answer`: the
-- offer it sent, and c:_deflate() or the dial's error.
local function client_dial(opts, answer)
  local script = { answer_headers = answer and { EXT .. answer } or {}, steps = {}, linger = 3 }
  local child, port = support.raw_server(cjson.encode(script))
  finally(function() support.stop(child) end)
  assert.is_truthy(port, "the raw server printed no port")
  local st = {}
  websocket.Go(function()
    local c, resp, err = websocket.Dialer(opts):Dial(support.url(port, "/echo"))
    st.resp = resp
    if not c then
      st.err, st.done = err, true
      return
    end
    st.pmd = c:_deflate()
    c:WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""))
    support.drain(c)
    c:Close()
    st.done = true
  end)
  support.wait_for(function() return st.done end, 10)
  assert.is_truthy(support.wait(child, 10), "the raw server did not finish")
  local r = support.json_result(child, "raw server")
  assert.is_true(st.done, "the dial did not finish")
  return r.request.headers["sec-websocket-extensions"], st.pmd, st.err, st.resp
end

-- What a connection agreed, as c:_deflate() gives it, in short: "tx rx" window bits and
-- "T"/"-" for context takeover each way.
local function agreed(pmd)
  if not pmd then return nil end
  return ("tx %d%s rx %d%s"):format(pmd.tx_bits, pmd.tx_no_context_takeover and "-" or "T",
    pmd.rx_bits, pmd.rx_no_context_takeover and "-" or "T")
end

local G = GORILLA_ANSWER
-- { offers, answer (nil: none), agreed (nil: no compression) } for Upgrader
-- {EnableCompression = true} (gorilla's defaults: no context takeover either way)
local SERVER_CASES = {
  { {}, nil, nil },
  { { "permessage-deflate" }, G, "tx 15- rx 15-" },
  { { "permessage-deflate; client_max_window_bits" }, G, "tx 15- rx 15-" },
  { { "permessage-deflate; server_max_window_bits=10" }, G .. "; server_max_window_bits=10", "tx 10- rx 15-" },
  { { 'permessage-deflate; server_max_window_bits="10"' }, G .. "; server_max_window_bits=10", "tx 10- rx 15-" },
  { { "permessage-deflate; server_max_window_bits=8" }, G .. "; server_max_window_bits=8", "tx 8- rx 15-" },
  { { "permessage-deflate; client_max_window_bits=9" }, G .. "; client_max_window_bits=9", "tx 15- rx 9-" },
  { { 'permessage-deflate; client_max_window_bits="15"; server_no_context_takeover' },
    G .. "; client_max_window_bits=15", "tx 15- rx 15-" },
  { { "permessage-deflate ;\tserver_max_window_bits = 12 ; client_no_context_takeover" },
    G .. "; server_max_window_bits=12", "tx 12- rx 15-" },
  -- several offers: the first acceptable one
  { { "x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=11, permessage-deflate" },
    G .. "; server_max_window_bits=11", "tx 11- rx 15-" },
  { { "permessage-deflate; server_max_window_bits=16, permessage-deflate; client_max_window_bits=12" },
    G .. "; client_max_window_bits=12", "tx 15- rx 12-" },
  { { "foo; bar=\"a,b\"; baz", "permessage-deflate; server_max_window_bits=9" },
    G .. "; server_max_window_bits=9", "tx 9- rx 15-" },
  { { ", ,permessage-deflate," }, G, "tx 15- rx 15-" },
  -- every offer invalid: no compression
  { { "permessage-deflate; server_max_window_bits=7" }, nil, nil },
  { { "permessage-deflate; server_max_window_bits=16" }, nil, nil },
  { { "permessage-deflate; server_max_window_bits=010" }, nil, nil },
  { { "permessage-deflate; server_max_window_bits=+9" }, nil, nil },
  { { "permessage-deflate; server_max_window_bits" }, nil, nil },
  { { "permessage-deflate; client_max_window_bits=" }, nil, nil },
  { { 'permessage-deflate; client_max_window_bits=""' }, nil, nil },
  { { 'permessage-deflate; client_max_window_bits="1 0"' }, nil, nil },
  { { 'permessage-deflate; client_max_window_bits="10' }, nil, nil },
  { { "permessage-deflate; server_no_context_takeover=1" }, nil, nil },
  { { 'permessage-deflate; client_no_context_takeover=""' }, nil, nil },
  { { "permessage-deflate; server_no_context_takeover; server_no_context_takeover" }, nil, nil },
  { { "permessage-deflate; client_max_window_bits; client_max_window_bits=10" }, nil, nil },
  { { "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10" }, nil, nil },
  { { "permessage-deflate; mux" }, nil, nil },
  { { "permessage-deflate;; server_no_context_takeover" }, nil, nil },
  { { "permessage-deflate server_no_context_takeover" }, nil, nil },
  { { "Permessage-Deflate" }, nil, nil },
  { { "x-webkit-deflate-frame" }, nil, nil },
}

-- The same with context takeover allowed and window limits of the server's own.
local CUSTOM = { ServerNoContextTakeover = false, ClientNoContextTakeover = false,
  ServerMaxWindowBits = 11, ClientMaxWindowBits = 10 }
local CUSTOM_CASES = {
  -- the client did not offer client_max_window_bits: its window cannot be limited
  { { "permessage-deflate" }, "permessage-deflate; server_max_window_bits=11", "tx 11T rx 15T" },
  { { "permessage-deflate; client_max_window_bits" },
    "permessage-deflate; server_max_window_bits=11; client_max_window_bits=10", "tx 11T rx 10T" },
  { { "permessage-deflate; server_max_window_bits=9; client_max_window_bits=12" },
    "permessage-deflate; server_max_window_bits=9; client_max_window_bits=10", "tx 9T rx 10T" },
  { { "permessage-deflate; client_max_window_bits=8" },
    "permessage-deflate; server_max_window_bits=11; client_max_window_bits=8", "tx 11T rx 8T" },
  { { "permessage-deflate; server_no_context_takeover" },
    "permessage-deflate; server_no_context_takeover; server_max_window_bits=11", "tx 11- rx 15T" },
  { { "permessage-deflate; client_no_context_takeover" },
    "permessage-deflate; client_no_context_takeover; server_max_window_bits=11", "tx 11T rx 15-" },
}

describe("issue 10: permessage-deflate negotiation, luaws server", function()
  for _, case in ipairs(SERVER_CASES) do
    it(("answers %s with %s"):format(table.concat(case[1], " + "), tostring(case[2])), function()
      local answer, pmd = server_answer({ EnableCompression = true }, case[1])
      assert.are.equal(case[2], answer, "the Sec-WebSocket-Extensions answer")
      assert.are.equal(case[3], agreed(pmd), "what the connection agreed")
    end)
  end
  for _, case in ipairs(CUSTOM_CASES) do
    it(("with CompressionOptions{takeover, 11 and 10 bits} answers %s with %s"):format(
      case[1][1], case[2]), function()
      local answer, pmd = server_answer({ EnableCompression = true, CompressionOptions = CUSTOM },
        case[1])
      assert.are.equal(case[2], answer, "the Sec-WebSocket-Extensions answer")
      assert.are.equal(case[3], agreed(pmd), "what the connection agreed")
    end)
  end
  it("answers nothing when EnableCompression is false (the default)", function()
    local answer, pmd = server_answer({}, { "permessage-deflate" })
    assert.is_nil(answer)
    assert.is_nil(pmd)
  end)
  it("refuses a responseHeader with its own Sec-WebSocket-Extensions, as gorilla (500)", function()
    local st = {}
    local upgrader = websocket.Upgrader { EnableCompression = true }
    local srv = assert(websocket.Listen("127.0.0.1:0", function(w, r)
      st.c, st.err = upgrader:Upgrade(w, r, { ["Sec-WebSocket-Extensions"] = "permessage-deflate" })
      st.done = true
    end))
    finally(function() srv:Close() end)
    local status = support.run_child(("%s %s %d /echo %s"):format(PYTHON, q(RAW_CLIENT), srv:Port(),
      q(cjson.encode({ headers = { EXT .. "permessage-deflate" }, steps = {}, linger = 1 }))), 10)
    assert.are.equal(1, status)
    assert.is_nil(st.c)
    assert.are.equal(500, st.err.status)
  end)
end)

-- The luaws client with Dialer options (EnableCompression = true and CompressionOptions
-- opts): { opts, answer, agreed (nil: the dial fails with ErrBadHandshake) }
local OFFER = "permessage-deflate; server_no_context_takeover; client_no_context_takeover; " ..
  "client_max_window_bits"
local CLIENT_CASES = {
  { nil, G, "tx 15- rx 15-" },
  { nil, "permessage-deflate; server_no_context_takeover", "tx 15- rx 15-" },
  { nil, G .. "; client_max_window_bits=10", "tx 10- rx 15-" },
  { nil, G .. '; client_max_window_bits="9"', "tx 9- rx 15-" },
  { nil, G .. "; client_max_window_bits=8", "tx 8- rx 15-" },
  { nil, G .. "; server_max_window_bits=12", "tx 15- rx 12-" },
  { nil, " permessage-deflate ;server_no_context_takeover , ", "tx 15- rx 15-" },
  -- refused: not what was asked, not valid, or not offered
  { nil, "permessage-deflate", nil },             -- server_no_context_takeover was asked
  { nil, "permessage-deflate; client_no_context_takeover", nil },
  { nil, G .. "; client_max_window_bits", nil },  -- needs a value in an answer
  { nil, G .. "; client_max_window_bits=16", nil },
  { nil, G .. "; server_max_window_bits=7", nil },
  { nil, G .. "; server_max_window_bits", nil },
  { nil, G .. "; server_no_context_takeover", nil },
  { nil, G .. "; x-foo", nil },
  { nil, G .. ", " .. G, nil },
  { nil, "x-webkit-deflate-frame", nil },
  { nil, G .. ", x-webkit-deflate-frame", nil },
  { nil, G .. ";", nil },
  { nil, "", nil },
  -- CompressionOptions: what the server must grant
  { { ServerMaxWindowBits = 10 }, G .. "; server_max_window_bits=10", "tx 15- rx 10-" },
  { { ServerMaxWindowBits = 10 }, G .. "; server_max_window_bits=9", "tx 15- rx 9-" },
  { { ServerMaxWindowBits = 10 }, G .. "; server_max_window_bits=11", nil },
  { { ServerMaxWindowBits = 10 }, G, nil },
  { { ClientMaxWindowBits = 10 }, G, "tx 10- rx 15-" },
  { { ClientMaxWindowBits = 10 }, G .. "; client_max_window_bits=9", "tx 9- rx 15-" },
  { { ClientMaxWindowBits = 10 }, G .. "; client_max_window_bits=11", nil },
  { TAKEOVER, "permessage-deflate", "tx 15T rx 15T" },
  { TAKEOVER, G, "tx 15- rx 15-" },
  { TAKEOVER, "permessage-deflate; client_no_context_takeover", "tx 15- rx 15T" },
}

local function offer_of(opts)
  local o = "permessage-deflate"
  opts = opts or {}
  if opts.ServerNoContextTakeover ~= false then o = o .. "; server_no_context_takeover" end
  if opts.ClientNoContextTakeover ~= false then o = o .. "; client_no_context_takeover" end
  if opts.ServerMaxWindowBits then o = o .. "; server_max_window_bits=" .. opts.ServerMaxWindowBits end
  o = o .. "; client_max_window_bits"
  if opts.ClientMaxWindowBits then o = o .. "=" .. opts.ClientMaxWindowBits end
  return o
end
assert(offer_of(nil) == OFFER)

describe("issue 10: permessage-deflate negotiation, luaws client", function()
  for _, case in ipairs(CLIENT_CASES) do
    local opts = case[1]
    local what = opts and cjson.encode(opts) or "defaults"
    it(("(%s) %s the answer %q"):format(what, case[3] and "takes" or "refuses", case[2]), function()
      local offer, pmd, err, resp = client_dial({ EnableCompression = true, CompressionOptions = opts },
        case[2])
      assert.are.equal(offer_of(opts), offer, "the offer")
      if case[3] then
        assert.is_nil(err)
        assert.are.equal(case[3], agreed(pmd), "what the connection agreed")
      else
        assert.are.equal(websocket.ErrBadHandshake, err)
        assert.are.equal(101, resp.StatusCode)
        assert.is_nil(pmd)
      end
    end)
  end
  it("offers nothing without EnableCompression, and refuses an answer then", function()
    local offer, pmd, err = client_dial({}, nil)
    assert.is_nil(offer)
    assert.is_nil(pmd)
    assert.is_nil(err)
    offer, pmd, err = client_dial({}, G)
    assert.is_nil(offer)
    assert.are.equal(websocket.ErrBadHandshake, err)
  end)
  it("goes on uncompressed when the server answers without the extension", function()
    local offer, pmd, err = client_dial({ EnableCompression = true }, nil)
    assert.are.equal(OFFER, offer)
    assert.is_nil(err)
    assert.is_nil(pmd)
  end)
end)

---------------------------------------------------------------------------------------
-- the read limit counts inflated bytes

-- A luaws server in a child process (so its memory is its own): one connection, read
-- limit arg[1] (nil: the default), one ReadMessage; prints its port, then a JSON line
-- with the read error's code and the memory before and at its peak (KiB).
local BOMB_SERVER = [=[
local websocket = require "luaws"
local cjson = require "cjson"
local function status(field)
  local s = io.open("/proc/self/status"):read("a")
  return tonumber(s:match(field .. ":%s*(%d+)"))
end
local limit = tonumber(arg[1])
local srv = assert(websocket.Listen("127.0.0.1:0", function(w, r)
  local c = assert(websocket.Upgrader { EnableCompression = true }:Upgrade(w, r))
  if limit then c:SetReadLimit(limit) end
  collectgarbage()
  local before = status("VmRSS")
  local mt, data, err = c:ReadMessage()
  print(cjson.encode({ before = before, peak = status("VmHWM"), got = data and #data or -1,
    limit = err == websocket.ErrReadLimit }))
  io.stdout:flush()
  c:Close()
  os.exit(0)
end))
print(srv:Port())
io.stdout:flush()
websocket.Sleep(60)
]=]

-- The same with no read limit and a NextReader reading 64 KiB at a time; prints the
-- bytes it read, whether they were all zeros, and the memory before and at its peak.
local BOMB_STREAM_SERVER = [=[
local websocket = require "luaws"
local cjson = require "cjson"
local function status(field)
  local s = io.open("/proc/self/status"):read("a")
  return tonumber(s:match(field .. ":%s*(%d+)"))
end
local zeros = string.rep("\0", 65536)
local srv = assert(websocket.Listen("127.0.0.1:0", function(w, r)
  local c = assert(websocket.Upgrader { EnableCompression = true }:Upgrade(w, r))
  c:SetReadLimit(0)
  collectgarbage()
  local before = status("VmRSS")
  local _, reader = c:NextReader()
  local n, all_zero = 0, true
  while true do
    local data = reader:Read(65536)
    if not data then break end
    n = n + #data
    if data ~= zeros:sub(1, #data) then all_zero = false end
  end
  print(cjson.encode({ before = before, peak = status("VmHWM"), bytes = n, zeros = all_zero }))
  io.stdout:flush()
  c:Close()
  os.exit(0)
end))
print(srv:Port())
io.stdout:flush()
websocket.Sleep(120)
]=]

-- The bomb: 1 GiB of zeros, compressed 1 MiB at a time (each piece flushed to a byte
-- boundary, so the pieces join into one deflate stream): about 1 MiB, one compressed
-- binary frame (DEFLATE cannot do better than about 1:1032). Prints the close code
-- (none: it waits up to 100 s for one, until the server closes).
local BOMB_CLIENT = [=[
import base64, json, os, socket, struct, sys, zlib
port = int(sys.argv[1])
piece = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
piece = piece.compress(bytes(1 << 20)) + piece.flush(zlib.Z_SYNC_FLUSH)
payload = (piece * 1024)[:-4]  # RFC 7692 7.2.1: without the last 00 00 ff ff
s = socket.create_connection(("127.0.0.1", port))
key = base64.b64encode(os.urandom(16)).decode()
s.sendall(("GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
           "Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n" % key).encode())
head = b""
while b"\r\n\r\n" not in head:
    head += s.recv(4096)
rest = head.split(b"\r\n\r\n", 1)[1]
mask = os.urandom(4)
n = len(payload)
k = (mask * (n // 4 + 1))[:n]
masked = (int.from_bytes(payload, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")
frame = bytes([0xc2, 0xff]) + struct.pack(">Q", n) + mask + masked
code = None
try:
    s.sendall(frame)
except OSError:
    pass
buf = rest
s.settimeout(100)
while True:
    if len(buf) >= 2 and buf[0] & 0x0f == 8:
        code = struct.unpack(">H", buf[2:4])[0] if (buf[1] & 0x7f) >= 2 and len(buf) >= 4 else None
        break
    try:
        d = s.recv(65536)
    except OSError:
        break
    if not d:
        break
    buf += d
print(json.dumps({"compressed": n, "close": code}))
]=]

-- Under valgrind (make test-valgrind raises LUAWS_SPEC_TIMEOUT) zlib runs some 50 times
-- slower: the waits for the big round trips grow with it.
local SLOW = math.max(1, (tonumber(os.getenv("LUAWS_SPEC_TIMEOUT")) or 240) / 240)

-- Under ASan (make test SANITIZE=1) freed memory sits in quarantine and every block has
-- red zones: the bounds are 4 times looser there.
local SLACK = (os.getenv("LD_PRELOAD") or ""):find("asan", 1, true) and 4 or 1

describe("issue 10: the read limit counts inflated bytes", function()
  local function bomb(limit)
    local server = support.spawn(support.lua(BOMB_SERVER) .. (limit and (" " .. limit) or ""))
    local client
    finally(function()
      support.stop(client)
      support.stop(server)
    end)
    local port = support.wait_for(function()
      return tonumber(support.output(server):match("^(%d+)\n"))
    end, 10)
    assert.is_truthy(port, "the luaws server printed no port: " .. support.output(server))
    client = support.spawn(support.python(BOMB_CLIENT) .. " " .. port)
    assert.is_truthy(support.wait(client, 60), "the bomb client did not finish")
    assert.is_truthy(support.wait(server, 30), "the luaws server did not finish")
    local got = cjson.decode(support.output(server):match("\n(%b{})"))
    local sent = support.json_result(client, "bomb client")
    return got, sent
  end

  it("a 1 MiB frame inflating to 1 GiB is refused with 1009 at SetReadLimit(2 MiB), the process growing by a few MiB", function()
    -- the frame is within the limit: only what it inflates to is over it
    local got, sent = bomb(2 * 1024 * 1024)
    assert.is_true(sent.compressed < 1100 * 1024 and sent.compressed > 1000 * 1024)
    assert.are.equal(1009, sent.close, "the close code the peer got")
    assert.is_true(got.limit, "the read error is ErrReadLimit")
    local grew = got.peak - got.before
    assert.is_true(grew < 6 * 1024 * SLACK, ("the server grew by %d KiB"):format(grew))
  end)

  it("the same bomb against the default limit (32 MiB): 1009, the process growing by less than 48 MiB", function()
    local got, sent = bomb(nil)
    assert.are.equal(1009, sent.close)
    assert.is_true(got.limit, "the read error is ErrReadLimit")
    local grew = got.peak - got.before
    assert.is_true(grew < 48 * 1024 * SLACK, ("the server grew by %d KiB"):format(grew))
  end)

  it("without a limit a NextReader gets all of the 1 GiB while the process grows by a few MiB", function()
    -- inflating stops while 1 MiB waits unread, reading from the socket with it
    local server = support.spawn(support.lua(BOMB_STREAM_SERVER))
    local client
    finally(function()
      support.stop(client)
      support.stop(server)
    end)
    local port = support.wait_for(function()
      return tonumber(support.output(server):match("^(%d+)\n"))
    end, 10)
    assert.is_truthy(port, "the luaws server printed no port: " .. support.output(server))
    client = support.spawn(support.python(BOMB_CLIENT) .. " " .. port)
    assert.is_truthy(support.wait(server, 120), "the luaws server did not finish")
    local got = cjson.decode(support.output(server):match("\n(%b{})"))
    assert.are.equal(1024 * 1024 * 1024, got.bytes)
    assert.is_true(got.zeros, "every byte read is a zero")
    -- (under ASan the 1 GiB of 64 KiB strings the reader made and dropped sits in its
    -- 256 MiB quarantine: no bound to check there)
    local grew = got.peak - got.before
    assert.is_true(SLACK > 1 or grew < 12 * 1024, ("the server grew by %d KiB"):format(grew))
  end)

  it("a compressed message within the limit is read whole; one byte over is refused", function()
    local st = {}
    local upgrader = websocket.Upgrader { EnableCompression = true }
    local srv = assert(websocket.Listen("127.0.0.1:0", function(w, r)
      local c = assert(upgrader:Upgrade(w, r))
      c:SetReadLimit(100000)
      local mt, data = c:ReadMessage()
      st.first = data and #data
      mt, data, st.err = c:ReadMessage()
      c:Close()
      st.done = true
    end))
    finally(function() srv:Close() end)
    local port = srv:Port()
    support.run(function()
      local c = assert(websocket.Dialer { EnableCompression = true }:Dial(support.url(port)))
      assert(c:WriteMessage(websocket.BinaryMessage, ("z"):rep(100000)))
      assert(c:WriteMessage(websocket.BinaryMessage, ("z"):rep(100001)))
      support.drain(c)
      c:Close()
    end, 10)
    support.wait_for(function() return st.done end, 5)
    assert.are.equal(100000, st.first)
    assert.are.equal(websocket.ErrReadLimit, st.err)
  end)
end)

---------------------------------------------------------------------------------------
-- luaws to luaws: every parameter, byte-exact

local text = support.text -- UTF-8 of exactly n bytes
local function noise(n, seed)
  -- bytes that hardly compress (a linear congruential generator), 4 at a time
  local x, t = seed or 1, {}
  for i = 1, (n + 3) // 4 do
    x = (x * 1103515245 + 12345) & 0x7fffffff
    t[i] = string.pack("<I4", x)
  end
  return table.concat(t):sub(1, n)
end

-- An echo server with Upgrader options up; handler extras: st.pmd (c:_deflate()), and
-- st.conns (the connections, for the pool specs).
local function echo_server(up, setup)
  local st = { conns = {} }
  local srv = assert(websocket.Listen("127.0.0.1:0", function(w, r)
    local c = assert(websocket.Upgrader(up):Upgrade(w, r))
    st.conns[#st.conns + 1] = c
    st.pmd = c:_deflate()
    if setup then setup(c) end
    while true do
      local mt, data = c:ReadMessage()
      if not mt then break end
      st.last_pmd = c:_deflate()
      if not c:WriteMessage(mt, data) then break end
    end
    c:Close()
  end))
  return srv, st
end

-- Send each of msgs ({mt, data}) and read it back, byte-exact.
local function round_trips(c, msgs)
  for i, m in ipairs(msgs) do
    assert(c:WriteMessage(m[1], m[2]))
    local mt, data, err = c:ReadMessage()
    assert(mt, ("message %d: %s"):format(i, tostring(err)))
    assert(mt == m[1] and #data == #m[2] and data == m[2],
      ("message %d (%d bytes) came back different (%s bytes)"):format(i, #m[2], #data))
  end
end

local SIZES = { 0, 1, 125, 126, 65535, 65536, 1000000 }
local function messages(sizes)
  local msgs = {}
  for _, n in ipairs(sizes) do
    msgs[#msgs + 1] = { TEXT, text(n) }
    msgs[#msgs + 1] = { BINARY, noise(n, n) }
  end
  return msgs
end

describe("issue 10: luaws to luaws with permessage-deflate", function()
  local function pair(server_opts, client_opts, fn, setup)
    local srv, st = echo_server(server_opts, setup)
    finally(function() srv:Close() end)
    support.run(function()
      local c, resp, err = websocket.Dialer(client_opts):Dial(support.url(srv:Port()))
      assert(c, tostring(err))
      fn(c, st, resp)
      c:Close()
    end, 60 * SLOW)
    return st
  end

  it("text and binary of 0 B to 16 MiB, byte-exact, gorilla's defaults", function()
    local st = pair({ EnableCompression = true }, { EnableCompression = true }, function(c)
      assert.are.equal("tx 15- rx 15-", agreed(c:_deflate()))
      round_trips(c, messages({ 0, 1, 125, 126, 127, 65535, 65536, 1048576, 16 * 1024 * 1024 }))
    end)
    assert.are.equal("tx 15- rx 15-", agreed(st.pmd))
  end)

  for _, bits in ipairs({ 8, 9, 10, 11, 12, 13, 14, 15 }) do
    for _, takeover in ipairs({ false, true }) do
      local name = ("%d-bit windows both ways, %s context takeover"):format(bits,
        takeover and "with" or "without")
      it(name .. ": 0 B to 1 MB byte-exact", function()
        local opts = { ServerNoContextTakeover = not takeover, ClientNoContextTakeover = not takeover,
          ServerMaxWindowBits = bits, ClientMaxWindowBits = bits, MemLevel = bits < 12 and 4 or 8 }
        local t = takeover and "T" or "-"
        pair({ EnableCompression = true, CompressionOptions = opts },
          { EnableCompression = true, CompressionOptions = opts }, function(c)
            assert.are.equal(("tx %d%s rx %d%s"):format(bits, t, bits, t), agreed(c:_deflate()))
            local msgs = messages(SIZES)
            -- repeats, so that context takeover has something to refer back to
            for i = 1, 4 do msgs[#msgs + 1] = { TEXT, text(3000) .. i } end
            round_trips(c, msgs)
          end)
      end)
    end
  end

  for _, level in ipairs({ -2, -1, 0, 1, 5, 9 }) do
    it(("compression level %d, both sides, with context takeover"):format(level), function()
      local opts = { Level = level, ServerNoContextTakeover = false, ClientNoContextTakeover = false }
      pair({ EnableCompression = true, CompressionOptions = opts },
        { EnableCompression = true, CompressionOptions = opts }, function(c)
          assert.are.equal(level, c:_deflate().level)
          round_trips(c, messages({ 0, 100, 70000 }))
          c:SetCompressionLevel(level == 9 and 1 or 9) -- changed between messages
          round_trips(c, messages({ 0, 100, 70000 }))
        end)
    end)
  end

  it("SetCompressionLevel raises for a level gorilla refuses; EnableWriteCompression wants a boolean", function()
    pair({ EnableCompression = true }, { EnableCompression = true }, function(c)
      for _, bad in ipairs({ -3, 10, 1.5, "1" }) do
        assert.matches("invalid compression level", support.raises(function() c:SetCompressionLevel(bad) end))
      end
      assert.matches("boolean expected", support.raises(function() c:EnableWriteCompression(1) end))
      assert.is_true(c:SetCompressionLevel(-2))
      assert.is_true(c:EnableWriteCompression(true))
      round_trips(c, messages({ 1000 }))
    end)
  end)

  it("NextWriter compresses the whole message: RSV1 on its first frame only, byte-exact", function()
    pair({ EnableCompression = true }, { EnableCompression = true, WriteBufferSize = 512 }, function(c)
      local parts, n = {}, 0
      local w = assert(c:NextWriter(websocket.TextMessage))
      for i = 1, 3000 do
        parts[i] = ("line %d of a message written in pieces\n"):format(i)
        assert(w:Write(parts[i]))
        n = n + #parts[i]
      end
      assert(w:Close())
      local mt, data = c:ReadMessage()
      assert.are.equal(TEXT, mt)
      assert.are.equal(table.concat(parts), data)
      -- an empty writer, and one binary piece of noise
      w = assert(c:NextWriter(websocket.BinaryMessage))
      assert(w:Close())
      mt, data = c:ReadMessage()
      assert.are.same({ BINARY, "" }, { mt, data })
      w = assert(c:NextWriter(websocket.BinaryMessage))
      assert(w:Write(noise(200000, 7)))
      assert(w:Close())
      mt, data = c:ReadMessage()
      assert.is_true(data == noise(200000, 7))
    end)
  end)

  it("NextReader streams a compressed 8 MB message as it inflates", function()
    local srv, st = nil, {}
    local upgrader = websocket.Upgrader { EnableCompression = true }
    srv = assert(websocket.Listen("127.0.0.1:0", function(w, r)
      local c = assert(upgrader:Upgrade(w, r))
      local mt, reader = c:NextReader()
      st.mt, st.chunks, st.bytes, st.parts = mt, 0, 0, {}
      while true do
        local data, err = reader:Read(65536)
        if not data then
          st.end_err = err
          break
        end
        st.chunks = st.chunks + 1
        st.bytes = st.bytes + #data
        st.parts[#st.parts + 1] = data
      end
      st.ok = table.concat(st.parts) == text(8000000)
      st.parts = nil
      c:WriteMessage(websocket.TextMessage, "done")
      support.drain(c)
      c:Close()
    end))
    finally(function() srv:Close() end)
    support.run(function()
      local c = assert(websocket.Dialer { EnableCompression = true }:Dial(support.url(srv:Port())))
      assert(c:WriteMessage(websocket.TextMessage, text(8000000)))
      local _, data = c:ReadMessage()
      assert.are.equal("done", data)
      c:Close()
    end, 30)
    assert.are.equal(TEXT, st.mt)
    assert.are.equal(websocket.EOF, st.end_err)
    assert.are.equal(8000000, st.bytes)
    assert.is_true(st.chunks > 1)
    assert.is_true(st.ok)
  end)

  it("WritePreparedMessage to connections with different parameters: each gets its own frame", function()
    local pm = websocket.NewPreparedMessage(websocket.TextMessage, text(50000))
    local pb = websocket.NewPreparedMessage(websocket.BinaryMessage, noise(50000, 3))
    local function check(client_opts)
      pair({ EnableCompression = true, CompressionOptions = { ServerNoContextTakeover = false } }, client_opts,
        function(c)
          for _ = 1, 3 do
            assert(c:WritePreparedMessage(pm))
            assert(c:WritePreparedMessage(pb))
            local mt, data = c:ReadMessage()
            assert.is_true(mt == TEXT and data == text(50000))
            mt, data = c:ReadMessage()
            assert.is_true(mt == BINARY and data == noise(50000, 3))
          end
        end)
    end
    check({ EnableCompression = true })
    check({ EnableCompression = true, CompressionOptions = { ClientMaxWindowBits = 9, Level = 9 } })
    check({ EnableCompression = true, CompressionOptions = { ClientNoContextTakeover = false } })
    check({})
  end)
end)

describe("issue 10: memory", function()
  it("connections without context takeover hold no zlib stream between messages; the pool stays small", function()
    local srv, st = echo_server({ EnableCompression = true })
    finally(function() srv:Close() end)
    local conns = {}
    support.run(function()
      for i = 1, 20 do
        conns[i] = assert(websocket.Dialer { EnableCompression = true }:Dial(support.url(srv:Port())))
      end
      for round = 1, 3 do
        for i = 1, 20 do assert(conns[i]:WriteMessage(websocket.TextMessage, text(20000 + round))) end
        for i = 1, 20 do
          local _, data = conns[i]:ReadMessage()
          assert(#data == 20000 + round)
        end
      end
    end, 30)
    for i = 1, 20 do
      local pmd = conns[i]:_deflate()
      assert.is_false(pmd.tx_stream, "client " .. i .. " holds a deflate stream")
      assert.is_false(pmd.rx_stream, "client " .. i .. " holds an inflate stream")
      pmd = st.conns[i]:_deflate()
      assert.is_false(pmd.tx_stream, "server conn " .. i .. " holds a deflate stream")
      assert.is_false(pmd.rx_stream, "server conn " .. i .. " holds an inflate stream")
    end
    local deflaters, inflaters = core._deflate_pool()
    assert.is_true(deflaters >= 1 and deflaters <= 4, "deflaters pooled: " .. deflaters)
    assert.is_true(inflaters >= 1 and inflaters <= 8, "inflaters pooled: " .. inflaters)
    for i = 1, 20 do conns[i]:Close() end
  end)

  it("with context takeover each connection keeps its streams from its first compressed message", function()
    local srv, st = echo_server({ EnableCompression = true, CompressionOptions = TAKEOVER })
    finally(function() srv:Close() end)
    support.run(function()
      local c = assert(websocket.Dialer { EnableCompression = true, CompressionOptions = TAKEOVER }
        :Dial(support.url(srv:Port())))
      local pmd = c:_deflate()
      assert.is_false(pmd.tx_stream or pmd.rx_stream, "streams before any message")
      round_trips(c, messages({ 1000 }))
      pmd = c:_deflate()
      assert.is_true(pmd.tx_stream and pmd.rx_stream)
      assert.is_true(st.last_pmd.rx_stream, "the server's inflate stream")
      c:Close()
    end, 10)
  end)
end)

describe("issue 10: a NextWriter's frames on the wire", function()
  for _, role in ipairs({ "server", "client" }) do
    it(("luaws %s: RSV1 on the first frame only, the frames inflating to the message"):format(role), function()
      local big = noise(300000, 11) .. text(100000)
      local rw = { send = { P(TEXT, "go") }, msgs = { { TEXT, "go" } },
        setup = function(c) c:SetCompressionLevel(1) end,
        echo = function(c)
          local w = assert(c:NextWriter(websocket.BinaryMessage))
          for i = 1, #big, 10000 do assert(w:Write(big:sub(i, i + 9999))) end
          return w:Close()
        end }
      local r
      if role == "server" then r = run_server(rw) else r = run_client(rw) end
      local frames, payload = {}, {}
      for _, f in ipairs(r.frames) do
        if f.opcode < 8 then
          frames[#frames + 1] = f
          payload[#payload + 1] = unhex(f.payload)
        end
      end
      assert.is_true(#frames > 2, "frames: " .. #frames)
      assert.are.same({ 4, BINARY, false }, { frames[1].rsv, frames[1].opcode, frames[1].fin })
      for i = 2, #frames do
        assert.are.same({ 0, CONT, i == #frames }, { frames[i].rsv, frames[i].opcode, frames[i].fin })
      end
      -- inflated by Python's zlib, compared with the message
      local want, got = os.tmpname(), os.tmpname()
      finally(function() os.remove(want) os.remove(got) end)
      assert(io.open(want, "wb")):write(big):close()
      assert(io.open(got, "wb")):write(table.concat(payload)):close()
      local py = ("import sys, zlib; a = open(sys.argv[1], 'rb').read(); b = open(sys.argv[2], 'rb').read(); " ..
        "print(zlib.decompressobj(-15).decompress(b + bytes([0, 0, 255, 255])) == a)")
      assert.are.equal("True", support.sh_output(("%s -c %s %s %s"):format(PYTHON, q(py), q(want), q(got))))
    end)
  end
end)

describe("issue 10: examples/echo_server.lua -compress", function()
  it("negotiates permessage-deflate and echoes compressed messages", function()
    local port = support.free_port()
    local server = support.spawn(("lua5.4 examples/echo_server.lua -quiet -compress -addr 127.0.0.1:%d"):format(port))
    finally(function() support.stop(server) end)
    assert.is_truthy(support.wait_port(port, 10), "the example did not listen: " .. support.output(server))
    support.run(function()
      local c, resp = assert(websocket.Dialer { EnableCompression = true }:Dial(support.url(port, "/echo")))
      assert.are.equal(GORILLA_ANSWER, resp.Header:Get("Sec-WebSocket-Extensions"))
      round_trips(c, messages({ 0, 5, 100000 }))
      c:Close()
    end, 10)
  end)
end)

describe("issue 10: docs/API.md", function()
  it("runs the Compression section's snippet and prints what it says", function()
    local doc = assert(support.read_file("docs/API.md"))
    local at = assert(doc:find("\n## Compression (permessage-deflate)\n", 1, true))
    local code = assert(doc:match("```lua\n(.-)```", at))
    local status, out = support.run_child(support.lua(code), 20)
    assert.are.equal(0, status, out)
    assert.are.equal(GORILLA_ANSWER .. "\n13000\n", out)
  end)
end)
