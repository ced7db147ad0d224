// The Ur protocol (PROTOCOL.md) without I/O: what an incoming message asks
// for, and the bodies of the messages the agent publishes.  Everything here
// is a pure function of its inputs, so it is unit-tested and fuzzed alone.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "json/json.hpp"
#include "src/sysinfo.hpp"

namespace ur {

// Limits on what a request may ask for (see README, "Security").  Larger
// requests are answered with exit_status 2 and the reason.
constexpr uint64_t kMaxRequestBytes = 16u << 20;  // message body
constexpr size_t kMaxArgs = 262144;               // "args" entries
constexpr size_t kMaxEnv = 65536;                 // "env" entries

enum class RequestKind {
    Execute,    // run a script or file, reply on reply_key (or, when `error`
                // is set, reply at once with exit_status 2 and the reason)
    Ping,       // reply on reply_key with {req_id, timestamp}
    Broadcast,  // broadcast_kind "sysinfo": reply on reply_key with sysinfo
    Ignored,    // not for us or unanswerable: log `error` and ack
};

struct Request {
    RequestKind kind = RequestKind::Ignored;
    std::string req_id;      // <req> of the routing key (execute, broadcast)
    std::string reply_key;   // routing key of the reply; empty for Ignored
    std::string error;       // why it is invalid or ignored; empty when valid
    // Execute
    bool is_file = false;
    std::string script;      // script text, or the file path when is_file
    std::vector<std::string> args;
    std::optional<std::vector<std::string>> env;  // "K=V" entries
    double timeout_s = 0;    // 0: the agent's default
    // Ping
    std::string ping_id;     // the "id" as JSON text: a string quoted, a number as is
    // Broadcast
    std::string broadcast_kind;
    // For logs: who asked (origin.user@origin.hostname), when (timestamp)
    std::string origin;
    std::string timestamp;
};

// Classifies a message delivered to the agent's queues.  Never fails: a
// malformed message yields Ignored, or an Execute with `error` set when it
// can still be answered.
Request parse_request(const Identity& self, std::string_view routing_key, std::string_view body);

std::string execute_reply_key(std::string_view uuid, std::string_view req_id);
std::string ping_reply_key(std::string_view client_id, std::string_view uuid);
// Whether a routing key is one of the two above: an answer to a requester.
bool is_answer_key(std::string_view routing_key);
std::string startup_key(std::string_view uuid);
std::string sysinfo_key(std::string_view uuid, std::string_view id);
std::string request_queue_name(const Identity& self);  // ur.request.<uuid>[.<mac>]
std::string ping_queue_name(const Identity& self);     // ur.ping.<uuid>

// Bindings of the request queue on amq.topic, and of the ping queue.
std::vector<std::string> request_bindings(const Identity& self);
std::vector<std::string> ping_bindings(const Identity& self);

// One output stream of a finished execution.
struct StreamReply {
    std::string_view data;   // raw bytes kept (converted to UTF-8 with U+FFFD)
    uint64_t total = 0;      // bytes the child wrote
    bool truncated = false;
    bool escaped = false;    // data is already valid, JSON-escaped UTF-8 (no quotes)
};

struct ExecuteOutcome {
    int exit_status = 0;     // already mapped (113 -> 0 is the caller's choice)
    int signal = 0;          // 0, or the signal that killed the child
    bool timed_out = false;
    bool agent_restarted = false;
    StreamReply out, err;
    uint64_t duration_ms = 0;
    bool has_duration = true;
};

// {"exit_status":..,"stdout":..,"stderr":.., extensions...}
std::string execute_reply_body(const ExecuteOutcome& o);
// The same body, built in the buffer of `escaped_stdout` (the stdout
// capture, already JSON-escaped; o.out.data is not read): a big output is
// moved within its own memory, not copied to a second buffer.
std::string execute_reply_body(const ExecuteOutcome& o, std::string&& escaped_stdout);
// exit_status 2, stderr "ur-agent: invalid request: <reason>\n",
// "invalid_request": true (extension: a script may exit 2 too)
std::string invalid_request_body(std::string_view reason);
// The reply to a request received but never started (the agent stopping,
// the request channel or connection gone, no free slot for too long):
// exit_status 1, stdout empty, stderr "ur-agent: not run: <reason>",
// "not_run": true (extension).
std::string not_run_body(std::string_view reason);

// The largest message the broker takes, from the text of the channel.close
// it sends for a larger one (RabbitMQ 3.8+: "PRECONDITION_FAILED - message
// size N is larger than configured max size M"); 0 when the close is not
// that.
uint64_t max_size_from_close(uint16_t code, std::string_view text);

// Whether the channel.close the broker sent for a publish refuses
// `routing_key` itself: a 403 for a topic permission (RabbitMQ:
// "ACCESS_REFUSED - access to topic 'KEY' in exchange ...", the text cut
// at 255 bytes maybe mid-key).  Not for a 403 on the whole exchange.
bool close_refuses_key(uint16_t code, std::string_view text, std::string_view routing_key);

// PROTOCOL.md's ping queue (auto-delete, not durable, not exclusive) is
// what RabbitMQ calls a transient non-exclusive queue, a deprecated
// feature (transient_nonexcl_queues) that RabbitMQ 4.3 and later deny as
// shipped: the declare closes the whole connection with 541.  The agent
// then declares the ping queue exclusive (urclient only publishes to it).
// True when the broker's connection.start names such a RabbitMQ ("product"
// RabbitMQ, "version" 4.3 or later).
bool denies_transient_queues(std::string_view product, std::string_view version);
// True when a close's text is that refusal: a broker of any version can
// be configured to deny the feature.
bool is_transient_queue_refusal(std::string_view text);
// Why a reply is cut: larger than the broker takes, or past the bound on
// replies waiting for the broker (--max-pending-bytes).
enum class FitReason { BrokerMax, PendingBound };
// `body`, a reply of more than `limit` bytes, made to fit: its stdout and
// stderr cut to their first limit/16 bytes each (escaping can make a byte
// six), marked "*_truncated" with a line saying why; a body that is not a
// reply object becomes one with exit_status 1 that says so.
std::string fit_reply(std::string_view body, uint64_t limit,
                      FitReason why = FitReason::BrokerMax);
// {"req_id":..,"timestamp":..}, req_id the ping's "id" echoed as it came
// (ping_id: JSON text, as Request::ping_id holds it).
std::string ping_reply_body(std::string_view ping_id, std::string_view iso_timestamp);

// "SIGKILL" for 9, ...; "SIG<n>" for signals without a known name.
std::string signal_name(int signo);

}  // namespace ur
