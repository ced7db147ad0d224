#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "src/memory.hpp"

#if defined(__GLIBC__) && defined(__linux__) && !defined(__SANITIZE_ADDRESS__)
#define UR_MEMORY_TEST 1
namespace {

// RssAnon of this process in KiB, or -1 where /proc does not tell.
long rss_anon_kib() {
    FILE* f = std::fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    long kib = -1;
    while (std::fgets(line, sizeof line, f))
        if (std::strncmp(line, "RssAnon:", 8) == 0) kib = std::strtol(line + 8, nullptr, 10);
    std::fclose(f);
    return kib;
}

}  // namespace
#endif

TEST_CASE("memory: big buffers do not linger; the heap is trimmed when idle") {
#ifdef UR_MEMORY_TEST
    ur::memory::tune();
    // Start from a trimmed heap (earlier tests in this process used it).
    ur::memory::note_buffer(1u << 20);
    ur::memory::release_when_idle();
    long base = rss_anon_kib();
    REQUIRE(base > 0);

    // A big buffer is its own mapping: gone from RSS as soon as it is
    // freed, even after another big one was freed before it (glibc's
    // default would have moved big blocks onto the heap by then).
    for (int i = 0; i < 3; ++i) {
        std::string big(24u << 20, char('a' + i));
        CHECK(rss_anon_kib() >= base + 20 * 1024);
    }
    CHECK(rss_anon_kib() < base + 4 * 1024);

    // Medium buffers live on the heap; freed under a live one they stay
    // resident until the agent is idle.
    std::vector<std::string> medium;
    for (int i = 0; i < 160; ++i) medium.emplace_back(100 * 1024, 'm');
    std::string last(100 * 1024, 'l');
    ur::memory::note_buffer(medium.back().size());
    medium.clear();
    medium.shrink_to_fit();
    long kept = rss_anon_kib();
    CHECK(kept >= base + 12 * 1024);
    ur::memory::release_when_idle();
    CHECK(rss_anon_kib() < kept - 10 * 1024);
    // Nothing new since: the next call has nothing to do.
    ur::memory::release_when_idle();
#else
    ur::memory::tune();
    ur::memory::note_buffer(1u << 20);
    ur::memory::release_when_idle();
    MESSAGE("skipped: glibc malloc on Linux only (other allocators keep their own policy)");
#endif
}

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <fstream>

namespace {

// The VmFlags line of the mapping that holds `addr`, from /proc/self/smaps.
std::string vm_flags_at(const void* addr) {
    std::ifstream in("/proc/self/smaps");
    std::string line;
    auto a = reinterpret_cast<uintptr_t>(addr);
    bool inside = false;
    while (std::getline(in, line)) {
        unsigned long lo, hi;
        if (std::sscanf(line.c_str(), "%lx-%lx ", &lo, &hi) == 2 && line.find(':') > line.find('-'))
            inside = a >= lo && a < hi;
        else if (inside && line.rfind("VmFlags:", 0) == 0)
            return line;
    }
    return "";
}

}  // namespace
#endif

TEST_CASE("memory: huge pages are asked for the aligned extents of a big buffer only") {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    std::ifstream thp("/sys/kernel/mm/transparent_hugepage/enabled");
    if (!thp) {
        MESSAGE("skipped: this kernel has no transparent huge pages");
        return;
    }
    const size_t huge = 2u << 20, len = 4 * huge;
    char* m = static_cast<char*>(mmap(nullptr, len + huge, PROT_READ | PROT_WRITE,
                                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    REQUIRE(m != MAP_FAILED);
    // An aligned base, then a buffer that starts 4 KiB past it: only the
    // whole 2 MiB extents after that start are advised.
    char* base = reinterpret_cast<char*>((reinterpret_cast<uintptr_t>(m) + huge - 1) & ~(huge - 1));
    ur::memory::prefer_huge_pages(base + 4096, len - 4096);
    CHECK(vm_flags_at(base).find(" hg") == std::string::npos);
    CHECK(vm_flags_at(base + huge - 1).find(" hg") == std::string::npos);
    CHECK(vm_flags_at(base + huge).find(" hg") != std::string::npos);
    CHECK(vm_flags_at(base + len - 1).find(" hg") != std::string::npos);
    // Too small to hold an extent: nothing is asked.
    ur::memory::prefer_huge_pages(base + len, huge - 1);
    CHECK(vm_flags_at(base + len).find(" hg") == std::string::npos);
    munmap(m, len + huge);
#else
    char buf[16];
    ur::memory::prefer_huge_pages(buf, sizeof buf);  // a no-op here
    MESSAGE("skipped: transparent huge pages are Linux only");
#endif
}
