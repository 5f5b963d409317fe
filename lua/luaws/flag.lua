-- A small port of Go's flag package, for the examples: String, Bool, Int, Parse.
-- Each definition returns a box whose .value holds the flag after Parse (Go's *addr).
-- Accepted forms: -name value, -name=value, --name value, --name=value, -boolflag.
local M = {}

local defs, order = {}, {}

local function define(kind, name, default, usage)
  local box = { value = default, name = name, usage = usage, kind = kind, default = default }
  defs[name] = box
  order[#order + 1] = box
  return box
end

function M.String(name, default, usage) return define("string", name, default, usage) end
function M.Bool(name, default, usage) return define("bool", name, default or false, usage) end
function M.Int(name, default, usage) return define("int", name, default, usage) end

function M.Usage()
  io.stderr:write("Usage of ", arg and arg[0] or "program", ":\n")
  for _, b in ipairs(order) do
    io.stderr:write("  -", b.name, b.kind ~= "bool" and (" " .. b.kind) or "", "\n    \t",
      b.usage or "", b.kind ~= "bool" and (" (default " .. string.format("%q", tostring(b.default)) .. ")") or "", "\n")
  end
end

local function fail(msg)
  io.stderr:write(msg, "\n")
  M.Usage()
  os.exit(2)
end

-- Parse([args]) parses arg (or the given list); the rest is in flag.Args().
local rest = {}
function M.Parse(args)
  args = args or arg or {}
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "--" then i = i + 1 break end
    local name, value = a:match("^%-%-?([^=]+)=(.*)$")
    if not name then name = a:match("^%-%-?(.+)$") end
    if not name then break end
    if name == "h" or name == "help" then M.Usage() os.exit(0) end
    local b = defs[name]
    if not b then fail("flag provided but not defined: -" .. name) end
    if b.kind == "bool" then
      if value == nil then b.value = true
      elseif value == "true" or value == "1" then b.value = true
      elseif value == "false" or value == "0" then b.value = false
      else fail("invalid boolean value " .. value .. " for -" .. name) end
    else
      if value == nil then
        i = i + 1
        value = args[i]
        if value == nil then fail("flag needs an argument: -" .. name) end
      end
      if b.kind == "int" then
        value = math.tointeger(tonumber(value))
        if not value then fail("invalid value for flag -" .. name) end
      end
      b.value = value
    end
    i = i + 1
  end
  rest = table.move(args, i, #args, 1, {})
end

function M.Args() return rest end

return M
