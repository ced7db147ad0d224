// Strict RFC 8259 JSON reader.
//
// Accepts exactly one JSON value with optional surrounding whitespace
// (space, tab, CR, LF).  Rejects: empty input, trailing commas, comments,
// NaN/Infinity, leading zeros, '+' signs, single quotes, unescaped control
// characters in strings, ill-formed UTF-8 in strings (overlong forms,
// encoded surrogates, code points above U+10FFFF, truncated sequences,
// stray continuation bytes), lone surrogate \u escapes (unless
// ParseOptions reads them as U+FFFD, as the agent does), numbers whose
// magnitude overflows a double (unless ParseOptions reads them as an
// infinity, as JSON.parse does), and anything after the value.
//
// Numbers without fraction or exponent that fit in int64 become Int; all
// others become Double, correctly rounded (values below the smallest
// subnormal become 0 of the same sign).  A duplicate object key keeps one
// member: at the position of its first occurrence, with the last value
// (what JavaScript's JSON.parse does).
//
// The parser is iterative: nesting depth costs heap, not stack, and is
// bounded by ParseOptions::max_depth.
#ifndef UR_JSON_PARSE_HPP
#define UR_JSON_PARSE_HPP

#include "json/value.hpp"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace json {

struct ParseOptions {
    // Arrays and objects nested deeper than this are rejected ("[[1]]" has
    // depth 2; a scalar has depth 0).  The parser itself needs no stack
    // for nesting, but write(), operator== and ~Value recurse once per
    // level of the parsed value, so keep this modest.
    size_t max_depth = 256;
    // Inputs longer than this many bytes are rejected before parsing.
    size_t max_size = 64u << 20;
    // Inputs holding more values than this (scalars, arrays and objects,
    // the whole value included) are rejected as soon as the one past it
    // begins.  A parsed value takes about 20 times its text: 16 MiB of
    // "0," made 345 MB.
    size_t max_values = SIZE_MAX;
    // A \u escape of a lone surrogate (a high one not followed by a low
    // one, or a low one alone) becomes U+FFFD instead of an error: what
    // Node's JSON.parse and then its UTF-8 encoding of the string make of
    // it (JSON.stringify writes such escapes).  Off: the error.
    bool lone_surrogates_as_replacement = false;
    // An object with a key twice is an error ("duplicate key ...") instead
    // of keeping the last value: for files people write, where a repeated
    // key is a mistake to point at (the agent's --config).
    bool reject_duplicate_keys = false;
    // A number too large for a double (1e400) becomes +-infinity instead of
    // an error, as in JavaScript's JSON.parse; write() makes it null, as
    // JSON.stringify does.  Off: the error.
    bool overflow_as_infinity = false;
};

// What JavaScript's JSON.parse (so the original, Node, agent) takes beyond
// strict JSON: \u escapes of lone surrogates as U+FFFD, and numbers too
// large for a double as infinity.
inline ParseOptions javascript_options() {
    ParseOptions o;
    o.lone_surrogates_as_replacement = true;
    o.overflow_as_infinity = true;
    return o;
}

struct ParseError {
    // Where the problem was found: line is 1-based (counting LF), column is
    // the 1-based *byte* offset within that line (not characters: a
    // multi-byte UTF-8 character advances it by its length).
    size_t line = 0, column = 0;
    std::string reason;
    // The input was refused for ParseOptions::max_values, not as bad JSON
    // (reason: "more than N values").
    bool too_many_values = false;
    // "line 3, column 17: expected ',' or '}' after object member"
    std::string to_string() const;
};

// Parses text into out.  On success returns true and replaces out; on
// failure returns false, fills err and leaves out unchanged.
bool parse(std::string_view text, Value& out, ParseError& err,
           const ParseOptions& opt = {});

}  // namespace json

#endif
