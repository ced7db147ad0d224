// Starting one child process the way the supervisor needs it.
//
// The child gets its own session (setsid), so its process id is also its
// process-group id and killpg() reaches every process it starts; stdin from
// /dev/null; stdout and stderr on pipes whose read ends are returned
// non-blocking and close-on-exec; no other inherited fd; default signal
// dispositions and an empty signal mask (the agent ignores SIGPIPE and
// blocks signals, and none of that must leak into scripts).
//
// Whether exec succeeded is reported through a third pipe, close-on-exec in
// the child: it reaches EOF when exec succeeds, or carries the child's
// errno (sizeof(int) bytes) when exec fails, after which the child
// _exit()s with exec_failure_status(errno).  spawn() never waits for the
// child; with vfork() (see spawn.cpp) it returns only once the child has
// exec'd or failed to, so the report is already complete and the caller
// can read it at once instead of from its poll() loop.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

namespace ur {

struct SpawnedChild {
    pid_t pid = -1;
    int out_fd = -1;    // read end of the child's stdout
    int err_fd = -1;    // read end of the child's stderr
    int exec_fd = -1;   // read end of the exec-status pipe (see above)
};

// Forks and executes `path` with argv = {path, args...}.  `env` present:
// exactly that environment; absent: ours.  No PATH search, no shell.
// Returns false (no child, no fd left open) with errno-based reason in
// `error` and the errno in `err` if a pipe, /dev/null or fork failed.
bool spawn(const std::string& path, const std::vector<std::string>& args,
           const std::optional<std::vector<std::string>>& env,
           SpawnedChild& child, int& err, std::string& error);

// The exit status a shell would give for a command that cannot be executed
// because of `err`: 127 when it was not found, 126 otherwise.
int exec_failure_status(int err);

}  // namespace ur
