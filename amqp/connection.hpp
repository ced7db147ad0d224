// amqp::Connection: the client side of an AMQP 0-9-1 connection as a state
// machine without I/O.  The caller feeds received bytes and the monotonic
// time, pops events, writes output() to the socket and calls tick() at
// next_deadline().  Nothing here blocks, reads a clock or throws.
//
// Lifecycle: start() -> handshake (start/start-ok, tune/tune-ok, open) ->
// Opened event -> requests and events -> exactly one Closed event, after
// which nothing more happens and the caller flushes output() and drops the
// socket.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "amqp/frame.hpp"
#include "amqp/methods.hpp"
#include "amqp/wire.hpp"

namespace amqp {

struct ConnectionOptions {
    std::string login = "guest", password = "guest", vhost = "/";
    uint16_t heartbeat = 30;        // seconds we want; 0 = we want none
    uint32_t frame_max = 131072;    // our preference (>= 4096)
    uint16_t channel_max = 2047;    // our preference
    // A delivered or returned message declaring a larger body is read
    // and dropped, and delivered with Event::body_discarded set (no body).
    uint64_t max_body_size = 256u << 20;
    std::string product = "ur", version = "0.0.0", platform = "C++", connection_name;
};

enum class EventKind {
    Opened,          // connection.open-ok: ready
    ChannelOpened,   // channel
    QueueDeclared,   // channel, queue, message_count, consumer_count
    QueueBound, QueueDeleted, ExchangeDeclared, QosOk, ConfirmSelected,  // channel
    ConsumeOk,       // channel, consumer_tag
    CancelOk,        // channel, consumer_tag
    Delivery,        // channel, delivery_tag, redelivered, exchange, routing_key, consumer_tag, properties, body
    Returned,        // channel, code, text, exchange, routing_key, properties, body
    Confirmed,       // channel, delivery_tag (= publish sequence number), multiple
    Nacked,          // channel, delivery_tag, multiple
    ServerCancel,    // channel, consumer_tag  (basic.cancel from server)
    Blocked,         // text = reason
    Unblocked,
    ChannelClosed,   // channel, code, text, class_id, method_id (server closed it; we already sent close-ok)
    Closed,          // the connection is over; code, text, close_reason. Nothing more comes.
};
const char* to_string(EventKind k);

// AuthFailure: the broker refused us before open-ok, our login (403, or a
// dropped socket after start-ok) or the virtual host (530 to our open).
enum class CloseReason { ClosedByPeer, ProtocolError, HeartbeatTimeout, AuthFailure, ClosedByUs };
const char* to_string(CloseReason r);

struct Event {
    EventKind kind = EventKind::Opened;
    uint16_t channel = 0;
    uint64_t delivery_tag = 0;
    bool redelivered = false, multiple = false;
    std::string exchange, routing_key, consumer_tag, queue;
    uint32_t message_count = 0, consumer_count = 0;
    BasicProperties properties;
    std::string body;
    // A Delivery/Returned whose declared size exceeded max_body_size: its
    // bytes were read and dropped (the connection stays usable), `body` is
    // empty and `body_size` says how large it was.
    bool body_discarded = false;
    uint64_t body_size = 0;
    uint16_t code = 0, class_id = 0, method_id = 0;
    std::string text;
    CloseReason close_reason{};
};

class Connection {
public:
    explicit Connection(ConnectionOptions opt);

    void start(uint64_t now_ms);  // queues the protocol header
    // Consumes all n bytes; queues events and output.  Ignored once closed.
    void feed(const char* data, size_t n, uint64_t now_ms);
    // The socket reached EOF or failed.  Emits Closed unless already closed:
    // AuthFailure when it happens after start-ok and before open-ok (RabbitMQ
    // without authentication_failure_close drops the socket on a bad login),
    // ClosedByUs while our close handshake runs, else ClosedByPeer (code 0).
    void transport_closed(uint64_t now_ms, std::string why = "connection lost");

    bool next_event(Event& ev);  // pops one event (FIFO); false when none

