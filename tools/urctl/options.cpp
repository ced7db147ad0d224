#include "tools/urctl/options.hpp"

#include <cstring>

namespace urctl {

std::string usage_text() {
    return
        "usage: urctl [OPTIONS] COMMAND [ARGS]\n"
        "\n"
        "Talks to Ur agents through the broker, as Triton's urclient does.\n"
        "\n"
        "Commands:\n"
        "  ping NODE               ask NODE's agent for a ping reply\n"
        "  discover                list the nodes whose agents answer a sysinfo\n"
        "                          broadcast within --timeout (default 3 s), or\n"
        "                          as soon as --expect N of them have\n"
        "  exec NODE [--file PATH | SCRIPT | -] [-- ARG...]\n"
        "                          run SCRIPT (text; '-' reads it from stdin) or the\n"
        "                          file PATH on the node, with ARGs; prints its stdout\n"
        "                          and stderr and exits with its exit status\n"
        "  oneach [--nodes A,B] [--file PATH | SCRIPT | -] [-- ARG...]\n"
        "                          discover the nodes, run the script on every one\n"
        "                          (or on those --nodes names) at once; one line or\n"
        "                          block per node, then a summary.  The discover\n"
        "                          ends at --find-timeout, or once --expect N nodes\n"
        "                          or every --nodes name, when all are UUIDs, have\n"
        "                          answered\n"
        "  watch [PATTERN...]      print every message on amq.topic matching the topic\n"
        "                          patterns (default ur.#) with its routing key, until\n"
        "                          SIGINT, --count N messages or --timeout\n"
        "\n"
        "NODE is a node UUID (found at once by a ping) or a hostname (in any case,\n"
        "as urclient matches it; found by a discover that runs its whole\n"
        "--find-timeout, so that a hostname several nodes answer to is refused,\n"
        "exit 5, never one of them picked).  A SCRIPT\n"
        "that does not start with '#!' gets '#!/bin/sh' put in front of it.\n"
        "\n"
        "Broker (the environment variables AMQP_HOST, AMQP_PORT, AMQP_LOGIN,\n"
        "AMQP_PASSWORD and AMQP_VHOST set the defaults; flags override them):\n"
        "  --broker HOST[:PORT][,HOST[:PORT]...]\n"
        "                          brokers, tried in turn; a PORT left out is\n"
        "                          $AMQP_PORT or 5672 (default $AMQP_HOST or localhost)\n"
        "  --login NAME            AMQP user (default $AMQP_LOGIN or guest)\n"
        "  --password-file FILE    read the AMQP password from FILE (first line)\n"
        "                          (default $AMQP_PASSWORD or guest)\n"
        "  --vhost VHOST           AMQP virtual host (default $AMQP_VHOST or /)\n"
        "  --connect-timeout S     give up connecting after S seconds (default 10)\n"
        "\n"
        "Options:\n"
        "  --json                  one JSON object per line (per node) on stdout\n"
        "  --timeout S             how long to wait, in seconds (decimals allowed):\n"
        "                          ping 5, discover 3, exec and oneach 60 (for the\n"
        "                          replies), watch unlimited\n"
        "  --find-timeout S        exec, oneach, ping: how long a node gets to answer\n"
        "                          the ping or discover that finds it (default 3);\n"
        "                          ping looks for a UUID no agent listens for as\n"
        "                          typed (another case?) by a discover this long\n"
        "  --env K=V               exec, oneach: add K=V to the script's environment;\n"
        "                          repeatable.  Without it the environment is empty\n"
        "                          ({}), as urclient sends: use absolute paths\n"
        "  --file PATH             exec, oneach: run PATH on the node instead of a script\n"
        "                          (a name without / is looked up in the node's\n"
        "                          /usr/bin:/bin:/usr/sbin:/sbin, or --env PATH=...)\n"
        "  --kill-after S          exec, oneach: ask the agent to kill the script after\n"
        "                          S whole seconds (the request's \"timeout\" field)\n"
        "  --nodes A,B,...         oneach: only these nodes (UUIDs or hostnames)\n"
        "  --expect N              discover, oneach: stop the discover once N nodes\n"
        "                          have answered; fewer by its timeout is exit 4\n"
        "                          (oneach then runs nothing).  Not with --nodes\n"
        "  --count N               watch: stop after N messages\n"
        "  --version               print the version and exit\n"
        "  --help                  print this help and exit\n"
        "\n"
        "Exit status:\n"
        "  0    success (exec: the remote script's exit status instead)\n"
        "  1    oneach: some node's script exited non-zero; or a local error,\n"
        "       such as output that cannot be written (a full disk; a reader\n"
        "       that went away, as `| head`, is none)\n"
        "  2    usage error\n"
        "  3    broker unreachable, login refused, or connection lost\n"
        "  4    timeout: no reply within --timeout (oneach: from some node)\n"
        "  5    unknown node: no agent listens for its pings, or not found by\n"
        "       discover; or a hostname several nodes answer to (an agent that\n"
        "       listens and does not answer a ping in time is 4)\n"
        "  130  interrupted (SIGINT or SIGTERM), except for watch where it is the\n"
        "       normal end\n"
        "With --json, errors are also printed on stdout as {\"error\":...}, but for\n"
        "usage errors (exit 2: options, --password-file, the script on stdin).\n"
        "exec exits with the script's own status, which can be 1 to 5 too: a\n"
        "script's reply is on stdout (with --json, an object with exit_status),\n"
        "urctl's own error on stderr (with --json, also {\"error\":...}).\n";
}

uint64_t default_timeout_ms(Command c) {
    switch (c) {
    case Command::Ping: return 5000;
    case Command::Discover: return 3000;
    case Command::Exec:
    case Command::OnEach: return 60000;
    case Command::Watch: return 0;  // unlimited
    }
    return 0;
}

namespace {

bool parse_uint(const std::string& s, uint64_t max, uint64_t& out) {
    if (s.empty()) return false;
    uint64_t v = 0;
    for (char ch : s) {
        if (ch < '0' || ch > '9') return false;
        unsigned d = unsigned(ch - '0');
        if (v > (max - d) / 10) return false;
        v = v * 10 + d;
    }
    out = v;
    return true;
}

std::vector<std::string> split_commas(const std::string& s) {
    std::vector<std::string> out;
    size_t start = 0;
    for (;;) {
        size_t comma = s.find(',', start);
        out.push_back(s.substr(start, comma == std::string::npos ? std::string::npos
                                                                  : comma - start));
        if (comma == std::string::npos) break;
        start = comma + 1;
    }
    return out;
}

struct FlagInfo {
    const char* name;
    bool takes_value;
};

const FlagInfo kFlags[] = {
    {"--broker", true},  {"--login", true},        {"--password-file", true},
    {"--vhost", true},   {"--connect-timeout", true}, {"--json", false},
    {"--timeout", true}, {"--find-timeout", true}, {"--env", true},
    {"--file", true},    {"--kill-after", true},   {"--nodes", true},
    {"--count", true},   {"--expect", true},       {"--help", false},
    {"--version", false},
};

const FlagInfo* find_flag(const std::string& name) {
    for (const FlagInfo& f : kFlags)
        if (name == f.name) return &f;
    return nullptr;
}

}  // namespace

bool parse_seconds(const std::string& text, uint64_t max_s, uint64_t& out_ms) {
    size_t dot = text.find('.');
    std::string whole = text.substr(0, dot);
    std::string frac = dot == std::string::npos ? "" : text.substr(dot + 1);
    if (dot != std::string::npos && (frac.empty() || frac.size() > 3)) return false;
    uint64_t s = 0, f = 0;
    if (!parse_uint(whole, max_s, s)) return false;
    if (!frac.empty()) {
        if (!parse_uint(frac, 999, f)) return false;
        for (size_t i = frac.size(); i < 3; ++i) f *= 10;
        if (s == max_s && f > 0) return false;
    }
    out_ms = s * 1000 + f;
    return true;
}


ParseStatus parse_args(int argc, const char* const* argv, const Getenv& getenv, Options& opt,
                       std::string& output, std::string& error) {
    // The environment first, as the agent reads it.
    uint16_t env_port = 5672;
    if (const char* p = getenv("AMQP_PORT"); p && *p) {
        uint64_t v = 0;
        if (!parse_uint(p, 65535, v) || v == 0) {
            error = std::string("AMQP_PORT: not a port number: '") + p + "'";
            return ParseStatus::Error;
        }
        env_port = uint16_t(v);
    }
    const char* env_host = getenv("AMQP_HOST");
    if (!parse_brokers(env_host && *env_host ? env_host : "localhost", opt.brokers, error)) {
        error = "AMQP_HOST: " + error;
        return ParseStatus::Error;
    }
    if (const char* v = getenv("AMQP_LOGIN"); v && *v) opt.login = v;
    if (const char* v = getenv("AMQP_PASSWORD"); v && *v) opt.password = v;
    if (const char* v = getenv("AMQP_VHOST"); v && *v) opt.vhost = v;

    std::vector<std::string> positional;
    std::vector<std::string> used;  // command-specific flags seen, for the check below
    bool after_dashdash = false;
    for (int i = 1; i < argc; ++i) {
        std::string arg = argv[i] ? argv[i] : "";
        if (after_dashdash) {
            opt.args.push_back(arg);
            continue;
        }
        if (arg == "--") {
            after_dashdash = true;
            continue;
        }
        if (arg == "-h") arg = "--help";
        if (arg.size() < 2 || arg[0] != '-') {  // "-" (stdin) is positional too
            positional.push_back(arg);
            continue;
        }
        if (arg.rfind("--", 0) != 0) {
            error = "unknown option '" + arg + "'";
            return ParseStatus::Error;
        }
        std::string name = arg, value;
        bool has_value = false;
        if (size_t eq = arg.find('='); eq != std::string::npos) {
            name = arg.substr(0, eq);
            value = arg.substr(eq + 1);
            has_value = true;
        }
        const FlagInfo* flag = find_flag(name);
        if (flag == nullptr) {
            error = "unknown option '" + name + "'";
            return ParseStatus::Error;
        }
        if (!flag->takes_value && has_value) {
            error = name + " takes no value";
            return ParseStatus::Error;
        }
        if (flag->takes_value && !has_value) {
            if (i + 1 >= argc || argv[i + 1] == nullptr) {
                error = name + " needs a value";
                return ParseStatus::Error;
            }
            value = argv[++i];
        }
        auto seconds = [&](uint64_t& out_ms) {
            if (parse_seconds(value, 86400 * 365, out_ms) && out_ms > 0) return true;
            error = name + ": expected seconds from 0.001 to 31536000 (a year), with at most "
                    "3 decimals (e.g. 5 or 0.5), got '" + value + "'";
            return false;
        };
        auto nonempty = [&]() {
            if (!value.empty()) return true;
            error = name + " must not be empty";
            return false;
        };

        if (name == "--help") {
            output = usage_text();
            return ParseStatus::Exit;
        } else if (name == "--version") {
            output = std::string("urctl ") + UR_VERSION + "\n";
            return ParseStatus::Exit;
        } else if (name == "--json") {
            opt.json = true;
        } else if (name == "--broker") {
            if (!parse_brokers(value, opt.brokers, error)) {
                error = "--broker: " + error;
                return ParseStatus::Error;
            }
        } else if (name == "--login") {
            if (!nonempty()) return ParseStatus::Error;
            opt.login = value;
        } else if (name == "--password-file") {
            if (!nonempty()) return ParseStatus::Error;
            opt.password_file = value;
        } else if (name == "--vhost") {
            if (!nonempty()) return ParseStatus::Error;
            opt.vhost = value;
        } else if (name == "--connect-timeout") {
            if (!seconds(opt.connect_timeout_ms)) return ParseStatus::Error;
        } else if (name == "--timeout") {
            if (!seconds(opt.timeout_ms)) return ParseStatus::Error;
            opt.timeout_set = true;
        } else if (name == "--find-timeout") {
            if (!seconds(opt.find_timeout_ms)) return ParseStatus::Error;
            used.push_back(name);
        } else if (name == "--env") {
            size_t eq = value.find('=');
            if (eq == std::string::npos || eq == 0) {
                error = "--env: expected K=V with a non-empty K, got '" + value + "'";
                return ParseStatus::Error;
            }
            if (value.find('\0') != std::string::npos) {
                error = "--env: NUL byte in '" + value + "'";
                return ParseStatus::Error;
            }
            opt.env.emplace_back(value.substr(0, eq), value.substr(eq + 1));
            used.push_back(name);
        } else if (name == "--file") {
            if (!nonempty()) return ParseStatus::Error;
            opt.file = value;
            used.push_back(name);
        } else if (name == "--kill-after") {
            if (!parse_uint(value, 86400 * 365, opt.kill_after_s) || opt.kill_after_s == 0) {
                error = "--kill-after: expected whole seconds from 1 to 31536000 (a year), got '" +
                        value + "'";
                return ParseStatus::Error;
            }
            opt.kill_after_set = true;
            used.push_back(name);
        } else if (name == "--nodes") {
            for (std::string& n : split_commas(value)) {
                if (n.empty()) {
                    error = "--nodes: empty node name in '" + value + "'";
                    return ParseStatus::Error;
                }
                opt.nodes.push_back(std::move(n));
            }
            used.push_back(name);
        } else if (name == "--expect") {
            if (!parse_uint(value, 10000000, opt.expect) || opt.expect == 0) {
                error = "--expect: expected a whole number of nodes from 1 to 10000000, got '" +
                        value + "'";
                return ParseStatus::Error;
            }
            used.push_back(name);
        } else if (name == "--count") {
            if (!parse_uint(value, UINT32_MAX, opt.count) || opt.count == 0) {
                error = "--count: expected a whole number from 1 to 4294967295, got '" + value +
                        "'";
                return ParseStatus::Error;
            }
            used.push_back(name);
        }
    }

    if (positional.empty()) {
        error = "missing command (ping, discover, exec, oneach or watch)";
        return ParseStatus::Error;
    }
    const std::string cmd = positional.front();
    positional.erase(positional.begin());
    const char* allowed = "";  // command-specific flags this command takes
    if (cmd == "ping") {
        opt.command = Command::Ping;
        allowed = " --find-timeout ";
    } else if (cmd == "discover") {
        opt.command = Command::Discover;
        allowed = " --expect ";
    } else if (cmd == "exec") {
        opt.command = Command::Exec;
        allowed = " --find-timeout --env --file --kill-after ";
    } else if (cmd == "oneach") {
        opt.command = Command::OnEach;
        allowed = " --find-timeout --env --file --kill-after --nodes --expect ";
    } else if (cmd == "watch") {
        opt.command = Command::Watch;
        allowed = " --count ";
    } else {
        error = "unknown command '" + cmd + "' (expected ping, discover, exec, oneach or watch)";
        return ParseStatus::Error;
    }
    for (const std::string& f : used) {
        if (std::strstr(allowed, (" " + f + " ").c_str()) == nullptr) {
            error = f + " does not apply to " + cmd;
            return ParseStatus::Error;
        }
    }
    if (opt.expect && !opt.nodes.empty()) {
        error = "--expect does not apply with --nodes (the discover ends once every named node "
                "has answered)";
        return ParseStatus::Error;
    }
    bool runs_script = opt.command == Command::Exec || opt.command == Command::OnEach;
    if (!opt.args.empty() && !runs_script) {
        error = "arguments after '--' only apply to exec and oneach";
        return ParseStatus::Error;
    }

    if (opt.command == Command::Ping || opt.command == Command::Exec) {
        if (positional.empty() || positional.front().empty()) {
            error = cmd + ": missing NODE (a UUID or a hostname)";
            return ParseStatus::Error;
        }
        opt.node = positional.front();
        positional.erase(positional.begin());
    }
    if (runs_script) {
        if (!opt.file.empty()) {
            if (!positional.empty()) {
                error = cmd + ": give either --file PATH or a SCRIPT, not both";
                return ParseStatus::Error;
            }
        } else if (positional.empty()) {
            error = cmd + ": missing SCRIPT (the script text, '-' for stdin, or --file PATH)";
            return ParseStatus::Error;
        } else {
            if (positional.front() == "-") {
                opt.script_from_stdin = true;
            } else if (positional.front().empty()) {
                // Most likely a variable that expanded to nothing: run
                // nothing, and say so, rather than an empty script.
                error = cmd + ": the SCRIPT is empty";
                return ParseStatus::Error;
            } else {
                opt.script = positional.front();
            }
            positional.erase(positional.begin());
        }
    }
    if (opt.command == Command::Watch) {
        for (std::string& p : positional) {
            if (p.empty()) {
                error = "watch: empty PATTERN";
                return ParseStatus::Error;
            }
            // A binding key is a shortstr: a longer one was never bound,
            // and watch saw nothing, saying it was watching.
            if (p.size() > 255) {
                error = "watch: a PATTERN is at most 255 bytes (got " + std::to_string(p.size()) +
                        ")";
                return ParseStatus::Error;
            }
        }
        opt.patterns = std::move(positional);
        positional.clear();
        if (opt.patterns.empty()) opt.patterns.push_back("ur.#");
    }
    if (!positional.empty()) {
        error = cmd + ": unexpected argument '" + positional.front() + "'" +
                (runs_script ? " (script arguments go after '--')" : "");
        return ParseStatus::Error;
    }
    if (!opt.timeout_set) opt.timeout_ms = default_timeout_ms(opt.command);
    apply_default_port(opt.brokers, env_port);  // as the agent: $AMQP_PORT for a PORT left out
    return ParseStatus::Ok;
}

}  // namespace urctl
