#include "src/supervisor.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "json/json.hpp"
#include "src/spawn.hpp"
#include "src/work_dir.hpp"

namespace ur {

namespace {

constexpr size_t kReadChunk = 64 * 1024;
// Reads per fd per handle() call: bounds the time one chatty child can hold
// the loop (poll() is level-triggered, the rest is read on the next pass).
constexpr int kReadsPerPass = 16;
constexpr uint64_t kNever = UINT64_MAX;

enum class JobState { Starting, Running, Exited, Draining, Done };

void close_fd(int& fd) {
    if (fd >= 0)
        ::close(fd);
    fd = -1;
}

uint64_t add_ms(uint64_t now, uint64_t delta) {
    return delta > kNever - now ? kNever : now + delta;
}

// Whether a process other than `pgid` itself, and not a zombie, is in
// process group `pgid`.  Linux reads /proc (the leader is a zombie then:
// killpg(pgid, 0) would succeed for it alone); elsewhere the answer is
// yes, which costs only the leader's zombie kept a few seconds longer.
// A member /proc does not show (hidepid) or shows as a zombie while its
// threads run is missed: its group then gets no SIGKILL, as before.
bool group_lives_on(pid_t pgid) {
#ifdef __linux__
    DIR* d = ::opendir("/proc");
    if (!d)
        return true;
    bool found = false;
    char buf[512];
    while (struct dirent* e = ::readdir(d)) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9')
            continue;
        std::string path = std::string("/proc/") + e->d_name + "/stat";
        int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        ssize_t n = ::read(fd, buf, sizeof buf - 1);
        ::close(fd);
        if (n <= 0)
            continue;
        buf[n] = '\0';
        // "pid (comm) state ppid pgrp ...": comm may hold spaces and ')'.
        const char* close = std::strrchr(buf, ')');
        char state = 0;
        long ppid = 0, pgrp = 0;
        if (!close || std::sscanf(close + 1, " %c %ld %ld", &state, &ppid, &pgrp) != 3)
            continue;
        if (pgrp == pgid && std::atol(e->d_name) != pgid && state != 'Z' && state != 'X') {
            found = true;
            break;
        }
    }
    ::closedir(d);
    return found;
#else
    (void)pgid;
    return true;
#endif
}

// waitpid(pid, WNOHANG), again on EINTR.
pid_t wait_nohang(pid_t pid, int& status) {
    pid_t r;
    do {
        r = ::waitpid(pid, &status, WNOHANG);
    } while (r < 0 && errno == EINTR);
    return r;
}

// How a job's program is named in messages: a Script's file name is ours
// and means nothing to the requester.
std::string display_name(const JobSpec& spec) {
    return spec.kind == JobSpec::Kind::Script ? "the script" : spec.script;
}

}  // namespace

bool noexec_mount(const std::string& dir) {
#ifdef ST_NOEXEC
    struct statvfs vfs;
    return ::statvfs(dir.c_str(), &vfs) == 0 && (vfs.f_flag & ST_NOEXEC) != 0;
#else
    (void)dir;  // illumos reports noexec in its mount table only
    return false;
#endif
}

namespace {

// "2 s", "0.5 s": a timeout as a request gives it.
std::string seconds_text(uint64_t ms) {
    std::string out = std::to_string(ms / 1000);
    if (ms % 1000) {
        char frac[8];
        std::snprintf(frac, sizeof frac, ".%03u", unsigned(ms % 1000));
        std::string f = frac;
        while (f.back() == '0') f.pop_back();
        out += f;
    }
    return out + " s";
}

// `s` in double quotes as JSON writes it, cut to `max` bytes, for a message.
std::string quote(std::string_view s, size_t max) {
    return json::write(json::Value(json::string_from_bytes(json::shortened(s, max))));
}

// A failure to make a child that passes by itself: the process limit
// (fork's EAGAIN), memory, file descriptors (of the agent or the system).
bool resource_shortage(int err) {
    return err == EAGAIN || err == ENOMEM || err == EMFILE || err == ENFILE;
}

}  // namespace

