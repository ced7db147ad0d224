// Unit tests of the agent's pure parts: configuration, sysinfo, outbox.
#include <doctest/doctest.h>

#include <map>

#include "src/agent.hpp"
#include "src/config.hpp"
#include "src/outbox.hpp"
#include "src/output_capture.hpp"
#include "src/sysinfo.hpp"

using namespace ur;

namespace {
struct Env {
    std::map<std::string, std::string> vars;
    Getenv fn() {
        return [this](const char* k) -> const char* {
            auto it = vars.find(k);
            return it == vars.end() ? nullptr : it->second.c_str();
        };
    }
};
ConfigStatus parse(std::vector<const char*> args, Env& env, Config& cfg, std::string& err) {
    args.insert(args.begin(), "ur-agent");
    std::string out;
    return parse_config(int(args.size()), args.data(), env.fn(), cfg, out, err);
}
}  // namespace

TEST_CASE("config: defaults and environment") {
    Env env;
    Config cfg;
    std::string err;
    REQUIRE(parse({}, env, cfg, err) == ConfigStatus::Ok);
    REQUIRE(cfg.brokers.size() == 1);
    CHECK(cfg.brokers[0].host == "localhost");
    CHECK(cfg.brokers[0].port == 5672);
    CHECK(cfg.login == "guest");
    CHECK(cfg.password == "guest");
    CHECK(cfg.vhost == "/");
    CHECK(cfg.heartbeat_s == 30);
    CHECK(cfg.max_concurrency == 16);
    CHECK(cfg.work_dir == "/tmp/.ur-agent-work");
    CHECK(cfg.start_retry_s == 30);
    CHECK(cfg.max_waiting == 0);  // PROTOCOL.md: acked when started

    env.vars = {{"AMQP_HOST", "10.0.0.1"}, {"AMQP_PORT", "5673"}, {"AMQP_LOGIN", "ur"},
                {"AMQP_PASSWORD", "s3cret"}, {"AMQP_VHOST", "v"}};
    Config c2;
    REQUIRE(parse({}, env, c2, err) == ConfigStatus::Ok);
    CHECK(c2.brokers[0].host == "10.0.0.1");
    CHECK(c2.brokers[0].port == 5673);
    CHECK(c2.login == "ur");
    CHECK(c2.password == "s3cret");
    CHECK(c2.vhost == "v");
}

TEST_CASE("config: flags override the environment") {
    Env env;
    env.vars = {{"AMQP_HOST", "10.0.0.1"}};
    Config cfg;
    std::string err;
    REQUIRE(parse({"--broker", "a:1,b,[::1]:7", "--heartbeat=5", "--max-concurrency", "4",
                   "--state-dir", "/s", "--log-level", "debug", "--max-waiting", "64"},
                  env, cfg, err) == ConfigStatus::Ok);
    CHECK(cfg.max_waiting == 64);
    REQUIRE(cfg.brokers.size() == 3);
    CHECK(cfg.brokers[0].host == "a");
    CHECK(cfg.brokers[0].port == 1);
    CHECK(cfg.brokers[1].port == 5672);
    CHECK(cfg.brokers[2].host == "::1");
    CHECK(cfg.brokers[2].port == 7);
    CHECK(cfg.heartbeat_s == 5);
    CHECK(cfg.max_concurrency == 4);
    CHECK(cfg.work_dir == "/s/.ur-agent-work");
    CHECK(cfg.log_level == log::Level::Debug);

    // Blanks around a list's entries are no part of them (the second of
    // "a:1, b:2" was the host " b", never resolved).
    Config cb;
    REQUIRE(parse({"--broker", " a:1 ,\tb:2 "}, env, cb, err) == ConfigStatus::Ok);
    REQUIRE(cb.brokers.size() == 2);
    CHECK(cb.brokers[0].host == "a");
    CHECK(cb.brokers[1].host == "b");
    CHECK(cb.brokers[1].port == 2);
    CHECK(parse({"--broker", "a, ,b"}, env, cb, err) == ConfigStatus::Error);
    // A list written with blanks is refused, not resolved in vain for ever.
    CHECK(parse({"--broker", "127.0.0.1 5791"}, env, cb, err) == ConfigStatus::Error);
    CHECK(err == "--broker: broker address '127.0.0.1 5791' has a blank or control character "
                 "in its host (a list of brokers is separated by commas)");
    env.vars = {{"AMQP_HOST", "h1 h2"}};
    CHECK(parse({}, env, cb, err) == ConfigStatus::Error);
    CHECK(err.rfind("AMQP_HOST: broker address 'h1 h2' has a blank", 0) == 0);
    env.vars.clear();
    // A flag missing its value does not take the next option for it.
    Config cv;
    CHECK(parse({"--reboot-cmd", "--journal-fsync"}, env, cv, err) == ConfigStatus::Error);
    CHECK(err.find("--reboot-cmd needs a value (got the option '--journal-fsync'") == 0);
    REQUIRE(parse({"--reboot-cmd=--odd", "--login", "-"}, env, cv, err) == ConfigStatus::Ok);
    CHECK(cv.reboot_cmd == "--odd");
    CHECK(cv.login == "-");
    CHECK(parse({"--max-output", "10"}, env, cv, err) == ConfigStatus::Error);
    CHECK(err == "--max-output: expected a whole number from 1024 to 4294967296, got '10'");

    Config c2;
    REQUIRE(parse({"--start-retry", "0"}, env, c2, err) == ConfigStatus::Ok);
    CHECK(c2.start_retry_s == 0);
    Config c3;
    CHECK(parse({"--start-retry", "-1"}, env, c3, err) == ConfigStatus::Error);
    CHECK(err.find("--start-retry") != std::string::npos);
}

TEST_CASE("config: the pending-reply bound holds at least one whole reply") {
    Config cfg;
    CHECK(pending_bound(cfg) == 64u << 20);  // defaults: 64 MiB > 2 x 5 MiB + 4 KiB
    Env env;
    std::string err;
    REQUIRE(parse({"--max-output", "40000000", "--max-pending-bytes", "1000"}, env, cfg, err) ==
            ConfigStatus::Ok);
    CHECK(cfg.max_pending_bytes == 1000);
    CHECK(pending_bound(cfg) == 2 * (40000000 + 5 * 65536 + 256) + 4096);
    // The worst stream: control bytes, six each once escaped, the tail
    // (escaped only at the end) included.  Two of them and the rest of a
    // reply fit in the bound with nothing else waiting.
    for (uint64_t max_output : {uint64_t(1024), uint64_t(13000), uint64_t(300000)}) {
        Config c;
        c.max_output = max_output;
        c.max_pending_bytes = 1000;
        std::string ctl(3 * max_output + 100000, '\x01');
        OutputCapture cap(c.max_output, output_tail_keep(c), OutputCapture::Encoding::JsonEscaped);
        for (size_t i = 0; i < ctl.size(); i += 4093)
            cap.append(ctl.data() + i, std::min<size_t>(4093, ctl.size() - i));
        StreamCapture stream = cap.finish();
        CHECK(stream.truncated);
        CHECK(2 * stream.data.size() + 4096 <= pending_bound(c));
    }
}

