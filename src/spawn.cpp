#include "src/spawn.hpp"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>
#if defined(__linux__)
#include <sys/syscall.h>
#endif

#include <sched.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>

extern char** environ;

namespace ur {

namespace {

// Makes a pipe whose both ends are close-on-exec (the child dup2()s the end
// it needs, which clears the flag on the copy).
bool make_pipe(int fds[2]) {
#if defined(__APPLE__)
    if (::pipe(fds) != 0)
        return false;
    ::fcntl(fds[0], F_SETFD, FD_CLOEXEC);
    ::fcntl(fds[1], F_SETFD, FD_CLOEXEC);
    return true;
#else
    return ::pipe2(fds, O_CLOEXEC) == 0;
#endif
}

// A fresh pipe's read end has no status flag but O_RDONLY: set, not or'ed.
bool set_nonblocking(int fd) { return ::fcntl(fd, F_SETFL, O_NONBLOCK) == 0; }

// The children's stdin, opened once (close-on-exec; each child dup2()s it).
int dev_null() {
    static int fd = -1;
    while (fd < 0) {
        fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (fd < 0 && errno != EINTR)
            return -1;
    }
    return fd;
}

// The highest fd a child could have inherited, for closing them where
// there is no closefrom().  Asked once: the limit does not change.
long open_max() {
    static long max = [] {
        long m = ::sysconf(_SC_OPEN_MAX);
        return (m < 0 || m > 65536) ? 65536L : m;
    }();
    return max;
}

#if defined(__sun)
int note_highest_fd(void* highest, int fd) {
    int* h = static_cast<int*>(highest);
    if (fd > *h)
        *h = fd;
    return 0;
}
#endif

// Where a child's closing of inherited fds one by one may stop (no
// closefrom()): the open-file limit.  On illumos, under a high limit (an
// SMF method's ulimit -n 65536), a vfork() child closing that many would
// hold the agent suspended for milliseconds on every script, so the
// bound is one past the highest fd open now, found here in the parent by
// fdwalk() (it reads /proc/self/fd and allocates, which the child, in our
// memory, must not), plus the 4 the child may make itself moving its
// pipes out of the way (dup_above(), not close-on-exec).  The agent is
// single-threaded: nothing opens an fd between this and the child.
long close_bound() {
    long max = open_max();
#if defined(__sun)
    if (max > 1024) {
        int highest = -1;
        if (::fdwalk(note_highest_fd, &highest) == 0 && highest >= 0 && highest < max)
            return std::min(max, long(highest) + 1 + 4);
    }
#endif
    return max;
}

void close_fd(int& fd) {
    if (fd >= 0)
        ::close(fd);
    fd = -1;
}

// closefrom() where it allocates nothing (the child may share our memory,
// see below): glibc's is close_range(2) or a getdents walk into a stack
// buffer.  illumos has one too, but it walks /proc/self/fd with opendir(),
// which mallocs in the heap a vfork() child borrows, so there the child
// closes every fd below _SC_OPEN_MAX (256 by default) instead.
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
#define UR_HAVE_CLOSEFROM 1
#elif defined(__FreeBSD__) || defined(__OpenBSD__)
#define UR_HAVE_CLOSEFROM 1
#endif

// How the child is made (see SpawnMode).  A child that shares our memory
// (clone() with CLONE_VM for Share, vfork() for Borrow) costs no
// page-table copy, and the agent takes no copy-on-write faults afterwards
// while its children start (with fork() those were about 45% of the
// agent's CPU per trivial request: perf during make bench's throughput
// run).  child_exec() is written for it: system calls only, nothing
// allocated or locked, and it never returns.  Sanitizer builds fork for
// every mode (their shadow memory and a shared address space do not mix).
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define UR_SPAWN_FORK 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define UR_SPAWN_FORK 1
#endif
#endif
#if !defined(UR_SPAWN_FORK) && (defined(__linux__) || defined(__sun))
#define UR_SPAWN_VFORK 1
#endif
#if !defined(UR_SPAWN_FORK) && defined(__linux__) && (defined(__x86_64__) || defined(__aarch64__))
#define UR_SPAWN_SHARE 1
#endif

// The signals a child resets (see remember_signal_dispositions()); all of
// them while g_reset_all.  Read by the child, written only between spawns.
bool g_reset_all = true;
int g_reset[kSignalCount];
int g_reset_count = 0;

const char kShell[] = "/bin/sh";

// The child's system calls: each returns its result, or -errno, and
// writes nothing else.  A Share child runs beside us in our memory with
// our thread pointer, so libc's errno would be ours, changed under our
// feet (resetting dispositions fails for SIGKILL and SIGSTOP every
// time).  Where there is no Share the child has the memory to itself
// (vfork() suspends us; fork() copies) and libc's wrappers do.
namespace sys {

#ifdef UR_SPAWN_SHARE
[[gnu::always_inline]] inline long call(long nr, long a = 0, long b = 0, long c = 0, long d = 0) {
#if defined(__x86_64__)
    long ret;
    register long r10 __asm__("r10") = d;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10)
                     : "rcx", "r11", "memory");
    return ret;
#else  // __aarch64__
    register long x8 __asm__("x8") = nr;
    register long x0 __asm__("x0") = a;
    register long x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c;
    register long x3 __asm__("x3") = d;
    __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3) : "memory");
    return x0;