struct Supervisor::Job {
    Job(JobSpec s, const SupervisorOptions& opt)
        : spec(std::move(s)),
          out(spec.max_output, opt.tail_keep, encoding(spec)),
          err(spec.max_output, opt.tail_keep, encoding(spec)) {}

    static OutputCapture::Encoding encoding(const JobSpec& spec) {
        return spec.json_output ? OutputCapture::Encoding::JsonEscaped
                                : OutputCapture::Encoding::Raw;
    }

    JobSpec spec;
    JobState state = JobState::Starting;
    std::string exe;            // path given to execve
    std::string script_path;    // Script jobs: our file, removed once the child exited
    pid_t pid = -1;             // also the process-group id (setsid)
    int out_fd = -1, err_fd = -1, exec_fd = -1;
    OutputCapture out, err;

    ChildMemoryPtr child_memory;  // Share: until exec is done (exec_fd EOF) or reaped
    unsigned char exec_buf[sizeof(int)] = {};
    size_t exec_len = 0;
    int exec_errno = 0;         // set when the child reported a failed exec

    uint64_t started_ms = 0;
    uint64_t exited_ms = 0;
    uint64_t timeout_at = kNever;
    uint64_t kill_at = kNever;  // SIGKILL the group then (after a SIGTERM)
    uint64_t grace_at = kNever; // Draining: give up on the pipes then
    uint64_t abandon_at = kNever; // SIGKILL sent and not reaped: answer without it then

    bool reaped = false;
    bool status_lost = false;   // someone else reaped our child (ECHILD)
    int wait_status = 0;
    bool timed_out = false;
    bool overflowed = false;    // stopped for printing past its cap (JobSpec::stop_past_cap)
    bool signalled = false;     // we sent a signal to the group
    int signal_sent = 0;        // SIGTERM or SIGKILL sent before it was reaped (SIGKILL wins)
    bool killed = false;        // ... and it was SIGKILL
    bool abandoned = false;     // SIGKILL did not end it; answered without its status

    bool pipes_open() const { return out_fd >= 0 || err_fd >= 0; }
    // Its process group may still have members to signal.  After the
    // leader was reaped its pid is kept from reuse only while the group
    // has members; pipes still open are no proof of that (a setsid()
    // descendant may hold them), and an empty group's number may already
    // be another's: members must be seen in it.
    bool group_may_live() const { return !reaped || (pipes_open() && group_lives_on(pid)); }
};

// The read buffer is left uninitialised: zeroing it would make all 64 KiB
// resident in an agent that may never run a script (about a third of its
// idle anonymous memory).
Supervisor::Supervisor(SupervisorOptions opt)
    : opt_(std::move(opt)), buf_(new char[kReadChunk]) {}

Supervisor::~Supervisor() {
    for (auto& jp : jobs_) {
        Job& job = *jp;
        // Left running, its pipes closed, and not waited for: init reaps it.
        const bool leave = job.spec.outlives_agent && !job.reaped;
        if (!leave) {
            if (!job.reaped)
                ::kill(job.pid, SIGKILL);  // see signal_group()
            if (job.group_may_live())
                ::killpg(job.pid, SIGKILL);
        }
        close_fd(job.out_fd);
        close_fd(job.err_fd);
        close_fd(job.exec_fd);
        if (leave)
            continue;
        if (!job.script_path.empty())
            work_dir_.remove_script(job.script_path);
        if (!job.reaped)
            orphans_.push_back({job.pid, std::move(job.child_memory)});
    }
    kill_pinned(kNever);
    // SIGKILL is prompt, except for a process stuck in the kernel (see
    // abandon()): wait for the children a little, not forever.
    for (int i = 0; i < 100 && !orphans_.empty(); ++i) {
        reap_orphans();
        if (!orphans_.empty())
            ::usleep(10 * 1000);
    }
    // One still there may yet read its memory (stuck in an exec): leaked.
    for (Orphan& o : orphans_)
        (void)o.memory.release();
}

bool Supervisor::init(std::string& error) {
    return work_dir_.prepare(opt_.work_dir, error);
}

bool Supervisor::start(JobSpec spec, uint64_t now_ms) {
    return launch(spec, now_ms, nullptr) == Start::Started;
}

