// ur-agent: the Triton Ur agent.  See README.md and `ur-agent --help`.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "src/agent.hpp"
#include "src/config.hpp"
#include "src/log.hpp"

int main(int argc, char** argv) {
    ur::log::init("ur", ur::log::Level::Info);
    ur::Config cfg;
    std::string output, error;
    auto getenv = [](const char* name) -> const char* { return std::getenv(name); };
    switch (ur::parse_config(argc, argv, getenv, cfg, output, error)) {
    case ur::ConfigStatus::Exit:
        std::fputs(output.c_str(), stdout);
        return 0;
    case ur::ConfigStatus::Error:
        std::fprintf(stderr, "ur-agent: %s\n\n%s", error.c_str(), ur::usage_text().c_str());
        return 2;
    case ur::ConfigStatus::Ok:
        break;
    }
    ur::log::set_level(cfg.log_level);
    // Children must not inherit the broker password through the
    // environment (the agent's environment is theirs when a request has
    // no "env").
    unsetenv("AMQP_PASSWORD");
    ur::Agent agent(std::move(cfg));
    return agent.run();
}
