#include "src/config.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "json/json.hpp"
#include "src/file_io.hpp"

namespace ur {

std::string default_reboot_cmd() {
#if defined(__sun)
    return "/usr/sbin/shutdown -y -g 0 -i 6";
#else
    return "/sbin/shutdown -r now";
#endif
}

size_t output_tail_keep(const Config& cfg) {
    return size_t(std::min<uint64_t>(64 * 1024, cfg.max_output / 2));
}

uint64_t pending_bound(const Config& cfg) {
    uint64_t stream = cfg.max_output + 5 * uint64_t(output_tail_keep(cfg)) + 256;
    return std::max<uint64_t>(cfg.max_pending_bytes, 2 * stream + 4096);
}

std::string usage_text() {
    return
        "usage: ur-agent [OPTIONS]\n"
        "\n"
        "The Triton Ur agent: announces this node on AMQP and runs the scripts the\n"
        "headnode sends, replying with exit status, stdout and stderr.\n"
        "\n"
        "Broker (the environment variables AMQP_HOST, AMQP_PORT, AMQP_LOGIN,\n"
        "AMQP_PASSWORD and AMQP_VHOST set the defaults; flags override them):\n"
        "  --broker HOST[:PORT][,HOST[:PORT]...]\n"
        "                          brokers of a cluster, tried in turn; a PORT left\n"
        "                          out is $AMQP_PORT or 5672, an IPv6 address with a\n"
        "                          port is [ADDR]:PORT (default $AMQP_HOST or\n"
        "                          localhost)\n"
        "  --login NAME            AMQP user (default $AMQP_LOGIN or guest)\n"
        "  --password-file FILE    read the AMQP password from FILE (first line)\n"
        "                          (default $AMQP_PASSWORD or guest)\n"
        "  --vhost VHOST           AMQP virtual host (default $AMQP_VHOST or /)\n"
        "  --boot-rabbitmq         when none of the above, nor --config, names a\n"
        "                          broker, take it from the sysinfo boot parameter\n"
        "                          rabbitmq=LOGIN:PASSWORD:HOST:PORT[:VHOST] (what\n"
        "                          Triton boots a compute node with), with its login,\n"
        "                          password and vhost where those are not set either;\n"
        "                          the installed services pass it\n"
        "  --heartbeat SECS        AMQP heartbeat to ask for, 0 = none (default 30)\n"
        "  --connect-timeout SECS  give up the lookup of a broker's name after SECS,\n"
        "                          and connecting (TCP and the AMQP handshake) after\n"
        "                          SECS (default 10); three times SECS is how long the\n"
        "                          broker may leave a step of our queue set-up\n"
        "                          unanswered before we reconnect\n"
        "  --reconnect-max-ms MS   the longest wait between connect attempts: the\n"
        "                          backoff starts at 100 ms and doubles up to it\n"
        "                          (default 10000, from 1 to 30000; under 100 is for\n"
        "                          tests, and warned about)\n"
        "\n"
        "Node:\n"
        "  --sysinfo-cmd PATH      program printing the sysinfo JSON (default\n"
        "                          /usr/bin/sysinfo); stopped past 120 s or 16 MiB of\n"
        "                          output; a discover waits 2 s for it at most, then\n"
        "                          gets the sysinfo read last\n"
        "  --sysinfo-file FILE     read the sysinfo JSON from FILE instead\n"
        "                          (neither given and no /usr/bin/sysinfo: built in, Linux)\n"
        "  --datacenter NAME       built-in sysinfo: \"Datacenter Name\"\n"
        "  --admin-nic IFACE       built-in sysinfo: the admin interface\n"
        "                          (default: the interface of the default route);\n"
        "                          one that does not exist is an error, retried\n"
        "  --admin-nic-tag TAG     built-in sysinfo: \"Admin NIC Tag\" (default admin)\n"
        "  --print-sysinfo         print the sysinfo the agent would send and exit\n"
        "                          (1, with the reason, if the agent would refuse it)\n"
        "  --sysinfo-interval SECS send ur.sysinfo every SECS until setup is complete\n"
        "                          (default 60)\n"
        "  --setup-file FILE       setup state file (default /var/lib/setup.json)\n"
        "  --state-dir DIR         the once-per-boot startup marker, the in-flight\n"
        "                          journal and the lock; it must be emptied at boot,\n"
        "                          as /tmp is (default /tmp)\n"
        "  --work-dir DIR          private directory for script files\n"
        "                          (default STATE-DIR/.ur-agent-work)\n"
        "  --reboot-cmd CMD        run (by /bin/sh -c) after a script exits 113\n"
        "                          (default: " + default_reboot_cmd() + ")\n"
        "\n"
        "Execution:\n"
        "  --max-concurrency N     scripts running at once (default 16)\n"
        "  --max-output BYTES      bytes kept per output stream in all: beyond it, the\n"
        "                          head (BYTES less the tail, as escaped in the\n"
        "                          reply) and the last 64 KiB raw (half of BYTES\n"
        "                          when that is less) (default 5242880)\n"
        "  --default-timeout SECS  kill a script after SECS, 0 = never (default 3600)\n"
        "  --shutdown-grace SECS   on SIGTERM, wait this long for scripts, then SIGTERM\n"
        "                          them and SIGKILL 5 s later (default 10)\n"
        "  --max-queue-wait SECS   answer a request \"not run\" once it has waited this\n"
        "                          long for a free slot, 0 = never (default 1500; keep\n"
        "                          it below RabbitMQ's consumer_timeout, 30 min)\n"
        "  --max-waiting N         requests waiting for a free slot that the agent\n"
        "                          takes from the broker at once, acked before they\n"
        "                          start (up to 32 MiB), so that discovers still\n"
        "                          reach a busy node; past it the broker holds them\n"
        "                          (default 0: acked when started, as PROTOCOL.md)\n"
        "  --start-retry SECS      a script that cannot start for want of processes,\n"
        "                          memory or file descriptors waits and is tried again\n"
        "                          for up to SECS before it is answered 126, 0 = at\n"
        "                          once (default 30)\n"
        "  --max-pending-bytes N   unsent replies kept while the broker is away, blocks\n"
        "                          or confirms slowly (default 67108864, at least one\n"
        "                          whole reply); past it a script's reply waits whole,\n"
        "                          keeping its slot, and other answers are cut, then\n"
        "                          the oldest dropped; also the most in flight\n"
        "                          awaiting confirms (each counted with its routing\n"
        "                          key and 256 bytes of bookkeeping)\n"
        "  --journal-fsync         fsync each entry of the in-flight journal (survives a\n"
        "                          kernel crash too; costs a disk flush per request)\n"
        "\n"
        "Other:\n"
        "  --config FILE           JSON object of these options without \"--\", e.g.\n"
        "                          {\"broker\": \"10.0.0.5\", \"heartbeat\": 10};\n"
        "                          flags beat the environment, which beats the file\n"
        "  --log-level LEVEL       trace, debug, info, warn, error or fatal (default info)\n"
        "  --version               print the version and exit\n"
        "  --help                  print this help and exit\n";
}

namespace {

bool parse_uint(const char* s, uint64_t max, uint64_t& out) {
    if (s == nullptr || *s == '\0') return false;
    uint64_t v = 0;
    for (const char* p = s; *p; ++p) {
        if (*p < '0' || *p > '9') return false;
        unsigned d = unsigned(*p - '0');
        if (v > (max - d) / 10) return false;
        v = v * 10 + d;
    }
    out = v;
    return true;
}

// The settings that are switches (a flag with no value, true or false in
// the config file); nullptr for any other name.
bool* setting_switch(Config& cfg, const std::string& name) {
    if (name == "--journal-fsync") return &cfg.journal_fsync;
    if (name == "--boot-rabbitmq") return &cfg.boot_rabbitmq;
    return nullptr;
}

// A TCP port: 1 to 65535.
bool parse_port(const char* s, uint16_t& port) {
    uint64_t v;
    if (!parse_uint(s, 65535, v) || v == 0) return false;
    port = uint16_t(v);
    return true;
}

}  // namespace

bool read_password_file(const std::string& path, std::string& password, std::string& error,
                        bool* readable_by_others) {
    // O_NONBLOCK: a FIFO with no writer would hold the open for ever (it
    // is refused below, as anything but a regular file).
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        error = "--password-file " + path + ": " + std::strerror(errno);
        return false;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        error = "--password-file " + path + ": not a regular file";
        return false;
    }
    std::string data;
    char buf[4096];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            error = "--password-file " + path + ": " + std::strerror(errno);
            close(fd);
            return false;
        }
        if (n == 0) break;
        data.append(buf, size_t(n));
        if (data.size() > 65536) {
            close(fd);
            error = "--password-file " + path + ": larger than 64 KiB";
            return false;
        }
    }
    close(fd);
    size_t nl = data.find_first_of("\r\n");
    const bool had_more = nl != std::string::npos && nl + 1 < data.size();
    if (nl != std::string::npos) data.resize(nl);
    if (data.empty()) {
        error = "--password-file " + path + (had_more ? ": the first line is empty" : ": empty");
        return false;
    }
    password = std::move(data);
    if (readable_by_others) *readable_by_others = (st.st_mode & (S_IRWXG | S_IRWXO)) != 0;
    return true;
}

