// The agent's life: set-up, the poll() loop, signals, shutdown and reboot.
// The broker link, the requests and sysinfo are in agent_link.cpp,
// agent_requests.cpp and agent_sysinfo.cpp; the state directory's lock in
// agent_state_dir.cpp.

#include "src/agent.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cerrno>
#include <new>
#include <cstring>

#include "src/agent_internal.hpp"
#include "src/clock.hpp"
#include "src/linux_sysinfo.hpp"
#include "src/log.hpp"
#include "src/memory.hpp"
#include "src/spawn.hpp"

namespace ur {

namespace {

int g_sig_fd = -1;

extern "C" void on_signal(int signo) {
    int saved = errno;
    char c = signo == SIGCHLD  ? 'C'
             : signo == SIGHUP  ? 'H'
             : signo == SIGUSR1 ? '1'
             : signo == SIGUSR2 ? '2'
                                : 'T';
    if (g_sig_fd >= 0) (void)!::write(g_sig_fd, &c, 1);
    errno = saved;
}

const uint64_t kCloseGraceMs = 5000;

}  // namespace

uint64_t Backoff::next(uint32_t random) {
    uint64_t d = base_;
    for (unsigned i = 0; i < attempt_ && i < 64 && d < cap_; ++i) d *= 2;
    if (d > cap_) d = cap_;
    // Counted without the doubling's bound: attempts() paces the log of a
    // refusal that lasts (every 12th, 360th attempt).
    if (attempt_ < UINT_MAX) ++attempt_;
    // Jitter: between 75% and 125% of the delay, so a fleet that lost its
    // broker at once does not come back in lockstep; never past the cap
    // (documented as the longest wait).
    // At least 1 ms unless the delay is 0: a cap of 1 ms made 0 of half
    // the waits, a reconnect loop with no pause.
    uint64_t lo = std::max<uint64_t>(d * 3 / 4, d > 0 ? 1 : 0), hi = std::min(d + d / 4, cap_);
    return hi > lo ? lo + random % (hi - lo + 1) : lo;
}

Agent::Agent(Config cfg)
    : cfg_(std::move(cfg)),
      sup_([&] {
          SupervisorOptions o;
          o.work_dir = cfg_.work_dir;
          o.tail_keep = output_tail_keep(cfg_);
          o.stray_reaped = [this](pid_t pid) { resolver_.forget(pid); };
          return o;
      }()),
      outbox_(pending_bound(cfg_)),
      link_backoff_(std::min<uint64_t>(100, cfg_.reconnect_max_ms), cfg_.reconnect_max_ms) {
    rng_state_ = wall_ms() ^ (uint64_t(getpid()) << 32) ^ monotonic_ms();
}

Agent::~Agent() {
    if (fd_ >= 0) close(fd_);
    for (int fd : sig_pipe_)
        if (fd >= 0) close(fd);
    g_sig_fd = -1;
}

uint32_t Agent::random32() {
    // xorshift64*: only for jitter and message ids, never for secrets.
    rng_state_ ^= rng_state_ >> 12;
    rng_state_ ^= rng_state_ << 25;
    rng_state_ ^= rng_state_ >> 27;
    return uint32_t((rng_state_ * 2685821657736338717ULL) >> 32);
}

std::string Agent::random_hex(size_t digits) {
    static const char hex[] = "0123456789abcdef";
    std::string s;
    while (s.size() < digits) {
        uint32_t r = random32();
        for (int i = 0; i < 8 && s.size() < digits; ++i, r >>= 4) s += hex[r & 15];
    }
    return s;
}

// ---------------------------------------------------------------- set-up

void Agent::install_signals() {
    struct sigaction sa;
    std::memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGCHLD, &sa, nullptr);
    sigaction(SIGHUP, &sa, nullptr);
    // Signals whose default would end the agent without answering what it
    // holds, none of which asks for that: logged (USR1, USR2) or ignored.
    // An ignored SIGXFSZ makes a write past RLIMIT_FSIZE (the log file,
    // a script file) fail with EFBIG instead of killing the agent.
    sigaction(SIGUSR1, &sa, nullptr);
    sigaction(SIGUSR2, &sa, nullptr);
    for (int sig : {SIGPIPE, SIGXFSZ, SIGALRM, SIGVTALRM, SIGPROF
#ifdef SIGPOLL
                    , SIGPOLL
#endif
#ifdef SIGPWR
                    , SIGPWR
#endif
         })
        signal(sig, SIG_IGN);
    // A blocked mask survives exec: a parent that left SIGTERM blocked
    // would make the agent unstoppable but by SIGKILL.  Nothing is blocked
    // but around a spawn (spawn.cpp).
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    // The agent changes no disposition after this: a child has only these
    // and the ones we inherited non-default reset, not every signal.
    remember_signal_dispositions();
}

