-- The scheduler: coroutines that park on C objects (connections, timers, signals) or
-- on channels, and the loop that resumes them. Called from the main chunk (or any
-- coroutine luaws did not start), a blocking call drives the loop itself instead.
local core = require "luaws.core"

local create, yield = coroutine.create, coroutine.yield


local sched = {}

-- Ready queue: triples (coroutine, value1, value2) in a ring of plain slots.
local queue, head, tail = {}, 1, 0
local woken = {}               -- core.step: waiter lists of objects that had several
local waiters = {}             -- kept by src/sched.c: C object -> its waiting coroutine(s)
local on_exit = setmetatable({}, { __mode = "k" })  -- coroutine -> exit hook (sched.start)
local PARKED = core.PARKED     -- what a coroutine parked by the scheduler yields

local in_step = false           -- inside core.step: libuv runs callbacks

function sched.ready(co, a, b)
  tail = tail + 3
  queue[tail - 2], queue[tail - 1], queue[tail] = co, a, b
  -- readied from a callback that is not luaws's own (a luv handle's): the loop must not
  -- sleep in this step before co runs
  if in_step then core.nosleep() end
end

local function report(co, err)
  local msg = debug.traceback(co, tostring(err))
  io.stderr:write("luaws: error in coroutine: ", msg, "\n")
end

-- A coroutine the scheduler resumed ended (ok true, value: its first result) or failed
-- (ok false, value: the error): report an error with a traceback and run its exit hook
-- (which closes a handler's connection); nothing is raised into the loop.
local function finish(co, ok, value)
  if not ok then report(co, value) end
  local hook = on_exit[co]
  if hook then
    on_exit[co] = nil
    local hok, herr = pcall(hook.__exit, hook, ok, value)
    if not hok then io.stderr:write("luaws: error in exit hook: ", tostring(herr), "\n") end
  end
end
core.sched_bind(waiters, finish)

-- run(co, ...): resume co as the coroutine the scheduler runs (src/sched.c); a coroutine
-- that parks stays suspended, one that ends goes to finish.
local run = core.run
sched.run = run

local function run_ready()
  while head <= tail do
    local co, a, b = queue[head], queue[head + 1], queue[head + 2]
    queue[head], queue[head + 1], queue[head + 2] = nil, nil, nil
    head = head + 3
    run(co, a, b)
  end
  head, tail = 1, 0
end

-- Start fn(...) in a new coroutine on the next turn of the loop (Go's `go`).
function sched.go(fn, ...)
  if type(fn) ~= "function" then error("bad argument #1 to 'Go' (function expected)", 2) end
  local co
  if select("#", ...) == 0 then
    co = create(fn)
  else
    local args = table.pack(...)
    co = create(function() return fn(table.unpack(args, 1, args.n)) end)
  end
  sched.ready(co)
  return co
end

-- Start fn(...) now, in a new coroutine, until it first blocks (server handlers: lws
-- needs the upgrade decided before its callback returns). When the coroutine ends,
-- hook.__exit(hook, ok, err) runs: hook is an object that reaches an __exit method by
-- indexing (a ResponseWriter: no closure is made per request).
function sched.start(fn, hook, ...)
  local co = create(fn)
  if hook then on_exit[co] = hook end
  run(co, ...)
  return co
end

-- sched.start in two steps: the coroutine (with its exit hook), then sched.run(co, ...)
-- when the caller has recorded it.
function sched.spawn(fn, hook)
  local co = create(fn)
  if hook then on_exit[co] = hook end
  return co
end

function sched.set_exit_hook(co, hook) on_exit[co] = hook end -- hook as for sched.start

-- One turn of the loop: run what is ready, poll (waiting at most timeout seconds; nil:
-- as long as needed), hand woken objects to their waiters, run those. A main-chunk
-- caller passes its condition as done: once the ready coroutines met it, no polling.
-- While coroutines run, small frames they write are batched, and sent when the step
-- ends (or before the loop polls): one send per connection for all it wrote.
function sched.step(timeout, done)
  if timeout ~= nil and (type(timeout) ~= "number" or timeout ~= timeout) then
    error("bad argument #1 to 'Step' (number of seconds or nil expected, got " ..
      (timeout ~= timeout and "NaN" or type(timeout)) .. ")", 2)
  end
  core.batch(true)
  run_ready()
  if done and done() then core.batch(false) return end
  in_step = true -- left set if core.step raises: nosleep outside a step does nothing
  local n = core.step(timeout, woken)
  in_step = false
  if n < 0 then
    core.batch(false)
    -- Go's runtime says the same (and exits): nothing can ever wake this wait
    error("all goroutines are asleep - deadlock!", 0)
  end
  for i = 1, n do -- the waiters of objects that had several (C resumed the others')
    local list = woken[i]
    woken[i] = nil
    for j = 1, #list do sched.ready(list[j]) end
  end
  run_ready()
  core.batch(false)
end

-- Is the caller a coroutine this scheduler runs (so it may yield)?
local c_current = core.current
local function parkable()
  local co, busy = c_current()
  if co then return co end
  if busy then
    error("luaws: blocking call from a coroutine not started by luaws (use websocket.Go)", 3)
  end
  return nil
end

-- Set once a host drives the loop (websocket.Step, BackendFd): from then on a blocking
-- call outside a goroutine must not run the loop itself (it would block the host, or
-- re-enter it from one of the host's own callbacks).
sched.hosted = false

local function refuse_outside_goroutine()
  if sched.hosted then
    error("luaws: blocking call outside a goroutine while a host runs the loop " ..
      "(start it with websocket.Go)", 4)
  end
end

-- Wait until obj (a C waitable) reports something. The caller re-checks its condition.
-- co: the caller's sched.current(), when it already has it; armed: obj is armed already
-- (a C primitive that found nothing did it).
function sched.wait(obj, co, armed)
  if co == nil then co = parkable() end
  if not armed then obj:_arm() end
  if co then return sched.park_on(obj, co) end
  refuse_outside_goroutine()
  sched.step(nil)
end

-- sched.wait for co, the running coroutine the scheduler resumes (sched.current()), on
-- obj already armed: src/sched.c records co as obj's waiter and yields.
local c_park = core.park
function sched.park_on(obj, co) -- luacheck: no unused args (co: the caller, who parks)
  return c_park(obj)
end

-- Park the calling coroutine until someone calls sched.ready(co, ...) (channels).
-- From the main chunk, drive the loop until done() is true.
function sched.park(done)
  local co = parkable()
  if co then return yield(PARKED) end
  if done() then return end
  refuse_outside_goroutine()
  while not done() do sched.step(nil, done) end
end

function sched.current() return parkable() end

-- Are coroutines ready to run (the next step must not wait)?
function sched.runnable() return head <= tail end

-- Nobody will wait on obj again (a stopped ticker): drop its waiters.
function sched.forget(obj)
  core.forget(obj)
  obj:_disarm()
end

return sched
