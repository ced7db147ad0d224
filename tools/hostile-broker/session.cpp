#include "tools/hostile-broker/session.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <map>
#include <set>
#include <vector>

#include "amqp/frame.hpp"
#include "amqp/methods.hpp"
#include "src/clock.hpp"

namespace hostile {

namespace {

constexpr uint64_t kHeartbeatEveryMs = 400;
constexpr uint64_t kEndMs = 1000;         // for close-ok to our closing close
constexpr uint64_t kRandomSettleMs = 300;  // random bytes may need no answer

// Abuse after which the byte stream is still well framed, so the session
// may go on talking (and ends with a polite connection.close).
bool keeps_stream_valid(Abuse a) {
    switch (a) {
    case Abuse::Healthy:
    case Abuse::HugeBodySize:
    case Abuse::ChannelCloseOdd:
    case Abuse::ConnectionCloseOdd:
    case Abuse::ServerCancel:
    case Abuse::TuneChannelMaxOne:
    case Abuse::DeliverBeforeConsumeOk:
    case Abuse::BadUrRequest: return true;
    default: return false;
    }
}

class Session {
public:
    Session(int fd, const Plan& plan, Rng& rng, const SessionOptions& opt)
        : fd_(fd), plan_(plan), rng_(rng), opt_(opt), parser_(1u << 20) {}

    SessionResult run();

private:
    struct Chan {
        bool open_ok = false;       // channel.open-ok sent
        bool confirms = false;
        uint64_t seq = 0;
        bool in_content = false;    // a publish whose content is still coming
        uint64_t body_left = 0;
        std::string routing_key;
    };

    // Moves bytes both ways, answering the agent, until done() or the
    // deadline or EOF.  Returns done().
    bool pump(uint64_t deadline, const std::function<bool()>& done);
    void on_input(const char* p, size_t n);
    void on_frame(const amqp::FrameView& f);
    void on_method(uint16_t ch, amqp::Method& m);
    void on_published(uint16_t ch, Chan& c);
    // Queues a method, unless the abuse left the stream corrupt: then
    // nothing more is said, so the agent judges the abuse alone.
    // Like a real broker, which handles a channel's frames in order,
    // nothing is answered on a channel before its open-ok: a session that
    // withholds the open-ok withholds what the agent sent behind it too.
    void send(uint16_t ch, const amqp::Method& m) {
        if (ch != 0) {
            bool open_ok = std::holds_alternative<amqp::ChannelOpenOk>(m);
            if (open_ok) chans_[ch].open_ok = true;
            else if (!chans_[ch].open_ok) return;
        }
        if (!mute_) amqp::encode_method_frame(out_, ch, m);
    }
    void see(Reaction r, uint16_t code = 0) {
        if (reaction_ == Reaction::None) {
            reaction_ = r;
            reaction_code_ = code;
        }
    }
    void fault(std::string why) {
        if (!agent_fault_) note_ = std::move(why);
        agent_fault_ = true;
    }
    // True once the agent has done enough for the planned stage.
    bool at_stage() const;
    // Answers the agent as a broker would, for things the stage allows.
    bool allowed(Stage s) const { return abused_ || plan_.stage > s; }
    bool answered() const;
    // Ends a session the agent survived: connection.close 320, close-ok.
    void end_politely();
    void send_start();