bool Agent::setup(std::string& error) {
    if (pipe(sig_pipe_) != 0) {
        error = std::string("pipe: ") + std::strerror(errno);
        return false;
    }
    for (int fd : sig_pipe_) {
        fcntl(fd, F_SETFD, FD_CLOEXEC);
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    }
    g_sig_fd = sig_pipe_[1];
    install_signals();

    // Neither is a reason not to run: pings, broadcasts and "file"
    // requests need no state, and a node that cannot write its state
    // directory is one an operator wants to reach.  Script requests are
    // answered 126 with the reason until the directory can be made.
    if (mkdir(cfg_.state_dir.c_str(), 0755) != 0 && errno != EEXIST) {
        log::error("cannot create the state directory; running without it, trying again at each "
                   "execute request",
                   {{"dir", cfg_.state_dir}, {"error", std::strerror(errno)}});
        state_dir_absent_ = true;
    }
    if (!state_dir_absent_ && !lock_state_dir()) {
        done_ = true;  // SIGTERM while waiting for the lock
        return true;
    }
    // The script directory, once the state directory is ours (preparing
    // it removes stale script files).  When the configured one is not
    // usable (in a world-writable state dir such as /tmp, someone may have
    // created it first), the supervisor uses a fresh private one beside it
    // (WorkDir) rather than none; those of earlier runs are removed first.
    remove_stale_work_dirs(cfg_.state_dir, ".ur-agent-work.");
    // And those beside a --work-dir elsewhere (BASE.XXXXXX, WorkDir).
    if (size_t slash = cfg_.work_dir.find_last_of('/');
        cfg_.work_dir != cfg_.state_dir + "/.ur-agent-work" && slash != std::string::npos &&
        slash + 1 < cfg_.work_dir.size())
        remove_stale_work_dirs(slash == 0 ? "/" : cfg_.work_dir.substr(0, slash),
                               cfg_.work_dir.substr(slash + 1) + ".");
    std::string werr;
    if (!sup_.init(werr))
        log::error("no usable script directory; script requests fail until it can be made",
                   {{"work_dir", cfg_.work_dir}, {"error", werr}});
    else if (noexec_mount(sup_.work_dir()))
        log::error("the script directory is on a file system mounted noexec: script requests "
                   "fail (126, Permission denied); give --work-dir a directory where files may run",
                   {{"work_dir", field(sup_.work_dir())}});
    open_journal();
    return true;
}

const char* broker_source(const Config& cfg) {
    if (cfg.broker_given) return "configured";
    return cfg.boot_rabbitmq ? "default, unless sysinfo's boot parameter rabbitmq names one"
                             : "default";
}

std::string broker_text(const BrokerAddress& b) {
    bool v6 = b.host.find(':') != std::string::npos;
    return (v6 ? "[" + b.host + "]" : b.host) + ":" + std::to_string(b.port);
}

json::Value broker_list(const std::vector<BrokerAddress>& brokers) {
    json::Value list = json::Value::array();
    for (const BrokerAddress& b : brokers) list.push_back(field(broker_text(b)));
    return list;
}

