#include "amqp/connection.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdio>

namespace amqp {

namespace {

constexpr uint64_t kCloseTimeoutMs = 5000;
// A declared body is reserved up to this size at once; beyond it the
// buffer grows as bytes arrive, so a lying header cannot make us allocate
// max_body_size up front.
constexpr uint64_t kBodyReserveCap = 1u << 20;
// An output buffer that grew past this for one big message is freed once
// drained instead of kept (consume_output).
constexpr size_t kKeepOutputCapacity = 1u << 20;

// Negotiates a limit where 0 means "no limit": either side's 0 yields the
// other's value, else the smaller.
template <class T> T negotiate(T ours, T theirs) {
    if (ours == 0) return theirs;
    if (theirs == 0) return ours;
    return std::min(ours, theirs);
}

Event make_event(EventKind k, uint16_t channel = 0) {
    Event e;
    e.kind = k;
    e.channel = channel;
    return e;
}

// connection.close or channel.close.  The encoder cuts a reply-text over
// 255 bytes (it only explains), so a close always goes out.
template <class Close>
Close make_close(uint16_t code, std::string_view text, uint16_t class_id, uint16_t method_id) {
    Close c;
    c.reply_code = code;
    c.reply_text = std::string(text);
    c.class_id = class_id;
    c.method_id = method_id;
    return c;
}

}  // namespace

const char* to_string(EventKind k) {
    switch (k) {
    case EventKind::Opened: return "Opened";
    case EventKind::ChannelOpened: return "ChannelOpened";
    case EventKind::QueueDeclared: return "QueueDeclared";
    case EventKind::QueueBound: return "QueueBound";
    case EventKind::QueueDeleted: return "QueueDeleted";
    case EventKind::ExchangeDeclared: return "ExchangeDeclared";
    case EventKind::QosOk: return "QosOk";
    case EventKind::ConfirmSelected: return "ConfirmSelected";
    case EventKind::ConsumeOk: return "ConsumeOk";
    case EventKind::CancelOk: return "CancelOk";
    case EventKind::Delivery: return "Delivery";
    case EventKind::Returned: return "Returned";
    case EventKind::Confirmed: return "Confirmed";
    case EventKind::Nacked: return "Nacked";
    case EventKind::ServerCancel: return "ServerCancel";
    case EventKind::Blocked: return "Blocked";
    case EventKind::Unblocked: return "Unblocked";
    case EventKind::ChannelClosed: return "ChannelClosed";
    case EventKind::Closed: return "Closed";
    }
    return "?";
}

const char* to_string(CloseReason r) {
    switch (r) {
    case CloseReason::ClosedByPeer: return "closed by peer";
    case CloseReason::ProtocolError: return "protocol error";
    case CloseReason::HeartbeatTimeout: return "heartbeat timeout";
    case CloseReason::AuthFailure: return "access refused";
    case CloseReason::ClosedByUs: return "closed by us";
    }
    return "?";
}

Connection::Connection(ConnectionOptions opt) : opt_(std::move(opt)) {
    if (opt_.frame_max != 0 && opt_.frame_max < kFrameMinSize) opt_.frame_max = kFrameMinSize;
}

void Connection::start(uint64_t now_ms) {
    if (state_ != State::Idle) return;
    now_ = last_send_ = last_recv_ = now_ms;
    out_.append(kProtocolHeader.data(), kProtocolHeader.size());
    state_ = State::AwaitStart;
}

const std::string& Connection::output() const {
    if (!shared_out_.empty()) {
        std::string all;
        for (const Piece& p : shared_out_) all.append(p.bytes());
        all.append(out_, out_pos_, std::string::npos);
        shared_out_.clear();
        out_.swap(all);
        out_pos_ = 0;
    }
    if (out_pos_ != 0) {
        out_.erase(0, out_pos_);
        out_pos_ = 0;
    }
    return out_;
}

std::string_view Connection::pending_output() const {
    if (!shared_out_.empty()) return shared_out_.front().bytes();
    return std::string_view(out_).substr(out_pos_);
}

size_t Connection::output_pieces(std::string_view* pieces, size_t max) const {
    size_t k = 0;
    for (auto it = shared_out_.begin(); it != shared_out_.end() && k < max; ++it)
        pieces[k++] = it->bytes();
    if (k < max && out_.size() > out_pos_) pieces[k++] = std::string_view(out_).substr(out_pos_);
    return k;
}

void Connection::consume_output(size_t n) {
    while (n > 0 && !shared_out_.empty()) {
        Piece& p = shared_out_.front();
        size_t take = std::min(n, p.end - p.begin);
        p.begin += take;
        n -= take;
        if (p.begin == p.end) shared_out_.pop_front();  // a finished body is let go here
    }
    out_pos_ += std::min(n, out_.size() - out_pos_);
    if (out_pos_ == out_.size()) {
        // A big message has gone out: let its buffer go with it rather
        // than keep megabytes for the next heartbeat.
        if (out_.capacity() > kKeepOutputCapacity)
            std::string().swap(out_);
        else
            out_.clear();
        out_pos_ = 0;
    } else if (out_pos_ >= out_.size() / 2) {
        // The rest is no longer than what was consumed: moving it now
        // costs at most one move per byte written, amortized.
        out_.erase(0, out_pos_);
        out_pos_ = 0;
    }
}

void Connection::seal_output() {
    if (out_.size() == out_pos_) return;
    Piece p;
    p.own.assign(out_, out_pos_, std::string::npos);
    p.end = p.own.size();
    shared_out_.push_back(std::move(p));
    out_.clear();
    out_pos_ = 0;
}

bool Connection::next_event(Event& ev) {
    if (events_.empty()) return false;
    ev = std::move(events_.front());
    events_.pop_front();
    return true;
}

bool Connection::send(uint16_t ch, const Method& m) {
    if (!encode_method_frame(out_, ch, m)) return false;
    last_send_ = now_;
    return true;
}

void Connection::send_close(uint16_t ch, uint16_t code, std::string_view text,
                            uint16_t class_id, uint16_t method_id) {
    if (ch == 0)
        send(0, make_close<ConnectionClose>(code, text, class_id, method_id));
    else
        send(ch, make_close<ChannelClose>(code, text, class_id, method_id));
}

void Connection::emit_closed(CloseReason r, uint16_t code, std::string text) {
    if (state_ == State::Closed) return;
    state_ = State::Closed;
    Event ev = make_event(EventKind::Closed);
    ev.close_reason = r;
    ev.code = code;
    ev.text = std::move(text);
    events_.push_back(std::move(ev));
}

void Connection::protocol_error(uint16_t code, std::string text, uint16_t class_id,
                                uint16_t method_id) {
    if (state_ == State::Closed) return;
    // After our connection.close only close and close-ok are taken
    // (the rest discarded): a bad frame then ends it, with no second close.
    if (state_ != State::Closing) send_close(0, code, text, class_id, method_id);
    emit_closed(CloseReason::ProtocolError, code, std::move(text));
}

void Connection::transport_closed(uint64_t now_ms, std::string why) {
    now_ = now_ms;
    if (state_ == State::Closed) return;
    if (start_ok_sent_ && (state_ == State::AwaitTune || state_ == State::AwaitOpenOk)) {
        emit_closed(CloseReason::AuthFailure, kAccessRefused,
                    "login refused: the server closed the connection during the handshake "
                    "(user '" + opt_.login + "', vhost '" + opt_.vhost + "')");
    } else if (state_ == State::Closing) {
        emit_closed(CloseReason::ClosedByUs, our_close_code_, our_close_text_);
    } else {
        emit_closed(CloseReason::ClosedByPeer, 0, std::move(why));
    }
}

const char* Connection::handshake_stage() const {
    if (state_ == State::AwaitStart)
        return "before the AMQP handshake began (not an AMQP 0-9-1 broker? a TLS port?)";
    if (state_ == State::AwaitTune) return "on our login (wrong login or password?)";
    return "during the AMQP handshake";
}

// ---- input ----

void Connection::feed(const char* data, size_t n, uint64_t now_ms) {
    now_ = now_ms;
    if (state_ == State::Closed || state_ == State::Idle) return;
    if (n > 0) last_recv_ = now_ms;
    if (state_ == State::AwaitStart && parser_.buffered() == 0 && n > 0 && data[0] == 'A') {
        // A server refusing our protocol version answers with its own
        // protocol header instead of connection.start.
        emit_closed(CloseReason::ProtocolError, kFrameError,
                    "the server does not speak AMQP 0-9-1 (it sent a protocol header)");
        return;
    }
    if (state_ == State::AwaitStart && parser_.buffered() == 0 && n > 0 &&
        data[0] != kFrameMethod && data[0] != kFrameHeader && data[0] != kFrameBody &&
        data[0] != kFrameHeartbeat) {
        // Not a frame at all (an SSH banner, an HTTP reply, TLS): say what
        // came, not "unknown frame type 83".
        std::string seen;
        size_t i = 0;
        for (; i < n && seen.size() < 40; ++i) {
            unsigned char c = static_cast<unsigned char>(data[i]);
            if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') seen += char(c);
            else {
                char hex[5];
                std::snprintf(hex, sizeof hex, "\\x%02x", c);
                seen += hex;
            }
        }
        protocol_error(kFrameError,
                       "not an AMQP 0-9-1 server (it sent \"" + seen + (i < n ? "...\")" : "\")"));
        return;
    }
    while (state_ != State::Closed) {
        FrameView f;
        FrameStatus st = parser_.next(data, n, f);
        if (st == FrameStatus::NeedMore) break;
        if (st == FrameStatus::Error) {
            protocol_error(parser_.error_code(), parser_.error_text());
            break;
        }
        handle_frame(f);
    }
}

Connection::Channel* Connection::channel(uint16_t ch) {
    if (ch == 0 || ch >= channels_.size()) return nullptr;
    return &channels_[ch];
}

bool Connection::decode(std::string_view payload, Method& m) {
    std::string why;
    DecodeStatus st = decode_method(payload, m, &why);
    if (st == DecodeStatus::Ok) return true;
    protocol_error(reply_code(st), why);
    return false;
}

void Connection::handle_frame(const FrameView& f) {
    if (f.type == kFrameHeartbeat) return;  // last_recv_ already updated
    if (f.channel == 0) {
        if (f.type != kFrameMethod) {
            protocol_error(kUnexpectedFrame, "content frame on channel 0");
            return;
        }
        Method m;
        if (decode(f.payload, m)) handle_connection_method(m);
        return;
    }
    if (state_ == State::Closing) return;  // discard all but connection.close/close-ok
    if (state_ != State::Open) {
        protocol_error(kChannelError, "frame on channel " + std::to_string(f.channel) +
                                          " before the connection is open");
        return;
    }
    Channel* c = channel(f.channel);
    if (c && c->state == ChannelState::Free && c->stale_closes > 0 && f.type == kFrameMethod) {
        // RabbitMQ 3.10 sends channel.close twice when a delivery's
        // consumer_timeout expires.  The first was answered with close-ok;
        // answering the second would be a frame on a channel it has
        // forgotten (a connection error on its side), and treating it as
        // one here dropped the connection, and the exclusive request queue
        // with every request in it.  So it is ignored, and so is the
        // close-ok of our own close when it crossed the broker's.  No more
        // than that: more is the peer's protocol error.
        Method m;
        if (!decode(f.payload, m)) return;
        if (std::holds_alternative<ChannelClose>(m) || std::holds_alternative<ChannelCloseOk>(m)) {
            --c->stale_closes;
            return;
        }
    }
    if (!c || c->state == ChannelState::Free) {
        protocol_error(kChannelError, "frame on channel " + std::to_string(f.channel) +
                                          ", which is not open");
        return;
    }
    if (f.type == kFrameHeader) {
        handle_header(f.channel, *c, f.payload);
        return;
    }
    if (f.type == kFrameBody) {
        handle_body(f.channel, *c, f.payload);
        return;
    }
    Method m;
    if (!decode(f.payload, m)) return;
    if (c->content != Content::None) {
        protocol_error(kUnexpectedFrame, std::string(method_name(m)) + " on channel " +
                                             std::to_string(f.channel) +
                                             " while a message's content was expected",
                       method_class_id(m), method_method_id(m));
        return;
    }
    handle_channel_method(f.channel, *c, m);
}

std::string Connection::plain_response() const {
    return std::string(1, '\0') + opt_.login + std::string(1, '\0') + opt_.password;
}

void Connection::send_start_ok(const ConnectionStart& s) {
    ConnectionStartOk ok;
    Table caps;
    for (const char* cap : {"publisher_confirms", "consumer_cancel_notify", "connection.blocked",
                            "authentication_failure_close"})
        caps.push_back({cap, FieldValue::make_bool(true)});
    Table& p = ok.client_properties;
    p.push_back({"product", FieldValue::make_string(opt_.product)});
    p.push_back({"version", FieldValue::make_string(opt_.version)});
    p.push_back({"platform", FieldValue::make_string(opt_.platform)});
    if (!opt_.connection_name.empty())
        p.push_back({"connection_name", FieldValue::make_string(opt_.connection_name)});
    p.push_back({"capabilities", FieldValue::make_table(std::move(caps))});
    ok.mechanism = "PLAIN";
    ok.response = plain_response();
    // The server's locale list is space-separated; take the first.  A
    // hostile one longer than a shortstr is cut (as the writer used to):
    // refusing would leave start-ok unsent and the handshake hanging.
    ok.locale = s.locales.substr(0, std::min<size_t>(s.locales.find(' '), 255));
    if (ok.locale.empty()) ok.locale = "en_US";
    send(0, ok);
    start_ok_sent_ = true;
}

void Connection::handle_connection_method(const Method& m) {
    if (auto* c = std::get_if<ConnectionClose>(&m)) {
        send(0, ConnectionCloseOk{});
        if (state_ == State::Closing) {
            emit_closed(CloseReason::ClosedByUs, our_close_code_, our_close_text_);
        } else if (start_ok_sent_ && state_ != State::Open && c->reply_code == kAccessRefused) {
            emit_closed(CloseReason::AuthFailure, c->reply_code,
                        "login refused for user '" + opt_.login + "': " + c->reply_text);
        } else if (state_ == State::AwaitOpenOk && c->reply_code == kNotAllowed) {
            // The answer to connection.open: no such virtual host, or not
            // for this user.  A setting to fix, like a refused login.
            emit_closed(CloseReason::AuthFailure, c->reply_code,
                        "virtual host '" + opt_.vhost + "' refused: " + c->reply_text);
        } else {
            emit_closed(CloseReason::ClosedByPeer, c->reply_code, c->reply_text);
        }
        return;
    }
    if (std::holds_alternative<ConnectionCloseOk>(m)) {
        if (state_ == State::Closing)
            emit_closed(CloseReason::ClosedByUs, our_close_code_, our_close_text_);
        else
            protocol_error(kCommandInvalid, "connection.close-ok without connection.close", 10, 51);
        return;
    }
    if (state_ == State::Closing) return;

    switch (state_) {
    case State::AwaitStart:
        if (auto* s = std::get_if<ConnectionStart>(&m)) {
            server_properties_ = s->server_properties;
            // mechanisms is a space-separated list; look for the whole word.
            std::string mechs = " " + s->mechanisms + " ";
            if (mechs.find(" PLAIN ") == std::string::npos) {
                emit_closed(CloseReason::AuthFailure, kAccessRefused,
                            "the server does not offer PLAIN authentication (it offers: " +
                                s->mechanisms + ")");
                return;
            }
            send_start_ok(*s);
            state_ = State::AwaitTune;
            return;
        }
        break;
    case State::AwaitTune:
        if (std::holds_alternative<ConnectionSecure>(m)) {
            // PLAIN needs no challenge; answer with the same response.
            ConnectionSecureOk ok;
            ok.response = plain_response();
            send(0, ok);
            return;
        }
        if (auto* t = std::get_if<ConnectionTune>(&m)) {
            channel_max_ = negotiate(opt_.channel_max, t->channel_max);
            frame_max_ = negotiate(opt_.frame_max, t->frame_max);
            if (frame_max_ != 0 && frame_max_ < kFrameMinSize) frame_max_ = kFrameMinSize;
            if (opt_.heartbeat == 0) heartbeat_ = 0;
            else if (t->heartbeat == 0) heartbeat_ = opt_.heartbeat;
            else heartbeat_ = std::min(opt_.heartbeat, t->heartbeat);
            ConnectionTuneOk ok;
            ok.channel_max = channel_max_;
            ok.frame_max = frame_max_;
            ok.heartbeat = heartbeat_;
            send(0, ok);
            ConnectionOpen open;
            open.virtual_host = opt_.vhost;
            if (!send(0, open)) {
                // A cut name would open another virtual host: give up.
                std::string why = "virtual host name of " + std::to_string(opt_.vhost.size()) +
                                  " bytes (AMQP allows 255)";
                send_close(0, kReplySuccess, why);
                emit_closed(CloseReason::ClosedByUs, kReplySuccess, std::move(why));
                return;
            }
            parser_.set_frame_max(frame_max_);
            state_ = State::AwaitOpenOk;
            return;
        }
        break;
    case State::AwaitOpenOk:
        if (std::holds_alternative<ConnectionOpenOk>(m)) {
            state_ = State::Open;
            events_.push_back(make_event(EventKind::Opened));
            return;
        }
        break;
    case State::Open:
        if (auto* b = std::get_if<ConnectionBlocked>(&m)) {
            Event ev = make_event(EventKind::Blocked);
            ev.text = b->reason;
            events_.push_back(std::move(ev));
            return;
        }
        if (std::holds_alternative<ConnectionUnblocked>(m)) {
            events_.push_back(make_event(EventKind::Unblocked));
            return;
        }
        break;
    default:
        break;
    }
    protocol_error(kCommandInvalid,
                   std::string(method_name(m)) + " is not valid on channel 0 at this point",
                   method_class_id(m), method_method_id(m));
}

void Connection::handle_channel_method(uint16_t ch, Channel& c, Method& m) {
    if (auto* close = std::get_if<ChannelClose>(&m)) {
        send(ch, ChannelCloseOk{});
        bool ours = c.state == ChannelState::Closing;
        c = Channel();
        c.stale_closes = ours ? 2 : 1;  // the 3.10 double close; and our close's close-ok
        if (ours) return;  // our close crossed theirs: it is closed either way
        Event ev = make_event(EventKind::ChannelClosed);
        ev.channel = ch;
        ev.code = close->reply_code;
        ev.text = std::move(close->reply_text);
        ev.class_id = close->class_id;
        ev.method_id = close->method_id;
        events_.push_back(std::move(ev));
        return;
    }
    if (c.state == ChannelState::Closing) {
        // After our channel.close everything but close-ok is discarded.
        if (std::holds_alternative<ChannelCloseOk>(m)) c = Channel();
        return;
    }
    if (c.state == ChannelState::Opening) {
        if (std::holds_alternative<ChannelOpenOk>(m)) {
            c.state = ChannelState::Open;
            Event ev = make_event(EventKind::ChannelOpened);
            ev.channel = ch;
            events_.push_back(std::move(ev));
            return;
        }
        protocol_error(kChannelError,
                       std::string(method_name(m)) + " on channel " + std::to_string(ch) +
                           " before channel.open-ok",
                       method_class_id(m), method_method_id(m));
        return;
    }

    Event ev = make_event(EventKind::Opened);
    ev.channel = ch;
    if (auto* d = std::get_if<BasicDeliver>(&m)) {
        ev.kind = EventKind::Delivery;
        ev.consumer_tag = std::move(d->consumer_tag);
        ev.delivery_tag = d->delivery_tag;
        ev.redelivered = d->redelivered;
        expect_content(c, std::move(ev), d->exchange, d->routing_key);
        return;
    }
    if (auto* r = std::get_if<BasicReturn>(&m)) {
        ev.kind = EventKind::Returned;
        ev.code = r->reply_code;
        ev.text = std::move(r->reply_text);
        expect_content(c, std::move(ev), r->exchange, r->routing_key);
        return;
    }
    if (auto* a = std::get_if<BasicAck>(&m)) {
        ev.kind = EventKind::Confirmed;
        ev.delivery_tag = a->delivery_tag;
        ev.multiple = a->multiple;
    } else if (auto* n = std::get_if<BasicNack>(&m)) {
        ev.kind = EventKind::Nacked;
        ev.delivery_tag = n->delivery_tag;
        ev.multiple = n->multiple;
    } else if (auto* q = std::get_if<QueueDeclareOk>(&m)) {
        ev.kind = EventKind::QueueDeclared;
        ev.queue = std::move(q->queue);
        ev.message_count = q->message_count;
        ev.consumer_count = q->consumer_count;
    } else if (auto* dl = std::get_if<QueueDeleteOk>(&m)) {
        ev.kind = EventKind::QueueDeleted;
        ev.message_count = dl->message_count;
    } else if (std::holds_alternative<QueueBindOk>(m)) {
        ev.kind = EventKind::QueueBound;
    } else if (std::holds_alternative<ExchangeDeclareOk>(m)) {
        ev.kind = EventKind::ExchangeDeclared;
    } else if (std::holds_alternative<BasicQosOk>(m)) {
        ev.kind = EventKind::QosOk;
    } else if (std::holds_alternative<ConfirmSelectOk>(m)) {
        ev.kind = EventKind::ConfirmSelected;
    } else if (auto* co = std::get_if<BasicConsumeOk>(&m)) {
        ev.kind = EventKind::ConsumeOk;
        ev.consumer_tag = std::move(co->consumer_tag);
    } else if (auto* ca = std::get_if<BasicCancelOk>(&m)) {
        ev.kind = EventKind::CancelOk;
        ev.consumer_tag = std::move(ca->consumer_tag);
    } else if (auto* sc = std::get_if<BasicCancel>(&m)) {
        ev.kind = EventKind::ServerCancel;
        ev.consumer_tag = sc->consumer_tag;
        if (!sc->nowait) {
            BasicCancelOk ok;
            ok.consumer_tag = std::move(sc->consumer_tag);
            send(ch, ok);
        }
    } else if (auto* fl = std::get_if<ChannelFlow>(&m)) {
        ChannelFlowOk ok;
        ok.active = fl->active;
        send(ch, ok);
        return;
    } else {
        protocol_error(kCommandInvalid,
                       std::string(method_name(m)) + " is not valid for a client to receive on channel " +
                           std::to_string(ch),
                       method_class_id(m), method_method_id(m));
        return;
    }
    events_.push_back(std::move(ev));
}

void Connection::expect_content(Channel& c, Event ev, std::string& exchange,
                                std::string& routing_key) {
    ev.exchange = std::move(exchange);
    ev.routing_key = std::move(routing_key);
    c.pending = std::move(ev);
    c.content = Content::AwaitHeader;
}

void Connection::handle_header(uint16_t ch, Channel& c, std::string_view payload) {
    if (c.state == ChannelState::Closing) return;
    if (c.content != Content::AwaitHeader) {
        protocol_error(kUnexpectedFrame, "content header on channel " + std::to_string(ch) +
                                             " without basic.deliver or basic.return");
        return;
    }
    ContentHeader h;
    std::string why;
    DecodeStatus st = decode_content_header(payload, h, &why);
    if (st != DecodeStatus::Ok) {
        protocol_error(reply_code(st), why);
        return;
    }
    if (h.class_id != BasicDeliver::kClassId) {
        protocol_error(kUnexpectedFrame, "content header of class " + std::to_string(h.class_id) +
                                             " after a basic method");
        return;
    }
    // An oversize body is not a protocol error: closing the connection would
    // have the broker redeliver the same message forever.  Its bytes are
    // read and dropped, and the caller gets the message flagged so it can
    // refuse it (and ack it away).
    c.pending.properties = std::move(h.properties);
    c.body_size = h.body_size;
    c.body_received = 0;
    c.pending.body_size = h.body_size;
    c.pending.body_discarded = h.body_size > opt_.max_body_size;
    c.pending.body.clear();
    if (!c.pending.body_discarded)
        c.pending.body.reserve(size_t(std::min(h.body_size, kBodyReserveCap)));
    c.content = Content::AwaitBody;
    if (h.body_size == 0) finish_content(ch, c);
}

void Connection::handle_body(uint16_t ch, Channel& c, std::string_view payload) {
    if (c.state == ChannelState::Closing) return;
    if (c.content != Content::AwaitBody) {
        protocol_error(kUnexpectedFrame, "content body on channel " + std::to_string(ch) +
                                             " without a content header");
        return;
    }
    // Check before appending: body_size - received cannot underflow because
    // received never exceeds body_size.
    if (payload.size() > c.body_size - c.body_received) {
        protocol_error(kUnexpectedFrame, "content body on channel " + std::to_string(ch) +
                                             " longer than its header declared");
        return;
    }
    if (!c.pending.body_discarded) c.pending.body.append(payload.data(), payload.size());
    c.body_received += payload.size();
    if (c.body_received == c.body_size) finish_content(ch, c);
}

void Connection::finish_content(uint16_t, Channel& c) {
    events_.push_back(std::move(c.pending));
    c.pending = make_event(EventKind::Opened);
    c.content = Content::None;
    c.body_size = 0;
    c.body_received = 0;
}

// ---- timers ----

uint64_t Connection::next_deadline() const {
    uint64_t d = UINT64_MAX;
    if (state_ == State::Closed || state_ == State::Idle) return d;
    if (state_ == State::Closing) d = close_deadline_;
    if (heartbeat_ != 0 && state_ != State::AwaitStart && state_ != State::AwaitTune) {
        uint64_t hb = uint64_t(heartbeat_) * 1000;
        d = std::min({d, last_send_ + hb, last_recv_ + 2 * hb});
    }
    return d;
}

void Connection::tick(uint64_t now_ms) {
    now_ = now_ms;
    if (state_ == State::Closed || state_ == State::Idle) return;
    if (state_ == State::Closing && now_ms >= close_deadline_) {
        emit_closed(CloseReason::ClosedByUs, our_close_code_,
                    our_close_text_ + " (no connection.close-ok within 5 s)");
        return;
    }
    if (heartbeat_ == 0 || state_ == State::AwaitStart || state_ == State::AwaitTune) return;
    uint64_t hb = uint64_t(heartbeat_) * 1000;
    if (now_ms >= last_recv_ + 2 * hb) {
        emit_closed(CloseReason::HeartbeatTimeout, 0,
                    "no data from the server for " + std::to_string(2 * heartbeat_) + " s");
        return;
    }
    if (now_ms >= last_send_ + hb) {
        encode_heartbeat(out_);
        last_send_ = now_ms;
    }
}

void Connection::close(uint16_t code, std::string text) {
    if (state_ == State::Closed || state_ == State::Closing) return;
    our_close_code_ = code;
    our_close_text_ = text;
    if (state_ == State::Idle || state_ == State::AwaitStart) {
        // Nothing to close politely before connection.start.
        emit_closed(CloseReason::ClosedByUs, code, std::move(text));
        return;
    }
    send_close(0, code, text);
    state_ = State::Closing;
    close_deadline_ = now_ + kCloseTimeoutMs;
}

}  // namespace amqp
