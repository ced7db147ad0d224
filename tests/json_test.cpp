// Tests for json/value, json/parse and json/write.
#include "json/json.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>

using json::Value;

namespace {

Value parsed(std::string_view text)
{
    Value v;
    json::ParseError err;
    bool ok = json::parse(text, v, err);
    INFO("input: ", std::string(text), " error: ", err.to_string());
    REQUIRE(ok);
    return v;
}

bool accepts(std::string_view text)
{
    Value v;
    json::ParseError err;
    return json::parse(text, v, err);
}

// The error for text, which must be rejected.
json::ParseError rejected(std::string_view text, const json::ParseOptions& opt = {})
{
    Value v;
    json::ParseError err;
    bool ok = json::parse(text, v, err, opt);
    INFO("input: ", std::string(text));
    REQUIRE_FALSE(ok);
    REQUIRE(err.line >= 1);
    REQUIRE(err.column >= 1);
    REQUIRE_FALSE(err.reason.empty());
    return err;
}

void check_error(std::string_view text, size_t line, size_t column,
                 const std::string& reason_part)
{
    json::ParseError err = rejected(text);
    INFO("input: ", std::string(text), " error: ", err.to_string());
    CHECK(err.line == line);
    CHECK(err.column == column);
    CHECK(err.reason.find(reason_part) != std::string::npos);
}

}  // namespace

// --- Value --------------------------------------------------------------

TEST_CASE("Value constructors set the type")
{
    CHECK(Value().is_null());
    CHECK(Value(nullptr).is_null());
    CHECK(Value(true).is_bool());
    CHECK(Value(7).is_int());
    CHECK(Value(int64_t{-7}).as_int() == -7);
    CHECK(Value(uint32_t{4000000000u}).as_int() == 4000000000);
    CHECK(Value(7u).is_int());
    CHECK(Value(uint64_t{1} << 63).is_double());  // above INT64_MAX
    CHECK(Value(2.5).is_double());
    CHECK(Value("s").is_string());
    CHECK(Value(std::string("s")).is_string());
    CHECK(Value(std::string_view("s")).as_string() == "s");
    CHECK(Value::array().is_array());
    CHECK(Value::object().is_object());
    CHECK(Value(1).is_number());
    CHECK(Value(1.5).is_number());
    CHECK_FALSE(Value("1").is_number());
}

TEST_CASE("Value accessors on the wrong type are safe")
{
    const Value s("text");
    CHECK(s.as_bool() == false);
    CHECK(s.as_int() == 0);
    CHECK(s.as_double() == 0.0);
    CHECK(s.as_array().empty());
    CHECK(s.as_object().empty());
    CHECK(s.find("x") == nullptr);
    CHECK(Value(1).as_string().empty());
    CHECK(Value(3).as_double() == 3.0);
    CHECK(Value(3.0).as_int() == 3);
    CHECK(Value(3.5).as_int() == 0);
    CHECK(Value(1e300).as_int() == 0);
    CHECK(Value(std::nan("")).as_int() == 0);

    Value m(5);
    m.as_string() = "now a string";  // mutable accessor converts
    CHECK(m.is_string());
    m.push_back(1);
    CHECK(m.is_array());
    CHECK(m.as_array().size() == 1);
}

TEST_CASE("Value object helpers keep order and replace in place")
{
    Value o = Value::object();
    o.set("b", 1);
    o.set("a", 2);
    o.set("b", "x");
    REQUIRE(o.as_object().size() == 2);
    CHECK(o.as_object()[0].first == "b");
    CHECK(o.as_object()[0].second == Value("x"));
    CHECK(o.as_object()[1].first == "a");
    REQUIRE(o.find("a") != nullptr);
    CHECK(o.find("a")->as_int() == 2);
    CHECK(o.find("c") == nullptr);
    *o.find("a") = Value(true);
    CHECK(o.find("a")->as_bool());
    Value n;
    n.set("k", 1);  // null becomes an object
    CHECK(n.is_object());
}

TEST_CASE("Value equality")
{
    CHECK(Value(1) == Value(1.0));
    CHECK(Value(1) != Value(1.5));
    CHECK(Value(int64_t{1} << 62) == Value(std::ldexp(1.0, 62)));
    CHECK(Value(std::nan("")) != Value(std::nan("")));
    CHECK(Value("1") != Value(1));
    CHECK(Value() == Value(nullptr));
    CHECK(Value(false) != Value());
    CHECK(parsed(R"({"a":1,"b":[1,2]})") == parsed(R"({"b":[1,2],"a":1})"));
    CHECK(parsed(R"({"a":1,"b":[1,2]})") != parsed(R"({"b":[2,1],"a":1})"));
    CHECK(parsed(R"({"a":1})") != parsed(R"({"a":1,"b":2})"));
    CHECK(parsed(R"({"a":1})") != parsed(R"({"c":1})"));
    CHECK(parsed("[1,2]") != parsed("[1,2,3]"));
}

