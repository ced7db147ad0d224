// ur-bench: the agent's costs measured against the physical floor, through
// a real RabbitMQ.  Each mode prints its figures as JSON lines (see
// util.hpp emit()); tools/bench/run starts the broker, runs every mode and
// prints the table.
//
//   ur-bench MODE --port P [--agent PATH] [--tmp DIR] [options]
//
// Modes:
//   startup  [--runs N] [--compare PATH]
//                                 exec of ur-agent -> its ur.startup arrives;
//                                 the same for `ur-bench publish-once`
//                                 (connect + publish: the floor); idle RSS;
//                                 --compare: another agent build's start-up,
//                                 interleaved with --agent's (A/B)
//   rtt      [--runs N]           sequential execute round trips of a trivial
//                                 script; floor: two broker hops + spawn/wait
//   throughput [--runs N] [--requests N] [--concurrency N]
//                                 N requests published at once; floor: bare
//                                 spawn-and-wait with the same concurrency
//   large    --size BYTES [--runs N]
//                                 a script writing BYTES to stdout: round trip
//                                 and the agent's VmHWM; floor: the script
//                                 into a drained pipe + one hop of BYTES;
//                                 after one warm-up run (each run on stderr)
//   fleet    --count N [--urctl PATH]
//                                 N agents: start-up of all, total RSS,
//                                 discover (broadcast) of all, run hostname
//                                 on all
//   drain [--size BYTES]         no broker: amqp::Connection::basic_publish of
//                                 BYTES, output consumed in 64 KiB / 256 KiB /
//                                 4 MiB writes (cost of consume_output)
//   publish-once --key KEY [--agent-setup 1|request]
//                                 connect, (set up queues as the agent does,
//                                 or its request queue alone,) publish {} on
//                                 amq.topic, exit
//
// Common options: --agent-arg ARG (repeatable) is passed to every agent;
// --broker-pid PID attributes RabbitMQ's CPU time (throughput);
// --agent-only 1 skips rtt's floor.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "json/json.hpp"
#include "tools/ur-bench/client.hpp"
#include "tools/ur-bench/util.hpp"

using namespace bench;

extern char** environ;

