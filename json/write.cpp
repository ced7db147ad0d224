#include "json/write.hpp"

#include "json/scan.hpp"
#include "json/utf8.hpp"

#include <charconv>
#include <cmath>
#include <cstring>

namespace json {

namespace {

void append_escape(std::string& out, unsigned char c)
{
    static const char kHex[] = "0123456789abcdef";
    switch (c) {
    case '"': out.append("\\\"", 2); return;
    case '\\': out.append("\\\\", 2); return;
    case '\b': out.append("\\b", 2); return;
    case '\f': out.append("\\f", 2); return;
    case '\n': out.append("\\n", 2); return;
    case '\r': out.append("\\r", 2); return;
    case '\t': out.append("\\t", 2); return;
    default: break;
    }
    char u[6] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 15]};
    out.append(u, sizeof u);
}

bool is_special(unsigned char c) { return c == '"' || c == '\\' || c < 0x20; }

void append_u16(std::string& out, uint32_t u)
{
    static const char kHex[] = "0123456789abcdef";
    char e[6] = {'\\', 'u', kHex[(u >> 12) & 15], kHex[(u >> 8) & 15], kHex[(u >> 4) & 15],
                 kHex[u & 15]};
    out.append(e, sizeof e);
}

// The well-formed sequence of `need` (2..4) bytes at p as \uXXXX, or as a
// surrogate pair of them past U+FFFF.
void append_unicode_escape(std::string& out, const unsigned char* p, size_t need)
{
    uint32_t cp = p[0] & (need == 2 ? 0x1F : need == 3 ? 0x0F : 0x07);
    for (size_t i = 1; i < need; ++i) cp = (cp << 6) | (p[i] & 0x3F);
    if (cp < 0x10000) {
        append_u16(out, cp);
    } else {
        cp -= 0x10000;
        append_u16(out, 0xD800 + (cp >> 10));
        append_u16(out, 0xDC00 + (cp & 0x3FF));
    }
}


// The first byte from p on that append_escaped() must look at: one JSON
// escapes, and with Utf8 also any byte >= 0x80 (the start of a sequence
// to check).  end when there is none.
template <bool Utf8>
const char* next_flagged(const char* p, const char* end)
{
#if defined(UR_JSON_SSE2)
    // 16 bytes a step.  The compare is signed, so "below 0x20" also holds
    // for every byte >= 0x80; without Utf8 those are masked out again.
    const __m128i space = _mm_set1_epi8(0x20);
    const __m128i quote = _mm_set1_epi8('"');
    const __m128i bslash = _mm_set1_epi8('\\');
    const __m128i minus1 = _mm_set1_epi8(-1);
    while (end - p >= 16) {
        __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
        __m128i low = _mm_cmplt_epi8(v, space);
        if (!Utf8) low = _mm_and_si128(low, _mm_cmpgt_epi8(v, minus1));
        __m128i m = _mm_or_si128(low, _mm_or_si128(_mm_cmpeq_epi8(v, quote),
                                                   _mm_cmpeq_epi8(v, bslash)));
        unsigned bits = static_cast<unsigned>(_mm_movemask_epi8(m));
        if (bits) return p + __builtin_ctz(bits);
        p += 16;
    }
#else
    while (end - p >= 8) {
        uint64_t w = detail::load8(p);
        uint64_t m = detail::needs_escape(w) | (Utf8 ? detail::has_high(w) : 0);
        if (m) {
            p += detail::first_flagged(m) & 7;  // 8: scan below
            break;
        }
        p += 8;
    }
#endif
    while (p < end) {
        auto c = static_cast<unsigned char>(*p);
        if (is_special(c) || (Utf8 && c >= 0x80)) break;
        ++p;
    }
    return p;
}

