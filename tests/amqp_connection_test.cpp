#include <doctest/doctest.h>

#include <memory>
#include <random>

#include "amqp/connection.hpp"
#include "tests/amqp_conn_harness.hpp"

using namespace amqp;
using namespace amqp_test;

namespace {

const std::string& rabbitmq_start() {
    static const std::string s = from_hex(
#include "tests/vectors/rabbitmq_connection_start.inc"
    );
    return s;
}

ConnectionOptions options() {
    ConnectionOptions o;
    o.login = "ur-user";
    o.password = "s3cret-pw";
    o.vhost = "/ur";
    o.connection_name = "ur-test";
    o.version = "1.2.3";
    return o;
}

// Takes a connection through the handshake with RabbitMQ's start, pika's
// tune (2047, 131072, 60) and open-ok, and opens channel 1.
void open_connection(Connection& c, uint64_t now = 1000) {
    c.start(now);
    feed(c, rabbitmq_start(), now);
    feed(c, pika("connection_tune"), now);
    feed(c, pika("connection_open_ok"), now);
    REQUIRE(c.is_open());
    REQUIRE(c.open_channel() == 1);
    feed(c, pika("channel_open_ok"), now);
    take_output(c, true);
    REQUIRE(drain(c) == std::vector<std::string>{"Opened ch=0", "ChannelOpened ch=1"});
}

// Expects the connection to have sent connection.close with `code` and to
// have emitted Closed(ProtocolError, code).
void expect_protocol_error(Connection& c, uint16_t code) {
    CHECK(c.is_closed());
    Event e;
    REQUIRE(c.next_event(e));
    CHECK(e.kind == EventKind::Closed);
    CHECK(e.close_reason == CloseReason::ProtocolError);
    CHECK(e.code == code);
    CHECK(!e.text.empty());
    CHECK(!c.next_event(e));
    auto sent = take_output(c);
    REQUIRE(!sent.empty());
    auto* close = std::get_if<ConnectionClose>(&sent.back().method);
    REQUIRE(close);
    CHECK(close->reply_code == code);
    // Nothing more happens once closed.
    feed(c, pika("basic_ack"));
    CHECK(!c.next_event(e));
    CHECK(!c.wants_write());
}

}  // namespace

TEST_CASE("connection: handshake sends PLAIN, our properties, tune-ok and open") {
    Connection c(options());
    c.start(1000);
    auto sent = take_output(c, true);
    CHECK(sent.empty());
    feed(c, rabbitmq_start());
    sent = take_output(c);
    REQUIRE(sent.size() == 1);
    auto* so = std::get_if<ConnectionStartOk>(&sent[0].method);
    REQUIRE(so);
    CHECK(so->mechanism == "PLAIN");
    CHECK(so->response == std::string("\0ur-user\0s3cret-pw", 18));
    CHECK(so->locale == "en_US");
    CHECK(table_find(so->client_properties, "product")->bytes == "ur");
    CHECK(table_find(so->client_properties, "version")->bytes == "1.2.3");
    CHECK(table_find(so->client_properties, "connection_name")->bytes == "ur-test");
    const Table& caps = table_find(so->client_properties, "capabilities")->table;
    for (const char* cap : {"publisher_confirms", "consumer_cancel_notify", "connection.blocked",
                            "authentication_failure_close"})
        CHECK(table_find(caps, cap)->boolean);
    CHECK(table_find(c.server_properties(), "product")->bytes == "RabbitMQ");

    feed(c, pika("connection_tune"));  // 2047, 131072, 60
    sent = take_output(c);
    REQUIRE(sent.size() == 2);
    auto* tok = std::get_if<ConnectionTuneOk>(&sent[0].method);
    REQUIRE(tok);
    CHECK(tok->channel_max == 2047);
    CHECK(tok->frame_max == 131072);
    CHECK(tok->heartbeat == 30);
    auto* open = std::get_if<ConnectionOpen>(&sent[1].method);
    REQUIRE(open);
    CHECK(open->virtual_host == "/ur");
    CHECK(!c.is_open());
    feed(c, pika("connection_open_ok"));
    CHECK(c.is_open());
    CHECK(drain(c) == std::vector<std::string>{"Opened ch=0"});
    CHECK(c.heartbeat() == 30);
    CHECK(c.frame_max() == 131072);
    CHECK(c.channel_max() == 2047);
}

TEST_CASE("connection: tune negotiation") {
    struct Case {
        uint16_t our_ch; uint32_t our_fm; uint16_t our_hb;
        uint16_t srv_ch; uint32_t srv_fm; uint16_t srv_hb;
        uint16_t ch; uint32_t fm; uint16_t hb;
    };
    const Case cases[] = {
        {2047, 131072, 30, 2047, 131072, 60, 2047, 131072, 30},
        {2047, 131072, 30, 0, 0, 0, 2047, 131072, 30},       // server: no limits
        {0, 0, 30, 100, 8192, 10, 100, 8192, 10},            // we: no limits
        {2047, 131072, 0, 2047, 131072, 60, 2047, 131072, 0}, // we want no heartbeat
        {10, 1000000, 5, 2047, 65536, 600, 10, 65536, 5},
        {2047, 4096, 30, 2047, 1024, 30, 2047, 4096, 30},    // never below 4096
    };
    for (const Case& k : cases) {
        ConnectionOptions o;
        o.channel_max = k.our_ch;
        o.frame_max = k.our_fm;
        o.heartbeat = k.our_hb;
        Connection c(o);
        c.start(0);
        feed(c, rabbitmq_start());
        ConnectionTune t;
        t.channel_max = k.srv_ch;
        t.frame_max = k.srv_fm;
        t.heartbeat = k.srv_hb;
        take_output(c, true);
        feed(c, method_frame(0, t));
        auto sent = take_output(c);
        REQUIRE(sent.size() == 2);
        auto* tok = std::get_if<ConnectionTuneOk>(&sent[0].method);
        REQUIRE(tok);
        CHECK(tok->channel_max == k.ch);
        CHECK(tok->frame_max == k.fm);
        CHECK(tok->heartbeat == k.hb);
    }
}