bool parse_brokers(const std::string& spec, std::vector<BrokerAddress>& out,
                   std::string& error) {
    std::vector<BrokerAddress> list;
    size_t start = 0;
    while (start <= spec.size()) {
        size_t comma = spec.find(',', start);
        if (comma == std::string::npos) comma = spec.size();
        std::string item = spec.substr(start, comma - start);
        start = comma + 1;
        // "a:1, b:2": blanks around an entry are no part of it (the second
        // was taken for the host " b" and never resolved).
        size_t first = item.find_first_not_of(" \t"), last = item.find_last_not_of(" \t");
        item = first == std::string::npos ? std::string() : item.substr(first, last - first + 1);
        if (item.empty()) {
            error = "empty broker address in '" + spec + "'";
            return false;
        }
        // A URL or user:password@host would be taken for a host name and
        // then logged with every failed connect: say what is wrong without
        // repeating it (the part before '@' may be a password).
        if (size_t at = item.rfind('@'); at != std::string::npos ||
                                         item.find("://") != std::string::npos) {
            error = "a broker address is HOST[:PORT], not a URL or user@host (got '" +
                    (at == std::string::npos ? item.substr(0, item.find("://") + 3) + "...'"
                                             : "...@" + item.substr(at + 1) + "'") +
                    "); give the login with --login or AMQP_LOGIN and the password with "
                    "--password-file or AMQP_PASSWORD";
            return false;
        }
        BrokerAddress addr;
        std::string port_text;
        if (item[0] == '[') {  // [v6]:port
            size_t close = item.find(']');
            if (close == std::string::npos) {
                error = "unbalanced '[' in broker address '" + item + "'";
                return false;
            }
            addr.host = item.substr(1, close - 1);
            if (close + 1 < item.size()) {
                if (item[close + 1] != ':') {
                    error = "expected ':PORT' after ']' in '" + item + "'";
                    return false;
                }
                port_text = item.substr(close + 2);
                if (port_text.empty()) {
                    error = "missing port after ':' in '" + item + "'";
                    return false;
                }
            }
        } else {
            size_t colon = item.find(':');
            if (colon != std::string::npos && item.find(':', colon + 1) != std::string::npos) {
                addr.host = item;  // bare IPv6 address, no port
                addr.bare_ipv6 = true;
            } else if (colon != std::string::npos) {
                addr.host = item.substr(0, colon);
                port_text = item.substr(colon + 1);
                if (port_text.empty()) {
                    error = "missing port after ':' in '" + item + "'";
                    return false;
                }
            } else {
                addr.host = item;
            }
        }
        if (addr.host.empty()) {
            error = "missing host in broker address '" + item + "'";
            return false;
        }
        // "10.0.0.1 10.0.0.2" (a list written with blanks): no host name has
        // a blank or a control character, and it would only fail to
        // resolve, at every attempt.
        for (unsigned char c : addr.host)
            if (c <= ' ' || c == 0x7f) {
                error = "broker address '" + item + "' has a blank or control character in its "
                        "host (a list of brokers is separated by commas)";
                return false;
            }
        if (!port_text.empty()) {
            if (!parse_port(port_text.c_str(), addr.port)) {
                error = "bad port '" + port_text + "' in broker address '" + item + "'";
                return false;
            }
            addr.port_given = true;
        }
        list.push_back(std::move(addr));
        if (comma == spec.size()) break;
    }
    out = std::move(list);
    return true;
}

