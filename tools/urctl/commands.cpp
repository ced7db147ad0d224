#include "tools/urctl/commands.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <cstdint>
#include <functional>
#include <map>
#include <vector>

#include "tools/urctl/format.hpp"
#include "tools/urctl/session.hpp"
#include "tools/urctl/ur_client.hpp"

namespace urctl {

namespace {

// How long a ping that timed out waits, beyond --timeout, for the broker
// to say whether anything is bound to its key (Session::sync()).
constexpr uint64_t kSettleMs = 2000;

const char* kind_of(int code) {
    switch (code) {
    case kExitUsage: return "usage";
    case kExitBroker: return "broker";
    case kExitTimeout: return "timeout";
    case kExitUnknownNode: return "unknown-node";
    case kExitInterrupted: return "interrupted";
    default: return "failed";
    }
}

std::string seconds_text(uint64_t ms) {
    std::string s = std::to_string(ms / 1000);
    if (ms % 1000) {
        char frac[8];
        std::snprintf(frac, sizeof frac, ".%03u", unsigned(ms % 1000));
        s += frac;
        while (s.back() == '0') s.pop_back();
    }
    return s + " s";
}

class Runner {
public:
    Runner(const Options& opt, const RunContext& ctx) : opt_(opt), ctx_(ctx) {}

    int run() {
        std::string error;
        if (!random_uuid(client_id_, error)) return fail(kExitFailed, error);
        int rc;
        switch (opt_.command) {
        case Command::Ping: rc = ping(); break;
        case Command::Discover: rc = discover(); break;
        case Command::Exec: rc = exec(); break;
        case Command::OnEach: rc = oneach(); break;
        case Command::Watch: rc = watch(); break;
        default: rc = kExitUsage; break;
        }
        session_.close(monotonic_ms() + 2000);
        // Output lost to a full disk is no success; a reader that went
        // away (`| head`, `| grep -q`) took what it wanted.
        if (out_errno_ == 0 && std::fflush(ctx_.out) != 0) out_errno_ = errno;
        if (out_errno_ != 0 && out_errno_ != EPIPE) {
            std::fprintf(ctx_.err, "urctl: cannot write the output: %s\n",
                         std::strerror(out_errno_));
            if (rc == kExitOk) rc = kExitFailed;
        }
        return rc;
    }

private:
    // Prints the error (and its JSON form with --json); returns code.
    int fail(int code, const std::string& message) {
        std::fprintf(ctx_.err, "urctl: %s\n", message.c_str());
        if (opt_.json) print(format_error_json(kind_of(code), message));
        return code;
    }

    int fail(SessionStatus s, const std::string& message) {
        return fail(exit_code(s), message);
    }

    // Writes `s` to our stdout, remembering the first error (run() says it).
    void print(const std::string& s) {
        if (out_errno_ != 0) return;
        errno = 0;
        if (std::fwrite(s.data(), 1, s.size(), ctx_.out) != s.size() || std::fflush(ctx_.out) != 0)
            out_errno_ = errno ? errno : EIO;
    }

    // Opens the session on our queue with `keys` (default: urclient's).
    bool open(int& rc, std::vector<std::string> keys = {}) {
        if (keys.empty()) keys = client_bindings(client_id_);
        SessionOptions so;
        so.brokers = opt_.brokers;
        so.login = opt_.login;
        so.password = opt_.password;
        so.vhost = opt_.vhost;
        so.connect_timeout_ms = opt_.connect_timeout_ms;
        so.connection_name = "urctl " + ctx_.origin_user + "@" + ctx_.origin_hostname;
        uint64_t deadline =
            monotonic_ms() + opt_.connect_timeout_ms * std::max<size_t>(1, opt_.brokers.size());
        std::string error;
        SessionStatus s =
            session_.open(so, client_queue_name(client_id_), keys, deadline, error);
        if (s == SessionStatus::Ok) return true;
        if (s == SessionStatus::Timeout) s = SessionStatus::Unreachable;
        std::string what = s == SessionStatus::Interrupted ? "interrupted"
                           : s == SessionStatus::Refused  ? "broker refused us: " + error
                                                          : "broker unreachable: " + error;
        rc = fail(s, what);
        return false;
    }