// --- Parsing: accepted --------------------------------------------------

TEST_CASE("parse accepts every kind of value")
{
    CHECK(parsed("null").is_null());
    CHECK(parsed("true").as_bool());
    CHECK_FALSE(parsed("false").as_bool());
    CHECK(parsed(" \t\r\n42 \t\r\n").as_int() == 42);  // surrounding space
    CHECK(parsed("\"hi\"").as_string() == "hi");
    CHECK(parsed("[]").as_array().empty());
    CHECK(parsed("{}").as_object().empty());
    CHECK(parsed("[ ]").as_array().empty());
    CHECK(parsed("{ }").as_object().empty());
    Value v = parsed(R"( { "a" : [ 1 , { "b" : null } , [ ] ] , "c" : "d" } )");
    REQUIRE(v.is_object());
    REQUIRE(v.find("a") != nullptr);
    const Value::Array& a = v.find("a")->as_array();
    REQUIRE(a.size() == 3);
    CHECK(a[0].as_int() == 1);
    CHECK(a[1].find("b")->is_null());
    CHECK(a[2].is_array());
    CHECK(v.find("c")->as_string() == "d");
}

TEST_CASE("integers are exact int64, others double")
{
    CHECK(parsed("0").is_int());
    CHECK(parsed("-0").is_int());
    CHECK(parsed("9223372036854775807").as_int() == std::numeric_limits<int64_t>::max());
    CHECK(parsed("-9223372036854775808").as_int() == std::numeric_limits<int64_t>::min());
    CHECK(parsed("9007199254740993").as_int() == 9007199254740993);  // 2^53+1
    Value big = parsed("9223372036854775808");
    CHECK(big.is_double());
    CHECK(big.as_double() == 9223372036854775808.0);
    CHECK(parsed("-9223372036854775809").is_double());
    CHECK(parsed("12345678901234567890123").is_double());
    CHECK(parsed("1.0").is_double());
    CHECK(parsed("1e2").is_double());
    CHECK(parsed("1e2").as_double() == 100.0);
    CHECK(parsed("1E+2").as_double() == 100.0);
    CHECK(parsed("-1.5e-2").as_double() == -0.015);
    CHECK(parsed("0.5").as_double() == 0.5);
    CHECK(parsed("-0.0").is_double());
}

TEST_CASE("doubles are correctly rounded")
{
    CHECK(parsed("0.1").as_double() == 0.1);
    CHECK(parsed("5e-324").as_double() == std::numeric_limits<double>::denorm_min());
    CHECK(parsed("1e308").as_double() == 1e308);
    CHECK(parsed("1.7976931348623157e308").as_double() == std::numeric_limits<double>::max());
    CHECK(parsed("2.2250738585072014e-308").as_double() == std::numeric_limits<double>::min());
    // Halfway between 2^53 and 2^53+2: ties to even.
    CHECK(parsed("9007199254740993.0").as_double() == 9007199254740992.0);
    // Below the smallest subnormal: rounds to zero, keeping the sign.
    Value tiny = parsed("-1e-400");
    CHECK(tiny.as_double() == 0.0);
    CHECK(std::signbit(tiny.as_double()));
    CHECK(parsed("0.0000000000000000000000000000001e-300").as_double() == 0.0);
    CHECK(parsed("0e999999999999999999").as_double() == 0.0);
}

TEST_CASE("strings decode every escape")
{
    CHECK(parsed(R"("\"\\\/\b\f\n\r\t")").as_string() == "\"\\/\b\f\n\r\t");
    CHECK(parsed(R"("\u0041\u00e9\u20AC")").as_string() == "A\xC3\xA9\xE2\x82\xAC");
    CHECK(parsed(R"("\u0000")").as_string() == std::string("\0", 1));
    CHECK(parsed(R"("\ud83d\ude00")").as_string() == "\xF0\x9F\x98\x80");
    CHECK(parsed(R"("\uDBFF\uDFFF")").as_string() == "\xF4\x8F\xBF\xBF");
    CHECK(parsed(R"("a\nb" )").as_string() == "a\nb");
    CHECK(parsed("\"\x7F\"").as_string() == "\x7F");  // DEL needs no escape
    CHECK(parsed("\"caf\xC3\xA9 \xF0\x9F\x98\x80\"").as_string() == "caf\xC3\xA9 \xF0\x9F\x98\x80");
    CHECK(parsed("\"\xF4\x8F\xBF\xBF\xED\x9F\xBF\xEE\x80\x80\"").is_string());
}

