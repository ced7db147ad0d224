#include <doctest/doctest.h>

#include <csignal>

#include "json/utf8.hpp"
#include "json/write.hpp"
#include "src/ur_protocol.hpp"

using namespace ur;

static Identity node() {
    Identity id;
    id.uuid = "00000000-abcd-0000-fedc-ba9876543210";
    id.mac = "01:23:45:67:89:ab";
    return id;
}

static const std::string U = "00000000-abcd-0000-fedc-ba9876543210";

TEST_CASE("execute: a script with args and env") {
    Request r = parse_request(node(), "ur.execute." + U + ".req1",
                              R"({"type":"script","script":"#!/bin/sh\necho hi","args":["a b","c"],)"
                              R"("env":{"FOO":"bar","N":"3"},"timestamp":"x","origin":{"user":"admin","hostname":"hn"}})");
    REQUIRE(r.kind == RequestKind::Execute);
    CHECK(r.error == "");
    CHECK(r.req_id == "req1");
    CHECK(r.reply_key == "ur.execute-reply." + U + ".req1");
    CHECK_FALSE(r.is_file);
    CHECK(r.script == "#!/bin/sh\necho hi");
    CHECK(r.args == std::vector<std::string>{"a b", "c"});
    REQUIRE(r.env.has_value());
    CHECK(*r.env == std::vector<std::string>{"FOO=bar", "N=3"});
    CHECK(r.origin == "admin@hn");
    CHECK(r.timestamp == "x");
}

TEST_CASE("execute: origin and timestamp, only logged, are bounded; a string origin is taken as is") {
    Request s = parse_request(node(), "ur.execute." + U + ".r",
                              R"({"type":"file","file":"/bin/true","origin":"cnapi"})");
    CHECK(s.origin == "cnapi");
    std::string big(1000000, 'x');
    big[255] = '\xC3';  // a character across the cut stays whole or goes
    big[256] = '\xA9';
    Request b = parse_request(node(), "ur.execute." + U + ".r",
                              R"({"type":"file","file":"/bin/true","origin":{"user":")" + big + R"("}})");
    CHECK(b.error == "");
    CHECK(b.origin == std::string(255, 'x') + "... (1000000 bytes)");
    Request t = parse_request(node(), "ur.execute." + U + ".r",
                              R"({"type":"file","file":"/bin/true","timestamp":")" + big + R"("})");
    CHECK(t.error == "");
    CHECK(t.timestamp == std::string(255, 'x') + "... (1000000 bytes)");
    Request n = parse_request(node(), "ur.execute." + U + ".r",
                              R"({"type":"file","file":"/bin/true","timestamp":5})");
    CHECK(n.error == "");
    CHECK(n.timestamp == "");
}

TEST_CASE("execute: env absent means inherit, env {} means empty") {
    Request a = parse_request(node(), "ur.execute." + U + ".r", R"({"type":"file","file":"/bin/true"})");
    CHECK(a.error == "");
    CHECK(a.is_file);
    CHECK_FALSE(a.env.has_value());
    Request b = parse_request(node(), "ur.execute." + U + ".r", R"({"type":"file","file":"/bin/true","env":{}})");
    REQUIRE(b.env.has_value());
    CHECK(b.env->empty());
    // null is absent, as the original agent took it (env ? {env} : {}, args || []).
    Request n = parse_request(node(), "ur.execute." + U + ".r",
                              R"({"type":"file","file":"/bin/true","env":null,"args":null,"timeout":null})");
    CHECK(n.error == "");
    CHECK_FALSE(n.env.has_value());
    CHECK(n.args.empty());
    CHECK(n.timeout_s == 0);
}

TEST_CASE("execute: an empty script is a request (the original ran it), an empty file path is not") {
    Request s = parse_request(node(), "ur.execute." + U + ".r", R"({"type":"script","script":""})");
    CHECK(s.error == "");
    CHECK_FALSE(s.is_file);
    CHECK(s.script == "");
    Request f = parse_request(node(), "ur.execute." + U + ".r", R"({"type":"file","file":""})");
    CHECK(f.error == "\"file\" is empty");
}

