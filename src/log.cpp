#include "src/log.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
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
// The log may go to a pipe, socket, FIFO or terminal, whose reader can
// stop reading (a stopped `| bunyan`, a stalled journald or ssh session):
// the agent froze in write() (no replies, pings or heartbeats).  Such an
// output is written without blocking, so that a stalled reader costs log
// lines instead: through a private non-blocking file description of it (a
// terminal reopened by name, a pipe through /proc; O_NONBLOCK on fd 2
// itself would change it for everyone sharing it, the shell included), a
// socket with MSG_DONTWAIT, and where neither works, after poll() says
// there is room, in chunks a pipe takes at once.
enum class Out { Plain, Private, Socket, Polled };
Out g_out = Out::Plain;
int g_wfd = 2;            // g_fd, or the private description of it
uint64_t g_dropped = 0;   // lines not written since the last one that was
bool g_broken = false;    // a line was cut off part-way: start on a new one
constexpr int kFinishMs = 200;  // a line begun may wait this long for room

void choose_output(int fd) {
    if (g_out == Out::Private) ::close(g_wfd);
    g_wfd = fd;
    g_out = Out::Plain;
    struct stat st;
    bool tty = isatty(fd) != 0;
    if (fstat(fd, &st) != 0 || S_ISREG(st.st_mode) || (S_ISCHR(st.st_mode) && !tty)) return;
    if (S_ISSOCK(st.st_mode)) {
        g_out = Out::Socket;
        return;
    }
    int priv = -1;
    if (tty) {
        if (const char* name = ttyname(fd)) priv = ::open(name, O_WRONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
    } else {
#ifdef __linux__
        priv = ::open(("/proc/self/fd/" + std::to_string(fd)).c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
#endif
    }
    struct stat ps;
    if (priv >= 0 && fstat(priv, &ps) == 0 && ps.st_dev == st.st_dev && ps.st_ino == st.st_ino) {
        g_wfd = priv;
        g_out = Out::Private;
        return;
    }
    if (priv >= 0) ::close(priv);
    g_out = Out::Polled;
}

bool room(int timeout_ms) {
    struct pollfd p = {g_wfd, POLLOUT, 0};
    int r;
    do {
        r = ::poll(&p, 1, timeout_ms);
    } while (r < 0 && errno == EINTR);
    return r > 0 && (p.revents & POLLOUT) != 0;
}

ssize_t put(const char* p, size_t n) {
    if (g_out == Out::Socket) {
        int flags = MSG_DONTWAIT;
#ifdef MSG_NOSIGNAL
        flags |= MSG_NOSIGNAL;
#endif
        ssize_t r = ::send(g_wfd, p, n, flags);
        if (r >= 0 || errno != ENOTSOCK) return r;
        g_out = Out::Polled;
    }
    if (g_out == Out::Polled) n = std::min<size_t>(n, 4096);  // a pipe with room takes it at once
    return ::write(g_wfd, p, n);
}

// Writes the whole line, or returns false having written none of it (the
// output had no room), or part of it (it had none left within kFinishMs).
bool emit(const std::string& line) {
    const char* p = line.data();
    size_t left = line.size();
    bool begun = false;
    while (left > 0) {
        if (g_out == Out::Polled && !room(begun ? kFinishMs : 0)) {
            g_broken = g_broken || begun;
            return false;
        }
        ssize_t n = put(p, left);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && begun && g_out != Out::Polled &&
            room(kFinishMs))
            continue;
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
    choose_output(fd);
    g_dropped = 0;
    g_broken = false;
    char host[256] = {0};
    if (gethostname(host, sizeof host - 1) == 0) g_hostname = host;
}

void set_level(Level min_level) { g_level = min_level; }

bool enabled(Level level) { return int(level) >= int(g_level); }

namespace {

bool is_record_key(std::string_view key) {
    for (const char* k : {"name", "hostname", "pid", "level", "msg", "time", "v"})
        if (key == k) return true;
    return false;
}

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
        // A field named like one of the record's own would make a key
        // appear twice, which strict JSON readers refuse: renamed.
        if (is_record_key(f.key))
            json::append_quoted(line, "field_" + std::string(f.key));
        else
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
    // Callers log a failure and then test errno (or log it): a log that
    // cannot be written (full, a stalled reader) must not change it.
    struct KeepErrno {
        int saved = errno;
        ~KeepErrno() { errno = saved; }
    } keep;
    std::string line = format(level, msg, fields);
    if (g_broken && emit("\n")) g_broken = false;
    if (g_dropped > 0 && !g_broken &&
        emit(format(Level::Warn, "log lines dropped: the log's reader did not keep up",
                    {{"dropped", json::Value(int64_t(g_dropped))}})))
        g_dropped = 0;
    if (g_broken || !emit(line)) ++g_dropped;
}

uint64_t dropped_lines() { return g_dropped; }

}  // namespace ur::log
