// A broker's name looked up in a child process, so that a resolver that
// does not answer (a DNS outage: resolv.conf's timeout x attempts x
// nameservers, 10 to 30 s at a time) cannot hold the agent's poll() loop.
// Meanwhile scripts' timeouts are enforced, their output read and signals
// handled.  The loop drives it:
//
//     resolver.start(host, port, limit_s, error);  // forks the child
//     poll resolver.fd() for POLLIN
//     resolver.read_answer(addrs, error);          // Pending until the answer is whole
//     resolver.cancel();                           // at the caller's deadline
//     resolver.reap();                             // after SIGCHLD, each pass
//
// The child calls getaddrinfo() (through resolve()), writes the addresses
// to a pipe in a compact form (encode_answer()) and _exit()s.  The answer
// is what the pipe carries, never the child's exit status: the agent as
// process 1 reaps every child with waitpid(-1) (Supervisor::reap_strays),
// ours included.  Our own reaping is waitpid(pid, WNOHANG) on our child's
// pid only, so no other child's status is taken, and a child that someone
// else reaped is never signalled (its pid may be another's by then).
#pragma once
#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "src/net.hpp"

namespace ur {

class Resolver {
public:
    // What the child runs: resolve(), or a stand-in in tests.
    using Lookup = bool (*)(const std::string& host, uint16_t port,
                            std::vector<SocketAddress>& out, std::string& error);
    enum class Answer { Pending, Resolved, Failed };

    Resolver() = default;
    Resolver(const Resolver&) = delete;
    Resolver& operator=(const Resolver&) = delete;
    // Cancels a lookup still running; a child not reaped by then is left
    // to whoever inherits it.
    ~Resolver();

    // Starts looking host:port up in a child process (a lookup still
    // running is cancelled first).  The child ends by itself (SIGALRM)
    // limit_s + 1 s later, should its parent die before it could kill it.
    // False with `error` when no child could be started (pipe, fork):
    // nothing is left running then.
    bool start(const std::string& host, uint16_t port, unsigned limit_s, std::string& error,
               Lookup lookup = resolve);
    // A lookup is running: its answer is not yet read.
    bool busy() const { return fd_ >= 0; }
    // The answer pipe's read end while busy() (poll it for POLLIN), else -1.
    int fd() const { return fd_; }
    // The child of the running lookup, else -1.
    pid_t pid() const { return pid_; }
    // Reads what the child has written, without blocking.  Pending until
    // the child's end of the pipe closes; then the lookup is over (not
    // busy()): Resolved with `out` (non-empty), or Failed with `error`: the
    // name did not resolve, or the child ended without a whole answer
    // (killed, out of memory).
    Answer read_answer(std::vector<SocketAddress>& out, std::string& error);
    // Ends the running lookup, if any: its child gets SIGKILL, its pipe is
    // closed.  The child is reaped now or by a later reap().
    void cancel();
    // Reaps the children that were stopped but had not yet ended
    // (waitpid(pid, WNOHANG) on each).  Call after SIGCHLD.
    void reap();
    // Children stopped and not yet reaped.
    size_t unreaped() const { return unreaped_.size(); }
    // Someone else reaped `pid` (the agent as process 1: waitpid(-1)): if
    // it was one of our children, it is neither waited for nor signalled
    // from now on (the number may soon be another process's).  A running
    // lookup's answer is still read from its pipe.
    void forget(pid_t pid);

private:
    void stop_child();

    int fd_ = -1;
    pid_t pid_ = -1;
    std::string host_;
    uint16_t port_ = 0;
    std::string answer_;           // read so far
    std::vector<pid_t> unreaped_;  // stopped children still to reap
};

// The child's answer on the pipe, one of
//     'A' N (LEN SOCKADDR[LEN]) x N     N addresses, 1 to kMaxAnswerAddresses
//     'E' LEN_HI LEN_LO TEXT            the reason the lookup failed
// Addresses past kMaxAnswerAddresses are left out; a failure's text is
// cut at kMaxAnswerError bytes.
inline constexpr size_t kMaxAnswerAddresses = 32;
inline constexpr size_t kMaxAnswerError = 1024;
std::string encode_answer(bool ok, const std::vector<SocketAddress>& addrs,
                          const std::string& error);
// Reads one whole answer for host:port.  True with the addresses in `out`
// (their port set to `port`); false with `error`: the failure the child
// reported, or, for bytes that are not exactly one answer (short,
// truncated, trailing bytes, a length or family out of range), that the
// lookup gave none.
bool parse_answer(std::string_view bytes, const std::string& host, uint16_t port,
                  std::vector<SocketAddress>& out, std::string& error);

}  // namespace ur
