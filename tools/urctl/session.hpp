// urctl's link to the broker: one socket, one amqp::Connection, one
// channel, and one exclusive auto-delete queue bound on amq.topic, driven
// by a small poll() loop.  Every call that waits takes an absolute
// monotonic deadline and returns by then; SIGINT/SIGTERM (once
// install_interrupt_handler() ran) make it return Interrupted.
#pragma once
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "amqp/connection.hpp"
#include "tools/urctl/options.hpp"

namespace urctl {

enum class SessionStatus {
    Ok,
    Unreachable,  // no broker accepted a TCP connection and the handshake
    Refused,      // login refused, or the broker refused our queue/bindings
    Lost,         // the connection (or channel, or consumer) went away
    Timeout,      // the deadline passed
    Interrupted,  // SIGINT or SIGTERM
};

// The exit code a failed session status maps to.
int exit_code(SessionStatus s);
const char* to_string(SessionStatus s);

struct SessionOptions {
    std::vector<Broker> brokers;
    std::string login = "guest", password = "guest", vhost = "/";
    uint64_t connect_timeout_ms = 10000;  // per broker, within the deadline
    std::string connection_name;          // shown by rabbitmqctl
};

// A message from our queue, or a mandatory publish the broker returned.
struct Incoming {
    enum class Kind { Message, Returned } kind = Kind::Message;
    std::string exchange, routing_key, content_type, body;
    uint16_t code = 0;  // Returned: reply code (312 NO_ROUTE)
    std::string text;   // Returned: reply text
};

// Milliseconds of CLOCK_MONOTONIC, and of the wall clock since the epoch.
uint64_t monotonic_ms();
uint64_t wall_ms();

// SIGINT and SIGTERM write a byte to a self-pipe that sessions poll.
// False with `error` when the pipe cannot be made.
bool install_interrupt_handler(std::string& error);
bool interrupted();

class Session {
public:
    Session() = default;
    ~Session();
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;

    // Connects to the first broker that answers (in order), logs in,
    // declares `queue` (exclusive, auto-delete, not durable), binds it on
    // amq.topic to every key and starts consuming (no-ack).  A refused
    // login stops at once (Refused); unreachable brokers are skipped.  On
    // failure `error` says why and the session holds nothing.
    SessionStatus open(const SessionOptions& opt, const std::string& queue,
                       const std::vector<std::string>& binding_keys, uint64_t deadline_ms,
                       std::string& error);

    // Queues a publish to amq.topic with content-type application/json.
    // With `mandatory`, an unroutable message comes back as a Returned
    // Incoming.  Output leaves during the next wait, which also reports a
    // lost connection.  False with `error` set when the publish was refused:
    // a routing key over 255 bytes (AMQP cannot carry it; it is never cut).
    bool publish(std::string_view routing_key, std::string_view body, bool mandatory,
                 std::string& error);

    // Waits for the next Incoming, flushing output meanwhile.  Ok with `in`
    // set; Timeout at the deadline; Lost / Interrupted as they happen.
    SessionStatus next(Incoming& in, uint64_t deadline_ms, std::string& error);

    // Waits until the broker has handled everything sent before: a
    // passive declare of amq.topic and its -ok, which the broker sends
    // after the return of any earlier mandatory publish (then in the
    // inbox).  Bounded by deadline_ms.
    SessionStatus sync(uint64_t deadline_ms, std::string& error);

    // Closes the connection politely (connection.close, wait for
    // close-ok), bounded by deadline_ms; then drops the socket.
    void close(uint64_t deadline_ms);

    // The broker that accepted us ("127.0.0.1:5672").
    const std::string& peer() const { return peer_; }

private:
    // Runs the loop until done() is true, the deadline passes, the
    // connection closes or a signal arrives.
    template <typename Done>
    SessionStatus pump(uint64_t deadline_ms, Done done, std::string& error);
    void drain_events();
    bool flush_some();
    void reset();

    int fd_ = -1;
    std::unique_ptr<amqp::Connection> conn_;
    uint16_t ch_ = 0;
    std::string peer_;
    std::deque<Incoming> inbox_;
    // Progress of open(): set as the events arrive.
    bool opened_ = false, channel_open_ = false, consuming_ = false;
    uint32_t binds_ok_ = 0;
    uint32_t declares_ok_ = 0;  // exchange.declare-ok (sync())
    // Set when the connection, channel or consumer is gone.
    bool failed_ = false;
    SessionStatus fail_status_ = SessionStatus::Lost;
    std::string fail_error_;
};

}  // namespace urctl