TEST_CASE("string scanning finds special bytes at every word offset")
{
    // The string scanner reads 8 bytes at a time; put each kind of special
    // byte at each offset relative to a word.
    for (size_t len = 1; len < 24; ++len) {
        for (size_t at = 0; at < len; ++at) {
            CAPTURE(len);
            CAPTURE(at);
            std::string head(at, 'a'), tail(len - at - 1, 'b');
            REQUIRE(parsed("\"" + head + "\\n" + tail + "\"").as_string() == head + "\n" + tail);
            REQUIRE(parsed("\"" + head + "\xC3\xA9" + tail + "\"").as_string() == head + "\xC3\xA9" + tail);
            REQUIRE(parsed("[\"" + head + "\"," + std::string(tail.size(), ' ') + "1]").as_array().size() == 2);
            json::ParseError err = rejected("\"" + head + "\x1f" + tail + "\"");
            REQUIRE(err.column == at + 2);
            err = rejected("\"" + head + "\xFF" + tail + "\"");
            REQUIRE(err.column == at + 2);
        }
    }
}

TEST_CASE("duplicate keys: last value wins, first position kept")
{
    Value v = parsed(R"({"a":1,"b":2,"a":3})");
    REQUIRE(v.as_object().size() == 2);
    CHECK(v.as_object()[0].first == "a");
    CHECK(v.as_object()[0].second.as_int() == 3);
    CHECK(v.as_object()[1].first == "b");

    // Many members (the sorting path), with repeated keys.
    std::string text = "{";
    for (int i = 0; i < 1000; ++i) {
        if (i) text += ",";
        text += "\"k" + std::to_string(i % 300) + "\":" + std::to_string(i);
    }
    text += "}";
    Value big = parsed(text);
    REQUIRE(big.as_object().size() == 300);
    for (int k = 0; k < 300; ++k) {
        CAPTURE(k);
        CHECK(big.as_object()[static_cast<size_t>(k)].first == "k" + std::to_string(k));
        // The last i with i % 300 == k below 1000.
        CHECK(big.as_object()[static_cast<size_t>(k)].second.as_int() == (k < 100 ? 900 + k : 600 + k));
    }
}

TEST_CASE("numbers past a double: infinity when ParseOptions asks for it")
{
    json::ParseOptions opt;
    opt.overflow_as_infinity = true;
    Value v;
    json::ParseError err;
    REQUIRE(json::parse("[1e400,-1e400,1e-400,123456789e999]", v, err, opt));
    const auto& a = v.as_array();
    CHECK(a[0].as_double() == std::numeric_limits<double>::infinity());
    CHECK(a[1].as_double() == -std::numeric_limits<double>::infinity());
    CHECK(a[2].as_double() == 0.0);
    CHECK(a[3].as_double() == std::numeric_limits<double>::infinity());
    CHECK(json::write(v) == "[null,null,0.0,null]");
    CHECK_FALSE(json::parse("1e400", v, err));
    CHECK(err.reason == "number out of range for a double");
}

TEST_CASE("duplicate keys: an error when ParseOptions asks for it")
{
    json::ParseOptions opt;
    opt.reject_duplicate_keys = true;
    auto fails = [&](const std::string& text, const std::string& reason, size_t column) {
        CAPTURE(text);
        Value v;
        json::ParseError err;
        REQUIRE_FALSE(json::parse(text, v, err, opt));
        CHECK(err.reason == reason);
        CHECK(err.line == 1);
        CHECK(err.column == column);
    };
    fails(R"({"a":1,"b":2,"a":3})", R"(duplicate key "a" in object)", 19);
    fails(R"({"x":{"":1,"":2}})", R"(duplicate key "" in object)", 16);
    fails(R"([{"k\n":1,"k\n":1}])", R"(duplicate key "k\n" in object)", 18);
    // The sorting path (more than 16 members).
    std::string text = "{";
    for (int i = 0; i < 40; ++i) text += "\"k" + std::to_string(i) + "\":0,";
    text += "\"k7\":1}";
    fails(text, R"(duplicate key "k7" in object)", text.size());
    Value v;
    json::ParseError err;
    text.replace(text.rfind("k7"), 2, "k99");
    CHECK(json::parse(text, v, err, opt));
    CHECK(json::parse(R"({"a":{"a":{"a":1}},"b":[{"a":1},{"a":2}]})", v, err, opt));
}

// --- Parsing: rejected --------------------------------------------------

TEST_CASE("empty and whitespace-only input are errors")
{
    check_error("", 1, 1, "empty input");
    check_error(" \n ", 2, 2, "only whitespace");
}