int Agent::run() {
    memory::tune();
    // Said first, before anything about the state directory (or a wait
    // for its lock) that an operator reads in its light.
    log::info("ur-agent starting", {{"version", UR_VERSION},
                                    {"brokers", broker_list(cfg_.brokers)},
                                    {"broker_source", broker_source(cfg_)},
                                    {"login", field(cfg_.login)},
                                    {"vhost", field(cfg_.vhost)},
                                    {"state_dir", field(cfg_.state_dir)}});
    if (cfg_.reconnect_max_ms < 100)
        log::warn("--reconnect-max-ms under 100 is for tests: a broker that refuses us is "
                  "tried again up to every few milliseconds, each failure logged",
                  {{"reconnect_max_ms", json::Value(int64_t(cfg_.reconnect_max_ms))}});
    // "--broker ::1:5732" is the IPv6 address ::1:5732 on the default
    // port, which is seldom what was meant: said when the address less its
    // last group is an address too.
    for (const BrokerAddress& b : cfg_.brokers) {
        size_t colon = b.host.rfind(':');
        std::string head = b.bare_ipv6 ? b.host.substr(0, colon) : std::string();
        in6_addr a6;
        if (!head.empty() && colon + 1 < b.host.size() &&
            b.host.find_first_not_of("0123456789", colon + 1) == std::string::npos &&
            inet_pton(AF_INET6, head.c_str(), &a6) == 1)
            log::warn("an IPv6 address without brackets has no port: connecting to '" + b.host +
                          "' on port " + std::to_string(b.port) + "; if '" +
                          b.host.substr(colon + 1) + "' is a port, write [" + head + "]:" +
                          b.host.substr(colon + 1),
                      {{"broker", field(b.host)}});
    }
    if (cfg_.sysinfo_cmd_set && !cfg_.sysinfo_file.empty())
        log::warn("--sysinfo-file and --sysinfo-cmd both given; the file is read",
                  {{"file", field(cfg_.sysinfo_file)}, {"command", field(cfg_.sysinfo_cmd)}});
    // The flags first: use_builtin_sysinfo() is an access(2) of the command.
    if (!(cfg_.datacenter.empty() && cfg_.admin_nic.empty() && cfg_.admin_nic_tag.empty()) &&
        !use_builtin_sysinfo(cfg_))
        log::warn("--datacenter, --admin-nic and --admin-nic-tag shape the built-in sysinfo "
                  "only; ignored", {{"source", field(sysinfo_source(cfg_))}});
    std::string error;
    if (!setup(error)) {
        log::fatal("cannot start: " + error);
        return 1;
    }
    if (done_) {
        log::info("ur-agent stopped before it started");
        return 0;
    }
    uint64_t now = monotonic_ms();
    if (pending_bound(cfg_) != cfg_.max_pending_bytes)
        log::info("--max-pending-bytes raised to hold one whole reply",
                  {{"max_pending_bytes", json::Value(int64_t(pending_bound(cfg_)))}});
    warn_memory_limit();
    fit_fd_limit();
    want_sysinfo({SysinfoWaiter::Why::Boot, "", ""}, now);
    try {
        while (!done_) loop_once();
    } catch (const std::bad_alloc&) {
        // Out of memory (under a limit too low for the settings; see
        // warn_memory_limit()).  Said, then gone as if killed: running
        // scripts go on, and the journal has every request in flight
        // answered "agent restarted" when the service manager restarts us.
        static const char kLine[] =
            "ur-agent: out of memory; exiting (requests in flight are answered on restart)\n";
        try {
            log::fatal("out of memory; exiting (requests in flight are answered on restart)");
        } catch (...) {
            (void)!::write(2, kLine, sizeof kLine - 1);
        }
        ::_exit(1);
    }
    log::info("ur-agent stopped");
    return 0;
}

