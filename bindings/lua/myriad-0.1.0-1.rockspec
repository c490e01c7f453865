-- LuaRocks: `luarocks make` in bindings/lua (see bindings/lua/README.md). The source URL is
-- only used by `luarocks pack` of this rockspec; `luarocks pack myriad` after a make packs
-- the built rock instead, from the local tree.
package = "myriad"
version = "0.1.0-1"
source = { url = "git+https://example.invalid/myriad.git", tag = "v0.1.0", dir = "myriad/bindings/lua" }
description = {
  summary = "HTTP/1.1 and FastCGI server on myriad's single-syscall event loop",
  detailed = "A Lua C module on the myriad C ABI (libmyriad): servers, timers, signals, coroutine handlers, cosockets and an HTTP client.",
  license = "MIT OR Apache-2.0",
}
dependencies = { "lua >= 5.1" }
build = {
  type = "make",
  -- (Makefile finds myriad.h and libmyriad: MYRIAD_INCDIR/MYRIAD_LIBDIR from the
  -- environment: `MYRIAD_LIBDIR=... luarocks make`, else pkg-config myriad, else the source tree)
  build_variables = {
    CFLAGS = "$(CFLAGS)",
    LIBFLAG = "$(LIBFLAG)",
    LUA_INCDIR = "$(LUA_INCDIR)",
  },
  install_variables = {
    INST_LIBDIR = "$(LIBDIR)",
    INST_LUADIR = "$(LUADIR)",
  },
}
