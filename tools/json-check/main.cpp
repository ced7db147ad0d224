// json-check: validates JSON files with the agent's own strict parser.
//
//   json-check [--print] FILE...     ('-' reads standard input)
//
// Exit status: 0 when every file parses, 1 when at least one is rejected
// ("FILE: line L, column C: reason" on stderr), 2 on a usage or I/O error
// (which wins over 1).  With --print each accepted document is written
// back compactly to stdout, one per line.
#include "json/json.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <string>
#include <unistd.h>

namespace {

const char kUsage[] =
    "usage: json-check [--print] FILE...\n"
    "Checks that each FILE ('-' for standard input) is strict RFC 8259 JSON.\n"
    "  --print   write each accepted document back compactly, one per line\n"
    "Exit status: 0 all valid, 1 some rejected, 2 usage or I/O error.\n";

enum class ReadStatus { Ok, TooBig, Error };

// Reads all of fd into out, but stops once it holds more than limit bytes
// (the parser would reject it anyway; this bounds memory).  On Error,
// errno says why.
ReadStatus read_all(int fd, size_t limit, std::string& out)
{
    out.clear();
    char buf[65536];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            return ReadStatus::Error;
        }
        if (n == 0) return ReadStatus::Ok;
        out.append(buf, static_cast<size_t>(n));
        if (out.size() > limit) return ReadStatus::TooBig;
    }
}

bool write_all(int fd, const char* p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        p += w;
        n -= static_cast<size_t>(w);
    }
    return true;
}

// Returns 0 (valid), 1 (rejected) or 2 (I/O error) for one file.
int check_file(const char* name, bool print, const json::ParseOptions& opt)
{
    bool is_stdin = std::strcmp(name, "-") == 0;
    int fd = is_stdin ? STDIN_FILENO : open(name, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        std::fprintf(stderr, "json-check: cannot open %s: %s\n", name,
                     std::strerror(errno));
        return 2;
    }
    std::string text;
    ReadStatus rs = read_all(fd, opt.max_size, text);
    int saved_errno = errno;
    if (!is_stdin) close(fd);
    if (rs == ReadStatus::Error) {
        std::fprintf(stderr, "json-check: cannot read %s: %s\n", name,
                     std::strerror(saved_errno));
        return 2;
    }
    if (rs == ReadStatus::TooBig) {
        std::fprintf(stderr, "%s: line 1, column 1: input larger than %zu bytes\n",
                     name, opt.max_size);
        return 1;
    }
    json::Value value;
    json::ParseError err;
    if (!json::parse(text, value, err, opt)) {
        std::fprintf(stderr, "%s: %s\n", name, err.to_string().c_str());
        return 1;
    }
    if (print) {
        std::string out = json::write(value);
        out.push_back('\n');
        if (!write_all(STDOUT_FILENO, out.data(), out.size())) {
            std::fprintf(stderr, "json-check: cannot write to stdout: %s\n",
                         std::strerror(errno));
            return 2;
        }
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv)
{
    bool print = false;
    int i = 1;
    for (; i < argc; ++i) {
        const char* a = argv[i];
        if (std::strcmp(a, "--") == 0) {
            ++i;
            break;
        }
        if (std::strcmp(a, "--help") == 0 || std::strcmp(a, "-h") == 0) {
            std::fputs(kUsage, stdout);
            return 0;
        }
        if (std::strcmp(a, "--print") == 0) {
            print = true;
            continue;
        }
        if (a[0] == '-' && a[1] != '\0') {
            std::fprintf(stderr, "json-check: unknown option %s\n%s", a, kUsage);
            return 2;
        }
        break;
    }
    if (i == argc) {
        std::fputs(kUsage, stderr);
        return 2;
    }
    json::ParseOptions opt;
    int status = 0;
    for (; i < argc; ++i) {
        int s = check_file(argv[i], print, opt);
        if (s > status) status = s;
    }
    return status;
}
