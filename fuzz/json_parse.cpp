// json::parse on arbitrary bytes.
//
// Properties: never crashes; what is accepted writes to valid UTF-8 that
// parses again to an equal value, and writing that value gives the same
// text (write is a fixed point after one round).  A document that fails
// reports a position inside (or just past) the input.  The same with lone
// surrogate escapes read as U+FFFD (ParseOptions).
#include <string>

#include "fuzz/fuzz.hpp"
#include "json/json.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view text = fuzz::as_view(data, size);
    json::Value v;
    json::ParseError err;
    // Lone surrogate escapes as U+FFFD (what the agent asks for requests):
    // accepts a superset, gives valid UTF-8 that parses strictly, and
    // agrees with the strict parse wherever that one accepts.
    json::ParseOptions lenient;
    lenient.lone_surrogates_as_replacement = true;
    json::Value lv;
    json::ParseError lerr;
    bool lenient_ok = json::parse(text, lv, lerr, lenient);
    if (lenient_ok) {
        std::string w = json::write(lv);
        FUZZ_CHECK(json::is_valid_utf8(w));
        json::Value strict;
        FUZZ_CHECK(json::parse(w, strict, lerr));
    }
    if (!json::parse(text, v, err)) {
        FUZZ_CHECK(!err.reason.empty());
        FUZZ_CHECK(err.line >= 1 && err.column >= 1);
        FUZZ_CHECK(err.line <= size + 1 && err.column <= size + 1);
        FUZZ_CHECK(v.is_null());  // out is left unchanged on failure
        return 0;
    }
    FUZZ_CHECK(lenient_ok && lv == v);
    std::string once = json::write(v);
    FUZZ_CHECK(json::is_valid_utf8(once));

    json::Value again;
    json::ParseError err2;
    FUZZ_CHECK(json::parse(once, again, err2));
    FUZZ_CHECK(again == v);
    FUZZ_CHECK(again.type() == v.type());

    std::string twice = json::write(again);
    FUZZ_CHECK(twice == once);
    return 0;
}