TEST_CASE("connection: mechanisms without PLAIN is an auth failure") {
    Connection c(options());
    c.start(0);
    ConnectionStart s;
    s.mechanisms = "AMQPLAIN EXTERNAL";
    feed(c, method_frame(0, s));
    Event e;
    REQUIRE(c.next_event(e));
    CHECK(e.kind == EventKind::Closed);
    CHECK(e.close_reason == CloseReason::AuthFailure);
    CHECK(e.text.find("PLAIN") != std::string::npos);
}

TEST_CASE("connection: refused login, by close 403 or by a dropped socket") {
    SUBCASE("connection.close 403") {
        Connection c(options());
        c.start(0);
        feed(c, rabbitmq_start());
        ConnectionClose cl;
        cl.reply_code = 403;
        cl.reply_text = "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN";
        feed(c, method_frame(0, cl));
        Event e;
        REQUIRE(c.next_event(e));
        CHECK(e.close_reason == CloseReason::AuthFailure);
        CHECK(e.code == 403);
        CHECK(e.text.find("ur-user") != std::string::npos);
        CHECK(e.text.find("s3cret") == std::string::npos);
        auto sent = take_output(c, true);
        REQUIRE(sent.size() == 2);
        CHECK(std::holds_alternative<ConnectionCloseOk>(sent[1].method));
    }
    SUBCASE("socket closed after start-ok") {
        Connection c(options());
        c.start(0);
        feed(c, rabbitmq_start());
        c.transport_closed(5);
        Event e;
        REQUIRE(c.next_event(e));
        CHECK(e.close_reason == CloseReason::AuthFailure);
        CHECK(e.text.find("login refused") != std::string::npos);
        CHECK(e.text.find("s3cret") == std::string::npos);
    }
    SUBCASE("connection.close 530 to our open: the virtual host refused") {
        Connection c(options());
        c.start(0);
        feed(c, rabbitmq_start());
        ConnectionTune t;
        feed(c, method_frame(0, t));
        ConnectionClose cl;
        cl.reply_code = 530;
        cl.reply_text = "NOT_ALLOWED - vhost nope not found";
        feed(c, method_frame(0, cl));
        Event e;
        REQUIRE(c.next_event(e));
        CHECK(e.close_reason == CloseReason::AuthFailure);
        CHECK(e.code == 530);
        CHECK(e.text.find("virtual host '") == 0);
        CHECK(e.text.find("vhost nope not found") != std::string::npos);
    }
    SUBCASE("connection.close 530 once open is the peer's close") {
        Connection c(options());
        open_connection(c);
        ConnectionClose cl;
        cl.reply_code = 530;
        cl.reply_text = "NOT_ALLOWED";
        feed(c, method_frame(0, cl));
        Event e;
        while (c.next_event(e) && e.kind != EventKind::Closed) {}
        CHECK(e.close_reason == CloseReason::ClosedByPeer);
    }
    SUBCASE("socket closed when open is not an auth failure") {
        Connection c(options());
        open_connection(c);
        c.transport_closed(5);
        Event e;
        REQUIRE(c.next_event(e));
        CHECK(e.close_reason == CloseReason::ClosedByPeer);
    }
}

TEST_CASE("connection: a server speaking another protocol version") {
    Connection c(options());
    c.start(0);
    feed(c, std::string("AMQP\x00\x00\x09\x00", 8));
    Event e;
    REQUIRE(c.next_event(e));
    CHECK(e.kind == EventKind::Closed);
    CHECK(e.close_reason == CloseReason::ProtocolError);
}

TEST_CASE("connection: a server that speaks no AMQP at all is quoted, not 'unknown frame type 83'") {
    auto first_words = [](const std::string& bytes) {
        Connection c(options());
        c.start(0);
        feed(c, bytes);
        Event e;
        REQUIRE(c.next_event(e));
        CHECK(e.kind == EventKind::Closed);
        CHECK(e.close_reason == CloseReason::ProtocolError);
        return e.text;
    };
    CHECK(first_words("SSH-2.0-OpenSSH_9.2\r\n") ==
          "not an AMQP 0-9-1 server (it sent \"SSH-2.0-OpenSSH_9.2\\x0d\\x0a\")");
    CHECK(first_words("HTTP/1.0 400 Bad Request\r\nServer: SimpleHTTP/0.6 Python/3.11.2\r\n") ==
          "not an AMQP 0-9-1 server (it sent \"HTTP/1.0 400 Bad Request\\x0d\\x0aServer: ...\")");
    CHECK(first_words(std::string("\x15\x03\x03\x00\x02\x02\x46", 7)) ==  // a TLS alert
          "not an AMQP 0-9-1 server (it sent \"\\x15\\x03\\x03\\x00\\x02\\x02F\")");
}

