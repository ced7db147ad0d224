// Sysinfo: reading it (file, command or built in), answering discover
// broadcasts, and the ur.sysinfo heartbeats until the node is set up.

#include "src/agent.hpp"

#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>

#include "src/agent_internal.hpp"
#include "src/clock.hpp"
#include "src/file_io.hpp"
#include "src/linux_sysinfo.hpp"
#include "src/log.hpp"

namespace ur {

namespace {

const uint64_t kSysinfoTimeoutMs = 120000;  // --sysinfo-cmd is killed past it
const size_t kSysinfoMaxBytes = 16u << 20;   // and stopped past this much output
const size_t kMaxSysinfoWaiters = 1024;  // broadcasts waiting for one sysinfo read

}  // namespace

bool use_builtin_sysinfo(const Config& cfg) {
    return cfg.sysinfo_file.empty() && !cfg.sysinfo_cmd_set &&
           access(cfg.sysinfo_cmd.c_str(), X_OK) != 0;
}

std::string sysinfo_source(const Config& cfg) {
    if (!cfg.sysinfo_file.empty()) return "--sysinfo-file " + cfg.sysinfo_file;
    if (use_builtin_sysinfo(cfg)) return "the built-in sysinfo";
    return "--sysinfo-cmd " + cfg.sysinfo_cmd;
}

BuiltinSysinfoOptions builtin_sysinfo_options(const Config& cfg) {
    BuiltinSysinfoOptions o;
    o.datacenter = cfg.datacenter;
    o.admin_nic = cfg.admin_nic;
    o.admin_tag = cfg.admin_nic_tag;
    o.setup_file = cfg.setup_file;
    return o;
}

namespace {

// Sysinfo from --sysinfo-file or the built-in reader, read at once: true
// with `ok`, `text` and `error` set.  False when it comes from the command,
// which runs as a job (sysinfo_job(), then sysinfo_job_outcome()).
bool read_sysinfo_directly(const Config& cfg, bool& ok, std::string& text, std::string& error) {
    if (!cfg.sysinfo_file.empty()) {
        ok = read_file(cfg.sysinfo_file, kSysinfoMaxBytes, text, error);
        return true;
    }
    if (!use_builtin_sysinfo(cfg)) return false;
    json::Value v;
    ok = builtin_sysinfo(builtin_sysinfo_options(cfg), v, error);
    text = ok ? json::write(v) : "";
    return true;
}

JobSpec sysinfo_job(const Config& cfg, std::string id) {
    JobSpec spec;
    spec.id = std::move(id);
    spec.kind = JobSpec::Kind::File;
    spec.script = cfg.sysinfo_cmd;
    spec.timeout_ms = kSysinfoTimeoutMs;
    spec.max_output = kSysinfoMaxBytes;
    spec.stop_past_cap = true;  // a command printing without end would spin for 120 s
    return spec;
}

// Whether the sysinfo command did its job; why not in `error`.
bool sysinfo_job_outcome(const Config& cfg, const JobResult& r, std::string& error) {
    if (r.exit_status == 0 && !r.timed_out) return true;
    error = r.timed_out ? cfg.sysinfo_cmd + " did not finish within " +
                              std::to_string(kSysinfoTimeoutMs / 1000) + " s (killed)"
            : r.out.truncated || r.err.truncated
                ? cfg.sysinfo_cmd + " printed more than 16 MiB (stopped)"
            : r.signal != 0
                ? cfg.sysinfo_cmd + " was killed by " + signal_name(r.signal)
                : cfg.sysinfo_cmd + " failed with exit status " + std::to_string(r.exit_status);
    std::string e = json::string_from_bytes(r.err.data.substr(0, 300));
    while (!e.empty() && std::isspace(static_cast<unsigned char>(e.back()))) e.pop_back();
    if (!e.empty()) error += ": " + e;
    return false;
}

volatile sig_atomic_t g_print_stop = 0;  // the signal that ended read_sysinfo_now()
void on_print_stop(int sig) { g_print_stop = sig; }

}  // namespace

bool read_sysinfo_now(const Config& cfg, json::Value& sysinfo, std::string& error) {
    bool ok = false;
    std::string text;
    if (!read_sysinfo_directly(cfg, ok, text, error)) {
        // The command runs in a session of its own, out of reach of a
        // Ctrl-C or a kill meant for us: those end the wait instead (poll()
        // fails with EINTR, no SA_RESTART), and the supervisor's destructor
        // kills its process group.  SIGCHLD ignored (inherited) would let
        // the kernel reap it before the supervisor learnt its status.
        struct sigaction sa{};
        sa.sa_handler = on_print_stop;
        sigemptyset(&sa.sa_mask);
        for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaction(sig, &sa, nullptr);
        signal(SIGCHLD, SIG_DFL);
        // The command, under the limits the agent sets it (no script file,
        // so the supervisor needs no work directory).
        Supervisor sup{SupervisorOptions{}};
        sup.start(sysinfo_job(cfg, kSysinfoJob), monotonic_ms());
        std::vector<JobResult> done;
        while ((done = sup.take_finished()).empty()) {
            if (g_print_stop) {
                error = std::string("interrupted by ") + signal_name(g_print_stop) +
                        "; the command was killed";
                return false;
            }
            std::vector<pollfd> fds;
            sup.add_pollfds(fds);
            uint64_t now = monotonic_ms(), deadline = sup.next_deadline();
            int wait = 50;  // children are reaped by polling: no SIGCHLD handler here
            if (deadline != UINT64_MAX) wait = int(std::min<uint64_t>(50, deadline > now ? deadline - now : 0));
            if (poll(fds.data(), nfds_t(fds.size()), wait) < 0 && errno != EINTR) {
                error = std::string("poll: ") + std::strerror(errno);
                return false;
            }
            now = monotonic_ms();
            sup.handle(fds, now);
            sup.reap(now);
            sup.tick(now);
        }
        ok = sysinfo_job_outcome(cfg, done.front(), error);
        text = std::move(done.front().out.data);
    }
    Identity id;
    if (!ok) return false;
    if (parse_sysinfo(text, sysinfo, id, error)) return true;
    error = sysinfo_source(cfg) + ": " + error;
    return false;
}

// The sysinfo command's job ended.
void Agent::on_sysinfo_job(const JobResult& r, uint64_t now) {
    sysinfo_running_ = false;
    sysinfo_slow_at_ = 0;
    std::string error;
    bool ok = sysinfo_job_outcome(cfg_, r, error);
    on_sysinfo(ok, r.out.data, error, now);
}

void Agent::want_sysinfo(SysinfoWaiter w, uint64_t now) {
    // A sysinfo command that hangs must not let broadcasts pile up without
    // bound (each is acked at once, so prefetch does not hold them back):
    // past kMaxSysinfoWaiters a broadcast gets the sysinfo read last.
    if (sysinfo_running_ && w.why == SysinfoWaiter::Why::Broadcast && have_identity_ &&
        sysinfo_waiters_.size() >= kMaxSysinfoWaiters) {
        answer_broadcast(w, json::write(sysinfo_), now);
        return;
    }
    sysinfo_waiters_.push_back(std::move(w));
    if (sysinfo_running_) return;
    bool ok = false;
    std::string text, error;
    if (read_sysinfo_directly(cfg_, ok, text, error)) return on_sysinfo(ok, text, error, now);
    sysinfo_running_ = true;
    // Without an identity the node waits on it: a slow command is said
    // before its 120 s are up, not only when it is killed.
    sysinfo_slow_at_ = have_identity_ ? 0 : now + kSysinfoSlowMs;
    sup_.start(sysinfo_job(cfg_, std::string(kSysinfoJob) + std::to_string(++job_counter_)), now);
}

// Discovers kept waiting by a sysinfo command that has not finished in
// kBroadcastFreshWaitMs are answered with the sysinfo read last (said once
// per run of the command).
void Agent::answer_late_broadcasts(uint64_t now) {
    if (!sysinfo_running_ || !have_identity_ || sysinfo_waiters_.empty()) return;
    std::string body;
    for (auto it = sysinfo_waiters_.begin(); it != sysinfo_waiters_.end();) {
        if (it->why != SysinfoWaiter::Why::Broadcast || now - it->received_ms < kBroadcastFreshWaitMs) {
            ++it;
            continue;
        }
        if (body.empty()) body = json::write(sysinfo_);
        if (!sysinfo_slow_said_) {
            sysinfo_slow_said_ = true;
            log::warn("the sysinfo command is slow; answering discovers with the sysinfo read last",
                      {{"command", field(cfg_.sysinfo_cmd)},
                       {"waited_ms", json::Value(int64_t(now - it->received_ms))}});
        }
        answer_broadcast(*it, body, now);
        it = sysinfo_waiters_.erase(it);
    }
}

// A Triton compute node learns its broker from the boot parameter
// `rabbitmq` (sysinfo's "Boot Parameters"): with --boot-rabbitmq (the
// installed services pass it), taken before the first connect when the
// configuration names no broker.  Without it the default stays
// localhost, as PROTOCOL.md has it: a sysinfo copied from a real node
// must not send a test agent to that node's broker.
void Agent::adopt_boot_broker(const json::Value& sysinfo) {
    if (!cfg_.boot_rabbitmq) return;
    const json::Value* params = sysinfo.find("Boot Parameters");
    const json::Value* spec = params && params->is_object() ? params->find("rabbitmq") : nullptr;
    if (!spec) return;
    bool used = false;
    std::string error = "not a string";
    if (!spec->is_string() || !apply_boot_rabbitmq(spec->as_string(), cfg_, used, error)) {
        log::warn("the boot parameter rabbitmq is malformed; ignored",
                  {{"error", field(error)}, {"brokers", broker_list(cfg_.brokers)}});
        return;
    }
    if (used)
        log::info("broker from the boot parameter rabbitmq (no --broker, AMQP_HOST or config "
                  "file broker)",
                  {{"brokers", broker_list(cfg_.brokers)}, {"login", field(cfg_.login)},
                   {"vhost", field(cfg_.vhost)}});
}

void Agent::on_sysinfo(bool ok, const std::string& text, const std::string& read_error, uint64_t now) {
    sysinfo_slow_said_ = false;
    json::Value v;
    Identity id;
    std::string error = read_error;
    if (ok && !parse_sysinfo(text, v, id, error)) ok = false;
    std::vector<SysinfoWaiter> waiters;
    waiters.swap(sysinfo_waiters_);
    if (!ok && !have_identity_) {
        uint64_t delay = sysinfo_backoff_.next(random32());
        sysinfo_retry_at_ = now + delay;
        log::error("cannot read sysinfo; this node cannot take part until it can",
                   {{"error", field(error)}, {"source", field(sysinfo_source(cfg_))},
                    {"retry_in_ms", json::Value(int64_t(delay))}});
        return;
    }
    if (!ok) {
        // A discover expects a sysinfo object (urclient reads its UUID and
        // Hostname), and CNAPI marks a node whose heartbeats stop
        // "unknown": both get the one read last rather than nothing.
        log::error("cannot read sysinfo; the one read last is sent instead",
                   {{"error", field(error)}, {"source", field(sysinfo_source(cfg_))}});
        send_sysinfo(waiters, now);
        return;
    }
    if (!have_identity_) {
        have_identity_ = true;
        id_ = id;
        sysinfo_backoff_.reset();
        log::info("node identity", {{"uuid", field(id_.uuid)}, {"admin_mac", field(id_.mac)},
                                    {"node_hostname", field(id_.hostname)}});
        adopt_boot_broker(v);
        reconnect_at_ = now;
        answer_leftovers(now);
    } else if (id.uuid != id_.uuid) {
        // Queues, bindings and reply keys are the start-up UUID's: a body
        // naming another node would have discovers (urclient reads the
        // node from the body) list one this agent does not serve.
        log::warn("sysinfo UUID changed; this agent keeps serving the one read at start-up and "
                  "sends the last sysinfo that had it",
                  {{"uuid", field(id_.uuid)}, {"new_uuid", field(id.uuid)}});
        v = sysinfo_;
    }
    sysinfo_ = std::move(v);
    send_sysinfo(waiters, now);
}

// The sysinfo read last, to those who waited for a read: discovers and
// heartbeats (the start-up announcement takes it when due).
void Agent::send_sysinfo(const std::vector<SysinfoWaiter>& waiters, uint64_t now) {
    std::string body = json::write(sysinfo_);
    for (const auto& w : waiters) {
        if (w.why == SysinfoWaiter::Why::Broadcast) {
            answer_broadcast(w, body, now);
        } else if (w.why == SysinfoWaiter::Why::Heartbeat) {
            OutMessage m;
            m.body = body;
            m.routing_key = sysinfo_key(id_.uuid, random_hex(8));
            m.keep = false;
            enqueue(std::move(m), now);
        }
    }
}

// A client is known by its ping reply key (ur.ack<client_id>.<uuid>: one
// per urclient connection; the last kPingClients are remembered).
// urclient binds ur.ack<client_id>.* last of its reply queue's bindings and
// signals ready without waiting for bind-ok: a ping sent at once and
// answered in ~0.2 ms was unroutable in 72 of 100 tries.  So every ping of
// a client until kFreshClientReplyDelayMs after its first one waits until
// then (only its first did: of 10 pings sent at once, 9 were lost in a
// third of the tries, and replies came out of order); later ones, binds
// long done, are answered at once.
uint64_t Agent::ping_reply_due(const std::string& reply_key, uint64_t now) {
    constexpr size_t kPingClients = 64;
    for (const auto& [key, first_ms] : ping_clients_)
        if (key == reply_key) return first_ms + kFreshClientReplyDelayMs;
    if (ping_clients_.size() == kPingClients) ping_clients_.pop_front();
    ping_clients_.emplace_back(reply_key, now);
    return now + kFreshClientReplyDelayMs;
}

// A sysinfo broadcast is answered kFreshClientReplyDelayMs after it arrived
// at the earliest.  urclient (so sdc-oneachnode) binds its reply queue and
// publishes its discover on different channels without waiting for
// bind-ok: an answer faster than the binds is unroutable and lost, and the
// node missing from the discover (5-8 of 100 discovers made right after
// connecting, answered in ~1 ms).
void Agent::answer_broadcast(const SysinfoWaiter& w, const std::string& body, uint64_t now) {
    OutMessage m;
    m.routing_key = w.reply_key;
    m.req_id = w.req_id;
    m.body = body;
    m.owed = false;  // sent again after a reconnect, as a ping answer is
    m.not_before = w.received_ms + kFreshClientReplyDelayMs;
    enqueue(std::move(m), now);
}

void Agent::send_sysinfo_heartbeat(uint64_t now) {
    sysinfo_next_at_ = 0;
    if (!consuming_) return;
    want_sysinfo({SysinfoWaiter::Why::Heartbeat, "", ""}, now);
    if (setup_done_) return;
    std::string problem;
    if (setup_complete(cfg_.setup_file, &problem)) {
        setup_done_ = true;
        log::info("setup is complete; sysinfo heartbeats stop", {{"file", cfg_.setup_file}});
        return;
    }
    // Said once per problem, not at every heartbeat.
    if (!problem.empty() && problem != setup_problem_)
        log::warn("cannot read the setup-state file: setup taken as not complete; sysinfo "
                  "heartbeats go on",
                  {{"file", cfg_.setup_file}, {"error", problem}});
    setup_problem_ = problem;
    sysinfo_next_at_ = now + uint64_t(cfg_.sysinfo_interval_s) * 1000;
}

}  // namespace ur
