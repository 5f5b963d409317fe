-- docs/API.md must document every public name of luaws: every key of the table that
-- require "luaws" returns (and of its plain sub-tables, websocket.log and websocket.flag),
-- and every method of the objects it hands out. Names starting with "_" are private (C
-- internals such as _read, _write, _arm), except _VERSION, which is documented.
--
-- A name counts as documented when some "###" heading of docs/API.md mentions it in the
-- form it is called: "websocket.Listen", "websocket.log.Printf", "Conn:ReadMessage",
-- "Chan:Send", ... (as a whole word: "Conn:Close" does not document "Conn:CloseAll").
--
-- Methods are collected two ways: from the live method tables that are cheap to reach
-- (a connection's, via luaws.core.conn_methods; a Dialer's, an Upgrader's, a ServeMux's,
-- a channel's, an error's), and from the sources, "function Type:Name" in
-- lua/luaws/*.lua, for objects that only exist while serving (ResponseWriter, Server) or
-- whose __index is a function (Header). A method table in the sources that this spec
-- does not know how to name fails the spec, so new object types cannot slip by.

local DOC = "docs/API.md"

-- How each object type is written in the headings, by source table name and by the
-- __name of its metatable.
local TYPE_BY_SOURCE = {
  ["conn.lua:Reader"] = "Reader",
  ["conn.lua:Writer"] = "Writer",
  ["conn.lua:Conn"] = "Conn",
  ["http.lua:ResponseWriter"] = "ResponseWriter",
  ["http.lua:ServeMux"] = "ServeMux",
  ["listener.lua:Server"] = "Server",
  ["upgrader.lua:Upgrader"] = "Upgrader",
  ["client.lua:Dialer"] = "Dialer",
  ["runtime.lua:Chan"] = "Chan",
  ["runtime.lua:Ticker"] = "Ticker",
  ["header.lua:methods"] = "Header",
  ["errors.lua:Error"] = "Error",
}
local TYPE_BY_MTNAME = {
  ["luaws.Conn"] = "Conn",
  ["luaws.ServeMux"] = "ServeMux",
  ["luaws.Upgrader"] = "Upgrader",
  ["luaws.Dialer"] = "Dialer",
  ["luaws.Chan"] = "Chan",
  ["luaws.Ticker"] = "Ticker",
  ["luaws.Error"] = "Error",
  ["luaws.HTTPServer"] = "Server",
  ["luaws.ResponseWriter"] = "ResponseWriter",
}
-- Plain modules whose "function M.Name" definitions are public under this prefix.
local MODULE_PREFIX = {
  ["log.lua"] = "websocket.log.",
  ["flag.lua"] = "websocket.flag.",
}
local PUBLIC_UNDERSCORE = { _VERSION = true }

local function is_public(name)
  return type(name) == "string" and (name:sub(1, 1) ~= "_" or PUBLIC_UNDERSCORE[name])
end

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function headings(text)
  local out = {}
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    local h = line:match("^###%s+(.-)%s*$")
    if h then out[#out + 1] = h end
  end
  return out
end

-- Does heading h mention the qualified name q as a whole word?
local function mentions(h, q)
  local init = 1
  while true do
    local s, e = h:find(q, init, true)
    if not s then return false end
    local before = s > 1 and h:sub(s - 1, s - 1) or ""
    local after = h:sub(e + 1, e + 1)
    if not before:match("[%w_]") and not after:match("[%w_]") then return true end
    init = s + 1
  end
end

local function lua_files()
  local files = {}
  local p = assert(io.popen("ls lua/luaws/*.lua"))
  for path in p:lines() do files[#files + 1] = path end
  p:close()
  assert(#files > 0, "no lua/luaws/*.lua found (run busted from the repository root)")
  return files
end

describe("docs/API.md", function()
  local websocket, docs, heads

  setup(function()
    websocket = require "luaws"
    docs = read(DOC)
    heads = headings(docs)
  end)

  -- The set of public names that must have a heading, and where each came from.
  local function required_names()
    local want, order, problems = {}, {}, {}
    local function need(q, from)
      if not want[q] then
        want[q] = from
        order[#order + 1] = q
      end
    end
    local function type_of(v, what)
      local mt = getmetatable(v)
      local name = type(mt) == "table" and mt.__name
      local t = name and TYPE_BY_MTNAME[name]
      if not t then
        problems[#problems + 1] = "no heading type name for " .. what ..
          " (metatable __name " .. tostring(name) .. "): add it to TYPE_BY_MTNAME"
      end
      return t, mt
    end
    local function need_methods(v, what)
      local t, mt = type_of(v, what)
      if not t then return end
      -- Upgrader and Dialer keep their fields in a table behind the object, whose own
      -- __index is the method table: follow the chain of __index tables. A field that
      -- holds a function (DefaultDialer's Proxy) is an option, not a method.
      local index, seen = mt.__index, {}
      while type(index) == "table" and not seen[index] do
        seen[index] = true
        for k, f in pairs(index) do
          if is_public(k) and type(f) == "function" and not (mt.spec and mt.spec[k]) then
            need(t .. ":" .. k, what)
          end
        end
        local imt = getmetatable(index)
        index = type(imt) == "table" and imt.__index
      end
    end

    -- 1. Every key of the module table, and of its plain sub-tables.
    for k, v in pairs(websocket) do
      if is_public(k) then
        need("websocket." .. k, "require 'luaws'")
        if type(v) == "table" and getmetatable(v) == nil then
          for k2 in pairs(v) do
            if is_public(k2) then need("websocket." .. k .. "." .. k2, "websocket." .. k) end
          end
        end
      end
    end

    -- 2. Live method tables.
    local Conn_methods = require("luaws.core").conn_methods()
    for k, f in pairs(Conn_methods) do
      if is_public(k) and type(f) == "function" then need("Conn:" .. k, "luaws.core.conn_methods()") end
    end
    need_methods(websocket.DefaultServeMux, "websocket.DefaultServeMux")
    need_methods(websocket.NewServeMux(), "websocket.NewServeMux()")
    need_methods(websocket.DefaultDialer, "websocket.DefaultDialer")
    need_methods(websocket.Dialer{}, "websocket.Dialer{}")
    need_methods(websocket.Upgrader{}, "websocket.Upgrader{}")
    need_methods(websocket.Chan(), "websocket.Chan()")
    need_methods(websocket.ErrClosed, "websocket.ErrClosed")

    -- 3. Method and module definitions in the sources.
    for _, path in ipairs(lua_files()) do
      local file = path:match("([^/]+)$")
      local src = read(path)
      for tbl, name in src:gmatch("\nfunction%s+([%w_]+):([%w_]+)%s*%(") do
        if is_public(name) then
          local t = TYPE_BY_SOURCE[file .. ":" .. tbl]
          if t then
            need(t .. ":" .. name, path)
          else
            problems[#problems + 1] = path .. ": method table '" .. tbl .. "' (function " ..
              tbl .. ":" .. name .. ") has no heading type name: add it to TYPE_BY_SOURCE"
          end
        end
      end
      local prefix = MODULE_PREFIX[file]
      if prefix then
        for name in src:gmatch("\nfunction%s+M%.([%w_]+)%s*%(") do
          if is_public(name) then need(prefix .. name, path) end
        end
      end
    end
    return want, order, problems
  end

  it("has ### headings", function()
    assert.is_true(#heads > 50, "docs/API.md has only " .. #heads .. " ### headings")
  end)

  it("documents every public name with a ### heading", function()
    local want, order, problems = required_names()
    table.sort(order)
    local missing = {}
    for _, q in ipairs(order) do
      local found = false
      for _, h in ipairs(heads) do
        if mentions(h, q) then found = true break end
      end
      if not found then missing[#missing + 1] = q .. "   (from " .. want[q] .. ")" end
    end
    for _, p in ipairs(problems) do missing[#missing + 1] = p end
    assert.is_true(#missing == 0, #missing .. " public name(s) without a ### heading in " ..
      DOC .. ":\n  " .. table.concat(missing, "\n  "))
    -- sanity: the walk found what it should
    assert.is_truthy(want["Conn:ReadMessage"])
    assert.is_truthy(want["Conn:Subprotocol"])
    assert.is_truthy(want["ResponseWriter:Write"])
    assert.is_truthy(want["Header:Get"])
    assert.is_truthy(want["Ticker:Stop"])
    assert.is_truthy(want["websocket.log.Printf"])
    assert.is_truthy(want["websocket.flag.Parse"])
    assert.is_truthy(want["websocket.TextMessage"])
    assert.is_truthy(want["websocket._VERSION"])
    assert.is_nil(want["Conn:_read"])
  end)

  it("keeps the sections the API is grouped under", function()
    for _, s in ipairs({ "Conventions", "Constants", "Server", "Client", "Conn",
      "Close helpers", "Errors", "Headers", "Go-like runtime", "Embedding", "Diagnostics",
      "websocket.log", "websocket.flag", "Not yet implemented" }) do
      assert.is_truthy(docs:find("\n## " .. s .. "\n", 1, true), "missing section ## " .. s)
    end
    -- "Not yet implemented" is the last section
    local last
    for s in docs:gmatch("\n## ([^\n]+)") do last = s end
    assert.are.equal("Not yet implemented", last)
  end)

  it("gives the value of every message type and close code", function()
    for k, v in pairs(websocket) do
      if type(k) == "string" and type(v) == "number" and (k:match("Message$") or k:match("^Close")) then
        local ok = false
        for _, h in ipairs(heads) do
          if mentions(h, "websocket." .. k) and h:find("= " .. v, 1, true) then ok = true end
        end
        assert.is_true(ok, "no heading 'websocket." .. k .. " = " .. v .. "'")
      end
    end
  end)
end)
