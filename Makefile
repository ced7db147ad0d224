# ur: the Triton Ur agent.  See README.md.
#
#   make                 build/ur-agent and the tools (static binaries)
#   make check           build and run every test (installs test deps if root)
#   make check SAN=1     the same, with ASan + UBSan, in build-san/
#   make fuzz            libFuzzer targets (FUZZ_SECONDS=60 runs them)
#   make install         PREFIX=/usr/local DESTDIR= (SmartOS: /opt/smartdc/ur)
#   make clean

CXX      ?= g++
DESTDIR  ?=
SAN      ?=
VERSION  := $(shell cat VERSION 2>/dev/null || echo 0.0.0)

ifeq ($(SAN),1)
BUILD    := build-san
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer \
            -fno-sanitize-recover=all
# json/'s portable 8-byte loops instead of SSE2 (json/scan.hpp): the plain
# build tests the one, this build the other.
SANDEFS  := -DUR_JSON_NO_SIMD
STATIC   :=
# g++ 12's -Wmaybe-uninitialized reports false positives inside std::variant,
# std::function and std::string when ASan instruments them (seen in
# json_test.cpp and docs_test.cpp); the plain build keeps the warning.
SANWARN  := -Wno-maybe-uninitialized
else
BUILD    := build
SANFLAGS :=
STATIC   := -static
endif

# illumos (SmartOS) has no static libc: there the programs link libc,
# libsocket and libnsl dynamically and the C++ runtime statically (the live
# image has no libstdc++).  Its linker has no --gc-sections, its make is not
# GNU make (use gmake) and its install(1) is the SysV one (use ginstall).
# In the global zone /usr is the read-only platform image and / a ramdisk:
# the programs go under /opt, the SMF manifest into /opt/custom/smf, which
# SmartOS imports at every boot; no systemd unit.
# Not built here: CI runs on Linux.
ifeq ($(shell uname -s),SunOS)
STATIC   := -static-libstdc++ -static-libgcc
GCFLAGS  :=
LDLIBS   += -lsocket -lnsl
ARCHFLAGS := -m64
INSTALL  ?= ginstall
PREFIX   ?= /opt/smartdc/ur
SMFDIR   ?= /opt/custom/smf
SYSTEMD_UNIT :=
else
GCFLAGS  := -Wl,--gc-sections
ARCHFLAGS :=
# The agent's link, when ld.lld is installed: the functions that start-up,
# the idle loop and a request run (src/link-order.txt, written by
# tools/link-order) are laid out together at the start of the text.  The
# kernel maps a binary's pages 64 KiB at a time around each fault, so
# scattered over the 1 MiB of text those few hundred functions made nearly
# all of it resident: idle RSS about 1.4 MiB with GNU ld, 0.9 with this
# (make bench).  Without ld.lld, or with LLD=0, the agent is the same
# program linked by ld, only larger in memory.  Not for SAN=1 builds
# (dynamic, sanitized: other code).
LLD ?= 1
ifneq ($(SAN),1)
ifneq ($(LLD),0)
ifneq ($(shell command -v ld.lld 2>/dev/null),)
LINK_ORDER ?= src/link-order.txt
ifneq ($(LINK_ORDER),)
AGENT_ORDER   := $(LINK_ORDER)
AGENT_LDFLAGS := -fuse-ld=lld -Wl,--symbol-ordering-file=$(LINK_ORDER) \
                 -Wl,--no-warn-symbol-ordering
endif
endif
endif
endif
INSTALL  ?= install
PREFIX   ?= /usr/local
SMFDIR   ?= $(PREFIX)/lib/svc/manifest/smartdc
SYSTEMD_UNIT := $(PREFIX)/lib/systemd/system
endif

# Warnings are errors in CI (CI=true) and whenever WERROR=1.
ifneq ($(filter true 1,$(CI) $(WERROR)),)
WFLAGS   := -Wall -Wextra -Werror
else
WFLAGS   := -Wall -Wextra
endif

# Size over speed for most of the code: the agent's idle RSS is mostly the
# pages of its own text (the kernel maps file pages in 64 KiB around each
# fault), so -Os and section garbage collection take it from 1.6 to about
# 1.3 MiB (make bench).  The byte loops that move request and reply bodies
# (json/, the AMQP frame and wire codecs) keep HOT_OPT.
OPT      ?= -Os -g
HOT_OPT  ?= -O2 -g
CXXFLAGS += $(ARCHFLAGS) -std=c++17 $(OPT) $(WFLAGS) $(SANWARN) $(SANFLAGS) $(SANDEFS) -MMD -MP -I. \
            -ffunction-sections -fdata-sections -DUR_VERSION='"$(VERSION)"'
LDFLAGS  += $(ARCHFLAGS) $(SANFLAGS) $(GCFLAGS)