    // Sends a ping to `uuid` and waits for its ack until deadline_ms.
    // Ok with the reply; Timeout when none came; Refused-like "unknown" is
    // signalled by `returned` (nobody listens on ur.ping.<uuid>).
    SessionStatus ping_node(const std::string& uuid, uint64_t deadline_ms, PingReply& reply,
                            bool& returned, std::string& error) {
        returned = false;
        std::string rid;
        if (!random_uuid(rid, error)) return SessionStatus::Lost;
        const std::string key = ping_key(uuid);
        if (!session_.publish(key, ping_body(client_id_, rid), true, error))
            return SessionStatus::Lost;
        for (;;) {
            Incoming in;
            SessionStatus s = session_.next(in, deadline_ms, error);
            if (s == SessionStatus::Timeout && !returned) {
                // No reply and no return by the deadline; but the publish
                // had no confirm, and its return may still be on the way:
                // a round trip settles whether anything is bound to the key.
                std::string why;
                if (session_.sync(monotonic_ms() + kSettleMs, why) == SessionStatus::Ok)
                    while (session_.next(in, 0, why) == SessionStatus::Ok)
                        if (in.kind == Incoming::Kind::Returned && in.routing_key == key)
                            returned = true;
                return SessionStatus::Timeout;
            }
            if (s != SessionStatus::Ok) return s;
            if (in.kind == Incoming::Kind::Returned) {
                if (in.routing_key == key) {
                    returned = true;
                    return SessionStatus::Timeout;
                }
                continue;
            }
            IncomingKey k = classify_key(in.routing_key, client_id_);
            if (k.kind != IncomingKey::Kind::Ack || k.node != uuid) continue;
            PingReply r;
            std::string why;
            if (!parse_ping_reply(in.body, r, why) || r.req_id != rid) continue;
            reply = r;
            return SessionStatus::Ok;
        }
    }

    // Broadcasts a sysinfo discover and collects the answers until
    // deadline_ms, or until stop(node) says enough.  Interrupted and Lost
    // are returned; the end of the window is Ok.
    SessionStatus discover_nodes(uint64_t deadline_ms, std::vector<NodeInfo>& nodes,
                                 const std::function<bool(const NodeInfo&)>& stop,
                                 std::string& error) {
        std::string rid;
        if (!random_uuid(rid, error)) return SessionStatus::Lost;
        const std::string key = broadcast_sysinfo_key(rid);
        if (!session_.publish(key, "{}", true, error)) return SessionStatus::Lost;
        for (;;) {
            Incoming in;
            SessionStatus s = session_.next(in, deadline_ms, error);
            if (s == SessionStatus::Timeout) return SessionStatus::Ok;
            if (s != SessionStatus::Ok) return s;
            if (in.kind == Incoming::Kind::Returned) {
                if (in.routing_key == key) return SessionStatus::Ok;  // no agent at all
                continue;
            }
            IncomingKey k = classify_key(in.routing_key, client_id_);
            if (k.kind != IncomingKey::Kind::ExecuteReply || k.req_id != rid) continue;
            NodeInfo n;
            std::string why;
            if (!parse_node_info(k.node, in.body, n, why)) {
                std::fprintf(ctx_.err, "urctl: ignoring a discover reply from %s: %s\n",
                             cell(json::string_from_bytes(k.node)).c_str(), cell(why).c_str());
                continue;
            }
            bool dup = false;
            for (const NodeInfo& m : nodes) dup = dup || m.uuid == n.uuid;
            if (dup) continue;
            nodes.push_back(std::move(n));
            if (stop && stop(nodes.back())) return SessionStatus::Ok;
        }
    }

