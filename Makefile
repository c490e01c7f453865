# Builds the C library (libmyriad.so / .a), the C demo and examples, and installs library, header and
# pkg-config file:   make && make install PREFIX=/usr/local
PREFIX ?= /usr/local
DESTDIR ?=
VERSION := 0.1.0
MAJOR := 0
CARGO ?= cargo
PROFILE ?= release
TARGET := target/$(PROFILE)
CFLAGS ?= -O2 -g
WARN := -std=c11 -Wall -Wextra -Werror -pedantic

ifeq ($(PROFILE),release)
CARGO_FLAGS := --release
endif

.PHONY: all lib hello examples install clean build/myriad.pc

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

build/myriad.pc:
	mkdir -p build
	printf 'prefix=%s\nlibdir=$${prefix}/lib\nincludedir=$${prefix}/include\n\nName: myriad\nDescription: Event loop serving HTTP/1.1 and FastCGI\nVersion: %s\nLibs: -L$${libdir} -lmyriad\nLibs.private: -lpthread -ldl -lm\nCflags: -I$${includedir}\n' \
		'$(PREFIX)' '$(VERSION)' > $@

install: lib build/myriad.pc
	install -d $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include
	install -m 755 $(TARGET)/libmyriad.so $(DESTDIR)$(PREFIX)/lib/libmyriad.so.$(VERSION)
	ln -sf libmyriad.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/libmyriad.so.$(MAJOR)
	ln -sf libmyriad.so.$(MAJOR) $(DESTDIR)$(PREFIX)/lib/libmyriad.so
	install -m 644 $(TARGET)/libmyriad.a $(DESTDIR)$(PREFIX)/lib/libmyriad.a
	install -m 644 include/myriad.h $(DESTDIR)$(PREFIX)/include/myriad.h
	install -m 644 build/myriad.pc $(DESTDIR)$(PREFIX)/lib/pkgconfig/myriad.pc

clean:
	rm -rf build
