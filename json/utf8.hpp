// UTF-8 validation and repair.
//
// string_from_bytes() turns arbitrary bytes (a child's stdout, say) into
// valid UTF-8 the way Node's Buffer.toString('utf8') and the WHATWG decoder
// do: every maximal subpart of an ill-formed sequence becomes one U+FFFD
// ("substitution of maximal subparts", Unicode chapter 3).  Valid input is
// copied unchanged.  Utf8Sanitizer is the streaming form; its output is
// identical to string_from_bytes() of the concatenated input however the
// input is split into chunks.
#ifndef UR_JSON_UTF8_HPP
#define UR_JSON_UTF8_HPP

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace json {

// U+FFFD REPLACEMENT CHARACTER in UTF-8.
inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";

// Looks at the sequence starting at p (avail >= 1 bytes).  Sets need to the
// length the lead byte announces (1 for ASCII and for bytes that cannot
// start a sequence) and returns how many leading bytes are a well-formed
// prefix of such a sequence (Unicode table 3-7: no overlong forms, no
// surrogates, nothing above U+10FFFF):
//   result == need           a complete, valid sequence;
//   result == avail < need   valid so far but cut off by the end of input;
//   otherwise                ill-formed; the first max(result, 1) bytes are
//                            its maximal subpart.
inline size_t utf8_prefix(const unsigned char* p, size_t avail, size_t& need)
{
    unsigned c = p[0];
    unsigned lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c < 0x80) { need = 1; return 1; }
    if (c < 0xC2) { need = 1; return 0; }  // continuation, or overlong C0/C1
    if (c < 0xE0) {
        need = 2;
    } else if (c < 0xF0) {
        need = 3;
        if (c == 0xE0) lo = 0xA0;  // overlong below U+0800
        if (c == 0xED) hi = 0x9F;  // surrogates U+D800..U+DFFF
    } else if (c < 0xF5) {
        need = 4;
        if (c == 0xF0) lo = 0x90;  // overlong below U+10000
        if (c == 0xF4) hi = 0x8F;  // above U+10FFFF
    } else {
        need = 1;
        return 0;
    }
    if (avail < 2) return 1;
    if (p[1] < lo || p[1] > hi) return 1;
    for (size_t i = 2; i < need; ++i) {
        if (avail <= i) return i;
        if ((p[i] & 0xC0) != 0x80) return i;
    }
    return need;
}

// Whether bytes is entirely well-formed UTF-8.
bool is_valid_utf8(std::string_view bytes);
// The length of the longest prefix of bytes made of complete, well-formed
// sequences (it stops before an ill-formed or cut-off one).
size_t valid_utf8_prefix(std::string_view bytes);

// bytes as valid UTF-8, ill-formed parts replaced by U+FFFD.
std::string string_from_bytes(std::string_view bytes);

// For a log line or a note: s when it has at most max bytes, else its
// first max bytes (no character cut in two) and "... (N bytes)".
std::string shortened(std::string_view s, size_t max);

class Utf8Sanitizer {
public:
    // Appends the valid UTF-8 for chunk to out; keeps back (at most 3
    // bytes) a sequence cut off at the end of chunk until the next call.
    void feed(std::string_view chunk, std::string& out);
    // Ends the stream: a kept-back incomplete sequence becomes one U+FFFD.
    // The sanitizer is then ready for a new stream.
    void finish(std::string& out);
    // No sequence kept back: feed() would pass a well-formed chunk through
    // unchanged.
    bool idle() const { return npending_ == 0; }
    // Forgets a kept-back incomplete sequence (the stream was cut there on
    // purpose, not ill-formed) and returns how many bytes it had.
    size_t discard()
    {
        size_t n = npending_;
        npending_ = 0;
        return n;
    }

private:
    unsigned char pending_[4] = {};
    size_t npending_ = 0;
};

}  // namespace json

#endif
