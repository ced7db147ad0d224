// hostile-broker: an AMQP "broker" that attacks the agent.  For each of N
// sessions it accepts the agent's connection, plays a correct broker up to
// a stage chosen by the seed, sends one kind of abuse (abuse.hpp), records
// how the agent reacted and checks it where the spec fixes the answer.
//
//   hostile-broker [--port N] [--sessions N] [--seed N] [--only I]
//                  [--progress N] [--accept-timeout-ms MS] [--kind NAME]
//
// --kind NAME runs only that kind of abuse (names as in the report).
// Prints "listening 127.0.0.1:PORT", then "progress I" every --progress
// sessions, one "fail ..." line per session whose result was wrong, a table
// of reactions per abuse kind, and last a line "summary {JSON}".  Exits 0
// when every session went as expected, 1 otherwise (also when the agent
// stops reconnecting: it must never hang).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>

#include "json/json.hpp"
#include "src/clock.hpp"
#include "tools/hostile-broker/abuse.hpp"
#include "tools/hostile-broker/session.hpp"

namespace {

struct Options {
    uint16_t port = 0;
    uint64_t sessions = 10000;
    uint64_t seed = 1;
    int64_t only = -1;
    uint64_t progress = 0;
    uint64_t accept_timeout_ms = 10000;
    bool one_kind = false;
    hostile::Abuse kind = hostile::Abuse::Healthy;
};

int usage() {
    fprintf(stderr,
            "usage: hostile-broker [--port N] [--sessions N] [--seed N] [--only I]\n"
            "                      [--progress N] [--accept-timeout-ms MS] [--kind NAME]\n");
    return 2;
}

bool number(const char* s, unsigned long long max, unsigned long long& out) {
    if (!s || !*s || s[0] == '-') return false;
    char* end = nullptr;
    errno = 0;
    out = strtoull(s, &end, 10);
    return errno == 0 && *end == '\0' && out <= max;
}

int listen_on(uint16_t port, uint16_t& bound) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(fd, 16) != 0) {
        close(fd);
        return -1;
    }
    socklen_t len = sizeof a;
    getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    bound = ntohs(a.sin_port);
    return fd;
}

// The next connection, non-blocking and close-on-exec; -1 on timeout.
int accept_one(int lfd, uint64_t timeout_ms) {
    uint64_t deadline = ur::monotonic_ms() + timeout_ms;
    for (;;) {
        uint64_t now = ur::monotonic_ms();
        if (now >= deadline) return -1;
        pollfd p{lfd, POLLIN, 0};
        int n = poll(&p, 1, int(deadline - now));
        if (n < 0 && errno != EINTR) return -1;
        if (n <= 0) continue;
        int fd = accept(lfd, nullptr, nullptr);
        if (fd < 0) continue;
        fcntl(fd, F_SETFD, FD_CLOEXEC);
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        return fd;
    }
}

struct Tally {
    uint64_t sessions = 0, failed = 0;
    std::map<std::string, uint64_t> reactions;  // "close 501" -> count
};

std::string reaction_text(const hostile::SessionResult& r) {
    std::string s = hostile::to_string(r.reaction);
    if (r.reaction == hostile::Reaction::Close) s += " " + std::to_string(r.code);
    if (!r.reached) s = "not-reached";
    return s;
}

}  // namespace