TEST_CASE("config: bad flags and values are one-line errors") {
    Env env;
    std::string err;
    struct { std::vector<const char*> args; const char* msg; } cases[] = {
        {{"--bogus"}, "unknown option '--bogus'"},
        {{"--heartbeat"}, "--heartbeat needs a value"},
        {{"--heartbeat", "x"}, "--heartbeat: expected a whole number"},
        {{"--max-concurrency", "0"}, "from 1 to 4096"},
        {{"--broker", "a:"}, "missing port"},
        {{"--broker", "a:99999"}, "bad port"},
        {{"--broker", ",a"}, "empty broker address"},
        {{"--log-level", "loud"}, "--log-level"},
        {{"positional"}, "unexpected argument"},
        {{"--password-file", "/nonexistent/pw"}, "--password-file /nonexistent/pw"},
    };
    for (auto& c : cases) {
        Config cfg;
        err.clear();
        INFO(std::string(c.msg));
        // A file that cannot be read is said without the usage line.
        const bool file = std::string(c.msg).rfind("--password-file /", 0) == 0;
        CHECK(parse(c.args, env, cfg, err) ==
              (file ? ConfigStatus::FileError : ConfigStatus::Error));
        INFO(err);
        CHECK(err.find(c.msg) != std::string::npos);
        CHECK(err.find('\n') == std::string::npos);
    }
    env.vars = {{"AMQP_PORT", "http"}};
    Config cfg;
    CHECK(parse({}, env, cfg, err) == ConfigStatus::Error);
    CHECK(err.find("AMQP_PORT") != std::string::npos);

    // A URL or user:password@host is refused without repeating the password.
    for (const char* spec : {"amqp://guest:s3cret@10.0.0.1:5672", "guest:s3cret@10.0.0.1",
                             "amqp://10.0.0.1", "h1,u:s3cret@h2"}) {
        CAPTURE(spec);
        Config c2;
        Env none;
        CHECK(parse({"--broker", spec}, none, c2, err) == ConfigStatus::Error);
        CHECK(err.find("not a URL or user@host") != std::string::npos);
        CHECK(err.find("s3cret") == std::string::npos);
        Env e2;
        e2.vars = {{"AMQP_HOST", spec}};
        CHECK(parse({}, e2, c2, err) == ConfigStatus::Error);
        CHECK(err.find("s3cret") == std::string::npos);
    }
}

TEST_CASE("config: --help and --version") {
    Env env;
    Config cfg;
    std::string err;
    std::string out;
    const char* help[] = {"ur-agent", "--help"};
    CHECK(parse_config(2, help, env.fn(), cfg, out, err) == ConfigStatus::Exit);
    CHECK(out.find("--max-concurrency") != std::string::npos);
    const char* h[] = {"ur-agent", "-h"};
    std::string out_h;
    CHECK(parse_config(2, h, env.fn(), cfg, out_h, err) == ConfigStatus::Exit);
    CHECK(out_h == out);
    const char* ver[] = {"ur-agent", "--version"};
    CHECK(parse_config(2, ver, env.fn(), cfg, out, err) == ConfigStatus::Exit);
    CHECK(out.rfind("ur-agent ", 0) == 0);
}

TEST_CASE("config: --reconnect-max-ms caps the reconnect backoff, 1 to 30000, and --help says so") {
    Env env;
    Config cfg;
    std::string err;
    REQUIRE(parse({}, env, cfg, err) == ConfigStatus::Ok);
    CHECK(cfg.reconnect_max_ms == 10000);
    REQUIRE(parse({"--reconnect-max-ms", "1"}, env, cfg, err) == ConfigStatus::Ok);
    CHECK(cfg.reconnect_max_ms == 1);
    // 0 reconnected in a loop without a pause: 38,000 attempts a second.
    CHECK(parse({"--reconnect-max-ms", "0"}, env, cfg, err) == ConfigStatus::Error);
    CHECK(err == "--reconnect-max-ms: expected a whole number from 1 to 30000, got '0'");
    CHECK(parse({"--reconnect-max-ms", "30001"}, env, cfg, err) == ConfigStatus::Error);
    CHECK(usage_text().find("--reconnect-max-ms MS") != std::string::npos);
}

TEST_CASE("backoff: doubles to its cap, with a cap of 0 meaning at once") {
    Backoff b(100, 30000);
    uint64_t first = b.next(0), second = b.next(0);
    CHECK(first == 75);   // 75% of 100 with zero jitter
    CHECK(second == 150);
    for (int i = 0; i < 20; ++i) b.next(0);
    CHECK(b.next(0) == 22500);
    Backoff zero(0, 0);
    for (int i = 0; i < 100; ++i) CHECK(zero.next(0xffffffffu) == 0);
    // --reconnect-max-ms 1: never 0 (75% of 1 ms rounded down was).
    Backoff one(1, 1);
    for (uint32_t r = 0; r < 100; ++r) CHECK(one.next(r) == 1);
}

TEST_CASE("sysinfo: identity and admin MAC") {
    json::Value v;
    Identity id;
    std::string err;
    REQUIRE(parse_sysinfo(R"({"UUID":"ABCD-1","Hostname":"cn7","Network Interfaces":{
        "e0":{"MAC Address":"00:00:00:00:00:01","NIC Names":["external"]},
        "e1":{"MAC Address":"01:23:45:67:89:AB","NIC Names":["admin"]}}})",
                          v, id, err));
    // Kept as sysinfo gives them: CNAPI addresses the node by the body's UUID.
    CHECK(id.uuid == "ABCD-1");
    CHECK(id.mac == "01:23:45:67:89:AB");
    CHECK(id.hostname == "cn7");
    REQUIRE(parse_sysinfo(R"({"UUID":"u","Admin NIC Tag":"mgmt","Network Interfaces":{
        "e1":{"MAC Address":"aa","NIC Names":["admin"]},"e2":{"MAC Address":"bb","NIC Names":["mgmt"]}}})",
                          v, id, err));
    CHECK(id.mac == "bb");
    REQUIRE(parse_sysinfo(R"({"UUID":"u"})", v, id, err));
    CHECK(id.mac == "");
    CHECK(admin_nic(v) == nullptr);
    // The first NIC with the tag is the admin NIC (PROTOCOL.md): a MAC of
    // it that cannot be a routing-key word is no MAC, and no later NIC's
    // is taken instead; admin_nic() tells this from no admin NIC at all.
    for (const char* bad : {R"("02.00.00.00.00.01")", R"("#")", "5", R"("02:00 00")"}) {
        REQUIRE(parse_sysinfo(std::string(R"({"UUID":"u","Network Interfaces":{"e1":{"MAC Address":)") +
                                  bad + R"(,"NIC Names":["admin"]},"e2":{"MAC Address":"bb","NIC Names":["admin"]}}})",
                              v, id, err));
        CHECK(id.mac == "");
        REQUIRE(admin_nic(v) != nullptr);
        CHECK(json::write(*admin_nic(v)->find("MAC Address")) == bad);
    }
    CHECK_FALSE(parse_sysinfo(R"({"Hostname":"x"})", v, id, err));
    CHECK(err.find("UUID") != std::string::npos);
    CHECK_FALSE(parse_sysinfo(R"({"UUID":"a.b"})", v, id, err));
    CHECK_FALSE(parse_sysinfo(R"({"UUID":""})", v, id, err));
    CHECK(err == "sysinfo \"UUID\" is empty; this node cannot be identified");
    CHECK_FALSE(parse_sysinfo("[]", v, id, err));
    CHECK_FALSE(parse_sysinfo("{", v, id, err));
}

