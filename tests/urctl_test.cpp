// urctl without a broker: the command line, the protocol pieces (keys,
// bodies, reply parsing) and the output formats.  The commands against a
// broker are in urctl_process_test.cpp.
#include <doctest/doctest.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "json/json.hpp"
#include "tools/urctl/format.hpp"
#include "tools/urctl/options.hpp"
#include "tools/urctl/ur_client.hpp"

using namespace urctl;

namespace {

struct Parsed {
    ParseStatus status;
    Options opt;
    std::string output, error;
};

Parsed parse(std::vector<std::string> args, std::map<std::string, std::string> env = {}) {
    std::vector<const char*> argv{"urctl"};
    for (const std::string& a : args) argv.push_back(a.c_str());
    Parsed p;
    auto getenv = [&](const char* name) -> const char* {
        auto it = env.find(name);
        return it == env.end() ? nullptr : it->second.c_str();
    };
    p.status = parse_args(int(argv.size()), argv.data(), getenv, p.opt, p.output, p.error);
    return p;
}

json::Value parse_json(const std::string& text) {
    json::Value v;
    json::ParseError e;
    REQUIRE_MESSAGE(json::parse(text, v, e), text);
    return v;
}

}  // namespace

TEST_CASE("urctl options: commands, positionals and defaults") {
    Parsed p = parse({"ping", "cn1"});
    REQUIRE(p.status == ParseStatus::Ok);
    CHECK(p.opt.command == Command::Ping);
    CHECK(p.opt.node == "cn1");
    CHECK(p.opt.timeout_ms == 5000);
    REQUIRE(p.opt.brokers.size() == 1);
    CHECK(p.opt.brokers[0].host == "localhost");
    CHECK(p.opt.brokers[0].port == 5672);

    p = parse({"discover", "--timeout", "0.25", "--json"});
    REQUIRE(p.status == ParseStatus::Ok);
    CHECK(p.opt.command == Command::Discover);
    CHECK(p.opt.timeout_ms == 250);
    CHECK(p.opt.json);
    CHECK(p.opt.expect == 0);

    p = parse({"discover", "--expect", "1000"});
    REQUIRE_MESSAGE(p.status == ParseStatus::Ok, p.error);
    CHECK(p.opt.expect == 1000);
    p = parse({"oneach", "--expect=3", "uname"});
    REQUIRE_MESSAGE(p.status == ParseStatus::Ok, p.error);
    CHECK(p.opt.expect == 3);

    p = parse({"--broker=10.0.0.1:5673,[::1]", "exec", "cn1", "--env", "FOO=bar=baz", "--env",
               "X=", "echo hi", "--kill-after", "30", "--", "a", "--b", "-"});
    REQUIRE_MESSAGE(p.status == ParseStatus::Ok, p.error);
    CHECK(p.opt.command == Command::Exec);
    CHECK(p.opt.node == "cn1");
    CHECK(p.opt.script == "echo hi");
    CHECK_FALSE(p.opt.script_from_stdin);
    CHECK(p.opt.args == std::vector<std::string>{"a", "--b", "-"});
    REQUIRE(p.opt.env.size() == 2);
    CHECK(p.opt.env[0] == std::make_pair(std::string("FOO"), std::string("bar=baz")));
    CHECK(p.opt.env[1] == std::make_pair(std::string("X"), std::string("")));
    CHECK(p.opt.kill_after_set);
    CHECK(p.opt.kill_after_s == 30);
    CHECK(p.opt.timeout_ms == 60000);
    REQUIRE(p.opt.brokers.size() == 2);
    CHECK(p.opt.brokers[0].host == "10.0.0.1");
    CHECK(p.opt.brokers[0].port == 5673);
    CHECK(p.opt.brokers[1].host == "::1");
    CHECK(p.opt.brokers[1].port == 5672);

    p = parse({"exec", "cn1", "-"});
    REQUIRE(p.status == ParseStatus::Ok);
    CHECK(p.opt.script_from_stdin);

    p = parse({"exec", "cn1", "--file", "/opt/setup.sh"});
    REQUIRE(p.status == ParseStatus::Ok);
    CHECK(p.opt.file == "/opt/setup.sh");

    p = parse({"oneach", "--nodes", "cn1,cn2", "uname"});
    REQUIRE(p.status == ParseStatus::Ok);
    CHECK(p.opt.command == Command::OnEach);
    CHECK(p.opt.nodes == std::vector<std::string>{"cn1", "cn2"});

    p = parse({"watch"});
    REQUIRE(p.status == ParseStatus::Ok);
    CHECK(p.opt.patterns == std::vector<std::string>{"ur.#"});
    CHECK(p.opt.timeout_ms == 0);

    p = parse({"watch", "ur.execute.#", "ur.ping.*", "--count", "3"});
    REQUIRE(p.status == ParseStatus::Ok);
    CHECK(p.opt.patterns == std::vector<std::string>{"ur.execute.#", "ur.ping.*"});
    CHECK(p.opt.count == 3);
}

