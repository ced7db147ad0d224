#include <doctest/doctest.h>

#include <cmath>

#include "amqp/wire.hpp"
#include "tests/amqp_hex.hpp"

using namespace amqp;
using amqp_test::from_hex;
using amqp_test::to_hex;

TEST_CASE("wire: integers are big-endian and bounds-checked") {
    std::string buf = from_hex("01 0203 04050607 08090a0b0c0d0e0f");
    Reader r(buf);
    uint8_t a = 0; uint16_t b = 0; uint32_t c = 0; uint64_t d = 0;
    CHECK(r.u8(a) == WireStatus::Ok);
    CHECK(r.u16(b) == WireStatus::Ok);
    CHECK(r.u32(c) == WireStatus::Ok);
    CHECK(r.u64(d) == WireStatus::Ok);
    CHECK(a == 1);
    CHECK(b == 0x0203);
    CHECK(c == 0x04050607u);
    CHECK(d == 0x08090a0b0c0d0e0full);
    CHECK(r.at_end());
    CHECK(r.u8(a) == WireStatus::Truncated);
    // Sticky: the first failure stays.
    CHECK(r.status() == WireStatus::Truncated);
}

TEST_CASE("wire: strings refuse lengths past the end") {
    SUBCASE("shortstr") {
        std::string buf = from_hex("05 6162");
        Reader r(buf);
        std::string s;
        CHECK(r.shortstr(s) == WireStatus::Truncated);
    }
    SUBCASE("longstr with a 4 GiB length does not allocate") {
        std::string buf = from_hex("ffffffff 61");
        Reader r(buf);
        std::string s;
        CHECK(r.longstr(s) == WireStatus::Truncated);
        CHECK(s.empty());
    }
    SUBCASE("round trip") {
        std::string out;
        Writer w(out);
        w.shortstr("abc");
        w.longstr(std::string(300, 'z'));
        Reader r(out);
        std::string a, b;
        CHECK(r.shortstr(a) == WireStatus::Ok);
        CHECK(r.longstr(b) == WireStatus::Ok);
        CHECK(a == "abc");
        CHECK(b == std::string(300, 'z'));
        CHECK(r.at_end());
    }
    SUBCASE("an over-long shortstr is cut and flagged") {
        std::string out;
        Writer w(out);
        w.shortstr(std::string(300, 'a'));
        CHECK(w.status() == WireStatus::TooLong);
        CHECK(out.size() == 256);
    }
}

TEST_CASE("wire: packed bits, least significant first") {
    std::string out;
    Writer w(out);
    w.bits({true, false, true});
    CHECK(to_hex(out) == "05");
    Reader r(out);
    bool a = false, b = true, c = false;
    CHECK(r.bits({&a, &b, &c}) == WireStatus::Ok);
    CHECK(a);
    CHECK(!b);
    CHECK(c);
}

// A table holding every RabbitMQ field type, bytes written by hand from
// the errata's definitions.
static const char* kEveryTypeTable =
    "00000000"  // size, patched below
    "01 61 74 01"                          // a: t true
    "01 62 62 fe"                          // b: b -2
    "01 63 42 fe"                          // c: B 254
    "01 64 73 ff fe"                       // d: s -2
    "01 65 75 ff fe"                       // e: u 65534
    "01 66 49 ff ff ff fe"                 // f: I -2
    "01 67 69 ff ff ff fe"                 // g: i 4294967294
    "01 68 6c ff ff ff ff ff ff ff fe"     // h: l -2
    "01 69 66 3f c0 00 00"                 // i: f 1.5
    "01 6a 64 3f f8 00 00 00 00 00 00"     // j: d 1.5
    "01 6b 44 02 00 00 30 39"              // k: D 123.45
    "01 6c 53 00 00 00 02 68 69"           // l: S "hi"
    "01 6d 41 00 00 00 04 62 07 74 00"     // m: A [b 7, t false]
    "01 6e 54 00 00 00 00 65 53 f1 00"     // n: T 1700000000
    "01 6f 46 00 00 00 07 01 7a 49 00 00"  // o: F {z: I ...} continued
    "00 01"                                // ... = 1
    "01 70 56"                             // p: V
    "01 71 78 00 00 00 01 00";             // q: x "\0"

