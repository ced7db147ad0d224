// ur::parse_request on an arbitrary routing key and body.
//
// Input: routing key, a NUL byte, body.  Without a NUL the whole input is
// the body of an execute request addressed to this node, so plain JSON
// seeds exercise the execute parser.  The routing key is cut to 255 bytes,
// as a shortstr on the wire is.
//
// Properties: never crashes; requests that are answered have a reply key
// that fits a shortstr and an Ignored one has a reason; an Execute with an
// error yields an invalid_request_body that is a JSON object with
// exit_status 2; a valid Execute carries NUL-free args, "K=V" env entries
// and, for a file, a non-empty path (an empty script is valid: it runs
// /bin/sh on nothing, exit 0, as the original did).
#include <string>

#include "fuzz/fuzz.hpp"
#include "json/json.hpp"
#include "src/ur_protocol.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static const ur::Identity self = [] {
        ur::Identity id;
        id.uuid = "00000000-abcd-0000-fedc-ba9876543210";
        id.mac = "01:23:45:67:89:ab";
        id.hostname = "cn1";
        return id;
    }();
    std::string_view in = fuzz::as_view(data, size);
    std::string routing_key;
    std::string_view body;
    size_t nul = in.find('\0');
    if (nul == std::string_view::npos) {
        routing_key = "ur.execute." + self.uuid + ".fuzz";
        body = in;
    } else {
        routing_key = std::string(in.substr(0, std::min<size_t>(nul, 255)));
        body = in.substr(nul + 1);
    }

    ur::Request r = ur::parse_request(self, routing_key, body);
    if (r.kind == ur::RequestKind::Ignored) {
        FUZZ_CHECK(!r.error.empty());
        FUZZ_CHECK(r.reply_key.empty());
        return 0;
    }
    FUZZ_CHECK(!r.reply_key.empty());
    FUZZ_CHECK(r.reply_key.size() <= 255);

    if (r.kind == ur::RequestKind::Execute) {
        if (!r.error.empty()) {
            std::string reply = ur::invalid_request_body(r.error);
            json::Value v;
            json::ParseError err;
            FUZZ_CHECK(json::parse(reply, v, err));
            FUZZ_CHECK(v.is_object());
            const json::Value* status = v.find("exit_status");
            FUZZ_CHECK(status && status->is_int() && status->as_int() == 2);
            const json::Value* stderr_text = v.find("stderr");
            FUZZ_CHECK(stderr_text && stderr_text->is_string());
        } else {
            FUZZ_CHECK(!r.is_file || !r.script.empty());
            for (const std::string& a : r.args)
                FUZZ_CHECK(a.find('\0') == std::string::npos);
            if (r.env) {
                for (const std::string& e : *r.env) {
                    FUZZ_CHECK(e.find('\0') == std::string::npos);
                    FUZZ_CHECK(e.find('=') != std::string::npos && e[0] != '=');
                }
            }
            FUZZ_CHECK(r.timeout_s >= 0);
        }
    }
    return 0;
}