TEST_CASE("urctl options: the environment, then flags") {
    std::map<std::string, std::string> env{{"AMQP_HOST", "rabbit"},
                                           {"AMQP_PORT", "5999"},
                                           {"AMQP_LOGIN", "ur"},
                                           {"AMQP_PASSWORD", "s3cret"},
                                           {"AMQP_VHOST", "/dc"}};
    Parsed p = parse({"discover"}, env);
    REQUIRE(p.status == ParseStatus::Ok);
    REQUIRE(p.opt.brokers.size() == 1);
    CHECK(p.opt.brokers[0].host == "rabbit");
    CHECK(p.opt.brokers[0].port == 5999);
    CHECK(p.opt.login == "ur");
    CHECK(p.opt.password == "s3cret");
    CHECK(p.opt.vhost == "/dc");

    p = parse({"discover", "--broker", "other:1", "--login", "me", "--vhost", "/"}, env);
    REQUIRE(p.status == ParseStatus::Ok);
    CHECK(p.opt.brokers[0].host == "other");
    CHECK(p.opt.brokers[0].port == 1);
    CHECK(p.opt.login == "me");
    CHECK(p.opt.vhost == "/");

    // AMQP_PORT is the port of a --broker address written without one.
    p = parse({"discover", "--broker", "a,b:2"}, env);
    REQUIRE(p.status == ParseStatus::Ok);
    CHECK(p.opt.brokers[0].port == 5999);
    CHECK(p.opt.brokers[1].port == 2);

    p = parse({"discover"}, {{"AMQP_PORT", "70000"}});
    CHECK(p.status == ParseStatus::Error);
    CHECK(p.error.find("AMQP_PORT") != std::string::npos);
}

