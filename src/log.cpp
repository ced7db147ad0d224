#include "src/log.hpp"

#include <unistd.h>

#include <cerrno>

#include "src/clock.hpp"

namespace ur::log {

namespace {
std::string g_name = "ur";
std::string g_hostname;
Level g_level = Level::Info;
int g_fd = 2;
pid_t g_pid = 0;  // asked once, at init(): the agent does not fork itself
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
    char host[256] = {0};
    if (gethostname(host, sizeof host - 1) == 0) g_hostname = host;
}

void set_level(Level min_level) { g_level = min_level; }

bool enabled(Level level) { return int(level) >= int(g_level); }

void write(Level level, std::string_view msg, std::initializer_list<Field> fields) {
    if (!enabled(level)) return;
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
    const char* p = line.data();
    size_t left = line.size();
    while (left > 0) {
        ssize_t n = ::write(g_fd, p, left);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;
        p += n;
        left -= size_t(n);
    }
}

}  // namespace ur::log
