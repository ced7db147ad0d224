// amqp::Connection's requests (see connection.hpp): channels, declares,
// binds, consumers, publishes and acks, each encoded straight into the
// output; connection.cpp has the state machine that reads the replies.

#include "amqp/connection.hpp"

#include <algorithm>
#include <cstdint>

namespace amqp {

namespace {

// Outgoing body frames when the peers agreed on no frame_max limit.
constexpr uint32_t kDefaultFrameMax = 131072;

}  // namespace

bool Connection::usable(uint16_t ch) const {
    return state_ == State::Open && ch != 0 && ch < channels_.size() &&
           channels_[ch].state != ChannelState::Free &&
           channels_[ch].state != ChannelState::Closing;
}

uint16_t Connection::open_channel() {
    if (state_ != State::Open) return 0;
    uint32_t limit = channel_max_ == 0 ? 65535 : channel_max_;
    uint32_t ch = 1;  // not 16 bits: past 65535 it would wrap to channel 0
    while (ch < channels_.size() && channels_[ch].state != ChannelState::Free) ch++;
    if (ch > limit) return 0;
    if (ch >= channels_.size()) channels_.resize(size_t(ch) + 1);
    channels_[ch] = Channel();
    channels_[ch].state = ChannelState::Opening;
    send(uint16_t(ch), ChannelOpen{});
    return uint16_t(ch);
}

bool Connection::request(uint16_t ch, const Method& m) {
    return usable(ch) && send(ch, m);
}

void Connection::close_channel(uint16_t ch, uint16_t code, std::string text) {
    if (!usable(ch)) return;
    send_close(ch, code, text);
    channels_[ch].state = ChannelState::Closing;
    channels_[ch].content = Content::None;
}

bool Connection::exchange_declare(uint16_t ch, std::string name, std::string type, bool passive,
                                  bool durable, bool auto_delete) {
    ExchangeDeclare m;
    m.exchange = std::move(name);
    m.type = std::move(type);
    m.passive = passive;
    m.durable = durable;
    m.auto_delete = auto_delete;
    return request(ch, std::move(m));
}

bool Connection::queue_declare(uint16_t ch, std::string name, bool passive, bool durable,
                               bool exclusive, bool auto_delete, Table args) {
    QueueDeclare m;
    m.queue = std::move(name);
    m.passive = passive;
    m.durable = durable;
    m.exclusive = exclusive;
    m.auto_delete = auto_delete;
    m.arguments = std::move(args);
    return request(ch, std::move(m));
}

bool Connection::queue_bind(uint16_t ch, std::string queue, std::string exchange,
                            std::string routing_key) {
    QueueBind m;
    m.queue = std::move(queue);
    m.exchange = std::move(exchange);
    m.routing_key = std::move(routing_key);
    return request(ch, std::move(m));
}

bool Connection::queue_delete(uint16_t ch, std::string queue) {
    QueueDelete m;
    m.queue = std::move(queue);
    return request(ch, std::move(m));
}

bool Connection::basic_qos(uint16_t ch, uint16_t prefetch_count) {
    BasicQos m;
    m.prefetch_count = prefetch_count;
    return request(ch, m);
}

void Connection::confirm_select(uint16_t ch) {
    if (!request(ch, ConfirmSelect{})) return;
    // The server numbers publishes from 1 starting with the select.
    if (!channels_[ch].confirms) {
        channels_[ch].confirms = true;
        channels_[ch].next_publish_seq = 1;
    }
}

bool Connection::basic_consume(uint16_t ch, std::string queue, std::string consumer_tag,
                               bool no_ack, bool exclusive) {
    BasicConsume m;
    m.queue = std::move(queue);
    m.consumer_tag = std::move(consumer_tag);
    m.no_ack = no_ack;
    m.exclusive = exclusive;
    return request(ch, std::move(m));
}

bool Connection::basic_cancel(uint16_t ch, std::string consumer_tag) {
    BasicCancel m;
    m.consumer_tag = std::move(consumer_tag);
    return request(ch, std::move(m));
}

bool Connection::publish_prefix(uint16_t ch, std::string_view exchange,
                                std::string_view routing_key, const BasicProperties& props,
                                uint64_t body_size, bool mandatory, std::string* why) {
    if (!usable(ch)) return false;
    // Written straight into the output, without building a BasicPublish
    // (which would copy exchange and routing key into std::strings).
    size_t start = out_.size();
    size_t at = begin_frame(out_, kFrameMethod, ch);
    Writer w(out_);
    w.u16(BasicPublish::kClassId);
    w.u16(BasicPublish::kMethodId);
    w.u16(0);  // ticket
    w.shortstr(exchange);
    w.shortstr(routing_key);
    w.bits({mandatory, false});
    end_frame(out_, at);
    ContentHeader h;
    h.body_size = body_size;
    h.properties = props;
    if (w.status() != WireStatus::Ok || !encode_header_frame(out_, ch, h)) {
        // Refused, never cut: a cut routing key would route the message
        // elsewhere.  Nothing of this publish stays in the output.
        out_.resize(start);
        if (why) {
            auto over = [](const char* what, size_t n) {
                return std::string(what) + " is " + std::to_string(n) + " bytes";
            };
            *why = "basic.publish refused (a short string holds at most 255 bytes): " +
                   (exchange.size() > 255      ? over("the exchange name", exchange.size())
                    : routing_key.size() > 255 ? over("the routing key", routing_key.size())
                                               : std::string("a property is longer"));
        }
        return false;
    }
    return true;
}

uint64_t Connection::publish_seq(uint16_t ch) {
    last_send_ = now_;
    Channel& c = channels_[ch];
    return c.confirms ? c.next_publish_seq++ : 0;
}

uint64_t Connection::basic_publish(uint16_t ch, std::string_view exchange,
                                   std::string_view routing_key, const BasicProperties& props,
                                   std::string_view body, bool mandatory, std::string* why) {
    if (!publish_prefix(ch, exchange, routing_key, props, body.size(), mandatory, why)) return 0;
    encode_body_frames(out_, ch, body, frame_max_ == 0 ? kDefaultFrameMax : frame_max_);
    return publish_seq(ch);
}

uint64_t Connection::basic_publish(uint16_t ch, std::string_view exchange,
                                   std::string_view routing_key, const BasicProperties& props,
                                   const std::shared_ptr<const std::string>& body,
                                   bool mandatory, std::string* why) {
    static const std::string kNone;
    const std::string& b = body ? *body : kNone;
    if (b.size() < kShareMin) return basic_publish(ch, exchange, routing_key, props, b, mandatory, why);
    if (!publish_prefix(ch, exchange, routing_key, props, b.size(), mandatory, why)) return 0;
    // Each body frame: its header in the owned buffer (after the previous
    // frame's end octet), then a slice of the body itself.
    size_t chunk = (frame_max_ == 0 ? kDefaultFrameMax : frame_max_) - kFrameOverhead;
    for (size_t at = 0; at < b.size(); at += chunk) {
        size_t n = std::min(chunk, b.size() - at);
        if (at != 0) out_.push_back(char(kFrameEnd));
        append_frame_header(out_, kFrameBody, ch, uint32_t(n));
        seal_output();
        Piece p;
        p.shared = body;
        p.begin = at;
        p.end = at + n;
        shared_out_.push_back(std::move(p));
    }
    out_.push_back(char(kFrameEnd));
    return publish_seq(ch);
}

bool Connection::basic_ack(uint16_t ch, uint64_t tag, bool multiple) {
    BasicAck m;
    m.delivery_tag = tag;
    m.multiple = multiple;
    return request(ch, m);
}

bool Connection::basic_nack(uint16_t ch, uint64_t tag, bool multiple, bool requeue) {
    BasicNack m;
    m.delivery_tag = tag;
    m.multiple = multiple;
    m.requeue = requeue;
    return request(ch, m);
}

bool Connection::basic_reject(uint16_t ch, uint64_t tag, bool requeue) {
    BasicReject m;
    m.delivery_tag = tag;
    m.requeue = requeue;
    return request(ch, m);
}

}  // namespace amqp