TEST_CASE("sysinfo: one odd byte or number does not keep the node out (read as Node read it)") {
    json::Value v;
    Identity id;
    std::string err;
    REQUIRE(parse_sysinfo("{\"UUID\":\"u1\",\"Product\":\"Acme \xff Server\","
                          "\"Serial\":\"\\ud800x\",\"Big\":1e400}",
                          v, id, err));
    CHECK(id.uuid == "u1");
    CHECK(v.find("Product")->as_string() == "Acme \xef\xbf\xbd Server");
    CHECK(v.find("Serial")->as_string() == "\xef\xbf\xbdx");
    CHECK(json::write(v) ==
          "{\"UUID\":\"u1\",\"Product\":\"Acme \\ufffd Server\","
          "\"Serial\":\"\\ufffdx\",\"Big\":null}");
    // Not JSON at all is still refused.
    CHECK_FALSE(parse_sysinfo("{\"UUID\":\"u1\",}", v, id, err));
}

static OutMessage msg(const char* key, size_t size, bool keep = true) {
    OutMessage m;
    m.routing_key = key;
    m.body = std::string(size, 'x');
    m.req_id = key;
    m.keep = keep;
    return m;
}

constexpr uint64_t kAnyTime = UINT64_MAX;  // unpublished(): refused ones' retry times passed

TEST_CASE("outbox: publish, confirm, reconnect, bound") {
    Outbox box(100, true);
    std::vector<OutMessage> dropped;
    box.push(msg("a", 10), dropped);
    box.push(msg("b", 10), dropped);
    box.push(msg("p", 10, false), dropped);
    auto un = box.unpublished(kAnyTime);
    REQUIRE(un.size() == 3);
    box.mark_published(un[0], 1);
    box.mark_published(un[1], 2);
    box.mark_published(un[2], 3);
    CHECK(box.unpublished(kAnyTime).empty());
    auto done = box.confirm(1, false);
    REQUIRE(done.size() == 1);
    CHECK(done[0].routing_key == "a");
    CHECK(box.bytes() == 20);
    box.connection_lost();  // b is kept, p (ephemeral) is dropped
    un = box.unpublished(kAnyTime);
    REQUIRE(un.size() == 1);
    CHECK(un[0]->routing_key == "b");
    box.mark_published(un[0], 1);
    box.nack(1, false, 0);
    CHECK(box.unpublished(kAnyTime).size() == 1);
    box.mark_published(box.unpublished(kAnyTime)[0], 2);
    box.push(msg("c", 10), dropped);
    box.mark_published(box.unpublished(kAnyTime)[0], 3);
    done = box.confirm(3, true);
    CHECK(done.size() == 2);
    CHECK(box.empty());
    CHECK(box.bytes() == 0);
    // The bound drops the oldest first.
    for (int i = 0; i < 12; ++i) box.push(msg("m", 10), dropped);
    CHECK(dropped.size() == 2);
    CHECK(box.bytes() == 100);
    CHECK(box.room() == 0);
}

TEST_CASE("outbox: a refused message is sent again after 1, 2, 4 s, then given up") {
    // A nack means some queue refused it (full, overflow reject-publish)
    // while others may have taken it: every retry duplicates it there, so
    // retries back off and end.  A nack once made it publish again every
    // second, forever.
    Outbox box(1000, true);
    std::vector<OutMessage> dropped;
    box.push(msg("r", 10), dropped);
    box.push(msg("other", 10), dropped);
    box.push(msg("ping", 10, false), dropped);
    uint64_t seq = 0, t = 5000;
    for (auto m : box.unpublished(t)) box.mark_published(m, ++seq);
    // r and the ephemeral ping are refused: the ping is given up at once.
    auto gone = box.nack(3, false, t);
    REQUIRE(gone.size() == 1);
    CHECK(gone[0].routing_key == "ping");
    CHECK(box.nack(1, false, t).empty());
    CHECK(box.unpublished(t).empty());  // not before its retry time
    CHECK(box.next_due() == t + 1000);
    CHECK(box.unpublished_bytes() == 10);
    for (uint64_t wait : {1000, 2000, 4000}) {
        CAPTURE(wait);
        CHECK(box.next_due() == t + wait);
        CHECK(box.unpublished(t + wait - 1).empty());
        auto un = box.unpublished(t + wait);
        REQUIRE(un.size() == 1);
        CHECK(un[0]->routing_key == "r");
        box.mark_published(un[0], ++seq);
        CHECK(box.next_due() == 0);
        t += wait;
        gone = box.nack(seq, false, t);
        if (wait < 4000) CHECK(gone.empty());
    }
    REQUIRE(gone.size() == 1);  // the fourth refusal
    CHECK(gone[0].routing_key == "r");
    CHECK(gone[0].refusals == 4);
    CHECK(box.next_due() == 0);
    CHECK(box.size() == 1);  // "other", in flight, untouched
    CHECK(box.unpublished_bytes() == 0);
    CHECK(box.confirm(2, false).size() == 1);
    CHECK(box.empty());
    CHECK(box.bytes() == 0);
    // A refused message waiting for its retry still counts and can be
    // dropped by the bound; the retry count goes with it.
    Outbox small(20);
    small.push(msg("x", 10), dropped);
    small.mark_published(small.unpublished(0)[0], 1);
    CHECK(small.nack(1, false, 0).empty());
    CHECK(small.next_due() == 1000);
    dropped.clear();
    small.push(msg("y", 15), dropped);
    REQUIRE(dropped.size() == 1);
    CHECK(dropped[0].routing_key == "x");
    CHECK(small.next_due() == 0);
}

TEST_CASE("outbox: a message whose key the broker refuses (403) waits while the others go") {
    // A topic permission refusing one reply key: the broker closes the
    // channel at each try of it, and everything queued behind it waited
    // for ever.  It now waits as a nacked one does, and is given up.
    Outbox box(1000, true);
    std::vector<OutMessage> dropped;
    box.push(msg("evil", 10), dropped);
    box.push(msg("good", 10), dropped);
    OutMessage ping = msg("ping", 10);
    ping.owed = false;
    box.push(std::move(ping), dropped);
    box.push(msg("beat", 10, false), dropped);
    CHECK(box.has_owed());
    uint64_t seq = 0, t = 5000;
    for (auto m : box.unpublished(t)) box.mark_published(m, ++seq);
    box.connection_lost();  // the channel closed: the heartbeat goes, the ping answer stays
    REQUIRE(box.size() == 3);
    // An owed reply is never given up (every reply key refused looks the
    // same, key by key, and the permission may be fixed): 1, 2, 4 ... s,
    // then every 60 s.
    auto pick = [](const char* key) {
        return [key](const OutMessage& m) { return m.routing_key == key; };
    };
    for (uint64_t wait : {1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000}) {
        CAPTURE(wait);
        CHECK(box.refuse_unpublished(pick("evil"), t).empty());
        auto un = box.unpublished(t);
        REQUIRE(un.size() == 2);  // the others at once, in order
        CHECK(un[0]->routing_key == "good");
        CHECK(un[1]->routing_key == "ping");
        CHECK(box.next_due() == t + wait);
        t += wait;
        un = box.unpublished(t);
        REQUIRE(un.size() == 3);
        CHECK(un[0]->routing_key == "evil");
    }
    // A ping answer (not owed) is given up at its fourth refusal.
    std::vector<OutMessage> gone;
    for (int i = 0; i < 4; ++i) {
        CAPTURE(i);
        gone = box.refuse_unpublished(pick("ping"), t);
        CHECK(gone.empty() == (i < 3));
        t += 10000;
    }
    REQUIRE(gone.size() == 1);
    CHECK(gone[0].routing_key == "ping");
    CHECK(box.size() == 2);
    CHECK(box.unpublished_bytes() == 20);
    // Only a ping answer left: kept, but nothing owed at shutdown.
    OutMessage again = msg("ping2", 10);
    again.owed = false;
    box.push(std::move(again), dropped);
    for (auto m : box.unpublished(t)) box.mark_published(m, ++seq);
    CHECK(box.confirm(seq - 1, true).size() == 2);
    CHECK(box.replies() == 0);
    CHECK_FALSE(box.has_owed());
    CHECK(box.size() == 1);
}

