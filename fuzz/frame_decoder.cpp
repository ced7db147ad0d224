// FrameParser fed the input in chunks whose sizes the input chooses.
//
// Input: [frame_max selector][chunk seed][stream...].  Properties:
// - never crashes, never allocates beyond frame_max for one frame;
// - the frames found, re-encoded, are exactly the bytes they came from;
// - chunked feeding finds the same frames and the same error as feeding
//   the whole stream at once;
// - no payload is larger than frame_max allows.
#include <string>

#include "amqp/frame.hpp"
#include "fuzz/fuzz.hpp"

namespace {

struct Outcome {
    std::string frames;     // every frame found, re-encoded
    bool error = false;
    std::string error_text;
    size_t buffered = 0;
};

Outcome run(std::string_view stream, uint32_t frame_max, fuzz::Chunker* chunker) {
    amqp::FrameParser parser(frame_max);
    Outcome o;
    while (!stream.empty() && !o.error) {
        size_t len = chunker ? std::min(chunker->next(), stream.size()) : stream.size();
        const char* p = stream.data();
        size_t n = len;
        for (;;) {
            amqp::FrameView f;
            amqp::FrameStatus s = parser.next(p, n, f);
            if (s == amqp::FrameStatus::NeedMore) {
                FUZZ_CHECK(n == 0);
                break;
            }
            if (s == amqp::FrameStatus::Error) {
                FUZZ_CHECK(parser.error_code() == amqp::kFrameError);
                o.error = true;
                o.error_text = parser.error_text();
                // Sticky: a later call fails the same way.
                FUZZ_CHECK(parser.next(p, n, f) == amqp::FrameStatus::Error);
                break;
            }
            FUZZ_CHECK(f.payload.size() + amqp::kFrameOverhead <= parser.frame_max());
            amqp::encode_frame(o.frames, f.type, f.channel, f.payload);
        }
        stream.remove_prefix(len);
    }
    o.buffered = parser.buffered();
    return o;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view in = fuzz::as_view(data, size);
    // 0 is "no limit" (clamped to 2^31 by the parser).
    static const uint32_t kFrameMax[4] = {4096, 131072, 1u << 20, 0};
    uint32_t frame_max = kFrameMax[fuzz::take_byte(in) & 3];
    fuzz::Chunker chunker(fuzz::take_byte(in));

    Outcome chunked = run(in, frame_max, &chunker);
    Outcome whole = run(in, frame_max, nullptr);

    FUZZ_CHECK(chunked.frames == whole.frames);
    FUZZ_CHECK(chunked.error == whole.error);
    FUZZ_CHECK(chunked.error_text == whole.error_text);
    FUZZ_CHECK(chunked.frames.size() <= in.size());
    FUZZ_CHECK(in.substr(0, chunked.frames.size()) == chunked.frames);
    if (!chunked.error) {
        // Whatever is not a complete frame is held, and nothing else.
        FUZZ_CHECK(chunked.buffered == in.size() - chunked.frames.size());
    }
    return 0;
}
