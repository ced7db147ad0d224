#include "src/sysinfo.hpp"

#include <sys/stat.h>

#include <cerrno>

#include "src/file_io.hpp"

namespace ur {

// A routing-key word: the topic exchange splits on '.', and '*'/'#' are
// wildcards in bindings.
static bool routing_word(const std::string& s) {
    if (s.empty() || s.size() > 128) return false;
    for (unsigned char c : s)
        if (c == '.' || c == '*' || c == '#' || c <= ' ' || c == 0x7f) return false;
    return true;
}

std::string admin_tag(const json::Value& sysinfo) {
    if (const json::Value* t = sysinfo.find("Admin NIC Tag"); t && t->is_string() &&
                                                             !t->as_string().empty())
        return t->as_string();
    return "admin";
}

const json::Value* admin_nic(const json::Value& sysinfo) {
    const std::string tag = admin_tag(sysinfo);
    const json::Value* nics = sysinfo.find("Network Interfaces");
    if (!nics || !nics->is_object()) return nullptr;
    for (const auto& [name, nic] : nics->as_object()) {
        const json::Value* names = nic.find("NIC Names");
        if (!names || !names->is_array()) continue;
        for (const auto& n : names->as_array())
            if (n.is_string() && n.as_string() == tag) return &nic;
    }
    return nullptr;
}

std::string admin_mac(const json::Value& sysinfo) {
    const json::Value* nic = admin_nic(sysinfo);
    const json::Value* mac = nic ? nic->find("MAC Address") : nullptr;
    return mac && mac->is_string() && routing_word(mac->as_string()) ? mac->as_string() : "";
}

bool parse_sysinfo(std::string_view text, json::Value& sysinfo, Identity& id,
                   std::string& error) {
    // Read as the original (Node) read it, so that one odd byte in a
    // hardware string cannot keep the node out: bytes that are not UTF-8
    // become U+FFFD, as do \u escapes of lone surrogates, and a number too
    // large for a double is infinity (written back as null).
    std::string repaired;
    if (!json::is_valid_utf8(text)) {
        repaired = json::string_from_bytes(text);
        text = repaired;
    }
    json::Value v;
    json::ParseError perr;
    if (!json::parse(text, v, perr, json::javascript_options())) {
        error = "sysinfo is not valid JSON: " + perr.to_string();
        return false;
    }
    if (!v.is_object()) {
        error = "sysinfo is not a JSON object";
        return false;
    }
    const json::Value* uuid = v.find("UUID");
    if (!uuid || !uuid->is_string()) {
        error = "sysinfo has no \"UUID\" string; this node cannot be identified";
        return false;
    }
    if (uuid->as_string().empty()) {
        error = "sysinfo \"UUID\" is empty; this node cannot be identified";
        return false;
    }
    // As sysinfo gives it, case and all: CNAPI publishes to the UUID of the
    // sysinfo body and checks that a ur.sysinfo key holds that very UUID.
    const std::string& u = uuid->as_string();
    if (!routing_word(u)) {
        error = "sysinfo \"UUID\" cannot be used in a routing key (empty, too long, or holds "
                "'.', '*', '#' or white space)";
        return false;
    }
    id.uuid = u;
    id.mac = admin_mac(v);
    id.hostname.clear();
    if (const json::Value* h = v.find("Hostname"); h && h->is_string()) id.hostname = h->as_string();
    sysinfo = std::move(v);
    return true;
}

bool setup_complete(const std::string& path, std::string* problem) {
    auto fail = [problem](std::string why) {
        if (problem) *problem = std::move(why);
        return false;
    };
    // Missing is how a node that was never set up looks: no problem.
    struct stat sb;
    if (::stat(path.c_str(), &sb) != 0 && errno == ENOENT) return false;
    std::string text, error;
    if (!read_file(path, 1u << 20, text, error)) return fail(error);
    json::Value v;
    json::ParseError perr;
    if (!json::parse(text, v, perr)) return fail("not valid JSON: " + perr.to_string());
    if (!v.is_object()) return fail("not a JSON object");
    const json::Value* c = v.find("complete");
    if (c && !c->is_bool()) return fail("\"complete\" is not true or false");
    return c && c->as_bool();
}

}  // namespace ur
