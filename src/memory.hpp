// The agent's allocator policy.  Its big buffers (a script's captured
// output, the reply made from it, the frames that carry it) come in bursts
// and live for one request each; a long-lived agent must not keep their
// memory afterwards, and must not hold more of them at once than are alive
// (the peak for a reply is bounded by tests: under 3x --max-output).
//
// glibc's default raises its mmap threshold each time a big block is freed
// (up to 32 MiB), after which big blocks come from the heap, where a freed
// one can sit between live ones, still resident, while the next big buffer
// is placed after them: three buffers' worth of RSS for two live ones
// (seen: 17 MiB for a 5 MiB reply).  tune() fixes the threshold instead, so
// every big buffer is its own mapping, returned to the kernel on free.
// release_when_idle() returns the free pages of the heap itself (many
// medium buffers of a burst) once the agent has nothing running and
// nothing to send.  Both are no-ops where the C library has no such
// controls (illumos, musl).
#pragma once

#include <cstddef>

namespace ur::memory {

// Once, at start-up.
void tune();

// The address-space or data-segment limit the agent runs under
// (RLIMIT_AS, RLIMIT_DATA: the lower), or 0 when there is none.
unsigned long long limit_bytes();

// A buffer of `bytes` was made; big ones mark the heap for release.
void note_buffer(size_t bytes);

// Asks for huge pages (Linux transparent huge pages, where the system
// allows them on request) behind the 2 MiB-aligned extents inside
// [p, p + n): for a big buffer about to be written through.  Faulting in
// 4 MiB costs 2.3-2.7 ms in 4 KiB pages here and 0.3 ms in 2 MiB ones,
// and unmapping it is cheaper too.  A buffer may then hold up to 2 MiB
// more than was written into it.  Best effort: a no-op elsewhere.
void prefer_huge_pages(void* p, size_t n);

// Call when idle (no job, no reply pending).  Returns the free pages of
// the heap to the kernel if a big buffer was made since the last call;
// otherwise does nothing (cheap enough for every loop pass).
void release_when_idle();

}  // namespace ur::memory
