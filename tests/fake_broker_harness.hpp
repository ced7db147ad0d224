// Shared by the fake-broker tests (tests/fake_broker*_test.cpp): a broker
// running on its own thread, and a raw client written here (frames parsed
// independently of amqp::FrameParser).
#pragma once

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

namespace fake_broker_test {

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
    // Puts channel ch in confirm mode (publisher confirms).
    bool confirm_select(uint16_t ch) {
        send_method(ch, ConfirmSelect{});
        return expect<ConfirmSelectOk>(ch);
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

inline std::string python() {
    return access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : "";
}

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

}  // namespace fake_broker_test
