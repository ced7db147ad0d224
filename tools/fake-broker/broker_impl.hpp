// Internals of fake::Broker shared by broker.cpp (loop, sockets, timers),
// server.cpp (the AMQP server side: handshake, channels, queues, basic) and
// control.cpp (control commands).  Not for use outside tools/fake-broker.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "amqp/frame.hpp"
#include "amqp/methods.hpp"
#include "tools/fake-broker/broker.hpp"

namespace fake {

using Millis = int64_t;  // CLOCK_MONOTONIC milliseconds
Millis now_ms();

// Reply codes the codec does not name.
constexpr uint16_t kNoRoute = 312;
constexpr uint16_t kNotFound = 404;
constexpr uint16_t kResourceLocked = 405;
constexpr uint16_t kPreconditionFailed = 406;
constexpr uint16_t kInternalError = 541;

struct Message {
    std::string exchange, routing_key;
    amqp::BasicProperties properties;
    std::shared_ptr<const std::string> body;  // shared by every queue it went to
    bool redelivered = false;
};

struct Consumer {
    std::string tag;
    uint64_t conn_id = 0;
    uint16_t channel = 0;
    bool no_ack = false;
    uint16_t prefetch = 0;  // 0: unlimited
    uint32_t unacked = 0;
};

struct Queue {
    std::string name;
    bool durable = false, exclusive = false, auto_delete = false;
    uint64_t owner = 0;                // connection id when exclusive
    std::deque<Message> ready;
    std::vector<Consumer> consumers;   // delivery is round robin over these
    size_t next_consumer = 0;
    uint32_t unacked = 0;
};

struct Binding {
    std::string queue, key;
};

struct Exchange {
    std::string name, type;  // "direct" or "topic" ("" is the default exchange)
    std::vector<Binding> bindings;
};

struct Unacked {
    std::string queue, consumer_tag;
    Message message;
};

enum class ChannelState { Open, Closing };  // Closing: sent channel.close, awaiting close-ok

struct Channel {
    uint16_t id = 0;
    uint64_t conn_id = 0;
    ChannelState state = ChannelState::Open;
    bool flow_active = true;
    uint16_t prefetch = 0;        // from basic.qos, for consumers created after it
    bool stalled = false;         // a declare taken under stall-declares: all after it waits
    bool confirm = false;
    uint64_t publish_seq = 0;     // last publish sequence number (confirm mode)
    uint64_t delivery_tag = 0;    // last delivery tag handed out
    std::map<uint64_t, Unacked> unacked;
    std::map<std::string, std::string> consumers;  // consumer tag -> queue name

    // A publish being assembled: method, then header, then body frames.
    std::optional<amqp::BasicPublish> publish;
    bool have_header = false;
    amqp::ContentHeader header;
    std::string body;
};

enum class ConnState {
    AwaitHeader,   // protocol header not yet received
    AwaitStartOk,
    AwaitTuneOk,
    AwaitOpen,
    Open,
    Closing,       // we sent connection.close; only close/close-ok matter now
};

struct PendingConfirm {
    Millis due = 0;
    uint16_t channel = 0;
    uint64_t seq = 0;
};

struct Conn {
    uint64_t id = 0;
    int fd = -1;
    std::string peer;
    ConnState state = ConnState::AwaitHeader;
    std::string header_bytes;      // partial protocol header
    amqp::FrameParser parser;
    std::string user;

    uint16_t channel_max = 0;
    uint32_t frame_max = amqp::kFrameMinSize;
    uint16_t heartbeat = 0;        // negotiated, seconds
    Millis accepted = 0, last_recv = 0, last_send = 0, closing_since = 0;

    std::map<uint16_t, Channel> channels;
    std::deque<PendingConfirm> confirms;

    // Output: bytes [out_off, out.size()) are still to be written.
    std::string out;
    size_t out_off = 0;
    uint64_t queued_total = 0, written_total = 0;

    // Fault injection: after `drop_after` more frames, close the TCP
    // connection once written_total reaches drop_at (no connection.close).
    int64_t drop_after = -1;
    std::optional<uint64_t> drop_at;

    bool paused = false;           // blocked: stopped reading at a publish
    std::string stash;             // input held while paused
    bool close_after_flush = false;
    bool dead = false;             // to be reaped at the end of the pass
    std::string dead_reason;
};

struct PendingCommand {
    std::string line;
    std::function<void(const std::string&)> reply;
    std::optional<Millis> deadline;   // for wait-* commands, set on first try
};

struct Broker::Impl {
    explicit Impl(Options o);
    ~Impl();

    Options opt;
    std::mt19937_64 rng;
    int listen_fd = -1;
    uint16_t bound_port = 0;
    int wake_r = -1, wake_w = -1;
    int control_in = -1, control_out = -1;
    std::string control_buf;
    std::atomic<bool> stopping{false};  // set by stop(), maybe from a signal handler
    bool stopped = false;               // guarded by inbox_mu
    std::vector<char> read_buf;

