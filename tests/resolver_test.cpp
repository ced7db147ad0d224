// The broker's name looked up in a child process (src/resolver.hpp): real
// lookups through the child, children that die or hang, and the answer's
// encoding read back whole, cut short and garbled.
#include <doctest/doctest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "src/net.hpp"
#include "src/resolver.hpp"

using ur::Resolver;
using ur::SocketAddress;

namespace {

uint64_t now_ms() {
    struct timespec ts;
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return uint64_t(ts.tv_sec) * 1000 + uint64_t(ts.tv_nsec) / 1000000;
}

// Polls the resolver's pipe as the agent's loop does until the answer is
// whole or limit_ms passed (then Pending).
Resolver::Answer wait_answer(Resolver& r, std::vector<SocketAddress>& out, std::string& error,
                             uint64_t limit_ms = 30000) {
    const uint64_t end = now_ms() + limit_ms;
    while (r.busy()) {
        uint64_t now = now_ms();
        if (now >= end) return Resolver::Answer::Pending;
        pollfd p = {r.fd(), POLLIN, 0};
        int n = ::poll(&p, 1, int(end - now));
        if (n < 0 && errno != EINTR) FAIL("poll: " << std::strerror(errno));
        if (n > 0) {
            Resolver::Answer a = r.read_answer(out, error);
            if (a != Resolver::Answer::Pending) return a;
        }
    }
    FAIL("no lookup running");
    return Resolver::Answer::Pending;
}

// True once every stopped child is reaped (bounded wait).
bool all_reaped(Resolver& r) {
    for (const uint64_t end = now_ms() + 5000; now_ms() < end; ::usleep(5000)) {
        r.reap();
        if (r.unreaped() == 0) return true;
    }
    return false;
}

// Not our child any more: reaped, by the resolver or its read of the
// answer, so no zombie of it is left.
bool gone(pid_t pid) {
    int st;
    return ::waitpid(pid, &st, WNOHANG) < 0 && errno == ECHILD;
}

// A lookup that never answers (a resolver in a DNS outage).
bool hang(const std::string&, uint16_t, std::vector<SocketAddress>&, std::string&) {
    for (;;) ::pause();
}

// A lookup that sends itself SIGUSR1 before answering: only a child whose
// inherited handler was reset dies of it.
bool raise_usr1(const std::string&, uint16_t port, std::vector<SocketAddress>& out,
                std::string& error) {
    ::raise(SIGUSR1);
    return ur::resolve("127.0.0.1", port, out, error);
}

// A name /etc/hosts gives an address, other than "localhost" (which
// resolve() answers without a lookup); "" when it lists none.
std::string name_in_etc_hosts() {
    std::ifstream in("/etc/hosts");
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream words(line.substr(0, line.find('#')));
        std::string addr, name;
        if (!(words >> addr)) continue;
        while (words >> name)
            if (name != "localhost" && name.find('.') == std::string::npos) return name;
    }
    return "";
}

std::vector<std::string> texts(const std::vector<SocketAddress>& v) {
    std::vector<std::string> t;
    for (const SocketAddress& s : v) t.push_back(s.text);
    std::sort(t.begin(), t.end());
    return t;
}

SocketAddress v4(const char* ip, uint16_t port) {
    std::vector<SocketAddress> v;
    std::string e;
    REQUIRE(ur::resolve(ip, port, v, e));
    return v.at(0);
}

volatile sig_atomic_t g_usr1 = 0;
extern "C" void on_usr1(int) { g_usr1 = 1; }

}  // namespace

TEST_CASE("resolver: a name from /etc/hosts resolves in the child, as resolve() has it") {
    std::string name = name_in_etc_hosts();
    if (name.empty()) {
        MESSAGE("skipped: /etc/hosts names no host but localhost");
        return;
    }
    std::vector<SocketAddress> want, got;
    std::string error;
    REQUIRE_MESSAGE(ur::resolve(name, 5672, want, error), error);
    Resolver r;
    REQUIRE(r.start(name, 5672, 10, error));
    CHECK(r.busy());
    CHECK(r.fd() >= 0);
    pid_t pid = r.pid();
    REQUIRE(wait_answer(r, got, error) == Resolver::Answer::Resolved);
    CHECK(texts(got) == texts(want));
    CHECK_FALSE(r.busy());
    CHECK(r.fd() == -1);
    CHECK(all_reaped(r));
    CHECK(gone(pid));
}

TEST_CASE("resolver: localhost through the child") {
    Resolver r;
    std::vector<SocketAddress> got;
    std::string error;
    REQUIRE(r.start("localhost", 5673, 10, error));
    REQUIRE(wait_answer(r, got, error) == Resolver::Answer::Resolved);
    REQUIRE(got.size() == 1);
    CHECK(got[0].text == "127.0.0.1:5673");
    CHECK(all_reaped(r));
}