    int fd_;
    const Plan& plan_;
    Rng& rng_;
    const SessionOptions& opt_;
    amqp::FrameParser parser_;
    std::string out_;
    std::string header_;           // the agent's protocol header, as it arrives
    bool got_header_ = false, got_start_ok_ = false, got_open_ = false;
    uint32_t agent_frame_max_ = amqp::kFrameMinSize;
    std::set<uint16_t> opened_;
    std::map<uint16_t, Chan> chans_;
    int consumes_ = 0;
    uint16_t consumer_ch_ = 0, publisher_ch_ = 0, ping_ch_ = 0;
    std::string request_key_;
    std::vector<std::string> published_;
    std::set<uint64_t> acked_;
    uint64_t want_tag_ = 0;
    std::string want_reply_;
    bool abused_ = false, mute_ = false, eof_ = false, write_shut_ = false;
    bool close_ok_ = false, agent_closed_ = false;
    Reaction reaction_ = Reaction::None;
    uint16_t reaction_code_ = 0;
    std::string close_text_;
    bool agent_fault_ = false;
    std::string note_;
    uint64_t last_send_ = 0;
};

bool Session::at_stage() const {
    switch (plan_.stage) {
    case Stage::Start: return got_header_;
    case Stage::Tune: return got_start_ok_;
    case Stage::OpenOk: return got_open_;
    case Stage::Channels: return opened_.size() >= 2;
    case Stage::Consume: return consumes_ >= 2 && !request_key_.empty();
    case Stage::Serving: return consumes_ >= 2 && !published_.empty();
    }
    return false;
}

bool Session::answered() const {
    if (!acked_.count(want_tag_)) return false;
    if (want_reply_.empty()) return true;
    for (const auto& k : published_)
        if (k == want_reply_) return true;
    return false;
}

bool Session::pump(uint64_t deadline, const std::function<bool()>& done) {
    char buf[65536];
    for (;;) {
        if (done()) return true;
        if (eof_) return false;
        uint64_t now = ur::monotonic_ms();
        if (now >= deadline) return false;
        if (!mute_ && got_start_ok_ && now - last_send_ >= kHeartbeatEveryMs)
            amqp::encode_heartbeat(out_);
        pollfd p{fd_, POLLIN, 0};
        if (!out_.empty() && !write_shut_) p.events |= POLLOUT;
        uint64_t wait = std::min<uint64_t>(deadline - now, kHeartbeatEveryMs);
        int n = poll(&p, 1, int(wait));
        if (n < 0 && errno != EINTR) {
            note_ = std::string("poll: ") + std::strerror(errno);
            eof_ = true;
            return false;
        }
        if (n <= 0) continue;
        if (p.revents & POLLOUT) {
            ssize_t w = write(fd_, out_.data(), out_.size());
            if (w > 0) {
                out_.erase(0, size_t(w));
                last_send_ = ur::monotonic_ms();
            } else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                out_.clear();  // the agent hung up; what it said is still to be read
            }
        }
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t r = read(fd_, buf, sizeof buf);
            if (r > 0) {
                on_input(buf, size_t(r));
            } else if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
                eof_ = true;
                see(Reaction::Eof);
            }
        }
    }
}

void Session::on_input(const char* p, size_t n) {
    if (!got_header_) {
        size_t take = std::min(n, amqp::kProtocolHeader.size() - header_.size());
        header_.append(p, take);
        p += take;
        n -= take;
        if (header_.size() < amqp::kProtocolHeader.size()) return;
        if (header_ != amqp::kProtocolHeader) fault("the agent sent a wrong protocol header");
        got_header_ = true;
        if (allowed(Stage::Start)) send_start();
    }
    while (!agent_fault_) {
        amqp::FrameView f;
        amqp::FrameStatus st = parser_.next(p, n, f);
        if (st == amqp::FrameStatus::NeedMore) return;
        if (st == amqp::FrameStatus::Error) {
            fault("the agent sent a bad frame: " + parser_.error_text());
            return;
        }
        on_frame(f);
    }
}

void Session::send_start() {
    amqp::ConnectionStart s;
    amqp::Table caps;
    for (const char* c : {"publisher_confirms", "consumer_cancel_notify", "connection.blocked",
                          "authentication_failure_close"})
        caps.push_back({c, amqp::FieldValue::make_bool(true)});
    s.server_properties.push_back({"product", amqp::FieldValue::make_string("hostile-broker")});
    s.server_properties.push_back({"capabilities", amqp::FieldValue::make_table(std::move(caps))});
    send(0, s);
}

void Session::on_frame(const amqp::FrameView& f) {
    if (f.type == amqp::kFrameHeartbeat) return;
    Chan& c = chans_[f.channel];
    if (f.type == amqp::kFrameHeader) {
        amqp::ContentHeader h;
        if (!c.in_content || amqp::decode_content_header(f.payload, h) != amqp::DecodeStatus::Ok) {
            fault("the agent sent a content header out of place or malformed");
            return;
        }
        c.body_left = h.body_size;
        if (c.body_left == 0) on_published(f.channel, c);
        return;
    }
    if (f.type == amqp::kFrameBody) {
        if (!c.in_content || f.payload.size() > c.body_left) {
            fault("the agent sent a content body out of place or too long");
            return;
        }
        c.body_left -= f.payload.size();
        if (c.body_left == 0) on_published(f.channel, c);
        return;
    }
    amqp::Method m;
    std::string why;
    if (amqp::decode_method(f.payload, m, &why) != amqp::DecodeStatus::Ok) {
        fault("the agent sent an undecodable method: " + why);
        return;
    }
    if (c.in_content) {
        fault(std::string("the agent sent ") + amqp::method_name(m) + " inside a publish");
        return;
    }
    on_method(f.channel, m);
}

void Session::on_published(uint16_t ch, Chan& c) {
    c.in_content = false;
    published_.push_back(std::move(c.routing_key));
    if (c.confirms) {
        amqp::BasicAck ack;
        ack.delivery_tag = ++c.seq;
        send(ch, ack);
    }
    if (abused_ && answered()) see(Reaction::Answered);
}

