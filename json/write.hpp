// Compact JSON writer.
//
// Integers are written as integers; doubles in the shortest form that reads
// back to the same double, always with a '.' or an exponent so that they
// read back as doubles (1.0 -> "1.0", -0.0 -> "-0.0", 1e308 -> "1e+308").
// NaN and infinities have no JSON form and are written as null.  Strings
// must be valid UTF-8 (see string_from_bytes; an ill-formed part becomes
// \ufffd).  The output is ASCII: every character past U+007F is written as
// \uXXXX (a surrogate pair past U+FFFF).  A reader that decodes text in
// pieces then cannot split a character: node-amqp, under Triton's
// urclient, decodes each AMQP body frame on its own, and RabbitMQ cuts a
// message into frames wherever its frame size falls.
#ifndef UR_JSON_WRITE_HPP
#define UR_JSON_WRITE_HPP

#include "json/value.hpp"

#include <string>
#include <string_view>

namespace json {

std::string write(const Value& v);
// Appends v to out.  Recursion depth is the value's nesting depth.
void write(const Value& v, std::string& out);
// Appends utf8 as a quoted JSON string: '"' and '\\' escaped, control
// characters as \b \f \n \r \t or \u00XX, characters past U+007F as
// \uXXXX, the rest of ASCII unchanged.
void append_quoted(std::string& out, std::string_view utf8);
// The same without the quotes: what goes between them.  Escaping a string
// piece by piece (cut between characters) gives the same bytes as escaping
// it whole, so a stream can be escaped as it arrives (the agent does so
// for a script's output).
void append_escaped(std::string& out, std::string_view utf8);
// append_escaped() of the longest prefix of bytes made of complete,
// well-formed UTF-8 sequences (valid_utf8_prefix() in utf8.hpp), in one
// pass over the bytes instead of two; returns that prefix's length.  What
// follows it (an ill-formed or cut-off sequence) is left to the caller.
size_t append_escaped_utf8_prefix(std::string& out, std::string_view bytes);

}  // namespace json

#endif
