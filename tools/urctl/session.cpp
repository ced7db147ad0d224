#include "tools/urctl/session.hpp"

#include "src/net.hpp"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <csignal>
#include <cstring>
#include <ctime>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace urctl {

int exit_code(SessionStatus s) {
    switch (s) {
    case SessionStatus::Ok: return kExitOk;
    case SessionStatus::Unreachable:
    case SessionStatus::Refused:
    case SessionStatus::Lost: return kExitBroker;
    case SessionStatus::Timeout: return kExitTimeout;
    case SessionStatus::Interrupted: return kExitInterrupted;
    }
    return kExitFailed;
}

const char* to_string(SessionStatus s) {
    switch (s) {
    case SessionStatus::Ok: return "ok";
    case SessionStatus::Unreachable: return "broker-unreachable";
    case SessionStatus::Refused: return "broker-refused";
    case SessionStatus::Lost: return "connection-lost";
    case SessionStatus::Timeout: return "timeout";
    case SessionStatus::Interrupted: return "interrupted";
    }
    return "error";
}

uint64_t monotonic_ms() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1000 + uint64_t(ts.tv_nsec) / 1000000;
}

uint64_t wall_ms() {
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    return uint64_t(ts.tv_sec) * 1000 + uint64_t(ts.tv_nsec) / 1000000;
}

// ---- signals: a flag and a self-pipe (the handler does nothing else) ----

namespace {

volatile sig_atomic_t g_interrupted = 0;
int g_signal_pipe[2] = {-1, -1};

extern "C" void on_interrupt(int) {
    int saved = errno;
    g_interrupted = 1;
    if (g_signal_pipe[1] >= 0) {
        ssize_t n = write(g_signal_pipe[1], "x", 1);
        (void)n;  // a full pipe already wakes the loop
    }
    errno = saved;
}

bool set_flags(int fd) {
    return fcntl(fd, F_SETFD, FD_CLOEXEC) == 0 &&
           fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) == 0;
}

}  // namespace

bool install_interrupt_handler(std::string& error) {
    if (g_signal_pipe[0] < 0) {
        int p[2];
        if (pipe(p) != 0) {
            error = std::string("pipe: ") + std::strerror(errno);
            return false;
        }
        if (!set_flags(p[0]) || !set_flags(p[1])) {
            error = std::string("fcntl: ") + std::strerror(errno);
            ::close(p[0]);
            ::close(p[1]);
            return false;
        }
        g_signal_pipe[0] = p[0];
        g_signal_pipe[1] = p[1];
    }
    struct sigaction sa {};
    sa.sa_handler = on_interrupt;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;  // no SA_RESTART: poll() returns EINTR and the loop looks
    if (sigaction(SIGINT, &sa, nullptr) != 0 || sigaction(SIGTERM, &sa, nullptr) != 0) {
        error = std::string("sigaction: ") + std::strerror(errno);
        return false;
    }
    return true;
}

bool interrupted() { return g_interrupted != 0; }

// ---- TCP ----