TEST_CASE("execute: addressed with uuid-mac is ours; other nodes are ignored") {
    Request a = parse_request(node(), "ur.execute." + U + "-01:23:45:67:89:ab.r9",
                              R"({"type":"file","file":"/bin/true"})");
    CHECK(a.kind == RequestKind::Execute);
    CHECK(a.reply_key == "ur.execute-reply." + U + ".r9");
    Request b = parse_request(node(), "ur.execute.11111111-abcd-0000-fedc-ba9876543210.r",
                              R"({"type":"file","file":"/bin/true"})");
    CHECK(b.kind == RequestKind::Ignored);
    CHECK(b.error.find("another node") != std::string::npos);
}

TEST_CASE("execute: invalid bodies are answered with a reason") {
    struct { const char* body; const char* reason; } cases[] = {
        {"not json", "not valid JSON"},
        {"[1,2]", "not a JSON object"},
        {"{}", "missing \"type\""},
        {R"({"type":"shell"})", "unknown \"type\""},
        {R"({"type":"script"})", "\"script\" must be a string"},
        {R"({"type":"file","file":""})", "\"file\" is empty"},
        {R"({"type":"script","script":"x","args":"a"})", "\"args\" must be an array"},
        {R"({"type":"script","script":"x","args":["a",1]})", "\"args\"[1] is not a string"},
        {R"({"type":"script","script":"x","args":["a\u0000"]})", "NUL"},
        {R"({"type":"script","script":"x","env":[]})", "\"env\" must be an object"},
        {R"({"type":"script","script":"x","env":{"A":{}}})", "is not a string"},
        {R"({"type":"script","script":"x","env":{"A":1}})", "\"env\".\"A\" is not a string"},
        {R"({"type":"script","script":"x","env":{"A\nB":1}})", "\"env\".\"A\\nB\" is not a string"},
        {R"({"type":"script","script":"x","env":{"A=B":"c"}})", "invalid variable name"},
        {R"({"type":"script","script":"x","timeout":"soon"})", "\"timeout\""},
        {R"({"type":"script","script":"x","timeout":-1})", "\"timeout\""},
        {R"({"type":"script","script":"x","timeout":1e400})", "\"timeout\""},
        {R"({"type":"script","script":"x","timeout":-1e400})", "\"timeout\""},
    };
    for (const auto& c : cases) {
        Request r = parse_request(node(), "ur.execute." + U + ".r", c.body);
        INFO(c.body);
        CHECK(r.kind == RequestKind::Execute);
        CHECK(r.reply_key == "ur.execute-reply." + U + ".r");
        CHECK(r.error.find(c.reason) != std::string::npos);
    }
}

TEST_CASE("bug: an invalid request quoted its whole bad value in the reply and the log") {
    // A 1 MiB "type" made a 1 MiB error, logged and published back.
    std::string big(1u << 20, 'a');
    Identity self;
    self.uuid = "u";
    Request r = parse_request(self, "ur.execute.u.r1", R"({"type":")" + big + "\"}");
    CHECK(r.kind == RequestKind::Execute);
    CHECK(r.error.find("unknown \"type\" \"aaa") != std::string::npos);
    CHECK(r.error.size() < 200);
    r = parse_request(self, "ur.execute.u.r2",
                      R"({"type":"script","script":"x","env":{")" + big + R"(=":"v"}})");
    CHECK(r.error.find("invalid variable name") != std::string::npos);
    CHECK(r.error.size() < 200);
    // Cut at a character boundary: é is two bytes.
    std::string accents;
    for (int i = 0; i < 100; ++i) accents += "\xc3\xa9";
    r = parse_request(self, "ur.execute.u.r3", R"({"type":")" + accents + "\"}");
    CHECK(json::is_valid_utf8(r.error));
}

