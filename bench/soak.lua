-- Soak test: one process, an in-process luaws echo server and luaws clients hammering it.
--
--   lua5.4 bench/soak.lua [seconds=60] [--seed N]      (from the repository root, after make)
--
-- (a) LONG long-lived connections exchange messages for the whole run: random sizes
--     0..64 KiB (the 7-, 16- and 64-bit length forms and their edges included), text
--     (valid UTF-8) and binary, up to WINDOW+1 in flight per connection; every echo is
--     compared byte for byte with what was sent.
-- (b) CHURN coroutines open connections over and over, exchange a few messages, and close
--     them, alternately with the clean close handshake (close 1000, wait for the answer)
--     and abruptly (c:Close(), no close frame).
--
-- RSS (VmRSS) is taken after a warm-up (10 s, or 1/6 of a shorter run) and at the end,
-- both after collectgarbage(). The run passes (exit 0) only if no message was lost or
-- corrupted, nothing else went wrong (dial errors, a bad close handshake), the end RSS is
-- within 10 % (+ 2 MiB) of the warm-up RSS, and once churn stops LiveConns() comes back to
-- the long-lived connections (2 per connection: client and server side live in this
-- process), then to 0 once those are closed too. The numbers are printed either way; the
-- last line is "soak: PASS ..." or "soak: FAIL ...".
--
-- LUAWS_BUILD selects another build directory (as for the specs: build-sanitize). Under
-- ASan (its runtime in LD_PRELOAD) the RSS bound is reported but not enforced: freed
-- memory sits in ASan's quarantine.
local root = (arg and arg[0] or ""):match("^(.-)[^/]*$") .. "../" -- find the in-tree build
local build = os.getenv("LUAWS_BUILD") or (root .. "build")
package.path = root .. "lua/?.lua;" .. root .. "lua/?/init.lua;" .. package.path
package.cpath = build .. "/?.so;" .. package.cpath
local UNDER_ASAN = (os.getenv("LD_PRELOAD") or ""):find("asan", 1, true) ~= nil

local websocket = require "luaws"

---------------------------------------------------------------------------------------
-- arguments

local SECONDS, SEED = 60, nil
do
  local i = 1
  while arg[i] do
    local a = arg[i]
    if a == "--seed" or a == "-seed" then
      SEED = tonumber(arg[i + 1]); i = i + 1
      if not SEED then io.stderr:write("soak: --seed needs a number\n"); os.exit(2) end
    elseif a:match("^%-%-seed=") then
      SEED = tonumber(a:match("=(.*)"))
    elseif tonumber(a) then
      SECONDS = tonumber(a)
    else
      io.stderr:write("usage: lua5.4 bench/soak.lua [seconds=60] [--seed N]\n")
      os.exit(2)
    end
    i = i + 1
  end
end
SEED = math.tointeger(SEED) or SEED or (os.time() % 100000)
SEED = math.tointeger(SEED) or math.floor(SEED)
math.randomseed(SEED)

local LONG = 20           -- long-lived connections
local CHURN = 4           -- churn coroutines
local WINDOW = 4          -- per long-lived connection: up to WINDOW+1 messages in flight
local MAX_SIZE = 64 * 1024
local WARMUP = math.min(10, SECONDS / 6)
local RSS_RATIO, RSS_SLACK_KIB = 1.10, 2048
local READ_TIMEOUT = 10   -- an echo that takes longer counts as lost

---------------------------------------------------------------------------------------
-- helpers

local function rss_kib(field)
  local f = io.open("/proc/self/status", "r")
  if not f then return 0 end
  local s = f:read("a")
  f:close()
  return tonumber(s:match((field or "VmRSS") .. ":%s*(%d+)")) or 0
end

local function full_gc()
  collectgarbage("collect")
  collectgarbage("collect")
end

-- A small per-worker PRNG (xorshift64*), so that each connection's sequence of sizes and
-- types depends on the seed and the worker only, not on how coroutines interleave.
local function prng(seed)
  local x = (seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) | 1
  return function(n) -- integer in [0, n)
    x = x ~ (x >> 12); x = x ~ (x << 25); x = x ~ (x >> 27)
    local r = (x * 0x2545F4914F6CDD1D) >> 11 -- 53 bits, non-negative
    return r % n
  end
end