    // The bytes to write, oldest first, held as pieces: an owned buffer
    // and, after a publish of a shared body (below), slices of that body
    // between the frame headers.  consume_output(n) drops the first n bytes
    // across pieces, advancing an offset (the owned buffer is compacted
    // once at least half of it is consumed), so draining S bytes in many
    // partial writes costs O(S).
    //   pending_output(): the first piece; write it, consume what went out,
    //     repeat while wants_write().
    //   output_pieces(): up to `max` pieces at once, for writev().
    //   output(): everything pending as one string; it copies shared slices
    //     into the owned buffer, so it is for tests and small tools, not
    //     for a caller that publishes big shared bodies.
    const std::string& output() const;
    std::string_view pending_output() const;
    size_t output_pieces(std::string_view* pieces, size_t max) const;
    void consume_output(size_t n);
    bool wants_write() const { return !shared_out_.empty() || out_.size() > out_pos_; }

    // Absolute ms of the next heartbeat to send, dead-peer check or close
    // timeout; UINT64_MAX if none.
    uint64_t next_deadline() const;
    void tick(uint64_t now_ms);

    bool is_open() const { return state_ == State::Open; }
    // Handshake progress, for a failure's message: connection.start not
    // yet received (the peer may not be an AMQP broker at all); start-ok
    // (the credentials) sent, tune not yet received.
    bool awaiting_start() const { return state_ == State::AwaitStart; }
    bool awaiting_tune() const { return state_ == State::AwaitTune; }
    // For a transport that ended before the connection was open: where
    // in the handshake, with the likely cause ("before the AMQP handshake
    // began (not an AMQP 0-9-1 broker? a TLS port?)").
    const char* handshake_stage() const;
    bool is_closed() const { return state_ == State::Closed; }
    // Negotiated values (0 before tune; 0 for channel_max/frame_max means
    // the peers agreed on no limit).
    uint32_t frame_max() const { return frame_max_; }
    uint16_t channel_max() const { return channel_max_; }
    uint16_t heartbeat() const { return heartbeat_; }
    const Table& server_properties() const { return server_properties_; }

    // Requests, valid once open (ignored otherwise).  Completion arrives as
    // an event.  Channel arguments must name a channel from open_channel().
    // Those returning bool return false when nothing was sent: the channel
    // is not usable, or a name, key or tag is over 255 bytes (a shortstr;
    // refused rather than cut, which would name something else).
    // Returns the channel number (>= 1), or 0 when all are in use.
    uint16_t open_channel();
    void close_channel(uint16_t ch, uint16_t code = 200, std::string text = "");
    bool exchange_declare(uint16_t ch, std::string name, std::string type, bool passive,
                          bool durable, bool auto_delete);
    bool queue_declare(uint16_t ch, std::string name, bool passive, bool durable, bool exclusive,
                       bool auto_delete, Table args = {});
    bool queue_bind(uint16_t ch, std::string queue, std::string exchange, std::string routing_key);
    bool queue_delete(uint16_t ch, std::string queue);
    bool basic_qos(uint16_t ch, uint16_t prefetch_count);
    void confirm_select(uint16_t ch);
    bool basic_consume(uint16_t ch, std::string queue, std::string consumer_tag, bool no_ack,
                       bool exclusive);
    bool basic_cancel(uint16_t ch, std::string consumer_tag);
    // Returns the publish sequence number when confirms are on for ch, else
    // 0.  Nothing is sent, and 0 returned, when ch is not usable (ignored,
    // like every request) or when the exchange, the routing key or a
    // shortstr property is over 255 bytes: refused, never cut, and then
    // only `why`, if given, is set to say which.
    uint64_t basic_publish(uint16_t ch, std::string_view exchange, std::string_view routing_key,
                           const BasicProperties& props, std::string_view body,
                           bool mandatory = false, std::string* why = nullptr);
    // The same without copying a body of kShareMin bytes or more: its body
    // frames go out as slices of *body, which the Connection holds until
    // they are written (or it is destroyed).  A smaller body is copied.
    static constexpr size_t kShareMin = 64 * 1024;
    uint64_t basic_publish(uint16_t ch, std::string_view exchange, std::string_view routing_key,
                           const BasicProperties& props,
                           const std::shared_ptr<const std::string>& body,
                           bool mandatory = false, std::string* why = nullptr);
    bool basic_ack(uint16_t ch, uint64_t tag, bool multiple = false);
    bool basic_nack(uint16_t ch, uint64_t tag, bool multiple, bool requeue);
    bool basic_reject(uint16_t ch, uint64_t tag, bool requeue);
    // Starts the connection.close handshake; Closed(ClosedByUs) follows the
    // server's close-ok, or 5 s without it.
    void close(uint16_t code = 200, std::string text = "");

private:
    enum class State { Idle, AwaitStart, AwaitTune, AwaitOpenOk, Open, Closing, Closed };
    enum class ChannelState : uint8_t { Free, Opening, Open, Closing };
    // Content (header + body frames) expected after deliver/return.
    enum class Content : uint8_t { None, AwaitHeader, AwaitBody };
    struct Channel {
        ChannelState state = ChannelState::Free;
        bool confirms = false;
        uint64_t next_publish_seq = 0;
        Content content = Content::None;
        uint64_t body_size = 0;
        uint64_t body_received = 0;
        Event pending;  // the Delivery/Returned being assembled
        // Free after the peer's channel.close: this many more channel.close
        // or close-ok frames on it are let pass (see handle_frame).
        uint8_t stale_closes = 0;
    };

