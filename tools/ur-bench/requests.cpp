// ur-bench rtt and throughput: trivial executes one at a time and all at
// once, against two broker hops + spawn-and-wait.

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "tools/ur-bench/client.hpp"
#include "tools/ur-bench/modes.hpp"
#include "tools/ur-bench/util.hpp"

namespace bench {

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
static double bare_throughput(const std::string& script, int total, int concurrency, bool use_fork) {
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

}  // namespace bench