    // A ping of `name` not answered within waited_ms.  Returned: nothing
    // is bound to its ping key, no such node.  Else an agent listens but
    // did not answer in time: a timeout, told apart for scripts (a hung
    // agent is not a missing one).
    int ping_unanswered(const std::string& name, bool returned, uint64_t waited_ms) {
        return returned ? fail(kExitUnknownNode,
                               "unknown node " + name + ": no agent listens for its pings")
                        : fail(kExitTimeout, "no ping reply from " + name + " within " +
                                                 seconds_text(waited_ms) +
                                                 " (an agent listens for its pings)");
    }

    // Finds NODE: a UUID must answer a ping, a hostname a discover, within
    // --find-timeout.  Returns 0 with `node` set, or the exit code.
    int find_node(const std::string& name, NodeInfo& node) {
        uint64_t deadline = monotonic_ms() + opt_.find_timeout_ms;
        std::string error;
        if (looks_like_uuid(name)) {
            node.uuid = name;  // routing keys are case-sensitive: as typed first
            PingReply reply;
            bool returned = false;
            SessionStatus s = ping_node(node.uuid, deadline, reply, returned, error);
            if (s == SessionStatus::Ok) return 0;
            if (s != SessionStatus::Timeout) return fail(s, error);
            if (returned) {  // perhaps the UUID in another case than the node's own
                std::vector<NodeInfo> matches;
                if ((s = find_by_discover(name, deadline, matches, error)) != SessionStatus::Ok)
                    return fail(s, error);
                if (!matches.empty()) {
                    node = matches[0];
                    return 0;
                }
            }
            return ping_unanswered(name, returned, opt_.find_timeout_ms);
        }
        std::vector<NodeInfo> matches;
        SessionStatus s = find_by_discover(name, deadline, matches, error);
        if (s != SessionStatus::Ok) return fail(s, error);
        if (matches.empty())
            return fail(kExitUnknownNode, "unknown node " + name + ": no node of that hostname " +
                                              "answered a discover within " +
                                              seconds_text(opt_.find_timeout_ms));
        if (matches.size() > 1) return fail(kExitUnknownNode, ambiguous(name, matches));
        node = matches[0];
        return 0;
    }

    static std::vector<NodeInfo> matching(const std::vector<NodeInfo>& nodes,
                                          const std::string& name) {
        std::vector<NodeInfo> out;
        for (const NodeInfo& n : nodes)
            if (node_matches(n, name)) out.push_back(n);
        return out;
    }

    // A hostname that several nodes answer to: refused, never one of them
    // picked (urclient takes the first to answer).
    static std::string ambiguous(const std::string& name, const std::vector<NodeInfo>& matches) {
        std::string list;
        for (const NodeInfo& n : matches) list += (list.empty() ? "" : ", ") + n.uuid;
        return "ambiguous node " + name + ": " + std::to_string(matches.size()) +
               " nodes have that hostname (" + list + "); name one by its UUID; ran nothing";
    }

    // The nodes answering to `name` in a discover that lasts until
    // deadline, or, for a UUID (written in another case than the node's
    // own), until that node answers: a hostname waits it out, as a second
    // node of that hostname may still answer.
    SessionStatus find_by_discover(const std::string& name, uint64_t deadline,
                                   std::vector<NodeInfo>& matches, std::string& error) {
        std::vector<NodeInfo> nodes;
        std::function<bool(const NodeInfo&)> stop;
        if (looks_like_uuid(name)) stop = [&](const NodeInfo& n) { return node_matches(n, name); };
        SessionStatus s = discover_nodes(deadline, nodes, stop, error);
        matches = matching(nodes, name);
        return s;
    }