Supervisor::Start Supervisor::try_start(JobSpec& spec, uint64_t now_ms, std::string& why) {
    return launch(spec, now_ms, &why);
}

Supervisor::Start Supervisor::launch(JobSpec& spec, uint64_t now_ms, std::string* short_why) {
    for (const auto& jp : jobs_)
        if (jp->spec.id == spec.id)
            return Start::DuplicateId;
    auto job = std::make_unique<Job>(std::move(spec), opt_);
    job->started_ms = now_ms;

    // A job that cannot even be started is finished at once, with the
    // reason on its stderr.
    auto not_started = [&](int status, const std::string& why) {
        JobResult r;
        r.id = job->spec.id;
        r.exit_status = status;
        r.start_error = why;
        std::string msg = "ur-agent: " + why + "\n";
        r.err.escaped = job->spec.json_output;
        append_note(r.err, msg);
        r.err.total = msg.size();
        finished_.push_back(std::move(r));
        return Start::Started;
    };
    // Short of a resource that comes back (try_start only): the spec goes
    // back to the caller as it came.
    auto give_back = [&](const std::string& why) {
        *short_why = why;
        spec = std::move(job->spec);
        return Start::Short;
    };

    std::string error;
    if (job->spec.kind == JobSpec::Kind::Script) {
        // Scripts go only into the directory init() checked, checked again
        // at each script (WorkDir): in one that is not ours the file could
        // be swapped before it runs.  One not usable at start-up, or
        // removed since (a script cleaning up after itself, a /tmp
        // cleaner), is made again here, so that fixing it (a read-only or
        // full file system) needs no restart.
        if (!work_dir_.write_script(job->spec.script, job->script_path, error)) {
            if (short_why && resource_shortage(work_dir_.create_errno()))
                return give_back(error);
            return not_started(126, "cannot write the script: " + error);
        }
        job->exe = job->script_path;
    } else {
        job->exe = job->spec.script;
    }
    // Share where there is one: it never waits for the exec.  Otherwise
    // Borrow only when exec cannot wait on a network or FUSE mount: our
    // script file is in the work dir, its interpreter in the system
    // directories.  A `file` (any path) or another interpreter is forked,
    // so that a hung mount blocks that job, not the agent.
    SpawnMode mode = share_supported() ? SpawnMode::Share
                     : job->spec.kind == JobSpec::Kind::Script && interpreter_is_system(job->spec.script)
                         ? SpawnMode::Borrow
                         : SpawnMode::Copy;
    SpawnedChild child;
    int err = 0;
    // A #! script whose interpreter the kernel cannot run is not shell.
    bool sh_fallback = job->spec.kind != JobSpec::Kind::Script ||
                       job->spec.script.compare(0, 2, "#!") != 0;
    if (!spawn(job->exe, job->spec.args, job->spec.env, mode, child, err, error, sh_fallback)) {
        if (!job->script_path.empty())
            work_dir_.remove_script(job->script_path);
        if (short_why && resource_shortage(err))
            return give_back(error);
        std::string why = "cannot start " + display_name(job->spec) + ": " + error;
        if (job->spec.retried_ms > 0)
            why += " (the shortage has lasted " + std::to_string(job->spec.retried_ms / 1000) + " s)";
        return not_started(126, why);
    }
    // The child has what it needs: a big script's text or arguments need
    // not stay in memory while it runs.  Kept: the #! line and a searched
    // program's environment, for an exec failure's message (complete()).
    if (job->spec.kind == JobSpec::Kind::Script) {
        size_t line = std::min<size_t>(job->spec.script.find('\n'), 64 * 1024);
        if (line < job->spec.script.size()) std::string(job->spec.script, 0, line).swap(job->spec.script);
    }
    std::vector<std::string>().swap(job->spec.args);
    if (!searched(job->exe)) job->spec.env.reset();
    job->pid = child.pid;
    job->out_fd = child.out_fd;
    job->err_fd = child.err_fd;
    job->exec_fd = child.exec_fd;
    job->exec_errno = child.exec_errno;
    job->child_memory = std::move(child.memory);
    // After vfork() spawn() knows the outcome of exec already and there is
    // no pipe.  Otherwise this usually finds nothing yet (EAGAIN) and the
    // loop reads the report later.
    read_exec_status(*job);
    if (job->spec.timeout_ms > 0)
        job->timeout_at = add_ms(now_ms, job->spec.timeout_ms);
    jobs_.push_back(std::move(job));
    return Start::Started;
}