TEST_CASE("outbox: an answer no queue took (returned) is sent again, then given up") {
    Outbox box(1000, true);
    std::vector<OutMessage> dropped, unrouted;
    OutMessage late = msg("ur.ackC.u", 10);
    late.mandatory = true;
    box.push(late, dropped);
    box.push(msg("other", 10), dropped);  // not mandatory: never marked
    uint64_t seq = 0, t = 5000;
    for (auto m : box.unpublished(t)) box.mark_published(m, ++seq);
    box.returned("other");      // not mandatory: no such return
    box.returned("ur.ackD.u");  // nothing of ours
    box.returned("ur.ackC.u");
    // The confirm that follows the return: "other" is done, the answer waits.
    auto done = box.confirm(2, true, t, &unrouted);
    REQUIRE(done.size() == 1);
    CHECK(done[0].routing_key == "other");
    CHECK(unrouted.empty());
    for (uint64_t wait : {100, 200, 400, 800}) {
        CAPTURE(wait);
        CHECK(box.next_due() == t + wait);
        CHECK(box.unpublished(t + wait - 1).empty());
        t += wait;
        auto un = box.unpublished(t);
        REQUIRE(un.size() == 1);
        box.mark_published(un[0], ++seq);
        box.returned("ur.ackC.u");
        CHECK(box.confirm(seq, false, t, &unrouted).empty());
        if (wait < 800) CHECK(unrouted.empty());
    }
    REQUIRE(unrouted.size() == 1);  // the fifth return
    CHECK(unrouted[0].returns == 5);
    CHECK(box.empty());
    CHECK(box.bytes() == 0);
    CHECK(box.unpublished_bytes() == 0);
    // Returned, then the connection went before its confirm: sent again as
    // any unconfirmed one is, and a later confirm is a plain one.
    box.push(late, dropped);
    box.mark_published(box.unpublished(t)[0], 1);
    box.returned("ur.ackC.u");
    box.connection_lost();
    box.mark_published(box.unpublished(t)[0], 1);
    CHECK(box.confirm(1, false, t, &unrouted).size() == 1);
    CHECK(box.empty());
    // Two answers to one client (one key): the older routed and awaiting
    // its queue's confirm, the newer returned and acked at once.  The
    // return is the newer's, whose ack it comes before.
    OutMessage p1 = late, p2 = late;
    p1.body = std::string("p1");
    p2.body = std::string("p2");
    box.push(p1, dropped);
    box.push(p2, dropped);
    for (auto m : box.unpublished(t)) box.mark_published(m, ++seq);
    box.returned("ur.ackC.u");
    CHECK(box.confirm(seq, false, t, &unrouted).empty());  // p2: sent again
    REQUIRE(box.unpublished(t + 100).size() == 1);
    CHECK(*box.unpublished(t + 100)[0]->body.shared() == "p2");
    auto p1_done = box.confirm(seq - 1, false, t, &unrouted);  // p1: done
    REQUIRE(p1_done.size() == 1);
    CHECK(*p1_done[0].body.shared() == "p1");
    // A return left over (no covered message has its key) is forgotten.
    box.mark_published(box.unpublished(t + 100)[0], ++seq);
    box.returned("ur.ackZ.u");
    CHECK(box.confirm(seq, false, t, &unrouted).size() == 1);
    CHECK(box.empty());
}

TEST_CASE("outbox: the bound is on unpublished bytes; never drops one in flight or the new one") {
    Outbox box(100, true);
    std::vector<OutMessage> dropped;
    for (int i = 0; i < 8; ++i) box.push(msg(("p" + std::to_string(i)).c_str(), 10), dropped);
    uint64_t seq = 0;
    for (auto m : box.unpublished(kAnyTime)) box.mark_published(m, ++seq);
    // In flight (a burst of replies the broker has yet to confirm) leaves
    // the room whole: connected, no reply is cut or dropped for it.
    CHECK(box.room() == 100);
    for (int i = 1; i <= 10; ++i) box.push(msg(("u" + std::to_string(i)).c_str(), 10), dropped);
    CHECK(dropped.empty());
    CHECK(box.room() == 0);
    box.push(msg("u11", 10), dropped);  // over: u1, the oldest unpublished, goes
    REQUIRE(dropped.size() == 1);
    CHECK(dropped[0].routing_key == "u1");
    CHECK(box.unpublished_bytes() == 100);
    CHECK(box.bytes() == 180);
    // Alone over the bound, the new one stays; every older unpublished goes.
    box.push(msg("u12", 150), dropped);
    REQUIRE(dropped.size() == 11);
    CHECK(dropped[1].routing_key == "u2");
    CHECK(dropped[10].routing_key == "u11");
    CHECK(box.unpublished_bytes() == 150);
    CHECK(box.in_flight() == 8);
    auto un = box.unpublished(kAnyTime);
    REQUIRE(un.size() == 1);
    CHECK(un[0]->routing_key == "u12");
    CHECK(box.confirm(8, true).size() == 8);
    CHECK(box.bytes() == 150);
    // A lost connection makes what was in flight count again, and the next
    // push makes room from the oldest.
    box.mark_published(box.unpublished(kAnyTime)[0], 9);
    CHECK(box.unpublished_bytes() == 0);
    box.push(msg("u13", 40), dropped);
    box.connection_lost();
    CHECK(box.unpublished(kAnyTime).size() == 2);
    CHECK(box.unpublished_bytes() == 190);
    box.push(msg("u14", 20), dropped);
    REQUIRE(dropped.size() == 12);
    CHECK(dropped[11].routing_key == "u12");
    CHECK(dropped[11].body.size() == 150);
    CHECK(box.unpublished(kAnyTime).size() == 2);
    CHECK(box.unpublished_bytes() == 60);
    CHECK(box.bytes() == 60);
    // A nack counts its messages again; replace_body keeps the count.
    for (auto m : box.unpublished(kAnyTime)) box.mark_published(m, ++seq);
    CHECK(box.unpublished_bytes() == 0);
    box.nack(seq, false, 0);
    CHECK(box.unpublished_bytes() == 20);
    box.replace_body(box.unpublished(kAnyTime)[0], std::string(5, 'y'));
    CHECK(box.unpublished_bytes() == 5);
    CHECK(box.bytes() == 45);
}

TEST_CASE("outbox: the bound counts what a message costs to hold, not its body alone") {
    // A flood of ping replies (62 bytes of body under a 254-byte key) kept
    // 9.5 times --max-pending-bytes in memory when bodies alone counted.
    Outbox box(64 * 1024);
    const uint64_t each = 62 + 254 + Outbox::kOverheadBytes;
    std::vector<OutMessage> dropped;
    for (int i = 0; i < 10000; ++i) {
        OutMessage m;
        m.routing_key = std::string(254, 'k');
        m.body = std::string(62, 'b');
        m.keep = false;
        box.push(std::move(m), dropped);
    }
    CHECK(box.unpublished_bytes() <= 64 * 1024);
    CHECK(box.size() == 64 * 1024 / each);
    CHECK(box.unpublished_bytes() == box.size() * each);
    CHECK(dropped.size() == 10000 - box.size());
    // A reply cut to the room left is cut so that all it costs fits.
    Outbox two(10000);
    OutMessage r;
    r.routing_key = std::string(100, 'r');
    r.body = std::string(20000, 'x');
    r.cuttable = true;
    two.cut_to_fit(r, 100, [](const OutMessage&, uint64_t limit) { return std::string(size_t(limit), 'c'); });
    CHECK(r.body.size() == 10000 - 100 - Outbox::kOverheadBytes);
    CHECK(two.cost(r) == 10000);
}