#endif
}

// The kernel's sigset_t: 64 signals.
constexpr long kSigsetSize = 8;

long setsid() { return call(SYS_setsid); }
long dup_above(int fd, int lowest) { return call(SYS_fcntl, fd, F_DUPFD, lowest); }
long dup_to(int fd, int target) { return call(SYS_dup3, fd, target, 0); }  // fd != target
long set_cloexec(int fd) { return call(SYS_fcntl, fd, F_SETFD, FD_CLOEXEC); }
long execve(const char* path, char* const* argv, char* const* envp) {
    return call(SYS_execve, reinterpret_cast<long>(path), reinterpret_cast<long>(argv),
                reinterpret_cast<long>(envp));
}
long write(int fd, const void* p, size_t n) {
    return call(SYS_write, fd, reinterpret_cast<long>(p), static_cast<long>(n));
}
[[noreturn]] void exit(int status) {
    for (;;)
        call(SYS_exit_group, status);
}
void unblock_all() {
    static const unsigned char none[kSigsetSize] = {};
    call(SYS_rt_sigprocmask, SIG_SETMASK, reinterpret_cast<long>(none), 0, kSigsetSize);
}
// An all-zero kernel sigaction is SIG_DFL, no flags, empty mask, whatever
// the architecture's layout.  Fails (harmlessly) for SIGKILL and SIGSTOP;
// glibc's reserved 32 and 33 are reset too (an ignored disposition of
// theirs is inherited through exec like any other).
void default_disposition(int sig) {
    static const unsigned char zero[64] = {};
    call(SYS_rt_sigaction, sig, reinterpret_cast<long>(zero), 0, kSigsetSize);
}
// Without close_range (before Linux 5.9, or refused by a seccomp filter),
// as glibc's closefrom() does: the fds /proc/self/fd lists, read into a
// stack buffer, again from the start until a pass closes none; without
// /proc, every fd below the open-file limit.
bool close_listed(int lowest) {
    long dir = call(SYS_openat, AT_FDCWD, reinterpret_cast<long>("/proc/self/fd"),
                    O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0)
        return false;
    alignas(8) char buf[1024];
    for (bool closed = true; closed;) {
        closed = false;
        long n;
        while ((n = call(SYS_getdents64, dir, reinterpret_cast<long>(buf), sizeof buf)) > 0) {
            for (long at = 0; at < n;) {
                // struct linux_dirent64: ino (8), off (8), reclen (2), type (1), name
                unsigned short reclen;
                std::memcpy(&reclen, buf + at + 16, sizeof reclen);
                const char* name = buf + at + 19;
                at += reclen;
                long fd = 0;
                if (*name < '0' || *name > '9')
                    continue;  // "." and ".."
                for (; *name >= '0' && *name <= '9'; ++name)
                    fd = fd * 10 + (*name - '0');
                if (fd >= lowest && fd != dir && call(SYS_close, fd) == 0)
                    closed = true;
            }
        }
        if (n < 0 || call(SYS_lseek, dir, 0, SEEK_SET) < 0)
            break;
    }
    call(SYS_close, dir);
    return true;
}

