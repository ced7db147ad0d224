// A small blocking-style AMQP client for ur-bench, on amqp::Connection:
// one TCP socket, one channel, a poll() pump.  Not for the agent: it
// waits synchronously for each setup reply, which a benchmark driver can
// afford and the agent cannot.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "amqp/connection.hpp"

namespace bench {

// Nanoseconds on CLOCK_MONOTONIC.
uint64_t now_ns();
inline double ms_since(uint64_t t0) { return double(now_ns() - t0) / 1e6; }

class Client {
public:
    // Connects to host:port, runs the handshake and opens channel 1.
    // False with a reason in `error` when any step fails or takes longer
    // than timeout_ms.  await_channel false: returns once channel.open is
    // queued, so that what is sent next goes out behind it (as the agent
    // does), the open-ok not awaited.
    bool connect(const std::string& host, uint16_t port, std::string& error,
                 uint64_t timeout_ms = 20000, bool await_channel = true);
    ~Client();

    // Synchronous setup requests on the channel: each waits for its -ok.
    // declare_queue("") asks for a server-named exclusive auto-delete queue
    // and returns its name ("" on failure).
    std::string declare_queue(const std::string& name);
    bool bind(const std::string& queue, const std::string& key);
    bool consume(const std::string& queue, bool no_ack = true);
    bool confirm_select();

    // Queues a publish on amq.topic (content-type application/json) and
    // writes as much as the socket takes.
    uint64_t publish(std::string_view key, std::string_view body);
    void ack(uint64_t tag);
    // connection.close, then waits for close-ok: everything sent before it
    // has been handled by the broker.  (Exiting with the socket open can
    // reset it with a publish still unread by the broker.)
    bool close_connection(uint64_t timeout_ms = 10000);

    // Deliveries received and not yet taken, oldest first.
    std::deque<amqp::Event> deliveries;
    uint64_t confirms = 0;  // publishes confirmed so far (multiple counted)
    size_t consume_oks = 0;  // basic.consume-ok replies so far

    // For requests this class does not wrap (pipelined set-up).
    amqp::Connection& conn() { return *conn_; }
    uint16_t channel() const { return ch_; }

    int fd() const { return fd_; }
    bool wants_write() const { return conn_ && conn_->wants_write(); }
    bool ok() const { return fd_ >= 0 && conn_ && conn_->is_open(); }
    const std::string& error() const { return error_; }
    // Reads what the socket has and flushes output; false once the link died.
    bool on_ready(short revents);
    bool flush();

private:
    bool await(const std::function<bool()>& done, uint64_t timeout_ms);
    void drain_events();

    int fd_ = -1;
    std::unique_ptr<amqp::Connection> conn_;
    uint16_t ch_ = 0;
    std::string error_;
    // Results of the last synchronous request.
    bool got_ok_ = false;
    std::string last_queue_;
    uint64_t last_confirm_ = 0;
};

// Pumps every client (and nothing else) until done() is true or
// timeout_ms passes.  Returns done()'s last value; false also when a
// client's link died.
bool pump(const std::vector<Client*>& clients, const std::function<bool()>& done,
          uint64_t timeout_ms);

}  // namespace bench
