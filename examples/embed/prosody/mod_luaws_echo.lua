-- A Prosody 0.12 plugin that runs luaws inside Prosody's own loop: net.server's watchfd
-- watches BackendFd(), a util.timer task is re-armed from BackendTimeout() after every
-- step, and both step luaws. It runs examples/embed/echo_pair.lua (an echo server and a
-- client goroutine), prints the result line and shuts Prosody down when the pair is done.
-- LUAWS_ROOT (the repository) and LUAWS_BUILD (default build) locate luaws.
-- Config: plugin_paths = { "<repo>/examples/embed/prosody" }, modules_enabled = { "luaws_echo" }
local server = require "net.server"
local timer = require "util.timer"

local root = assert(os.getenv("LUAWS_ROOT"), "LUAWS_ROOT: the luaws repository")
package.path = root .. "/examples/embed/?.lua;" .. root .. "/lua/?.lua;" .. root ..
  "/lua/?/init.lua;" .. package.path
package.cpath = root .. "/" .. (os.getenv("LUAWS_BUILD") or "build") .. "/?.so;" .. package.cpath
local websocket = require "luaws"

module:set_global()

local count = tonumber(os.getenv("LUAWS_ECHO_COUNT")) or 5
local gap = tonumber(os.getenv("LUAWS_ECHO_GAP")) or 0.05
local pair = require("echo_pair").start(count, gap)
local watcher, task
local wakeups, t0 = 0, websocket.Now()

local step
local function on_timer()
  task = nil
  step()
  -- nothing returned: a one-shot task (step armed the next one)
end

function step()
  wakeups = wakeups + 1
  websocket.Step(0)
  if task then timer.stop(task); task = nil end
  if pair.done then
    watcher:close()
    print(("echoed %d, wakeups %d, elapsed %.3f"):format(pair.echoed, wakeups, websocket.Now() - t0))
    if pair.err then module:log("error", "client: %s", pair.err) end
    -- Prosody's shutdown waits on its services: it must run in its main async thread
    prosody.main_thread:run(function()
      prosody.shutdown(pair.err and "luaws echo failed" or "luaws echo done", pair.err and 1 or 0)
    end)
    return
  end
  local t = websocket.BackendTimeout()
  if t >= 0 then task = timer.add_task(t, on_timer) end
end

watcher = server.watchfd(websocket.BackendFd(), step)
-- the first turn, once Prosody's loop runs: what echo_pair.start set up starts
task = timer.add_task(0, on_timer)
