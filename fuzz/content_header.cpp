// decode_content_header (class, weight, body size, basic properties).
//
// Properties: never crashes; what decodes encodes to as many bytes as the
// input (less a headers table skipped for its depth), decodes again to
// equal fields, and encodes to the same bytes.
#include <string>

#include "amqp/methods.hpp"
#include "fuzz/fuzz.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view payload = fuzz::as_view(data, size);
    amqp::ContentHeader h;
    std::string why;
    if (amqp::decode_content_header(payload, h, &why) != amqp::DecodeStatus::Ok) {
        FUZZ_CHECK(!why.empty());
        return 0;
    }
    std::string once;
    FUZZ_CHECK(amqp::encode_content_header(h, once));
    FUZZ_CHECK(once.size() + h.headers_skipped == payload.size());

    amqp::ContentHeader again;
    FUZZ_CHECK(amqp::decode_content_header(once, again) == amqp::DecodeStatus::Ok);
    FUZZ_CHECK(again.class_id == h.class_id);
    FUZZ_CHECK(again.weight == h.weight);
    FUZZ_CHECK(again.body_size == h.body_size);
    FUZZ_CHECK(again.properties == h.properties);

    std::string twice;
    FUZZ_CHECK(amqp::encode_content_header(again, twice));
    FUZZ_CHECK(twice == once);
    return 0;
}