    std::mutex inbox_mu;
    std::deque<PendingCommand> inbox;   // from other threads, guarded by inbox_mu
    std::deque<PendingCommand> commands;  // loop thread only; head may be waiting

    uint64_t next_conn_id = 1;
    std::map<uint64_t, std::unique_ptr<Conn>> conns;
    std::map<std::string, Queue> queues;
    std::map<std::string, Exchange> exchanges;
    std::set<std::string> dirty;        // queues that may have deliverable messages

    // Fault injection state.
    Millis frozen_until = 0;
    bool refuse_login = false;
    std::set<std::string> locked_patterns;
    // As RabbitMQ 4.3 as shipped: a queue neither durable nor exclusive
    // closes the connection (541, deprecated feature transient_nonexcl_queues).
    bool deny_transient = false;
    // Queue declares are taken and never answered (a broker whose queue
    // processes stall), heartbeats going on.
    bool stall_declares = false;
    bool ignore_prefetch = false;  // deliver past basic.qos
    Millis client_silence = 0;  // a client silent this long is dropped; 0: 2 heartbeats
    std::string product = "ur-fake-broker", version = "0.1.0";  // in connection.start
    Millis confirm_delay = 0;
    bool blocked = false;

    // History of publishes (by clients and by the "publish" command).
    std::vector<std::string> published_keys;
    struct Recent { std::string exchange, key, body; };
    std::deque<Recent> recent;          // the last kRecent, bodies cut to 1 MiB
    uint64_t ack_frames = 0, acked_messages = 0;  // basic.ack received, and what they settled
    static constexpr size_t kRecent = 1000;

    // ---- broker.cpp: loop and I/O ----
    Status do_listen(std::string* error);
    void run();
    void wake();
    bool frozen(Millis now) const { return now < frozen_until; }
    void accept_all(Millis now);
    void read_conn(Conn& c, Millis now);
    void flush_conn(Conn& c);
    void feed(Conn& c, const char* data, size_t n, Millis now);
    Millis timers(Millis now);  // returns the next deadline
    void reap();
    void kill_conn(Conn& c, const std::string& why);
    void release_conn(Conn& c);
    void event(const std::string& line);
    void read_control();

    // Frame output, counted for drop-after.
    bool may_send(Conn& c) const;
    void sent_frame(Conn& c);
    void send_method(Conn& c, uint16_t channel, const amqp::Method& m);
    void send_content(Conn& c, uint16_t channel, const amqp::Method& m,
                      const amqp::BasicProperties& props, const std::string& body);
    void send_heartbeat(Conn& c);
    void send_raw_frame(Conn& c, std::string_view bytes);

    // ---- server.cpp: AMQP server side ----
    void on_protocol_header(Conn& c, Millis now);
    // Handles one frame; returns false when the connection must stop
    // processing input (closed, closing after an error, or paused).
    bool on_frame(Conn& c, const amqp::FrameView& f, Millis now);
    void on_method(Conn& c, uint16_t channel, amqp::Method& m, Millis now);
    void on_channel_method(Conn& c, Channel& ch, amqp::Method& m, Millis now);
    void connection_error(Conn& c, uint16_t code, const std::string& text,
                          uint16_t class_id = 0, uint16_t method_id = 0);
    void channel_error(Conn& c, Channel& ch, uint16_t code, const std::string& text,
                       uint16_t class_id, uint16_t method_id);
    void release_channel(Conn& c, Channel& ch);
    void finish_publish(Conn& c, Channel& ch, Millis now);
    // Routes a message; returns the number of queues it went to, or -1 if
    // the exchange does not exist.
    int route(const std::string& exchange, const std::string& key,
              const amqp::BasicProperties& props, std::shared_ptr<const std::string> body);
    void record_publish(const std::string& exchange, const std::string& key,
                        const std::string& body);
    void dispatch_all();
    void dispatch(Queue& q);
    void deliver(Conn& c, Channel& ch, Consumer& cons, Queue& q, Message m);
    void ack_one(Channel& ch, std::map<uint64_t, Unacked>::iterator it, bool requeue);
    void requeue(const std::string& queue, Message m);
    // Removes a consumer (and auto-deletes its queue if it was the last).
    // `notify` sends basic.cancel to the consumer's channel.
    void remove_consumer(const std::string& queue, uint64_t conn_id, uint16_t channel,
                         const std::string& tag, bool notify);
    // Deletes a queue; its consumers get basic.cancel.  Returns the number
    // of ready messages it held.
    uint32_t delete_queue(const std::string& name);
    std::string random_name(const char* prefix);
    Conn* find_conn(uint64_t id);
    Channel* find_channel(uint64_t conn_id, uint16_t channel);

    // ---- control.cpp ----
    void submit(PendingCommand cmd);
    void run_commands(Millis now);
    // Runs one command.  Returns the answer, or nullopt if it is waiting
    // for a condition (it is tried again on each pass until cmd.deadline).
    std::optional<std::string> execute(PendingCommand& cmd, Millis now);
    Millis command_deadline() const;
};

}  // namespace fake
