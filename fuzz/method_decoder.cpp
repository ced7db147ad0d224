// decode_method on arbitrary method-frame payloads.
//
// Properties: never crashes; what decodes re-encodes (encode_method reports
// no overlong shortstr, since decoded ones are at most 255 bytes) to bytes
// that decode again to a method of the same class and id and re-encode to
// the same bytes.  The first re-encoding may differ from the input only
// where the wire allows several spellings of one value (unused bits of a
// bit octet, a table boolean other than 0/1), hence the fixed point check.
// Encoding is deterministic, so equal bytes mean equal methods.
#include <string>

#include "amqp/frame.hpp"
#include "amqp/methods.hpp"
#include "fuzz/fuzz.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view payload = fuzz::as_view(data, size);
    amqp::Method m;
    std::string why;
    amqp::DecodeStatus s = amqp::decode_method(payload, m, &why);
    if (s != amqp::DecodeStatus::Ok) {
        FUZZ_CHECK(!why.empty());
        uint16_t code = amqp::reply_code(s);
        FUZZ_CHECK(code == amqp::kSyntaxError || code == amqp::kCommandInvalid ||
                   code == amqp::kNotImplemented);
        return 0;
    }
    FUZZ_CHECK(amqp::method_name(m) != nullptr);

    std::string once;
    FUZZ_CHECK(amqp::encode_method(m, once));
    FUZZ_CHECK(once.size() == payload.size());

    amqp::Method again;
    FUZZ_CHECK(amqp::decode_method(once, again) == amqp::DecodeStatus::Ok);
    FUZZ_CHECK(again.index() == m.index());
    FUZZ_CHECK(amqp::method_class_id(again) == amqp::method_class_id(m));
    FUZZ_CHECK(amqp::method_method_id(again) == amqp::method_method_id(m));

    std::string twice;
    FUZZ_CHECK(amqp::encode_method(again, twice));
    FUZZ_CHECK(twice == once);

    // The whole frame form decodes through the same path.
    std::string frame;
    amqp::encode_method_frame(frame, 1, m);
    FUZZ_CHECK(frame.size() == once.size() + amqp::kFrameOverhead);
    FUZZ_CHECK(frame.compare(amqp::kFrameHeaderSize, once.size(), once) == 0);
    return 0;
}
