// Field tables, arrays and single field values through amqp::Reader.
//
// Input: [mode][bytes...]; mode % 3 picks table, field array or one field
// value.  Properties: never crashes; what reads writes back to exactly as
// many bytes as were read, reads back to an equal value, and writes back to
// the same bytes again; nesting never exceeds kMaxTableDepth.
#include <string>

#include "amqp/wire.hpp"
#include "fuzz/fuzz.hpp"

namespace {

int depth(const amqp::FieldValue& v);

int depth(const amqp::Table& t) {
    int d = 0;
    for (const amqp::TableEntry& e : t) d = std::max(d, depth(e.value));
    return d + 1;
}

int depth(const amqp::FieldArray& a) {
    int d = 0;
    for (const amqp::FieldValue& v : a) d = std::max(d, depth(v));
    return d + 1;
}

int depth(const amqp::FieldValue& v) {
    if (v.type == amqp::FieldType::Table) return depth(v.table);
    if (v.type == amqp::FieldType::Array) return depth(v.array);
    return 0;
}

template <class T, class ReadFn, class WriteFn>
void round_trip(std::string_view in, ReadFn read, WriteFn write) {
    amqp::Reader r(in);
    T v;
    amqp::WireStatus s = read(r, v);
    FUZZ_CHECK(s == r.status());
    if (s != amqp::WireStatus::Ok) {
        FUZZ_CHECK(s == amqp::WireStatus::Truncated || s == amqp::WireStatus::BadFieldType ||
                   s == amqp::WireStatus::TooDeep);
        return;
    }
    // A table or array counts as one level; the outermost one is level 1.
    FUZZ_CHECK(depth(v) <= amqp::kMaxTableDepth);
    size_t consumed = in.size() - r.remaining();

    std::string once;
    amqp::Writer w(once);
    write(w, v);
    FUZZ_CHECK(w.status() == amqp::WireStatus::Ok);
    FUZZ_CHECK(once.size() == consumed);

    amqp::Reader r2(once);
    T again;
    FUZZ_CHECK(read(r2, again) == amqp::WireStatus::Ok);
    FUZZ_CHECK(r2.at_end());
    FUZZ_CHECK(again == v);

    std::string twice;
    amqp::Writer w2(twice);
    write(w2, again);
    FUZZ_CHECK(twice == once);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view in = fuzz::as_view(data, size);
    switch (fuzz::take_byte(in) % 3) {
    case 0:
        round_trip<amqp::Table>(
            in, [](amqp::Reader& r, amqp::Table& t) { return r.table(t); },
            [](amqp::Writer& w, const amqp::Table& t) { w.table(t); });
        break;
    case 1:
        round_trip<amqp::FieldArray>(
            in, [](amqp::Reader& r, amqp::FieldArray& a) { return r.field_array(a); },
            [](amqp::Writer& w, const amqp::FieldArray& a) { w.field_array(a); });
        break;
    default:
        round_trip<amqp::FieldValue>(
            in, [](amqp::Reader& r, amqp::FieldValue& v) { return r.field_value(v); },
            [](amqp::Writer& w, const amqp::FieldValue& v) { w.field_value(v); });
        break;
    }
    return 0;
}
