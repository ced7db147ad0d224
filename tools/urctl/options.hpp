// urctl's command line: the commands, their options, the broker settings
// from the environment, and the exit codes.  Parsing is pure (no I/O), so
// it is unit-tested directly; reading --password-file and a script from
// stdin happens later, in main.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "src/config.hpp"

namespace urctl {

// Exit codes, documented in --help.  `exec` exits with the remote exit
// status instead of 0, so a remote status of 1..5 looks like one of these;
// --json output tells them apart.
enum ExitCode : int {
    kExitOk = 0,
    kExitFailed = 1,       // oneach: a node exited non-zero; local I/O errors
    kExitUsage = 2,        // bad command line
    kExitBroker = 3,       // broker unreachable, login refused, connection lost
    kExitTimeout = 4,      // no reply in time
    kExitUnknownNode = 5,  // no ping reply, not found by discover
    kExitInterrupted = 130,
};

enum class Command { Ping, Discover, Exec, OnEach, Watch };

// The agent's broker address and its "HOST[:PORT][,...]" parser: one
// syntax for both programs.
using Broker = ur::BrokerAddress;

struct Options {
    Command command = Command::Ping;

    // Broker: the agent's environment variables, then flags.
    std::vector<Broker> brokers;
    std::string login = "guest";
    std::string password = "guest";  // never printed
    std::string password_file;       // read by main when set
    std::string vhost = "/";
    uint64_t connect_timeout_ms = 10000;

    bool json = false;

    // --timeout: how long urctl waits (for the reply; discover: how long it
    // collects answers; watch: how long it watches).  0 = the command's
    // default (see default_timeout_ms).
    uint64_t timeout_ms = 0;
    bool timeout_set = false;
    // How long a node gets to answer the ping or discover that finds it.
    uint64_t find_timeout_ms = 3000;

    // exec, oneach
    bool kill_after_set = false;
    uint64_t kill_after_s = 0;  // the request's "timeout" field (agent side)
    std::vector<std::pair<std::string, std::string>> env;  // --env, in order
    std::string script;          // script text (SCRIPT)
    bool script_from_stdin = false;  // SCRIPT was "-"
    std::string file;            // --file PATH on the node
    std::vector<std::string> args;  // after "--"

    std::string node;                // ping, exec: UUID or hostname
    std::vector<std::string> nodes;  // oneach --nodes
    uint64_t expect = 0;             // discover, oneach: end the discover at this many nodes

    // watch
    std::vector<std::string> patterns;  // default {"ur.#"}
    uint64_t count = 0;                 // 0 = unlimited
};

// The default of --timeout for a command, in ms.
uint64_t default_timeout_ms(Command c);

enum class ParseStatus {
    Ok,     // run the command
    Exit,   // --help / --version: `output` holds the text for stdout, exit 0
    Error,  // `error` holds a one-line message; exit kExitUsage
};

using Getenv = std::function<const char*(const char*)>;

// Fills `opt` from the environment (AMQP_HOST, AMQP_PORT, AMQP_LOGIN,
// AMQP_PASSWORD, AMQP_VHOST) and argv.  On Error, `error` says what is wrong
// and never quotes a password.
ParseStatus parse_args(int argc, const char* const* argv, const Getenv& getenv, Options& opt,
                       std::string& output, std::string& error);

// Parses "HOST[:PORT][,HOST[:PORT]...]" ("[v6addr]:port" for IPv6).
using ur::parse_brokers;

// Parses seconds with up to three decimals ("2", "0.25") into ms.
bool parse_seconds(const std::string& text, uint64_t max_s, uint64_t& out_ms);

std::string usage_text();

}  // namespace urctl
