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

#include <signal.h>

#include <cstdlib>
#include <string>

#include "tools/ur-bench/modes.hpp"

using namespace bench;

namespace {

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