TEST_CASE("non-JSON syntax is rejected with a clear reason")
{
    check_error("[1,]", 1, 4, "trailing commas");
    check_error("[1,\n]", 2, 1, "trailing commas");
    check_error(R"({"a":1,})", 1, 8, "trailing commas");
    check_error("[1 2]", 1, 4, "expected ',' or ']' after array element");
    check_error(R"({"a":1 "b":2})", 1, 8, "expected ',' or '}' after object member");
    check_error(R"({"a" 1})", 1, 6, "expected ':' after object key");
    check_error("{1:2}", 1, 2, "expected '\"' to start an object key");
    check_error("{'a':1}", 1, 2, "double quotes");
    check_error("'a'", 1, 1, "double quotes");
    check_error("// hi\n1", 1, 1, "comments");
    check_error("[1 /* c */]", 1, 4, "expected ',' or ']'");
    check_error("/* c */ 1", 1, 1, "comments");
    check_error("NaN", 1, 1, "NaN and Infinity");
    check_error("Infinity", 1, 1, "NaN and Infinity");
    check_error("-Infinity", 1, 2, "expected a digit after '-'");
    check_error("nan", 1, 1, "expected 'null'");
    check_error("tru", 1, 1, "expected 'true'");
    check_error("True", 1, 1, "unexpected 'T'");
    check_error("falsey", 1, 6, "after the JSON value");
    check_error("1 2", 1, 3, "unexpected '2' after the JSON value");
    check_error("{} x", 1, 4, "after the JSON value");
    check_error("[]]", 1, 3, "after the JSON value");
    check_error("[1]\x01", 1, 4, "byte 0x01");
    check_error("]", 1, 1, "unexpected ']', expected a value");
    check_error("[", 1, 2, "end of input");
    check_error("[1,", 1, 4, "end of input");
    check_error("{", 1, 2, "end of input");
    check_error(R"({"a")", 1, 5, "expected ':'");
    check_error(R"({"a":)", 1, 6, "end of input");
    check_error("\"abc", 1, 5, "end of input in string");
}

TEST_CASE("malformed numbers are rejected")
{
    check_error("01", 1, 1, "leading zeros");
    check_error("-01", 1, 2, "leading zeros");
    check_error("00", 1, 1, "leading zeros");
    check_error("[007]", 1, 2, "leading zeros");
    check_error("-", 1, 2, "expected a digit after '-'");
    check_error("1.", 1, 3, "after the decimal point");
    check_error("1.e5", 1, 3, "after the decimal point");
    check_error(".5", 1, 1, "must start with a digit");
    check_error("-.5", 1, 2, "expected a digit after '-'");
    check_error("+1", 1, 1, "'+'");
    check_error("1e", 1, 3, "exponent");
    check_error("1e+", 1, 4, "exponent");
    check_error("0x10", 1, 2, "after the JSON value");
    check_error("1.5.3", 1, 4, "after the JSON value");
    check_error("1e400", 1, 1, "out of range");
    check_error("[-1e400]", 1, 2, "out of range");
    check_error("123456789e999999999999999999999", 1, 1, "out of range");
}