void Supervisor::add_pollfds(std::vector<pollfd>& fds) const {
    for (const auto& jp : jobs_) {
        for (int fd : {jp->out_fd, jp->err_fd, jp->exec_fd})
            if (fd >= 0)
                fds.push_back(pollfd{fd, POLLIN, 0});
    }
}

void Supervisor::handle(const std::vector<pollfd>& fds, uint64_t now_ms) {
    for (const pollfd& p : fds) {
        if (p.fd < 0 || p.revents == 0)
            continue;
        for (auto& jp : jobs_) {
            Job& job = *jp;
            if (job.state == JobState::Done)
                continue;
            if (p.fd == job.out_fd) {
                read_stream(job.out_fd, job.out);
            } else if (p.fd == job.err_fd) {
                read_stream(job.err_fd, job.err);
            } else if (p.fd == job.exec_fd) {
                read_exec_status(job);
                break;
            } else {
                continue;
            }
            if (job.spec.stop_past_cap && !job.overflowed && !job.reaped &&
                std::max(job.out.total(), job.err.total()) > job.spec.max_output) {
                // Output it cannot use: end it now, not at its timeout.
                job.overflowed = true;
                signal_group(job, SIGTERM);
                job.kill_at = std::min(job.kill_at, add_ms(now_ms, opt_.kill_grace_ms));
            }
            finish_if_complete(job, now_ms);
            break;
        }
    }
    remove_done();
}

// Reads what the pipe holds (up to kReadsPerPass chunks).  At EOF, or on a
// read error, closes the fd and sets it to -1.  The fd is non-blocking, so
// a stale pollfd entry costs one EAGAIN.  A stream that passes one
// buffer's worth is from a chatty child: its pipe is widened then, as it
// crosses, not at spawn, so that the many scripts that print little do not
// pay for a big pipe (its allocation and release were a visible part of a
// trivial request's cost).
void Supervisor::read_stream(int& fd, OutputCapture& cap) {
    for (int i = 0; i < kReadsPerPass && fd >= 0; ++i) {
        ssize_t n = ::read(fd, buf_.get(), kReadChunk);
        if (n > 0) {
            uint64_t before = cap.total();
            cap.append(buf_.get(), static_cast<size_t>(n));
            if (before < kReadChunk && cap.total() >= kReadChunk)
                widen_pipe(fd);
            if (static_cast<size_t>(n) < kReadChunk)
                return;  // drained for now
        } else if (n == 0) {
            close_fd(fd);
        } else if (errno == EINTR) {
            continue;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return;
        } else {
            close_fd(fd);  // EIO and the like: nothing more will come
        }
    }
}

// The exec-status pipe: EOF alone means exec succeeded; sizeof(int) bytes
// first are the errno of a failed exec.  At EOF the child is past its
// exec (or gone): a Share child's memory is free then.  After an errno it
// is still on its way to _exit(): its memory goes when it is reaped.
void Supervisor::read_exec_status(Job& job) {
    while (job.exec_fd >= 0) {
        ssize_t n = ::read(job.exec_fd, job.exec_buf + job.exec_len,
                           sizeof job.exec_buf - job.exec_len);
        if (n > 0) {
            job.exec_len += static_cast<size_t>(n);
            if (job.exec_len == sizeof job.exec_buf) {
                std::memcpy(&job.exec_errno, job.exec_buf, sizeof job.exec_errno);
                if (job.exec_errno == 0)
                    job.exec_errno = EINVAL;  // a failure with no reason is still a failure
                close_fd(job.exec_fd);
            }
        } else if (n == 0) {
            close_fd(job.exec_fd);
            job.child_memory.reset();
        } else if (errno == EINTR) {
            continue;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return;
        } else {
            close_fd(job.exec_fd);
        }
    }
    if (job.state == JobState::Starting)
        job.state = JobState::Running;
}

