// The loop: sockets, timers, output queues.  See broker.hpp.
#include "tools/fake-broker/broker.hpp"

#include <arpa/inet.h>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>

#include "tools/fake-broker/broker_impl.hpp"

namespace fake {

namespace {

constexpr size_t kReadChunk = 64 * 1024;
constexpr int kReadsPerPass = 16;      // fairness: 1 MiB per connection per pass
constexpr Millis kCloseTimeout = 3000;  // after our connection.close

#ifdef MSG_NOSIGNAL
constexpr int kSendFlags = MSG_NOSIGNAL;
#else
constexpr int kSendFlags = 0;
#endif

bool set_fd_flags(int fd) {
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return false;
    int fdfl = fcntl(fd, F_GETFD);
    return fdfl >= 0 && fcntl(fd, F_SETFD, fdfl | FD_CLOEXEC) == 0;
}

void close_fd(int& fd) {
    if (fd >= 0) close(fd);  // no EINTR retry: the fd is gone either way
    fd = -1;
}

void write_all(int fd, std::string_view s) {
    while (!s.empty()) {
        ssize_t n = write(fd, s.data(), s.size());
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;  // the reader went away; nothing useful to do
        s.remove_prefix(size_t(n));
    }
}

}  // namespace

Millis now_ms() {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return Millis(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

Broker::Impl::Impl(Options o) : opt(o), rng(o.seed), read_buf(kReadChunk) {
#ifndef MSG_NOSIGNAL
    signal(SIGPIPE, SIG_IGN);  // no per-call way to avoid it here
#endif
    int p[2];
    if (pipe(p) == 0) {
        set_fd_flags(p[0]);
        set_fd_flags(p[1]);
        wake_r = p[0];
        wake_w = p[1];
    }
    exchanges[""] = Exchange{"", "direct", {}};
    exchanges["amq.direct"] = Exchange{"amq.direct", "direct", {}};
    exchanges["amq.topic"] = Exchange{"amq.topic", "topic", {}};
}

Broker::Impl::~Impl() {
    for (auto& kv : conns) close_fd(kv.second->fd);
    close_fd(listen_fd);
    close_fd(wake_r);
    close_fd(wake_w);
}

Status Broker::Impl::do_listen(std::string* error) {
    if (wake_r < 0) {
        if (error) *error = std::string("pipe: ") + strerror(errno);
        return Status::SystemError;
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || !set_fd_flags(fd)) {
        if (error) *error = std::string("socket: ") + strerror(errno);
        if (fd >= 0) close(fd);
        return Status::SystemError;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons(bound_port ? bound_port : opt.port);
    if (bind(fd, reinterpret_cast<struct sockaddr*>(&sa), sizeof sa) < 0 ||
        ::listen(fd, 1024) < 0) {
        if (error)
            *error = "bind/listen 127.0.0.1:" + std::to_string(ntohs(sa.sin_port)) + ": " +
                     strerror(errno);
        close(fd);
        return Status::SystemError;
    }
    socklen_t len = sizeof sa;
    if (getsockname(fd, reinterpret_cast<struct sockaddr*>(&sa), &len) < 0) {
        if (error) *error = std::string("getsockname: ") + strerror(errno);
        close(fd);
        return Status::SystemError;
    }
    bound_port = ntohs(sa.sin_port);
    listen_fd = fd;
    return Status::Ok;
}

void Broker::Impl::wake() {
    char b = 1;
    while (write(wake_w, &b, 1) < 0 && errno == EINTR) {
    }
}

void Broker::Impl::event(const std::string& line) {
    if (opt.verbose && control_out >= 0) write_all(control_out, "event " + line + "\n");
}

// ---- output ----

bool Broker::Impl::may_send(Conn& c) const {
    return !c.dead && !c.drop_at && c.fd >= 0;
}

void Broker::Impl::sent_frame(Conn& c) {
    c.queued_total = c.written_total + (c.out.size() - c.out_off);
    if (c.drop_after > 0 && --c.drop_after == 0) {
        c.drop_at = c.queued_total;
        c.drop_after = -1;
    }
}

void Broker::Impl::send_raw_frame(Conn& c, std::string_view bytes) {
    if (!may_send(c)) return;
    c.out.append(bytes.data(), bytes.size());
    c.last_send = now_ms();
    sent_frame(c);
}

void Broker::Impl::send_method(Conn& c, uint16_t channel, const amqp::Method& m) {
    if (!may_send(c)) return;
    amqp::encode_method_frame(c.out, channel, m);
    c.last_send = now_ms();
    sent_frame(c);
}

void Broker::Impl::send_heartbeat(Conn& c) {
    if (!may_send(c)) return;
    amqp::encode_heartbeat(c.out);
    c.last_send = now_ms();
    sent_frame(c);
}

void Broker::Impl::send_content(Conn& c, uint16_t channel, const amqp::Method& m,
                                const amqp::BasicProperties& props, const std::string& body) {
    send_method(c, channel, m);
    if (!may_send(c)) return;
    amqp::ContentHeader h;
    h.body_size = body.size();
    h.properties = props;
    amqp::encode_header_frame(c.out, channel, h);
    sent_frame(c);
    // Body frames one at a time so that drop-after can cut between them.
    size_t chunk = c.frame_max - amqp::kFrameOverhead;
    for (size_t at = 0; at < body.size() && may_send(c); at += chunk) {
        amqp::encode_frame(c.out, amqp::kFrameBody, channel,
                           std::string_view(body).substr(at, chunk));
        sent_frame(c);
    }
}

void Broker::Impl::flush_conn(Conn& c) {
    while (c.out_off < c.out.size()) {
        size_t want = c.out.size() - c.out_off;
        if (c.drop_at) want = size_t(std::min<uint64_t>(want, *c.drop_at - c.written_total));
        if (want == 0) break;
        ssize_t n = send(c.fd, c.out.data() + c.out_off, want, kSendFlags);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (n < 0) {
            kill_conn(c, std::string("write: ") + strerror(errno));
            return;
        }
        c.out_off += size_t(n);
        c.written_total += uint64_t(n);
    }
    if (c.drop_at && c.written_total >= *c.drop_at) {
        kill_conn(c, "drop-after");
        return;
    }
    if (c.out_off == c.out.size()) {
        // Everything written: start over rather than erase (erasing a prefix
        // each time would be quadratic), and give back a big buffer.
        if (c.out.capacity() > (4u << 20)) std::string().swap(c.out);
        else c.out.clear();
        c.out_off = 0;
        if (c.close_after_flush) kill_conn(c, "closed");
    } else if (c.out_off > (1u << 20) && c.out_off * 2 > c.out.size()) {
        c.out.erase(0, c.out_off);  // amortised: only when half is dead bytes
        c.out_off = 0;
    }
}

// ---- input ----

void Broker::Impl::read_conn(Conn& c, Millis now) {
    char* tbuf = read_buf.data();
    for (int i = 0; i < kReadsPerPass && !c.dead && !c.paused && !c.close_after_flush; i++) {
        ssize_t n = recv(c.fd, tbuf, kReadChunk, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (n < 0) {
            kill_conn(c, std::string("read: ") + strerror(errno));
            return;
        }
        if (n == 0) {
            kill_conn(c, "peer closed the connection");
            return;
        }
        c.last_recv = now;
        feed(c, tbuf, size_t(n), now);
        if (size_t(n) < kReadChunk) return;
    }
}

void Broker::Impl::feed(Conn& c, const char* data, size_t n, Millis now) {
    if (c.state == ConnState::AwaitHeader) {
        size_t take = std::min(n, amqp::kProtocolHeader.size() - c.header_bytes.size());
        c.header_bytes.append(data, take);
        data += take;
        n -= take;
        if (c.header_bytes.size() < amqp::kProtocolHeader.size()) return;
        on_protocol_header(c, now);
        if (c.dead || c.close_after_flush) return;
    }
    while (n > 0 && !c.dead && !c.close_after_flush) {
        amqp::FrameView f;
        amqp::FrameStatus st = c.parser.next(data, n, f);
        if (st == amqp::FrameStatus::NeedMore) return;
        if (st == amqp::FrameStatus::Error) {
            // The stream cannot be resynchronised: say why, then hang up.
            connection_error(c, c.parser.error_code(), "FRAME_ERROR - " + c.parser.error_text());
            c.close_after_flush = true;
            return;
        }
        // Blocked (connection.blocked): like RabbitMQ, stop reading at the
        // first publish and keep the rest until unblocked.
        if (blocked && c.state == ConnState::Open && f.type == amqp::kFrameMethod &&
            f.payload.size() >= 4 && amqp::get_u16(f.payload.data()) == 60 &&
            amqp::get_u16(f.payload.data() + 2) == 40) {
            std::string held;
            amqp::encode_frame(held, f.type, f.channel, f.payload);
            held.append(data, n);
            c.stash = std::move(held);
            c.paused = true;
            event("paused " + std::to_string(c.id));
            return;
        }
        if (!on_frame(c, f, now)) return;
    }
}

void Broker::Impl::accept_all(Millis now) {
    for (;;) {
        struct sockaddr_in sa;
        socklen_t len = sizeof sa;
        int fd = accept(listen_fd, reinterpret_cast<struct sockaddr*>(&sa), &len);
        if (fd < 0 && errno == EINTR) continue;
        if (fd < 0) return;  // EAGAIN, or out of fds: try again next pass
        if (!set_fd_flags(fd)) {
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        auto c = std::make_unique<Conn>();
        c->id = next_conn_id++;
        c->fd = fd;
        char ip[INET_ADDRSTRLEN] = "?";
        inet_ntop(AF_INET, &sa.sin_addr, ip, sizeof ip);
        c->peer = std::string(ip) + ":" + std::to_string(ntohs(sa.sin_port));
        c->accepted = c->last_recv = c->last_send = now;
        event("connect " + std::to_string(c->id) + " " + c->peer);
        conns[c->id] = std::move(c);
    }
}

void Broker::Impl::kill_conn(Conn& c, const std::string& why) {
    if (c.dead) return;
    c.dead = true;
    c.dead_reason = why;
}

void Broker::Impl::reap() {
    for (auto it = conns.begin(); it != conns.end();) {
        Conn& c = *it->second;
        if (!c.dead) {
            ++it;
            continue;
        }
        event("disconnect " + std::to_string(c.id) + " " + c.dead_reason);
        close_fd(c.fd);
        release_conn(c);
        it = conns.erase(it);
    }
}

Millis Broker::Impl::timers(Millis now) {
    Millis next = now + 60000;
    if (frozen(now)) return std::min(next, frozen_until);
    if (frozen_until != 0) {
        // Just thawed: the silence was ours, not the clients'.
        frozen_until = 0;
        for (auto& kv : conns) kv.second->last_recv = kv.second->last_send = now;
    }
    for (auto& kv : conns) {
        Conn& c = *kv.second;
        if (c.dead) continue;
        if (c.state != ConnState::Open && c.state != ConnState::Closing) {
            Millis limit = c.accepted + opt.handshake_timeout_ms;
            if (now >= limit) kill_conn(c, "handshake timeout");
            else next = std::min(next, limit);
        }
        if (c.state == ConnState::Closing) {
            Millis limit = c.closing_since + kCloseTimeout;
            if (now >= limit) kill_conn(c, "no connection.close-ok");
            else next = std::min(next, limit);
        }
        if (c.paused) c.last_recv = now;  // we are not reading: not its silence
        if (c.heartbeat > 0 && !c.dead) {
            Millis interval = Millis(c.heartbeat) * 1000;
            Millis silent_limit = c.last_recv + (client_silence ? client_silence : 2 * interval);
            if (now >= silent_limit) {
                kill_conn(c, "missed heartbeats from client");
                continue;
            }
            next = std::min(next, silent_limit);
            Millis beat = c.last_send + interval / 2;
            if (now >= beat) {
                send_heartbeat(c);
                beat = now + interval / 2;
            }
            next = std::min(next, beat);
        }
        while (!c.confirms.empty() && c.confirms.front().due <= now) {
            PendingConfirm pc = c.confirms.front();
            c.confirms.pop_front();
            Channel* ch = find_channel(c.id, pc.channel);
            if (ch && ch->state == ChannelState::Open)
                send_method(c, pc.channel, amqp::BasicAck{pc.seq, false});
        }
        if (!c.confirms.empty()) next = std::min(next, c.confirms.front().due);
    }
    return next;
}

void Broker::Impl::read_control() {
    char buf[4096];
    ssize_t n;
    do n = read(control_in, buf, sizeof buf);
    while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (n <= 0) {
        stopping = true;  // EOF on the control input: the driver is gone
        return;
    }
    control_buf.append(buf, size_t(n));
    size_t nl;
    while ((nl = control_buf.find('\n')) != std::string::npos) {
        std::string line = control_buf.substr(0, nl);
        control_buf.erase(0, nl + 1);
        if (!line.empty() && line.back() == '\r') line.pop_back();
        int out = control_out;
        PendingCommand cmd;
        cmd.line = std::move(line);
        cmd.reply = [out](const std::string& answer) { write_all(out, answer + "\n"); };
        commands.push_back(std::move(cmd));
    }
}

void Broker::Impl::run() {
    std::vector<struct pollfd> pfds;
    std::vector<uint64_t> ids;
    while (!stopping) {
        Millis now = now_ms();
        {
            std::lock_guard<std::mutex> lk(inbox_mu);
            while (!inbox.empty()) {
                commands.push_back(std::move(inbox.front()));
                inbox.pop_front();
            }
        }
        run_commands(now);
        if (!frozen(now)) dispatch_all();
        Millis next = timers(now);
        reap();
        next = std::min(next, command_deadline());
        bool is_frozen = frozen(now);
        if (!is_frozen) {
            for (auto& kv : conns) flush_conn(*kv.second);
            reap();
        }

        pfds.clear();
        ids.clear();
        pfds.push_back({wake_r, POLLIN, 0});
        if (control_in >= 0) pfds.push_back({control_in, POLLIN, 0});
        size_t listen_at = pfds.size();
        if (listen_fd >= 0 && !is_frozen) pfds.push_back({listen_fd, POLLIN, 0});
        size_t conns_at = pfds.size();
        if (!is_frozen) {
            for (auto& kv : conns) {
                Conn& c = *kv.second;
                short ev = 0;
                if (!c.paused && !c.close_after_flush) ev |= POLLIN;
                if (c.out_off < c.out.size()) ev |= POLLOUT;
                pfds.push_back({c.fd, ev, 0});
                ids.push_back(c.id);
            }
        }
        Millis wait = std::max<Millis>(0, next - now_ms());
        int rc = poll(pfds.data(), nfds_t(pfds.size()), int(std::min<Millis>(wait, 60000)));
        if (rc < 0 && errno != EINTR) {
            event(std::string("poll: ") + strerror(errno));
            break;
        }
        if (rc <= 0) continue;
        now = now_ms();
        if (pfds[0].revents) {
            char buf[256];
            while (read(wake_r, buf, sizeof buf) > 0) {
            }
        }
        if (control_in >= 0 && pfds[1].revents) read_control();
        if (listen_at < conns_at && pfds[listen_at].revents) accept_all(now);
        for (size_t i = 0; i < ids.size(); i++) {
            short re = pfds[conns_at + i].revents;
            if (!re) continue;
            Conn* c = find_conn(ids[i]);
            if (!c || c->dead) continue;
            if (re & (POLLIN | POLLHUP | POLLERR)) read_conn(*c, now);
            if (!c->dead && (re & POLLOUT)) flush_conn(*c);
        }
        reap();
    }
    // Stopped: answer whoever still waits, and forget the clients.
    {
        std::lock_guard<std::mutex> lk(inbox_mu);
        stopped = true;
        while (!inbox.empty()) {
            commands.push_back(std::move(inbox.front()));
            inbox.pop_front();
        }
    }
    for (auto& cmd : commands) cmd.reply("error broker stopped");
    commands.clear();
    for (auto& kv : conns) kill_conn(*kv.second, "broker stopped");
    reap();
}

Conn* Broker::Impl::find_conn(uint64_t id) {
    auto it = conns.find(id);
    return it == conns.end() ? nullptr : it->second.get();
}

Channel* Broker::Impl::find_channel(uint64_t conn_id, uint16_t channel) {
    Conn* c = find_conn(conn_id);
    if (!c) return nullptr;
    auto it = c->channels.find(channel);
    return it == c->channels.end() ? nullptr : &it->second;
}

// ---- public face ----

Broker::Broker(Options options) : impl_(std::make_unique<Impl>(options)) {}
Broker::~Broker() = default;
Status Broker::listen(std::string* error) { return impl_->do_listen(error); }
uint16_t Broker::port() const { return impl_->bound_port; }
void Broker::set_control(int in_fd, int out_fd) {
    impl_->control_in = in_fd;
    impl_->control_out = out_fd;
}
void Broker::run() {
    impl_->run();
}
void Broker::stop() {
    impl_->stopping = true;
    impl_->wake();
}

std::string Broker::command(std::string_view line) {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    std::string answer;
    PendingCommand cmd;
    cmd.line = std::string(line);
    cmd.reply = [&](const std::string& a) {
        std::lock_guard<std::mutex> lk(mu);
        answer = a;
        done = true;
        cv.notify_one();
    };
    {
        std::lock_guard<std::mutex> lk(impl_->inbox_mu);
        if (impl_->stopped) return "error broker stopped";
        impl_->inbox.push_back(std::move(cmd));
    }
    impl_->wake();
    std::unique_lock<std::mutex> lk(mu);
    cv.wait(lk, [&] { return done; });
    return answer;
}

}  // namespace fake
