-- Unit spec of UTF-8 validation (src/utf8.c, luaws_utf8_valid) without sockets, through
-- the test-only module luaws_unit (`make unit`): RFC 3629's boundaries, sequences split
-- across calls at every position, and the 8-byte ASCII fast path at every alignment,
-- against a reference validator written here by decoding code points.
local ok, unit = pcall(require, "luaws_unit")
if not ok then error("luaws_unit not built: run `make unit` (make test builds it)\n" .. unit) end

local function hex(s)
  return (s:gsub("%s+", ""):gsub("..", function(h) return string.char(tonumber(h, 16)) end))
end

local START = "\0\0\0"

-- "valid" (whole), "incomplete" (valid so far, a sequence not finished), or "invalid",
-- checking the pieces in turn with the state carried between calls.
local function check(pieces, offset)
  local st = START
  for i, s in ipairs(pieces) do
    local good
    good, st = unit.utf8(st, s, offset and (offset + i) % 8 or 0)
    if not good then return "invalid" end
  end
  return st:byte(1) == 0 and "valid" or "incomplete"
end

-- The reference: decode each code point from the bit patterns and refuse overlong
-- forms, surrogates and anything over U+10FFFF.
local function reference(s)
  local i, n = 1, #s
  while i <= n do
    local b = s:byte(i)
    local len, cp, min
    if b < 0x80 then len, cp, min = 1, b, 0
    elseif b & 0xE0 == 0xC0 then len, cp, min = 2, b & 0x1F, 0x80
    elseif b & 0xF0 == 0xE0 then len, cp, min = 3, b & 0x0F, 0x800
    elseif b & 0xF8 == 0xF0 then len, cp, min = 4, b & 0x07, 0x10000
    else return "invalid" end
    for k = 1, len - 1 do
      if i + k > n then
        -- the end came inside the sequence: it is incomplete if what came could still
        -- start a valid character
        local lo, hi = cp << (6 * (len - k)), (cp << (6 * (len - k))) | ((1 << (6 * (len - k))) - 1)
        if hi < min or lo > 0x10FFFF or (lo >= 0xD800 and hi <= 0xDFFF) then return "invalid" end
        return "incomplete"
      end
      local c = s:byte(i + k)
      if c & 0xC0 ~= 0x80 then return "invalid" end
      cp = (cp << 6) | (c & 0x3F)
    end
    if cp < min or cp > 0x10FFFF or (cp >= 0xD800 and cp <= 0xDFFF) then return "invalid" end
    i = i + len
  end
  return "valid"
end

local function encode(cp)
  if cp < 0x80 then return string.char(cp) end
  if cp < 0x800 then return string.char(0xC0 | cp >> 6, 0x80 | cp & 0x3F) end
  if cp < 0x10000 then
    return string.char(0xE0 | cp >> 12, 0x80 | (cp >> 6) & 0x3F, 0x80 | cp & 0x3F)
  end
  return string.char(0xF0 | cp >> 18, 0x80 | (cp >> 12) & 0x3F, 0x80 | (cp >> 6) & 0x3F,
    0x80 | cp & 0x3F)
end

