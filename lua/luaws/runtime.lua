-- The Go-like runtime: Go (goroutines), channels, Select, Sleep, After, NewTicker, Now,
-- Notify (signals). Channels follow Go: unbuffered ones hand values over directly,
-- receiving from a closed channel gives nil, false, sending on one raises.
local getmetatable = debug and debug.getmetatable or getmetatable -- no __metatable lookup
local core = require "luaws.core"
local sched = require "luaws.sched"

local M = {}

M.Go = sched.go
M.Now = core.now

-- A blocked operation: who waits (nil for the main chunk, which polls `fired`) and,
-- once it fires, which case won and with what.
local function new_token(co)
  return { co = co, fired = false }
end

local function fire(token, case, value, ok)
  token.fired, token.case, token.value, token.ok = true, case, value, ok
  if token.co then sched.ready(token.co) end
end

-- Queues of waiting records {token, case, value}; records of fired tokens are skipped.
local function pop_live(q)
  while q.first <= q.last do
    local rec = q[q.first]
    q[q.first] = nil
    q.first = q.first + 1
    if rec and not rec.token.fired then return rec end
  end
  q.first, q.last = 1, 0
  return nil
end

local function push(q, rec)
  q.last = q.last + 1
  q[q.last] = rec
end

-- Take a Select's records out of the queues it did not win.
local function remove(q, token)
  for i = q.first, q.last do
    local rec = q[i]
    if rec and rec.token == token then q[i] = nil end
  end
  while q.first <= q.last and q[q.first] == nil do q.first = q.first + 1 end
  if q.first > q.last then q.first, q.last = 1, 0 end
end

local Chan = {}
Chan.__index = Chan
Chan.__name = "luaws.Chan"

