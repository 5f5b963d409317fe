-- Listening: Listen and ListenAndServe, the Server object they return, "host:port"
-- parsing, and the checks of their arguments and options. Each request is handed to
-- http.lua's dispatch; ListenAndServe's Workers mode is workers.lua.
local core = require "luaws.core"
local sched = require "luaws.sched"
local errors = require "luaws.errors"
local options = require "luaws.options"
local http = require "luaws.http"
local workers = require "luaws.workers"

local M = {}

-- Server: a listening address. Listen(addr, handler) starts serving at once, on the
-- loop that every blocking call runs; ListenAndServe also runs that loop forever.
local Server = { __name = "luaws.HTTPServer" }
Server.__index = Server

-- "host:port" -> ip (nil: every interface), port | nil, nil, reason
local function parse_addr(addr)
  local host, port = addr:match("^%[([^%]]*)%]:(%d*)$")
  if not host then host, port = addr:match("^([^:]*):(%d*)$") end
  if not host then return nil, nil, "missing port in address" end
  port = tonumber(port == "" and "80" or port)
  if not port or port > 65535 then return nil, nil, "invalid port" end
  if host == "" then return nil, port end
  if host == "localhost" then return "127.0.0.1", port end
  return host, port
end

-- The options of Listen, and of ListenAndServe (see options.lua).
local listen_fields = { HandshakeTimeout = "seconds", ReusePort = "boolean" }
local serve_fields = { HandshakeTimeout = "seconds", ReusePort = "boolean", Workers = "count" }

-- Raise, at the caller of Listen or ListenAndServe (`name`), for misuse of its arguments.
local function check_listen_args(name, addr, handler, opts, fields)
  if type(addr) ~= "string" then
    error("bad argument #1 to '" .. name .. "' (\"host:port\" string expected, got " ..
      type(addr) .. ")", 3)
  end
  if handler ~= nil and type(handler) ~= "function" and
    not (type(handler) == "table" and handler.ServeHTTP) then
    error("bad argument #2 to '" .. name .. "' (function or ServeMux expected)", 3)
  end
  if opts ~= nil then
    if type(opts) ~= "table" then
      error("bad argument #3 to '" .. name .. "' (table expected, got " .. type(opts) .. ")", 3)
    end
    options.check(name, fields, opts, 3)
  end
end

local live_servers = {}

-- Listen with its arguments checked.
local function listen(addr, handler, opts)
  local host, port, why = parse_addr(addr)
  if not port then
    return nil, errors.new("listen tcp " .. addr .. ": " .. why)
  end
  opts = opts or {}
  local srv, p = core.listen(host, port, http.dispatch(handler),
    opts.HandshakeTimeout or 10, opts.ReusePort)
  if not srv then
    return nil, errors.new("listen tcp " .. addr .. ": " .. tostring(p))
  end
  local s = setmetatable({ srv = srv, port = p, host = host or "" }, Server)
  live_servers[s] = true
  return s
end

function M.Listen(addr, handler, opts)
  check_listen_args("Listen", addr, handler, opts, listen_fields)
  return listen(addr, handler, opts)
end

function Server:Port() return self.port end
function Server:Addr()
  local h = self.host
  if h:find(":") then h = "[" .. h .. "]" end
  return h .. ":" .. self.port
end
function Server:Close()
  if live_servers[self] then
    live_servers[self] = nil
    self.srv:_close()
  end
  return true
end
Server.__close = Server.Close -- local srv <close> = websocket.Listen(...)
function Server:__tostring()
  return ("luaws.HTTPServer: %s (%s)"):format(self:Addr(), live_servers[self] and "listening" or "closed")
end

-- ListenAndServe(addr [, handler [, opts]]): serve forever; returns nil, err when it
-- cannot listen. opts.Workers = N forks N-1 more processes (workers.lua); call it
-- before anything else.
function M.ListenAndServe(addr, handler, opts)
  check_listen_args("ListenAndServe", addr, handler, opts, serve_fields)
  local n = opts and opts.Workers or 1
  if n > 1 then
    local _, port = parse_addr(addr)
    local err
    opts, err = workers.fork(n, addr, port, opts)
    if not opts then return nil, err end
  end
  local s, err = listen(addr, handler, opts)
  if not s then return nil, err end
  sched.loop()
end

return M