TEST_CASE("connection: a transport that ends in the handshake is told where, with the likely cause") {
    Connection c(options());
    c.start(0);
    CHECK(std::string(c.handshake_stage()) ==
          "before the AMQP handshake began (not an AMQP 0-9-1 broker? a TLS port?)");
    feed(c, rabbitmq_start());
    CHECK(std::string(c.handshake_stage()) == "on our login (wrong login or password?)");
    feed(c, pika("connection_tune"));
    CHECK(!c.is_open());
    CHECK(std::string(c.handshake_stage()) == "during the AMQP handshake");
}

TEST_CASE("connection: open_channel never hands out channel 0, with all 65535 taken") {
    ConnectionOptions o = options();
    o.channel_max = 0;  // no limit asked for, none given: 65535
    Connection c(o);
    c.start(0);
    feed(c, rabbitmq_start());
    ConnectionTune tune;
    tune.channel_max = 0;
    tune.frame_max = 131072;
    feed(c, method_frame(0, tune));
    feed(c, method_frame(0, ConnectionOpenOk{}));
    REQUIRE(c.is_open());
    for (uint32_t i = 1; i <= 65535; ++i) REQUIRE(c.open_channel() == i);
    take_output(c, true);
    CHECK(c.open_channel() == 0);
    CHECK(take_output(c).empty());  // was a channel.open on channel 0
}

TEST_CASE("connection: a bad frame after our connection.close ends it with no second close") {
    Connection c(options());
    open_connection(c);
    c.close(200, "bye");
    auto sent = take_output(c);
    REQUIRE(sent.size() == 1);
    feed(c, std::string("\x03\x00\x00\x00\x00\x00\x00\xce", 8));  // a body frame on channel 0
    CHECK(take_output(c).empty());
    Event e;
    REQUIRE(c.next_event(e));
    CHECK(e.kind == EventKind::Closed);
    CHECK(e.close_reason == CloseReason::ProtocolError);
    CHECK(c.is_closed());
}

TEST_CASE("connection: server connection.close -> close-ok and Closed(ClosedByPeer)") {
    Connection c(options());
    open_connection(c);
    feed(c, pika("connection_close"));  // 320
    auto sent = take_output(c);
    REQUIRE(sent.size() == 1);
    CHECK(std::holds_alternative<ConnectionCloseOk>(sent[0].method));
    CHECK(drain(c) == std::vector<std::string>{
                          "Closed ch=0 code=320 text=CONNECTION_FORCED - bye reason=closed by peer"});
    CHECK(c.is_closed());
}

TEST_CASE("connection: our close waits for close-ok, or 5 s") {
    SUBCASE("close-ok") {
        Connection c(options());
        open_connection(c);
        c.close(200, "bye");
        CHECK(!c.is_open());
        auto sent = take_output(c);
        REQUIRE(sent.size() == 1);
        CHECK(std::get<ConnectionClose>(sent[0].method).reply_text == "bye");
        feed(c, pika("basic_ack"));  // discarded while closing
        CHECK(drain(c).empty());
        feed(c, pika("connection_close_ok"));
        CHECK(drain(c) == std::vector<std::string>{"Closed ch=0 code=200 text=bye reason=closed by us"});
    }
    SUBCASE("timeout") {
        Connection c(options());
        open_connection(c, 1000);
        c.tick(2000);
        c.close();
        CHECK(c.next_deadline() == 7000);
        c.tick(6999);
        CHECK(drain(c).empty());
        c.tick(7000);
        auto ev = drain(c);
        REQUIRE(ev.size() == 1);
        CHECK(ev[0].find("reason=closed by us") != std::string::npos);
    }
}

TEST_CASE("connection: heartbeats sent when idle, peer dead after two intervals") {
    Connection c(options());
    open_connection(c, 1000);  // heartbeat 30 s
    CHECK(c.next_deadline() == 31000);
    c.tick(30999);
    CHECK(!c.wants_write());
    c.tick(31000);
    auto sent = take_output(c);
    REQUIRE(sent.size() == 1);
    CHECK(sent[0].type == kFrameHeartbeat);
    // Output of any kind resets the send timer.
    c.basic_ack(1, 1);
    take_output(c);
    c.tick(40000);
    CHECK(!c.wants_write());
    // Input of any kind resets the receive timer.
    feed(c, pika("heartbeat"), 50000);
    CHECK(drain(c).empty());
    c.tick(109999);
    CHECK(!c.is_closed());
    c.tick(110000);
    auto ev = drain(c);
    REQUIRE(ev.size() == 1);
    CHECK(ev[0].find("reason=heartbeat timeout") != std::string::npos);
}

TEST_CASE("connection: deliveries assemble across body frames") {
    Connection c(options());
    open_connection(c);
    std::string body(300000, 'x');
    for (size_t i = 0; i < body.size(); i++) body[i] = char('a' + i % 26);
    BasicDeliver d;
    d.consumer_tag = "ctag";
    d.delivery_tag = 7;
    d.exchange = "amq.topic";
    d.routing_key = "ur.x";
    ContentHeader h;
    h.body_size = body.size();
    h.properties.correlation_id = "cid";
    std::string bytes = method_frame(1, d);
    encode_header_frame(bytes, 1, h);
    encode_body_frames(bytes, 1, body, 131072);
    // An empty body: method and header only.
    d.delivery_tag = 8;
    bytes += method_frame(1, d);
    h.body_size = 0;
    encode_header_frame(bytes, 1, h);
    for (std::vector<size_t> sizes : {std::vector<size_t>{1}, {4096}, {bytes.size()}, {3, 100000}}) {
        Connection k(options());
        open_connection(k);
        feed_chunked(k, bytes, sizes, 0);
        Event e;
        REQUIRE(k.next_event(e));
        CHECK(e.kind == EventKind::Delivery);
        CHECK(e.delivery_tag == 7);
        CHECK(e.body == body);
        CHECK(e.properties.correlation_id == "cid");
        REQUIRE(k.next_event(e));
        CHECK(e.delivery_tag == 8);
        CHECK(e.body.empty());
        CHECK(!k.next_event(e));
    }
}

