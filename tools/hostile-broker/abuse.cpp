#include "tools/hostile-broker/abuse.hpp"

#include "amqp/frame.hpp"
#include "amqp/methods.hpp"
#include "amqp/wire.hpp"

namespace hostile {

uint64_t Rng::next() {
    uint64_t z = (s_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

std::string Rng::bytes(size_t n) {
    std::string s(n, '\0');
    for (auto& c : s) c = char(next());
    return s;
}

const char* to_string(Stage s) {
    switch (s) {
    case Stage::Start: return "start";
    case Stage::Tune: return "tune";
    case Stage::OpenOk: return "open-ok";
    case Stage::Channels: return "channels";
    case Stage::Consume: return "consume";
    case Stage::Serving: return "serving";
    }
    return "?";
}

const char* to_string(Abuse a) {
    switch (a) {
    case Abuse::Healthy: return "healthy";
    case Abuse::RandomBytes: return "random-bytes";
    case Abuse::MutatedFrame: return "mutated-frame";
    case Abuse::BadFrameEnd: return "bad-frame-end";
    case Abuse::UnknownFrameType: return "unknown-frame-type";
    case Abuse::HugeFrameSize: return "huge-frame-size";
    case Abuse::OverFrameMax: return "over-frame-max";
    case Abuse::HeartbeatOnChannel: return "heartbeat-on-channel";
    case Abuse::TrailingGarbage: return "trailing-garbage";
    case Abuse::ShortstrPastEnd: return "shortstr-past-end";
    case Abuse::LongstrPastEnd: return "longstr-past-end";
    case Abuse::TableLengthPastEnd: return "table-length-past-end";
    case Abuse::BadFieldType: return "bad-field-type";
    case Abuse::TableTooDeep: return "table-too-deep";
    case Abuse::UnknownMethod: return "unknown-method";
    case Abuse::MethodOutOfPlace: return "method-out-of-place";
    case Abuse::UnsolicitedCloseOk: return "unsolicited-close-ok";
    case Abuse::UnopenedChannel: return "unopened-channel";
    case Abuse::BeforeChannelOpenOk: return "before-channel-open-ok";
    case Abuse::ContentOnChannelZero: return "content-on-channel-0";
    case Abuse::BodyWithoutHeader: return "body-without-header";
    case Abuse::HeaderWithoutMethod: return "header-without-method";
    case Abuse::MethodDuringContent: return "method-during-content";
    case Abuse::BodyOverrun: return "body-overrun";
    case Abuse::HeaderWrongClass: return "header-wrong-class";
    case Abuse::HugeBodySize: return "huge-body-size";
    case Abuse::ProtocolHeaderBack: return "protocol-header-back";
    case Abuse::NoPlainMechanism: return "no-plain-mechanism";
    case Abuse::TuneChannelMaxOne: return "tune-channel-max-1";
    case Abuse::TruncatedThenClose: return "truncated-then-close";
    case Abuse::TruncatedThenSilence: return "truncated-then-silence";
    case Abuse::ChannelCloseOdd: return "channel-close-odd";
    case Abuse::ConnectionCloseOdd: return "connection-close-odd";
    case Abuse::ServerCancel: return "server-cancel";
    case Abuse::DeliverBeforeConsumeOk: return "deliver-before-consume-ok";
    case Abuse::BadUrRequest: return "bad-ur-request";
    }
    return "?";
}

bool abuse_from_string(const std::string& name, Abuse& out) {
    for (int i = 0; i < kAbuseCount; ++i) {
        if (name == to_string(Abuse(i))) {
            out = Abuse(i);
            return true;
        }
    }
    return false;
}

const char* to_string(Reaction r) {
    switch (r) {
    case Reaction::None: return "none";
    case Reaction::Close: return "close";
    case Reaction::CloseOk: return "close-ok";
    case Reaction::ChannelCloseOk: return "channel-close-ok";
    case Reaction::CancelOk: return "cancel-ok";
    case Reaction::Answered: return "answered";
    case Reaction::Eof: return "eof";
    }
    return "?";
}

namespace {

constexpr unsigned bit(Stage s) { return 1u << unsigned(s); }
constexpr unsigned kAll = (1u << kStageCount) - 1;
constexpr unsigned kOpen = bit(Stage::Channels) | bit(Stage::Consume) | bit(Stage::Serving);
constexpr unsigned kChannelsOpen = bit(Stage::Consume) | bit(Stage::Serving);

Expect close_with(uint16_t code) { return {true, Reaction::Close, code}; }
Expect react(Reaction r) { return {true, r, 0}; }

Expect expect_for(Abuse a) {
    switch (a) {
    case Abuse::Healthy:
    case Abuse::DeliverBeforeConsumeOk:
    case Abuse::BadUrRequest: return react(Reaction::Answered);
    case Abuse::RandomBytes:
    case Abuse::MutatedFrame: return {};
    case Abuse::BadFrameEnd:
    case Abuse::UnknownFrameType:
    case Abuse::HugeFrameSize:
    case Abuse::OverFrameMax:
    case Abuse::HeartbeatOnChannel: return close_with(amqp::kFrameError);
    case Abuse::TrailingGarbage:
    case Abuse::ShortstrPastEnd:
    case Abuse::LongstrPastEnd:
    case Abuse::TableLengthPastEnd:
    case Abuse::BadFieldType:
    case Abuse::TableTooDeep: return close_with(amqp::kSyntaxError);
    case Abuse::UnknownMethod:
    case Abuse::MethodOutOfPlace:
    case Abuse::UnsolicitedCloseOk: return close_with(amqp::kCommandInvalid);
    case Abuse::UnopenedChannel:
    case Abuse::BeforeChannelOpenOk: return close_with(amqp::kChannelError);
    case Abuse::ContentOnChannelZero:
    case Abuse::BodyWithoutHeader:
    case Abuse::HeaderWithoutMethod:
    case Abuse::MethodDuringContent:
    case Abuse::BodyOverrun:
    case Abuse::HeaderWrongClass: return close_with(amqp::kUnexpectedFrame);
    // The session follows the skipped body with connection.close.
    case Abuse::HugeBodySize: return react(Reaction::CloseOk);
    // The agent cannot answer a server that is not AMQP 0-9-1 or offers no
    // PLAIN: it hangs up.
    case Abuse::ProtocolHeaderBack:
    case Abuse::NoPlainMechanism:
    case Abuse::TruncatedThenClose:
    case Abuse::TruncatedThenSilence: return react(Reaction::Eof);
    case Abuse::TuneChannelMaxOne: return close_with(amqp::kResourceError);
    case Abuse::ChannelCloseOdd: return react(Reaction::ChannelCloseOk);
    case Abuse::ConnectionCloseOdd: return react(Reaction::CloseOk);
    case Abuse::ServerCancel: return react(Reaction::CancelOk);
    }
    return {};
}

}  // namespace

unsigned allowed_stages(Abuse a) {
    switch (a) {
    case Abuse::Healthy:
    case Abuse::BadUrRequest:
    case Abuse::MethodDuringContent:
    case Abuse::BodyOverrun:
    case Abuse::HeaderWrongClass:
    case Abuse::HugeBodySize: return bit(Stage::Serving);
    case Abuse::DeliverBeforeConsumeOk: return bit(Stage::Consume);
    case Abuse::ProtocolHeaderBack:
    case Abuse::NoPlainMechanism: return bit(Stage::Start);
    case Abuse::TuneChannelMaxOne: return bit(Stage::Tune);
    case Abuse::BeforeChannelOpenOk: return bit(Stage::Channels);
    case Abuse::BodyWithoutHeader:
    case Abuse::HeaderWithoutMethod:
    case Abuse::ChannelCloseOdd: return kOpen;
    case Abuse::ServerCancel: return kChannelsOpen;
    default: return kAll;
    }
}

Plan make_plan(uint64_t seed, uint64_t index, const Abuse* only) {
    Rng rng(seed ^ (index * 0xD1B54A32D192ED03ull));
    Plan p;
    p.index = index;
    // One session in ten is healthy, so the storm proves the agent still
    // serves between attacks.  Silence costs the agent's 1-2 s timeout, so
    // it is rare; every other kind is equally likely.
    uint64_t r = rng.below(1000);
    if (index < kBadUrRequestKinds) p.abuse = Abuse::BadUrRequest;  // warm-up, see abuse.hpp
    else if (r < 100) p.abuse = Abuse::Healthy;
    else if (r < 105) p.abuse = Abuse::TruncatedThenSilence;
    else {
        do {
            p.abuse = Abuse(1 + rng.below(kAbuseCount - 1));
        } while (p.abuse == Abuse::TruncatedThenSilence);
    }
    if (only) p.abuse = *only;
    unsigned stages = allowed_stages(p.abuse);
    std::vector<Stage> choice;
    for (int s = 0; s < kStageCount; ++s)
        if (stages & (1u << s)) choice.push_back(Stage(s));
    p.stage = choice[rng.below(choice.size())];
    p.expect = expect_for(p.abuse);
    return p;
}

// ---------------------------------------------------------------- encoders

namespace {

std::string method_frame(uint16_t ch, const amqp::Method& m) {
    std::string out;
    amqp::encode_method_frame(out, ch, m);
    return out;
}

std::string raw_frame(uint8_t type, uint16_t ch, std::string_view payload) {
    std::string out;
    amqp::encode_frame(out, type, ch, payload);
    return out;
}

std::string header_frame(uint16_t ch, uint64_t body_size, uint16_t class_id = 60) {
    amqp::ContentHeader h;
    h.class_id = class_id;
    h.body_size = body_size;
    h.properties.content_type = "application/json";
    std::string out;
    amqp::encode_header_frame(out, ch, h);
    return out;
}

std::string method_payload(const amqp::Method& m) {
    std::string out;
    amqp::encode_method(m, out);
    return out;
}

std::string uuid_of(const Context& c) {
    // "ur.execute.<uuid>.*"
    const std::string pre = "ur.execute.";
    if (c.request_key.rfind(pre, 0) != 0 || c.request_key.size() < pre.size() + 2)
        return "00000000-0000-0000-0000-000000000000";
    return c.request_key.substr(pre.size(), c.request_key.size() - pre.size() - 2);
}

amqp::BasicDeliver deliver(const Context& c, std::string routing_key, const char* tag) {
    amqp::BasicDeliver d;
    d.consumer_tag = tag;
    d.delivery_tag = c.delivery_tag;
    d.exchange = "amq.topic";
    d.routing_key = std::move(routing_key);
    return d;
}

// A whole delivery: deliver, header, body frames.
std::string delivery(const Context& c, const std::string& key, const std::string& body,
                     const char* tag, uint16_t ch = 0) {
    if (ch == 0) ch = c.consumer_channel;
    std::string out = method_frame(ch, deliver(c, key, tag));
    out += header_frame(ch, body.size());
    amqp::encode_body_frames(out, ch, body, c.frame_max);
    return out;
}

std::string ping(const Context& c, std::string* reply_key) {
    std::string uuid = uuid_of(c);
    *reply_key = "ur.ackhostile." + uuid;
    return delivery(c, "ur.ping." + uuid,
                    R"({"client_id":"hostile","id":")" + std::to_string(c.delivery_tag) + "\"}",
                    "ur-ping", c.ping_channel);
}

// The method the agent waits for at this stage: the raw material for
// mutations and trailing garbage.
std::pair<uint16_t, amqp::Method> expected_method(Stage s, const Context& c) {
    switch (s) {
    case Stage::Start: {
        amqp::ConnectionStart st;
        st.server_properties.push_back({"product", amqp::FieldValue::make_string("hostile")});
        return {0, st};
    }
    case Stage::Tune: {
        amqp::ConnectionTune t;
        t.channel_max = 2047;
        t.frame_max = 131072;
        t.heartbeat = 1;
        return {0, t};
    }
    case Stage::OpenOk: return {0, amqp::ConnectionOpenOk{}};
    case Stage::Channels: return {c.publisher_channel, amqp::ChannelOpenOk{}};
    case Stage::Consume: {
        amqp::BasicConsumeOk ok;
        ok.consumer_tag = "ur-request";
        return {c.consumer_channel, ok};
    }
    case Stage::Serving: break;
    }
    return {c.consumer_channel, deliver(c, "ur.ping." + uuid_of(c), "ur-ping")};
}

// connection.start whose server_properties table is `table` (raw bytes
// after the table's own length field) declared with `declared` bytes.
std::string start_with_table(std::string_view table, uint32_t declared) {
    std::string p;
    amqp::Writer w(p);
    w.u16(10);
    w.u16(10);
    w.u8(0);
    w.u8(9);
    w.u32(declared);
    w.raw(table);
    w.longstr("PLAIN");
    w.longstr("en_US");
    return raw_frame(amqp::kFrameMethod, 0, p);
}

std::string odd_text(Rng& rng) {
    switch (rng.below(4)) {
    case 0: return "";
    case 1: return rng.bytes(255);                 // binary, NULs, bad UTF-8
    case 2: return std::string(255, '"');
    default: return "\xff\xfe\x00 odd \xc0\xaf" + std::to_string(rng.next());
    }
}

uint16_t odd_code(Rng& rng) {
    static const uint16_t codes[] = {0, 1, 200, 311, 320, 402, 403, 404, 405, 406,
                                     501, 504, 530, 541, 999, 65535};
    return codes[rng.below(sizeof codes / sizeof codes[0])];
}

std::string bad_ur_body(uint64_t index, Rng& rng, const Context& c, std::string& key,
                        std::string* reply_key) {
    std::string uuid = uuid_of(c);
    std::string req = "h" + std::to_string(c.delivery_tag);
    key = "ur.execute." + uuid + "." + req;
    *reply_key = "ur.execute-reply." + uuid + "." + req;
    auto repeat = [](const std::string& s, size_t n) {
        std::string out;
        out.reserve(s.size() * n);
        for (size_t i = 0; i < n; ++i) out += s;
        return out;
    };
    switch (index < kBadUrRequestKinds ? index : rng.below(kBadUrRequestKinds)) {
    case 0: return "{";
    case 1: return std::string(1u << 20, '[');
    case 2: return R"({"type":"script","script":"exit 0","args":[)" + repeat("1,", 200000) + "1]}";
    case 3:
        return R"({"type":"script","script":"exit 0","args":[)" + repeat("\"x\",", 100000) +
               R"("x"],"env":7})";
    case 4: return "{\"type\":\"script\",\"script\":\"\xff\xfe\"}";
    case 5: return R"({"type":")" + std::string(1u << 20, 'a') + "\"}";
    case 6: return repeat(R"({"a":)", 100000) + "1" + std::string(100000, '}');
    case 7: return "";
    case 8: return R"({"type":"file","file":"a\u0000b"})";
    case 9: return R"({"type":"script","script":"exit 0","timeout":1e999})";
    case 10: return rng.bytes(rng.below(4096));
    case 11: return R"({"type":"script","script":"exit 0","args":[1)" + std::string(1u << 20, '0') + "]}";
    case 12:
        key = "ur.execute." + uuid + ".a.b";  // not <node>.<req>: ignored, acked, no reply
        reply_key->clear();
        return "{}";
    default:
        key = "ur.execute.someone-else." + req;
        reply_key->clear();
        return R"({"type":"script","script":"exit 0"})";
    }
}

}  // namespace

std::string abuse_bytes(const Plan& p, Rng& rng, const Context& c, std::string* reply_key) {
    reply_key->clear();
    auto [mch, m] = expected_method(p.stage, c);
    std::string valid = method_frame(mch, m);
    if (p.stage == Stage::Serving) {
        // A deliver alone would leave the agent waiting for its content.
        valid += header_frame(c.consumer_channel, 2);
        valid += raw_frame(amqp::kFrameBody, c.consumer_channel, "{}");
    }
    switch (p.abuse) {
    case Abuse::Healthy:
    case Abuse::DeliverBeforeConsumeOk: return ping(c, reply_key);
    case Abuse::RandomBytes: {
        std::string b = rng.bytes(1 + rng.below(rng.percent(10) ? 70000 : 64));
        // A leading 'A' is the "wrong protocol" answer, tested on its own.
        if (b[0] == 'A') b[0] = 'B';
        return b;
    }
    case Abuse::MutatedFrame: {
        std::string f = valid;
        int edits = 1 + int(rng.below(3));
        for (int i = 0; i < edits && f.size() >= 12; ++i) {
            switch (rng.below(5)) {
            case 0: f[rng.below(f.size())] ^= char(1 + rng.below(255)); break;
            case 1: amqp::put_u32_at(f, 3, uint32_t(rng.next())); break;    // size
            case 2: f[0] = char(rng.below(10)); break;                     // type
            case 3: f[7 + rng.below(4)] = char(rng.next()); break;         // class/method id
            default: f.resize(1 + rng.below(f.size() - 1)); break;         // cut short
            }
        }
        if (!f.empty() && f[0] == 'A') f[0] = 'B';
        return f;
    }
    case Abuse::BadFrameEnd:
        // The first frame's end octet: 7 header bytes + its payload.
        valid[amqp::kFrameHeaderSize + amqp::get_u32(valid.data() + 3)] = 'x';
        return valid;
    case Abuse::UnknownFrameType: {
        static const uint8_t types[] = {0, 4, 5, 6, 7, 9, 200, 255};
        valid[0] = char(types[rng.below(8)]);
        return valid;
    }
    case Abuse::HugeFrameSize: amqp::put_u32_at(valid, 3, 0xFFFFFFFFu); return valid;
    case Abuse::OverFrameMax: {
        // Only the header is needed: the size is refused before the payload.
        std::string f = valid.substr(0, 7);
        amqp::put_u32_at(f, 3, c.frame_max - 7);
        return f;
    }
    case Abuse::HeartbeatOnChannel:
        return raw_frame(amqp::kFrameHeartbeat, uint16_t(1 + rng.below(65535)), "");
    case Abuse::TrailingGarbage: {
        std::string pl = method_payload(m) + rng.bytes(1 + rng.below(16));
        return raw_frame(amqp::kFrameMethod, mch, pl);
    }
    case Abuse::ShortstrPastEnd: {
        // connection.open-ok: known-hosts shortstr claims more than is there.
        std::string pl("\x00\x0a\x00\x29", 4);
        pl += char(10 + rng.below(246));
        pl += "abc";
        return raw_frame(amqp::kFrameMethod, 0, pl);
    }
    case Abuse::LongstrPastEnd: {
        std::string t;
        amqp::Writer w(t);
        w.shortstr("product");
        w.u8('S');
        w.u32(0xFFFFFFFFu);
        w.raw("hostile");
        return start_with_table(t, uint32_t(t.size()));
    }
    case Abuse::TableLengthPastEnd: return start_with_table("", 0xFFFFFFF0u);
    case Abuse::BadFieldType: {
        std::string t;
        amqp::Writer w(t);
        w.shortstr("product");
        w.u8(rng.percent(50) ? 'Z' : '\0');
        w.u32(4);
        return start_with_table(t, uint32_t(t.size()));
    }
    case Abuse::TableTooDeep: {
        // 40 tables, each the only value of the one above.
        std::string built;
        for (int i = 0; i < 40; ++i) {
            std::string outer;
            amqp::Writer w(outer);
            w.shortstr("k");
            w.u8('F');
            w.u32(uint32_t(built.size()));
            w.raw(built);
            built = outer;
        }
        return start_with_table(built, uint32_t(built.size()));
    }
    case Abuse::UnknownMethod: {
        std::string pl;
        amqp::Writer w(pl);
        if (rng.percent(50)) { w.u16(10); w.u16(99); }
        else { w.u16(uint16_t(1000 + rng.below(60000))); w.u16(uint16_t(rng.next())); }
        return raw_frame(amqp::kFrameMethod, 0, pl);
    }
    case Abuse::MethodOutOfPlace:
        switch (p.stage) {
        case Stage::Start: return method_frame(0, amqp::ConnectionTune{});
        case Stage::Tune: return method_frame(0, amqp::ConnectionOpenOk{});
        case Stage::OpenOk: return method_frame(0, amqp::ConnectionStart{});
        case Stage::Channels: return method_frame(0, amqp::ConnectionOpenOk{});
        case Stage::Consume: return method_frame(c.consumer_channel, amqp::ChannelOpenOk{});
        case Stage::Serving: return method_frame(c.consumer_channel, amqp::BasicPublish{});
        }
        return "";
    case Abuse::UnsolicitedCloseOk: return method_frame(0, amqp::ConnectionCloseOk{});
    case Abuse::UnopenedChannel: {
        uint16_t ch = uint16_t(4 + rng.below(65532));  // the agent opens 1-3
        switch (rng.below(3)) {
        case 0: return method_frame(ch, amqp::ChannelOpenOk{});
        case 1: return header_frame(ch, 5);
        default: return raw_frame(amqp::kFrameBody, ch, "body");
        }
    }
    case Abuse::BeforeChannelOpenOk:
        return method_frame(c.consumer_channel, deliver(c, "ur.ping.x", "ur-ping"));
    case Abuse::ContentOnChannelZero:
        return rng.percent(50) ? header_frame(0, 3) : raw_frame(amqp::kFrameBody, 0, "abc");
    case Abuse::BodyWithoutHeader:
        return raw_frame(amqp::kFrameBody, rng.percent(50) ? c.consumer_channel : c.publisher_channel, "{}");
    case Abuse::HeaderWithoutMethod:
        return header_frame(rng.percent(50) ? c.consumer_channel : c.publisher_channel, 2);
    case Abuse::MethodDuringContent: {
        std::string out = method_frame(c.consumer_channel, deliver(c, "ur.ping.x", "ur-ping"));
        if (rng.percent(50)) out += header_frame(c.consumer_channel, 10);
        return out + method_frame(c.consumer_channel, deliver(c, "ur.ping.y", "ur-ping"));
    }
    case Abuse::BodyOverrun: {
        std::string out = method_frame(c.consumer_channel, deliver(c, "ur.ping.x", "ur-ping"));
        out += header_frame(c.consumer_channel, 10);
        return out + raw_frame(amqp::kFrameBody, c.consumer_channel, std::string(11, '{'));
    }
    case Abuse::HeaderWrongClass: {
        std::string out = method_frame(c.consumer_channel, deliver(c, "ur.ping.x", "ur-ping"));
        return out + header_frame(c.consumer_channel, 2, uint16_t(rng.percent(50) ? 50 : 999));
    }
    case Abuse::HugeBodySize: {
        std::string out = method_frame(c.consumer_channel, deliver(c, "ur.ping.x", "ur-ping"));
        out += header_frame(c.consumer_channel, rng.percent(50) ? (1ull << 63) : ~0ull);
        std::string chunk(c.frame_max - amqp::kFrameOverhead, 'x');
        for (uint64_t i = 0, n = 1 + rng.below(8); i < n; ++i)
            out += raw_frame(amqp::kFrameBody, c.consumer_channel, chunk);
        return out;
    }
    case Abuse::ProtocolHeaderBack: return std::string(amqp::kProtocolHeader);
    case Abuse::NoPlainMechanism: {
        amqp::ConnectionStart st;
        st.mechanisms = rng.percent(50) ? "AMQPLAIN EXTERNAL" : "PLAINISH";
        return method_frame(0, st);
    }
    case Abuse::TuneChannelMaxOne: {
        amqp::ConnectionTune t;
        t.channel_max = 1;
        t.frame_max = 131072;
        t.heartbeat = 1;
        return method_frame(0, t);
    }
    case Abuse::TruncatedThenClose:
    case Abuse::TruncatedThenSilence: return valid.substr(0, 1 + rng.below(valid.size() - 1));
    case Abuse::ChannelCloseOdd: {
        amqp::ChannelClose cc;
        cc.reply_code = odd_code(rng);
        cc.reply_text = odd_text(rng);
        cc.class_id = uint16_t(rng.next());
        cc.method_id = uint16_t(rng.next());
        uint16_t chans[] = {c.consumer_channel, c.publisher_channel, c.ping_channel};
        return method_frame(chans[rng.below(3)], cc);
    }
    case Abuse::ConnectionCloseOdd: {
        amqp::ConnectionClose cc;
        cc.reply_code = odd_code(rng);
        cc.reply_text = odd_text(rng);
        cc.class_id = uint16_t(rng.next());
        cc.method_id = uint16_t(rng.next());
        return method_frame(0, cc);
    }
    case Abuse::ServerCancel: {
        amqp::BasicCancel bc;
        if (rng.percent(30)) {
            bc.consumer_tag = "ur-ping";
            return method_frame(c.ping_channel, bc);
        }
        bc.consumer_tag = rng.percent(50) ? "ur-request" : odd_text(rng);
        return method_frame(c.consumer_channel, bc);
    }
    case Abuse::BadUrRequest: {
        std::string key;
        std::string body = bad_ur_body(p.index, rng, c, key, reply_key);
        return delivery(c, key, body, "ur-request");
    }
    }
    return "";
}

}  // namespace hostile
