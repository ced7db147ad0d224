// Internal: word-at-a-time byte classification for the string hot loops
// (parser, writer, UTF-8 sanitizer).  Each test looks at 8 bytes loaded
// with memcpy (no alignment or aliasing assumptions) and answers only
// "does any byte of this word match"; the caller then finds the byte with
// a plain loop.  Every predicate here is exact as a yes/no answer (the
// classic "haszero"/"hasless" bit tricks; the borrow that can misreport
// *which* byte matched cannot make a word without a match look matching).
#ifndef UR_JSON_SCAN_HPP
#define UR_JSON_SCAN_HPP

#include <cstdint>
#include <cstring>

// 16 bytes a step where SSE2 is there (every x86-64 CPU has it), for the
// loops that look at every byte of a reply (write.cpp); the 8-byte words
// below elsewhere, or with UR_JSON_NO_SIMD (the SAN build defines it, so
// that make check runs both).
#if defined(__SSE2__) && !defined(UR_JSON_NO_SIMD) && (defined(__GNUC__) || defined(__clang__))
#define UR_JSON_SSE2 1
#include <emmintrin.h>
#endif

namespace json::detail {

constexpr uint64_t kOnes = 0x0101010101010101ull;
constexpr uint64_t kHighs = 0x8080808080808080ull;

inline uint64_t load8(const void* p)
{
    uint64_t w;
    std::memcpy(&w, p, sizeof w);
    return w;
}

// Nonzero iff some byte of w is below n (n <= 128).
inline uint64_t has_less(uint64_t w, unsigned n)
{
    return (w - kOnes * n) & ~w & kHighs;
}

// Nonzero iff some byte of w equals b.
inline uint64_t has_byte(uint64_t w, unsigned char b)
{
    return has_less(w ^ (kOnes * b), 1);
}

// Nonzero iff some byte of w is >= 0x80.
inline uint64_t has_high(uint64_t w) { return w & kHighs; }

// Nonzero iff some byte of w must be escaped in a JSON string: '"', '\\'
// or a control character below 0x20.
inline uint64_t needs_escape(uint64_t w)
{
    return has_byte(w, '"') | has_byte(w, '\\') | has_less(w, 0x20);
}

// Offset (0..7) of the first byte, in memory order, that a nonzero mask
// from the predicates above flags, or 8 if it cannot tell.  On
// little-endian machines the lowest set bit is exact: a borrow only ever
// runs from a matching byte towards later bytes, so no byte before the
// first real match is flagged.  Elsewhere the caller scans byte by byte.
inline unsigned first_flagged(uint64_t mask)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ && \
    (defined(__GNUC__) || defined(__clang__))
    return static_cast<unsigned>(__builtin_ctzll(mask)) >> 3;
#else
    (void)mask;
    return 8;
#endif
}

}  // namespace json::detail

#endif
