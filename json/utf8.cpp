#include "json/utf8.hpp"

#include "json/scan.hpp"

#include <algorithm>

namespace json {

namespace {

// Appends [p, end) to out as valid UTF-8 and returns where an incomplete
// but so far valid sequence at the very end begins (end if there is none);
// those bytes are not appended.  Valid runs are appended in one piece.
const unsigned char* sanitize(const unsigned char* p, const unsigned char* end,
                              std::string& out)
{
    const unsigned char* run = p;
    for (;;) {
        while (end - p >= 8 && !detail::has_high(detail::load8(p))) p += 8;
        while (p < end && *p < 0x80) ++p;
        if (p == end) break;
        size_t avail = static_cast<size_t>(end - p);
        size_t need;
        size_t got = utf8_prefix(p, avail, need);
        if (got == need) {
            p += need;
            continue;
        }
        out.append(reinterpret_cast<const char*>(run),
                   static_cast<size_t>(p - run));
        if (got == avail) return p;  // cut off: the caller decides
        out.append(kReplacementChar);
        p += std::max<size_t>(got, 1);
        run = p;
    }
    out.append(reinterpret_cast<const char*>(run),
               static_cast<size_t>(p - run));
    return end;
}

}  // namespace

size_t valid_utf8_prefix(std::string_view bytes)
{
    auto begin = reinterpret_cast<const unsigned char*>(bytes.data());
    auto p = begin;
    auto end = p + bytes.size();
    for (;;) {
        while (end - p >= 8 && !detail::has_high(detail::load8(p))) p += 8;
        while (p < end && *p < 0x80) ++p;
        if (p == end) break;
        size_t need;
        if (utf8_prefix(p, static_cast<size_t>(end - p), need) != need)
            break;
        p += need;
    }
    return static_cast<size_t>(p - begin);
}

bool is_valid_utf8(std::string_view bytes)
{
    return valid_utf8_prefix(bytes) == bytes.size();
}

std::string shortened(std::string_view s, size_t max) {
    if (s.size() <= max)
        return std::string(s);
    size_t cut = max;
    while (cut > 0 && (uint8_t(s[cut]) & 0xC0) == 0x80)
        --cut;  // whole characters
    return std::string(s.substr(0, cut)) + "... (" + std::to_string(s.size()) + " bytes)";
}

std::string string_from_bytes(std::string_view bytes)
{
    std::string out;
    out.reserve(bytes.size());
    auto p = reinterpret_cast<const unsigned char*>(bytes.data());
    auto end = p + bytes.size();
    if (sanitize(p, end, out) != end) out.append(kReplacementChar);
    return out;
}

void Utf8Sanitizer::feed(std::string_view chunk, std::string& out)
{
    auto p = reinterpret_cast<const unsigned char*>(chunk.data());
    auto end = p + chunk.size();
    // Complete (or give up on) the sequence kept back last time, one byte
    // at a time, exactly as the one-shot decoder would have seen it.
    while (npending_ > 0 && p < end) {
        pending_[npending_] = *p;
        size_t need;
        size_t got = utf8_prefix(pending_, npending_ + 1, need);
        if (got == need) {
            out.append(reinterpret_cast<const char*>(pending_), need);
            npending_ = 0;
            ++p;
        } else if (got == npending_ + 1) {
            ++npending_;  // still incomplete (need <= 4, so this fits)
            ++p;
        } else {
            // *p does not continue the sequence: the kept-back bytes are a
            // maximal subpart, and *p starts afresh below.
            out.append(kReplacementChar);
            npending_ = 0;
        }
    }
    if (p == end) return;
    out.reserve(out.size() + chunk.size());
    const unsigned char* tail = sanitize(p, end, out);
    npending_ = static_cast<size_t>(end - tail);
    std::copy(tail, end, pending_);
}

void Utf8Sanitizer::finish(std::string& out)
{
    if (npending_ > 0) out.append(kReplacementChar);
    npending_ = 0;
}

}  // namespace json