    ExecuteRequest request() const {
        ExecuteRequest r;
        r.is_file = !opt_.file.empty();
        r.script = r.is_file ? opt_.file : with_interpreter(opt_.script);
        r.args = opt_.args;
        r.env = opt_.env;
        r.has_kill_after = opt_.kill_after_set;
        r.kill_after_s = opt_.kill_after_s;
        r.origin_user = ctx_.origin_user;
        r.origin_hostname = ctx_.origin_hostname;
        return r;
    }

    int ping() {
        int rc = 0;
        if (!open(rc)) return rc;
        NodeInfo node;
        if (!looks_like_uuid(opt_.node)) {
            if ((rc = find_node(opt_.node, node)) != 0) return rc;
        } else {
            node.uuid = opt_.node;
        }
        uint64_t t0 = monotonic_ms();
        PingReply reply;
        bool returned = false;
        std::string error;
        SessionStatus s = ping_node(node.uuid, t0 + opt_.timeout_ms, reply, returned, error);
        std::vector<NodeInfo> matches;
        // No agent listens for the UUID as typed: a node may have it in
        // another case.  Looked for as any node is found, for
        // --find-timeout: every agent answers the discover, and none of
        // them may be the one, so it cannot end sooner.
        if (s == SessionStatus::Timeout && returned && looks_like_uuid(opt_.node) &&
            find_by_discover(opt_.node,
                             std::min(t0 + opt_.timeout_ms, monotonic_ms() + opt_.find_timeout_ms),
                             matches, error) == SessionStatus::Ok &&
            !matches.empty()) {
            // The UUID in another case than the node's own.
            node = matches[0];
            t0 = monotonic_ms();
            returned = false;
            s = ping_node(node.uuid, t0 + opt_.timeout_ms, reply, returned, error);
        }
        if (s == SessionStatus::Timeout) return ping_unanswered(opt_.node, returned, opt_.timeout_ms);
        if (s != SessionStatus::Ok) return fail(s, error);
        print(format_ping(node.uuid, monotonic_ms() - t0, reply, opt_.json));
        return kExitOk;
    }

    // --expect N: the discover is over once N nodes have answered.
    std::function<bool(const NodeInfo&)> until_expected(const std::vector<NodeInfo>& nodes) {
        if (opt_.expect == 0) return nullptr;
        return [this, &nodes](const NodeInfo&) { return nodes.size() >= opt_.expect; };
    }

    // Fewer than --expect nodes answered within window_ms: the message for
    // the exit 4 that follows, or "" when the expectation was met.
    std::string expect_missed(size_t got, uint64_t window_ms) const {
        if (opt_.expect == 0 || got >= opt_.expect) return "";
        return std::to_string(got) + " of the " + std::to_string(opt_.expect) +
               " expected nodes answered a discover within " + seconds_text(window_ms);
    }

    int discover() {
        int rc = 0;
        if (!open(rc)) return rc;
        std::vector<NodeInfo> nodes;
        std::string error;
        SessionStatus s = discover_nodes(monotonic_ms() + opt_.timeout_ms, nodes,
                                         until_expected(nodes), error);
        if (s != SessionStatus::Ok) return fail(s, error);
        print(format_discover(nodes, opt_.json));
        std::string missed = expect_missed(nodes.size(), opt_.timeout_ms);
        if (!missed.empty()) return fail(kExitTimeout, missed);
        return kExitOk;
    }

