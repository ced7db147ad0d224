#include "src/agent.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <new>
#include <cmath>
#include <cstring>

#include "src/clock.hpp"
#include "src/file_io.hpp"
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

const char kRequestTag[] = "ur-request";
const char kPingTag[] = "ur-ping";
const char kSysinfoJob[] = ".sysinfo";  // internal job ids start with '.', which
const char kRebootJob[] = ".reboot";    // a request id (one routing-key word) cannot
// Replies that may reach a client that has only just connected wait this
// long after the request arrived: see answer_broadcast(), ping_reply_due().
const uint64_t kFreshClientReplyDelayMs = 100;
// Bytes of the requests waiting for a slot that the agent acks at receipt,
// at most (ack_waiting(); their number is --max-waiting).
const uint64_t kMaxAckedWaitingBytes = 32u << 20;
const size_t kKeptRemovedLocks = 4;  // removed lock files kept locked (keep_state_dir)
const uint64_t kSysinfoTimeoutMs = 120000;  // --sysinfo-cmd is killed past it
const size_t kSysinfoMaxBytes = 16u << 20;   // and stopped past this much output
const uint64_t kSysinfoSlowMs = 10000;      // a first read this slow is said
// A discover waits this long for a fresh sysinfo, then gets the one read
// last: a hung sysinfo command must not hide the node from discovers.
const uint64_t kBroadcastFreshWaitMs = 2000;
const uint64_t kHealthyMs = 30000;      // a connection open this long resets backoff
const uint64_t kRebootGraceMs = 10000;  // reboot even without a confirm after this
const uint64_t kCloseGraceMs = 5000;
const size_t kMaxSysinfoWaiters = 1024;  // broadcasts waiting for one sysinfo read
// The least a reply is cut to for --max-pending-bytes (a 256-byte head of
// each stream): below it, the oldest unpublished replies make room.
const uint64_t kMinCutReply = 4096;

amqp::BasicProperties json_properties() {
    amqp::BasicProperties p;
    p.content_type = "application/json";
    return p;
}

json::Value field(const std::string& s) { return json::Value(json::string_from_bytes(s)); }

// A string the broker gave in connection.start ("product", "version"), or "".
std::string server_property(const amqp::Table& props, std::string_view name) {
    const amqp::FieldValue* v = amqp::table_find(props, name);
    return v && v->type == amqp::FieldType::LongString ? v->bytes : std::string();
}

// The whole file, write-locked (fcntl F_SETLK, F_GETLK).
struct flock whole_file_write_lock() {
    struct flock fl;
    std::memset(&fl, 0, sizeof fl);
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    return fl;
}

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

uint64_t Backoff::next(uint32_t random) {
    uint64_t d = base_;
    for (unsigned i = 0; i < attempt_ && d < cap_; ++i) d *= 2;
    if (d > cap_) d = cap_;
    if (attempt_ < 64) ++attempt_;
    // Jitter: between 75% and 125% of the delay, so a fleet that lost its
    // broker at once does not come back in lockstep; never past the cap
    // (documented as the longest wait).
    uint64_t lo = d * 3 / 4, hi = std::min(d + d / 4, cap_);
    return hi > lo ? lo + random % (hi - lo + 1) : lo;
}

Agent::Agent(Config cfg)
    : cfg_(std::move(cfg)),
      sup_([&] {
          SupervisorOptions o;
          o.work_dir = cfg_.work_dir;
          o.tail_keep = output_tail_keep(cfg_);
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
    if (mkdir(cfg_.state_dir.c_str(), 0755) != 0 && errno != EEXIST)
        log::error("cannot create the state directory; running without it",
                   {{"dir", cfg_.state_dir}, {"error", std::strerror(errno)}});
    if (!lock_state_dir()) {
        done_ = true;  // SIGTERM while waiting for the lock
        return true;
    }
    // The script directory, once the state directory is ours (preparing
    // it removes stale script files).  When the configured one is not
    // usable (in a world-writable state dir such as /tmp, someone may have
    // created it first), the supervisor uses a fresh private one beside it
    // (WorkDir) rather than none; those of earlier runs are removed first.
    remove_stale_work_dirs(cfg_.state_dir, ".ur-agent-work.");
    std::string werr;
    if (!sup_.init(werr))
        log::error("no usable script directory; script requests fail until it can be made",
                   {{"work_dir", cfg_.work_dir}, {"error", werr}});
    else if (noexec_mount(sup_.work_dir()))
        log::error("the script directory is on a file system mounted noexec: script requests "
                   "fail (126, Permission denied); give --work-dir a directory where files may run",
                   {{"work_dir", field(sup_.work_dir())}});
    std::string jerr;
    if (!journal_.open(cfg_.state_dir + "/.ur-agent-inflight", cfg_.journal_fsync, jerr))
        log::error("running without an in-flight journal", {{"error", jerr}});
    return true;
}

// One agent per state directory.  A second one (started while the first
// lingers, or by hand) would answer the first's running requests from the
// journal as "agent restarted", then the first would answer them too, and
// it would clear the first's script files.  It waits for the first to
// exit instead; SIGTERM or SIGINT end the wait (false).  A lock that
// cannot be had for another reason (a read-only directory, no locks on
// NFS) is logged and done without.
bool Agent::lock_state_dir() {
    std::string path = lock_path();
    bool said = false;
    for (;;) {
        if (lock_fd_ < 0) {
            std::string why;
            lock_fd_ = open_lock_file(path, why);
            if (lock_fd_ < 0) {
                log::error("cannot use the state directory's lock file; running without it",
                           {{"file", path}, {"error", why}});
                return true;
            }
        }
        struct flock fl = whole_file_write_lock();
        if (fcntl(lock_fd_, F_SETLK, &fl) == 0) {
            // Locked, but the file may have been removed while we waited on
            // it (the other agent then made and locked a new one): only the
            // file at the path counts; else that one is opened and tried.
            struct stat held, named;
            if (fstat(lock_fd_, &held) == 0 && held.st_nlink > 0 &&
                lstat(path.c_str(), &named) == 0 && named.st_dev == held.st_dev &&
                named.st_ino == held.st_ino) {
                if (said) log::info("the other ur-agent is gone; starting", {{"dir", cfg_.state_dir}});
                return true;
            }
            close(lock_fd_);
            lock_fd_ = -1;
            continue;
        }
        if (errno != EACCES && errno != EAGAIN && errno != EINTR) {
            log::error("cannot lock the state directory; running without the lock",
                       {{"file", path}, {"error", std::strerror(errno)}});
            return true;
        }
        if (!said) {
            said = true;
            struct flock who = fl;
            int64_t pid = fcntl(lock_fd_, F_GETLK, &who) == 0 && who.l_type != F_UNLCK
                              ? int64_t(who.l_pid) : 0;
            log::warn("another ur-agent uses this state directory; waiting for it to exit",
                      {{"dir", cfg_.state_dir}, {"holder_pid", json::Value(pid)}});
        }
        pollfd p{sig_pipe_[0], POLLIN, 0};
        if (poll(&p, 1, 500) > 0) {
            char buf[64];
            ssize_t n = read(sig_pipe_[0], buf, sizeof buf);
            for (ssize_t i = 0; i < n; ++i)
                if (buf[i] == 'T') return false;
        }
    }
}

std::string Agent::lock_path() const { return cfg_.state_dir + "/.ur-agent.lock"; }

// In a world-writable state dir (/tmp) anyone could have made the file
// first, or open one others can read and hold a read lock on it to keep us
// waiting forever: only a regular file of ours, with one link, mode 0600
// (made so if it is not), is a lock.  -1 and `why` otherwise.
int Agent::open_lock_file(const std::string& path, std::string& why) {
    int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        why = std::strerror(errno);
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid() ||
        st.st_nlink != 1 || ((st.st_mode & 077) != 0 && fchmod(fd, 0600) != 0)) {
        close(fd);
        why = "not a regular file of ours with one link and mode 0600";
        return -1;
    }
    return fd;
}

