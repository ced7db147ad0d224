// Tests for json/utf8: validation, Node-compatible repair, streaming.
#include "json/utf8.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

namespace {

std::string unhex(const std::string& hex)
{
    std::string out;
    for (size_t i = 0; i + 1 < hex.size(); i += 2)
        out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
    return out;
}

const std::string R = "\xEF\xBF\xBD";  // U+FFFD

// Feeds bytes to a Utf8Sanitizer in chunks ending at the given offsets.
std::string sanitize_split(const std::string& bytes, std::vector<size_t> cuts)
{
    json::Utf8Sanitizer s;
    std::string out;
    size_t at = 0;
    cuts.push_back(bytes.size());
    for (size_t cut : cuts) {
        s.feed(std::string_view(bytes).substr(at, cut - at), out);
        at = cut;
    }
    s.finish(out);
    return out;
}

}  // namespace

TEST_CASE("string_from_bytes copies valid UTF-8 unchanged")
{
    const std::string valid[] = {
        "", "plain ascii", std::string("nul\0inside", 10), "\x7F",
        "\xC2\x80", "\xDF\xBF",                       // 2-byte bounds
        "\xE0\xA0\x80", "\xED\x9F\xBF", "\xEE\x80\x80", "\xEF\xBF\xBF",
        "\xF0\x90\x80\x80", "\xF4\x8F\xBF\xBF",       // U+10000, U+10FFFF
        "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80"};
    for (const std::string& s : valid) {
        CAPTURE(s);
        CHECK(json::is_valid_utf8(s));
        CHECK(json::string_from_bytes(s) == s);
    }
}

// Expected outputs captured from Node (v18):
//   Buffer.from(hex, 'hex').toString('utf8')
TEST_CASE("string_from_bytes replaces maximal subparts like Node")
{
    struct Case { const char* in; std::string out; };
    const Case cases[] = {
        {"61F18080E180C262806380BF64",
         "a" + R + R + R + "b" + R + "c" + R + R + "d"},
        {"EDA080", R + R + R},          // UTF-8-encoded surrogate
        {"EDBFBF", R + R + R},
        {"F08080", R + R + R},          // overlong 4-byte
        {"E09F80", R + R + R},          // overlong 3-byte
        {"C0AF", R + R},                // overlong 2-byte
        {"F4908080", R + R + R + R},    // above U+10FFFF
        {"F4BFBFBF", R + R + R + R},
        {"E282", R},                    // truncated at end
        {"E28261", R + "a"},            // truncated before ASCII
        {"F09F98", R},
        {"F0908080F0", "\xF0\x90\x80\x80" + R},
        {"80", R},                      // stray continuation
        {"FF", R},
        {"C2", R},
        {"C341", R + "A"},
        {"EFBFBD", R},                  // U+FFFD itself is valid
    };
    for (const Case& c : cases) {
        CAPTURE(c.in);
        std::string bytes = unhex(c.in);
        CHECK(json::string_from_bytes(bytes) == c.out);
        CHECK(json::is_valid_utf8(bytes) == (bytes == c.out));
    }
}

TEST_CASE("string_from_bytes finds an invalid byte at every word offset")
{
    // The ASCII fast path reads 8 bytes at a time: put the bad byte at
    // each position relative to a word, and near the end of input.
    for (size_t len = 1; len < 40; ++len) {
        for (size_t at = 0; at < len; ++at) {
            std::string in(len, 'x');
            in[at] = '\x80';
            std::string want = std::string(at, 'x') + R + std::string(len - at - 1, 'x');
            CAPTURE(len);
            CAPTURE(at);
            REQUIRE(json::string_from_bytes(in) == want);
            REQUIRE_FALSE(json::is_valid_utf8(in));
        }
    }
}

TEST_CASE("Utf8Sanitizer output equals string_from_bytes for random splits")
{
    // Bytes biased towards the interesting lead/continuation boundaries.
    const unsigned char pool[] = {0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0,
                                  0xBF, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0, 0xE1,
                                  0xEC, 0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF3,
                                  0xF4, 0xF5, 0xFF};
    std::mt19937 rng(20241124);
    for (int iter = 0; iter < 3000; ++iter) {
        std::string bytes;
        size_t n = rng() % 64;
        for (size_t i = 0; i < n; ++i) {
            if (rng() % 5 == 0) bytes.push_back(static_cast<char>(rng() % 256));
            else bytes.push_back(static_cast<char>(pool[rng() % sizeof pool]));
        }
        std::vector<size_t> cuts;
        size_t ncuts = n ? rng() % (n + 1) : 0;
        for (size_t i = 0; i < ncuts; ++i) cuts.push_back(rng() % (n + 1));
        std::sort(cuts.begin(), cuts.end());
        CAPTURE(iter);
        REQUIRE(sanitize_split(bytes, cuts) == json::string_from_bytes(bytes));
    }
}

TEST_CASE("Utf8Sanitizer byte-at-a-time and empty chunks")
{
    std::string bytes = unhex("61F18080E180C262806380BF64F09F9880E282");
    std::vector<size_t> every;
    for (size_t i = 0; i <= bytes.size(); ++i) every.push_back(i);
    CHECK(sanitize_split(bytes, every) == json::string_from_bytes(bytes));

    json::Utf8Sanitizer s;
    std::string out;
    s.feed("\xF0\x9F", out);
    CHECK(out.empty());  // kept back, not yet known to be bad
    s.feed("", out);
    s.feed("\x98", out);
    CHECK(out.empty());
    s.feed("\x80!", out);
    CHECK(out == "\xF0\x9F\x98\x80!");
}

TEST_CASE("Utf8Sanitizer finish flushes a cut-off tail and resets")
{
    json::Utf8Sanitizer s;
    std::string out;
    s.feed("ok\xE2\x82", out);
    CHECK(out == "ok");
    s.finish(out);
    CHECK(out == "ok" + R);
    // A new stream starts clean: nothing left over from the last one.
    out.clear();
    s.feed("\xAC", out);
    s.finish(out);
    CHECK(out == R);
    out.clear();
    s.finish(out);
    CHECK(out.empty());
}

TEST_CASE("string_from_bytes handles large mixed input")
{
    std::string in;
    for (int i = 0; i < 100000; ++i) in += (i % 7 == 0) ? "\xC3\xA9 line\n" : "text\xFF\n";
    std::string out = json::string_from_bytes(in);
    CHECK(json::is_valid_utf8(out));
    CHECK(out.size() == in.size() + (100000 - 100000 / 7 - 1) * 2);
}

TEST_CASE("utf8: valid_utf8_prefix stops before an ill-formed or cut sequence") {
    CHECK(json::valid_utf8_prefix("") == 0);
    CHECK(json::valid_utf8_prefix("abc") == 3);
    CHECK(json::valid_utf8_prefix("ab\xc3\xa9z") == 5);
    CHECK(json::valid_utf8_prefix("ab\xc3") == 2);             // cut off
    CHECK(json::valid_utf8_prefix("abcdefghij\xe2\x82") == 10);  // cut, after the 8-byte scan
    CHECK(json::valid_utf8_prefix("a\xff" "b") == 1);           // ill-formed
    CHECK(json::valid_utf8_prefix("\xed\xa0\x80") == 0);        // surrogate
    CHECK(json::valid_utf8_prefix("\xf0\x9f\x98\x80!") == 5);
}
