// urctl's output, human or JSON, as strings: pure functions of what came
// back, so the layout is unit-tested without a broker.  JSON output is one
// compact object per line; human output is aligned columns or blocks.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tools/urctl/ur_client.hpp"

namespace urctl {

// "2026-11-24T10:00:00.123Z"
std::string iso8601_utc(uint64_t wall_ms);

// Text from the network made fit for one cell or line of a terminal: every
// control character (C0, DEL, C1: escape sequences, line breaks) a space;
// "-" when empty.  `s` is valid UTF-8.
std::string cell(std::string_view s);

// Sorts by hostname, then UUID (the order every listing uses).
void sort_nodes(std::vector<NodeInfo>& nodes);

std::string format_ping(const std::string& node, uint64_t rtt_ms, const PingReply& reply,
                        bool json);

// Human: a table with a header, or "no nodes answered" on an empty list.
// JSON: one object per node: {"uuid","hostname","system_type","datacenter",
// "setup","headnode","sysinfo"}.
std::string format_discover(const std::vector<NodeInfo>& nodes, bool json);

// The JSON line for one node's execution: {"uuid","hostname", then the
// reply's own members}; a node without a usable reply gets
// {"uuid","hostname","error":..}.  "hostname" is left out when unknown
// (exec by UUID).
std::string format_exec_json(const std::string& uuid, const std::string& hostname,
                             const ExecuteReply& reply);
std::string format_exec_error_json(const std::string& uuid, const std::string& hostname,
                                   const std::string& error);

// What a human should know beyond stdout/stderr ("urctl: ... timed out on
// the node"); "" when nothing.
std::string exec_notes(const ExecuteReply& reply);

// One node's outcome in `oneach`.
struct NodeResult {
    NodeInfo node;
    bool replied = false;
    ExecuteReply reply;  // when replied
};

// Human: a table when every node's output fits on one line, else one
// block per node; then a summary line.  JSON: one line per node, then
// {"summary":{...}}.  Nodes are listed in hostname order.
std::string format_oneach(std::vector<NodeResult> results, bool json);

// The exit status of `oneach`: 4 when some node did not reply, else 1 when
// some node exited non-zero or replied garbage, else 0.
int oneach_exit_status(const std::vector<NodeResult>& results);

// One message seen by `watch`.  The body is shown as JSON when it parses,
// else as text (invalid UTF-8 replaced).
std::string format_message(uint64_t wall_ms, std::string_view exchange,
                           std::string_view routing_key, std::string_view content_type,
                           std::string_view body, bool json);

// {"error":kind,"message":message}
std::string format_error_json(std::string_view kind, std::string_view message);

}  // namespace urctl