// Each running script holds up to three pipe ends and a few more while it
// starts: the default 16 need under 120 fds, within any default limit (256
// on illumos, 1024 on Linux).  A larger --max-concurrency raises the soft
// limit to what it needs, no further (where there is no closefrom() a
// child closes every fd below the limit), and says so when the hard limit
// is lower: scripts past it wait (Supervisor, --start-retry), then 126.
void Agent::fit_fd_limit() {
    struct rlimit rl;
    if (::getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return;
    rlim_t need = rlim_t(cfg_.max_concurrency) * 3 + 64;
    if (rl.rlim_cur >= need) return;
    rlim_t want = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= need ? need : rl.rlim_max;
    struct rlimit raised = {want, rl.rlim_max};
    if (want > rl.rlim_cur && ::setrlimit(RLIMIT_NOFILE, &raised) == 0) {
        log::info("raised the open-file limit for --max-concurrency",
                  {{"from", json::Value(int64_t(rl.rlim_cur))}, {"to", json::Value(int64_t(want))}});
        rl.rlim_cur = want;
    }
    if (rl.rlim_cur < need)
        log::warn("the open-file limit is below what --max-concurrency needs: scripts past it "
                  "wait for descriptors to free, and are answered 126 when none do within "
                  "--start-retry; lower --max-concurrency or raise the limit",
                  {{"limit", json::Value(int64_t(rl.rlim_cur))},
                   {"needed", json::Value(int64_t(need))}});
}

// Replies owed from a previous run that died with requests in flight, once
// the node's UUID is known: only under this node's reply keys (a record
// naming another is not ours to answer, whoever wrote it).
void Agent::answer_leftovers(uint64_t now) {
    const std::string mine = "ur.execute-reply." + id_.uuid + ".";
    for (const auto& e : journal_.leftovers()) {
        if (e.reply_key.compare(0, mine.size(), mine) != 0) {
            log::warn("not answering a journal entry of another node",
                      {{"req_id", field(e.req_id)}, {"routing_key", field(e.reply_key)}});
            journal_.remove(e.key);
            continue;
        }
        log::warn("answering a request in flight when the agent stopped (running, waiting for "
                  "a slot, or its reply not yet confirmed)",
                  {{"req_id", field(e.req_id)}, {"routing_key", field(e.reply_key)}});
        ExecuteOutcome o;
        o.exit_status = 1;
        o.agent_restarted = true;
        o.has_duration = false;
        std::string msg =
            "ur-agent: the agent restarted while this request was in flight (running, "
            "waiting for a slot, or its reply not yet delivered); whether the script ran, "
            "and how, is unknown\n";
        o.err.data = msg;
        o.err.total = msg.size();
        OutMessage m;
        m.routing_key = e.reply_key;
        m.body = execute_reply_body(o);
        m.cuttable = true;
        m.req_id = e.req_id;
        m.journal_key = e.key;
        enqueue(std::move(m), now);
    }
}

// Under a memory limit (ulimit -v or -d) too low for what the settings
// allow at worst, a burst of large outputs ends the agent (out of memory)
// with every reply it holds: say so at start, with the numbers to change.
void Agent::warn_memory_limit() {
    unsigned long long limit = memory::limit_bytes();
    if (limit == 0) return;
    // Per running script each stream's kept output and raw tail (or, once
    // it is done, its reply); one reply made at a time (under 3x
    // --max-output); the replies kept for the broker, unsent and in flight;
    // the requests waiting for a slot (the prefetch: as many as slots, and
    // those taken early, --max-waiting) and one being parsed (JSON takes a
    // few times its text); the agent itself.
    const uint64_t per_slot = std::max<uint64_t>(2 * (cfg_.max_output + (64u << 10)),  // captures
                                                 2 * (cfg_.max_output + (320u << 10)) + 4096);  // its reply
    unsigned long long worst = uint64_t(cfg_.max_concurrency) * per_slot +
                               3 * cfg_.max_output + 2 * pending_bound(cfg_) +
                               uint64_t(cfg_.max_concurrency) * kMaxRequestBytes +
                               (cfg_.max_waiting ? 4 * kMaxAckedWaitingBytes : 0) +
                               4 * kMaxRequestBytes + (16u << 20);
    if (limit >= worst) return;
    log::warn("the memory limit is below what the settings may need at worst: lower "
              "--max-concurrency, --max-output or --max-pending-bytes, or raise the limit",
              {{"limit_bytes", json::Value(int64_t(limit))},
               {"worst_case_bytes", json::Value(int64_t(worst))}});
}

// ---------------------------------------------------------------- loop

uint64_t Agent::next_deadline() const {
    uint64_t d = sup_.next_deadline();
    auto at = [&](uint64_t t) {
        if (t != 0 && t < d) d = t;
    };
    if (link_ == Link::Down && have_identity_ && (!stopping_ || owes_replies()))
        at(reconnect_at_);
    if (link_ == Link::Resolving || link_ == Link::Connecting || link_ == Link::Handshake)
        at(connect_deadline_);
    at(setup_stall_at());
    if (conn_) at(conn_->next_deadline());
    at(consumer_retry_at_);
    at(ping_retry_at_);
    at(pub_retry_at_);
    at(sysinfo_retry_at_);
    at(sysinfo_next_at_);
    at(sysinfo_slow_at_);
    if (reboot_pending_) at(reboot_at_);
    at(reboot_retry_at_);
    // Only when it could go: due and held back (blocked, no channel, the
    // in-flight bound) it would make every poll() return at once.
    if (can_publish() && outbox_.may_publish()) at(outbox_.next_due());
    if (!queued_.empty() && cfg_.max_queue_wait_s)
        at(queued_.front().received_ms + uint64_t(cfg_.max_queue_wait_s) * 1000);
    if (!queued_.empty()) at(start_retry_at_);
    if (sysinfo_running_ && have_identity_)
        for (const auto& w : sysinfo_waiters_)
            if (w.why == SysinfoWaiter::Why::Broadcast) at(w.received_ms + kBroadcastFreshWaitMs);
    if (stopping_) at(grace_end() + kCloseGraceMs * 2);
    if (stopping_ && !children_killed_) at(grace_end());
    return d;
}

// A channel's set-up (request, ping or publishing) under way: the broker
// owes us an answer.  One silent on it for --connect-timeout (its queue
// processes stalled, heartbeats going on) would leave the node connected,
// serving nothing and saying nothing.  Not while it blocks us (an alarm):
// RabbitMQ then reads nothing more from a connection that has published,
// set-up included.
uint64_t Agent::setup_stall_at() const {
    if (link_ != Link::Open || stopping_ || blocked_) return 0;
    uint64_t since = UINT64_MAX;
    for (uint64_t w : {cons_waits_, ping_waits_, pub_waits_})
        if (w) since = std::min(since, w);
    return since == UINT64_MAX ? 0 : since + setup_step_ms();
}

// Three times --connect-timeout (30 s by default): a broker busy with a
// whole datacenter's agents reconnecting at once (after its restart)
// answers slowly, and leaving it then would only add to its load.
uint64_t Agent::setup_step_ms() const { return uint64_t(cfg_.connect_timeout_s) * 3000; }

void Agent::loop_once() {
    std::vector<pollfd> fds;
    fds.push_back({sig_pipe_[0], POLLIN, 0});
    if (fd_ >= 0) {
        short ev = 0;
        if (link_ == Link::Connecting) ev = POLLOUT;
        else {
            ev = POLLIN;
            if (conn_ && conn_->wants_write()) ev |= POLLOUT;
        }
        fds.push_back({fd_, ev, 0});
    }
    size_t sock_index = fds.size() - 1;
    size_t lookup_index = 0;
    if (resolver_.busy()) {
        fds.push_back({resolver_.fd(), POLLIN, 0});
        lookup_index = fds.size() - 1;
    }
    sup_.add_pollfds(fds);

    uint64_t now = monotonic_ms();
    uint64_t deadline = next_deadline();
    int timeout = -1;
    if (deadline != UINT64_MAX) timeout = deadline <= now ? 0 : int(std::min<uint64_t>(deadline - now, 60000));
    int n = poll(fds.data(), fds.size(), timeout);
    if (n < 0 && errno != EINTR) {
        log::error("poll failed", {{"error", std::strerror(errno)}});
        usleep(100000);
        return;
    }
    now = monotonic_ms();
    if (fds[0].revents) drain_self_pipe();

    sup_.handle(fds, now);
    sup_.reap(now);
    resolver_.reap();
    sup_.tick(now);

    // Before the deadline below: an answer that came with it is taken.
    if (link_ == Link::Resolving && lookup_index > 0 && fds[lookup_index].fd == resolver_.fd() &&
        fds[lookup_index].revents)
        read_lookup(now);
    if (link_ == Link::Resolving && now >= connect_deadline_)
        link_down("cannot resolve '" + peer_ + "': no answer in " +
                      std::to_string(cfg_.connect_timeout_s) + " s",
                  now);

    bool sock_read = false;
    if (fd_ >= 0 && sock_index > 0 && fds[sock_index].fd == fd_ && fds[sock_index].revents) {
        if (link_ == Link::Connecting) {
            int err = connect_result(fd_);
            if (err != 0) link_down("connect to " + peer_ + ": " + std::strerror(err), now);
            else on_connected(now);
        } else {
            if (fds[sock_index].revents & (POLLIN | POLLHUP | POLLERR)) {
                read_socket(now);
                sock_read = true;
            }
            if (fd_ >= 0 && (fds[sock_index].revents & POLLOUT)) write_socket(now);
        }
    }
    // After the whole agent was held up (SIGSTOP, a paused VM, a slow
    // disk), poll() may return without a word on the socket (EINTR from
    // the SIGCHLD of a script that ended meanwhile), while the broker's
    // heartbeats wait in it: they are read before a due heartbeat check
    // can take a live broker for dead.
    if (conn_ && !sock_read && fd_ >= 0 && link_ != Link::Connecting &&
        conn_->next_deadline() <= now)
        read_socket(now);
    if (conn_) {
        conn_->tick(now);
        handle_events(now);
    }
    if ((link_ == Link::Connecting || link_ == Link::Handshake) && now >= connect_deadline_)
        link_down(link_ == Link::Connecting
                      ? "timed out connecting to " + peer_
                      : "connected to " + peer_ + ", but no AMQP handshake within " +
                            std::to_string(cfg_.connect_timeout_s) +
                            " s (not an AMQP broker, or one that does not answer)",
                  now);

    for (JobResult& r : sup_.take_finished()) on_job_finished(r, now);

    // While stopping, reconnect only to deliver replies still owed.
    if (link_ == Link::Down && have_identity_ && (!stopping_ || owes_replies()) &&
        now >= reconnect_at_)
        connect_next(now);
    if (consumer_retry_at_ && now >= consumer_retry_at_) {
        consumer_retry_at_ = 0;
        setup_consumer(now);
    }
    if (ping_retry_at_ && now >= ping_retry_at_) {
        ping_retry_at_ = 0;
        setup_ping(now);
    }
    if (pub_retry_at_ && now >= pub_retry_at_) {
        pub_retry_at_ = 0;
        if (conn_ && conn_->is_open() && pub_ch_ == 0) setup_publisher(now);
    }
    if (uint64_t at = setup_stall_at(); at && now >= at)
        link_down("the broker did not answer our channel and queue set-up (declare, bind, "
                  "consume or confirm.select) within " +
                      std::to_string(setup_step_ms() / 1000) + " s; its queues may be stalled",
                  now);
    if (sysinfo_retry_at_ && now >= sysinfo_retry_at_) {
        sysinfo_retry_at_ = 0;
        want_sysinfo({SysinfoWaiter::Why::Boot, "", ""}, now);
    }
    if (sysinfo_next_at_ && now >= sysinfo_next_at_) send_sysinfo_heartbeat(now);
    if (reboot_pending_ && now >= reboot_at_) {
        if (reboot_reply_sent_)
            log::warn("rebooting without the broker's confirm of the exit-113 reply: none came "
                      "within the grace (the reply may be lost with the reboot)",
                      {{"grace_ms", json::Value(int64_t(kRebootGraceMs))}});
        else
            log::error("rebooting without having sent the exit-113 reply: the broker did not "
                       "take it in time (no connection, or publishing blocked); it is lost "
                       "with the reboot",
                       {{"waited_ms", json::Value(int64_t(kRebootUnsentMs))}});
        reboot(now);
    }
    if (reboot_retry_at_ && now >= reboot_retry_at_) reboot(now);

    answer_late_broadcasts(now);
    if (sysinfo_slow_at_ && now >= sysinfo_slow_at_) {
        sysinfo_slow_at_ = 0;
        log::warn("still waiting for the sysinfo command; this node cannot take part until it "
                  "answers (it is killed at 120 s)",
                  {{"command", field(cfg_.sysinfo_cmd)},
                   {"waited_ms", json::Value(int64_t(kSysinfoSlowMs))}});
    }
    release_held(now);
    start_queued(now);
    expire_queued(now);
    publish_outbox(now);  // before flush_acks(): answers ahead of their acks, one walk a pass
    flush_acks();
    if (stopping_) check_shutdown(now);
    if (publish_due_) publish_outbox(now);
    if (fd_ >= 0 && conn_ && conn_->wants_write()) write_socket(now);
    if (sup_.running() == 0 && outbox_.empty() && held_.empty() && !(conn_ && conn_->wants_write()))
        memory::release_when_idle();
}

void Agent::drain_self_pipe() {
    char buf[64];
    for (;;) {
        ssize_t n = read(sig_pipe_[0], buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        for (ssize_t i = 0; i < n; ++i) {
            if (buf[i] == 'T' && !stopping_) begin_shutdown(monotonic_ms());
            else if (buf[i] == 'T') repeat_shutdown(monotonic_ms());
            if (buf[i] == 'H') log::info("SIGHUP ignored");
            if (buf[i] == '1' || buf[i] == '2')
                log::info(buf[i] == '1' ? "SIGUSR1 ignored" : "SIGUSR2 ignored");
        }
    }
}

// ---------------------------------------------------------------- reboot, shutdown

void Agent::reboot(uint64_t now) {
    reboot_pending_ = false;
    reboot_retry_at_ = 0;
    if (rebooted_) return;
    JobSpec spec;
    spec.id = std::string(kRebootJob) + std::to_string(++job_counter_);
    spec.kind = JobSpec::Kind::File;
    spec.script = "/bin/sh";
    // Its output is read while the agent lives; once the agent has gone
    // (a stop, below) a write must not end it by SIGPIPE: ignored, an
    // ignored signal stays so across the commands it runs.
    spec.args = {"-c", "trap '' PIPE; " + cfg_.reboot_cmd};
    spec.timeout_ms = 0;
    // A stop of the agent (svcadm restart) must not cancel the reboot the
    // reply announced: the command is neither signalled nor killed by our
    // shutdown (check_shutdown() waits for it a while).
    spec.outlives_agent = true;
    std::string why;
    if (sup_.try_start(spec, now, why) == Supervisor::Start::Short) {
        // Short of processes (a fork bomb at the process limit), memory or
        // fds: the node was asked to reboot, and those come back by
        // themselves, so it is tried again every second for as long as the
        // shortage lasts (said once a minute), not dropped.
        reboot_retry_at_ = now + kRebootRetryMs;
        if (!reboot_short_said_ || now - reboot_short_said_ >= kRebootShortSayMs) {
            reboot_short_said_ = now;
            log::warn("cannot start the reboot command for now; trying again every second",
                      {{"command", field(cfg_.reboot_cmd)}, {"error", field(why)}});
        }
        return;
    }
    rebooted_ = true;
    reboot_running_ = true;
    reboot_short_said_ = 0;
    log::info("running the reboot command", {{"command", field(cfg_.reboot_cmd)}});
}

void Agent::begin_shutdown(uint64_t now) {
    stopping_ = true;
    stop_started_ = now;
    log::info("shutting down: no new requests; waiting for running scripts",
              {{"running", json::Value(int64_t(running_scripts()))},
               {"grace_s", json::Value(int64_t(cfg_.shutdown_grace_s))}});
    // Requests received and not started are answered and acked: the
    // request queue (exclusive, auto-delete) and all in it go with us.
    // Until the running scripts are done, requests that still arrive are
    // answered "not run" too (on_delivery) and pings answered, rather than
    // left to the queue's end unanswered: see stop_consuming().
    for (Queued& q : queued_) settle(q);
    answer_queued("the agent is shutting down", now, /*all=*/true);
    // Discovers waiting for a sysinfo read are not answered either.
    sysinfo_waiters_.erase(std::remove_if(sysinfo_waiters_.begin(), sysinfo_waiters_.end(),
                                          [](const SysinfoWaiter& w) {
                                              return w.why == SysinfoWaiter::Why::Broadcast;
                                          }),
                           sysinfo_waiters_.end());
    consumer_retry_at_ = 0;
    ping_retry_at_ = 0;
    sysinfo_next_at_ = 0;
}

// When the shutdown grace ends (after begin_shutdown()).
uint64_t Agent::grace_end() const {
    return stop_started_ + uint64_t(cfg_.shutdown_grace_s) * 1000;
}

// Request scripts still running (held replies are replies left, not scripts).
size_t Agent::running_scripts() const { return request_jobs_ - held_.size(); }

// SIGTERM or SIGINT again while shutting down: said, so that the operator
// knows what is still awaited; the grace period stays what it was (the
// replies of the scripts still running are what it is for).
void Agent::repeat_shutdown(uint64_t now) {
    const uint64_t end = grace_end();
    const size_t running = running_scripts();
    log::info(children_killed_ || running == 0
                  ? "already shutting down; delivering the replies owed"
                  : "already shutting down; running scripts are stopped when the grace period ends",
              {{"running", json::Value(int64_t(running))},
               {"grace_left_s", json::Value(int64_t(now < end ? (end - now + 999) / 1000 : 0))}});
}

// The request queue is held by another connection (405): this agent serves
// nothing, so it must not answer pings either, or a ping would say the node
// is served while its requests wait for the holder (a connection the broker
// has not yet found dead, say).  The ping consumer goes until the request
// queue is ours (its ConsumeOk sets pings up again).  Pings that share the
// request channel went with it.
void Agent::park_pings() {
    if (ping_shared_ || ping_parked_) return;
    ping_parked_ = true;
    ping_ready_ = false;
    ping_retry_at_ = 0;
    if (ping_ch_ && conn_) {
        close_ping_channel();
        log::info("pings are left to the connection that holds the request queue until this "
                  "agent gets it", {{"queue", field(ping_queue_name(id_))}});
    }
}

// Shutting down with no script left running: closing the request and
// ping channels stops deliveries, so that the replies owed can drain
// before the connection closes.
void Agent::stop_consuming() {
    if (!conn_ || !conn_->is_open()) return;
    if (cons_ch_) {
        flush_acks();
        conn_->close_channel(cons_ch_);
        cons_ch_ = 0;
        request_binds_due_ = 0;
        ++channel_gen_;
    }
    if (ping_ch_) close_ping_channel();
}

// Acks what the ping channel owes (flush_acks()), then closes it.
void Agent::close_ping_channel() {
    flush_acks();
    conn_->close_channel(ping_ch_);
    ping_ch_ = 0;
    ping_waits_ = 0;
    ping_bind_due_ = false;
}

void Agent::check_shutdown(uint64_t now) {
    const uint64_t end = grace_end();
    const size_t running = running_scripts();
    if (running > 0 && !children_killed_ && now >= end) {
        log::warn("shutdown grace period over; killing running scripts",
                  {{"running", json::Value(int64_t(running))}});
        sup_.terminate_all(now);
        children_killed_ = true;
    }
    if (running > 0) return;
    // What is left of a stopped script's group gets its SIGKILL when due
    // (at most 5 s after the SIGTERM), not cut short by our exit.
    if (sup_.pinned() > 0) return;
    stop_consuming();
    bool replies_left = owes_replies();
    bool out_of_time = now >= end + kCloseGraceMs * 2;
    if (replies_left && !out_of_time) return;
    // The node is going down anyway: its reboot command is let run, and
    // waited for as long as replies are.
    if (reboot_running_ && !out_of_time) return;
    if (reboot_running_ && !reboot_left_said_) {
        reboot_left_said_ = true;
        log::warn("exiting while the reboot command runs; it is left running",
                  {{"command", field(cfg_.reboot_cmd)}});
    }
    if (replies_left && !closing_) {
        // The start-up announcement is kept too, but is no reply: said
        // for what it is (a broker refusing our publishes, say).
        const size_t replies = outbox_.replies() + held_.size();
        if (replies > 0)
            log::error("exiting with undelivered replies; the journal answers the requests among "
                       "them on restart (every execute request is journaled from its receipt)",
                       {{"pending_replies", json::Value(int64_t(replies))},
                        {"pending_other", json::Value(int64_t(outbox_.size() + held_.size() - replies))},
                        {"journal", json::Value(journal_.is_open())}});
        else
            log::warn("exiting without the broker's confirm of the start-up announcement",
                      {{"pending", json::Value(int64_t(outbox_.size()))}});
    }
    if (conn_ && conn_->is_open() && !closing_) {
        closing_ = true;
        conn_->close(200, "ur-agent shutting down");
        return;
    }
    if (!conn_ || conn_->is_closed() || out_of_time || link_ != Link::Open) done_ = true;
}

}  // namespace ur
