// Tests of tools/fake-broker: the AMQP server side, driven in-process by a
// raw client written here (frames parsed independently of amqp::FrameParser)
// and by Debian's python3-pika, plus every fault-injection command.
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <vector>
#include <string>
#include <thread>

#include "amqp/connection.hpp"
#include "amqp/frame.hpp"
#include "amqp/methods.hpp"
#include "tools/fake-broker/broker.hpp"
#include "tools/fake-broker/broker_impl.hpp"  // now_ms()
#include "tools/fake-broker/topic.hpp"

namespace {

using namespace amqp;

// A broker running on its own thread for the length of a test.
struct Running {
    fake::Broker broker;
    std::thread thread;
    explicit Running(fake::Options o = {}) : broker(o) {
        std::string err;
        REQUIRE(broker.listen(&err) == fake::Status::Ok);
        thread = std::thread([this] { broker.run(); });
    }
    ~Running() {
        broker.stop();
        thread.join();
    }
    std::string cmd(const std::string& line) { return broker.command(line); }
};

struct RawFrame {
    uint8_t type = 0;
    uint16_t channel = 0;
    std::string payload;
};

enum class Got { Frame, Eof, Timeout };

// A deliberately small blocking client: it writes whole frames and splits
// incoming bytes into frames by itself.
struct Client {
    int fd = -1;
    std::string in;
    uint32_t frame_max = 131072;

