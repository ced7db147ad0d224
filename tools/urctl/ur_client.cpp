#include "tools/urctl/ur_client.hpp"

#include <cerrno>
#include <cstring>

#include <fcntl.h>
#include <unistd.h>

namespace urctl {

bool random_uuid(std::string& out, std::string& error) {
    unsigned char b[16];
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        error = std::string("cannot open /dev/urandom: ") + std::strerror(errno);
        return false;
    }
    size_t got = 0;
    while (got < sizeof b) {
        ssize_t n = read(fd, b + got, sizeof b - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            error = std::string("cannot read /dev/urandom: ") +
                    (n < 0 ? std::strerror(errno) : "end of file");
            close(fd);
            return false;
        }
        got += size_t(n);
    }
    close(fd);
    b[6] = (b[6] & 0x0f) | 0x40;  // version 4
    b[8] = (b[8] & 0x3f) | 0x80;  // RFC 4122 variant
    static const char hex[] = "0123456789abcdef";
    out.clear();
    for (int i = 0; i < 16; ++i) {
        if (i == 4 || i == 6 || i == 8 || i == 10) out += '-';
        out += hex[b[i] >> 4];
        out += hex[b[i] & 15];
    }
    return true;
}

bool looks_like_uuid(std::string_view s) {
    if (s.size() != 36) return false;
    for (size_t i = 0; i < s.size(); ++i) {
        char c = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-') return false;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
                     (c >= 'A' && c <= 'F'))) {
            return false;
        }
    }
    return true;
}

std::string to_lower(std::string_view s) {
    std::string out(s);
    for (char& c : out)
        if (c >= 'A' && c <= 'Z') c = char(c - 'A' + 'a');
    return out;
}

std::string client_queue_name(std::string_view client_id) {
    return "ur.urctl." + std::string(client_id);
}

std::vector<std::string> client_bindings(std::string_view client_id) {
    return {"ur.execute-reply.*.*", "ur.startup.#", "ur.sysinfo.#",
            "ur.ack" + std::string(client_id) + ".*"};
}

std::string execute_key(std::string_view node_uuid, std::string_view req_id) {
    return "ur.execute." + std::string(node_uuid) + "." + std::string(req_id);
}

std::string ping_key(std::string_view node_uuid) { return "ur.ping." + std::string(node_uuid); }

std::string broadcast_sysinfo_key(std::string_view req_id) {
    return "ur.broadcast.sysinfo." + std::string(req_id);
}

namespace {

bool starts_with(std::string_view s, std::string_view prefix) {
    return s.size() >= prefix.size() && s.compare(0, prefix.size(), prefix) == 0;
}

}  // namespace

IncomingKey classify_key(std::string_view key, std::string_view client_id) {
    IncomingKey k;
    const std::string ack_prefix = "ur.ack" + std::string(client_id) + ".";
    if (starts_with(key, "ur.execute-reply.")) {
        // ur.execute-reply.<uuid>.<req>: <req> has no dots, so it is
        // everything after the last one.
        std::string_view rest = key.substr(17);
        size_t dot = rest.rfind('.');
        if (dot == std::string_view::npos || dot == 0 || dot + 1 == rest.size()) return k;
        k.kind = IncomingKey::Kind::ExecuteReply;
        k.node = std::string(rest.substr(0, dot));
        k.req_id = std::string(rest.substr(dot + 1));
    } else if (!client_id.empty() && starts_with(key, ack_prefix)) {
        if (key.size() == ack_prefix.size()) return k;
        k.kind = IncomingKey::Kind::Ack;
        k.node = std::string(key.substr(ack_prefix.size()));
    } else if (starts_with(key, "ur.startup.")) {
        k.kind = IncomingKey::Kind::Startup;
        k.node = std::string(key.substr(11));
    } else if (starts_with(key, "ur.sysinfo.")) {
        std::string_view rest = key.substr(11);
        k.kind = IncomingKey::Kind::Sysinfo;
        k.node = std::string(rest.substr(0, rest.find('.')));
    }
    return k;
}

std::string with_interpreter(std::string script) {
    if (starts_with(script, "#!")) return script;
    return "#!/bin/sh\n" + script;
}

std::string execute_body(const ExecuteRequest& r) {
    json::Value body = json::Value::object();
    if (r.is_file) {
        body.set("type", "file");
        body.set("file", r.script);
    } else {
        body.set("type", "script");
        body.set("script", r.script);
    }
    json::Value args = json::Value::array();
    for (const std::string& a : r.args) args.push_back(a);
    body.set("args", std::move(args));
    json::Value env = json::Value::object();
    for (const auto& kv : r.env) env.set(kv.first, kv.second);
    body.set("env", std::move(env));
    json::Value origin = json::Value::object();
    origin.set("user", r.origin_user);
    origin.set("hostname", r.origin_hostname);
    body.set("origin", std::move(origin));
    if (r.has_kill_after) body.set("timeout", static_cast<unsigned long long>(r.kill_after_s));
    return json::write(body);
}