// The lock file removed while we run (a /tmp cleaner such as
// systemd-tmpfiles, an operator; the whole state directory with it): made
// again, the state directory too, before the request that needs them, and
// tried again at each request until it can be.  Without it a second agent
// started on this directory would take our running requests for a dead
// agent's (agent_restarted) and empty our journal.  The removed file stays
// open and locked while we run: an agent that was already waiting on it
// waits on.  One fstat() per request.
void Agent::keep_state_dir() {
    struct stat st;
    if (lock_fd_ < 0 || fstat(lock_fd_, &st) != 0 || st.st_nlink > 0) return;
    std::string path = lock_path(), why;
    if (mkdir(cfg_.state_dir.c_str(), 0755) != 0 && errno != EEXIST) why = std::strerror(errno);
    int fd = why.empty() ? open_lock_file(path, why) : -1;
    struct flock fl = whole_file_write_lock();
    if (fd >= 0 && fcntl(fd, F_SETLK, &fl) != 0) {
        why = errno == EACCES || errno == EAGAIN
                  ? "another ur-agent holds the new one: it may answer our requests as its own"
                  : std::strerror(errno);
        close(fd);
        fd = -1;
    }
    if (fd < 0) {
        if (!relock_failed_)
            log::error("the state directory's lock file was removed and cannot be made again; "
                       "trying at each request",
                       {{"file", field(path)}, {"error", field(why)}});
        relock_failed_ = true;
        return;
    }
    relock_failed_ = false;
    // A few kept, not one more at every removal for as long as we run (a
    // daily cleaner): an agent still waiting on an older one is unlikely.
    if (removed_lock_fds_.size() >= kKeptRemovedLocks) {
        close(removed_lock_fds_.front());
        removed_lock_fds_.erase(removed_lock_fds_.begin());
    }
    removed_lock_fds_.push_back(lock_fd_);
    lock_fd_ = fd;
    log::warn("the state directory's lock file was removed; made again",
              {{"file", field(path)}});
}

