-- Conn:ReadMessage and Conn:WriteMessage take their common case in C (src/conn_fast.c),
-- parking the reader in the scheduler's C half (src/sched.c), and hand everything else
-- to conn.lua. These specs change the Lua-side state while a reader is parked in C, or
-- while a write goes on, and check that C notices: a second reader, a ping handler set
-- meanwhile, a NextWriter open in another goroutine, a failed write; and that misuse
-- still names the caller's line.
local support = require "support"
local websocket = support.websocket
local Go, Sleep = websocket.Go, websocket.Sleep

lazy_setup(function() support.keepalive(true) end)
lazy_teardown(function() support.keepalive(false) end)

local TEXT, BINARY, PING = websocket.TextMessage, websocket.BinaryMessage, websocket.PingMessage

-- A server that hands each upgraded connection to handler(c) in its goroutine; the
-- connection closes when it returns. Errors raised inside go to errs.
local function serve(handler)
  local errs = {}
  local up = websocket.Upgrader{}
  local srv = assert(websocket.Listen("127.0.0.1:0", function(w, r)
    local c = up:Upgrade(w, r)
    if not c then return end
    local ok, err = xpcall(handler, debug.traceback, c)
    if not ok then errs[#errs + 1] = err end
    c:Close()
  end))
  finally(function() srv:Close() end)
  return srv:Port(), errs
end

local function dial(port)
  local c, _, err = websocket.DefaultDialer:Dial(support.url(port))
  assert(c, "dial: " .. tostring(err))
  finally(function() c:Close() end)
  return c
end

describe("issue 9: ReadMessage parked in C", function()
  it("a second ReadMessage while the first is parked fails as concurrent; the first gets the message", function()
    local first, second = {}, {}
    local port, errs = serve(function(c)
      Go(function() first.mt, first.data, first.err = c:ReadMessage() end)
      Sleep(0.05) -- the first is parked in C now
      second.mt, second.data, second.err = c:ReadMessage()
      assert(support.wait_for(function() return first.mt or first.err end, 5))
      -- once the first is done, reading works again
      local mt, data = c:ReadMessage()
      c:WriteMessage(mt, "again:" .. data)
    end)
    local c = dial(port)
    Sleep(0.2)
    assert.is_true((c:WriteMessage(TEXT, "one")))
    assert.is_true((c:WriteMessage(TEXT, "two")))
    local _, data, err = c:ReadMessage()
    assert.is_nil(err)
    assert.are.equal("again:two", data)
    assert.are.same({}, errs)
    assert.is_nil(second.mt)
    assert.matches("concurrent ReadMessage", tostring(second.err), 1, true)
    assert.are.equal(TEXT, first.mt)
    assert.are.equal("one", first.data)
  end)

  it("a ping handler set while the reader is parked runs in that reader, before its message", function()
    local seen = {}
    local port, errs = serve(function(c)
      local reader
      Go(function()
        reader = coroutine.running()
        seen.mt, seen.data = c:ReadMessage()
        seen.done = true
      end)
      Sleep(0.05) -- parked in C, with no handler yet
      c:SetPingHandler(function(data)
        seen.ping, seen.ping_co = data, coroutine.running()
      end)
      assert(support.wait_for(function() return seen.done end, 5))
      seen.same_co = seen.ping_co == reader
      c:WriteMessage(TEXT, "ok")
    end)
    local c = dial(port)
    local pongs = {}
    c:SetPongHandler(function(data) pongs[#pongs + 1] = data end)
    Sleep(0.2)
    assert.is_true(c:WriteControl(PING, "p1"))
    assert.is_true((c:WriteMessage(BINARY, "m1")))
    local _, data, err = c:ReadMessage()
    assert.is_nil(err)
    assert.are.equal("ok", data)
    assert.are.same({}, errs)
    assert.are.equal("p1", seen.ping)
    assert.is_true(seen.same_co)
    assert.are.equal(BINARY, seen.mt)
    assert.are.equal("m1", seen.data)
    assert.are.same({}, pongs) -- the handler answered nothing
  end)

  it("the parked reader gets the close error once the peer closes", function()
    local seen = {}
    local port = serve(function(c)
      seen.mt, seen.data, seen.err = c:ReadMessage()
      seen.done = true
    end)
    local c = dial(port)
    Sleep(0.1)
    c:WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4001, "bye"))
    assert.is_truthy(support.wait_for(function() return seen.done end, 5))
    assert.is_nil(seen.mt)
    assert.is_true(websocket.IsCloseError(seen.err, 4001))
  end)
end)

describe("issue 9: WriteMessage's C path", function()
  it("waits for a NextWriter another goroutine holds open: the messages do not interleave", function()
    local port, errs = serve(function(c)
      local w = assert(c:NextWriter(TEXT))
      assert(w:Write("a1"))
      local wrote
      Go(function() wrote = c:WriteMessage(TEXT, "b") end)
      Sleep(0.05)
      assert(w:Write("a2"))
      assert(w:Close())
      assert(support.wait_for(function() return wrote end, 5))
    end)
    local c = dial(port)
    local _, m1 = c:ReadMessage()
    local _, m2 = c:ReadMessage()
    assert.are.same({ "a1a2", "b" }, { m1, m2 })
    assert.are.same({}, errs)
  end)

  it("after a failed write, every WriteMessage returns that error", function()
    local got = {}
    local port = serve(function(c)
      c:WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""))
      got[1] = select(2, c:WriteMessage(TEXT, "x"))
      got[2] = select(2, c:WriteMessage(BINARY, "y"))
      got.done = true
    end)
    dial(port)
    assert.is_truthy(support.wait_for(function() return got.done end, 5))
    assert.are.equal(websocket.ErrCloseSent, got[1])
    assert.are.equal(websocket.ErrCloseSent, got[2])
  end)
end)

describe("issue 9: misuse of the C methods names the caller", function()
  it("bad self and bad arguments raise at the caller's line", function()
    local port = serve(function(c) c:ReadMessage() end)
    local c = dial(port)
    local line = debug.getinfo(1, "l").currentline
    local e1 = support.raises(function() return c.ReadMessage(42) end)
    local e2 = support.raises(function() return c.WriteMessage(42, TEXT, "x") end)
    local e3 = support.raises(function() return c:WriteMessage(7, "x") end)
    local e4 = support.raises(function() return c:WriteMessage(TEXT, {}) end)
    local where = "issue9_fastpath_spec.lua:"
    assert.matches(where .. (line + 1) .. ": bad self to 'ReadMessage'", e1, 1, true)
    assert.matches(where .. (line + 2) .. ": bad self to 'WriteMessage'", e2, 1, true)
    assert.matches(where .. (line + 3) .. ": bad argument #1 to 'WriteMessage' (unknown message type 7)", e3, 1, true)
    assert.matches(where .. (line + 4) .. ": bad argument #2 to 'WriteMessage' (string expected, got table)", e4, 1, true)
  end)
end)
