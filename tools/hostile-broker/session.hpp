// One hostile session: on a socket the agent connected, play a correct
// broker up to the plan's stage, send the abuse, and watch what the agent
// does about it.  The broker side is strict about the agent: a frame from
// the agent that does not decode is reported (it would be an agent bug).
#pragma once

#include <cstdint>
#include <string>

#include "tools/hostile-broker/abuse.hpp"

namespace hostile {

struct SessionOptions {
    uint32_t frame_max = 131072;   // offered in connection.tune
    uint16_t heartbeat = 1;        // offered in connection.tune (seconds)
    uint64_t stage_ms = 5000;      // to reach the planned stage
    uint64_t react_ms = 3000;      // for the agent's reaction to the abuse
    uint64_t silence_ms = 5000;    // for its timeout after we fall silent
};

struct SessionResult {
    bool reached = false;          // the handshake got to the planned stage
    Reaction reaction = Reaction::None;
    uint16_t code = 0;             // the agent's connection.close reply code
    std::string text;              // ... and its reply text
    bool agent_fault = false;      // the agent sent something a broker must refuse
    std::string note;              // what went wrong, when something did
    uint64_t ms = 0;               // how long the session took
};

// Runs one session on `fd` (connected, non-blocking) and closes it.
SessionResult run_session(int fd, const Plan& plan, Rng& rng, const SessionOptions& opt);

// Whether the result is what the plan expects (always true for unchecked
// kinds that reached their stage); `why` says what differs.
bool result_ok(const Plan& plan, const SessionResult& r, std::string& why);

}  // namespace hostile
