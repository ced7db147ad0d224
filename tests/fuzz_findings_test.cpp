// Regression tests for what the libFuzzer targets in fuzz/ found, one test
// case per finding, named after it and reproducing the input.
#include <doctest/doctest.h>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "amqp/frame.hpp"
#include "src/ur_protocol.hpp"

namespace {

ur::Identity fuzz_node() {
    ur::Identity id;
    id.uuid = "00000000-abcd-0000-fedc-ba9876543210";
    id.mac = "01:23:45:67:89:ab";
    return id;
}

}  // namespace

// fuzz/ur_request: a 255-byte execute key ur.execute.<uuid>.<207-byte id>
// gave a 261-byte reply key, which no shortstr can carry.
TEST_CASE("fuzz finding: reply routing key over 255 bytes") {
    ur::Identity self = fuzz_node();
    std::string prefix = "ur.execute." + self.uuid + ".";
    std::string body = R"({"type":"script","script":"x"})";

    std::string longest = prefix + std::string(255 - prefix.size(), 'r');
    REQUIRE(longest.size() == 255);
    ur::Request r = ur::parse_request(self, longest, body);
    CHECK(r.kind == ur::RequestKind::Ignored);
    CHECK(r.reply_key.empty());
    CHECK(r.error.find("over 255") != std::string::npos);

    // The longest request id whose reply key still fits is answered.
    std::string reply_prefix = "ur.execute-reply." + self.uuid + ".";
    std::string fits = prefix + std::string(255 - reply_prefix.size(), 'r');
    ur::Request ok = ur::parse_request(self, fits, body);
    CHECK(ok.kind == ur::RequestKind::Execute);
    CHECK(ok.error.empty());
    CHECK(ok.reply_key.size() == 255);

    // Broadcasts reply on the same kind of key.
    std::string bkey = "ur.broadcast.sysinfo." + std::string(234, 'b');
    ur::Request b = ur::parse_request(self, bkey, "{}");
    CHECK(b.kind == ur::RequestKind::Ignored);
    CHECK(b.reply_key.empty());
}

// fuzz/frame_decoder: with no frame_max limit (0, clamped to 2^31) the
// parser reserved the whole declared frame as soon as a split header was
// complete, so 7 bytes made it allocate 2 GiB.  A child with its address
// space capped 256 MiB above what it uses must take such a header.
TEST_CASE("fuzz finding: 2 GiB reserve from a frame header without frame_max") {
#if defined(__SANITIZE_ADDRESS__) || !defined(__linux__)
    MESSAGE("skipped: needs Linux without ASan (ASan reserves address space, "
            "so RLIMIT_AS cannot bound the heap)");
#else
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        long pages = 0;
        FILE* f = std::fopen("/proc/self/statm", "re");
        if (!f || std::fscanf(f, "%ld", &pages) != 1) _exit(3);
        std::fclose(f);
        struct rlimit rl;
        rl.rlim_cur = rl.rlim_max = rlim_t(pages) * rlim_t(sysconf(_SC_PAGESIZE)) + (256u << 20);
        if (setrlimit(RLIMIT_AS, &rl) != 0) _exit(3);
        try {
            amqp::FrameParser parser(0);
            const char header[] = {3, 0, 1, 0x7f, char(0xff), char(0xff), char(0xf0), 'x'};
            const char* p = header;
            size_t n = sizeof header;
            amqp::FrameView frame;
            // Byte by byte, as a slow peer would send it: the slow path.
            amqp::FrameStatus s = amqp::FrameStatus::NeedMore;
            while (n > 0 && s == amqp::FrameStatus::NeedMore) {
                size_t one = 1;
                s = parser.next(p, one, frame);
                n--;
            }
            _exit(s == amqp::FrameStatus::NeedMore && parser.buffered() == sizeof header ? 0 : 2);
        } catch (...) {
            _exit(1);  // std::bad_alloc: the reserve did not fit
        }
    }
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
#endif
}