void close_from(int lowest, long open_max) {
#ifdef SYS_close_range
    if (call(SYS_close_range, lowest, ~0L & 0xffffffffL, 0) == 0)
        return;
#endif
    if (close_listed(lowest))
        return;
    for (long fd = lowest; fd < open_max; ++fd)
        call(SYS_close, fd);
}

#else  // the child has the memory to itself: libc

long result(long r) { return r < 0 ? -errno : r; }

long setsid() { return result(::setsid()); }
long dup_above(int fd, int lowest) { return result(::fcntl(fd, F_DUPFD, lowest)); }
long dup_to(int fd, int target) { return result(::dup2(fd, target)); }
long set_cloexec(int fd) { return result(::fcntl(fd, F_SETFD, FD_CLOEXEC)); }
long execve(const char* path, char* const* argv, char* const* envp) {
    ::execve(path, argv, envp);
    return -errno;
}
long write(int fd, const void* p, size_t n) { return result(::write(fd, p, n)); }
[[noreturn]] void exit(int status) { ::_exit(status); }
void unblock_all() {
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
}
void default_disposition(int sig) {
    struct sigaction dfl;
    std::memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    if (::sigaction(sig, &dfl, nullptr) == 0 || errno != EINVAL)
        return;  // done, or SIGKILL/SIGSTOP
#if defined(__linux__) && defined(SYS_rt_sigaction)
    // glibc refuses to touch the signals it reserves (32 and 33), but an
    // ignored disposition for them is still inherited through exec (seen
    // when the agent was started by a process that ignored them).  Ask the
    // kernel directly, as above.
    char zero[64] = {};
    ::syscall(SYS_rt_sigaction, sig, zero, nullptr, static_cast<size_t>(_NSIG / 8));
#endif
}
void close_from(int lowest, long open_max) {
#ifdef UR_HAVE_CLOSEFROM
    (void)open_max;
    ::closefrom(lowest);
#else
    for (long fd = lowest; fd < open_max; ++fd)
        ::close(static_cast<int>(fd));
#endif
}

#endif

}  // namespace sys

// Everything between fork() and execve(), in the child.  Only
// async-signal-safe calls: no allocation, no locks, no stdio.
struct ChildPlan {
    const char* file;         // the program, as given
    size_t file_len;
    const char* search;       // PATH to look `file` up in; null: exec `file` as it is
    char* const* argv;
    char** sh_argv;           // {"/bin/sh", path, args..., null}: see child_exec()
    char* const* envp;
    int in_fd, out_fd, err_fd;
    int report_fd;            // Share, Copy: the exec-status pipe; Borrow: -1
    volatile int* exec_err;   // Borrow: where a failed exec's errno goes; otherwise null
    long open_max;
};

// Reports `err` as the reason exec failed and exits.  Runs in the child:
// async-signal-safe calls only.  After vfork() the parent's memory is
// ours until we exit, and the parent reads it once we have.
[[noreturn]] void child_fail(const ChildPlan& plan, int report_fd, int err) {
    if (plan.exec_err) {
        *plan.exec_err = err;
    } else {
        long n;
        do {
            n = sys::write(report_fd, &err, sizeof err);
        } while (n == -EINTR);
    }
    sys::exit(exec_failure_status(err));
}

// An exec failure that only says the program is not at that place of the
// search path (ENAMETOOLONG: an entry longer than this system's PATH_MAX).
bool passed_over(int err) {
    return err == ENOENT || err == ENOTDIR || err == ESTALE || err == ENODEV ||
           err == ETIMEDOUT || err == ENAMETOOLONG;
}

