#include "src/net.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace ur {

std::string address_text(const sockaddr* sa) {
    char buf[INET6_ADDRSTRLEN] = {0};
    if (sa->sa_family == AF_INET) {
        auto* in = reinterpret_cast<const sockaddr_in*>(sa);
        inet_ntop(AF_INET, &in->sin_addr, buf, sizeof buf);
        return std::string(buf) + ":" + std::to_string(ntohs(in->sin_port));
    }
    auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
    inet_ntop(AF_INET6, &in6->sin6_addr, buf, sizeof buf);
    return "[" + std::string(buf) + "]:" + std::to_string(ntohs(in6->sin6_port));
}

bool resolve_without_lookup(const std::string& host, uint16_t port,
                            std::vector<SocketAddress>& out) {
    out.clear();
    SocketAddress a;
    // Numeric forms need no resolver (and a static binary's getaddrinfo
    // may not have its NSS modules at hand on a minimal live image).
    sockaddr_in in4{};
    sockaddr_in6 in6{};
    if (inet_pton(AF_INET, host.c_str(), &in4.sin_addr) == 1) {
        in4.sin_family = AF_INET;
        in4.sin_port = htons(port);
        std::memcpy(&a.addr, &in4, sizeof in4);
        a.len = sizeof in4;
    } else if (inet_pton(AF_INET6, host.c_str(), &in6.sin6_addr) == 1) {
        in6.sin6_family = AF_INET6;
        in6.sin6_port = htons(port);
        std::memcpy(&a.addr, &in6, sizeof in6);
        a.len = sizeof in6;
    } else if (host == "localhost") {
        in4.sin_family = AF_INET;
        in4.sin_port = htons(port);
        in4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        std::memcpy(&a.addr, &in4, sizeof in4);
        a.len = sizeof in4;
    } else {
        return false;
    }
    a.text = address_text(reinterpret_cast<sockaddr*>(&a.addr));
    out.push_back(a);
    return true;
}

bool resolve(const std::string& host, uint16_t port, std::vector<SocketAddress>& out,
             std::string& error) {
    if (resolve_without_lookup(host, port, out)) return true;
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    std::string service = std::to_string(port);
    int rc = getaddrinfo(host.c_str(), service.c_str(), &hints, &res);
    if (rc != 0) {
        error = "cannot resolve '" + host + "': " + gai_strerror(rc);
        return false;
    }
    for (addrinfo* p = res; p; p = p->ai_next) {
        if (p->ai_addrlen > sizeof(sockaddr_storage)) continue;
        SocketAddress s;
        std::memcpy(&s.addr, p->ai_addr, p->ai_addrlen);
        s.len = p->ai_addrlen;
        s.text = address_text(p->ai_addr);
        out.push_back(s);
    }
    freeaddrinfo(res);
    if (out.empty()) {
        error = "'" + host + "' has no usable address";
        return false;
    }
    return true;
}

static void set_socket_options(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    // Keepalive is the second line behind AMQP heartbeats: probe after 60 s
    // idle, every 10 s, give up after 6 probes.
#if defined(TCP_KEEPIDLE)
    int idle = 60;
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
#endif
#if defined(TCP_KEEPINTVL)
    int intvl = 10;
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
#endif
#if defined(TCP_KEEPCNT)
    int cnt = 6;
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
#endif
}

int start_connect(const SocketAddress& addr, bool& in_progress, std::string& error) {
    in_progress = false;
    int fd = socket(addr.addr.ss_family, SOCK_STREAM, 0);
    if (fd < 0) {
        error = std::string("socket: ") + std::strerror(errno);
        return -1;
    }
    if (fcntl(fd, F_SETFD, FD_CLOEXEC) != 0 ||
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0) {
        error = std::string("fcntl: ") + std::strerror(errno);
        close(fd);
        return -1;
    }
    set_socket_options(fd);
    // A connect interrupted by a signal goes on asynchronously (POSIX), so
    // EINTR is handled like EINPROGRESS, never by calling connect() again.
    if (connect(fd, reinterpret_cast<const sockaddr*>(&addr.addr), addr.len) == 0) return fd;
    if (errno == EINPROGRESS || errno == EINTR) {
        in_progress = true;
        return fd;
    }
    error = "connect to " + addr.text + ": " + std::strerror(errno);
    close(fd);
    return -1;
}

int connect_result(int fd) {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) return errno;
    return err;
}

}  // namespace ur
