-- A short run of the soak test (bench/soak.lua): 20 long-lived connections and connection
-- churn against an in-process echo server for 8 s, every echo checked byte for byte, RSS
-- and LiveConns checked at the end. The bench runs in its own process; this spec checks
-- its exit status and summary line. LUAWS_SOAK_SEED picks the seed (default 42).
--
-- Run from the repository root: busted --lua=lua5.4 spec/soak_spec.lua
local support = require "support"

lazy_setup(function() support.keepalive(true) end)
lazy_teardown(function() support.keepalive(false) end)

local SECONDS = 8
local SEED = tonumber(os.getenv("LUAWS_SOAK_SEED") or "42")

describe("bench/soak.lua", function()
  it(("runs " .. SECONDS .. " s without losing or corrupting a message, growing, or leaking connections"), function()
    -- Under `make test SANITIZE=1` the child inherits LUAWS_BUILD and the sanitizer
    -- runtime (helper.lua), and does not enforce its RSS bound (ASan's quarantine).
    local asan = (os.getenv("LD_PRELOAD") or ""):find("asan", 1, true)
    local cmd = ("lua5.4 bench/soak.lua %d --seed %d"):format(SECONDS, SEED)
    local status, out = support.run_child(cmd, SECONDS + 45)
    local summary = out:match("soak: (%u+ seconds=[^\n]*)")
    assert.is_truthy(summary, "no summary line from `" .. cmd .. "`:\n" .. out)
    assert.are.equal(0, status, "`" .. cmd .. "` failed:\n" .. out)
    assert.is_truthy(summary:match("^PASS "), out)
    local sent, verified, lost, corrupted = summary:match(
      "sent=(%d+) verified=(%d+) lost=(%d+) corrupted=(%d+)")
    assert.is_truthy(sent, out)
    assert.are.equal("0", lost, out)
    assert.are.equal("0", corrupted, out)
    assert.are.equal(sent, verified, out)
    assert.is_true(tonumber(sent) > 100, "hardly any traffic:\n" .. out)
    assert.is_true(tonumber(summary:match("churned=(%d+)")) > 10, "hardly any churn:\n" .. out)
    local live, want = summary:match("live=(%d+)/(%d+)")
    assert.are.equal(want, live, out)
    local warm, last = summary:match("rss_warm=(%d+)KiB rss_end=(%d+)KiB")
    if not asan then
      assert.is_true(tonumber(last) <= tonumber(warm) * 1.1 + 2048, out)
    end
  end)
end)