    explicit Client(uint16_t port) {
        fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa {};
        sa.sin_family = AF_INET;
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sa.sin_port = htons(port);
        if (connect(fd, reinterpret_cast<struct sockaddr*>(&sa), sizeof sa) != 0) {
            close(fd);
            fd = -1;
            return;
        }
        int one = 1;  // the handshake is several small writes: no Nagle delays
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    ~Client() {
        if (fd >= 0) close(fd);
    }
    bool ok() const { return fd >= 0; }

    void send_bytes(const std::string& b) {
        size_t at = 0;
        while (at < b.size()) {
            ssize_t n = ::send(fd, b.data() + at, b.size() - at, MSG_NOSIGNAL);
            if (n <= 0) return;
            at += size_t(n);
        }
    }
    void send_method(uint16_t ch, const Method& m) {
        std::string out;
        encode_method_frame(out, ch, m);
        send_bytes(out);
    }
    void publish(uint16_t ch, const std::string& ex, const std::string& key,
                 const std::string& body, bool mandatory = false) {
        std::string out;
        BasicPublish p;
        p.exchange = ex;
        p.routing_key = key;
        p.mandatory = mandatory;
        encode_method_frame(out, ch, p);
        ContentHeader h;
        h.body_size = body.size();
        h.properties.content_type = "application/json";
        encode_header_frame(out, ch, h);
        encode_body_frames(out, ch, body, frame_max);
        send_bytes(out);
    }

    Got next_frame(RawFrame& f, int timeout_ms = 3000, bool skip_heartbeats = true) {
        for (;;) {
            if (in.size() >= 7) {
                uint32_t size = get_u32(in.data() + 3);
                if (in.size() >= size + 8u) {
                    f.type = uint8_t(in[0]);
                    f.channel = get_u16(in.data() + 1);
                    f.payload = in.substr(7, size);
                    bool end_ok = uint8_t(in[7 + size]) == kFrameEnd;
                    in.erase(0, size + 8);
                    if (!end_ok) f.type = 0xFF;  // let the test see the bad frame-end
                    if (skip_heartbeats && f.type == kFrameHeartbeat) continue;
                    return Got::Frame;
                }
            }
            struct pollfd p = {fd, POLLIN, 0};
            if (poll(&p, 1, timeout_ms) <= 0) return Got::Timeout;
            char buf[65536];
            ssize_t n = recv(fd, buf, sizeof buf, 0);
            if (n <= 0) return Got::Eof;
            in.append(buf, size_t(n));
        }
    }
    // The next frame must be method T on channel ch.
    template <class T> bool expect(uint16_t ch, T* out = nullptr, int timeout_ms = 3000) {
        RawFrame f;
        if (next_frame(f, timeout_ms) != Got::Frame) return false;
        Method m;
        if (f.type != kFrameMethod || f.channel != ch ||
            decode_method(f.payload, m) != DecodeStatus::Ok || !std::holds_alternative<T>(m)) {
            MESSAGE("unexpected frame type " << int(f.type) << " on channel " << f.channel
                    << (f.type == kFrameMethod && decode_method(f.payload, m) == DecodeStatus::Ok
                            ? std::string(" ") + method_name(m) : std::string()));
            return false;
        }
        if (out) *out = std::get<T>(m);
        return true;
    }
    // Reads the content (header + bodies) after a deliver/return.
    bool content(std::string& body, ContentHeader* hdr = nullptr, size_t* frames = nullptr) {
        RawFrame f;
        if (next_frame(f) != Got::Frame || f.type != kFrameHeader) return false;
        ContentHeader h;
        if (decode_content_header(f.payload, h) != DecodeStatus::Ok) return false;
        body.clear();
        size_t n = 0;
        while (body.size() < h.body_size) {
            if (next_frame(f) != Got::Frame || f.type != kFrameBody) return false;
            if (f.payload.size() > frame_max - 8) return false;
            body += f.payload;
            n++;
        }
        if (hdr) *hdr = h;
        if (frames) *frames = n;
        return true;
    }
    bool handshake(uint16_t heartbeat = 0, uint32_t want_frame_max = 131072,
                   ConnectionStart* start_out = nullptr) {
        send_bytes(std::string(kProtocolHeader));
        ConnectionStart start;
        if (!expect<ConnectionStart>(0, &start)) return false;
        if (start_out) *start_out = start;
        ConnectionStartOk so;
        so.response = std::string("\0guest\0guest", 12);
        send_method(0, so);
        ConnectionTune tune;
        if (!expect<ConnectionTune>(0, &tune)) return false;
        frame_max = want_frame_max;
        send_method(0, ConnectionTuneOk{tune.channel_max, want_frame_max, heartbeat});
        send_method(0, ConnectionOpen{});
        return expect<ConnectionOpenOk>(0);
    }
    bool open_channel(uint16_t ch) {
        send_method(ch, ChannelOpen{});
        return expect<ChannelOpenOk>(ch);
    }
    // Declares, binds (to amq.topic with each key) and returns the queue name.
    std::string queue(uint16_t ch, const std::string& name, bool exclusive,
                      std::initializer_list<const char*> keys = {}, bool auto_delete = false) {
        QueueDeclare qd;
        qd.queue = name;
        qd.exclusive = exclusive;
        qd.auto_delete = auto_delete;
        send_method(ch, qd);
        QueueDeclareOk ok;
        if (!expect<QueueDeclareOk>(ch, &ok)) return "";
        for (const char* k : keys) {
            QueueBind b;
            b.queue = ok.queue;
            b.exchange = "amq.topic";
            b.routing_key = k;
            send_method(ch, b);
            if (!expect<QueueBindOk>(ch)) return "";
        }
        return ok.queue;
    }
    std::string consume(uint16_t ch, const std::string& q, bool no_ack = false) {
        BasicConsume c;
        c.queue = q;
        c.no_ack = no_ack;
        send_method(ch, c);
        BasicConsumeOk ok;
        return expect<BasicConsumeOk>(ch, &ok) ? ok.consumer_tag : "";
    }
    // The connection is closed by the peer (EOF) within the timeout, after
    // any frames still in flight.
    bool closed_by_peer(int timeout_ms = 3000) {
        RawFrame f;
        for (;;) {
            Got g = next_frame(f, timeout_ms);
            if (g == Got::Eof) return true;
            if (g == Got::Timeout) return false;
        }
    }
    // Expects connection.close with `code`, answers close-ok.
    bool closed_with(uint16_t code) {
        ConnectionClose cc;
        if (!expect<ConnectionClose>(0, &cc)) return false;
        send_method(0, ConnectionCloseOk{});
        if (cc.reply_code != code) MESSAGE("close " << cc.reply_code << " " << cc.reply_text);
        return cc.reply_code == code;
    }
};

std::string python() { return access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : ""; }

}  // namespace

TEST_CASE("topic_matches follows the AMQP topic rules") {
    using fake::topic_matches;
    CHECK(topic_matches("a.b.c", "a.b.c"));
    CHECK_FALSE(topic_matches("a.b.c", "a.b"));
    CHECK(topic_matches("a.*.c", "a.x.c"));
    CHECK_FALSE(topic_matches("a.*.c", "a.c"));
    CHECK_FALSE(topic_matches("a.*", "a.b.c"));
    CHECK(topic_matches("a.#", "a"));
    CHECK(topic_matches("a.#", "a.b.c"));
    CHECK(topic_matches("#", ""));
    CHECK(topic_matches("#", "x.y"));
    CHECK_FALSE(topic_matches("*", ""));
    CHECK(topic_matches("#.c", "c"));
    CHECK(topic_matches("a.#.c", "a.c"));
    CHECK(topic_matches("a.#.c", "a.b.b.c"));
    CHECK_FALSE(topic_matches("a.#.c", "a.b.d"));
    CHECK(topic_matches("ur.execute.u1.*", "ur.execute.u1.req42"));
    CHECK_FALSE(topic_matches("ur.execute.u1.*", "ur.execute.u2.req42"));
    CHECK(topic_matches("a..b", "a..b"));
    CHECK_FALSE(topic_matches("a.*.b", "a.b"));
    // Many '#' do not make matching explode.
    CHECK_FALSE(topic_matches("#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.#.z",
                              "a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a"));
}

TEST_CASE("fake broker: handshake offers what the agent expects") {
    Running r;
    Client c(r.broker.port());
    REQUIRE(c.ok());
    c.send_bytes(std::string(kProtocolHeader));
    ConnectionStart start;
    REQUIRE(c.expect<ConnectionStart>(0, &start));
    CHECK(start.mechanisms == "PLAIN");
    const FieldValue* caps = table_find(start.server_properties, "capabilities");
    REQUIRE(caps);
    for (const char* cap : {"publisher_confirms", "consumer_cancel_notify", "connection.blocked",
                            "authentication_failure_close"}) {
        const FieldValue* v = table_find(caps->table, cap);
        REQUIRE_MESSAGE(v, cap);
        CHECK(v->boolean);
    }
    ConnectionStartOk so;
    so.response = std::string("\0anyone\0anything", 16);
    c.send_method(0, so);
    ConnectionTune tune;
    REQUIRE(c.expect<ConnectionTune>(0, &tune));
    CHECK(tune.channel_max == 2047);
    CHECK(tune.frame_max == 131072);
    CHECK(tune.heartbeat == 60);
    c.send_method(0, ConnectionTuneOk{2047, 131072, 0});
    c.send_method(0, ConnectionOpen{});
    REQUIRE(c.expect<ConnectionOpenOk>(0));
    CHECK(r.cmd("connections") == "ok 1");
    c.send_method(0, ConnectionClose{200, "bye", 0, 0});
    CHECK(c.expect<ConnectionCloseOk>(0));
    CHECK(c.closed_by_peer());
}

TEST_CASE("fake broker: topic, direct and default routing, mandatory return, confirms") {
    Running r;
    Client c(r.broker.port());
    REQUIRE(c.handshake());
    REQUIRE(c.open_channel(1));
    std::string q = c.queue(1, "", true, {"ur.execute.u1.*", "ur.broadcast.#"});
    CHECK(q.rfind("amq.gen-", 0) == 0);
    QueueBind db;
    db.queue = q;
    db.exchange = "amq.direct";
    db.routing_key = "exact";
    c.send_method(1, db);
    REQUIRE(c.expect<QueueBindOk>(1));
    c.send_method(1, ConfirmSelect{});
    REQUIRE(c.expect<ConfirmSelectOk>(1));

    c.publish(1, "amq.topic", "ur.execute.u1.r1", "{\"n\":1}");
    BasicAck ack;
    REQUIRE(c.expect<BasicAck>(1, &ack));
    CHECK(ack.delivery_tag == 1);
    c.publish(1, "amq.topic", "ur.execute.u2.r1", "{\"n\":0}");  // not ours
    REQUIRE(c.expect<BasicAck>(1, &ack));
    c.publish(1, "amq.direct", "exact", "{\"n\":2}");
    REQUIRE(c.expect<BasicAck>(1, &ack));
    c.publish(1, "", q, "{\"n\":3}");
    REQUIRE(c.expect<BasicAck>(1, &ack));
    c.publish(1, "amq.topic", "ur.broadcast", "{\"n\":4}");
    REQUIRE(c.expect<BasicAck>(1, &ack));
    CHECK(ack.delivery_tag == 5);
    c.publish(1, "amq.topic", "nobody.home", "{}", true);
    BasicReturn ret;
    REQUIRE(c.expect<BasicReturn>(1, &ret));
    CHECK(ret.reply_code == 312);
    CHECK(ret.routing_key == "nobody.home");
    std::string body;
    REQUIRE(c.content(body));
    CHECK(body == "{}");
    REQUIRE(c.expect<BasicAck>(1, &ack));
    CHECK(ack.delivery_tag == 6);
    CHECK(r.cmd("queue " + q) == "ok ready=4 unacked=0 consumers=0");

    std::string tag = c.consume(1, q);
    for (int n = 1; n <= 4; n++) {
        BasicDeliver d;
        REQUIRE(c.expect<BasicDeliver>(1, &d));
        CHECK(d.consumer_tag == tag);
        CHECK(d.delivery_tag == uint64_t(n));
        CHECK_FALSE(d.redelivered);
        ContentHeader h;
        REQUIRE(c.content(body, &h));
        CHECK(body == "{\"n\":" + std::to_string(n) + "}");
        CHECK(h.properties.content_type == std::optional<std::string>("application/json"));
    }
    CHECK(r.cmd("queue " + q) == "ok ready=0 unacked=4 consumers=1");
    c.send_method(1, BasicAck{4, true});
    CHECK(r.cmd("queue " + q) == "ok ready=0 unacked=0 consumers=1");
    CHECK(r.cmd("messages ur.execute.#") == "ok 2");
    CHECK(r.cmd("messages #") == "ok 6");
    CHECK(r.cmd("last-message ur.execute.*.*") == "ok ur.execute.u2.r1 {\"n\":0}");
}

TEST_CASE("fake broker: bodies are split at frame_max - 8 and reassembled") {
    Running r;
    Client c(r.broker.port());
    REQUIRE(c.handshake(0, 4096));
    REQUIRE(c.open_channel(1));
    std::string q = c.queue(1, "big", false, {"big"});
    std::string big(300000, 'x');
    for (size_t i = 0; i < big.size(); i += 997) big[i] = char('a' + i % 26);
    c.publish(1, "amq.topic", "big", big);
    c.consume(1, q, true);
    REQUIRE(c.expect<BasicDeliver>(1));
    std::string body;
    size_t frames = 0;
    REQUIRE(c.content(body, nullptr, &frames));
    CHECK(body == big);
    CHECK(frames == (big.size() + 4087) / 4088);
}

TEST_CASE("fake broker: exclusive queues are locked to their connection and go with it") {
    Running r;
    Client a(r.broker.port()), b(r.broker.port());
    REQUIRE(a.handshake());
    REQUIRE(b.handshake());
    REQUIRE(a.open_channel(1));
    REQUIRE(b.open_channel(1));
    REQUIRE(a.queue(1, "ur.request.u1", true) == "ur.request.u1");
    QueueDeclare qd;
    qd.queue = "ur.request.u1";
    qd.exclusive = true;
    b.send_method(1, qd);
    ChannelClose cc;
    REQUIRE(b.expect<ChannelClose>(1, &cc));
    CHECK(cc.reply_code == 405);
    b.send_method(1, ChannelCloseOk{});
    REQUIRE(b.open_channel(1));
    BasicConsume bc;
    bc.queue = "ur.request.u1";
    b.send_method(1, bc);
    REQUIRE(b.expect<ChannelClose>(1, &cc));
    CHECK(cc.reply_code == 405);
    b.send_method(1, ChannelCloseOk{});

    // Passive declare of an absent queue: 404.
    REQUIRE(b.open_channel(2));
    qd.queue = "absent";
    qd.passive = true;
    b.send_method(2, qd);
    REQUIRE(b.expect<ChannelClose>(2, &cc));
    CHECK(cc.reply_code == 404);
    b.send_method(2, ChannelCloseOk{});

    close(a.fd);
    a.fd = -1;
    // Awaited, not slept: the broker notices the close on its next pass.
    CHECK(r.cmd("wait-queue-deleted ur.request.u1 5") == "ok");
    CHECK(r.cmd("connections") == "ok 1");
    REQUIRE(b.open_channel(3));
    CHECK(b.queue(3, "ur.request.u1", true) == "ur.request.u1");
}

TEST_CASE("fake broker: a real client (python3-pika) talks to it") {
    std::string py = python();
    if (py.empty() || access("tests/fake_broker_pika.py", R_OK) != 0) {
        MESSAGE("skipped: needs /usr/bin/python3 with python3-pika, run from the repo root");
        return;
    }
    if (system((py + " -c 'import pika' 2>/dev/null").c_str()) != 0) {
        MESSAGE("skipped: python3-pika is not installed (apt-get install python3-pika)");
        return;
    }
    Running r;
    std::string cmd = py + " tests/fake_broker_pika.py " + std::to_string(r.broker.port()) + " 2>&1";
    FILE* p = popen(cmd.c_str(), "r");
    REQUIRE(p);
    std::string out;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    int rc = pclose(p);
    INFO(out);
    CHECK(rc == 0);
    CHECK(out.find("PASS") != std::string::npos);
    CHECK(r.cmd("messages ur.#") == "ok 4");
}

namespace {

// A connected client with channel 1 open and a consumer on queue `q`
// (bound to amq.topic with key q).
struct Consuming {
    Client c;
    std::string tag;
    Consuming(uint16_t port, const std::string& q, bool no_ack = true, uint16_t prefetch = 0)
        : c(port) {
        REQUIRE(c.handshake());
        REQUIRE(c.open_channel(1));
        if (prefetch) {
            c.send_method(1, BasicQos{0, prefetch, false});
            REQUIRE(c.expect<BasicQosOk>(1));
        }
        REQUIRE(c.queue(1, q, false, {q.c_str()}) == q);
        tag = c.consume(1, q, no_ack);
        REQUIRE(!tag.empty());
    }
};

}  // namespace

TEST_CASE("fake broker: prefetch, ack, reject and requeue on close set redelivered") {
    Running r;
    Consuming a(r.broker.port(), "work", false, 1);
    CHECK(r.cmd("publish amq.topic work {\"n\":1}") == "ok routed 1");
    CHECK(r.cmd("publish amq.topic work {\"n\":2}") == "ok routed 1");
    BasicDeliver d;
    std::string body;
    REQUIRE(a.c.expect<BasicDeliver>(1, &d));
    REQUIRE(a.c.content(body));
    CHECK(body == "{\"n\":1}");
    CHECK(r.cmd("queue work") == "ok ready=1 unacked=1 consumers=1");  // prefetch 1 holds n=2
    a.c.send_method(1, BasicReject{d.delivery_tag, true});
    REQUIRE(a.c.expect<BasicDeliver>(1, &d));
    REQUIRE(a.c.content(body));
    CHECK(body == "{\"n\":1}");
    CHECK(d.redelivered);
    a.c.send_method(1, BasicAck{d.delivery_tag, false});
    REQUIRE(a.c.expect<BasicDeliver>(1, &d));
    REQUIRE(a.c.content(body));
    CHECK(body == "{\"n\":2}");
    CHECK_FALSE(d.redelivered);

    // The unacked n=2 goes back when its connection goes, marked redelivered.
    Client b(r.broker.port());
    REQUIRE(b.handshake());
    REQUIRE(b.open_channel(1));
    b.consume(1, "work", true);
    CHECK(r.cmd("wait-consumers work 2 5") == "ok");
    close(a.c.fd);
    a.c.fd = -1;
    REQUIRE(b.expect<BasicDeliver>(1, &d));
    REQUIRE(b.content(body));
    CHECK(body == "{\"n\":2}");
    CHECK(d.redelivered);

    // An unknown delivery tag is a channel error (406).
    b.send_method(1, BasicAck{99, false});
    ChannelClose cc;
    REQUIRE(b.expect<ChannelClose>(1, &cc));
    CHECK(cc.reply_code == 406);
}

TEST_CASE("fake broker: auto-delete queue goes with its last consumer") {
    Running r;
    Client c(r.broker.port());
    REQUIRE(c.handshake());
    REQUIRE(c.open_channel(1));
    REQUIRE(c.queue(1, "ur.ping.u1", false, {"ur.ping.u1"}, true) == "ur.ping.u1");
    std::string tag = c.consume(1, "ur.ping.u1");
    c.send_method(1, BasicCancel{tag, false});
    BasicCancelOk ok;
    REQUIRE(c.expect<BasicCancelOk>(1, &ok));
    CHECK(ok.consumer_tag == tag);
    CHECK(r.cmd("queue ur.ping.u1") == "error no such queue");
    CHECK(r.cmd("publish amq.topic ur.ping.u1 {}") == "ok routed 0");
}

TEST_CASE("fake broker: protocol violations close the connection with the right code") {
    Running r;
    SUBCASE("bad protocol header: the broker answers with its own and hangs up") {
        Client c(r.broker.port());
        c.send_bytes(std::string("AMQP\x00\x00\x09\x00", 8));
        RawFrame f;
        CHECK(c.next_frame(f) == Got::Eof);
        CHECK(c.in == std::string(kProtocolHeader));
    }
    SUBCASE("bad frame-end: 501") {
        Client c(r.broker.port());
        REQUIRE(c.handshake());
        c.send_bytes(std::string("\x08\x00\x00\x00\x00\x00\x00\x00", 8));
        ConnectionClose cc;
        REQUIRE(c.expect<ConnectionClose>(0, &cc));
        CHECK(cc.reply_code == 501);
        CHECK(c.closed_by_peer());
    }
    SUBCASE("method on a channel never opened: 504") {
        Client c(r.broker.port());
        REQUIRE(c.handshake());
        c.send_method(3, BasicQos{0, 1, false});
        CHECK(c.closed_with(504));
        CHECK(c.closed_by_peer());
    }
    SUBCASE("content header without basic.publish: 505") {
        Client c(r.broker.port());
        REQUIRE(c.handshake());
        REQUIRE(c.open_channel(1));
        std::string out;
        encode_header_frame(out, 1, ContentHeader{});
        c.send_bytes(out);
        CHECK(c.closed_with(505));
    }
    SUBCASE("a method in the middle of a content: 505") {
        Client c(r.broker.port());
        REQUIRE(c.handshake());
        REQUIRE(c.open_channel(1));
        c.send_method(1, BasicPublish{});
        c.send_method(1, BasicQos{});
        CHECK(c.closed_with(505));
    }
    SUBCASE("a method the codec does not know: 503") {
        Client c(r.broker.port());
        REQUIRE(c.handshake());
        REQUIRE(c.open_channel(1));
        c.send_bytes(std::string("\x01\x00\x01\x00\x00\x00\x05\x00\x3c\x00\x46\x00\xce", 13));
        CHECK(c.closed_with(503));
    }
    SUBCASE("a server method from the client: 503") {
        Client c(r.broker.port());
        REQUIRE(c.handshake());
        REQUIRE(c.open_channel(1));
        c.send_method(1, BasicDeliver{});
        CHECK(c.closed_with(503));
    }
    SUBCASE("frame_max below 4096 in tune-ok: 530") {
        Client c(r.broker.port());
        c.send_bytes(std::string(kProtocolHeader));
        REQUIRE(c.expect<ConnectionStart>(0));
        ConnectionStartOk so;
        so.response = std::string("\0u\0p", 4);
        c.send_method(0, so);
        REQUIRE(c.expect<ConnectionTune>(0));
        c.send_method(0, ConnectionTuneOk{0, 1024, 0});
        CHECK(c.closed_with(530));
    }
    CHECK(r.cmd("ping") == "ok pong");
}

TEST_CASE("fake broker: heartbeats are sent, and a silent client is dropped") {
    fake::Options o;
    o.heartbeat = 1;
    Running r(o);
    Client c(r.broker.port());
    REQUIRE(c.handshake(1));
    RawFrame f;
    REQUIRE(c.next_frame(f, 3000, false) == Got::Frame);
    CHECK(f.type == kFrameHeartbeat);
    // We never answer: within 2 intervals (+ slack) the broker hangs up.
    CHECK(c.closed_by_peer(4000));
    CHECK(r.cmd("connections") == "ok 0");
}

TEST_CASE("fault: drop-after N closes the TCP connection after N frames") {
    Running r;
    Consuming a(r.broker.port(), "q1");
    CHECK(r.cmd("drop-after 3") == "ok armed 1");
    r.cmd("publish amq.topic q1 {\"n\":1}");
    r.cmd("publish amq.topic q1 {\"n\":2}");
    std::string body;
    REQUIRE(a.c.expect<BasicDeliver>(1));
    REQUIRE(a.c.content(body));  // frames 2 and 3
    CHECK(body == "{\"n\":1}");
    RawFrame f;
    CHECK(a.c.next_frame(f) == Got::Eof);  // no connection.close, no 4th frame
}

TEST_CASE("fault: drop-now drops every client") {
    Running r;
    Client a(r.broker.port()), b(r.broker.port());
    REQUIRE(a.handshake());
    REQUIRE(b.handshake());
    CHECK(r.cmd("drop-now") == "ok dropped 2");
    CHECK(a.closed_by_peer());
    CHECK(b.closed_by_peer());
    CHECK(r.cmd("connections") == "ok 0");
}

TEST_CASE("fault: freeze stops all I/O for a while") {
    Running r;
    Client c(r.broker.port());
    REQUIRE(c.handshake());
    REQUIRE(c.open_channel(1));
    c.send_method(1, ConfirmSelect{});
    REQUIRE(c.expect<ConfirmSelectOk>(1));
    CHECK(r.cmd("freeze 1") == "ok frozen 1000ms");
    c.publish(1, "amq.topic", "k", "{}");
    RawFrame f;
    CHECK(c.next_frame(f, 500, false) == Got::Timeout);  // no ack, not even heartbeats
    CHECK(r.cmd("messages k") == "ok 0");                 // and nothing was read
    CHECK(c.expect<BasicAck>(1, nullptr, 3000));
    CHECK(r.cmd("messages k") == "ok 1");
}

TEST_CASE("fault: malformed sends a frame with a bad frame-end") {
    Running r;
    Client c(r.broker.port());
    REQUIRE(c.handshake());
    CHECK(r.cmd("malformed") == "ok sent 1");
    RawFrame f;
    REQUIRE(c.next_frame(f, 3000, false) == Got::Frame);
    CHECK(f.type == 0xFF);  // our marker for "frame-end octet was not 0xCE"
}

TEST_CASE("fault: close-connection and close-channel") {
    Running r;
    Consuming a(r.broker.port(), "q2", false);
    r.cmd("publish amq.topic q2 {}");
    REQUIRE(a.c.expect<BasicDeliver>(1));
    std::string body;
    REQUIRE(a.c.content(body));
    CHECK(r.cmd("close-channel 406 PRECONDITION_FAILED - test") == "ok closed 1");
    ChannelClose cc;
    REQUIRE(a.c.expect<ChannelClose>(1, &cc));
    CHECK(cc.reply_code == 406);
    CHECK(cc.reply_text == "PRECONDITION_FAILED - test");
    a.c.send_method(1, ChannelCloseOk{});
    CHECK(r.cmd("queue q2") == "ok ready=1 unacked=0 consumers=0");  // requeued

    CHECK(r.cmd("close-connection 320 CONNECTION_FORCED - broker forced connection closure") ==
          "ok closed 1");
    ConnectionClose conn_close;
    REQUIRE(a.c.expect<ConnectionClose>(0, &conn_close));
    CHECK(conn_close.reply_code == 320);
    CHECK(conn_close.reply_text == "CONNECTION_FORCED - broker forced connection closure");
    a.c.send_method(0, ConnectionCloseOk{});
    CHECK(a.c.closed_by_peer());
}

TEST_CASE("fault: cancel-consumers and delete-queue send basic.cancel") {
    Running r;
    Consuming a(r.broker.port(), "q3");
    CHECK(r.cmd("cancel-consumers") == "ok cancelled 1");
    BasicCancel bc;
    REQUIRE(a.c.expect<BasicCancel>(1, &bc));
    CHECK(bc.consumer_tag == a.tag);
    CHECK(r.cmd("queue q3") == "ok ready=0 unacked=0 consumers=0");

    std::string tag = a.c.consume(1, "q3");
    CHECK(r.cmd("delete-queue q3") == "ok deleted q3 0");
    REQUIRE(a.c.expect<BasicCancel>(1, &bc));
    CHECK(bc.consumer_tag == tag);
    CHECK(r.cmd("queue q3") == "error no such queue");
    CHECK(r.cmd("delete-queue q3") == "error no queue q3");
}

TEST_CASE("fault: refuse-login and lock-queue") {
    Running r;
    CHECK(r.cmd("refuse-login on") == "ok refusing logins");
    {
        Client c(r.broker.port());
        c.send_bytes(std::string(kProtocolHeader));
        REQUIRE(c.expect<ConnectionStart>(0));
        ConnectionStartOk so;
        so.response = std::string("\0guest\0guest", 12);
        c.send_method(0, so);
        CHECK(c.closed_with(403));
        CHECK(c.closed_by_peer());
    }
    CHECK(r.cmd("refuse-login off") == "ok accepting logins");
    Client c(r.broker.port());
    REQUIRE(c.handshake());
    REQUIRE(c.open_channel(1));
    CHECK(r.cmd("lock-queue ur.request.* on") == "ok 1 locked patterns");
    QueueDeclare qd;
    qd.queue = "ur.request.u1.mac";
    qd.exclusive = true;
    c.send_method(1, qd);
    ChannelClose cc;
    REQUIRE(c.expect<ChannelClose>(1, &cc));
    CHECK(cc.reply_code == 405);
    c.send_method(1, ChannelCloseOk{});
    CHECK(r.cmd("lock-queue ur.request.* off") == "ok 0 locked patterns");
    REQUIRE(c.open_channel(1));
    CHECK(c.queue(1, "ur.request.u1.mac", true) == "ur.request.u1.mac");
}

TEST_CASE("fault: confirm-delay holds publisher confirms") {
    Running r;
    Client c(r.broker.port());
    REQUIRE(c.handshake());
    REQUIRE(c.open_channel(1));
    c.send_method(1, ConfirmSelect{});
    REQUIRE(c.expect<ConfirmSelectOk>(1));
    CHECK(r.cmd("confirm-delay 600") == "ok confirm-delay 600");
    c.publish(1, "amq.topic", "k", "{}");
    RawFrame f;
    CHECK(c.next_frame(f, 300) == Got::Timeout);
    BasicAck ack;
    REQUIRE(c.expect<BasicAck>(1, &ack));
    CHECK(ack.delivery_tag == 1);
    CHECK(r.cmd("confirm-delay 0") == "ok confirm-delay 0");
    c.publish(1, "amq.topic", "k", "{}");
    REQUIRE(c.expect<BasicAck>(1, &ack, 1000));
    CHECK(ack.delivery_tag == 2);
}

TEST_CASE("fault: blocked stops publishes until unblocked") {
    Running r;
    Client c(r.broker.port());
    REQUIRE(c.handshake());
    REQUIRE(c.open_channel(1));
    CHECK(r.cmd("blocked on") == "ok blocked on");
    ConnectionBlocked b;
    REQUIRE(c.expect<ConnectionBlocked>(0, &b));
    CHECK(b.reason == "low on memory");
    c.publish(1, "amq.topic", "blocked.key", "{}");
    CHECK(r.cmd("wait-messages blocked.key 1 0.3").rfind("error timeout", 0) == 0);
    CHECK(r.cmd("blocked off") == "ok blocked off");
    REQUIRE(c.expect<ConnectionUnblocked>(0));
    CHECK(r.cmd("wait-messages blocked.key 1 3") == "ok");
}

TEST_CASE("fault: stop-listening and start-listening keep the port") {
    Running r;
    uint16_t port = r.broker.port();
    CHECK(r.cmd("stop-listening") == "ok");
    {
        Client refused(port);
        CHECK_FALSE(refused.ok());
    }
    CHECK(r.cmd("start-listening") == "ok listening 127.0.0.1:" + std::to_string(port));
    Client c(port);
    REQUIRE(c.ok());
    CHECK(c.handshake());
}

TEST_CASE("fake broker: queries and wait-consumers") {
    Running r;
    CHECK(r.cmd("wait-consumers qq 1 0.2") == "error timeout: qq has 0 consumers");
    Consuming a(r.broker.port(), "qq");
    CHECK(r.cmd("wait-consumers qq 1 5") == "ok");
    CHECK(r.cmd("queues") == "ok 1 qq 0 0 1");
    CHECK(r.cmd("connections") == "ok 1");
    CHECK(r.cmd("publish - qq {\"via\":\"default\"}") == "ok routed 1");
    CHECK(r.cmd("publish nope k {}") == "error no exchange nope");
    CHECK(r.cmd("bogus").rfind("error unknown command", 0) == 0);
    CHECK(r.cmd("drop-after x").rfind("error usage", 0) == 0);
    CHECK(r.cmd("help").rfind("ok ", 0) == 0);
    BasicDeliver d;
    REQUIRE(a.c.expect<BasicDeliver>(1, &d));
    CHECK(d.exchange == "");
    CHECK(d.routing_key == "qq");
}

TEST_CASE("fake-broker program: listening line, commands on stdin, exit on EOF") {
    const char* build = getenv("BUILD");
    std::string exe = std::string(build ? build : "build") + "/fake-broker";
    if (access(exe.c_str(), X_OK) != 0) {
        MESSAGE("skipped: " << exe << " not built (run from the repo root after make)");
        return;
    }
    int to_child[2], from_child[2];
    REQUIRE(pipe(to_child) == 0);
    REQUIRE(pipe(from_child) == 0);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        dup2(to_child[0], 0);
        dup2(from_child[1], 1);
        close(to_child[1]);
        close(from_child[0]);
        execl(exe.c_str(), exe.c_str(), "--seed", "7", "--verbose", (char*)nullptr);
        _exit(127);
    }
    close(to_child[0]);
    close(from_child[1]);
    FILE* out = fdopen(from_child[0], "r");
    REQUIRE(out);
    char line[512];
    auto read_line = [&]() -> std::string {
        if (!fgets(line, sizeof line, out)) return "";
        std::string s(line);
        if (!s.empty() && s.back() == '\n') s.pop_back();
        return s;
    };
    std::string first = read_line();
    REQUIRE(first.rfind("listening 127.0.0.1:", 0) == 0);
    uint16_t port = uint16_t(std::stoi(first.substr(20)));
    {
        Client c(port);
        REQUIRE(c.handshake());
        CHECK(read_line().rfind("event connect 1 ", 0) == 0);
        CHECK(read_line() == "event open 1 user=guest");
    }
    std::string cmd = "ping\nconnections\n";
    CHECK(write(to_child[1], cmd.data(), cmd.size()) == ssize_t(cmd.size()));
    // The disconnect event and the answers may interleave; collect them.
    std::string all;
    for (int i = 0; i < 3; i++) all += read_line() + "\n";
    CHECK(all.find("ok pong\n") != std::string::npos);
    CHECK(all.find("event disconnect 1") != std::string::npos);
    close(to_child[1]);  // EOF: the broker exits
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    fclose(out);
}

