// Regression tests for what the libFuzzer targets in fuzz/ found, one test
// case per finding, named after it and reproducing the input.
#include <doctest/doctest.h>

#include <string>

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