    int exec() {
        int rc = 0;
        if (!open(rc)) return rc;
        NodeInfo node;
        if ((rc = find_node(opt_.node, node)) != 0) return rc;
        std::string rid, error;
        if (!random_uuid(rid, error)) return fail(kExitFailed, error);
        const std::string key = execute_key(node.uuid, rid);
        if (!session_.publish(key, execute_body(request()), true, error))
            return fail(kExitFailed, "node " + opt_.node + ": " + error);
        uint64_t deadline = monotonic_ms() + opt_.timeout_ms;
        for (;;) {
            Incoming in;
            SessionStatus s = session_.next(in, deadline, error);
            if (s == SessionStatus::Timeout)
                return fail(kExitTimeout, "no reply from " + opt_.node + " within " +
                                              seconds_text(opt_.timeout_ms) +
                                              " (the script may still be running)");
            if (s != SessionStatus::Ok) return fail(s, error);
            if (in.kind == Incoming::Kind::Returned) {
                if (in.routing_key == key)
                    return fail(kExitUnknownNode, "unknown node " + opt_.node +
                                                      ": nothing listens for its requests");
                continue;
            }
            IncomingKey k = classify_key(in.routing_key, client_id_);
            if (k.kind != IncomingKey::Kind::ExecuteReply || k.req_id != rid) continue;
            ExecuteReply reply = parse_execute_reply(in.body);
            if (opt_.json) {
                print(format_exec_json(node.uuid, node.hostname, reply));
            } else if (reply.ok) {
                print(reply.out);
                std::fwrite(reply.err.data(), 1, reply.err.size(), ctx_.err);
                std::string notes = exec_notes(reply);
                std::fwrite(notes.data(), 1, notes.size(), ctx_.err);
            }
            if (!reply.ok) {
                std::fprintf(ctx_.err, "urctl: bad reply from %s: %s\n", opt_.node.c_str(),
                             reply.error.c_str());
                return kExitFailed;
            }
            if (reply.exit_status < 0 || reply.exit_status > 255) {
                std::fprintf(ctx_.err, "urctl: %s reported exit status %lld\n", opt_.node.c_str(),
                             static_cast<long long>(reply.exit_status));
                return kExitFailed;
            }
            return int(reply.exit_status);
        }
    }

    int oneach() {
        int rc = 0;
        if (!open(rc)) return rc;
        std::vector<NodeInfo> nodes;
        std::string error;
        // With --nodes the discover is over once every name has answered,
        // when every name is a UUID: a hostname waits out --find-timeout,
        // as a second node of that hostname may still answer.
        std::vector<bool> named(opt_.nodes.size(), false);
        size_t unnamed = opt_.nodes.size();
        bool all_uuids = true;
        for (const std::string& name : opt_.nodes) all_uuids = all_uuids && looks_like_uuid(name);
        auto until_named = [&](const NodeInfo& n) {
            for (size_t i = 0; i < opt_.nodes.size(); ++i)
                if (!named[i] && node_matches(n, opt_.nodes[i])) {
                    named[i] = true;
                    --unnamed;
                }
            return unnamed == 0;
        };
        std::function<bool(const NodeInfo&)> stop = until_expected(nodes);
        if (!opt_.nodes.empty()) {
            stop = nullptr;
            if (all_uuids) stop = until_named;
        }
        SessionStatus s =
            discover_nodes(monotonic_ms() + opt_.find_timeout_ms, nodes, stop, error);
        if (s != SessionStatus::Ok) return fail(s, error);
        std::string missed = expect_missed(nodes.size(), opt_.find_timeout_ms);
        if (!missed.empty()) return fail(kExitTimeout, missed + "; ran nothing");
        if (!opt_.nodes.empty()) {
            std::vector<size_t> found;
            std::vector<std::string> missing;
            match_nodes(nodes, opt_.nodes, found, missing);
            if (!missing.empty()) {
                std::string list;
                for (const std::string& m : missing) list += (list.empty() ? "" : ", ") + m;
                return fail(kExitUnknownNode, "unknown node(s) " + list +
                                                  ": not found by a discover within " +
                                                  seconds_text(opt_.find_timeout_ms) +
                                                  "; ran nothing");
            }
            for (const std::string& name : opt_.nodes) {
                if (looks_like_uuid(name)) continue;
                std::vector<NodeInfo> matches = matching(nodes, name);
                if (matches.size() > 1) return fail(kExitUnknownNode, ambiguous(name, matches));
            }
            std::vector<NodeInfo> chosen;
            for (size_t i : found) chosen.push_back(nodes[i]);
            nodes = std::move(chosen);
        }
        if (nodes.empty())
            return fail(kExitUnknownNode, "no node answered a discover within " +
                                              seconds_text(opt_.find_timeout_ms));

        std::vector<NodeResult> results(nodes.size());
        std::map<std::string, size_t> by_req;  // request id -> result index
        const std::string body = execute_body(request());
        for (size_t i = 0; i < nodes.size(); ++i) {
            std::string rid;
            if (!random_uuid(rid, error)) return fail(kExitFailed, error);
            results[i].node = nodes[i];
            by_req[rid] = i;
            // A node whose request cannot be sent is reported as not replying.
            if (!session_.publish(execute_key(nodes[i].uuid, rid), body, false, error))
                std::fprintf(ctx_.err, "urctl: node %s: %s\n", nodes[i].uuid.c_str(),
                             error.c_str());
        }
        size_t pending = nodes.size();
        uint64_t deadline = monotonic_ms() + opt_.timeout_ms;
        while (pending > 0) {
            Incoming in;
            s = session_.next(in, deadline, error);
            if (s == SessionStatus::Timeout) break;  // the missing ones say "no reply"
            if (s != SessionStatus::Ok) return fail(s, error);
            if (in.kind != Incoming::Kind::Message) continue;
            IncomingKey k = classify_key(in.routing_key, client_id_);
            if (k.kind != IncomingKey::Kind::ExecuteReply) continue;
            auto it = by_req.find(k.req_id);
            if (it == by_req.end() || results[it->second].replied) continue;
            results[it->second].replied = true;
            results[it->second].reply = parse_execute_reply(in.body);
            --pending;
        }
        print(format_oneach(results, opt_.json));
        rc = oneach_exit_status(results);
        if (rc == kExitTimeout)
            std::fprintf(ctx_.err, "urctl: %zu node(s) did not reply within %s\n", pending,
                         seconds_text(opt_.timeout_ms).c_str());
        return rc;
    }