TEST_CASE("resolver: a name that does not resolve fails with getaddrinfo's reason") {
    // An empty label: glibc refuses it without asking a name server.
    const std::string name = "bad..name.invalid";
    Resolver r;
    std::vector<SocketAddress> got;
    std::string error;
    REQUIRE(r.start(name, 5672, 10, error));
    REQUIRE(wait_answer(r, got, error) == Resolver::Answer::Failed);
    CHECK(got.empty());
    CHECK(error.rfind("cannot resolve '" + name + "': ", 0) == 0);
    CHECK(error.find("lookup process") == std::string::npos);  // the lookup's own reason
    CHECK(all_reaped(r));
}

TEST_CASE("resolver: a child killed before it answers is a failed lookup, and reaped") {
    Resolver r;
    std::vector<SocketAddress> got;
    std::string error;
    REQUIRE(r.start("hang.example", 5672, 10, error, hang));
    pid_t pid = r.pid();
    REQUIRE(pid > 0);
    REQUIRE(::kill(pid, SIGKILL) == 0);
    REQUIRE(wait_answer(r, got, error) == Resolver::Answer::Failed);
    CHECK(error == "cannot resolve 'hang.example': the lookup process ended without an answer");
    CHECK(all_reaped(r));
    CHECK(gone(pid));
}

TEST_CASE("resolver: cancel() ends a lookup that hangs, and its child is reaped") {
    Resolver r;
    std::string error;
    REQUIRE(r.start("hang.example", 5672, 10, error, hang));
    pid_t pid = r.pid();
    std::vector<SocketAddress> got;
    CHECK(r.read_answer(got, error) == Resolver::Answer::Pending);
    r.cancel();
    CHECK_FALSE(r.busy());
    CHECK(r.fd() == -1);
    CHECK(r.pid() == -1);
    CHECK(all_reaped(r));
    CHECK(gone(pid));
    r.cancel();  // nothing running: no-op
}

TEST_CASE("resolver: a child reaped by someone else is forgotten, never signalled") {
    // The agent as process 1 reaps every child (Supervisor::reap_strays)
    // and tells the resolver: the pid may be another's by the time of a
    // cancel(), which must not send it SIGKILL.
    Resolver r;
    std::string error;
    REQUIRE(r.start("hang.example", 5672, 10, error, hang));
    pid_t pid = r.pid();
    REQUIRE(::kill(pid, SIGKILL) == 0);
    int st = 0;
    REQUIRE(::waitpid(pid, &st, 0) == pid);  // as reap_strays() would
    r.forget(pid);
    CHECK(r.pid() == -1);
    CHECK(r.busy());  // the answer (here: none) is still read from the pipe
    std::vector<SocketAddress> got;
    CHECK(wait_answer(r, got, error) == Resolver::Answer::Failed);
    r.cancel();
    CHECK(r.unreaped() == 0);
    r.forget(12345);  // not ours: nothing happens
}

TEST_CASE("resolver: a new lookup cancels the one running") {
    Resolver r;
    std::string error;
    REQUIRE(r.start("hang.example", 5672, 10, error, hang));
    pid_t first = r.pid();
    REQUIRE(r.start("localhost", 5672, 10, error));
    CHECK(r.pid() != first);
    std::vector<SocketAddress> got;
    REQUIRE(wait_answer(r, got, error) == Resolver::Answer::Resolved);
    CHECK(all_reaped(r));
    CHECK(gone(first));
}

TEST_CASE("resolver: the child ends by itself limit_s + 1 s on, its parent or not") {
    Resolver r;
    std::string error;
    const uint64_t t0 = now_ms();
    REQUIRE(r.start("hang.example", 5672, 0, error, hang));
    std::vector<SocketAddress> got;
    REQUIRE(wait_answer(r, got, error, 10000) == Resolver::Answer::Failed);
    CHECK(now_ms() - t0 >= 900);
    CHECK(error == "cannot resolve 'hang.example': the lookup process ended without an answer");
    CHECK(all_reaped(r));
}

TEST_CASE("resolver: the child does not run its parent's signal handlers") {
    struct sigaction sa, old;
    std::memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigemptyset(&sa.sa_mask);
    REQUIRE(::sigaction(SIGUSR1, &sa, &old) == 0);
    Resolver r;
    std::string error;
    std::vector<SocketAddress> got;
    REQUIRE(r.start("usr1.example", 5672, 10, error, raise_usr1));
    Resolver::Answer a = wait_answer(r, got, error);
    ::sigaction(SIGUSR1, &old, nullptr);
    // Killed by the SIGUSR1 (the default), where the inherited handler
    // would have let it answer.
    CHECK(a == Resolver::Answer::Failed);
    CHECK(error == "cannot resolve 'usr1.example': the lookup process ended without an answer");
    CHECK(all_reaped(r));
}

