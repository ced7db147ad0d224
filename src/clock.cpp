#include "src/clock.hpp"

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
    time_t secs = time_t(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char buf[64];
    std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ",
                  tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                  tm.tm_min, tm.tm_sec, unsigned(ms % 1000));
    return buf;
}

}  // namespace ur
