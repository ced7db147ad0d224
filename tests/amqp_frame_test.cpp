#include <doctest/doctest.h>

#include <random>
#include <vector>

#include "amqp/frame.hpp"
#include "tests/amqp_hex.hpp"

using namespace amqp;
using amqp_test::from_hex;
using amqp_test::pika;
using amqp_test::to_hex;

namespace {

struct Parsed {
    uint8_t type;
    uint16_t channel;
    std::string payload;
};

// Feeds `bytes` in chunks of the given sizes (cycled) and collects frames;
// stops at the first error, which it returns (0 if none).
uint16_t parse_chunked(FrameParser& p, const std::string& bytes, const std::vector<size_t>& sizes,
                       std::vector<Parsed>& out) {
    size_t pos = 0, i = 0;
    while (pos < bytes.size()) {
        size_t n = std::min(sizes[i++ % sizes.size()], bytes.size() - pos);
        const char* data = bytes.data() + pos;
        size_t left = n;
        for (;;) {
            FrameView f;
            FrameStatus st = p.next(data, left, f);
            if (st == FrameStatus::Error) return p.error_code();
            if (st == FrameStatus::NeedMore) break;
            out.push_back({f.type, f.channel, std::string(f.payload)});
        }
        CHECK(left == 0);
        pos += n;
    }
    return 0;
}

std::string session() {
    return pika("connection_tune") + pika("channel_open") + pika("basic_deliver") +
           pika("header_all_props") + pika("body_hello") + pika("heartbeat");
}

}  // namespace

TEST_CASE("frame: pika frames parse whatever the chunking") {
    std::string bytes = session();
    std::vector<Parsed> whole;
    FrameParser p0(131072);
    REQUIRE(parse_chunked(p0, bytes, {bytes.size()}, whole) == 0);
    REQUIRE(whole.size() == 6);
    CHECK(whole[0].type == kFrameMethod);
    CHECK(whole[0].channel == 0);
    CHECK(to_hex(whole[0].payload) == "000a001e07ff00020000003c");
    CHECK(whole[1].channel == 1);
    CHECK(whole[3].type == kFrameHeader);
    CHECK(whole[4].type == kFrameBody);
    CHECK(whole[4].payload == "hello");
    CHECK(whole[5].type == kFrameHeartbeat);
    CHECK(whole[5].payload.empty());

    std::vector<std::vector<size_t>> chunkings = {{1}, {2}, {3, 7}, {7}, {8}, {13, 1, 100}};
    std::mt19937 rng(12345);
    for (int i = 0; i < 20; i++) {
        std::vector<size_t> sizes;
        for (int j = 0; j < 10; j++) sizes.push_back(1 + rng() % 40);
        chunkings.push_back(sizes);
    }
    for (const auto& sizes : chunkings) {
        FrameParser p(131072);
        std::vector<Parsed> got;
        REQUIRE(parse_chunked(p, bytes, sizes, got) == 0);
        REQUIRE(got.size() == whole.size());
        for (size_t k = 0; k < got.size(); k++) {
            CHECK(got[k].type == whole[k].type);
            CHECK(got[k].channel == whole[k].channel);
            CHECK(got[k].payload == whole[k].payload);
        }
        CHECK(p.buffered() == 0);
    }
}

TEST_CASE("frame: a truncated frame is just incomplete") {
    std::string bytes = pika("basic_deliver");
    for (size_t n = 0; n < bytes.size(); n++) {
        FrameParser p;
        const char* data = bytes.data();
        size_t left = n;
        FrameView f;
        CHECK(p.next(data, left, f) == FrameStatus::NeedMore);
        CHECK(left == 0);
    }
}

TEST_CASE("frame: bad frame-end is 501") {
    std::string bytes = pika("basic_ack");
    bytes.back() = '\xcd';
    for (size_t chunk : {size_t(1), bytes.size()}) {
        FrameParser p;
        std::vector<Parsed> got;
        CHECK(parse_chunked(p, bytes, {chunk}, got) == kFrameError);
        CHECK(p.error_text() == "bad frame-end octet");
        // Sticky.
        const char* data = bytes.data();
        size_t left = bytes.size();
        FrameView f;
        CHECK(p.next(data, left, f) == FrameStatus::Error);
    }
}

TEST_CASE("frame: unknown frame type is 501") {
    std::string bytes = from_hex("04 0001 00000000 ce");
    FrameParser p;
    std::vector<Parsed> got;
    CHECK(parse_chunked(p, bytes, {1}, got) == kFrameError);
}

TEST_CASE("frame: a protocol header sent back is not a frame") {
    // A server that does not speak 0-9-1 answers with its own header.
    std::string bytes = from_hex("414d5150 00 00 09 01");
    FrameParser p;
    std::vector<Parsed> got;
    CHECK(parse_chunked(p, bytes, {bytes.size()}, got) == kFrameError);
}

TEST_CASE("frame: heartbeat off channel 0 is 501") {
    std::string bytes = from_hex("08 0001 00000000 ce");
    FrameParser p;
    std::vector<Parsed> got;
    CHECK(parse_chunked(p, bytes, {bytes.size()}, got) == kFrameError);
}

TEST_CASE("frame: oversize frame refused from the header, before allocating") {
    // Only the 7 header bytes arrive; the declared 4 GiB size must be
    // refused at once, and nothing beyond the header buffered.
    std::string header = from_hex("03 0001 fffffff0");
    FrameParser p(131072);
    const char* data = header.data();
    size_t left = header.size();
    FrameView f;
    CHECK(p.next(data, left, f) == FrameStatus::Error);
    CHECK(p.error_code() == kFrameError);
    CHECK(p.buffered() <= kFrameHeaderSize);
    CHECK(p.error_text().find("frame_max") != std::string::npos);

    // Exactly frame_max is fine; one more byte is not.
    FrameParser q(4096);
    std::string ok = from_hex("03 0001 00000ff8");  // 4088 + 8 = 4096
    data = ok.data();
    left = ok.size();
    CHECK(q.next(data, left, f) == FrameStatus::NeedMore);
    FrameParser r(4096);
    std::string big = from_hex("03 0001 00000ff9");
    data = big.data();
    left = big.size();
    CHECK(r.next(data, left, f) == FrameStatus::Error);
}

TEST_CASE("frame: encoders match pika") {
    std::string out;
    encode_heartbeat(out);
    CHECK(to_hex(out) == to_hex(pika("heartbeat")));
    out.clear();
    encode_frame(out, kFrameBody, 1, "hello");
    CHECK(to_hex(out) == to_hex(pika("body_hello")));
}
