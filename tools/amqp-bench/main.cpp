// amqp-bench: throughput of the AMQP codec, without sockets.
//
//   build/amqp-bench [seconds-per-case [case]]
//
// Cases:
//   frames      FrameParser + decode_method/decode_content_header over a
//               stream of deliveries with 100-byte bodies (3 frames each)
//   deliveries  the same stream through amqp::Connection, events popped
//   body        one 16 MiB body (frame_max 131072) assembled by
//               amqp::Connection, MB/s of body bytes
// Input is fed in 64 KiB chunks, as a socket read would deliver it.
#include <time.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "amqp/connection.hpp"

using namespace amqp;

namespace {

double now_s() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return double(ts.tv_sec) + double(ts.tv_nsec) / 1e9;
}

constexpr size_t kChunk = 65536;

std::string deliveries(size_t count, size_t body_size) {
    std::string out;
    std::string body(body_size, 'x');
    BasicDeliver d;
    d.consumer_tag = "ur-agent";
    d.exchange = "ur.execute";
    d.routing_key = "ur.execute.44454c4c-3800-1058-8031-b6c04f4e3232";
    ContentHeader h;
    h.body_size = body.size();
    h.properties.content_type = "application/json";
    h.properties.correlation_id = "5e0c6e2c-7e4a-4b8e-9d3f-1a2b3c4d5e6f";
    h.properties.reply_to = "ur.oneachnode.reply";
    for (size_t i = 0; i < count; i++) {
        d.delivery_tag = i + 1;
        encode_method_frame(out, 1, d);
        encode_header_frame(out, 1, h);
        encode_body_frames(out, 1, body, 131072);
    }
    return out;
}

// A connection past the handshake with channel 1 open.
void open(Connection& c) {
    c.start(0);
    std::string in;
    encode_method_frame(in, 0, ConnectionStart{});
    ConnectionTune t;
    t.channel_max = 2047;
    t.frame_max = 131072;
    t.heartbeat = 0;
    encode_method_frame(in, 0, t);
    encode_method_frame(in, 0, ConnectionOpenOk{});
    c.feed(in.data(), in.size(), 0);
    c.open_channel();
    in.clear();
    encode_method_frame(in, 1, ChannelOpenOk{});
    c.feed(in.data(), in.size(), 0);
    Event e;
    while (c.next_event(e)) {}
    c.consume_output(c.output().size());
    if (!c.is_open()) {
        std::fprintf(stderr, "amqp-bench: handshake failed\n");
        std::exit(1);
    }
}

void bench_frames(double seconds) {
    std::string stream = deliveries(10000, 100);
    size_t frames = 0, rounds = 0;
    double t0 = now_s(), t;
    do {
        FrameParser p(131072);
        const char* data = stream.data();
        size_t left = stream.size();
        while (left > 0) {
            size_t n = std::min(left, kChunk);
            const char* chunk = data;
            size_t chunk_left = n;
            FrameView f;
            FrameStatus st;
            while ((st = p.next(chunk, chunk_left, f)) == FrameStatus::Frame) {
                if (f.type == kFrameMethod) {
                    Method m;
                    if (decode_method(f.payload, m) != DecodeStatus::Ok) std::abort();
                } else if (f.type == kFrameHeader) {
                    ContentHeader h;
                    if (decode_content_header(f.payload, h) != DecodeStatus::Ok) std::abort();
                }
                frames++;
            }
            if (st == FrameStatus::Error) std::abort();
            data += n;
            left -= n;
        }
        rounds++;
    } while ((t = now_s() - t0) < seconds);
    std::printf("frames:     %.2f M frames/s  (parse + decode, 100 B bodies, %zu frames in %.2f s)\n",
                double(frames) / t / 1e6, frames, t);
}

void bench_deliveries(double seconds) {
    std::string stream = deliveries(10000, 100);
    size_t messages = 0;
    double t0 = now_s(), t;
    do {
        Connection c(ConnectionOptions{});
        open(c);
        Event e;
        for (size_t pos = 0; pos < stream.size(); pos += kChunk) {
            c.feed(stream.data() + pos, std::min(kChunk, stream.size() - pos), 0);
            while (c.next_event(e)) messages += e.kind == EventKind::Delivery;
        }
        if (!c.is_open()) std::abort();
    } while ((t = now_s() - t0) < seconds);
    std::printf("deliveries: %.2f M frames/s  (%.2f M messages/s through Connection, %zu messages in %.2f s)\n",
                3.0 * double(messages) / t / 1e6, double(messages) / t / 1e6, messages, t);
}

void bench_body(double seconds) {
    const size_t size = 16u << 20;
    std::string stream = deliveries(1, size);
    size_t bodies = 0;
    double t0 = now_s(), t;
    do {
        Connection c(ConnectionOptions{});
        open(c);
        Event e;
        for (size_t pos = 0; pos < stream.size(); pos += kChunk)
            c.feed(stream.data() + pos, std::min(kChunk, stream.size() - pos), 0);
        if (!c.next_event(e) || e.body.size() != size) std::abort();
        bodies++;
    } while ((t = now_s() - t0) < seconds);
    std::printf("body:       %.0f MB/s  (16 MiB bodies assembled, %zu in %.2f s)\n",
                double(bodies) * double(size) / t / 1e6, bodies, t);
}

}  // namespace

int main(int argc, char** argv) {
    double seconds = argc > 1 ? std::atof(argv[1]) : 1.0;
    if (seconds <= 0) seconds = 1.0;
    std::string only = argc > 2 ? argv[2] : "";
    if (only.empty() || only == "frames") bench_frames(seconds);
    if (only.empty() || only == "deliveries") bench_deliveries(seconds);
    if (only.empty() || only == "body") bench_body(seconds);
    return 0;
}