TEST_CASE("fake broker: a 64 MiB body goes through, split and reassembled") {
    Running r;
    Client pub(r.broker.port()), sub(r.broker.port());
    REQUIRE(pub.handshake());
    REQUIRE(sub.handshake());
    REQUIRE(pub.open_channel(1));
    REQUIRE(sub.open_channel(1));
    REQUIRE(sub.queue(1, "huge", false, {"huge"}) == "huge");
    sub.consume(1, "huge", true);
    std::string big(64u << 20, '\0');
    for (size_t i = 0; i < big.size(); i += 4096) big[i] = char(i >> 12);
    pub.send_method(1, ConfirmSelect{});
    REQUIRE(pub.expect<ConfirmSelectOk>(1));
    // Publish from another thread: the broker delivers while we still send.
    std::thread t([&] { pub.publish(1, "amq.topic", "huge", big); });
    BasicDeliver d;
    std::string body;
    size_t frames = 0;
    bool got = sub.expect<BasicDeliver>(1, &d, 20000) && sub.content(body, nullptr, &frames);
    t.join();
    REQUIRE(got);
    CHECK(body.size() == big.size());
    CHECK(body == big);
    CHECK(frames == (big.size() + 131063) / 131064);
    CHECK(pub.expect<BasicAck>(1));
}

