-- ListenAndServe's Workers mode: before listening, fork N-1 more processes, each then
-- with its own event loop, all accepting on one port through SO_REUSEPORT (the kernel
-- spreads connections over them). When the parent is shut down by a signal it passes
-- SIGTERM on to its workers and reaps them; a worker shut down by a signal exits.
local core = require "luaws.core"
local errors = require "luaws.errors"
local runtime = require "luaws.runtime"

local M = {}

local worker = false -- this process is a worker forked by fork()

-- fork(n, addr, port, opts) -> the options every process listens with (ReusePort set),
-- nil, and in the parent the list of the workers' pids | nil, err. Returns in the
-- parent and in each of the n-1 children; n > 1.
function M.fork(n, addr, port, opts)
  if port == 0 then return nil, errors.new("listen tcp " .. addr .. ": Workers need a fixed port") end
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  o.ReusePort = true
  local children = {}
  for _ = 2, n do
    local pid, why = core.fork()
    if not pid then return nil, errors.new("fork: " .. tostring(why)) end
    if pid == 0 then
      worker = true
      return o
    end
    children[#children + 1] = pid
  end
  return o, nil, children
end

function M.is_worker() return worker end
M.pid = core.getpid

-- Wait up to timeout seconds for the workers to exit (SIGKILL after that).
function M.reap(children, timeout)
  if not children then return end
  local deadline = core.monotime() + timeout
  local left = #children
  while left > 0 do
    left = 0
    for _, pid in ipairs(children) do
      if core.reap(pid) == false then
        left = left + 1
        if core.monotime() >= deadline then core.kill(pid, "SIGKILL") end
      end
    end
    if left > 0 then runtime.Sleep(0.02) end
  end
end

return M