namespace {
// An outbox of 1000 bytes whose cutter records each cut as "key@limit".
struct CuttingBox {
    Outbox box{1000, true};
    std::vector<OutMessage> dropped;
    std::vector<std::string> cuts;
    Outbox::Cutter cutter = [this](const OutMessage& m, uint64_t limit) {
        cuts.push_back(m.routing_key + "@" + std::to_string(limit));
        return std::string(size_t(limit), 'c');  // fit_reply gives at most limit
    };
};
}  // namespace

TEST_CASE_FIXTURE(CuttingBox, "outbox: past the bound replies are cut (new one first, then the oldest) before any is dropped") {
    auto reply = [&](const char* key, size_t size) {
        OutMessage m = msg(key, size);
        m.cuttable = true;
        return m;
    };
    auto add = [&](OutMessage m) {
        box.cut_to_fit(m, 100, cutter);
        box.push(std::move(m), dropped);
    };
    add(reply("r1", 300));
    add(reply("r2", 300));
    add(reply("r3", 300));                // 100 left
    add(msg("heartbeat", 50, false));      // not a reply: never cut
    CHECK(cuts.empty());
    add(reply("r4", 300));  // cut to the room left (50), at least 100; then r1 to 100
    REQUIRE(cuts.size() == 2);
    CHECK(cuts[0] == "r4@100");
    CHECK(cuts[1] == "r1@100");
    CHECK(box.unpublished_bytes() == 100 + 300 + 300 + 50 + 100);
    CHECK(dropped.empty());
    // In flight is not cut: only unpublished replies give up bytes.
    uint64_t seq = 0;
    for (auto m : box.unpublished(kAnyTime)) box.mark_published(m, ++seq);
    add(reply("r5", 2000));  // alone over the bound: cut to the whole room
    CHECK(cuts.back() == "r5@1000");
    CHECK(box.unpublished_bytes() == 1000);
    // Replies too small to cut fill it (r5 gives up its bytes on the way);
    // then the oldest unsent goes.
    for (int i = 0; i < 9; ++i) add(reply("s", 100));
    CHECK(cuts.size() == 4);
    CHECK(cuts.back() == "r5@100");
    CHECK(box.unpublished_bytes() == 1000);
    CHECK(dropped.empty());
    add(reply("s", 100));
    REQUIRE(dropped.size() == 1);
    CHECK(dropped[0].routing_key == "r5");
    CHECK(box.unpublished_bytes() == 1000);
    CHECK(box.in_flight() == 5);
}

TEST_CASE_FIXTURE(CuttingBox, "outbox: a whole reply (a script's, which waited for room) is never cut or dropped") {
    auto add = [&](const char* key, size_t size, bool whole) {
        OutMessage m = msg(key, size);
        m.cuttable = true;
        m.whole = whole;
        box.cut_to_fit(m, 100, cutter);
        box.push(std::move(m), dropped);
    };
    add("w1", 400, true);
    add("w2", 400, true);
    add("a1", 150, false);  // 50 left
    add("a2", 150, false);  // cut to 100 (at least min_cut), then a1 to 100; never w1/w2
    REQUIRE(cuts.size() == 2);
    CHECK(cuts[0] == "a2@100");
    CHECK(cuts[1] == "a1@100");
    CHECK(dropped.empty());
    CHECK(box.unpublished_bytes() == 1000);
    // Nothing left to cut: the oldest answer goes, never a whole reply.
    add("a3", 300, false);
    CHECK(cuts.back() == "a3@100");
    REQUIRE(dropped.size() == 1);
    CHECK(dropped[0].routing_key == "a1");
    add("a4", 90, false);
    REQUIRE(dropped.size() == 2);
    CHECK(dropped[1].routing_key == "a2");
    // A whole reply is not cut even past the bound (it is pushed only
    // when it fits, or into an empty outbox).
    add("w3", 500, true);
    CHECK(cuts.size() == 3);
    for (const auto& d : dropped) CHECK_FALSE(d.whole);
    auto un = box.unpublished(kAnyTime);
    std::vector<std::string> keys;
    for (auto m : un) keys.push_back(m->routing_key + ":" + std::to_string(m->body.size()));
    CHECK(keys == std::vector<std::string>{"w1:400", "w2:400", "w3:500"});
    CHECK(dropped.size() == 4);
}

TEST_CASE("outbox: in flight is held to the bound (a broker that withholds confirms)") {
    Outbox box(100, true);
    std::vector<OutMessage> dropped;
    uint64_t seq = 0;
    auto publish_all = [&] {
        for (auto m : box.unpublished(kAnyTime)) {
            if (!box.may_publish()) break;
            box.mark_published(m, ++seq);
        }
    };
    CHECK(box.may_publish());
    box.push(msg("big", 150), dropped);  // one may always go, whatever its size
    publish_all();
    CHECK(box.in_flight() == 1);
    CHECK_FALSE(box.may_publish());
    box.push(msg("a", 40), dropped);
    publish_all();
    CHECK(box.in_flight() == 1);
    CHECK(box.unpublished_bytes() == 40);
    CHECK(box.confirm(1, false).size() == 1);
    CHECK(box.may_publish());
    publish_all();
    CHECK(box.in_flight() == 1);
    CHECK(box.unpublished_bytes() == 0);
}

TEST_CASE("outbox: publishing many is linear, and the unpublished count stays exact") {
    // 100,000 replies queued while the broker was away: marking each one
    // published used to search the list from the start (hours here).
    const int n = 100000;
    Outbox box(uint64_t(n) * 10, true);
    std::vector<OutMessage> dropped;
    for (int i = 0; i < n; ++i) box.push(msg("m", 10), dropped);
    auto un = box.unpublished(kAnyTime);
    REQUIRE(un.size() == size_t(n));
    uint64_t seq = 0;
    for (auto m : un) box.mark_published(m, ++seq);
    CHECK(box.unpublished(kAnyTime).empty());
    CHECK(box.in_flight() == size_t(n));
    box.nack(10, true, 0);  // 1..10 back to unpublished
    CHECK(box.unpublished(kAnyTime).size() == 10);
    box.mark_published(box.unpublished(kAnyTime)[0], ++seq);
    box.mark_published(box.unpublished(kAnyTime)[0], 0);  // no sequence number: stays unpublished
    CHECK(box.unpublished(kAnyTime).size() == 9);
    CHECK(box.confirm(seq, true).size() == size_t(n) - 9);
    CHECK(box.unpublished(kAnyTime).size() == 9);
    CHECK(dropped.empty());
}

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>

#include "src/linux_sysinfo.hpp"

namespace {
std::string temp_dir() {
    char tmpl[] = "/tmp/ur-test-XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    return tmpl;
}
void write_text(const std::string& path, const std::string& text) {
    std::ofstream(path) << text;
}
}  // namespace

