// The process supervisor of the Ur agent: starts the scripts the headnode
// sends, captures their output under a cap, enforces timeouts, reaps them
// and produces results.  It knows nothing of AMQP or JSON; the agent's
// poll() loop drives it:
//
//     sup.add_pollfds(fds);                 // each pass, with the loop's own fds
//     poll(fds, ms_until(sup.next_deadline()));
//     sup.handle(fds, now);                 // read output
//     sup.reap(now);                        // after SIGCHLD (self-pipe) and each pass
//     sup.tick(now);                        // timeouts, kill and pipe-grace deadlines
//     for (JobResult& r : sup.take_finished()) reply(r);
//
// Children are reaped with waitpid(pid, WNOHANG) on each known child pid,
// never waitpid(-1): the agent may have other children (a sysinfo command
// run elsewhere) whose status must not be stolen.  The agent must not set
// SIGCHLD to SIG_IGN (children would vanish unreaped and their exit status
// be lost: such a job is reported with exit_status 1 and a note on stderr).
//
// Job life cycle (one explicit state per job):
//
//   Starting --exec ok/exec failed (known at spawn with vfork; status pipe otherwise)--> Running
//   Starting, Running --reaped--> Exited
//   Exited --stdout+stderr already at EOF--> Done
//   Exited --otherwise--> Draining   (pipe_grace_ms deadline armed)
//   Draining --stdout+stderr at EOF--> Done
//   Draining --pipe_grace_ms passed--> Done (read ends closed, pipes_abandoned:
//            a background grandchild still holds them; it is left running)
//   Done: result queued for take_finished(), script file removed, job forgotten.
//
// Orthogonal to the state, a job may be terminating: SIGTERM was sent to its
// process group (timeout or terminate_all()) and SIGKILL follows
// kill_grace_ms later unless the group is gone.  A job whose group was
// signalled and still holds the pipes gets a last SIGKILL to the group when
// it is Done, so that a timed-out tree does not survive in the background.
// A leader that exits after the SIGTERM while others of its group live on
// is not reaped at once (reap() looks with waitid(WNOWAIT)): its zombie
// keeps the group id from passing to another group until the SIGKILL is
// due; the job is Done meanwhile (see pinned()).  A child still not
// reaped kill_grace_ms after its SIGKILL is stuck in the kernel (a hung
// NFS or FUSE mount): its job is Done then with exit_status 1 and a note
// on stderr, and the pid is reaped whenever it ends.
//
// How children are made: clone() in our memory (SpawnMode::Share) where
// there is one, for every job; elsewhere vfork() (SpawnMode::Borrow) for a
// script whose #! interpreter is in the system directories, fork() for
// anything else (a `file`, another interpreter).  Either way an exec
// waiting on a hung mount holds only its own job, except after vfork()
// (spawn.hpp).
#pragma once

#include <poll.h>
#include <signal.h>
#include <sys/types.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "src/output_capture.hpp"
#include "src/spawn.hpp"
#include "src/work_dir.hpp"

namespace ur {

struct JobSpec {
    std::string id;                       // request id, opaque, for results/logs
    enum class Kind { Script, File } kind = Kind::Script;
    std::string script;                   // Script: text to write to a private file; File: path to execute
    std::vector<std::string> args;        // argv[1..]
    std::optional<std::vector<std::string>> env;  // "K=V" entries; present = the whole environment; absent = inherit ours
    uint64_t timeout_ms = 0;              // 0 = none
    size_t max_output = 5u << 20;         // per stream cap on bytes kept
    bool json_output = false;             // capture as JSON-escaped UTF-8 (StreamCapture::escaped)
    uint64_t retried_ms = 0;              // how long resources have been short (try_start), for the 126
    bool stop_past_cap = false;           // SIGTERM it once a stream passes max_output (sysinfo)
    // Not signalled by terminate_all() or kill_all(), nor killed when the
    // Supervisor goes: left running, its pipes closed (the reboot command).
    bool outlives_agent = false;
};

struct JobResult {
    std::string id;
    int exit_status = 0;            // exit code; 128+signo when killed; 126/127 when it could not start
    int signal = 0;                 // signo if killed by a signal, else 0
    bool timed_out = false;
    bool pipes_abandoned = false;   // replied pipe_grace_ms after exit because a grandchild still held the pipes
    bool unkillable = false;        // replied kill_grace_ms after SIGKILL: the child is stuck in the kernel
    std::string start_error;        // the agent could not start it (script file, pipe, fork): why
    StreamCapture out, err;
    uint64_t duration_ms = 0;
    pid_t pid = -1;
};

struct SupervisorOptions {
    std::string work_dir;           // private dir for script files (created 0700 by init())
    // As process 1 every orphan is reaped (waitpid(-1)): told the pid of
    // each that was not a job's, so that its owner (the name lookup's
    // child) knows it is gone.
    std::function<void(pid_t)> stray_reaped;
    uint64_t kill_grace_ms = 5000;  // SIGTERM -> SIGKILL
    uint64_t pipe_grace_ms = 2000;  // after exit, wait this long for pipe EOF
    size_t tail_keep = 64 * 1024;   // bytes of the stream's end kept when truncated
};

// Whether files in `dir` cannot be executed (a noexec mount; Linux).
bool noexec_mount(const std::string& dir);

// The status waitpid() gives for the exit waitid() reported in `si`
// (CLD_EXITED, CLD_KILLED or CLD_DUMPED), for the W* macros.
int wait_status_of(const siginfo_t& si);

class Supervisor {
public:
    explicit Supervisor(SupervisorOptions opt);
    // SIGKILLs the process groups of jobs still running, waits up to 1 s
    // for those children (SIGKILL is prompt, unless a child is stuck in the
    // kernel), closes every fd and removes script files.
    ~Supervisor();
    Supervisor(const Supervisor&) = delete;
    Supervisor& operator=(const Supervisor&) = delete;