TEST_CASE("urctl options: usage errors say what is wrong") {
    struct Case {
        std::vector<std::string> args;
        const char* says;
    };
    const Case cases[] = {
        {{}, "missing command"},
        {{"frobnicate"}, "unknown command"},
        {{"ping"}, "missing NODE"},
        {{"ping", "a", "b"}, "unexpected argument 'b'"},
        {{"exec", "cn1"}, "missing SCRIPT"},
        {{"exec", "cn1", ""}, "the SCRIPT is empty"},
        {{"oneach", ""}, "the SCRIPT is empty"},
        {{"exec", "cn1", "--file", "/x", "echo"}, "not both"},
        {{"exec", "cn1", "echo", "extra"}, "after '--'"},
        {{"exec", "cn1", "echo", "--env", "noequals"}, "K=V"},
        {{"exec", "cn1", "echo", "--env", "=v"}, "K=V"},
        {{"exec", "cn1", "echo", "--kill-after", "1.5"}, "whole seconds"},
        {{"discover", "--timeout", "0"}, "from 0.001 to 31536000"},
        {{"discover", "--timeout", "1e9"}, "from 0.001 to 31536000"},
        {{"discover", "--timeout", "31536001"}, "(a year)"},
        {{"exec", "cn1", "echo", "--kill-after", "4294967296"}, "from 1 to 31536000"},
        {{"discover", "--timeout", "abc"}, "seconds"},
        {{"discover", "--timeout", "1.2345"}, "seconds"},
        {{"discover", "--timeout"}, "needs a value"},
        {{"discover", "--json=yes"}, "takes no value"},
        {{"discover", "--bogus"}, "unknown option '--bogus'"},
        {{"discover", "-x"}, "unknown option '-x'"},
        {{"discover", "--env", "A=b"}, "--env does not apply to discover"},
        {{"ping", "cn1", "--count", "2"}, "--count does not apply to ping"},
        {{"watch", "--nodes", "a"}, "--nodes does not apply to watch"},
        {{"ping", "cn1", "--", "x"}, "only apply to exec and oneach"},
        {{"oneach", "--nodes", "a,,b", "uname"}, "empty node name"},
        {{"watch", "--count", "0"}, "from 1 to 4294967295"},
        {{"watch", "ur.#." + std::string(300, 'a')}, "a PATTERN is at most 255 bytes (got 305)"},
        {{"discover", "--broker", "h:0"}, "bad port"},
        {{"discover", "--broker", "a,,b"}, "empty broker"},
        {{"discover", "--broker", "[::1"}, "unbalanced"},
        {{"discover", "--login", ""}, "must not be empty"},
        {{"discover", "--expect", "0"}, "from 1 to 10000000"},
        {{"discover", "--expect", "-1"}, "whole number of nodes"},
        {{"discover", "--expect", "many"}, "whole number of nodes"},
        {{"exec", "cn1", "echo", "--expect", "2"}, "--expect does not apply to exec"},
        {{"ping", "cn1", "--expect", "1"}, "--expect does not apply to ping"},
        {{"oneach", "--nodes", "a", "--expect", "1", "uname"}, "not apply with --nodes"},
    };
    for (const Case& c : cases) {
        std::string joined;
        for (const std::string& a : c.args) joined += a + " ";
        CAPTURE(joined);
        Parsed p = parse(c.args);
        CHECK(p.status == ParseStatus::Error);
        CHECK_MESSAGE(p.error.find(c.says) != std::string::npos, p.error);
    }
}

TEST_CASE("urctl options: a password never appears in an error") {
    Parsed p = parse({"discover", "--bogus"}, {{"AMQP_PASSWORD", "hunter2"}});
    CHECK(p.status == ParseStatus::Error);
    CHECK(p.error.find("hunter2") == std::string::npos);
}

TEST_CASE("urctl options: --help documents every exit code; --version") {
    Parsed p = parse({"exec", "--help"});
    REQUIRE(p.status == ParseStatus::Exit);
    for (const char* s : {"  2    usage", "  3    broker", "  4    timeout", "  5    unknown node",
                          "--kill-after", "({})", "AMQP_PASSWORD", "--json", "watch", "oneach"})
        CHECK_MESSAGE(p.output.find(s) != std::string::npos, s);
    p = parse({"--version"});
    REQUIRE(p.status == ParseStatus::Exit);
    CHECK(p.output.rfind("urctl ", 0) == 0);
}

TEST_CASE("urctl parse_seconds") {
    uint64_t ms = 0;
    CHECK(parse_seconds("3", 100, ms));
    CHECK(ms == 3000);
    CHECK(parse_seconds("0.5", 100, ms));
    CHECK(ms == 500);
    CHECK(parse_seconds("1.05", 100, ms));
    CHECK(ms == 1050);
    CHECK(parse_seconds("100", 100, ms));
    CHECK_FALSE(parse_seconds("100.1", 100, ms));
    CHECK_FALSE(parse_seconds("101", 100, ms));
    CHECK_FALSE(parse_seconds("", 100, ms));
    CHECK_FALSE(parse_seconds(".5", 100, ms));
    CHECK_FALSE(parse_seconds("5.", 100, ms));
    CHECK_FALSE(parse_seconds("-1", 100, ms));
    CHECK_FALSE(parse_seconds("99999999999999999999999", 100, ms));
}

