-- Proxies and URL credentials for the client. websocket.ProxyFromEnvironment and
-- websocket.ProxyURL as Go's net/http, with the environment rules of
-- golang.org/x/net/http/httpproxy (proxy.go; NO_PROXY with domains, leading dots, "*.",
-- ports, IPs, CIDRs and "*"; localhost and loopback addresses never proxied); and what
-- Dial needs from a proxy URL or a ws URL's user info: where to connect, and Basic
-- credentials. The CONNECT exchange itself is in src/client.c.
local errors = require "luaws.errors"

local M = {}

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function base64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a << 16 | (b or 0) << 8 | (c or 0)
    local quad = {}
    for k = 1, 4 do
      local x = (n >> (24 - 6 * k) & 63) + 1
      quad[k] = B64:sub(x, x)
    end
    local keep = (c and 4) or (b and 3) or 2 -- characters that carry bits; "=" for the rest
    out[#out + 1] = table.concat(quad, "", 1, keep) .. ("="):rep(4 - keep)
  end
  return table.concat(out)
end

-- The value of an Authorization or Proxy-Authorization header for these credentials.
function M.basic_auth(user, password)
  return "Basic " .. base64(user .. ":" .. password)
end

-- Go's url.unescape: "%XX" to its byte; nil when a '%' is not followed by two hex digits.
local function unescape(s)
  if not s:find("%", 1, true) then return s end
  local bad = false
  local out = s:gsub("%%(%x?%x?)", function(h)
    if #h == 2 then return string.char(tonumber(h, 16)) end
    bad = true
  end)
  if bad then return nil end
  return out
end

-- authority -> userinfo or nil, "host[:port]"; nil when the user info is malformed.
-- As Go's url.Parse: the user info ends at the last '@', holds only the characters of
-- validUserinfo, and its user name and password (after the first ':') are unescaped;
-- userinfo.password is nil when there is no ':'.
function M.split_authority(authority)
  local at = authority:match(".*()@")
  if not at then return false, authority end
  local info = authority:sub(1, at - 1)
  if info:find("[^%w%-%._:~!%$&'%(%)%*%+,;=%%@]") then return nil end
  local user, password = info:match("^([^:]*):(.*)$")
  user = unescape(user or info)
  password = password and unescape(password)
  if not user or (info:find(":", 1, true) and not password) then return nil end
  return { user = user, password = password }, authority:sub(at + 1)
end

-- Go's url.URL Hostname() and Port() of "host[:port]" or "[v6][:port]".
local function hostname_port(hostport)
  local host, port = hostport, ""
  local colon = hostport:match(".*():")
  if colon and hostport:find("^%d*$", colon + 1) then
    host, port = hostport:sub(1, colon - 1), hostport:sub(colon + 1)
  end
  if host:sub(1, 1) == "[" and host:sub(-1) == "]" then host = host:sub(2, -2) end
  return host, port
end

-- Go's net.JoinHostPort.
local function join_host_port(host, port)
  if host:find(":", 1, true) then return "[" .. host .. "]:" .. port end
  return host .. ":" .. port
end
M.join_host_port = join_host_port

-- parse("scheme://[user[:password]@]host[:port][/path]") -> {scheme (lower case),
-- userinfo (or false), host (no brackets), port ("" when absent), hostport (as
-- written)}, or nil when it is not such a URL, or is one Go's url.Parse refuses.
function M.parse(url)
  if type(url) ~= "string" or url:find("[%z\1-\31\127]") then return nil end
  local scheme, authority = url:match("^(%a[%w+.-]*)://([^/?#]*)")
  if not scheme then return nil end
  local userinfo, hostport = M.split_authority(authority)
  if userinfo == nil then return nil end
  local host, port = hostname_port(hostport)
  local bracketed = hostport:sub(1, 1) == "["
  if bracketed ~= (hostport:find("]", 1, true) ~= nil) or host:find("[%[%] ]")
    or (not bracketed and host:find(":", 1, true)) then
    return nil -- an unbalanced bracket, a space, or a port that is not a number
  end
  return { scheme = scheme:lower(), userinfo = userinfo, host = host, port = port,
    hostport = hostport }
end

local proxy_ports = { http = 80, socks5 = 1080, socks5h = 1080 }

-- Dial's view of the URL a Proxy function returned, for a dial to the server u (Dial's
-- parsed URL): {host, port, hostport} of the proxy, and core (the proxy table of
-- core.dial, see src/proxy.c); or nil, err. As gorilla: http:// proxies take CONNECT,
-- with Basic credentials when the URL has a password; socks5:// (and socks5h://, as
-- golang.org/x/net/proxy) proxies take SOCKS5, with the user name and password when
-- the user name is not empty. The port defaults to 80 and 1080.
function M.dial_params(url, u)
  local p = M.parse(url)
  if not p then
    return nil, errors.new(("proxy: invalid proxy URL %q"):format(tostring(url)))
  end
  if not proxy_ports[p.scheme] then
    return nil, errors.new("proxy: unknown scheme: " .. p.scheme)
  end
  local port = p.port ~= "" and tonumber(p.port) or proxy_ports[p.scheme]
  if p.host == "" or port < 1 or port > 65535 then
    return nil, errors.new(("proxy: invalid proxy URL %q"):format(url))
  end
  local hostport = join_host_port(p.host, port)
  local core = { addr = hostport, to = join_host_port(u.host, u.port), host = u.host,
    port = u.port, socks = p.scheme ~= "http" }
  local info = p.userinfo
  if core.socks then
    if #u.host > 255 then
      return nil, errors.new("proxy: destination host name too long: " .. u.host)
    end
    if info then core.user, core.password = info.user, info.password or "" end
  elseif info and info.password then
    core.authorization = M.basic_auth(info.user, info.password)
  end
  return { host = p.host, port = port, hostport = hostport, core = core }