namespace {

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
std::set<pid_t> g_agents;

[[noreturn]] void die(const std::string& msg) {
    std::fprintf(stderr, "ur-bench: %s\n", msg.c_str());
    for (pid_t p : g_agents) kill(p, SIGTERM);
    for (pid_t p : g_agents) stop(p, 2000);
    std::exit(1);
}

void stop_agent(pid_t pid, int grace_ms = 3000) {
    stop(pid, grace_ms);
    g_agents.erase(pid);
}

const char kTrivial[] = "#!/bin/sh\nexit 0\n";

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
bool await_key(Client& c, const std::string& key, uint64_t timeout_ms, amqp::Event* out = nullptr) {
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

struct AgentProc {
    pid_t pid = -1;
    std::string uuid, dir;
};

// Writes DIR/sysinfo.json (fresh uuid) and starts the agent with DIR/state
// as a fresh state dir.  log_fd: where its log goes (-1: DIR/agent.log).
AgentProc start_agent(const Options& o, const std::string& dir,
                      const std::vector<std::string>& extra, int log_fd = -1) {
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

// ------------------------------------------------------------ start-up

void mode_startup(const Options& o) {
    int runs = o.runs ? o.runs : 20;
    Client mon;
    open_monitor(mon, o, {"ur.startup.#", "bench.floor.#"});
    std::string base = fresh_dir(o, "startup");
    std::vector<double> agent_ms, floor_ms, setup_ms, request_ms, rss_kib, anon_kib, compare_ms;
    // One floor run, in ms: exec publish-once (with --agent-setup SETUP
    // unless empty) -> its message arrives.
    auto floor_once = [&](const std::string& setup, int i) {
        std::string key = "bench.floor." + (setup.empty() ? "" : setup + ".") + std::to_string(i);
        std::vector<std::string> argv{o.self, "publish-once", "--port", std::to_string(o.port),
                                      "--key", key};
        if (!setup.empty()) argv.insert(argv.end(), {"--agent-setup", setup});
        uint64_t t0 = now_ns();
        pid_t p = spawn(argv);
        if (p < 0 || !await_key(mon, key, 20000)) die("floor publish " + key + " did not arrive");
        double ms = ms_since(t0);
        int st;
        while (waitpid(p, &st, 0) < 0 && errno == EINTR) {}
        return ms;
    };
    for (int i = 0; i < runs; ++i) {
        // Floor first and agent second in each round, so that both see the
        // same machine noise.
        floor_ms.push_back(floor_once("", i));
        setup_ms.push_back(floor_once("1", i));
        request_ms.push_back(floor_once("request", i));

        // --compare: the other build's start-up in the same round, first
        // in every other round, so that both see the same noise and drift.
        auto compare = [&] {
            Options other = o;
            other.agent = o.compare;
            std::string cdir = base + "/cmp" + std::to_string(i);
            uint64_t c0 = now_ns();
            AgentProc b = start_agent(other, cdir, {});
            if (!await_key(mon, "ur.startup." + b.uuid, 20000))
                die("no ur.startup from " + o.compare + "; see " + cdir + "/agent.log");
            compare_ms.push_back(ms_since(c0));
            stop_agent(b.pid);
        };
        if (!o.compare.empty() && i % 2 == 1) compare();
        std::string dir = base + "/run" + std::to_string(i);
        uint64_t t0 = now_ns();
        AgentProc a = start_agent(o, dir, {});
        if (!await_key(mon, "ur.startup." + a.uuid, 20000))
            die("no ur.startup from the agent; see " + dir + "/agent.log");
        agent_ms.push_back(ms_since(t0));
        // Idle: let the agent finish what follows start-up (the sysinfo
        // heartbeat and its confirm) before reading its RSS.
        usleep(300000);
        rss_kib.push_back(double(rss_tree_kib(a.pid)));
        anon_kib.push_back(double(rollup_kib(a.pid, "Anonymous:")));
        stop_agent(a.pid);
        if (!o.compare.empty() && i % 2 == 0) compare();
    }
    emit("startup_agent", "Start-up: exec ur-agent -> ur.startup arrives", "ms", stats(agent_ms),
         false, o.command);
    if (!o.compare.empty())
        emit("startup_compare", "  the same for --compare " + o.compare, "ms", stats(compare_ms),
             false, o.command);
    emit("startup_floor", "Start-up floor: exec ur-bench publish-once -> message arrives", "ms",
         stats(floor_ms), false, o.command);
    emit("startup_floor_setup",
         "  floor + the agent's broker set-up (qos, 2 queues, 5 bindings, 2 consumers)", "ms",
         stats(setup_ms), false, o.command);
    emit("startup_floor_request_setup",
         "  floor + the request queue's set-up alone (qos, declare, 3 bindings, consumer)", "ms",
         stats(request_ms), false, o.command);
    std::vector<double> rss_mib;
    for (double k : rss_kib) rss_mib.push_back(k / 1024.0);
    emit("idle_rss", "Idle RSS of the agent (process tree, VmRSS), 300 ms after start-up", "MiB",
         stats(rss_mib), false, o.command);
    std::vector<double> anon_mib, file_mib;
    for (size_t i = 0; i < rss_kib.size(); ++i) {
        anon_mib.push_back(anon_kib[i] / 1024.0);
        file_mib.push_back((rss_kib[i] - anon_kib[i]) / 1024.0);
    }
    emit("idle_rss_anon", "  of which anonymous (heap, stack, data: the agent's own)", "MiB",
         stats(anon_mib), false, o.command);
    emit("idle_rss_file", "  of which file-backed (clean text/rodata pages of the binary)", "MiB",
         stats(file_mib), false, o.command);
}

void mode_publish_once(const Options& o) {
    Client c;
    std::string err;
    // Channel.open, set-up and publish in one go: the best a client can do.
    if (!c.connect("127.0.0.1", o.port, err, 20000, false)) die("connect: " + err);
    if (o.agent_setup == "1" || o.agent_setup == "request") {
        // What the agent asks of the broker before it announces start-up,
        // pipelined as the agent does: qos, its two queues and five
        // bindings, two consumers (names as PROTOCOL.md gives them).
        // "request": the request queue's part alone, the least a node
        // that takes requests must have set up before it says it is up.
        std::string uuid = random_uuid(), mac = "02:00:00:00:00:01";
        amqp::Connection& k = c.conn();
        uint16_t ch = c.channel();
        std::string rq = "ur.request." + uuid + "." + mac, pq = "ur.ping." + uuid;
        k.basic_qos(ch, 16);
        k.queue_declare(ch, rq, false, false, true, true);
        for (std::string key : {"ur.execute." + uuid + ".*", "ur.execute." + uuid + "-" + mac + ".*",
                                std::string("ur.broadcast.*.*")})
            k.queue_bind(ch, rq, "amq.topic", key);
        const bool ping = o.agent_setup == "1";
        if (ping) {
            k.queue_declare(ch, pq, false, false, false, true);
            k.queue_bind(ch, pq, "amq.topic", pq);
        }
        k.basic_consume(ch, rq, "r", false, false);
        if (ping) k.basic_consume(ch, pq, "p", false, false);
        c.flush();
        const size_t consumers = ping ? 2 : 1;
        if (!pump({&c}, [&] { return c.consume_oks >= consumers; }, 20000))
            die("set-up: " + c.error());
    } else if (!o.agent_setup.empty()) {
        die("--agent-setup is 1 or request");
    }
    c.publish(o.key, "{}");
    if (!c.close_connection()) die("publish: no close-ok from the broker: " + c.error());
}

// ------------------------------------------------------------ round trip

// An agent started in its own directory, with the monitor seeing its
// start-up: ready for requests.
AgentProc ready_agent(const Options& o, Client& mon, const std::string& dir,
                      const std::vector<std::string>& extra) {
    AgentProc a = start_agent(o, dir, extra);
    if (!await_key(mon, "ur.startup." + a.uuid, 20000))
        die("no ur.startup from the agent; see " + dir + "/agent.log");
    return a;
}

double execute_once(Client& mon, const AgentProc& a, const std::string& body, uint64_t timeout_ms,
                    amqp::Event* reply = nullptr) {
    std::string req = random_token();
    uint64_t t0 = now_ns();
    mon.publish("ur.execute." + a.uuid + "." + req, body);
    if (!await_key(mon, "ur.execute-reply." + a.uuid + "." + req, timeout_ms, reply))
        die("no execute reply within " + std::to_string(timeout_ms) + " ms; see " + a.dir +
            "/agent.log");
    return ms_since(t0);
}

void mode_rtt(const Options& o) {
    int runs = o.runs ? o.runs : 300;
    std::string base = fresh_dir(o, "rtt");
    Client mon;
    open_monitor(mon, o, {"ur.startup.#", "ur.execute-reply.#", "bench.rep.#"});
    AgentProc a = ready_agent(o, mon, base + "/agent", {});
    std::string body = execute_body(kTrivial);

    // The floor: requester `mon` and a responder on its own connection,
    // manual ack and confirms like the agent.
    Client resp;
    std::string script = base + "/trivial.sh";
    if (!o.agent_only) {
        std::string err;
        if (!resp.connect("127.0.0.1", o.port, err)) die("connect: " + err);
        std::string q = resp.declare_queue("");
        if (q.empty() || !resp.bind(q, "bench.req.#") || !resp.consume(q, false) ||
            !resp.confirm_select())
            die("responder setup: " + resp.error());
        if (!write_file(script, kTrivial, 0755)) die("write " + script);
    }
    std::string reply = "{\"exit_status\":0,\"stdout\":\"\",\"stderr\":\"\"}";
    auto hop2 = [&](int i, bool with_spawn) {
        std::string k = std::to_string(i);
        uint64_t t0 = now_ns();
        mon.publish("bench.req." + k, body);
        if (!pump({&mon, &resp}, [&] { return !resp.deliveries.empty(); }, 20000))
            die("floor: request not delivered");
        resp.ack(resp.deliveries.front().delivery_tag);
        resp.deliveries.pop_front();
        if (with_spawn && spawn_wait(script) < 0) die("cannot run " + script);
        resp.publish("bench.rep." + k, reply);
        bool got = false;
        pump({&mon, &resp}, [&] {
            while (!mon.deliveries.empty()) {
                got = got || mon.deliveries.front().routing_key == "bench.rep." + k;
                mon.deliveries.pop_front();
            }
            return got;
        }, 20000);
        if (!got) die("floor: reply not delivered");
        return ms_since(t0);
    };

    // Agent and floor take turns, request by request, so that both see the
    // same machine (it drifts over a run: measured one after the other, the
    // p50 ratio moved between 0.98x and 1.38x from one make bench to the next).
    for (int i = 0; i < 20; ++i) {  // warm-up
        execute_once(mon, a, body, 20000);
        if (!o.agent_only) hop2(i, true);
    }
    std::vector<double> agent_ms, cpu_ms, floor_ms, hops_ms, spawn_ms;
    for (int i = 0; i < runs; ++i) {
        uint64_t c0 = cpu_ns(a.pid);
        agent_ms.push_back(execute_once(mon, a, body, 20000));
        cpu_ms.push_back(double(cpu_ns(a.pid) - c0) / 1e6);
        if (o.agent_only) continue;
        floor_ms.push_back(hop2(i, true));
        hops_ms.push_back(hop2(i, false));
        spawn_ms.push_back(spawn_wait(script));
    }
    stop_agent(a.pid);
    emit("rtt_agent_cpu", "Execute: the agent's own CPU time per request (schedstat)", "ms",
         stats(cpu_ms), true, o.command);
    if (o.agent_only) {
        emit("rtt_agent", "Execute round trip, trivial script, sequential", "ms", stats(agent_ms),
             true, o.command);
        return;
    }
    emit("rtt_agent", "Execute round trip, trivial script, sequential", "ms", stats(agent_ms), true,
         o.command);
    emit("rtt_floor", "Round-trip floor: 2 broker hops + posix_spawn/waitpid of the script", "ms",
         stats(floor_ms), true, o.command);
    emit("rtt_hops", "  of which: 2 broker hops alone", "ms", stats(hops_ms), true, o.command);
    emit("rtt_spawn", "  of which: posix_spawn + waitpid alone", "ms", stats(spawn_ms), true,
         o.command);
}

// ------------------------------------------------------------ throughput

// Spawn-and-wait throughput with `concurrency` children at a time.
// use_fork: fork()+execve(), as the agent does (the parent goes on while
// the child execs); else posix_spawn() (glibc: CLONE_VFORK, the parent
// waits for the exec).
double bare_throughput(const std::string& script, int total, int concurrency, bool use_fork) {
    uint64_t t0 = now_ns();
    int started = 0, done = 0, running = 0;
    char* av[] = {const_cast<char*>(script.c_str()), nullptr};
    char* env[] = {nullptr};
    while (done < total) {
        while (running < concurrency && started < total) {
            pid_t pid;
            if (use_fork) {
                pid = fork();
                if (pid == 0) {
                    execve(av[0], av, env);
                    _exit(127);
                }
                if (pid < 0) die(std::string("fork: ") + std::strerror(errno));
            } else if (posix_spawn(&pid, script.c_str(), nullptr, nullptr, av, env) != 0) {
                die("cannot run " + script);
            }
            ++started;
            ++running;
        }
        int st;
        pid_t r = waitpid(-1, &st, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) die(std::string("waitpid: ") + std::strerror(errno));
        --running;
        ++done;
    }
    return double(total) / (double(now_ns() - t0) / 1e9);
}

void mode_throughput(const Options& o) {
    int runs = o.runs ? o.runs : 3;
    std::string base = fresh_dir(o, "throughput");
    Client mon;
    open_monitor(mon, o, {"ur.startup.#", "ur.execute-reply.#"});
    std::string body = execute_body(kTrivial);
    // CPU per request: the agent's own, RabbitMQ's, this client's, and the
    // whole machine's (which also holds the children); the floor's too.
    std::vector<double> agent_rate, bare_rate, fork_rate, cpu_us, broker_us, client_us, machine_us,
        bare_machine_us, fork_machine_us;
    std::string script = base + "/trivial.sh";
    if (!write_file(script, kTrivial, 0755)) die("write " + script);
    auto per_request_us = [&](uint64_t ns) { return double(ns) / 1e3 / double(o.requests); };
    auto floor_run = [&](bool use_fork, std::vector<double>& rate, std::vector<double>& machine) {
        uint64_t m0 = machine_busy_ns();
        rate.push_back(bare_throughput(script, o.requests, o.concurrency, use_fork));
        machine.push_back(per_request_us(machine_busy_ns() - m0));
    };
    for (int r = 0; r < runs; ++r) {
        AgentProc a = ready_agent(o, mon, base + "/agent" + std::to_string(r),
                                  {"--max-concurrency", std::to_string(o.concurrency)});
        std::string prefix = "ur.execute-reply." + a.uuid + ".";
        uint64_t t0 = now_ns(), c0 = cpu_ns(a.pid), b0 = cpu_ns(o.broker_pid);
        uint64_t me0 = cpu_ns(getpid()), m0 = machine_busy_ns();
        for (int i = 0; i < o.requests; ++i)
            mon.publish("ur.execute." + a.uuid + ".t" + std::to_string(i), body);
        int got = 0;
        pump({&mon}, [&] {
            while (!mon.deliveries.empty()) {
                if (mon.deliveries.front().routing_key.rfind(prefix, 0) == 0) ++got;
                mon.deliveries.pop_front();
            }
            return got >= o.requests;
        }, 300000);
        if (got < o.requests) die("throughput: only " + std::to_string(got) + " replies");
        agent_rate.push_back(double(o.requests) / (double(now_ns() - t0) / 1e9));
        machine_us.push_back(per_request_us(machine_busy_ns() - m0));
        client_us.push_back(per_request_us(cpu_ns(getpid()) - me0));
        cpu_us.push_back(per_request_us(cpu_ns(a.pid) - c0));
        if (o.broker_pid) broker_us.push_back(per_request_us(cpu_ns(o.broker_pid) - b0));
        stop_agent(a.pid);
        floor_run(false, bare_rate, bare_machine_us);
        floor_run(true, fork_rate, fork_machine_us);
    }
    std::string n = std::to_string(o.requests), c = std::to_string(o.concurrency);
    emit("tput_agent", "Throughput: " + n + " requests at once, agent --max-concurrency " + c,
         "exec/s", stats(agent_rate), false, o.command);
    emit("tput_agent_cpu", "  the agent's own CPU time per request (schedstat)", "us",
         stats(cpu_us), false, o.command);
    if (!broker_us.empty())
        emit("tput_broker_cpu", "  RabbitMQ's CPU time per request, same 2 cores (schedstat)", "us",
             stats(broker_us), false, o.command);
    emit("tput_client_cpu", "  this client's CPU time per request (publish, consume)", "us",
         stats(client_us), false, o.command);
    emit("tput_machine_cpu", "  the machine's busy CPU time per request (/proc/stat)", "us",
         stats(machine_us), false, o.command);
    // The floor is the better of the two ways to spawn.
    Stats sp = stats(bare_rate), fk = stats(fork_rate);
    bool fork_better = fk.median > sp.median;
    emit("tput_floor_machine_cpu", "  the machine's busy CPU time per bare spawn (/proc/stat)", "us",
         stats(fork_better ? fork_machine_us : bare_machine_us), false, o.command,
         fork_better ? "fork+execve" : "posix_spawn");
    emit("tput_floor", "Throughput floor: bare spawn+waitpid, " + c + " at once (best of 2 ways)",
         "exec/s", fork_better ? fk : sp, false, o.command,
         fork_better ? "fork+execve" : "posix_spawn");
    emit("tput_floor_posix_spawn", "  bare posix_spawn + waitpid", "exec/s", sp, false, o.command);
    emit("tput_floor_fork", "  bare fork + execve + waitpid", "exec/s", fk, false, o.command);
}

// ------------------------------------------------------------ large output

double run_drained(const std::string& script) {
    uint64_t t0 = now_ns();
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) die("pipe");
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, p[1], 1);
    char* av[] = {const_cast<char*>(script.c_str()), nullptr};
    char* env[] = {nullptr};
    pid_t pid;
    if (posix_spawn(&pid, script.c_str(), &fa, nullptr, av, env) != 0) die("cannot run " + script);
    posix_spawn_file_actions_destroy(&fa);
    close(p[1]);
    static char buf[1 << 16];
    for (;;) {
        ssize_t n = read(p[0], buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
    }
    close(p[0]);
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    return ms_since(t0);
}

void mode_large(const Options& o) {
    if (o.size == 0) die("large: --size BYTES is required");
    int runs = o.runs ? o.runs : 3;
    std::string sz = std::to_string(o.size);
    std::string base = fresh_dir(o, "large-" + sz);
    // Printable lines (JSON escapes only the newline): the reply is about
    // the size of the output.
    std::string data;
    data.reserve(o.size);
    const char line[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.\n";
    while (data.size() < o.size) data.append(line, std::min<size_t>(64, o.size - data.size()));
    std::string file = base + "/output.txt";
    if (!write_file(file, data)) die("write " + file);
    std::string text = "#!/bin/sh\nexec /bin/cat " + file + "\n";
    std::string script = base + "/large.sh";
    if (!write_file(script, text, 0755)) die("write " + script);

    Client mon;
    open_monitor(mon, o, {"ur.startup.#", "ur.execute-reply.#", "bench.big.#"});
    std::string body = execute_body(text);
    std::string max_output = std::to_string(std::max<uint64_t>(5u << 20, o.size + (1u << 20)));
    std::vector<double> rtt, cpu, hwm_ratio, hwm_mib, floor_script, floor_hop;
    // Run 0 is a warm-up, left out of the figures: the first 4 MiB through
    // a fresh broker (and the monitor's fresh connection) is slower for
    // both the agent and the floor, by as much as the figure itself.
    for (int r = 0; r <= runs; ++r) {
        AgentProc a = ready_agent(o, mon, base + "/agent" + std::to_string(r),
                                  {"--max-output", max_output});
        amqp::Event reply;
        uint64_t c0 = cpu_ns(a.pid);
        double ms = execute_once(mon, a, body, 300000, &reply);
        double cpu_ms = double(cpu_ns(a.pid) - c0) / 1e6;
        if (reply.body.size() < o.size || reply.body.find("\"exit_status\":0") == std::string::npos ||
            reply.body.find("truncated") != std::string::npos)
            die("large: unexpected reply (" + std::to_string(reply.body.size()) + " bytes): " +
                reply.body.substr(0, 200));
        double hwm = double(status_kib(a.pid, "VmHWM:")) * 1024.0;
        stop_agent(a.pid);
        double script_ms = run_drained(script);
        // One hop of the reply's bytes, same client code on both ends.
        uint64_t t0 = now_ns();
        mon.publish("bench.big." + std::to_string(r), reply.body);
        if (!await_key(mon, "bench.big." + std::to_string(r), 300000)) die("large: hop lost");
        double hop_ms = ms_since(t0);
        // Each run on stderr: the spread behind the medians.
        std::fprintf(stderr, "large %s run %d%s: round trip %.3f ms (agent CPU %.3f ms); floor: "
                     "script %.3f ms + hop %.3f ms\n", sz.c_str(), r, r == 0 ? " (warm-up)" : "",
                     ms, cpu_ms, script_ms, hop_ms);
        if (r == 0) continue;
        rtt.push_back(ms);
        cpu.push_back(cpu_ms);
        hwm_mib.push_back(hwm / 1048576.0);
        hwm_ratio.push_back(hwm / double(o.size));
        floor_script.push_back(script_ms);
        floor_hop.push_back(hop_ms);
    }
    Stats fs = stats(floor_script), fh = stats(floor_hop);
    std::vector<double> floor_sum;
    for (size_t i = 0; i < floor_script.size(); ++i) floor_sum.push_back(floor_script[i] + floor_hop[i]);
    std::string mib = std::to_string(o.size >> 20) + " MiB";
    emit("large_rtt_" + sz, "Large output " + mib + ": execute round trip", "ms", stats(rtt),
         false, o.command);
    emit("large_cpu_" + sz, "  the agent's own CPU time in it (schedstat)", "ms", stats(cpu),
         false, o.command);
    emit("large_floor_" + sz, "Large output " + mib + " floor: script into drained pipe + 1 hop",
         "ms", stats(floor_sum), false, o.command);
    emit("large_script_" + sz, "  of which: script alone, output drained", "ms", fs, false,
         o.command);
    emit("large_hop_" + sz, "  of which: 1 broker hop of the reply's bytes", "ms", fh, false,
         o.command);
    emit("large_hwm_" + sz, "Large output " + mib + ": agent peak RSS (VmHWM)", "MiB",
         stats(hwm_mib), false, o.command);
    emit("large_hwm_ratio_" + sz, "Large output " + mib + ": peak RSS / output size", "x",
         stats(hwm_ratio), false, o.command);
}

// ------------------------------------------------------------ fleet

// Collects deliveries whose routing key starts with prefix until `want`
// distinct uuids (the word after prefix) were seen.  Returns ms or -1.
double collect(Client& mon, const std::string& prefix, const std::string& suffix, size_t want,
               uint64_t t0, uint64_t timeout_ms, size_t* seen_out = nullptr) {
    std::set<std::string> seen;
    pump({&mon}, [&] {
        while (!mon.deliveries.empty()) {
            const std::string& k = mon.deliveries.front().routing_key;
            if (k.rfind(prefix, 0) == 0 && k.size() >= prefix.size() + suffix.size() &&
                k.compare(k.size() - suffix.size(), suffix.size(), suffix) == 0)
                seen.insert(k.substr(prefix.size(), k.size() - prefix.size() - suffix.size()));
            mon.deliveries.pop_front();
        }
        return seen.size() >= want;
    }, timeout_ms);
    if (seen_out) *seen_out = seen.size();
    return seen.size() >= want ? ms_since(t0) : -1;
}

// Runs argv, output to out_path; returns wall ms and the exit status.
double run_timed(const std::vector<std::string>& argv, const std::string& out_path, int& status) {
    int fd = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    uint64_t t0 = now_ns();
    pid_t pid = spawn(argv, fd);
    if (fd >= 0) close(fd);
    if (pid < 0) return -1;
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    return ms_since(t0);
}

size_t count_lines(const std::string& path, const char* needle) {
    FILE* f = std::fopen(path.c_str(), "re");
    if (!f) return 0;
    char buf[65536];
    size_t n = 0;
    while (std::fgets(buf, sizeof buf, f))
        if (std::strstr(buf, needle)) ++n;
    std::fclose(f);
    return n;
}

void mode_fleet(const Options& o) {
    if (o.count <= 0) die("fleet: --count N is required");
    raise_nofile();
    std::string n = std::to_string(o.count);
    std::string base = fresh_dir(o, "fleet-" + n);
    Client mon;
    open_monitor(mon, o, {"ur.startup.#", "ur.execute-reply.#"});
    int log_fd = open((base + "/agents.log").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    std::vector<AgentProc> agents;
    uint64_t t0 = now_ns();
    for (int i = 0; i < o.count; ++i)
        agents.push_back(start_agent(o, base + "/a" + std::to_string(i), {}, log_fd));
    size_t seen = 0;
    double up_ms = collect(mon, "ur.startup.", "", agents.size(), t0, 600000, &seen);
    if (up_ms < 0) {
        for (auto& a : agents) stop_agent(a.pid, 100);
        die("fleet: only " + std::to_string(seen) + " of " + n + " agents announced start-up; see " +
            base + "/agents.log");
    }
    emit_value("fleet_startup_" + n, "Fleet " + n + ": spawn all -> every ur.startup arrived", "ms",
               up_ms, o.command);
    usleep(1000000);  // let the sysinfo heartbeats settle
    double total_kib = 0, pss_kib = 0;
    for (auto& a : agents) {
        total_kib += double(rss_tree_kib(a.pid));
        pss_kib += double(rollup_kib(a.pid, "Pss:"));
    }
    emit_value("fleet_rss_" + n, "Fleet " + n + ": total RSS of the agents", "MiB",
               total_kib / 1024.0, o.command,
               "per agent " + std::to_string(int(total_kib / double(agents.size()))) + " KiB");
    emit_value("fleet_pss_" + n, "Fleet " + n + ": total PSS (shared text counted once)", "MiB",
               pss_kib / 1024.0, o.command);

    std::vector<double> disc, each;
    for (int r = 0; r < 3; ++r) {
        std::string req = random_token();
        uint64_t t1 = now_ns();
        mon.publish("ur.broadcast.sysinfo." + req, "{}");
        double ms = collect(mon, "ur.execute-reply.", "." + req, agents.size(), t1, 60000, &seen);
        if (ms < 0) die("fleet: discover saw " + std::to_string(seen) + " of " + n);
        disc.push_back(ms);
    }
    emit("fleet_discover_" + n, "Fleet " + n + ": broadcast sysinfo -> all replies (ur-bench)",
         "ms", stats(disc), false, o.command);
    std::string body = execute_body("#!/bin/sh\n/bin/hostname\n");
    for (int r = 0; r < 3; ++r) {
        std::string req = random_token();
        uint64_t t1 = now_ns();
        for (auto& a : agents) mon.publish("ur.execute." + a.uuid + "." + req, body);
        double ms = collect(mon, "ur.execute-reply.", "." + req, agents.size(), t1, 120000, &seen);
        if (ms < 0) die("fleet: hostname ran on " + std::to_string(seen) + " of " + n);
        each.push_back(ms);
    }
    emit("fleet_oneach_" + n, "Fleet " + n + ": hostname on every node -> all replies (ur-bench)",
         "ms", stats(each), false, o.command);

    if (!o.urctl.empty()) {
        std::string broker = "127.0.0.1:" + std::to_string(o.port);
        std::string out = base + "/urctl.out";
        std::vector<double> seen_all, wall;
        for (int r = 0; r < 3; ++r) {
            int st = 0;
            // --expect: urctl is done once every node has answered (it
            // would otherwise sit out its --timeout), so its wall time is
            // the time to see them all, its own start and connect included.
            double ms = run_timed({o.urctl, "--broker", broker, "--json", "--timeout", "30",
                                   "--expect", n, "discover"}, out, st);
            size_t nodes = count_lines(out, "\"uuid\"");
            if (st != 0 || nodes < agents.size())
                die("urctl discover --expect " + n + ": status " + std::to_string(st) + ", " +
                    std::to_string(nodes) + " of " + n + " nodes; see " + out);
            seen_all.push_back(ms);
            ms = run_timed({o.urctl, "--broker", broker, "--json", "--find-timeout", "30",
                            "--expect", n, "oneach", "/bin/hostname"}, out, st);
            nodes = count_lines(out, "\"exit_status\":0");
            if (st != 0 || nodes < agents.size())
                die("urctl oneach: status " + std::to_string(st) + ", " + std::to_string(nodes) +
                    " of " + n + " nodes; see " + out);
            wall.push_back(ms);
        }
        emit("fleet_urctl_discover_" + n,
             "Fleet " + n + ": `urctl discover --expect " + n + "` wall time (all listed)", "ms",
             stats(seen_all), false, o.command, "urctl's start and connect included");
        emit("fleet_urctl_oneach_" + n,
             "Fleet " + n + ": `urctl oneach --expect " + n + " /bin/hostname` wall time", "ms",
             stats(wall), false, o.command, "its discover, then hostname on every node");
    }
    for (auto& a : agents) kill(a.pid, SIGTERM);
    for (auto& a : agents) stop_agent(a.pid, 5000);
    close(log_fd);
}

// ------------------------------------------------------------ output drain

// amqp::Connection's output after one basic_publish of --size bytes,
// drained the way the agent's write_socket() does when the socket takes
// `chunk` bytes per write(): pending_output() then consume_output(n).  No socket:
// this isolates the cost of consuming the output buffer.
void mode_drain(const Options& o) {
    uint64_t size = o.size ? o.size : (64u << 20);
    std::string body(size, 'x');
    std::vector<double> per_chunk[3];
    const size_t chunks[3] = {64u << 10, 256u << 10, 4u << 20};
    int runs = o.runs ? o.runs : 3;
    for (int r = 0; r < runs; ++r)
        for (int c = 0; c < 3; ++c) {
            amqp::ConnectionOptions co;
            amqp::Connection k(co);
            k.start(0);
            std::string in;
            amqp::ConnectionTune t;
            t.frame_max = 131072;
            amqp::encode_method_frame(in, 0, amqp::ConnectionStart{});
            amqp::encode_method_frame(in, 0, t);
            amqp::encode_method_frame(in, 0, amqp::ConnectionOpenOk{});
            k.feed(in.data(), in.size(), 0);
            uint16_t ch = k.open_channel();
            in.clear();
            amqp::encode_method_frame(in, ch, amqp::ChannelOpenOk{});
            k.feed(in.data(), in.size(), 0);
            k.consume_output(k.output().size());
            uint64_t t0 = now_ns();
            k.basic_publish(ch, "amq.topic", "ur.execute-reply.x.y", amqp::BasicProperties{}, body);
            size_t written = 0;
            while (k.wants_write()) {
                size_t n = std::min(chunks[c], k.pending_output().size());
                written += n;
                k.consume_output(n);
            }
            per_chunk[c].push_back(ms_since(t0));
        }
    std::string mib = std::to_string(size >> 20) + " MiB";
    const char* names[3] = {"64 KiB", "256 KiB", "4 MiB"};
    for (int c = 0; c < 3; ++c)
        emit("drain_" + std::to_string(chunks[c]),
             "amqp::Connection: publish " + mib + " + drain output in " + names[c] + " writes",
             "ms", stats(per_chunk[c]), false, o.command);
}

Options parse(int argc, char** argv) {
    Options o;
    o.self = argv[0];
    if (argc < 2) die("usage: ur-bench MODE --port P [options] (see tools/ur-bench/main.cpp)");
    o.mode = argv[1];
    o.command = "ur-bench";
    for (int i = 1; i < argc; ++i) o.command += std::string(" ") + argv[i];
    for (int i = 2; i < argc; ++i) {
        std::string a = argv[i];
        if (i + 1 >= argc) die("missing value after " + a);
        std::string v = argv[++i];
        if (a == "--port") o.port = uint16_t(std::atoi(v.c_str()));
        else if (a == "--agent") o.agent = v;
        else if (a == "--compare") o.compare = v;
        else if (a == "--tmp") o.tmp = v;
        else if (a == "--key") o.key = v;
        else if (a == "--urctl") o.urctl = v;
        else if (a == "--runs") o.runs = std::atoi(v.c_str());
        else if (a == "--requests") o.requests = std::atoi(v.c_str());
        else if (a == "--concurrency") o.concurrency = std::atoi(v.c_str());
        else if (a == "--count") o.count = std::atoi(v.c_str());
        else if (a == "--agent-only") o.agent_only = v == "1";
        else if (a == "--agent-arg") o.agent_args.push_back(v);
        else if (a == "--broker-pid") o.broker_pid = pid_t(std::atoi(v.c_str()));
        else if (a == "--agent-setup") o.agent_setup = v;
        else if (a == "--size") o.size = std::strtoull(v.c_str(), nullptr, 10);
        else die("unknown option " + a);
    }
    return o;
}

}  // namespace

int main(int argc, char** argv) {
    signal(SIGPIPE, SIG_IGN);
    Options o = parse(argc, argv);
    if (o.mode == "publish-once") mode_publish_once(o);
    else if (o.mode == "startup") mode_startup(o);
    else if (o.mode == "rtt") mode_rtt(o);
    else if (o.mode == "throughput") mode_throughput(o);
    else if (o.mode == "large") mode_large(o);
    else if (o.mode == "fleet") mode_fleet(o);
    else if (o.mode == "drain") mode_drain(o);
    else die("unknown mode " + o.mode);
    return 0;
}
