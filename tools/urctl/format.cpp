#include "tools/urctl/format.hpp"

#include <algorithm>
#include <cstdio>
#include <ctime>

namespace urctl {

std::string iso8601_utc(uint64_t wall_ms) {
    time_t secs = time_t(wall_ms / 1000);
    struct tm tm {};
    gmtime_r(&secs, &tm);
    char buf[64];
    std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", tm.tm_year + 1900,
                  tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                  unsigned(wall_ms % 1000));
    return buf;
}

void sort_nodes(std::vector<NodeInfo>& nodes) {
    std::sort(nodes.begin(), nodes.end(), [](const NodeInfo& a, const NodeInfo& b) {
        return a.hostname != b.hostname ? a.hostname < b.hostname : a.uuid < b.uuid;
    });
}

std::string cell(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size(); ++i) {
        const unsigned char c = static_cast<unsigned char>(s[i]);
        if (c < 0x20 || c == 0x7f) {  // C0 controls (ESC, BEL, line breaks), DEL
            out += ' ';
        } else if (c == 0xc2 && i + 1 < s.size() && static_cast<unsigned char>(s[i + 1]) >= 0x80 &&
                   static_cast<unsigned char>(s[i + 1]) <= 0x9f) {
            out += ' ';  // C1 controls, U+0080..U+009F (CSI among them)
            ++i;
        } else {
            out += char(c);
        }
    }
    return out.empty() ? "-" : out;
}

namespace {

std::string pad(const std::string& s, size_t width) {
    return s.size() >= width ? s : s + std::string(width - s.size(), ' ');
}

// Renders rows as left-aligned columns two spaces apart; the last column
// is not padded.
std::string table(const std::vector<std::vector<std::string>>& rows) {
    std::vector<size_t> width;
    for (const auto& r : rows)
        for (size_t i = 0; i < r.size(); ++i) {
            if (width.size() <= i) width.push_back(0);
            width[i] = std::max(width[i], r[i].size());
        }
    std::string out;
    for (const auto& r : rows) {
        for (size_t i = 0; i < r.size(); ++i) {
            if (i + 1 < r.size())
                out += pad(r[i], width[i]) + "  ";
            else
                out += r[i];
        }
        out += '\n';
    }
    return out;
}

std::string without_final_newline(std::string_view s) {
    if (!s.empty() && s.back() == '\n') s.remove_suffix(1);
    return std::string(s);
}

bool one_line(std::string_view s) {
    return without_final_newline(s).find('\n') == std::string::npos;
}

std::string status_text(const NodeResult& r) {
    if (!r.replied) return "no reply";
    if (!r.reply.ok) return "bad reply";
    std::string s = "exit " + std::to_string(r.reply.exit_status);
    if (r.reply.timed_out)
        s += " (killed: timeout)";
    else if (!r.reply.signal.empty())
        s += " (" + r.reply.signal + ")";
    return s;
}

}  // namespace

std::string format_ping(const std::string& node, uint64_t rtt_ms, const PingReply& reply,
                        bool json) {
    if (json) {
        json::Value v = json::Value::object();
        v.set("uuid", node);
        v.set("req_id", reply.req_id);
        v.set("timestamp", reply.timestamp);
        v.set("rtt_ms", static_cast<unsigned long long>(rtt_ms));
        return json::write(v) + "\n";
    }
    return node + " is alive: answered in " + std::to_string(rtt_ms) + " ms" +
           (reply.timestamp.empty() ? "" : " (agent time " + cell(reply.timestamp) + ")") +
           "\n";
}

std::string format_discover(const std::vector<NodeInfo>& nodes_in, bool json) {
    std::vector<NodeInfo> nodes = nodes_in;
    sort_nodes(nodes);
    std::string out;
    if (json) {
        for (const NodeInfo& n : nodes) {
            json::Value v = json::Value::object();
            v.set("uuid", n.uuid);
            v.set("hostname", n.hostname);
            v.set("system_type", n.system_type);
            v.set("datacenter", n.datacenter);
            // A boolean, as urclient makes it and beside "headnode" (sysinfo
            // has a string or a boolean); null when sysinfo has neither.
            if (n.setup == "true" || n.setup == "false")
                v.set("setup", n.setup == "true");
            else if (n.setup.empty())
                v.set("setup", json::Value());
            else
                v.set("setup", n.setup);
            v.set("headnode", n.headnode);
            v.set("sysinfo", n.sysinfo);
            out += json::write(v) + "\n";
        }
        return out;
    }
    if (nodes.empty()) return "no nodes answered\n";
    std::vector<std::vector<std::string>> rows;
    rows.push_back({"UUID", "HOSTNAME", "SYSTEM", "SETUP", "HEADNODE", "DATACENTER"});
    for (const NodeInfo& n : nodes)
        rows.push_back({cell(n.uuid), cell(n.hostname), cell(n.system_type), cell(n.setup),
                        n.headnode ? "yes" : "no", cell(n.datacenter)});
    out = table(rows);
    out += std::to_string(nodes.size()) + (nodes.size() == 1 ? " node\n" : " nodes\n");
    return out;
}

std::string format_exec_json(const std::string& uuid, const std::string& hostname,
                             const ExecuteReply& reply) {
    if (!reply.ok) return format_exec_error_json(uuid, hostname, "bad reply: " + reply.error);
    // Built in one pass: set() looks each key up, and a reply of 100,000
    // members took 15 s to print.  The reply's keys are distinct (parsed).
    json::Value v = json::Value::object();
    json::Value::Object& o = v.as_object();
    o.reserve(reply.body.as_object().size() + 2);
    o.emplace_back("uuid", json::Value(uuid));
    if (!hostname.empty()) o.emplace_back("hostname", json::Value(hostname));
    for (const json::Value::Member& m : reply.body.as_object())
        if (m.first != "uuid" && m.first != "hostname") o.push_back(m);
    return json::write(v) + "\n";
}

