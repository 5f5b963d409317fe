-- luv (lua-luv) and luaws on one libuv loop (issue 11, "luv on the same loop"): luaws is
-- loaded first here (by support), so luv runs on luaws's loop; spec/luv/luv_first.lua
-- checks the other order in a child. websocket.Await turns luv's callbacks into blocking
-- calls inside goroutines.
local support = require "support"
local websocket = support.websocket
local core = require "luaws.core"
local uv = require "luv"

local Binary, Text = websocket.BinaryMessage, websocket.TextMessage

-- Read once from a luv stream, blocking the goroutine: err, data (data nil at EOF).
-- Reading stops between calls, so a slow consumer holds the producer back.
local function read_once(stream)
  return websocket.Await(function(cb)
    return stream:read_start(function(err, data)
      stream:read_stop()
      cb(err, data)
    end)
  end)
end

local function close_handle(h)
  if h and not h:is_closing() then h:close() end
end

describe("issue 11: luv loaded after luaws", function()
  it("runs on luaws's loop: a luv timer fires while luaws's loop runs a Sleep", function()
    assert.are.equal(core.backend_fd(), uv.backend_fd())
    local fired_at
    local t = uv.new_timer()
    finally(function() close_handle(t) end)
    local t0 = websocket.Now()
    t:start(50, 0, function() fired_at = websocket.Now() end)
    websocket.Sleep(0.2)
    assert.is_truthy(fired_at)
    assert.is_true(fired_at - t0 < 0.15)
  end)

  it("luv loaded first: luaws adopts luv's loop, and lua_close is clean with both", function()
    local build = os.getenv("LUAWS_BUILD") or "build"
    local status, out = support.run_child("LUA_PATH='lua/?.lua;lua/?/init.lua;;' " ..
      "LUA_CPATH='" .. build .. "/?.so;;' lua5.4 spec/luv/luv_first.lua", 20)
    assert.are.equal(0, status, out)
    assert.matches("same loop\ttrue", out, 1, true)
    assert.matches("luv timer fired\ttrue", out, 1, true)
    assert.matches("echo\thello", out, 1, true)
    assert.matches("await\tlate", out, 1, true)
    assert.matches("\nend\n", out, 1, true)
  end)
end)

