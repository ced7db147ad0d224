#include "amqp/wire.hpp"

#include <cstring>

namespace amqp {

const char* to_string(WireStatus s) {
    switch (s) {
    case WireStatus::Ok: return "ok";
    case WireStatus::Truncated: return "field runs past the end of its frame";
    case WireStatus::BadFieldType: return "unknown field table value type";
    case WireStatus::TooDeep: return "field tables nested too deep";
    case WireStatus::TooLong: return "short string longer than 255 bytes";
    }
    return "?";
}

FieldValue FieldValue::make_bool(bool v) {
    FieldValue f; f.type = FieldType::Bool; f.boolean = v; return f;
}
FieldValue FieldValue::make_int(FieldType t, int64_t v) {
    FieldValue f; f.type = t; f.i = v; return f;
}
FieldValue FieldValue::make_uint(FieldType t, uint64_t v) {
    FieldValue f; f.type = t; f.u = v; return f;
}
FieldValue FieldValue::make_string(std::string v) {
    FieldValue f; f.type = FieldType::LongString; f.bytes = std::move(v); return f;
}
FieldValue FieldValue::make_table(Table v) {
    FieldValue f; f.type = FieldType::Table; f.table = std::move(v); return f;
}
FieldValue FieldValue::make_array(FieldArray v) {
    FieldValue f; f.type = FieldType::Array; f.array = std::move(v); return f;
}

const FieldValue* table_find(const Table& t, std::string_view name) {
    for (const auto& e : t)
        if (e.name == name) return &e.value;
    return nullptr;
}

bool operator==(const FieldValue& a, const FieldValue& b) {
    if (a.type != b.type) return false;
    switch (a.type) {
    case FieldType::Bool: return a.boolean == b.boolean;
    case FieldType::Int8: case FieldType::Int16: case FieldType::Int32:
    case FieldType::Int64: return a.i == b.i;
    case FieldType::UInt8: case FieldType::UInt16: case FieldType::UInt32:
    case FieldType::Timestamp: return a.u == b.u;
    // Bitwise, so NaN equals itself and a round trip compares equal.
    case FieldType::Float: return std::memcmp(&a.f, &b.f, sizeof a.f) == 0;
    case FieldType::Double: return std::memcmp(&a.d, &b.d, sizeof a.d) == 0;
    case FieldType::Decimal: return a.decimal_scale == b.decimal_scale && a.u == b.u;
    case FieldType::LongString: case FieldType::Bytes: return a.bytes == b.bytes;
    case FieldType::Table: return a.table == b.table;
    case FieldType::Array: return a.array == b.array;
    case FieldType::Void: return true;
    }
    return false;
}

bool operator==(const TableEntry& a, const TableEntry& b) {
    return a.name == b.name && a.value == b.value;
}

// ---- Reader ----

WireStatus Reader::u8(uint8_t& v) {
    if (!need(1)) return status_;
    v = uint8_t(*p_++);
    return status_;
}

WireStatus Reader::u16(uint16_t& v) {
    if (!need(2)) return status_;
    v = get_u16(p_);
    p_ += 2;
    return status_;
}

WireStatus Reader::u32(uint32_t& v) {
    if (!need(4)) return status_;
    v = get_u32(p_);
    p_ += 4;
    return status_;
}

WireStatus Reader::u64(uint64_t& v) {
    if (!need(8)) return status_;
    v = (uint64_t(get_u32(p_)) << 32) | get_u32(p_ + 4);
    p_ += 8;
    return status_;
}

WireStatus Reader::bytes(size_t n, std::string_view& v) {
    if (!need(n)) return status_;
    v = std::string_view(p_, n);
    p_ += n;
    return status_;
}

WireStatus Reader::shortstr(std::string& v) {
    uint8_t n = 0;
    std::string_view s;
    if (u8(n) != WireStatus::Ok || bytes(n, s) != WireStatus::Ok) return status_;
    v.assign(s.data(), s.size());
    return status_;
}

WireStatus Reader::longstr(std::string& v) {
    uint32_t n = 0;
    std::string_view s;
    // bytes() checks n against what is left before anything is allocated.
    if (u32(n) != WireStatus::Ok || bytes(n, s) != WireStatus::Ok) return status_;
    v.assign(s.data(), s.size());
    return status_;
}

WireStatus Reader::bits(std::initializer_list<bool*> flags) {
    uint8_t octet = 0;
    if (u8(octet) != WireStatus::Ok) return status_;
    int i = 0;
    for (bool* f : flags) *f = (octet >> i++) & 1;
    return status_;
}

template <class ReadOne> WireStatus Reader::nested(ReadOne&& read_one) {
    uint32_t n = 0;
    std::string_view body;
    if (u32(n) != WireStatus::Ok || bytes(n, body) != WireStatus::Ok) return status_;
    if (depth_ >= kMaxTableDepth) return fail(WireStatus::TooDeep);
    Reader sub(body, depth_ + 1);
    while (!sub.at_end())
        if (read_one(sub) != WireStatus::Ok) return fail(sub.status());
    return status_;
}

WireStatus Reader::table(Table& v) {
    v.clear();
    return nested([&v](Reader& sub) {
        TableEntry e;
        if (sub.shortstr(e.name) == WireStatus::Ok && sub.field_value(e.value) == WireStatus::Ok)
            v.push_back(std::move(e));
        return sub.status();
    });
}

WireStatus Reader::field_array(FieldArray& v) {
    v.clear();
    return nested([&v](Reader& sub) {
        FieldValue e;
        if (sub.field_value(e) == WireStatus::Ok) v.push_back(std::move(e));
        return sub.status();
    });
}

WireStatus Reader::field_value(FieldValue& v) {
    uint8_t letter = 0;
    if (u8(letter) != WireStatus::Ok) return status_;
    v = FieldValue();
    v.type = FieldType(letter);
    uint8_t b8 = 0; uint16_t b16 = 0; uint32_t b32 = 0; uint64_t b64 = 0;
    switch (v.type) {
    case FieldType::Bool: u8(b8); v.boolean = b8 != 0; break;
    case FieldType::Int8: u8(b8); v.i = int8_t(b8); break;
    case FieldType::UInt8: u8(b8); v.u = b8; break;
    case FieldType::Int16: u16(b16); v.i = int16_t(b16); break;
    case FieldType::UInt16: u16(b16); v.u = b16; break;
    case FieldType::Int32: u32(b32); v.i = int32_t(b32); break;
    case FieldType::UInt32: u32(b32); v.u = b32; break;
    case FieldType::Int64: u64(b64); v.i = int64_t(b64); break;
    case FieldType::Timestamp: u64(v.u); break;
    case FieldType::Float: u32(b32); std::memcpy(&v.f, &b32, 4); break;
    case FieldType::Double: u64(b64); std::memcpy(&v.d, &b64, 8); break;
    case FieldType::Decimal: u8(v.decimal_scale); u32(b32); v.u = b32; break;
    case FieldType::LongString: case FieldType::Bytes: longstr(v.bytes); break;
    case FieldType::Table: table(v.table); break;
    case FieldType::Array: field_array(v.array); break;
    case FieldType::Void: break;
    default:
        // Never skip an unknown type: its length is unknown, so everything
        // after it would be misread.
        return fail(WireStatus::BadFieldType);
    }
    return status_;
}

// ---- Writer ----

void Writer::u16(uint16_t v) {
    char b[2] = {char(v >> 8), char(v)};
    out_.append(b, 2);
}

void Writer::u32(uint32_t v) {
    char b[4] = {char(v >> 24), char(v >> 16), char(v >> 8), char(v)};
    out_.append(b, 4);
}

void Writer::u64(uint64_t v) {
    u32(uint32_t(v >> 32));
    u32(uint32_t(v));
}

void Writer::shortstr(std::string_view v) {
    if (v.size() > 255) {
        if (status_ == WireStatus::Ok) status_ = WireStatus::TooLong;
        v = v.substr(0, 255);
    }
    u8(uint8_t(v.size()));
    raw(v);
}

void Writer::longstr(std::string_view v) {
    u32(uint32_t(v.size()));
    raw(v);
}

void Writer::bits(std::initializer_list<bool> flags) {
    uint8_t octet = 0;
    int i = 0;
    for (bool f : flags) octet |= uint8_t(f ? 1u << i : 0), i++;
    u8(octet);
}

template <class WriteAll> void Writer::nested(WriteAll&& write_all) {
    size_t at = out_.size();
    u32(0);
    write_all();
    put_u32_at(out_, at, uint32_t(out_.size() - at - 4));
}

void Writer::table(const Table& v) {
    nested([&] {
        for (const auto& e : v) {
            shortstr(e.name);
            field_value(e.value);
        }
    });
}

void Writer::field_array(const FieldArray& v) {
    nested([&] {
        for (const auto& e : v) field_value(e);
    });
}

void Writer::field_value(const FieldValue& v) {
    u8(uint8_t(v.type));
    uint32_t b32 = 0; uint64_t b64 = 0;
    switch (v.type) {
    case FieldType::Bool: u8(v.boolean ? 1 : 0); break;
    case FieldType::Int8: u8(uint8_t(v.i)); break;
    case FieldType::UInt8: u8(uint8_t(v.u)); break;
    case FieldType::Int16: u16(uint16_t(v.i)); break;
    case FieldType::UInt16: u16(uint16_t(v.u)); break;
    case FieldType::Int32: u32(uint32_t(v.i)); break;
    case FieldType::UInt32: u32(uint32_t(v.u)); break;
    case FieldType::Int64: u64(uint64_t(v.i)); break;
    case FieldType::Timestamp: u64(v.u); break;
    case FieldType::Float: std::memcpy(&b32, &v.f, 4); u32(b32); break;
    case FieldType::Double: std::memcpy(&b64, &v.d, 8); u64(b64); break;
    case FieldType::Decimal: u8(v.decimal_scale); u32(uint32_t(v.u)); break;
    case FieldType::LongString: case FieldType::Bytes: longstr(v.bytes); break;
    case FieldType::Table: table(v.table); break;
    case FieldType::Array: field_array(v.array); break;
    case FieldType::Void: break;
    }
}

}  // namespace amqp
