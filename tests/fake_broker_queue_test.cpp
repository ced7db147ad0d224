// Tests of tools/fake-broker, queue semantics: topic matching, routing,
// mandatory returns and confirms, exclusive and auto-delete queues, prefetch,
// acks, rejects and redelivery, and the control queries.
#include <doctest/doctest.h>

#include "tests/fake_broker_harness.hpp"

using namespace amqp;
using namespace fake_broker_test;

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
    REQUIRE(c.confirm_select(1));

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

TEST_CASE("fake broker: --reply-sink takes Ur answers no queue is bound to, nothing else") {
    fake::Options o;
    o.reply_sink = true;
    Running r(o);
    Client c(r.broker.port());
    REQUIRE(c.handshake());
    REQUIRE(c.open_channel(1));
    REQUIRE(c.confirm_select(1));
    BasicAck ack;
    for (const char* key : {"ur.execute-reply.u1.r1", "ur.ackC.u1"}) {
        CAPTURE(key);
        c.publish(1, "amq.topic", key, "{}", true);
        REQUIRE(c.expect<BasicAck>(1, &ack));  // no return before it
    }
    c.publish(1, "amq.topic", "ur.execute.u1.r1", "{}", true);
    BasicReturn ret;
    REQUIRE(c.expect<BasicReturn>(1, &ret));
    CHECK(ret.routing_key == "ur.execute.u1.r1");
    CHECK(r.cmd("messages #") == "ok 3");
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
