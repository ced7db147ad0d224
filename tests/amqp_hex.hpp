// Hex helpers and the python3-pika golden vectors for the amqp tests.
#pragma once

#include <string>
#include <string_view>

namespace amqp_test {

inline std::string from_hex(std::string_view hex) {
    auto nib = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
    };
    std::string out;
    int hi = -1;
    for (char c : hex) {
        int v = nib(c);
        if (v < 0) continue;  // spaces and separators are allowed
        if (hi < 0) hi = v;
        else out.push_back(char(hi << 4 | v)), hi = -1;
    }
    return out;
}

inline std::string to_hex(std::string_view s) {
    static const char d[] = "0123456789abcdef";
    std::string out;
    for (unsigned char c : s) out.push_back(d[c >> 4]), out.push_back(d[c & 15]);
    return out;
}

struct Vector { const char* name; const char* hex; };
inline const Vector kPikaVectors[] = {
#include "tests/vectors/pika_vectors.inc"
};

// The frame bytes of the named pika vector (empty if unknown).
inline std::string pika(std::string_view name) {
    for (const auto& v : kPikaVectors)
        if (name == v.name) return from_hex(v.hex);
    return {};
}

}  // namespace amqp_test
