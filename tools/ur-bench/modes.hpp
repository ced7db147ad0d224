// ur-bench's modes and what they share: the options, the agents started
// (stopped by die()), the monitoring client.  One file per group of modes.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "amqp/connection.hpp"
#include "tools/ur-bench/client.hpp"

namespace bench {

struct Options {
    std::string mode, self, agent = "build/ur-agent", tmp = "/tmp/ur-bench", key, urctl, compare;
    uint16_t port = 5672;
    int runs = 0, requests = 2000, concurrency = 16, count = 0;
    bool agent_only = false;
    std::string agent_setup;  // publish-once: "", "1" (all), "request"
    pid_t broker_pid = 0;  // RabbitMQ's beam.smp, for CPU attribution (0: none)
    std::vector<std::string> agent_args;  // --agent-arg X: given to every agent
    uint64_t size = 0;
    std::string command;  // the command line, for the figures
};

// Agents started and not yet stopped: die() stops them, so that a failed
// run leaves nothing behind on the broker.
extern std::set<pid_t> g_agents;

[[noreturn]] void die(const std::string& msg);
void stop_agent(pid_t pid, int grace_ms = 3000);

inline constexpr char kTrivial[] = "#!/bin/sh\nexit 0\n";

// An execute request's body for `script` (no args, empty env).
std::string execute_body(const std::string& script);

// The monitoring client: a queue bound to the keys the agent publishes.
void open_monitor(Client& c, const Options& o, const std::vector<std::string>& keys);

// Pops deliveries until one has routing key `key`; false after timeout_ms.
bool await_key(Client& c, const std::string& key, uint64_t timeout_ms, amqp::Event* out = nullptr);

struct AgentProc {
    pid_t pid = -1;
    std::string uuid, dir;
};

// Writes DIR/sysinfo.json (fresh uuid) and starts the agent with DIR/state
// as a fresh state dir.  log_fd: where its log goes (-1: DIR/agent.log).
AgentProc start_agent(const Options& o, const std::string& dir,
                      const std::vector<std::string>& extra, int log_fd = -1);

// An agent started in its own directory, with the monitor seeing its
// start-up: ready for requests.
AgentProc ready_agent(const Options& o, Client& mon, const std::string& dir,
                      const std::vector<std::string>& extra);

// One execute round trip through the broker, in ms; die()s after timeout_ms.
double execute_once(Client& mon, const AgentProc& a, const std::string& body, uint64_t timeout_ms,
                    amqp::Event* reply = nullptr);

// Runs path (no stdio) and waits for it; returns ms, or -1 on failure.
double spawn_wait(const std::string& path);

// o.tmp/name, emptied.
std::string fresh_dir(const Options& o, const std::string& name);

// The modes (see main.cpp).
void mode_startup(const Options& o);
void mode_publish_once(const Options& o);
void mode_rtt(const Options& o);
void mode_throughput(const Options& o);
void mode_large(const Options& o);
void mode_drain(const Options& o);
void mode_fleet(const Options& o);

}  // namespace bench
