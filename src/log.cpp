#include "src/log.hpp"

#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "src/clock.hpp"

namespace ur::log {

namespace {
std::string g_name = "ur";
std::string g_hostname;
Level g_level = Level::Info;
int g_fd = 2;
pid_t g_pid = 0;  // asked once, at init(): the agent does not fork itself
// The log goes to a pipe, socket, FIFO or terminal, whose reader can stop
// reading (a stopped `| bunyan`, a stalled journald): written only when
// poll() says there is room, so that a stalled reader costs log lines, not
// the agent (which froze in write(): no replies, pings or heartbeats).
bool g_may_block = false;
uint64_t g_dropped = 0;   // lines not written since the last one that was
bool g_broken = false;    // a line was cut off part-way: start on a new one

bool room(int timeout_ms) {
    struct pollfd p = {g_fd, POLLOUT, 0};
    int r;
    do {
        r = ::poll(&p, 1, timeout_ms);
    } while (r < 0 && errno == EINTR);
    return r > 0 && (p.revents & POLLOUT) != 0;
}

// Writes the whole line, or returns false.  Where the reader can stall:
// chunks of at most 4096 bytes (a pipe with room takes that much at once),
// each after poll() says there is room; a line begun gets 1 s to finish.
bool emit(const std::string& line) {
    const char* p = line.data();
    size_t left = line.size();
    bool begun = false;
    while (left > 0) {
        size_t chunk = left;
        if (g_may_block) {
            if (!room(begun ? 1000 : 0)) {
                g_broken = g_broken || begun;
                return false;
            }
            chunk = std::min<size_t>(left, 4096);
        }
        ssize_t n = ::write(g_fd, p, chunk);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            g_broken = g_broken || begun;
            return false;
        }
        begun = true;
        p += n;
        left -= size_t(n);
    }
    return true;
}

std::string format(Level level, std::string_view msg, std::initializer_list<Field> fields);

}  // namespace

bool parse_level(std::string_view name, Level& out) {
    static const struct { const char* name; Level level; } table[] = {
        {"trace", Level::Trace}, {"debug", Level::Debug}, {"info", Level::Info},
        {"warn", Level::Warn},   {"error", Level::Error}, {"fatal", Level::Fatal},
    };
    for (const auto& e : table) {
        if (name == e.name) {
            out = e.level;
            return true;
        }
    }
    return false;
}

void init(std::string name, Level min_level, int fd) {
    g_name = std::move(name);
    g_level = min_level;
    g_fd = fd;
    g_pid = getpid();
    struct stat st;
    g_may_block = fstat(fd, &st) == 0 && !S_ISREG(st.st_mode) && !S_ISCHR(st.st_mode)
                      ? true
                      : isatty(fd) != 0;
    g_dropped = 0;
    g_broken = false;
    char host[256] = {0};
    if (gethostname(host, sizeof host - 1) == 0) g_hostname = host;
}

void set_level(Level min_level) { g_level = min_level; }

bool enabled(Level level) { return int(level) >= int(g_level); }

namespace {

std::string format(Level level, std::string_view msg, std::initializer_list<Field> fields) {
    std::string line;
    line.reserve(256);
    line += "{\"name\":";
    json::append_quoted(line, g_name);
    line += ",\"hostname\":";
    json::append_quoted(line, g_hostname);
    line += ",\"pid\":";
    line += std::to_string(g_pid ? g_pid : getpid());
    line += ",\"level\":";
    line += std::to_string(int(level));
    line += ",\"msg\":";
    // Messages may quote untrusted bytes (routing keys, errors): sanitize.
    json::append_quoted(line, json::string_from_bytes(msg));
    line += ",\"time\":\"";
    line += iso8601(wall_ms());
    line += "\",\"v\":0";
    for (const auto& f : fields) {
        line += ',';
        json::append_quoted(line, f.key);
        line += ':';
        json::write(f.value, line);
    }
    line += "}\n";
    return line;
}

}  // namespace

void write(Level level, std::string_view msg, std::initializer_list<Field> fields) {
    if (!enabled(level)) return;
    std::string line = format(level, msg, fields);
    if (g_broken && (!g_may_block || room(0)) && emit("\n")) g_broken = false;
    if (g_dropped > 0 && !g_broken &&
        emit(format(Level::Warn, "log lines dropped: the log's reader did not keep up",
                    {{"dropped", json::Value(int64_t(g_dropped))}})))
        g_dropped = 0;
    if (g_broken || !emit(line)) ++g_dropped;
}

uint64_t dropped_lines() { return g_dropped; }

}  // namespace ur::log