    // Creates work_dir (mkdir 0700) or verifies it: a real directory (lstat,
    // not a symlink), owned by our euid, not group/world writable.  Removes
    // stale script files in it.  False with a reason in `error` otherwise.
    // After a successful init(), start() makes work_dir again the same way
    // if it has been removed since.
    bool init(std::string& error);
    // The directory scripts are written to (after init()).
    const std::string& work_dir() const { return work_dir_.dir(); }
    // Another work_dir, for init() to try (before any job).

    // Starts a job.  If the child cannot be started (script file, pipe or
    // fork failure, or exec failure: ENOENT -> 127, EACCES/ENOEXEC/other ->
    // 126) the result, with the reason in err.data ("ur-agent: cannot
    // execute /x/y: No such file or directory"), comes out of
    // take_finished() like any other.  Returns false only for a programming
    // error: an id already running.
    bool start(JobSpec spec, uint64_t now_ms);

    // What try_start() did with a job.
    enum class Start { Started, Short, DuplicateId };
    // Like start(), except when the child cannot be made for want of a
    // resource that comes back by itself: processes (fork's EAGAIN, the
    // process limit), memory (ENOMEM) or file descriptors (EMFILE,
    // ENFILE).  Then nothing is finished: `spec` is left with the caller
    // as it was, the reason is in `why`, and the result is Short, for the
    // caller to try again later.  `spec` is moved from otherwise.
    Start try_start(JobSpec& spec, uint64_t now_ms, std::string& why);

    // Appends this supervisor's fds (POLLIN) to `fds`.  After poll(), pass
    // the same vector to handle(): it looks only at its own entries, by fd,
    // and tolerates entries for fds it has closed since.
    void add_pollfds(std::vector<pollfd>& fds) const;
    void handle(const std::vector<pollfd>& fds, uint64_t now_ms);

    // waitpid(pid, WNOHANG) on each child not yet reaped (never -1, see
    // above; waitid(WNOWAIT) first for one whose SIGKILL is still to come).
    // Call after SIGCHLD and on each loop pass.
    void reap(uint64_t now_ms);

    // Absolute ms of the nearest timeout / kill / pipe-grace deadline,
    // UINT64_MAX if none; 0 while results wait for take_finished().
    uint64_t next_deadline() const;
    // Enforces the deadlines that have passed at now_ms.
    void tick(uint64_t now_ms);

    // Results completed since the last call, in completion order.
    std::vector<JobResult> take_finished();
    // Jobs not yet finished.
    size_t running() const;
    // Groups of finished jobs whose SIGKILL is still to come (their leader
    // kept as a zombie until then, at most kill_grace_ms): the agent waits
    // for them before it exits; the destructor kills them at once.
    size_t pinned() const { return pinned_.size(); }

    // Shutdown: SIGTERM every process group now, SIGKILL kill_grace_ms later
    // (enforced by tick()).
    void terminate_all(uint64_t now_ms);
    // SIGKILL every process group now.  Jobs still finish through reap().
    void kill_all();

    struct Job;  // private; defined in supervisor.cpp

private:
    // start() and try_start(); short_why null: no Short, a shortage is 126.
    Start launch(JobSpec& spec, uint64_t now_ms, std::string* short_why);
    void finish_if_complete(Job& job, uint64_t now_ms);
    void complete(Job& job, uint64_t now_ms);
    void read_stream(int& fd, OutputCapture& cap);
    void read_exec_status(Job& job);
    void signal_group(Job& job, int sig);
    void abandon(Job& job, uint64_t now_ms);
    void reap_orphans();
    void reaped(Job& job, int status, bool lost, uint64_t now_ms);
    void reap_strays(uint64_t now_ms);
    void remove_done();

    SupervisorOptions opt_;
    std::vector<std::unique_ptr<Job>> jobs_;
    std::vector<JobResult> finished_;
    std::unique_ptr<char[]> buf_;  // one 64 KiB read buffer shared by all jobs
    // Children of abandoned jobs, reaped when they end; a Share child's
    // memory (spawn.hpp) is kept until then.
    struct Orphan {
        pid_t pid;
        ChildMemoryPtr memory;
    };
    std::vector<Orphan> orphans_;
    // Leaders of signalled jobs that exited before the group's SIGKILL was
    // due, left unreaped until then: a zombie's pid is not reused, so its
    // process group id cannot pass to another group meanwhile.  What is
    // left of the group (a child that ignores SIGTERM) gets SIGKILL at
    // kill_at; the reply did not wait for it.
    struct Pinned {
        pid_t pid;
        uint64_t kill_at;
    };
    std::vector<Pinned> pinned_;
    // SIGKILLs the groups of pinned_ due by now_ms (all of them: kNever)
    // and reaps their leaders.
    void kill_pinned(uint64_t now_ms);
    bool reap_strays_ = ::getpid() == 1;  // process 1: every orphan is ours to reap
    WorkDir work_dir_;  // where script files go (init(); checked again at each)
};

}  // namespace ur
