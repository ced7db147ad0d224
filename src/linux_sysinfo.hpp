// A built-in sysinfo for Linux compute nodes, which have no
// /usr/bin/sysinfo: the fields headnode tools read, from /sys, /proc and
// getifaddrs().  Elsewhere it reports that it is not available.
#pragma once
#include <string>

#include "json/json.hpp"

namespace ur {

struct BuiltinSysinfoOptions {
    std::string datacenter;      // "Datacenter Name"
    std::string admin_nic;       // interface tagged admin; "" = the default route's
    std::string admin_tag;       // "Admin NIC Tag" when non-empty (else the tag is "admin")
    std::string setup_file;      // "Setup": "true" when it holds "complete": true
    std::string root = "";       // prefix for /sys, /proc, /etc (tests)
};

// Builds the object.  False with a reason when the platform is not Linux
// or no UUID can be found.
bool builtin_sysinfo(const BuiltinSysinfoOptions& opt, json::Value& out, std::string& error);

}  // namespace ur