TEST_CASE("resolver answer: addresses and a failure read back as written") {
    std::vector<SocketAddress> in = {v4("192.0.2.7", 1), v4("2001:db8::1", 1), v4("10.1.2.3", 1)};
    std::string bytes = ur::encode_answer(true, in, "");
    std::vector<SocketAddress> out;
    std::string error;
    REQUIRE(ur::parse_answer(bytes, "broker", 5672, out, error));
    REQUIRE(out.size() == 3);
    CHECK(out[0].text == "192.0.2.7:5672");
    CHECK(out[1].text == "[2001:db8::1]:5672");
    CHECK(out[2].text == "10.1.2.3:5672");
    CHECK(out[0].len == sizeof(sockaddr_in));
    CHECK(out[1].len == sizeof(sockaddr_in6));

    bytes = ur::encode_answer(false, {}, "cannot resolve 'b': Name or service not known");
    CHECK_FALSE(ur::parse_answer(bytes, "b", 5672, out, error));
    CHECK(out.empty());
    CHECK(error == "cannot resolve 'b': Name or service not known");

    // Success with nothing usable is a failure that says so.
    CHECK_FALSE(ur::parse_answer(ur::encode_answer(true, {}, ""), "b", 1, out, error));
    CHECK(error == "no usable address");
}

TEST_CASE("resolver answer: at most kMaxAnswerAddresses, a failure's text cut") {
    std::vector<SocketAddress> in(ur::kMaxAnswerAddresses + 5, v4("192.0.2.1", 1));
    std::vector<SocketAddress> out;
    std::string error;
    REQUIRE(ur::parse_answer(ur::encode_answer(true, in, ""), "b", 1, out, error));
    CHECK(out.size() == ur::kMaxAnswerAddresses);

    std::string long_text(5000, 'x');
    CHECK_FALSE(ur::parse_answer(ur::encode_answer(false, {}, long_text), "b", 1, out, error));
    CHECK(error == std::string(ur::kMaxAnswerError, 'x'));
}

TEST_CASE("resolver answer: cut short at every length, or with a byte more, is no answer") {
    std::vector<SocketAddress> in = {v4("192.0.2.7", 1), v4("2001:db8::1", 1)};
    for (const std::string& whole :
         {ur::encode_answer(true, in, ""), ur::encode_answer(false, {}, "a reason")}) {
        std::vector<SocketAddress> out;
        std::string error;
        for (size_t n = 0; n < whole.size(); ++n) {
            CAPTURE(n);
            CHECK_FALSE(ur::parse_answer(std::string_view(whole).substr(0, n), "b", 1, out, error));
            CHECK(out.empty());
            CHECK(error == std::string("cannot resolve 'b': the lookup process ") +
                               (n == 0 ? "ended without an answer" : "gave an unreadable answer"));
        }
        CHECK_FALSE(ur::parse_answer(whole + '\0', "b", 1, out, error));
        CHECK(error == "cannot resolve 'b': the lookup process gave an unreadable answer");
    }
}

TEST_CASE("resolver answer: garbage is no answer") {
    const std::string unreadable = "cannot resolve 'b': the lookup process gave an unreadable answer";
    SocketAddress a = v4("192.0.2.7", 1);
    std::string rec(1, char(a.len));
    rec.append(reinterpret_cast<const char*>(&a.addr), a.len);
    std::vector<SocketAddress> out;
    std::string error;
    REQUIRE(ur::parse_answer(std::string("A\x01", 2) + rec, "b", 1, out, error));

    std::string family = rec;  // a family we do not know
    reinterpret_cast<sockaddr_storage*>(&family[1])->ss_family = AF_UNIX;
    std::string length = rec;  // an AF_INET record of an IPv6 length
    length[0] = char(sizeof(sockaddr_in6));
    length.append(sizeof(sockaddr_in6) - sizeof(sockaddr_in), '\0');
    for (const std::string& bad :
         {std::string("A\x00", 2), std::string("A\x01", 2), std::string("A\x02", 2) + rec,
          std::string("A") + char(ur::kMaxAnswerAddresses + 1) + rec,
          std::string("A\x01", 2) + family, std::string("A\x01", 2) + length,
          std::string("E\x00\x00", 3), std::string("E\x00\x05xy", 5),
          std::string("E\x7f\xff") + std::string(0x7fff, 'x'), std::string("Z"),
          std::string("hello")}) {
        CAPTURE(bad.size());
        CHECK_FALSE(ur::parse_answer(bad, "b", 1, out, error));
        CHECK(out.empty());
        CHECK(error == unreadable);
    }
}