-- Chan([capacity]) -> channel (Go's make(chan T, n)).
function M.Chan(capacity)
  capacity = capacity or 0
  if type(capacity) ~= "number" or capacity < 0 or capacity % 1 ~= 0 then
    error("bad argument #1 to 'Chan' (non-negative integer expected)", 2)
  end
  return setmetatable({
    cap = capacity, buf = { first = 1, last = 0 },
    recvq = { first = 1, last = 0 }, sendq = { first = 1, last = 0 }, closed = false,
  }, Chan)
end

local function check_chan(ch, level)
  if getmetatable(ch) ~= Chan then error("luaws: channel expected", level + 1) end
  return ch
end

function Chan:__tostring()
  return string.format("luaws.Chan: %s (%d/%d%s)", tostring(self.buf):match("0x%x+") or "",
    self.buf.last - self.buf.first + 1, self.cap, self.closed and ", closed" or "")
end

function Chan:Len() return self.buf.last - self.buf.first + 1 end
function Chan:Cap() return self.cap end

-- Try to receive without blocking: true, value, ok when something (or the close) was
-- there.
local function try_recv(ch)
  local buf = ch.buf
  if buf.first <= buf.last then
    local v = buf[buf.first]
    buf[buf.first] = nil
    buf.first = buf.first + 1
    local s = pop_live(ch.sendq)
    if s then
      push(buf, s.value)
      fire(s.token, s.case)
    end
    return true, v, true
  end
  local s = pop_live(ch.sendq)
  if s then
    fire(s.token, s.case)
    return true, s.value, true
  end
  if ch.closed then return true, nil, false end
  return false
end

local function try_send(ch, v)
  if ch.closed then error("luaws: send on closed channel", 3) end
  local r = pop_live(ch.recvq)
  if r then
    fire(r.token, r.case, v, true)
    return true
  end
  if ch.buf.last - ch.buf.first + 1 < ch.cap then
    push(ch.buf, v)
    return true
  end
  return false
end

local function block(token)
  sched.park(function() return token.fired end)
  return token
end

-- ch:Recv() -> value, ok (ok false: the channel is closed and drained)
function Chan:Recv()
  check_chan(self, 2)
  local got, v, ok = try_recv(self)
  if got then return v, ok end
  local token = new_token(sched.current())
  push(self.recvq, { token = token, case = self })
  block(token)
  return token.value, token.ok
end

-- ch:Send(v): blocks until a receiver takes v (or there is room in the buffer).
function Chan:Send(v)
  check_chan(self, 2)
  if try_send(self, v) then return end
  local token = new_token(sched.current())
  push(self.sendq, { token = token, case = self, value = v })
  block(token)
  if token.closed then error("luaws: send on closed channel", 2) end
end

-- ch:TrySend(v) -> true when sent without blocking.
function Chan:TrySend(v)
  check_chan(self, 2)
  return try_send(self, v)
end

-- ch:Close(): receivers get nil, false once the buffer is drained.
function Chan:Close()
  check_chan(self, 2)
  if self.closed then error("luaws: close of closed channel", 2) end
  self.closed = true
  for rec in function() return pop_live(self.recvq) end do
    fire(rec.token, rec.case, nil, false)
  end
  for rec in function() return pop_live(self.sendq) end do
    rec.token.closed = true
    fire(rec.token, rec.case)
  end
end

-- Select cases: a channel (receive), SendCase(ch, v) (send), or Default.
M.Default = setmetatable({}, { __name = "luaws.Default", __tostring = function() return "luaws.Default" end })
local SendCase = { __name = "luaws.SendCase" }
function M.SendCase(ch, v)
  check_chan(ch, 2)
  return setmetatable({ ch = ch, value = v }, SendCase)
end

-- Select(case, ...) -> case, value, ok: waits until one case can proceed (a random one
-- among those ready, as in Go) and returns it; with Default, never waits.
function M.Select(...)
  local n, has_default = select("#", ...), false
  local cases = { ... }
  for i = 1, n do
    local c = cases[i]
    if c == M.Default then
      has_default = true
    elseif getmetatable(c) ~= Chan and getmetatable(c) ~= SendCase then
      error("bad argument #" .. i .. " to 'Select' (channel, SendCase or Default expected)", 2)
    end
  end
  local start = n > 0 and math.random(n) or 1
  for k = 0, n - 1 do
    local c = cases[(start + k - 1) % n + 1]
    if getmetatable(c) == Chan then
      local got, v, ok = try_recv(c)
      if got then return c, v, ok end
    elseif getmetatable(c) == SendCase then
      if try_send(c.ch, c.value) then return c end
    end
  end
  if has_default then return M.Default end
  if n == 0 then error("luaws: Select with no cases blocks forever", 2) end
  local token = new_token(sched.current())
  for i = 1, n do
    local c = cases[i]
    if getmetatable(c) == Chan then
      push(c.recvq, { token = token, case = c })
    else
      push(c.ch.sendq, { token = token, case = c, value = c.value })
    end
  end
  block(token)
  for i = 1, n do
    local c = cases[i]
    if getmetatable(c) == Chan then remove(c.recvq, token) else remove(c.ch.sendq, token) end
  end
  if token.closed then error("luaws: send on closed channel", 2) end
  return token.case, token.value, token.ok
end

-- A number of seconds, or a Lua error in the caller's caller (NaN is no time).
local function check_seconds(seconds, fname)
  if type(seconds) ~= "number" then
    error("bad argument #1 to '" .. fname .. "' (number expected)", 3)
  elseif seconds ~= seconds then
    error("bad argument #1 to '" .. fname .. "' (number of seconds expected, got NaN)", 3)
  end
end

-- Sleep(seconds): seconds <= 0 only yields to the loop; math.huge never returns.
function M.Sleep(seconds)
  check_seconds(seconds, "Sleep")
  local t = core.timer()
  t:_start(seconds)
  while t:_take() == 0 do sched.wait(t) end
end

-- SetBusyPoll(seconds) -> the previous value: how long the loop polls for events
-- before it sleeps, when such polls usually find something (loop.c, spin). 0 turns it
-- off; at most 0.01.
function M.SetBusyPoll(seconds)
  if type(seconds) ~= "number" or not (seconds >= 0 and seconds <= 0.01) then -- NaN too
    error("bad argument #1 to 'SetBusyPoll' (number of seconds from 0 to 0.01 expected, got " ..
      (seconds ~= seconds and "NaN" or type(seconds) == "number" and tostring(seconds) or type(seconds)) .. ")", 2)
  end
  return core.set_busy_poll(seconds)
end

-- After(seconds) -> channel that receives the time once (never for math.huge).
function M.After(seconds)
  check_seconds(seconds, "After")
  local ch = M.Chan(1)
  sched.go(function()
    M.Sleep(seconds)
    ch:TrySend(core.now())
  end)
  return ch
end

-- NewTicker(seconds) -> ticker with field C (receives the time every period; ticks a
-- slow reader misses are dropped, as in Go) and method Stop().
local Ticker = {}
Ticker.__index = Ticker
Ticker.__name = "luaws.Ticker"

function M.NewTicker(seconds)
  if type(seconds) ~= "number" or not (seconds > 0) then -- NaN too
    error("bad argument #1 to 'NewTicker' (positive number expected)", 2)
  end
  local t = core.timer()
  local ticker = setmetatable({ C = M.Chan(1), timer = t }, Ticker)
  t:_start(seconds, seconds)
  local C = ticker.C
  ticker.co = sched.go(function()
    while true do
      sched.wait(t)
      if t:_take() > 0 then C:TrySend(core.now()) end
    end
  end)
  return ticker
end

function Ticker:Stop()
  if self.stopped then return end
  self.stopped = true
  self.timer:_stop()
  sched.forget(self.timer)
end
Ticker.__close = Ticker.Stop -- local t <close> = websocket.NewTicker(1)
function Ticker:__tostring()
  return ("luaws.Ticker: %p (%s)"):format(self, self.stopped and "stopped" or "ticking")
end

-- Await(fn, ...) -> the callback's arguments: calls fn(..., callback) and blocks until
-- callback runs (its first call counts), the bridge to callback-style APIs such as
-- luv's: local err, data = websocket.Await(uv.fs_read, fd, 4096, 0). When fn returns
-- nil (luv's fail: nothing started, the callback will never run), Await returns fn's
-- results after that nil: luv's message and error name, where an err-first callback
-- has its error.
function M.Await(fn, ...)
  if type(fn) ~= "function" then
    local mt = getmetatable(fn)
    if not (mt and mt.__call) then error("bad argument #1 to 'Await' (function expected)", 2) end
  end
  local co = sched.current()
  local result, parked
  local function callback(...)
    if result then return end
    result = table.pack(...)
    if parked and co then sched.ready(co) end
  end
  local n = select("#", ...)
  local args = table.pack(...)
  args[n + 1] = callback
  local started = table.pack(fn(table.unpack(args, 1, n + 1)))
  if not result and started.n > 0 and started[1] == nil then
    return table.unpack(started, 2, started.n)
  end
  parked = true
  while not result do
    sched.park(function() return result ~= nil end)
  end
  return table.unpack(result, 1, result.n)
end

-- Notify(ch, signal, ...): deliver the names of these signals ("SIGINT", "SIGTERM"; Go's
-- os.Interrupt is websocket.Interrupt) to ch without blocking, as signal.Notify does.
M.Interrupt = "SIGINT"

-- The signals the program asked for with Notify: ListenAndServe's own handling of
-- SIGINT and SIGTERM leaves those to the program.
local taken = {}
function M.signal_taken(name) return taken[name] == true end

-- Deliver each of names to ch as it arrives; by_program: Notify's (see taken).
function M.notify(ch, names, by_program, level)
  for _, name in ipairs(names) do
    if type(name) ~= "string" then error("bad argument to 'Notify' (signal name expected)", level + 1) end
    local ok, sig = pcall(core.signal, name)
    if not ok then error("bad argument to 'Notify' (unknown signal name " .. name .. ")", level + 1) end
    if by_program then taken[name] = true end
    sched.go(function()
      while true do
        sched.wait(sig)
        for _ = 1, sig:_take() do ch:TrySend(name) end
      end
    end)
  end
end

function M.Notify(ch, ...)
  check_chan(ch, 2)
  local names = { ... }
  if #names == 0 then names = { "SIGINT", "SIGTERM" } end
  M.notify(ch, names, true, 2)
end

return M