TEST_CASE("fake broker: carries a fleet of 1000 connections") {
    // Both ends live in this process: 2 fds per connection.
    int n = 1000;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 2100) {
        rl.rlim_cur = std::min<rlim_t>(rl.rlim_max, 2100);
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
        if (rl.rlim_cur < 2100) {
            n = int(rl.rlim_cur - 100) / 2;
            MESSAGE("RLIMIT_NOFILE " << rl.rlim_cur << ": only " << n << " connections");
        }
    }
    Running r;
    std::vector<std::unique_ptr<Client>> clients;
    for (int i = 0; i < n; i++) {
        clients.push_back(std::make_unique<Client>(r.broker.port()));
        REQUIRE(clients.back()->handshake());
    }
    CHECK(r.cmd("connections") == "ok " + std::to_string(n));
    CHECK(r.cmd("drop-now") == "ok dropped " + std::to_string(n));
}

namespace {

// Drives an amqp::Connection (our client codec) over a socket.
struct CodecClient {
    Client sock;
    amqp::Connection conn;
    explicit CodecClient(uint16_t port) : sock(port), conn(amqp::ConnectionOptions{}) {
        conn.start(uint64_t(fake::now_ms()));
    }
    // Pumps bytes both ways until an event of `kind` arrives (returned in
    // ev) or 5 s pass.  Other events are skipped.
    bool wait_for(amqp::EventKind kind, amqp::Event& ev) {
        fake::Millis until = fake::now_ms() + 5000;
        while (fake::now_ms() < until) {
            while (conn.next_event(ev))
                if (ev.kind == kind) return true;
            if (conn.wants_write()) {
                sock.send_bytes(conn.output());
                conn.consume_output(conn.output().size());
            }
            struct pollfd p = {sock.fd, POLLIN, 0};
            if (poll(&p, 1, 100) > 0) {
                char buf[65536];
                ssize_t n = recv(sock.fd, buf, sizeof buf, 0);
                if (n <= 0) conn.transport_closed(uint64_t(fake::now_ms()));
                else conn.feed(buf, size_t(n), uint64_t(fake::now_ms()));
            }
            conn.tick(uint64_t(fake::now_ms()));
        }
        return false;
    }
};

}  // namespace

