-- A small port of Go's log package, for the examples: Print, Printf, Println, Fatal,
-- Fatalf, SetFlags. Lines go to stderr with Go's default "2006/01/02 15:04:05 " prefix
-- unless SetFlags(0).
local M = {}

local flags = 3 -- Ldate | Ltime
M.Ldate, M.Ltime, M.LstdFlags = 1, 2, 3

function M.SetFlags(f) flags = f end

local function output(s)
  local prefix = ""
  if flags & 1 ~= 0 then prefix = os.date("%Y/%m/%d ") end
  if flags & 2 ~= 0 then prefix = prefix .. os.date("%H:%M:%S ") end
  if s:sub(-1) ~= "\n" then s = s .. "\n" end
  io.stderr:write(prefix .. s) -- one write: stderr is unbuffered
end

-- Go's Print: operands are joined with a space only where neither side is a string.
function M.Sprint(...)
  local n, out = select("#", ...), {}
  for i = 1, n do
    local v = select(i, ...)
    if i > 1 and type(v) ~= "string" and type(select(i - 1, ...)) ~= "string" then
      out[#out + 1] = " "
    end
    out[#out + 1] = tostring(v)
  end
  return table.concat(out)
end

function M.Sprintln(...)
  local n, out = select("#", ...), {}
  for i = 1, n do out[i] = tostring((select(i, ...))) end
  return table.concat(out, " ")
end

local function sprintf(fmt, ...)
  local args = table.pack(...)
  for i = 1, args.n do
    if type(args[i]) == "table" or type(args[i]) == "userdata" or type(args[i]) == "nil"
      or type(args[i]) == "boolean" then
      args[i] = tostring(args[i])
    end
  end
  return string.format(fmt, table.unpack(args, 1, args.n))
end

function M.Print(...) output(M.Sprint(...)) end
function M.Println(...) output(M.Sprintln(...)) end
function M.Printf(fmt, ...) output(sprintf(fmt, ...)) end
function M.Fatal(...) output(M.Sprint(...)); os.exit(1) end
function M.Fatalf(fmt, ...) output(sprintf(fmt, ...)); os.exit(1) end

return M
