-- lws's descriptor tables (src/loop.c, luaws_loop_low_context): a server whose main
-- table is bigger than 1024 slots puts the sockets it accepts with descriptors below
-- 1024 in a second lws context with a table of 1024, so that closing one does not read
-- the whole big table; the others stay in the main context. Both kinds must work alike.
-- Each case runs in a child lua5.4 (its own open-files limit) on the build under test.
local support = require "support"

lazy_setup(function() support.keepalive(true) end)
lazy_teardown(function() support.keepalive(false) end)

local build = os.getenv("LUAWS_BUILD") or "build"
local run_lua = support.run_lua

local function hard_limit()
  local p = io.popen("bash -c 'ulimit -Hn'")
  local v = p:read("l")
  p:close()
  return v == "unlimited" and math.huge or tonumber(v) or 0
end

-- A server (echo, then the close handshake), and rounds of a client against it: each
-- prints "<tag> <echo> <close code the client read> <close code the server read>".
local server_and_rounds = [[
local websocket = require "luaws"
local core = require "luaws.core"
local server_saw = {}
local srv = assert(websocket.Listen("127.0.0.1:0", function(w, r)
  local c = assert(websocket.Upgrader():Upgrade(w, r))
  while true do
    local mt, data, err = c:ReadMessage()
    if err then server_saw[#server_saw + 1] = err.code break end
    c:WriteMessage(mt, data)
  end
  c:Close()
end))
local url = "ws://127.0.0.1:" .. srv:Port() .. "/"
print("tables", core._fd_tables())
local function round(tag, n)
  local conns = {}
  for i = 1, n or 1 do
    local c, _, err = websocket.DefaultDialer:Dial(url)
    assert(c, tostring(err))
    conns[i] = c
  end
  for i, c in ipairs(conns) do
    assert(c:WriteMessage(websocket.TextMessage, tag .. i))
    local _, data = c:ReadMessage()
    assert(data == tag .. i, tostring(data))
    assert(c:WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(1000, "bye")))
    local _, _, err = c:ReadMessage()
    c:Close()
    websocket.Sleep(0.01)
    print(tag, data, err and err.code, server_saw[#server_saw])
  end
end
]]

describe("lws's descriptor tables", function()
  it("a server with a big table gets a low one, and sockets below 1024 and beyond both work", function()
    if hard_limit() < 4096 then
      pending("needs a hard limit on open files of at least 4096")
      return
    end
    local status, out = run_lua(server_and_rounds .. [[
round("low", 3)
-- occupy the descriptors below 1024: the next sockets come after them
local files = {}
for i = 1, 1100 do files[i] = assert(io.open("/dev/null")) end
round("high", 3)
for i = 1, 1100 do files[i]:close() end
files = nil
collectgarbage()
round("again", 3)
srv:Close()
print("done")
]], 60, "ulimit -Sn 4096")
    assert.are.equal(0, status, out)
    assert.matches("tables\t4096\t1024\n", out, 1, true)
    for _, tag in ipairs({ "low", "high", "again" }) do
      for i = 1, 3 do
        assert.matches(("%s\t%s%d\t1000\t1000\n"):format(tag, tag, i), out, 1, true)
      end
    end
    assert.matches("done\n", out, 1, true)
    assert.is_nil(out:find("too high", 1, true), out)
  end)

  it("a table of 1024 slots or fewer gets none", function()
    local status, out = run_lua(server_and_rounds .. [[
round("only", 2)
print("done")
]], 30, "ulimit -Sn 1024")
    assert.are.equal(0, status, out)
    assert.matches("tables\t1024\t0\n", out, 1, true)
    assert.matches("only\tonly1\t1000\t1000\n", out, 1, true)
    assert.matches("only\tonly2\t1000\t1000\n", out, 1, true)
    assert.matches("done\n", out, 1, true)
  end)
end)

-- Issue 11: luaws changes no process-wide setting unless asked. lws sizes its table by
-- the soft limit; luaws sets the soft limit to the size it wants for that one call only
-- where no one can see it: in a process with one thread. A host with a second thread
-- (which reads the limit all the time, and would see a change) keeps its limit.
describe("the open-files limit while lws's tables are made", function()
  local host = build .. "/threaded-host"
  local serve = server_and_rounds .. [[
round("r", 2)
srv:Close()
print("done")
]]
  local function check_rounds(out)
    assert.matches("r\tr1\t1000\t1000\n", out, 1, true)
    assert.matches("r\tr2\t1000\t1000\n", out, 1, true)
    assert.matches("done\n", out, 1, true)
  end

  it("one thread: the tables get 16384 and 1024 slots, and the limit is as it was", function()
    if hard_limit() <= 16384 then
      pending("needs a hard limit on open files above 16384")
      return
    end
    local status, out = run_lua(serve .. [[
for line in io.lines("/proc/self/limits") do
  local soft = line:match("^Max open files%s+(%S+)")
  if soft then print("soft", soft) end
end
]], 30, "ulimit -Sn $(ulimit -Hn)")
    assert.are.equal(0, status, out)
    assert.matches("tables\t16384\t1024\n", out, 1, true)
    assert.matches("soft\t" .. hard_limit() .. "\n", out, 1, true)
    check_rounds(out)
  end)

  it("a second thread never sees the limit change, and lws sizes its table by it", function()
    if hard_limit() <= 16384 or hard_limit() > 10000000 then
      pending("needs a hard limit on open files above 16384 and at most 10000000")
      return
    end
    local status, out = run_lua(serve, 30, "ulimit -Sn $(ulimit -Hn)", host)
    assert.are.equal(0, status, out)
    local reads, lowest = out:match("watched (%d+) (%d+)\n")
    assert.is_truthy(reads, out)
    assert.is_true(tonumber(reads) > 1000, out)
    assert.are.equal(hard_limit(), tonumber(lowest), out)
    assert.matches("tables\t" .. hard_limit() .. "\t0\n", out, 1, true)
    check_rounds(out)
  end)

  it("a second thread: a table size the program asks for is what it gets", function()
    if hard_limit() < 4096 then
      pending("needs a hard limit on open files of at least 4096")
      return
    end
    local status, out = run_lua(serve, 30, "ulimit -Sn $(ulimit -Hn); export LUAWS_MAX_FDS=2048", host)
    assert.are.equal(0, status, out)
    assert.matches("tables\t2048\t1024\n", out, 1, true)
    assert.matches("watched %d+ %d+\n", out)
    check_rounds(out)
  end)
end)
