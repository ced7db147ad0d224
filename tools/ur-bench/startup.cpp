// ur-bench startup and publish-once: start-up against the bare connect +
// publish floor, and idle RSS.

#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <vector>

#include "tools/ur-bench/client.hpp"
#include "tools/ur-bench/modes.hpp"
#include "tools/ur-bench/util.hpp"

namespace bench {

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

}  // namespace bench