TEST_CASE("urctl identifiers: random UUIDs are v4, distinct, without dots") {
    std::set<std::string> seen;
    for (int i = 0; i < 50; ++i) {
        std::string u, err;
        REQUIRE(random_uuid(u, err));
        CHECK(looks_like_uuid(u));
        CHECK(u.find('.') == std::string::npos);
        CHECK(u[14] == '4');
        CHECK(std::string("89ab").find(u[19]) != std::string::npos);
        CHECK(u == to_lower(u));
        seen.insert(u);
    }
    CHECK(seen.size() == 50);
    CHECK(looks_like_uuid("00000000-ABCD-0000-fedc-ba9876543210"));
    CHECK_FALSE(looks_like_uuid("00000000-abcd-0000-fedc-ba987654321"));
    CHECK_FALSE(looks_like_uuid("00000000-abcd-0000-fedc-ba987654321g"));
    CHECK_FALSE(looks_like_uuid("00000000.abcd-0000-fedc-ba9876543210"));
    CHECK_FALSE(looks_like_uuid("cn7"));
}

TEST_CASE("urctl keys and bindings are urclient's") {
    CHECK(client_queue_name("c1") == "ur.urctl.c1");
    CHECK(client_bindings("c1") == std::vector<std::string>{"ur.execute-reply.*.*",
                                                           "ur.startup.#", "ur.sysinfo.#",
                                                           "ur.ackc1.*"});
    CHECK(execute_key("u", "r") == "ur.execute.u.r");
    CHECK(ping_key("u") == "ur.ping.u");
    CHECK(broadcast_sysinfo_key("r") == "ur.broadcast.sysinfo.r");

    IncomingKey k = classify_key("ur.execute-reply.node-1.req-9", "c1");
    CHECK(k.kind == IncomingKey::Kind::ExecuteReply);
    CHECK(k.node == "node-1");
    CHECK(k.req_id == "req-9");
    k = classify_key("ur.ackc1.node-1", "c1");
    CHECK(k.kind == IncomingKey::Kind::Ack);
    CHECK(k.node == "node-1");
    CHECK(classify_key("ur.ackc2.node-1", "c1").kind == IncomingKey::Kind::Other);
    CHECK(classify_key("ur.ackc1.", "c1").kind == IncomingKey::Kind::Other);
    CHECK(classify_key("ur.startup.n", "c1").kind == IncomingKey::Kind::Startup);
    k = classify_key("ur.sysinfo.n.1234abcd", "c1");
    CHECK(k.kind == IncomingKey::Kind::Sysinfo);
    CHECK(k.node == "n");
    // Malformed reply keys are not replies.
    for (const char* bad : {"ur.execute-reply.", "ur.execute-reply.x", "ur.execute-reply..r",
                            "ur.execute-reply.n.", "", "ur", "ur.execute.n.r"})
        CHECK_MESSAGE(classify_key(bad, "c1").kind == IncomingKey::Kind::Other, bad);
}

TEST_CASE("urctl execute body: urclient's shape, env {} by default, timeout only when asked") {
    ExecuteRequest r;
    r.script = with_interpreter("echo hi");
    r.origin_user = "admin";
    r.origin_hostname = "hn";
    json::Value v = parse_json(execute_body(r));
    CHECK(v.find("type")->as_string() == "script");
    CHECK(v.find("script")->as_string() == "#!/bin/sh\necho hi");
    CHECK(v.find("args")->is_array());
    CHECK(v.find("args")->as_array().empty());
    REQUIRE(v.find("env"));
    CHECK(v.find("env")->is_object());
    CHECK(v.find("env")->as_object().empty());
    CHECK(v.find("origin")->find("user")->as_string() == "admin");
    CHECK(v.find("origin")->find("hostname")->as_string() == "hn");
    CHECK(v.find("timeout") == nullptr);
    CHECK(v.find("file") == nullptr);

    r.is_file = true;
    r.script = "/opt/setup.sh";
    r.args = {"a b", "\"q\""};
    r.env = {{"FOO", "bar"}, {"PATH", "/bin"}};
    r.has_kill_after = true;
    r.kill_after_s = 42;
    v = parse_json(execute_body(r));
    CHECK(v.find("type")->as_string() == "file");
    CHECK(v.find("file")->as_string() == "/opt/setup.sh");
    CHECK(v.find("script") == nullptr);
    REQUIRE(v.find("args")->as_array().size() == 2);
    CHECK(v.find("args")->as_array()[1].as_string() == "\"q\"");
    CHECK(v.find("env")->find("FOO")->as_string() == "bar");
    CHECK(v.find("timeout")->as_int() == 42);

    CHECK(with_interpreter("#!/bin/bash\nx") == "#!/bin/bash\nx");

    v = parse_json(ping_body("cid", "rid"));
    CHECK(v == parse_json(R"({"client_id":"cid","id":"rid"})"));
}

