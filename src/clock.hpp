// Time sources for the agent: a monotonic clock for deadlines and the
// wall clock for timestamps that leave the process.
#pragma once
#include <cstdint>
#include <string>

namespace ur {

// Milliseconds on CLOCK_MONOTONIC; only differences are meaningful.
uint64_t monotonic_ms();

// Milliseconds since the Unix epoch (CLOCK_REALTIME).
uint64_t wall_ms();

// ISO 8601 UTC with milliseconds, e.g. "2026-11-24T10:00:00.123Z".
std::string iso8601(uint64_t wall_ms);

}  // namespace ur
