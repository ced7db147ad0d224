// Test helpers for amqp::Connection: decoding what it sent, feeding bytes
// in chunks, and a one-line summary of each event for comparisons.
#pragma once

#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "amqp/connection.hpp"
#include "tests/amqp_hex.hpp"

namespace amqp_test {

struct SentFrame {
    uint8_t type;
    uint16_t channel;
    std::string payload;
    amqp::Method method;  // for method frames
};

// Parses and consumes everything the connection queued for the socket
// (after the protocol header, if `skip_header`).
inline std::vector<SentFrame> take_output(amqp::Connection& c, bool skip_header = false) {
    std::string out = c.output();
    c.consume_output(out.size());
    if (skip_header) {
        REQUIRE(out.substr(0, 8) == std::string(amqp::kProtocolHeader));
        out.erase(0, 8);
    }
    std::vector<SentFrame> frames;
    amqp::FrameParser p(1u << 30);
    const char* data = out.data();
    size_t n = out.size();
    amqp::FrameView f;
    amqp::FrameStatus st;
    while ((st = p.next(data, n, f)) == amqp::FrameStatus::Frame) {
        SentFrame s{f.type, f.channel, std::string(f.payload), {}};
        if (f.type == amqp::kFrameMethod)
            REQUIRE(amqp::decode_method(f.payload, s.method) == amqp::DecodeStatus::Ok);
        frames.push_back(std::move(s));
    }
    REQUIRE(st == amqp::FrameStatus::NeedMore);
    REQUIRE(p.buffered() == 0);
    return frames;
}

inline std::string summary(const amqp::Event& e) {
    std::string s = amqp::to_string(e.kind);
    s += " ch=" + std::to_string(e.channel);
    if (e.delivery_tag) s += " tag=" + std::to_string(e.delivery_tag);
    if (e.redelivered) s += " redelivered";
    if (e.multiple) s += " multiple";
    if (!e.exchange.empty()) s += " ex=" + e.exchange;
    if (!e.routing_key.empty()) s += " rk=" + e.routing_key;
    if (!e.consumer_tag.empty()) s += " ctag=" + e.consumer_tag;
    if (!e.queue.empty()) s += " q=" + e.queue;
    if (e.kind == amqp::EventKind::Delivery || e.kind == amqp::EventKind::Returned) {
        s += " body=" + std::to_string(e.body.size());
        size_t h = std::hash<std::string>()(e.body);
        s += "#" + std::to_string(h);
        std::string props;
        amqp::ContentHeader hdr;
        hdr.properties = e.properties;
        amqp::encode_content_header(hdr, props);
        s += " props=" + to_hex(props);
    }
    if (e.code) s += " code=" + std::to_string(e.code);
    if (!e.text.empty()) s += " text=" + e.text;
    if (e.kind == amqp::EventKind::Closed) s += std::string(" reason=") + amqp::to_string(e.close_reason);
    return s;
}

inline std::vector<std::string> drain(amqp::Connection& c) {
    std::vector<std::string> out;
    amqp::Event e;
    while (c.next_event(e)) out.push_back(summary(e));
    return out;
}

// Feeds bytes in chunks of the given sizes (cycled).
inline void feed_chunked(amqp::Connection& c, const std::string& bytes,
                         const std::vector<size_t>& sizes, uint64_t now) {
    size_t pos = 0, i = 0;
    while (pos < bytes.size()) {
        size_t n = std::min(sizes[i++ % sizes.size()], bytes.size() - pos);
        c.feed(bytes.data() + pos, n, now);
        pos += n;
    }
}

inline void feed(amqp::Connection& c, const std::string& bytes, uint64_t now = 0) {
    c.feed(bytes.data(), bytes.size(), now);
}

inline std::string method_frame(uint16_t ch, const amqp::Method& m) {
    std::string out;
    amqp::encode_method_frame(out, ch, m);
    return out;
}

}  // namespace amqp_test
