// decode_content_header (class, weight, body size, basic properties).
//
// Properties: never crashes; only a payload shorter than its fixed part
// fails; what decodes encodes to as many bytes as the input less what
// decoding skipped, decodes again to equal fields, and encodes to the same
// bytes.
#include <string>

#include "amqp/methods.hpp"
#include "fuzz/fuzz.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view payload = fuzz::as_view(data, size);
    amqp::ContentHeader h;
    std::string why;
    if (amqp::decode_content_header(payload, h, &why) != amqp::DecodeStatus::Ok) {
        FUZZ_CHECK(!why.empty());
        FUZZ_CHECK(payload.size() < 14);
        return 0;
    }
    std::string once;
    FUZZ_CHECK(amqp::encode_content_header(h, once));
    FUZZ_CHECK(once.size() + h.skipped == payload.size());

    amqp::ContentHeader again;
    FUZZ_CHECK(amqp::decode_content_header(once, again) == amqp::DecodeStatus::Ok);
    FUZZ_CHECK(again.skipped == 0);
    FUZZ_CHECK(again.class_id == h.class_id);
    FUZZ_CHECK(again.weight == h.weight);
    FUZZ_CHECK(again.body_size == h.body_size);
    FUZZ_CHECK(again.properties == h.properties);

    std::string twice;
    FUZZ_CHECK(amqp::encode_content_header(again, twice));
    FUZZ_CHECK(twice == once);
    return 0;
}
