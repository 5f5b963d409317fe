-- HTTP headers as Go's http.Header: a table name -> value (a list for repeated
-- headers) whose lookups ignore case: h:Get("origin"), h.Origin, h["sec-websocket-key"].
local M = {}

local methods = {}
local Header = { __name = "luaws.Header" }

Header.__index = function(h, k)
  local m = methods[k]
  if m then return m end
  if type(k) ~= "string" then return nil end
  return rawget(h, k:lower())
end

Header.__newindex = function(h, k, v)
  if type(k) ~= "string" then error("luaws: header names are strings", 2) end
  rawset(h, k:lower(), v)
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

function M.is(h) return getmetatable(h) == Header end

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

-- The tokens of a comma-separated header, trimmed (for Connection, Upgrade, ...).
function M.tokens(h, name)
  local out = {}
  for _, v in ipairs(methods.Values(h, name)) do
    for tok in v:gmatch("[^,]+") do
      tok = tok:match("^%s*(.-)%s*$")
      if tok ~= "" then out[#out + 1] = tok end
    end
  end
  return out
end

function M.has_token(h, name, token)
  token = token:lower()
  local v = h[name]
  -- the common case, one value that is just the token, without building a list
  if type(v) == "string" and #v == #token and v:lower() == token then return true end
  for _, t in ipairs(M.tokens(h, name)) do
    if t:lower() == token then return true end
  end
  return false
end

return M