TEST_CASE("fake broker: our own amqp::Connection works against it") {
    Running r;
    CodecClient c(r.broker.port());
    amqp::Event ev;
    REQUIRE(c.wait_for(amqp::EventKind::Opened, ev));
    uint16_t ch = c.conn.open_channel();
    REQUIRE(c.wait_for(amqp::EventKind::ChannelOpened, ev));
    c.conn.confirm_select(ch);
    REQUIRE(c.wait_for(amqp::EventKind::ConfirmSelected, ev));
    c.conn.queue_declare(ch, "ur.request.u9", false, false, true, true);
    REQUIRE(c.wait_for(amqp::EventKind::QueueDeclared, ev));
    c.conn.queue_bind(ch, "ur.request.u9", "amq.topic", "ur.execute.u9.*");
    REQUIRE(c.wait_for(amqp::EventKind::QueueBound, ev));
    c.conn.basic_consume(ch, "ur.request.u9", "", false, false);
    REQUIRE(c.wait_for(amqp::EventKind::ConsumeOk, ev));
    amqp::BasicProperties props;
    props.content_type = "application/json";
    uint64_t seq = c.conn.basic_publish(ch, "amq.topic", "ur.execute.u9.r1", props, "{\"x\":1}");
    REQUIRE(c.wait_for(amqp::EventKind::Confirmed, ev));
    CHECK(ev.delivery_tag == seq);
    REQUIRE(c.wait_for(amqp::EventKind::Delivery, ev));
    CHECK(ev.body == "{\"x\":1}");
    CHECK(ev.routing_key == "ur.execute.u9.r1");
    c.conn.basic_ack(ch, ev.delivery_tag);
    CHECK(r.cmd("cancel-consumers") == "ok cancelled 1");
    REQUIRE(c.wait_for(amqp::EventKind::ServerCancel, ev));
    CHECK(r.cmd("close-connection 320 CONNECTION_FORCED - test") == "ok closed 1");
    REQUIRE(c.wait_for(amqp::EventKind::Closed, ev));
    CHECK(ev.code == 320);
}