TEST_CASE("execute and ping: what JSON.parse reads is read (1e400, lone surrogates)") {
    // The original read a body with JSON.parse: 1e400 is Infinity and a
    // lone surrogate escape a character; neither refused the request.
    Request r = parse_request(node(), "ur.execute." + U + ".r",
                              R"({"type":"script","script":"x\ud800","origin":{"n":1e400,"m":-1e999}})");
    CHECK(r.error == "");
    CHECK(r.kind == RequestKind::Execute);
    CHECK(r.script == "x\xEF\xBF\xBD");
    Request p = parse_request(node(), "ur.ping." + U, R"({"client_id":"c","id":1e400})");
    REQUIRE(p.kind == RequestKind::Ping);
    CHECK(p.ping_id == "null");  // as JSON.stringify(Infinity)
    p = parse_request(node(), "ur.ping." + U, R"({"client_id":"c","id":"\udc00x"})");
    REQUIRE(p.kind == RequestKind::Ping);
    CHECK(p.ping_id == "\"\\ufffdx\"");
}

TEST_CASE("ping and broadcast") {
    Request p = parse_request(node(), "ur.ping." + U, R"({"client_id":"abc","id":"42"})");
    REQUIRE(p.kind == RequestKind::Ping);
    CHECK(p.reply_key == "ur.ackabc." + U);
    CHECK(p.ping_id == "\"42\"");
    Request n = parse_request(node(), "ur.ping." + U, R"({"client_id":"abc","id":5})");
    REQUIRE(n.kind == RequestKind::Ping);
    CHECK(n.ping_id == "5");
    json::Value v;
    json::ParseError e;
    REQUIRE(json::parse(ping_reply_body(n.ping_id, "2026-01-01T00:00:00.000Z"), v, e));
    CHECK(v.find("req_id")->as_int() == 5);
    Request bad = parse_request(node(), "ur.ping." + U, R"({"client_id":"a.b","id":"42"})");
    CHECK(bad.kind == RequestKind::Ignored);
    // Any id is echoed as it came (the original sent msg.id back), up to 4096 bytes of it.
    for (const char* id : {"null", "true", R"({"a":[1,"b"]})", "[]", "1.5"}) {
        CAPTURE(id);
        Request any = parse_request(node(), "ur.ping." + U, std::string(R"({"client_id":"c","id":)") + id + "}");
        REQUIRE(any.kind == RequestKind::Ping);
        CHECK(any.ping_id == id);
    }
    Request huge = parse_request(node(), "ur.ping." + U,
                                 R"({"client_id":"c","id":")" + std::string(5000, 'x') + "\"}");
    CHECK(huge.kind == RequestKind::Ignored);
    CHECK(huge.error == "ping \"id\" is 5002 bytes of JSON; at most 4096 are echoed");
    CHECK(parse_request(node(), "ur.ping." + U, R"({"client_id":"c"})").kind == RequestKind::Ignored);
    // A client_id is refused only when its reply key ("ur.ack" + id + "." +
    // uuid) would be over 255 bytes: 212 bytes fit exactly, 213 do not.
    auto with_cid = [](size_t n) {
        return parse_request(node(), "ur.ping." + U,
                             R"({"client_id":")" + std::string(n, 'c') + R"(","id":1})");
    };
    Request fits = with_cid(212);
    REQUIRE(fits.kind == RequestKind::Ping);
    CHECK(fits.reply_key.size() == 255);
    Request over = with_cid(213);
    CHECK(over.kind == RequestKind::Ignored);
    CHECK(over.error == "ping \"client_id\" of 213 bytes makes a reply routing key of 256 (over 255)");
    // Extra fields are a ping's own business, up to the limit on values,
    // which is said as such (it said "not valid JSON").
    std::string extra = R"({"client_id":"c","id":1,"hosts":[)";
    for (int i = 0; i < 5000; ++i) extra += i ? ",0" : "0";
    Request many = parse_request(node(), "ur.ping." + U, extra + "]}");
    CHECK(many.kind == RequestKind::Ignored);
    CHECK(many.error.rfind("ping body holds more than 4096 values", 0) == 0);
    Request b = parse_request(node(), "ur.broadcast.sysinfo.77", "{}");
    REQUIRE(b.kind == RequestKind::Broadcast);
    CHECK(b.reply_key == "ur.execute-reply." + U + ".77");
    CHECK(parse_request(node(), "ur.broadcast.reboot.77", "{}").kind == RequestKind::Ignored);
    CHECK(parse_request(node(), "ur.execute." + U, "{}").kind == RequestKind::Ignored);
    CHECK(parse_request(node(), "foo.bar", "{}").kind == RequestKind::Ignored);
    CHECK(parse_request(node(), "", "").kind == RequestKind::Ignored);
}

