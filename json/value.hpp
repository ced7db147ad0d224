// json::Value: one JSON value (null, bool, integer, double, string, array,
// object).  Objects keep their members in insertion order and hold each key
// at most once when built through set() or parse().
//
// Accessors never crash on a type mismatch, because values usually come
// from the network: the const as_*() accessors return a neutral value
// (false, 0, 0.0, an empty string/array/object) when the type differs, and
// the mutable ones first turn the value into an empty one of the requested
// type.  Callers that care check is_*() first.
#ifndef UR_JSON_VALUE_HPP
#define UR_JSON_VALUE_HPP

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace json {

class Value {
public:
    // The order matches the storage variant's alternatives.
    enum class Type { Null, Bool, Int, Double, String, Array, Object };
    using Array = std::vector<Value>;
    using Member = std::pair<std::string, Value>;
    using Object = std::vector<Member>;

    Value() = default;
    Value(std::nullptr_t) {}
    Value(bool b) : v_(b) {}
    Value(int i) : v_(static_cast<int64_t>(i)) {}
    Value(long i) : v_(static_cast<int64_t>(i)) {}
    Value(long long i) : v_(static_cast<int64_t>(i)) {}
    Value(unsigned i) : v_(static_cast<int64_t>(i)) {}
    // Unsigned values above INT64_MAX become doubles (JSON has one number
    // type; this keeps is_int() meaning "exact as int64").
    Value(unsigned long u);
    Value(unsigned long long u);
    Value(double d) : v_(d) {}
    Value(const char* s) : v_(std::string(s ? s : "")) {}
    Value(std::string s) : v_(std::move(s)) {}
    Value(std::string_view s) : v_(std::string(s)) {}
    Value(Array a) : v_(std::move(a)) {}
    Value(Object o) : v_(std::move(o)) {}

    static Value array() { return Value(Array{}); }
    static Value object() { return Value(Object{}); }

    Type type() const { return static_cast<Type>(v_.index()); }
    bool is_null() const { return type() == Type::Null; }
    bool is_bool() const { return type() == Type::Bool; }
    bool is_int() const { return type() == Type::Int; }
    bool is_double() const { return type() == Type::Double; }
    bool is_number() const { return is_int() || is_double(); }
    bool is_string() const { return type() == Type::String; }
    bool is_array() const { return type() == Type::Array; }
    bool is_object() const { return type() == Type::Object; }

    bool as_bool() const;
    // An Int as is; a Double that holds an integer within int64 range
    // converted exactly; anything else 0.
    int64_t as_int() const;
    // A Double as is, an Int converted (rounded if above 2^53); else 0.0.
    double as_double() const;
    const std::string& as_string() const;
    std::string& as_string();
    const Array& as_array() const;
    Array& as_array();
    const Object& as_object() const;
    Object& as_object();

    // The member's value, or nullptr if absent or this is not an object.
    // Linear in the number of members.
    const Value* find(std::string_view key) const;
    Value* find(std::string_view key);
    // Replaces an existing key's value in place, else appends the member.
    // A non-object is first turned into an empty object.  Returns the
    // stored value.
    Value& set(std::string key, Value v);
    // Appends to an array; a non-array is first turned into an empty array.
    void push_back(Value v);

    // Deep equality.  Numbers compare by value across Int and Double (1 ==
    // 1.0; NaN equals nothing); objects compare as sets of members, so
    // member order does not matter.
    bool operator==(const Value& other) const;
    bool operator!=(const Value& other) const { return !(*this == other); }

private:
    std::variant<std::nullptr_t, bool, int64_t, double, std::string, Array,
                 Object>
        v_;
};

}  // namespace json

#endif