-- Payload pools: 2 * MAX_SIZE of random bytes, and of random UTF-8 (1- to 4-byte
-- characters). A message is a slice of a pool, text slices cut at character boundaries.
local BIN_POOL, TEXT_POOL
do
  local parts = {}
  for i = 1, 2 * MAX_SIZE, 1024 do
    local chunk = {}
    for j = 1, 1024 do chunk[j] = math.random(0, 255) end
    parts[#parts + 1] = string.char(table.unpack(chunk))
  end
  BIN_POOL = table.concat(parts)
  local chars = { "a", "b", "z", "0", " ", "~", "\u{E9}", "\u{3B1}", "\u{20AC}", "\u{4E2D}",
    "\u{1F600}", "\u{10348}", "\u{7F}", "\u{80}", "\u{FFFD}", "\u{10FFFF}" }
  local out, n = {}, 0
  while n < 2 * MAX_SIZE + 8 do
    local c = chars[math.random(#chars)]
    out[#out + 1] = c
    n = n + #c
  end
  TEXT_POOL = table.concat(out)
end

local function is_cont(s, i)
  local b = s:byte(i)
  return b ~= nil and b >= 0x80 and b < 0xC0
end

local EDGES = { 0, 1, 125, 126, 127, 65535, 65536 }

-- A random size in 0..MAX_SIZE: edges of the length forms sometimes, else a third
-- small (0..125), a third medium (126..4096), a third anywhere.
local function random_size(rnd)
  local k = rnd(10)
  if k == 0 then return EDGES[rnd(#EDGES) + 1] end
  if k <= 3 then return rnd(126) end
  if k <= 6 then return 126 + rnd(4096 - 126 + 1) end
  return rnd(MAX_SIZE + 1)
end

-- A message of about `size` bytes (exactly, for binary), tagged with `tag` when it fits.
local function make_payload(rnd, mt, size, tag)
  if size >= #tag then size = size - #tag else tag = "" end
  local off = rnd(MAX_SIZE) + 1
  if mt == websocket.BinaryMessage then
    return tag .. BIN_POOL:sub(off, off + size - 1)
  end
  local a, b = off, off + size - 1
  while is_cont(TEXT_POOL, a) do a = a + 1 end
  while b >= a and is_cont(TEXT_POOL, b + 1) do b = b - 1 end
  return tag .. TEXT_POOL:sub(a, b)
end

local function describe_mismatch(want, got)
  if type(got) ~= "string" then return ("got %s"):format(type(got)) end
  local n = math.min(#want, #got)
  local i = 1
  while i <= n and want:byte(i) == got:byte(i) do i = i + 1 end
  return ("want %d bytes, got %d, first difference at byte %d"):format(#want, #got, i)
end

---------------------------------------------------------------------------------------
-- counters

local st = {
  sent = 0, verified = 0, lost = 0, corrupted = 0, bytes = 0,
  dial_errors = 0, close_bad = 0, other_errors = 0,
  churn_conns = 0, churn_clean = 0, churn_abrupt = 0,
  server_upgraded = 0, server_ended = 0, server_write_errors = 0,
}
local problems = {} -- the first few problems, for the report
local function problem(fmt, ...)
  if #problems < 20 then problems[#problems + 1] = fmt:format(...) end
end

local stop = false
local workers_running = 0

---------------------------------------------------------------------------------------
-- the server

local upgrader = websocket.Upgrader{}
local srv = assert(websocket.Listen("127.0.0.1:0", function(w, r)
  local c = upgrader:Upgrade(w, r, nil)
  if not c then return end
  st.server_upgraded = st.server_upgraded + 1
  while true do
    local mt, data, err = c:ReadMessage()
    if err then break end
    local ok = c:WriteMessage(mt, data)
    if not ok then
      st.server_write_errors = st.server_write_errors + 1
      break
    end
  end
  c:Close()
  st.server_ended = st.server_ended + 1
end))
local URL = ("ws://127.0.0.1:%d/echo"):format(srv:Port())
local dialer = websocket.Dialer{ HandshakeTimeout = 10 }

local function dial(what)
  local c, _, err = dialer:Dial(URL)
  if not c then
    st.dial_errors = st.dial_errors + 1
    problem("%s: dial: %s", what, tostring(err))
  end
  return c
end

-- Read the echo of `want`; returns true when it came back intact.
local function expect_echo(c, what, want_mt, want)
  c:SetReadDeadline(websocket.Now() + READ_TIMEOUT)
  local mt, data, err = c:ReadMessage()
  if err then
    st.lost = st.lost + 1
    problem("%s: lost a %d-byte message: %s", what, #want, tostring(err))
    return false
  end
  if mt ~= want_mt or data ~= want then
    st.corrupted = st.corrupted + 1
    problem("%s: corrupted echo (type %s, want %s): %s", what, tostring(mt), want_mt,
      describe_mismatch(want, data))
    return false
  end
  st.verified = st.verified + 1
  st.bytes = st.bytes + #want
  return true
end

---------------------------------------------------------------------------------------
-- (a) long-lived connections

local long_conns = {}

local function long_lived(id)
  workers_running = workers_running + 1
  local what = "long " .. id
  local rnd = prng(SEED * 1000 + id)
  local c = dial(what)
  if not c then workers_running = workers_running - 1; return end
  long_conns[id] = c
  local inflight = websocket.Chan(WINDOW)
  local reader_done = websocket.Chan(0)
  websocket.Go(function()
    local ok = true
    while true do
      local item = inflight:Recv()
      if not item then break end
      if ok then
        ok = expect_echo(c, what, item[1], item[2])
      else
        st.lost = st.lost + 1 -- the connection broke: the rest never comes back
      end
    end
    reader_done:Send(ok)
  end)
  local seq = 0
  while not stop do
    seq = seq + 1
    local mt = rnd(2) == 0 and websocket.TextMessage or websocket.BinaryMessage
    local msg = make_payload(rnd, mt, random_size(rnd), ("L%d#%d;"):format(id, seq))
    inflight:Send({ mt, msg })
    st.sent = st.sent + 1
    local ok, err = c:WriteMessage(mt, msg)
    if not ok then
      st.other_errors = st.other_errors + 1
      problem("%s: write: %s", what, tostring(err))
      break
    end
  end
  inflight:Send(false)
  reader_done:Recv()
  c:SetReadDeadline(nil)
  workers_running = workers_running - 1
end

---------------------------------------------------------------------------------------
-- (b) churn

local function churn(id)
  workers_running = workers_running + 1
  local rnd = prng(SEED * 1000 + 500 + id)
  local round = 0
  while not stop do
    round = round + 1
    local what = ("churn %d.%d"):format(id, round)
    local c = dial(what)
    if c then
      st.churn_conns = st.churn_conns + 1
      local intact = true
      for k = 1, 1 + rnd(4) do
        local mt = rnd(2) == 0 and websocket.TextMessage or websocket.BinaryMessage
        local size = rnd(4) == 0 and random_size(rnd) or rnd(2048)
        local msg = make_payload(rnd, mt, size, ("C%d.%d#%d;"):format(id, round, k))
        st.sent = st.sent + 1
        local ok, err = c:WriteMessage(mt, msg)
        if not ok then
          st.lost = st.lost + 1
          problem("%s: write: %s", what, tostring(err))
          intact = false
          break
        end
        if not expect_echo(c, what, mt, msg) then intact = false; break end
      end
      if intact and round % 2 == 0 then
        -- clean close handshake: close 1000, the server answers 1000
        local ok, err = c:WriteMessage(websocket.CloseMessage,
          websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
        if not ok then
          st.close_bad = st.close_bad + 1
          problem("%s: writing close: %s", what, tostring(err))
        else
          c:SetReadDeadline(websocket.Now() + READ_TIMEOUT)
          local mt, data, rerr = c:ReadMessage()
          if not websocket.IsCloseError(rerr, websocket.CloseNormalClosure) then
            st.close_bad = st.close_bad + 1
            problem("%s: close handshake ended with %s (message type %s, %s bytes)", what,
              tostring(rerr), tostring(mt), data and #data or "no")
          end
        end
        c:Close()
        st.churn_clean = st.churn_clean + 1
      else
        c:Close() -- abrupt: no close frame
        st.churn_abrupt = st.churn_abrupt + 1
      end
    else
      websocket.Sleep(0.05)
    end
  end
  workers_running = workers_running - 1
end

---------------------------------------------------------------------------------------
-- the run

local function wait_for(cond, timeout, interval)
  local deadline = websocket.Now() + timeout
  while true do
    local v = cond()
    if v then return v end
    if websocket.Now() >= deadline then return false end
    websocket.Sleep(interval or 0.02)
  end
end

local function steady_live(want, timeout)
  return wait_for(function()
    full_gc()
    return websocket.LiveConns() == want
  end, timeout, 0.05)
end

io.stdout:write(("soak: %g s, seed %d, %d long-lived connections, %d churn coroutines, " ..
  "server on %s\n"):format(SECONDS, SEED, LONG, CHURN, URL))
io.stdout:flush()

local live_before = websocket.LiveConns()
local t0 = websocket.Now()
local rss_start = rss_kib()
for id = 1, LONG do websocket.Go(long_lived, id) end
for id = 1, CHURN do websocket.Go(churn, id) end

local samples = {}
local function sample(label)
  full_gc()
  local r = rss_kib()
  samples[#samples + 1] = ("%s %.1fs rss=%dKiB live=%d sent=%d churned=%d"):format(label,
    websocket.Now() - t0, r, websocket.LiveConns(), st.sent, st.churn_conns)
  io.stdout:write("soak: ", samples[#samples], "\n")
  io.stdout:flush()
  return r
end

websocket.Sleep(WARMUP)
local rss_warm = sample("warm-up")
-- progress lines about every sixth of the run (or every 10 s) after the warm-up
local step = math.max(1, math.min(10, SECONDS / 6))
while websocket.Now() - t0 + step < SECONDS do
  websocket.Sleep(step)
  sample("progress")
end
websocket.Sleep(math.max(0, SECONDS - (websocket.Now() - t0)))
local run_time = websocket.Now() - t0

stop = true
local drained = wait_for(function() return workers_running == 0 end, READ_TIMEOUT + 20)
if not drained then problem("%d workers still running 30 s after the stop", workers_running) end

-- after churn: only the long-lived connections (client + server side of each) are left
local want_live = live_before + 2 * #long_conns
local live_ok = steady_live(want_live, 10)
local live_after_churn = websocket.LiveConns()
if not live_ok then
  problem("LiveConns %d after churn stopped, want %d", live_after_churn, want_live)
end

full_gc()
local rss_end = rss_kib()
local rss_hwm = rss_kib("VmHWM")
local rss_limit = math.floor(rss_warm * RSS_RATIO + RSS_SLACK_KIB)
local rss_ok = rss_end <= rss_limit or UNDER_ASAN
if not (rss_end <= rss_limit) then problem("RSS grew: %d KiB at the end, limit %d KiB", rss_end, rss_limit) end

-- close the long-lived connections cleanly; then nothing is left
local close_long_bad = 0
for _, c in pairs(long_conns) do
  local ok = c:WriteMessage(websocket.CloseMessage,
    websocket.FormatCloseMessage(websocket.CloseNormalClosure, "soak over"))
  c:SetReadDeadline(websocket.Now() + READ_TIMEOUT)
  local _, _, err = c:ReadMessage()
  if not ok or not websocket.IsCloseError(err, websocket.CloseNormalClosure) then
    close_long_bad = close_long_bad + 1
    problem("closing a long-lived connection: %s", tostring(err))
  end
  c:Close()
end
st.close_bad = st.close_bad + close_long_bad
long_conns = nil
local zero_ok = steady_live(live_before, 10)
local live_final = websocket.LiveConns()
if not zero_ok then problem("LiveConns %d after closing everything, want %d", live_final, live_before) end
srv:Close()

local pass = st.lost == 0 and st.corrupted == 0 and st.dial_errors == 0 and
  st.close_bad == 0 and st.other_errors == 0 and drained and live_ok and zero_ok and rss_ok

print(("soak: messages sent=%d verified=%d lost=%d corrupted=%d (%.1f MiB echoed, %.0f msgs/s)")
  :format(st.sent, st.verified, st.lost, st.corrupted, st.bytes / 1048576,
    st.verified / math.max(run_time, 1e-9)))
print(("soak: churn connections=%d clean=%d abrupt=%d; dial_errors=%d close_bad=%d " ..
  "other_errors=%d; server upgraded=%d ended=%d write_errors=%d")
  :format(st.churn_conns, st.churn_clean, st.churn_abrupt, st.dial_errors, st.close_bad,
    st.other_errors, st.server_upgraded, st.server_ended, st.server_write_errors))
print(("soak: rss start=%dKiB warm-up=%dKiB end=%dKiB limit=%dKiB peak=%dKiB (%+.1f%%)%s")
  :format(rss_start, rss_warm, rss_end, rss_limit, rss_hwm,
    rss_warm > 0 and (rss_end - rss_warm) * 100 / rss_warm or 0,
    UNDER_ASAN and " (not enforced under ASan)" or ""))
print(("soak: live after churn=%d (want %d), after closing all=%d (want %d)")
  :format(live_after_churn, want_live, live_final, live_before))
for _, p in ipairs(problems) do print("soak: problem: " .. p) end
print(("soak: %s seconds=%.1f seed=%d sent=%d verified=%d lost=%d corrupted=%d churned=%d " ..
  "rss_warm=%dKiB rss_end=%dKiB live=%d/%d")
  :format(pass and "PASS" or "FAIL", run_time, SEED, st.sent, st.verified, st.lost,
    st.corrupted, st.churn_conns, rss_warm, rss_end, live_after_churn, want_live))
io.stdout:flush()
os.exit(pass and 0 or 1)