TEST_CASE("queue names and bindings follow PROTOCOL.md") {
    Identity id = node();
    CHECK(request_queue_name(id) == "ur.request." + U + ".01:23:45:67:89:ab");
    CHECK(ping_queue_name(id) == "ur.ping." + U);
    CHECK(request_bindings(id) ==
          std::vector<std::string>{"ur.execute." + U + ".*", "ur.execute." + U + "-01:23:45:67:89:ab.*",
                                   "ur.broadcast.*.*"});
    id.mac.clear();
    CHECK(request_queue_name(id) == "ur.request." + U);
    CHECK(request_bindings(id).size() == 2);
}

TEST_CASE("reply bodies") {
    ExecuteOutcome o;
    o.exit_status = 137;
    o.signal = 9;
    o.timed_out = true;
    std::string out = "ok\xff\n";
    o.out = {out, out.size(), false};
    o.duration_ms = 12;
    std::string body = execute_reply_body(o);
    json::Value v;
    json::ParseError e;
    REQUIRE(json::parse(body, v, e));
    CHECK(v.find("exit_status")->as_int() == 137);
    CHECK(v.find("stdout")->as_string() == "ok\xef\xbf\xbd\n");
    CHECK(v.find("stderr")->as_string() == "");
    CHECK(v.find("signal")->as_string() == "SIGKILL");
    CHECK(v.find("timed_out")->as_bool());
    CHECK(v.find("stdout_truncated") == nullptr);
    CHECK(v.find("duration_ms")->as_int() == 12);
    CHECK(body.rfind("{\"exit_status\":137,\"stdout\":", 0) == 0);

    REQUIRE(json::parse(invalid_request_body("bad \"x\""), v, e));
    CHECK(v.find("exit_status")->as_int() == 2);
    CHECK(v.find("stderr")->as_string() == "ur-agent: invalid request: bad \"x\"\n");
    CHECK(v.find("invalid_request")->as_bool());
    CHECK(v.find("not_run") == nullptr);
    REQUIRE(json::parse(not_run_body("the agent is shutting down"), v, e));
    CHECK(v.find("exit_status")->as_int() == 1);
    CHECK(v.find("stdout")->as_string() == "");
    CHECK(v.find("stderr")->as_string() == "ur-agent: not run: the agent is shutting down\n");
    CHECK(v.find("not_run")->as_bool());
    CHECK(v.find("invalid_request") == nullptr);

    REQUIRE(json::parse(ping_reply_body("\"r1\"", "2026-01-01T00:00:00.000Z"), v, e));
    CHECK(v.find("req_id")->as_string() == "r1");
    CHECK(signal_name(15) == "SIGTERM");
    CHECK(signal_name(77) == "SIG77");
#ifdef SIGWINCH
    CHECK(signal_name(SIGWINCH) == "SIGWINCH");
#endif
}

