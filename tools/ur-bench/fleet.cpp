// ur-bench fleet: many agents on one broker.

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "tools/ur-bench/client.hpp"
#include "tools/ur-bench/modes.hpp"
#include "tools/ur-bench/util.hpp"

namespace bench {

// ------------------------------------------------------------ fleet

// Collects deliveries whose routing key starts with prefix until `want`
// distinct uuids (the word after prefix) were seen.  Returns ms or -1.
static double collect(Client& mon, const std::string& prefix, const std::string& suffix, size_t want,
               uint64_t t0, uint64_t timeout_ms, size_t* seen_out = nullptr) {
    std::set<std::string> seen;
    pump({&mon}, [&] {
        while (!mon.deliveries.empty()) {
            const std::string& k = mon.deliveries.front().routing_key;
            if (k.rfind(prefix, 0) == 0 && k.size() >= prefix.size() + suffix.size() &&
                k.compare(k.size() - suffix.size(), suffix.size(), suffix) == 0)
                seen.insert(k.substr(prefix.size(), k.size() - prefix.size() - suffix.size()));
            mon.deliveries.pop_front();
        }
        return seen.size() >= want;
    }, timeout_ms);
    if (seen_out) *seen_out = seen.size();
    return seen.size() >= want ? ms_since(t0) : -1;
}

// Runs argv, output to out_path; returns wall ms and the exit status.
static double run_timed(const std::vector<std::string>& argv, const std::string& out_path, int& status) {
    int fd = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    uint64_t t0 = now_ns();
    pid_t pid = spawn(argv, fd);
    if (fd >= 0) close(fd);
    if (pid < 0) return -1;
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return ms_since(t0);
}

static size_t count_lines(const std::string& path, const char* needle) {
    FILE* f = std::fopen(path.c_str(), "re");
    if (!f) return 0;
    char buf[65536];
    size_t n = 0;
    while (std::fgets(buf, sizeof buf, f))
        if (std::strstr(buf, needle)) ++n;
    std::fclose(f);
    return n;
}

void mode_fleet(const Options& o) {
    if (o.count <= 0) die("fleet: --count N is required");
    raise_nofile();
    std::string n = std::to_string(o.count);
    std::string base = fresh_dir(o, "fleet-" + n);
    Client mon;
    open_monitor(mon, o, {"ur.startup.#", "ur.execute-reply.#"});
    int log_fd = open((base + "/agents.log").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    std::vector<AgentProc> agents;
    uint64_t t0 = now_ns();
    for (int i = 0; i < o.count; ++i)
        agents.push_back(start_agent(o, base + "/a" + std::to_string(i), {}, log_fd));
    size_t seen = 0;
    double up_ms = collect(mon, "ur.startup.", "", agents.size(), t0, 600000, &seen);
    if (up_ms < 0) {
        for (auto& a : agents) stop_agent(a.pid, 100);
        die("fleet: only " + std::to_string(seen) + " of " + n + " agents announced start-up; see " +
            base + "/agents.log");
    }
    emit_value("fleet_startup_" + n, "Fleet " + n + ": spawn all -> every ur.startup arrived", "ms",
               up_ms, o.command);
    usleep(1000000);  // let the sysinfo heartbeats settle
    double total_kib = 0, pss_kib = 0;
    for (auto& a : agents) {
        total_kib += double(rss_tree_kib(a.pid));
        pss_kib += double(rollup_kib(a.pid, "Pss:"));
    }
    emit_value("fleet_rss_" + n, "Fleet " + n + ": total RSS of the agents", "MiB",
               total_kib / 1024.0, o.command,
               "per agent " + std::to_string(int(total_kib / double(agents.size()))) + " KiB");
    emit_value("fleet_pss_" + n, "Fleet " + n + ": total PSS (shared text counted once)", "MiB",
               pss_kib / 1024.0, o.command);

    std::vector<double> disc, each;
    for (int r = 0; r < 3; ++r) {
        std::string req = random_token();
        uint64_t t1 = now_ns();
        mon.publish("ur.broadcast.sysinfo." + req, "{}");
        double ms = collect(mon, "ur.execute-reply.", "." + req, agents.size(), t1, 60000, &seen);
        if (ms < 0) die("fleet: discover saw " + std::to_string(seen) + " of " + n);
        disc.push_back(ms);
    }
    emit("fleet_discover_" + n, "Fleet " + n + ": broadcast sysinfo -> all replies (ur-bench)",
         "ms", stats(disc), false, o.command);
    std::string body = execute_body("#!/bin/sh\n/bin/hostname\n");
    for (int r = 0; r < 3; ++r) {
        std::string req = random_token();
        uint64_t t1 = now_ns();
        for (auto& a : agents) mon.publish("ur.execute." + a.uuid + "." + req, body);
        double ms = collect(mon, "ur.execute-reply.", "." + req, agents.size(), t1, 120000, &seen);
        if (ms < 0) die("fleet: hostname ran on " + std::to_string(seen) + " of " + n);
        each.push_back(ms);
    }
    emit("fleet_oneach_" + n, "Fleet " + n + ": hostname on every node -> all replies (ur-bench)",
         "ms", stats(each), false, o.command);

    if (!o.urctl.empty()) {
        std::string broker = "127.0.0.1:" + std::to_string(o.port);
        std::string out = base + "/urctl.out";
        std::vector<double> seen_all, wall;
        for (int r = 0; r < 3; ++r) {
            int st = 0;
            // --expect: urctl is done once every node has answered (it
            // would otherwise sit out its --timeout), so its wall time is
            // the time to see them all, its own start and connect included.
            double ms = run_timed({o.urctl, "--broker", broker, "--json", "--timeout", "30",
                                   "--expect", n, "discover"}, out, st);
            size_t nodes = count_lines(out, "\"uuid\"");
            if (st != 0 || nodes < agents.size())
                die("urctl discover --expect " + n + ": status " + std::to_string(st) + ", " +
                    std::to_string(nodes) + " of " + n + " nodes; see " + out);
            seen_all.push_back(ms);
            ms = run_timed({o.urctl, "--broker", broker, "--json", "--find-timeout", "30",
                            "--expect", n, "oneach", "/bin/hostname"}, out, st);
            nodes = count_lines(out, "\"exit_status\":0");
            if (st != 0 || nodes < agents.size())
                die("urctl oneach: status " + std::to_string(st) + ", " + std::to_string(nodes) +
                    " of " + n + " nodes; see " + out);
            wall.push_back(ms);
        }
        emit("fleet_urctl_discover_" + n,
             "Fleet " + n + ": `urctl discover --expect " + n + "` wall time (all listed)", "ms",
             stats(seen_all), false, o.command, "urctl's start and connect included");
        emit("fleet_urctl_oneach_" + n,
             "Fleet " + n + ": `urctl oneach --expect " + n + " /bin/hostname` wall time", "ms",
             stats(wall), false, o.command, "its discover, then hostname on every node");
    }
    for (auto& a : agents) kill(a.pid, SIGTERM);
    for (auto& a : agents) stop_agent(a.pid, 5000);
    close(log_fd);
}

}  // namespace bench
