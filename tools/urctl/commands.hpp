// urctl's commands: ping, discover, exec, oneach, watch.  Each opens its
// own Session, speaks the Ur protocol through it, prints its results on
// `out` (and the remote stderr / our errors on `err`) and returns the exit
// code (ExitCode, or exec's remote exit status).
#pragma once
#include <cstdio>
#include <string>

#include "tools/urctl/options.hpp"

namespace urctl {

struct RunContext {
    std::string origin_user;      // "origin" of execute requests
    std::string origin_hostname;
    FILE* out = stdout;
    FILE* err = stderr;
};

// Runs opt.command.  The script (stdin already read) and password are in
// `opt`.
int run_command(const Options& opt, const RunContext& ctx);

}  // namespace urctl
