#include "json/write.hpp"

#include "json/scan.hpp"

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
    const char* p = utf8.data();
    const char* end = p + utf8.size();
    const char* run = p;
    while (p < end) {
        while (end - p >= 8) {
            uint64_t m = detail::needs_escape(detail::load8(p));
            if (m) {
                p += detail::first_flagged(m) & 7;  // 8: scan below
                break;
            }
            p += 8;
        }
        while (p < end && !is_special(static_cast<unsigned char>(*p))) ++p;
        if (p == end) break;
        out.append(run, static_cast<size_t>(p - run));
        append_escape(out, static_cast<unsigned char>(*p));
        run = ++p;
    }
    out.append(run, static_cast<size_t>(p - run));
}

void write(const Value& v, std::string& out) { write_value(v, out); }

std::string write(const Value& v)
{
    std::string out;
    write_value(v, out);
    return out;
}

}  // namespace json