[[noreturn]] void child_exec(const ChildPlan& plan) {
    int report_fd = plan.report_fd;
    // Default dispositions first: signals are blocked (see spawn()), so no
    // handler of the agent can run in the child before this.  An ignored
    // SIGPIPE would otherwise survive exec.
    if (g_reset_all) {
        for (int sig = 1; sig < kSignalCount; ++sig)
            sys::default_disposition(sig);
    } else {
        for (int i = 0; i < g_reset_count; ++i)
            sys::default_disposition(g_reset[i]);
    }

    long r = sys::setsid();
    if (r < 0)
        child_fail(plan, report_fd, int(-r));

    // Move our fds above the ones they go to first so that the dup2()s
    // below cannot overwrite one of them (the agent may run with 0-2
    // closed, in which case pipe() hands out small numbers).
    const int count = report_fd >= 0 ? 4 : 3;
    int fds[4] = {plan.in_fd, plan.out_fd, plan.err_fd, report_fd};
    for (int i = 0; i < count; ++i) {
        if (fds[i] < count) {
            r = sys::dup_above(fds[i], count);
            if (r < 0)
                child_fail(plan, report_fd, int(-r));
            fds[i] = int(r);
        }
    }
    if (count == 4)
        report_fd = fds[3];
    for (int target = 0; target < count; ++target) {
        do {
            r = sys::dup_to(fds[target], target);
        } while (r == -EINTR);
        if (r < 0)
            child_fail(plan, report_fd, int(-r));
    }
    if (count == 4) {
        report_fd = 3;
        // dup2 cleared close-on-exec; the report pipe needs it back so that
        // a successful exec closes it (that EOF is what the parent waits for).
        r = sys::set_cloexec(3);
        if (r < 0)
            child_fail(plan, report_fd, int(-r));
    }
    sys::close_from(count, plan.open_max);
    sys::unblock_all();

    // Each candidate in turn, as execvp() goes through PATH: one that is
    // not there (or on a dead mount) is passed over, one we may not
    // execute is remembered, any other failure ends the search.
    int err = ENOENT;
    bool denied = false;
    char buf[kCandidateMax];
    const char* cursor = plan.search;
    const char* path = plan.file;
    while (!plan.search || next_exec_candidate(cursor, plan.file, plan.file_len, buf, sizeof buf)) {
        if (plan.search)
            path = buf;
        err = int(-sys::execve(path, plan.argv, plan.envp));
        // A file the kernel cannot run (ENOEXEC: a script without a #!
        // line) is run by /bin/sh, as execvp() does and so the original
        // agent did.  Should the shell fail to start, the file's own
        // ENOEXEC is reported.  Not for a #! script (sh_argv null): its
        // interpreter is what failed.
        if (err == ENOEXEC && plan.sh_argv) {
            plan.sh_argv[1] = const_cast<char*>(path);
            sys::execve(kShell, plan.sh_argv, plan.envp);
            break;
        }
        if (err == EACCES)
            denied = true;
        else if (!passed_over(err))
            break;
        if (!plan.search)
            break;
    }
    if (denied && (passed_over(err) || err == EACCES))
        err = EACCES;
    else if (plan.search && passed_over(err))
        err = ENOENT;  // searched everywhere: not found (127), whatever the last place said
    child_fail(plan, report_fd, err);
}

// Make the child and send it into child_exec(); return its pid (or -1
// with errno) in the parent.  With vfork() the child must never return
// from the function that called it (that stack frame is the parent's
// too), hence a small function of its own that the child leaves only by
// exec or _exit.
#ifdef UR_SPAWN_VFORK
[[gnu::noinline]] pid_t start_borrowed(const ChildPlan& plan) {
    pid_t pid = ::vfork();
    if (pid == 0)
        child_exec(plan);
    return pid;
}
#endif

#ifdef UR_SPAWN_SHARE
int shared_child_main(void* plan) { child_exec(*static_cast<const ChildPlan*>(plan)); }

// The child's stack, in the ChildMemory: child_exec() needs one path
// buffer (kCandidateMax) and a few frames.
constexpr size_t kChildStack = 32 * 1024;