    void handle_frame(const FrameView& f);
    // Decodes a method frame's payload; on failure closes the connection
    // (502 or 503) and returns false.
    bool decode(std::string_view payload, Method& m);
    void handle_connection_method(const Method& m);
    void handle_channel_method(uint16_t ch, Channel& c, Method& m);
    // Starts assembling a Delivery/Returned (`ev`, which takes exchange and
    // routing_key): the content header and body frames complete it.
    void expect_content(Channel& c, Event ev, std::string& exchange, std::string& routing_key);
    void handle_header(uint16_t ch, Channel& c, std::string_view payload);
    void handle_body(uint16_t ch, Channel& c, std::string_view payload);
    void finish_content(uint16_t ch, Channel& c);

    // Appends m as a frame; false (nothing appended) when encode_method
    // refuses an overlong shortstr.
    bool send(uint16_t ch, const Method& m);
    // Sends m on ch if ch is usable(); false when nothing was sent.
    bool request(uint16_t ch, const Method& m);
    // connection.close (ch 0) or channel.close; the encoder cuts text to 255.
    void send_close(uint16_t ch, uint16_t code, std::string_view text, uint16_t class_id = 0,
                    uint16_t method_id = 0);
    std::string plain_response() const;  // SASL PLAIN: \0login\0password
    void send_start_ok(const ConnectionStart& s);
    // Sends connection.close with the code and emits Closed(ProtocolError).
    void protocol_error(uint16_t code, std::string text, uint16_t class_id = 0,
                        uint16_t method_id = 0);
    void emit_closed(CloseReason r, uint16_t code, std::string text);
    Channel* channel(uint16_t ch);  // nullptr if out of range
    bool usable(uint16_t ch) const;

    ConnectionOptions opt_;
    State state_ = State::Idle;
    FrameParser parser_;
    // Method, header and body frames up to the body bytes of the publish;
    // then whether confirms give it a sequence number.
    bool publish_prefix(uint16_t ch, std::string_view exchange, std::string_view routing_key,
                        const BasicProperties& props, uint64_t body_size, bool mandatory,
                        std::string* why);
    uint64_t publish_seq(uint16_t ch);

    // Pending output: shared_out_ (oldest) then out_[out_pos_..].  A piece
    // of shared_out_ is bytes [begin, end) of `shared` when set, else of
    // `own`.
    struct Piece {
        std::shared_ptr<const std::string> shared;
        std::string own;
        size_t begin = 0, end = 0;
        std::string_view bytes() const {
            const std::string& s = shared ? *shared : own;
            return std::string_view(s).substr(begin, end - begin);
        }
    };
    mutable std::deque<Piece> shared_out_;  // mutable: output() flattens it
    mutable std::string out_;   // mutable: output() compacts it
    mutable size_t out_pos_ = 0;  // bytes of out_ already consumed
    // Moves out_'s pending bytes to the end of shared_out_ (before a
    // shared slice is queued behind them).
    void seal_output();
    std::deque<Event> events_;
    std::vector<Channel> channels_;  // index = channel number; [0] unused
    Table server_properties_;
    uint32_t frame_max_ = 0;
    uint16_t channel_max_ = 0, heartbeat_ = 0;
    uint64_t now_ = 0, last_send_ = 0, last_recv_ = 0, close_deadline_ = 0;
    bool start_ok_sent_ = false;
    uint16_t our_close_code_ = 0;
    std::string our_close_text_;
};

}  // namespace amqp
