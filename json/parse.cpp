#include "json/parse.hpp"

#include "json/scan.hpp"
#include "json/utf8.hpp"
#include "json/write.hpp"

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <numeric>
#include <vector>

// Doubles go through std::from_chars here and std::to_chars in write.cpp:
// libstdc++ has them from g++ 11 on (SmartOS pkgsrc may offer an older one).
#if !defined(__cpp_lib_to_chars)
#error "ur needs std::to_chars and std::from_chars for double: g++ 11 or later"
#endif

namespace json {

namespace {

// Bytes that stand for themselves inside a JSON string and need no
// further look: printable ASCII other than '"' and '\\'.
struct PlainTable {
    bool plain[256];
    constexpr PlainTable() : plain()
    {
        for (int c = 0; c < 256; ++c)
            plain[c] = c >= 0x20 && c < 0x80 && c != '"' && c != '\\';
    }
};
constexpr PlainTable kPlain;

bool is_digit(char c) { return c >= '0' && c <= '9'; }

int hex_value(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

void append_utf8(std::string& out, uint32_t cp)
{
    char b[4];
    size_t n;
    if (cp < 0x80) {
        b[0] = static_cast<char>(cp);
        n = 1;
    } else if (cp < 0x800) {
        b[0] = static_cast<char>(0xC0 | (cp >> 6));
        b[1] = static_cast<char>(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        b[0] = static_cast<char>(0xE0 | (cp >> 12));
        b[1] = static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        b[2] = static_cast<char>(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        b[0] = static_cast<char>(0xF0 | (cp >> 18));
        b[1] = static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
        b[2] = static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        b[3] = static_cast<char>(0x80 | (cp & 0x3F));
        n = 4;
    }
    out.append(b, n);
}

// "'x'" for printable ASCII, "byte 0xNN" otherwise.
std::string describe(char c)
{
    unsigned char u = static_cast<unsigned char>(c);
    char buf[16];
    if (u > 0x20 && u < 0x7F)
        std::snprintf(buf, sizeof buf, "'%c'", c);
    else
        std::snprintf(buf, sizeof buf, "byte 0x%02x", u);
    return buf;
}

// For a syntactically valid number that std::from_chars reported out of
// range: whether it is too small (rounds to zero) rather than too large.
// Decided by the decimal exponent of the first significant digit, which
// is far below zero for every underflow and far above for every overflow.
bool underflows(const char* p, const char* end)
{
    if (*p == '-') ++p;
    int64_t e10 = 0;
    bool seen_nonzero = false;
    for (; p < end && is_digit(*p); ++p) {
        if (seen_nonzero) ++e10;
        else if (*p != '0') seen_nonzero = true;
    }
    if (p < end && *p == '.') {
        for (++p; p < end && is_digit(*p); ++p) {
            if (seen_nonzero) continue;
            --e10;
            if (*p != '0') seen_nonzero = true;
        }
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        ++p;
        bool neg = false;
        if (*p == '+' || *p == '-') neg = *p++ == '-';
        int64_t exp = 0;
        for (; p < end && is_digit(*p); ++p)
            if (exp < 1000000000) exp = exp * 10 + (*p - '0');
        e10 += neg ? -exp : exp;
    }
    return e10 < 0;
}

class Parser {
public:
    Parser(std::string_view text, ParseError& err, const ParseOptions& opt)
        : begin_(text.data()), p_(text.data()),
          end_(text.data() + text.size()), err_(err), opt_(opt)
    {
    }

    bool run(Value& result);

private:
    // An array or object being filled; key is the pending member's key.
    struct Frame {
        Value container;
        std::string key;
    };

    bool fail(const char* at, std::string reason);
    void skip_ws()
    {
        while (p_ < end_ &&
               (*p_ == ' ' || *p_ == '\n' || *p_ == '\r' || *p_ == '\t'))
            ++p_;
    }
    bool begin_value(Value& value, bool& complete);
    bool parse_key(std::string& key);
    bool parse_string(std::string& out);
    bool parse_escape(std::string& out);
    bool parse_hex4(uint32_t& cp);
    bool parse_number(Value& out);
    bool parse_literal(std::string_view word, Value v, Value& out);
    static bool drop_duplicate_keys(Value::Object& obj, std::string* dup);

    const char* begin_;
    const char* p_;
    const char* end_;
    ParseError& err_;
    const ParseOptions& opt_;
    std::vector<Frame> stack_;
    size_t values_ = 0;  // begun so far, for ParseOptions::max_values
};

bool Parser::fail(const char* at, std::string reason)
{
    size_t line = 1;
    const char* line_start = begin_;
    for (const char* q = begin_; q < at;) {
        const void* nl = std::memchr(q, '\n', static_cast<size_t>(at - q));
        if (!nl) break;
        ++line;
        q = line_start = static_cast<const char*>(nl) + 1;
    }
    err_.line = line;
    err_.column = static_cast<size_t>(at - line_start) + 1;
    err_.reason = std::move(reason);
    return false;
}

bool Parser::run(Value& result)
{
    if (static_cast<size_t>(end_ - begin_) > opt_.max_size)
        return fail(begin_, "input is " + std::to_string(end_ - begin_) +
                                " bytes, more than the limit of " +
                                std::to_string(opt_.max_size));
    skip_ws();
    if (p_ == end_)
        return fail(p_, begin_ == end_ ? "empty input"
                                       : "expected a JSON value, found only whitespace");
    Value value;
    for (;;) {
        // Here a value is expected at p_ (whitespace skipped).
        bool complete;
        if (!begin_value(value, complete)) return false;
        if (!complete) continue;  // opened a container: its first value next
        // Attach the complete value to its parent; a closed parent is
        // itself a complete value, so repeat until a value is expected.
        for (;;) {
            skip_ws();
            if (stack_.empty()) {
                if (p_ != end_)
                    return fail(p_, "unexpected " + describe(*p_) +
                                        " after the JSON value");
                result = std::move(value);
                return true;
            }
            Frame& top = stack_.back();
            if (top.container.is_array()) {
                top.container.as_array().push_back(std::move(value));
                if (p_ < end_ && *p_ == ',') {
                    ++p_;
                    skip_ws();
                    if (p_ < end_ && *p_ == ']')
                        return fail(p_, "expected a value after ',' "
                                        "(trailing commas are not allowed)");
                    break;
                }
                if (p_ < end_ && *p_ == ']') {
                    ++p_;
                    value = std::move(top.container);
                    stack_.pop_back();
                    continue;
                }
                return fail(p_, "expected ',' or ']' after array element");
            }
            Value::Object& obj = top.container.as_object();
            obj.emplace_back(std::move(top.key), std::move(value));
            if (p_ < end_ && *p_ == ',') {
                ++p_;
                skip_ws();
                if (p_ < end_ && *p_ == '}')
                    return fail(p_, "expected '\"' to start an object key "
                                    "(trailing commas are not allowed)");
                if (!parse_key(top.key)) return false;
                break;
            }
            if (p_ < end_ && *p_ == '}') {
                std::string dup;
                if (drop_duplicate_keys(obj, &dup) && opt_.reject_duplicate_keys)
                    return fail(p_, "duplicate key " + write(Value(dup)) + " in object");
                ++p_;
                value = std::move(top.container);
                stack_.pop_back();
                continue;
            }
            return fail(p_, "expected ',' or '}' after object member");
        }
        skip_ws();
    }
}

// Parses a scalar into value (complete = true), or opens a container:
// an empty one is complete at once, otherwise it is pushed on the stack
// (with its first key read, for an object) and complete = false.
bool Parser::begin_value(Value& value, bool& complete)
{
    if (p_ == end_) return fail(p_, "unexpected end of input, expected a value");
    if (++values_ > opt_.max_values) {
        err_.too_many_values = true;
        return fail(p_, "more than " + std::to_string(opt_.max_values) + " values");
    }
    complete = true;
    char c = *p_;
    switch (c) {
    case '[':
    case '{': {
        if (stack_.size() >= opt_.max_depth)
            return fail(p_, "nesting deeper than " +
                                std::to_string(opt_.max_depth) + " levels");
        const char close = c == '[' ? ']' : '}';
        ++p_;
        skip_ws();
        if (p_ < end_ && *p_ == close) {
            ++p_;
            value = c == '[' ? Value::array() : Value::object();
            return true;
        }
        complete = false;
        stack_.push_back({c == '[' ? Value::array() : Value::object(), {}});
        if (c == '{') {
            if (!parse_key(stack_.back().key)) return false;
            skip_ws();
        }
        return true;
    }
    case '"': {
        std::string s;
        if (!parse_string(s)) return false;
        value = Value(std::move(s));
        return true;
    }
    case 't': return parse_literal("true", Value(true), value);
    case 'f': return parse_literal("false", Value(false), value);
    case 'n': return parse_literal("null", Value(), value);
    case '/': return fail(p_, "comments are not allowed");
    case '\'': return fail(p_, "strings must use double quotes");
    case 'N':
    case 'I': return fail(p_, "NaN and Infinity are not valid JSON");
    case '+': return fail(p_, "numbers must not start with '+'");
    case '.': return fail(p_, "numbers must start with a digit");
    default: break;
    }
    if (c == '-' || is_digit(c)) return parse_number(value);
    return fail(p_, "unexpected " + describe(c) + ", expected a value");
}

// p_ at the start of an object key: reads the key and the ':' after it.
bool Parser::parse_key(std::string& key)
{
    if (p_ == end_)
        return fail(p_, "unexpected end of input, expected an object key");
    if (*p_ != '"') {
        if (*p_ == '\'') return fail(p_, "strings must use double quotes");
        return fail(p_, "expected '\"' to start an object key, found " +
                            describe(*p_));
    }
    if (!parse_string(key)) return false;
    skip_ws();
    if (p_ == end_ || *p_ != ':')
        return fail(p_, "expected ':' after object key");
    ++p_;
    return true;
}

// p_ at the opening '"'.  Runs of bytes that need no decoding (the common
// case: all of them) are appended in one piece.
bool Parser::parse_string(std::string& out)
{
    out.clear();
    ++p_;
    const char* run = p_;
    for (;;) {
        while (end_ - p_ >= 8) {
            uint64_t w = detail::load8(p_);
            uint64_t m = detail::needs_escape(w) | detail::has_high(w);
            if (m) {
                p_ += detail::first_flagged(m) & 7;  // 8: scan below
                break;
            }
            p_ += 8;
        }
        while (p_ < end_ && kPlain.plain[static_cast<unsigned char>(*p_)])
            ++p_;
        if (p_ == end_) return fail(p_, "unexpected end of input in string");
        unsigned char c = static_cast<unsigned char>(*p_);
        if (c == '"') {
            out.append(run, static_cast<size_t>(p_ - run));
            ++p_;
            return true;
        }
        if (c >= 0x80) {
            size_t need;
            size_t avail = static_cast<size_t>(end_ - p_);
            size_t got = utf8_prefix(reinterpret_cast<const unsigned char*>(p_),
                                     avail, need);
            if (got != need) {
                char buf[64];
                std::snprintf(buf, sizeof buf,
                              got == avail ? "truncated UTF-8 sequence in string"
                                           : "invalid UTF-8 sequence in string "
                                             "(starting with byte 0x%02x)",
                              c);
                return fail(p_, buf);
            }
            p_ += need;
            continue;
        }
        if (c < 0x20) {
            char buf[64];
            std::snprintf(buf, sizeof buf,
                          "unescaped control character 0x%02x in string", c);
            return fail(p_, buf);
        }
        // A backslash.
        out.append(run, static_cast<size_t>(p_ - run));
        if (!parse_escape(out)) return false;
        run = p_;
    }
}

// p_ at a '\\' inside a string: appends what the escape stands for.
bool Parser::parse_escape(std::string& out)
{
    const char* at = p_;
    if (end_ - p_ < 2) return fail(end_, "unexpected end of input in string");
    char e = p_[1];
    p_ += 2;
    switch (e) {
    case '"': out.push_back('"'); return true;
    case '\\': out.push_back('\\'); return true;
    case '/': out.push_back('/'); return true;
    case 'b': out.push_back('\b'); return true;
    case 'f': out.push_back('\f'); return true;
    case 'n': out.push_back('\n'); return true;
    case 'r': out.push_back('\r'); return true;
    case 't': out.push_back('\t'); return true;
    case 'u': break;
    default: return fail(at, "invalid escape \\" + describe(e) + " in string");
    }
    uint32_t cp;
    if (!parse_hex4(cp)) return false;
    if (opt_.lone_surrogates_as_replacement && cp >= 0xD800 && cp <= 0xDFFF) {
        // A high surrogate takes a low one that follows; anything else
        // alone is U+FFFD, and what follows is read afresh.
        uint32_t lo = 0;
        const char* after = p_;
        if (cp <= 0xDBFF && end_ - p_ >= 6 && p_[0] == '\\' && p_[1] == 'u') {
            p_ += 2;
            if (!parse_hex4(lo)) return false;  // not 4 hex digits: an error anyway
            if (lo >= 0xDC00 && lo <= 0xDFFF) {
                append_utf8(out, 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00));
                return true;
            }
        }
        p_ = after;
        append_utf8(out, 0xFFFD);
        return true;
    }
    if (cp >= 0xDC00 && cp <= 0xDFFF)
        return fail(at, "lone low surrogate escape in string");
    if (cp >= 0xD800 && cp <= 0xDBFF) {
        // Must be followed by a low surrogate escape: together they encode
        // one code point above U+FFFF.
        if (end_ - p_ < 2 || p_[0] != '\\' || p_[1] != 'u')
            return fail(at, "lone high surrogate escape in string "
                            "(expected a \\u low surrogate after it)");
        p_ += 2;
        uint32_t lo;
        if (!parse_hex4(lo)) return false;
        if (lo < 0xDC00 || lo > 0xDFFF)
            return fail(at, "high surrogate escape not followed by a low "
                            "surrogate escape");
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
    }
    append_utf8(out, cp);
    return true;
}

bool Parser::parse_hex4(uint32_t& cp)
{
    cp = 0;
    for (int i = 0; i < 4; ++i) {
        int h = p_ < end_ ? hex_value(*p_) : -1;
        if (h < 0) return fail(p_, "expected 4 hex digits after \\u");
        cp = cp << 4 | static_cast<uint32_t>(h);
        ++p_;
    }
    return true;
}

bool Parser::parse_number(Value& out)
{
    const char* start = p_;
    bool negative = false;
    if (*p_ == '-') {
        negative = true;
        ++p_;
    }
    if (p_ == end_ || !is_digit(*p_))
        return fail(p_, "expected a digit after '-'");
    const char* digits = p_;
    if (*p_ == '0') {
        ++p_;
        if (p_ < end_ && is_digit(*p_))
            return fail(p_ - 1, "leading zeros are not allowed in numbers");
    } else {
        while (p_ < end_ && is_digit(*p_)) ++p_;
    }
    const char* digits_end = p_;
    bool integral = true;
    if (p_ < end_ && *p_ == '.') {
        integral = false;
        ++p_;
        if (p_ == end_ || !is_digit(*p_))
            return fail(p_, "expected a digit after the decimal point");
        while (p_ < end_ && is_digit(*p_)) ++p_;
    }
    if (p_ < end_ && (*p_ == 'e' || *p_ == 'E')) {
        integral = false;
        ++p_;
        if (p_ < end_ && (*p_ == '+' || *p_ == '-')) ++p_;
        if (p_ == end_ || !is_digit(*p_))
            return fail(p_, "expected a digit in the exponent");
        while (p_ < end_ && is_digit(*p_)) ++p_;
    }
    // 19 digits always fit in uint64; the limit check below decides int64.
    if (integral && digits_end - digits <= 19) {
        uint64_t mag = 0;
        for (const char* q = digits; q < digits_end; ++q)
            mag = mag * 10 + static_cast<uint64_t>(*q - '0');
        const uint64_t limit = uint64_t{INT64_MAX} + (negative ? 1 : 0);
        if (mag <= limit) {
            // Negate in unsigned arithmetic: -2^63 has no positive int64.
            out = Value(static_cast<int64_t>(negative ? 0 - mag : mag));
            return true;
        }
    }
    double d = 0;
    auto r = std::from_chars(start, p_, d);
    if (r.ec == std::errc::result_out_of_range) {
        if (!underflows(start, p_)) {
            if (!opt_.overflow_as_infinity) return fail(start, "number out of range for a double");
            d = negative ? -std::numeric_limits<double>::infinity()
                         : std::numeric_limits<double>::infinity();
        } else {
            d = negative ? -0.0 : 0.0;
        }
    } else if (r.ec != std::errc() || r.ptr != p_) {
        return fail(start, "malformed number");  // cannot happen: validated
    }
    out = Value(d);
    return true;
}

bool Parser::parse_literal(std::string_view word, Value v, Value& out)
{
    if (static_cast<size_t>(end_ - p_) < word.size() ||
        std::memcmp(p_, word.data(), word.size()) != 0)
        return fail(p_, "invalid literal, expected '" + std::string(word) + "'");
    p_ += word.size();
    out = std::move(v);
    return true;
}

// Keeps one member per key: at the first occurrence's position, with the
// last occurrence's value.  Linear for small objects without duplicates,
// O(n log n) otherwise, so that a hostile object with many members cannot
// make parsing quadratic.  `dup`, when given, gets a key that was repeated.
bool Parser::drop_duplicate_keys(Value::Object& obj, std::string* dup)
{
    const size_t n = obj.size();
    if (n < 2) return false;
    if (n <= 16) {
        bool seen = false;
        for (size_t i = 1; i < n && !seen; ++i)
            for (size_t j = 0; j < i && !seen; ++j)
                seen = obj[i].first == obj[j].first;
        if (!seen) return false;
    }
    std::vector<size_t> order(n);
    std::iota(order.begin(), order.end(), size_t{0});
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
        return obj[a].first < obj[b].first;
    });
    std::vector<bool> drop(n, false);
    bool any = false;
    for (size_t i = 0; i < n;) {
        size_t j = i + 1;
        while (j < n && obj[order[j]].first == obj[order[i]].first) ++j;
        if (j - i > 1) {
            if (dup && !any) *dup = obj[order[i]].first;
            // order[i..j) are the occurrences, in input order.
            obj[order[i]].second = std::move(obj[order[j - 1]].second);
            for (size_t k = i + 1; k < j; ++k) drop[order[k]] = true;
            any = true;
        }
        i = j;
    }
    if (!any) return false;
    size_t w = 0;
    for (size_t r = 0; r < n; ++r) {
        if (drop[r]) continue;
        if (w != r) obj[w] = std::move(obj[r]);
        ++w;
    }
    obj.erase(obj.begin() + static_cast<std::ptrdiff_t>(w), obj.end());
    return true;
}

}  // namespace

std::string ParseError::to_string() const
{
    return "line " + std::to_string(line) + ", column " +
           std::to_string(column) + ": " + reason;
}

bool parse(std::string_view text, Value& out, ParseError& err,
           const ParseOptions& opt)
{
    err.too_many_values = false;  // a ParseError may be used again
    Parser parser(text, err, opt);
    Value result;
    if (!parser.run(result)) return false;
    out = std::move(result);
    return true;
}

}  // namespace json
