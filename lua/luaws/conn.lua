-- The gorilla-shaped methods of luaws.Conn, added to the C userdata's method table:
-- ReadMessage, WriteMessage, Close and friends. Errors are permanent, as in gorilla.
local core = require "luaws.core"
local sched = require "luaws.sched"
local errors = require "luaws.errors"

local M = {}

M.TextMessage, M.BinaryMessage, M.CloseMessage, M.PingMessage, M.PongMessage = 1, 2, 8, 9, 10

local Conn, conn_mt = core.conn_methods()
local read_error = setmetatable({}, { __mode = "k" })
local write_error = setmetatable({}, { __mode = "k" })
local reader = setmetatable({}, { __mode = "k" })

local function check_conn(c, method)
  if getmetatable(c) ~= conn_mt then
    error("bad self to '" .. method .. "' (luaws.Conn expected, got " .. type(c) ..
      "; call it as c:" .. method .. "(...))", 3)
  end
end
M.is_conn = function(c) return getmetatable(c) == conn_mt end

-- The error a closed connection reports to its reader.
local function closed_error(c, code, text)
  local err = errors.CloseError(code, text)
  if code == 1006 then
    local why = c:_error()
    if why then err = errors.CloseError(code, why) end
  end
  return err
end

-- c:ReadMessage() -> messageType, data | nil, nil, err
function Conn:ReadMessage()
  check_conn(self, "ReadMessage")
  local err = read_error[self]
  if err then return nil, nil, err end
  local co = sched.current()
  if reader[self] and reader[self] ~= co then
    return nil, nil, errors.new("websocket: concurrent ReadMessage on one connection")
  end
  while true do
    local mt, data, text = self:_read()
    if mt then return mt, data end
    if mt == nil then
      err = closed_error(self, data, text)
      read_error[self] = err
      return nil, nil, err
    end
    reader[self] = co or true
    sched.wait(self)
    reader[self] = nil
  end
end

local control = { [8] = true, [9] = true, [10] = true }

-- c:WriteMessage(messageType, data) -> true | nil, err
function Conn:WriteMessage(mt, data)
  check_conn(self, "WriteMessage")
  if type(mt) ~= "number" or not (mt == 1 or mt == 2 or control[mt]) then
    error("bad argument #1 to 'WriteMessage' (unknown message type " .. tostring(mt) .. ")", 2)
  end
  if data == nil then data = "" end
  if type(data) ~= "string" then
    error("bad argument #2 to 'WriteMessage' (string expected, got " .. type(data) .. ")", 2)
  end
  local err = write_error[self]
  if err then return nil, err end
  if control[mt] and #data > 125 then
    return nil, errors.new("websocket: invalid control frame")
  end
  local ok, reason = self:_write(mt, data)
  while ok == false do
    sched.wait(self)
    ok, reason = self:_drained()
  end
  if ok then return true end
  if reason == "close sent" then
    err = errors.ErrCloseSent
  elseif reason == "closed" then
    err = errors.ErrClosed
  else
    err = errors.new("websocket: " .. reason)
  end
  if err ~= errors.ErrCloseSent then write_error[self] = err end
  return nil, err
end

-- c:Close(): close the connection without sending a close frame (as gorilla does).
function Conn:Close()
  check_conn(self, "Close")
  self:_close()
  return true
end

-- Close with a code when a handler fails (1011), used by server.lua.
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