TEST_CASE("connection: content out of order is 505") {
    Connection c(options());
    open_connection(c);
    std::string header = pika("header_no_props");  // body size 0, channel 1
    std::string hello = pika("body_hello");
    ContentHeader h5;
    h5.body_size = 5;
    std::string header5;
    encode_header_frame(header5, 1, h5);

    SUBCASE("content header before the method") {
        feed(c, header);
        expect_protocol_error(c, kUnexpectedFrame);
    }
    SUBCASE("body without header") {
        feed(c, pika("basic_deliver") + hello);
        expect_protocol_error(c, kUnexpectedFrame);
    }
    SUBCASE("body longer than declared") {
        ContentHeader h;
        h.body_size = 4;
        std::string hdr;
        encode_header_frame(hdr, 1, h);
        feed(c, pika("basic_deliver") + hdr + hello);
        expect_protocol_error(c, kUnexpectedFrame);
    }
    SUBCASE("a different method between header and body") {
        feed(c, pika("basic_deliver") + header5 + pika("basic_ack"));
        expect_protocol_error(c, kUnexpectedFrame);
    }
    SUBCASE("a method between deliver and header") {
        feed(c, pika("basic_deliver") + pika("basic_ack"));
        expect_protocol_error(c, kUnexpectedFrame);
    }
    SUBCASE("body frame on channel 0") {
        std::string b;
        encode_frame(b, kFrameBody, 0, "x");
        feed(c, b);
        expect_protocol_error(c, kUnexpectedFrame);
    }
}

// Regression: an oversize request used to close the connection (506); the
// broker then redelivered it on every reconnect, for ever.
TEST_CASE("connection: a body over max_body_size is skipped, flagged, and the connection lives") {
    ConnectionOptions o = options();
    o.max_body_size = 1000;
    Connection c(o);
    open_connection(c);
    BasicDeliver d;
    d.delivery_tag = 5;
    d.routing_key = "ur.big";
    ContentHeader h;
    h.body_size = 5000;
    std::string bytes = method_frame(1, d);
    encode_header_frame(bytes, 1, h);
    encode_body_frames(bytes, 1, std::string(5000, 'z'), 4096);
    d.delivery_tag = 6;
    d.routing_key = "ur.small";
    h.body_size = 3;
    bytes += method_frame(1, d);
    encode_header_frame(bytes, 1, h);
    encode_body_frames(bytes, 1, "abc", 4096);
    feed(c, bytes);
    Event e;
    REQUIRE(c.next_event(e));
    CHECK(e.kind == EventKind::Delivery);
    CHECK(e.delivery_tag == 5);
    CHECK(e.body_discarded);
    CHECK(e.body_size == 5000);
    CHECK(e.body.empty());
    REQUIRE(c.next_event(e));
    CHECK(e.kind == EventKind::Delivery);
    CHECK(e.delivery_tag == 6);
    CHECK_FALSE(e.body_discarded);
    CHECK(e.body == "abc");
    CHECK(c.is_open());
}

TEST_CASE("connection: framing and syntax errors close with their codes") {
    Connection c(options());
    open_connection(c);
    SUBCASE("trailing garbage in a method is 502") {
        std::string f = pika("basic_ack");
        // One more byte in the payload: patch the size and insert it.
        f.insert(f.size() - 1, "!");
        f[6] = char(f[6] + 1);
        feed(c, f);
        expect_protocol_error(c, kSyntaxError);
    }
    SUBCASE("unknown method is 503") {
        std::string f;
        encode_frame(f, kFrameMethod, 1, from_hex("003c 0046 0000 00 00"));
        feed(c, f);
        expect_protocol_error(c, kCommandInvalid);
    }
    SUBCASE("a server-only method sent to us is 503") {
        feed(c, pika("basic_publish"));
        expect_protocol_error(c, kCommandInvalid);
    }
    SUBCASE("frame on a channel that is not open is 504") {
        std::string f = pika("basic_ack");
        f[2] = 9;  // channel 9
        feed(c, f);
        expect_protocol_error(c, kChannelError);
    }
    SUBCASE("bad frame-end is 501") {
        std::string f = pika("basic_ack");
        f.back() = 0;
        feed(c, f);
        expect_protocol_error(c, kFrameError);
    }
    SUBCASE("oversize frame is 501, refused from the header") {
        feed(c, from_hex("03 0001 00100000"));  // 1 MiB > 131072
        expect_protocol_error(c, kFrameError);
    }
}

TEST_CASE("connection: unknown field table type in connection.start is 502") {
    Connection c(options());
    c.start(0);
    take_output(c, true);
    // connection.start: 0, 9, server-properties {a: 'Z' ...}, "PLAIN", "en_US"
    std::string f;
    encode_frame(f, kFrameMethod, 0,
                 from_hex("000a 000a 00 09 00000004 01 61 5a 00 00000005 504c41494e 00000005 656e5f5553"));
    feed(c, f);
    expect_protocol_error(c, kSyntaxError);
}

