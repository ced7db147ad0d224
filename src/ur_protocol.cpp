#include "src/ur_protocol.hpp"

#include <algorithm>
#include <csignal>
#include <cstring>

namespace ur {

namespace {

std::vector<std::string_view> split_dots(std::string_view key) {
    std::vector<std::string_view> parts;
    size_t start = 0;
    for (;;) {
        size_t dot = key.find('.', start);
        if (dot == std::string_view::npos) {
            parts.push_back(key.substr(start));
            return parts;
        }
        parts.push_back(key.substr(start, dot - start));
        start = dot + 1;
    }
}

bool has_nul(std::string_view s) { return s.find('\0') != std::string_view::npos; }

// A value from the request quoted in an error, cut to a few dozen bytes (at
// a UTF-8 boundary): the error goes into the reply and the log, and a
// request must not make either as large as itself.
std::string quoted(const json::Value& v) {
    constexpr size_t kMax = 64;
    std::string s = json::write(v);
    if (s.size() <= kMax) return s;
    size_t cut = kMax;
    while (cut > 0 && (uint8_t(s[cut]) & 0xC0) == 0x80) --cut;
    s.resize(cut);
    return s + "...";
}

// Fills the execute fields of `r` from the JSON body, or sets r.error.
void parse_execute_body(std::string_view body, Request& r) {
    json::Value v;
    json::ParseError perr;
    // As the original (Node) took them: {"origin":{"n":1e400}} is read.
    json::ParseOptions popt = json::javascript_options();
    // Room for the most args and env entries a request may have, and the
    // rest; a 16 MiB body could otherwise hold 8 million values (345 MB
    // parsed) that the agent would read only to ignore.
    popt.max_values = kMaxArgs + kMaxEnv + 1024;
    if (!json::parse(body, v, perr, popt)) {
        if (perr.too_many_values)
            r.error = "body holds " + perr.reason + " (room for " + std::to_string(kMaxArgs) +
                      " args, " + std::to_string(kMaxEnv) + " env entries and 1024 more)";
        else
            r.error = "body is not valid JSON: " + perr.to_string();
        return;
    }
    if (!v.is_object()) {
        r.error = "body is not a JSON object";
        return;
    }
    if (const json::Value* o = v.find("origin"); o && o->is_object()) {
        const json::Value* user = o->find("user");
        const json::Value* host = o->find("hostname");
        if (user && user->is_string()) r.origin = user->as_string();
        if (host && host->is_string()) r.origin += "@" + host->as_string();
    } else if (o && o->is_string()) {
        r.origin = o->as_string();
    }
    if (const json::Value* t = v.find("timestamp"); t && t->is_string())
        r.timestamp = t->as_string();
    // Only logged: a megabyte of either must not make a megabyte log line.
    for (std::string* f : {&r.origin, &r.timestamp})
        if (f->size() > 256) *f = json::shortened(*f, 256);
    const json::Value* type = v.find("type");
    if (!type) {
        r.error = "missing \"type\" (expected \"script\" or \"file\")";
        return;
    }
    if (!type->is_string() || (type->as_string() != "script" && type->as_string() != "file")) {
        r.error = "unknown \"type\" " + quoted(*type) + " (expected \"script\" or \"file\")";
        return;
    }
    r.is_file = type->as_string() == "file";
    const char* field = r.is_file ? "file" : "script";
    const json::Value* text = v.find(field);
    if (!text || !text->is_string()) {
        r.error = std::string("\"") + field + "\" must be a string";
        return;
    }
    // An empty script runs (no '#!': /bin/sh, exit 0), as the original ran
    // it; an empty path names nothing to run.
    if (r.is_file && text->as_string().empty()) {
        r.error = "\"file\" is empty";
        return;
    }
    if (r.is_file && has_nul(text->as_string())) {
        r.error = "\"file\" contains a NUL byte";
        return;
    }
    r.script = text->as_string();

    if (const json::Value* args = v.find("args"); args && !args->is_null()) {
        if (!args->is_array()) {
            r.error = "\"args\" must be an array of strings";
            return;
        }
        if (args->as_array().size() > kMaxArgs) {
            r.error = "\"args\" has " + std::to_string(args->as_array().size()) +
                      " entries; the limit is " + std::to_string(kMaxArgs);
            return;
        }
        r.args.reserve(args->as_array().size());
        size_t i = 0;
        for (const auto& a : args->as_array()) {
            if (!a.is_string()) {
                r.error = "\"args\"[" + std::to_string(i) + "] is not a string";
                return;
            }
            if (has_nul(a.as_string())) {
                r.error = "\"args\"[" + std::to_string(i) + "] contains a NUL byte";
                return;
            }
            r.args.push_back(a.as_string());
            ++i;
        }
    }
    if (const json::Value* env = v.find("env"); env && !env->is_null()) {
        if (!env->is_object()) {
            r.error = "\"env\" must be an object of strings";
            return;
        }
        if (env->as_object().size() > kMaxEnv) {
            r.error = "\"env\" has " + std::to_string(env->as_object().size()) +
                      " entries; the limit is " + std::to_string(kMaxEnv);
            return;
        }
        std::vector<std::string> list;
        list.reserve(env->as_object().size());
        for (const auto& [key, val] : env->as_object()) {
            if (key.empty() || key.find('=') != std::string::npos || has_nul(key)) {
                r.error = "\"env\" has an invalid variable name " + quoted(json::Value(key));
                return;
            }
            if (!val.is_string()) {
                r.error = "\"env\"." + quoted(json::Value(key)) + " is not a string";
                return;
            }
            const std::string& text_value = val.as_string();
            if (has_nul(text_value)) {
                r.error = "\"env\"." + quoted(json::Value(key)) + " contains a NUL byte";
                return;
            }
            list.push_back(key + "=" + text_value);
        }
        r.env = std::move(list);
    }
    if (const json::Value* t = v.find("timeout"); t && !t->is_null()) {
        if (!t->is_number() || t->as_double() < 0 || t->as_double() > 31536000.0) {
            r.error = "\"timeout\" must be a number of seconds from 0 to 31536000";
            return;
        }
        r.timeout_s = t->as_double();
    }
}

Request classify_request(const Identity& self, std::string_view routing_key,
                         std::string_view body) {
    Request r;
    std::vector<std::string_view> k = split_dots(routing_key);
    if (k.size() < 2 || k[0] != "ur") {
        r.error = "not an Ur routing key";
        return r;
    }
    if (k[1] == "execute") {
        if (k.size() != 4 || k[3].empty()) {
            r.error = "execute routing key is not ur.execute.<node>.<request-id>";
            return r;
        }
        std::string with_mac = self.uuid + "-" + self.mac;
        if (k[2] != self.uuid && (self.mac.empty() || k[2] != with_mac)) {
            r.error = "execute request addressed to another node";
            return r;
        }
        r.kind = RequestKind::Execute;
        r.req_id = std::string(k[3]);
        r.reply_key = execute_reply_key(self.uuid, r.req_id);
        parse_execute_body(body, r);
        return r;
    }
    if (k[1] == "broadcast") {
        if (k.size() != 4 || k[3].empty()) {
            r.error = "broadcast routing key is not ur.broadcast.<kind>.<request-id>";
            return r;
        }
        r.broadcast_kind = std::string(k[2]);
        r.req_id = std::string(k[3]);
        if (r.broadcast_kind != "sysinfo") {
            r.error = "broadcast of unknown kind '" + r.broadcast_kind + "'";
            return r;
        }
        r.kind = RequestKind::Broadcast;
        r.reply_key = execute_reply_key(self.uuid, r.req_id);
        return r;
    }
    if (k[1] == "ping") {
        if (k.size() != 3 || k[2] != self.uuid) {
            r.error = "ping addressed to another node";
            return r;
        }
        json::Value v;
        json::ParseError perr;
        // As in execute requests: an id of 1e400 is echoed null, as Node did.
        json::ParseOptions popt = json::javascript_options();
        popt.max_values = 4096;  // two fields, one of them an id echoed whole
        if (!json::parse(body, v, perr, popt)) {
            r.error = perr.too_many_values
                          ? "ping body holds " + perr.reason + " (a ping is {\"client_id\", \"id\"})"
                          : "ping body is not valid JSON: " + perr.to_string();
            return r;
        }
        const json::Value* cid = v.find("client_id");
        const json::Value* id = v.find("id");
        if (!cid || !cid->is_string() || !id) {
            r.error = "ping body lacks \"client_id\" or \"id\"";
            return r;
        }
        const std::string& c = cid->as_string();
        if (c.empty() || c.find_first_of(".*# ") != std::string::npos) {
            r.error = "ping \"client_id\" cannot be used in a routing key";
            return r;
        }
        if (size_t n = ping_reply_key(c, self.uuid).size(); n > 255) {
            r.error = "ping \"client_id\" of " + std::to_string(c.size()) +
                      " bytes makes a reply routing key of " + std::to_string(n) +
                      " (over 255)";
            return r;
        }
        // Echoed as it came, whatever its type (the original agent sent
        // msg.id back): a number stays a number, null stays null.
        r.ping_id = json::write(*id);
        if (r.ping_id.size() > 4096) {
            r.error = "ping \"id\" is " + std::to_string(r.ping_id.size()) +
                      " bytes of JSON; at most 4096 are echoed";
            r.ping_id.clear();
            return r;
        }
        r.kind = RequestKind::Ping;
        r.reply_key = ping_reply_key(c, self.uuid);
        return r;
    }
    r.error = "unexpected routing key";
    return r;
}

}  // namespace

Request parse_request(const Identity& self, std::string_view routing_key, std::string_view body) {
    Request r = classify_request(self, routing_key, body);
    // A routing key is a shortstr (at most 255 bytes).  The request's key
    // fitted, but the reply key has a longer prefix and our uuid in place
    // of the node part, so a long request id can push it over; the encoder
    // would then cut it and the reply would go to a key nobody listens on.
    if (r.reply_key.size() > 255) {
        r.kind = RequestKind::Ignored;
        r.error = "reply routing key would be " + std::to_string(r.reply_key.size()) +
                  " bytes (over 255): request id too long";
        r.reply_key.clear();
    }
    return r;
}

std::string execute_reply_key(std::string_view uuid, std::string_view req_id) {
    std::string s = "ur.execute-reply.";
    s.append(uuid).append(".").append(req_id);
    return s;
}

std::string ping_reply_key(std::string_view client_id, std::string_view uuid) {
    std::string s = "ur.ack";
    s.append(client_id).append(".").append(uuid);
    return s;
}

bool is_answer_key(std::string_view routing_key) {
    return routing_key.substr(0, 17) == "ur.execute-reply." || routing_key.substr(0, 6) == "ur.ack";
}

std::string startup_key(std::string_view uuid) { return "ur.startup." + std::string(uuid); }

std::string sysinfo_key(std::string_view uuid, std::string_view id) {
    std::string s = "ur.sysinfo.";
    s.append(uuid).append(".").append(id);
    return s;
}

std::string request_queue_name(const Identity& self) {
    return self.mac.empty() ? "ur.request." + self.uuid : "ur.request." + self.uuid + "." + self.mac;
}

std::string ping_queue_name(const Identity& self) { return "ur.ping." + self.uuid; }

std::vector<std::string> request_bindings(const Identity& self) {
    std::vector<std::string> b = {"ur.execute." + self.uuid + ".*"};
    if (!self.mac.empty()) b.push_back("ur.execute." + self.uuid + "-" + self.mac + ".*");
    b.push_back("ur.broadcast.*.*");
    return b;
}

std::vector<std::string> ping_bindings(const Identity& self) { return {"ur.ping." + self.uuid}; }

static void append_stream(std::string& out, const char* name, const StreamReply& s) {
    out += ",\"";
    out += name;
    out += "\":";
    if (s.escaped) {
        // Made valid and escaped while the script ran (OutputCapture).
        out += '"';
        out += s.data;
        out += '"';
        return;
    }
    // string_from_bytes() returns valid input unchanged, so skip its copy
    // (a whole stream, up to --max-output bytes) when there is nothing to
    // repair: same output, one allocation and one pass fewer.
    if (json::is_valid_utf8(s.data))
        json::append_quoted(out, s.data);
    else
        json::append_quoted(out, json::string_from_bytes(s.data));
}

namespace {

// Everything after stdout's value: stderr and the extensions.
void append_reply_rest(std::string& out, const ExecuteOutcome& o) {
    append_stream(out, "stderr", o.err);
    if (o.signal != 0) {
        out += ",\"signal\":";
        json::append_quoted(out, signal_name(o.signal));
    }
    if (o.timed_out) out += ",\"timed_out\":true";
    if (o.agent_restarted) out += ",\"agent_restarted\":true";
    if (o.out.truncated) out += ",\"stdout_truncated\":true";
    if (o.err.truncated) out += ",\"stderr_truncated\":true";
    if (o.out.truncated || o.err.truncated) {
        out += ",\"stdout_bytes\":" + std::to_string(o.out.total);
        out += ",\"stderr_bytes\":" + std::to_string(o.err.total);
    }
    if (o.has_duration) out += ",\"duration_ms\":" + std::to_string(o.duration_ms);
    out += '}';
}

std::string reply_prefix(const ExecuteOutcome& o) {
    return "{\"exit_status\":" + std::to_string(o.exit_status);
}

}  // namespace

std::string execute_reply_body(const ExecuteOutcome& o) {
    std::string out;
    out.reserve(o.out.data.size() + o.err.data.size() + 256);
    out += reply_prefix(o);
    append_stream(out, "stdout", o.out);
    append_reply_rest(out, o);
    return out;
}

std::string execute_reply_body(const ExecuteOutcome& o, std::string&& escaped_stdout) {
    std::string head = reply_prefix(o) + ",\"stdout\":\"";
    std::string out = std::move(escaped_stdout);
    // Room for both ends at once; a capture of any size already has it
    // (OutputCapture reserves its head with slack), so this moves the
    // output in place instead of copying it to a new buffer.
    out.reserve(out.size() + head.size() + o.err.data.size() + 256);
    out.insert(0, head);
    out += '"';
    append_reply_rest(out, o);
    return out;
}

namespace {
// A reply with no output: exit_status, empty stdout, one line on stderr,
// and a flag (extension) that tells it from a script that exited so.
std::string agent_reply_body(int exit_status, const std::string& line, const char* flag) {
    std::string out = "{\"exit_status\":" + std::to_string(exit_status) + ",\"stdout\":\"\",\"stderr\":";
    json::append_quoted(out, json::string_from_bytes(line + "\n"));
    out += ",\"";
    out += flag;
    out += "\":true}";
    return out;
}
}  // namespace

std::string invalid_request_body(std::string_view reason) {
    return agent_reply_body(2, "ur-agent: invalid request: " + std::string(reason), "invalid_request");
}

std::string not_run_body(std::string_view reason) {
    return agent_reply_body(1, "ur-agent: not run: " + std::string(reason), "not_run");
}

uint64_t max_size_from_close(uint16_t code, std::string_view text) {
    constexpr std::string_view kMarker = "max size ";
    size_t at = text.find(kMarker);
    if (code != 406 || at == std::string_view::npos) return 0;
    uint64_t n = 0;
    size_t digits = 0;
    for (size_t i = at + kMarker.size(); i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i) {
        if (n > (UINT64_MAX - 9) / 10) return 0;
        n = n * 10 + uint64_t(text[i] - '0');
        ++digits;
    }
    return digits ? n : 0;
}

bool close_refuses_key(uint16_t code, std::string_view text, std::string_view routing_key) {
    constexpr std::string_view kMarker = "access to topic '";
    size_t at = text.find(kMarker);
    if (code != 403 || at == std::string_view::npos || routing_key.empty()) return false;
    std::string_view named = text.substr(at + kMarker.size());
    // The whole key and its closing quote, or the text ends inside the key.
    if (named.size() > routing_key.size())
        return named.substr(0, routing_key.size()) == routing_key && named[routing_key.size()] == '\'';
    return !named.empty() && routing_key.substr(0, named.size()) == named;
}

bool denies_transient_queues(std::string_view product, std::string_view version) {
    if (product != "RabbitMQ") return false;
    // "4.3.0", "4.10.1", "4.3.0-rc.1", "5.0": major.minor, as leading digits.
    size_t i = 0;
    auto number = [&](unsigned& n) {
        size_t start = i;
        n = 0;
        while (i < version.size() && i - start < 6 && version[i] >= '0' && version[i] <= '9')
            n = n * 10 + unsigned(version[i++] - '0');
        return i > start;
    };
    unsigned major = 0, minor = 0;
    if (!number(major) || i >= version.size() || version[i++] != '.' || !number(minor)) return false;
    return major > 4 || (major == 4 && minor >= 3);
}

bool is_transient_queue_refusal(std::string_view text) {
    return text.find("transient_nonexcl_queues") != std::string_view::npos;
}

std::string fit_reply(std::string_view body, uint64_t limit, FitReason reason) {
    const std::string why =
        "ur-agent: the reply of " + std::to_string(body.size()) + " bytes " +
        (reason == FitReason::BrokerMax
             ? "is larger than the broker takes (" + std::to_string(limit) + " bytes)"
             : "did not fit in the room left for replies waiting for the broker "
               "(--max-pending-bytes)") +
        "; output cut to fit";
    json::Value v;
    json::ParseError perr;
    json::ParseOptions whole;  // a reply can pass the parser's default size bound
    whole.max_size = std::max(whole.max_size, body.size());
    if (json::parse(body, v, perr, whole) && v.is_object()) {
        // Each stream keeps its head and its end (where errors usually
        // are), as much as fits: escaping can make text up to six times
        // longer, so start from what fits unescaped and shrink until the
        // whole reply does, down to a sixteenth of the limit per stream.
        // The streams moved out once (no copy of the whole reply kept
        // around: it may be as large as the broker's limit and more).
        std::string texts[2];
        bool have[2] = {false, false};
        const char* const names[2] = {"stdout", "stderr"};
        for (int k = 0; k < 2; ++k) {
            json::Value* s = v.find(names[k]);
            if (!s || !s->is_string()) continue;
            texts[k] = std::move(s->as_string());
            have[k] = true;
        }
        size_t keep = size_t(limit / 2);
        for (int attempt = 0; attempt < 8; ++attempt) {
            bool cut_any = false;
            for (int k = 0; k < 2; ++k) {
                if (!have[k]) continue;
                const std::string name = names[k];
                const std::string& text = texts[k];
                if (text.size() <= keep) {
                    v.set(name, json::Value(text));
                    continue;
                }
                cut_any = true;
                const size_t tail_want = std::min<size_t>(keep / 4, 64 * 1024);
                std::string cut = text.substr(0, json::valid_utf8_prefix(
                                                     std::string_view(text).substr(0, keep - tail_want)));
                cut += "\n[" + why + "]\n";
                size_t from = text.size() - tail_want;
                while (from < text.size() && (static_cast<unsigned char>(text[from]) & 0xC0) == 0x80)
                    ++from;  // a character's start, not its middle
                cut.append(text, from, std::string::npos);
                v.set(name, json::Value(std::move(cut)));
                v.set(name + "_truncated", json::Value(true));
            }
            // A cut reply carries both counts, as one cut at capture does
            // (the capture's own where it made them; else the text's).
            for (int k = 0; k < 2 && cut_any; ++k)
                if (have[k] && !v.find(std::string(names[k]) + "_bytes"))
                    v.set(std::string(names[k]) + "_bytes", json::Value(int64_t(texts[k].size())));
            std::string out = json::write(v);
            if (out.size() <= limit) return out;
            if (keep <= limit / 16) break;
            keep = std::max<size_t>(size_t(limit / 16), size_t(double(keep) * double(limit) /
                                                              double(out.size()) * 0.9));
        }
    }
    json::Value r = json::Value::object();
    const json::Value* status = v.is_object() ? v.find("exit_status") : nullptr;
    r.set("exit_status", status && status->is_int() ? *status : json::Value(int64_t(1)));
    r.set("stdout", "");
    r.set("stderr", why + "\n");
    return json::write(r);
}

std::string ping_reply_body(std::string_view ping_id, std::string_view iso_timestamp) {
    std::string out = "{\"req_id\":";
    out += ping_id;
    out += ",\"timestamp\":";
    json::append_quoted(out, iso_timestamp);
    out += '}';
    return out;
}

std::string signal_name(int signo) {
    static const struct { int no; const char* name; } table[] = {
        {SIGHUP, "SIGHUP"},   {SIGINT, "SIGINT"},   {SIGQUIT, "SIGQUIT"}, {SIGILL, "SIGILL"},
        {SIGTRAP, "SIGTRAP"}, {SIGABRT, "SIGABRT"}, {SIGBUS, "SIGBUS"},   {SIGFPE, "SIGFPE"},
        {SIGKILL, "SIGKILL"}, {SIGUSR1, "SIGUSR1"}, {SIGSEGV, "SIGSEGV"}, {SIGUSR2, "SIGUSR2"},
        {SIGPIPE, "SIGPIPE"}, {SIGALRM, "SIGALRM"}, {SIGTERM, "SIGTERM"}, {SIGCHLD, "SIGCHLD"},
        {SIGCONT, "SIGCONT"}, {SIGSTOP, "SIGSTOP"}, {SIGTSTP, "SIGTSTP"}, {SIGTTIN, "SIGTTIN"},
        {SIGTTOU, "SIGTTOU"}, {SIGURG, "SIGURG"},   {SIGXCPU, "SIGXCPU"}, {SIGXFSZ, "SIGXFSZ"},
        {SIGVTALRM, "SIGVTALRM"}, {SIGPROF, "SIGPROF"}, {SIGSYS, "SIGSYS"},
    // Not in POSIX; each where the platform has it (illumos: EMT, LWP).
#ifdef SIGWINCH
        {SIGWINCH, "SIGWINCH"},
#endif
#ifdef SIGIO
        {SIGIO, "SIGIO"},
#endif
#ifdef SIGPWR
        {SIGPWR, "SIGPWR"},
#endif
#ifdef SIGSTKFLT
        {SIGSTKFLT, "SIGSTKFLT"},
#endif
#ifdef SIGEMT
        {SIGEMT, "SIGEMT"},
#endif
#ifdef SIGLWP
        {SIGLWP, "SIGLWP"},
#endif
    };
    for (const auto& e : table)
        if (e.no == signo) return e.name;
#if defined(__sun)
    // illumos' own (SIGFREEZE, SIGXRES, SIGRTMIN+1, ...): its sig2str()
    // names them without the "SIG".
    char name[SIG2STR_MAX];
    if (::sig2str(signo, name) == 0) return std::string("SIG") + name;
#endif
    return "SIG" + std::to_string(signo);
}

}  // namespace ur
