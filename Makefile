# luaws: build the C core (build/luaws/core.so), test, install.
#   make                  build
#   make test             run the busted specs (builds the unit-test module first)
#   make unit             build/luaws_unit.so: the test-only module of the unit specs
#   make test SANITIZE=1  the same under ASan/UBSan (with leak checking)
#   make soak-asan        the 8 s churn soak under ASan with the leak checker
#   make stress-asan      the write-path and slow-reader stress specs under ASan/UBSan
#   make test-valgrind    the specs with lua5.4 under valgrind's memcheck (slow)
#   make embed            build/embed-host: examples/embed/host.c, a C epoll loop embedding
#                         Lua and luaws in two Lua states
#   make install PREFIX=/usr/local [DESTDIR=...]

LUA_VERSION ?= 5.4
PKG_CONFIG ?= pkg-config
LUA_PC ?= $(shell $(PKG_CONFIG) --exists lua$(LUA_VERSION) && echo lua$(LUA_VERSION) || echo lua-$(LUA_VERSION))
LUA ?= lua$(LUA_VERSION)
BUSTED ?= busted

PREFIX ?= /usr/local
LUA_LIBDIR ?= $(PREFIX)/lib/lua/$(LUA_VERSION)
LUA_SHAREDIR ?= $(PREFIX)/share/lua/$(LUA_VERSION)

CC ?= cc
OPT ?= -O2 -g
WARN = -Wall -Wextra -Werror -Wshadow -Wmissing-prototypes -Wstrict-prototypes
CFLAGS += $(OPT) $(WARN) -std=gnu11 -fPIC -fvisibility=hidden \
	$(shell $(PKG_CONFIG) --cflags $(LUA_PC) libwebsockets libuv)
LIBS = $(shell $(PKG_CONFIG) --libs libwebsockets libuv openssl) -lz -lisal -lm
LDFLAGS += -shared

ifeq ($(SANITIZE),1)
# GCC's "undefined" leaves out float-cast-overflow (a double out of an integer's range,
# math.huge or NaN included): named here, and fatal like the rest
UBSAN = undefined,float-cast-overflow
CFLAGS += -fsanitize=address,$(UBSAN) -fno-omit-frame-pointer -fno-sanitize-recover=$(UBSAN)
LDFLAGS += -fsanitize=address,$(UBSAN)
SANITIZER_RUNTIME = $(shell $(CC) -print-file-name=libasan.so)
TEST_ENV = LD_PRELOAD=$(SANITIZER_RUNTIME) ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
	LSAN_OPTIONS=suppressions=$(CURDIR)/spec/lsan.supp:print_suppressions=0 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
BUILD ?= build-sanitize
else
BUILD ?= build
endif

SRC = $(wildcard src/*.c)
OBJ = $(SRC:src/%.c=$(BUILD)/obj/%.o)
CORE = $(BUILD)/luaws/core.so
LUA_MODULES = $(wildcard lua/luaws/*.lua)
# Test only, never installed: bindings over the pure C files (no lws, no libuv calls)
UNIT = $(BUILD)/luaws_unit.so
UNIT_OBJ = $(BUILD)/obj/unit/luaws_unit.o $(addprefix $(BUILD)/obj/,frame.o inbox.o utf8.o buf.o)

all: $(CORE)

$(BUILD)/obj/%.o: src/%.c src/luaws.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(CORE): $(OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $(OBJ) $(LIBS)

$(BUILD)/obj/unit/%.o: spec/unit/%.c src/luaws.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(UNIT): $(UNIT_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $(UNIT_OBJ)

unit: $(UNIT)

# An example host program, never installed: links Lua itself; luaws.core is loaded from
# the same build directory
EMBED = $(BUILD)/embed-host
$(EMBED): examples/embed/host.c $(CORE)
	$(CC) $(filter-out -fPIC -fvisibility=hidden,$(CFLAGS)) -o $@ $< \
		$(shell $(PKG_CONFIG) --libs $(LUA_PC)) -lm

embed: $(EMBED)

# Test only, never installed: a host process with a second thread (spec/fd_tables_spec.lua)
THREADED = $(BUILD)/threaded-host
$(THREADED): spec/unit/threaded_host.c
	$(CC) $(filter-out -fPIC -fvisibility=hidden,$(CFLAGS)) -pthread -o $@ $< \
		$(shell $(PKG_CONFIG) --libs $(LUA_PC)) -lm

test: $(CORE) $(UNIT) $(EMBED) $(THREADED)
	LUAWS_BUILD=$(BUILD) $(TEST_ENV) $(BUSTED) --lua=$(LUA) $(BUSTED_ARGS)

# The churn soak, 8 s, under ASan/UBSan with the leak checker (CI runs it).
soak-asan:
	$(MAKE) SANITIZE=1
	LD_PRELOAD=$(shell $(CC) -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=1 \
	LSAN_OPTIONS=suppressions=$(CURDIR)/spec/lsan.supp:print_suppressions=0 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	LUAWS_BUILD=build-sanitize $(LUA) bench/soak.lua 8 --seed 42

# The write-path specs (frames never interleave, 50 slow readers under stress) under
# ASan/UBSan with the leak checker (CI runs it).
stress-asan:
	$(MAKE) test SANITIZE=1 BUSTED_ARGS=spec/issue9_writepath_spec.lua

test-valgrind: $(CORE) $(UNIT) $(EMBED) $(THREADED)
	LUAWS_BUILD=$(BUILD) LUAWS_SPEC_TIMEOUT=1200 $(BUSTED) --lua=$(CURDIR)/scripts/valgrind-lua $(BUSTED_ARGS)

install: $(CORE)
	install -d $(DESTDIR)$(LUA_LIBDIR)/luaws $(DESTDIR)$(LUA_SHAREDIR)/luaws
	install -m 0755 $(CORE) $(DESTDIR)$(LUA_LIBDIR)/luaws/core.so
	install -m 0644 $(LUA_MODULES) $(DESTDIR)$(LUA_SHAREDIR)/luaws/

clean:
	rm -rf build build-sanitize

.PHONY: all unit embed test soak-asan stress-asan test-valgrind install clean