bool apply_boot_rabbitmq(const std::string& spec, Config& cfg, bool& used, std::string& error) {
    used = false;
    std::vector<std::string> part = split(spec, ':');
    if (part.size() != 4 && part.size() != 5) {
        error = "expected LOGIN:PASSWORD:HOST:PORT, got " + std::to_string(part.size()) +
                " part" + (part.size() == 1 ? "" : "s");
        return false;
    }
    uint16_t port = cfg.default_port;  // $AMQP_PORT or 5672
    if (!part[3].empty() && !parse_port(part[3].c_str(), port)) {
        error = "not a port number: '" + part[3] + "'";
        return false;
    }
    std::vector<BrokerAddress> brokers;
    if (!parse_brokers(part[2].empty() ? "localhost" : part[2], brokers, error)) return false;
    if (brokers.size() != 1 || brokers[0].port_given) {
        error = "HOST must be one host name or IPv4 address: '" + part[2] + "'";
        return false;
    }
    if (cfg.broker_given) return true;
    used = true;
    brokers[0].port = port;
    brokers[0].port_given = true;
    cfg.brokers = std::move(brokers);
    if (!cfg.login_given && !part[0].empty()) cfg.login = part[0];
    if (!cfg.password_given && !part[1].empty()) cfg.password = part[1];
    if (part.size() == 5 && !cfg.vhost_given && !part[4].empty()) cfg.vhost = part[4];
    return true;
}

