-- Test certificates for the TLS specs, made at run time with the openssl command line
-- tool in a temporary directory: `local certs = require("tls_certs").make()`.
--
-- certs.dir                the directory (certs.remove() deletes it)
-- certs.ca, certs.ca_key   a test CA ("CN=luaws test CA")
-- certs.ca_dir             a directory holding the CA under its hashed name (openssl rehash)
-- certs.server, .server_key       CN=localhost, for DNS:localhost and IP:127.0.0.1, by the CA
-- certs.client, .client_key       CN=luaws test client (clientAuth), by the CA
-- certs.self, .self_key           self-signed, CN=localhost, DNS:localhost, IP:127.0.0.1
-- certs.expired, .expired_key     by the CA, localhost and 127.0.0.1, valid 2020-01-01 to
--                                  2021-01-01 (openssl ca -startdate/-enddate: openssl x509
--                                  -req cannot backdate)
-- certs.other, .other_key         by the CA, for DNS:example.com only
-- certs.wrong_key                 a key that belongs to none of the certificates
-- certs.encrypted_key             the server's key, encrypted (PKCS#8, passphrase "secret")
-- certs.bundle                    server certificate + key in one PEM file
-- certs.chained, .chained_key     CN=chained.localhost, for DNS:localhost and IP:127.0.0.1,
--                                  by an intermediate CA (CN=luaws test intermediate) that
--                                  the CA signed; the file holds the leaf, then the
--                                  intermediate
--
-- Keys are P-256 (fast to make); the whole set takes well under a second.
local M = {}

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function run(cmd, what)
  local log = os.tmpname()
  local ok = os.execute("(" .. cmd .. ") >" .. q(log) .. " 2>&1")
  local f = io.open(log)
  local out = f and f:read("a") or ""
  if f then f:close() end
  os.remove(log)
  if not ok then error("tls_certs: " .. what .. " failed:\n" .. cmd .. "\n" .. out, 3) end
end

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

function M.make()
  local p = io.popen("mktemp -d /tmp/luaws-tls.XXXXXX")
  local dir = p:read("l")
  p:close()
  assert(dir and dir:match("^/tmp/luaws%-tls%."), "mktemp -d failed")
  local c = { dir = dir }
  local function path(name) return dir .. "/" .. name end
  local ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"

  -- extensions for the leaf certificates
  write(path("ext.cnf"), [[
[server]
basicConstraints = CA:FALSE
keyUsage = digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1

[other]
basicConstraints = CA:FALSE
keyUsage = digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:example.com

[client]
basicConstraints = CA:FALSE
keyUsage = digitalSignature
extendedKeyUsage = clientAuth

[inter]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign

[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
]])
  -- a minimal `openssl ca` setup, for the expired certificate (explicit dates)
  write(path("ca.cnf"), ([[
[ca]
default_ca = test_ca

[test_ca]
dir = %s
database = $dir/index.txt
new_certs_dir = $dir/issued
serial = $dir/serial
default_md = sha256
policy = any
copy_extensions = none
unique_subject = no

[any]
commonName = supplied
]]):format(dir))
  write(path("index.txt"), "")
  write(path("serial"), "1000\n")
  os.execute("mkdir -p " .. q(path("issued")) .. " " .. q(path("cadir")))

  run(("cd %s && openssl req -x509 %s -keyout ca.key -out ca.pem -days 30 -subj '/CN=luaws test CA' " ..
    "-extensions ca -config ext.cnf"):format(q(dir), ec), "the CA")
  -- a leaf: key + CSR, signed by the CA with the given extension section
  local function leaf(name, cn, ext)
    run(("cd %s && openssl req -new %s -keyout %s.key -out %s.csr -subj %s && " ..
      "openssl x509 -req -in %s.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 " ..
      "-extfile ext.cnf -extensions %s -out %s.pem"):format(q(dir), ec, name, name,
      q("/CN=" .. cn), name, ext, name), "the " .. name .. " certificate")
  end
  leaf("server", "localhost", "server")
  leaf("inter", "luaws test intermediate", "inter")
  run(("cd %s && openssl req -new %s -keyout chained.key -out chained.csr -subj '/CN=chained.localhost' && " ..
    "openssl x509 -req -in chained.csr -CA inter.pem -CAkey inter.key -CAcreateserial -days 30 " ..
    "-extfile ext.cnf -extensions server -out chained-leaf.pem && cat chained-leaf.pem inter.pem >chained.pem")
    :format(q(dir), ec), "the chained certificate")
  leaf("client", "luaws test client", "client")
  leaf("other", "example.com", "other")
  run(("cd %s && openssl req -x509 %s -keyout self.key -out self.pem -days 30 -subj '/CN=localhost' " ..
    "-addext 'subjectAltName=DNS:localhost,IP:127.0.0.1'"):format(q(dir), ec), "the self-signed certificate")
  run(("cd %s && openssl req -new %s -keyout expired.key -out expired.csr -subj '/CN=localhost' && " ..
    "openssl ca -batch -config ca.cnf -cert ca.pem -keyfile ca.key -in expired.csr -out expired.pem " ..
    "-startdate 20200101000000Z -enddate 20210101000000Z -notext -extfile ext.cnf -extensions server")
    :format(q(dir), ec), "the expired certificate")
  run(("cd %s && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out wrong.key")
    :format(q(dir)), "the stray key")
  run(("cd %s && openssl pkcs8 -topk8 -in server.key -v2 aes256 -passout pass:secret -out encrypted.key")
    :format(q(dir)), "the encrypted key")
  run(("cd %s && cp ca.pem cadir/ && openssl rehash cadir && cat server.pem server.key >bundle.pem")
    :format(q(dir)), "the hashed CA directory")

  c.ca, c.ca_key, c.ca_dir = path("ca.pem"), path("ca.key"), path("cadir")
  for _, name in ipairs({ "server", "client", "self", "expired", "other", "chained" }) do
    c[name], c[name .. "_key"] = path(name .. ".pem"), path(name .. ".key")
  end
  c.wrong_key, c.bundle = path("wrong.key"), path("bundle.pem")
  c.encrypted_key = path("encrypted.key")
  function c.remove()
    if dir:match("^/tmp/luaws%-tls%.") then os.execute("rm -rf " .. q(dir)) end
  end
  return c
end

return M