int Agent::run() {
    memory::tune();
    // Said first, before anything about the state directory (or a wait
    // for its lock) that an operator reads in its light.
    json::Value brokers = json::Value::array();
    for (const BrokerAddress& b : cfg_.brokers) {
        bool v6 = b.host.find(':') != std::string::npos;
        brokers.push_back(field((v6 ? "[" + b.host + "]" : b.host) + ":" + std::to_string(b.port)));
    }
    log::info("ur-agent starting", {{"version", UR_VERSION},
                                    {"brokers", std::move(brokers)},
                                    {"login", field(cfg_.login)},
                                    {"vhost", field(cfg_.vhost)},
                                    {"state_dir", field(cfg_.state_dir)}});
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
// is lower: scripts past it would fail to start (126).
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
                  "fail to start (126); lower --max-concurrency or raise the limit",
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
        log::warn("answering a request that was running when the agent stopped",
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
    if (link_ == Link::Connecting || link_ == Link::Handshake) at(connect_deadline_);
    if (conn_) at(conn_->next_deadline());
    at(consumer_retry_at_);
    at(ping_retry_at_);
    at(pub_retry_at_);
    at(sysinfo_retry_at_);
    at(sysinfo_next_at_);
    at(sysinfo_slow_at_);
    if (reboot_pending_) at(reboot_at_);
    // Only when it could go: due and held back (blocked, no channel, the
    // in-flight bound) it would make every poll() return at once.
    if (conn_ && pub_ready_ && !blocked_ && outbox_.may_publish()) at(outbox_.next_due());
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
    sup_.tick(now);

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
    if (link_ == Link::Open && open_since_ && now - open_since_ >= kHealthyMs) {
        link_backoff_.reset();
        open_since_ = 0;
    }

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
        setup_ping();
    }
    if (pub_retry_at_ && now >= pub_retry_at_) {
        pub_retry_at_ = 0;
        if (conn_ && conn_->is_open() && pub_ch_ == 0) setup_publisher();
    }
    if (sysinfo_retry_at_ && now >= sysinfo_retry_at_) {
        sysinfo_retry_at_ = 0;
        want_sysinfo({SysinfoWaiter::Why::Boot, "", ""}, now);
    }
    if (sysinfo_next_at_ && now >= sysinfo_next_at_) send_sysinfo_heartbeat(now);
    if (reboot_pending_ && now >= reboot_at_) reboot(now);

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

// ---------------------------------------------------------------- link

void Agent::connect_next(uint64_t now) {
    if (addr_index_ >= addrs_.size()) {
        // Next broker of the list; resolve it afresh (its address may move).
        const BrokerAddress& b = cfg_.brokers[broker_index_ % cfg_.brokers.size()];
        ++broker_index_;
        std::string error;
        addrs_.clear();
        addr_index_ = 0;
        if (!resolve(b.host, b.port, addrs_, error)) {
            peer_ = b.host;
            link_down(error, now);
            return;
        }
    }
    const SocketAddress& a = addrs_[addr_index_++];
    peer_ = a.text;
    bool in_progress = false;
    std::string error;
    fd_ = start_connect(a, in_progress, error);
    if (fd_ < 0) {
        link_down(error, now);
        return;
    }
    log::debug("connecting to broker", {{"broker", peer_}});
    connect_deadline_ = now + uint64_t(cfg_.connect_timeout_s) * 1000;
    link_ = Link::Connecting;
    if (!in_progress) on_connected(now);
}

void Agent::on_connected(uint64_t now) {
    amqp::ConnectionOptions o;
    o.login = cfg_.login;
    o.password = cfg_.password;
    o.vhost = cfg_.vhost;
    o.heartbeat = uint16_t(cfg_.heartbeat_s);
    o.version = UR_VERSION;
#if defined(__sun)
    o.platform = "illumos";
#else
    o.platform = "Linux";
#endif
    o.connection_name = "ur-agent " + id_.uuid;
    o.max_body_size = max_body_size();
    conn_ = std::make_unique<amqp::Connection>(o);
    conn_->start(now);
    link_ = Link::Handshake;
    log::debug("connected, AMQP handshake", {{"broker", peer_}});
}

uint64_t Agent::max_body_size() const {
    // Requests carry whole scripts: a few MiB at most in practice.  Parsed
    // JSON takes several times its text in memory, so this bound is what
    // keeps a hostile request from costing more than a few hundred MiB.
    return kMaxRequestBytes;
}

void Agent::link_down(const std::string& why, uint64_t now, bool refused, bool retry_at_once) {
    bool was_open = link_ == Link::Open;
    if (fd_ >= 0) {
        close(fd_);
        fd_ = -1;
    }
    conn_.reset();
    link_ = Link::Down;
    pub_ready_ = false;
    consuming_ = false;
    request_consumer_ok_ = false;
    ping_ready_ = false;
    pub_ch_ = cons_ch_ = ping_ch_ = 0;
    request_binds_due_ = 0;
    ping_bind_due_ = false;
    ping_up_since_ = 0;
    ping_shared_ = false;
    ping_parked_ = false;
    locked_attempts_ = 0;  // a 405 on the next connection is said again
    ping_ack_upto_ = 0;
    ++channel_gen_;
    consumer_retry_at_ = 0;
    ping_retry_at_ = 0;
    pub_retry_at_ = 0;  // a new connection opens its own
    blocked_ = false;
    outbox_.connection_lost();
    // Requests received but not started were never acked, and the broker
    // dropped them with our exclusive queue: answer them (after the
    // reconnect) rather than leave their requesters waiting.
    answer_queued("the broker connection was lost (" + why + ") before it started", now);
    if (done_) return;
    if (!was_open) failed_since_serving_ = true;
    uint64_t delay = link_backoff_.next(random32());
    // The name's other addresses are tried at once, and so is a broker
    // whose refusal we have just learnt to avoid.
    if (addr_index_ < addrs_.size() || retry_at_once) delay = 0;
    reconnect_at_ = now + delay;
    if (stopping_) {
        log::info("broker link closed during shutdown", {{"reason", field(why)}});
        return;
    }
    // Refused (login, vhost, permissions): a setting to fix, not an outage
    // to wait out, so said as an error, at every retry.
    log::write(refused ? log::Level::Error : log::Level::Warn,
              refused   ? "the broker refused us (check the login, the password, --vhost and "
                          "the user's permissions)"
              : was_open ? "lost the broker connection"
                         : "cannot connect to the broker",
              {{"broker", field(peer_)}, {"reason", field(why)},
               {"retry_in_ms", json::Value(int64_t(delay))},
               {"pending_replies", json::Value(int64_t(outbox_.size()))}});
}

void Agent::read_socket(uint64_t now) {
    char buf[65536];
    for (int rounds = 0; rounds < 64 && fd_ >= 0; ++rounds) {
        ssize_t n = read(fd_, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (n <= 0) {
            std::string why = n == 0 ? "the broker closed the connection"
                                     : std::string("read: ") + std::strerror(errno);
            if (link_ == Link::Handshake && conn_ && conn_->awaiting_start())
                why += " before the AMQP handshake began (not an AMQP 0-9-1 broker? a TLS port?)";
            else if (link_ == Link::Handshake && conn_ && conn_->awaiting_tune())
                why += " on our login (wrong login or password?)";
            else if (link_ == Link::Handshake)
                why += " during the AMQP handshake";
            handle_events(now);
            link_down(why, now);
            return;
        }
        conn_->feed(buf, size_t(n), now);
        handle_events(now);
    }
}

// Writes what the connection has queued.  A write error takes the link
// down, unless down_on_error is false: flushing the close-ok to a broker
// that closed, the caller takes it down with the real reason.
void Agent::write_socket(uint64_t now, bool down_on_error) {
    // Up to 16 pieces a call (the least IOV_MAX POSIX allows): a big reply
    // goes out as frame headers between slices of its body, 8 frames a call.
    constexpr size_t kPieces = 16;
    while (fd_ >= 0 && conn_ && conn_->wants_write()) {
        std::string_view pieces[kPieces];
        struct iovec iov[kPieces];
        size_t k = conn_->output_pieces(pieces, kPieces);
        for (size_t i = 0; i < k; ++i)
            iov[i] = {const_cast<char*>(pieces[i].data()), pieces[i].size()};
        ssize_t n = writev(fd_, iov, int(k));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (n < 0) {
            if (down_on_error) link_down(std::string("write: ") + std::strerror(errno), now);
            return;
        }
        conn_->consume_output(size_t(n));
    }
}

void Agent::handle_events(uint64_t now) {
    amqp::Event ev;
    while (conn_ && conn_->next_event(ev)) {
        switch (ev.kind) {
        case amqp::EventKind::Opened:
            link_ = Link::Open;
            open_since_ = now;
            // Learnt afresh on each connection (from a refusal): the limit
            // may have been raised since, or this is another broker.
            broker_max_message_ = 0;
            {
                std::string product = server_property(conn_->server_properties(), "product");
                std::string version = server_property(conn_->server_properties(), "version");
                log::info("connected to the broker",
                          {{"broker", field(peer_)},
                           {"broker_product", field(product)},
                           {"broker_version", field(version)},
                           {"heartbeat_s", json::Value(int64_t(conn_->heartbeat()))},
                           {"frame_max", json::Value(int64_t(conn_->frame_max()))}});
                // Known to refuse PROTOCOL.md's ping queue: not even tried.
                if (!ping_exclusive_ && denies_transient_queues(product, version)) {
                    ping_exclusive_ = true;
                    log::info("RabbitMQ 4.3 and later deny transient queues that are not "
                              "exclusive; declaring the ping queue exclusive",
                              {{"queue", field(ping_queue_name(id_))}});
                }
            }
            setup_publisher();
            setup_consumer(now);
            setup_ping();
            break;
        case amqp::EventKind::ChannelOpened:
            break;  // its set-up went out behind its channel.open
        case amqp::EventKind::ConfirmSelected:
            if (ev.channel == pub_ch_) pub_ready_ = true;
            break;
        case amqp::EventKind::ConsumeOk:
            if (ev.channel == cons_ch_ && ev.consumer_tag == kPingTag) {
                ping_ready_ = true;  // shared with the request channel
            } else if (ev.channel == cons_ch_) {
                request_consumer_ok_ = true;
                if (ping_parked_) {
                    ping_parked_ = false;
                    setup_ping();
                }
            } else if (ev.channel == ping_ch_) {
                if (ping_backoff_.attempts() > 0)
                    log::info("answering pings again", {{"queue", field(ping_queue_name(id_))}});
                ping_ready_ = true;
                // The backoff starts over once pings have been served a
                // while (the channel closing then), not at once: a broker
                // that closes it each time just after consume-ok would
                // have it set up again every half second, for ever.
                ping_up_since_ = now;
            }
            if (request_consumer_ok_ && ping_ready_ && !consuming_) on_consuming(now);
            break;
        case amqp::EventKind::Delivery:
            on_delivery(ev, now);
            break;
        case amqp::EventKind::Confirmed:
            if (ev.channel == pub_ch_) on_confirmed(outbox_.confirm(ev.delivery_tag, ev.multiple), now);
            break;
        case amqp::EventKind::Nacked:
            if (ev.channel == pub_ch_) {
                size_t in_flight = outbox_.in_flight();
                std::vector<OutMessage> gone = outbox_.nack(ev.delivery_tag, ev.multiple, now);
                if (outbox_.in_flight() == in_flight)
                    log::warn("ignoring a nack for no message of ours in flight",
                              {{"seq", json::Value(int64_t(ev.delivery_tag))}});
                else
                    log::warn("the broker refused a message (a queue bound to its key full, "
                              "with overflow reject-publish?); sending it again with backoff",
                              {{"seq", json::Value(int64_t(ev.delivery_tag))},
                               {"multiple", json::Value(ev.multiple)}});
                for (OutMessage& m : gone)
                    give_up(m, "the broker refused it " + std::to_string(m.refusals) + " times",
                            now);
            }
            break;
        case amqp::EventKind::Returned:
            log::warn("message returned by the broker", {{"routing_key", field(ev.routing_key)},
                                                         {"code", json::Value(int64_t(ev.code))}});
            break;
        case amqp::EventKind::ServerCancel:
            log::warn("the broker cancelled our consumer (queue deleted?); setting it up again",
                      {{"consumer_tag", field(ev.consumer_tag)}});
            if (conn_ && ev.consumer_tag == kPingTag &&
                (ev.channel == ping_ch_ || (ping_shared_ && ev.channel == cons_ch_))) {
                // The ping queue went: declared and consumed again on its
                // channel.
                consume_ping_queue(ev.channel);
            } else if (ev.channel == cons_ch_ && conn_) {
                // Start over on a fresh channel: the request queue is gone,
                // and with it what it held.
                flush_acks();
                conn_->close_channel(cons_ch_);
                request_channel_gone("the broker cancelled the request consumer (request queue "
                                     "deleted?)", now);
                consumer_retry_at_ = now + 200;
            }
            break;
        case amqp::EventKind::Blocked:
            blocked_ = true;
            log::warn("the broker blocked publishing (memory or disk alarm); replies are held",
                      {{"reason", field(ev.text)}});
            break;
        case amqp::EventKind::Unblocked:
            blocked_ = false;
            log::info("the broker unblocked publishing");
            break;
        case amqp::EventKind::ChannelClosed: {
            // RabbitMQ 4.3 closes the connection over a transient queue,
            // but a broker that closed the channel instead is answered
            // the same way: the ping queue declared exclusive, at once.
            bool learnt = learn_transient_refusal(ev.text);
            if (ev.channel == cons_ch_) {
                // The request queue is auto-delete: it went with its only
                // consumer, and every request in it.
                request_channel_gone("the broker closed the request channel (" +
                                         std::to_string(ev.code) + " " + ev.text + ")",
                                     now);
                uint64_t delay = learnt ? 0 : consumer_backoff_.next(random32());
                consumer_retry_at_ = now + delay;
                if (ev.code == 405) {
                    park_pings();
                    // Said at once, then about once a minute at the backoff's
                    // cap: a lock that lasts leaves this node serving nothing.
                    unsigned attempt = ++locked_attempts_;
                    log::write(attempt == 1 ? log::Level::Warn
                               : attempt % 12 == 0 ? log::Level::Error
                                                   : log::Level::Debug,
                               "405 RESOURCE_LOCKED: the request queue is held by another "
                               "connection (another agent with this UUID, or the broker has not "
                               "noticed our old connection died), or a queue of that name "
                               "exists that is not exclusive (delete it); retrying",
                               {{"queue", field(request_queue_name(id_))},
                                {"code", json::Value(405)}, {"text", field(ev.text)},
                                {"retry_in_ms", json::Value(int64_t(delay))},
                                {"attempt", json::Value(int64_t(attempt))}});
                }
                else
                    log::warn("the broker closed the request channel; opening it again",
                              {{"code", json::Value(int64_t(ev.code))}, {"text", field(ev.text)},
                               {"retry_in_ms", json::Value(int64_t(delay))}});
            } else if (ev.channel == ping_ch_) {
                // A ping queue we cannot declare (one of that name made
                // with other flags, say) costs pings only: requests go on.
                // Start-up is announced without it rather than never.
                ping_ch_ = 0;
                ping_bind_due_ = false;
                ping_ack_upto_ = 0;
                ping_ready_ = true;
                if (ping_up_since_ && now - ping_up_since_ >= kHealthyMs) ping_backoff_.reset();
                ping_up_since_ = 0;
                uint64_t delay = learnt ? 0 : ping_backoff_.next(random32());
                ping_retry_at_ = now + delay;
                // Said at the first failure and then about once an hour (at
                // the 30 s cap), not at every retry of a lasting refusal.
                unsigned attempt = ping_backoff_.attempts();
                log::write(attempt == 1 || attempt % 120 == 0 ? log::Level::Warn : log::Level::Debug,
                           "the broker closed the ping channel; pings go unanswered until it "
                           "is set up again",
                           {{"queue", field(ping_queue_name(id_))},
                            {"code", json::Value(int64_t(ev.code))}, {"text", field(ev.text)},
                            {"attempt", json::Value(int64_t(attempt))},
                            {"retry_in_ms", json::Value(int64_t(delay))}});
                if (request_consumer_ok_ && !consuming_) on_consuming(now);
            } else if (ev.channel == pub_ch_) {
                // Usually a message it refused.  Reopening at once would
                // publish the same message again, as fast as the broker
                // refuses it, with every later reply stuck behind it.
                pub_ready_ = false;
                pub_ch_ = 0;
                outbox_.connection_lost();
                uint64_t delay = pub_backoff_.next(random32());
                pub_retry_at_ = now + delay;
                log::warn("the broker closed the publishing channel; opening it again",
                          {{"code", json::Value(int64_t(ev.code))}, {"text", field(ev.text)},
                           {"retry_in_ms", json::Value(int64_t(delay))}});
                if (uint64_t limit = max_size_from_close(ev.code, ev.text);
                    limit && limit != broker_max_message_) {
                    broker_max_message_ = limit;
                    log::warn("the broker refuses messages over its max message size; larger "
                              "replies will be cut to fit",
                              {{"max_bytes", json::Value(int64_t(limit))}});
                }
            }
            break;
        }
        case amqp::EventKind::Closed: {
            std::string why = "connection closed";
            switch (ev.close_reason) {
            case amqp::CloseReason::ClosedByPeer: why = "closed by the broker"; break;
            case amqp::CloseReason::ProtocolError: why = "protocol error"; break;
            case amqp::CloseReason::HeartbeatTimeout: why = "no heartbeat from the broker: peer dead"; break;
            case amqp::CloseReason::AuthFailure: why = "access refused"; break;
            case amqp::CloseReason::ClosedByUs: why = "closed by us"; break;
            }
            if (ev.code) why += " (" + std::to_string(ev.code) + " " + ev.text + ")";
            else if (!ev.text.empty()) why += " (" + ev.text + ")";
            write_socket(now, false);  // flush close / close-ok, best effort
            if (ev.close_reason == amqp::CloseReason::ClosedByUs) done_ = stopping_;
            bool fixed = ev.close_reason == amqp::CloseReason::ClosedByPeer &&
                         learn_transient_refusal(ev.text);
            link_down(why, now, ev.close_reason == amqp::CloseReason::AuthFailure, fixed);
            return;
        }
        case amqp::EventKind::QueueBound:
            if (ev.channel == cons_ch_ && request_binds_due_ > 0) --request_binds_due_;
            break;
        default:
            break;
        }
    }
    if (ping_bind_due_ && (cons_ch_ == 0 || request_binds_due_ == 0)) bind_ping_queue(ping_ch_);
}

// Declares and binds the ping queue and consumes it on `ch`: its own
// channel, so that a ping queue the broker refuses (or deletes) cannot
// take the request queue, and the requests in it, down with it; the
// request channel only when the broker allows no third channel.
void Agent::consume_ping_queue(uint16_t ch) {
    declare_ping_queue(ch);
    bind_ping_queue(ch);
}

// Auto-delete, not durable, and not exclusive as PROTOCOL.md has it, but
// exclusive where the broker denies that (ping_exclusive_).
void Agent::declare_ping_queue(uint16_t ch) {
    conn_->queue_declare(ch, ping_queue_name(id_), false, false, ping_exclusive_, true);
}

// A close whose text is RabbitMQ's refusal of a transient non-exclusive
// queue (ours is the ping queue): from now on it is declared exclusive.
// True the first time only, when the caller should retry at once.
bool Agent::learn_transient_refusal(const std::string& close_text) {
    if (ping_exclusive_ || !is_transient_queue_refusal(close_text)) return false;
    ping_exclusive_ = true;
    log::warn("the broker denies transient queues that are not exclusive "
              "(transient_nonexcl_queues); declaring the ping queue exclusive from now on",
              {{"queue", field(ping_queue_name(id_))}});
    return true;
}

// The ping queue's binding and consumer, on `ch` (its declare went first);
// no longer due after this.
void Agent::bind_ping_queue(uint16_t ch) {
    ping_bind_due_ = false;
    std::string pq = ping_queue_name(id_);
    for (const auto& key : ping_bindings(id_)) conn_->queue_bind(ch, pq, "amq.topic", key);
    conn_->basic_consume(ch, pq, kPingTag, false, false);
}

void Agent::setup_ping() {
    if (!conn_ || !conn_->is_open() || stopping_ || ping_parked_) return;
    ping_ch_ = conn_->open_channel();
    if (ping_ch_ != 0) {
        conn_->basic_qos(ping_ch_, uint16_t(std::min<unsigned>(cfg_.max_concurrency, 65535)));
        // Bindings to amq.topic made at once on two channels contend for
        // the same records in RabbitMQ's database (every Ur key starts
        // with "ur."), and one of them waits or is retried: start-up took
        // 1 ms longer at the median, up to 10 ms at the tail (make bench).
        // So the ping queue is declared at once, but bound only when the
        // request queue's bindings are done (handle_events()).
        declare_ping_queue(ping_ch_);
        if (cons_ch_ != 0 && request_binds_due_ > 0)
            ping_bind_due_ = true;
        else
            bind_ping_queue(ping_ch_);
        return;
    }
    if (cons_ch_ == 0) return need_channels();
    ping_shared_ = true;
    log::warn("the broker allows only 2 channels; pings share the request channel (a ping "
              "queue the broker refuses then takes the request queue down with it)",
              {{"channel_max", json::Value(int64_t(conn_->channel_max()))}});
    consume_ping_queue(cons_ch_);
}

// The broker's channel_max leaves too few channels.  Staying connected
// would look healthy and serve nothing: close, and reconnect with backoff
// until the broker is fixed.
void Agent::need_channels() {
    log::error("the broker allows too few channels; ur-agent needs 2",
               {{"channel_max", json::Value(int64_t(conn_->channel_max()))}});
    conn_->close(amqp::kResourceError, "ur-agent needs 2 channels");
}

// The request channel closed or its consumer cancelled by the broker,
// the connection still up: the requests waiting for a slot are answered
// (the queue went with them), and serving starts over on a new channel
// (with the ping consumer, when it shares this one).
void Agent::request_channel_gone(const std::string& why, uint64_t now) {
    cons_ch_ = 0;
    request_binds_due_ = 0;
    ++channel_gen_;
    answer_queued(why + " before it started", now);
    consuming_ = false;
    request_consumer_ok_ = false;
    if (ping_shared_) ping_ready_ = false;
}

// Each channel's set-up goes out right behind its channel.open, without
// waiting for the open-ok: the broker handles a channel's frames in order
// and drops what follows a refused open with the channel.  That saves a
// round trip to the broker (about 0.5 ms at start-up on loopback).
void Agent::setup_consumer(uint64_t now) {
    (void)now;
    if (!conn_ || !conn_->is_open() || stopping_) return;
    cons_ch_ = conn_->open_channel();
    request_consumer_ok_ = false;
    if (cons_ch_ == 0) return need_channels();
    if (id_.mac.empty())
        log::warn("no NIC in sysinfo carries the admin tag; request queue without MAC binding",
                  {{"admin_tag", field(admin_tag(sysinfo_))}});
    conn_->basic_qos(cons_ch_, uint16_t(std::min<unsigned>(cfg_.max_concurrency, 65535)));
    std::string rq = request_queue_name(id_);
    conn_->queue_declare(cons_ch_, rq, false, false, true, true);
    request_binds_due_ = 0;
    for (const auto& key : request_bindings(id_))
        if (conn_->queue_bind(cons_ch_, rq, "amq.topic", key)) ++request_binds_due_;
    conn_->basic_consume(cons_ch_, rq, kRequestTag, false, false);
    if (ping_shared_) consume_ping_queue(cons_ch_);
}

void Agent::setup_publisher() {
    pub_ch_ = conn_->open_channel();
    if (pub_ch_ != 0) conn_->confirm_select(pub_ch_);
}

void Agent::on_consuming(uint64_t now) {
    consuming_ = true;
    consumer_backoff_.reset();
    locked_attempts_ = 0;
    // Serving again after connects had failed: the outage (a broker
    // restart, say) is over, so the next one starts from the base delay
    // instead of where this one left off.  A broker that lets us serve and
    // then drops us at once, with no failed connect in between, still
    // climbs the backoff until kHealthyMs of health resets it.
    if (failed_since_serving_) {
        failed_since_serving_ = false;
        link_backoff_.reset();
    }
    log::info("serving requests", {{"queue", field(request_queue_name(id_))},
                                   {"uuid", field(id_.uuid)}});
    if (!startup_checked_) {
        startup_checked_ = true;
        std::string marker = cfg_.state_dir + "/.ur-startup";
        int fd = open(marker.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd >= 0 || errno != EEXIST) {
            // A marker that cannot be made (a read-only or full state dir)
            // must not keep a booted node from being announced: announced
            // all the same, once, and a restart of the agent may repeat it.
            if (fd >= 0)
                close(fd);
            else
                log::error("cannot create the start-up marker; announcing start-up without it",
                           {{"file", marker}, {"error", std::strerror(errno)}});
            OutMessage m;
            m.routing_key = startup_key(id_.uuid);
            m.body = json::write(sysinfo_);
            enqueue(std::move(m), now);
            log::info("announcing start-up", {{"routing_key", field(startup_key(id_.uuid))}});
        }
    }
    // A sysinfo heartbeat on every connect, then on the interval until set-up.
    send_sysinfo_heartbeat(now);
}

// ---------------------------------------------------------------- requests

// The ping queue's deliveries, acked at once on its channel.  Only pings
// are answered there: requests run from the request queue alone, and
// anything else routed to the ping queue (a binding someone added) is
// logged and dropped.
void Agent::on_ping_delivery(const amqp::Event& ev, uint64_t now) {
    Request req = parse_request(id_, ev.routing_key, ev.body);
    if (req.kind == RequestKind::Ping) {
        answer_ping(req, now);
    } else {
        std::string why = ev.body_discarded ? "body of " + std::to_string(ev.body_size) +
                                                  " bytes is over the agent's limit"
                          : req.kind == RequestKind::Ignored ? req.error
                                                             : "not a ping";
        log::warn("ignoring message on the ping queue",
                  {{"routing_key", field(ev.routing_key)}, {"reason", field(why)}});
    }
    // Every delivery on this channel is decided at once: one multiple ack
    // at the end of the loop pass covers them all (flush_acks).
    ping_ack_upto_ = std::max(ping_ack_upto_, ev.delivery_tag);
}

void Agent::answer_ping(const Request& req, uint64_t now) {
    log::debug("ping", {{"reply_key", field(req.reply_key)}});
    OutMessage m;
    m.routing_key = req.reply_key;
    m.keep = false;
    uint64_t due = ping_reply_due(req.reply_key, now);
    if (due > now) m.not_before = due;
    // "now" (PROTOCOL.md) when it is sent: a delayed answer says so.
    m.body = ping_reply_body(req.ping_id, iso8601(wall_ms() + (due > now ? due - now : 0)));
    enqueue(std::move(m), now);
}

void Agent::on_delivery(amqp::Event& ev, uint64_t now) {
    if (ping_ch_ && ev.channel == ping_ch_) {
        on_ping_delivery(ev, now);
        return;
    }
    if (ev.channel != cons_ch_) return;  // stale channel: the broker requeues it
    forget_stale_acks();
    unacked_.insert(ev.delivery_tag);  // undecided: no multiple ack may cover it
    Request req = parse_request(id_, ev.routing_key, ev.body);
    if (stopping_ && req.kind == RequestKind::Execute && req.error.empty()) {
        std::string journal_key = journal_.add(req.reply_key, req.req_id);
        answer_not_run({std::move(req), ev.delivery_tag, now, std::move(journal_key)},
                       "the agent is shutting down", now);
        ack_later(ev.delivery_tag);
        return;
    }
    if (ev.body_discarded && (req.kind == RequestKind::Execute || req.kind == RequestKind::Ignored))
        req.error = "request body of " + std::to_string(ev.body_size) +
                    " bytes exceeds the agent's limit of " + std::to_string(max_body_size()) +
                    " bytes";
    auto ack = [&] { ack_later(ev.delivery_tag); };
    switch (req.kind) {
    case RequestKind::Ignored:
        log::warn("ignoring message", {{"routing_key", field(ev.routing_key)},
                                       {"reason", field(req.error)}});
        ack();
        return;
    case RequestKind::Ping:
        answer_ping(req, now);
        ack();
        return;
    case RequestKind::Broadcast:
        if (stopping_) {  // not found by a discover: it would be sent requests it will not run
            log::info("sysinfo broadcast not answered: shutting down", {{"req_id", field(req.req_id)}});
            ack();
            return;
        }
        log::info("sysinfo broadcast", {{"req_id", field(req.req_id)}});
        want_sysinfo({SysinfoWaiter::Why::Broadcast, req.reply_key, req.req_id, now}, now);
        ack();
        return;
    case RequestKind::Execute:
        break;
    }
    if (!req.error.empty()) {
        log::warn("invalid request", {{"req_id", field(req.req_id)},
                                      {"routing_key", field(ev.routing_key)},
                                      {"reason", field(req.error)},
                                      {"exit_status", json::Value(2)}});
        OutMessage m;
        m.routing_key = req.reply_key;
        m.body = invalid_request_body(req.error);
        m.cuttable = true;
        m.req_id = req.req_id;
        // Answered at once it beat the binds of a client that had just
        // connected (urclient does not wait for bind-ok), like a ping.
        m.not_before = now + kFreshClientReplyDelayMs;
        enqueue(std::move(m), now);
        ack();
        return;
    }
    log::info("execute request",
              {{"req_id", field(req.req_id)}, {"routing_key", field(ev.routing_key)},
               {"type", req.is_file ? "file" : "script"}, {"origin", field(req.origin)},
               {"timestamp", req.timestamp.empty() ? json::Value() : field(req.timestamp)},
               {"args", json::Value(int64_t(req.args.size()))},
               {"script_bytes", json::Value(int64_t(req.is_file ? 0 : req.script.size()))},
               {"redelivered", json::Value(ev.redelivered)}});
    if (log::enabled(log::Level::Trace)) {
        json::Value env = json::Value::array();
        if (req.env)
            for (const auto& e : *req.env) env.push_back(field(e));
        log::trace("execute request text", {{"req_id", field(req.req_id)},
                                            {"script", field(req.script)},
                                            {"env", env}});
    }
    keep_state_dir();
    // Journaled from receipt, not from its start: a request still waiting
    // for a slot when the agent dies (kill -9) or stops with its "not run"
    // reply undelivered is answered on restart all the same.
    std::string journal_key = journal_.add(req.reply_key, req.req_id);
    Queued q{std::move(req), ev.delivery_tag, now, std::move(journal_key)};
    q.bytes = ev.body.size();
    queued_.push_back(std::move(q));
    start_queued(now);
}

void Agent::start_queued(uint64_t now) {
    if (start_retry_at_ <= now) {
        start_retry_at_ = 0;
        while (!queued_.empty() && request_jobs_ < cfg_.max_concurrency && !stopping_) {
            if (!start_job(queued_.front(), now)) break;  // stays first, tried again later
            take_front();
        }
    }
    ack_waiting();
}

// Requests waiting for a slot are acked at receipt while the agent holds
// fewer than --max-waiting of them (and kMaxAckedWaitingBytes): the
// broker then goes on delivering to a node whose slots are all taken, and
// its sysinfo broadcasts (discover) with the rest, where a prefetch full
// of waiting requests held them back until a slot freed.  Past that bound
// they stay unacked, and the prefetch (--max-concurrency) keeps the rest
// in the broker.  The early ack loses nothing: each is journaled at
// receipt (agent_restarted if the agent dies), and the broker would not
// deliver it again anyway, the exclusive auto-delete request queue going
// with the channel or connection (answer_queued() answers them then).
void Agent::ack_waiting() {
    // Oldest first, so those acked are the first acked_waiting_ of queued_
    // (requests leave it from the front, take_front()): the rest, none of
    // them acked (a request is acked otherwise only as it leaves), start
    // there.
    for (size_t i = acked_waiting_; i < queued_.size(); ++i) {
        Queued& q = queued_[i];
        if (acked_waiting_ >= cfg_.max_waiting ||
            acked_waiting_bytes_ + q.bytes > kMaxAckedWaitingBytes)
            return;
        ++acked_waiting_;
        acked_waiting_bytes_ += q.bytes;
        settle(q);
    }
}

// A request's delivery acked, once.
void Agent::settle(Queued& q) {
    if (q.acked) return;
    q.acked = true;
    ack_later(q.delivery_tag);
}

Agent::Queued Agent::take_front() {
    Queued q = std::move(queued_.front());
    queued_.pop_front();
    if (acked_waiting_ > 0) {  // the front was one of them
        --acked_waiting_;
        acked_waiting_bytes_ -= q.bytes;
    }
    return q;
}

// A request received and never started gets a reply all the same, so that
// its requester learns now, not at its own timeout, that it did not run.
void Agent::answer_not_run(const Queued& q, const std::string& why, uint64_t now) {
    log::warn("request not run", {{"req_id", field(q.req.req_id)}, {"reason", field(why)},
                                  {"exit_status", json::Value(1)}});
    OutMessage m;
    m.routing_key = q.req.reply_key;
    m.body = not_run_body(why);
    m.cuttable = true;
    m.req_id = q.req.req_id;
    m.journal_key = q.journal_key;  // struck off when the broker confirms the reply
    enqueue(std::move(m), now);
}

// queued_ holds requests of the current consumer channel only: whatever
// ends that channel (a lost connection, a close or cancel by the broker,
// shutdown) answers them here first.
void Agent::answer_queued(const std::string& why, uint64_t now) {
    std::deque<Queued> queued;
    queued.swap(queued_);
    acked_waiting_ = 0;
    acked_waiting_bytes_ = 0;
    for (const Queued& q : queued) answer_not_run(q, why, now);
}

// Requests that have waited --max-queue-wait for a slot are answered and
// acked before RabbitMQ's consumer_timeout closes the channel over them.
void Agent::expire_queued(uint64_t now) {
    uint64_t limit = uint64_t(cfg_.max_queue_wait_s) * 1000;
    if (limit == 0) return;
    while (!queued_.empty() && now - queued_.front().received_ms >= limit) {
        Queued q = take_front();
        answer_not_run(q, q.was_short
                              ? "it could not be started for want of processes, memory or file "
                                "descriptors and waited " + std::to_string(cfg_.max_queue_wait_s) +
                                    " s (--max-queue-wait)"
                              : "it waited " + std::to_string(cfg_.max_queue_wait_s) +
                                    " s for one of the " + std::to_string(cfg_.max_concurrency) +
                                    " script slots (--max-concurrency; --max-queue-wait)",
                       now);
        settle(q);
    }
}

bool Agent::start_job(Queued& q, uint64_t now) {
    JobSpec spec;
    spec.id = std::to_string(++job_counter_);
    spec.kind = q.req.is_file ? JobSpec::Kind::File : JobSpec::Kind::Script;
    spec.script = std::move(q.req.script);
    spec.args = std::move(q.req.args);
    spec.env = std::move(q.req.env);
    double t = q.req.timeout_s > 0 ? q.req.timeout_s : double(cfg_.default_timeout_s);
    // Whole milliseconds, rounded up: a timeout under 1 ms is 1 ms, never
    // the 0 that means "no limit".
    spec.timeout_ms = uint64_t(std::ceil(t * 1000.0));
    spec.max_output = size_t(cfg_.max_output);
    spec.json_output = true;  // escaped while the script runs, not after
    std::string id = spec.id;
    // Short of processes (a fork bomb at the process limit), memory or
    // fds, the request waits at the front of the queue, tried again with
    // backoff, for up to --start-retry counted from the start of the
    // shortage (not from each request's turn: the last of N waiting ones
    // waited N times as long); then it is answered 126 with why.
    // (Only the request at the head of the queue is tried, so the
    // shortage began at or before its own first failure.)
    uint64_t retry_ms = uint64_t(cfg_.start_retry_s) * 1000;
    spec.retried_ms = starts_short_since_ ? now - starts_short_since_ : 0;
    const bool may_wait = retry_ms > 0 && spec.retried_ms < retry_ms;
    std::string why;
    Supervisor::Start started = retry_ms > 0 ? sup_.try_start(spec, now, why)
                                             : (sup_.start(std::move(spec), now) ? Supervisor::Start::Started
                                                                                : Supervisor::Start::DuplicateId);
    if (started == Supervisor::Start::Short) {
        q.was_short = true;
        if (!starts_short_since_) starts_short_since_ = now;
        if (!may_wait) {
            // Waited long enough in this shortage: answered 126 (start()
            // makes that result, saying how long it was tried).
            started = sup_.start(std::move(spec), now) ? Supervisor::Start::Started
                                                       : Supervisor::Start::DuplicateId;
        } else {
            // Given back untouched, to be tried again.
            q.req.script = std::move(spec.script);
            q.req.args = std::move(spec.args);
            q.req.env = std::move(spec.env);
            if (!short_warned_ && (!short_warned_at_ || now - short_warned_at_ >= 60000)) {
                short_warned_ = true;
                short_warned_at_ = now;
                log::warn("cannot start scripts for now; each waits and is tried again",
                          {{"error", field(why)},
                           {"retry_s", json::Value(int64_t(cfg_.start_retry_s))},
                           {"req_id", field(q.req.req_id)}});
            }
            // Not past the end of the wait: the 126 then says how long it was.
            start_retry_at_ = std::min(now + start_backoff_.next(random32()),
                                       starts_short_since_ + retry_ms);
            return false;
        }
    } else if (starts_short_since_) {
        // Made (or failed for a reason of its own): the shortage is over.
        if (short_warned_)
            log::info("starting scripts again", {{"waited_ms", json::Value(int64_t(now - starts_short_since_))}});
        short_warned_ = false;
        starts_short_since_ = 0;
        start_backoff_.reset();
    }
    if (started == Supervisor::Start::DuplicateId) {
        log::error("supervisor refused a job id", {{"req_id", field(q.req.req_id)}});
        journal_.remove(q.journal_key);
        settle(q);
        return true;
    }
    Running r;
    r.req_id = q.req.req_id;
    r.reply_key = q.req.reply_key;
    r.journal_key = q.journal_key;
    running_[id] = std::move(r);
    ++request_jobs_;
    settle(q);
    return true;
}

void Agent::ack_later(uint64_t delivery_tag) { to_ack_.push_back(delivery_tag); }

// The consumer channel the ack state belongs to is gone: the broker
// requeued what it had not seen acked, and an ack can no longer be sent on
// it.
void Agent::forget_stale_acks() {
    if (acks_gen_ == channel_gen_) return;
    unacked_.clear();
    to_ack_.clear();
    acks_gen_ = channel_gen_;
}

void Agent::flush_acks() {
    // An answer goes out ahead of the ack of what it answers.
    if (publish_due_) publish_outbox(monotonic_ms());
    if (ping_ack_upto_ && conn_ && ping_ch_) conn_->basic_ack(ping_ch_, ping_ack_upto_, true);
    ping_ack_upto_ = 0;
    forget_stale_acks();
    if (to_ack_.empty() || !conn_ || !cons_ch_) {
        to_ack_.clear();
        return;
    }
    std::sort(to_ack_.begin(), to_ack_.end());
    for (uint64_t t : to_ack_) unacked_.erase(t);
    // A multiple ack covers every unacked delivery up to its tag, so it
    // must stay below the oldest delivery not yet decided (a request
    // waiting for a free slot).  Deliveries arrive in tag order, so all
    // tags below that one have been seen and decided.
    uint64_t undecided = unacked_.empty() ? UINT64_MAX : *unacked_.begin();
    size_t below = size_t(std::lower_bound(to_ack_.begin(), to_ack_.end(), undecided) -
                          to_ack_.begin());
    if (below > 0) conn_->basic_ack(cons_ch_, to_ack_[below - 1], below > 1);
    for (size_t i = below; i < to_ack_.size(); ++i) conn_->basic_ack(cons_ch_, to_ack_[i]);
    to_ack_.clear();
}

void Agent::on_job_finished(JobResult& r, uint64_t now) {
    if (r.id.rfind(kSysinfoJob, 0) == 0) {
        sysinfo_running_ = false;
        sysinfo_slow_at_ = 0;
        std::string error;
        bool ok = sysinfo_job_outcome(cfg_, r, error);
        on_sysinfo(ok, r.out.data, error, now);
        return;
    }
    if (r.id.rfind(kRebootJob, 0) == 0) {
        if (r.exit_status == 0 && !r.timed_out) {
            log::info("reboot command finished", {{"exit_status", json::Value(r.exit_status)}});
            return;
        }
        // Not rebooting after all: the next script that exits 113 tries
        // again (the original agent exited, to be restarted, for the same).
        rebooted_ = false;
        log::error("the reboot command failed; a later exit 113 runs it again",
                   {{"command", field(cfg_.reboot_cmd)},
                    {"exit_status", json::Value(r.exit_status)},
                    {"stderr", field(r.err.data.substr(0, 1000))}});
        return;
    }
    auto it = running_.find(r.id);
    if (it == running_.end()) return;
    Running run = std::move(it->second);
    running_.erase(it);

    ExecuteOutcome o;
    o.exit_status = r.exit_status;
    bool reboot = r.exit_status == 113 && r.signal == 0;
    if (reboot) o.exit_status = 0;
    o.signal = r.signal;
    o.timed_out = r.timed_out;
    o.out = {r.out.data, r.out.total, r.out.truncated, r.out.escaped};
    o.err = {r.err.data, r.err.total, r.err.truncated, r.err.escaped};
    o.duration_ms = r.duration_ms;
    if (!r.start_error.empty())  // the node's trouble (no fds, no processes, a full disk), not the request's
        log::error("cannot start a script", {{"req_id", field(run.req_id)}, {"error", field(r.start_error)}});
    log::info("execute finished",
              {{"req_id", field(run.req_id)}, {"exit_status", json::Value(r.exit_status)},
               {"duration_ms", json::Value(int64_t(r.duration_ms))},
               {"stdout_bytes", json::Value(int64_t(r.out.total))},
               {"stderr_bytes", json::Value(int64_t(r.err.total))},
               {"timed_out", json::Value(r.timed_out)}});
    if (r.unkillable)
        log::error("script did not end after SIGKILL (stuck in the kernel: a hung NFS or FUSE "
                   "mount?); replied without its exit status, it is reaped if it ever ends",
                   {{"req_id", field(run.req_id)}, {"script_pid", json::Value(int64_t(r.pid))}});
    if (r.pipes_abandoned)
        log::warn("script exited but a background process still holds its output; replied "
                  "without waiting for it (it is left running, its output pipes closed: its "
                  "next write to them fails, or kills it with SIGPIPE)",
                  {{"req_id", field(run.req_id)}});
    OutMessage m;
    m.routing_key = run.reply_key;
    m.cuttable = true;
    if (r.out.escaped) {
        o.out.data = {};  // the capture becomes the body
        m.body = execute_reply_body(o, std::move(r.out.data));
    } else {
        m.body = execute_reply_body(o);
    }
    memory::note_buffer(m.body.size());
    // Free the captured streams (o only views them) before enqueue()
    // frames the body for the socket: the peak is then two copies of the
    // output (body + frames), not three.
    o.out.data = o.err.data = {};
    std::string().swap(r.out.data);
    std::string().swap(r.err.data);
    m.req_id = run.req_id;
    m.journal_key = run.journal_key;
    m.reboot_after = reboot;
    m.whole = true;
    if (reboot && !reboot_pending_ && !rebooted_) {
        log::info("script exited 113: rebooting once the reply is confirmed",
                  {{"req_id", field(run.req_id)}});
        reboot_pending_ = true;
        reboot_at_ = UINT64_MAX;  // its grace starts when the reply leaves held_
    } else if (reboot) {
        log::info(reboot_pending_ ? "script exited 113: a reboot is already pending"
                                  : "script exited 113: the reboot command was started already "
                                    "(a later 113 starts it again only if it fails)",
                  {{"req_id", field(run.req_id)}});
    }
    // Through held_, in order: its slot stays taken until there is room, so
    // replies waiting for the broker's confirms hold scripts back instead
    // of losing output.
    held_.push_back(std::move(m));
    release_held(now);
    if (!held_.empty())
        log::debug("reply waits for room among the replies not yet confirmed",
                   {{"req_id", field(run.req_id)}, {"held", json::Value(int64_t(held_.size()))},
                    {"unsent_bytes", json::Value(int64_t(outbox_.unpublished_bytes()))}});
}

// Replies of finished scripts go from held_ to the outbox, oldest first,
// while they fit in its room (or it is empty), each giving up its slot.
void Agent::release_held(uint64_t now) {
    while (!held_.empty() && (held_.front().body.size() <= outbox_.room() || outbox_.empty())) {
        OutMessage m = std::move(held_.front());
        held_.pop_front();
        --request_jobs_;
        if (m.reboot_after && reboot_pending_) reboot_at_ = now + kRebootGraceMs;
        enqueue(std::move(m), now);
    }
}

void Agent::enqueue(OutMessage m, uint64_t now) {
    m.queued_ms = now;
    // Past --max-pending-bytes of replies not yet sent (the broker away or
    // blocking publishes; what is in flight does not count), replies give
    // up output rather than their place: every request still gets its exit
    // status.  Only when replies cut to kMinCutReply fill the bound are the
    // oldest dropped.
    if (m.body.size() > outbox_.room()) {  // (the cutter is built only when needed)
        auto cut = [&](const OutMessage& which, uint64_t limit) {
            return cut_reply(which, limit, FitReason::PendingBound);
        };
        outbox_.cut_to_fit(m, kMinCutReply, cut);
    }
    std::vector<OutMessage> dropped;
    outbox_.push(std::move(m), dropped);
    for (const auto& d : dropped) {
        log::error("dropping an undelivered reply: pending replies exceed --max-pending-bytes",
                   {{"req_id", field(d.req_id)}, {"routing_key", field(d.routing_key)},
                    {"bytes", json::Value(int64_t(d.body.size()))}});
        journal_.remove(d.journal_key);
    }
    // Published once per loop pass (and before any ack: flush_acks()),
    // not here: each publish_outbox() walks the outbox, and a broker that
    // ignores our prefetch can make a pass queue thousands of answers.
    publish_due_ = true;
}

void Agent::publish_outbox(uint64_t now) {
    publish_due_ = false;
    if (!conn_ || !pub_ready_ || blocked_) return;
    for (Outbox::Ref m : outbox_.unpublished(now)) {
        if (!outbox_.may_publish()) break;  // the rest waits for confirms
        if (broker_max_message_ && m->body.size() > broker_max_message_) {
            if (!m->cuttable) {
                // Sysinfo, a start-up announcement: not a reply whose
                // output can go, and never sendable as it is.
                give_up(outbox_.take(m), "it is larger than the broker takes (" +
                                             std::to_string(broker_max_message_) + " bytes)",
                        now);
                continue;
            }
            outbox_.replace_body(m, cut_reply(*m, broker_max_message_, FitReason::BrokerMax));
        }
        uint64_t seq = conn_->basic_publish(pub_ch_, "amq.topic", m->routing_key,
                                            json_properties(), m->body.shared());
        if (log::enabled(log::Level::Debug))  // spares building the fields per reply
            log::debug("published", {{"routing_key", field(m->routing_key)},
                                     {"bytes", json::Value(int64_t(m->body.size()))},
                                     {"seq", json::Value(int64_t(seq))}});
        outbox_.mark_published(m, seq);
    }
}

// m's body made to fit in `limit` bytes (fit_reply), and a log line saying so.
std::string Agent::cut_reply(const OutMessage& m, uint64_t limit, FitReason why) {
    std::string fit = fit_reply(*m.body.shared(), limit, why);
    log::warn(why == FitReason::BrokerMax
                  ? "reply larger than the broker takes; output cut to fit"
                  : "replies waiting for the broker fill --max-pending-bytes; output cut",
              {{"req_id", field(m.req_id)}, {"routing_key", field(m.routing_key)},
               {"bytes", json::Value(int64_t(m.body.size()))},
               {"now_bytes", json::Value(int64_t(fit.size()))},
               {"unsent_bytes", json::Value(int64_t(outbox_.unpublished_bytes()))}});
    return fit;
}

// A message that will not be sent (again): said at error, and its reply
// no longer owed (the journal entry goes; a reboot waiting for it runs).
void Agent::give_up(const OutMessage& m, const std::string& why, uint64_t now) {
    // Replies to pings and discovers carry no request id of ours: their
    // routing key says whose they were.
    if (m.req_id.empty())
        log::error("message given up, not sent again: " + why,
                   {{"routing_key", field(m.routing_key)},
                    {"bytes", json::Value(int64_t(m.body.size()))}});
    else
        log::error("message given up, not sent again: " + why,
                   {{"req_id", field(m.req_id)}, {"routing_key", field(m.routing_key)},
                    {"bytes", json::Value(int64_t(m.body.size()))}});
    journal_.remove(m.journal_key);
    if (m.reboot_after && reboot_pending_) reboot(now);
}

void Agent::on_confirmed(std::vector<OutMessage> done, uint64_t now) {
    if (!done.empty()) pub_backoff_.reset();
    for (auto& m : done) {
        journal_.remove(m.journal_key);
        if (!m.req_id.empty() && log::enabled(log::Level::Debug))
            log::debug("reply confirmed", {{"req_id", field(m.req_id)},
                                           {"routing_key", field(m.routing_key)}});
        if (m.reboot_after && reboot_pending_) reboot(now);
    }
}

// ---------------------------------------------------------------- sysinfo

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

void Agent::on_sysinfo(bool ok, const std::string& text, const std::string& read_error, uint64_t now) {
    sysinfo_slow_said_ = false;
    json::Value v;
    Identity id;
    std::string error = read_error;
    if (ok && !parse_sysinfo(text, v, id, error)) ok = false;
    std::vector<SysinfoWaiter> waiters;
    waiters.swap(sysinfo_waiters_);
    if (!ok) {
        // A discover expects a sysinfo object (urclient reads its UUID and
        // Hostname): answer with the one read last rather than an error.
        if (have_identity_) {
            std::string last = json::write(sysinfo_);
            for (const auto& w : waiters)
                if (w.why == SysinfoWaiter::Why::Broadcast) answer_broadcast(w, last, now);
        }
        if (!have_identity_) {
            uint64_t delay = sysinfo_backoff_.next(random32());
            sysinfo_retry_at_ = now + delay;
            log::error("cannot read sysinfo; this node cannot take part until it can",
                       {{"error", field(error)}, {"source", field(sysinfo_source(cfg_))},
                        {"retry_in_ms", json::Value(int64_t(delay))}});
        } else {
            log::error("cannot read sysinfo", {{"error", field(error)},
                                               {"source", field(sysinfo_source(cfg_))}});
        }
        return;
    }
    if (!have_identity_) {
        have_identity_ = true;
        id_ = id;
        sysinfo_backoff_.reset();
        log::info("node identity", {{"uuid", field(id_.uuid)}, {"admin_mac", field(id_.mac)},
                                    {"node_hostname", field(id_.hostname)}});
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
    m.keep = false;
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

// ---------------------------------------------------------------- reboot, shutdown

void Agent::reboot(uint64_t now) {
    reboot_pending_ = false;
    if (rebooted_) return;
    rebooted_ = true;
    log::info("running the reboot command", {{"command", field(cfg_.reboot_cmd)}});
    JobSpec spec;
    spec.id = std::string(kRebootJob) + std::to_string(++job_counter_);
    spec.kind = JobSpec::Kind::File;
    spec.script = "/bin/sh";
    spec.args = {"-c", cfg_.reboot_cmd};
    spec.timeout_ms = 0;
    sup_.start(std::move(spec), now);
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
    answer_queued("the agent is shutting down", now);
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
    if (replies_left && !closing_)
        log::error("exiting with undelivered replies; the journal answers the requests among "
                   "them on restart (every execute request is journaled from its receipt)",
                   {{"pending_replies", json::Value(int64_t(outbox_.size() + held_.size()))},
                    {"journal", json::Value(journal_.is_open())}});
    if (conn_ && conn_->is_open() && !closing_) {
        closing_ = true;
        conn_->close(200, "ur-agent shutting down");
        return;
    }
    if (!conn_ || conn_->is_closed() || out_of_time || link_ != Link::Open) done_ = true;
}

}  // namespace ur
