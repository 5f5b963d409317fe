-- Loaded before every spec: puts the in-tree build on the paths (LUAWS_BUILD selects a
-- sanitizer build) and gives each spec file a global time limit so nothing can hang CI.
local build = os.getenv("LUAWS_BUILD") or "build"
package.cpath = build .. "/?.so;" .. package.cpath
package.path = "lua/?.lua;lua/?/init.lua;spec/?.lua;" .. package.path

local limit = tonumber(os.getenv("LUAWS_SPEC_TIMEOUT") or "240")
-- A watchdog process kills this busted run if it outlives the limit.
local pid = io.open("/proc/self/stat"):read("*l"):match("^(%d+)")
os.execute(string.format("(sleep %d; kill -9 %s 2>/dev/null) >/dev/null 2>&1 &", limit * 4, pid))