end

-- The request a Proxy function gets, as the fields of Go's *http.Request it may look at.
function M.request(u, header, host)
  local path, query = u.path:match("^([^?]*)%??(.*)$")
  return {
    Method = "GET", Host = host, Header = header,
    URL = { Scheme = u.scheme == "wss" and "https" or "http", Host = u.hostport,
      Path = path, RawQuery = query },
  }
end

-- IP addresses ---------------------------------------------------------------------------
-- As 16-byte strings, IPv4 as IPv4-mapped IPv6 (so that Go's IP.Equal is ==).

local V4_PREFIX = ("\0"):rep(10) .. "\255\255"

-- Go's parseIPv4: four decimal fields up to 255, no leading zeros.
local function parse_ipv4(s)
  local f = { s:match("^(%d%d?%d?)%.(%d%d?%d?)%.(%d%d?%d?)%.(%d%d?%d?)$") }
  if #f ~= 4 then return nil end
  for i, x in ipairs(f) do
    if (#x > 1 and x:sub(1, 1) == "0") or tonumber(x) > 255 then return nil end
    f[i] = tonumber(x)
  end
  return string.char(table.unpack(f))
end

local function ipv6_groups(part)
  local list = {}
  if part == "" then return list end
  for g in (part .. ":"):gmatch("([^:]*):") do
    if not g:match("^%x%x?%x?%x?$") then return nil end
    list[#list + 1] = tonumber(g, 16)
  end
  return list
end

-- Up to eight groups of hex digits, one "::", the last 32 bits possibly as IPv4.
local function parse_ipv6(s)
  local tail, want = "", 8
  if s:find(".", 1, true) then
    local colon = s:match(".*():")
    tail = colon and parse_ipv4(s:sub(colon + 1))
    if not tail then return nil end
    s = s:sub(1, s:sub(colon - 1, colon) == "::" and colon or colon - 1)
    want = 6
  end
  local left, right = s:match("^(.-)::(.*)$")
  local groups
  if left then
    local l, r = ipv6_groups(left), ipv6_groups(right)
    if not l or not r or right:find("::", 1, true) or #l + #r >= want then return nil end
    groups = l
    for _ = 1, want - #l - #r do groups[#groups + 1] = 0 end
    table.move(r, 1, #r, #groups + 1, groups)
  else
    groups = ipv6_groups(s)
    if not groups or #groups ~= want then return nil end
  end
  local out = {}
  for i, g in ipairs(groups) do out[i] = string.char(g >> 8, g & 255) end
  return table.concat(out) .. tail
end

-- Go's net.ParseIP; with zone, a "%zone" suffix on an IPv6 address is allowed (as
-- netip.ParseAddr, which httpproxy uses for the request's host).
local function parse_ip(s, zone)
  if s:find(":", 1, true) then
    if zone then s = s:gsub("^([^%%]*)%%.+$", "%1") end
    return parse_ipv6(s)
  end
  local v4 = parse_ipv4(s)
  return v4 and V4_PREFIX .. v4
end

local function is_loopback(ip)
  if ip:sub(1, 12) == V4_PREFIX then return ip:byte(13) == 127 end
  return ip == ("\0"):rep(15) .. "\1"
end

-- Go's net.ParseCIDR -> network address, prefix length over the 16 bytes
local function parse_cidr(s)
  local addr, bits = s:match("^([^/]*)/(%d+)$")
  if not addr then return nil end
  local ip, n = parse_ip(addr), tonumber(bits)
  if not ip then return nil end
  if not addr:find(":", 1, true) then
    if n > 32 then return nil end
    n = n + 96
  elseif n > 128 then
    return nil
  end
  return ip, n
end

local function in_prefix(ip, net, bits)
  local whole = bits // 8
  if ip:sub(1, whole) ~= net:sub(1, whole) then return false end
  local rest = bits % 8
  if rest == 0 then return true end
  local mask = (0xff << (8 - rest)) & 0xff
  return ip:byte(whole + 1) & mask == net:byte(whole + 1) & mask
end

-- Host names --------------------------------------------------------------------------

-- RFC 3492 Punycode of one label's code points.
local function punycode(cps)
  local base, tmin, tmax = 36, 1, 26
  local out = {}
  for _, c in ipairs(cps) do
    if c < 128 then out[#out + 1] = string.char(c) end
  end
  local b = #out
  local h = b
  if b > 0 then out[#out + 1] = "-" end
  local function adapt(delta, points, first)
    delta = first and delta // 700 or delta // 2
    delta = delta + delta // points
    local k = 0
    while delta > ((base - tmin) * tmax) // 2 do
      delta = delta // (base - tmin)
      k = k + base
    end
    return k + (base - tmin + 1) * delta // (delta + 38)
  end
  local function digit(d) return string.char(d < 26 and d + 97 or d + 22) end
  local n, delta, bias = 128, 0, 72
  while h < #cps do
    local m = math.huge
    for _, c in ipairs(cps) do
      if c >= n and c < m then m = c end
    end
    delta = delta + (m - n) * (h + 1)
    n = m
    for _, c in ipairs(cps) do
      if c < n then delta = delta + 1 end
      if c == n then
        local q, k = delta, base
        while true do
          local t = k <= bias and tmin or (k >= bias + tmax and tmax or k - bias)
          if q < t then break end
          out[#out + 1] = digit(t + (q - t) % (base - t))
          q = (q - t) // (base - t)
          k = k + base
        end
        out[#out + 1] = digit(q)
        bias = adapt(delta, h + 1, h == b)
        delta = 0
        h = h + 1
      end
    end
    delta = delta + 1
    n = n + 1
  end
  return "xn--" .. table.concat(out)
end

-- httpproxy's idnaASCII: an ASCII name as it is; otherwise each label with non-ASCII
-- characters in Punycode (without UTS #46 mapping beyond ASCII lower case); a name
-- that is not UTF-8 as it is.
local function idna_ascii(name)
  if not name:find("[\128-\255]") then return name end
  local labels = {}
  for label in (name .. "."):gmatch("([^.]*)%.") do
    if label:find("[\128-\255]") then
      local cps = {}
      local ok = pcall(function()
        for _, c in utf8.codes(label:lower()) do cps[#cps + 1] = c end
      end)
      if not ok then return name end
      label = punycode(cps)
    end
    labels[#labels + 1] = label
  end
  return table.concat(labels, ".")
end

-- Go's net.SplitHostPort -> host, port, or nil when it is not "host:port".
local function split_host_port(s)
  local i = s:match(".*():")
  if not i then return nil end
  local host, j, k
  if s:sub(1, 1) == "[" then
    local close = s:find("]", 1, true)
    if not close or close + 1 ~= i then return nil end
    host, j, k = s:sub(2, close - 1), 2, close + 1
  else
    host, j, k = s:sub(1, i - 1), 1, 1
    if host:find(":", 1, true) then return nil end
  end
  if s:find("[", j, true) or s:find("]", k, true) then return nil end
  return host, s:sub(i + 1)
end

-- The environment -----------------------------------------------------------------------

local function getenv_any(...)
  for _, name in ipairs { ... } do
    local v = os.getenv(name)
    if v and v ~= "" then return v end
  end
  return ""
end

-- httpproxy.FromEnvironment: the configuration the environment gives.
function M.from_environment()
  return {
    HTTPProxy = getenv_any("HTTP_PROXY", "http_proxy"),
    HTTPSProxy = getenv_any("HTTPS_PROXY", "https_proxy"),
    NoProxy = getenv_any("NO_PROXY", "no_proxy"),
    CGI = (os.getenv("REQUEST_METHOD") or "") ~= "",
  }
end

-- httpproxy's parseProxy: a URL, or "host[:port]" taken as "http://host[:port]".
local function parse_proxy(s)
  if s == "" then return nil end
  local p = M.parse(s)
  if p and p.host ~= "" then return s end
  if M.parse("http://" .. s) then return "http://" .. s end
  return nil -- refused, as Go ignores a proxy it cannot parse
end

-- NO_PROXY -> ip matchers, domain matchers, or true for "*" (httpproxy's config.init).
local function no_proxy_matchers(list)
  local ips, domains = {}, {}
  for p in (list .. ","):gmatch("([^,]*),") do
    p = p:lower():match("^%s*(.-)%s*$")
    if p == "*" then return true end
    local net, bits = parse_cidr(p)
    if net then
      ips[#ips + 1] = { net = net, bits = bits }
    elseif p ~= "" then
      local phost, pport = split_host_port(p)
      if phost then
        if phost:sub(1, 1) == "[" and phost:sub(-1) == "]" then phost = phost:sub(2, -2) end
      else
        phost, pport = p, ""
      end
      local ip = parse_ip(phost)
      if ip then
        ips[#ips + 1] = { ip = ip, port = pport }
      elseif phost ~= "" then
        if phost:sub(1, 2) == "*." then phost = phost:sub(2) end
        local match_host = phost:sub(1, 1) ~= "."
        if match_host then phost = "." .. phost end
        domains[#domains + 1] = { host = idna_ascii(phost), port = pport,
          match_host = match_host }
      end
    end
  end
  return { ips = ips, domains = domains }
end

-- httpproxy's useProxy: should a request to host (Hostname(), in ASCII) and port go
-- through the proxy?
local function use_proxy(matchers, host, port)
  if host == "localhost" then return false end
  local ip = parse_ip(host, true)
  if ip and is_loopback(ip) then return false end
  if matchers == true then return false end
  host = host:lower():match("^%s*(.-)%s*$")
  if ip then
    for _, m in ipairs(matchers.ips) do
      if m.net and in_prefix(ip, m.net, m.bits) then return false end
      if m.ip == ip and (m.port == "" or m.port == port) then return false end
    end
    return true -- a domain never matches an IP address
  end
  for _, m in ipairs(matchers.domains) do
    if host:sub(-#m.host) == m.host or (m.match_host and host == m.host:sub(2)) then
      if m.port == "" or m.port == port then return false end
    end
  end
  return true
end

local default_ports = { http = "80", https = "443", socks5 = "1080" }

-- httpproxy's Config.ProxyFunc: cfg = {HTTPProxy=, HTTPSProxy=, NoProxy=, CGI=} ->
-- function(url) -> proxy URL string or nil, err, for url = {Scheme=, Host=} (Go's
-- *url.URL fields).
function M.proxy_func(cfg)
  local http_proxy, https_proxy = parse_proxy(cfg.HTTPProxy or ""),
    parse_proxy(cfg.HTTPSProxy or "")
  local matchers = no_proxy_matchers(cfg.NoProxy or "")
  local cgi = cfg.CGI
  return function(url)
    local proxy
    if url.Scheme == "https" then
      proxy = https_proxy
    elseif url.Scheme == "http" then
      proxy = http_proxy
      if proxy and cgi then
        return nil, errors.new("refusing to use HTTP_PROXY value in CGI environment; " ..
          "see golang.org/s/cgihttpproxy")
      end
    end
    if not proxy then return nil end
    local host, port = hostname_port(url.Host or "")
    if port == "" then port = default_ports[url.Scheme] or "" end
    if not use_proxy(matchers, idna_ascii(host), port) then return nil end
    return proxy
  end
end

-- websocket.ProxyFromEnvironment(req): as Go's, the environment is read once, at the
-- first call.
local from_env
function M.ProxyFromEnvironment(req)
  if type(req) ~= "table" or type(req.URL) ~= "table" then
    error("bad argument #1 to 'ProxyFromEnvironment' (request table with a URL expected)", 2)
  end
  from_env = from_env or M.proxy_func(M.from_environment())
  return from_env(req.URL)
end

-- websocket.ProxyURL(url): a Proxy function that always gives url.
function M.ProxyURL(url)
  if type(url) ~= "string" then
    error("bad argument #1 to 'ProxyURL' (string expected, got " .. type(url) .. ")", 2)
  end
  return function() return url end
end

return M