TEST_CASE("wire: every field type decodes and re-encodes identically") {
    std::string buf = from_hex(kEveryTypeTable);
    put_u32_at(buf, 0, uint32_t(buf.size() - 4));
    Reader r(buf);
    Table t;
    REQUIRE(r.table(t) == WireStatus::Ok);
    CHECK(r.at_end());
    REQUIRE(t.size() == 17);
    CHECK(table_find(t, "a")->boolean);
    CHECK(table_find(t, "b")->i == -2);
    CHECK(table_find(t, "c")->u == 254);
    CHECK(table_find(t, "d")->i == -2);
    CHECK(table_find(t, "e")->u == 65534);
    CHECK(table_find(t, "f")->i == -2);
    CHECK(table_find(t, "g")->u == 4294967294u);
    CHECK(table_find(t, "h")->i == -2);
    CHECK(table_find(t, "i")->f == 1.5f);
    CHECK(table_find(t, "j")->d == 1.5);
    CHECK(table_find(t, "k")->decimal_scale == 2);
    CHECK(table_find(t, "k")->u == 12345);
    CHECK(table_find(t, "l")->bytes == "hi");
    REQUIRE(table_find(t, "m")->array.size() == 2);
    CHECK(table_find(t, "m")->array[0].i == 7);
    CHECK(table_find(t, "m")->array[1].type == FieldType::Bool);
    CHECK(table_find(t, "n")->u == 1700000000u);
    CHECK(table_find(t, "o")->table.at(0).value.i == 1);
    CHECK(table_find(t, "p")->type == FieldType::Void);
    CHECK(table_find(t, "q")->bytes == std::string(1, '\0'));
    CHECK(table_find(t, "missing") == nullptr);

    std::string out;
    Writer(out).table(t);
    CHECK(to_hex(out) == to_hex(buf));
}

TEST_CASE("wire: unknown field type is an error, never skipped") {
    std::string buf = from_hex("00000008 01 61 5a 00 01 62 74 01");  // 'Z'
    Reader r(buf);
    Table t;
    CHECK(r.table(t) == WireStatus::BadFieldType);
}

TEST_CASE("wire: table size past the end, and entries past the table") {
    SUBCASE("declared size too big") {
        std::string buf = from_hex("00000010 01 61 74 01");
        Reader r(buf);
        Table t;
        CHECK(r.table(t) == WireStatus::Truncated);
    }
    SUBCASE("entry runs past the table's own size") {
        std::string buf = from_hex("00000004 01 61 49 00 00 00 01");
        Reader r(buf);
        Table t;
        CHECK(r.table(t) == WireStatus::Truncated);
    }
}

static std::string nested_tables(int depth) {
    // depth tables, each holding one entry "n" -> the next.
    std::string inner = from_hex("00000000");
    for (int i = 1; i < depth; i++) {
        std::string t = from_hex("00000000 01 6e 46") + inner;
        put_u32_at(t, 0, uint32_t(t.size() - 4));
        inner = t;
    }
    return inner;
}

TEST_CASE("wire: nesting depth is limited") {
    Table t;
    std::string ok = nested_tables(kMaxTableDepth);
    Reader r1(ok);
    CHECK(r1.table(t) == WireStatus::Ok);
    std::string deep = nested_tables(kMaxTableDepth + 1);
    Reader r2(deep);
    CHECK(r2.table(t) == WireStatus::TooDeep);
    // Arrays count too.
    std::string arr = from_hex("00000000");
    for (int i = 0; i < kMaxTableDepth + 1; i++) {
        std::string a = from_hex("00000000 41") + arr;
        put_u32_at(a, 0, uint32_t(a.size() - 4));
        arr = a;
    }
    FieldArray fa;
    Reader r3(arr);
    CHECK(r3.field_array(fa) == WireStatus::TooDeep);
}

TEST_CASE("wire: every truncation of a valid table fails cleanly") {
    std::string buf = from_hex(kEveryTypeTable);
    put_u32_at(buf, 0, uint32_t(buf.size() - 4));
    for (size_t n = 0; n < buf.size(); n++) {
        std::string cut = buf.substr(0, n);
        Reader r(cut);
        Table t;
        CHECK(r.table(t) == WireStatus::Truncated);
    }
}
