// Control commands of fake::Broker: fault injection and queries, one line
// each, answered by one line starting "ok" or "error".  kHelp is the list.
#include <cerrno>
#include <cstdlib>
#include <unistd.h>

#include <algorithm>
#include <sstream>

#include "tools/fake-broker/broker_impl.hpp"
#include "tools/fake-broker/topic.hpp"

namespace fake {

namespace {

const char kHelp[] =
    "ok commands: drop-after N|off; drop-now; freeze SECS; malformed; "
    "close-connection CODE TEXT; close-channel CODE TEXT; cancel-consumers; "
    "delete-queue NAME; refuse-login on|off; lock-queue GLOB on|off; "
    "deny-transient-queues on|off (541 as RabbitMQ 4.3); stall-declares on|off (queue.declare "
    "never answered); ignore-prefetch on|off; server-version PRODUCT VERSION "
    "(new connections); confirm-delay MS; "
    "blocked on|off; stop-listening; start-listening; heartbeat SECS (new connections); "
    "client-silence SECS (a client silent this long is dropped; 0: two heartbeats); "
    "queues (-> ok COUNT then NAME READY UNACKED CONSUMERS per queue); "
    "queue NAME (-> ok ready=R unacked=U consumers=C); "
    "queue-flags NAME (-> ok durable=D exclusive=E auto_delete=A); connections; "
    "acks (-> ok FRAMES MESSAGES: basic.ack frames received, messages they settled); "
    "publish EXCHANGE|- KEY BODY; wait-consumers QUEUE N SECS; wait-connections N SECS; "
    "wait-queue-deleted QUEUE SECS; "
    "messages KEY-PATTERN; wait-messages KEY-PATTERN N SECS; last-message KEY-PATTERN "
    "(-> ok KEY BODY); ping; help.  Patterns of routing keys use topic rules (* #), "
    "queue patterns are shell globs";

// Splits off the first space-separated word of `rest`.
std::string next_word(std::string_view& rest) {
    size_t b = rest.find_first_not_of(' ');
    if (b == std::string_view::npos) {
        rest = {};
        return {};
    }
    rest.remove_prefix(b);
    size_t e = rest.find(' ');
    std::string w(rest.substr(0, e));
    rest = e == std::string_view::npos ? std::string_view{} : rest.substr(e + 1);
    return w;
}

// Parses a whole decimal number in [0, max].
bool parse_uint(const std::string& s, uint64_t max, uint64_t& out) {
    if (s.empty() || s.size() > 19 || s.find_first_not_of("0123456789") != std::string::npos)
        return false;
    out = std::strtoull(s.c_str(), nullptr, 10);
    return out <= max;
}

// Seconds, possibly fractional ("0.5"), to milliseconds.
bool parse_secs(const std::string& s, Millis& ms) {
    if (s.empty() || s.size() > 12 || s.find_first_not_of("0123456789.") != std::string::npos)
        return false;
    char* end = nullptr;
    double d = std::strtod(s.c_str(), &end);
    if (*end != '\0' || d < 0 || d > 1e6) return false;
    ms = Millis(d * 1000);
    return true;
}

bool parse_on_off(const std::string& s, bool& on) {
    if (s == "on") on = true;
    else if (s == "off") on = false;
    else return false;
    return true;
}

}  // namespace

Millis Broker::Impl::command_deadline() const {
    if (!commands.empty() && commands.front().deadline) return *commands.front().deadline;
    return now_ms() + 60000;
}

void Broker::Impl::run_commands(Millis now) {
    while (!commands.empty()) {
        std::optional<std::string> answer = execute(commands.front(), now);
        if (!answer) return;  // waiting for a condition; tried again next pass
        PendingCommand cmd = std::move(commands.front());
        commands.pop_front();
        cmd.reply(*answer);
    }
}

std::optional<std::string> Broker::Impl::execute(PendingCommand& cmd, Millis now) {
    std::string_view rest = cmd.line;
    std::string verb = next_word(rest);
    auto usage = [&](const char* u) { return std::string("error usage: ") + u; };
    // For wait-* commands: nullopt while waiting, an error once SECS passed.
    auto wait_until = [&](bool done, const std::string& secs, const std::string& what)
        -> std::optional<std::string> {
        if (done) return std::string("ok");
        Millis ms = 0;
        if (!parse_secs(secs, ms)) return std::string("error bad SECS");
        if (!cmd.deadline) cmd.deadline = now + ms;
        if (now >= *cmd.deadline) return "error timeout: " + what;
        return std::nullopt;
    };

    if (verb.empty()) return std::string("error empty command");
    if (verb == "help") return std::string(kHelp);
    if (verb == "ping") return std::string("ok pong");

    if (verb == "drop-after") {
        std::string n = next_word(rest);
        uint64_t v = 0;
        bool off = n == "off";
        if (!off && !parse_uint(n, 1u << 30, v)) return usage("drop-after N|off");
        size_t armed = 0;
        for (auto& kv : conns) {
            Conn& c = *kv.second;
            if (c.dead || c.drop_at) continue;
            armed++;
            if (off) c.drop_after = -1;
            else if (v == 0) c.drop_at = c.written_total + (c.out.size() - c.out_off);
            else c.drop_after = int64_t(v);
        }
        return "ok armed " + std::to_string(armed);
    }
    if (verb == "drop-now") {
        size_t n = 0;
        for (auto& kv : conns)
            if (!kv.second->dead) kill_conn(*kv.second, "drop-now"), n++;
        reap();
        return "ok dropped " + std::to_string(n);
    }
    if (verb == "freeze") {
        Millis ms = 0;
        if (!parse_secs(next_word(rest), ms)) return usage("freeze SECS");
        frozen_until = now + ms;
        return "ok frozen " + std::to_string(ms) + "ms";
    }
    if (verb == "malformed") {
        // A heartbeat frame whose frame-end octet is 0x00 instead of 0xCE.
        static const char kBad[8] = {8, 0, 0, 0, 0, 0, 0, 0};
        size_t n = 0;
        for (auto& kv : conns)
            if (kv.second->state != ConnState::AwaitHeader && may_send(*kv.second))
                send_raw_frame(*kv.second, std::string_view(kBad, sizeof kBad)), n++;
        return "ok sent " + std::to_string(n);
    }
    if (verb == "close-connection" || verb == "close-channel") {
        uint64_t code = 0;
        if (!parse_uint(next_word(rest), 999, code))
            return usage(verb == "close-channel" ? "close-channel CODE TEXT" : "close-connection CODE TEXT");
        std::string text(rest);
        size_t n = 0;
        for (auto& kv : conns) {
            Conn& c = *kv.second;
            if (c.dead || c.state != ConnState::Open) continue;
            if (verb == "close-connection") {
                connection_error(c, uint16_t(code), text);
                n++;
                continue;
            }
            for (auto& chv : c.channels)
                if (chv.second.state == ChannelState::Open)
                    channel_error(c, chv.second, uint16_t(code), text, 0, 0), n++;
        }
        return "ok closed " + std::to_string(n);
    }
    if (verb == "cancel-consumers") {
        struct Ref { std::string queue, tag; uint64_t conn; uint16_t ch; };
        std::vector<Ref> refs;
        for (auto& kv : queues)
            for (const Consumer& cons : kv.second.consumers)
                refs.push_back(Ref{kv.first, cons.tag, cons.conn_id, cons.channel});
        for (const Ref& r : refs) remove_consumer(r.queue, r.conn, r.ch, r.tag, true);
        return "ok cancelled " + std::to_string(refs.size());
    }
    if (verb == "delete-queue") {
        std::string name = next_word(rest);
        if (name.empty()) return usage("delete-queue NAME");
        if (!queues.count(name)) return "error no queue " + name;
        uint32_t n = delete_queue(name);
        return "ok deleted " + name + " " + std::to_string(n);
    }
    if (verb == "refuse-login") {
        if (!parse_on_off(next_word(rest), refuse_login)) return usage("refuse-login on|off");
        return std::string(refuse_login ? "ok refusing logins" : "ok accepting logins");
    }
    if (verb == "lock-queue") {
        std::string pat = next_word(rest);
        bool on = false;
        if (pat.empty() || !parse_on_off(next_word(rest), on)) return usage("lock-queue GLOB on|off");
        if (on) locked_patterns.insert(pat);
        else locked_patterns.erase(pat);
        return "ok " + std::to_string(locked_patterns.size()) + " locked patterns";
    }
    if (verb == "ignore-prefetch") {
        if (!parse_on_off(next_word(rest), ignore_prefetch)) return usage("ignore-prefetch on|off");
        if (!ignore_prefetch) return std::string("ok honouring basic.qos");
        dispatch_all();
        return std::string("ok ignoring basic.qos");
    }
    if (verb == "stall-declares") {
        if (!parse_on_off(next_word(rest), stall_declares)) return usage("stall-declares on|off");
        return std::string(stall_declares ? "ok stalling queue declares" : "ok answering queue declares");
    }
    if (verb == "deny-transient-queues") {
        if (!parse_on_off(next_word(rest), deny_transient)) return usage("deny-transient-queues on|off");
        return std::string(deny_transient ? "ok denying transient non-exclusive queues"
                                          : "ok allowing transient non-exclusive queues");
    }
    if (verb == "server-version") {
        std::string p = next_word(rest), v = next_word(rest);
        if (p.empty() || v.empty()) return usage("server-version PRODUCT VERSION");
        product = p;
        version = v;
        return "ok " + product + " " + version;
    }
    if (verb == "confirm-delay") {
        uint64_t ms = 0;
        if (!parse_uint(next_word(rest), 3600000, ms)) return usage("confirm-delay MS");
        confirm_delay = Millis(ms);
        return "ok confirm-delay " + std::to_string(ms);
    }
    if (verb == "blocked") {
        bool on = false;
        if (!parse_on_off(next_word(rest), on)) return usage("blocked on|off");
        if (on == blocked) return std::string("ok unchanged");
        blocked = on;
        std::vector<uint64_t> ids;
        for (auto& kv : conns)
            if (!kv.second->dead && kv.second->state == ConnState::Open) ids.push_back(kv.first);
        for (uint64_t id : ids) {
            Conn* c = find_conn(id);
            if (!c) continue;
            if (on) {
                send_method(*c, 0, amqp::ConnectionBlocked{"low on memory"});
                continue;
            }
            send_method(*c, 0, amqp::ConnectionUnblocked{});
            if (c->paused) {
                c->paused = false;
                std::string held = std::move(c->stash);
                c->stash.clear();
                feed(*c, held.data(), held.size(), now);
            }
        }
        return "ok blocked " + std::string(on ? "on" : "off");
    }
    if (verb == "stop-listening") {
        if (listen_fd >= 0) close(listen_fd);
        listen_fd = -1;
        return std::string("ok");
    }
    if (verb == "start-listening") {
        if (listen_fd >= 0) return std::string("ok already listening");
        std::string err;
        if (do_listen(&err) != Status::Ok) return "error " + err;
        return "ok listening 127.0.0.1:" + std::to_string(bound_port);
    }
    if (verb == "client-silence") {
        uint64_t secs = 0;
        if (!parse_uint(next_word(rest), 86400, secs)) return usage("client-silence SECS");
        client_silence = Millis(secs) * 1000;
        return "ok client-silence " + std::to_string(secs);
    }
    if (verb == "heartbeat") {
        uint64_t s = 0;
        if (!parse_uint(next_word(rest), 65535, s)) return usage("heartbeat SECS");
        opt.heartbeat = uint16_t(s);
        return "ok heartbeat " + std::to_string(s);
    }
    if (verb == "queues") {
        std::string out = "ok " + std::to_string(queues.size());
        for (auto& kv : queues)
            out += " " + kv.first + " " + std::to_string(kv.second.ready.size()) + " " +
                   std::to_string(kv.second.unacked) + " " +
                   std::to_string(kv.second.consumers.size());
        return out;
    }
    if (verb == "queue") {
        auto q = queues.find(next_word(rest));
        if (q == queues.end()) return std::string("error no such queue");
        return "ok ready=" + std::to_string(q->second.ready.size()) +
               " unacked=" + std::to_string(q->second.unacked) +
               " consumers=" + std::to_string(q->second.consumers.size());
    }
    if (verb == "queue-flags") {
        auto q = queues.find(next_word(rest));
        if (q == queues.end()) return std::string("error no such queue");
        return std::string("ok durable=") + (q->second.durable ? "1" : "0") +
               " exclusive=" + (q->second.exclusive ? "1" : "0") +
               " auto_delete=" + (q->second.auto_delete ? "1" : "0");
    }
    if (verb == "acks") {
        return "ok " + std::to_string(ack_frames) + " " + std::to_string(acked_messages);
    }
    if (verb == "connections") {
        size_t n = 0;
        for (auto& kv : conns) n += !kv.second->dead;
        return "ok " + std::to_string(n);
    }
    if (verb == "publish") {
        std::string ex = next_word(rest), key = next_word(rest);
        if (ex.empty() || key.empty()) return usage("publish EXCHANGE|- KEY BODY");
        if (ex == "-") ex.clear();
        if (!exchanges.count(ex)) return "error no exchange " + ex;
        auto body = std::make_shared<const std::string>(rest);
        amqp::BasicProperties props;
        props.content_type = "application/json";
        record_publish(ex, key, *body);
        int n = route(ex, key, props, body);
        return "ok routed " + std::to_string(n);
    }
    if (verb == "wait-consumers") {
        std::string q = next_word(rest), n = next_word(rest), secs = next_word(rest);
        uint64_t want = 0;
        if (q.empty() || !parse_uint(n, 1u << 30, want)) return usage("wait-consumers QUEUE N SECS");
        auto it = queues.find(q);
        size_t have = it == queues.end() ? 0 : it->second.consumers.size();
        return wait_until(have >= want, secs, q + " has " + std::to_string(have) + " consumers");
    }
    if (verb == "wait-queue-deleted") {
        std::string q = next_word(rest), secs = next_word(rest);
        if (q.empty()) return usage("wait-queue-deleted QUEUE SECS");
        return wait_until(!queues.count(q), secs, q + " still exists");
    }
    if (verb == "wait-connections") {
        std::string n = next_word(rest), secs = next_word(rest);
        uint64_t want = 0;
        if (!parse_uint(n, 1u << 30, want)) return usage("wait-connections N SECS");
        size_t have = 0;
        for (auto& kv : conns) have += kv.second->state == ConnState::Open && !kv.second->dead;
        return wait_until(have >= want, secs, std::to_string(have) + " open connections");
    }
    if (verb == "messages" || verb == "wait-messages") {
        std::string pat = next_word(rest);
        if (pat.empty()) return usage("messages KEY-PATTERN");
        size_t have = size_t(std::count_if(published_keys.begin(), published_keys.end(),
                                           [&](const std::string& k) { return topic_matches(pat, k); }));
        if (verb == "messages") return "ok " + std::to_string(have);
        std::string n = next_word(rest), secs = next_word(rest);
        uint64_t want = 0;
        if (!parse_uint(n, 1u << 30, want)) return usage("wait-messages KEY-PATTERN N SECS");
        return wait_until(have >= want, secs, std::to_string(have) + " messages match " + pat);
    }
    if (verb == "last-message") {
        std::string pat = next_word(rest);
        for (auto it = recent.rbegin(); it != recent.rend(); ++it)
            if (topic_matches(pat, it->key)) return "ok " + it->key + " " + it->body;
        return "error no message matches " + pat;
    }
    return "error unknown command " + verb + " (try help)";
}

}  // namespace fake