TEST_CASE("urctl reply parsing takes hostile bodies") {
    ExecuteReply r = parse_execute_reply(
        R"({"exit_status":3,"stdout":"o","stderr":"e","timed_out":true,"signal":"SIGKILL",
            "stdout_truncated":true})");
    CHECK(r.ok);
    CHECK(r.exit_status == 3);
    CHECK(r.out == "o");
    CHECK(r.err == "e");
    CHECK(r.timed_out);
    CHECK(r.signal == "SIGKILL");
    CHECK(r.stdout_truncated);
    CHECK_FALSE(r.stderr_truncated);

    CHECK(parse_execute_reply(R"({"exit_status":0.0})").ok);
    for (const char* bad : {"", "nope", "[]", "{}", R"({"exit_status":"0"})",
                            R"({"exit_status":1.5})", R"({"exit_status":null})", "{\"a\":"}) {
        ExecuteReply b = parse_execute_reply(bad);
        CHECK_FALSE_MESSAGE(b.ok, bad);
        CHECK_FALSE(b.error.empty());
    }
    // Wrong types for optional flags are ignored, not fatal; output that
    // is no string is an error (it printed nothing and exited 0).
    r = parse_execute_reply(R"({"exit_status":0,"stdout":"x","timed_out":"yes"})");
    CHECK(r.ok);
    CHECK(r.out == "x");
    CHECK_FALSE(r.timed_out);
    r = parse_execute_reply(R"({"exit_status":0,"stdout":5})");
    CHECK_FALSE(r.ok);
    CHECK(r.error == "reply's stdout is not a string");
    r = parse_execute_reply(R"({"exit_status":0,"stdout":"","stderr":{}})");
    CHECK_FALSE(r.ok);
    CHECK(r.error == "reply's stderr is not a string");
    // An escaped lone surrogate (JSON.parse takes it) costs that character,
    // not the whole reply.
    r = parse_execute_reply(R"({"exit_status":0,"stdout":"a\ud800b"})");
    CHECK(r.ok);
    CHECK(r.out == "a\xEF\xBF\xBD" "b");

    NodeInfo n;
    std::string err;
    REQUIRE(parse_node_info("key-uuid",
                            R"({"UUID":"ABCD","Hostname":"cn7","System Type":"SunOS",
                                "Datacenter Name":"dc1","Setup":false,
                                "Boot Parameters":{"headnode":"true"}})",
                            n, err));
    CHECK(n.uuid == "ABCD");  // as the node has it: its routing keys use it
    CHECK(n.hostname == "cn7");
    CHECK(n.system_type == "SunOS");
    CHECK(n.datacenter == "dc1");
    CHECK(n.setup == "false");
    CHECK(n.headnode);
    REQUIRE(parse_node_info("key-uuid", R"({"Setup":"true","Boot Parameters":[]})", n, err));
    CHECK(n.uuid == "key-uuid");
    CHECK(n.setup == "true");
    CHECK_FALSE(n.headnode);
    CHECK_FALSE(parse_node_info("", "{}", n, err));
    CHECK_FALSE(parse_node_info("x", "[1]", n, err));
    CHECK_FALSE(parse_node_info("x", "\xff", n, err));

    PingReply pr;
    CHECK(parse_ping_reply(R"({"req_id":"r","timestamp":"t"})", pr, err));
    CHECK(pr.req_id == "r");
    CHECK(pr.timestamp == "t");
    CHECK_FALSE(parse_ping_reply(R"({"req_id":1})", pr, err));
    CHECK_FALSE(parse_ping_reply("", pr, err));
}

