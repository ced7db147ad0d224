// Tests of tools/fake-broker, fault injection: every control command that
// drops, freezes, corrupts, closes, refuses, delays or blocks.
#include <doctest/doctest.h>

#include "tests/fake_broker_harness.hpp"

using namespace amqp;
using namespace fake_broker_test;

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
    REQUIRE(c.confirm_select(1));
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

TEST_CASE("fault: deny-transient-queues closes the connection as RabbitMQ 4.3 does; server-version") {
    Running r;
    CHECK(r.cmd("deny-transient-queues on") == "ok denying transient non-exclusive queues");
    CHECK(r.cmd("server-version RabbitMQ 4.3.1") == "ok RabbitMQ 4.3.1");
    {
        Client c(r.broker.port());
        ConnectionStart start;
        REQUIRE(c.handshake(0, 131072, &start));
        const FieldValue* product = table_find(start.server_properties, "product");
        const FieldValue* version = table_find(start.server_properties, "version");
        REQUIRE(product);
        REQUIRE(version);
        CHECK(product->bytes == "RabbitMQ");
        CHECK(version->bytes == "4.3.1");
        REQUIRE(c.open_channel(1));
        // Exclusive, or durable: allowed.
        CHECK(c.queue(1, "excl", true, {}, true) == "excl");
        CHECK(r.cmd("queue-flags excl") == "ok durable=0 exclusive=1 auto_delete=1");
        QueueDeclare durable;
        durable.queue = "dur";
        durable.durable = true;
        c.send_method(1, durable);
        REQUIRE(c.expect<QueueDeclareOk>(1));
        CHECK(r.cmd("queue-flags dur") == "ok durable=1 exclusive=0 auto_delete=0");
        // Neither: the whole connection goes.
        QueueDeclare transient;
        transient.queue = "ur.ping.u1";
        transient.auto_delete = true;
        c.send_method(1, transient);
        ConnectionClose cc;
        REQUIRE(c.expect<ConnectionClose>(0, &cc));
        CHECK(cc.reply_code == 541);
        CHECK(cc.reply_text.find("transient_nonexcl_queues") != std::string::npos);
        CHECK(cc.class_id == 50);
        CHECK(cc.method_id == 10);
        c.send_method(0, ConnectionCloseOk{});
        CHECK(r.cmd("queue-flags ur.ping.u1") == "error no such queue");
    }
    CHECK(r.cmd("deny-transient-queues off") == "ok allowing transient non-exclusive queues");
    Client c(r.broker.port());
    REQUIRE(c.handshake());
    REQUIRE(c.open_channel(1));
    CHECK(c.queue(1, "ur.ping.u1", false, {}, true) == "ur.ping.u1");
    CHECK(r.cmd("queue-flags ur.ping.u1") == "ok durable=0 exclusive=0 auto_delete=1");
    CHECK(r.cmd("server-version RabbitMQ") == "error usage: server-version PRODUCT VERSION");
}

TEST_CASE("fault: confirm-delay holds publisher confirms") {
    Running r;
    Client c(r.broker.port());
    REQUIRE(c.handshake());
    REQUIRE(c.open_channel(1));
    REQUIRE(c.confirm_select(1));
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