TEST_CASE("RabbitMQ 4.3 and later deny transient non-exclusive queues: known by version and by refusal") {
    CHECK(denies_transient_queues("RabbitMQ", "4.3.0"));
    CHECK(denies_transient_queues("RabbitMQ", "4.3.0-rc.1"));
    CHECK(denies_transient_queues("RabbitMQ", "4.10.2"));
    CHECK(denies_transient_queues("RabbitMQ", "5.0"));
    CHECK_FALSE(denies_transient_queues("RabbitMQ", "4.2.9"));
    CHECK_FALSE(denies_transient_queues("RabbitMQ", "3.13.7"));
    CHECK_FALSE(denies_transient_queues("RabbitMQ", "3.10.8"));
    CHECK_FALSE(denies_transient_queues("RabbitMQ", "4"));
    CHECK_FALSE(denies_transient_queues("RabbitMQ", "4."));
    CHECK_FALSE(denies_transient_queues("RabbitMQ", ""));
    CHECK_FALSE(denies_transient_queues("RabbitMQ", "v4.3.0"));
    CHECK_FALSE(denies_transient_queues("RabbitMQ", "9999999999.1"));  // digits bounded, no overflow
    CHECK_FALSE(denies_transient_queues("LavinMQ", "4.3.0"));           // another product's numbers
    CHECK_FALSE(denies_transient_queues("", "4.3.0"));
    CHECK(is_transient_queue_refusal("INTERNAL_ERROR - Feature `transient_nonexcl_queues` is "
                                     "deprecated.\nBy default, this feature is not permitted anymore."));
    CHECK_FALSE(is_transient_queue_refusal("INTERNAL_ERROR"));
    CHECK_FALSE(is_transient_queue_refusal("PRECONDITION_FAILED - inequivalent arg 'exclusive'"));
}

TEST_CASE("answers to a requester are told by their routing key") {
    CHECK(is_answer_key(execute_reply_key("u", "r")));
    CHECK(is_answer_key(ping_reply_key("c", "u")));
    CHECK_FALSE(is_answer_key(startup_key("u")));
    CHECK_FALSE(is_answer_key(sysinfo_key("u", "1")));
    CHECK_FALSE(is_answer_key("ur.execute-repl"));
    CHECK_FALSE(is_answer_key(""));
}

TEST_CASE("a 403 on a publish names the routing key a topic permission refuses") {
    const std::string text = "ACCESS_REFUSED - access to topic 'ur.execute-reply.u.evil' in "
                             "exchange 'amq.topic' in vhost '/' refused for user 'guest'";
    CHECK(close_refuses_key(403, text, "ur.execute-reply.u.evil"));
    CHECK_FALSE(close_refuses_key(403, text, "ur.execute-reply.u.good"));
    CHECK_FALSE(close_refuses_key(403, text, "ur.execute-reply.u.evi"));    // a prefix of it
    CHECK_FALSE(close_refuses_key(403, text, "ur.execute-reply.u.evil2"));  // longer
    CHECK_FALSE(close_refuses_key(406, text, "ur.execute-reply.u.evil"));
    CHECK_FALSE(close_refuses_key(403, text, ""));
    // The whole exchange: no key of its own.
    CHECK_FALSE(close_refuses_key(403, "ACCESS_REFUSED - write access to exchange 'amq.topic' in "
                                       "vhost '/' refused for user 'u'", "ur.startup.u"));
    // Cut at 255 bytes inside the key: the part that is there must match.
    const std::string key = "ur.execute-reply.u." + std::string(240, 'r');
    const std::string cut = ("ACCESS_REFUSED - access to topic '" + key).substr(0, 255);
    CHECK(close_refuses_key(403, cut, key));
    CHECK_FALSE(close_refuses_key(403, cut, "ur.execute-reply.u.x" + std::string(239, 'r')));
    CHECK_FALSE(close_refuses_key(403, "ACCESS_REFUSED - access to topic '", key));
}