TEST_CASE("connection: server channel.close -> close-ok, ChannelClosed, channel free") {
    Connection c(options());
    open_connection(c);
    feed(c, pika("channel_close"));  // 405 on channel 1
    auto sent = take_output(c);
    REQUIRE(sent.size() == 1);
    CHECK(sent[0].channel == 1);
    CHECK(std::holds_alternative<ChannelCloseOk>(sent[0].method));
    Event e;
    REQUIRE(c.next_event(e));
    CHECK(e.kind == EventKind::ChannelClosed);
    CHECK(e.channel == 1);
    CHECK(e.code == 405);
    CHECK(e.class_id == 50);
    CHECK(e.method_id == 10);
    CHECK(c.is_open());
    CHECK(c.open_channel() == 1);
}

TEST_CASE("connection: a second channel.close (RabbitMQ 3.10, consumer_timeout) is let pass") {
    Connection c(options());
    open_connection(c);
    feed(c, pika("channel_close") + pika("channel_close"));  // 405 on channel 1, twice
    auto sent = take_output(c);
    REQUIRE(sent.size() == 1);  // one close-ok: the broker has forgotten the channel after it
    CHECK(std::holds_alternative<ChannelCloseOk>(sent[0].method));
    auto events = drain(c);
    REQUIRE(events.size() == 1);
    CHECK(events[0].rfind("ChannelClosed ch=1 code=405", 0) == 0);
    CHECK(c.is_open());
    // Anything else on the closed channel is still an error.
    feed(c, pika("basic_deliver"));
    CHECK_FALSE(c.is_open());
    sent = take_output(c);
    REQUIRE_FALSE(sent.empty());
    auto* close = std::get_if<ConnectionClose>(&sent.back().method);
    REQUIRE(close);
    CHECK(close->reply_code == 504);
}

TEST_CASE("connection: our channel.close crossing the broker's: its close-ok after ours is let pass") {
    Connection c(options());
    open_connection(c);
    c.close_channel(1);
    take_output(c);
    feed(c, pika("channel_close"));     // theirs, crossing ours: answered
    feed(c, pika("channel_close_ok"));  // theirs to ours
    CHECK(c.is_open());
    CHECK(c.open_channel() == 1);
}

TEST_CASE("connection: a third channel.close on a closed channel is an error") {
    Connection c(options());
    open_connection(c);
    feed(c, pika("channel_close") + pika("channel_close") + pika("channel_close"));
    CHECK_FALSE(c.is_open());
    auto sent = take_output(c);
    REQUIRE_FALSE(sent.empty());
    auto* close = std::get_if<ConnectionClose>(&sent.back().method);
    REQUIRE(close);
    CHECK(close->reply_code == 504);
}

TEST_CASE("connection: our channel.close discards until close-ok") {
    Connection c(options());
    open_connection(c);
    c.close_channel(1);
    take_output(c);
    feed(c, pika("basic_deliver") + pika("header_no_props") + pika("basic_ack"));
    feed(c, pika("channel_close_ok"));
    CHECK(drain(c).empty());
    CHECK(c.is_open());
    CHECK(c.open_channel() == 1);
}

TEST_CASE("connection: confirms number publishes from 1 and pass acks through") {
    Connection c(options());
    open_connection(c);
    CHECK(c.basic_publish(1, "amq.topic", "x", {}, "before") == 0);
    c.confirm_select(1);
    BasicProperties p;
    p.content_type = "application/json";
    CHECK(c.basic_publish(1, "amq.topic", "ur.x", p, "one") == 1);
    CHECK(c.basic_publish(1, "amq.topic", "ur.x", p, std::string(300000, 'z')) == 2);
    auto sent = take_output(c);
    // publish+header+body, select, publish+header+body, publish+header+3 bodies
    REQUIRE(sent.size() == 3 + 1 + 3 + 5);
    auto& pub = std::get<BasicPublish>(sent[4].method);
    CHECK(pub.exchange == "amq.topic");
    CHECK(pub.routing_key == "ur.x");
    ContentHeader h;
    REQUIRE(decode_content_header(sent[5].payload, h) == DecodeStatus::Ok);
    CHECK(h.body_size == 3);
    CHECK(h.properties.content_type == "application/json");
    CHECK(sent[6].payload == "one");
    for (int i = 9; i < 12; i++) CHECK(sent[i].payload.size() <= 131072 - 8);
    feed(c, pika("confirm_select_ok") + pika("basic_ack") + pika("basic_nack"));
    CHECK(drain(c) == std::vector<std::string>{"ConfirmSelected ch=1", "Confirmed ch=1 tag=7 multiple",
                                               "Nacked ch=1 tag=8 multiple"});
}

// A shortstr over 255 bytes used to be cut by the Writer and the publish
// sent with the truncated routing key (routed to another queue).
TEST_CASE("connection: basic.publish refuses a routing key over 255 bytes, never cuts it") {
    Connection c(options());
    open_connection(c);
    c.confirm_select(1);
    take_output(c);
    const std::string fits(255, 'k'), over(256, 'k');
    std::string why;
    CHECK(c.basic_publish(1, "amq.topic", over, {}, "body", false, &why) == 0);
    CHECK(why.find("routing key is 256 bytes") != std::string::npos);
    CHECK(c.output().empty());
    CHECK(c.basic_publish(1, std::string(300, 'x'), "k", {}, "body", false, &why) == 0);
    CHECK(why.find("exchange name is 300 bytes") != std::string::npos);
    BasicProperties long_prop;
    long_prop.reply_to = over;
    CHECK(c.basic_publish(1, "amq.topic", "k", long_prop, "body", false, &why) == 0);
    CHECK(why.find("property") != std::string::npos);
    CHECK(c.output().empty());
    // A refused publish takes no sequence number: the next one is still 1.
    why.clear();
    CHECK(c.basic_publish(1, "amq.topic", fits, {}, "body", false, &why) == 1);
    CHECK(why.empty());
    auto sent = take_output(c);
    REQUIRE(sent.size() == 3);
    CHECK(std::get<BasicPublish>(sent[0].method).routing_key == fits);
    CHECK(c.is_open());
}

