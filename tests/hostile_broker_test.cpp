// tools/hostile-broker's catalogue: plans are reproducible from the seed,
// every kind of abuse is drawn, each only where it means what it says, and
// the deterministic kinds, fed to our own amqp::Connection at their stage,
// get the close code the session expects of the agent.
#include <doctest/doctest.h>

#include <set>

#include "amqp/connection.hpp"
#include "tools/hostile-broker/abuse.hpp"

using namespace hostile;

TEST_CASE("hostile plans: same seed, same sessions; all kinds drawn") {
    std::set<int> kinds;
    bool differs = false;
    for (uint64_t i = 0; i < 3000; ++i) {
        Plan a = make_plan(42, i), b = make_plan(42, i), c = make_plan(43, i);
        CHECK(a.abuse == b.abuse);
        CHECK(a.stage == b.stage);
        differs = differs || a.abuse != c.abuse;
        CHECK((allowed_stages(a.abuse) & (1u << unsigned(a.stage))) != 0);
        kinds.insert(int(a.abuse));

        Context ctx;
        ctx.request_key = "ur.execute.0000.*";
        std::string ka, kb;
        Rng ra(i), rb(i);
        CHECK(abuse_bytes(a, ra, ctx, &ka) == abuse_bytes(b, rb, ctx, &kb));
        CHECK(ka == kb);
    }
    CHECK(differs);
    CHECK(kinds.size() == size_t(kAbuseCount));
}

namespace {

// Drives a client Connection to `stage` the way the hostile session does
// (channels 1 and 2 open from Consume on).
void drive(amqp::Connection& c, Stage stage) {
    std::string in;
    auto feed = [&](uint16_t ch, const amqp::Method& m) {
        in.clear();
        amqp::encode_method_frame(in, ch, m);
        c.feed(in.data(), in.size(), 0);
    };
    c.start(0);
    if (stage == Stage::Start) return;
    feed(0, amqp::ConnectionStart{});
    if (stage == Stage::Tune) return;
    amqp::ConnectionTune t;
    t.channel_max = 2047;
    t.frame_max = 131072;
    t.heartbeat = 1;
    feed(0, t);
    if (stage == Stage::OpenOk) return;
    feed(0, amqp::ConnectionOpenOk{});
    REQUIRE(c.open_channel() == 1);
    REQUIRE(c.open_channel() == 2);
    if (stage == Stage::Channels) return;
    feed(1, amqp::ChannelOpenOk{});
    feed(2, amqp::ChannelOpenOk{});
}

}  // namespace

TEST_CASE("hostile plans: the expected close codes are what our codec sends") {
    int checked = 0;
    for (uint64_t i = 0; i < 3000; ++i) {
        Plan p = make_plan(7, i);
        if (!p.expect.checked || p.expect.reaction != Reaction::Close) continue;
        // The agent, not the codec, refuses a broker that allows one channel.
        if (p.abuse == Abuse::TuneChannelMaxOne) continue;
        amqp::ConnectionOptions o;
        o.heartbeat = 1;
        amqp::Connection c(o);
        drive(c, p.stage);
        amqp::Event ev;
        while (c.next_event(ev)) REQUIRE(ev.kind != amqp::EventKind::Closed);
        Context ctx;
        ctx.frame_max = p.stage <= Stage::Tune ? amqp::kFrameMinSize : 131072;
        ctx.request_key = "ur.execute.0000.*";
        Rng rng(i);
        std::string key;
        std::string bytes = abuse_bytes(p, rng, ctx, &key);
        c.feed(bytes.data(), bytes.size(), 0);
        bool closed = false;
        while (c.next_event(ev)) {
            if (ev.kind != amqp::EventKind::Closed) continue;
            closed = true;
            INFO(to_string(p.abuse), " at ", to_string(p.stage), ": ", ev.text);
            CHECK(ev.close_reason == amqp::CloseReason::ProtocolError);
            CHECK(ev.code == p.expect.code);
        }
        INFO(to_string(p.abuse), " at ", to_string(p.stage));
        CHECK(closed);
        ++checked;
    }
    CHECK(checked > 1000);
}
