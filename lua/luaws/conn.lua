-- The gorilla-shaped methods of luaws.Conn, added to the C userdata's method table:
-- reading (ReadMessage, NextReader, handlers, deadlines, limit), writing (WriteMessage,
-- NextWriter, WriteControl, prepared messages, JSON) and closing. Errors are permanent,
-- as in gorilla: after a read error every read returns it, the same for writes.
local getmetatable = debug and debug.getmetatable or getmetatable -- no __metatable lookup
local core = require "luaws.core"
local sched = require "luaws.sched"
local errors = require "luaws.errors"

local M = {}

M.TextMessage, M.BinaryMessage, M.CloseMessage, M.PingMessage, M.PongMessage = 1, 2, 8, 9, 10

local Conn, conn_mt = core.conn_methods()

-- Lua-side state of each connection, created on first use. It lives in the Conn
-- userdata's user value (core.conn_state), so it goes with the Conn (no weak table to
-- sweep).
local conn_state = core.conn_state
local function state(c)
  local st = conn_state(c)
  if not st then
    -- the nil fields size the table for what every connection's reads add
    st = { write_buffer = 4096, reader = nil, read_err = nil }
    conn_state(c, st)
  end
  return st
end

-- What ReadMessage and WriteMessage's C side (src/conn_fast.c) may do alone: read while
-- nothing here needs to run between waits (no ping or pong handler, no open NextReader,
-- no error, no reader waiting here), write while no NextWriter is open and no write
-- failed. Called after every change of those fields.
local function sync_fast(c, st)
  c:_fast(st.ping_handler == nil and st.pong_handler == nil and st.open_reader == nil
    and st.read_err == nil and st.reader == nil, st.writer == nil and st.write_err == nil)
end

-- The C primitives the per-message paths call, looked up once.
local c_read, c_write = Conn._read, Conn._write

local function check_conn(c, method, level)
  if getmetatable(c) ~= conn_mt then
    error("bad self to '" .. method .. "' (luaws.Conn expected, got " .. type(c) ..
      "; call it as c:" .. method .. "(...))", level or 3)
  end
end
M.is_conn = function(c) return getmetatable(c) == conn_mt end

-- Called by upgrader.lua and client.lua for each new connection, with
-- Upgrader/Dialer.WriteBufferSize: makes its state, so even the first read takes the
-- short path.
function M.set_write_buffer(c, n)
  local st = state(c)
  if n ~= nil and type(n) == "number" and n > 0 then st.write_buffer = math.floor(n) end
end

local timeout_error = errors.new("websocket: i/o timeout", { timeout = true })

---------------------------------------------------------------------------------------
-- reading

-- Run the Lua ping/pong handlers for control frames the C side kept for them.
local function run_control_handlers(c, st)
  if not (st.ping_handler or st.pong_handler) then return nil end -- C answers them
  while true do
    local op, data = c:_control()
    if not op then return nil end
    local h = op == 9 and st.ping_handler or st.pong_handler
    if h then
      local err = h(data)
      if err ~= nil then return err end
    end
  end
end

-- The read side ended: build the permanent error (running a Lua close handler first)
-- and return nil, nil, err. cause: as the C read primitives report it ("peer", "limit",
-- "failed", "gone"). Tail-called, so that the error is built at the reader's depth: see
-- sched.park_on.
local function read_ended(c, st, code, text, cause)
  local err
  if code == -1 then
    err = timeout_error
  elseif cause == "limit" then
    err = errors.ErrReadLimit
  else
    err = errors.CloseError(code, text)
    if cause == "gone" then
      local why = c:_error()
      if why then err = errors.CloseError(code, why) end
    end
    if cause == "peer" and st.close_handler then
      local herr = st.close_handler(code, text)
      if herr ~= nil then err = herr end
    end
  end
  st.read_err = err
  sync_fast(c, st)
  return nil, nil, err
end

-- Start a read: refuse a second concurrent reader, drop what an unfinished NextReader
-- left. Returns the state, or nil and the error to return.
local function begin_read(c, method)
  local st = state(c)
  if st.read_err then return nil, st.read_err end
  if (st.reader and st.reader ~= (sched.current() or true)) or c:_fast_reading() then
    return nil, errors.new("websocket: concurrent " .. method .. " on one connection")
  end
  if st.open_reader then
    st.open_reader.done = true
    st.open_reader = nil
    sync_fast(c, st)
    c:_discard()
  end
  return st
