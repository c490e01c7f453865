package = "myriad"
version = "0.1.0-1"
source = { url = "git+https://example.invalid/myriad.git", tag = "v0.1.0" }
description = {
  summary = "HTTP/1.1 and FastCGI server on myriad's single-syscall event loop",
  detailed = "A Lua C module on the myriad C ABI (libmyriad): servers, timers, signals, coroutine handlers.",
  license = "MIT OR Apache-2.0",
}
dependencies = { "lua >= 5.1" }
external_dependencies = {
  MYRIAD = { header = "myriad.h", library = "myriad" },
}
build = {
  type = "builtin",
  modules = {
    myriad = {
      sources = { "bindings/lua/myriad.c" },
      incdirs = { "$(MYRIAD_INCDIR)" },
      libdirs = { "$(MYRIAD_LIBDIR)" },
      libraries = { "myriad" },
    },
  },
}
