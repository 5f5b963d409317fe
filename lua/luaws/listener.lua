-- Listening: Listen and ListenAndServe, the Server object they return (Close, Shutdown,
-- RegisterOnShutdown), "host:port" parsing, the checks of their arguments and options,
-- and ListenAndServe's graceful end on SIGINT and SIGTERM. Each request is handed to
-- http.lua's dispatch; ListenAndServe's Workers mode is workers.lua.
local core = require "luaws.core"
local sched = require "luaws.sched"
local runtime = require "luaws.runtime"
local errors = require "luaws.errors"
local options = require "luaws.options"
local conn = require "luaws.conn"
local http = require "luaws.http"
local log = require "luaws.log"
local workers = require "luaws.workers"
local tls = require "luaws.tls"

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
-- TLS: Go's tls.Config fields (tls.lua); every connection then speaks TLS (https://,
-- wss://).
local listen_fields = { HandshakeTimeout = "seconds", ReusePort = "boolean", TLS = "table" }
local serve_fields = { HandshakeTimeout = "seconds", ReusePort = "boolean", Workers = "count",
  TLS = "table" }

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
local weak_keys = { __mode = "k" }

-- Listen with its arguments checked. Each request's handler is recorded in s.active
-- (its ResponseWriter -> its coroutine) so that Shutdown can tell when they are done.
local function listen(addr, handler, opts)
  local host, port, why = parse_addr(addr)
  if not port then
    return nil, errors.new("listen tcp " .. addr .. ": " .. why)
  end
  opts = opts or {}
  local tls_config
  if opts.TLS then
    local err
    tls_config, err = tls.server_config(opts.TLS, "TLS", 3)
    if not tls_config then return nil, errors.new(err) end
  end
  local s = setmetatable({ port = 0, host = host or "", active = setmetatable({}, weak_keys),
    on_shutdown = {} }, Server)
  local srv, p = core.listen(host, port, http.dispatch(handler, s.active),
    opts.HandshakeTimeout or 10, opts.ReusePort, tls_config)
  if not srv then
    return nil, errors.new("listen tcp " .. addr .. ": " .. tostring(p))
  end
  s.srv, s.port = srv, p
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

local function check_server(s, method)
  if getmetatable(s) ~= Server then
    error("bad self to '" .. method .. "' (luaws.HTTPServer expected; call it as srv:" ..
      method .. "(...))", 3)
  end
end

-- Are handlers of s still running?
local function handlers_running(s)
  for _, co in pairs(s.active) do
    if coroutine.status(co) ~= "dead" then return true end
  end
  return false
end

