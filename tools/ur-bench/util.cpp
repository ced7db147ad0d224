#include "tools/ur-bench/util.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>

#include "json/json.hpp"
#include "tools/ur-bench/client.hpp"

extern char** environ;

namespace bench {

Stats stats(std::vector<double> xs) {
    Stats s;
    if (xs.empty()) return s;
    std::sort(xs.begin(), xs.end());
    s.n = xs.size();
    s.min = xs.front();
    s.max = xs.back();
    auto rank = [&](double p) {
        size_t r = size_t(std::ceil(p * double(xs.size())));
        return xs[r == 0 ? 0 : r - 1];
    };
    s.median = rank(0.5);
    s.p99 = rank(0.99);
    double sum = 0;
    for (double x : xs) sum += x;
    s.mean = sum / double(xs.size());
    return s;
}

static double round3(double v) { return std::round(v * 1000.0) / 1000.0; }

void emit(const std::string& id, const std::string& label, const std::string& unit,
          const Stats& s, bool with_p99, const std::string& command, const std::string& note) {
    json::Value o = json::Value::object();
    o.set("id", id);
    o.set("label", label);
    o.set("unit", unit);
    o.set("n", json::Value(int64_t(s.n)));
    o.set("median", round3(s.median));
    o.set("min", round3(s.min));
    o.set("max", round3(s.max));
    if (with_p99) o.set("p99", round3(s.p99));
    o.set("command", command);
    if (!note.empty()) o.set("note", note);
    std::string line = json::write(o) + "\n";
    std::fputs(line.c_str(), stdout);
    std::fflush(stdout);
}

void emit_value(const std::string& id, const std::string& label, const std::string& unit,
                double v, const std::string& command, const std::string& note) {
    emit(id, label, unit, stats({v}), false, command, note);
}

static uint64_t proc_field_kib(pid_t pid, const char* file, const char* field) {
    char path[64];
    std::snprintf(path, sizeof path, "/proc/%d/%s", int(pid), file);
    FILE* f = std::fopen(path, "re");
    if (!f) return 0;
    char line[256];
    uint64_t v = 0;
    size_t len = std::strlen(field);
    while (std::fgets(line, sizeof line, f))
        if (std::strncmp(line, field, len) == 0) {
            v = std::strtoull(line + len, nullptr, 10);
            break;
        }
    std::fclose(f);
    return v;
}

uint64_t status_kib(pid_t pid, const char* field) { return proc_field_kib(pid, "status", field); }

uint64_t rollup_kib(pid_t pid, const char* field) {
    return proc_field_kib(pid, "smaps_rollup", field);
}

uint64_t machine_busy_ns() {
    FILE* f = std::fopen("/proc/stat", "re");
    if (!f) return 0;
    unsigned long long user = 0, nice = 0, sys = 0, idle = 0, iowait = 0, irq = 0, softirq = 0;
    int n = std::fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu", &user, &nice, &sys, &idle,
                        &iowait, &irq, &softirq);
    std::fclose(f);
    if (n != 7) return 0;
    long hz = sysconf(_SC_CLK_TCK);
    if (hz <= 0) return 0;
    return (user + nice + sys + irq + softirq) * (1000000000ull / uint64_t(hz));
}

uint64_t cpu_ns(pid_t pid) {
    if (pid <= 0) return 0;
    // Summed over the threads (RabbitMQ's schedulers are threads).
    char dir[64];
    std::snprintf(dir, sizeof dir, "/proc/%d/task", int(pid));
    DIR* d = opendir(dir);
    if (!d) return 0;
    uint64_t total = 0;
    while (struct dirent* e = readdir(d)) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        std::string path = std::string(dir) + "/" + e->d_name + "/schedstat";
        FILE* f = std::fopen(path.c_str(), "re");
        if (!f) continue;
        unsigned long long v = 0;
        if (std::fscanf(f, "%llu", &v) == 1) total += v;
        std::fclose(f);
    }
    closedir(d);
    return total;
}

