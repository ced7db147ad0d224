#include <doctest/doctest.h>

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "src/log.hpp"

using namespace ur;

namespace {

std::string drain(int fd) {
    std::string out;
    char buf[65536];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n <= 0) break;
        out.append(buf, size_t(n));
    }
    return out;
}

// The lines the log says it dropped, in its "log lines dropped" records.
uint64_t said_dropped(const std::string& s) {
    uint64_t n = 0;
    const std::string key = "\"dropped\":";
    for (size_t at = s.find(key); at != std::string::npos; at = s.find(key, at + 1))
        n += std::stoull(s.substr(at + key.size()));
    return n;
}

size_t count(const std::string& s, const std::string& what) {
    size_t n = 0;
    for (size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + 1)) ++n;
    return n;
}

}  // namespace

TEST_CASE("log: a reader that stops reading costs log lines, never a blocked agent") {
    int p[2];
    REQUIRE(::pipe(p) == 0);
    REQUIRE(::fcntl(p[0], F_SETFL, O_NONBLOCK) == 0);  // the test's own reads only
    log::init("t", log::Level::Info, p[1]);
    // Fill the pipe (64 KiB) and far beyond: a blocking write would hang here.
    std::string big(1000, 'x');
    for (int i = 0; i < 500; ++i) log::info("line", {{"pad", json::Value(big)}});
    uint64_t dropped = log::dropped_lines();
    CHECK(dropped > 0);
    std::string first = drain(p[0]);
    // Each line written, or dropped and counted: in a record written in
    // between (a short one can fit where a long one does not) or still
    // pending.
    CHECK(count(first, "\"msg\":\"line\"") + said_dropped(first) + dropped == 500);
    // Room again: the next line says how many were lost, then itself.
    log::info("after");
    std::string next = drain(p[0]);
    CHECK(next.find("log lines dropped") != std::string::npos);
    CHECK(next.find("\"dropped\":" + std::to_string(dropped)) != std::string::npos);
    CHECK(next.find("\"msg\":\"after\"") != std::string::npos);
    CHECK(log::dropped_lines() == 0);
    // Every line whole: the stream is JSON lines, none cut or glued.
    for (const std::string& text : {first, next}) {
        size_t at = 0;
        for (size_t nl; (nl = text.find('\n', at)) != std::string::npos; at = nl + 1) {
            CHECK(text[at] == '{');
            CHECK(text[nl - 1] == '}');
        }
        CHECK(at == text.size());
    }
    log::init("ur", log::Level::Info, 2);
    ::close(p[0]);
    ::close(p[1]);
}

TEST_CASE("log: a terminal nobody reads (a stalled ssh session) does not block either") {
    // A cooked-mode terminal reports room for a byte and then blocks the
    // rest of a write (output processing): poll() alone was not enough.
    int master = ::posix_openpt(O_RDWR | O_NOCTTY);
    if (master < 0 || ::grantpt(master) != 0 || ::unlockpt(master) != 0) {
        MESSAGE("skipped: no pseudo-terminals here");
        if (master >= 0) ::close(master);
        return;
    }
    int slave = ::open(::ptsname(master), O_RDWR | O_NOCTTY);
    REQUIRE(slave >= 0);
    log::init("t", log::Level::Info, slave);
    std::string big(200, 'y');
    for (int i = 0; i < 2000; ++i) log::info("tty line", {{"pad", json::Value(big)}});
    CHECK(log::dropped_lines() > 0);
    log::init("ur", log::Level::Info, 2);
    ::close(slave);
    ::close(master);
}

TEST_CASE("log: a field named like a record key is renamed, never a key twice") {
    int p[2];
    REQUIRE(::pipe(p) == 0);
    REQUIRE(::fcntl(p[0], F_SETFL, O_NONBLOCK) == 0);
    log::init("t", log::Level::Info, p[1]);
    log::info("clash", {{"pid", json::Value(int64_t(7))}, {"hostname", json::Value("cn1")},
                        {"msg", json::Value("m")}, {"pids", json::Value(int64_t(8))}});
    std::string line = drain(p[0]);
    for (const char* key : {"\"name\":", "\"hostname\":", "\"pid\":", "\"msg\":"})
        CHECK(count(line, key) == 1);
    CHECK(count(line, "\"field_pid\":7") == 1);
    CHECK(count(line, "\"field_hostname\":\"cn1\"") == 1);
    CHECK(count(line, "\"field_msg\":\"m\"") == 1);
    CHECK(count(line, "\"pids\":8") == 1);  // only whole names
    log::init("ur", log::Level::Info, 2);
    ::close(p[0]);
    ::close(p[1]);
}

TEST_CASE("log: a line that cannot be written leaves errno as it was") {
    // Callers log a failure and then test errno: the start-up marker's
    // EEXIST, read after a log line to a full disk, became ENOSPC and a
    // restarted agent announced start-up again.
    int full = ::open("/dev/full", O_WRONLY | O_CLOEXEC);
    REQUIRE(full >= 0);
    log::init("t", log::Level::Info, full);
    errno = EEXIST;
    log::info("into a full device");
    CHECK(errno == EEXIST);
    log::init("ur", log::Level::Info, 2);
    ::close(full);
}