pid_t start_shared(const ChildPlan& plan, char* stack) {
    // Stacks grow down on both architectures; the top 16-byte aligned.
    uintptr_t top = (reinterpret_cast<uintptr_t>(stack) + kChildStack) & ~uintptr_t(15);
    return ::clone(shared_child_main, reinterpret_cast<void*>(top), CLONE_VM | SIGCHLD,
                   const_cast<ChildPlan*>(&plan));
}
#endif

pid_t start_copied(const ChildPlan& plan) {
    pid_t pid = ::fork();
    if (pid == 0)
        child_exec(plan);
    return pid;
}

}  // namespace

// The child's strings, pointer arrays and (Share) stack, in one place
// that outlives spawn() when the child needs it to (see spawn.hpp).
struct ChildMemory {
    std::unique_ptr<char[]> text;  // path, PATH, args, env: each NUL-ended
    char* file = nullptr;          // the path, in text
    char* search = nullptr;        // PATH to look it up in, in text; null: not searched
    std::vector<char*> argv, sh_argv, envv;
    ChildPlan plan{};
    std::unique_ptr<char[]> stack;  // Share only
};

void ChildMemoryFree::operator()(ChildMemory* m) const { delete m; }

namespace {

// Everything a child needs but its fds, built before it exists (it may not
// allocate): the strings copied into one block, so that a Share child's
// stay valid whatever the caller does with its own.  Null when memory ran
// out.
ChildMemoryPtr child_memory(const std::string& path, const std::vector<std::string>& args,
                            const std::optional<std::vector<std::string>>& env,
                            bool with_stack) {
    try {
        ChildMemoryPtr mem(new ChildMemory);
        const bool search_it = searched(path);
        std::string search = search_it ? search_path(env) : std::string();
        size_t size = path.size() + 1 + search.size() + 1;
        for (const std::string& a : args)
            size += a.size() + 1;
        if (env)
            for (const std::string& e : *env)
                size += e.size() + 1;
        mem->text.reset(new char[size]);
        char* end = mem->text.get();
        auto put = [&end](const std::string& s) {
            char* at = end;
            std::memcpy(at, s.data(), s.size());
            at[s.size()] = '\0';
            end += s.size() + 1;
            return at;
        };
        mem->file = put(path);
        char* search_text = put(search);
        if (search_it)
            mem->search = search_text;
        std::vector<char*>& argv = mem->argv;
        argv.reserve(args.size() + 2);
        argv.push_back(mem->file);
        for (const std::string& a : args)
            argv.push_back(put(a));
        argv.push_back(nullptr);
        mem->sh_argv.reserve(argv.size() + 1);
        mem->sh_argv.push_back(const_cast<char*>(kShell));
        mem->sh_argv.insert(mem->sh_argv.end(), argv.begin(), argv.end());
        if (env) {
            mem->envv.reserve(env->size() + 1);
            for (const std::string& e : *env)
                mem->envv.push_back(put(e));
            mem->envv.push_back(nullptr);
        }
#ifdef UR_SPAWN_SHARE
        if (with_stack)
            mem->stack.reset(new char[kChildStack]);
#else
        (void)with_stack;
#endif
        return mem;
    } catch (const std::bad_alloc&) {
        return nullptr;
    }
}

}  // namespace

#ifdef UR_SPAWN_SHARE
namespace {
// Set when the kernel (or what stands in for it) refused a Share clone().
bool g_share_refused = false;
}  // namespace
#endif

bool share_supported() {
#ifdef UR_SPAWN_SHARE
    // Not under valgrind, which runs no clone() but a thread library's,
    // fork()'s and vfork()'s (it stops the program: "Unsupported clone()
    // flags"); its preloaded library names it.
    static const bool ok = [] {
        const char* preload = ::getenv("LD_PRELOAD");
        return !(preload && std::strstr(preload, "/vgpreload_"));
    }();
    return ok && !g_share_refused;
#else
    return false;
#endif
}