namespace {

using Address = ur::SocketAddress;

// The agent's resolver: numeric addresses and "localhost" need no lookup (a
// static binary may lack the NSS modules getaddrinfo loads).
bool resolve(const Broker& b, std::vector<Address>& out, std::string& error) {
    return ur::resolve(b.host, b.port, out, error);
}

// Connects a non-blocking socket, waiting until deadline_ms.  Returns the
// fd, or -1 with `error` (and `status` Timeout / Interrupted / Unreachable).
int connect_by(const Address& a, uint64_t deadline_ms, SessionStatus& status,
               std::string& error) {
    status = SessionStatus::Unreachable;
    int fd = socket(a.addr.ss_family, SOCK_STREAM, 0);
    if (fd < 0) {
        error = std::string("socket: ") + std::strerror(errno);
        return -1;
    }
    if (!set_flags(fd)) {
        error = std::string("fcntl: ") + std::strerror(errno);
        ::close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    // EINTR leaves the connect going on asynchronously (POSIX): wait for it.
    if (connect(fd, reinterpret_cast<const sockaddr*>(&a.addr), a.len) == 0) return fd;
    if (errno != EINPROGRESS && errno != EINTR) {
        error = "connect to " + a.text + ": " + std::strerror(errno);
        ::close(fd);
        return -1;
    }
    for (;;) {
        uint64_t now = monotonic_ms();
        if (now >= deadline_ms) {
            error = "connect to " + a.text + ": timed out";
            ::close(fd);
            return -1;
        }
        pollfd fds[2] = {{fd, POLLOUT, 0}, {g_signal_pipe[0], POLLIN, 0}};
        int n = poll(fds, g_signal_pipe[0] >= 0 ? 2 : 1,
                     int(std::min<uint64_t>(deadline_ms - now, INT_MAX)));
        if (n < 0 && errno != EINTR) {
            error = std::string("poll: ") + std::strerror(errno);
            ::close(fd);
            return -1;
        }
        if (interrupted()) {
            status = SessionStatus::Interrupted;
            error = "interrupted";
            ::close(fd);
            return -1;
        }
        if (n > 0 && fds[0].revents) {
            int err = 0;
            socklen_t len = sizeof err;
            if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
            if (err == 0) return fd;
            error = "connect to " + a.text + ": " + std::strerror(err);
            ::close(fd);
            return -1;
        }
    }
}

}  // namespace

// ---- the session ----

Session::~Session() { reset(); }

void Session::reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    conn_.reset();
    ch_ = 0;
    inbox_.clear();
    opened_ = channel_open_ = consuming_ = false;
    binds_ok_ = 0;
    failed_ = false;
    fail_status_ = SessionStatus::Lost;
    fail_error_.clear();
}

void Session::drain_events() {
    if (!conn_) return;
    amqp::Event ev;
    auto fail = [&](SessionStatus s, std::string why) {
        if (failed_) return;
        failed_ = true;
        fail_status_ = s;
        fail_error_ = std::move(why);
    };
    while (conn_->next_event(ev)) {
        switch (ev.kind) {
        case amqp::EventKind::Opened: opened_ = true; break;
        case amqp::EventKind::ChannelOpened: channel_open_ = true; break;
        case amqp::EventKind::QueueBound: ++binds_ok_; break;
        case amqp::EventKind::ExchangeDeclared: ++declares_ok_; break;
        case amqp::EventKind::ConsumeOk: consuming_ = true; break;
        case amqp::EventKind::Delivery:
        case amqp::EventKind::Returned: {
            Incoming in;
            in.kind = ev.kind == amqp::EventKind::Delivery ? Incoming::Kind::Message
                                                           : Incoming::Kind::Returned;
            in.exchange = std::move(ev.exchange);
            in.routing_key = std::move(ev.routing_key);
            in.content_type = ev.properties.content_type.value_or("");
            in.body = std::move(ev.body);
            in.code = ev.code;
            in.text = std::move(ev.text);
            inbox_.push_back(std::move(in));
            break;
        }
        case amqp::EventKind::ServerCancel:
            fail(SessionStatus::Lost, "the broker cancelled our consumer (queue deleted?)");
            break;
        case amqp::EventKind::ChannelClosed:
            fail(consuming_ ? SessionStatus::Lost : SessionStatus::Refused,
                 "the broker closed the channel: " + std::to_string(ev.code) + " " + ev.text);
            break;
        case amqp::EventKind::Closed:
            switch (ev.close_reason) {
            case amqp::CloseReason::AuthFailure:
                fail(SessionStatus::Refused, peer_ + ": " + ev.text);
                break;
            case amqp::CloseReason::HeartbeatTimeout:
                fail(SessionStatus::Lost, "the broker " + peer_ + " stopped answering");
                break;
            case amqp::CloseReason::ProtocolError:
                fail(SessionStatus::Lost, "protocol error with " + peer_ + ": " +
                                              std::to_string(ev.code) + " " + ev.text);
                break;
            default:
                fail(SessionStatus::Lost,
                     "the broker " + peer_ + " closed the connection" +
                         (ev.code ? ": " + std::to_string(ev.code) + " " + ev.text
                                  : ev.text.empty() ? std::string() : ": " + ev.text));
                break;
            }
            break;
        default: break;  // declare-ok, qos-ok, blocked...: nothing to do
        }
    }
}