TEST_CASE("urctl match_nodes: UUIDs and hostnames in any case (as urclient)") {
    std::vector<NodeInfo> nodes(3);
    nodes[0].uuid = "00000000-0000-0000-0000-000000000001";
    nodes[0].hostname = "cn1";
    nodes[1].uuid = "00000000-0000-0000-0000-00000000000a";
    nodes[1].hostname = "cn2";
    nodes[2].uuid = "00000000-0000-0000-0000-00000000000b";
    nodes[2].hostname = "cn2";
    std::vector<size_t> found;
    std::vector<std::string> missing;
    match_nodes(nodes, {"CN1", "00000000-0000-0000-0000-00000000000A", "cn9", "cn2", "cn1"},
                found, missing);
    CHECK(found == std::vector<size_t>{0, 1, 2});
    CHECK(missing == std::vector<std::string>{"cn9"});
    CHECK(node_matches(nodes[0], "Cn1"));
    CHECK_FALSE(node_matches(nodes[0], "cn10"));
}

TEST_CASE("urctl format: discover, ping, exec") {
    std::vector<NodeInfo> nodes(2);
    nodes[0].uuid = "u2";
    nodes[0].hostname = "zeta";
    nodes[0].sysinfo = parse_json(R"({"UUID":"u2"})");
    nodes[1].uuid = "u1";
    nodes[1].hostname = "alpha\nevil";
    nodes[1].system_type = "Linux";
    nodes[1].setup = "true";
    nodes[1].headnode = true;
    std::string human = format_discover(nodes, false);
    CHECK(human ==
          "UUID  HOSTNAME    SYSTEM  SETUP  HEADNODE  DATACENTER\n"
          "u1    alpha evil  Linux   true   yes       -\n"
          "u2    zeta        -       -      no        -\n"
          "2 nodes\n");
    CHECK(format_discover({}, false) == "no nodes answered\n");
    CHECK(format_discover({}, true) == "");
    std::string js = format_discover(nodes, true);
    size_t nl = js.find('\n');
    REQUIRE(nl != std::string::npos);
    json::Value first = parse_json(js.substr(0, nl));
    CHECK(first.find("uuid")->as_string() == "u1");
    CHECK(first.find("headnode")->as_bool());
    REQUIRE(first.find("setup"));
    CHECK(first.find("setup")->is_bool());  // "true" in sysinfo: a boolean, as urclient makes it
    CHECK(first.find("setup")->as_bool());
    json::Value second = parse_json(js.substr(nl + 1));
    CHECK(second.find("sysinfo")->find("UUID")->as_string() == "u2");
    REQUIRE(second.find("setup"));
    CHECK(second.find("setup")->is_null());  // sysinfo without Setup

    PingReply pr{"r", "2026-01-01T00:00:00Z"};
    CHECK(format_ping("u1", 4, pr, false) ==
          "u1 is alive: answered in 4 ms (agent time 2026-01-01T00:00:00Z)\n");
    json::Value p = parse_json(format_ping("u1", 4, pr, true));
    CHECK(p.find("rtt_ms")->as_int() == 4);
    CHECK(p.find("uuid")->as_string() == "u1");

    ExecuteReply r = parse_execute_reply(R"({"exit_status":7,"stdout":"x","stderr":"","duration_ms":3})");
    json::Value e = parse_json(format_exec_json("u1", "cn1", r));
    CHECK(e == parse_json(
                   R"({"uuid":"u1","hostname":"cn1","exit_status":7,"stdout":"x","stderr":"","duration_ms":3})"));
    e = parse_json(format_exec_json("u1", "cn1", parse_execute_reply("junk")));
    CHECK(e.find("error")->as_string().rfind("bad reply", 0) == 0);
    CHECK(exec_notes(r).empty());
    r.timed_out = true;
    r.stderr_truncated = true;
    CHECK(exec_notes(r).find("timeout") != std::string::npos);
    CHECK(exec_notes(r).find("stderr was truncated") != std::string::npos);
}

