-- Options tables: the fields of Upgrader{...} and Dialer{...}, and the options of Listen
-- and ListenAndServe. Every field must be one luaws knows, of the right type; a gorilla
-- field luaws lacks raises "not implemented yet", so a ported program never silently
-- loses its proxy or TLS settings to a typo or a missing feature.
--
-- Upgraders and Dialers keep their fields in a table behind the object, so that an
-- assignment after construction (d.Proxy = f) is checked when it happens and Upgrade and
-- Dial need no check at all: reading a field is two table lookups, no function call.
local getmetatable = debug and debug.getmetatable or getmetatable -- no __metatable lookup

local M = {}

local function is_number(v) return type(v) == "number" and v == v end -- not NaN

local function is_strings(v)
  if type(v) ~= "table" then return false end
  for i = 1, #v do
    if type(v[i]) ~= "string" then return false end
  end
  return true
end

-- What each kind of field takes, as the error describes it, and the test.
local kinds = {
  seconds = { "a number of seconds", is_number },
  bytes = { "a non-negative number of bytes", function(v) return is_number(v) and v >= 0 end },
  count = { "a whole number of at least 1",
    function(v) return is_number(v) and v >= 1 and v < math.huge and v == math.floor(v) end },
  strings = { "a list of strings", is_strings },
  boolean = { "a boolean", function(v) return type(v) == "boolean" end },
  ["function"] = { "a function", function(v) return type(v) == "function" end },
  string = { "a string", function(v) return type(v) == "string" end },
  table = { "a table", function(v) return type(v) == "table" end },
  certificates = { "a list of {CertFile = ..., KeyFile = ...} tables", function(v)
    if type(v) ~= "table" then return false end
    for i = 1, #v do
      local c = v[i]
      if type(c) ~= "table" or type(c.CertFile) ~= "string" or type(c.KeyFile) ~= "string" then
        return false
      end
    end
    return true
  end },
  tls_version = { "websocket.VersionTLS12 or websocket.VersionTLS13",
    function(v) return v == 0x0303 or v == 0x0304 end },
  client_auth = { "a ClientAuthType (websocket.NoClientCert ... RequireAndVerifyClientCert)",
    function(v) return math.type(v) == "integer" and v >= 0 and v <= 4 end },
  -- CompressionOptions (permessage-deflate, docs/API.md): a table of the fields below
  compression = { "a table", function(v) return type(v) == "table" end },
  -- gorilla has it and luaws does not yet; false (off, gorilla's zero value) is accepted
  unimplemented = { nil, function(v) return v == false end },
}

local function window_bits(v) return math.type(v) == "integer" and v >= 8 and v <= 15 end
local compression_fields = {
  ServerNoContextTakeover = { "a boolean", function(v) return type(v) == "boolean" end },
  ClientNoContextTakeover = { "a boolean", function(v) return type(v) == "boolean" end },
  ServerMaxWindowBits = { "an integer from 8 to 15", window_bits },
  ClientMaxWindowBits = { "an integer from 8 to 15", window_bits },
  Level = { "an integer from -2 to 9",
    function(v) return math.type(v) == "integer" and v >= -2 and v <= 9 end },
  MemLevel = { "an integer from 1 to 9",
    function(v) return math.type(v) == "integer" and v >= 1 and v <= 9 end },
}

-- The reason a CompressionOptions table is refused (what: "Upgrader", "Dialer"), or nil.
local function compression_problem(what, opts)
  for k, v in pairs(opts) do
    local f = compression_fields[k]
    if not f then
      return what .. ": unknown field " .. (type(k) == "string" and "'" .. k .. "'" or tostring(k)) ..
        " in CompressionOptions"
    end
    if not f[2](v) then
      return ("%s: CompressionOptions.%s must be %s (got %s)"):format(what, k, f[1],
        math.type(v) or type(v))
    end
  end
  return nil
end

local function field_name(k)
  return type(k) == "string" and "'" .. k .. "'" or tostring(k)
end

-- The reason `what.k = v` is refused (what: "Dialer", "Listen", ...), or nil.
local function problem(what, spec, k, v)
  local kind = spec[k]
  if kind == nil then
    local hint = ""
    for name in pairs(spec) do
      if type(k) == "string" and name:lower() == k:lower() then
        hint = " (did you mean " .. name .. "?)"
      end
    end
    return what .. ": unknown field " .. field_name(k) .. hint
  end
  local want, ok = kinds[kind][1], kinds[kind][2]
  if ok(v) then
    if kind == "compression" then return compression_problem(what, v) end
    return nil
  end
  if not want then return what .. ": " .. k .. " is not implemented yet" end
  local got = v ~= v and "NaN" or type(v)
  return ("%s: %s must be %s (got %s)"):format(what, k, want, got)
end

-- check(what, spec, opts, level): raise (at `level`, as for error) on the first bad field.
function M.check(what, spec, opts, level)
  for k, v in pairs(opts) do
    local why = problem(what, spec, k, v)
    if why then error(why, level + 1) end
  end
end

-- An assignment to an Upgrader's or Dialer's field; nil clears it.
local function assign(obj, k, v)
  local mt = getmetatable(obj)
  local why = v ~= nil and problem(mt.what, mt.spec, k, v)
  if why then error(why, 2) end
  mt.__index[k] = v
  mt.values[k] = v
end

local function fields_of(obj) return next, getmetatable(obj).__index, nil end

-- new(class, spec, opts): an object with the fields of opts (already checked), whose
-- later assignments are checked; its methods are class's.
function M.new(class, spec, opts)
  local fields, values = setmetatable({}, class), {}
  for k, v in pairs(opts or {}) do
    fields[k] = v
    values[k] = v
  end
  return setmetatable({}, {
    __index = fields, __newindex = assign, __pairs = fields_of, __name = class.__name,
    class = class, what = class.__name:match("[^.]+$"), spec = spec, values = values,
  })
end

-- values(obj) -> a plain table (no metatable) that always holds obj's fields, for
-- per-request code: reading an unset field through obj misses in three tables (obj, its
-- fields, its class).
function M.values(obj) return getmetatable(obj).values end

-- is(obj, class): obj was made by new(class, ...)
function M.is(obj, class)
  local mt = getmetatable(obj)
  return type(mt) == "table" and rawget(mt, "class") == class
end

return M
