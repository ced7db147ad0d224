// urctl: the headnode side of Ur from a shell.  See `urctl --help`.
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include <unistd.h>

#include "src/config.hpp"
#include "src/file_io.hpp"
#include "tools/urctl/commands.hpp"
#include "tools/urctl/options.hpp"
#include "tools/urctl/session.hpp"

namespace {

// Reads all of fd (at most `max` bytes).  False with `error` set.
bool read_all(int fd, size_t max, std::string& out, std::string& error) {
    char buf[65536];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            error = std::strerror(errno);
            return false;
        }
        if (n == 0) return true;
        if (out.size() + size_t(n) > max) {
            error = "larger than " + std::to_string(max >> 20) + " MiB";
            return false;
        }
        out.append(buf, size_t(n));
    }
}

}  // namespace

int main(int argc, char** argv) {
    urctl::Options opt;
    std::string output, error;
    switch (urctl::parse_args(argc, argv, [](const char* n) { return std::getenv(n); }, opt,
                              output, error)) {
    case urctl::ParseStatus::Exit:
        if (!ur::write_all(STDOUT_FILENO, output)) {
            std::fprintf(stderr, "urctl: cannot write to stdout: %s\n", std::strerror(errno));
            return urctl::kExitFailed;
        }
        return urctl::kExitOk;
    case urctl::ParseStatus::Error:
        std::fprintf(stderr, "urctl: %s\n(see urctl --help)\n", error.c_str());
        return urctl::kExitUsage;
    case urctl::ParseStatus::Ok: break;
    }
    if (!opt.password_file.empty() &&
        !ur::read_password_file(opt.password_file, opt.password, error)) {
        std::fprintf(stderr, "urctl: %s\n", error.c_str());
        return urctl::kExitUsage;
    }
    if (opt.script_from_stdin) {
        // Bodies of several MiB are fine for the protocol; 16 MiB is plenty.
        if (!read_all(STDIN_FILENO, 16u << 20, opt.script, error)) {
            std::fprintf(stderr, "urctl: reading the script from stdin: %s\n", error.c_str());
            return urctl::kExitFailed;
        }
        if (opt.script.empty()) {
            std::fprintf(stderr, "urctl: the script read from stdin is empty\n");
            return urctl::kExitUsage;
        }
    }

    std::signal(SIGPIPE, SIG_IGN);  // a closed socket or stdout is an error return
    if (!urctl::install_interrupt_handler(error)) {
        std::fprintf(stderr, "urctl: %s\n", error.c_str());
        return urctl::kExitFailed;
    }

    urctl::RunContext ctx;
    const char* user = std::getenv("USER");
    if (user == nullptr || *user == '\0') user = std::getenv("LOGNAME");
    ctx.origin_user = user && *user ? user : "uid " + std::to_string(geteuid());
    char host[256] = {0};
    if (gethostname(host, sizeof host - 1) == 0) ctx.origin_hostname = host;
    return urctl::run_command(opt, ctx);
}