describe("luaws_utf8_valid", function()
  -- bytes, expected, what
  local cases = {
    { "", "valid", "empty" },
    { "00", "valid", "NUL" },
    { "7f", "valid", "U+007F, the last 1-byte" },
    { "c2 80", "valid", "U+0080, the first 2-byte" },
    { "df bf", "valid", "U+07FF, the last 2-byte" },
    { "e0 a0 80", "valid", "U+0800, the first 3-byte" },
    { "ed 9f bf", "valid", "U+D7FF, before the surrogates" },
    { "ee 80 80", "valid", "U+E000, after the surrogates" },
    { "ef bf bf", "valid", "U+FFFF" },
    { "ef bb bf", "valid", "a BOM" },
    { "f0 90 80 80", "valid", "U+10000, the first 4-byte" },
    { "f4 8f bf bf", "valid", "U+10FFFF, the last code point" },
    { "ce ba e1 bd b9 cf 83 ce bc ce b5", "valid", "κόσμε" },
    { "c0 80", "invalid", "C0: overlong NUL" },
    { "c0 af", "invalid", "C0: overlong /" },
    { "c1 bf", "invalid", "C1: overlong U+007F" },
    { "e0 80 80", "invalid", "E0 80: overlong" },
    { "e0 9f bf", "invalid", "E0 9F: overlong U+07FF" },
    { "ed a0 80", "invalid", "ED A0: surrogate U+D800" },
    { "ed af bf", "invalid", "ED AF: surrogate U+DBFF" },
    { "ed b0 80", "invalid", "ED B0: surrogate U+DC00" },
    { "ed bf bf", "invalid", "ED BF: surrogate U+DFFF" },
    { "ed a0 80 ed b0 80", "invalid", "a surrogate pair (CESU-8)" },
    { "f0 80 80 80", "invalid", "F0 80: overlong" },
    { "f0 8f bf bf", "invalid", "F0 8F: overlong U+FFFF" },
    { "f4 90 80 80", "invalid", "F4 90: U+110000" },
    { "f4 bf bf bf", "invalid", "F4 BF: over U+10FFFF" },
    { "f5 80 80 80", "invalid", "F5" },
    { "f7 bf bf bf", "invalid", "F7" },
    { "f8 88 80 80 80", "invalid", "F8: 5-byte form" },
    { "fc 84 80 80 80 80", "invalid", "FC: 6-byte form" },
    { "fe", "invalid", "FE" },
    { "ff", "invalid", "FF" },
    { "80", "invalid", "a lone continuation byte" },
    { "bf", "invalid", "a lone BF" },
    { "41 80 41", "invalid", "a continuation byte after ASCII" },
    { "c2 41", "invalid", "a 2-byte lead then ASCII" },
    { "c2 c2 80", "invalid", "a 2-byte lead then another lead" },
    { "e1 80 41", "invalid", "a 3-byte sequence cut by ASCII" },
    { "f1 80 80 c0", "invalid", "a 4-byte sequence ending in a lead" },
    { "e1 80 80 80", "invalid", "one continuation too many" },
    { "c2", "incomplete", "a 2-byte lead at the end" },
    { "e0 a0", "incomplete", "a 3-byte sequence missing its last byte" },
    { "e1", "incomplete", "a 3-byte lead at the end" },
    { "f0 90 80", "incomplete", "a 4-byte sequence missing its last byte" },
    { "f4", "incomplete", "F4 at the end" },
    { "f4 8f", "incomplete", "F4 8F at the end" },
    { "ed 9f", "incomplete", "ED 9F at the end" },
    { "e0", "incomplete", "E0 at the end" },
    { "e0 9f", "invalid", "E0 9F, overlong even unfinished" },
    { "ed a0", "invalid", "ED A0, a surrogate even unfinished" },
    { "f0 8f", "invalid", "F0 8F, overlong even unfinished" },
    { "f4 90", "invalid", "F4 90, too big even unfinished" },
  }

  for _, c in ipairs(cases) do
    it(c[3] .. ": " .. c[2], function()
      local s = hex(c[1])
      assert.are.equal(c[2], reference(s), "the reference disagrees")
      assert.are.equal(c[2], check({ s }))
    end)
  end

  it("gives the same answer split across two and three calls at every position", function()
    for _, c in ipairs(cases) do
      local s = hex(c[1]) .. "\xe2\x82\xac" .. hex(c[1])
      local whole = reference(s)
      assert.are.equal(whole, check({ s }))
      for i = 0, #s do
        assert.are.equal(whole, check({ s:sub(1, i), s:sub(i + 1) }, i),
          c[3] .. ", cut at " .. i)
        for j = i, #s do
          assert.are.equal(whole, check({ s:sub(1, i), s:sub(i + 1, j), s:sub(j + 1) }),
            c[3] .. ", cuts at " .. i .. ", " .. j)
        end
      end
    end
  end)

  it("carries a sequence split byte by byte", function()
    local s = "a\xc3\xa9\xe2\x82\xac\xf0\x9d\x84\x9ez"
    local pieces = {}
    for b in s:gmatch(".") do pieces[#pieces + 1] = b end
    assert.are.equal("valid", check(pieces))
    pieces[#pieces] = nil
    pieces[#pieces] = nil
    assert.are.equal("incomplete", check(pieces))
  end)

  describe("the 8-byte ASCII fast path", function()
    it("sees a bad byte at every position of ASCII runs, at every alignment", function()
      for len = 1, 40 do
        for at = 1, len do
          for off = 0, 7 do
            for _, bad in ipairs({ "\x80", "\xff", "\xc0", "\xf5" }) do
              local s = ("a"):rep(at - 1) .. bad .. ("b"):rep(len - at)
              local good = unit.utf8(START, s, off)
              assert.is_false(good, ("length %d, byte %q at %d, offset %d"):format(len, bad, at, off))
            end
          end
        end
      end
    end)

    it("takes a valid sequence at every position of ASCII runs, at every alignment", function()
      for len = 0, 40 do
        for at = 0, len do
          for off = 0, 7 do
            for _, seq in ipairs({ "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80" }) do
              local s = ("a"):rep(at) .. seq .. ("b"):rep(len - at)
              local good, st = unit.utf8(START, s, off)
              assert.is_true(good and st:byte(1) == 0,
                ("length %d, %q at %d, offset %d"):format(len, seq, at, off))
            end
          end
        end
      end
    end)

    it("does not skip a lead byte that ends an ASCII run", function()
      for len = 0, 40 do
        for off = 0, 7 do
          local good, st = unit.utf8(START, ("a"):rep(len) .. "\xe2", off)
          assert.is_true(good)
          assert.are.equal(2, st:byte(1), "length " .. len .. ", offset " .. off)
        end
      end
    end)
  end)

  it("agrees with the reference on random text (fixed seed)", function()
    math.randomseed(3629)
    local pick = {
      function() return ("x"):rep(math.random(0, 20)) end, -- ASCII runs
      function() return encode(math.random(0x80, 0x7FF)) end,
      function() return encode(math.random(0x800, 0xFFFF)) end, -- surrogates included
      function() return encode(math.random(0x10000, 0x10FFFF)) end,
      function() return encode(math.random(0x10FFF0, 0x1FFFFF)) end, -- over U+10FFFF
      function() return string.char(math.random(0x80, 0xFF)) end, -- any stray byte
      function() -- an overlong form
        local cp = math.random(0, 0x7F)
        return string.char(0xC0 | cp >> 6, 0x80 | cp & 0x3F)
      end,
    }
    local weights = { 40, 10, 10, 10, 1, 2, 1 }
    local total = 0
    for _, w in ipairs(weights) do total = total + w end
    local counts = { valid = 0, invalid = 0, incomplete = 0 }
    for _ = 1, 3000 do
      local parts = {}
      for k = 1, math.random(1, 12) do
        local r, w = math.random(total), 0
        for i, wi in ipairs(weights) do
          w = w + wi
          if r <= w then parts[k] = pick[i](); break end
        end
      end
      local s = table.concat(parts)
      if math.random() < 0.2 then s = s:sub(1, math.random(0, #s)) end
      local want = reference(s)
      counts[want] = counts[want] + 1
      local off = math.random(0, 7)
      assert.are.equal(want, check({ s }, off), ("%q at offset %d"):format(s, off))
      local cut = math.random(0, #s)
      assert.are.equal(want, check({ s:sub(1, cut), s:sub(cut + 1) }, off),
        ("%q cut at %d"):format(s, cut))
    end
    -- the random text hits every outcome often
    assert.is_true(counts.valid > 500 and counts.invalid > 300 and counts.incomplete > 30,
      ("valid %d, invalid %d, incomplete %d"):format(counts.valid, counts.invalid, counts.incomplete))
  end)
end)
