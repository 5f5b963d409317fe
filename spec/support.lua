-- Shared helpers for the luaws specs: `local support = require "support"`.
--
--   support.echo_server([opts])      in-process echo server on 127.0.0.1:0 -> srv, port, state
--   support.keepalive(on)           start/stop a ticker that wakes the loop every 50 ms
--   support.url(port [, path])       "ws://127.0.0.1:<port><path>"
--   support.wait_for(cond, timeout)  poll cond() while the luaws loop runs
--   support.run(fn [, timeout])      run fn inside websocket.Go, wait for it, re-raise its error
--   support.spawn(cmd [, opts])      start a shell command in the background -> child
--                                    (opts.group: in a process group of its own)
--   support.wait(child, timeout)     wait for a child to exit -> exit status | nil
--   support.kill(child [, sig])      signal a child that is still running
--   support.stop(child)              kill (TERM, then KILL; the group too) and remove the child's files
--   support.output(child)            what the child wrote (stdout and stderr together)
--   support.run_child(cmd, timeout)  spawn + wait + stop -> status, output
--   support.python(src)              write a Python script to a temp file -> command prefix
--   support.lua(src)                 the same for a Lua script with the in-tree luaws
--   support.free_port()              a TCP port that was free a moment ago
--   support.wait_port(port, timeout) true once 127.0.0.1:port accepts TCP connections
--   support.read_file(path)          whole file | nil
--   support.raises(fn)               the message of the error fn raises (fails when none)
--   support.raises_matching(fn, pats) raises(fn), and the message matches every pattern
--   support.server(handler)          server on 127.0.0.1:0, handler(c, r) after Upgrade -> srv, port
--   support.drain(c)                 read c until an error -> that error
--   support.read_echo(c, seen)       read c until an error, echoing each message (seen.msgs, .err)
--   support.dial(url, seen, fn)      in a luaws coroutine: Dial, fn(c), Close (seen.conn, .done, ...)
--   support.peer(name)               absolute path of spec/peers/<name>
--   support.raw_server(script)       start spec/peers/raw_server.py -> child, port it printed | nil
--   support.json_result(child, who)  the last JSON line the child printed, decoded
--   support.self_signed_cert()       a throw-away certificate for 127.0.0.1 -> cert (.file, .key, .spki, .remove())
--   support.group_alive(pgid)        pids still in process group pgid (spawn(cmd, {group = true}))
--
-- Every wait in here sleeps with websocket.Sleep, so the luaws loop (and any in-process
-- server) keeps running while a test waits for a child process.
local websocket = require "luaws"
local luassert = require "luassert"

local M = { websocket = websocket }

-- Two luaws bugs (the last describe of runtime_spec.lua; fixed in cc36822) left a
-- blocking call made from the main chunk asleep until the next unrelated event -- up to
-- ~30 s once an lws context exists: a timer already due when the loop turns (Sleep(0),
-- or any Sleep after Lua kept the CPU longer than the sleep), and a channel operation
-- completed by a coroutine that was already runnable. So that a regression there shows
-- up in those specs only, instead of making every file crawl, each spec file runs with
-- this ticker on (lazy_setup/lazy_teardown at the top of the file) and the specs about
-- those bugs turn it off. It cannot hide a lost wake-up: it only ends the loop's wait,
-- it resumes no coroutine.
-- LUAWS_SPEC_KEEPALIVE=0 turns it off for a whole run (to see those hangs everywhere).
local ticker
local keepalive_allowed = os.getenv("LUAWS_SPEC_KEEPALIVE") ~= "0"
function M.keepalive(on)
  if on and not ticker and keepalive_allowed then
    ticker = websocket.NewTicker(0.05)
  elseif not on and ticker then
    ticker:Stop()
    ticker = nil
  end
end

function M.url(port, path)
  return "ws://127.0.0.1:" .. tostring(port) .. (path or "/")
end

function M.read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
M.shell_quote = shell_quote

-- The output of a shell command, without its trailing white space.
function M.sh_output(cmd)
  local p = io.popen(cmd)
  local out = p:read("a")
  p:close()
  return (out:gsub("%s+$", ""))
end

-- Payloads ------------------------------------------------------------------------------