void apply_default_port(std::vector<BrokerAddress>& brokers, uint16_t port) {
    for (BrokerAddress& b : brokers)
        if (!b.port_given) b.port = port;
}

namespace {

// Applies one "--name" with its value to cfg.
bool apply_flag(const std::string& name, const std::string& value, Config& cfg,
                std::string& password_file, bool& work_dir_set, std::string& error) {
    auto number = [&](uint64_t max, uint64_t& out, uint64_t min = 0) {
        if (parse_uint(value.c_str(), max, out) && out >= min) return true;
        error = name + ": expected a whole number from " + std::to_string(min) + " to " +
                std::to_string(max) + ", got '" + value + "'";
        return false;
    };
    auto nonempty = [&]() {
        if (!value.empty()) return true;
        error = name + " must not be empty";
        return false;
    };
    uint64_t n = 0;
    if (name == "--broker") {
        if (!parse_brokers(value, cfg.brokers, error)) {
            error = "--broker: " + error;
            return false;
        }
        cfg.broker_given = true;
    } else if (name == "--login") {
        if (!nonempty()) return false;
        cfg.login = value;
        cfg.login_given = true;
    } else if (name == "--password-file") {
        if (!nonempty()) return false;
        password_file = value;
        cfg.password_given = true;
    } else if (name == "--vhost") {
        if (!nonempty()) return false;
        cfg.vhost = value;
        cfg.vhost_given = true;
    } else if (name == "--heartbeat") {
        if (!number(65535, n)) return false;
        cfg.heartbeat_s = unsigned(n);
    } else if (name == "--connect-timeout") {
        if (!number(3600, n, 1)) return false;
        cfg.connect_timeout_s = unsigned(n);
    } else if (name == "--reconnect-max-ms") {
        if (!number(30000, n, 1)) return false;
        cfg.reconnect_max_ms = n;
    } else if (name == "--sysinfo-cmd") {
        if (!nonempty()) return false;
        cfg.sysinfo_cmd = value;
        cfg.sysinfo_cmd_set = true;
    } else if (name == "--sysinfo-file") {
        if (!nonempty()) return false;
        cfg.sysinfo_file = value;
    } else if (name == "--datacenter") {
        cfg.datacenter = value;
    } else if (name == "--admin-nic") {
        cfg.admin_nic = value;
    } else if (name == "--admin-nic-tag") {
        cfg.admin_nic_tag = value;
    } else if (name == "--state-dir") {
        if (!nonempty()) return false;
        cfg.state_dir = value;
    } else if (name == "--work-dir") {
        if (!nonempty()) return false;
        cfg.work_dir = value;
        work_dir_set = true;
    } else if (name == "--setup-file") {
        if (!nonempty()) return false;
        cfg.setup_file = value;
    } else if (name == "--sysinfo-interval") {
        if (!number(86400 * 365, n, 1)) return false;
        cfg.sysinfo_interval_s = unsigned(n);
    } else if (name == "--reboot-cmd") {
        if (!nonempty()) return false;
        cfg.reboot_cmd = value;
    } else if (name == "--max-concurrency") {
        if (!number(4096, n, 1)) return false;
        cfg.max_concurrency = unsigned(n);
    } else if (name == "--max-output") {
        if (!number(uint64_t(1) << 32, n, 1024)) return false;
        cfg.max_output = n;
    } else if (name == "--default-timeout") {
        if (!number(86400 * 365, n)) return false;
        cfg.default_timeout_s = unsigned(n);
    } else if (name == "--shutdown-grace") {
        if (!number(3600, n)) return false;
        cfg.shutdown_grace_s = unsigned(n);
    } else if (name == "--max-queue-wait") {
        if (!number(86400 * 365, n)) return false;
        cfg.max_queue_wait_s = unsigned(n);
    } else if (name == "--max-waiting") {
        if (!number(4096, n)) return false;
        cfg.max_waiting = unsigned(n);
    } else if (name == "--start-retry") {
        if (!number(86400, n)) return false;
        cfg.start_retry_s = unsigned(n);
    } else if (name == "--max-pending-bytes") {
        if (!number(uint64_t(1) << 40, n)) return false;
        cfg.max_pending_bytes = n;
    } else if (name == "--log-level") {
        if (!log::parse_level(value, cfg.log_level)) {
            error = "--log-level: expected trace, debug, info, warn, error or fatal, got '" + value +
                    "'";
            return false;
        }
    } else {
        error = "unknown option '" + name + "'";
        return false;
    }
    return true;
}

const char* const kValueFlags[] = {
    "--broker", "--login", "--password-file", "--vhost", "--heartbeat", "--connect-timeout",
    "--reconnect-max-ms",
    "--sysinfo-cmd", "--sysinfo-file", "--datacenter", "--admin-nic", "--admin-nic-tag",
    "--state-dir", "--work-dir", "--setup-file", "--sysinfo-interval", "--reboot-cmd",
    "--max-concurrency", "--max-output", "--default-timeout", "--shutdown-grace",
    "--max-queue-wait", "--max-waiting", "--start-retry",
    "--max-pending-bytes", "--log-level", "--config"};

bool value_flag(const std::string& name) {
    for (const char* f : kValueFlags)
        if (name == f) return true;
    return false;
}

// Reads --config FILE: each key is a long flag without "--"; values are
// strings, numbers or booleans (true only for flags without a value).
bool apply_config_file(const std::string& path, Config& cfg, std::string& password_file,
                       bool& work_dir_set, std::string& error) {
    std::string text;
    if (!read_file(path, 1u << 20, text, error)) {
        error = "--config " + error;
        return false;
    }
    json::Value v;
    json::ParseError perr;
    json::ParseOptions popt;
    popt.reject_duplicate_keys = true;  // {"heartbeat":5, ..., "heartbeat":60}: which one was meant?
    if (!json::parse(text, v, perr, popt)) {
        error = "--config " + path + ": " + perr.to_string();
        return false;
    }
    if (!v.is_object()) {
        error = "--config " + path + ": not a JSON object";
        return false;
    }
    for (const auto& [key, val] : v.as_object()) {
        std::string name = "--" + key;
        if (name == "--print-sysinfo") {
            // An action, not a setting: a service whose config held it
            // would print and exit, and be restarted, for ever.
            error = "--config " + path + ": \"print-sysinfo\" is a command-line action, not a "
                    "setting";
            return false;
        }
        if (bool* on = setting_switch(cfg, name)) {
            if (!val.is_bool()) {
                error = "--config " + path + ": \"" + key + "\" must be true or false";
                return false;
            }
            *on = val.as_bool();
            continue;
        }
        if (!value_flag(name) || name == "--config") {
            error = "--config " + path + ": unknown key \"" + json::string_from_bytes(key) + "\"";
            return false;
        }
        std::string value;
        if (val.is_string()) value = val.as_string();
        else if (val.is_int()) value = std::to_string(val.as_int());
        else {
            error = "--config " + path + ": \"" + key + "\" must be a string or a whole number";
            return false;
        }
        if (!apply_flag(name, value, cfg, password_file, work_dir_set, error)) {
            error = "--config " + path + ": " + error;
            return false;
        }
    }
    return true;
}

}  // namespace