end

-- Wait for the C side to report, then loop (the reader is marked while it waits).
local function wait_read(c, st)
  local co = sched.current()
  st.reader = co or true
  sync_fast(c, st)
  sched.wait(c, co or false, true) -- the C read primitives arm c when they find nothing
  st.reader = nil
  sync_fast(c, st)
end

-- Call one of the C read primitives (_read, _next, _read_part) until it has something,
-- running control handlers and parking in between: its two results, or nil, nil, err
-- once the read side has ended (err is then permanent).
local function await(c, st, primitive, arg)
  while true do
    local err = run_control_handlers(c, st)
    if err ~= nil then st.read_err = err; sync_fast(c, st); return nil, nil, err end
    local a, b, text, peer = primitive(c, arg)
    if a then return a, b end
    if a == nil then return read_ended(c, st, b, text, peer) end
    wait_read(c, st)
  end
end

-- c:ReadMessage() -> messageType, data | nil, nil, err. Its common case (see sync_fast;
-- in a goroutine) is C's (src/conn_fast.c), which calls this for the
-- rest: from one C frame deeper, so errors name the caller at level 4.
local function read_message(self)
  check_conn(self, "ReadMessage", 4)
  local st, err = begin_read(self, "ReadMessage")
  if not st then return nil, nil, err end
  return await(self, st, c_read)
end

-- The reader NextReader returns: Read(n) gives the message in chunks as they arrive.
local Reader = { __name = "luaws.MessageReader" }
Reader.__index = Reader

-- r:Read([n]) -> up to n bytes (default 64 KiB) | nil, websocket.EOF at the end | nil, err
function Reader:Read(n)
  if getmetatable(self) ~= Reader then error("bad self to 'Read' (luaws.MessageReader expected)", 2) end
  if n ~= nil and (type(n) ~= "number" or n < 1) then
    error("bad argument #1 to 'Read' (positive number expected)", 2)
  end
  if self.done then return nil, self.err or M.EOF end
  local c, st = self.conn, state(self.conn)
  local data, eof, err = await(c, st, c._read_part, n)
  if not data or eof then
    self.done, self.err = true, err
    st.open_reader = nil
    sync_fast(c, st)
  end
  if not data then return nil, err end
  if data == "" then return nil, M.EOF end -- only at the end: the last bytes came before
  return data
end