-- srv:RegisterOnShutdown(fn): fn runs in its own goroutine when Shutdown starts (Go's
-- http.Server.RegisterOnShutdown), e.g. to tell long-running handlers to finish.
function Server:RegisterOnShutdown(fn)
  check_server(self, "RegisterOnShutdown")
  if type(fn) ~= "function" then
    error("bad argument #1 to 'RegisterOnShutdown' (function expected, got " .. type(fn) .. ")", 2)
  end
  self.on_shutdown[#self.on_shutdown + 1] = fn
  return true
end

-- srv:Shutdown([timeout]) -> true | nil, err: stop accepting (as Close), run the
-- RegisterOnShutdown functions, send every WebSocket connection of this server a close
-- frame with 1001 (going away), then wait for the handlers to return, up to timeout
-- seconds (default 5). Connections still open then are closed, and the error says so
-- (err.timeout). Go's Shutdown does not touch hijacked connections; a WebSocket server
-- wants them told.
function Server:Shutdown(timeout)
  check_server(self, "Shutdown")
  if timeout == nil then timeout = 5 end
  if type(timeout) ~= "number" or timeout ~= timeout then
    error("bad argument #1 to 'Shutdown' (number of seconds expected)", 2)
  end
  self:Close()
  if not self.shutting_down then
    self.shutting_down = true
    for _, fn in ipairs(self.on_shutdown) do sched.go(fn) end
    local going_away = conn.FormatCloseMessage(1001, "")
    for w, co in pairs(self.active) do
      if w.conn and coroutine.status(co) ~= "dead" then w.conn:WriteControl(8, going_away) end
    end
  end
  local deadline = core.monotime() + timeout
  while handlers_running(self) do
    if core.monotime() >= deadline then
      for w, co in pairs(self.active) do
        if w.conn and coroutine.status(co) ~= "dead" then w.conn:Close() end
      end
      return nil, errors.new("http: Shutdown: handlers still running after " .. timeout ..
        " s; their connections were closed", { timeout = true })
    end
    runtime.Sleep(0.01)
  end
  return true
end
function Server:__tostring()
  return ("luaws.HTTPServer: %s (%s)"):format(self:Addr(), live_servers[self] and "listening" or "closed")
end

-- Seconds the handlers get to finish after SIGINT or SIGTERM (ListenAndServe).
local GRACE = 5

-- ListenAndServe's answer to SIGINT and SIGTERM (unless the program took them with
-- Notify): shut s down gracefully (workers get the signal passed on), and on a second
-- signal exit at once. Sets s.signalled, then s.stopped when the shutdown is over.
local function stop_on_signals(s, children)
  local names = {}
  for _, name in ipairs({ "SIGINT", "SIGTERM" }) do
    if not runtime.signal_taken(name) then names[#names + 1] = name end
  end
  if #names == 0 then return end
  local ch = runtime.Chan(2)
  runtime.notify(ch, names, false, 2)
  sched.go(function()
    local name = ch:Recv()
    if runtime.signal_taken(name) then return end -- the program took it meanwhile
    s.signalled = true
    local who = workers.is_worker() and "worker " .. workers.pid() .. ": " or ""
    log.Printf("luaws: %s%s: shutting down (handlers have %g s)", who, name, GRACE)
    if not workers.is_worker() then
      -- a second signal ends it at once (a worker may get two: the terminal's Ctrl-C
      -- reaches the whole process group, and the parent passes its signal on)
      sched.go(function()
        local again = ch:Recv()
        log.Printf("luaws: %s again: exiting now", again)
        for _, pid in ipairs(children or {}) do core.kill(pid, "SIGKILL") end
        os.exit(1)
      end)
    end
    for _, pid in ipairs(children or {}) do core.kill(pid, "SIGTERM") end
    local ok, err = s:Shutdown(GRACE)
    if not ok then log.Printf("luaws: %s%s", who, tostring(err)) end
    workers.reap(children, GRACE + 2)
    s.stopped = true
  end)
end

-- ListenAndServe(addr [, handler [, opts]]): serve until the server is closed or shut
-- down, then return nil, ErrServerClosed (as Go); nil, err when it cannot listen.
-- SIGINT and SIGTERM shut it down gracefully (Server:Shutdown) unless the program
-- handles them itself (Notify). opts.Workers = N forks N-1 more processes
-- (workers.lua); call it before anything else. A worker that was shut down exits.
function M.ListenAndServe(addr, handler, opts)
  check_listen_args("ListenAndServe", addr, handler, opts, serve_fields)
  local n, children = opts and opts.Workers or 1, nil
  if n > 1 then
    local _, port = parse_addr(addr)
    local err
    opts, err, children = workers.fork(n, addr, port, opts)
    if not opts then return nil, err end
  end
  local s, err = listen(addr, handler, opts)
  if not s then return nil, err end
  stop_on_signals(s, children)
  while live_servers[s] or (s.signalled and not s.stopped) do sched.step(nil) end
  if workers.is_worker() and s.signalled then
    log.Printf("luaws: worker %d: shut down", workers.pid())
    os.exit(0)
  end
  return nil, errors.ErrServerClosed
end

-- ListenAndServeTLS(addr, certFile, keyFile [, handler [, opts]]): ListenAndServe over
-- TLS (Go's http.ListenAndServeTLS): HTTPS and wss:// on one port. opts.TLS may add
-- settings (client certificates, versions); certFile and keyFile come first.
function M.ListenAndServeTLS(addr, cert_file, key_file, handler, opts)
  if type(cert_file) ~= "string" or type(key_file) ~= "string" then
    error("bad argument #" .. (type(cert_file) ~= "string" and 2 or 3) ..
      " to 'ListenAndServeTLS' (file name expected)", 2)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error("bad argument #5 to 'ListenAndServeTLS' (table expected, got " .. type(opts) .. ")", 2)
  end
  local o, t = {}, {}
  for k, v in pairs(opts or {}) do o[k] = v end
  if type(o.TLS) == "table" then for k, v in pairs(o.TLS) do t[k] = v end end
  t.CertFile, t.KeyFile = cert_file, key_file
  o.TLS = t
  return M.ListenAndServe(addr, handler, o)
end

return M
