// fake::Broker: a small AMQP 0-9-1 server for tests, built on our own codec
// (amqp/), with fault injection driven by one-line control commands.
//
// It is a single-threaded poll() loop on 127.0.0.1.  Typical in-process use:
//
//     fake::Broker broker;                  // Options{} : port 0 = any free
//     std::string err;
//     if (broker.listen(&err) != fake::Status::Ok) ...;
//     std::thread t([&] { broker.run(); });
//     ... connect to broker.port() ...
//     broker.command("drop-now");           // "ok dropped 1"
//     broker.stop(); t.join();
//
// As a subprocess (tools/fake-broker/main.cpp) the control commands come
// from a file descriptor instead, one per line, see set_control().  The
// command language is listed in control.cpp (and by the "help" command).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace fake {

enum class Status { Ok, SystemError };

struct Options {
    uint16_t port = 0;            // 0: let the kernel pick; see port()
    uint64_t seed = 0;            // for server-named queues and consumer tags
    uint16_t channel_max = 2047;  // offered in connection.tune
    uint32_t frame_max = 131072;
    uint16_t heartbeat = 60;      // seconds; 0 offers none
    uint64_t max_body = 256u << 20;  // larger publishes get 406 (channel)
    int handshake_timeout_ms = 10000;  // a client not open by then is dropped
    bool verbose = false;         // write "event ..." lines to the control output
    // Count the Ur agent's answers (ur.execute-reply.*, ur.ack*) as taken
    // even when no queue is bound to them: tests read what was published
    // (the "messages" commands) rather than bind a requester's queue, and
    // a mandatory answer no queue takes is returned (and sent again).
    bool reply_sink = false;
};

class Broker {
public:
    explicit Broker(Options options = {});
    ~Broker();
    Broker(const Broker&) = delete;
    Broker& operator=(const Broker&) = delete;

    // Binds and listens on 127.0.0.1:options.port.  On failure `error` says
    // what failed and the broker cannot run.
    Status listen(std::string* error);
    // The bound port, valid after listen() succeeded.
    uint16_t port() const;

    // Lines read from in_fd are control commands; each answer ("ok ..." or
    // "error ...") and, when verbose, each "event ..." line is written to
    // out_fd.  EOF on in_fd stops the loop.  Call before run().
    void set_control(int in_fd, int out_fd);

    // Serves until stop().  Call from one thread only.
    void run();
    // Makes run() return soon.  Safe from any thread and from a signal
    // handler (it only writes one byte to a pipe).
    void stop();

    // Runs one control command on the loop thread and returns its answer
    // line (without newline).  Blocks the calling thread until answered, so
    // it must not be called from the thread in run(); run() must be running
    // or be started by another thread.  After the loop has stopped it
    // answers "error broker stopped".
    std::string command(std::string_view line);

    struct Impl;

private:
    std::unique_ptr<Impl> impl_;
};

}  // namespace fake