-- r:ReadAll() -> the rest of the message | nil, err
function Reader:ReadAll()
  local parts = {}
  while true do
    local data, err = self:Read(1024 * 1024)
    if not data then
      if err == M.EOF then return table.concat(parts) end
      return nil, err
    end
    parts[#parts + 1] = data
  end
end

M.EOF = errors.new("EOF")

-- c:NextReader() -> messageType, reader | nil, nil, err
function Conn:NextReader()
  check_conn(self, "NextReader")
  local st, err = begin_read(self, "NextReader")
  if not st then return nil, nil, err end
  local mt, _, aerr = await(self, st, self._next)
  if not mt then return nil, nil, aerr end
  local r = setmetatable({ conn = self, mt = mt }, Reader)
  st.open_reader = r
  sync_fast(self, st)
  return mt, r
end

-- c:SetReadLimit(n): a message longer than n bytes fails the connection (1009) and
-- the read returns ErrReadLimit. 0: no limit.
function Conn:SetReadLimit(n)
  check_conn(self, "SetReadLimit")
  if type(n) ~= "number" then error("bad argument #1 to 'SetReadLimit' (number expected)", 2) end
  self:_read_limit(math.floor(n))
  return true
end

local function set_deadline(c, which, t, method)
  check_conn(c, method)
  if t ~= nil and type(t) ~= "number" then
    error("bad argument #1 to '" .. method .. "' (time from websocket.Now() or nil expected)", 3)
  end
  if t == nil or t == 0 then
    c:_deadline(which, nil)
  else
    c:_deadline(which, t - core.now())
  end
  return true
end

-- c:SetReadDeadline(t) / c:SetWriteDeadline(t): t absolute, from websocket.Now();
-- nil or 0 clears. A passed deadline breaks that side for good (err.timeout == true).
function Conn:SetReadDeadline(t) return set_deadline(self, "read", t, "SetReadDeadline") end
function Conn:SetWriteDeadline(t) return set_deadline(self, "write", t, "SetWriteDeadline") end

---------------------------------------------------------------------------------------
-- control frame handlers (gorilla's defaults live in C and run without a reader)

local function sync_handlers(c, st)
  c:_handlers(st.ping_handler ~= nil, st.pong_handler ~= nil, st.close_handler ~= nil)
end

local function check_handler(h, method)
  if h ~= nil and type(h) ~= "function" then
    error("bad argument #1 to '" .. method .. "' (function or nil expected)", 3)
  end
end

-- A Set*Handler method: stores h (nil: back to the default) and tells C which control
-- frames Lua takes.
local function handler_setter(field, method)
  return function(self, h)
    check_conn(self, method)
    check_handler(h, method)
    local st = state(self)
    st[field] = h
    sync_fast(self, st)
    sync_handlers(self, st)
    return true
  end
end

-- SetPingHandler(h): h(appData) runs when the reader meets a ping; it answers it
-- itself (c:WriteControl(PongMessage, appData)). nil restores the default, which
-- answers every ping at once, reader or not.
Conn.SetPingHandler = handler_setter("ping_handler", "SetPingHandler")
-- SetPongHandler(h): h(appData) runs when the reader meets a pong (default: nothing).
Conn.SetPongHandler = handler_setter("pong_handler", "SetPongHandler")
-- SetCloseHandler(h): h(code, text) runs when the reader meets the peer's close frame;
-- it answers it itself. nil restores the default (answer with the same code).
Conn.SetCloseHandler = handler_setter("close_handler", "SetCloseHandler")

function Conn:PingHandler()
  check_conn(self, "PingHandler")
  return state(self).ping_handler or function(data)
    local ok, err = self:WriteControl(M.PongMessage, data)
    if not ok and err ~= errors.ErrCloseSent then return err end
  end
end

function Conn:PongHandler()
  check_conn(self, "PongHandler")
  return state(self).pong_handler or function() end
end

function Conn:CloseHandler()
  check_conn(self, "CloseHandler")
  return state(self).close_handler or function(code)
    self:WriteControl(M.CloseMessage, M.FormatCloseMessage(code, ""))
  end
end

---------------------------------------------------------------------------------------
-- writing

local function write_failed(c, st, reason)
  local err
  if reason == "close_sent" then
    return errors.ErrCloseSent -- not permanent by itself: the close frame went out
  elseif reason == "timeout" then
    err = timeout_error
  elseif reason == "closed" then
    err = errors.ErrClosed
  else
    err = errors.new("websocket: " .. reason)
  end
  st.write_err = err
  sync_fast(c, st)
  return err
end

-- Data frames of one message must not mix with another message's: while a NextWriter
-- is open, other writers wait for it to close.
local function acquire_writer(c, st)
  if not st.writer then return end
  local me = sched.current() or true
  if st.writer and st.writer.co == me then
    st.writer:Close() -- as gorilla: a new message ends the caller's open one
  end
  while st.writer do
    local co = sched.current()
    st.write_waiters = st.write_waiters or {}
    if co then
      table.insert(st.write_waiters, co)
      sched.park()
    else
      sched.park(function() return not st.writer end)
    end
  end
end

local function release_writer(c, st)
  st.writer = nil
  sync_fast(c, st)
  local q = st.write_waiters
  if q and #q > 0 then
    st.write_waiters = nil
    for _, co in ipairs(q) do sched.ready(co) end -- each checks again for its turn
  end
end

-- What c_write's answer (ok, reason) comes to: wait while the send queue is over its
-- limit, then true | nil, err.
local function sent(c, st, ok, reason)
  while ok == false do
    sched.wait(c)
    ok, reason = c:_drained()
  end
  if ok then return true end
  return nil, write_failed(c, st, reason)
end

-- Send one frame and wait while the send queue is over its limit.
local function send(c, st, opcode, data, fin)
  return sent(c, st, c_write(c, opcode, data, fin))
end

local control = { [8] = true, [9] = true, [10] = true }

local function check_type(mt, method, level)
  if type(mt) ~= "number" or not (mt == 1 or mt == 2 or control[mt]) then
    error("bad argument #1 to '" .. method .. "' (unknown message type " .. tostring(mt) .. ")",
      level or 3)
  end
end

-- c:WriteMessage(messageType, data) -> true | nil, err. Its common case (a data message,
-- no NextWriter open, nothing failed yet) is C's (src/conn_fast.c), which calls sent
-- when the send queue is over its limit, and this for the rest (one C frame deeper).
local function write_message(self, mt, data)
  check_conn(self, "WriteMessage", 4)
  check_type(mt, "WriteMessage", 4)
  if data == nil then data = "" end
  if type(data) ~= "string" then
    error("bad argument #2 to 'WriteMessage' (string expected, got " .. type(data) .. ")", 3)
  end
  local st = state(self)
  if st.write_err then return nil, st.write_err end
  if control[mt] then return self:WriteControl(mt, data) end
  acquire_writer(self, st)
  return send(self, st, mt, data, true)
end

Conn.ReadMessage, Conn.WriteMessage = core.conn_fast(read_message,
  function(c, code, text, cause) return read_ended(c, state(c), code, text, cause) end,
  write_message,
  function(c, ok, reason) return sent(c, state(c), ok, reason) end)

-- c:WriteControl(messageType, data [, deadline]) -> true | nil, err. Control frames go
-- ahead of queued data frames and never wait, so the deadline has nothing to bound.
function Conn:WriteControl(mt, data, deadline)
  check_conn(self, "WriteControl")
  if mt ~= 8 and mt ~= 9 and mt ~= 10 then
    error("bad argument #1 to 'WriteControl' (CloseMessage, PingMessage or PongMessage expected)", 2)
  end
  if data == nil then data = "" end
  if type(data) ~= "string" then
    error("bad argument #2 to 'WriteControl' (string expected, got " .. type(data) .. ")", 2)
  end
  if deadline ~= nil and type(deadline) ~= "number" then
    error("bad argument #3 to 'WriteControl' (time or nil expected)", 2)
  end
  local st = state(self)
  if st.write_err then return nil, st.write_err end
  if #data > 125 then return nil, errors.new("websocket: invalid control frame") end
  local ok, reason = self:_write(mt, data)
  if ok ~= nil then return true end
  return nil, write_failed(self, st, reason)
end

-- The writer NextWriter returns: Write buffers, each full buffer goes out as a frame,
-- Close sends the last one.
local Writer = { __name = "luaws.MessageWriter" }
Writer.__index = Writer

-- Send data as the next frame of the message.
local function send_fragment(w, data, final)
  local ok, err = send(w.conn, state(w.conn), w.opcode, data, final)
  w.opcode = 0 -- continuation from now on
  if not ok then w.err = err end
  return ok, err
end

-- w:Write(data) -> #data | nil, err. Frames carry at most WriteBufferSize bytes.
function Writer:Write(data)
  if getmetatable(self) ~= Writer then error("bad self to 'Write' (luaws.MessageWriter expected)", 2) end
  if type(data) ~= "string" then
    error("bad argument #1 to 'Write' (string expected, got " .. type(data) .. ")", 2)
  end
  if self.closed then return nil, errors.new("websocket: write to closed writer") end
  if self.err then return nil, self.err end
  self.buf[#self.buf + 1] = data
  self.size = self.size + #data
  if self.size > self.limit then
    -- keep the last (partial or full) piece: it may be the final frame
    local all = table.concat(self.buf)
    local pos = 1
    while #all - pos + 1 > self.limit do
      local ok, err = send_fragment(self, all:sub(pos, pos + self.limit - 1), false)
      if not ok then return nil, err end
      pos = pos + self.limit
    end
    local rest = all:sub(pos)
    self.buf, self.size = { rest }, #rest
  end
  return #data
end

-- w:Close() -> true | nil, err: sends the final frame.
function Writer:Close()
  if getmetatable(self) ~= Writer then error("bad self to 'Close' (luaws.MessageWriter expected)", 2) end
  if self.closed then return nil, errors.new("websocket: close of closed writer") end
  self.closed = true
  local st = state(self.conn)
  local ok, err = true, self.err
  if not err then ok, err = send_fragment(self, table.concat(self.buf), true) end
  self.buf, self.size = {}, 0
  if st.writer == self then release_writer(self.conn, st) end
  if err then return nil, err end
  return ok
end

-- c:NextWriter(messageType) -> writer | nil, err
function Conn:NextWriter(mt)
  check_conn(self, "NextWriter")
  if mt ~= 1 and mt ~= 2 then
    error("bad argument #1 to 'NextWriter' (TextMessage or BinaryMessage expected)", 2)
  end
  local st = state(self)
  if st.write_err then return nil, st.write_err end
  acquire_writer(self, st)
  local w = setmetatable({ conn = self, opcode = mt, buf = {}, size = 0,
    limit = st.write_buffer, co = sched.current() or true }, Writer)
  st.writer = w
  sync_fast(self, st)
  return w
end

local prepared_type = setmetatable({}, { __mode = "k" })
local function pm_is_control(pm) return control[prepared_type[pm]] == true end

-- NewPreparedMessage(messageType, data) -> pm: framed once, sent with
-- c:WritePreparedMessage(pm) to any number of connections.
function M.NewPreparedMessage(mt, data)
  check_type(mt, "NewPreparedMessage")
  if type(data) ~= "string" then
    error("bad argument #2 to 'NewPreparedMessage' (string expected, got " .. type(data) .. ")", 2)
  end
  local pm = core.prepare(mt, data)
  prepared_type[pm] = mt
  return pm
end

function Conn:WritePreparedMessage(pm)
  check_conn(self, "WritePreparedMessage")
  local st = state(self)
  if st.write_err then return nil, st.write_err end
  if not pm_is_control(pm) then acquire_writer(self, st) end
  local ok, reason = self:_write_prepared(pm)
  while ok == false do
    sched.wait(self)
    ok, reason = self:_drained()
  end
  if ok then return true end
  return nil, write_failed(self, st, reason)
end

---------------------------------------------------------------------------------------
-- JSON (lua-cjson, else dkjson; loaded on first use)

local json
local function json_lib()
  if json then return json end
  local ok, lib = pcall(require, "cjson.safe")
  if ok then
    json = { encode = lib.encode, decode = lib.decode }
    return json
  end
  ok, lib = pcall(require, "dkjson")
  if ok then
    json = {
      encode = function(v)
        local ok, s = pcall(lib.encode, v)
        if ok then return s end
        return nil, s
      end,
      decode = function(s)
        local v, _, err = lib.decode(s, 1, nil)
        if err then return nil, err end
        return v
      end,
    }
    return json
  end
  error("luaws: ReadJSON/WriteJSON need lua-cjson or dkjson (apt install lua-cjson)", 3)
end

-- c:WriteJSON(v) -> true | nil, err
function Conn:WriteJSON(v)
  check_conn(self, "WriteJSON")
  local s, err = json_lib().encode(v)
  if not s then return nil, errors.new("json: " .. tostring(err)) end
  return self:WriteMessage(M.TextMessage, s)
end

-- c:ReadJSON() -> value | nil, err (gorilla fills a struct; Lua returns the value)
function Conn:ReadJSON()
  check_conn(self, "ReadJSON")
  local lib = json_lib()
  local _, data, err = self:ReadMessage()
  if not data then return nil, err end
  local v, jerr = lib.decode(data)
  if v == nil then return nil, errors.new("json: " .. tostring(jerr or "null")) end
  return v
end

---------------------------------------------------------------------------------------
-- closing

-- c:Close(): close the connection without sending a close frame (as gorilla does).
function Conn:Close()
  check_conn(self, "Close")
  self:_close()
  return true
end

-- Close with a code when a handler fails (1011), used by http.lua.
function M.abort(c, code, text)
  c:_close(code, text)
end

-- FormatCloseMessage(code, text) -> payload of a close frame
function M.FormatCloseMessage(code, text)
  if type(code) ~= "number" then
    error("bad argument #1 to 'FormatCloseMessage' (number expected)", 2)
  end
  if code == 1005 then return "" end
  return string.pack(">I2", code) .. (text or "")
end

local function code_in(err, ...)
  for i = 1, select("#", ...) do
    if err.code == select(i, ...) then return true end
  end
  return false
end

-- IsCloseError(err, code, ...) -> true when err is a CloseError with one of the codes
function M.IsCloseError(err, ...)
  return errors.is(err) and err.close == true and code_in(err, ...)
end

-- IsUnexpectedCloseError(err, expected, ...) -> true for a CloseError with another code
function M.IsUnexpectedCloseError(err, ...)
  return errors.is(err) and err.close == true and not code_in(err, ...)
end

return M
