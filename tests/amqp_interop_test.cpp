// amqp::Connection against the real RabbitMQ that `make check` starts, and
// python3-pika as an independent consumer of what we publish.
#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "amqp/connection.hpp"
#include "tests/amqp_pump.hpp"

using namespace amqp;
using namespace amqp_test;

namespace {

#define SKIP_WITHOUT_RABBITMQ()                                                              \
    if (rabbitmq_port() == 0) {                                                              \
        MESSAGE("skipped: UR_TEST_RABBITMQ_PORT is unset (make check starts RabbitMQ)");     \
        return;                                                                              \
    }

uint32_t crc32(const std::string& s) {
    static uint32_t table[256];
    if (table[1] == 0)
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
    uint32_t c = 0xFFFFFFFFu;
    for (unsigned char b : s) c = table[(c ^ b) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

std::string make_body(size_t n) {
    std::string b(n, '\0');
    for (size_t i = 0; i < n; i++) b[i] = char((i * 131 + (i >> 12) + n) & 0xFF);
    return b;
}

ConnectionOptions options(const std::string& name) {
    ConnectionOptions o;
    o.connection_name = name;
    o.heartbeat = 10;
    return o;
}

std::string run(const std::string& cmd) {
    std::string out;
    FILE* p = popen(cmd.c_str(), "r");
    if (!p) return out;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    pclose(p);
    return out;
}

std::string unique(const char* prefix) {
    return std::string(prefix) + "-" + std::to_string(getpid()) + "-" +
           std::to_string(monotonic_ms());
}

// Opens the connection and channel 1.
void open(Pump& p, Connection& c) {
    REQUIRE(p.connected());
    REQUIRE(p.await(EventKind::Opened));
    REQUIRE(c.open_channel() == 1);
    REQUIRE(p.await(EventKind::ChannelOpened, 1));
}

}  // namespace

TEST_CASE("interop: handshake, queues, confirms and bodies of 0 B to 16 MiB, read by us and by pika") {
    SKIP_WITHOUT_RABBITMQ();
    Connection c(options(unique("ur-interop-bodies")));
    Pump p(c, rabbitmq_port());
    open(p, c);
    CHECK(table_find(c.server_properties(), "product")->bytes == "RabbitMQ");
    CHECK(c.heartbeat() == 10);

    std::string key = unique("ur.interop");
    std::string shared = unique("ur-interop-pika");
    c.confirm_select(1);
    c.queue_declare(1, "", false, false, true, true);
    REQUIRE(p.await(EventKind::QueueDeclared, 1));
    std::string ours = p.find(EventKind::QueueDeclared, 1)->queue;
    CHECK(ours.rfind("amq.gen-", 0) == 0);
    p.events().clear();
    c.queue_declare(1, shared, false, false, false, false);
    c.queue_bind(1, ours, "amq.topic", key);
    c.queue_bind(1, shared, "amq.topic", key);
    REQUIRE(p.run_until([&] { return p.count(EventKind::QueueBound) == 2 || c.is_closed(); }));
    c.basic_consume(1, ours, "ur-consumer", false, true);
    REQUIRE(p.await(EventKind::ConsumeOk, 1));

    const size_t sizes[] = {0, 1, 128 * 1024 + 1, 16u << 20};
    BasicProperties props;
    props.content_type = "application/octet-stream";
    uint64_t seq = 0;
    for (size_t n : sizes) {
        uint64_t s = c.basic_publish(1, "amq.topic", key, props, make_body(n));
        CHECK(s == ++seq);
    }
    // Every publish confirmed (the server may ack several at once), and
    // every body delivered to our consumer intact and in order.
    auto confirmed = [&] {
        uint64_t upto = 0;
        std::vector<bool> seen(seq + 1);
        for (auto& e : p.events()) {
            if (e.kind != EventKind::Confirmed) continue;
            if (e.multiple) upto = std::max(upto, e.delivery_tag);
            else if (e.delivery_tag <= seq) seen[e.delivery_tag] = true;
        }
        for (uint64_t i = 1; i <= seq; i++)
            if (i > upto && !seen[i]) return false;
        return true;
    };
    REQUIRE(p.run_until([&] {
        return (confirmed() && p.count(EventKind::Delivery) == 4) || c.is_closed();
    }, 60000));
    CHECK(p.count(EventKind::Nacked) == 0);
    size_t i = 0;
    for (auto& e : p.events()) {
        if (e.kind != EventKind::Delivery) continue;
        CHECK(e.body.size() == sizes[i]);
        CHECK(e.body == make_body(sizes[i]));
        CHECK(e.properties.content_type == "application/octet-stream");
        CHECK(e.routing_key == key);
        c.basic_ack(1, e.delivery_tag);
        i++;
    }
    p.flush();

    // The same messages, consumed from the shared queue by python3-pika.
    std::string script =
        "import pika, sys, zlib\n"
        "c = pika.BlockingConnection(pika.ConnectionParameters('127.0.0.1', int(sys.argv[1])))\n"
        "ch = c.channel()\n"
        "n = int(sys.argv[3])\n"
        "for m, props, body in ch.consume(sys.argv[2], auto_ack=True, inactivity_timeout=30):\n"
        "    if m is None: break\n"
        "    print(len(body), zlib.crc32(body), props.content_type, flush=True)\n"
        "    n -= 1\n"
        "    if n == 0: break\n"
        "c.close()\n";
    std::string py = run("/usr/bin/python3 -c \"" + script + "\" " +
                         std::to_string(rabbitmq_port()) + " " + shared + " 4 2>&1");
    std::string want;
    for (size_t n : sizes)
        want += std::to_string(n) + " " + std::to_string(crc32(make_body(n))) +
                " application/octet-stream\n";
    CHECK(py == want);

    c.queue_delete(1, shared);
    REQUIRE(p.await(EventKind::QueueDeleted, 1));
    c.close(200, "done");
    REQUIRE(p.await(EventKind::Closed));
    CHECK(p.find(EventKind::Closed)->close_reason == CloseReason::ClosedByUs);
}

TEST_CASE("interop: rabbitmqctl close_connection -> Closed 320") {
    SKIP_WITHOUT_RABBITMQ();
    const char* node = std::getenv("UR_TEST_RABBITMQ_NODE");
    if (!node) {
        MESSAGE("skipped: UR_TEST_RABBITMQ_NODE is unset");
        return;
    }
    std::string name = unique("ur-interop-close");
    Connection c(options(name));
    Pump p(c, rabbitmq_port());
    open(p, c);
    std::string list = run(std::string("tests/rabbitmq.sh ctl ") + node +
                           " list_connections -q --no-table-headers pid client_properties 2>&1");
    std::string pid;
    size_t at = list.find(name);
    REQUIRE_MESSAGE(at != std::string::npos, list);
    size_t line = list.rfind('\n', at);
    line = line == std::string::npos ? 0 : line + 1;
    pid = list.substr(line, list.find_first_of(" \t", line) - line);
    REQUIRE(!pid.empty());
    run(std::string("tests/rabbitmq.sh ctl ") + node + " close_connection '" + pid +
        "' 'closed by the ur test' 2>&1");
    REQUIRE(p.await(EventKind::Closed));
    Event* e = p.find(EventKind::Closed);
    CHECK(e->close_reason == CloseReason::ClosedByPeer);
    CHECK(e->code == 320);
    CHECK(e->text.find("closed by the ur test") != std::string::npos);
    p.flush();
}

TEST_CASE("interop: wrong password -> AuthFailure 403") {
    SKIP_WITHOUT_RABBITMQ();
    ConnectionOptions o = options(unique("ur-interop-auth"));
    o.password = "not-the-password";
    Connection c(o);
    Pump p(c, rabbitmq_port());
    REQUIRE(p.connected());
    REQUIRE(p.await(EventKind::Closed));
    Event* e = p.find(EventKind::Closed);
    CHECK(e->close_reason == CloseReason::AuthFailure);
    CHECK(e->code == 403);
    CHECK(e->text.find("not-the-password") == std::string::npos);
    CHECK(p.count(EventKind::Opened) == 0);
}

TEST_CASE("interop: another connection's exclusive queue -> ChannelClosed 405, connection stays") {
    SKIP_WITHOUT_RABBITMQ();
    std::string q = unique("ur-interop-excl");
    Connection owner(options(unique("ur-interop-owner")));
    Pump po(owner, rabbitmq_port());
    open(po, owner);
    owner.queue_declare(1, q, false, false, true, true);
    REQUIRE(po.await(EventKind::QueueDeclared, 1));

    Connection other(options(unique("ur-interop-other")));
    Pump pt(other, rabbitmq_port());
    open(pt, other);
    other.queue_declare(1, q, false, false, false, false);
    REQUIRE(pt.await(EventKind::ChannelClosed, 1));
    Event* e = pt.find(EventKind::ChannelClosed, 1);
    CHECK(e->code == 405);
    CHECK(e->class_id == 50);
    CHECK(e->method_id == 10);
    CHECK(other.is_open());
    pt.events().clear();
    REQUIRE(other.open_channel() == 1);  // the closed channel's number is free again
    REQUIRE(pt.await(EventKind::ChannelOpened, 1));
    other.queue_declare(1, "", false, false, true, true);
    CHECK(pt.await(EventKind::QueueDeclared, 1));

    other.close();
    owner.close();
    CHECK(pt.await(EventKind::Closed));
    CHECK(po.await(EventKind::Closed));
}
