#include "src/config.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace ur {

std::string default_reboot_cmd() {
#if defined(__sun)
    return "/usr/sbin/shutdown -y -g 0 -i 6";
#else
    return "/sbin/shutdown -r now";
#endif
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
        "                          brokers of a cluster, tried in turn\n"
        "                          (default $AMQP_HOST:$AMQP_PORT or localhost:5672)\n"
        "  --login NAME            AMQP user (default $AMQP_LOGIN or guest)\n"
        "  --password-file FILE    read the AMQP password from FILE (first line)\n"
        "                          (default $AMQP_PASSWORD or guest)\n"
        "  --vhost VHOST           AMQP virtual host (default $AMQP_VHOST or /)\n"
        "  --heartbeat SECS        AMQP heartbeat to ask for, 0 = none (default 30)\n"
        "  --connect-timeout SECS  give up a TCP connect after SECS (default 10)\n"
        "\n"
        "Node:\n"
        "  --sysinfo-cmd PATH      program printing the sysinfo JSON (default /usr/bin/sysinfo)\n"
        "  --sysinfo-file FILE     read the sysinfo JSON from FILE instead\n"
        "  --sysinfo-interval SECS send ur.sysinfo every SECS until setup is complete\n"
        "                          (default 60)\n"
        "  --setup-file FILE       setup state file (default /var/lib/setup.json)\n"
        "  --state-dir DIR         where the once-per-boot startup marker lives\n"
        "                          (default /tmp)\n"
        "  --work-dir DIR          private directory for script files\n"
        "                          (default STATE-DIR/.ur-agent-work)\n"
        "  --reboot-cmd CMD        run (by /bin/sh -c) after a script exits 113\n"
        "                          (default: " + default_reboot_cmd() + ")\n"
        "\n"
        "Execution:\n"
        "  --max-concurrency N     scripts running at once (default 16)\n"
        "  --max-output BYTES      bytes kept per output stream (default 5242880)\n"
        "  --default-timeout SECS  kill a script after SECS, 0 = never (default 3600)\n"
        "  --shutdown-grace SECS   on SIGTERM, wait this long for scripts (default 10)\n"
        "  --max-pending-bytes N   replies kept while the broker is away (default 67108864)\n"
        "\n"
        "Other:\n"
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

// Reads the first line of a password file.  Warns (returns a warning in
// `warning`) when the file is readable by group or others.
bool read_password_file(const std::string& path, std::string& password,
                        std::string& error) {
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
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
    if (nl != std::string::npos) data.resize(nl);
    if (data.empty()) {
        error = "--password-file " + path + ": empty";
        return false;
    }
    password = std::move(data);
    if (st.st_mode & (S_IRWXG | S_IRWXO))
        log::warn("password file is readable by group or others; chmod 600 it",
                  {{"file", path}});
    return true;
}

}  // namespace

bool parse_brokers(const std::string& spec, uint16_t default_port,
                   std::vector<BrokerAddress>& out, std::string& error) {
    std::vector<BrokerAddress> list;
    size_t start = 0;
    while (start <= spec.size()) {
        size_t comma = spec.find(',', start);
        if (comma == std::string::npos) comma = spec.size();
        std::string item = spec.substr(start, comma - start);
        start = comma + 1;
        if (item.empty()) {
            error = "empty broker address in '" + spec + "'";
            return false;
        }
        BrokerAddress addr;
        addr.port = default_port;
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
        if (!port_text.empty()) {
            uint64_t p;
            if (!parse_uint(port_text.c_str(), 65535, p) || p == 0) {
                error = "bad port '" + port_text + "' in broker address '" + item + "'";
                return false;
            }
            addr.port = uint16_t(p);
        }
        list.push_back(std::move(addr));
        if (comma == spec.size()) break;
    }
    out = std::move(list);
    return true;
}

