#include "src/clock.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <ctime>

namespace ur {

static uint64_t read_clock(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return uint64_t(ts.tv_sec) * 1000u + uint64_t(ts.tv_nsec) / 1000000u;
}

uint64_t monotonic_ms() { return read_clock(CLOCK_MONOTONIC); }
uint64_t wall_ms() { return read_clock(CLOCK_REALTIME); }

std::string iso8601(uint64_t ms) {
    // Every log line stamps the time, two per request: the date and time
    // are formatted once per second, the milliseconds each call.
    static uint64_t cached_secs = UINT64_MAX;
    static char prefix[40];
    static size_t prefix_len = 0;
    uint64_t secs = ms / 1000;
    if (secs != cached_secs) {
        time_t t = time_t(secs);
        struct tm tm;
        gmtime_r(&t, &tm);
        int n = std::snprintf(prefix, sizeof prefix, "%04d-%02d-%02dT%02d:%02d:%02d.",
                              tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                              tm.tm_min, tm.tm_sec);
        prefix_len = n > 0 ? std::min(size_t(n), sizeof prefix - 1) : 0;
        cached_secs = secs;
    }
    unsigned frac = unsigned(ms % 1000);
    std::string out(prefix, prefix_len);
    out += char('0' + frac / 100);
    out += char('0' + frac / 10 % 10);
    out += char('0' + frac % 10);
    out += 'Z';
    return out;
}

}  // namespace ur
