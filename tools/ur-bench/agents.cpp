// What ur-bench's modes share: agents started and stopped, the monitoring
// client, a bare spawn.

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "json/json.hpp"
#include "tools/ur-bench/client.hpp"
#include "tools/ur-bench/modes.hpp"
#include "tools/ur-bench/util.hpp"

namespace bench {

// Agents started and not yet stopped: die() stops them, so that a failed
// run leaves nothing behind on the broker.
std::set<pid_t> g_agents;

[[noreturn]] void die(const std::string& msg) {
    std::fprintf(stderr, "ur-bench: %s\n", msg.c_str());
    for (pid_t p : g_agents) kill(p, SIGTERM);
    for (pid_t p : g_agents) stop(p, 2000);
    std::exit(1);
}

void stop_agent(pid_t pid, int grace_ms) {
    stop(pid, grace_ms);
    g_agents.erase(pid);
}

std::string execute_body(const std::string& script) {
    json::Value o = json::Value::object();
    o.set("type", "script");
    o.set("script", script);
    o.set("args", json::Value::array());
    o.set("env", json::Value::object());
    return json::write(o);
}

// The monitoring client: a queue bound to the keys the agent publishes.
void open_monitor(Client& c, const Options& o, const std::vector<std::string>& keys) {
    std::string err;
    if (!c.connect("127.0.0.1", o.port, err)) die("connect: " + err);
    std::string q = c.declare_queue("");
    if (q.empty()) die("queue.declare: " + c.error());
    for (const auto& k : keys)
        if (!c.bind(q, k)) die("queue.bind " + k + ": " + c.error());
    if (!c.consume(q)) die("basic.consume: " + c.error());
}

// Pops deliveries until one has routing key `key`; false after timeout_ms.
bool await_key(Client& c, const std::string& key, uint64_t timeout_ms, amqp::Event* out) {
    bool found = false;
    pump({&c}, [&] {
        while (!c.deliveries.empty()) {
            amqp::Event& e = c.deliveries.front();
            if (e.routing_key == key) {
                if (out) *out = std::move(e);
                c.deliveries.pop_front();
                found = true;
                return true;
            }
            c.deliveries.pop_front();
        }
        return false;
    }, timeout_ms);
    return found;
}

// Writes DIR/sysinfo.json (fresh uuid) and starts the agent with DIR/state
// as a fresh state dir.  log_fd: where its log goes (-1: DIR/agent.log).
AgentProc start_agent(const Options& o, const std::string& dir,
                      const std::vector<std::string>& extra, int log_fd) {
    AgentProc a;
    a.uuid = random_uuid();
    a.dir = dir;
    if (!make_dirs(dir)) die("mkdir " + dir + ": " + std::strerror(errno));
    if (!write_file(dir + "/sysinfo.json", sysinfo_json(a.uuid))) die("write sysinfo in " + dir);
    std::vector<std::string> argv = {o.agent, "--broker", "127.0.0.1:" + std::to_string(o.port),
                                     "--sysinfo-file", dir + "/sysinfo.json",
                                     "--state-dir", dir + "/state",
                                     "--setup-file", dir + "/setup.json",
                                     "--reboot-cmd", "/bin/true"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.insert(argv.end(), o.agent_args.begin(), o.agent_args.end());
    int fd = log_fd;
    if (fd < 0) fd = open((dir + "/agent.log").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    a.pid = spawn(argv, fd);
    if (log_fd < 0 && fd >= 0) close(fd);
    if (a.pid < 0) die("cannot start " + o.agent);
    g_agents.insert(a.pid);
    return a;
}

// Runs path (no stdio) and waits for it; returns ms, or -1 on failure.
double spawn_wait(const std::string& path) {
    uint64_t t0 = now_ns();
    char* av[] = {const_cast<char*>(path.c_str()), nullptr};
    char* env[] = {nullptr};
    pid_t pid;
    if (posix_spawn(&pid, path.c_str(), nullptr, nullptr, av, env) != 0) return -1;
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    return ms_since(t0);
}

std::string fresh_dir(const Options& o, const std::string& name) {
    std::string d = o.tmp + "/" + name;
    std::string cmd = "rm -rf '" + d + "'";
    if (std::system(cmd.c_str()) != 0) die("cannot clear " + d);
    if (!make_dirs(d)) die("mkdir " + d);
    return d;
}

AgentProc ready_agent(const Options& o, Client& mon, const std::string& dir,
                      const std::vector<std::string>& extra) {
    AgentProc a = start_agent(o, dir, extra);
    if (!await_key(mon, "ur.startup." + a.uuid, 20000))
        die("no ur.startup from the agent; see " + dir + "/agent.log");
    return a;
}

double execute_once(Client& mon, const AgentProc& a, const std::string& body, uint64_t timeout_ms,
                    amqp::Event* reply) {
    std::string req = random_token();
    uint64_t t0 = now_ns();
    mon.publish("ur.execute." + a.uuid + "." + req, body);
    if (!await_key(mon, "ur.execute-reply." + a.uuid + "." + req, timeout_ms, reply))
        die("no execute reply within " + std::to_string(timeout_ms) + " ms; see " + a.dir +
            "/agent.log");
    return ms_since(t0);
}

}  // namespace bench