bool Session::flush_some() {
    while (fd_ >= 0 && conn_ && conn_->wants_write()) {
        const std::string& out = conn_->output();
        ssize_t n = write(fd_, out.data(), out.size());
        if (n > 0) {
            conn_->consume_output(size_t(n));
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
        conn_->transport_closed(monotonic_ms(), std::string("write: ") + std::strerror(errno));
        ::close(fd_);
        fd_ = -1;
        return false;
    }
    return true;
}

template <typename Done>
SessionStatus Session::pump(uint64_t deadline_ms, Done done, std::string& error) {
    for (;;) {
        drain_events();
        if (done()) return SessionStatus::Ok;
        if (failed_) {
            error = fail_error_;
            return fail_status_;
        }
        if (fd_ < 0 || !conn_) {
            error = "not connected";
            return SessionStatus::Lost;
        }
        if (interrupted()) {
            error = "interrupted";
            return SessionStatus::Interrupted;
        }
        uint64_t now = monotonic_ms();
        if (now >= deadline_ms) {
            error = "timed out";
            return SessionStatus::Timeout;
        }
        uint64_t wake = std::min(deadline_ms, conn_->next_deadline());
        int timeout = wake <= now ? 0 : int(std::min<uint64_t>(wake - now, INT_MAX));
        short events = POLLIN;
        if (conn_->wants_write()) events |= POLLOUT;
        pollfd fds[2] = {{fd_, events, 0}, {g_signal_pipe[0], POLLIN, 0}};
        int n = poll(fds, g_signal_pipe[0] >= 0 ? 2 : 1, timeout);
        if (n < 0 && errno != EINTR) {
            error = std::string("poll: ") + std::strerror(errno);
            return SessionStatus::Lost;
        }
        now = monotonic_ms();
        if (n > 0 && (fds[0].revents & POLLOUT)) flush_some();
        if (n > 0 && fd_ >= 0 && (fds[0].revents & (POLLIN | POLLHUP | POLLERR))) {
            char buf[65536];
            ssize_t r = read(fd_, buf, sizeof buf);
            if (r > 0) {
                conn_->feed(buf, size_t(r), now);
            } else if (r == 0 || (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)) {
                std::string why = r == 0 ? "the TCP connection ended"
                                         : std::string("read: ") + std::strerror(errno);
                if (!conn_->is_open()) why += std::string(" ") + conn_->handshake_stage();
                conn_->transport_closed(now, std::move(why));
                ::close(fd_);
                fd_ = -1;
            }
        }
        if (conn_) conn_->tick(now);
        // A Closed event may have queued a last frame (close-ok): send it
        // before the socket goes.
        if (conn_ && conn_->is_closed() && fd_ >= 0) flush_some();
    }
}

SessionStatus Session::open(const SessionOptions& opt, const std::string& queue,
                            const std::vector<std::string>& keys, uint64_t deadline_ms,
                            std::string& error) {
    reset();
    std::string last_error = "no broker configured";
    SessionStatus last_status = SessionStatus::Unreachable;
    bool connected = false;
    for (const Broker& b : opt.brokers) {
        std::vector<Address> addrs;
        if (!resolve(b, addrs, last_error)) continue;
        for (const Address& a : addrs) {
            uint64_t attempt_deadline = std::min(deadline_ms, monotonic_ms() + opt.connect_timeout_ms);
            SessionStatus st;
            int fd = connect_by(a, attempt_deadline, st, last_error);
            if (fd < 0) {
                if (st == SessionStatus::Interrupted) {
                    error = last_error;
                    return st;
                }
                continue;
            }
            fd_ = fd;
            peer_ = a.text;
            amqp::ConnectionOptions co;
            co.login = opt.login;
            co.password = opt.password;
            co.vhost = opt.vhost;
            co.product = "urctl";
            co.version = UR_VERSION;
            co.connection_name = opt.connection_name;
            conn_ = std::make_unique<amqp::Connection>(co);
            conn_->start(monotonic_ms());
            std::string why;
            SessionStatus s = pump(attempt_deadline, [&] { return opened_; }, why);
            if (s == SessionStatus::Ok) {
                connected = true;
                break;
            }
            if (s == SessionStatus::Interrupted || s == SessionStatus::Refused) {
                error = why;
                reset();
                return s;
            }
            last_error = s == SessionStatus::Timeout
                             ? "no AMQP handshake from " + a.text + " in time"
                             : why;
            reset();
        }
        if (connected) break;
    }
    if (!connected) {
        error = last_error;
        return last_status;
    }

    ch_ = conn_->open_channel();
    if (ch_ == 0) {
        error = "the broker allows no channel";
        reset();
        return SessionStatus::Refused;
    }
    std::string why;
    SessionStatus s = pump(deadline_ms, [&] { return channel_open_; }, why);
    if (s == SessionStatus::Ok) {
        // Pipelined: the broker answers in order on the channel.
        conn_->queue_declare(ch_, queue, false, false, true, true);
        for (const std::string& k : keys) conn_->queue_bind(ch_, queue, "amq.topic", k);
        conn_->basic_consume(ch_, queue, "", true, false);
        s = pump(deadline_ms, [&] { return consuming_; }, why);
    }
    if (s != SessionStatus::Ok) {
        error = s == SessionStatus::Timeout ? "the broker " + peer_ + " did not set up our queue in time"
                                            : why;
        reset();
        return s;
    }
    return SessionStatus::Ok;
}

bool Session::publish(std::string_view routing_key, std::string_view body, bool mandatory,
                      std::string& error) {
    if (!conn_ || !conn_->is_open()) return true;  // next() says Lost
    amqp::BasicProperties props;
    props.content_type = "application/json";
    std::string why;
    conn_->basic_publish(ch_, "amq.topic", routing_key, props, body, mandatory, &why);
    if (why.empty()) return true;
    error = std::move(why);
    return false;
}

SessionStatus Session::next(Incoming& in, uint64_t deadline_ms, std::string& error) {
    SessionStatus s = pump(deadline_ms, [&] { return !inbox_.empty(); }, error);
    if (s == SessionStatus::Ok) {
        in = std::move(inbox_.front());
        inbox_.pop_front();
    }
    return s;
}

SessionStatus Session::sync(uint64_t deadline_ms, std::string& error) {
    if (!conn_ || fd_ < 0 || failed_) {
        error = failed_ ? fail_error_ : "not connected";
        return failed_ ? fail_status_ : SessionStatus::Lost;
    }
    const uint32_t before = declares_ok_;
    conn_->exchange_declare(ch_, "amq.topic", "topic", /*passive=*/true, true, false);
    return pump(deadline_ms, [&] { return declares_ok_ > before; }, error);
}

void Session::close(uint64_t deadline_ms) {
    if (conn_ && fd_ >= 0 && !conn_->is_closed()) {
        conn_->close(200, "urctl done");
        // The close handshake must not be cut short by the signal that
        // ended the command: pump without watching it.
        for (;;) {
            drain_events();
            flush_some();
            if (!conn_ || fd_ < 0 || conn_->is_closed()) break;
            uint64_t now = monotonic_ms();
            if (now >= deadline_ms) break;
            short events = POLLIN;
            if (conn_->wants_write()) events |= POLLOUT;
            pollfd pfd{fd_, events, 0};
            int n = poll(&pfd, 1, int(std::min<uint64_t>(deadline_ms - now, 1000)));
            if (n < 0 && errno != EINTR) break;
            now = monotonic_ms();
            if (n > 0 && (pfd.revents & (POLLIN | POLLHUP | POLLERR))) {
                char buf[65536];
                ssize_t r = read(fd_, buf, sizeof buf);
                if (r > 0)
                    conn_->feed(buf, size_t(r), now);
                else if (r == 0 || (errno != EINTR && errno != EAGAIN))
                    break;
            }
            conn_->tick(now);
        }
    }
    reset();
}

}  // namespace urctl
