-- luaws: gorilla/websocket for Lua 5.4, on libwebsockets and one event loop.
--   local websocket = require "luaws"
-- This module gathers the public API from the modules beside it.
local core = require "luaws.core"
local sched = require "luaws.sched"
local runtime = require "luaws.runtime"
local errors = require "luaws.errors"
local header = require "luaws.header"
local conn = require "luaws.conn"
local http = require "luaws.http"
local listener = require "luaws.listener"
local upgrader = require "luaws.upgrader"
local client = require "luaws.client"
local proxy = require "luaws.proxy"

local websocket = {
  _VERSION = "luaws scm",
  lws_version = core.lws_version,

  -- message types and close codes (gorilla's names)
  TextMessage = conn.TextMessage, BinaryMessage = conn.BinaryMessage,
  CloseMessage = conn.CloseMessage, PingMessage = conn.PingMessage,
  PongMessage = conn.PongMessage,
  CloseNormalClosure = 1000, CloseGoingAway = 1001, CloseProtocolError = 1002,
  CloseUnsupportedData = 1003, CloseNoStatusReceived = 1005, CloseAbnormalClosure = 1006,
  CloseInvalidFramePayloadData = 1007, ClosePolicyViolation = 1008,
  CloseMessageTooBig = 1009, CloseMandatoryExtension = 1010,
  CloseInternalServerErr = 1011, CloseServiceRestart = 1012, CloseTryAgainLater = 1013,
  CloseTLSHandshake = 1015,

  FormatCloseMessage = conn.FormatCloseMessage,
  IsCloseError = conn.IsCloseError,
  IsUnexpectedCloseError = conn.IsUnexpectedCloseError,
  ErrCloseSent = errors.ErrCloseSent,
  ErrReadLimit = errors.ErrReadLimit,
  ErrBadHandshake = errors.ErrBadHandshake,
  ErrClosed = errors.ErrClosed,
  ErrServerClosed = errors.ErrServerClosed,
  EOF = conn.EOF,
  NewPreparedMessage = conn.NewPreparedMessage,

  -- server (net/http + Upgrader)
  Upgrader = upgrader.Upgrader,
  HandleFunc = http.HandleFunc,
  NewServeMux = http.NewServeMux,
  DefaultServeMux = http.DefaultServeMux,
  Listen = listener.Listen,
  ListenAndServe = listener.ListenAndServe,
  ListenAndServeTLS = listener.ListenAndServeTLS,
  Error = http.Error,
  StatusText = http.StatusText,
  IsWebSocketUpgrade = upgrader.IsWebSocketUpgrade,
  Subprotocols = upgrader.Subprotocols,
  CheckSameOrigin = upgrader.CheckSameOrigin,
  Header = header.new,

  -- client
  Dialer = client.Dialer,
  DefaultDialer = client.DefaultDialer,
  ProxyFromEnvironment = proxy.ProxyFromEnvironment,
  ProxyURL = proxy.ProxyURL,

  -- Go-like runtime
  Go = runtime.Go,
  Chan = runtime.Chan,
  Select = runtime.Select,
  SendCase = runtime.SendCase,
  Default = runtime.Default,
  Sleep = runtime.Sleep,
  After = runtime.After,
  NewTicker = runtime.NewTicker,
  Now = runtime.Now,
  Notify = runtime.Notify,
  Await = runtime.Await,
  Interrupt = runtime.Interrupt,
  SetBusyPoll = runtime.SetBusyPoll,

  -- embedding in a host loop: wait on BackendFd() for at most BackendTimeout()
  -- seconds, then Step(0)
  Step = function(timeout)
    sched.hosted = true -- from now on the host runs the loop (see sched.lua)
    return sched.step(timeout)
  end,
  BackendFd = function()
    sched.hosted = true
    return core.backend_fd()
  end,
  BackendTimeout = function()
    if sched.runnable() then return 0 end -- goroutines wait to run: Step(0) runs them
    return core.backend_timeout()
  end,
  LiveConns = core.live_conns,
}

-- FormatTime(t) -> Go's Time.String() layout, for a time from Now()
function websocket.FormatTime(t)
  t = t or core.now()
  local sec = math.floor(t)
  local frac = math.floor((t - sec) * 1e9 + 0.5)
  if frac >= 1000000000 then sec, frac = sec + 1, frac - 1000000000 end
  return os.date("%Y-%m-%d %H:%M:%S", sec) .. string.format(".%09d", frac) ..
    os.date(" %z %Z", sec)
end

-- SetMaxOpenFiles(n) -> soft limit, table size | nil, err: raise the process's soft
-- limit on open files to n (within the hard limit, never lowered; Go raises it at start)
-- and size libwebsockets' descriptor table at n. Before the first Listen or Dial.
function websocket.SetMaxOpenFiles(n)
  if math.type(n) ~= "integer" or n < 64 or n > 10000000 then
    error("bad argument #1 to 'SetMaxOpenFiles' (integer from 64 to 10000000 expected)", 2)
  end
  local soft, size = core.set_max_open_files(n)
  if not soft then return nil, errors.new("setrlimit: " .. tostring(size)) end
  return soft, size
end

-- SetLibwebsocketsLogLevel(mask): libwebsockets' log level (process-wide); once called,
-- luaws leaves it alone.
function websocket.SetLibwebsocketsLogLevel(mask)
  if math.type(mask) ~= "integer" or mask < 0 or mask >= 4096 then
    error("bad argument #1 to 'SetLibwebsocketsLogLevel' (log level bits expected)", 2)
  end
  core.set_lws_log_level(mask)
end

-- TLS versions and client-certificate policies, with Go's crypto/tls names and values
for _, k in ipairs({ "VersionTLS12", "VersionTLS13", "NoClientCert", "RequestClientCert",
  "RequireAnyClientCert", "VerifyClientCertIfGiven", "RequireAndVerifyClientCert" }) do
  websocket[k] = require("luaws.tls")[k]
end

websocket.log = require "luaws.log"
websocket.flag = require "luaws.flag"

return websocket