void widen_pipe(int fd) {
#if defined(F_SETPIPE_SZ)
    ::fcntl(fd, F_SETPIPE_SZ, 1 << 20);
#else
    (void)fd;
#endif
}

void remember_signal_dispositions() {
    int n = 0;
    for (int sig = 1; sig < kSignalCount; ++sig) {
        struct sigaction sa;
        // A signal the C library will not report on (EINVAL: glibc's
        // reserved ones) is reset anyway: it may have come in ignored.
        if (::sigaction(sig, nullptr, &sa) != 0 || (sa.sa_flags & SA_SIGINFO) ||
            sa.sa_handler != SIG_DFL)
            g_reset[n++] = sig;
    }
    g_reset_count = n;
    g_reset_all = false;
}

void forget_signal_dispositions() {
    g_reset_all = true;
    g_reset_count = 0;
}

std::string_view script_interpreter(std::string_view script) {
    // As the kernel reads the line: "#!", blanks, then the path up to a
    // blank, newline or NUL.
    if (script.size() < 2 || script[0] != '#' || script[1] != '!')
        return {};
    size_t i = 2;
    while (i < script.size() && (script[i] == ' ' || script[i] == '\t'))
        ++i;
    size_t end = i;
    while (end < script.size() && script[end] != ' ' && script[end] != '\t' &&
           script[end] != '\n' && script[end] != '\0')
        ++end;
    return script.substr(i, end - i);
}

bool interpreter_is_system(std::string_view script) {
    // Within the kernel's first-line buffer, absolute.
    constexpr size_t kLineMax = 255;
    std::string_view interp = script_interpreter(script);
    if (interp.empty() || interp[0] != '/' || size_t(interp.data() - script.data()) + interp.size() > kLineMax)
        return false;
    // Each component non-empty and neither "." nor "..": "/usr//local"
    // and "/usr/../mnt" must not pass for "/usr/...".
    std::string_view path = interp.substr(1);
    if (path.empty() || path.back() == '/')
        return false;
    std::string_view first, second;
    int count = 0;
    while (!path.empty()) {
        size_t slash = path.find('/');
        std::string_view part = path.substr(0, slash);
        if (part.empty() || part == "." || part == "..")
            return false;
        if (count == 0) first = part;
        if (count == 1) second = part;
        ++count;
        path = slash == std::string_view::npos ? std::string_view() : path.substr(slash + 1);
    }
    if (count < 2)
        return false;
    return first == "bin" || first == "sbin" || (first == "usr" && second != "local");
}

std::string search_path(const std::optional<std::vector<std::string>>& env) {
    if (env) {
        for (const std::string& e : *env)
            if (e.compare(0, 5, "PATH=") == 0)
                return e.substr(5);
        return kDefaultSearchPath;
    }
    const char* p = ::getenv("PATH");
    return p ? p : kDefaultSearchPath;
}

bool searched(const std::string& file) {
    return !file.empty() && file.find('/') == std::string::npos;
}

bool next_exec_candidate(const char*& cursor, const char* file, size_t file_len, char* buf,
                         size_t cap) {
    while (cursor) {
        const char* dir = cursor;
        const char* end = dir;
        while (*end && *end != ':')
            ++end;
        cursor = *end ? end + 1 : nullptr;
        size_t dir_len = size_t(end - dir);
        if (dir_len == 0) {
            // An empty entry is the working directory (POSIX).
            dir = ".";
            dir_len = 1;
        }
        size_t sep = dir[dir_len - 1] == '/' ? 0 : 1;
        if (dir_len + sep + file_len + 1 > cap)
            continue;  // longer than any path the kernel takes
        std::memcpy(buf, dir, dir_len);
        if (sep)
            buf[dir_len] = '/';
        std::memcpy(buf + dir_len + sep, file, file_len);
        buf[dir_len + sep + file_len] = '\0';
        return true;
    }
    return false;
}

