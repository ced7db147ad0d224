// AMQP 0-9-1 methods as plain structs, the one `Method` variant, and the
// content header with the 14 basic properties.  Every method here both
// encodes and decodes, so the client and a server (the fake broker) share
// this file.  Field names follow the spec with '-' as '_'; kClassId and
// kMethodId are the spec's ids.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "amqp/wire.hpp"

namespace amqp {

#define AMQP_METHOD_IDS(c, m, name) \
    static constexpr uint16_t kClassId = c; \
    static constexpr uint16_t kMethodId = m; \
    static constexpr const char* kName = name;

struct ConnectionStart {
    AMQP_METHOD_IDS(10, 10, "connection.start")
    uint8_t version_major = 0, version_minor = 9;
    Table server_properties;
    std::string mechanisms = "PLAIN", locales = "en_US";
};
struct ConnectionStartOk {
    AMQP_METHOD_IDS(10, 11, "connection.start-ok")
    Table client_properties;
    std::string mechanism = "PLAIN", response, locale = "en_US";
};
struct ConnectionSecure { AMQP_METHOD_IDS(10, 20, "connection.secure") std::string challenge; };
struct ConnectionSecureOk { AMQP_METHOD_IDS(10, 21, "connection.secure-ok") std::string response; };
struct ConnectionTune {
    AMQP_METHOD_IDS(10, 30, "connection.tune")
    uint16_t channel_max = 0; uint32_t frame_max = 0; uint16_t heartbeat = 0;
};
struct ConnectionTuneOk {
    AMQP_METHOD_IDS(10, 31, "connection.tune-ok")
    uint16_t channel_max = 0; uint32_t frame_max = 0; uint16_t heartbeat = 0;
};
struct ConnectionOpen {
    AMQP_METHOD_IDS(10, 40, "connection.open")
    std::string virtual_host = "/", capabilities; bool insist = false;
};
struct ConnectionOpenOk { AMQP_METHOD_IDS(10, 41, "connection.open-ok") std::string known_hosts; };
struct ConnectionClose {
    AMQP_METHOD_IDS(10, 50, "connection.close")
    uint16_t reply_code = 200; std::string reply_text; uint16_t class_id = 0, method_id = 0;
};
struct ConnectionCloseOk { AMQP_METHOD_IDS(10, 51, "connection.close-ok") };
struct ConnectionBlocked { AMQP_METHOD_IDS(10, 60, "connection.blocked") std::string reason; };
struct ConnectionUnblocked { AMQP_METHOD_IDS(10, 61, "connection.unblocked") };

struct ChannelOpen { AMQP_METHOD_IDS(20, 10, "channel.open") std::string out_of_band; };
struct ChannelOpenOk { AMQP_METHOD_IDS(20, 11, "channel.open-ok") std::string channel_id; };
struct ChannelFlow { AMQP_METHOD_IDS(20, 20, "channel.flow") bool active = true; };
struct ChannelFlowOk { AMQP_METHOD_IDS(20, 21, "channel.flow-ok") bool active = true; };
struct ChannelClose {
    AMQP_METHOD_IDS(20, 40, "channel.close")
    uint16_t reply_code = 200; std::string reply_text; uint16_t class_id = 0, method_id = 0;
};
struct ChannelCloseOk { AMQP_METHOD_IDS(20, 41, "channel.close-ok") };

struct ExchangeDeclare {
    AMQP_METHOD_IDS(40, 10, "exchange.declare")
    uint16_t ticket = 0; std::string exchange, type = "direct";
    bool passive = false, durable = false, auto_delete = false, internal = false, nowait = false;
    Table arguments;
};
struct ExchangeDeclareOk { AMQP_METHOD_IDS(40, 11, "exchange.declare-ok") };

struct QueueDeclare {
    AMQP_METHOD_IDS(50, 10, "queue.declare")
    uint16_t ticket = 0; std::string queue;
    bool passive = false, durable = false, exclusive = false, auto_delete = false, nowait = false;
    Table arguments;
};
struct QueueDeclareOk {
    AMQP_METHOD_IDS(50, 11, "queue.declare-ok")
    std::string queue; uint32_t message_count = 0, consumer_count = 0;
};
struct QueueBind {
    AMQP_METHOD_IDS(50, 20, "queue.bind")
    uint16_t ticket = 0; std::string queue, exchange, routing_key; bool nowait = false;
    Table arguments;
};
struct QueueBindOk { AMQP_METHOD_IDS(50, 21, "queue.bind-ok") };
struct QueueDelete {
    AMQP_METHOD_IDS(50, 40, "queue.delete")
    uint16_t ticket = 0; std::string queue; bool if_unused = false, if_empty = false, nowait = false;
};
struct QueueDeleteOk { AMQP_METHOD_IDS(50, 41, "queue.delete-ok") uint32_t message_count = 0; };

struct BasicQos {
    AMQP_METHOD_IDS(60, 10, "basic.qos")
    uint32_t prefetch_size = 0; uint16_t prefetch_count = 0; bool global = false;
};
struct BasicQosOk { AMQP_METHOD_IDS(60, 11, "basic.qos-ok") };
struct BasicConsume {
    AMQP_METHOD_IDS(60, 20, "basic.consume")
    uint16_t ticket = 0; std::string queue, consumer_tag;
    bool no_local = false, no_ack = false, exclusive = false, nowait = false;
    Table arguments;
};
struct BasicConsumeOk { AMQP_METHOD_IDS(60, 21, "basic.consume-ok") std::string consumer_tag; };
struct BasicCancel {
    AMQP_METHOD_IDS(60, 30, "basic.cancel") std::string consumer_tag; bool nowait = false;
};
struct BasicCancelOk { AMQP_METHOD_IDS(60, 31, "basic.cancel-ok") std::string consumer_tag; };
struct BasicPublish {
    AMQP_METHOD_IDS(60, 40, "basic.publish")
    uint16_t ticket = 0; std::string exchange, routing_key; bool mandatory = false, immediate = false;
};
struct BasicReturn {
    AMQP_METHOD_IDS(60, 50, "basic.return")
    uint16_t reply_code = 0; std::string reply_text, exchange, routing_key;
};
struct BasicDeliver {
    AMQP_METHOD_IDS(60, 60, "basic.deliver")
    std::string consumer_tag; uint64_t delivery_tag = 0; bool redelivered = false;
    std::string exchange, routing_key;
};
struct BasicAck {
    AMQP_METHOD_IDS(60, 80, "basic.ack") uint64_t delivery_tag = 0; bool multiple = false;
};
struct BasicReject {
    AMQP_METHOD_IDS(60, 90, "basic.reject") uint64_t delivery_tag = 0; bool requeue = true;
};
struct BasicNack {
    AMQP_METHOD_IDS(60, 120, "basic.nack")
    uint64_t delivery_tag = 0; bool multiple = false, requeue = true;
};

struct ConfirmSelect { AMQP_METHOD_IDS(85, 10, "confirm.select") bool nowait = false; };
struct ConfirmSelectOk { AMQP_METHOD_IDS(85, 11, "confirm.select-ok") };

#undef AMQP_METHOD_IDS

// The list of supported methods, for the variant and the decoder's switch.
#define AMQP_FOR_EACH_METHOD(X) \
    X(ConnectionStart) X(ConnectionStartOk) X(ConnectionSecure) X(ConnectionSecureOk) \
    X(ConnectionTune) X(ConnectionTuneOk) X(ConnectionOpen) X(ConnectionOpenOk) \
    X(ConnectionClose) X(ConnectionCloseOk) X(ConnectionBlocked) X(ConnectionUnblocked) \
    X(ChannelOpen) X(ChannelOpenOk) X(ChannelFlow) X(ChannelFlowOk) X(ChannelClose) \
    X(ChannelCloseOk) X(ExchangeDeclare) X(ExchangeDeclareOk) X(QueueDeclare) \
    X(QueueDeclareOk) X(QueueBind) X(QueueBindOk) X(QueueDelete) X(QueueDeleteOk) \
    X(BasicQos) X(BasicQosOk) X(BasicConsume) X(BasicConsumeOk) X(BasicCancel) \
    X(BasicCancelOk) X(BasicPublish) X(BasicReturn) X(BasicDeliver) X(BasicAck) \
    X(BasicReject) X(BasicNack) X(ConfirmSelect) X(ConfirmSelectOk)

using Method = std::variant<
    ConnectionStart, ConnectionStartOk, ConnectionSecure, ConnectionSecureOk,
    ConnectionTune, ConnectionTuneOk, ConnectionOpen, ConnectionOpenOk,
    ConnectionClose, ConnectionCloseOk, ConnectionBlocked, ConnectionUnblocked,
    ChannelOpen, ChannelOpenOk, ChannelFlow, ChannelFlowOk, ChannelClose,
    ChannelCloseOk, ExchangeDeclare, ExchangeDeclareOk, QueueDeclare,
    QueueDeclareOk, QueueBind, QueueBindOk, QueueDelete, QueueDeleteOk,
    BasicQos, BasicQosOk, BasicConsume, BasicConsumeOk, BasicCancel,
    BasicCancelOk, BasicPublish, BasicReturn, BasicDeliver, BasicAck,
    BasicReject, BasicNack, ConfirmSelect, ConfirmSelectOk>;

enum class DecodeStatus {
    Ok,
    SyntaxError,    // truncated, trailing bytes, bad table: reply 502
    UnknownMethod,  // class/method not supported here: reply 503
};
// The reply code a peer should be closed with for a decode failure.
uint16_t reply_code(DecodeStatus s);

// Appends class id, method id and the method's arguments (a method frame's
// payload).  A shortstr argument over 255 bytes (a name, key or tag) is
// refused, never cut: encode_method then returns false and leaves `out` as
// it was.  Reply texts (reply-text, connection.blocked's reason) only
// explain, so they are cut to 255 bytes instead.
bool encode_method(const Method& m, std::string& out);

// Decodes a method frame payload.  On failure `out` is unspecified and
// `why` (if given) says what was wrong.  Bytes left after the last
// argument are a syntax error.
DecodeStatus decode_method(std::string_view payload, Method& out, std::string* why = nullptr);

const char* method_name(const Method& m);
uint16_t method_class_id(const Method& m);
uint16_t method_method_id(const Method& m);

// Methods followed by a content header and body frames.
bool method_has_content(const Method& m);

// ---- content header ----

struct BasicProperties {
    std::optional<std::string> content_type, content_encoding;
    std::optional<Table> headers;
    std::optional<uint8_t> delivery_mode, priority;
    std::optional<std::string> correlation_id, reply_to, expiration, message_id;
    std::optional<uint64_t> timestamp;
    std::optional<std::string> type, user_id, app_id, cluster_id;
};
bool operator==(const BasicProperties& a, const BasicProperties& b);
inline bool operator!=(const BasicProperties& a, const BasicProperties& b) { return !(a == b); }

struct ContentHeader {
    uint16_t class_id = 60;
    uint16_t weight = 0;
    uint64_t body_size = 0;
    BasicProperties properties;
    // Decoding only: how many bytes of the payload decoding left out, so
    // that encoding the result gives that many fewer.  A "headers" table
    // that cannot be read (nested deeper than kMaxTableDepth, a field type
    // we do not know, such as the spec's 'L') is skipped by its size;
    // flag words and bits naming properties basic does not have are
    // skipped with those properties' values (they come after the known
    // ones); a known property that is malformed or cut off drops all of
    // them.  RabbitMQ delivers such messages as they were published;
    // refusing one would close the connection, and with it every request
    // queued for us.
    size_t skipped = 0;
};

// Appends a content header frame payload.  A shortstr property over 255
// bytes is refused as in encode_method: false, `out` unchanged.
bool encode_content_header(const ContentHeader& h, std::string& out);
// Only a payload too short for class, weight, body size and the first flag
// word is a syntax error; properties are read as far as they can be (see
// ContentHeader::skipped).
DecodeStatus decode_content_header(std::string_view payload, ContentHeader& out,
                                   std::string* why = nullptr);

// ---- whole frames ----

// Append a whole frame; on a refused shortstr (see encode_method) they
// return false and append nothing.
bool encode_method_frame(std::string& out, uint16_t channel, const Method& m);
bool encode_header_frame(std::string& out, uint16_t channel, const ContentHeader& h);
// Appends body frames of at most frame_max - 8 payload bytes each (none for
// an empty body).  frame_max must be >= kFrameMinSize.
void encode_body_frames(std::string& out, uint16_t channel, std::string_view body,
                        uint32_t frame_max);

}  // namespace amqp