// The escaping loop of append_escaped() and append_escaped_utf8_prefix():
// ASCII runs copied, JSON's escapes, every other character as \uXXXX.  At
// an ill-formed or cut-off sequence it stops (Prefix) or writes one
// U+FFFD for its maximal subpart and goes on.  Returns the bytes consumed.
template <bool Prefix>
size_t escape_loop(std::string& out, std::string_view bytes)
{
    const char* begin = bytes.data();
    const char* p = begin;
    const char* end = p + bytes.size();
    const char* run = p;
    while ((p = next_flagged<true>(p, end)) != end) {
        auto c = static_cast<unsigned char>(*p);
        out.append(run, static_cast<size_t>(p - run));
        if (c < 0x80) {
            append_escape(out, c);
            run = ++p;
            continue;
        }
        size_t need;
        auto u = reinterpret_cast<const unsigned char*>(p);
        size_t good = utf8_prefix(u, static_cast<size_t>(end - p), need);
        if (good == need) {
            append_unicode_escape(out, u, need);
            p += need;
        } else if (Prefix) {
            run = p;
            break;
        } else {
            append_u16(out, 0xFFFD);
            p += good > 0 ? good : 1;
        }
        run = p;
    }
    out.append(run, static_cast<size_t>(p - run));
    return static_cast<size_t>(p - begin);
}

void write_int(std::string& out, int64_t i)
{
    char buf[24];
    auto r = std::to_chars(buf, buf + sizeof buf, i);
    out.append(buf, static_cast<size_t>(r.ptr - buf));
}

void write_double(std::string& out, double d)
{
    if (!std::isfinite(d)) {
        out.append("null", 4);
        return;
    }
    // Shortest round-trip form; at most 24 characters ("-2.2250738585072014e-308").
    char buf[32];
    auto r = std::to_chars(buf, buf + sizeof buf - 2, d);
    size_t n = static_cast<size_t>(r.ptr - buf);
    // An integral double comes out as "1" or "-0": add ".0" so it does not
    // read back as an integer.
    if (!std::memchr(buf, '.', n) && !std::memchr(buf, 'e', n)) {
        buf[n++] = '.';
        buf[n++] = '0';
    }
    out.append(buf, n);
}

void write_value(const Value& v, std::string& out)
{
    switch (v.type()) {
    case Value::Type::Null: out.append("null", 4); return;
    case Value::Type::Bool:
        if (v.as_bool()) out.append("true", 4);
        else out.append("false", 5);
        return;
    case Value::Type::Int: write_int(out, v.as_int()); return;
    case Value::Type::Double: write_double(out, v.as_double()); return;
    case Value::Type::String: append_quoted(out, v.as_string()); return;
    case Value::Type::Array: {
        out.push_back('[');
        bool first = true;
        for (const Value& e : v.as_array()) {
            if (!first) out.push_back(',');
            first = false;
            write_value(e, out);
        }
        out.push_back(']');
        return;
    }
    case Value::Type::Object: {
        out.push_back('{');
        bool first = true;
        for (const auto& m : v.as_object()) {
            if (!first) out.push_back(',');
            first = false;
            append_quoted(out, m.first);
            out.push_back(':');
            write_value(m.second, out);
        }
        out.push_back('}');
        return;
    }
    }
}

}  // namespace

void append_quoted(std::string& out, std::string_view utf8)
{
    // Room for the common case (few escapes); append() grows it otherwise.
    out.reserve(out.size() + utf8.size() + utf8.size() / 16 + 2);
    out.push_back('"');
    append_escaped(out, utf8);
    out.push_back('"');
}

void append_escaped(std::string& out, std::string_view utf8)
{
    escape_loop<false>(out, utf8);
}

size_t append_escaped_utf8_prefix(std::string& out, std::string_view bytes)
{
    return escape_loop<true>(out, bytes);
}

void write(const Value& v, std::string& out) { write_value(v, out); }

std::string write(const Value& v)
{
    std::string out;
    write_value(v, out);
    return out;
}

}  // namespace json
