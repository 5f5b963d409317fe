rockspec_format = "3.0"
package = "luaws"
version = "scm-1"
source = {
  url = "git+file:///dev/null", -- built in place with `luarocks make`
}
description = {
  summary = "gorilla/websocket's API for Lua 5.4, on libwebsockets and one event loop",
  detailed = [[
luaws gives Lua programs the WebSocket API of Go's gorilla/websocket (Upgrader, Dialer,
Conn:ReadMessage, Conn:WriteMessage, ...) with every connection handler running as its
own coroutine on one libuv event loop driven by libwebsockets.

Optional: luv (Debian lua-luv, or the luv rock) shares that loop when installed; to let
a later require "luv" run on luaws's loop, build with luv's C header <luv/luv.h>
(Debian lua-luv-dev, in the Lua include directory). Neither is required.
]],
  license = "MIT",
}
dependencies = {
  "lua >= 5.4, < 5.5",
}
external_dependencies = {
  LIBWEBSOCKETS = { header = "libwebsockets.h", library = "websockets" },
  LIBUV = { header = "uv.h", library = "uv" },
  OPENSSL = { header = "openssl/ssl.h", library = "ssl" },
  ZLIB = { header = "zlib.h", library = "z" },
  ISAL = { header = "isa-l/igzip_lib.h", library = "isal" },
}
build = {
  type = "builtin",
  modules = {
    ["luaws.core"] = {
      sources = {
        "src/address.c", "src/buf.c", "src/client.c", "src/conn.c", "src/conn_fast.c", "src/core.c",
        "src/deadline.c", "src/deflate.c", "src/frame.c", "src/headers.c", "src/http.c",
        "src/igzip.c", "src/inbox.c", "src/limits.c", "src/loop.c", "src/object.c", "src/prepared.c",
        "src/process.c", "src/protocol.c", "src/proxy.c",
        "src/receiver.c", "src/sched.c", "src/sender.c", "src/server.c", "src/signal.c", "src/time.c",
        "src/timer.c", "src/tls.c", "src/tls_config.c", "src/utf8.c",
      },
      libraries = { "websockets", "uv", "ssl", "crypto", "z", "isal", "m" },
      incdirs = { "$(LIBWEBSOCKETS_INCDIR)", "$(LIBUV_INCDIR)", "$(OPENSSL_INCDIR)", "$(ZLIB_INCDIR)",
        "$(ISAL_INCDIR)" },
      libdirs = { "$(LIBWEBSOCKETS_LIBDIR)", "$(LIBUV_LIBDIR)", "$(OPENSSL_LIBDIR)", "$(ZLIB_LIBDIR)",
        "$(ISAL_LIBDIR)" },
      defines = {},
    },
    ["luaws"] = "lua/luaws/init.lua",
    ["luaws.sched"] = "lua/luaws/sched.lua",
    ["luaws.runtime"] = "lua/luaws/runtime.lua",
    ["luaws.errors"] = "lua/luaws/errors.lua",
    ["luaws.header"] = "lua/luaws/header.lua",
    ["luaws.conn"] = "lua/luaws/conn.lua",
    ["luaws.http"] = "lua/luaws/http.lua",
    ["luaws.listener"] = "lua/luaws/listener.lua",
    ["luaws.workers"] = "lua/luaws/workers.lua",
    ["luaws.upgrader"] = "lua/luaws/upgrader.lua",
    ["luaws.client"] = "lua/luaws/client.lua",
    ["luaws.proxy"] = "lua/luaws/proxy.lua",
    ["luaws.log"] = "lua/luaws/log.lua",
    ["luaws.flag"] = "lua/luaws/flag.lua",
    ["luaws.options"] = "lua/luaws/options.lua",
    ["luaws.tls"] = "lua/luaws/tls.lua",
  },
  copy_directories = { "examples", "docs" },
}
test = {
  type = "busted",
}
