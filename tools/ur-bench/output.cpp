// ur-bench large and drain: large replies through the broker, and
// amqp::Connection's output drained without one.

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <string>
#include <vector>

#include "tools/ur-bench/client.hpp"
#include "tools/ur-bench/modes.hpp"
#include "tools/ur-bench/util.hpp"

namespace bench {

// ------------------------------------------------------------ large output

static double run_drained(const std::string& script) {
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

}  // namespace bench
