// Tests of tools/fake-broker, protocol basics: handshake, framing, heartbeats,
// protocol violations, the program itself, large bodies and many connections,
// with the raw client of fake_broker_harness.hpp, Debian's python3-pika and
// our own amqp::Connection.  Queue semantics: fake_broker_queue_test.cpp;
// fault injection: fake_broker_fault_test.cpp.
#include <doctest/doctest.h>

#include "tests/fake_broker_harness.hpp"

using namespace amqp;
using namespace fake_broker_test;

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
    REQUIRE(pub.confirm_select(1));
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