void Session::on_method(uint16_t ch, amqp::Method& m) {
    if (std::holds_alternative<amqp::ConnectionStartOk>(m)) {
        got_start_ok_ = true;
        if (allowed(Stage::Tune)) {
            amqp::ConnectionTune t;
            t.channel_max = 2047;
            t.frame_max = opt_.frame_max;
            t.heartbeat = opt_.heartbeat;
            send(0, t);
        }
    } else if (auto* t = std::get_if<amqp::ConnectionTuneOk>(&m)) {
        agent_frame_max_ = t->frame_max;
    } else if (std::holds_alternative<amqp::ConnectionOpen>(m)) {
        got_open_ = true;
        if (allowed(Stage::OpenOk)) send(0, amqp::ConnectionOpenOk{});
    } else if (std::holds_alternative<amqp::ChannelOpen>(m)) {
        opened_.insert(ch);
        chans_[ch] = Chan();
        if (allowed(Stage::Channels)) send(ch, amqp::ChannelOpenOk{});
    } else if (auto* cs = std::get_if<amqp::ConfirmSelect>(&m)) {
        chans_[ch].confirms = true;
        publisher_ch_ = ch;
        if (!cs->nowait) send(ch, amqp::ConfirmSelectOk{});
    } else if (std::holds_alternative<amqp::BasicQos>(m)) {
        send(ch, amqp::BasicQosOk{});
    } else if (auto* qd = std::get_if<amqp::QueueDeclare>(&m)) {
        amqp::QueueDeclareOk ok;
        ok.queue = qd->queue;
        if (!qd->nowait) send(ch, ok);
    } else if (auto* qb = std::get_if<amqp::QueueBind>(&m)) {
        const std::string& k = qb->routing_key;
        if (request_key_.empty() && k.rfind("ur.execute.", 0) == 0 && k.size() > 13 &&
            k.compare(k.size() - 2, 2, ".*") == 0)
            request_key_ = k;
        if (!qb->nowait) send(ch, amqp::QueueBindOk{});
    } else if (std::holds_alternative<amqp::ExchangeDeclare>(m)) {
        send(ch, amqp::ExchangeDeclareOk{});
    } else if (auto* bc = std::get_if<amqp::BasicConsume>(&m)) {
        ++consumes_;
        // Requests go to the request consumer's channel, pings (mostly)
        // to the ping consumer's.
        if (bc->queue.rfind("ur.request.", 0) == 0) consumer_ch_ = ch;
        if (bc->queue.rfind("ur.ping.", 0) == 0) ping_ch_ = ch;
        amqp::BasicConsumeOk ok;
        ok.consumer_tag = bc->consumer_tag.empty() ? "amq.ctag-hostile" : bc->consumer_tag;
        if (allowed(Stage::Consume) && !bc->nowait) send(ch, ok);
    } else if (auto* bp = std::get_if<amqp::BasicPublish>(&m)) {
        Chan& c = chans_[ch];
        c.in_content = true;
        c.body_left = 0;
        c.routing_key = bp->routing_key;
    } else if (auto* a = std::get_if<amqp::BasicAck>(&m)) {
        acked_.insert(a->delivery_tag);
        if (abused_ && answered()) see(Reaction::Answered);
    } else if (std::holds_alternative<amqp::BasicNack>(m) ||
               std::holds_alternative<amqp::BasicReject>(m)) {
        // The agent may refuse a delivery; not an answer.
    } else if (auto* can = std::get_if<amqp::BasicCancel>(&m)) {
        amqp::BasicCancelOk ok;
        ok.consumer_tag = can->consumer_tag;
        if (!can->nowait) send(ch, ok);
    } else if (std::holds_alternative<amqp::BasicCancelOk>(m)) {
        if (abused_) see(Reaction::CancelOk);
    } else if (std::holds_alternative<amqp::ChannelClose>(m)) {
        send(ch, amqp::ChannelCloseOk{});
        opened_.erase(ch);
    } else if (std::holds_alternative<amqp::ChannelCloseOk>(m)) {
        opened_.erase(ch);
        if (abused_) see(Reaction::ChannelCloseOk);
    } else if (std::holds_alternative<amqp::ChannelFlowOk>(m)) {
    } else if (auto* cc = std::get_if<amqp::ConnectionClose>(&m)) {
        agent_closed_ = true;
        close_text_ = cc->reply_text;
        see(Reaction::Close, cc->reply_code);
        send(0, amqp::ConnectionCloseOk{});
    } else if (std::holds_alternative<amqp::ConnectionCloseOk>(m)) {
        close_ok_ = true;
        see(Reaction::CloseOk);
    } else {
        fault(std::string("the agent sent ") + amqp::method_name(m) + ", which a client never sends");
    }
}

