-- HTTP headers as Go's http.Header: a table name -> value (a list for repeated
-- headers) whose lookups ignore case: h:Get("origin"), h.Origin, h["sec-websocket-key"].
local getmetatable = debug and debug.getmetatable or getmetatable -- no __metatable lookup
local M = {}

local methods = {}
local Header = { __name = "luaws.Header" }
local lower = string.lower

Header.__index = function(h, k)
  local m = methods[k]
  if m then return m end
  if type(k) ~= "string" then return nil end
  return rawget(h, lower(k))
end

Header.__newindex = function(h, k, v)
  if type(k) ~= "string" then error("luaws: header names are strings", 2) end
  rawset(h, lower(k), v)
end

function methods:Get(name)
  local v = self[name]
  if type(v) == "table" then return v[1] end
  return v
end

function methods:Values(name)
  local v = self[name]
  if v == nil then return {} end
  if type(v) == "table" then return v end
  return { v }
end

function methods:Set(name, value) self[name] = tostring(value) end

function methods:Add(name, value)
  local v = self[name]
  if v == nil then
    self[name] = tostring(value)
  elseif type(v) == "table" then
    v[#v + 1] = tostring(value)
  else
    self[name] = { v, tostring(value) }
  end
end

function methods:Del(name) rawset(self, name:lower(), nil) end

-- new([plain table]) -> Header
function M.new(t)
  local h = setmetatable({}, Header)
  if t then
    for k, v in pairs(t) do
      if type(k) == "string" then h[k] = v end
    end
  end
  return h
end

-- The first value of a received header (a string, or a list when repeated).
function M.first(v)
  if type(v) == "table" then return v[1] end
  return v
end

-- wrap(t) -> t as a Header, in place: for tables whose names are already lower case
-- (received headers, from C).
function M.wrap(t) return setmetatable(t, Header) end

-- A request's r.Header starts empty, its headers still in C (the request userdata), and
-- fills itself the first time it is used: indexed, assigned to or iterated with pairs.
-- Most WebSocket handlers never read it (Upgrade asks C while it is untouched, see
-- source), and building it was a tenth of a handshake's Lua work. Only raw access
-- (rawget, next) before that first use tells the difference.
local Lazy = { __name = "luaws.Header" }
local sources = setmetatable({}, { __mode = "k" }) -- untouched lazy Header -> request

local function fill(h)
  local req = sources[h]
  sources[h] = nil
  setmetatable(h, Header)
  if req then req:_headers(h) end
end

Lazy.__index = function(h, k)
  fill(h)
  return h[k]
end
Lazy.__newindex = function(h, k, v)
  fill(h)
  h[k] = v
end
Lazy.__pairs = function(h)
  fill(h)
  return next, h, nil
end

-- lazy(req) -> an empty Header that takes request req's headers on first use
function M.lazy(req)
  local h = setmetatable({}, Lazy)
  sources[h] = req
  return h
end

-- source(h) -> the request whose headers h stands for while nobody has touched it (its
-- C answers are then exactly what h would give), or nil
function M.source(h) return sources[h] end
M.sources = sources -- the same, for the per-request path

function M.is(h)
  local mt = getmetatable(h)
  return mt == Header or mt == Lazy
end

-- Flatten a Header or plain table into {name, value, name, value, ...} for C.
function M.flatten(h, into)
  into = into or {}
  if h == nil then return into end
  if type(h) ~= "table" then error("luaws: header table expected, got " .. type(h), 3) end
  for k, v in pairs(h) do
    if type(k) == "string" then
      if type(v) == "table" then
        for _, x in ipairs(v) do into[#into + 1] = k; into[#into + 1] = tostring(x) end
      else
        into[#into + 1] = k
        into[#into + 1] = tostring(v)
      end
    end
  end
  return into
end

-- The value of header name in h, whatever the case of either. For a Header (names
-- stored lower case) a name already in lower case, as the per-request paths pass it,
-- costs one raw lookup.
local function lookup(h, name)
  local v = rawget(h, name)
  if v ~= nil then return v end
  local mt = getmetatable(h)
  if mt == Lazy then
    fill(h)
    v = rawget(h, name)
    if v ~= nil then return v end
    mt = Header
  end
  if mt == Header then return rawget(h, lower(name)) end
  v = h[name] -- a plain table
  if v ~= nil then return v end
  local lname = lower(name)
  for k, x in pairs(h) do
    if type(k) == "string" and lower(k) == lname then return x end
  end
  return nil
end

-- The tokens of a comma-separated header, trimmed (for Connection, Upgrade, ...).
function M.tokens(h, name)
  local out = {}
  local v = lookup(h, name)
  if v == nil then return out end
  if type(v) ~= "table" then v = { v } end
  for _, one in ipairs(v) do
    for tok in one:gmatch("[^,]+") do
      tok = tok:match("^%s*(.-)%s*$")
      if tok ~= "" then out[#out + 1] = tok end
    end
  end
  return out
end

-- joined(h, name): every value of header name as one comma-separated list, or nil.
function M.joined(h, name)
  local v = lookup(h, name)
  if type(v) == "table" then return table.concat(v, ", ") end
  return v
end

-- get(h, name): h:Get(name) for any table of headers, cheapest with a lower-case name.
function M.get(h, name)
  local v = lookup(h, name)
  if type(v) == "table" then return v[1] end
  return v
end

-- has_token(h, name, token): does the comma-separated header name hold token (given in
-- lower case; the header's case does not matter)?
function M.has_token(h, name, token)
  local v = rawget(h, name) -- lookup's first step, without the call
  if v == nil then v = lookup(h, name) end
  -- the common cases, one value that is just the token, without building a list
  if v == token then return true end
  if type(v) == "string" and #v == #token and lower(v) == token then return true end
  for _, t in ipairs(M.tokens(h, name)) do
    if lower(t) == token then return true end
  end
  return false
end

return M