TEST_CASE("connection: requests refuse a name over 255 bytes and send nothing") {
    Connection c(options());
    open_connection(c);
    const std::string over(256, 'q');
    CHECK_FALSE(c.queue_declare(1, over, false, false, true, true));
    CHECK_FALSE(c.queue_bind(1, "q", "amq.topic", over));
    CHECK_FALSE(c.basic_consume(1, "q", over, true, false));
    CHECK_FALSE(c.exchange_declare(1, over, "topic", false, false, false));
    CHECK(c.output().empty());
    CHECK(c.queue_bind(1, "q", "amq.topic", std::string(255, 'q')));
    auto sent = take_output(c);
    REQUIRE(sent.size() == 1);
    CHECK(std::get<QueueBind>(sent[0].method).routing_key == std::string(255, 'q'));
    // A close text only explains: it is still cut to fit, so the close goes out.
    c.close_channel(1, 200, std::string(400, 't'));
    sent = take_output(c);
    REQUIRE(sent.size() == 1);
    CHECK(std::get<ChannelClose>(sent[0].method).reply_text == std::string(255, 't'));
}

TEST_CASE("connection: a virtual host name over 255 bytes closes the connection, not cut") {
    ConnectionOptions o = options();
    o.vhost = std::string(256, 'v');
    Connection c(o);
    c.start(1000);
    feed(c, rabbitmq_start());
    feed(c, pika("connection_tune"));
    auto sent = take_output(c, true);
    for (const auto& f : sent) CHECK(!std::holds_alternative<ConnectionOpen>(f.method));
    REQUIRE(!sent.empty());
    CHECK(std::holds_alternative<ConnectionClose>(sent.back().method));
    Event e;
    REQUIRE(c.next_event(e));
    CHECK(e.kind == EventKind::Closed);
    CHECK(e.close_reason == CloseReason::ClosedByUs);
    CHECK(e.text.find("256 bytes") != std::string::npos);
}

TEST_CASE("connection: a server locale over 255 bytes still gets a start-ok") {
    Connection c(options());
    c.start(1000);
    ConnectionStart st;
    st.locales = std::string(300, 'l');
    std::string f;
    encode_method_frame(f, 0, st);
    feed(c, f);
    auto sent = take_output(c, true);
    REQUIRE(sent.size() == 1);
    CHECK(std::get<ConnectionStartOk>(sent[0].method).locale == std::string(255, 'l'));
}

TEST_CASE("connection: blocked, unblocked, server cancel, flow") {
    Connection c(options());
    open_connection(c);
    BasicCancel cancel;
    cancel.consumer_tag = "ctag";
    ChannelFlow flow;
    flow.active = false;
    feed(c, pika("connection_blocked") + pika("connection_unblocked") + method_frame(1, cancel) +
                method_frame(1, flow));
    CHECK(drain(c) == std::vector<std::string>{"Blocked ch=0 text=low on memory", "Unblocked ch=0",
                                               "ServerCancel ch=1 ctag=ctag"});
    auto sent = take_output(c);
    REQUIRE(sent.size() == 2);
    CHECK(std::get<BasicCancelOk>(sent[0].method).consumer_tag == "ctag");
    CHECK(!std::get<ChannelFlowOk>(sent[1].method).active);
}

TEST_CASE("connection: random bytes never crash it") {
    std::mt19937 rng(99);
    for (int round = 0; round < 200; round++) {
        Connection c(options());
        open_connection(c);
        std::string junk = pika("basic_deliver");
        size_t n = rng() % 64;
        for (size_t i = 0; i < n; i++) junk.push_back(char(rng()));
        // Flip a few bytes of a valid stream too.
        std::string stream = pika("basic_deliver") + pika("header_all_props") + pika("body_hello");
        for (int i = 0; i < 3; i++) stream[rng() % stream.size()] = char(rng());
        feed(c, rng() % 2 ? junk : stream);
        drain(c);
    }
}

namespace {

const char* const kSession[] = {
#include "tests/vectors/rabbitmq_session.inc"
};

// Replays the captured RabbitMQ session (see capture_rabbitmq_session.py),
// issuing the same requests, feeding the server's bytes in the given
// chunk sizes; returns the event summaries.
std::vector<std::string> replay_session(const std::vector<size_t>& sizes) {
    ConnectionOptions o = options();
    o.frame_max = 4096;  // as the capture negotiated
    Connection c(o);
    c.start(0);
    feed_chunked(c, from_hex(kSession[0]), sizes, 0);
    std::vector<std::string> events = drain(c);
    REQUIRE(c.is_open());
    CHECK(c.frame_max() == 4096);
    REQUIRE(c.open_channel() == 1);
    c.confirm_select(1);
    c.queue_declare(1, "", false, false, true, true);
    c.queue_bind(1, "q", "amq.topic", "cap.#");
    c.basic_qos(1, 10);
    CHECK(c.basic_publish(1, "amq.topic", "cap.x", {}, "hello") == 1);
    CHECK(c.basic_publish(1, "amq.topic", "cap.big", {}, std::string(10000, 'a')) == 2);
    CHECK(c.basic_publish(1, "amq.topic", "nowhere", {}, "lost", true) == 3);
    c.basic_consume(1, "q", "ctag1", false, false);
    REQUIRE(c.open_channel() == 2);
    c.queue_declare(2, "no-such-queue", true, false, false, false);
    feed_chunked(c, from_hex(kSession[1]), sizes, 0);
    for (auto& e : drain(c)) events.push_back(e);
    c.close(200, "bye");
    feed_chunked(c, from_hex(kSession[2]), sizes, 0);
    for (auto& e : drain(c)) events.push_back(e);
    return events;
}

}  // namespace