void Supervisor::reap_orphans() {
    orphans_.erase(std::remove_if(orphans_.begin(), orphans_.end(),
                                  [](const Orphan& o) {
                                      int st;
                                      // reaped, or not ours any more
                                      return wait_nohang(o.pid, st) != 0;
                                  }),
                   orphans_.end());
}

int wait_status_of(const siginfo_t& si) {
    // The encoding every Unix uses: exit code in bits 8-15; signal in bits
    // 0-6, 0x80 for a core dump.
    switch (si.si_code) {
    case CLD_EXITED: return (si.si_status & 0xff) << 8;
    case CLD_DUMPED: return (si.si_status & 0x7f) | 0x80;
    default: return si.si_status & 0x7f;
    }
}

void Supervisor::reap(uint64_t now_ms) {
    if (!orphans_.empty())
        reap_orphans();
    for (auto& jp : jobs_) {
        Job& job = *jp;
        if (job.reaped)
            continue;
        if (job.signalled && !job.killed && job.kill_at != kNever) {
            // Stopped by SIGTERM, SIGKILL still to come: the leader that
            // has exited is looked at, not reaped, so that its group can
            // still be told from others when the SIGKILL is due.
            siginfo_t si;
            std::memset(&si, 0, sizeof si);
            int w;
            do {
                w = ::waitid(P_PID, id_t(job.pid), &si, WEXITED | WNOHANG | WNOWAIT);
            } while (w < 0 && errno == EINTR);
            if (w == 0 && si.si_pid == 0)
                continue;  // still running
            if (w == 0 && group_lives_on(job.pid)) {
                if (!reap_strays_) {
                    pinned_.push_back({job.pid, job.kill_at});
                    reaped(job, wait_status_of(si), false, now_ms);
                    continue;
                }
                // As process 1, reap_strays() would take the zombie: what
                // is left of the group gets its SIGKILL now.
                ::killpg(job.pid, SIGKILL);
            }
        }
        int st = 0;
        pid_t r = wait_nohang(job.pid, st);
        if (r == 0)
            continue;
        // ECHILD: reaped behind our back
        reaped(job, st, r < 0, now_ms);
    }
    if (reap_strays_)
        reap_strays(now_ms);
    remove_done();
}

void Supervisor::reaped(Job& job, int status, bool lost, uint64_t now_ms) {
    job.status_lost = lost;
    job.reaped = true;
    job.wait_status = status;
    job.exited_ms = now_ms;
    // The child is gone, so its end of the exec-status pipe is closed
    // and the whole report is readable now; its memory is free.
    read_exec_status(job);
    job.child_memory.reset();
    job.state = JobState::Exited;
    if (!job.script_path.empty()) {
        work_dir_.remove_script(job.script_path);
        job.script_path.clear();
    }
    finish_if_complete(job, now_ms);
}

// As process 1 (a container's init) every orphan of the system becomes
// our child: the background processes scripts leave behind, once they
// end, stay zombies (the pid table fills) unless reaped here.  A job's
// own child that ends between reap()'s look and this one gets its status.
void Supervisor::reap_strays(uint64_t now_ms) {
    for (;;) {
        int st = 0;
        pid_t r = ::waitpid(-1, &st, WNOHANG);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return;
        bool ours = false;
        for (auto& jp : jobs_) {
            if (!jp->reaped && jp->pid == r) {
                reaped(*jp, st, false, now_ms);
                ours = true;
                break;
            }
        }
        if (!ours && opt_.stray_reaped) opt_.stray_reaped(r);
        orphans_.erase(std::remove_if(orphans_.begin(), orphans_.end(),
                                      [r](const Orphan& o) { return o.pid == r; }),
                       orphans_.end());
    }
}