-- nil when got == want, else a short description (never the payloads themselves: they
-- can be big).
function M.diff(got, want)
  if got == want then return nil end
  if type(got) ~= "string" then return "got " .. tostring(got) .. " instead of " .. #want .. " bytes" end
  if #got ~= #want then return ("got %d bytes, want %d"):format(#got, #want) end
  for i = 1, #want do
    if got:byte(i) ~= want:byte(i) then
      return ("same length %d but first difference at byte %d (%d ~= %d)"):format(
        #want, i, got:byte(i), want:byte(i))
    end
  end
end

-- n bytes of varied binary content (an LCG from seed, every byte value occurs).
function M.binary(n, seed)
  local out, chunk, x = {}, {}, seed or 12345
  for i = 1, n do
    x = (x * 1103515245 + 12345) % 2147483648
    chunk[#chunk + 1] = (x >> 16) % 256
    if #chunk == 4096 or i == n then
      out[#out + 1] = string.char(table.unpack(chunk))
      chunk = {}
    end
  end
  return table.concat(out)
end

-- The payloads the interop peers share (spec/peers/* compute the same): valid UTF-8 text
-- of exactly n bytes, a 16-byte unit repeated, then "x"s ...
local UNIT = "ab\u{20AC}\u{E9}\u{1F600}-0123"
assert(#UNIT == 16)
function M.text(n)
  return UNIT:rep(n // 16) .. ("x"):rep(n % 16)
end

-- ... and n bytes with byte i = (i * 131 + (i >> 8) * 17 + 7) & 255, which repeats every
-- 65536 bytes (cached: the specs ask for the same sizes many times).
local peer_binary_cache = {}
function M.peer_binary(n)
  local cached = peer_binary_cache[n]
  if cached then return cached end
  if n > 65536 then
    local period = M.peer_binary(65536)
    cached = period:rep(n // 65536) .. period:sub(1, n % 65536)
  else
    local blocks, block = {}, {}
    for base = 0, n - 1, 256 do
      local k = 0
      for i = base, math.min(base + 255, n - 1) do
        k = k + 1
        block[k] = (i * 131 + (i >> 8) * 17 + 7) & 255
      end
      blocks[#blocks + 1] = string.char(table.unpack(block, 1, k))
    end
    cached = table.concat(blocks)
  end
  peer_binary_cache[n] = cached
  return cached
end

-- spec/peers/slow_reader.py's pattern(n): 8-byte units (k, k * 2654435761 mod 2^32),
-- big-endian.
function M.slow_reader_pattern(n)
  local t = {}
  for k = 0, (n + 7) // 8 - 1 do
    t[k + 1] = string.pack(">I4I4", k, (k * 2654435761) & 0xFFFFFFFF)
  end
  return table.concat(t):sub(1, n)
end

-- Poll cond() every `interval` seconds (default 0.01) for at most `timeout` seconds
-- (default 10), driving the luaws loop meanwhile. Returns cond()'s first truthy value, or
-- false on timeout.
function M.wait_for(cond, timeout, interval)
  local deadline = websocket.Now() + (timeout or 10)
  while true do
    local v = cond()
    if v then return v end
    if websocket.Now() >= deadline then return false end
    websocket.Sleep(interval or 0.01)
  end
end

-- Run fn(...) in a luaws coroutine and wait (polling, see wait_for) until it returns.
-- Its results are returned; an error it raised is raised again here, with its traceback.
-- Lets a spec exercise blocking calls from inside a coroutine, as real programs do.
function M.run(fn, timeout, ...)
  local res
  websocket.Go(function(...)
    local r = table.pack(xpcall(fn, debug.traceback, ...))
    res = r
  end, ...)
  if not M.wait_for(function() return res end, timeout or 30) then
    error("support.run: coroutine did not finish within " .. (timeout or 30) .. " s", 2)
  end
  if not res[1] then error(res[2], 0) end
  return table.unpack(res, 2, res.n)
end

-- An echo server on 127.0.0.1:0. opts.upgrader: options for websocket.Upgrader;
-- opts.header: response header for Upgrade. state records what the handlers saw:
--   state.upgraded (count), state.ended (count), state.read_errors, state.write_errors,
--   state.requests (the r of each upgraded request), state.upgrade_errors.
function M.echo_server(opts)
  opts = opts or {}
  local upgrader = websocket.Upgrader(opts.upgrader)
  local state = { upgraded = 0, ended = 0, read_errors = {}, write_errors = {},
    requests = {}, upgrade_errors = {} }
  local srv, err = websocket.Listen("127.0.0.1:0", function(w, r)
    local c, uerr = upgrader:Upgrade(w, r, opts.header)
    if not c then
      state.upgrade_errors[#state.upgrade_errors + 1] = uerr
      return
    end
    state.upgraded = state.upgraded + 1
    state.requests[#state.requests + 1] = r
    while true do
      local mt, data, rerr = c:ReadMessage()
      if rerr then
        state.read_errors[#state.read_errors + 1] = rerr
        break
      end
      local ok, werr = c:WriteMessage(mt, data)
      if not ok then
        state.write_errors[#state.write_errors + 1] = werr
        break
      end
    end
    c:Close()
    state.ended = state.ended + 1
  end)
  assert(srv, "echo_server: " .. tostring(err))
  return srv, srv:Port(), state
end

-- A server on 127.0.0.1:0 that calls handler(c, r) for each request it upgrades.
function M.server(handler)
  local upgrader = websocket.Upgrader{}
  local srv, err = websocket.Listen("127.0.0.1:0", function(w, r)
    local c = upgrader:Upgrade(w, r)
    if c then handler(c, r) end
  end)
  luassert(srv, "Listen: " .. tostring(err))
  return srv, srv:Port()
end

-- Read c until ReadMessage fails; returns its error.
function M.drain(c)
  while true do
    local mt, _, err = c:ReadMessage()
    if not mt then return err end
  end
end

-- Read c until ReadMessage fails, appending {type, data} to seen.msgs and echoing each
-- message; seen.err = the read error. With a seen.write_errs list every message is
-- echoed and each failed echo appended to it (as text); without, echoing stops at the
-- first failure, kept in seen.write_err (reading goes on: the read error is what the
-- specs check).
function M.read_echo(c, seen)
  while true do
    local mt, data, err = c:ReadMessage()
    if not mt then
      seen.err = err
      break
    end
    seen.msgs[#seen.msgs + 1] = { mt, data }
    if seen.write_errs then
      local ok, werr = c:WriteMessage(mt, data)
      if not ok then seen.write_errs[#seen.write_errs + 1] = tostring(werr) end
    elseif not seen.write_err then
      local ok, werr = c:WriteMessage(mt, data)
      if not ok then seen.write_err = werr end
    end
  end
end

-- In a luaws coroutine: Dial url with the DefaultDialer, call fn(c), Close. seen records
-- seen.conn (for a finally to close), seen.dial_err, seen.lua_error (an error fn raised,
-- with its traceback) and, last, seen.done = true.
function M.dial(url, seen, fn)
  websocket.Go(function()
    local ok, err = xpcall(function()
      local c, _, derr = websocket.DefaultDialer:Dial(url)
      if not c then
        seen.dial_err = derr
        return
      end
      seen.conn = c
      fn(c)
      c:Close()
    end, debug.traceback)
    if not ok then seen.lua_error = err end
    seen.done = true
  end)
end

-- Call fn and return the message of the error it raises (fails when it raises none).
function M.raises(fn)
  local ok, err = pcall(fn)
  luassert(not ok, "expected an error, but the call returned normally")
  return tostring(err)
end

-- raises(fn), then the message must match every pattern in the list (plain = false).
function M.raises_matching(fn, patterns)
  local msg = M.raises(fn)
  for _, pattern in ipairs(patterns) do
    luassert.matches(pattern, msg, 1, false)
  end
  return msg
end

-- Child processes --------------------------------------------------------------------

M.self_pid = tonumber(io.open("/proc/self/stat"):read("*l"):match("^(%d+)"))

-- Start `cmd` in the background with stdout and stderr in a file. cmd is one simple
-- command (program and arguments, shell-quoted as needed) so that its pid is the one we
-- signal; for a shell snippet pass "sh -c '...'". With opts.group, cmd runs under setsid
-- as the leader of its own process group, and kill/stop (and the watcher below) signal
-- the whole group: for programs that start children of their own (a browser). Returns
-- child = { pid =, out =, ... }; always stop it with support.stop (in a finally).
function M.spawn(cmd, opts)
  local group = opts and opts.group or false
  local base = os.tmpname()
  os.remove(base)
  local child = { out = base .. ".out", pidfile = base .. ".pid", rcfile = base .. ".rc",
    cmd = cmd, group = group }
  -- sh runs cmd as its own background job ($! is cmd's pid: a simple command is exec'd in
  -- the forked child; setsid execs too, as that child leads no group), then records its
  -- exit status once it ends. A watcher kills the child (its group) if this test process
  -- dies first (killed from outside, its finally blocks never run), so no child outlives
  -- the run.
  local q = shell_quote
  local target = group and "-$c" or "$c" -- dash's kill takes no "--"
  local script = string.format(
    "%s%s >%s 2>&1 </dev/null & c=$!; echo $c >%s && mv %s %s; " ..
    "(while kill -0 %d 2>/dev/null && kill -0 %s 2>/dev/null; do sleep 1; done; " ..
    "kill -9 %s 2>/dev/null) >/dev/null 2>&1 & " ..
    "wait $c; echo $? >%s && mv %s %s",
    group and "setsid " or "", cmd, q(child.out), q(base .. ".pidtmp"), q(base .. ".pidtmp"),
    q(child.pidfile), M.self_pid, target, target, q(base .. ".rctmp"), q(base .. ".rctmp"),
    q(child.rcfile))
  os.execute("sh -c " .. shell_quote(script) .. " >/dev/null 2>&1 &")
  local ok = M.wait_for(function()
    local s = M.read_file(child.pidfile)
    child.pid = s and tonumber(s:match("%d+"))
    return child.pid
  end, 10, 0.005)
  if not ok then error("support.spawn: no pid for: " .. cmd, 2) end
  return child
end

-- The pids of the processes in process group pgid (zombies not counted).
function M.group_alive(pgid)
  local pids = {}
  local p = io.popen("ls /proc")
  for name in p:lines() do
    local pid = tonumber(name)
    local stat = pid and M.read_file("/proc/" .. pid .. "/stat")
    if stat then
      -- after the command (in parentheses, may contain anything): state ppid pgrp
      local state, group = stat:match(".*%) (%a) %-?%d+ (%d+)")
      if tonumber(group) == pgid and state ~= "Z" and state ~= "X" then pids[#pids + 1] = pid end
    end
  end
  p:close()
  return pids[1] and pids or nil
end

-- The child's exit status once it has ended (a signal death reads as 128 + signal), else nil.
function M.status(child)
  local s = M.read_file(child.rcfile)
  return s and tonumber(s:match("%d+"))
end

function M.wait(child, timeout)
  return M.wait_for(function() return M.status(child) end, timeout or 10, 0.02) or nil
end

function M.kill(child, sig)
  if child.group and child.pid then
    -- the group outlives its leader while any member runs
    if M.group_alive(child.pid) then
      os.execute(string.format("kill -%s -%d >/dev/null 2>&1", sig or "TERM", child.pid))
    end
  elseif child.pid and not M.status(child) then
    os.execute(string.format("kill -%s %d >/dev/null 2>&1", sig or "TERM", child.pid))
  end
end

function M.output(child)
  return M.read_file(child.out) or ""
end

-- Make sure the child is gone (TERM, then KILL), then remove its files. Safe to call twice.
function M.stop(child)
  if not child or child.stopped then return end
  if child.group then
    local gone = function() return not M.group_alive(child.pid) end
    if not gone() then
      M.kill(child, "TERM")
      if not M.wait_for(gone, 3, 0.02) then
        M.kill(child, "KILL")
        M.wait_for(gone, 3, 0.02)
      end
    end
    M.wait(child, 3)
  elseif not M.status(child) then
    M.kill(child, "TERM")
    if not M.wait(child, 3) then
      M.kill(child, "KILL")
      M.wait(child, 3)
    end
  end
  child.stopped = true
  os.remove(child.out)
  os.remove(child.pidfile)
  os.remove(child.rcfile)
end

-- spawn, wait (the luaws loop runs meanwhile), stop -> exit status (nil: timed out), output
function M.run_child(cmd, timeout)
  local child = M.spawn(cmd)
  local ok, st = pcall(M.wait, child, timeout or 10)
  local out = M.output(child)
  M.stop(child)
  if not ok then error(st, 0) end
  return st, out
end

-- Temp script files, removed when the Lua state exits.
local scripts = {}
setmetatable(scripts, { __gc = function(t) for _, p in ipairs(t) do os.remove(p) end end })
local function script_file(src, ext)
  local base = os.tmpname()
  os.remove(base)
  local path = base .. ext
  local f = assert(io.open(path, "w"))
  f:write(src)
  f:close()
  scripts[#scripts + 1] = path
  return shell_quote(path)
end

-- Write Python source to a temp file; returns "python3 '<file>'" to append arguments to.
function M.python(src)
  return "python3 " .. script_file(src, ".py")
end

-- The same for Lua source, run from the repository root with the in-tree luaws on its
-- paths (LUAWS_BUILD picks a sanitizer build): "lua5.4 '<file>'", or runner instead of
-- lua5.4 (a program that runs a Lua script file).
function M.lua(src, runner)
  return (runner or "lua5.4") .. " " .. script_file('package.path = "lua/?.lua;lua/?/init.lua;" .. package.path\n' ..
    'package.cpath = (os.getenv("LUAWS_BUILD") or "build") .. "/?.so;" .. package.cpath\n' .. src, ".lua")
end

-- Run Lua source as M.lua does, in a child whose shell runs `prefix` first (e.g. a
-- ulimit), until it ends (timeout: seconds, default 20) -> exit status, output (stdout
-- and stderr).
function M.run_lua(src, timeout, prefix, runner)
  local cmd = M.lua(src, runner)
  if prefix then cmd = "bash -c " .. shell_quote(prefix .. "; exec " .. cmd) end
  return M.run_child(cmd, timeout or 20)
end

function M.free_port()
  local p = io.popen([[python3 -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()']])
  local port = tonumber(p:read("a"):match("%d+"))
  p:close()
  assert(port, "free_port: python3 gave no port")
  return port
end

-- One connect attempt with bash's /dev/tcp (no luasocket needed).
function M.port_open(port)
  local ok = os.execute(string.format(
    "bash -c 'exec 3<>/dev/tcp/127.0.0.1/%d' >/dev/null 2>&1", port))
  return ok == true
end

function M.wait_port(port, timeout)
  return M.wait_for(function() return M.port_open(port) end, timeout or 10, 0.05)
end

-- TLS -------------------------------------------------------------------------------

-- A self-signed certificate (EC P-256, 1 day) for IP:127.0.0.1 and DNS:localhost, made
-- with the openssl command line tool in a fresh temp dir: cert.file, cert.key (PEM),
-- cert.spki (base64 of the SHA-256 of its SubjectPublicKeyInfo, as Chromium's
-- --ignore-certificate-errors-spki-list wants it), cert.dir; cert.remove() deletes them.
function M.self_signed_cert()
  local dir = M.sh_output("mktemp -d /tmp/luaws-cert.XXXXXX")
  assert(dir:match("^/tmp/luaws%-cert%."), "mktemp -d failed")
  local q = shell_quote
  local cert = { dir = dir, file = dir .. "/cert.pem", key = dir .. "/key.pem" }
  local ok = os.execute(("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 " ..
    "-nodes -days 1 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1,DNS:localhost " ..
    "-keyout %s -out %s >%s 2>&1"):format(q(cert.key), q(cert.file), q(dir .. "/log")))
  assert(ok, "openssl req failed: " .. (M.read_file(dir .. "/log") or ""))
  cert.spki = M.sh_output(("openssl x509 -in %s -pubkey -noout | openssl pkey -pubin -outform der" ..
    " | openssl dgst -sha256 -binary | base64"):format(q(cert.file)))
  assert(cert.spki:match("^[A-Za-z0-9+/]+=*$") and #cert.spki == 44, "no SPKI hash: " .. cert.spki)
  function cert.remove() os.execute("rm -rf " .. q(dir)) end
  return cert
end

-- The raw peers in spec/peers, run with the system python3.
M.PYTHON = "/usr/bin/python3"

local spec_dir = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "spec"
if spec_dir:sub(1, 1) ~= "/" then spec_dir = M.sh_output("pwd") .. "/" .. spec_dir end

function M.peer(name)
  return spec_dir .. "/peers/" .. name
end

-- Start raw_server.py with script (JSON text or a file name); wait up to 10 s for the
-- port it prints first. Returns child (always stop it) and the port, nil if none came.
function M.raw_server(script)
  local child = M.spawn(("%s %s %s"):format(M.PYTHON, shell_quote(M.peer("raw_server.py")),
    shell_quote(script)))
  local port = M.wait_for(function()
    return tonumber(M.output(child):match("^(%d+)\n"))
  end, 10)
  return child, port or nil
end

-- The JSON line a peer printed (the last line starting with '{'), decoded; `who` names
-- the peer in the failure message.
function M.json_result(child, who)
  local cjson = require "cjson"
  local out = M.output(child)
  local line
  for l in out:gmatch("[^\n]+") do
    if l:sub(1, 1) == "{" then line = l end
  end
  luassert(line, "the " .. who .. " printed no result:\n" .. out:sub(1, 3000))
  return cjson.decode(line)
end

return M
