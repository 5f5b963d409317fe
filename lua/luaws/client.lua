-- The client side, shaped like gorilla's Dialer: Dialer{...}:Dial(url, header) and
-- DefaultDialer. Name lookup, connect and handshake run on the loop; the caller parks.
local core = require "luaws.core"
local sched = require "luaws.sched"
local errors = require "luaws.errors"
local header = require "luaws.header"
local conn = require "luaws.conn"
local options = require "luaws.options"
local tls = require "luaws.tls"
local proxy = require "luaws.proxy"

local M = {}

local Dialer = { __name = "luaws.Dialer" }
Dialer.__index = Dialer

-- gorilla's Dialer fields; see options.lua
local fields = {
  HandshakeTimeout = "seconds", Subprotocols = "strings", WriteBufferSize = "bytes",
  ReadBufferSize = "bytes", -- accepted and ignored (README, "Differences")
  Proxy = "function", NetDial = "unimplemented", NetDialContext = "unimplemented",
  NetDialTLSContext = "unimplemented", TLSClientConfig = "table",
  Jar = "unimplemented", WriteBufferPool = "unimplemented",
  EnableCompression = "boolean", CompressionOptions = "compression", -- permessage-deflate
}

-- Dialer{HandshakeTimeout=seconds, Subprotocols={...}, Proxy=function(req), ReadBufferSize=,
-- WriteBufferSize=, TLSClientConfig=, EnableCompression=, CompressionOptions=}
function M.Dialer(opts)
  if opts ~= nil then
    if type(opts) ~= "table" then
      error("bad argument #1 to 'Dialer' (table expected, got " .. type(opts) .. ")", 2)
    end
    options.check("Dialer", fields, opts, 2)
  end
  return options.new(Dialer, fields, opts)
end

M.DefaultDialer = M.Dialer{ HandshakeTimeout = 45, Proxy = proxy.ProxyFromEnvironment }

-- parse_url("ws://[user:pass@]host:port/path?query") -> {scheme, host, port, hostport,
-- path, userinfo}
local function parse_url(url)
  local scheme, rest = url:match("^(%a[%w+.-]*)://(.*)$")
  if not scheme then return nil end
  scheme = scheme:lower()
  if scheme ~= "ws" and scheme ~= "wss" then return nil end
  local authority, path = rest:match("^([^/?#]*)(.*)$")
  path = path:gsub("#.*$", "")
  if path == "" or path:sub(1, 1) == "?" then path = "/" .. path end
  local userinfo
  userinfo, authority = proxy.split_authority(authority)
  if userinfo == nil then return nil end
  local host, port = authority:match("^%[([^%]]+)%]:?(%d*)$")
  if not host then host, port = authority:match("^([^:]+):?(%d*)$") end
  if not host or host == "" then return nil end
  local default_port = scheme == "wss" and 443 or 80
  port = port ~= "" and tonumber(port) or default_port
  if port < 1 or port > 65535 then return nil end
  return { scheme = scheme, host = host, port = port, hostport = authority, path = path,
    userinfo = userinfo }
end
M.parse_url = parse_url

local reserved = {
  ["upgrade"] = true, ["connection"] = true, ["sec-websocket-key"] = true,
  ["sec-websocket-version"] = true, ["sec-websocket-extensions"] = true,
}

