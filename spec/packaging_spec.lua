-- The rockspec builds what the Makefile builds: every C file in src/ and every Lua
-- module in lua/luaws/ is listed (a file added to one and not the other breaks
-- `luarocks make` only for users).
local function list(cmd)
  local out, p = {}, io.popen(cmd)
  for line in p:lines() do out[#out + 1] = line end
  p:close()
  return out
end

describe("luaws-scm-1.rockspec", function()
  local f = assert(io.open("luaws-scm-1.rockspec"))
  local rockspec = f:read("a")
  f:close()

  it("lists every C source file", function()
    local missing = {}
    for _, c in ipairs(list("ls src/*.c")) do
      if not rockspec:find('"' .. c .. '"', 1, true) then missing[#missing + 1] = c end
    end
    assert.are.same({}, missing)
  end)

  it("lists every Lua module", function()
    local missing = {}
    for _, m in ipairs(list("ls lua/luaws/*.lua")) do
      if not rockspec:find('"' .. m .. '"', 1, true) then missing[#missing + 1] = m end
    end
    assert.are.same({}, missing)
  end)
end)