TEST_CASE("config: --config file, with flags beating env beating file") {
    std::string dir = temp_dir();
    std::string file = dir + "/ur.json";
    write_text(file, R"({"broker":"filehost:1","heartbeat":7,"login":"filelogin","max-concurrency":"3"})");
    Env env;
    Config cfg;
    std::string err;
    REQUIRE(parse({"--config", file.c_str()}, env, cfg, err) == ConfigStatus::Ok);
    CHECK(cfg.brokers[0].host == "filehost");
    CHECK(cfg.heartbeat_s == 7);
    CHECK(cfg.login == "filelogin");
    CHECK(cfg.max_concurrency == 3);
    env.vars = {{"AMQP_LOGIN", "envlogin"}, {"AMQP_HOST", "envhost"}};
    Config c2;
    REQUIRE(parse({"--config", file.c_str(), "--heartbeat", "9"}, env, c2, err) == ConfigStatus::Ok);
    CHECK(c2.login == "envlogin");
    CHECK(c2.brokers[0].host == "envhost");
    CHECK(c2.heartbeat_s == 9);

    write_text(file, R"({"brokr":"x"})");
    Config c3;
    CHECK(parse({"--config", file.c_str()}, env, c3, err) == ConfigStatus::FileError);
    CHECK(err.find("unknown key \"brokr\"") != std::string::npos);
    write_text(file, R"({"heartbeat":"x"})");
    CHECK(parse({"--config", file.c_str()}, env, c3, err) == ConfigStatus::FileError);
    CHECK(err.find("--heartbeat") != std::string::npos);
    write_text(file, "{,}");
    CHECK(parse({"--config", file.c_str()}, env, c3, err) == ConfigStatus::FileError);
    CHECK(err.find("line 1, column 2") != std::string::npos);
    // Which of two values was meant is not guessed.
    write_text(file, R"({"heartbeat":5,"login":"x","heartbeat":6})");
    CHECK(parse({"--config", file.c_str()}, env, c3, err) == ConfigStatus::FileError);
    CHECK(err == "--config " + file + ": line 1, column 41: duplicate key \"heartbeat\" in object");
    // No file, an empty name, a directory: said as such.
    CHECK(parse({"--config", (dir + "/none.json").c_str()}, env, c3, err) == ConfigStatus::FileError);
    CHECK(err == "--config " + dir + "/none.json: No such file or directory");
    CHECK(parse({"--config="}, env, c3, err) == ConfigStatus::Error);
    CHECK(err == "--config needs a file name (got an empty one)");
    CHECK(parse({"--config", ""}, env, c3, err) == ConfigStatus::Error);
    CHECK(parse({"--config", dir.c_str()}, env, c3, err) == ConfigStatus::FileError);
    CHECK(err == "--config " + dir + ": not a regular file");
    // Its value forgotten, the next option is not taken for a file name.
    CHECK(parse({"--config", "--heartbeat", "5"}, env, c3, err) == ConfigStatus::Error);
    CHECK(err.find("--config needs a value (got the option '--heartbeat'") == 0);
    // An action is no setting: a service would print and exit for ever.
    write_text(file, R"({"print-sysinfo":true})");
    CHECK(parse({"--config", file.c_str()}, env, c3, err) == ConfigStatus::FileError);
    CHECK(err.find("\"print-sysinfo\" is a command-line action") != std::string::npos);
    write_text(file, R"({"journal-fsync":true})");
    Config c4;
    CHECK(parse({"--config", file.c_str()}, env, c4, err) == ConfigStatus::Ok);
    CHECK(c4.journal_fsync);
}

TEST_CASE("config: Triton's boot parameter rabbitmq names the broker when nothing else does") {
    Env env;
    Config cfg;
    std::string err;
    bool used = false;
    // Asked for by a flag (the installed services) or the config file;
    // off by default.
    REQUIRE(parse({}, env, cfg, err) == ConfigStatus::Ok);
    CHECK_FALSE(cfg.boot_rabbitmq);
    REQUIRE(parse({"--boot-rabbitmq"}, env, cfg, err) == ConfigStatus::Ok);
    CHECK(cfg.boot_rabbitmq);
    CHECK(parse({"--boot-rabbitmq=1"}, env, cfg, err) == ConfigStatus::Error);
    CHECK(err == "--boot-rabbitmq takes no value");
    std::string file = temp_dir() + "/ur.json";
    write_text(file, R"({"boot-rabbitmq": true})");
    Config cf;
    REQUIRE(parse({"--config", file.c_str()}, env, cf, err) == ConfigStatus::Ok);
    CHECK(cf.boot_rabbitmq);
    write_text(file, R"({"boot-rabbitmq": "yes"})");
    CHECK(parse({"--config", file.c_str()}, env, cf, err) == ConfigStatus::FileError);
    cfg = Config();
    REQUIRE(parse({}, env, cfg, err) == ConfigStatus::Ok);
    REQUIRE(apply_boot_rabbitmq("ur:s3cret:10.99.99.20:5673", cfg, used, err));
    CHECK(used);
    REQUIRE(cfg.brokers.size() == 1);
    CHECK(cfg.brokers[0].host == "10.99.99.20");
    CHECK(cfg.brokers[0].port == 5673);
    CHECK(cfg.login == "ur");
    CHECK(cfg.password == "s3cret");
    CHECK(cfg.vhost == "/");
    // An optional fifth part is the vhost; empty parts keep the defaults.
    Config c2;
    REQUIRE(parse({}, env, c2, err) == ConfigStatus::Ok);
    REQUIRE(apply_boot_rabbitmq("::rabbitmq.example.com::v1", c2, used, err));
    CHECK(used);
    CHECK(c2.brokers[0].host == "rabbitmq.example.com");
    CHECK(c2.brokers[0].port == 5672);
    CHECK((c2.login == "guest" && c2.password == "guest" && c2.vhost == "v1"));
    // A broker configured (flag, AMQP_HOST, file) wins; a login or
    // password configured without a broker is kept.
    Config c3;
    REQUIRE(parse({"--broker", "10.0.0.1"}, env, c3, err) == ConfigStatus::Ok);
    REQUIRE(apply_boot_rabbitmq("ur:s3cret:10.99.99.20:5673", c3, used, err));
    CHECK_FALSE(used);
    CHECK((c3.brokers[0].host == "10.0.0.1" && c3.login == "guest"));
    env.vars = {{"AMQP_LOGIN", "mine"}};
    Config c4;
    REQUIRE(parse({}, env, c4, err) == ConfigStatus::Ok);
    REQUIRE(apply_boot_rabbitmq("ur:s3cret:10.99.99.20:5673", c4, used, err));
    CHECK((used && c4.login == "mine" && c4.password == "s3cret"));
    // An empty PORT is $AMQP_PORT's, as for any address given without one.
    env.vars = {{"AMQP_PORT", "5679"}};
    Config cp;
    REQUIRE(parse({}, env, cp, err) == ConfigStatus::Ok);
    REQUIRE(apply_boot_rabbitmq("u:p:10.0.0.9:", cp, used, err));
    CHECK((used && cp.brokers[0].port == 5679));
    env.vars = {{"AMQP_HOST", "envhost"}};
    Config c5;
    REQUIRE(parse({}, env, c5, err) == ConfigStatus::Ok);
    REQUIRE(apply_boot_rabbitmq("ur:s3cret:10.99.99.20:5673", c5, used, err));
    CHECK((!used && c5.brokers[0].host == "envhost"));
    // Malformed: said, and nothing taken.
    env.vars.clear();
    Config c6;
    REQUIRE(parse({}, env, c6, err) == ConfigStatus::Ok);
    CHECK_FALSE(apply_boot_rabbitmq("10.99.99.20", c6, used, err));
    CHECK(err == "expected LOGIN:PASSWORD:HOST:PORT, got 1 part");
    CHECK_FALSE(apply_boot_rabbitmq("a:b:c:d:e:f", c6, used, err));
    CHECK(err == "expected LOGIN:PASSWORD:HOST:PORT, got 6 parts");
    CHECK_FALSE(apply_boot_rabbitmq("a:b:host:99999", c6, used, err));
    CHECK(err == "not a port number: '99999'");
    CHECK_FALSE(apply_boot_rabbitmq("a:b:two hosts:5672", c6, used, err));
    CHECK_FALSE(used);
    CHECK((c6.brokers[0].host == "localhost" && c6.login == "guest"));
}