void Session::end_politely() {
    if (eof_ || agent_closed_ || close_ok_) return;
    amqp::ConnectionClose cc;
    cc.reply_code = amqp::kConnectionForced;
    cc.reply_text = "hostile-broker: end of session";
    send(0, cc);
    pump(ur::monotonic_ms() + kEndMs, [&] { return close_ok_ || agent_closed_; });
}

SessionResult Session::run() {
    SessionResult r;
    uint64_t t0 = ur::monotonic_ms();
    last_send_ = t0;
    r.reached = pump(t0 + opt_.stage_ms, [&] { return at_stage() || agent_fault_; }) && !agent_fault_;
    if (!r.reached) {
        if (note_.empty())
            note_ = std::string("the agent did not reach stage ") + to_string(plan_.stage) +
                    (eof_ ? " (it hung up)" : " (timed out)");
    } else {
        Context ctx;
        ctx.frame_max = plan_.stage <= Stage::Tune ? amqp::kFrameMinSize
                        : agent_frame_max_ ? std::min(agent_frame_max_, opt_.frame_max)
                                           : opt_.frame_max;
        if (consumer_ch_) ctx.consumer_channel = consumer_ch_;
        if (publisher_ch_) ctx.publisher_channel = publisher_ch_;
        if (ping_ch_) ctx.ping_channel = ping_ch_;
        ctx.request_key = request_key_;
        ctx.delivery_tag = 1 + rng_.below(1000);
        want_tag_ = ctx.delivery_tag;
        out_ += abuse_bytes(plan_, rng_, ctx, &want_reply_);
        abused_ = true;
        mute_ = !keeps_stream_valid(plan_.abuse);
        uint64_t now = ur::monotonic_ms();
        auto reacted = [&] { return reaction_ != Reaction::None; };
        auto hang_up = [&](uint64_t deadline) {
            pump(deadline, [&] { return out_.empty() || reacted(); });
            shutdown(fd_, SHUT_WR);
            write_shut_ = true;
        };
        switch (plan_.abuse) {
        case Abuse::TruncatedThenClose:
            hang_up(now + opt_.react_ms);
            pump(now + opt_.react_ms, reacted);
            break;
        case Abuse::TruncatedThenSilence:
            pump(now + opt_.silence_ms, reacted);
            break;
        case Abuse::HugeBodySize: {
            amqp::ConnectionClose cc;
            cc.reply_code = amqp::kConnectionForced;
            cc.reply_text = "hostile-broker: after a huge body";
            send(0, cc);
            pump(now + opt_.react_ms, reacted);
            break;
        }
        case Abuse::RandomBytes:
        case Abuse::MutatedFrame:
            if (!pump(now + kRandomSettleMs, reacted)) {
                // Perhaps half a frame: hang up and the agent must notice.
                hang_up(now + opt_.react_ms);
                pump(ur::monotonic_ms() + opt_.react_ms, reacted);
            }
            break;
        default:
            pump(now + opt_.react_ms, reacted);
            break;
        }
        if (!write_shut_ && !agent_fault_ && !mute_) end_politely();
    }
    close(fd_);
    r.reaction = reaction_;
    r.code = reaction_code_;
    r.text = close_text_;
    r.agent_fault = agent_fault_;
    r.note = note_;
    r.ms = ur::monotonic_ms() - t0;
    return r;
}

}  // namespace

SessionResult run_session(int fd, const Plan& plan, Rng& rng, const SessionOptions& opt) {
    Session s(fd, plan, rng, opt);
    return s.run();
}

bool result_ok(const Plan& plan, const SessionResult& r, std::string& why) {
    if (r.agent_fault) {
        why = "agent fault: " + r.note;
        return false;
    }
    if (!r.reached) {
        why = r.note;
        return false;
    }
    if (!plan.expect.checked) return true;
    if (r.reaction != plan.expect.reaction ||
        (plan.expect.reaction == Reaction::Close && r.code != plan.expect.code)) {
        why = std::string("expected ") + to_string(plan.expect.reaction);
        if (plan.expect.reaction == Reaction::Close) why += " " + std::to_string(plan.expect.code);
        why += ", got " + std::string(to_string(r.reaction));
        if (r.reaction == Reaction::Close) why += " " + std::to_string(r.code) + " (" + r.text + ")";
        return false;
    }
    return true;
}

}  // namespace hostile
