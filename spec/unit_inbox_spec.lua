-- Unit spec of the received-message buffer (src/inbox.c, luaws_inbox_*) without
-- sockets, through the test-only module luaws_unit (`make unit`): messages in order, a
-- streaming reader taking a message as it arrives, discarding, dropping the arriving
-- message, cutting at a limit, the pool of buffers for big messages, unread counts.
local ok, unit = pcall(require, "luaws_unit")
if not ok then error("luaws_unit not built: run `make unit` (make test builds it)\n" .. unit) end

local R = unit.RECORD_HEADER -- type byte and size_t length before each payload
local TEXT, BINARY = 1, 2

local function add(inbox, type, data, spare)
  assert.is_true(inbox:begin(type, #data, spare))
  assert.is_true(inbox:append(data, spare))
  assert.is_true(inbox:finish())
end

-- Read the head message whole: type, data (and check that consuming it ends it).
local function take(inbox, spare)
  local t = inbox:head_type()
  local data = inbox:peek()
  assert.is_true(inbox:consume(#data, spare))
  return t, data
end

describe("luaws_inbox", function()
  it("starts empty", function()
    local inbox = unit.inbox()
    assert.are.equal(0, inbox:head_type())
    assert.are.equal(0, inbox:partial_type())
    assert.are.equal("", inbox:peek())
    assert.are.equal(0, inbox:unread())
    assert.is_false(inbox:finish())
    assert.is_false(inbox:cut_over(0))
  end)

  it("gives messages in order, with their types", function()
    local inbox = unit.inbox()
    add(inbox, TEXT, "hello")
    add(inbox, BINARY, "\0\1\2")
    add(inbox, TEXT, "")
    add(inbox, BINARY, ("x"):rep(1000))
    assert.are.same({ TEXT, "hello" }, { take(inbox) })
    assert.are.same({ BINARY, "\0\1\2" }, { take(inbox) })
    assert.are.equal(TEXT, inbox:head_type())
    assert.are.equal("", inbox:peek())
    assert.is_true(inbox:consume(0))
    assert.are.same({ BINARY, ("x"):rep(1000) }, { take(inbox) })
    assert.are.equal(0, inbox:head_type())
    assert.are.equal(0, inbox:unread())
  end)

  it("counts unread bytes: record headers, payloads, and the arriving message", function()
    local inbox = unit.inbox()
    assert.is_true(inbox:begin(TEXT, 0))
    assert.are.equal(R, inbox:unread())
    assert.is_true(inbox:append("hello"))
    assert.are.equal(R + 5, inbox:unread())
    assert.is_true(inbox:finish())
    assert.are.equal(R + 5, inbox:unread())
    add(inbox, BINARY, "abc")
    assert.are.equal(2 * R + 8, inbox:unread())
    assert.is_true(inbox:begin(BINARY, 0))
    assert.is_true(inbox:append("zz"))
    assert.are.equal(3 * R + 10, inbox:unread())
    -- a whole message partly taken still counts whole until it ends
    assert.is_false(inbox:consume(2))
    assert.are.equal(3 * R + 10, inbox:unread())
    assert.is_true(inbox:consume(3))
    assert.are.equal(2 * R + 5, inbox:unread())
    take(inbox)
    assert.are.equal(R + 2, inbox:unread())
  end)

  it("appends in pieces and peeks at most max bytes", function()
    local inbox = unit.inbox()
    assert.is_true(inbox:begin(BINARY, 2))
    for _, piece in ipairs({ "ab", "", "cde", "f" }) do assert.is_true(inbox:append(piece)) end
    assert.are.equal(BINARY, inbox:partial_type())
    assert.is_true(inbox:finish())
    assert.are.equal(0, inbox:partial_type())
    assert.are.equal("abc", inbox:peek(3))
    assert.are.equal("", inbox:peek(0))
    assert.are.equal("abcdef", inbox:peek(100))
  end)

  it("consumes a message to its end in pieces", function()
    local inbox = unit.inbox()
    add(inbox, BINARY, "0123456789")
    add(inbox, TEXT, "next")
    local got = {}
    while true do
      local piece = inbox:peek(3)
      got[#got + 1] = piece
      if inbox:consume(#piece) then break end
      assert.are.equal(BINARY, inbox:head_type())
    end
    assert.are.same({ "012", "345", "678", "9" }, got)
    assert.are.same({ TEXT, "next" }, { take(inbox) })
  end)

  describe("a streaming reader", function()
    it("takes the message at the head while it arrives", function()
      local inbox = unit.inbox()
      assert.is_true(inbox:begin(TEXT, 0))
      assert.are.equal(TEXT, inbox:head_type())
      assert.are.equal("", inbox:peek())
      assert.is_true(inbox:append("ab"))
      assert.are.equal("ab", inbox:peek())
      -- what it took is forgotten: the buffer holds only the record header again
      assert.is_false(inbox:consume(2))
      assert.are.equal(R, inbox:unread())
      assert.are.equal("", inbox:peek())
      assert.is_true(inbox:append("cd"))
      assert.is_false(inbox:consume(1))
      assert.are.equal("d", inbox:peek())
      assert.is_true(inbox:append("ef"))
      assert.are.equal("def", inbox:peek())
      assert.is_true(inbox:finish())
      assert.are.equal("def", inbox:peek())
      assert.is_false(inbox:consume(1))
      assert.is_true(inbox:consume(2))
      assert.are.equal(0, inbox:head_type())
      assert.are.equal(0, inbox:unread())
    end)

    it("gets to an arriving message only after the whole ones before it", function()
      local inbox = unit.inbox()
      add(inbox, TEXT, "first")
      assert.is_true(inbox:begin(BINARY, 0))
      assert.is_true(inbox:append("sec"))
      assert.are.equal(TEXT, inbox:head_type())
      assert.are.equal(BINARY, inbox:partial_type())
      assert.are.same({ TEXT, "first" }, { take(inbox) })
      assert.are.equal(BINARY, inbox:head_type())
      assert.are.equal("sec", inbox:peek())
      assert.is_false(inbox:consume(3))
      assert.is_true(inbox:append("ond"))
      assert.is_true(inbox:finish())
      assert.are.same({ BINARY, "ond" }, { take(inbox) })
    end)
  end)

  describe("discard", function()
    it("drops a whole head message", function()
      local inbox = unit.inbox()
      add(inbox, TEXT, "one")
      add(inbox, BINARY, "two")
      inbox:discard()
      assert.are.same({ BINARY, "two" }, { take(inbox) })
    end)

    it("drops the rest of a partly read whole message", function()
      local inbox = unit.inbox()
      add(inbox, TEXT, "one two")
      add(inbox, BINARY, "three")
      assert.is_false(inbox:consume(3))
      inbox:discard()
      assert.are.same({ BINARY, "three" }, { take(inbox) })
    end)

    it("drops an arriving message, the rest of it as it comes", function()
      local inbox = unit.inbox()
      assert.is_true(inbox:begin(BINARY, 0))
      assert.is_true(inbox:append("abc"))
      assert.is_false(inbox:consume(1))
      inbox:discard()
      assert.are.equal("", inbox:peek())
      assert.is_true(inbox:append(("x"):rep(100)))
      assert.are.equal("", inbox:peek())
      assert.are.equal(R, inbox:unread())
      -- nothing readable until the next message: the dropped one is not offered
      assert.are.equal(0, inbox:head_type())
      assert.is_false(inbox:finish()) -- it was discarded
      assert.are.equal(0, inbox:unread())
      assert.are.equal(0, inbox:head_type())
      add(inbox, TEXT, "after")
      assert.are.same({ TEXT, "after" }, { take(inbox) })
    end)
  end)

  describe("drop_partial", function()
    it("drops the arriving message and keeps the whole ones", function()
      local inbox = unit.inbox()
      add(inbox, TEXT, "kept")
      assert.is_true(inbox:begin(BINARY, 0))
      assert.is_true(inbox:append("lost"))
      inbox:drop_partial()
      assert.are.equal(0, inbox:partial_type())
      assert.are.equal(R + 4, inbox:unread())
      assert.are.same({ TEXT, "kept" }, { take(inbox) })
      assert.are.equal(0, inbox:head_type())
      inbox:drop_partial() -- nothing arriving: nothing happens
      assert.are.equal(0, inbox:unread())
    end)

    it("leaves a partly read whole head message where the reader was", function()
      -- (a failing connection drops what is arriving; the reader goes on where it was)
      local inbox = unit.inbox()
      add(inbox, BINARY, "0123456789")
      assert.is_false(inbox:consume(4))
      assert.is_true(inbox:begin(TEXT, 0))
      assert.is_true(inbox:append("arriving"))
      inbox:drop_partial()
      assert.are.equal("456789", inbox:peek())
      assert.is_true(inbox:consume(6))
      assert.are.equal(0, inbox:head_type())
    end)

    it("drops an arriving message a streaming reader was taking", function()
      local inbox = unit.inbox()
      assert.is_true(inbox:begin(TEXT, 0))
      assert.is_true(inbox:append("abcd"))
      assert.is_false(inbox:consume(1))
      inbox:drop_partial()
      assert.are.same({ msgs = 0, head = 0, partial = false, taken = 0, discarding = false },
        (function(s) return { msgs = s.msgs, head = s.head, partial = s.partial,
          taken = s.taken, discarding = s.discarding } end)(inbox:state()))
      assert.are.equal(0, inbox:head_type())
      add(inbox, BINARY, "new")
      assert.are.same({ BINARY, "new" }, { take(inbox) })
    end)

    it("ends a discard in progress", function()
      local inbox = unit.inbox()
      assert.is_true(inbox:begin(TEXT, 0))
      inbox:discard()
      inbox:drop_partial()
      add(inbox, TEXT, "readable")
      assert.are.same({ TEXT, "readable" }, { take(inbox) })
    end)
  end)

  describe("cut_over", function()
    it("drops the first whole message over the limit and everything after it", function()
      local inbox = unit.inbox()
      add(inbox, TEXT, "abc")
      add(inbox, BINARY, ("x"):rep(10))
      add(inbox, TEXT, "de")
      assert.is_true(inbox:begin(BINARY, 0))
      assert.is_true(inbox:append("arriving"))
      assert.is_true(inbox:cut_over(5))
      assert.are.equal(R + 3, inbox:unread())
      assert.are.equal(0, inbox:partial_type())
      assert.are.same({ TEXT, "abc" }, { take(inbox) })
      assert.are.equal(0, inbox:head_type())
    end)

    it("at the head message, partly read", function()
      local inbox = unit.inbox()
      add(inbox, BINARY, ("y"):rep(10))
      add(inbox, TEXT, "ok")
      assert.is_false(inbox:consume(4))
      assert.is_true(inbox:cut_over(9))
      assert.are.equal(0, inbox:head_type())
      assert.are.equal(0, inbox:unread())
      assert.are.equal(0, inbox:state().taken)
      add(inbox, TEXT, "later")
      assert.are.same({ TEXT, "later" }, { take(inbox) })
    end)

    it("keeps everything when no whole message is over the limit", function()
      local inbox = unit.inbox()
      add(inbox, TEXT, "abc")
      add(inbox, TEXT, "abcde")
      assert.is_true(inbox:begin(BINARY, 0))
      assert.is_true(inbox:append(("z"):rep(50))) -- arriving: not its business
      local before = inbox:unread()
      assert.is_false(inbox:cut_over(5))
      assert.are.equal(before, inbox:unread())
      assert.are.equal(BINARY, inbox:partial_type())
      assert.are.same({ TEXT, "abc" }, { take(inbox) })
      assert.are.same({ TEXT, "abcde" }, { take(inbox) })
    end)

    it("skips messages already read", function()
      local inbox = unit.inbox()
      add(inbox, TEXT, ("long"):rep(10))
      add(inbox, TEXT, "s")
      take(inbox)
      assert.is_false(inbox:cut_over(1))
      assert.are.same({ TEXT, "s" }, { take(inbox) })
    end)
  end)

  describe("the pool of big buffers for messages over 64 KiB", function()
    local BIG = 100 * 1024

    it("gives an empty inbox the smallest buffer big enough, and takes it back when it empties", function()
      local pool = unit.pool()
      pool:stock(512 * 1024)
      pool:stock(128 * 1024)
      pool:stock(256 * 1024)
      local bytes, bufs = pool:info()
      assert.are.equal(896 * 1024, bytes)
      local small = bufs[2]
      assert.are.equal(128 * 1024, small.cap)
      local inbox = unit.inbox()
      assert.is_true(inbox:begin(BINARY, BIG, pool))
      assert.are.equal(small.data, inbox:state().data)
      bytes, bufs = pool:info()
      assert.are.equal(768 * 1024, bytes)
      assert.are.equal(2, #bufs)
      assert.is_true(inbox:append(("b"):rep(BIG), pool))
      assert.is_true(inbox:finish())
      assert.are.equal(small.data, inbox:state().data) -- it had room: no realloc
      assert.are.same({ BINARY, ("b"):rep(BIG) }, { take(inbox, pool) })
      assert.are.equal(0, inbox:state().cap)
      bytes, bufs = pool:info()
      assert.are.equal(896 * 1024, bytes)
      assert.are.same(small, bufs[3])
    end)

    it("gives one to a message whose header came alone, keeping the record header", function()
      local pool = unit.pool()
      pool:stock(128 * 1024)
      local _, bufs = pool:info()
      local inbox = unit.inbox()
      assert.is_true(inbox:begin(TEXT, 0, pool)) -- the header alone: nothing yet
      assert.are_not.equal(bufs[1].data, inbox:state().data)
      assert.is_true(inbox:append(("h"):rep(BIG), pool))
      assert.are.equal(bufs[1].data, inbox:state().data)
      assert.are.equal(TEXT, inbox:partial_type())
      assert.is_true(inbox:finish())
      assert.are.same({ TEXT, ("h"):rep(BIG) }, { take(inbox, pool) })
    end)

    it("has none for a message bigger than its buffers; the inbox's own goes in after", function()
      local pool = unit.pool()
      pool:stock(128 * 1024)
      local inbox = unit.inbox()
      assert.is_true(inbox:begin(BINARY, 200 * 1024, pool))
      local st = inbox:state()
      assert.is_true(st.cap >= 200 * 1024)
      assert.are.equal(128 * 1024, (pool:info()))
      assert.is_true(inbox:append(("c"):rep(200 * 1024), pool))
      assert.is_true(inbox:finish())
      take(inbox, pool)
      assert.are.equal(0, inbox:state().cap)
      local bytes, bufs = pool:info()
      assert.are.equal(128 * 1024 + st.cap, bytes)
      assert.are.same({ cap = st.cap, data = st.data }, bufs[2])
    end)

    it("is not used for a small message or by an inbox that holds something", function()
      local pool = unit.pool()
      pool:stock(128 * 1024)
      local _, before = pool:info()
      local inbox = unit.inbox()
      add(inbox, TEXT, "small", pool)
      assert.is_true(inbox:begin(BINARY, BIG, pool)) -- not empty: grows its own
      assert.are.same(before, select(2, pool:info()))
      assert.are.not_equal(before[1].data, inbox:state().data)
      inbox:drop_partial()
      take(inbox, pool)
    end)

    it("a buffer of at most 64 KiB stays with its inbox when it empties", function()
      local pool = unit.pool()
      local inbox = unit.inbox()
      add(inbox, BINARY, ("s"):rep(1000), pool)
      local st = inbox:state()
      take(inbox, pool)
      assert.are.equal(st.cap, inbox:state().cap)
      assert.are.equal(st.data, inbox:state().data)
      assert.are.equal(0, (pool:info()))
    end)

    it("without a pool, a big buffer is freed when the inbox empties", function()
      local inbox = unit.inbox()
      add(inbox, BINARY, ("f"):rep(BIG))
      take(inbox)
      assert.are.equal(0, inbox:state().cap)
    end)

    it("takes the buffer back on a discard that empties the inbox", function()
      local pool = unit.pool()
      pool:stock(128 * 1024)
      local _, bufs = pool:info()
      local inbox = unit.inbox()
      add(inbox, BINARY, ("d"):rep(BIG), pool)
      inbox:discard(pool)
      assert.are.same(bufs, select(2, pool:info()))
      assert.are.equal(0, inbox:head_type())
    end)

    it("keeps at most POOL_BUFFERS buffers; the rest are freed", function()
      local pool = unit.pool()
      local inboxes = {}
      for i = 1, unit.POOL_BUFFERS + 2 do
        inboxes[i] = unit.inbox()
        add(inboxes[i], BINARY, ("p"):rep(BIG), pool)
      end
      for i = 1, #inboxes do take(inboxes[i], pool) end
      local _, bufs = pool:info()
      assert.are.equal(unit.POOL_BUFFERS, #bufs)
      for i = 1, #inboxes do assert.are.equal(0, inboxes[i]:state().cap) end
    end)
  end)

  it("keeps the arriving message intact when read messages are moved out of the way", function()
    -- pop moves the unread rest to the front once the head passes half the buffer
    local inbox = unit.inbox()
    for i = 1, 6 do add(inbox, BINARY, ("%d"):format(i):rep(100)) end
    assert.is_true(inbox:begin(TEXT, 0))
    assert.is_true(inbox:append("arr"))
    for i = 1, 5 do
      assert.are.same({ BINARY, ("%d"):format(i):rep(100) }, { take(inbox) })
    end
    assert.are.equal(0, inbox:state().head)
    assert.is_true(inbox:append("iving"))
    assert.is_true(inbox:finish())
    assert.are.same({ BINARY, ("6"):rep(100) }, { take(inbox) })
    assert.are.same({ TEXT, "arriving" }, { take(inbox) })
  end)

  it("matches a model of the queue under random operations (fixed seed)", function()
    math.randomseed(6455)
    local spare = unit.pool()
    for _ = 1, 40 do
      local inbox = unit.inbox()
      -- the model: whole messages {type, data, taken}; the arriving one
      local whole, arriving = {}, nil
      local function head()
        if whole[1] then return whole[1] end
        if arriving and not arriving.discarding then return arriving end
      end
      for _ = 1, 400 do
        local op = math.random(100)
        if op <= 15 and not arriving then
          local t = math.random(1, 2)
          assert.is_true(inbox:begin(t, math.random(0, 3) == 0 and 70000 or 10, spare))
          arriving = { type = t, data = "", taken = 0 }
        elseif op <= 45 and arriving then
          local n = math.random() < 0.05 and math.random(30000, 90000) or math.random(0, 300)
          local s = string.char(math.random(0, 255)):rep(n)
          assert.is_true(inbox:append(s, spare))
          if not arriving.discarding then arriving.data = arriving.data .. s end
        elseif op <= 55 and arriving then
          local readable = inbox:finish()
          assert.are.equal(not arriving.discarding, readable)
          if readable then whole[#whole + 1] = arriving end
          arriving = nil
        elseif op <= 80 then
          local h = head()
          if h then
            local want = h.data:sub(h.taken + 1)
            local max = math.random(0, 200)
            assert.are.equal(want:sub(1, max), inbox:peek(max))
            local n = math.min(max, #want)
            local ended = inbox:consume(n, spare)
            h.taken = h.taken + n
            if h == arriving and h.taken == #h.data then
              h.forgot = h.taken -- all that arrived is taken: the inbox forgets it
            end
            if h == whole[1] then
              assert.are.equal(h.taken == #h.data, ended)
              if ended then table.remove(whole, 1) end
            else
              assert.is_false(ended)
            end
          end
        elseif op <= 88 then
          local h = head()
          inbox:discard(spare)
          if h == whole[1] and h then table.remove(whole, 1)
          elseif h then h.discarding, h.data, h.taken, h.forgot = true, "", 0, 0 end
        elseif op <= 92 then
          inbox:drop_partial()
          arriving = nil
        else
          local limit = math.random(0, 400)
          local cut = false
          for i, m in ipairs(whole) do
            if #m.data - (m.forgot or 0) > limit then -- what the inbox still holds
              for k = #whole, i, -1 do whole[k] = nil end
              arriving, cut = nil, true
              break
            end
          end
          assert.are.equal(cut, inbox:cut_over(limit))
        end
        local h = head()
        assert.are.equal(h and h.type or 0, inbox:head_type())
        assert.are.equal(h and h.data:sub(h.taken + 1) or "", inbox:peek())
        assert.are.equal(arriving and arriving.type or 0, inbox:partial_type())
      end
    end
  end)
end)