TEST_CASE("a reply over the broker's max message size: the limit from the close, the reply cut") {
    CHECK(max_size_from_close(406, "PRECONDITION_FAILED - message size 25165882 is larger than "
                                    "configured max size 16777216") == 16777216);
    CHECK(max_size_from_close(403, "ACCESS_REFUSED - max size 5") == 0);
    CHECK(max_size_from_close(406, "PRECONDITION_FAILED - something else") == 0);
    CHECK(max_size_from_close(406, "max size ") == 0);
    CHECK(max_size_from_close(406, "max size 99999999999999999999999") == 0);  // overflow

    const uint64_t limit = 1 << 16;
    // A cut multi-byte character must not be left half: "é" is 2 bytes.
    std::string out;
    for (int i = 0; i < 20000; ++i) out += "\u00e9";  // JSON escape, 2 UTF-8 bytes each
    std::string body = "{\"exit_status\":3,\"stdout\":\"" + out +
                       "\",\"stderr\":\"err\",\"duration_ms\":7}";
    std::string fit = fit_reply(body, limit);
    REQUIRE(fit.size() <= limit);
    json::Value v;
    json::ParseError e;
    REQUIRE(json::parse(fit, v, e));
    CHECK(v.find("exit_status")->as_int() == 3);
    CHECK(v.find("stderr")->as_string() == "err");
    CHECK(v.find("duration_ms")->as_int() == 7);
    CHECK(v.find("stdout_truncated")->as_bool());
    CHECK(v.find("stdout_bytes")->as_int() == 40000);
    CHECK(v.find("stderr_truncated") == nullptr);
    CHECK(v.find("stderr_bytes")->as_int() == 3);  // both counts, as a cut at capture gives
    const std::string& so = v.find("stdout")->as_string();
    CHECK(json::is_valid_utf8(so));
    CHECK(so.rfind("\xc3\xa9\xc3\xa9", 0) == 0);
    CHECK(so.find("larger than the broker takes (65536 bytes)") != std::string::npos);
    // Both ends kept, and most of the room used (it kept a sixteenth,
    // the head only): the end of a script's output is where errors are.
    CHECK(so.size() > 2 * (limit / 16));
    CHECK(so.size() >= 3 * 2 * 1000);  // in "é" (6 bytes escaped each): well over 1000 of them

    std::string ascii = "{\"exit_status\":1,\"stdout\":\"HEAD" + std::string(3000000, 'x') +
                        "tail-marker\\n\",\"stderr\":\"" + std::string(100000, 'e') + "END\"}";
    fit = fit_reply(ascii, 1000000);
    REQUIRE(fit.size() <= 1000000);
    REQUIRE(json::parse(fit, v, e));
    const std::string& ao = v.find("stdout")->as_string();
    CHECK(ao.rfind("HEADxxx", 0) == 0);
    CHECK(ao.size() >= 1000000 / 4);
    CHECK(ao.size() - ao.rfind("tail-marker\n") == 12);
    CHECK(v.find("stdout_bytes")->as_int() == 3000000 + 4 + 12);
    const std::string& ae = v.find("stderr")->as_string();
    CHECK(ae.size() - ae.rfind("END") == 3);

    // Cut for the bound on replies waiting for the broker: says so.
    fit = fit_reply(body, 4096, FitReason::PendingBound);
    REQUIRE(fit.size() <= 4096);
    REQUIRE(json::parse(fit, v, e));
    CHECK(v.find("exit_status")->as_int() == 3);
    CHECK(v.find("stdout_truncated")->as_bool());
    CHECK(v.find("stdout")->as_string().find("--max-pending-bytes") != std::string::npos);
    CHECK(v.find("stdout")->as_string().find("broker takes") == std::string::npos);

    // Past the JSON parser's default 64 MiB bound (--max-output raised):
    // still read as a reply, so its exit status is kept.
    std::string huge = "{\"exit_status\":3,\"stdout\":\"" + std::string((64u << 20) + 10, 'a') +
                       "\",\"stderr\":\"\"}";
    fit = fit_reply(huge, limit);
    REQUIRE(json::parse(fit, v, e));
    CHECK(v.find("exit_status")->as_int() == 3);
    CHECK(v.find("stdout_bytes")->as_int() == int64_t((64u << 20) + 10));
    std::string().swap(huge);

    // Not a reply object: a small one that says so.
    std::string junk(100000, '[');
    fit = fit_reply(junk, limit);
    REQUIRE(json::parse(fit, v, e));
    CHECK(v.find("exit_status")->as_int() == 1);
    CHECK(v.find("stderr")->as_string().find("100000 bytes") != std::string::npos);
}