TEST_CASE("bad string contents are rejected")
{
    check_error("\"a\x01\"", 1, 3, "unescaped control character 0x01");
    check_error("\"\t\"", 1, 2, "unescaped control character 0x09");
    check_error("\"line\nbreak\"", 1, 6, "unescaped control character 0x0a");
    check_error(R"("\x")", 1, 2, "invalid escape");
    check_error(R"("\'")", 1, 2, "invalid escape");
    check_error(R"("\U0041")", 1, 2, "invalid escape");
    check_error(R"("\u12")", 1, 6, "4 hex digits");
    check_error(R"("\u12G4")", 1, 6, "4 hex digits");
    check_error("\"\\", 1, 3, "end of input");
    // Surrogates must come as a high/low pair of escapes.
    check_error(R"("\ud800")", 1, 2, "lone high surrogate");
    check_error(R"("\ud800x")", 1, 2, "lone high surrogate");
    check_error(R"("\udc00")", 1, 2, "lone low surrogate");
    check_error(R"("\ud800\u0041")", 1, 2, "not followed by a low surrogate");
    check_error(R"("\ud800\ud800")", 1, 2, "not followed by a low surrogate");
    check_error(R"("\ud800\u00")", 1, 12, "4 hex digits");
}

TEST_CASE("ill-formed UTF-8 in strings is rejected")
{
    const char* bad[] = {
        "\"\xC0\xAF\"",             // overlong '/'
        "\"\xC1\xBF\"",             // overlong
        "\"\xE0\x80\xAF\"",         // overlong 3-byte
        "\"\xF0\x80\x80\xAF\"",     // overlong 4-byte
        "\"\xED\xA0\x80\"",         // encoded surrogate U+D800
        "\"\xED\xBF\xBF\"",         // encoded surrogate U+DFFF
        "\"\xF4\x90\x80\x80\"",     // U+110000
        "\"\xF5\x80\x80\x80\"",
        "\"\xFF\"",
        "\"\x80\"",                 // stray continuation
        "\"\xE2\x82\"",             // truncated before the quote
        "\"\xC3\"",
    };
    for (const char* text : bad) {
        json::ParseError err = rejected(text);
        CAPTURE(text);
        CHECK(err.column == 2);
        CHECK(err.reason.find("UTF-8") != std::string::npos);
    }
    check_error("\"ok\xE2\x82", 1, 4, "truncated UTF-8");
    check_error("\xC3\xA9", 1, 1, "byte 0xc3");  // outside a string
}

TEST_CASE("error positions count lines and bytes")
{
    check_error("{\n  \"a\": 1,\n  \"b\": [1, 2, 3]\n  \"c\": 3\n}", 4, 3,
                "expected ',' or '}' after object member");
    // Columns count bytes: the two bytes of U+00E9 take two columns.
    check_error("[\"\xC3\xA9\" x]", 1, 7, "expected ',' or ']'");
    check_error("\r\n\r\n  [1,,2]", 3, 6, "unexpected ','");
    json::ParseError e;
    e.line = 3;
    e.column = 17;
    e.reason = "expected ',' or '}' after object member";
    CHECK(e.to_string() == "line 3, column 17: expected ',' or '}' after object member");
}

TEST_CASE("a failed parse leaves the output untouched")
{
    Value v("keep");
    json::ParseError err;
    CHECK_FALSE(json::parse("[1, 2", v, err));
    CHECK(v == Value("keep"));
    CHECK(json::parse("[1, 2]", v, err));
    CHECK(v.as_array().size() == 2);
}

// --- Limits -------------------------------------------------------------

TEST_CASE("nesting depth is limited")
{
    std::string ok = std::string(256, '[') + std::string(256, ']');
    CHECK(accepts(ok));
    std::string deep = std::string(257, '[') + std::string(257, ']');
    check_error(deep, 1, 257, "nesting deeper than 256 levels");
    std::string objs;
    for (int i = 0; i < 257; ++i) objs += "{\"a\":";
    check_error(objs, 1, 1 + 256 * 5, "nesting deeper than 256");

    json::ParseOptions opt;
    opt.max_depth = 2;
    Value v;
    json::ParseError err;
    CHECK(json::parse("[[1],{\"a\":1},[]]", v, err, opt));
    CHECK_FALSE(json::parse("[{\"a\":[]}]", v, err, opt));
    CHECK_FALSE(json::parse("[[[1]]]", v, err, opt));
    CHECK(err.column == 3);
    opt.max_depth = 0;
    CHECK(json::parse("1", v, err, opt));
    CHECK_FALSE(json::parse("[]", v, err, opt));
}

TEST_CASE("the number of values is limited when asked")
{
    json::ParseOptions opt;
    opt.max_values = 4;  // the array and three elements, or an object and three members
    Value v;
    json::ParseError err;
    CHECK(json::parse("[1,[],\"x\"]", v, err, opt));
    CHECK(json::parse("{\"a\":1,\"b\":{},\"c\":null}", v, err, opt));
    CHECK_FALSE(json::parse("[1,2,3,4]", v, err, opt));
    CHECK(err.reason == "more than 4 values");
    CHECK(err.column == 8);
    CHECK(err.too_many_values);
    CHECK_FALSE(json::parse("[1,", v, err, opt));  // bad JSON: not the limit
    CHECK_FALSE(err.too_many_values);
    CHECK_FALSE(json::parse("[[[[[]]]]]", v, err, opt));
    opt.max_values = 1;
    CHECK(json::parse("\"only\"", v, err, opt));
    CHECK(json::parse("[]", v, err, opt));
    CHECK_FALSE(json::parse("[0]", v, err, opt));
}

TEST_CASE("10 MB of '[' is a depth error, not a crash")
{
    std::string text(10u << 20, '[');
    check_error(text, 1, 257, "nesting deeper than 256");
    // Even with the depth limit lifted, the parser uses heap, not stack.
    json::ParseOptions opt;
    opt.max_depth = text.size();
    json::ParseError err = rejected(text, opt);
    CHECK(err.column == text.size() + 1);
    CHECK(err.reason.find("end of input") != std::string::npos);
}

TEST_CASE("input size is limited")
{
    json::ParseOptions opt;
    opt.max_size = 8;
    Value v;
    json::ParseError err;
    CHECK(json::parse("[1,2,3] ", v, err, opt));
    CHECK_FALSE(json::parse("[1,2,3]  ", v, err, opt));
    CHECK(err.line == 1);
    CHECK(err.column == 1);
    CHECK(err.reason.find("more than the limit of 8") != std::string::npos);
}

// --- Writing ------------------------------------------------------------

TEST_CASE("write is compact")
{
    CHECK(json::write(Value()) == "null");
    CHECK(json::write(Value(true)) == "true");
    CHECK(json::write(Value(false)) == "false");
    CHECK(json::write(Value(-42)) == "-42");
    CHECK(json::write(Value(std::numeric_limits<int64_t>::min())) == "-9223372036854775808");
    CHECK(json::write(Value::array()) == "[]");
    CHECK(json::write(Value::object()) == "{}");
    CHECK(json::write(parsed(" { \"a\" : [ 1 , 2.5 , \"x\" , null ] , \"b\" : { } } ")) ==
          R"({"a":[1,2.5,"x",null],"b":{}})");
    std::string out = "prefix:";
    json::write(Value(1), out);
    CHECK(out == "prefix:1");
}

TEST_CASE("write escapes strings")
{
    CHECK(json::write(Value("\"\\/")) == R"("\"\\/")");
    CHECK(json::write(Value("\b\f\n\r\t")) == R"("\b\f\n\r\t")");
    CHECK(json::write(Value(std::string("\0\x01\x1f\x7f", 4))) == "\"\\u0000\\u0001\\u001f\x7f\"");
    // ASCII out: every character past U+007F as \uXXXX, a pair past U+FFFF.
    CHECK(json::write(Value("caf\xC3\xA9")) == R"("caf\u00e9")");
    CHECK(json::write(Value("\xE2\x82\xAC\xEF\xBF\xBF\xC2\x80")) == R"("\u20ac\uffff\u0080")");
    CHECK(json::write(Value("\xF0\x9F\x98\x80\xF4\x8F\xBF\xBF\xF0\x90\x80\x80")) ==
          R"("\ud83d\ude00\udbff\udfff\ud800\udc00")");
    CHECK(parsed(json::write(Value("\xF0\x9F\x98\x80 caf\xC3\xA9"))).as_string() ==
          "\xF0\x9F\x98\x80 caf\xC3\xA9");
    for (int c = 0; c < 0x20; ++c) {
        std::string s(1, static_cast<char>(c));
        std::string w = json::write(Value(s));
        CAPTURE(c);
        CHECK(w.size() >= 4);
        CHECK(parsed(w).as_string() == s);
    }
    // Escapes at every position relative to the 8-byte scan.
    for (size_t len = 1; len < 20; ++len) {
        for (size_t at = 0; at < len; ++at) {
            std::string s(len, 'a');
            s[at] = '"';
            std::string want = "\"" + std::string(at, 'a') + "\\\"" + std::string(len - at - 1, 'a') + "\"";
            REQUIRE(json::write(Value(s)) == want);
        }
    }
    std::string q;
    json::append_quoted(q, "a\"b");
    CHECK(q == R"("a\"b")");
}

namespace {

// JSON escaping one character at a time, written apart from
// json/write.cpp: the model the word-at-a-time (and 16-byte) loops must
// agree with.  ASCII out: past U+007F, \uXXXX (a surrogate pair past
// U+FFFF), computed here from the code point; an ill-formed sequence's
// maximal subpart (json::utf8_prefix) is one \ufffd.
std::string model_escape(std::string_view s)
{
    std::string o;
    char b[16];
    for (size_t i = 0; i < s.size();) {
        auto c = static_cast<unsigned char>(s[i]);
        if (c >= 0x80) {
            size_t need;
            size_t good = json::utf8_prefix(reinterpret_cast<const unsigned char*>(s.data() + i),
                                            s.size() - i, need);
            if (good != need) {
                o += "\\ufffd";
                i += good > 0 ? good : 1;
                continue;
            }
            uint32_t cp = need == 2 ? c & 0x1F : need == 3 ? c & 0x0F : c & 0x07;
            for (size_t k = 1; k < need; ++k) cp = cp << 6 | (static_cast<unsigned char>(s[i + k]) & 0x3F);
            if (cp > 0xFFFF)
                std::snprintf(b, sizeof b, "\\u%04x\\u%04x", unsigned(0xD800 + ((cp - 0x10000) >> 10)),
                              unsigned(0xDC00 + ((cp - 0x10000) & 0x3FF)));
            else
                std::snprintf(b, sizeof b, "\\u%04x", unsigned(cp));
            o += b;
            i += need;
            continue;
        }
        ++i;
        switch (c) {
        case '"': o += "\\\""; break;
        case '\\': o += "\\\\"; break;
        case '\b': o += "\\b"; break;
        case '\f': o += "\\f"; break;
        case '\n': o += "\\n"; break;
        case '\r': o += "\\r"; break;
        case '\t': o += "\\t"; break;
        default:
            if (c < 0x20) {
                std::snprintf(b, sizeof b, "\\u%04x", c);
                o += b;
            } else {
                o.push_back(static_cast<char>(c));
            }
        }
    }
    return o;
}

// Both escapers on s, against the model: append_escaped writes \ufffd
// for an ill-formed part (its input should be valid);
// append_escaped_utf8_prefix stops where valid_utf8_prefix does and
// escapes what comes before.
void check_escapers(const std::string& s)
{
    CAPTURE(s);
    std::string out = "pre";
    json::append_escaped(out, s);
    REQUIRE(out == "pre" + model_escape(s));
    size_t valid = json::valid_utf8_prefix(s);
    std::string fused = "pre";
    size_t took = json::append_escaped_utf8_prefix(fused, s);
    REQUIRE(took == valid);
    REQUIRE(fused == "pre" + model_escape(s.substr(0, valid)));
}

}  // namespace

TEST_CASE("escapers agree with a byte-at-a-time model at every offset of the 16-byte step")
{
    // Bytes to escape, bytes not to (space, DEL), valid sequences of 2-4
    // bytes, and ill-formed ones: cut, stray continuation, 0xFF,
    // surrogate, overlong, above U+10FFFF.
    const char* const pieces[] = {"\"", "\\", "\n", "\x01", "\x1f", " ", "\x7f",
                                  "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\xc3",
                                  "\x80", "\xff", "\xed\xa0\x80", "\xe0\x80\x80",
                                  "\xf4\x90\x80\x80"};
    for (const char* piece : pieces) {
        for (size_t len = 0; len <= 40; ++len) {
            for (size_t at = 0; at <= len; ++at) {
                std::string s(len, 'a');
                s.insert(at, piece);
                check_escapers(s);
                // and a second flagged byte further on
                if (at + 3 <= s.size()) {
                    s.insert(s.size() - (len - at) / 2, "\t");
                    check_escapers(s);
                }
            }
        }
    }
}

TEST_CASE("escapers agree with the model on random bytes")
{
    std::mt19937 rng(12345);
    const char specials[] = "\"\\\n\t\r\x01\x1f \x7f";
    const char* const wide[] = {"\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80"};
    for (int i = 0; i < 5000; ++i) {
        size_t len = rng() % 100;
        std::string s;
        for (size_t k = 0; k < len; ++k) {
            unsigned r = rng() % 100;
            if (r < 60) s.push_back(static_cast<char>('a' + rng() % 26));
            else if (r < 75) s.push_back(specials[rng() % (sizeof specials - 1)]);
            else if (r < 90) s += wide[rng() % 3];
            else s.push_back(static_cast<char>(0x80 + rng() % 128));
        }
        check_escapers(s);
    }
}

TEST_CASE("lone surrogate escapes become U+FFFD when asked, as Node reads them")
{
    json::ParseOptions opt;
    opt.lone_surrogates_as_replacement = true;
    const std::string R = "\xEF\xBF\xBD";
    struct {
        const char* in;
        std::string want;
    } cases[] = {
        {R"("\ud800")", R},
        {R"("a\ud800b")", "a" + R + "b"},
        {R"("\udc00")", R},
        {R"("\ud800\u0041")", R + "A"},
        {R"("\ud800\ud800")", R + R},
        {R"("\ud800\ud83d\ude00")", R + "\xF0\x9F\x98\x80"},  // lone high, then a pair
        {R"("\ud83d\ude00")", "\xF0\x9F\x98\x80"},               // a pair is still a pair
        {R"("\udc00\udc00")", R + R},
    };
    for (const auto& c : cases) {
        CAPTURE(c.in);
        Value v;
        json::ParseError e;
        REQUIRE(json::parse(c.in, v, e, opt));
        CHECK(v.as_string() == c.want);
        // Off (the default): still an error.
        if (c.want.find(R) != std::string::npos) CHECK_FALSE(json::parse(c.in, v, e));
    }
    Value v;
    json::ParseError e;
    CHECK_FALSE(json::parse(R"("\ud800\u00")", v, e, opt));  // not 4 hex digits
    CHECK_FALSE(json::parse(R"("\ud800\uZZZZ")", v, e, opt));
}

TEST_CASE("write doubles: shortest form that reads back as a double")
{
    CHECK(json::write(Value(1.0)) == "1.0");
    CHECK(json::write(Value(-0.0)) == "-0.0");
    CHECK(json::write(Value(0.1)) == "0.1");
    CHECK(json::write(Value(1e308)) == "1e+308");
    CHECK(json::write(Value(5e-324)) == "5e-324");
    CHECK(json::write(Value(2.5)) == "2.5");
    CHECK(json::write(Value(123456.0)) == "123456.0");
    CHECK(json::write(Value(std::nan(""))) == "null");
    CHECK(json::write(Value(std::numeric_limits<double>::infinity())) == "null");
    CHECK(json::write(Value(-std::numeric_limits<double>::infinity())) == "null");
}

TEST_CASE("round trips keep numbers exact")
{
    const double doubles[] = {-0.0, 0.0, 1e308, 0.1, 5e-324, 9007199254740994.0,
                              std::numeric_limits<double>::max(),
                              std::numeric_limits<double>::min(), -1.5e-7, 1e21, 1e22};
    for (double d : doubles) {
        CAPTURE(d);
        Value back = parsed(json::write(Value(d)));
        REQUIRE(back.is_double());
        CHECK(back.as_double() == d);
        CHECK(std::signbit(back.as_double()) == std::signbit(d));
    }
    const int64_t ints[] = {0, -1, 9007199254740993, -9007199254740993,
                            std::numeric_limits<int64_t>::max(),
                            std::numeric_limits<int64_t>::min()};
    for (int64_t i : ints) {
        CAPTURE(i);
        Value back = parsed(json::write(Value(i)));
        REQUIRE(back.is_int());
        CHECK(back.as_int() == i);
    }
}

TEST_CASE("round trip of a string with every escape and many code points")
{
    std::string s;
    for (int c = 0; c < 0x80; ++c) s.push_back(static_cast<char>(c));
    s += "\xC2\x80\xDF\xBF\xE0\xA0\x80\xED\x9F\xBF\xEE\x80\x80\xEF\xBF\xBF";
    s += "\xF0\x90\x80\x80\xF4\x8F\xBF\xBF";
    std::string w = json::write(Value(s));
    CHECK(parsed(w).as_string() == s);
    CHECK(json::write(parsed(w)) == w);
}

namespace {

std::string random_string(std::mt19937& rng)
{
    std::string s;
    size_t n = rng() % 12;
    for (size_t i = 0; i < n; ++i) {
        uint32_t cp;
        switch (rng() % 4) {
        case 0: cp = rng() % 0x20; break;      // control characters
        case 1: cp = 0x20 + rng() % 0x60; break;
        case 2: cp = rng() % 0x10000; break;
        default: cp = 0x10000 + rng() % 0x100000; break;
        }
        if (cp >= 0xD800 && cp <= 0xDFFF) cp = '"';
        char b[4];
        if (cp < 0x80) { s.push_back(static_cast<char>(cp)); continue; }
        if (cp < 0x800) {
            b[0] = static_cast<char>(0xC0 | (cp >> 6));
            b[1] = static_cast<char>(0x80 | (cp & 0x3F));
            s.append(b, 2);
        } else if (cp < 0x10000) {
            b[0] = static_cast<char>(0xE0 | (cp >> 12));
            b[1] = static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            b[2] = static_cast<char>(0x80 | (cp & 0x3F));
            s.append(b, 3);
        } else {
            b[0] = static_cast<char>(0xF0 | (cp >> 18));
            b[1] = static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
            b[2] = static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            b[3] = static_cast<char>(0x80 | (cp & 0x3F));
            s.append(b, 4);
        }
    }
    return s;
}

Value random_value(std::mt19937& rng, int depth)
{
    unsigned kind = rng() % (depth > 0 ? 8 : 6);
    switch (kind) {
    case 0: return Value();
    case 1: return Value(rng() % 2 == 0);
    case 2: return Value(static_cast<int64_t>(std::mt19937_64(rng())()));
    case 3: {
        double d;
        do {
            uint64_t bits = std::mt19937_64(rng())();
            std::memcpy(&d, &bits, sizeof d);
        } while (!std::isfinite(d));
        return Value(d);
    }
    case 4: return Value(static_cast<double>(static_cast<int>(rng() % 2001) - 1000) / 8);
    case 5: return Value(random_string(rng));
    case 6: {
        Value a = Value::array();
        for (size_t n = rng() % 6; n > 0; --n) a.push_back(random_value(rng, depth - 1));
        return a;
    }
    default: {
        Value o = Value::object();
        for (size_t n = rng() % 6; n > 0; --n) o.set(random_string(rng), random_value(rng, depth - 1));
        return o;
    }
    }
}

}  // namespace

TEST_CASE("random trees survive write then parse")
{
    std::mt19937 rng(8259);
    for (int iter = 0; iter < 2000; ++iter) {
        Value v = random_value(rng, 5);
        std::string text = json::write(v);
        Value back;
        json::ParseError err;
        CAPTURE(iter);
        CAPTURE(text);
        REQUIRE_MESSAGE(json::parse(text, back, err), err.to_string());
        REQUIRE(back == v);
        REQUIRE(json::write(back) == text);  // canonical: a fixed point
    }
}

TEST_CASE("randomly mutated documents never crash the parser")
{
    // Accept or reject, never crash (run under ASan/UBSan by make check
    // SAN=1); whatever is accepted must write and read back unchanged.
    // Offline, 5000 documents mutated this way (ASCII only) got the same
    // accept/reject verdict from this parser and from Node's JSON.parse.
    const std::string seeds[] = {
        R"({"a":[1,2.5,-3e2,true,false,null],"b":{"c":"d\n\t\"x\u00e9"},"e":[]})",
        R"([0,-0,1.0e+5,"s",{"k":{}},"\ud83d\ude00"])",
        "\"caf\xC3\xA9 \xF0\x9F\x98\x80\"",
    };
    const char alphabet[] = "{}[],:\"\\ 0123456789.-+eEtrufalsnu\t\n/'x\x80\xC3\xED\xF4";
    std::mt19937 rng(1234);
    for (int iter = 0; iter < 20000; ++iter) {
        std::string s = seeds[rng() % 3];
        for (int m = 1 + static_cast<int>(rng() % 3); m > 0; --m) {
            size_t pos = rng() % (s.size() + 1);
            char c = alphabet[rng() % (sizeof alphabet - 1)];
            switch (rng() % 3) {
            case 0: if (pos < s.size()) s.erase(pos, 1); break;
            case 1: s.insert(pos, 1, c); break;
            default: if (pos < s.size()) s[pos] = c; break;
            }
        }
        Value v;
        json::ParseError err;
        if (!json::parse(s, v, err)) {
            REQUIRE(err.line >= 1);
            REQUIRE(err.column >= 1);
            REQUIRE(err.column <= s.size() + 1);
            continue;
        }
        std::string w = json::write(v);
        Value back;
        CAPTURE(s);
        REQUIRE(json::parse(w, back, err));
        REQUIRE(json::write(back) == w);
    }
}
