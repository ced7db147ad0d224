// json-bench: throughput of the JSON paths the agent runs on every message.
//
//   json-bench [RUNS]      (default 15 runs per case; the median is shown)
//
// Cases, each over ~5 MiB of generated, deterministic input:
//   parse request   parse() of an execute request whose script is a long
//                   string with the usual escapes (\n, \", \t)
//   reply           string_from_bytes() + write() of a reply carrying 5 MiB
//                   of script output (ASCII lines, some multi-byte UTF-8)
//   capture         the same output escaped as the agent does while the
//                   script runs (one pass), and as two passes
// plus the pieces of each, to show where the time goes.  MB/s counts input
// bytes, 1 MB = 10^6 bytes.
#include "json/json.hpp"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

namespace {

constexpr size_t kSize = 5u << 20;

// Deterministic pseudo-random numbers (xorshift64*), so runs compare.
struct Rng {
    uint64_t s = 0x9E3779B97F4A7C15ull;
    uint64_t next()
    {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        return s * 0x2545F4914F6CDD1Dull;
    }
    size_t below(size_t n) { return static_cast<size_t>(next() % n); }
};

// Lines of shell-ish text: words, a quoted string now and then, tabs.
std::string make_script(Rng& rng, size_t size)
{
    static const char* const kWords[] = {
        "echo", "if", "then", "fi", "for", "do", "done", "$HOME", "/usr/bin/env",
        "zfs", "list", "-H", "-o", "name,used", "grep", "awk", "'{print $1}'",
        "sysinfo", "|", "&&", "||", "2>&1", "\"$1\"", "vmadm", "exit"};
    std::string s;
    s.reserve(size + 128);
    while (s.size() < size) {
        size_t indent = rng.below(3);
        s.append(indent, '\t');
        size_t words = 3 + rng.below(10);
        for (size_t w = 0; w < words; ++w) {
            if (w) s.push_back(' ');
            s.append(kWords[rng.below(sizeof kWords / sizeof *kWords)]);
        }
        s.push_back('\n');
    }
    return s;
}

// Command output: mostly ASCII lines, about one line in eight with
// multi-byte characters (2, 3 and 4 byte forms).
std::string make_output(Rng& rng, size_t size)
{
    static const char* const kWide[] = {"\xC3\xA9", "\xE2\x82\xAC",
                                        "\xF0\x9F\x98\x80", "\xE6\x97\xA5"};
    std::string s;
    s.reserve(size + 128);
    while (s.size() < size) {
        size_t len = 20 + rng.below(100);
        bool wide = rng.below(8) == 0;
        for (size_t i = 0; i < len; ++i) {
            if (wide && rng.below(10) == 0)
                s.append(kWide[rng.below(4)]);
            else
                s.push_back(static_cast<char>('a' + rng.below(26)));
        }
        s.push_back('\n');
    }
    return s;
}

double median_mbps(size_t bytes, int runs, const std::function<void()>& fn)
{
    std::vector<double> rates;
    fn();  // warm up: page in, size the allocator
    for (int r = 0; r < runs; ++r) {
        auto t0 = std::chrono::steady_clock::now();
        fn();
        auto t1 = std::chrono::steady_clock::now();
        double secs = std::chrono::duration<double>(t1 - t0).count();
        rates.push_back(static_cast<double>(bytes) / secs / 1e6);
    }
    std::sort(rates.begin(), rates.end());
    return rates[rates.size() / 2];
}

void report(const char* name, size_t bytes, double mbps)
{
    std::printf("%-44s %8.2f MiB  %8.0f MB/s\n", name,
                static_cast<double>(bytes) / (1 << 20), mbps);
}

}  // namespace

int main(int argc, char** argv)
{
    int runs = argc > 1 ? std::atoi(argv[1]) : 15;
    if (runs < 1 || runs > 1000) {
        std::fprintf(stderr, "usage: json-bench [RUNS]   (1..1000)\n");
        return 2;
    }
    Rng rng;
    std::string script = make_script(rng, kSize);
    json::Value request = json::Value::object();
    request.set("type", "script");
    request.set("script", script);
    request.set("args", json::Value(json::Value::Array{"-x", "--verbose"}));
    json::Value env = json::Value::object();
    env.set("PATH", "/usr/bin:/usr/sbin:/smartdc/bin");
    request.set("env", std::move(env));
    request.set("timeout", 600);
    const std::string doc = json::write(request);

    std::string plain_script(kSize, 'x');  // no escapes at all
    const std::string plain_doc = json::write(json::Value(plain_script));

    const std::string output = make_output(rng, kSize);

    std::printf("json-bench: %d runs per case, median\n", runs);
    json::Value parsed;
    json::ParseError err;
    bool ok = true;
    report("parse request (script with escapes)", doc.size(),
           median_mbps(doc.size(), runs, [&] {
               ok &= json::parse(doc, parsed, err);
           }));
    report("  parse one string, no escapes", plain_doc.size(),
           median_mbps(plain_doc.size(), runs, [&] {
               ok &= json::parse(plain_doc, parsed, err);
           }));
    if (!ok) {
        std::fprintf(stderr, "json-bench: parse failed: %s\n",
                     err.to_string().c_str());
        return 1;
    }

    std::string reply;
    report("reply: string_from_bytes + write", output.size(),
           median_mbps(output.size(), runs, [&] {
               json::Value r = json::Value::object();
               r.set("exit_status", 0);
               r.set("stdout", json::string_from_bytes(output));
               r.set("stderr", "");
               reply = json::write(r);
           }));
    std::string clean;
    report("  string_from_bytes only", output.size(),
           median_mbps(output.size(), runs,
                       [&] { clean = json::string_from_bytes(output); }));
    report("  append_quoted only", output.size(),
           median_mbps(output.size(), runs, [&] {
               reply.clear();
               json::append_quoted(reply, clean);
           }));
    // What the agent does with each read of a script's output
    // (OutputCapture): escape the valid UTF-8 prefix, in one pass, against
    // the two passes it took before.
    report("capture: append_escaped_utf8_prefix", output.size(),
           median_mbps(output.size(), runs, [&] {
               reply.clear();
               ok &= json::append_escaped_utf8_prefix(reply, output) == output.size();
           }));
    report("  as two passes: valid_utf8_prefix + escape", output.size(),
           median_mbps(output.size(), runs, [&] {
               reply.clear();
               size_t n = json::valid_utf8_prefix(output);
               json::append_escaped(reply, std::string_view(output).substr(0, n));
               ok &= n == output.size();
           }));
    if (!ok) {
        std::fprintf(stderr, "json-bench: the generated output is not valid UTF-8\n");
        return 1;
    }
    report("  append_quoted, script (more escapes)", script.size(),
           median_mbps(script.size(), runs, [&] {
               reply.clear();
               json::append_quoted(reply, script);
           }));
    return 0;
}