TEST_CASE("config: AMQP_PORT is the port of every address written without one") {
    std::string dir = temp_dir();
    std::string file = dir + "/ur.json";
    Env env;
    env.vars = {{"AMQP_PORT", "5996"}};
    std::string err;
    Config a;
    REQUIRE(parse({"--broker", "h1,h2:7,[::1],[::1]:8"}, env, a, err) == ConfigStatus::Ok);
    REQUIRE(a.brokers.size() == 4);
    CHECK(a.brokers[0].port == 5996);
    CHECK(a.brokers[1].port == 7);
    CHECK(a.brokers[2].port == 5996);
    CHECK(a.brokers[3].port == 8);
    // A port written in the file wins over AMQP_PORT; one left out there
    // is AMQP_PORT's.
    write_text(file, R"({"broker":"f:5995,g"})");
    Config b;
    REQUIRE(parse({"--config", file.c_str()}, env, b, err) == ConfigStatus::Ok);
    REQUIRE(b.brokers.size() == 2);
    CHECK(b.brokers[0].port == 5995);
    CHECK(b.brokers[1].port == 5996);
    // AMQP_HOST's own port wins too; the default host takes AMQP_PORT.
    env.vars = {{"AMQP_PORT", "5996"}, {"AMQP_HOST", "e:1,e2"}};
    Config c;
    REQUIRE(parse({}, env, c, err) == ConfigStatus::Ok);
    CHECK(c.brokers[0].port == 1);
    CHECK(c.brokers[1].port == 5996);
    env.vars = {{"AMQP_PORT", "5996"}};
    Config d;
    REQUIRE(parse({}, env, d, err) == ConfigStatus::Ok);
    CHECK(d.brokers[0].host == "localhost");
    CHECK(d.brokers[0].port == 5996);
    // Without AMQP_PORT a port left out is 5672.
    Config e;
    Env none;
    REQUIRE(parse({"--broker", "h1"}, none, e, err) == ConfigStatus::Ok);
    CHECK(e.brokers[0].port == 5672);
}

TEST_CASE("config: --password-file reads the first line") {
    std::string dir = temp_dir();
    std::string file = dir + "/pw";
    write_text(file, "hunter2\nignored\n");
    chmod(file.c_str(), 0600);
    Env env;
    Config cfg;
    std::string err;
    REQUIRE(parse({"--password-file", file.c_str()}, env, cfg, err) == ConfigStatus::Ok);
    CHECK(cfg.password == "hunter2");
    write_text(file, "");
    CHECK(parse({"--password-file", file.c_str()}, env, cfg, err) == ConfigStatus::FileError);
    CHECK(err.find("empty") != std::string::npos);
    CHECK(err.find("hunter2") == std::string::npos);
}

// The one reader the agent and urctl share (urctl had its own copy).
TEST_CASE("config: read_password_file: first line, errors name the flag and file") {
    std::string dir = temp_dir();
    std::string file = dir + "/pw";
    write_text(file, "s3cret\r\nrest");
    chmod(file.c_str(), 0640);
    std::string pw, err;
    bool loose = false;
    REQUIRE(ur::read_password_file(file, pw, err, &loose));
    CHECK(pw == "s3cret");
    CHECK(loose);
    chmod(file.c_str(), 0600);
    REQUIRE(ur::read_password_file(file, pw, err, &loose));
    CHECK(!loose);
    write_text(file, std::string(65537, 'x'));
    CHECK(!ur::read_password_file(file, pw, err));
    CHECK(err == "--password-file " + file + ": larger than 64 KiB");
    CHECK(!ur::read_password_file(dir, pw, err));
    CHECK(err == "--password-file " + dir + ": not a regular file");
    CHECK(!ur::read_password_file(dir + "/missing", pw, err));
    CHECK(err.rfind("--password-file " + dir + "/missing: ", 0) == 0);
    // A FIFO with no writer: refused at once, not waited on for ever.
    std::string fifo = dir + "/fifo";
    REQUIRE(mkfifo(fifo.c_str(), 0600) == 0);
    CHECK(!ur::read_password_file(fifo, pw, err));
    CHECK(err == "--password-file " + fifo + ": not a regular file");
    write_text(file, "\nsecond");
    CHECK(!ur::read_password_file(file, pw, err));
    CHECK(err == "--password-file " + file + ": the first line is empty");
    write_text(file, "");
    CHECK(!ur::read_password_file(file, pw, err));
    CHECK(err == "--password-file " + file + ": empty");
    CHECK(pw == "s3cret");  // untouched by the failures
}