describe("issue 11: Await", function()
  it("reads a file with uv.fs_* from a goroutine, and from the main chunk", function()
    local path = os.tmpname()
    finally(function() os.remove(path) end)
    local want = support.binary(100000, 7)
    local f = assert(io.open(path, "wb"))
    f:write(want)
    f:close()
    local got = support.run(function()
      local err, fd = websocket.Await(uv.fs_open, path, "r", 438)
      assert.is_nil(err)
      local err2, st = websocket.Await(uv.fs_fstat, fd)
      assert.is_nil(err2)
      local err3, data = websocket.Await(uv.fs_read, fd, st.size, 0)
      assert.is_nil(err3)
      assert.is_nil((websocket.Await(uv.fs_close, fd)))
      return data
    end)
    assert.are.equal(#want, #got)
    assert.is_true(want == got)
    local err, fd = websocket.Await(uv.fs_open, path, "r", 438)
    assert.is_nil(err)
    local _, data = websocket.Await(uv.fs_read, fd, 10, 0)
    assert.are.equal(want:sub(1, 10), data)
    websocket.Await(uv.fs_close, fd)
    local nerr = websocket.Await(uv.fs_open, path .. ".missing", "r", 438)
    assert.matches("^ENOENT", nerr)
  end)

  it("returns a callback's arguments, nil included; a callback called at once; a refused start", function()
    support.run(function()
      local r = table.pack(websocket.Await(function(a, b, cb)
        local t = uv.new_timer()
        t:start(5, 0, function() t:close() cb(nil, a + b, nil) end)
      end, 1, 2))
      assert.are.same({ n = 3, nil, 3, nil }, r)
      assert.are.same({ "now", 1 }, { websocket.Await(function(cb) cb("now", 1) cb("again") end) })
      assert.are.same({ "EINVAL: refused", "EINVAL" },
        { websocket.Await(function() return nil, "EINVAL: refused", "EINVAL" end) })
    end)
  end)

  it("from the main chunk: a luv timer keeps the loop alive; with nothing left, deadlock", function()
    local build = os.getenv("LUAWS_BUILD") or "build"
    local status, out = support.run_child("LUA_PATH='lua/?.lua;lua/?/init.lua;;' " ..
      "LUA_CPATH='" .. build .. "/?.so;;' lua5.4 -e '" ..
      "local w = require [[luaws]] local uv = require [[luv]] local t = uv.new_timer() " ..
      "print(w.Await(function(cb) t:start(20, 0, function() cb(1) end) end)) " ..
      "print(pcall(w.Await, function(cb) end))'", 10)
    assert.are.equal(0, status, out)
    assert.matches("^1\nfalse\tall goroutines are asleep %- deadlock!\n", out)
  end)

  it("parks only its goroutine: others run while it waits", function()
    local ticks, done = 0, false
    websocket.Go(function()
      while not done do websocket.Sleep(0.01) ticks = ticks + 1 end
    end)
    support.run(function()
      websocket.Await(function(cb)
        local t = uv.new_timer()
        t:start(200, 0, function() t:close() cb() end)
      end)
    end)
    done = true
    assert.is_true(ticks >= 5, "ticks " .. ticks)
  end)
end)

describe("issue 11: a luv TCP server and a luaws server in one script", function()
  it("both serve at once: a luaws client goroutine and a luv client", function()
    -- luv echo server
    local lsrv = uv.new_tcp()
    local accepted = {}
    finally(function()
      for _, c in ipairs(accepted) do close_handle(c) end
      close_handle(lsrv)
    end)
    assert(lsrv:bind("127.0.0.1", 0))
    assert(lsrv:listen(16, function(err)
      assert(not err, err)
      local cl = uv.new_tcp()
      lsrv:accept(cl)
      accepted[#accepted + 1] = cl
      cl:read_start(function(rerr, data)
        if rerr or not data then cl:close() return end
        cl:write(data)
      end)
    end))
    local luv_port = lsrv:getsockname().port

    local wsrv, ws_port = support.echo_server()
    finally(function() wsrv:Close() end)

    -- a luv client with plain callbacks
    local luv_got = ""
    local client = uv.new_tcp()
    finally(function() close_handle(client) end)
    client:connect("127.0.0.1", luv_port, function(err)
      assert(not err, err)
      client:read_start(function(rerr, data)
        if data then luv_got = luv_got .. data end
      end)
      client:write("from a luv client")
    end)

    -- a luaws client goroutine, which also talks to the luv server through Await
    local ws_got, tcp_got = support.run(function()
      local c = assert(websocket.DefaultDialer:Dial(support.url(ws_port)))
      local msgs = {}
      for i = 1, 20 do
        assert(c:WriteMessage(Text, "m" .. i))
        local _, data = c:ReadMessage()
        msgs[#msgs + 1] = data
      end
      c:Close()
      local t = uv.new_tcp()
      local cerr = websocket.Await(t.connect, t, "127.0.0.1", luv_port)
      assert.is_nil(cerr)
      assert.is_nil((websocket.Await(t.write, t, "via Await")))
      local got = ""
      while #got < #"via Await" do
        local rerr, data = read_once(t)
        assert.is_nil(rerr)
        got = got .. assert(data)
      end
      t:close()
      return table.concat(msgs, ","), got
    end)
    assert.is_truthy(support.wait_for(function() return luv_got == "from a luv client" end, 5))
    local want = {}
    for i = 1, 20 do want[i] = "m" .. i end
    assert.are.equal(table.concat(want, ","), ws_got)
    assert.are.equal("via Await", tcp_got)
  end)
end)

-- A handler in the style of gorilla's examples/command: a subprocess's stdout (a luv
-- pipe) pushed to the WebSocket; a reader goroutine kills the process when the
-- connection ends.
local function command_server(cmd, args, state)
  return support.server(function(c)
    local out = uv.new_pipe()
    local exited = false
    local proc, pid = uv.spawn(cmd, { args = args, stdio = { nil, out, nil } },
      function(code, signal)
        state.exit_code, state.exit_signal = code, signal
        exited = true
      end)
    assert(proc, pid)
    state.pid = pid
    websocket.Go(function()
      while c:ReadMessage() do end
      if not exited then proc:kill("sigterm") end
      state.killed = true
    end)
    while true do
      local err, data = read_once(out)
      if err or not data then break end
      if not c:WriteMessage(Binary, data) then break end
    end
    if not exited then proc:kill("sigterm") end
    while not exited do
      websocket.Await(function(cb)
        local t = uv.new_timer()
        t:start(10, 0, function() t:close() cb() end)
      end)
    end
    out:close()
    proc:close()
    c:Close()
    state.done = true
  end)
end

describe("issue 11: a subprocess's output over a WebSocket", function()
  it("streams 100 MB while another connection keeps echoing with no stall", function()
    local total = 100 * 1000 * 1000
    local state = {}
    local srv, port = command_server("head", { "-c", tostring(total), "/dev/zero" }, state)
    finally(function() srv:Close() end)
    local esrv, eport = support.echo_server()
    finally(function() esrv:Close() end)

    local received, stream_done, worst, echoes = 0, false, 0, 0
    local t0 = websocket.Now()
    websocket.Go(function()
      local c = assert(websocket.DefaultDialer:Dial(support.url(port)))
      while true do
        local mt, data = c:ReadMessage()
        if not mt then break end
        received = received + #data
      end
      c:Close()
      stream_done = websocket.Now()
    end)
    local echo_err
    websocket.Go(function()
      local c = assert(websocket.DefaultDialer:Dial(support.url(eport)))
      while not stream_done do
        local s = websocket.Now()
        c:WriteMessage(Text, "ping")
        local mt, data = c:ReadMessage()
        if data ~= "ping" then echo_err = tostring(mt) .. tostring(data) break end
        local lat = websocket.Now() - s
        if lat > worst then worst = lat end
        echoes = echoes + 1
        websocket.Sleep(0.01)
      end
      c:Close()
    end)
    assert.is_truthy(support.wait_for(function() return stream_done end, 60))
    assert.is_nil(echo_err)
    assert.are.equal(total, received)
    assert.is_truthy(support.wait_for(function() return state.done end, 5))
    assert.are.equal(0, state.exit_code)
    local secs = stream_done - t0
    print(("\n100 MB streamed in %.2f s (%.0f MB/s); %d echoes, worst echo latency %.1f ms")
      :format(secs, total / secs / 1e6, echoes, worst * 1000))
    assert.is_true(echoes >= 3, "echoes " .. echoes) -- 100 MB take about 0.1 s here
    assert.is_true(worst < 0.5, ("worst echo latency %.3f s"):format(worst))
  end)

  it("closing the WebSocket kills the subprocess", function()
    local state = {}
    local srv, port = command_server("yes", { "tick" }, state)
    finally(function() srv:Close() end)
    local got = support.run(function()
      local c = assert(websocket.DefaultDialer:Dial(support.url(port)))
      local n = 0
      for _ = 1, 3 do
        local mt, data = c:ReadMessage()
        assert.are.equal(Binary, mt)
        n = n + #data
      end
      c:Close()
      return n
    end)
    assert.is_true(got > 0)
    assert.is_truthy(support.wait_for(function() return state.done end, 5))
    assert.is_true(state.killed)
    assert.are.equal(15, state.exit_signal) -- SIGTERM
    assert.is_falsy(uv.kill(state.pid, 0))  -- gone (and reaped)
  end)
end)