ConfigStatus parse_config(int argc, const char* const* argv, const Getenv& getenv,
                          Config& cfg, std::string& output, std::string& error) {
    cfg.reboot_cmd = default_reboot_cmd();

    // The environment first (compatible with the original agent).
    uint16_t env_port = 5672;
    if (const char* p = getenv("AMQP_PORT"); p && *p) {
        uint64_t v;
        if (!parse_uint(p, 65535, v) || v == 0) {
            error = std::string("AMQP_PORT: not a port number: '") + p + "'";
            return ConfigStatus::Error;
        }
        env_port = uint16_t(v);
    }
    const char* env_host = getenv("AMQP_HOST");
    if (!parse_brokers(env_host && *env_host ? env_host : "localhost", env_port,
                       cfg.brokers, error)) {
        error = "AMQP_HOST: " + error;
        return ConfigStatus::Error;
    }
    if (const char* v = getenv("AMQP_LOGIN"); v && *v) cfg.login = v;
    if (const char* v = getenv("AMQP_PASSWORD"); v && *v) cfg.password = v;
    if (const char* v = getenv("AMQP_VHOST"); v && *v) cfg.vhost = v;

    std::string password_file;
    bool work_dir_set = false;
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
        if (name == "--help" || name == "--version") {
            if (has_value) {
                error = name + " takes no value";
                return ConfigStatus::Error;
            }
            output = name == "--help" ? usage_text()
                                      : std::string("ur-agent ") + UR_VERSION + "\n";
            return ConfigStatus::Exit;
        }
        static const char* const kValueFlags[] = {
            "--broker", "--login", "--password-file", "--vhost", "--heartbeat",
            "--connect-timeout", "--sysinfo-cmd", "--sysinfo-file", "--state-dir", "--work-dir",
            "--setup-file", "--sysinfo-interval", "--reboot-cmd", "--max-concurrency",
            "--max-output", "--default-timeout", "--shutdown-grace", "--max-pending-bytes",
            "--log-level"};
        bool known = false;
        for (const char* f : kValueFlags) known = known || name == f;
        if (!known) {
            error = "unknown option '" + name + "'";
            return ConfigStatus::Error;
        }
        if (!has_value) {
            if (i + 1 >= argc) {
                error = name + " needs a value";
                return ConfigStatus::Error;
            }
            value = argv[++i];
        }
        auto number = [&](uint64_t max, uint64_t& out) {
            if (parse_uint(value.c_str(), max, out)) return true;
            error = name + ": expected a whole number from 0 to " + std::to_string(max) +
                    ", got '" + value + "'";
            return false;
        };
        auto nonempty = [&]() {
            if (!value.empty()) return true;
            error = name + " must not be empty";
            return false;
        };
        uint64_t n = 0;
        if (name == "--broker") {
            if (!parse_brokers(value, 5672, cfg.brokers, error)) {
                error = "--broker: " + error;
                return ConfigStatus::Error;
            }
        } else if (name == "--login") {
            if (!nonempty()) return ConfigStatus::Error;
            cfg.login = value;
        } else if (name == "--password-file") {
            if (!nonempty()) return ConfigStatus::Error;
            password_file = value;
        } else if (name == "--vhost") {
            if (!nonempty()) return ConfigStatus::Error;
            cfg.vhost = value;
        } else if (name == "--heartbeat") {
            if (!number(65535, n)) return ConfigStatus::Error;
            cfg.heartbeat_s = unsigned(n);
        } else if (name == "--connect-timeout") {
            if (!number(3600, n)) return ConfigStatus::Error;
            if (n == 0) {
                error = "--connect-timeout must be at least 1";
                return ConfigStatus::Error;
            }
            cfg.connect_timeout_s = unsigned(n);
        } else if (name == "--sysinfo-cmd") {
            if (!nonempty()) return ConfigStatus::Error;
            cfg.sysinfo_cmd = value;
        } else if (name == "--sysinfo-file") {
            if (!nonempty()) return ConfigStatus::Error;
            cfg.sysinfo_file = value;
        } else if (name == "--state-dir") {
            if (!nonempty()) return ConfigStatus::Error;
            cfg.state_dir = value;
        } else if (name == "--work-dir") {
            if (!nonempty()) return ConfigStatus::Error;
            cfg.work_dir = value;
            work_dir_set = true;
        } else if (name == "--setup-file") {
            if (!nonempty()) return ConfigStatus::Error;
            cfg.setup_file = value;
        } else if (name == "--sysinfo-interval") {
            if (!number(86400 * 365, n)) return ConfigStatus::Error;
            if (n == 0) {
                error = "--sysinfo-interval must be at least 1";
                return ConfigStatus::Error;
            }
            cfg.sysinfo_interval_s = unsigned(n);
        } else if (name == "--reboot-cmd") {
            if (!nonempty()) return ConfigStatus::Error;
            cfg.reboot_cmd = value;
        } else if (name == "--max-concurrency") {
            if (!number(4096, n)) return ConfigStatus::Error;
            if (n == 0) {
                error = "--max-concurrency must be at least 1";
                return ConfigStatus::Error;
            }
            cfg.max_concurrency = unsigned(n);
        } else if (name == "--max-output") {
            if (!number(uint64_t(1) << 32, n)) return ConfigStatus::Error;
            if (n < 1024) {
                error = "--max-output must be at least 1024";
                return ConfigStatus::Error;
            }
            cfg.max_output = n;
        } else if (name == "--default-timeout") {
            if (!number(86400 * 365, n)) return ConfigStatus::Error;
            cfg.default_timeout_s = unsigned(n);
        } else if (name == "--shutdown-grace") {
            if (!number(3600, n)) return ConfigStatus::Error;
            cfg.shutdown_grace_s = unsigned(n);
        } else if (name == "--max-pending-bytes") {
            if (!number(uint64_t(1) << 40, n)) return ConfigStatus::Error;
            cfg.max_pending_bytes = n;
        } else if (name == "--log-level") {
            if (!log::parse_level(value, cfg.log_level)) {
                error = "--log-level: expected trace, debug, info, warn, error or fatal, got '" +
                        value + "'";
                return ConfigStatus::Error;
            }
        } else {
            error = "unknown option '" + name + "'";
            return ConfigStatus::Error;
        }
    }
    if (!password_file.empty() && !read_password_file(password_file, cfg.password, error))
        return ConfigStatus::Error;
    if (!work_dir_set) cfg.work_dir = cfg.state_dir + "/.ur-agent-work";
    return ConfigStatus::Ok;
}

}  // namespace ur