TEST_CASE("connection: captured RabbitMQ session, identical events in any chunking") {
    std::vector<std::string> whole = replay_session({1u << 30});
    REQUIRE(whole.size() == 16);
    CHECK(whole[0] == "Opened ch=0");
    CHECK(whole[1] == "ChannelOpened ch=1");
    CHECK(whole[2] == "ConfirmSelected ch=1");
    CHECK(whole[3].rfind("QueueDeclared ch=1 q=amq.gen-", 0) == 0);
    CHECK(whole[4] == "QueueBound ch=1");
    CHECK(whole[5] == "QosOk ch=1");
    // RabbitMQ 3.10 returned the unroutable publish first and confirmed
    // out of order: 3, 1, 2.
    CHECK(whole[6].rfind("Returned ch=1 ex=amq.topic rk=nowhere body=4#", 0) == 0);
    CHECK(whole[6].find("code=312 text=NO_ROUTE") != std::string::npos);
    CHECK(whole[7] == "Confirmed ch=1 tag=3");
    CHECK(whole[8] == "Confirmed ch=1 tag=1");
    CHECK(whole[9] == "Confirmed ch=1 tag=2");
    CHECK(whole[10] == "ConsumeOk ch=1 ctag=ctag1");
    CHECK(whole[11].rfind("Delivery ch=1 tag=1 ex=amq.topic rk=cap.x ctag=ctag1 body=5#", 0) == 0);
    CHECK(whole[12].rfind("Delivery ch=1 tag=2 ex=amq.topic rk=cap.big ctag=ctag1 body=10000#", 0) == 0);
    CHECK(whole[13] == "ChannelOpened ch=2");
    CHECK(whole[14].rfind("ChannelClosed ch=2 code=404 text=NOT_FOUND", 0) == 0);
    CHECK(whole[15] == "Closed ch=0 code=200 text=bye reason=closed by us");

    CHECK(replay_session({1}) == whole);
    std::mt19937 rng(7);
    for (int i = 0; i < 10; i++) {
        std::vector<size_t> sizes;
        for (int j = 0; j < 16; j++) sizes.push_back(1 + rng() % 700);
        CHECK(replay_session(sizes) == whole);
    }
}

TEST_CASE("connection: the captured delivery carries all 14 properties") {
    ConnectionOptions o = options();
    o.frame_max = 4096;
    Connection c(o);
    c.start(0);
    feed(c, from_hex(kSession[0]));
    REQUIRE(c.open_channel() == 1);
    feed(c, from_hex(kSession[1]));
    Event e;
    bool found = false;
    while (c.next_event(e)) {
        if (e.kind != EventKind::Delivery || e.delivery_tag != 1) continue;
        found = true;
        CHECK(e.body == "hello");
        const BasicProperties& p = e.properties;
        CHECK(p.content_type == "text/plain");
        CHECK(p.content_encoding == "utf-8");
        REQUIRE(p.headers);
        CHECK(table_find(*p.headers, "k")->bytes == "v");
        CHECK(p.delivery_mode == 1);
        CHECK(p.priority == 1);
        CHECK(p.correlation_id == "c1");
        CHECK(p.reply_to == "r");
        CHECK(p.expiration == "60000");
        CHECK(p.message_id == "m1");
        CHECK(p.timestamp == 1700000000u);
        CHECK(p.type == "t");
        CHECK(p.user_id == "guest");
        CHECK(p.app_id == "capture");
        CHECK(p.cluster_id == "cl");
    }
    CHECK(found);
}

TEST_CASE("connection: the output buffer of a big message is freed once drained") {
    // A 4 MiB reply must not leave a 4 MiB buffer behind for the rest of
    // the connection's life; small messages keep theirs (no churn).
    Connection c{ConnectionOptions{}};
    open_connection(c);
    auto drain = [&] {
        while (c.wants_write()) c.consume_output(c.pending_output().size());
    };
    drain();
    c.basic_publish(1, "amq.topic", "k.small", BasicProperties{}, std::string(1000, 's'));
    size_t small_cap = c.output().capacity();
    drain();
    CHECK(c.output().capacity() == small_cap);
    c.basic_publish(1, "amq.topic", "k.big", BasicProperties{}, std::string(4u << 20, 'b'));
    CHECK(c.output().capacity() >= (4u << 20));
    drain();
    CHECK(c.output().empty());
    CHECK(c.output().capacity() < (1u << 20));
}