TEST_CASE("execute: a reason quotes a long env key cut, on one line") {
    std::string key(200000, 'K');
    Request r = parse_request(node(), "ur.execute." + U + ".r",
                              "{\"type\":\"script\",\"script\":\"x\",\"env\":{\"" + key + "\":5}}");
    REQUIRE(r.error.find("is not a string") != std::string::npos);
    CHECK(r.error.size() < 200);
    CHECK(r.error.find('\n') == std::string::npos);
}

TEST_CASE("execute: args and env counts are bounded") {
    std::string args = "[";
    for (size_t i = 0; i <= kMaxArgs; ++i) args += i ? ",\"\"" : "\"\"";
    args += "]";
    Request r = parse_request(node(), "ur.execute." + U + ".r",
                              R"({"type":"script","script":"x","args":)" + args + "}");
    CHECK(r.error.find("\"args\" has 262145 entries; the limit is 262144") != std::string::npos);
    std::string ok_args = "[" + std::string("\"a\"");
    for (int i = 1; i < 100000; ++i) ok_args += ",\"a\"";
    ok_args += "]";
    Request ok = parse_request(node(), "ur.execute." + U + ".r",
                               R"({"type":"script","script":"x","args":)" + ok_args + "}");
    CHECK(ok.error == "");
    CHECK(ok.args.size() == 100000);
    // Values the agent would parse only to ignore are bounded too: a 16 MiB
    // body of "0," held 8 million (345 MB parsed).
    std::string zeros = "[0";
    for (size_t i = 1; i < 2000000; ++i) zeros += ",0";
    zeros += "]";
    Request many = parse_request(node(), "ur.execute." + U + ".r",
                                 R"({"type":"script","script":"x","x":)" + zeros + "}");
    CHECK(many.error == "body holds more than " + std::to_string(kMaxArgs + kMaxEnv + 1024) +
                            " values (room for 262144 args, 65536 env entries and 1024 more)");
}

TEST_CASE("reply: an escaped stream gives the same body as its raw bytes") {
    // The agent escapes a script's output while it runs (OutputCapture's
    // JsonEscaped); the reply must be byte for byte the one the raw
    // capture gives.
    std::string raw_out = std::string("line \"1\"\n\ttab\\ \xff\xc3 end\x01") + std::string(1, '\0');
    std::string raw_err = "err\xe2\x82";
    std::string esc_out, esc_err;
    json::append_escaped(esc_out, json::string_from_bytes(raw_out));
    json::append_escaped(esc_err, json::string_from_bytes(raw_err));
    ExecuteOutcome a, b;
    a.exit_status = b.exit_status = 3;
    a.duration_ms = b.duration_ms = 12;
    a.out = {raw_out, 900, true, false};
    a.err = {raw_err, raw_err.size(), false, false};
    b.out = {esc_out, 900, true, true};
    b.err = {esc_err, raw_err.size(), false, true};
    CHECK(execute_reply_body(b) == execute_reply_body(a));
    CHECK(execute_reply_body(b).find("\"stdout_truncated\":true") != std::string::npos);
}

TEST_CASE("reply: built in the stdout capture's buffer, the same body") {
    std::string raw_out = "big \"output\"\n\xff", raw_err = "e\n";
    for (bool truncated : {false, true}) {
        for (int signal : {0, 9}) {
            ExecuteOutcome o;
            o.exit_status = signal ? 137 : 0;
            o.signal = signal;
            o.timed_out = truncated;
            o.duration_ms = 5;
            std::string esc_out, esc_err;
            json::append_escaped(esc_out, json::string_from_bytes(raw_out));
            json::append_escaped(esc_err, json::string_from_bytes(raw_err));
            o.out = {esc_out, 1000, truncated, true};
            o.err = {esc_err, raw_err.size(), false, true};
            std::string want = execute_reply_body(o);
            std::string buf = esc_out;
            buf.reserve(1 << 16);
            const char* mem = buf.data();
            ExecuteOutcome moved = o;
            moved.out.data = {};
            std::string got = execute_reply_body(moved, std::move(buf));
            CHECK(got == want);
            CHECK(got.data() == mem);  // no second buffer
        }
    }
}
