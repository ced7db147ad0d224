// The agent's configuration: defaults, then the environment (AMQP_*), then
// command-line flags.  Parsing is pure (no I/O except --password-file), so
// it is unit-tested directly.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "src/log.hpp"

namespace ur {

struct BrokerAddress {
    std::string host;
    uint16_t port = 5672;
    bool port_given = false;  // written in the address (else port is the default)
    bool bare_ipv6 = false;   // an IPv6 address written without brackets (so with no port)
};

struct Config {
    std::vector<BrokerAddress> brokers;       // tried in turn
    std::string login = "guest";
    std::string password = "guest";           // never logged
    std::string vhost = "/";
    // Each set by a flag, the config file or AMQP_* (else the default, or
    // Triton's boot parameter: apply_boot_rabbitmq()).
    bool broker_given = false, login_given = false, password_given = false, vhost_given = false;
    uint16_t default_port = 5672;  // of an address given without one: $AMQP_PORT or 5672
    unsigned heartbeat_s = 30;
    unsigned connect_timeout_s = 10;
    // Cap of the reconnect backoff (100 ms doubling, jittered).  10 s, as
    // urclient's: after a broker restart every node is back within about
    // 10 s (with 30 s, a 40 s outage kept nodes away 18 s after it ended);
    // a broker that is down refuses a connect cheaply.  Not in --help: only
    // tests that make the agent reconnect thousands of times lower it
    // (--reconnect-max-ms, tools/hostile-run).
    uint64_t reconnect_max_ms = 10000;
    std::string sysinfo_cmd = "/usr/bin/sysinfo";
    bool sysinfo_cmd_set = false;             // --sysinfo-cmd given (else a missing one means built-in)
    std::string sysinfo_file;                 // when set, read instead of running sysinfo_cmd
    std::string datacenter;                   // built-in sysinfo: "Datacenter Name"
    std::string admin_nic;                    // built-in sysinfo: admin interface
    std::string admin_nic_tag;                // built-in sysinfo: "Admin NIC Tag"
    bool print_sysinfo = false;               // print the sysinfo and exit
    bool journal_fsync = false;               // fsync each in-flight journal entry
    bool boot_rabbitmq = false;               // --boot-rabbitmq (apply_boot_rabbitmq())
    std::string config_file;
    std::string state_dir = "/tmp";
    std::string work_dir;                     // private script directory; default <state-dir>/.ur-agent-work
    std::string setup_file = "/var/lib/setup.json";
    unsigned sysinfo_interval_s = 60;
    std::string reboot_cmd;
    unsigned max_concurrency = 16;
    uint64_t max_output = 5u << 20;
    unsigned default_timeout_s = 3600;        // 0 = none
    unsigned shutdown_grace_s = 10;
    // A request waiting this long for a free script slot is answered "not
    // run" (0 = never): RabbitMQ closes a channel whose delivery stays
    // unacked past its consumer_timeout (30 min by default), and the
    // auto-delete request queue goes with every request in it.
    unsigned max_queue_wait_s = 1500;
    // Requests waiting for a free slot that the agent takes from the broker
    // at once (acked, journaled), so that it goes on receiving the rest,
    // discovers included: an extension, off by default, as PROTOCOL.md has
    // a request acked when its child has started (0: the prefetch,
    // --max-concurrency, holds them in the broker).  At most 32 MiB.
    unsigned max_waiting = 0;
    // A script that cannot be started for want of processes, memory or
    // file descriptors is tried again this long before it is answered 126
    // (0 = answered at once).
    unsigned start_retry_s = 30;
    uint64_t max_pending_bytes = 64u << 20;
    log::Level log_level = log::Level::Info;
};

// The platform's reboot command (illumos vs Linux).
std::string default_reboot_cmd();

// Bytes of a stream's end kept when its output passes --max-output.
size_t output_tail_keep(const Config& cfg);
// The bound on replies waiting to be sent: --max-pending-bytes, but never
// less than one whole reply, so that no reply is cut for the bound while
// nothing else waits.  Per stream a reply holds the head (--max-output
// less the tail, counted as escaped), a marker line and the tail, escaped
// at the end (up to six bytes per raw byte); 4 KiB for the rest.
uint64_t pending_bound(const Config& cfg);

enum class ConfigStatus {
    Ok,     // run the agent
    Exit,   // --help / --version: `output` holds the text for stdout, exit 0
    Error,  // `error` holds a one-line message; print it with usage, exit 2
    FileError,  // the same for a --config or --password-file file that cannot be
                // read or is malformed: no usage line (it is no usage error)
};

using Getenv = std::function<const char*(const char*)>;

// Fills `cfg` from defaults, then --config FILE (a JSON object whose keys
// are the long flags without "--"), then the environment, then argv.  On Error, `error` says which flag or
// variable is wrong and why, never quoting a password.
ConfigStatus parse_config(int argc, const char* const* argv, const Getenv& getenv,
                          Config& cfg, std::string& output, std::string& error);

// The --help text.
std::string usage_text();

// Reads a password: the first line (without its end) of a regular file of
// at most 64 KiB; an empty one is an error.  False with `error` set to
// "--password-file PATH: why".  `readable_by_others`, if given, is set when
// group or others may read the file (the agent warns; it is not refused).
// Shared by the agent and urctl.
bool read_password_file(const std::string& path, std::string& password, std::string& error,
                        bool* readable_by_others = nullptr);

// Parses "HOST[:PORT][,HOST[:PORT]...]" ("[v6addr]:port" for IPv6).  An
// address without a port gets 5672 until apply_default_port() says otherwise.
bool parse_brokers(const std::string& spec, std::vector<BrokerAddress>& out,
                   std::string& error);

// Triton's boot parameter `rabbitmq`, LOGIN:PASSWORD:HOST:PORT (and
// optionally :VHOST): what CNAPI gives a compute node to find its broker,
// and what the original agents read (through /lib/sdc/config.sh).  With
// --boot-rabbitmq, when no broker was configured, it is the broker, with its login, password
// and vhost for those not configured either; an empty part keeps the
// default.  False with why when it is malformed (cfg unchanged); true,
// `used` false, when a broker was configured.
bool apply_boot_rabbitmq(const std::string& spec, Config& cfg, bool& used, std::string& error);

// Gives `port` to every address written without one: $AMQP_PORT is the
// default port of all of them, however they were given.
void apply_default_port(std::vector<BrokerAddress>& brokers, uint16_t port);

}  // namespace ur
