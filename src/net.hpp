// TCP connections to the broker: name resolution, non-blocking connect,
// socket options.  The poll() loop owns the resulting fd.
#pragma once
#include <string>
#include <vector>

#include <sys/socket.h>

namespace ur {

struct SocketAddress {
    sockaddr_storage addr{};
    socklen_t len = 0;
    std::string text;  // "127.0.0.1:5672", "[::1]:5672"
};

// The address of host:port when it needs no lookup: a numeric IPv4 or
// IPv6 address, or "localhost" (127.0.0.1).  False, `out` empty, for a
// name that must be looked up.
bool resolve_without_lookup(const std::string& host, uint16_t port,
                            std::vector<SocketAddress>& out);

// Resolves host:port to addresses (resolve_without_lookup() first; names
// through getaddrinfo, which may block for as long as the system's
// resolver takes: the agent's loop looks names up in a Resolver child,
// resolver.hpp).  False with a reason on failure.
bool resolve(const std::string& host, uint16_t port, std::vector<SocketAddress>& out,
             std::string& error);

// Starts a non-blocking connect.  Returns the fd (O_NONBLOCK, O_CLOEXEC,
// TCP_NODELAY, SO_KEEPALIVE with short probes where the platform has them)
// or -1 with `error` set.  `in_progress` is true when the caller must wait
// for POLLOUT and then call connect_result().
int start_connect(const SocketAddress& addr, bool& in_progress, std::string& error);

// After POLLOUT on a connecting fd: 0 when connected, else the errno.
int connect_result(int fd);

// "127.0.0.1:5672", "[::1]:5672": an AF_INET or AF_INET6 address as text.
std::string address_text(const sockaddr* sa);

}  // namespace ur