std::string format_exec_error_json(const std::string& uuid, const std::string& hostname,
                                   const std::string& error) {
    json::Value v = json::Value::object();
    v.set("uuid", uuid);
    if (!hostname.empty()) v.set("hostname", hostname);
    v.set("error", error);
    return json::write(v) + "\n";
}

std::string exec_notes(const ExecuteReply& r) {
    std::string out;
    if (r.timed_out)
        out += "urctl: the agent killed the script: it ran past its timeout\n";
    else if (!r.signal.empty())
        out += "urctl: the script was killed by " + cell(r.signal) + "\n";
    if (r.stdout_truncated) out += "urctl: stdout was truncated by the agent\n";
    if (r.stderr_truncated) out += "urctl: stderr was truncated by the agent\n";
    return out;
}

int oneach_exit_status(const std::vector<NodeResult>& results) {
    bool failed = false;
    for (const NodeResult& r : results) {
        if (!r.replied) return 4;
        if (!r.reply.ok || r.reply.exit_status != 0) failed = true;
    }
    return failed ? 1 : 0;
}

std::string format_oneach(std::vector<NodeResult> results, bool json) {
    std::stable_sort(results.begin(), results.end(), [](const NodeResult& a, const NodeResult& b) {
        return a.node.hostname != b.node.hostname ? a.node.hostname < b.node.hostname
                                                  : a.node.uuid < b.node.uuid;
    });
    size_t ok = 0, failed = 0, no_reply = 0;
    for (const NodeResult& r : results) {
        if (!r.replied)
            ++no_reply;
        else if (r.reply.ok && r.reply.exit_status == 0)
            ++ok;
        else
            ++failed;
    }
    std::string out;
    if (json) {
        for (const NodeResult& r : results)
            out += r.replied ? format_exec_json(r.node.uuid, r.node.hostname, r.reply)
                             : format_exec_error_json(r.node.uuid, r.node.hostname, "no reply");
        json::Value s = json::Value::object();
        s.set("nodes", static_cast<unsigned long long>(results.size()));
        s.set("ok", static_cast<unsigned long long>(ok));
        s.set("failed", static_cast<unsigned long long>(failed));
        s.set("no_reply", static_cast<unsigned long long>(no_reply));
        json::Value v = json::Value::object();
        v.set("summary", std::move(s));
        return out + json::write(v) + "\n";
    }

    bool compact = true;  // every node's output fits on one line
    for (const NodeResult& r : results) {
        if (!r.replied || !r.reply.ok) continue;
        bool has_out = !r.reply.out.empty(), has_err = !r.reply.err.empty();
        if ((has_out && has_err) || !one_line(r.reply.out) || !one_line(r.reply.err))
            compact = false;
    }
    if (compact) {
        std::vector<std::vector<std::string>> rows;
        rows.push_back({"HOSTNAME", "UUID", "STATUS", "OUTPUT"});
        for (const NodeResult& r : results) {
            std::string line;
            if (r.replied && r.reply.ok)
                line = without_final_newline(r.reply.out.empty() ? r.reply.err : r.reply.out);
            else if (r.replied)
                line = r.reply.error;
            rows.push_back({cell(r.node.hostname), cell(r.node.uuid), status_text(r),
                            line.empty() ? std::string() : cell(line)});
        }
        out = table(rows);
    } else {
        for (const NodeResult& r : results) {
            out += "=== " + cell(r.node.hostname) + " (" + cell(r.node.uuid) +
                   "): " + status_text(r) + "\n";
            if (!r.replied) continue;
            if (!r.reply.ok) {
                out += r.reply.error + "\n";
                continue;
            }
            out += r.reply.out;
            if (!r.reply.out.empty() && r.reply.out.back() != '\n') out += '\n';
            if (!r.reply.err.empty()) {
                out += "--- stderr\n" + r.reply.err;
                if (r.reply.err.back() != '\n') out += '\n';
            }
        }
    }
    out += std::to_string(results.size()) + (results.size() == 1 ? " node: " : " nodes: ") +
           std::to_string(ok) + " ok, " + std::to_string(failed) + " failed, " +
           std::to_string(no_reply) + " no reply\n";
    return out;
}

std::string format_message(uint64_t wall_ms, std::string_view exchange,
                           std::string_view routing_key, std::string_view content_type,
                           std::string_view body, bool json) {
    json::Value parsed;
    json::ParseError pe;
    bool is_json = json::parse(body, parsed, pe);
    if (json) {
        json::Value v = json::Value::object();
        v.set("time", iso8601_utc(wall_ms));
        v.set("exchange", json::string_from_bytes(exchange));
        v.set("routing_key", json::string_from_bytes(routing_key));
        v.set("content_type", json::string_from_bytes(content_type));
        if (is_json)
            v.set("body", std::move(parsed));
        else
            v.set("body_text", json::string_from_bytes(body));
        return json::write(v) + "\n";
    }
    std::string shown = is_json ? json::write(parsed) : cell(json::string_from_bytes(body));
    return iso8601_utc(wall_ms) + "  " + cell(json::string_from_bytes(routing_key)) + "  " +
           shown + "\n";
}

std::string format_error_json(std::string_view kind, std::string_view message) {
    json::Value v = json::Value::object();
    v.set("error", kind);
    v.set("message", json::string_from_bytes(message));
    return json::write(v) + "\n";
}

}  // namespace urctl
