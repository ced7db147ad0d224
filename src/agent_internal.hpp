// What the agent's own files (src/agent*.cpp) share beside the class in
// agent.hpp: constants more than one of them uses, and field().  Not for
// other modules.
#pragma once
#include <cstdint>
#include <string>

#include "json/utf8.hpp"
#include "json/value.hpp"
#include "src/config.hpp"

namespace ur {

// Internal job ids start with '.', which a request id (one routing-key
// word) cannot.
inline constexpr char kSysinfoJob[] = ".sysinfo";
inline constexpr char kRebootJob[] = ".reboot";
// Replies that may reach a client that has only just connected wait this
// long after the request arrived: see answer_broadcast(), ping_reply_due().
inline constexpr uint64_t kFreshClientReplyDelayMs = 100;
// Answers up to this size are published mandatory: one that no queue took
// (its requester has not bound its reply queue yet: urclient after it
// connects or reconnects) comes back and is sent again (Outbox::confirm).
// Larger ones would come back whole each time; they take long enough to
// make that their requester's binds are done.
inline constexpr uint64_t kReturnableBytes = 64 * 1024;
// Bytes of the requests waiting for a slot that the agent acks at receipt,
// at most (ack_waiting(); their number is --max-waiting).
inline constexpr uint64_t kMaxAckedWaitingBytes = 32u << 20;
inline constexpr uint64_t kSysinfoSlowMs = 10000;      // a first read this slow is said
// A discover waits this long for a fresh sysinfo, then gets the one read
// last: a hung sysinfo command must not hide the node from discovers.
inline constexpr uint64_t kBroadcastFreshWaitMs = 2000;
// An exit-113 reply sent this long ago and not yet confirmed: reboot anyway.
inline constexpr uint64_t kRebootGraceMs = 10000;
// An exit-113 reply that could not be sent for this long (no broker, or
// one that blocks publishing): reboot anyway, rather than never.
inline constexpr uint64_t kRebootUnsentMs = 120000;
// How often a reboot command that could not start (short of processes,
// memory or fds) is tried again, and how often that is said.
inline constexpr uint64_t kRebootRetryMs = 1000;
inline constexpr uint64_t kRebootShortSayMs = 60000;
inline constexpr uint64_t kHealthyMs = 30000;      // a connection open this long resets backoff

// A string from the network as a log field (bytes that are not UTF-8 escaped).
inline json::Value field(const std::string& s) { return json::Value(json::string_from_bytes(s)); }

// A broker address as configured, "host:port" or "[v6]:port"; a list of
// them as a log field.
std::string broker_text(const BrokerAddress& b);
// Where the broker comes from, for the start-up line.
const char* broker_source(const Config& cfg);
json::Value broker_list(const std::vector<BrokerAddress>& brokers);

}  // namespace ur
