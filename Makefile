# Builds the C library (libmyriad.so / .a), the C demo and examples, and installs library, header and
# pkg-config files:   make && make install PREFIX=/usr/local   (make uninstall PREFIX=... removes them)
# `make install` builds nothing: it installs what `make` built (so it works from a root shell
# without cargo) and stops with a clear message if that is missing.
# `make lua` builds the Lua module for Lua 5.4 and LuaJIT against the release library.
PREFIX ?= /usr/local
DESTDIR ?=
VERSION := 0.1.0
MAJOR := 0
CARGO ?= cargo
PROFILE ?= release
TARGET := target/$(PROFILE)
CFLAGS ?= -O2 -g
WARN := -std=c11 -Wall -Wextra -Werror -pedantic

# LuaRocks run from the repository root would drive this file: refuse (it would build and
# install the C library instead of the Lua module).
ifneq ($(LIBFLAG)$(INST_LIBDIR),)
$(error this is the C library's Makefile: run `luarocks make` in bindings/lua)
endif

ifeq ($(PROFILE),release)
CARGO_FLAGS := --release
endif

.PHONY: all lib hello examples install uninstall lua clean build/myriad.pc build/myriad-static.pc

all: lib hello examples

lib:
	$(CARGO) build $(CARGO_FLAGS) -p myriad-ffi
	ln -sf libmyriad.so $(TARGET)/libmyriad.so.$(MAJOR)

hello: lib
	mkdir -p build
	$(CC) $(WARN) $(CFLAGS) -Iinclude examples/hello.c -o build/hello \
		-L$(TARGET) -Wl,-rpath,$(abspath $(TARGET)) -lmyriad -lpthread

# The stream examples: a TCP echo server and an HTTP proxy.
examples: lib
	mkdir -p build
	for x in echo proxy; do \
		$(CC) $(WARN) $(CFLAGS) -Iinclude examples/$$x.c -o build/$$x \
			-L$(TARGET) -Wl,-rpath,$(abspath $(TARGET)) -lmyriad || exit 1; \
	done

# The Lua module for both interpreters (the test suite builds its own against the debug
# library): build/lua/lua5.4/myriad.so and build/lua/luajit/myriad.so, run with
# LUA_CPATH='build/lua/lua5.4/?.so' LUA_PATH='bindings/lua/?.lua;;' lua5.4 app.lua (the second
# path for myriad.http). LuaRocks builds it too: `luarocks make` in bindings/lua.
LUA_FLAVOURS := lua5.4:/usr/include/lua5.4 luajit:/usr/include/luajit-2.1
lua: lib
	for v in $(LUA_FLAVOURS); do \
		lua=$${v%%:*}; inc=$${v#*:}; mkdir -p build/lua/$$lua; \
		$(CC) -std=c99 -Wall -Wextra -Werror -pedantic $(CFLAGS) -fPIC -shared -Iinclude -I$$inc \
			bindings/lua/myriad.c -o build/lua/$$lua/myriad.so \
			-L$(TARGET) -Wl,-rpath,$(abspath $(TARGET)) -lmyriad || exit 1; \
		echo "built build/lua/$$lua/myriad.so"; \
	done

# myriad.pc links the shared library; myriad-static.pc the static one (no run-time path
# needed): cc app.c $(pkg-config --cflags --libs myriad-static).
build/myriad.pc:
	mkdir -p build
	printf 'prefix=%s\nlibdir=$${prefix}/lib\nincludedir=$${prefix}/include\n\nName: myriad\nDescription: Event loop serving HTTP/1.1 and FastCGI\nVersion: %s\nLibs: -L$${libdir} -lmyriad\nLibs.private: -lpthread -ldl -lm\nCflags: -I$${includedir}\n' \
		'$(PREFIX)' '$(VERSION)' > $@

build/myriad-static.pc:
	mkdir -p build
	printf 'prefix=%s\nlibdir=$${prefix}/lib\nincludedir=$${prefix}/include\n\nName: myriad-static\nDescription: Event loop serving HTTP/1.1 and FastCGI (static library)\nVersion: %s\nLibs: $${libdir}/libmyriad.a -lpthread -ldl -lm\nCflags: -I$${includedir}\n' \
		'$(PREFIX)' '$(VERSION)' > $@

INSTALLED := lib/libmyriad.so.$(VERSION) lib/libmyriad.so.$(MAJOR) lib/libmyriad.so lib/libmyriad.a \
	include/myriad.h lib/pkgconfig/myriad.pc lib/pkgconfig/myriad-static.pc

install: build/myriad.pc build/myriad-static.pc
	@for f in $(TARGET)/libmyriad.so $(TARGET)/libmyriad.a; do \
		[ -f $$f ] || { echo "make install: $$f is missing: run 'make' (as a user with cargo) first" >&2; exit 1; }; \
	done
	install -d $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include
	install -m 755 $(TARGET)/libmyriad.so $(DESTDIR)$(PREFIX)/lib/libmyriad.so.$(VERSION)
	ln -sf libmyriad.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/libmyriad.so.$(MAJOR)
	ln -sf libmyriad.so.$(MAJOR) $(DESTDIR)$(PREFIX)/lib/libmyriad.so
	install -m 644 $(TARGET)/libmyriad.a $(DESTDIR)$(PREFIX)/lib/libmyriad.a
	install -m 644 include/myriad.h $(DESTDIR)$(PREFIX)/include/myriad.h
	install -m 644 build/myriad.pc $(DESTDIR)$(PREFIX)/lib/pkgconfig/myriad.pc
	install -m 644 build/myriad-static.pc $(DESTDIR)$(PREFIX)/lib/pkgconfig/myriad-static.pc
	@echo "installed in $(DESTDIR)$(PREFIX); at run time the loader must find $(PREFIX)/lib:"
	@echo "  ldconfig (if it is in /etc/ld.so.conf*), or link with -Wl,-rpath,$(PREFIX)/lib, or use myriad-static"

uninstall:
	rm -f $(addprefix $(DESTDIR)$(PREFIX)/,$(INSTALLED))

clean:
	rm -rf build
