// Helpers shared by the libFuzzer targets in this directory.
//
// A target checks properties with FUZZ_CHECK, which aborts (libFuzzer then
// saves the input as a crash) instead of asserting, so the checks stay on
// in every build.  Chunking is driven by the input itself: a target takes
// a prefix byte as the seed of Chunker, and the rest of the input is the
// byte stream, so seed files are real captured bytes behind one byte.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#define FUZZ_CHECK(cond)                                                       \
    do {                                                                       \
        if (!(cond)) {                                                         \
            std::fprintf(stderr, "%s:%d: fuzz check failed: %s\n", __FILE__,  \
                         __LINE__, #cond);                                     \
            std::abort();                                                      \
        }                                                                      \
    } while (0)

namespace fuzz {

// Splits a stream into chunks whose sizes come from a small xorshift
// generator seeded by one input byte.  The top two bits of the seed choose
// the largest chunk (1, 7, 64 or 4096 bytes), so the fuzzer can reach
// byte-at-a-time feeding, header-sized pieces and whole frames.
class Chunker {
public:
    explicit Chunker(uint8_t seed) : state_(0x9E3779B9u ^ seed) {
        static const size_t kMax[4] = {1, 7, 64, 4096};
        max_ = kMax[seed >> 6];
    }
    // The next chunk size, 1..max.
    size_t next() {
        state_ ^= state_ << 13;
        state_ ^= state_ >> 17;
        state_ ^= state_ << 5;
        return 1 + state_ % max_;
    }

private:
    uint32_t state_;
    size_t max_;
};

// Takes the first byte of the input (0 when empty) and removes it.
inline uint8_t take_byte(std::string_view& in) {
    if (in.empty()) return 0;
    uint8_t b = uint8_t(in[0]);
    in.remove_prefix(1);
    return b;
}

inline std::string_view as_view(const uint8_t* data, size_t size) {
    return std::string_view(reinterpret_cast<const char*>(data), size);
}

}  // namespace fuzz
