-- Regressions for the defects of issue 9 that a code review found (numbers as in the
-- issue). Scenarios that corrupt memory run in a child lua5.4 on the build under test:
-- under `make test SANITIZE=1` it keeps the sanitizer runtime, so ASan or UBSan ends it
-- with a report, and the plain build crashes too.
local support = require "support"
local websocket = require "luaws"
local core = require "luaws.core"

lazy_setup(function() support.keepalive(true) end)
lazy_teardown(function() support.keepalive(false) end)

local build = os.getenv("LUAWS_BUILD") or "build"

-- Run Lua source in a child lua5.4 that loads luaws from this build; the child's shell
-- runs `prefix` first (e.g. a ulimit). -> exit status, output (stdout and stderr).
local function run_lua(src, timeout, prefix)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(([[
package.path = "lua/?.lua;lua/?/init.lua;spec/?.lua;" .. package.path
package.cpath = %q .. package.cpath
]]):format(build .. "/?.so;"), src)
  f:close()
  local cmd = "lua5.4 " .. support.shell_quote(path)
  if prefix then cmd = "bash -c " .. support.shell_quote(prefix .. "; exec " .. cmd) end
  local ok, status, out = pcall(support.run_child, cmd, timeout or 20)
  os.remove(path)
  if not ok then error(status, 0) end
  return status, out
end

describe("issue 9: the wake-up array has room for objects woken outside a step", function()
  it("64 conns woken by a passed read deadline, then 64 armed timers firing in one step", function()
    local status, out = run_lua([[
local core = require "luaws.core"
local conns, timers = {}, {}
-- dialing conns wait (armed) on a lookup that has not run yet: nothing steps before the
-- timers fire
for i = 1, 64 do
  conns[i] = core.dial("127.0.0.1", 9, "/", "127.0.0.1:9", nil, nil, {}, 0)
  conns[i]:_arm()
end
-- a passed deadline wakes each one now, outside a step
for i = 1, 64 do conns[i]:_deadline("read", -1) end
for i = 1, 64 do
  timers[i] = core.timer()
  timers[i]:_arm()
  timers[i]:_start(0)
end
local ready = {}
print("woken", core.step(0, ready))
conns, timers, ready = nil, nil, nil
collectgarbage()
print("done")
]])
    assert.are.equal(0, status, out)
    assert.matches("woken\t128\n", out, 1, true)
    assert.matches("done", out, 1, true)
    assert.is_nil(out:find("AddressSanitizer", 1, true), out)
  end)
end)