TEST_CASE("urctl format: oneach table, blocks, summary and exit status") {
    std::vector<NodeResult> res(3);
    res[0].node.uuid = "u-b";
    res[0].node.hostname = "b";
    res[0].replied = true;
    res[0].reply = parse_execute_reply(R"({"exit_status":0,"stdout":"hello\n","stderr":""})");
    res[1].node.uuid = "u-a";
    res[1].node.hostname = "a";
    res[1].replied = true;
    res[1].reply = parse_execute_reply(R"({"exit_status":1,"stdout":"","stderr":"oops\n"})");
    res[2].node.uuid = "u-c";
    res[2].node.hostname = "c";
    CHECK(format_oneach(res, false) ==
          "HOSTNAME  UUID  STATUS    OUTPUT\n"
          "a         u-a   exit 1    oops\n"
          "b         u-b   exit 0    hello\n"
          "c         u-c   no reply  \n"
          "3 nodes: 1 ok, 1 failed, 1 no reply\n");
    CHECK(oneach_exit_status(res) == kExitTimeout);

    res.pop_back();
    CHECK(oneach_exit_status(res) == kExitFailed);
    res[0].reply = parse_execute_reply(R"({"exit_status":0,"stdout":"l1\nl2\n","stderr":"w"})");
    CHECK(format_oneach(res, false) ==
          "=== a (u-a): exit 1\n"
          "--- stderr\noops\n"
          "=== b (u-b): exit 0\n"
          "l1\nl2\n--- stderr\nw\n"
          "2 nodes: 1 ok, 1 failed, 0 no reply\n");

    std::string js = format_oneach(res, true);
    std::vector<json::Value> lines;
    size_t start = 0;
    for (size_t nl; (nl = js.find('\n', start)) != std::string::npos; start = nl + 1)
        lines.push_back(parse_json(js.substr(start, nl - start)));
    REQUIRE(lines.size() == 3);
    CHECK(lines[0].find("hostname")->as_string() == "a");
    CHECK(lines[2] == parse_json(R"({"summary":{"nodes":2,"ok":1,"failed":1,"no_reply":0}})"));

    res[1].reply = parse_execute_reply(R"({"exit_status":0})");
    CHECK(oneach_exit_status(res) == kExitOk);
}

TEST_CASE("urctl format: watch lines, JSON or text bodies") {
    CHECK(iso8601_utc(86400000 + 1234) == "1970-01-02T00:00:01.234Z");
    CHECK(format_message(0, "amq.topic", "ur.ping.x", "application/json", R"({"a": 1})",
                         false) == "1970-01-01T00:00:00.000Z  ur.ping.x  {\"a\":1}\n");
    CHECK(format_message(0, "amq.topic", "k", "", "two\nlines", false) ==
          "1970-01-01T00:00:00.000Z  k  two lines\n");
    json::Value v = parse_json(format_message(0, "amq.topic", "k", "x", "\xff", true));
    CHECK(v.find("body_text")->as_string() == "\xEF\xBF\xBD");
    CHECK(v.find("body") == nullptr);
    v = parse_json(format_message(0, "amq.topic", "k", "x", "[1]", true));
    CHECK(*v.find("body") == parse_json("[1]"));
    CHECK(v.find("routing_key")->as_string() == "k");
    CHECK(parse_json(format_error_json("timeout", "slow")) ==
          parse_json(R"({"error":"timeout","message":"slow"})"));
    // Terminal escapes from the network (a routing key, a body, a node's
    // Hostname) reached the operator's terminal: every control character,
    // C0, DEL and C1, is a space.
    CHECK(format_message(0, "amq.topic", "ur.x\x1b]0;pwned\x07", "",
                         "not json \x1b[2J\x0bnext\x0cpage\x7f\xc2\x9b", false) ==
          "1970-01-01T00:00:00.000Z  ur.x ]0;pwned   not json  [2J next page  \n");
    CHECK(cell("\xc2\xa0" "caf\xc3\xa9") == "\xc2\xa0" "caf\xc3\xa9");  // not controls: kept
}

TEST_CASE("urctl format: an exec reply of many members is printed in one pass") {
    // set() per member made 100,000 members 15 s of CPU.
    std::string body = R"({"exit_status":0,"stdout":"","stderr":"")";
    for (int i = 0; i < 100000; ++i) body += ",\"k" + std::to_string(i) + "\":0";
    ExecuteReply r = parse_execute_reply(body + "}");
    REQUIRE(r.ok);
    json::Value v = parse_json(format_exec_json("u1", "h1", r));
    REQUIRE(v.as_object().size() == 100005);
    CHECK(v.as_object()[0].first == "uuid");
    CHECK(v.as_object()[1].first == "hostname");
    CHECK(v.find("k99999") != nullptr);
}
