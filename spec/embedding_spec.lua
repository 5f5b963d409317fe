-- Issue 11, embedding: the host protocol (wait on BackendFd() at most BackendTimeout()
-- seconds, then Step(0)) must not make a host spin. A fresh luaws, with nothing
-- started, has nothing to wait for; goroutines ready to run mean "do not wait".
local support = require "support"

describe("issue 11: BackendTimeout", function()
  it("says 'no timeout' while nothing is active, 0 while goroutines are ready, else the next timer", function()
    local status, out = support.run_child(support.lua([[
local ws = require "luaws"
print("fresh", ws.BackendTimeout(), ws.BackendTimeout())
local fired = false
ws.Go(function() ws.Sleep(0.3); fired = true end)
print("ready", ws.BackendTimeout())
ws.Step(0)
local t = ws.BackendTimeout()
print("timer", t > 0.2 and t <= 0.3)
-- a host loop: sleep as told, then step; count the wake-ups until the goroutine ran
local wakeups = 0
while not fired do
  local wait = ws.BackendTimeout()
  if wait > 0 then os.execute("sleep " .. wait) end
  ws.Step(0)
  wakeups = wakeups + 1
  assert(wakeups < 50, "the host spins")
end
print("done", wakeups <= 3)
print("idle", ws.BackendTimeout())
]]), 20)
    assert.are.equal(0, status, out)
    assert.matches("fresh\t%-1%.?0?\t%-1", out)
    assert.matches("ready\t0\n", out, 1, true)
    assert.matches("timer\ttrue", out, 1, true)
    assert.matches("done\ttrue", out, 1, true)
    assert.matches("idle\t%-1", out)
  end)
end)

-- The hosts below each run examples/embed/<host>.lua in a child process: its main chunk
-- only starts luaws's echo_pair (a server, and a client goroutine sending 5 messages with
-- a 50 ms websocket.Sleep after each) and then runs the host's own loop, which drives
-- luaws through BackendFd/BackendTimeout/Step alone. The sleeps make BackendTimeout
-- matter: a host that ignored it would stall until the test's limit; one that spun would
-- show thousands of wake-ups.
local COUNT, GAP = 5, 0.05

local function check_host_output(status, out, echoed_lines)
  assert.are.equal(0, status, out)
  for _ = 1, echoed_lines or 1 do
    local echoed, wakeups, elapsed
    echoed, wakeups, elapsed, out = out:match("echoed (%d+), wakeups (%d+), elapsed ([%d.]+)(.*)$")
    assert.is_truthy(echoed, "no result line in:\n" .. tostring(out))
    assert.are.equal(COUNT, tonumber(echoed))
    -- each message takes a handful of steps (dial, write, echo, timer); a spin takes
    -- thousands in 0.25 s
    assert.is_true(tonumber(wakeups) < 40 * COUNT, "wake-ups: " .. wakeups)
    -- the sleeps were honoured, and no wake-up was missed (nothing else would end a wait)
    assert.is_true(tonumber(elapsed) >= COUNT * GAP * 0.9, "elapsed " .. elapsed)
    assert.is_true(tonumber(elapsed) < COUNT * GAP + 2, "elapsed " .. elapsed)
  end
end

local function run_host(script)
  return support.run_child(("lua5.4 examples/embed/%s %d %g"):format(script, COUNT, GAP), 20)
end

describe("issue 11: embedded in cqueues", function()
  it("steps luaws as a pollable object (pollfd, events, timeout) in a cqueues coroutine", function()
    check_host_output(run_host("cqueues_host.lua"))
  end)
end)

describe("issue 11: embedded in libevent (luaevent)", function()
  it("steps luaws from a read event on BackendFd and a timer re-armed from BackendTimeout", function()
    check_host_output(run_host("luaevent_host.lua"))
  end)
end)

describe("issue 11: embedded in LuaSocket's select", function()
  it("steps luaws after socket.select on a getfd wrapper with BackendTimeout as the timeout", function()
    check_host_output(run_host("socket_select_host.lua"))
  end)
end)

describe("issue 11: embedded in luv's loop (luaws keeping its own)", function()
  it("steps luaws from a luv poll handle on BackendFd and a luv timer re-armed from BackendTimeout", function()
    check_host_output(run_host("luv_host.lua"))
  end)
end)

describe("issue 11: embedded in a C program's epoll loop", function()
  it("runs two Lua states with luaws, one epoll loop watching both BackendFds, and exits 0", function()
    local build = os.getenv("LUAWS_BUILD") or "build"
    local make = "make -s embed" .. (build == "build-sanitize" and " SANITIZE=1" or "")
    local status, out = support.run_child(make, 120)
    assert.are.equal(0, status, out)
    -- under SANITIZE=1 the host is an ASan executable itself: give it the suppressions
    local env = build == "build-sanitize"
      and "LSAN_OPTIONS=suppressions=spec/lsan.supp:print_suppressions=0 " or ""
    status, out = support.run_child(("%s%s/embed-host %d %g"):format(env, build, COUNT, GAP), 20)
    assert.matches("state 0: echoed", out, 1, true)
    assert.matches("state 1: echoed", out, 1, true)
    check_host_output(status, out, 2)
  end)
end)

