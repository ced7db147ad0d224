// A tiny blocking socket pump for the RabbitMQ interop tests: connects an
// amqp::Connection to 127.0.0.1:port and moves bytes with poll() until a
// condition holds or a deadline passes.  Test code only.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "amqp/connection.hpp"

namespace amqp_test {

inline uint64_t monotonic_ms() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1000 + uint64_t(ts.tv_nsec) / 1000000;
}

// The test RabbitMQ's port, or 0 when `make check` did not start one.
inline uint16_t rabbitmq_port() {
    const char* p = std::getenv("UR_TEST_RABBITMQ_PORT");
    return p ? uint16_t(std::atoi(p)) : 0;
}

class Pump {
public:
    Pump(amqp::Connection& c, uint16_t port) : c_(c) {
        fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in sa {};
        sa.sin_family = AF_INET;
        sa.sin_port = htons(port);
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (fd_ >= 0 && ::connect(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
            ::close(fd_);
            fd_ = -1;
        }
        if (fd_ >= 0) c_.start(monotonic_ms());
    }
    ~Pump() {
        if (fd_ >= 0) ::close(fd_);
    }
    Pump(const Pump&) = delete;
    Pump& operator=(const Pump&) = delete;

    bool connected() const { return fd_ >= 0; }
    std::vector<amqp::Event>& events() { return events_; }

    // Pumps until pred() is true (checked after every pass) or timeout_ms
    // passes; returns pred().
    bool run_until(const std::function<bool()>& pred, int timeout_ms = 10000) {
        uint64_t deadline = monotonic_ms() + uint64_t(timeout_ms);
        char buf[65536];
        while (!pred()) {
            uint64_t now = monotonic_ms();
            if (now >= deadline || fd_ < 0) return pred();
            c_.tick(now);
            collect();
            if (pred()) return true;
            uint64_t wake = std::min(deadline, c_.next_deadline());
            struct pollfd pfd {fd_, short(POLLIN | (c_.wants_write() ? POLLOUT : 0)), 0};
            int r = ::poll(&pfd, 1, int(wake > now ? wake - now : 0));
            if (r < 0 && errno != EINTR) return false;
            now = monotonic_ms();
            if (r > 0 && (pfd.revents & POLLOUT)) {
                ssize_t n = ::write(fd_, c_.output().data(), c_.output().size());
                if (n > 0) c_.consume_output(size_t(n));
            }
            if (r > 0 && (pfd.revents & (POLLIN | POLLHUP | POLLERR))) {
                ssize_t n = ::read(fd_, buf, sizeof buf);
                if (n > 0) {
                    c_.feed(buf, size_t(n), now);
                } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
                    c_.transport_closed(now, n == 0 ? "EOF" : "read error");
                    ::close(fd_);
                    fd_ = -1;
                }
            }
            collect();
        }
        return true;
    }

    // Writes whatever output is queued (e.g. a final close-ok).
    void flush(int timeout_ms = 2000) {
        run_until([this] { return !c_.wants_write(); }, timeout_ms);
    }

    // The first event of the given kind (and channel, if nonzero) not yet
    // taken, or nullptr.
    amqp::Event* find(amqp::EventKind k, uint16_t ch = 0) {
        for (auto& e : events_)
            if (e.kind == k && (ch == 0 || e.channel == ch)) return &e;
        return nullptr;
    }
    size_t count(amqp::EventKind k) const {
        size_t n = 0;
        for (auto& e : events_) n += e.kind == k;
        return n;
    }
    bool await(amqp::EventKind k, uint16_t ch = 0, int timeout_ms = 10000) {
        return run_until([&] { return find(k, ch) != nullptr || c_.is_closed(); }, timeout_ms) &&
               find(k, ch) != nullptr;
    }

private:
    void collect() {
        amqp::Event e;
        while (c_.next_event(e)) events_.push_back(std::move(e));
    }

    amqp::Connection& c_;
    int fd_ = -1;
    std::vector<amqp::Event> events_;
};

}  // namespace amqp_test