-- d:Dial(url [, requestHeader]) -> conn, resp | nil, resp, err
function Dialer:Dial(url, request_header)
  if not options.is(self, Dialer) then
    error("bad self to 'Dial' (luaws.Dialer expected; call it as d:Dial(url))", 2)
  end
  if type(url) ~= "string" then
    error("bad argument #1 to 'Dial' (string expected, got " .. type(url) .. ")", 2)
  end
  if request_header ~= nil and type(request_header) ~= "table" then
    error("bad argument #2 to 'Dial' (header table expected)", 2)
  end
  local u = parse_url(url)
  if not u then return nil, nil, errors.new("websocket: malformed ws or wss URL") end
  local tls_config, server_name
  if u.scheme == "wss" then
    local t, err = self.TLSClientConfig, nil
    tls_config, err = tls.client_config(t, "TLSClientConfig", 2)
    if not tls_config then return nil, nil, errors.new(err) end
    -- "" is Go's zero value: the URL's host (gorilla's Dial does the same)
    server_name = t and t.ServerName ~= "" and t.ServerName or u.host
  end

  local h = header.new(request_header)
  local extra, origin, host_header, subprotocols = {}, nil, u.hostport, nil
  for name, value in pairs(h) do
    if reserved[name] then
      return nil, nil, errors.new("websocket: duplicate header not allowed: " .. name)
    elseif name == "host" then
      host_header = h:Get("Host")
    elseif name == "origin" then
      origin = h:Get("Origin")
    elseif name == "sec-websocket-protocol" then
      subprotocols = h:Get("Sec-WebSocket-Protocol")
    else
      header.flatten({ [name] = value }, extra)
    end
  end
  if self.Subprotocols and #self.Subprotocols > 0 then
    subprotocols = table.concat(self.Subprotocols, ", ")
  end
  for _, v in ipairs(extra) do
    if v:find("[\r\n]") then error("bad argument #2 to 'Dial' (invalid header " .. v:sub(1, 40) .. ")", 2) end
  end
  for name, v in pairs({ Host = host_header, Origin = origin, ["Sec-WebSocket-Protocol"] = subprotocols }) do
    if v:find("[\r\n]") then error("bad argument #2 to 'Dial' (invalid header " .. name .. ")", 2) end
  end
  if u.userinfo and not h:Get("Authorization") then
    -- as Go's http.Client for a URL with user info (gorilla refuses such a URL)
    extra[#extra + 1] = "authorization"
    extra[#extra + 1] = proxy.basic_auth(u.userinfo.user, u.userinfo.password or "")
  end

  local via -- the proxy, when the Dialer's Proxy gives one
  if self.Proxy ~= nil then
    local purl, perr = self.Proxy(proxy.request(u, h, host_header))
    if perr ~= nil then return nil, nil, perr end
    if purl ~= nil then
      if type(purl) ~= "string" then
        error("Dial: the Dialer's Proxy returned a " .. type(purl) .. " (a URL string or nil expected)", 2)
      end
      via, perr = proxy.dial_params(purl, u)
      if not via then return nil, nil, perr end
    end
  end

  local timeout = self.HandshakeTimeout or 0
  if type(timeout) ~= "number" or timeout ~= timeout then
    error("Dial: the Dialer's HandshakeTimeout must be a number of seconds (not NaN)", 2)
  end
  local compression
  if self.EnableCompression then compression = self.CompressionOptions or {} end
  local c
  if via then
    c = core.dial(via.host, via.port, u.path, host_header, origin, subprotocols, extra,
      timeout, tls_config, server_name, via.core, compression)
  else
    c = core.dial(u.host, u.port, u.path, host_header, origin, subprotocols, extra,
      timeout, tls_config, server_name, nil, compression)
  end
  while c:_state() == "connecting" do sched.wait(c) end
  local status, resp_headers, timed_out, status_text = c:_dial_result()
  local resp
  if status and status > 0 then
    resp = { StatusCode = status, Status = status_text, Header = header.new(resp_headers),
      TLS = c:_tls() }
  end
  if c:_state() ~= "closed" then
    conn.set_write_buffer(c, self.WriteBufferSize)
    return c, resp
  end

  local why, kind = c:_error()
  if kind == "proxy" then
    return nil, resp, errors.new(why) -- the proxy's status text, as gorilla
  end
  if via and (kind == "connect" or kind == "lookup") then
    return nil, nil, errors.new("proxyconnect tcp: dial tcp " .. via.hostport .. ": " .. why)
  end
  if resp and status ~= 101 or kind == "handshake" then
    return nil, resp, errors.ErrBadHandshake
  end
  if kind == "tls" then return nil, resp, errors.new(why) end
  if timed_out then
    return nil, resp, errors.new("dial tcp " .. u.hostport .. ": i/o timeout", { timeout = true })
  end
  return nil, resp, errors.new("dial tcp " .. u.hostport .. ": " .. (why or "connection failed"))
end

return M
