// The node's sysinfo object and what the agent derives from it: its
// identity (UUID, admin MAC) and the setup state.
#pragma once
#include <string>

#include "json/json.hpp"

namespace ur {

struct Identity {
    std::string uuid;  // sysinfo's "UUID", exactly as given
    std::string mac;   // admin NIC's "MAC Address" as given; empty when no NIC carries the tag
    std::string hostname;
};

// Parses sysinfo JSON text.  Fails (with a one-line reason) when it is not
// a JSON object or has no usable "UUID" (a string that can be one word of
// a routing key: no '.', '*', '#', whitespace, at most 128 bytes).
bool parse_sysinfo(std::string_view text, json::Value& sysinfo, Identity& id,
                   std::string& error);

// The admin NIC per PROTOCOL.md: the first entry of "Network Interfaces"
// whose "NIC Names" holds the tag ("Admin NIC Tag", else "admin"); null
// when none does.
const json::Value* admin_nic(const json::Value& sysinfo);
// Its "MAC Address"; "" when there is no admin NIC or its MAC is not a
// string that can be one word of a routing key.
std::string admin_mac(const json::Value& sysinfo);
// The tag that marks the admin NIC: "Admin NIC Tag" when a non-empty
// string, else "admin".
std::string admin_tag(const json::Value& sysinfo);

// True when `path` holds a JSON object with "complete": true.  Missing,
// unreadable or malformed files mean "not complete"; for the last two (the
// file is there, but says nothing usable) `problem`, when given, says why.
bool setup_complete(const std::string& path, std::string* problem = nullptr);

}  // namespace ur
