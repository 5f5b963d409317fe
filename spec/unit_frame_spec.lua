-- Unit spec of the frame parser, the header writer and masking (src/frame.c), without
-- sockets: the test-only module luaws_unit (spec/unit/luaws_unit.c, `make unit`) feeds
-- exact bytes to luaws_frame_next and returns its events as tables.
local ok, unit = pcall(require, "luaws_unit")
if not ok then error("luaws_unit not built: run `make unit` (make test builds it)\n" .. unit) end

-- "81 05 48 65" -> bytes; spaces are ignored
local function hex(s)
  return (s:gsub("%s+", ""):gsub("..", function(h) return string.char(tonumber(h, 16)) end))
end

local function tohex(s)
  return (s:gsub(".", function(c) return ("%02x "):format(c:byte()) end):gsub(" $", ""))
end

local function xor(s, key, pos)
  pos = pos or 0
  local out = {}
  for i = 1, #s do
    out[i] = string.char(s:byte(i) ~ key:byte((pos + i - 1) % 4 + 1))
  end
  return table.concat(out)
end

-- A whole frame: header (7-, 16- or 64-bit length as the length needs, or `form` to
-- force one), the key, the payload (masked with the key).
local function frame(b0, payload, key, form)
  local n = #payload
  local m = key and 0x80 or 0
  local len
  form = form or (n < 126 and 7 or n <= 0xffff and 16 or 64)
  if form == 7 then
    len = string.char(m | n)
  elseif form == 16 then
    len = string.char(m | 126) .. string.pack(">I2", n)
  else
    len = string.char(m | 127) .. string.pack(">I8", n)
  end
  return string.char(b0) .. len .. (key or "") .. (key and xor(payload, key) or payload)
end

local KEY = hex("37 fa 21 3d")

-- The events of one feed, without mask_pos (checked on its own below).
local function feed(p, bytes)
  local evs, left = p:feed(bytes)
  for _, ev in ipairs(evs) do ev.mask_pos = nil end
  return evs, left
end

