# libFuzzer targets, built with clang into build-fuzz/ (never with the g++
# objects of build/).  Run through the top-level Makefile:
#
#   make fuzz                    build every target
#   make fuzz FUZZ_SECONDS=60    build, then run each target for 60 s on a
#                                copy of fuzz/corpus/<target> (tools/run-fuzz)
#
# Each fuzz/<target>.cpp defines LLVMFuzzerTestOneInput; the library code
# it exercises is compiled once into build-fuzz/lib/libfuzzed.a.

FUZZ_CXX    ?= clang++
FUZZ_BUILD  := build-fuzz
FUZZ_SECONDS ?=
VERSION     := $(shell cat VERSION 2>/dev/null || echo 0.0.0)

ifeq ($(shell command -v $(FUZZ_CXX) 2>/dev/null),)
$(error $(FUZZ_CXX) not found: run tools/install-deps fuzz (clang, libclang-rt-14-dev))
endif

# fuzzer-no-link instruments the library for coverage without pulling in
# libFuzzer's main(); only the target binaries link it.
FUZZ_SAN    := -fsanitize=address,undefined -fno-sanitize-recover=all
FUZZ_FLAGS  := -std=c++17 -O1 -g -fno-omit-frame-pointer -Wall -Wextra \
               $(FUZZ_SAN) -fsanitize=fuzzer-no-link -MMD -MP -I. \
               -DUR_VERSION='"$(VERSION)"'

FUZZ_LIB_SRC := $(wildcard json/*.cpp) $(wildcard amqp/*.cpp) \
                src/ur_protocol.cpp src/sysinfo.cpp
FUZZ_TARGETS := $(patsubst fuzz/%.cpp,%,$(wildcard fuzz/*.cpp))

fuzz_obj = $(patsubst %.cpp,$(FUZZ_BUILD)/obj/%.o,$(1))
FUZZ_LIB  := $(FUZZ_BUILD)/lib/libfuzzed.a
FUZZ_BINS := $(addprefix $(FUZZ_BUILD)/bin/,$(FUZZ_TARGETS))

.PHONY: fuzz-build fuzz-run
# Keep the target objects, which make would otherwise delete as intermediates.
.SECONDARY:
ifneq ($(FUZZ_SECONDS),)
fuzz-run: fuzz-build
	@tools/run-fuzz $(FUZZ_SECONDS)
endif
fuzz-build: $(FUZZ_BINS)

$(FUZZ_BUILD)/obj/%.o: %.cpp
	@mkdir -p $(dir $@)
	$(FUZZ_CXX) $(FUZZ_FLAGS) -c -o $@ $<

$(FUZZ_LIB): $(call fuzz_obj,$(FUZZ_LIB_SRC))
	@mkdir -p $(dir $@)
	@rm -f $@
	ar rcs $@ $^

$(FUZZ_BUILD)/bin/%: $(FUZZ_BUILD)/obj/fuzz/%.o $(FUZZ_LIB)
	@mkdir -p $(dir $@)
	$(FUZZ_CXX) $(FUZZ_SAN) -fsanitize=fuzzer -o $@ $^

-include $(shell find $(FUZZ_BUILD)/obj -name '*.d' 2>/dev/null)
