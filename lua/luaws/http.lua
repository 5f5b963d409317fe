-- The net/http half of the server: the ResponseWriter `w` and Request `r` a handler
-- gets, Error and StatusText, ServeMux with DefaultServeMux/HandleFunc, and dispatch,
-- which runs each request's handler in its own coroutine and answers what it left
-- unanswered. Knows nothing of listening sockets (listener.lua) or WebSocket
-- handshakes (upgrader.lua, which answers through switch_protocols).
local getmetatable = debug and debug.getmetatable or getmetatable -- no __metatable lookup
local sched = require "luaws.sched"
local errors = require "luaws.errors"
local header = require "luaws.header"
local conn = require "luaws.conn"

local M = {}

local status_text = {
  [200] = "OK", [201] = "Created", [204] = "No Content", [301] = "Moved Permanently",
  [302] = "Found", [304] = "Not Modified", [400] = "Bad Request", [401] = "Unauthorized",
  [403] = "Forbidden", [404] = "Not Found", [405] = "Method Not Allowed",
  [426] = "Upgrade Required", [500] = "Internal Server Error", [501] = "Not Implemented",
  [503] = "Service Unavailable",
}
function M.StatusText(code) return status_text[code] or "" end

-- ResponseWriter: what a handler writes a plain HTTP answer through.
local ResponseWriter = { __name = "luaws.ResponseWriter" }
ResponseWriter.__index = ResponseWriter

-- Its header and body tables are made on first use: an upgraded request needs neither.
-- The nil fields size the table for what an upgrade or an answer adds.
local function new_writer(req)
  return setmetatable({ req = req, answered = false, conn = nil, status = nil },
    ResponseWriter)
end

-- Raise, at the caller of `method`, unless w is a ResponseWriter.
function M.check_writer(w, method)
  if getmetatable(w) ~= ResponseWriter then
    error("bad argument to '" .. method .. "' (luaws.ResponseWriter expected)", 3)
  end
end
local check_writer = M.check_writer

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
function M.finish(w)
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
local finish = M.finish

-- When the handler's coroutine ends (ok: it returned, not raised): answer what it left
-- unanswered, or close its connection with 1011 if it failed.
function ResponseWriter.__exit(w, ok)
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
end

-- Answer w's request with 101 and make it a WebSocket connection (for
-- Upgrader:Upgrade) -> conn | nil, reason. The connection then belongs to w: dispatch
-- closes it with 1011 if the handler fails.
function M.switch_protocols(w, key, subprotocol, extra_headers, offers, compression)
  if w.answered then return nil, "the response was already written" end
  local c, err = w.req:_upgrade(key, subprotocol, extra_headers, offers, compression)
  if not c then return nil, err end
  w.answered = true
  w.conn = c
  return c
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

-- dispatch(handler [, active]) -> the function the C listener calls for each request:
-- build w and r, start the handler's coroutine (recorded in active[w] when given), and
-- when it ends answer what it left unanswered (or close its connection with 1011 if it
-- failed). handler is a function or has ServeHTTP; nil means DefaultServeMux. C hands
-- over the target already split (rawpath, path decoded, query), the Host header and the
-- TLS state; r.Header stays in C until first used (header.lazy).
function M.dispatch(handler, active)
  handler = handler or M.DefaultServeMux
  local serve
  if type(handler) == "function" then
    serve = handler
  else
    serve = function(w, r) return handler:ServeHTTP(w, r) end
  end
  local lazy, spawn, run = header.lazy, sched.spawn, sched.run
  return function(req, method, target, rawpath, path, query, host, remote, tls)
    local w = new_writer(req)
    local r = {
      Method = method,
      URL = { Path = path, RawPath = rawpath, RawQuery = query },
      Header = lazy(req),
      Host = host or "",
      RemoteAddr = remote,
      Proto = "HTTP/1.1",
      RequestURI = target,
      TLS = tls, -- tls.ConnectionState, nil on plain HTTP
    }
    local co = spawn(serve, w) -- w's __exit runs when the handler ends
    if active then active[w] = co end
    run(co, w, r)
  end
end

return M
