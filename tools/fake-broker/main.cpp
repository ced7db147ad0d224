// fake-broker: the AMQP test broker as a program.  See broker.hpp for what
// it is and control.cpp (or the "help" command) for the control language.
//
//   fake-broker [--port N] [--seed N] [--heartbeat SECS] [--verbose]
//
// Prints "listening 127.0.0.1:PORT" once ready, then reads one command per
// line on stdin and answers each on stdout.  Exits on EOF or SIGTERM/SIGINT.
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <unistd.h>

#include "tools/fake-broker/broker.hpp"

namespace {

fake::Broker* g_broker = nullptr;

extern "C" void on_signal(int) {
    if (g_broker) g_broker->stop();  // one write() to the broker's pipe
}

int usage(FILE* to = stderr, int status = 2) {
    fprintf(to,
            "usage: fake-broker [--port N] [--seed N] [--heartbeat SECS] [--channel-max N] "
            "[--verbose] [--reply-sink]\n"
            "Prints \"listening 127.0.0.1:PORT\", then reads control commands on stdin, one per\n"
            "line (\"help\" lists them), and exits at the end of stdin or on SIGTERM/SIGINT:\n"
            "to keep it up by hand, give it a terminal or `sleep infinity |` on stdin.\n"
            "--reply-sink: Ur answers (ur.execute-reply.*, ur.ack*) that no queue takes count\n"
            "as taken (never returned), as if their requester were listening.\n");
    return status;
}

bool number(const char* s, unsigned long long max, unsigned long long& out) {
    if (!s || !*s) return false;
    char* end = nullptr;
    errno = 0;
    out = strtoull(s, &end, 10);
    return errno == 0 && *end == '\0' && s[0] != '-' && out <= max;
}

}  // namespace

int main(int argc, char** argv) {
    fake::Options opt;
    opt.seed = uint64_t(time(nullptr)) ^ (uint64_t(getpid()) << 32);
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        unsigned long long v = 0;
        if (a == "--help") {
            return usage(stdout, 0);
        } else if (a == "--verbose") {
            opt.verbose = true;
        } else if (a == "--reply-sink") {
            opt.reply_sink = true;
        } else if (a == "--port" && i + 1 < argc && number(argv[i + 1], 65535, v)) {
            opt.port = uint16_t(v);
            i++;
        } else if (a == "--seed" && i + 1 < argc && number(argv[i + 1], ~0ull, v)) {
            opt.seed = v;
            i++;
        } else if (a == "--heartbeat" && i + 1 < argc && number(argv[i + 1], 65535, v)) {
            opt.heartbeat = uint16_t(v);
            i++;
        } else if (a == "--channel-max" && i + 1 < argc && number(argv[i + 1], 65535, v)) {
            opt.channel_max = uint16_t(v);
            i++;
        } else {
            return usage();
        }
    }
    signal(SIGPIPE, SIG_IGN);
    fake::Broker broker(opt);
    std::string err;
    if (broker.listen(&err) != fake::Status::Ok) {
        fprintf(stderr, "fake-broker: %s\n", err.c_str());
        return 1;
    }
    g_broker = &broker;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);
    printf("listening 127.0.0.1:%u\n", unsigned(broker.port()));
    fflush(stdout);
    broker.set_control(STDIN_FILENO, STDOUT_FILENO);
    broker.run();
    g_broker = nullptr;
    return 0;
}
