// ur-bench helpers: statistics, /proc readings, process spawning, the
// sysinfo of a fake node, and the JSON line each figure is printed as.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace bench {

struct Stats {
    size_t n = 0;
    double min = 0, max = 0, median = 0, p99 = 0, mean = 0;
};
// Order statistics of xs (nearest-rank percentiles).  Empty xs: all zero.
Stats stats(std::vector<double> xs);

// One figure, printed as one JSON line on stdout:
// {"id":..,"label":..,"unit":..,"n":..,"median":..,"min":..,"max":..,
//  "p99":..(when with_p99),"command":..,"note":..}
void emit(const std::string& id, const std::string& label, const std::string& unit,
          const Stats& s, bool with_p99, const std::string& command,
          const std::string& note = "");
// A single value (n = 1: median = min = max = v).
void emit_value(const std::string& id, const std::string& label, const std::string& unit,
                double v, const std::string& command, const std::string& note = "");

// Resident set size in KiB (VmRSS) of pid and every descendant; VmHWM of
// pid alone.  0 when the process is gone.
uint64_t rss_tree_kib(pid_t pid);
uint64_t status_kib(pid_t pid, const char* field);  // "VmRSS:", "VmHWM:"
// Time pid has spent on a CPU, in ns (/proc/PID/task/*/schedstat: all
// its threads, not its children).  0 when unavailable.
uint64_t cpu_ns(pid_t pid);
// CPU time the whole machine has spent busy (user, nice, system, irq,
// softirq: not idle, iowait or steal), in ns, from /proc/stat; its
// resolution is the clock tick (10 ms).  0 when unavailable.
uint64_t machine_busy_ns();
// A field of /proc/PID/smaps_rollup in KiB ("Pss:", "Anonymous:"); 0 if absent.
uint64_t rollup_kib(pid_t pid, const char* field);

// posix_spawn of argv with stdin /dev/null and stdout+stderr on out_fd (-1:
// inherited).  Returns the pid, or -1 (message on stderr).
pid_t spawn(const std::vector<std::string>& argv, int out_fd = -1);
// Terminates and reaps pid (SIGTERM, then SIGKILL after grace_ms).
void stop(pid_t pid, int grace_ms = 3000);

bool write_file(const std::string& path, const std::string& text, int mode = 0644);
bool make_dirs(const std::string& path);
std::string random_uuid();
std::string random_token();
// A SmartOS-like sysinfo object for a fake node.
std::string sysinfo_json(const std::string& uuid);

// Raises RLIMIT_NOFILE's soft limit to the hard limit.
void raise_nofile();

}  // namespace bench
