-- TLS settings: the fields of Go's tls.Config that luaws takes, for the server (Listen's
-- and ListenAndServe's TLS option, ListenAndServeTLS) and the client
-- (Dialer.TLSClientConfig), checked and made into luaws.TLSConfig objects (tls.c). Each
-- distinct set of settings is made once per process and reused.
local core = require "luaws.core"
local options = require "luaws.options"

local M = {
  VersionTLS12 = 0x0303, VersionTLS13 = 0x0304,
  -- tls.ClientAuthType, with Go's values
  NoClientCert = 0, RequestClientCert = 1, RequireAnyClientCert = 2,
  VerifyClientCertIfGiven = 3, RequireAndVerifyClientCert = 4,
}

local server_fields = {
  CertFile = "string", KeyFile = "string", Certificates = "certificates",
  ClientCAs = "string", ClientAuth = "client_auth", MinVersion = "tls_version",
  MaxVersion = "tls_version",
  CipherSuites = "unimplemented", NextProtos = "unimplemented",
}
local client_fields = {
  RootCAs = "string", ServerName = "string", InsecureSkipVerify = "boolean",
  Certificates = "certificates", MinVersion = "tls_version", MaxVersion = "tls_version",
  CipherSuites = "unimplemented", NextProtos = "unimplemented",
}

local made = {} -- key (the settings as a string) -> luaws.TLSConfig

-- The settings as one string, for the cache, and the table C reads.
local function settings(t, server)
  local certs = {}
  for _, c in ipairs(t.Certificates or {}) do
    certs[#certs + 1] = { CertFile = c.CertFile, KeyFile = c.KeyFile }
  end
  if server and t.CertFile then
    table.insert(certs, 1, { CertFile = t.CertFile, KeyFile = t.KeyFile })
  end
  local s = {
    Certificates = certs, MinVersion = t.MinVersion, MaxVersion = t.MaxVersion,
    ClientCAs = server and t.ClientCAs or nil, ClientAuth = server and t.ClientAuth or nil,
    RootCAs = not server and t.RootCAs or nil,
    InsecureSkipVerify = not server and t.InsecureSkipVerify or nil,
  }
  local key = { server and "server" or "client" }
  for _, c in ipairs(certs) do key[#key + 1] = c.CertFile .. "\0" .. c.KeyFile end
  for _, k in ipairs({ "MinVersion", "MaxVersion", "ClientCAs", "ClientAuth", "RootCAs",
    "InsecureSkipVerify" }) do
    key[#key + 1] = k .. "=" .. tostring(s[k])
  end
  return table.concat(key, "\1"), s
end

local function config(t, server, what, level)
  if type(t) ~= "table" then
    error(what .. " must be a table of TLS settings (got " .. type(t) .. ")", level + 1)
  end
  options.check(what, server and server_fields or client_fields, t, level + 1)
  if server and (t.CertFile == nil) ~= (t.KeyFile == nil) then
    error(what .. ": CertFile and KeyFile go together", level + 1)
  end
  if server and not t.CertFile and not (t.Certificates and t.Certificates[1]) then
    return nil, "tls: neither Certificates nor CertFile/KeyFile given"
  end
  local key, s = settings(t, server)
  local cfg = made[key]
  if cfg then return cfg end
  local err
  cfg, err = core.tls_config(server, s)
  if not cfg then return nil, err end
  made[key] = cfg
  return cfg
end

-- server_config(t, what, level) -> luaws.TLSConfig | nil, err; misuse raises at level.
function M.server_config(t, what, level) return config(t, true, what, level + 1) end

-- client_config(t | nil, what, level) -> luaws.TLSConfig | nil, err (nil t: Go's
-- defaults: the system's CAs, the name verified).
function M.client_config(t, what, level) return config(t or {}, false, what, level + 1) end

return M