// Exited/Draining -> Done once both output pipes reached EOF; Exited ->
// Draining (with the pipe-grace deadline) while they have not.
void Supervisor::finish_if_complete(Job& job, uint64_t now_ms) {
    if (job.state != JobState::Exited && job.state != JobState::Draining)
        return;
    if (!job.pipes_open()) {
        complete(job, now_ms);
    } else if (job.state == JobState::Exited) {
        job.state = JobState::Draining;
        job.grace_at = add_ms(job.exited_ms, opt_.pipe_grace_ms);
    }
}

void Supervisor::complete(Job& job, uint64_t now_ms) {
    JobResult r;
    r.id = job.spec.id;
    r.pid = job.pid;
    r.timed_out = job.timed_out;
    r.unkillable = job.abandoned;
    r.pipes_abandoned = job.pipes_open() && !job.abandoned;
    if (r.pipes_abandoned && job.signalled && job.group_may_live()) {
        // A group we signalled still holds the pipes: finish it off rather
        // than leave a timed-out tree behind.
        ::killpg(job.pid, SIGKILL);
    }
    close_fd(job.out_fd);
    close_fd(job.err_fd);
    close_fd(job.exec_fd);
    r.duration_ms = now_ms >= job.started_ms ? now_ms - job.started_ms : 0;
    r.out = job.out.finish();
    r.err = job.err.finish();

    int st = job.wait_status;
    // Why the agent stopped it, said on stderr too: urclient and
    // sdc-oneachnode show exit_status and stderr, not timed_out.
    auto stopped = [&]() -> std::string {
        return job.overflowed  ? "stopped by the agent: it printed more than " +
                                    std::to_string(job.spec.max_output) + " bytes"
               : job.timed_out ? "timed out after " + seconds_text(job.spec.timeout_ms)
                               : "stopped by the agent (shutting down)";
    };
    if (job.abandoned) {
        r.exit_status = 1;
        append_note_line(r.err, "ur-agent: process " + std::to_string(job.pid) +
                                    " did not end after SIGKILL (stuck in the kernel: a hung NFS"
                                    " or FUSE mount?); its exit status is unknown");
    } else if (job.status_lost) {
        r.exit_status = 1;
        append_note_line(r.err, "ur-agent: exit status lost (the child was reaped elsewhere)");
    } else if (WIFEXITED(st) && job.signal_sent) {
        // It ended itself after our signal (a trap), at its timeout or at
        // the agent's shutdown: reported as killed, whatever it chose, so
        // that a script we stopped never reads as a success (0) nor asks
        // for a reboot (113).
        r.signal = job.signal_sent;
        r.exit_status = 128 + r.signal;
        append_note_line(r.err, "ur-agent: " + stopped() + "; it exited " +
                                    std::to_string(WEXITSTATUS(st)) + " after " +
                                    (r.signal == SIGKILL ? "SIGKILL" : "SIGTERM"));
    } else if (WIFEXITED(st)) {
        r.exit_status = WEXITSTATUS(st);
    } else if (WIFSIGNALED(st)) {
        r.signal = WTERMSIG(st);
        r.exit_status = 128 + r.signal;
        if (job.signal_sent)
            append_note_line(r.err, "ur-agent: " + stopped() + "; killed by " +
                                        (r.signal == SIGKILL   ? std::string("SIGKILL")
                                         : r.signal == SIGTERM ? std::string("SIGTERM")
                                                               : "signal " + std::to_string(r.signal)));
    } else {
        r.exit_status = 1;  // stopped/continued are not requested from waitpid
    }
    if (job.exec_errno != 0) {
        std::string name = display_name(job.spec);
        std::string why;
        struct stat sb;
        std::string_view interp = job.spec.kind == JobSpec::Kind::Script
                                      ? script_interpreter(job.spec.script)
                                      : std::string_view();
        // The interpreter as the #! line gives it, quoted, cut to 64 bytes.
        auto quoted_interp = [&] { return quote(interp, 64); };
        // EACCES is the interpreter's when it is a directory or not
        // executable; otherwise the script file's own.
        bool interp_is_dir = false;
        auto interp_unusable = [&] {
            std::string path(interp);
            interp_is_dir = ::stat(path.c_str(), &sb) == 0 && S_ISDIR(sb.st_mode);
            return interp_is_dir || ::access(path.c_str(), X_OK) != 0;
        };
        const bool empty_shebang = job.spec.kind == JobSpec::Kind::Script && interp.empty() &&
                                   job.spec.script.compare(0, 2, "#!") == 0;
        if (empty_shebang) {
            why = "its #! line names no interpreter";
        } else if (job.exec_errno == ENOEXEC) {
            why = job.spec.kind == JobSpec::Kind::Script && !interp.empty()
                      ? "its interpreter " + quoted_interp() + " is not an executable" +
                            (interp.size() + 2 > 255 ? " (a #! line is read up to 255 bytes)" : "")
                      : "not an executable, and /bin/sh could not run it";
        } else if (job.exec_errno == ENOENT && !interp.empty()) {
            // Our script file is there: what is missing is its interpreter.
            why = "its interpreter " + quoted_interp() + ": " + std::strerror(ENOENT);
            if (interp.back() == '\r') why += " (a CRLF line ending in the #! line?)";
        } else if (job.exec_errno == EACCES && job.spec.kind == JobSpec::Kind::Script &&
                   noexec_mount(work_dir_.dir())) {
            why = std::string(std::strerror(EACCES)) + ": the script directory " +
                  quote(work_dir_.dir(), 256) + " is on a file system mounted noexec (--work-dir)";
        } else if (job.exec_errno == EACCES && !interp.empty() && interp_unusable()) {
            why = "its interpreter " + quoted_interp() + ": " +
                  std::strerror(interp_is_dir ? EISDIR : EACCES);
        } else if (job.exec_errno == EACCES && job.spec.kind == JobSpec::Kind::Script) {
            // The interpreter is runnable: the script file itself may not
            // be (a noexec mount illumos does not report through statvfs,
            // a security module).
            why = std::string(std::strerror(EACCES)) +
                  " (is the script directory on a file system mounted noexec? --work-dir)";
        } else if (searched(job.exe) && (job.exec_errno == ENOENT || job.exec_errno == EACCES)) {
            // Looked up in PATH, as execvp() does (spawn()).
            why = std::string(job.exec_errno == ENOENT ? "not found"
                                                       : "found but not executable (or not reachable)") +
                  " in PATH " + quote(search_path(job.spec.env), 256);
        } else if (job.exec_errno == EACCES && ::stat(job.exe.c_str(), &sb) == 0 &&
                   S_ISDIR(sb.st_mode)) {
            why = std::strerror(EISDIR);
        } else if (job.exec_errno == ELOOP) {
            // The kernel follows #! lines only a few deep (Linux: 4) and
            // says so as it says a symlink loop.
            why = std::string(std::strerror(ELOOP)) + " (or #! interpreters that are scripts " +
                  "too, nested too deep" +
                  (interp.empty() ? std::string() : ", from " + quoted_interp()) + ")";
        } else {
            why = std::strerror(job.exec_errno);
        }
        std::string msg = "ur-agent: cannot execute " + name + ": " + why + "\n";
        append_note(r.err, msg);
        r.err.total += msg.size();
    }
    if (!job.script_path.empty()) {
        work_dir_.remove_script(job.script_path);
        job.script_path.clear();
    }
    job.state = JobState::Done;
    finished_.push_back(std::move(r));
}

