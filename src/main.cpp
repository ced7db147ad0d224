// ur-agent: the Triton Ur agent.  See README.md and `ur-agent --help`.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <cstdlib>

#include "src/agent.hpp"
#include "src/config.hpp"
#include "src/file_io.hpp"
#include "src/log.hpp"

namespace {

// Started with stdin, stdout or stderr closed (`ur-agent <&- >&- 2>&-`, or
// a parent that closed them), the agent's first files would take fds 0-2:
// the log went into the state-dir lock file, and a script's stdout pipe,
// made close-on-exec and dup2()ed onto itself, was closed in the child.
// Each closed one is opened on /dev/null before anything else (open()
// takes the lowest free fd, and those below it are open by then).
// Returns whether stdout was one of them (--print-sysinfo has nowhere to
// print then).
bool open_standard_fds() {
    bool stdout_closed = false;
    for (int fd = 0; fd <= 2; ++fd) {
        if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF) continue;
        stdout_closed = stdout_closed || fd == STDOUT_FILENO;
        if (open("/dev/null", O_RDWR) < 0) break;
    }
    return stdout_closed;
}

}  // namespace

int main(int argc, char** argv) {
    const bool stdout_closed = open_standard_fds();
    ur::log::init("ur", ur::log::Level::Info);
    ur::Config cfg;
    std::string output, error;
    auto getenv = [](const char* name) -> const char* { return std::getenv(name); };
    switch (ur::parse_config(argc, argv, getenv, cfg, output, error)) {
    case ur::ConfigStatus::Exit:
        // --help or --version into a closed stdout (/dev/null, opened
        // above in its place) would print nothing and say it had.
        if (stdout_closed) {
            std::fprintf(stderr, "ur-agent: cannot write to stdout: it is closed\n");
            return 1;
        }
        if (!ur::write_all(STDOUT_FILENO, output)) {
            std::fprintf(stderr, "ur-agent: cannot write to stdout: %s\n", std::strerror(errno));
            return 1;
        }
        return 0;
    case ur::ConfigStatus::Error:
        // One line an operator can act on, kept in view by systemctl status
        // (the whole usage pushed it out of the last ten lines).
        std::fprintf(stderr, "ur-agent: %s\nusage: ur-agent [OPTIONS]; ur-agent --help lists them\n",
                     error.c_str());
        return 2;
    case ur::ConfigStatus::FileError:
        // A file that cannot be read or is malformed is no usage error.
        std::fprintf(stderr, "ur-agent: %s\n", error.c_str());
        return 2;
    case ur::ConfigStatus::Ok:
        break;
    }
    ur::log::set_level(cfg.log_level);
    if (cfg.print_sysinfo) {
        if (stdout_closed) {
            std::fprintf(stderr, "ur-agent: --print-sysinfo: stdout is closed\n");
            return 1;
        }
        json::Value sysinfo;
        if (!ur::read_sysinfo_now(cfg, sysinfo, error)) {
            std::fprintf(stderr, "ur-agent: cannot read sysinfo: %s\n", error.c_str());
            return 1;
        }
        std::string text = json::write(sysinfo) + "\n";
        if (std::fwrite(text.data(), 1, text.size(), stdout) != text.size() ||
            std::fflush(stdout) != 0) {
            std::fprintf(stderr, "ur-agent: cannot write the sysinfo: %s\n", std::strerror(errno));
            return 1;
        }
        return 0;
    }
    // Children must not inherit the broker password through the
    // environment (the agent's environment is theirs when a request has
    // no "env"), and /proc/<pid>/environ shows the environment block the
    // agent started with as it is in memory: blank the value there first
    // (the configuration holds its own copy).
    if (char* pw = std::getenv("AMQP_PASSWORD")) std::memset(pw, 0, std::strlen(pw));
    unsetenv("AMQP_PASSWORD");
    ur::Agent agent(std::move(cfg));
    return agent.run();
}
