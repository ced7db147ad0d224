// AMQP 0-9-1 wire primitives: a bounds-checked Reader over a byte span and
// a Writer appending to a std::string.  Field tables follow RabbitMQ's
// errata (the type letters below), not the 0-9-1 PDF.
//
// Every Reader call checks the remaining length before touching a byte and
// never throws.  The first failure is sticky: later calls fail too and
// status() keeps the first reason, so a decoder may read a whole method and
// check once at the end.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

namespace amqp {

enum class WireStatus {
    Ok,
    Truncated,      // a field runs past the end of its frame/table
    BadFieldType,   // unknown field-value type letter
    TooDeep,        // tables/arrays nested beyond kMaxTableDepth
    TooLong,        // shortstr over 255 bytes (writer side)
};
const char* to_string(WireStatus s);

// Nested tables/arrays beyond this depth are refused: recursion on hostile
// input must be bounded.
constexpr int kMaxTableDepth = 32;

enum class FieldType : char {
    Bool = 't', Int8 = 'b', UInt8 = 'B', Int16 = 's', UInt16 = 'u',
    Int32 = 'I', UInt32 = 'i', Int64 = 'l', Float = 'f', Double = 'd',
    Decimal = 'D', LongString = 'S', Array = 'A', Timestamp = 'T',
    Table = 'F', Void = 'V', Bytes = 'x',
};

struct FieldValue;
struct TableEntry;
using Table = std::vector<TableEntry>;       // order as on the wire
using FieldArray = std::vector<FieldValue>;

// One field value.  Only the member that matches `type` is meaningful:
//   Bool -> boolean; Int8/16/32/64 -> i; UInt8/16/32, Timestamp -> u;
//   Float -> f; Double -> d; Decimal -> decimal_scale + u (the uint32 value);
//   LongString, Bytes -> bytes; Table -> table; Array -> array; Void -> none.
struct FieldValue {
    FieldType type = FieldType::Void;
    bool boolean = false;
    int64_t i = 0;
    uint64_t u = 0;
    float f = 0;
    double d = 0;
    uint8_t decimal_scale = 0;
    std::string bytes;
    Table table;
    FieldArray array;

    static FieldValue make_bool(bool v);
    static FieldValue make_int(FieldType t, int64_t v);     // Int8..Int64
    static FieldValue make_uint(FieldType t, uint64_t v);   // UInt8..UInt32, Timestamp
    static FieldValue make_string(std::string v);           // 'S'
    static FieldValue make_table(Table v);
    static FieldValue make_array(FieldArray v);
};

struct TableEntry {
    std::string name;
    FieldValue value;
};

// Returns the first entry called `name`, or nullptr.
const FieldValue* table_find(const Table& t, std::string_view name);

bool operator==(const FieldValue& a, const FieldValue& b);
inline bool operator!=(const FieldValue& a, const FieldValue& b) { return !(a == b); }
bool operator==(const TableEntry& a, const TableEntry& b);

class Reader {
public:
    explicit Reader(std::string_view buf, int depth = 0)
        : p_(buf.data()), end_(buf.data() + buf.size()), depth_(depth) {}

    WireStatus u8(uint8_t& v);
    WireStatus u16(uint16_t& v);
    WireStatus u32(uint32_t& v);
    WireStatus u64(uint64_t& v);
    WireStatus shortstr(std::string& v);
    WireStatus longstr(std::string& v);
    WireStatus timestamp(uint64_t& v) { return u64(v); }
    // Reads one octet of packed bits, least significant bit first, into the
    // given flags (at most 8).
    WireStatus bits(std::initializer_list<bool*> flags);
    WireStatus table(Table& v);
    WireStatus field_array(FieldArray& v);
    WireStatus field_value(FieldValue& v);
    // Takes the next n bytes as a view into the buffer.
    WireStatus bytes(size_t n, std::string_view& v);

    size_t remaining() const { return size_t(end_ - p_); }
    bool at_end() const { return p_ == end_; }
    WireStatus status() const { return status_; }
    bool ok() const { return status_ == WireStatus::Ok; }

private:
    // Reads a table or array: a long size, then elements until that many
    // bytes are used up, each by read_one(sub) on a Reader one level
    // deeper that spans exactly those bytes.
    template <class ReadOne> WireStatus nested(ReadOne&& read_one);
    WireStatus fail(WireStatus s) {
        if (status_ == WireStatus::Ok) status_ = s;
        return status_;
    }
    bool need(size_t n) {
        if (status_ != WireStatus::Ok) return false;
        if (remaining() < n) { fail(WireStatus::Truncated); return false; }
        return true;
    }

    const char* p_;
    const char* end_;
    int depth_;
    WireStatus status_ = WireStatus::Ok;
};

// Appends to a caller-owned string.  Writing cannot fail except for a
// shortstr over 255 bytes: the writer then records TooLong and writes the
// first 255 bytes, so the output stays well formed; callers that pass
// outside strings check status() and must not send such output (the
// encoders in methods.hpp drop it and report the refusal).
class Writer {
public:
    explicit Writer(std::string& out) : out_(out) {}
    void u8(uint8_t v) { out_.push_back(char(v)); }
    void u16(uint16_t v);
    void u32(uint32_t v);
    void u64(uint64_t v);
    void shortstr(std::string_view v);
    void longstr(std::string_view v);
    void timestamp(uint64_t v) { u64(v); }
    void bits(std::initializer_list<bool> flags);
    void table(const Table& v);
    void field_array(const FieldArray& v);
    void field_value(const FieldValue& v);
    void raw(std::string_view v) { out_.append(v.data(), v.size()); }

    WireStatus status() const { return status_; }
    std::string& out() { return out_; }

private:
    // Writes a long size placeholder, then write_all(), then patches the
    // size to what write_all() appended.
    template <class WriteAll> void nested(WriteAll&& write_all);

    std::string& out_;
    WireStatus status_ = WireStatus::Ok;
};

// Big-endian helpers for code that patches sizes in place.
inline void put_u32_at(std::string& s, size_t pos, uint32_t v) {
    s[pos] = char(v >> 24); s[pos + 1] = char(v >> 16);
    s[pos + 2] = char(v >> 8); s[pos + 3] = char(v);
}
inline uint16_t get_u16(const char* p) {
    return uint16_t((uint8_t(p[0]) << 8) | uint8_t(p[1]));
}
inline uint32_t get_u32(const char* p) {
    return (uint32_t(uint8_t(p[0])) << 24) | (uint32_t(uint8_t(p[1])) << 16) |
           (uint32_t(uint8_t(p[2])) << 8) | uint32_t(uint8_t(p[3]));
}

}  // namespace amqp