JSON_SRC  := $(wildcard json/*.cpp)
AMQP_SRC  := $(wildcard amqp/*.cpp)
UR_SRC    := $(filter-out src/main.cpp,$(wildcard src/*.cpp))
TOOL_DIRS := $(patsubst tools/%/main.cpp,%,$(wildcard tools/*/main.cpp))
TOOLLIB_SRC := $(filter-out %/main.cpp,$(wildcard tools/*/*.cpp))
TEST_SRC  := $(wildcard tests/*_test.cpp) tests/doctest_main.cpp

obj = $(patsubst %.cpp,$(BUILD)/obj/%.o,$(1))

LIBJSON  := $(BUILD)/lib/libjson.a
LIBAMQP  := $(BUILD)/lib/libamqp.a
LIBUR    := $(BUILD)/lib/libur.a
LIBTOOLS := $(BUILD)/lib/libtools.a
LIBS     := $(LIBTOOLS) $(LIBUR) $(LIBAMQP) $(LIBJSON)

AGENT    := $(BUILD)/ur-agent
TOOLS    := $(addprefix $(BUILD)/,$(TOOL_DIRS))
UNIT     := $(BUILD)/tests/unit

.PHONY: all check unit bench demo fuzz hostile install clean deps
# Keep the tools' object files: make would otherwise delete them as
# intermediates after the build, printing an "rm ..." line after the test
# summary that must end the CI log.
.SECONDARY:
all: $(AGENT) $(TOOLS)

$(BUILD)/obj/json/%.o $(BUILD)/obj/amqp/frame.o $(BUILD)/obj/amqp/wire.o: OPT = $(HOT_OPT)

$(BUILD)/obj/%.o: %.cpp
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -c -o $@ $<

define archive
	@mkdir -p $(dir $@)
	@rm -f $@
	$(AR) rcs $@ $^
endef

$(LIBJSON):  $(call obj,$(JSON_SRC))    ; $(archive)
$(LIBAMQP):  $(call obj,$(AMQP_SRC))    ; $(archive)
$(LIBUR):    $(call obj,$(UR_SRC))      ; $(archive)
$(LIBTOOLS): $(call obj,$(TOOLLIB_SRC)) ; $(archive)

$(AGENT): $(call obj,src/main.cpp) $(LIBS) $(AGENT_ORDER)
	$(CXX) $(STATIC) $(LDFLAGS) $(AGENT_LDFLAGS) -o $@ $(filter-out $(AGENT_ORDER),$^) $(LDLIBS)

$(BUILD)/%: $(BUILD)/obj/tools/%/main.o $(LIBS)
	$(CXX) $(STATIC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(UNIT): $(call obj,$(TEST_SRC)) $(LIBS)
	@mkdir -p $(dir $@)
	$(CXX) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lpthread

unit: $(UNIT)

deps:
	@tools/install-deps

# Dependencies first, then the build (a recursive make: with -j the
# prerequisites of one rule would build before the compiler is there).
check: deps
	@$(MAKE) --no-print-directory all $(UNIT)
	@BUILD=$(BUILD) tests/run

# The agent's costs against the physical floor, through a private RabbitMQ
# (tools/bench/README.md); the table on stdout, the figures in
# $(BUILD)/bench.json.  BENCH_ARGS=--quick for a short smoke run.
bench: all
	@BUILD=$(BUILD) tools/bench/run $(BENCH_ARGS)

# The hostile broker storm: 10,000 abusive sessions against one agent
# (tools/hostile-run --help).
hostile: all
	@tools/hostile-run --build $(BUILD) $(HOSTILE_ARGS)

# The README's first command: the agent, the fake broker and urctl at work.
demo:
	@tools/install-deps build
	@$(MAKE) --no-print-directory $(AGENT) $(BUILD)/urctl $(BUILD)/fake-broker
	@tools/demo $(BUILD)

# libFuzzer targets with clang in build-fuzz/; FUZZ_SECONDS=N also runs
# each for N seconds.  See fuzz/fuzz.mk.
fuzz:
	@$(MAKE) --no-print-directory -f fuzz/fuzz.mk

# The agent in sbin, urctl and json-check in bin, man pages, a systemd unit
# (not on illumos) and an SMF manifest (both pointing at
# $(PREFIX)/sbin/ur-agent; the manifest in $(SMFDIR)).
INSTALL_TOOLS := $(filter %/urctl %/json-check,$(TOOLS))
install: all
	$(INSTALL) -d $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)$(PREFIX)/bin \
	    $(DESTDIR)$(PREFIX)/share/man/man8 $(DESTDIR)$(PREFIX)/share/man/man1 \
	    $(DESTDIR)$(SMFDIR)
	$(INSTALL) -m 0755 -s $(AGENT) $(DESTDIR)$(PREFIX)/sbin/ur-agent
	for t in $(INSTALL_TOOLS); do $(INSTALL) -m 0755 -s $$t $(DESTDIR)$(PREFIX)/bin/; done
	$(INSTALL) -m 0644 tools/man/ur-agent.8 $(DESTDIR)$(PREFIX)/share/man/man8/
	for m in $(wildcard tools/man/*.1); do $(INSTALL) -m 0644 $$m $(DESTDIR)$(PREFIX)/share/man/man1/; done
	if [ -n "$(SYSTEMD_UNIT)" ]; then \
	    $(INSTALL) -d $(DESTDIR)$(SYSTEMD_UNIT) && \
	    sed 's|@SBINDIR@|$(PREFIX)/sbin|g' tools/service/ur-agent.service \
	        > $(DESTDIR)$(SYSTEMD_UNIT)/ur-agent.service; fi
	sed 's|@SBINDIR@|$(PREFIX)/sbin|g' tools/service/ur-agent.xml \
	    > $(DESTDIR)$(SMFDIR)/ur-agent.xml

clean:
	rm -rf build build-san build-fuzz

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
