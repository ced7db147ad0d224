#include "src/memory.hpp"

#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <sys/mman.h>
#include <sys/resource.h>

#include <cstdint>
#include <initializer_list>

namespace ur::memory {

namespace {

// A buffer at least this big (smaller than the mmap threshold, so on the
// heap) makes the heap worth trimming once idle.
constexpr size_t kBigBuffer = 64 * 1024;

bool g_dirty = false;

}  // namespace

unsigned long long limit_bytes() {
    unsigned long long least = 0;
    for (int which : {RLIMIT_AS, RLIMIT_DATA}) {
        struct rlimit rl;
        if (getrlimit(which, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) continue;
        unsigned long long v = static_cast<unsigned long long>(rl.rlim_cur);
        if (least == 0 || v < least) least = v;
    }
    return least;
}

void tune() {
#if defined(__GLIBC__)
    // A fixed threshold (which also stops glibc from moving it): blocks
    // from 256 KiB up are mmap()ed and unmapped when freed.
    mallopt(M_MMAP_THRESHOLD, 256 * 1024);
#endif
}

void note_buffer(size_t bytes) {
    if (bytes >= kBigBuffer)
        g_dirty = true;
}

void prefer_huge_pages(void* p, size_t n) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    constexpr uintptr_t kHuge = 2u << 20;
    uintptr_t begin = (reinterpret_cast<uintptr_t>(p) + kHuge - 1) & ~(kHuge - 1);
    uintptr_t end = (reinterpret_cast<uintptr_t>(p) + n) & ~(kHuge - 1);
    if (end > begin)
        (void)madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
    (void)p;
    (void)n;
#endif
}

void release_when_idle() {
    if (!g_dirty)
        return;
    g_dirty = false;
#if defined(__GLIBC__)
    // Also returns whole free pages inside the heap (MADV_DONTNEED), not
    // only its top.
    malloc_trim(0);
#endif
}

}  // namespace ur::memory
