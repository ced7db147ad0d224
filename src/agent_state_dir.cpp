// The state directory and its lock: one agent per directory, kept while
// the agent runs even when the directory is removed under it.

#include "src/agent.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "src/agent_internal.hpp"
#include "src/log.hpp"

namespace ur {

namespace {

// The whole file, write-locked (fcntl F_SETLK, F_GETLK).
struct flock whole_file_write_lock() {
    struct flock fl;
    std::memset(&fl, 0, sizeof fl);
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    return fl;
}

const size_t kKeptRemovedLocks = 4;  // removed lock files kept locked (keep_state_dir)

}  // namespace

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
void Agent::keep_state_dir(uint64_t now) {
    if (state_dir_absent_) {
        adopt_state_dir(now);
        return;
    }
    struct stat st;
    if (lock_fd_ < 0 || fstat(lock_fd_, &st) != 0 || st.st_nlink > 0) return;
    std::string path = lock_path(), why;
    if (mkdir(cfg_.state_dir.c_str(), 0755) != 0 && errno != EEXIST) why = std::strerror(errno);
    int fd = why.empty() ? lock_without_waiting(
                               path, "another ur-agent holds the new one: it may answer our "
                                     "requests as its own",
                               why)
                         : -1;
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

// A state directory that could not be made at start (its parent missing:
// a file system mounted later) is made at the first execute request that
// can, with its lock and journal, as at start; the script directory in it
// is made by the supervisor when it writes the script; the journal's
// leftovers are answered.  One mkdir() per request until then.
void Agent::adopt_state_dir(uint64_t now) {
    if (mkdir(cfg_.state_dir.c_str(), 0755) != 0 && errno != EEXIST) return;
    state_dir_absent_ = false;
    std::string path = lock_path(), why;
    lock_fd_ = lock_without_waiting(path, "another ur-agent holds it", why);
    if (lock_fd_ < 0) {
        log::error("the state directory could be made now, but not its lock; running without "
                   "lock and journal",
                   {{"file", field(path)}, {"error", field(why)}});
        return;
    }
    log::warn("the state directory could be made now; using it", {{"dir", cfg_.state_dir}});
    if (!journal_.is_open() && open_journal())
        answer_leftovers(now);  // a journal there from before (a file system mounted late)
}

// A lock file at `path` (open_lock_file()) write-locked at once; -1 with
// `why` otherwise (`held_why` when another process holds the lock).
int Agent::lock_without_waiting(const std::string& path, const char* held_why, std::string& why) {
    int fd = open_lock_file(path, why);
    struct flock fl = whole_file_write_lock();
    if (fd >= 0 && fcntl(fd, F_SETLK, &fl) != 0) {
        why = errno == EACCES || errno == EAGAIN ? held_why : std::strerror(errno);
        close(fd);
        fd = -1;
    }
    return fd;
}

// The in-flight journal in the state directory; false (said) when it
// cannot be opened.
bool Agent::open_journal() {
    std::string error;
    if (journal_.open(cfg_.state_dir + "/.ur-agent-inflight", cfg_.journal_fsync, error))
        return true;
    log::error("running without an in-flight journal", {{"error", error}});
    return false;
}

}  // namespace ur