describe("issue 11: embedded in Prosody", function()
  it("steps luaws from a Prosody 0.12 plugin with net.server's watchfd and util.timer", function()
    -- a Prosody of its own: config, data and pidfile in a temp dir, no listening ports
    -- (its services activate "on no ports"), no TLS; the plugin shuts it down when done
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. support.shell_quote(dir .. "/certs")))
    finally(function() os.execute("rm -rf " .. support.shell_quote(dir)) end)
    local root = support.sh_output("pwd")
    local cfg = assert(io.open(dir .. "/prosody.cfg.lua", "w"))
    cfg:write(([[
run_as_root = true -- CI containers run as root; it changes nothing else
pidfile = %q
data_path = %q
certificates = %q
log = { { levels = { min = "info" }, to = "console" } }
network_backend = "epoll"
interfaces = { "127.0.0.1" }
local_interfaces = { "127.0.0.1" }
c2s_ports = {}
s2s_ports = {}
c2s_direct_tls_ports = {}
s2s_direct_tls_ports = {}
legacy_ssl_ports = {}
plugin_paths = { %q }
modules_enabled = { "luaws_echo" }
VirtualHost "localhost"
]]):format(dir .. "/prosody.pid", dir, dir .. "/certs", root .. "/examples/embed/prosody"))
    cfg:close()
    -- through lua5.4 (Prosody's own interpreter): a sanitizer run keeps its runtime
    local status, out = support.run_child(("cd %s && LUAWS_ROOT=%s LUAWS_BUILD=%s " ..
      "LUAWS_ECHO_COUNT=%d LUAWS_ECHO_GAP=%g lua5.4 /usr/bin/prosody -F --config %s"):format(
      support.shell_quote(dir), support.shell_quote(root),
      support.shell_quote(os.getenv("LUAWS_BUILD") or "build"), COUNT, GAP,
      support.shell_quote(dir .. "/prosody.cfg.lua")), 30)
    assert.matches("Shutting down: luaws echo done", out, 1, true)
    assert.matches("Shutdown complete", out, 1, true)
    check_host_output(status, out)
  end)
end)

-- Found by the hosts above: luaws's timers started from libuv's cached loop time
-- (uv_now), which only advances when the loop turns. A goroutine that a host starts or
-- wakes runs at the beginning of the next Step, before the loop turns, so a Sleep(d)
-- there ended early by however long the host went without stepping: here, Sleep(0.2)
-- returned at once after the host was busy 0.5 s (the same for a main-chunk Sleep after
-- 0.5 s of Lua work, and for Dial's timeout). Timers now start from uv_update_time.
describe("issue 11: timers in a goroutine started after the host went without stepping", function()
  it("Sleep(0.2) lasts 0.2 s even when the host did not step luaws for 0.5 s before", function()
    local status, out = support.run_child(support.lua([[
local socket = require "socket"
local ws = require "luaws"
local srv = ws.Listen("127.0.0.1:0", function() end) -- keeps the loop alive
ws.Step(0)
socket.sleep(0.5)                                     -- the host busy elsewhere
local elapsed
ws.Go(function() local t0 = ws.Now(); ws.Sleep(0.2); elapsed = ws.Now() - t0 end)
local fdw = { getfd = function() return ws.BackendFd() end }
while not elapsed do
  socket.select({ fdw }, nil, ws.BackendTimeout())
  ws.Step(0)
end
srv:Close()
print(("slept %.3f"):format(elapsed))
]]), 20)
    assert.are.equal(0, status, out)
    local slept = tonumber(out:match("slept ([%d.]+)"))
    assert.is_true(slept >= 0.19, out)
  end)
end)

describe("issue 11: a blocking call outside a goroutine while a host runs the loop", function()
  it("raises a clear error instead of running the loop itself; goroutines still block", function()
    local status, out = support.run_child(support.lua([[
local ws = require "luaws"
ws.Sleep(0.01) -- no host yet: the main chunk drives the loop itself
print("before the host: ok")
ws.BackendFd() -- a host takes over
local ok, err = pcall(ws.Sleep, 0.01)
print("Sleep:", ok, err)
ok, err = pcall(function() return ws.Chan():Recv() end)
print("Recv:", ok, err)
local done = false
ws.Go(function() ws.Sleep(0.05); done = true end)
while not done do ws.Step(0.1) end
print("goroutine: ok")
]]), 20)
    assert.are.equal(0, status, out)
    assert.matches("before the host: ok", out, 1, true)
    assert.matches("Sleep:\tfalse\t[^\n]*blocking call outside a goroutine while a host runs the loop", out)
    assert.matches("Recv:\tfalse\t[^\n]*blocking call outside a goroutine while a host runs the loop", out)
    assert.matches("goroutine: ok", out, 1, true)
  end)
end)