#if defined(__linux__)
TEST_CASE("builtin sysinfo: from a fake /sys, /proc and /etc") {
    std::string root = temp_dir();
    auto mk = [&](const std::string& p) { mkdir((root + p).c_str(), 0755); };
    for (const char* d : {"/sys", "/sys/class", "/sys/class/net", "/sys/class/net/eth0",
                          "/sys/class/net/eth1", "/sys/class/net/lo", "/sys/class/dmi",
                          "/sys/class/dmi/id", "/proc", "/proc/net", "/etc"})
        mk(d);
    write_text(root + "/etc/machine-id", "0123456789abcdef0123456789ABCDEF\n");
    write_text(root + "/sys/class/net/eth0/address", "02:00:00:00:00:AA\n");
    write_text(root + "/sys/class/net/eth0/operstate", "up\n");
    write_text(root + "/sys/class/net/eth1/address", "02:00:00:00:00:bb\n");
    write_text(root + "/sys/class/net/eth1/operstate", "down\n");
    write_text(root + "/proc/net/route",
               "Iface\tDestination\tGateway\n eth1\t0000A8C0\t00000000\neth0\t00000000\t0101A8C0\n");
    // Quoted as the kernel takes them: a value in quotes, a whole word in
    // quotes, white space other than ' ' between words.
    write_text(root + "/proc/cmdline",
               "console=ttyS0 quiet  headnode=false\trabbitmq=\"guest:guest:10.0.0.1:5672\" "
               "\"dc=west 1\" note=\"a b\tc\" \"flag\" =a=b =x k1=v1\xA0k2=v2 "
               "-- --init-arg x\n");
    write_text(root + "/proc/stat", "cpu 1 2 3\nbtime 1700000000\n");
    write_text(root + "/proc/meminfo", "MemTotal:       2048000 kB\n");
    write_text(root + "/proc/cpuinfo", "processor\t: 0\nmodel name\t: Fake CPU @ 1GHz\n");
    write_text(root + "/setup.json", R"({"complete": true})");
    BuiltinSysinfoOptions o;
    o.root = root;
    o.datacenter = "dc1";
    o.setup_file = root + "/setup.json";
    json::Value v;
    std::string err;
    REQUIRE(builtin_sysinfo(o, v, err));
    CHECK(v.find("UUID")->as_string() == "01234567-89ab-cdef-0123-456789abcdef");
    CHECK(v.find("System Type")->as_string() == "Linux");
    CHECK(v.find("Boot Time")->as_string() == "1700000000");
    CHECK(v.find("CPU Type")->as_string() == "Fake CPU @ 1GHz");
    CHECK(v.find("MiB of Memory")->as_string() == "2000");
    CHECK(v.find("Datacenter Name")->as_string() == "dc1");
    CHECK(v.find("Setup")->as_string() == "true");
    CHECK(v.find("Boot Parameters")->find("console")->as_string() == "ttyS0");
    CHECK(v.find("Boot Parameters")->find("quiet")->as_string() == "true");
    CHECK(v.find("Boot Parameters")->find("headnode")->as_string() == "false");
    CHECK(v.find("Boot Parameters")->find("rabbitmq")->as_string() == "guest:guest:10.0.0.1:5672");
    CHECK(v.find("Boot Parameters")->find("dc")->as_string() == "west 1");
    CHECK(v.find("Boot Parameters")->find("note")->as_string() == "a b\tc");
    CHECK(v.find("Boot Parameters")->find("flag")->as_string() == "true");
    // As the kernel's parse_args(): an '=' first in a word is part of the
    // name, and 0xA0 is white space (its isspace() is Latin-1's).
    CHECK(v.find("Boot Parameters")->find("=a")->as_string() == "b");
    CHECK(v.find("Boot Parameters")->find("=x")->as_string() == "true");
    CHECK(v.find("Boot Parameters")->find("k1")->as_string() == "v1");
    CHECK(v.find("Boot Parameters")->find("k2")->as_string() == "v2");
    CHECK(v.find("Boot Parameters")->as_object().size() == 11);
    // After "--" come init's arguments, not the kernel's.
    CHECK(v.find("Boot Parameters")->find("--init-arg") == nullptr);
    CHECK(v.find("Boot Parameters")->find("x") == nullptr);
    CHECK(v.find("Boot Parameters")->find("--") == nullptr);
    const json::Value* nics = v.find("Network Interfaces");
    REQUIRE(nics);
    CHECK(nics->find("lo") == nullptr);
    CHECK(nics->find("eth0")->find("MAC Address")->as_string() == "02:00:00:00:00:aa");
    CHECK(nics->find("eth0")->find("Link Status")->as_string() == "up");
    CHECK(nics->find("eth0")->find("NIC Names")->as_array().size() == 1);
    CHECK(nics->find("eth1")->find("NIC Names")->as_array().empty());
    // What the agent derives from it.
    Identity id;
    REQUIRE(parse_sysinfo(json::write(v), v, id, err));
    CHECK(id.mac == "02:00:00:00:00:aa");

    // The real file's columns: a VPN's 0.0.0.0/1 (mask 00000080) and a
    // default route that is down come before the one that counts.
    write_text(root + "/proc/net/route",
               "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
               "eth1\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000080\t0\t0\t0\n"
               "eth1\t00000000\t0101A8C0\t0002\t0\t0\t0\t00000000\t0\t0\t0\n"
               "eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n");
    // A "model name" with no colon on its line is no CPU type.
    write_text(root + "/proc/cpuinfo", "model name\nprocessor\t: 0\n");
    REQUIRE(builtin_sysinfo(o, v, err));
    nics = v.find("Network Interfaces");
    CHECK(nics->find("eth0")->find("NIC Names")->as_array().size() == 1);
    CHECK(nics->find("eth1")->find("NIC Names")->as_array().empty());
    CHECK(v.find("CPU Type")->as_string() == "unknown");

    unlink((root + "/etc/machine-id").c_str());
    CHECK_FALSE(builtin_sysinfo(o, v, err));
    CHECK(err.find("UUID") != std::string::npos);
}

TEST_CASE("builtin sysinfo: this machine") {
    BuiltinSysinfoOptions o;
    json::Value v;
    std::string err;
    if (!builtin_sysinfo(o, v, err)) {
        MESSAGE("no UUID on this machine: " << err);
        return;
    }
    char host[256] = {0};
    gethostname(host, sizeof host - 1);
    CHECK(v.find("Hostname")->as_string() == host);
    CHECK(v.find("CPU Total Cores")->as_int() == sysconf(_SC_NPROCESSORS_CONF));
}
#endif

#include <ctime>
#include <random>

#include "src/clock.hpp"

TEST_CASE("clock: iso8601 matches gmtime + strftime, whatever order the times come in") {
    CHECK(iso8601(0) == "1970-01-01T00:00:00.000Z");
    CHECK(iso8601(1234) == "1970-01-01T00:00:01.234Z");
    CHECK(iso8601(1239) == "1970-01-01T00:00:01.239Z");  // same second, cached date
    CHECK(iso8601(1796532326168) == "2026-12-06T04:45:26.168Z");
    CHECK(iso8601(1796532326007) == "2026-12-06T04:45:26.007Z");
    CHECK(iso8601(1796532325999) == "2026-12-06T04:45:25.999Z");  // back a second
    std::mt19937_64 rng(7);
    uint64_t prev = 0;
    for (int i = 0; i < 20000; ++i) {
        uint64_t ms = rng() % 4102444800000ull;  // to 2100
        if (i % 3 == 1) ms = prev / 1000 * 1000 + rng() % 1000;  // the last second again
        prev = ms;
        time_t t = time_t(ms / 1000);
        struct tm tm;
        gmtime_r(&t, &tm);
        char want[64];
        size_t n = strftime(want, sizeof want, "%Y-%m-%dT%H:%M:%S", &tm);
        char frac[8];
        std::snprintf(frac, sizeof frac, ".%03uZ", unsigned(ms % 1000));
        REQUIRE(iso8601(ms) == std::string(want, n) + frac);
    }
}

TEST_CASE("sysinfo: the setup-state file, and why an unusable one is not complete") {
    std::string dir = temp_dir();
    std::string file = dir + "/setup.json";
    std::string problem;
    // Missing: a node not set up yet, nothing wrong.
    CHECK_FALSE(setup_complete(file, &problem));
    CHECK(problem.empty());
    write_text(file, R"({"complete": true, "other": 1})");
    CHECK(setup_complete(file, &problem));
    CHECK(problem.empty());
    write_text(file, R"({"complete": false})");
    CHECK_FALSE(setup_complete(file, &problem));
    CHECK(problem.empty());
    write_text(file, R"({"started": true})");
    CHECK_FALSE(setup_complete(file, &problem));
    CHECK(problem.empty());
    struct Case {
        const char* text;
        const char* says;
    };
    for (const Case& c : {Case{R"({"complete": tr)", "not valid JSON: "},
                          Case{"", "not valid JSON: "},
                          Case{"[true]", "not a JSON object"},
                          Case{R"({"complete": "true"})", "\"complete\" is not true or false"}}) {
        CAPTURE(c.text);
        write_text(file, c.text);
        problem.clear();
        CHECK_FALSE(setup_complete(file, &problem));
        CHECK(problem.rfind(c.says, 0) == 0);
        CHECK_FALSE(setup_complete(file));  // the caller need not ask why
    }
    REQUIRE(std::remove(file.c_str()) == 0);
    REQUIRE(mkdir(file.c_str(), 0700) == 0);
    problem.clear();
    CHECK_FALSE(setup_complete(file, &problem));
    CHECK(problem == file + ": not a regular file");
    rmdir(file.c_str());
    rmdir(dir.c_str());
}