TEST_CASE("connection: a large publish drained in partial writes (quadratic consume_output)") {
    // Regression: consume_output() moved the rest of the buffer after every
    // write, O(size^2 / write size) for a large body.  It now advances an
    // offset; the bytes must come out the same, in order, whichever of
    // output() and pending_output() the caller reads.
    auto publish_twice = [](Connection& c, bool drain_between) {
        std::string body(300000, '\0');
        for (size_t i = 0; i < body.size(); ++i) body[i] = char('a' + i % 26);
        std::string got;
        c.basic_publish(1, "amq.topic", "k.1", BasicProperties{}, body);
        for (int i = 0; drain_between && i < 50; ++i) {
            std::string_view p = c.pending_output();
            size_t n = std::min<size_t>(p.size(), 997);
            got.append(p.data(), n);
            c.consume_output(n);
        }
        c.basic_publish(1, "amq.topic", "k.2", BasicProperties{}, body);
        if (drain_between) {
            // output() compacts: same bytes as pending_output().
            CHECK(c.output() == std::string(c.pending_output()));
        }
        while (c.wants_write()) {
            std::string_view p = c.pending_output();
            size_t n = std::min<size_t>(p.size(), 65536 + 3);
            got.append(p.data(), n);
            c.consume_output(n);
        }
        CHECK(c.pending_output().empty());
        CHECK(c.output().empty());
        return got;
    };
    Connection a{ConnectionOptions{}}, b{ConnectionOptions{}};
    open_connection(a);
    open_connection(b);
    std::string whole = publish_twice(a, false);
    CHECK(whole.size() > 600000);
    CHECK(publish_twice(b, true) == whole);
}

// Drains everything queued as a writev() caller would: up to `max` pieces
// a call, and a partial write of `step` bytes at most.
static std::string drain_pieces(Connection& c, size_t max, size_t step) {
    std::string got;
    std::vector<std::string_view> pieces(max);
    while (c.wants_write()) {
        size_t k = c.output_pieces(pieces.data(), max);
        REQUIRE(k > 0);
        size_t budget = step, wrote = 0;
        for (size_t i = 0; i < k && budget > 0; ++i) {
            size_t n = std::min(budget, pieces[i].size());
            got.append(pieces[i].data(), n);
            budget -= n;
            wrote += n;
        }
        c.consume_output(wrote);
    }
    return got;
}

TEST_CASE("connection: a shared body goes out as slices of itself, the same bytes as a copy") {
    auto body = std::make_shared<const std::string>([] {
        std::string b(3 * 131072 + 12345, '\0');
        for (size_t i = 0; i < b.size(); ++i) b[i] = char(i * 7 % 251);
        return b;
    }());
    BasicProperties p;
    p.content_type = "application/json";
    auto publish_all = [&](Connection& c, bool shared) {
        open_connection(c);
        c.confirm_select(1);
        take_output(c);
        CHECK(c.basic_publish(1, "amq.topic", "k.before", p, "small") == 1);
        uint64_t seq = shared ? c.basic_publish(1, "amq.topic", "k.big", p, body)
                              : c.basic_publish(1, "amq.topic", "k.big", p, *body);
        CHECK(seq == 2);
        CHECK(c.basic_publish(1, "amq.topic", "k.after", p, "tail") == 3);
    };
    Connection copied{ConnectionOptions{}};
    publish_all(copied, false);
    const std::string want = copied.output();
    REQUIRE(want.size() > body->size());

    for (size_t step : {size_t(1) << 30, size_t(65536 + 3), size_t(997)}) {
        CAPTURE(step);
        Connection c{ConnectionOptions{}};
        publish_all(c, true);
        CHECK(body.use_count() > 1);  // the connection holds it...
        std::vector<std::string_view> pieces(64);
        size_t k = c.output_pieces(pieces.data(), pieces.size());
        CHECK(k > 4);
        bool in_body = false;  // ...and some piece points into it: not copied
        for (size_t i = 0; i < k; ++i)
            in_body |= pieces[i].data() >= body->data() &&
                       pieces[i].data() < body->data() + body->size();
        CHECK(in_body);
        CHECK(drain_pieces(c, 16, step) == want);
        CHECK(body.use_count() == 1);  // ...until written
        CHECK_FALSE(c.wants_write());
    }
    // pending_output() alone, and output() (which flattens), give the same.
    Connection one{ConnectionOptions{}};
    publish_all(one, true);
    CHECK(drain_pieces(one, 1, 4096) == want);
    Connection flat{ConnectionOptions{}};
    publish_all(flat, true);
    CHECK(flat.output() == want);
    CHECK(body.use_count() == 1);
    // Frames queued after the big body still come after it.
    Connection hb{ConnectionOptions{}};
    publish_all(hb, true);
    hb.basic_ack(1, 9);
    std::string got = drain_pieces(hb, 16, 100000);
    CHECK(got.size() > want.size());
    CHECK(got.compare(0, want.size(), want) == 0);
}

TEST_CASE("connection: a small shared body is copied; a refused one is not kept") {
    Connection c{ConnectionOptions{}};
    open_connection(c);
    take_output(c);
    auto small = std::make_shared<const std::string>(Connection::kShareMin - 1, 's');
    c.basic_publish(1, "amq.topic", "k", {}, small);
    CHECK(small.use_count() == 1);
    CHECK(c.output().find(*small) != std::string::npos);
    take_output(c);
    auto big = std::make_shared<const std::string>(Connection::kShareMin, 'b');
    std::string why;
    CHECK(c.basic_publish(1, "amq.topic", std::string(256, 'k'), {}, big, false, &why) == 0);
    CHECK(why.find("routing key is 256 bytes") != std::string::npos);
    CHECK(big.use_count() == 1);
    CHECK_FALSE(c.wants_write());
    // No body at all is an empty body.
    c.basic_publish(1, "amq.topic", "k", {}, std::shared_ptr<const std::string>());
    auto sent = take_output(c);
    REQUIRE(sent.size() == 2);
    CHECK(sent[1].type == kFrameHeader);
}