std::string ping_body(std::string_view client_id, std::string_view req_id) {
    json::Value body = json::Value::object();
    body.set("client_id", client_id);
    body.set("id", req_id);
    return json::write(body);
}

namespace {

bool parse_object(std::string_view body, json::Value& out, std::string& error) {
    json::ParseError pe;
    // As urclient (JSON.parse) reads them: another agent's reply may hold
    // an escaped lone surrogate, and lose no more than that character.
    if (!json::parse(body, out, pe, json::javascript_options())) {
        error = "reply is not JSON (" + pe.to_string() + ")";
        return false;
    }
    if (!out.is_object()) {
        error = "reply is not a JSON object";
        return false;
    }
    return true;
}

bool flag(const json::Value& obj, std::string_view name) {
    const json::Value* v = obj.find(name);
    return v && v->is_bool() && v->as_bool();
}

std::string text(const json::Value& obj, std::string_view name) {
    const json::Value* v = obj.find(name);
    return v && v->is_string() ? v->as_string() : std::string();
}

}  // namespace

ExecuteReply parse_execute_reply(std::string_view body) {
    ExecuteReply r;
    if (!parse_object(body, r.body, r.error)) return r;
    const json::Value* status = r.body.find("exit_status");
    // exit_status must be a whole number (an integral double is fine: the
    // original agent was JavaScript).
    if (status == nullptr || !status->is_number() ||
        (status->is_double() && status->as_int() != status->as_double())) {
        r.error = "reply has no integer exit_status";
        return r;
    }
    r.exit_status = status->as_int();
    for (const char* name : {"stdout", "stderr"}) {
        const json::Value* v = r.body.find(name);
        if (v && !v->is_string()) {
            r.error = std::string("reply's ") + name + " is not a string";
            return r;
        }
    }
    r.out = text(r.body, "stdout");
    r.err = text(r.body, "stderr");
    r.timed_out = flag(r.body, "timed_out");
    r.stdout_truncated = flag(r.body, "stdout_truncated");
    r.stderr_truncated = flag(r.body, "stderr_truncated");
    r.signal = text(r.body, "signal");
    r.ok = true;
    return r;
}

bool parse_node_info(std::string_view key_uuid, std::string_view body, NodeInfo& out,
                     std::string& error) {
    NodeInfo n;
    if (!parse_object(body, n.sysinfo, error)) return false;
    std::string uuid = text(n.sysinfo, "UUID");
    if (uuid.empty()) uuid = std::string(key_uuid);
    if (uuid.empty()) {
        error = "sysinfo has no UUID";
        return false;
    }
    n.uuid = uuid;  // as the node has it: its routing keys use it so
    n.hostname = text(n.sysinfo, "Hostname");
    n.system_type = text(n.sysinfo, "System Type");
    n.datacenter = text(n.sysinfo, "Datacenter Name");
    if (const json::Value* s = n.sysinfo.find("Setup")) {
        if (s->is_bool())
            n.setup = s->as_bool() ? "true" : "false";
        else if (s->is_string())
            n.setup = s->as_string();
    }
    if (const json::Value* bp = n.sysinfo.find("Boot Parameters")) {
        if (const json::Value* h = bp->find("headnode"))
            n.headnode = (h->is_bool() && h->as_bool()) ||
                         (h->is_string() && h->as_string() == "true");
    }
    out = std::move(n);
    return true;
}

bool parse_ping_reply(std::string_view body, PingReply& out, std::string& error) {
    json::Value v;
    if (!parse_object(body, v, error)) return false;
    const json::Value* id = v.find("req_id");
    if (id == nullptr || !id->is_string()) {
        error = "ping reply has no req_id";
        return false;
    }
    out.req_id = id->as_string();
    out.timestamp = text(v, "timestamp");
    return true;
}

bool node_matches(const NodeInfo& node, const std::string& name) {
    // Hostnames in any case too, as urclient's discover matches them.
    return looks_like_uuid(name) ? to_lower(node.uuid) == to_lower(name)
                                 : to_lower(node.hostname) == to_lower(name);
}

void match_nodes(const std::vector<NodeInfo>& nodes, const std::vector<std::string>& names,
                 std::vector<size_t>& found, std::vector<std::string>& missing) {
    for (const std::string& name : names) {
        bool any = false;
        for (size_t i = 0; i < nodes.size(); ++i) {
            if (!node_matches(nodes[i], name)) continue;
            any = true;
            bool dup = false;
            for (size_t f : found) dup = dup || f == i;
            if (!dup) found.push_back(i);
        }
        if (!any) missing.push_back(name);
    }
}

}  // namespace urctl