    int watch() {
        int rc = 0;
        if (!open(rc, opt_.patterns)) return rc;
        // Says when it is listening: what passes from now on is shown.
        std::string list;
        for (const std::string& p : opt_.patterns) list += (list.empty() ? "" : " ") + p;
        std::fprintf(ctx_.err, "urctl: watching %s on %s\n", list.c_str(),
                     session_.peer().c_str());
        std::fflush(ctx_.err);
        uint64_t deadline = opt_.timeout_set ? monotonic_ms() + opt_.timeout_ms : UINT64_MAX;
        uint64_t seen = 0;
        while (opt_.count == 0 || seen < opt_.count) {
            Incoming in;
            std::string error;
            SessionStatus s = session_.next(in, deadline, error);
            if (s == SessionStatus::Interrupted) return kExitOk;  // the normal end
            if (s == SessionStatus::Timeout) {
                if (opt_.count == 0) return kExitOk;
                return fail(kExitTimeout, "saw " + std::to_string(seen) + " of " +
                                              std::to_string(opt_.count) + " messages in " +
                                              seconds_text(opt_.timeout_ms));
            }
            if (s != SessionStatus::Ok) return fail(s, error);
            if (in.kind != Incoming::Kind::Message) continue;
            ++seen;
            print(format_message(wall_ms(), in.exchange, in.routing_key, in.content_type,
                                 in.body, opt_.json));
            if (out_errno_ != 0) return out_errno_ == EPIPE ? kExitOk : kExitFailed;
        }
        return kExitOk;
    }

    const Options& opt_;
    const RunContext& ctx_;
    Session session_;
    int out_errno_ = 0;  // the first error writing to ctx_.out
    std::string client_id_;
};

}  // namespace

int run_command(const Options& opt, const RunContext& ctx) { return Runner(opt, ctx).run(); }

}  // namespace urctl
