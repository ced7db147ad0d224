// json::string_from_bytes and the streaming Utf8Sanitizer.
//
// Input: [chunk seed][bytes...].  Properties: the output is valid UTF-8
// (checked by is_valid_utf8 and by an independent decoder below); valid
// input is copied unchanged; the sanitizer fed input-chosen chunks gives
// exactly the one-shot output, and again after finish() on a second stream;
// append_escaped_utf8_prefix() equals valid_utf8_prefix() + append_escaped().
#include <string>

#include "fuzz/fuzz.hpp"
#include "json/utf8.hpp"
#include "json/write.hpp"

namespace {

// A plain reading of Unicode table 3-7, written separately from json/ so
// that a shared mistake is unlikely: decode each sequence, then reject
// overlong forms, surrogates and values above U+10FFFF.
bool reference_valid(std::string_view s) {
    size_t i = 0;
    while (i < s.size()) {
        unsigned c = uint8_t(s[i]);
        size_t len;
        uint32_t cp;
        if (c < 0x80) { i++; continue; }
        if ((c & 0xE0) == 0xC0) { len = 2; cp = c & 0x1F; }
        else if ((c & 0xF0) == 0xE0) { len = 3; cp = c & 0x0F; }
        else if ((c & 0xF8) == 0xF0) { len = 4; cp = c & 0x07; }
        else return false;
        if (s.size() - i < len) return false;
        for (size_t k = 1; k < len; k++) {
            unsigned t = uint8_t(s[i + k]);
            if ((t & 0xC0) != 0x80) return false;
            cp = cp << 6 | (t & 0x3F);
        }
        static const uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < kMin[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        i += len;
    }
    return true;
}

std::string stream(json::Utf8Sanitizer& san, std::string_view in, fuzz::Chunker& chunker) {
    std::string out;
    while (!in.empty()) {
        size_t n = std::min(chunker.next(), in.size());
        san.feed(in.substr(0, n), out);
        in.remove_prefix(n);
    }
    san.finish(out);
    return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view in = fuzz::as_view(data, size);
    fuzz::Chunker chunker(fuzz::take_byte(in));

    bool valid = json::is_valid_utf8(in);
    FUZZ_CHECK(valid == reference_valid(in));

    std::string one_shot = json::string_from_bytes(in);
    FUZZ_CHECK(json::is_valid_utf8(one_shot));
    FUZZ_CHECK(reference_valid(one_shot));
    if (valid) FUZZ_CHECK(one_shot == in);
    // Each input byte yields at most one U+FFFD (3 bytes).
    FUZZ_CHECK(one_shot.size() <= 3 * in.size());

    // The one-pass escaper stops where valid_utf8_prefix() does and gives
    // what append_escaped() gives for that prefix.
    size_t prefix = json::valid_utf8_prefix(in);
    std::string two_pass, one_pass;
    json::append_escaped(two_pass, in.substr(0, prefix));
    FUZZ_CHECK(json::append_escaped_utf8_prefix(one_pass, in) == prefix);
    FUZZ_CHECK(one_pass == two_pass);

    json::Utf8Sanitizer san;
    FUZZ_CHECK(stream(san, in, chunker) == one_shot);
    // finish() leaves the sanitizer ready for a new stream.
    FUZZ_CHECK(stream(san, in, chunker) == one_shot);
    return 0;
}
