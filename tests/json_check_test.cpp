// Tests for tools/json-check: runs the built binary ($BUILD/json-check,
// BUILD defaulting to "build", relative to the repo root where tests/run
// starts the unit tests).
#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

namespace {

struct Run {
    int status = -1;  // exit status, or -1 if it did not exit normally
    std::string out, err;
};

std::string slurp(const std::string& path)
{
    std::ifstream f(path, std::ios::binary);
    std::ostringstream s;
    s << f.rdbuf();
    return s.str();
}

class Sandbox {
public:
    Sandbox()
    {
        const char* build = std::getenv("BUILD");
        tool_ = std::string(build && *build ? build : "build") + "/json-check";
        char tmpl[] = "/tmp/json-check-test.XXXXXX";
        if (mkdtemp(tmpl)) dir_ = tmpl;
    }
    ~Sandbox()
    {
        if (!dir_.empty()) {
            std::string cmd = "rm -rf '" + dir_ + "'";
            if (std::system(cmd.c_str()) != 0) std::fprintf(stderr, "cannot remove %s\n", dir_.c_str());
        }
    }
    bool ready() const { return !dir_.empty() && access(tool_.c_str(), X_OK) == 0; }
    const std::string& tool() const { return tool_; }

    std::string file(const std::string& name, const std::string& content)
    {
        std::string path = dir_ + "/" + name;
        std::ofstream(path, std::ios::binary) << content;
        return path;
    }

    // Runs json-check with args (already shell-quoted) and stdin from
    // stdin_path (or /dev/null).
    Run run(const std::string& args, const std::string& stdin_path = "/dev/null")
    {
        std::string out = dir_ + "/stdout", err = dir_ + "/stderr";
        std::string cmd = "'" + tool_ + "' " + args + " <'" + stdin_path + "' >'" + out +
                          "' 2>'" + err + "'";
        Run r;
        int st = std::system(cmd.c_str());
        if (st != -1 && WIFEXITED(st)) r.status = WEXITSTATUS(st);
        r.out = slurp(out);
        r.err = slurp(err);
        return r;
    }

    const std::string& dir() const { return dir_; }

private:
    std::string tool_, dir_;
};

}  // namespace

TEST_CASE("json-check exit codes and messages")
{
    Sandbox sb;
    if (!sb.ready()) {
        MESSAGE("skipping: " << sb.tool() << " not built (run `make` first)");
        return;
    }
    std::string good = sb.file("good.json", " {\"b\": [1, 2.50, \"\\u00e9\"], \"a\": null}\n");
    std::string good2 = sb.file("good2.json", "[true,false]");
    std::string bad = sb.file("bad.json", "{\n  \"a\": 1,\n  \"b\": 2\n  \"c\": 3\n}");
    std::string empty = sb.file("empty.json", "");

    Run r = sb.run("'" + good + "'");
    CHECK(r.status == 0);
    CHECK(r.out.empty());
    CHECK(r.err.empty());

    r = sb.run("--print '" + good + "' '" + good2 + "'");
    CHECK(r.status == 0);
    CHECK(r.out == "{\"b\":[1,2.5,\"\\u00e9\"],\"a\":null}\n[true,false]\n");

    r = sb.run("'" + good + "' '" + bad + "'");
    CHECK(r.status == 1);
    CHECK(r.err == bad + ": line 4, column 3: expected ',' or '}' after object member\n");

    r = sb.run("'" + empty + "'");
    CHECK(r.status == 1);
    CHECK(r.err == empty + ": line 1, column 1: empty input\n");

    r = sb.run("--print -", good2);
    CHECK(r.status == 0);
    CHECK(r.out == "[true,false]\n");
    r = sb.run("-", bad);
    CHECK(r.status == 1);
    CHECK(r.err.rfind("-: line 4, column 3:", 0) == 0);
}

TEST_CASE("json-check usage and I/O errors exit 2")
{
    Sandbox sb;
    if (!sb.ready()) {
        MESSAGE("skipping: " << sb.tool() << " not built (run `make` first)");
        return;
    }
    Run r = sb.run("--help");
    CHECK(r.status == 0);
    CHECK(r.out.find("usage: json-check") != std::string::npos);
    CHECK(sb.run("").status == 2);
    CHECK(sb.run("--bogus x").status == 2);
    r = sb.run("'" + sb.dir() + "/missing.json'");
    CHECK(r.status == 2);
    CHECK(r.err.find("missing.json") != std::string::npos);
    CHECK(sb.run("'" + sb.dir() + "'").status == 2);  // a directory
    // An I/O error outranks a rejected file.
    std::string bad = sb.file("bad.json", "[");
    CHECK(sb.run("'" + bad + "' '" + sb.dir() + "/missing.json'").status == 2);
}

TEST_CASE("json-check survives hostile files")
{
    Sandbox sb;
    if (!sb.ready()) {
        MESSAGE("skipping: " << sb.tool() << " not built (run `make` first)");
        return;
    }
    std::string deep = sb.file("deep.json", std::string(10u << 20, '['));
    Run r = sb.run("'" + deep + "'");
    CHECK(r.status == 1);
    CHECK(r.err == deep + ": line 1, column 257: nesting deeper than 256 levels\n");

    std::string binary;
    for (int i = 0; i < 4096; ++i) binary.push_back(static_cast<char>((i * 7919) & 0xFF));
    r = sb.run("'" + sb.file("binary.json", "\"" + binary) + "'");
    CHECK(r.status == 1);
    r = sb.run("'" + sb.file("nul.json", std::string("[1,\0]", 5)) + "'");
    CHECK(r.status == 1);
    CHECK(r.err.find("byte 0x00") != std::string::npos);
}