std::vector<std::string> exec_candidates(const std::string& file, const std::string& path) {
    if (!searched(file))
        return {file};
    std::vector<std::string> out;
    char buf[kCandidateMax];
    const char* cursor = path.c_str();
    while (next_exec_candidate(cursor, file.c_str(), file.size(), buf, sizeof buf))
        out.emplace_back(buf);
    return out;
}

int exec_failure_status(int err) {
    return (err == ENOENT || err == ENOTDIR) ? 127 : 126;
}

bool spawn(const std::string& path, const std::vector<std::string>& args,
           const std::optional<std::vector<std::string>>& env, SpawnMode mode,
           SpawnedChild& child, int& err, std::string& error, bool sh_fallback) {
    if (mode == SpawnMode::Share && !share_supported())
        mode = SpawnMode::Copy;
#ifndef UR_SPAWN_VFORK
    if (mode == SpawnMode::Borrow)
        mode = SpawnMode::Copy;
#endif
    ChildMemoryPtr mem = child_memory(path, args, env, mode == SpawnMode::Share);
    if (!mem) {  // a failure to start, not the agent's end
        err = ENOMEM;
        error = std::string("memory: ") + std::strerror(err);
        return false;
    }
    // Our own environment is not copied: the agent changes it only at
    // start-up, before any child.
    char* const* envp = env ? mem->envv.data() : environ;

    const bool borrow = mode == SpawnMode::Borrow;
    const bool report_pipe = !borrow;
    int out[2] = {-1, -1}, errp[2] = {-1, -1}, rep[2] = {-1, -1};
    auto fail = [&](const char* what) {
        err = errno;
        error = std::string(what) + ": " + std::strerror(err);
        close_fd(out[0]); close_fd(out[1]);
        close_fd(errp[0]); close_fd(errp[1]);
        close_fd(rep[0]); close_fd(rep[1]);
        return false;
    };
    if (!make_pipe(out) || !make_pipe(errp) || (report_pipe && !make_pipe(rep)))
        return fail("pipe");
    int devnull = dev_null();
    if (devnull < 0)
        return fail("open /dev/null");
    if (!set_nonblocking(out[0]) || !set_nonblocking(errp[0]) ||
        (report_pipe && !set_nonblocking(rep[0])))
        return fail("fcntl O_NONBLOCK");

    // Block every signal across the fork so that the child cannot run one
    // of the agent's handlers (in our memory, with vfork or clone) before
    // it has reset them.
    sigset_t all, old;
    sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, &old);
    volatile int exec_err = 0;
    mem->plan = ChildPlan{mem->file, path.size(), mem->search,
                          mem->argv.data(), sh_fallback ? mem->sh_argv.data() : nullptr,
                          envp, devnull, out[1], errp[1], rep[1],
                          borrow ? &exec_err : nullptr, close_bound()};
    pid_t pid;
    switch (mode) {
#ifdef UR_SPAWN_SHARE
    case SpawnMode::Share:
        pid = start_shared(mem->plan, mem->stack.get());
        if (pid < 0 && (errno == EINVAL || errno == ENOSYS || errno == EPERM)) {
            // Refused as neither a thread nor a fork (qemu's user mode, a
            // seccomp filter): fork this child, and no Share from now on.
            g_share_refused = true;
            mode = SpawnMode::Copy;
            pid = start_copied(mem->plan);
        }
        break;
#endif
#ifdef UR_SPAWN_VFORK
    case SpawnMode::Borrow:
        pid = start_borrowed(mem->plan);
        break;
#endif
    default:
        pid = start_copied(mem->plan);
        break;
    }
    int fork_errno = errno;
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    if (pid < 0) {
        errno = fork_errno;
        return fail("fork");
    }
    close_fd(out[1]);
    close_fd(errp[1]);
    close_fd(rep[1]);
    child.pid = pid;
    child.out_fd = out[0];
    child.err_fd = errp[0];
    child.exec_fd = rep[0];
    child.exec_errno = exec_err;
    // A Share child reads it until its exec; the others are done with it.
    if (mode == SpawnMode::Share)
        child.memory = std::move(mem);
    return true;
}

}  // namespace ur
