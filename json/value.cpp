#include "json/value.hpp"

#include <cstdint>
#include <limits>

namespace json {

namespace {

const std::string kEmptyString;
const Value::Array kEmptyArray;
const Value::Object kEmptyObject;

// -2^63 and 2^63 are exact doubles; a double d with kMin <= d < kMax
// converts to int64 without overflow.
constexpr double kInt64Min = -9223372036854775808.0;
constexpr double kInt64End = 9223372036854775808.0;

bool double_to_int(double d, int64_t& out)
{
    if (!(d >= kInt64Min && d < kInt64End)) return false;  // also NaN
    int64_t i = static_cast<int64_t>(d);
    if (static_cast<double>(i) != d) return false;
    out = i;
    return true;
}

bool numbers_equal(const Value& a, const Value& b)
{
    if (a.is_int() && b.is_int()) return a.as_int() == b.as_int();
    if (a.is_double() && b.is_double()) return a.as_double() == b.as_double();
    // Mixed: equal only when the double holds exactly that integer.
    const Value& i = a.is_int() ? a : b;
    const Value& d = a.is_int() ? b : a;
    int64_t converted;
    return double_to_int(d.as_double(), converted) && converted == i.as_int();
}

bool objects_equal(const Value::Object& a, const Value::Object& b)
{
    if (a.size() != b.size()) return false;
    // Same order is the common case and linear; otherwise look each up.
    bool same_order = true;
    for (size_t i = 0; i < a.size() && same_order; ++i)
        same_order = a[i].first == b[i].first;
    if (same_order) {
        for (size_t i = 0; i < a.size(); ++i)
            if (a[i].second != b[i].second) return false;
        return true;
    }
    for (const auto& m : a) {
        const Value* other = nullptr;
        for (const auto& n : b)
            if (n.first == m.first) { other = &n.second; break; }
        if (!other || *other != m.second) return false;
    }
    return true;
}

}  // namespace

Value::Value(unsigned long u)
{
    if (u <= static_cast<unsigned long>(std::numeric_limits<int64_t>::max()))
        v_ = static_cast<int64_t>(u);
    else
        v_ = static_cast<double>(u);
}

Value::Value(unsigned long long u)
{
    if (u <= static_cast<unsigned long long>(
                 std::numeric_limits<int64_t>::max()))
        v_ = static_cast<int64_t>(u);
    else
        v_ = static_cast<double>(u);
}

bool Value::as_bool() const
{
    const bool* b = std::get_if<bool>(&v_);
    return b ? *b : false;
}

int64_t Value::as_int() const
{
    if (const int64_t* i = std::get_if<int64_t>(&v_)) return *i;
    int64_t out = 0;
    if (const double* d = std::get_if<double>(&v_)) double_to_int(*d, out);
    return out;
}

double Value::as_double() const
{
    if (const double* d = std::get_if<double>(&v_)) return *d;
    if (const int64_t* i = std::get_if<int64_t>(&v_))
        return static_cast<double>(*i);
    return 0.0;
}

const std::string& Value::as_string() const
{
    const std::string* s = std::get_if<std::string>(&v_);
    return s ? *s : kEmptyString;
}

std::string& Value::as_string()
{
    if (!is_string()) v_ = std::string();
    return std::get<std::string>(v_);
}

const Value::Array& Value::as_array() const
{
    const Array* a = std::get_if<Array>(&v_);
    return a ? *a : kEmptyArray;
}

Value::Array& Value::as_array()
{
    if (!is_array()) v_ = Array();
    return std::get<Array>(v_);
}

const Value::Object& Value::as_object() const
{
    const Object* o = std::get_if<Object>(&v_);
    return o ? *o : kEmptyObject;
}

Value::Object& Value::as_object()
{
    if (!is_object()) v_ = Object();
    return std::get<Object>(v_);
}

const Value* Value::find(std::string_view key) const
{
    const Object* o = std::get_if<Object>(&v_);
    if (!o) return nullptr;
    for (const auto& m : *o)
        if (m.first == key) return &m.second;
    return nullptr;
}

Value* Value::find(std::string_view key)
{
    return const_cast<Value*>(static_cast<const Value*>(this)->find(key));
}

Value& Value::set(std::string key, Value v)
{
    Object& o = as_object();
    for (auto& m : o) {
        if (m.first == key) {
            m.second = std::move(v);
            return m.second;
        }
    }
    o.emplace_back(std::move(key), std::move(v));
    return o.back().second;
}

void Value::push_back(Value v)
{
    as_array().push_back(std::move(v));
}

bool Value::operator==(const Value& other) const
{
    if (is_number() && other.is_number()) return numbers_equal(*this, other);
    if (type() != other.type()) return false;
    switch (type()) {
    case Type::Null: return true;
    case Type::Bool: return as_bool() == other.as_bool();
    case Type::String: return as_string() == other.as_string();
    case Type::Array: return as_array() == other.as_array();
    case Type::Object: return objects_equal(as_object(), other.as_object());
    case Type::Int:
    case Type::Double: break;  // handled above
    }
    return false;
}

}  // namespace json
