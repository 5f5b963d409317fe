-- Loaded before every spec: puts the in-tree build on the paths (LUAWS_BUILD selects a
-- sanitizer build) and gives each spec file a global time limit so nothing can hang CI.
local build = os.getenv("LUAWS_BUILD") or "build"
package.cpath = build .. "/?.so;" .. package.cpath
package.path = "lua/?.lua;lua/?/init.lua;spec/?.lua;" .. package.path

local limit = tonumber(os.getenv("LUAWS_SPEC_TIMEOUT") or "240")
-- A watchdog process kills this busted run if it outlives the limit.
local pid = io.open("/proc/self/stat"):read("*l"):match("^(%d+)")
os.execute(string.format("(sleep %d; kill -9 %s 2>/dev/null) >/dev/null 2>&1 &", limit * 4, pid))

-- Under `make test SANITIZE=1` the sanitizer runtime is preloaded into this process;
-- child processes (shell, curl, python, go peers) must not inherit it, or its leak
-- report on their own exit turns their status into a failure.
local preload = os.getenv("LD_PRELOAD")
if preload and preload:find("asan", 1, true) then
  local clean = "env -u LD_PRELOAD -u ASAN_OPTIONS -u LSAN_OPTIONS -u UBSAN_OPTIONS "
  -- a Lua child runs the sanitized luaws too: it keeps the runtime, without the leak
  -- check at exit (the shell in front of it would report its own)
  local lua_child = "env ASAN_OPTIONS=detect_leaks=0 "
  local function wrap(cmd)
    local prefix = cmd:find("lua5.4", 1, true) and lua_child or clean
    return prefix .. "sh -c " .. ("'" .. cmd:gsub("'", "'\\''") .. "'")
  end
  local execute, popen = os.execute, io.popen
  os.execute = function(cmd, ...)
    if cmd == nil then return execute() end
    return execute(wrap(cmd), ...)
  end
  io.popen = function(cmd, ...) return popen(wrap(cmd), ...) end
end

-- busted 2.1 keeps only the last function given to finally() in a test; specs here call
-- it once per thing they start (a server, a child, a connection), so every one of them
-- must run: collect them and run them all, last first, when the test ends.
do
  local busted = require "busted"
  busted.subscribe({ "test", "start" }, function(element)
    local env = element.env
    if env and env.finally then
      local set, list = env.finally, {}
      env.finally = function(fn)
        list[#list + 1] = fn
        set(function()
          local first_err
          for i = #list, 1, -1 do
            local ok, err = pcall(list[i])
            if not ok and first_err == nil then first_err = err end
          end
          if first_err ~= nil then error(first_err, 0) end
        end)
      end
    end
    return nil, true
  end)
end
