// Starting one child process the way the supervisor needs it.
//
// The child gets its own session (setsid), so its process id is also its
// process-group id and killpg() reaches every process it starts; stdin from
// /dev/null; stdout and stderr on pipes whose read ends are returned
// non-blocking and close-on-exec; no other inherited fd; default signal
// dispositions and an empty signal mask (the agent ignores SIGPIPE and
// blocks signals, and none of that must leak into scripts).
//
// Whether exec succeeded: with vfork() (SpawnMode::Borrow) spawn() returns
// only once the child has exec'd or failed to, and the child leaves the
// errno of a failed exec in the parent's memory, so spawn() returns the
// outcome itself (exec_errno; exec_fd is -1).  Otherwise (Share, Copy) it
// is reported through a third pipe, close-on-exec in the child: EOF when
// exec succeeds, or the child's errno (sizeof(int) bytes) when it fails.
// Either way a child whose exec failed _exit()s with
// exec_failure_status(errno).  spawn() never waits for the child to
// finish.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ur {

// One past the highest signal number.
#ifdef NSIG
inline constexpr int kSignalCount = NSIG;
#else
inline constexpr int kSignalCount = 65;
#endif

// What a child made with SpawnMode::Share reads in our memory until it
// has exec'd or exited: its program's path, argv, envp and its stack.
// Freed only once the child is past that point: its exec-status pipe at
// EOF (exec done; a failure is followed by _exit, so wait for that), or
// the child reaped.  A child that never ends keeps it: leaked, not freed.
struct ChildMemory;
struct ChildMemoryFree {
    void operator()(ChildMemory* m) const;
};
using ChildMemoryPtr = std::unique_ptr<ChildMemory, ChildMemoryFree>;

struct SpawnedChild {
    pid_t pid = -1;
    int out_fd = -1;    // read end of the child's stdout
    int err_fd = -1;    // read end of the child's stderr
    int exec_fd = -1;   // read end of the exec-status pipe (Share, Copy; see above)
    int exec_errno = 0; // vfork(): errno of the failed exec, 0 when it succeeded
    ChildMemoryPtr memory; // Share: see ChildMemory; null otherwise
};

// How the child is made.
// - Share (clone(CLONE_VM) without CLONE_VFORK; Linux on x86-64 and arm64):
//   the child runs in our memory on a stack of its own until it execs,
//   and the caller goes on at once: no page-table copy, no copy-on-write
//   faults afterwards, and no wait for the kernel to load the program (a
//   wait that, under load, was most of the agent's time: the queue of
//   requests stalled behind it).  An exec that blocks on a hung mount
//   blocks only the child.  The child makes its system calls itself, not
//   through libc, which would set our thread's errno.  Elsewhere, and
//   once such a clone() has been refused (qemu's user mode, a seccomp
//   filter), Share is Copy.
// - Borrow (vfork(), where there is one): no copy either, but the caller
//   is suspended until the kernel has read the program and its #!
//   interpreter: a program on a hung NFS or FUSE mount would stop the
//   agent with it, in a wait no signal can end.
// - Copy (fork()): costs the caller about twice the CPU and returns at
//   once; an exec that blocks then blocks only the child.
enum class SpawnMode { Borrow, Copy, Share };
// Whether Share is more than Copy here.
bool share_supported();

// Whether a script may be started with SpawnMode::Borrow: its `#!` line
// names an absolute interpreter in the system directories (/bin, /sbin,
// /usr except /usr/local), which live on the node's own root or boot
// image, never on a network or FUSE mount.  False for no `#!` line, a
// relative path or one with a "." or ".." component.
bool interpreter_is_system(std::string_view script);
// The interpreter a script's `#!` line names, as the kernel reads it (up to
// a blank, newline or NUL; a CR stays part of it); empty without one.
std::string_view script_interpreter(std::string_view script);

// The search path for a program named without a `/`: PATH from `env`
// when given (the child's whole environment), else from ours; without
// one, kDefaultSearchPath.
constexpr char kDefaultSearchPath[] = "/usr/bin:/bin:/usr/sbin:/sbin";
std::string search_path(const std::optional<std::vector<std::string>>& env);
// Whether `file` is looked up in the search path: not empty, no `/`.
bool searched(const std::string& file);
// One step of that search, as execvp() goes: the next DIR/file from the
// PATH string at `cursor` (advanced; null once used up) written into
// `buf` (NUL-ended); false when there is none left.  An empty entry is the
// working directory (./file); one that would not fit in `cap` bytes is
// passed over.  Async-signal-safe and allocation-free: the child runs it,
// so a search path of any length costs the agent nothing.
constexpr size_t kCandidateMax = 4096;
bool next_exec_candidate(const char*& cursor, const char* file, size_t file_len, char* buf,
                         size_t cap);
// Everything the search would try for `file` under `path`, in order
// (`file` alone when it is not searched).
std::vector<std::string> exec_candidates(const std::string& file, const std::string& path);

// Forks and executes `path` with argv = {path, args...}.  `env` present:
// exactly that environment; absent: ours.  A `path` without a `/` is
// looked up as execvp() does (next_exec_candidate() over
// search_path(env), in the child, so that a hung directory on the way
// holds only the child): entries where it is missing are passed over;
// EACCES from any of them is the result when none runs.  A file the kernel cannot execute
// (ENOEXEC: no #! line) is run by /bin/sh as execvp() does, unless
// `sh_fallback` is false (a script that has a #! line whose interpreter is
// what failed: its text is not shell).
// Returns false (no child, no fd left open) with errno-based reason in
// `error` and the errno in `err` if a pipe, /dev/null, memory or fork
// failed.
bool spawn(const std::string& path, const std::vector<std::string>& args,
           const std::optional<std::vector<std::string>>& env, SpawnMode mode,
           SpawnedChild& child, int& err, std::string& error, bool sh_fallback = true);

// A chatty child's pipe: lets it write up to 1 MiB ahead while the agent
// is busy elsewhere instead of blocking on a full 64 KiB pipe.  Linux
// only, best effort (the kernel may refuse: fs.pipe-max-size, per-user
// pipe limits); elsewhere a no-op.
void widen_pipe(int fd);

// Which signal dispositions a child has reset to SIG_DFL before exec.  By
// default every signal: about 65 system calls in the child, all before
// its exec (inside the window in which vfork() holds the caller).  A process that sets its
// dispositions only at start-up calls remember_signal_dispositions() after
// the last change: from then on only the signals whose disposition was not
// SIG_DFL at that moment are reset (plus the ones the C library will not
// report, such as glibc's reserved 32 and 33).  A disposition changed
// later is not seen: forget_signal_dispositions() returns to resetting all.
// Neither may be called while a Share child may still be before its exec
// (it reads the list).
void remember_signal_dispositions();
void forget_signal_dispositions();

// The exit status a shell would give for a command that cannot be executed
// because of `err`: 127 when it was not found, 126 otherwise.
int exec_failure_status(int err);

}  // namespace ur