int main(int argc, char** argv) {
    Options opt;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        unsigned long long v = 0;
        if (a == "--kind" && i + 1 < argc) {
            if (!hostile::abuse_from_string(argv[++i], opt.kind)) return usage();
            opt.one_kind = true;
            continue;
        }
        if (i + 1 >= argc || !number(argv[i + 1], ~0ull, v)) return usage();
        ++i;
        if (a == "--port" && v <= 65535) opt.port = uint16_t(v);
        else if (a == "--sessions") opt.sessions = v;
        else if (a == "--seed") opt.seed = v;
        else if (a == "--only") opt.only = int64_t(v);
        else if (a == "--progress") opt.progress = v;
        else if (a == "--accept-timeout-ms") opt.accept_timeout_ms = v;
        else return usage();
    }
    signal(SIGPIPE, SIG_IGN);
    uint16_t port = 0;
    int lfd = listen_on(opt.port, port);
    if (lfd < 0) {
        fprintf(stderr, "hostile-broker: cannot listen on 127.0.0.1:%u: %s\n", unsigned(opt.port),
                strerror(errno));
        return 1;
    }
    printf("listening 127.0.0.1:%u\n", unsigned(port));
    fflush(stdout);

    hostile::SessionOptions sopt;
    std::map<hostile::Abuse, Tally> tally;
    uint64_t total = 0, failed = 0, max_gap_ms = 0;
    bool hung = false;
    uint64_t t0 = ur::monotonic_ms(), last = t0;
    uint64_t first = opt.only >= 0 ? uint64_t(opt.only) : 0;
    uint64_t end = opt.only >= 0 ? first + 1 : opt.sessions;
    for (uint64_t i = first; i < end; ++i) {
        int fd = accept_one(lfd, opt.accept_timeout_ms);
        if (fd < 0) {
            printf("fail session %llu: the agent did not connect within %llu ms\n",
                   (unsigned long long)i, (unsigned long long)opt.accept_timeout_ms);
            hung = true;
            break;
        }
        uint64_t now = ur::monotonic_ms();
        max_gap_ms = std::max(max_gap_ms, now - last);
        hostile::Plan plan = hostile::make_plan(opt.seed, i, opt.one_kind ? &opt.kind : nullptr);
        hostile::Rng rng(opt.seed * 0x9E3779B97F4A7C15ull + i);
        hostile::SessionResult r = hostile::run_session(fd, plan, rng, sopt);
        last = ur::monotonic_ms();
        std::string why;
        Tally& t = tally[plan.abuse];
        ++t.sessions;
        ++t.reactions[reaction_text(r)];
        ++total;
        if (!hostile::result_ok(plan, r, why)) {
            ++t.failed;
            ++failed;
            printf("fail session %llu %s at %s: %s\n", (unsigned long long)i,
                   hostile::to_string(plan.abuse), hostile::to_string(plan.stage), why.c_str());
            fflush(stdout);
        }
        if (opt.progress && (i + 1) % opt.progress == 0) {
            printf("progress %llu\n", (unsigned long long)(i + 1));
            fflush(stdout);
        }
    }
    close(lfd);
    uint64_t elapsed = ur::monotonic_ms() - t0;

    json::Value kinds = json::Value::object();
    for (const auto& [abuse, t] : tally) {
        std::string line;
        json::Value seen = json::Value::object();
        for (const auto& [what, n] : t.reactions) {
            line += " " + what + " x" + std::to_string(n) + ";";
            seen.set(what, json::Value(int64_t(n)));
        }
        printf("kind %-26s %6llu sessions, %llu failed:%s\n", hostile::to_string(abuse),
               (unsigned long long)t.sessions, (unsigned long long)t.failed, line.c_str());
        json::Value k = json::Value::object();
        k.set("sessions", json::Value(int64_t(t.sessions)));
        k.set("failed", json::Value(int64_t(t.failed)));
        k.set("reactions", std::move(seen));
        kinds.set(hostile::to_string(abuse), std::move(k));
    }
    json::Value sum = json::Value::object();
    sum.set("sessions", json::Value(int64_t(total)));
    sum.set("failed", json::Value(int64_t(failed)));
    sum.set("hung", json::Value(hung));
    sum.set("seed", json::Value(int64_t(opt.seed)));
    sum.set("elapsed_ms", json::Value(int64_t(elapsed)));
    sum.set("max_reconnect_gap_ms", json::Value(int64_t(max_gap_ms)));
    sum.set("kinds", std::move(kinds));
    printf("summary %s\n", json::write(sum).c_str());
    fflush(stdout);
    return failed == 0 && !hung ? 0 : 1;
}
