-- ListenAndServe's Workers mode: before listening, fork N-1 more processes, each then
-- with its own event loop, all accepting on one port through SO_REUSEPORT (the kernel
-- spreads connections over them). Children are not supervised: each worker serves
-- until it exits on its own.
local core = require "luaws.core"
local errors = require "luaws.errors"

local M = {}

-- fork(n, addr, port, opts) -> the options every process listens with (ReusePort set)
-- | nil, err. Returns in the parent and in each of the n-1 children; n > 1.
function M.fork(n, addr, port, opts)
  if port == 0 then return nil, errors.new("listen tcp " .. addr .. ": Workers need a fixed port") end
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  o.ReusePort = true
  for _ = 2, n do
    local pid, why = core.fork()
    if not pid then return nil, errors.new("fork: " .. tostring(why)) end
    if pid == 0 then break end
  end
  return o
end

return M
