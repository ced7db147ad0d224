// The hostile broker's catalogue of abuse: what a session sends to the
// agent once it is deep enough in its state machine, and how the agent must
// react.  Pure functions of a seeded generator, so session N of seed S is the
// same bytes on every run (replay one with `hostile-broker --only N`).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace hostile {

// splitmix64: small, fast, and reproducible across platforms.
class Rng {
public:
    explicit Rng(uint64_t seed) : s_(seed) {}
    uint64_t next();
    // Uniform in [0, n); 0 when n is 0.
    uint64_t below(uint64_t n) { return n ? next() % n : 0; }
    bool percent(unsigned p) { return below(100) < p; }
    std::string bytes(size_t n);

private:
    uint64_t s_;
};

// How far a session takes the agent before the abuse.  Each stage names
// what the agent is waiting for when the abuse arrives.
enum class Stage : uint8_t {
    Start,     // sent the protocol header; waits for connection.start
    Tune,      // sent start-ok; waits for connection.tune
    OpenOk,    // sent tune-ok and connection.open; waits for open-ok
    Channels,  // open; waits for channel.open-ok on channels 1 and 2
    Consume,   // declared, bound; waits for basic.consume-ok
    Serving,   // consuming and publishing
};
constexpr int kStageCount = 6;
const char* to_string(Stage s);

enum class Abuse : uint8_t {
    Healthy,              // none: a ping or execute must be answered
    RandomBytes,
    MutatedFrame,         // a valid frame with flipped bytes, sizes or ids
    BadFrameEnd,
    UnknownFrameType,
    HugeFrameSize,        // declared size 2^32-1
    OverFrameMax,         // one byte over the frame_max in force
    HeartbeatOnChannel,
    TrailingGarbage,      // a valid method with bytes after its last field
    ShortstrPastEnd,
    LongstrPastEnd,       // longstr length 2^32-1
    TableLengthPastEnd,
    BadFieldType,
    TableTooDeep,
    UnknownMethod,
    MethodOutOfPlace,     // a known method the agent may not get now
    UnsolicitedCloseOk,
    UnopenedChannel,
    BeforeChannelOpenOk,  // a method on a channel still opening
    ContentOnChannelZero,
    BodyWithoutHeader,
    HeaderWithoutMethod,
    MethodDuringContent,
    BodyOverrun,          // more body bytes than the header declared
    HeaderWrongClass,
    HugeBodySize,         // header declares 2^63 bytes: skipped, not kept
    ProtocolHeaderBack,   // the server answers with its own protocol header
    NoPlainMechanism,
    TuneChannelMaxOne,    // room for one channel: the agent needs two
    TruncatedThenClose,
    TruncatedThenSilence,
    ChannelCloseOdd,      // channel.close with an odd code and text
    ConnectionCloseOdd,
    ServerCancel,
    DeliverBeforeConsumeOk,
    BadUrRequest,         // a delivery whose body is a malformed Ur request
};
constexpr int kAbuseCount = int(Abuse::BadUrRequest) + 1;
const char* to_string(Abuse a);
// The kind called `name` (as to_string says); false if none is.
bool abuse_from_string(const std::string& name, Abuse& out);

// What the agent does about it, as the broker sees it.
enum class Reaction : uint8_t {
    None,            // nothing within the wait (allowed only where noted)
    Close,           // connection.close with a code
    CloseOk,         // connection.close-ok to our connection.close
    ChannelCloseOk,
    CancelOk,
    Answered,        // acked the delivery and published the reply
    Eof,             // closed the socket without a word
};
const char* to_string(Reaction r);

struct Expect {
    bool checked = false;   // false: any reaction but a hang is fine
    Reaction reaction = Reaction::None;
    uint16_t code = 0;      // for Close
};

struct Plan {
    uint64_t index = 0;
    Abuse abuse = Abuse::Healthy;
    Stage stage = Stage::Serving;
    Expect expect;
};

// Sessions 0 to kBadUrRequestKinds-1 send each malformed Ur request once
// (the largest: 1 MiB of '[', 200,000 args), so the agent's heap reaches its
// working size early and a later growth means a leak.
constexpr uint64_t kBadUrRequestKinds = 14;

// The session's plan, from the seed and its index alone; `only` forces the
// kind (the stage is still drawn among those it allows).
Plan make_plan(uint64_t seed, uint64_t index, const Abuse* only = nullptr);
// Where each abuse can be sent (a bitmask over Stage).
unsigned allowed_stages(Abuse a);

// What the session knows when it builds the abuse.
struct Context {
    uint32_t frame_max = 4096;     // the agent's limit in force now
    uint16_t consumer_channel = 2;   // the request consumer's
    uint16_t publisher_channel = 1;
    uint16_t ping_channel = 3;       // the ping consumer's
    std::string request_key;       // "ur.execute.<uuid>.*" from the agent's bind
    uint64_t delivery_tag = 1;
};

// The bytes of the abuse; the session adds any follow-up (hanging up, a
// closing connection.close).  When the abuse is a delivery the agent must
// answer, it carries c.delivery_tag and `reply_key` is set to the routing
// key of the reply the agent owes (empty: it owes only the ack).
std::string abuse_bytes(const Plan& p, Rng& rng, const Context& c, std::string* reply_key);

}  // namespace hostile