local function ev(opcode, fin, first, last, data, frame_len)
  return { opcode = opcode, fin = fin, first = first, last = last, data = data,
           frame_len = frame_len or #data }
end

-- Per frame: opcode, fin, claimed length and the payload joined from its events; and
-- each frame has exactly one first and one last event, in that order.
local function frames_of(evs)
  local out, cur = {}, nil
  for _, e in ipairs(evs) do
    if e.error then
      out[#out + 1] = { error = e.error, reason = e.reason }
    else
      if e.first then
        assert(cur == nil, "first event inside a frame")
        cur = { opcode = e.opcode, fin = e.fin, frame_len = e.frame_len, data = {} }
      end
      assert(cur, "payload event outside a frame")
      assert.are.equal(cur.opcode, e.opcode)
      assert.are.equal(cur.frame_len, e.frame_len)
      cur.data[#cur.data + 1] = e.data
      if e.last then
        cur.data = table.concat(cur.data)
        out[#out + 1] = cur
        cur = nil
      end
    end
  end
  if cur then cur.data = table.concat(cur.data); cur.open = true; out[#out + 1] = cur end
  return out
end

describe("luaws_frame_header", function()
  local cases = {
    { "text, empty", true, 1, 0, nil, "81 00" },
    { "text, 5", true, 1, 5, nil, "81 05" },
    { "not fin", false, 1, 5, nil, "01 05" },
    { "continuation", true, 0, 3, nil, "80 03" },
    { "7-bit maximum", true, 2, 125, nil, "82 7d" },
    { "16-bit minimum", true, 2, 126, nil, "82 7e 00 7e" },
    { "16-bit maximum", true, 2, 65535, nil, "82 7e ff ff" },
    { "64-bit minimum", true, 2, 65536, nil, "82 7f 00 00 00 00 00 01 00 00" },
    { "64-bit, over 32 bits", true, 2, 1 << 32, nil, "82 7f 00 00 00 01 00 00 00 00" },
    { "64-bit, large", true, 2, 0x0102030405060708, nil, "82 7f 01 02 03 04 05 06 07 08" },
    { "masked, 7-bit", true, 9, 0, KEY, "89 80 37 fa 21 3d" },
    { "masked, 16-bit", true, 1, 300, KEY, "81 fe 01 2c 37 fa 21 3d" },
    { "masked, 64-bit", true, 2, 70000, KEY, "82 ff 00 00 00 00 00 01 11 70 37 fa 21 3d" },
    { "close", true, 8, 2, nil, "88 02" },
    { "pong", true, 10, 125, nil, "8a 7d" },
  }
  for _, c in ipairs(cases) do
    it(c[1], function()
      assert.are.equal(c[6], tohex(unit.header(c[2], c[3], c[4], c[5])))
    end)
  end

  it("writes headers the parser reads back", function()
    for _, n in ipairs({ 0, 1, 125, 126, 127, 65535, 65536, 70000 }) do
      for _, key in ipairs({ false, KEY }) do
        local payload = ("x"):rep(n)
        local bytes = unit.header(true, 2, n, key or nil) .. (key and xor(payload, key) or payload)
        local evs, left = feed(unit.parser(key and true), bytes)
        assert.are.same({ ev(2, true, true, true, payload) }, evs)
        assert.are.equal(0, left)
      end
    end
  end)
end)

describe("luaws_mask", function()
  it("is the XOR with the key from the key position, at every alignment and length", function()
    local s = {}
    for i = 1, 70 do s[i] = string.char((i * 37 + 11) % 256) end
    s = table.concat(s)
    for off = 0, 7 do
      for pos = 0, 5 do
        for n = 0, 70 do
          local sub = s:sub(1, n)
          assert.are.equal(xor(sub, KEY, pos), unit.mask(sub, KEY, pos, off),
            ("offset %d, pos %d, length %d"):format(off, pos, n))
        end
      end
    end
  end)

  it("masks a payload in pieces the same as in one go (pos carries the key position)", function()
    local s = ("The quick brown fox jumps over the lazy dog."):rep(3)
    local whole = unit.mask(s, KEY, 0)
    for cut = 0, #s do
      local a = unit.mask(s:sub(1, cut), KEY, 0)
      local b = unit.mask(s:sub(cut + 1), KEY, cut, (cut * 3) % 8)
      assert.are.equal(whole, a .. b, "cut at " .. cut)
    end
  end)
end)

describe("luaws_frame_next", function()
  describe("accepts", function()
    -- name, expect_masked, bytes, events
    local cases = {
      { "an unmasked server frame (RFC 6455 5.7)", false, "81 05 48 65 6c 6c 6f",
        { ev(1, true, true, true, "Hello") } },
      { "a masked client frame (RFC 6455 5.7)", true, "81 85 37 fa 21 3d 7f 9f 4d 51 58",
        { ev(1, true, true, true, "Hello") } },
      { "an empty text frame", false, "81 00", { ev(1, true, true, true, "") } },
      { "an empty masked binary frame", true, "82 80 01 02 03 04",
        { ev(2, true, true, true, "") } },
      { "a fragmented text message (RFC 6455 5.7)", false, "01 03 48 65 6c 80 02 6c 6f",
        { ev(1, false, true, true, "Hel"), ev(0, true, true, true, "lo") } },
      { "a ping between the fragments of a message", false, "01 01 61 89 01 70 80 01 62",
        { ev(1, false, true, true, "a"), ev(9, true, true, true, "p"),
          ev(0, true, true, true, "b") } },
      { "an empty continuation ending a message", false, "02 01 00 80 00",
        { ev(2, false, true, true, "\0"), ev(0, true, true, true, "") } },
      { "a close frame with code 1000", false, "88 02 03 e8",
        { ev(8, true, true, true, hex("03 e8")) } },
      { "a 125-byte ping", false, "89 7d" .. ("41 "):rep(125),
        { ev(9, true, true, true, ("A"):rep(125)) } },
      { "a 125-byte pong in the 16-bit form", false, "8a 7e 00 7d" .. ("42 "):rep(125),
        { ev(10, true, true, true, ("B"):rep(125)) } },
      { "a small length in the 16-bit form (not minimal; accepted, as gorilla)", false,
        "82 7e 00 03 01 02 03", { ev(2, true, true, true, hex("01 02 03")) } },
      { "a small length in the 64-bit form", false,
        "82 7f 00 00 00 00 00 00 00 02 01 02", { ev(2, true, true, true, hex("01 02")) } },
      { "two frames in one read", false, "81 01 61 82 02 62 63",
        { ev(1, true, true, true, "a"), ev(2, true, true, true, "bc") } },
    }
    for _, c in ipairs(cases) do
      it(c[1], function()
        local evs, left = feed(unit.parser(c[2]), hex(c[3]))
        assert.are.same(c[4], evs)
        assert.are.equal(0, left)
      end)
    end

    it("every length form at its boundaries, masked and unmasked", function()
      for _, n in ipairs({ 0, 1, 125, 126, 127, 65535, 65536, 65537, 200000 }) do
        for _, key in ipairs({ false, KEY }) do
          local payload = {}
          for i = 1, n do payload[i] = string.char(i % 251) end
          payload = table.concat(payload)
          local bytes = frame(0x82, payload, key or nil)
          local hdr = (n < 126 and 2 or n <= 0xffff and 4 or 10) + (key and 4 or 0)
          assert.are.equal(hdr + n, #bytes)
          local evs, left = feed(unit.parser(key and true), bytes)
          assert.are.same({ ev(2, true, true, true, payload) }, evs, "length " .. n)
          assert.are.equal(0, left)
        end
      end
    end)
  end)

  describe("fails the connection (1002) on", function()
    -- name, expect_masked, bytes, reason, events before the error
    local cases = {
      { "RSV1", false, "c1 00", "reserved bits set" },
      { "RSV2", false, "a1 00", "reserved bits set" },
      { "RSV3", false, "91 00", "reserved bits set" },
      { "all RSV bits on a ping", false, "f9 00", "reserved bits set" },
      { "RSV1 on a masked client frame", true, "c1 80 00 00 00 00", "reserved bits set" },
      { "a masked frame from a server", false, "81 81 01 02 03 04 05",
        "masked server frame" },
      { "an unmasked frame from a client", true, "81 01 61", "unmasked client frame" },
      { "opcode 3", false, "83 00", "unknown opcode" },
      { "opcode 4", false, "84 00", "unknown opcode" },
      { "opcode 5", false, "85 00", "unknown opcode" },
      { "opcode 6", false, "86 00", "unknown opcode" },
      { "opcode 7", false, "87 00", "unknown opcode" },
      { "opcode 0xb", false, "8b 00", "unknown opcode" },
      { "opcode 0xc", false, "8c 00", "unknown opcode" },
      { "opcode 0xd", false, "8d 00", "unknown opcode" },
      { "opcode 0xe", false, "8e 00", "unknown opcode" },
      { "opcode 0xf", false, "8f 00", "unknown opcode" },
      { "a fragmented close", false, "08 00", "fragmented control frame" },
      { "a fragmented ping", false, "09 00", "fragmented control frame" },
      { "a fragmented pong", false, "0a 00", "fragmented control frame" },
      { "a 126-byte ping", false, "89 7e 00 7e", "control frame longer than 125 bytes" },
      { "a 126-byte close, masked", true, "88 fe 00 7e 01 02 03 04",
        "control frame longer than 125 bytes" },
      { "a pong claiming 2^32 bytes", false, "8a 7f 00 00 00 01 00 00 00 00",
        "control frame longer than 125 bytes" },
      { "a continuation with no message", false, "80 01 61",
        "continuation with no message started" },
      { "a non-final continuation with no message", false, "00 00",
        "continuation with no message started" },
      { "a continuation after a whole message", false, "81 01 61 80 01 62",
        "continuation with no message started", { ev(1, true, true, true, "a") } },
      { "a text frame inside a fragmented message", false, "01 01 61 81 01 62",
        "new message inside a fragmented message", { ev(1, false, true, true, "a") } },
      { "a binary frame inside a fragmented message", false, "02 01 61 00 01 62 02 00",
        "new message inside a fragmented message",
        { ev(2, false, true, true, "a"), ev(0, false, true, true, "b") } },
      { "a 64-bit length with the top bit set", false, "82 7f 80 00 00 00 00 00 00 00",
        "frame length with the top bit set" },
      { "a 64-bit length of all ones", false, "82 7f ff ff ff ff ff ff ff ff",
        "frame length with the top bit set" },
    }
    for _, c in ipairs(cases) do
      it(c[1], function()
        local p = unit.parser(c[2])
        local evs = feed(p, hex(c[3]))
        local want = {}
        for i, e in ipairs(c[5] or {}) do want[i] = e end
        want[#want + 1] = { error = 1002, reason = c[4] }
        assert.are.same(want, evs)
        -- the parser stays failed
        assert.are.same({ { error = 1002, reason = "connection already failed" } },
          (feed(p, hex("81 00"))))
      end)
    end

    it("as soon as the header is complete, before its payload", function()
      local p = unit.parser(false)
      assert.are.same({}, (feed(p, hex("c2 7e 00"))))
      local evs, left = feed(p, hex("10") .. ("x"):rep(50))
      assert.are.same({ { error = 1002, reason = "reserved bits set" } }, evs)
      assert.are.equal(50, left)
    end)

    it("the same way fed a byte at a time", function()
      for _, c in ipairs(cases) do
        local p, evs = unit.parser(c[2]), {}
        for b in hex(c[3]):gmatch(".") do
          for _, e in ipairs((feed(p, b))) do evs[#evs + 1] = e end
          if evs[#evs] and evs[#evs].error then break end
        end
        local got = frames_of(evs)
        assert.are.same({ error = 1002, reason = c[4] }, got[#got], c[1])
        assert.are.equal(#(c[5] or {}) + 1, #got, c[1])
      end
    end)
  end)

  describe("reports a frame's header before its payload", function()
    it("a first event with no data and the claimed length, 16-bit form", function()
      local p = unit.parser(false)
      assert.are.same({}, (feed(p, hex("82 7e 01"))))
      assert.are.same({ ev(2, true, true, false, "", 256) }, (feed(p, hex("00"))))
      -- no event while nothing arrives
      assert.are.same({}, (feed(p, "")))
      assert.are.same({ ev(2, true, false, false, ("a"):rep(100), 256) },
        (feed(p, ("a"):rep(100))))
      assert.are.same({ ev(2, true, false, true, ("b"):rep(156), 256), ev(1, true, true, true, "") },
        (feed(p, ("b"):rep(156) .. hex("81 00"))))
    end)

    it("a 64-bit claim far over any limit (so it can be refused before its payload)", function()
      local p = unit.parser(true)
      local evs, left = feed(p, hex("02 ff 00 00 01 00 00 00 00 00") .. KEY)
      assert.are.same({ ev(2, false, true, false, "", 1 << 40) }, evs)
      assert.are.equal(0, left)
    end)

    it("a 2^63-1 claim", function()
      local evs = feed(unit.parser(false), hex("82 7f 7f ff ff ff ff ff ff ff"))
      assert.are.same({ ev(2, true, true, false, "", math.maxinteger) }, evs)
    end)

    it("a masked frame's first event waits for the whole key", function()
      local p = unit.parser(true)
      assert.are.same({}, (feed(p, hex("81 85 37 fa 21"))))
      assert.are.same({ ev(1, true, true, false, "", 5) }, (feed(p, hex("3d"))))
      assert.are.same({ ev(1, true, false, true, "Hello", 5) },
        (feed(p, hex("7f 9f 4d 51 58"))))
    end)
  end)

  describe("fed in pieces", function()
    local function stream(masked)
      local key = masked and KEY or nil
      local long = {}
      for i = 1, 70000 do long[i] = string.char((i * 7) % 256) end
      return table.concat({
        frame(0x81, "Hello", key),
        frame(0x01, "frag", key), frame(0x89, "ping!", key), frame(0x00, "men", key),
        frame(0x80, "ted", key),
        frame(0x82, ("m"):rep(300), key),
        frame(0x82, table.concat(long), key),
        frame(0x8a, "", key),
        frame(0x82, "small", key, 64),
        frame(0x88, hex("03 e8") .. "bye", key),
      })
    end

    for _, masked in ipairs({ false, true }) do
      local what = masked and "masked" or "unmasked"
      it("byte at a time gives the frames of one-shot feeding (" .. what .. ")", function()
        local bytes = stream(masked)
        local once, left = feed(unit.parser(masked), bytes)
        assert.are.equal(0, left)
        assert.are.equal(10, #once)
        local p, evs = unit.parser(masked), {}
        -- the 70000-byte frame byte by byte would make 70000 events: feed it in 997s
        local i = 1
        while i <= #bytes do
          local n = (i > 400 and i < 70000) and 997 or 1
          local e, l = feed(p, bytes:sub(i, i + n - 1))
          assert.are.equal(0, l)
          for _, x in ipairs(e) do evs[#evs + 1] = x end
          i = i + n
        end
        assert.are.same(frames_of(once), frames_of(evs))
        -- a frame with payload gets its first event, empty, when its header completes
        -- (the byte before its payload)
        assert.are.same(ev(1, true, true, false, "", 5), evs[1])
      end)

      it("random cuts give the frames of one-shot feeding (" .. what .. ")", function()
        local bytes = stream(masked)
        local want = frames_of((feed(unit.parser(masked), bytes)))
        math.randomseed(9)
        for _ = 1, 200 do
          local p, evs, i = unit.parser(masked), {}, 1
          while i <= #bytes do
            local n = math.random(1, math.random() < 0.5 and 16 or 4096)
            local e, l = feed(p, bytes:sub(i, i + n - 1))
            assert.are.equal(0, l)
            for _, x in ipairs(e) do evs[#evs + 1] = x end
            i = i + n
          end
          assert.are.same(want, frames_of(evs))
        end
      end)
    end

    it("unmasks across chunk boundaries at every cut (mask_pos carries the key position)", function()
      local payload = ("0123456789abcdefghijklmnopqrstuvwxyz!"):rep(3)
      local bytes = frame(0x82, payload, hex("a1 b2 c3 d4"))
      local hdr = #bytes - #payload
      for cut = hdr, #bytes do
        for cut2 = cut, math.min(#bytes, cut + 9) do
          local p = unit.parser(true)
          local data, pos = {}, {}
          for _, piece in ipairs({ bytes:sub(1, cut), bytes:sub(cut + 1, cut2), bytes:sub(cut2 + 1) }) do
            local evs, left = p:feed(piece)
            assert.are.equal(0, left)
            for _, e in ipairs(evs) do
              data[#data + 1] = e.data
              pos[#pos + 1] = e.mask_pos
            end
          end
          assert.are.equal(payload, table.concat(data), ("cuts at %d, %d"):format(cut, cut2))
          -- mask_pos is the payload bytes received so far
          local sum = 0
          for i, d in ipairs(data) do
            sum = sum + #d
            assert.are.equal(sum, pos[i])
          end
        end
      end
    end)

    it("a header cut at every byte of every length form", function()
      for _, n in ipairs({ 5, 300, 70000 }) do
        local payload = ("z"):rep(n)
        local bytes = frame(0x82, payload, KEY)
        local hdr = #bytes - n
        for cut = 1, hdr - 1 do
          local p = unit.parser(true)
          assert.are.same({}, (feed(p, bytes:sub(1, cut))), "cut " .. cut .. " of " .. n)
          local evs = feed(p, bytes:sub(cut + 1))
          assert.are.same({ ev(2, true, true, true, payload) }, evs)
        end
      end
    end)
  end)
end)
