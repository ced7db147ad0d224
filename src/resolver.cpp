#include "src/resolver.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "src/file_io.hpp"
#include "src/spawn.hpp"

namespace ur {

namespace {

// The longest answer encode_answer() makes, with room to spare: more
// bytes than this are no answer of ours.
constexpr size_t kMaxAnswerBytes = 2 + kMaxAnswerAddresses * (1 + sizeof(sockaddr_in6)) +
                                   3 + kMaxAnswerError;

// waitpid(pid, WNOHANG), again on EINTR.
pid_t wait_nohang(pid_t pid) {
    int status;
    pid_t r;
    do {
        r = ::waitpid(pid, &status, WNOHANG);
    } while (r < 0 && errno == EINTR);
    return r;
}

// In the child: every signal the parent catches back to its default.
// The agent's handlers write to its self-pipe, which the child shares: a
// SIGTERM meant for the agent's process group (Ctrl-C, a service
// manager) must end the child, not speak for the agent.  Ignored signals
// stay ignored (SIGPIPE: a write to a parent that went is EPIPE).
void default_caught_signals() {
    for (int sig = 1; sig < kSignalCount; ++sig) {
        struct sigaction sa;
        if (::sigaction(sig, nullptr, &sa) != 0) continue;
        if (!(sa.sa_flags & SA_SIGINFO) && (sa.sa_handler == SIG_DFL || sa.sa_handler == SIG_IGN))
            continue;
        std::memset(&sa, 0, sizeof sa);
        sa.sa_handler = SIG_DFL;
        sigemptyset(&sa.sa_mask);
        ::sigaction(sig, &sa, nullptr);
    }
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
}

// The child: the lookup, its answer on `answer_fd`, then _exit() (no
// atexit handlers, no stdio flushed: those are the agent's).  Never
// returns into the agent's code, not even by an exception.
[[noreturn]] void lookup_child(int answer_fd, const std::string& host, uint16_t port,
                               unsigned limit_s, Resolver::Lookup lookup) {
    try {
        default_caught_signals();
        // Bounded even if the agent dies (kill -9) before it can kill us:
        // the agent ignores SIGALRM, the child must not.
        ::signal(SIGALRM, SIG_DFL);
        ::alarm(limit_s + 1);
        std::vector<SocketAddress> addrs;
        std::string error;
        bool ok = lookup(host, port, addrs, error);
        write_all(answer_fd, encode_answer(ok, addrs, error));
        ::_exit(0);
    } catch (...) {
        ::_exit(1);  // out of memory: the parent reads no whole answer
    }
}

bool known_family(const sockaddr_storage& ss, size_t len) {
    return (ss.ss_family == AF_INET && len == sizeof(sockaddr_in)) ||
           (ss.ss_family == AF_INET6 && len == sizeof(sockaddr_in6));
}

void set_port(sockaddr_storage& ss, uint16_t port) {
    if (ss.ss_family == AF_INET)
        reinterpret_cast<sockaddr_in*>(&ss)->sin_port = htons(port);
    else
        reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port = htons(port);
}

// The addresses of an 'A' answer (after its tag), exactly, or false.
bool parse_addresses(std::string_view a, uint16_t port, std::vector<SocketAddress>& out) {
    if (a.empty()) return false;
    size_t count = uint8_t(a[0]), at = 1;
    if (count == 0 || count > kMaxAnswerAddresses) return false;
    for (size_t i = 0; i < count; ++i) {
        if (at >= a.size()) return false;
        size_t len = uint8_t(a[at++]);
        if (len > sizeof(sockaddr_storage) || len > a.size() - at) return false;
        SocketAddress s;
        std::memcpy(&s.addr, a.data() + at, len);
        at += len;
        if (!known_family(s.addr, len)) return false;
        s.len = socklen_t(len);
        set_port(s.addr, port);
        s.text = address_text(reinterpret_cast<const sockaddr*>(&s.addr));
        out.push_back(std::move(s));
    }
    return at == a.size();
}

}  // namespace

std::string encode_answer(bool ok, const std::vector<SocketAddress>& addrs,
                          const std::string& error) {
    std::string out;
    if (ok) {
        std::string records;
        size_t count = 0;
        for (const SocketAddress& s : addrs) {
            if (count == kMaxAnswerAddresses) break;
            if (!known_family(s.addr, s.len)) continue;
            records += char(s.len);
            records.append(reinterpret_cast<const char*>(&s.addr), s.len);
            ++count;
        }
        if (count > 0) {
            out += 'A';
            out += char(count);
            return out + records;
        }
    }
    std::string text = ok ? "no usable address" : error.substr(0, kMaxAnswerError);
    if (text.empty()) text = "the lookup failed";
    out += 'E';
    out += char(text.size() >> 8);
    out += char(text.size() & 0xff);
    return out + text;
}

bool parse_answer(std::string_view bytes, const std::string& host, uint16_t port,
                  std::vector<SocketAddress>& out, std::string& error) {
    out.clear();
    if (!bytes.empty() && bytes[0] == 'A' && parse_addresses(bytes.substr(1), port, out))
        return true;
    out.clear();
    if (bytes.size() > 3 && bytes[0] == 'E') {
        size_t len = size_t(uint8_t(bytes[1])) << 8 | uint8_t(bytes[2]);
        if (len <= kMaxAnswerError && len == bytes.size() - 3) {
            error = std::string(bytes.substr(3));
            return false;
        }
    }
    error = "cannot resolve '" + host + "': " +
            (bytes.empty() ? "the lookup process ended without an answer"
                           : "the lookup process gave an unreadable answer");
    return false;
}

Resolver::~Resolver() {
    cancel();
    reap();
}

bool Resolver::start(const std::string& host, uint16_t port, unsigned limit_s, std::string& error,
                     Lookup lookup) {
    cancel();
    int p[2];
    if (::pipe(p) != 0) {
        error = "cannot resolve '" + host + "': pipe: " + std::strerror(errno);
        return false;
    }
    // Close-on-exec both ends: a script started while the lookup runs
    // must not hold the write end, or the answer's end would wait for it.
    for (int fd : p) ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    ::fcntl(p[0], F_SETFL, ::fcntl(p[0], F_GETFL) | O_NONBLOCK);
    // The child keeps the agent's other fds: it uses none of them, execs
    // nothing, and lives limit_s + 1 s at most.
    pid_t pid = ::fork();
    if (pid < 0) {
        error = "cannot resolve '" + host + "': cannot start the lookup process: fork: " +
                std::strerror(errno);
        ::close(p[0]);
        ::close(p[1]);
        return false;
    }
    if (pid == 0) {
        ::close(p[0]);
        lookup_child(p[1], host, port, limit_s, lookup);
    }
    ::close(p[1]);
    fd_ = p[0];
    pid_ = pid;
    host_ = host;
    port_ = port;
    answer_.clear();
    return true;
}

Resolver::Answer Resolver::read_answer(std::vector<SocketAddress>& out, std::string& error) {
    if (fd_ < 0) {
        error = "no lookup is running";
        return Answer::Failed;
    }
    char buf[512];
    for (;;) {
        ssize_t n = ::read(fd_, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return Answer::Pending;
        if (n <= 0) break;  // the child's end closed (or a read error: no answer either)
        answer_.append(buf, size_t(n));
        if (answer_.size() > kMaxAnswerBytes) break;  // no answer of ours: parsed as garbage
    }
    std::string answer = std::move(answer_);
    std::string host = host_;
    stop_child();
    return parse_answer(answer, host, port_, out, error) ? Answer::Resolved : Answer::Failed;
}

void Resolver::cancel() { stop_child(); }

// Reaps the lookup's child, or, still running (or not yet quite ended
// after closing the pipe), sends it SIGKILL and leaves it to reap().
// A child that is no longer ours to wait for (ECHILD: the agent as
// process 1 reaped it) is never signalled.  Closes the pipe.
void Resolver::stop_child() {
    if (pid_ > 0 && wait_nohang(pid_) == 0) {
        ::kill(pid_, SIGKILL);
        if (wait_nohang(pid_) == 0) unreaped_.push_back(pid_);
    }
    pid_ = -1;
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    answer_.clear();
    answer_.shrink_to_fit();
}

void Resolver::forget(pid_t pid) {
    if (pid <= 0) return;
    if (pid == pid_) pid_ = -1;
    unreaped_.erase(std::remove(unreaped_.begin(), unreaped_.end(), pid), unreaped_.end());
}

void Resolver::reap() {
    for (size_t i = 0; i < unreaped_.size();) {
        if (wait_nohang(unreaped_[i]) != 0) {
            unreaped_[i] = unreaped_.back();
            unreaped_.pop_back();
        } else {
            ++i;
        }
    }
}

}  // namespace ur
