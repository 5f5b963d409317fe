-- The server side, shaped like Go's net/http plus gorilla's Upgrader: HandleFunc,
-- ServeMux, ListenAndServe, the ResponseWriter `w` and Request `r` a handler gets, and
-- Upgrader:Upgrade. Each request's handler runs in its own coroutine.
local getmetatable = debug and debug.getmetatable or getmetatable -- no __metatable lookup
local core = require "luaws.core"
local sched = require "luaws.sched"
local errors = require "luaws.errors"
local header = require "luaws.header"
local conn = require "luaws.conn"
local options = require "luaws.options"

local M = {}
local unescape

local status_text = {
  [200] = "OK", [201] = "Created", [204] = "No Content", [301] = "Moved Permanently",
  [302] = "Found", [304] = "Not Modified", [400] = "Bad Request", [401] = "Unauthorized",
  [403] = "Forbidden", [404] = "Not Found", [405] = "Method Not Allowed",
  [426] = "Upgrade Required", [500] = "Internal Server Error", [501] = "Not Implemented",
  [503] = "Service Unavailable",
}
function M.StatusText(code) return status_text[code] or "" end

-- Percent-decoding of a URL path ("%2F" stays a byte of the path, as in Go's URL.Path).
unescape = function(s)
  if not s:find("%", 1, true) then return s end
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

-- ResponseWriter: what a handler writes a plain HTTP answer through.
local ResponseWriter = { __name = "luaws.ResponseWriter" }
ResponseWriter.__index = ResponseWriter

-- Its header and body tables are made on first use: an upgraded request needs neither.
local function new_writer(req)
  return setmetatable({ req = req, answered = false }, ResponseWriter)
end

local function check_writer(w, method)
  if getmetatable(w) ~= ResponseWriter then
    error("bad argument to '" .. method .. "' (luaws.ResponseWriter expected)", 3)
  end
end

function ResponseWriter:Header()
  local h = self.header
  if not h then
    h = header.new()
    self.header = h
  end
  return h
end

function ResponseWriter:WriteHeader(status)
  if type(status) ~= "number" or status < 100 or status > 999 then
    error("bad argument #1 to 'WriteHeader' (HTTP status expected)", 2)
  end
  if not self.status then self.status = status end
end

function ResponseWriter:Write(data)
  if type(data) ~= "string" then error("bad argument #1 to 'Write' (string expected)", 2) end
  if self.answered then return nil, errors.new("http: response already sent") end
  if not self.status then self.status = 200 end
  local body = self.body
  if not body then
    body = {}
    self.body = body
  end
  body[#body + 1] = data
  return #data
end

-- Send what the handler wrote (when it returns, or at once for an error answer).
local function finish(w)
  if w.answered then return end
  w.answered = true
  local body = w.body and table.concat(w.body) or ""
  local h = w:Header()
  if h:Get("Content-Type") == nil and #body > 0 then
    h:Set("Content-Type", body:find("^%s*<") and "text/html; charset=utf-8" or
      "text/plain; charset=utf-8")
  end
  local status = w.status or 200
  w.req:_respond(status, status_text[status] or "Status", header.flatten(h), body)
end

-- Error(w, text, status): Go's http.Error.
function M.Error(w, text, status)
  check_writer(w, "Error")
  w:Header():Set("Content-Type", "text/plain; charset=utf-8")
  w:Header():Set("X-Content-Type-Options", "nosniff")
  w:WriteHeader(status)
  w:Write(text .. "\n")
  finish(w)
end

-- ServeMux: Go's pattern rules. "/echo" matches that path only; a pattern ending in
-- "/" matches everything below it; the longest match wins.
local ServeMux = { __name = "luaws.ServeMux" }
ServeMux.__index = ServeMux

function M.NewServeMux() return setmetatable({ exact = {}, prefixes = {} }, ServeMux) end

function ServeMux:HandleFunc(pattern, handler)
  if type(pattern) ~= "string" or pattern:sub(1, 1) ~= "/" then
    error("bad argument #1 to 'HandleFunc' (pattern starting with '/' expected)", 2)
  end
  if type(handler) ~= "function" then
    error("bad argument #2 to 'HandleFunc' (function expected)", 2)
  end
  if pattern:sub(-1) == "/" then
    self.prefixes[#self.prefixes + 1] = { pattern = pattern, handler = handler }
    table.sort(self.prefixes, function(a, b) return #a.pattern > #b.pattern end)
  end
  self.exact[pattern] = handler
end

function ServeMux:Handler(path)
  local h = self.exact[path]
  if h then return h end
  for _, p in ipairs(self.prefixes) do
    if path:sub(1, #p.pattern) == p.pattern then return p.handler end
  end
  return nil
end

function ServeMux:ServeHTTP(w, r)
  local h = self:Handler(r.URL.Path)
  if not h then
    M.Error(w, "404 page not found", 404)
    return
  end
  return h(w, r)
end

M.DefaultServeMux = M.NewServeMux()
function M.HandleFunc(pattern, handler) return M.DefaultServeMux:HandleFunc(pattern, handler) end

-- Each request: build w and r, start the handler's coroutine, and when it ends answer
-- what it left unanswered (or close its connection with 1011 if it failed).
local function dispatch(handler)
  local serve
  if type(handler) == "function" then
    serve = handler
  else
    serve = function(w, r) return handler:ServeHTTP(w, r) end
  end
  return function(req, method, target, headers, remote)
    local w = new_writer(req)
    local path, query = target:match("^([^?]*)%??(.*)$")
    local r = {
      Method = method,
      URL = { Path = unescape(path), RawPath = path, RawQuery = query },
      Header = header.wrap(headers), -- names come lower case from C
      Host = header.first(headers.host) or "",
      RemoteAddr = remote,
      Proto = "HTTP/1.1",
      RequestURI = target,
    }
    sched.start(serve, function(ok)
      if w.conn then
        if not ok then conn.abort(w.conn, 1011, "internal server error") end
      elseif not w.answered then
        if not ok then
          w.body, w.status = nil, nil
          M.Error(w, "500 internal server error", 500)
        else
          finish(w)
        end
      end
    end, w, r)
  end
end

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
  local srv, p = core.listen(host, port, dispatch(handler or M.DefaultServeMux),
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

-- ListenAndServe(addr [, handler [, opts]]): serve forever; returns nil, err when it
-- cannot listen. opts.Workers = N forks N-1 more processes, each with its own loop,
-- all accepting on the same port (SO_REUSEPORT); call it before anything else.
function M.ListenAndServe(addr, handler, opts)
  check_listen_args("ListenAndServe", addr, handler, opts, serve_fields)
  local workers = opts and opts.Workers or 1
  if workers > 1 then
    local _, port = parse_addr(addr)
    if port == 0 then return nil, errors.new("listen tcp " .. addr .. ": Workers need a fixed port") end
    local o = {}
    for k, v in pairs(opts) do o[k] = v end
    o.ReusePort = true
    opts = o
    for _ = 2, workers do
      local pid, why = core.fork()
      if not pid then return nil, errors.new("fork: " .. tostring(why)) end
      if pid == 0 then break end
    end
  end
  local s, err = listen(addr, handler, opts)
  if not s then return nil, err end
  sched.loop()
end

-- Upgrader{CheckOrigin=, Subprotocols=, HandshakeTimeout=, ReadBufferSize=,
-- WriteBufferSize=, Error=}
local Upgrader = { __name = "luaws.Upgrader" }
Upgrader.__index = Upgrader

-- gorilla's Upgrader fields; see options.lua
local upgrader_fields = {
  CheckOrigin = "function", Subprotocols = "strings", Error = "function",
  WriteBufferSize = "bytes",
  HandshakeTimeout = "seconds", ReadBufferSize = "bytes", -- accepted and ignored (README)
  EnableCompression = "unimplemented", WriteBufferPool = "unimplemented",
}

function M.Upgrader(opts)
  if opts ~= nil then
    if type(opts) ~= "table" then
      error("bad argument #1 to 'Upgrader' (table expected, got " .. type(opts) .. ")", 2)
    end
    options.check("Upgrader", upgrader_fields, opts, 2)
  end
  return options.new(Upgrader, upgrader_fields, opts)
end

-- gorilla's default: no Origin header, or its host equals the request's Host.
local function same_origin(r)
  local origin = header.get(r.Header, "origin")
  if origin == nil then return true end
  local host = origin:match("^%a[%w+.-]*://([^/?#]*)")
  if not host then return false end
  host = host:gsub("^.*@", "")
  return host:lower() == (r.Host or ""):lower()
end
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
    finish(w)
  else
    M.Error(w, M.StatusText(status), status)
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
function Upgrader:Upgrade(w, r, response_header)
  if not options.is(self, Upgrader) then
    error("bad self to 'Upgrade' (luaws.Upgrader expected; call it as u:Upgrade(w, r))", 2)
  end
  check_writer(w, "Upgrade")
  if type(r) ~= "table" or not r.Header then
    error("bad argument #2 to 'Upgrade' (request expected)", 2)
  end
  if response_header ~= nil and type(response_header) ~= "table" then
    error("bad argument #3 to 'Upgrade' (header table expected)", 2)
  end
  local bad = "the client is not using the websocket protocol: "
  if not header.has_token(r.Header, "connection", "upgrade") then
    return self:returnError(w, r, 400, bad .. "'upgrade' token not found in 'Connection' header")
  end
  if not header.has_token(r.Header, "upgrade", "websocket") then
    return self:returnError(w, r, 400, bad .. "'websocket' token not found in 'Upgrade' header")
  end
  if r.Method ~= "GET" then
    return self:returnError(w, r, 405, bad .. "request method is not GET")
  end
  if not header.has_token(r.Header, "sec-websocket-version", "13") then
    return self:returnError(w, r, 400,
      "unsupported version: 13 not found in 'Sec-Websocket-Version' header")
  end
  local rh = response_header and header.new(response_header)
  if rh and rh:Get("Sec-Websocket-Extensions") then
    return self:returnError(w, r, 500,
      "application specific 'Sec-WebSocket-Extensions' headers are unsupported")
  end
  local check = self.CheckOrigin or same_origin
  if not check(r) then
    return self:returnError(w, r, 403, "request origin not allowed by Upgrader.CheckOrigin")
  end
  local key = header.get(r.Header, "sec-websocket-key") or ""
  if key == "" then
    return self:returnError(w, r, 400, "not a websocket handshake: 'Sec-WebSocket-Key' header is missing or blank")
  end
  local sub = select_subprotocol(self, r, response_header)
  local extra
  if rh then
    rh:Del("Sec-Websocket-Protocol")
    extra = header.flatten(rh)
  end
  if w.answered then
    return nil, errors.new("websocket: the response was already written")
  end
  local c, err = w.req:_upgrade(key, sub, extra)
  if not c then
    return nil, errors.new("websocket: " .. err)
  end
  w.answered = true
  w.conn = c
  conn.set_write_buffer(c, self.WriteBufferSize)
  return c
end

return M
