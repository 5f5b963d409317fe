-- gorilla's server-side handshake: the Upgrader and its Upgrade, which checks a
-- request and answers it with 101 (through http.lua's switch_protocols) or with an
-- error; also IsWebSocketUpgrade, Subprotocols and CheckSameOrigin.
local errors = require "luaws.errors"
local header = require "luaws.header"
local conn = require "luaws.conn"
local options = require "luaws.options"
local http = require "luaws.http"

local M = {}

local has_token = header.has_token
local sources = header.sources
local check_writer = http.check_writer
local set_write_buffer = conn.set_write_buffer
local upgrade -- Upgrade's general way

-- Upgrader{CheckOrigin=, Subprotocols=, HandshakeTimeout=, ReadBufferSize=,
-- WriteBufferSize=, Error=, EnableCompression=, CompressionOptions=}
local Upgrader = { __name = "luaws.Upgrader" }
Upgrader.__index = Upgrader

-- gorilla's Upgrader fields; see options.lua
local upgrader_fields = {
  CheckOrigin = "function", Subprotocols = "strings", Error = "function",
  WriteBufferSize = "bytes",
  HandshakeTimeout = "seconds", ReadBufferSize = "bytes", -- accepted and ignored (README)
  EnableCompression = "boolean", CompressionOptions = "compression", -- permessage-deflate
  WriteBufferPool = "unimplemented",
}

-- Upgrader -> its fields as a plain table (options.new's values), for Upgrade
local upgraders = setmetatable({}, { __mode = "k" })

function M.Upgrader(opts)
  if opts ~= nil then
    if type(opts) ~= "table" then
      error("bad argument #1 to 'Upgrader' (table expected, got " .. type(opts) .. ")", 2)
    end
    options.check("Upgrader", upgrader_fields, opts, 2)
  end
  local u = options.new(Upgrader, upgrader_fields, opts)
  upgraders[u] = options.values(u)
  return u
end

-- gorilla's default: no Origin header (origin nil), or its host equals the request's Host.
local function origin_allowed(origin, r)
  if origin == nil then return true end
  local host = origin:match("^%a[%w+.-]*://([^/?#]*)")
  if not host then return false end
  host = host:gsub("^.*@", "")
  return host:lower() == (r.Host or ""):lower()
end

local function same_origin(r) return origin_allowed(header.get(r.Header, "origin"), r) end
M.CheckSameOrigin = same_origin

-- Subprotocols(r) -> the list the client offered
function M.Subprotocols(r) return header.tokens(r.Header, "Sec-WebSocket-Protocol") end

-- IsWebSocketUpgrade(r) -> true when r asks for a WebSocket upgrade
function M.IsWebSocketUpgrade(r)
  return header.has_token(r.Header, "connection", "upgrade") and
    header.has_token(r.Header, "upgrade", "websocket")
end

function Upgrader:returnError(w, r, status, reason)
  local err = errors.HandshakeError(reason, status)
  w:Header():Set("Sec-Websocket-Version", "13")
  if self.Error then
    self.Error(w, r, status, err)
    http.finish(w)
  else
    http.Error(w, http.StatusText(status), status)
  end
  return nil, err
end

local function select_subprotocol(u, r, response_header)
  if u.Subprotocols and #u.Subprotocols > 0 then
    local offered = M.Subprotocols(r)
    for _, want in ipairs(u.Subprotocols) do
      for _, got in ipairs(offered) do
        if want == got then return want end
      end
    end
    return nil
  elseif response_header then
    local h = header.new(response_header)
    return h:Get("Sec-Websocket-Protocol")
  end
  return nil
end

-- u:Upgrade(w, r [, responseHeader]) -> conn | nil, err
-- While r.Header is untouched (header.source), its headers are read in C instead of
-- filling the table: each answer is what the table would give. The common case is one
-- C call (w:_ws_upgrade); otherwise the general way below.
function Upgrader:Upgrade(w, r, response_header)
  local o = upgraders[self]
  if not o then
    error("bad self to 'Upgrade' (luaws.Upgrader expected; call it as u:Upgrade(w, r))", 2)
  end
  check_writer(w, "Upgrade")
  if type(r) ~= "table" or not r.Header then
    error("bad argument #2 to 'Upgrade' (request expected)", 2)
  end
  local req = w.req
  if response_header == nil and sources[r.Header] == req and not w.answered and
    r.Method == "GET" and o.CheckOrigin == nil and o.Subprotocols == nil and
    not o.EnableCompression then
    -- the common case, all in C (w:_ws_upgrade): false sends it the general way
    local c, err = req:_ws_upgrade(r.Host)
    if c then
      w.answered, w.conn = true, c
      set_write_buffer(c, o.WriteBufferSize)
      return c
    elseif c == nil then
      return nil, errors.new("websocket: " .. err)
    end
  end
  return upgrade(self, o, w, r, response_header)
end

-- The general way of Upgrade, w and r checked. C's answers about an untouched r.Header
-- (w:_ws_headers) are used only while r.Header is still that table: CheckOrigin, the
-- one user function called here, may fill or replace it.
function upgrade(self, o, w, r, response_header)
  if response_header ~= nil and type(response_header) ~= "table" then
    error("bad argument #3 to 'Upgrade' (header table expected)", 2) -- tail-called
  end
  local bad = "the client is not using the websocket protocol: "
  local hdr = r.Header
  local req = header.source(hdr)
  local conn_ok, upgrade_ok, version_ok, key, origin, offers
  local asked = o.EnableCompression -- offers comes from C only when asked for
  if req then
    conn_ok, upgrade_ok, version_ok, key, origin, offers = req:_ws_headers(asked)
  else
    conn_ok = has_token(hdr, "connection", "upgrade")
    upgrade_ok = conn_ok and has_token(hdr, "upgrade", "websocket")
    version_ok = upgrade_ok and r.Method == "GET" and
      has_token(hdr, "sec-websocket-version", "13")
  end
  if not conn_ok then
    return self:returnError(w, r, 400, bad .. "'upgrade' token not found in 'Connection' header")
  end
  if not upgrade_ok then
    return self:returnError(w, r, 400, bad .. "'websocket' token not found in 'Upgrade' header")
  end
  if r.Method ~= "GET" then
    return self:returnError(w, r, 405, bad .. "request method is not GET")
  end
  if not version_ok then
    return self:returnError(w, r, 400,
      "unsupported version: 13 not found in 'Sec-Websocket-Version' header")
  end
  local rh = response_header and header.new(response_header)
  if rh and rh:Get("Sec-Websocket-Extensions") then
    return self:returnError(w, r, 500,
      "application specific 'Sec-WebSocket-Extensions' headers are unsupported")
  end
  local check = o.CheckOrigin
  local ok
  if check then
    ok = check(r)
  elseif req and r.Header == hdr and header.source(hdr) then
    ok = origin_allowed(origin, r)
  else
    ok = same_origin(r)
  end
  if not ok then
    return self:returnError(w, r, 403, "request origin not allowed by Upgrader.CheckOrigin")
  end
  if not (req and r.Header == hdr and header.source(hdr)) then
    key = header.get(r.Header, "sec-websocket-key")
  end
  key = key or ""
  if key == "" then
    return self:returnError(w, r, 400, "not a websocket handshake: 'Sec-WebSocket-Key' header is missing or blank")
  end
  local sub
  if response_header or o.Subprotocols then
    sub = select_subprotocol(self, r, response_header)
  end
  local extra
  if rh then
    rh:Del("Sec-Websocket-Protocol")
    extra = header.flatten(rh)
  end
  if not o.EnableCompression then
    offers = nil
  elseif not (asked and req and header.source(hdr)) then
    offers = header.joined(hdr, "sec-websocket-extensions")
  end
  local c, err = http.switch_protocols(w, key, sub, extra, offers, o.CompressionOptions)
  if not c then
    return nil, errors.new("websocket: " .. err)
  end
  conn.set_write_buffer(c, o.WriteBufferSize)
  return c
end

return M
