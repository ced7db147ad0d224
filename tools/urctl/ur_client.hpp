// The requester's side of the Ur protocol (PROTOCOL.md), as Triton's
// urclient speaks it, without I/O: identifiers, routing keys, request
// bodies, and the replies parsed into plain structs.  Reply bodies come
// from the network: every parser here accepts any bytes and says what is
// wrong instead of failing hard.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "json/json.hpp"

namespace urctl {

// A random version-4 UUID in lower case, read from /dev/urandom.  False
// with `error` set when no randomness could be read.
bool random_uuid(std::string& out, std::string& error);

// 8-4-4-4-12 hexadecimal digits (either case).
bool looks_like_uuid(std::string_view s);
std::string to_lower(std::string_view s);

// Our queue, "ur.urctl.<client_id>", and its bindings on amq.topic:
// ur.execute-reply.*.*, ur.startup.#, ur.sysinfo.#, ur.ack<client_id>.*
std::string client_queue_name(std::string_view client_id);
std::vector<std::string> client_bindings(std::string_view client_id);

std::string execute_key(std::string_view node_uuid, std::string_view req_id);
std::string ping_key(std::string_view node_uuid);
std::string broadcast_sysinfo_key(std::string_view req_id);

// What a routing key arriving on our queue is.
struct IncomingKey {
    enum class Kind { ExecuteReply, Ack, Startup, Sysinfo, Other } kind = Kind::Other;
    std::string node;    // the node's UUID as the key spells it
    std::string req_id;  // ExecuteReply: <req>
};
IncomingKey classify_key(std::string_view routing_key, std::string_view client_id);

struct ExecuteRequest {
    bool is_file = false;
    std::string script;  // the script text, or the path when is_file
    std::vector<std::string> args;
    std::vector<std::pair<std::string, std::string>> env;  // {} when empty
    bool has_kill_after = false;
    uint64_t kill_after_s = 0;
    std::string origin_user, origin_hostname;
};

// A script not starting with "#!" gets "#!/bin/sh\n" in front: the agent
// executes the text directly and the kernel needs an interpreter line.
std::string with_interpreter(std::string script);

// {"type":"script","script":..,"args":[..],"env":{..},"origin":{..}[,"timeout":N]}
// or {"type":"file","file":..,...}.
std::string execute_body(const ExecuteRequest& r);
// {"client_id":..,"id":..}
std::string ping_body(std::string_view client_id, std::string_view req_id);

struct ExecuteReply {
    bool ok = false;       // the body is an object with an integer exit_status
    std::string error;     // why not, when !ok
    int64_t exit_status = 0;
    std::string out, err;  // "stdout", "stderr" ("" when absent or not strings)
    bool timed_out = false, stdout_truncated = false, stderr_truncated = false;
    std::string signal;    // "SIGKILL" when the agent says so
    json::Value body;      // the whole parsed body (an object when ok)
};
ExecuteReply parse_execute_reply(std::string_view body);

// A node as a discover reply (its sysinfo) describes it.
struct NodeInfo {
    std::string uuid;         // as the node's sysinfo gives it
    std::string hostname;     // "" when absent
    std::string system_type;  // "System Type"
    std::string datacenter;   // "Datacenter Name"
    std::string setup;        // "true" / "false" (string or bool in sysinfo), "" if absent
    bool headnode = false;    // "Boot Parameters"."headnode" is "true" or true
    json::Value sysinfo;
};
// Parses a sysinfo body; the UUID comes from the body and must be present
// (the routing key's uuid is used when the body has none).  False with
// `error` set when the body is not a JSON object or names no UUID.
bool parse_node_info(std::string_view key_uuid, std::string_view body, NodeInfo& out,
                     std::string& error);

struct PingReply {
    std::string req_id, timestamp;
};
bool parse_ping_reply(std::string_view body, PingReply& out, std::string& error);

// Whether node is the one name (a UUID, any case, or a hostname) means.
bool node_matches(const NodeInfo& node, const std::string& name);
// Resolves each name (a UUID, any case, or a hostname) against the nodes:
// appends the matching node's index to `found` or the name to `missing`.
// A name matching several hostnames picks every one of them.
void match_nodes(const std::vector<NodeInfo>& nodes, const std::vector<std::string>& names,
                 std::vector<size_t>& found, std::vector<std::string>& missing);

}  // namespace urctl
