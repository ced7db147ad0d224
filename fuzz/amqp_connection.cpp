// amqp::Connection fed arbitrary server bytes after a real handshake.
//
// Each run starts a connection, feeds it the handshake RabbitMQ 3.10 sent
// in the captured session (connection.start, tune, open-ok), issues the
// requests of that session (channel 1: confirm, declare, bind, qos, three
// publishes, consume; channel 2: passive declare), then feeds the input.
//
// Input: [chunk seed][time step][options][server bytes...].  Before each
// chunk the clock advances by time step * 40 ms and tick() runs when a
// deadline passed; options bit 0 picks frame_max 4096 (as captured) or
// 131072 (the agent's default).  Deliveries are acked as the agent does.
//
// Properties: never crashes; at most one Closed event and nothing after
// it; is_closed() agrees; everything the client writes is a well-formed
// frame within the negotiated frame_max whose method or content header
// decodes; a connection still open at the end closes within the close
// timeout once close() is called.
#include <string>

#include "amqp/connection.hpp"
#include "fuzz/fuzz.hpp"

namespace {

const char* const kSession[] = {
#include "tests/vectors/rabbitmq_session.inc"
};

std::string from_hex(const char* hex) {
    auto nib = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
    std::string out;
    for (; hex[0] && hex[1]; hex += 2) out.push_back(char(nib(hex[0]) << 4 | nib(hex[1])));
    return out;
}

// Checks and consumes the client's output: the protocol header once, then
// whole frames only.
class OutputChecker {
public:
    void check(amqp::Connection& c) {
        std::string_view out = c.output();
        if (!header_seen_) {
            FUZZ_CHECK(out.substr(0, amqp::kProtocolHeader.size()) == amqp::kProtocolHeader);
            out.remove_prefix(amqp::kProtocolHeader.size());
            header_seen_ = true;
        }
        if (c.frame_max() != 0) parser_.set_frame_max(c.frame_max());
        const char* p = out.data();
        size_t n = out.size();
        amqp::FrameView f;
        amqp::FrameStatus s;
        while ((s = parser_.next(p, n, f)) == amqp::FrameStatus::Frame) {
            if (c.channel_max() != 0) FUZZ_CHECK(f.channel <= c.channel_max());
            if (f.type == amqp::kFrameMethod) {
                amqp::Method m;
                FUZZ_CHECK(amqp::decode_method(f.payload, m) == amqp::DecodeStatus::Ok);
            } else if (f.type == amqp::kFrameHeader) {
                amqp::ContentHeader h;
                FUZZ_CHECK(amqp::decode_content_header(f.payload, h) == amqp::DecodeStatus::Ok);
            }
        }
        FUZZ_CHECK(s == amqp::FrameStatus::NeedMore);
        FUZZ_CHECK(parser_.buffered() == 0);
        c.consume_output(c.output().size());
    }

private:
    bool header_seen_ = false;
    amqp::FrameParser parser_{1u << 31};
};

struct Run {
    amqp::Connection conn;
    OutputChecker output;
    int closed_events = 0;
    uint64_t max_body_size;

    explicit Run(const amqp::ConnectionOptions& o) : conn(o), max_body_size(o.max_body_size) {}

    // Pops every event; acks deliveries like the agent.
    void drain() {
        amqp::Event e;
        while (conn.next_event(e)) {
            FUZZ_CHECK(closed_events == 0);  // nothing after Closed
            if (e.kind == amqp::EventKind::Closed) closed_events++;
            if (e.kind == amqp::EventKind::Delivery) {
                FUZZ_CHECK(e.body.size() <= max_body_size);
                conn.basic_ack(e.channel, e.delivery_tag);
            }
        }
        FUZZ_CHECK(conn.is_closed() == (closed_events == 1));
        output.check(conn);
    }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static const std::string handshake = from_hex(kSession[0]);
    std::string_view in = fuzz::as_view(data, size);
    fuzz::Chunker chunker(fuzz::take_byte(in));
    uint64_t step_ms = uint64_t(fuzz::take_byte(in)) * 40;
    uint8_t options = fuzz::take_byte(in);

    amqp::ConnectionOptions o;
    o.frame_max = options & 1 ? 131072 : 4096;
    o.max_body_size = 1u << 20;
    Run run(o);
    uint64_t now = 1000000;
    run.conn.start(now);
    run.conn.feed(handshake.data(), handshake.size(), now);
    run.drain();
    FUZZ_CHECK(run.conn.is_open());

    uint16_t ch = run.conn.open_channel();
    FUZZ_CHECK(ch == 1);
    run.conn.confirm_select(ch);
    run.conn.queue_declare(ch, "", false, false, true, true);
    run.conn.queue_bind(ch, "q", "amq.topic", "cap.#");
    run.conn.basic_qos(ch, 10);
    run.conn.basic_publish(ch, "amq.topic", "cap.x", {}, "hello");
    run.conn.basic_publish(ch, "amq.topic", "cap.big", {}, std::string(10000, 'a'));
    run.conn.basic_publish(ch, "amq.topic", "nowhere", {}, "lost", true);
    run.conn.basic_consume(ch, "q", "ctag1", false, false);
    uint16_t ch2 = run.conn.open_channel();
    FUZZ_CHECK(ch2 == 2);
    run.conn.queue_declare(ch2, "no-such-queue", true, false, false, false);
    run.drain();

    while (!in.empty()) {
        size_t n = std::min(chunker.next(), in.size());
        now += step_ms;
        if (now >= run.conn.next_deadline()) run.conn.tick(now);
        run.conn.feed(in.data(), n, now);
        in.remove_prefix(n);
        run.drain();
    }

    // However the bytes left it, the connection ends: close() and the
    // 5 s close timeout, or the heartbeat check, finish it.
    if (!run.conn.is_closed()) {
        run.conn.close(200, "fuzz done");
        run.drain();
        now += 6000;
        run.conn.tick(now);
        run.drain();
    }
    FUZZ_CHECK(run.conn.is_closed());
    run.conn.transport_closed(now);
    run.drain();
    FUZZ_CHECK(run.closed_events == 1);
    return 0;
}