// A child that SIGKILL has not ended kill_grace_ms later is stuck in the
// kernel: an exec or a read on a hung NFS or FUSE mount can wait where no
// signal reaches it.  Its job is answered now, so that neither the
// requester nor a concurrency slot waits for it forever; the pid is kept
// and reaped whenever the process does end.
void Supervisor::abandon(Job& job, uint64_t now_ms) {
    job.abandoned = true;
    job.reaped = true;
    orphans_.push_back({job.pid, std::move(job.child_memory)});
    complete(job, now_ms);
}

void Supervisor::signal_group(Job& job, int sig) {
    if (sig == SIGKILL) {
        job.killed = true;
        job.kill_at = kNever;
    }
    if (!job.group_may_live())
        return;
    // Until the child has called setsid() it is still in our process
    // group and killpg(pid) misses it; kill(pid) reaches it (it cannot have
    // children yet, and its signals stay pending until it has reset their
    // dispositions).  An unreaped pid cannot have been reused.
    if (!job.reaped) {
        ::kill(job.pid, sig);
        if (sig == SIGKILL || job.signal_sent == 0)
            job.signal_sent = sig;
    }
    ::killpg(job.pid, sig);
    // A stopped process (kill -STOP $$, a job stopped by a debugger) acts
    // on SIGTERM only once continued; without SIGCONT it would sit out the
    // whole kill grace and die of SIGKILL.
    if (sig == SIGTERM) {
        if (!job.reaped)
            ::kill(job.pid, SIGCONT);
        ::killpg(job.pid, SIGCONT);
    }
    job.signalled = true;
}

