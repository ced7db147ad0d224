#include "amqp/methods.hpp"

#include <algorithm>
#include <type_traits>

#include "amqp/frame.hpp"

namespace amqp {

static_assert(std::variant_size_v<Method> == 40, "update AMQP_FOR_EACH_METHOD with Method");

namespace {

// Each method's arguments are listed once, in fields(), against an IO that
// is either the Reader (decoding) or Encoder (encoding), so the two
// directions cannot drift apart.
class Encoder {
public:
    explicit Encoder(std::string& out) : w_(out) {}
    void u8(const uint8_t& v) { w_.u8(v); }
    void u16(const uint16_t& v) { w_.u16(v); }
    void u32(const uint32_t& v) { w_.u32(v); }
    void u64(const uint64_t& v) { w_.u64(v); }
    void shortstr(const std::string& v) { w_.shortstr(v); }
    // A reply text only explains: one over 255 bytes is cut to fit rather
    // than failing the method (a close must still go out).
    void text(const std::string& v) { w_.shortstr(std::string_view(v).substr(0, 255)); }
    void longstr(const std::string& v) { w_.longstr(v); }
    void table(const Table& v) { w_.table(v); }
    void bits(std::initializer_list<bool*> flags) {
        uint8_t octet = 0;
        int i = 0;
        for (bool* f : flags) octet |= uint8_t(*f ? 1u << i : 0), i++;
        w_.u8(octet);
    }
    bool ok() const { return w_.status() == WireStatus::Ok; }

private:
    Writer w_;
};

// reply-text (and connection.blocked's reason): a shortstr, cut by the
// Encoder where names and keys are refused.
void text(Reader& r, std::string& v) { r.shortstr(v); }
void text(Encoder& e, const std::string& v) { e.text(v); }

template <class IO> void fields(IO& io, ConnectionStart& m) {
    io.u8(m.version_major); io.u8(m.version_minor); io.table(m.server_properties);
    io.longstr(m.mechanisms); io.longstr(m.locales);
}
template <class IO> void fields(IO& io, ConnectionStartOk& m) {
    io.table(m.client_properties); io.shortstr(m.mechanism); io.longstr(m.response);
    io.shortstr(m.locale);
}
template <class IO> void fields(IO& io, ConnectionSecure& m) { io.longstr(m.challenge); }
template <class IO> void fields(IO& io, ConnectionSecureOk& m) { io.longstr(m.response); }
template <class IO> void fields(IO& io, ConnectionTune& m) {
    io.u16(m.channel_max); io.u32(m.frame_max); io.u16(m.heartbeat);
}
template <class IO> void fields(IO& io, ConnectionTuneOk& m) {
    io.u16(m.channel_max); io.u32(m.frame_max); io.u16(m.heartbeat);
}
template <class IO> void fields(IO& io, ConnectionOpen& m) {
    io.shortstr(m.virtual_host); io.shortstr(m.capabilities); io.bits({&m.insist});
}
template <class IO> void fields(IO& io, ConnectionOpenOk& m) { io.shortstr(m.known_hosts); }
template <class IO> void fields(IO& io, ConnectionClose& m) {
    io.u16(m.reply_code); text(io, m.reply_text); io.u16(m.class_id); io.u16(m.method_id);
}
template <class IO> void fields(IO&, ConnectionCloseOk&) {}
template <class IO> void fields(IO& io, ConnectionBlocked& m) { text(io, m.reason); }
template <class IO> void fields(IO&, ConnectionUnblocked&) {}

template <class IO> void fields(IO& io, ChannelOpen& m) { io.shortstr(m.out_of_band); }
template <class IO> void fields(IO& io, ChannelOpenOk& m) { io.longstr(m.channel_id); }
template <class IO> void fields(IO& io, ChannelFlow& m) { io.bits({&m.active}); }
template <class IO> void fields(IO& io, ChannelFlowOk& m) { io.bits({&m.active}); }
template <class IO> void fields(IO& io, ChannelClose& m) {
    io.u16(m.reply_code); text(io, m.reply_text); io.u16(m.class_id); io.u16(m.method_id);
}
template <class IO> void fields(IO&, ChannelCloseOk&) {}

template <class IO> void fields(IO& io, ExchangeDeclare& m) {
    io.u16(m.ticket); io.shortstr(m.exchange); io.shortstr(m.type);
    io.bits({&m.passive, &m.durable, &m.auto_delete, &m.internal, &m.nowait});
    io.table(m.arguments);
}
template <class IO> void fields(IO&, ExchangeDeclareOk&) {}

template <class IO> void fields(IO& io, QueueDeclare& m) {
    io.u16(m.ticket); io.shortstr(m.queue);
    io.bits({&m.passive, &m.durable, &m.exclusive, &m.auto_delete, &m.nowait});
    io.table(m.arguments);
}
template <class IO> void fields(IO& io, QueueDeclareOk& m) {
    io.shortstr(m.queue); io.u32(m.message_count); io.u32(m.consumer_count);
}
template <class IO> void fields(IO& io, QueueBind& m) {
    io.u16(m.ticket); io.shortstr(m.queue); io.shortstr(m.exchange); io.shortstr(m.routing_key);
    io.bits({&m.nowait}); io.table(m.arguments);
}
template <class IO> void fields(IO&, QueueBindOk&) {}
template <class IO> void fields(IO& io, QueueDelete& m) {
    io.u16(m.ticket); io.shortstr(m.queue); io.bits({&m.if_unused, &m.if_empty, &m.nowait});
}
template <class IO> void fields(IO& io, QueueDeleteOk& m) { io.u32(m.message_count); }

template <class IO> void fields(IO& io, BasicQos& m) {
    io.u32(m.prefetch_size); io.u16(m.prefetch_count); io.bits({&m.global});
}
template <class IO> void fields(IO&, BasicQosOk&) {}
template <class IO> void fields(IO& io, BasicConsume& m) {
    io.u16(m.ticket); io.shortstr(m.queue); io.shortstr(m.consumer_tag);
    io.bits({&m.no_local, &m.no_ack, &m.exclusive, &m.nowait}); io.table(m.arguments);
}
template <class IO> void fields(IO& io, BasicConsumeOk& m) { io.shortstr(m.consumer_tag); }
template <class IO> void fields(IO& io, BasicCancel& m) {
    io.shortstr(m.consumer_tag); io.bits({&m.nowait});
}
template <class IO> void fields(IO& io, BasicCancelOk& m) { io.shortstr(m.consumer_tag); }
template <class IO> void fields(IO& io, BasicPublish& m) {
    io.u16(m.ticket); io.shortstr(m.exchange); io.shortstr(m.routing_key);
    io.bits({&m.mandatory, &m.immediate});
}
template <class IO> void fields(IO& io, BasicReturn& m) {
    io.u16(m.reply_code); text(io, m.reply_text); io.shortstr(m.exchange);
    io.shortstr(m.routing_key);
}
template <class IO> void fields(IO& io, BasicDeliver& m) {
    io.shortstr(m.consumer_tag); io.u64(m.delivery_tag); io.bits({&m.redelivered});
    io.shortstr(m.exchange); io.shortstr(m.routing_key);
}
template <class IO> void fields(IO& io, BasicAck& m) {
    io.u64(m.delivery_tag); io.bits({&m.multiple});
}
template <class IO> void fields(IO& io, BasicReject& m) {
    io.u64(m.delivery_tag); io.bits({&m.requeue});
}
template <class IO> void fields(IO& io, BasicNack& m) {
    io.u64(m.delivery_tag); io.bits({&m.multiple, &m.requeue});
}

template <class IO> void fields(IO& io, ConfirmSelect& m) { io.bits({&m.nowait}); }
template <class IO> void fields(IO&, ConfirmSelectOk&) {}

constexpr uint32_t key(uint16_t class_id, uint16_t method_id) {
    return (uint32_t(class_id) << 16) | method_id;
}

template <class T>
DecodeStatus decode_as(Reader& r, Method& out, std::string* why) {
    T& m = out.emplace<T>();
    fields(r, m);
    if (!r.ok()) {
        if (why) *why = std::string(T::kName) + ": " + to_string(r.status());
        return DecodeStatus::SyntaxError;
    }
    if (!r.at_end()) {
        if (why) *why = std::string(T::kName) + ": " + std::to_string(r.remaining()) +
                        " bytes after the last argument";
        return DecodeStatus::SyntaxError;
    }
    return DecodeStatus::Ok;
}

}  // namespace

uint16_t reply_code(DecodeStatus s) {
    switch (s) {
    case DecodeStatus::Ok: return kReplySuccess;
    case DecodeStatus::SyntaxError: return kSyntaxError;
    case DecodeStatus::UnknownMethod: return kCommandInvalid;
    }
    return kSyntaxError;
}

bool encode_method(const Method& m, std::string& out) {
    size_t start = out.size();
    bool ok = std::visit([&out](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        Encoder e(out);
        e.u16(T::kClassId);
        e.u16(T::kMethodId);
        // fields() takes a mutable reference for the Reader's sake; the
        // Encoder only reads through it.
        fields(e, const_cast<T&>(v));
        return e.ok();
    }, m);
    // The Writer cut the overlong string; none of it may go out.
    if (!ok) out.resize(start);
    return ok;
}

DecodeStatus decode_method(std::string_view payload, Method& out, std::string* why) {
    Reader r(payload);
    uint16_t class_id = 0, method_id = 0;
    r.u16(class_id);
    r.u16(method_id);
    if (!r.ok()) {
        if (why) *why = "method frame shorter than its class and method ids";
        return DecodeStatus::SyntaxError;
    }
    switch (key(class_id, method_id)) {
#define AMQP_DECODE_CASE(T) \
    case key(T::kClassId, T::kMethodId): return decode_as<T>(r, out, why);
    AMQP_FOR_EACH_METHOD(AMQP_DECODE_CASE)
#undef AMQP_DECODE_CASE
    }
    if (why)
        *why = "unknown method " + std::to_string(class_id) + "." + std::to_string(method_id);
    return DecodeStatus::UnknownMethod;
}

const char* method_name(const Method& m) {
    return std::visit([](const auto& v) { return std::decay_t<decltype(v)>::kName; }, m);
}
uint16_t method_class_id(const Method& m) {
    return std::visit([](const auto& v) { return std::decay_t<decltype(v)>::kClassId; }, m);
}
uint16_t method_method_id(const Method& m) {
    return std::visit([](const auto& v) { return std::decay_t<decltype(v)>::kMethodId; }, m);
}

bool method_has_content(const Method& m) {
    return std::holds_alternative<BasicPublish>(m) || std::holds_alternative<BasicReturn>(m) ||
           std::holds_alternative<BasicDeliver>(m);
}

// ---- content header ----

bool operator==(const BasicProperties& a, const BasicProperties& b) {
    return a.content_type == b.content_type && a.content_encoding == b.content_encoding &&
           a.headers == b.headers && a.delivery_mode == b.delivery_mode &&
           a.priority == b.priority && a.correlation_id == b.correlation_id &&
           a.reply_to == b.reply_to && a.expiration == b.expiration &&
           a.message_id == b.message_id && a.timestamp == b.timestamp && a.type == b.type &&
           a.user_id == b.user_id && a.app_id == b.app_id && a.cluster_id == b.cluster_id;
}

namespace {

// Property flag bits, most significant first, in wire order.
enum : uint16_t {
    kContentType = 1u << 15, kContentEncoding = 1u << 14, kHeaders = 1u << 13,
    kDeliveryMode = 1u << 12, kPriority = 1u << 11, kCorrelationId = 1u << 10,
    kReplyTo = 1u << 9, kExpiration = 1u << 8, kMessageId = 1u << 7, kTimestamp = 1u << 6,
    kType = 1u << 5, kUserId = 1u << 4, kAppId = 1u << 3, kClusterId = 1u << 2,
    kContinuation = 1u << 0,
};

// Visits every property with its flag bit; f(bit, optional&) reads or
// writes it.
template <class P, class F> void each_property(P& p, F&& f) {
    f(kContentType, p.content_type); f(kContentEncoding, p.content_encoding);
    f(kHeaders, p.headers); f(kDeliveryMode, p.delivery_mode); f(kPriority, p.priority);
    f(kCorrelationId, p.correlation_id); f(kReplyTo, p.reply_to);
    f(kExpiration, p.expiration); f(kMessageId, p.message_id); f(kTimestamp, p.timestamp);
    f(kType, p.type); f(kUserId, p.user_id); f(kAppId, p.app_id);
    f(kClusterId, p.cluster_id);
}

void put(Writer& w, const std::string& v) { w.shortstr(v); }
void put(Writer& w, const Table& v) { w.table(v); }
void put(Writer& w, uint8_t v) { w.u8(v); }
void put(Writer& w, uint64_t v) { w.u64(v); }
void get(Reader& r, std::string& v) { r.shortstr(v); }
void get(Reader& r, Table& v) { r.table(v); }
void get(Reader& r, uint8_t& v) { r.u8(v); }
void get(Reader& r, uint64_t& v) { r.u64(v); }

}  // namespace

bool encode_content_header(const ContentHeader& h, std::string& out) {
    size_t start = out.size();
    Writer w(out);
    w.u16(h.class_id);
    w.u16(h.weight);
    w.u64(h.body_size);
    uint16_t flags = 0;
    each_property(h.properties, [&](uint16_t bit, const auto& opt) {
        if (opt) flags |= bit;
    });
    w.u16(flags);
    each_property(h.properties, [&](uint16_t, const auto& opt) {
        if (opt) put(w, *opt);
    });
    if (w.status() == WireStatus::Ok) return true;
    out.resize(start);
    return false;
}

DecodeStatus decode_content_header(std::string_view payload, ContentHeader& out,
                                   std::string* why) {
    Reader r(payload);
    out = ContentHeader();
    uint16_t flags = 0;
    r.u16(out.class_id);
    r.u16(out.weight);
    r.u64(out.body_size);
    r.u16(flags);
    if (!r.ok()) {
        if (why) *why = std::string("content header: ") + to_string(r.status());
        return DecodeStatus::SyntaxError;
    }
    constexpr size_t kFixed = 14;  // class, weight, body size, first flag word
    // From here on nothing is a reason to fail: the body size above is all
    // that framing needs, and a delivery refused would close the
    // connection and with it the exclusive queue of every request waiting.
    auto unreadable = [&] {
        out.properties = BasicProperties();
        out.skipped = payload.size() - kFixed;
        return DecodeStatus::Ok;
    };
    // Continuation words, like bit 1, name properties basic does not have;
    // their values come after the known ones.
    for (uint16_t word = flags; word & kContinuation;) {
        if (r.u16(word) != WireStatus::Ok) return unreadable();
        out.skipped += 2;
    }
    each_property(out.properties, [&](uint16_t bit, auto& opt) {
        if (!(flags & bit) || !r.ok()) return;
        if constexpr (std::is_same_v<std::decay_t<decltype(*opt)>, Table>) {
            // A headers table we cannot read (nested too deep, a value type
            // we do not know) is skipped by its size: the agent reads no
            // header.
            Reader probe = r;
            if (probe.table(opt.emplace()) == WireStatus::Ok) {
                r = probe;
            } else {
                opt.reset();
                uint32_t n = 0;
                std::string_view skip;
                r.u32(n);
                r.bytes(n, skip);
                out.skipped += 4 + size_t(n);
            }
            return;
        }
        get(r, opt.emplace());
    });
    if (!r.ok()) return unreadable();
    out.skipped += r.remaining();  // unknown properties' values, or trailing bytes
    return DecodeStatus::Ok;
}

// ---- whole frames ----

bool encode_method_frame(std::string& out, uint16_t channel, const Method& m) {
    size_t at = begin_frame(out, kFrameMethod, channel);
    if (!encode_method(m, out)) {
        out.resize(at);
        return false;
    }
    end_frame(out, at);
    return true;
}

bool encode_header_frame(std::string& out, uint16_t channel, const ContentHeader& h) {
    size_t at = begin_frame(out, kFrameHeader, channel);
    if (!encode_content_header(h, out)) {
        out.resize(at);
        return false;
    }
    end_frame(out, at);
    return true;
}

void encode_body_frames(std::string& out, uint16_t channel, std::string_view body,
                        uint32_t frame_max) {
    size_t chunk = frame_max - kFrameOverhead;
    out.reserve(out.size() + body.size() + (body.size() / chunk + 1) * kFrameOverhead);
    while (!body.empty()) {
        size_t n = std::min(chunk, body.size());
        encode_frame(out, kFrameBody, channel, body.substr(0, n));
        body.remove_prefix(n);
    }
}

}  // namespace amqp
