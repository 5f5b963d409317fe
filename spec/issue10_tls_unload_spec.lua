-- Regression: src/tls.c makes its OpenSSL BIO method table once per load of luaws.core
-- and kept it forever; lua_close unloads the module (and the pointer with it), so a
-- program that had a TLS connection ended with that table leaked, and LeakSanitizer
-- failed it at exit -- `make test SANITIZE=1` failed spec/issue10_chromium_spec.lua (wss://)
-- that way. The table is now freed when the module is unloaded.
--
-- A child lua5.4 serves wss:// and dials it (one message each way, a clean close), under
-- LeakSanitizer: gcc's liblsan preloaded into the plain build (build-essential has it), or,
-- under `make test SANITIZE=1`, the ASan runtime the child already has, with the leak check on.
--
-- Run from the repository root: busted --lua=lua5.4 spec/issue10_tls_unload_spec.lua
local support = require "support"

local q = support.shell_quote

local CHILD = [[
local websocket = require "luaws"
local certfile, keyfile = arg[1], arg[2]
local up = websocket.Upgrader{}
local srv = assert(websocket.Listen("127.0.0.1:0", function(w, r)
  local c = up:Upgrade(w, r)
  if not c then return end
  local mt, m = c:ReadMessage()
  if mt then c:WriteMessage(mt, m) end
  c:ReadMessage()
  c:Close()
end, { TLS = { CertFile = certfile, KeyFile = keyfile } }))
local d = websocket.Dialer{ TLSClientConfig = { InsecureSkipVerify = true } }
local c, _, err = d:Dial("wss://127.0.0.1:" .. srv:Port() .. "/")
assert(c, tostring(err))
c:WriteMessage(websocket.TextMessage, "over tls")
local _, got = c:ReadMessage()
print("echo: " .. tostring(got))
c:WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""))
c:ReadMessage()
c:Close()
srv:Close()
]]

describe("issue 10: TLS and unloading luaws", function()
  lazy_setup(function() support.keepalive(true) end)
  lazy_teardown(function() support.keepalive(false) end)

  it("a program that used TLS leaks nothing at exit (the BIO method table is freed at unload)", function()
    local cert = support.self_signed_cert()
    finally(cert.remove)
    local supp = "suppressions=" .. support.sh_output("pwd") .. "/spec/lsan.supp:print_suppressions=0"
    local preload = os.getenv("LD_PRELOAD") or ""
    local env
    if preload:find("asan", 1, true) then
      env = ("env ASAN_OPTIONS=detect_leaks=1 LSAN_OPTIONS=%s "):format(supp)
    else
      local lsan = support.sh_output("cc -print-file-name=liblsan.so")
      assert(lsan:sub(1, 1) == "/", "no liblsan.so (gcc's, in build-essential)")
      env = ("env LD_PRELOAD=%s LSAN_OPTIONS=%s "):format(q(lsan), supp)
    end
    local status, out = support.run_child(env .. support.lua(CHILD) .. " " .. q(cert.file) .. " " ..
      q(cert.key), 30)
    assert.matches("echo: over tls", out)
    assert.not_matches("LeakSanitizer", out, 1, true)
    assert.are.equal(0, status, out)
  end)
end)
