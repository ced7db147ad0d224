#include "tools/ur-bench/client.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>


namespace bench {

uint64_t now_ns() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1000000000u + uint64_t(ts.tv_nsec);
}

static uint64_t now_ms() { return now_ns() / 1000000u; }

Client::~Client() {
    if (fd_ >= 0) close(fd_);
}

bool Client::connect(const std::string& host, uint16_t port, std::string& error,
                     uint64_t timeout_ms, bool await_channel) {
    // Our own connect: libtools.a links after libur.a, so src/net.cpp is
    // out of reach.  IPv4 numeric addresses only (the benchmark is loopback).
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    if (inet_pton(AF_INET, host.c_str(), &sa.sin_addr) != 1) {
        error = "not an IPv4 address: " + host;
        return false;
    }
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) {
        error = std::string("socket: ") + std::strerror(errno);
        return false;
    }
    int one = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    uint64_t deadline = now_ms() + timeout_ms;
    int rc;
    do rc = ::connect(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
    while (rc != 0 && errno == EINTR);
    if (rc != 0) {
        error = std::string("connect: ") + std::strerror(errno);
        return false;
    }
    fcntl(fd_, F_SETFL, fcntl(fd_, F_GETFL) | O_NONBLOCK);
    amqp::ConnectionOptions o;
    o.heartbeat = 0;
    o.product = "ur-bench";
    conn_ = std::make_unique<amqp::Connection>(o);
    conn_->start(now_ms());
    if (!await([&] { return conn_->is_open(); }, deadline - std::min(deadline, now_ms()))) {
        error = "AMQP handshake failed: " + error_;
        return false;
    }
    ch_ = conn_->open_channel();
    got_ok_ = false;
    if (!await_channel) return true;  // what follows goes out behind the channel.open
    if (!await([&] { return got_ok_; }, 10000)) {
        error = "channel.open failed: " + error_;
        return false;
    }
    return true;
}

void Client::drain_events() {
    amqp::Event ev;
    while (conn_ && conn_->next_event(ev)) {
        switch (ev.kind) {
        case amqp::EventKind::Delivery:
            deliveries.push_back(std::move(ev));
            ev = amqp::Event();
            break;
        case amqp::EventKind::Confirmed:
            if (ev.multiple) {
                confirms += ev.delivery_tag - last_confirm_;
                last_confirm_ = ev.delivery_tag;
            } else {
                ++confirms;
                if (ev.delivery_tag > last_confirm_) last_confirm_ = ev.delivery_tag;
            }
            break;
        case amqp::EventKind::QueueDeclared:
            last_queue_ = ev.queue;
            got_ok_ = true;
            break;
        case amqp::EventKind::ConsumeOk:
            ++consume_oks;
            got_ok_ = true;
            break;
        case amqp::EventKind::ChannelOpened:
        case amqp::EventKind::QueueBound:
        case amqp::EventKind::ConfirmSelected:
            got_ok_ = true;
            break;
        case amqp::EventKind::ChannelClosed:
        case amqp::EventKind::Closed:
            error_ = std::string(amqp::to_string(ev.kind)) + " " + std::to_string(ev.code) + " " +
                     ev.text;
            if (ev.kind == amqp::EventKind::Closed) {
                flush();
                close(fd_);
                fd_ = -1;
            }
            break;
        default:
            break;
        }
    }
}

bool Client::flush() {
    while (fd_ >= 0 && conn_ && conn_->wants_write()) {
        std::string_view out = conn_->pending_output();
        ssize_t n = write(fd_, out.data(), out.size());
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
        if (n < 0) {
            error_ = std::string("write: ") + std::strerror(errno);
            close(fd_);
            fd_ = -1;
            return false;
        }
        conn_->consume_output(size_t(n));
    }
    return fd_ >= 0;
}

bool Client::on_ready(short revents) {
    if (fd_ < 0) return false;
    if (revents & (POLLIN | POLLHUP | POLLERR)) {
        static char buf[1 << 16];
        for (int i = 0; i < 64 && fd_ >= 0; ++i) {
            ssize_t n = read(fd_, buf, sizeof buf);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
            if (n <= 0) {
                conn_->transport_closed(now_ms(), n == 0 ? "EOF" : std::strerror(errno));
                drain_events();
                if (fd_ >= 0) close(fd_);
                fd_ = -1;
                if (error_.empty()) error_ = "connection lost";
                return false;
            }
            conn_->feed(buf, size_t(n), now_ms());
            drain_events();
        }
    }
    return flush();
}

bool Client::await(const std::function<bool()>& done, uint64_t timeout_ms) {
    return pump({this}, done, timeout_ms);
}

std::string Client::declare_queue(const std::string& name) {
    got_ok_ = false;
    last_queue_.clear();
    conn_->queue_declare(ch_, name, false, false, true, true);
    flush();
    if (!await([&] { return got_ok_; }, 10000)) return "";
    return last_queue_;
}

bool Client::bind(const std::string& queue, const std::string& key) {
    got_ok_ = false;
    conn_->queue_bind(ch_, queue, "amq.topic", key);
    flush();
    return await([&] { return got_ok_; }, 10000);
}

bool Client::consume(const std::string& queue, bool no_ack) {
    got_ok_ = false;
    conn_->basic_consume(ch_, queue, "", no_ack, false);
    flush();
    return await([&] { return got_ok_; }, 10000);
}

bool Client::confirm_select() {
    got_ok_ = false;
    conn_->confirm_select(ch_);
    flush();
    return await([&] { return got_ok_; }, 10000);
}

uint64_t Client::publish(std::string_view key, std::string_view body) {
    amqp::BasicProperties p;
    p.content_type = "application/json";
    uint64_t seq = conn_->basic_publish(ch_, "amq.topic", key, p, body);
    flush();
    return seq;
}

bool Client::close_connection(uint64_t timeout_ms) {
    if (!ok()) return false;
    conn_->close();
    flush();
    return await([&] { return fd_ < 0; }, timeout_ms);
}

void Client::ack(uint64_t tag) {
    conn_->basic_ack(ch_, tag);
    flush();
}

bool pump(const std::vector<Client*>& clients, const std::function<bool()>& done,
          uint64_t timeout_ms) {
    uint64_t deadline = now_ms() + timeout_ms;
    std::vector<pollfd> fds(clients.size());
    for (;;) {
        if (done()) return true;
        uint64_t now = now_ms();
        if (now >= deadline) return false;
        for (size_t i = 0; i < clients.size(); ++i) {
            if (clients[i]->fd() < 0) return false;
            fds[i] = {clients[i]->fd(), short(POLLIN | (clients[i]->wants_write() ? POLLOUT : 0)),
                      0};
        }
        int n = poll(fds.data(), fds.size(), int(deadline - now));
        if (n < 0 && errno != EINTR) return false;
        for (size_t i = 0; i < clients.size() && n > 0; ++i)
            if (fds[i].revents && !clients[i]->on_ready(fds[i].revents)) return done();
    }
}

}  // namespace bench