// ppid of every process, from /proc/N/stat ("pid (comm) state ppid ...";
// comm may hold spaces and parentheses, so parse after the last ')').
static std::multimap<pid_t, pid_t> children_map() {
    std::multimap<pid_t, pid_t> m;
    DIR* d = opendir("/proc");
    if (!d) return m;
    while (struct dirent* e = readdir(d)) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        char path[300], buf[512];
        std::snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (n <= 0) continue;
        buf[n] = '\0';
        char* p = std::strrchr(buf, ')');
        if (!p) continue;
        char state;
        int ppid;
        if (std::sscanf(p + 1, " %c %d", &state, &ppid) == 2)
            m.emplace(pid_t(ppid), pid_t(std::atoi(e->d_name)));
    }
    closedir(d);
    return m;
}

uint64_t rss_tree_kib(pid_t pid) {
    auto m = children_map();
    uint64_t total = 0;
    std::vector<pid_t> todo{pid};
    while (!todo.empty()) {
        pid_t p = todo.back();
        todo.pop_back();
        total += status_kib(p, "VmRSS:");
        auto r = m.equal_range(p);
        for (auto it = r.first; it != r.second; ++it) todo.push_back(it->second);
    }
    return total;
}

pid_t spawn(const std::vector<std::string>& argv, int out_fd) {
    std::vector<char*> av;
    for (const auto& a : argv) av.push_back(const_cast<char*>(a.c_str()));
    av.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    if (out_fd >= 0) {
        posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
        posix_spawn_file_actions_adddup2(&fa, out_fd, 2);
    }
    pid_t pid = -1;
    int rc = posix_spawn(&pid, av[0], &fa, nullptr, av.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
        std::fprintf(stderr, "ur-bench: cannot run %s: %s\n", av[0], std::strerror(rc));
        return -1;
    }
    return pid;
}

void stop(pid_t pid, int grace_ms) {
    if (pid <= 0) return;
    kill(pid, SIGTERM);
    uint64_t t0 = now_ns();
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid || (r < 0 && errno != EINTR)) return;
        if (ms_since(t0) > grace_ms) {
            kill(pid, SIGKILL);
            while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
            return;
        }
        usleep(2000);
    }
}

bool write_file(const std::string& path, const std::string& text, int mode) {
    int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) return false;
    bool ok = write(fd, text.data(), text.size()) == ssize_t(text.size());
    close(fd);
    return ok;
}

bool make_dirs(const std::string& path) {
    for (size_t i = 1; i <= path.size(); ++i) {
        if (i == path.size() || path[i] == '/') {
            std::string p = path.substr(0, i);
            if (mkdir(p.c_str(), 0755) != 0 && errno != EEXIST) return false;
        }
    }
    return true;
}

static uint64_t rng() {
    static uint64_t s = now_ns() ^ (uint64_t(getpid()) << 40);
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 2685821657736338717ULL;
}

static std::string hex(size_t digits) {
    static const char h[] = "0123456789abcdef";
    std::string s;
    while (s.size() < digits) s += h[rng() >> 60];
    return s;
}

std::string random_uuid() {
    return hex(8) + "-" + hex(4) + "-" + hex(4) + "-" + hex(4) + "-" + hex(12);
}

std::string random_token() { return hex(16); }

std::string sysinfo_json(const std::string& uuid) {
    std::string mac = "02";
    for (int i = 0; i < 5; ++i) mac += ":" + hex(2);
    json::Value nic = json::Value::object();
    nic.set("MAC Address", mac);
    json::Value names = json::Value::array();
    names.push_back("admin");
    nic.set("NIC Names", names);
    json::Value nics = json::Value::object();
    nics.set("e1000g0", nic);
    json::Value boot = json::Value::object();
    boot.set("console", "text");
    json::Value o = json::Value::object();
    o.set("Live Image", "20260101T000000Z");
    o.set("System Type", "SunOS");
    o.set("UUID", uuid);
    o.set("Hostname", "cn-" + uuid.substr(0, 8));
    o.set("Datacenter Name", "bench-1");
    o.set("Setup", "false");
    o.set("Boot Parameters", boot);
    o.set("Network Interfaces", nics);
    return json::write(o) + "\n";
}

void raise_nofile() {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

}  // namespace bench
