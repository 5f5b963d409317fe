-- Error values: objects with __tostring, compared by identity for the sentinels
-- (ErrCloseSent, ...), with .code/.text for a CloseError and .timeout for timeouts.
local getmetatable = debug and debug.getmetatable or getmetatable -- no __metatable lookup
local M = {}

local Error = { __name = "luaws.Error" }
Error.__index = Error
Error.__tostring = function(e) return e.msg end
function Error:Error() return self.msg end
M.Error = Error

function M.new(msg, fields)
  local e = fields or {}
  e.msg = msg
  return setmetatable(e, Error)
end

function M.is(v) return getmetatable(v) == Error end

local close_names = {
  [1000] = "normal", [1001] = "going away", [1002] = "protocol error",
  [1003] = "unsupported data", [1005] = "no status", [1006] = "abnormal closure",
  [1007] = "invalid payload data", [1008] = "policy violation", [1009] = "message too big",
  [1010] = "mandatory extension missing", [1011] = "internal server error",
  [1012] = "service restart", [1013] = "try again later", [1015] = "TLS handshake error",
}

-- "websocket: close <code> (<name>)" per code, built once: every connection ends with
-- a CloseError, and formatting the number is most of what building one costs.
local close_prefixes = {}

local function close_prefix(code)
  local p = close_prefixes[code]
  if p then return p end
  p = "websocket: close " .. code
  if close_names[code] then p = p .. " (" .. close_names[code] .. ")" end
  if math.type(code) == "integer" and code >= 0 and code <= 0xffff then
    close_prefixes[code] = p -- the codes a close frame can carry: a bounded cache
  end
  return p
end

local function close_error_fields(code, text)
  -- the cache read inline: a call here would be the fifth level of a handler's
  -- coroutine, and each new level allocates a CallInfo
  local msg = close_prefixes[code] or close_prefix(code)
  if text and text ~= "" then msg = msg .. ": " .. text else text = "" end
  return { code = code, text = text, close = true, msg = msg }
end

-- A close frame from the peer (or 1006 when the connection dropped without one). Its
-- one C call (setmetatable) is two slots above it: every connection's reader ends with
-- one of these, deep in its coroutine's stack (see sched.park_on).
function M.CloseError(code, text)
  return setmetatable(close_error_fields(code, text), Error)
end

function M.HandshakeError(reason, status)
  return M.new("websocket: " .. reason, { status = status, handshake = true })
end

M.ErrCloseSent = M.new("websocket: close sent")
M.ErrReadLimit = M.new("websocket: read limit exceeded")
M.ErrBadHandshake = M.new("websocket: bad handshake")
M.ErrClosed = M.new("websocket: use of closed connection")
M.ErrServerClosed = M.new("http: Server closed")

return M