ConfigStatus parse_config(int argc, const char* const* argv, const Getenv& getenv,
                          Config& cfg, std::string& output, std::string& error) {
    cfg.reboot_cmd = default_reboot_cmd();
    cfg.brokers = {BrokerAddress{"localhost", 5672}};
    std::string password_file;
    bool work_dir_set = false;

    // Pass 1: --help, --version, --config (the file comes first in precedence).
    for (int i = 1; i < argc; ++i) {
        std::string arg = argv[i];
        if (arg == "--help" || arg == "-h") {
            output = usage_text();
            return ConfigStatus::Exit;
        }
        if (arg == "--version") {
            output = std::string("ur-agent ") + UR_VERSION + "\n";
            return ConfigStatus::Exit;
        }
        if (arg == "--config" || arg.rfind("--config=", 0) == 0) {
            if (arg == "--config" && i + 1 >= argc) {
                error = "--config needs a value";
                return ConfigStatus::Error;
            }
            if (arg == "--config" && std::strncmp(argv[i + 1], "--", 2) == 0 && argv[i + 1][2]) {
                error = std::string("--config needs a value (got the option '") + argv[i + 1] +
                        "'; write --config=VALUE for a value starting with --)";
                return ConfigStatus::Error;
            }
            cfg.config_file = arg == "--config" ? argv[i + 1] : arg.substr(9);
            if (cfg.config_file.empty()) {
                error = "--config needs a file name (got an empty one)";
                return ConfigStatus::Error;
            }
        }
    }
    if (!cfg.config_file.empty() &&
        !apply_config_file(cfg.config_file, cfg, password_file, work_dir_set, error))
        return ConfigStatus::FileError;

    // The environment (compatible with the original agent).  AMQP_PORT is
    // the port of every broker address written without one, wherever it
    // was written (AMQP_HOST, the file, --broker): applied once all are read.
    const char* env_host = getenv("AMQP_HOST");
    const char* env_port = getenv("AMQP_PORT");
    uint16_t port = 5672;
    if (env_port && *env_port && !parse_port(env_port, port)) {
        error = std::string("AMQP_PORT: not a port number: '") + env_port + "'";
        return ConfigStatus::Error;
    }
    if (env_host && *env_host) {
        if (!parse_brokers(env_host, cfg.brokers, error)) {
            error = "AMQP_HOST: " + error;
            return ConfigStatus::Error;
        }
        cfg.broker_given = true;
    }
    if (const char* v = getenv("AMQP_LOGIN"); v && *v) {
        cfg.login = v;
        cfg.login_given = true;
    }
    if (const char* v = getenv("AMQP_PASSWORD"); v && *v) {
        cfg.password = v;
        password_file.clear();
        cfg.password_given = true;
    }
    if (const char* v = getenv("AMQP_VHOST"); v && *v) {
        cfg.vhost = v;
        cfg.vhost_given = true;
    }

    // Flags.
    for (int i = 1; i < argc; ++i) {
        std::string arg = argv[i];
        std::string name = arg, value;
        bool has_value = false;
        if (arg.rfind("--", 0) != 0 || arg == "--") {
            error = "unexpected argument '" + arg + "'";
            return ConfigStatus::Error;
        }
        size_t eq = arg.find('=');
        if (eq != std::string::npos) {
            name = arg.substr(0, eq);
            value = arg.substr(eq + 1);
            has_value = true;
        }
        bool* on = name == "--print-sysinfo" ? &cfg.print_sysinfo : setting_switch(cfg, name);
        if (on) {
            if (has_value) {
                error = name + " takes no value";
                return ConfigStatus::Error;
            }
            *on = true;
            continue;
        }
        if (!value_flag(name)) {
            error = "unknown option '" + name + "'";
            return ConfigStatus::Error;
        }
        if (!has_value) {
            if (i + 1 >= argc) {
                error = name + " needs a value";
                return ConfigStatus::Error;
            }
            value = argv[++i];
            // "--reboot-cmd --journal-fsync": the value forgotten, the next
            // option taken for it.  A value that starts with "--" is given
            // as --flag=VALUE.
            if (value.compare(0, 2, "--") == 0 && value.size() > 2) {
                error = name + " needs a value (got the option '" + value +
                        "'; write " + name + "=VALUE for a value starting with --)";
                return ConfigStatus::Error;
            }
        }
        if (name == "--config") continue;  // applied above
        if (!apply_flag(name, value, cfg, password_file, work_dir_set, error))
            return ConfigStatus::Error;
    }
    if (!password_file.empty()) {
        bool loose = false;
        if (!read_password_file(password_file, cfg.password, error, &loose))
            return ConfigStatus::FileError;
        if (loose)
            log::warn("password file is readable by group or others; chmod 600 it",
                      {{"file", password_file}});
    }
    apply_default_port(cfg.brokers, port);
    cfg.default_port = port;
    if (!work_dir_set) cfg.work_dir = cfg.state_dir + "/.ur-agent-work";
    return ConfigStatus::Ok;
}

}  // namespace ur