void Supervisor::kill_pinned(uint64_t now_ms) {
    pinned_.erase(std::remove_if(pinned_.begin(), pinned_.end(),
                                 [now_ms](const Pinned& p) {
                                     if (p.kill_at > now_ms)
                                         return false;
                                     ::killpg(p.pid, SIGKILL);
                                     int st;
                                     (void)wait_nohang(p.pid, st);  // a zombie: reaped
                                     return true;
                                 }),
                  pinned_.end());
}

uint64_t Supervisor::next_deadline() const {
    if (!finished_.empty())
        return 0;  // a job that could not start finished in start(): now
    uint64_t next = kNever;
    for (const Pinned& p : pinned_)
        next = std::min(next, p.kill_at);
    for (const auto& jp : jobs_) {
        const Job& job = *jp;
        if (job.state == JobState::Done)
            continue;
        if (!job.reaped && !job.timed_out)
            next = std::min(next, job.timeout_at);
        if (!job.killed)
            next = std::min(next, job.kill_at);
        if (!job.reaped)
            next = std::min(next, job.abandon_at);
        if (job.state == JobState::Draining)
            next = std::min(next, job.grace_at);
    }
    return next;
}

void Supervisor::tick(uint64_t now_ms) {
    for (auto& jp : jobs_) {
        Job& job = *jp;
        if (job.state == JobState::Done)
            continue;
        if (!job.reaped && !job.timed_out && job.timeout_at <= now_ms) {
            job.timed_out = true;
            signal_group(job, SIGTERM);
            job.kill_at = std::min(job.kill_at, add_ms(now_ms, opt_.kill_grace_ms));
        }
        if (!job.killed && job.kill_at <= now_ms)
            signal_group(job, SIGKILL);
        if (job.killed && !job.reaped) {
            if (job.abandon_at == kNever)
                job.abandon_at = add_ms(now_ms, opt_.kill_grace_ms);
            else if (job.abandon_at <= now_ms)
                abandon(job, now_ms);
        }
        if (job.state == JobState::Draining && job.grace_at <= now_ms)
            complete(job, now_ms);
    }
    // After the jobs: one still draining signals its group while the
    // pinned leader keeps the id.
    if (!pinned_.empty())
        kill_pinned(now_ms);
    remove_done();
}

std::vector<JobResult> Supervisor::take_finished() {
    std::vector<JobResult> out;
    out.swap(finished_);
    return out;
}

size_t Supervisor::running() const {
    return jobs_.size();
}

void Supervisor::terminate_all(uint64_t now_ms) {
    for (auto& jp : jobs_) {
        Job& job = *jp;
        if (job.state == JobState::Done || job.killed || job.spec.outlives_agent)
            continue;
        signal_group(job, SIGTERM);
        job.kill_at = std::min(job.kill_at, add_ms(now_ms, opt_.kill_grace_ms));
    }
}

void Supervisor::kill_all() {
    for (auto& jp : jobs_)
        if (jp->state != JobState::Done && !jp->spec.outlives_agent)
            signal_group(*jp, SIGKILL);
    kill_pinned(kNever);
}

void Supervisor::remove_done() {
    jobs_.erase(std::remove_if(jobs_.begin(), jobs_.end(),
                               [](const std::unique_ptr<Job>& j) {
                                   return j->state == JobState::Done;
                               }),
                jobs_.end());
}

}  // namespace ur
