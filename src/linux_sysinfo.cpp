#include "src/linux_sysinfo.hpp"

#include <sys/utsname.h>
#include <unistd.h>

#if defined(__linux__)
#include <arpa/inet.h>
#include <dirent.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#endif

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <map>
#include <vector>

#include "src/file_io.hpp"
#include "src/sysinfo.hpp"

namespace ur {

#if defined(__linux__)

namespace {

std::string slurp(const std::string& path, size_t max = 1 << 20) {
    std::string text, error;
    if (!read_file(path, max, text, error)) return "";
    return text;
}

std::string trim(std::string s) {
    size_t b = s.find_first_not_of(" \t\r\n");
    size_t e = s.find_last_not_of(" \t\r\n");
    return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

std::string lower(std::string s) {
    for (char& c : s)
        if (c >= 'A' && c <= 'Z') c = char(c - 'A' + 'a');
    return s;
}

bool is_uuid(const std::string& s) {
    if (s.size() != 36) return false;
    for (size_t i = 0; i < s.size(); ++i) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !isxdigit(static_cast<unsigned char>(s[i]))) return false;
    }
    return true;
}

// DMI product UUID (needs root), else machine-id formatted as a UUID.
std::string node_uuid(const std::string& root) {
    std::string u = lower(trim(slurp(root + "/sys/class/dmi/id/product_uuid")));
    if (is_uuid(u) && u != "00000000-0000-0000-0000-000000000000") return u;
    std::string id = lower(trim(slurp(root + "/etc/machine-id")));
    if (id.size() == 32 && id.find_first_not_of("0123456789abcdef") == std::string::npos)
        return id.substr(0, 8) + "-" + id.substr(8, 4) + "-" + id.substr(12, 4) + "-" +
               id.substr(16, 4) + "-" + id.substr(20);
    return "";
}

std::string default_route_interface(const std::string& root) {
    std::string text = slurp(root + "/proc/net/route");
    size_t pos = text.find('\n');  // skip the header
    while (pos != std::string::npos && pos + 1 < text.size()) {
        size_t end = text.find('\n', pos + 1);
        std::string line = text.substr(pos + 1, end == std::string::npos ? std::string::npos : end - pos - 1);
        pos = end;
        // Iface Destination Gateway Flags RefCnt Use Metric Mask ...: the
        // default route is destination 0 with mask 0, up (0.0.0.0/1 of a
        // VPN's "def1" is destination 0 too).
        std::vector<std::string> f = split(line, '\t');
        if (f.size() < 2 || trim(f[1]) != "00000000") continue;
        if (f.size() > 7 && trim(f[7]) != "00000000") continue;
        if (f.size() > 3 && !(std::strtoul(trim(f[3]).c_str(), nullptr, 16) & 0x1)) continue;  // RTF_UP
        return f[0];
    }
    return "";
}

// The kernel command line split as the kernel splits it: words apart at
// white space outside double quotes; a value in quotes (name="a b") or a
// whole word in them ("name=a b") has its quotes taken off.
json::Value boot_parameters(const std::string& root) {
    json::Value params = json::Value::object();
    const std::string cmdline = slurp(root + "/proc/cmdline");
    // The kernel's isspace(): Latin-1's no-break space (0xA0) too.
    auto space = [](char c) {
        return c == ' ' || (c >= '\t' && c <= '\r') || static_cast<unsigned char>(c) == 0xA0;
    };
    size_t i = 0;
    while (i < cmdline.size()) {
        if (space(cmdline[i])) {
            ++i;
            continue;
        }
        const bool quoted = cmdline[i] == '"';
        if (quoted) ++i;
        size_t start = i, eq = std::string::npos;
        bool in_quote = quoted;
        for (; i < cmdline.size() && (in_quote || !space(cmdline[i])); ++i) {
            // An '=' first in the word is part of the name (the kernel's
            // "equals == 0" test): "=a=b" names "=a", "=x" is a flag.
            if (cmdline[i] == '=' && eq == std::string::npos && i > start) eq = i;
            if (cmdline[i] == '"') in_quote = !in_quote;
        }
        std::string_view word(cmdline.data() + start, i - start);
        const bool closing_quote = !word.empty() && word.back() == '"';
        if (eq == std::string::npos) {
            if (quoted && closing_quote) word.remove_suffix(1);
            if (word == "--") break;  // what follows is init's arguments, not the kernel's
            params.set(json::string_from_bytes(std::string(word)), "true");
            continue;
        }
        std::string_view name = word.substr(0, eq - start), value = word.substr(eq - start + 1);
        if (!value.empty() && value.front() == '"') {
            value.remove_prefix(1);
            if (closing_quote && !value.empty()) value.remove_suffix(1);
        } else if (quoted && closing_quote && !value.empty()) {
            value.remove_suffix(1);
        }
        params.set(json::string_from_bytes(std::string(name)),
                   json::string_from_bytes(std::string(value)));
    }
    return params;
}

}  // namespace

bool builtin_sysinfo(const BuiltinSysinfoOptions& opt, json::Value& out, std::string& error) {
    const std::string& root = opt.root;
    std::string uuid = node_uuid(root);
    if (uuid.empty()) {
        error = "no node UUID: neither " + root + "/sys/class/dmi/id/product_uuid nor " + root +
                "/etc/machine-id holds one";
        return false;
    }
    json::Value s = json::Value::object();
    struct utsname u;
    uname(&u);
    char host[256] = {0};
    gethostname(host, sizeof host - 1);
    s.set("Live Image", u.release);
    s.set("System Type", "Linux");
    s.set("Boot Time", "");
    std::string stat = slurp(root + "/proc/stat");
    if (size_t p = stat.find("\nbtime "); p != std::string::npos)
        s.set("Boot Time", trim(stat.substr(p + 7, stat.find('\n', p + 7) - p - 7)));
    s.set("UUID", uuid);
    s.set("Hostname", json::string_from_bytes(host));
    std::string cpuinfo = slurp(root + "/proc/cpuinfo", 4 << 20);
    std::string cpu_type = "unknown";
    if (size_t p = cpuinfo.find("model name"); p != std::string::npos) {
        // Within that line only: without a colon it is not the field.
        std::string line = cpuinfo.substr(p, cpuinfo.find('\n', p) - p);
        if (size_t colon = line.find(':'); colon != std::string::npos)
            cpu_type = trim(line.substr(colon + 1));
    }
    s.set("CPU Type", json::string_from_bytes(cpu_type));
    long cores = sysconf(_SC_NPROCESSORS_CONF);
    s.set("CPU Total Cores", json::Value(int64_t(cores > 0 ? cores : 1)));
    std::string meminfo = slurp(root + "/proc/meminfo");
    uint64_t kib = 0;
    if (size_t p = meminfo.find("MemTotal:"); p != std::string::npos)
        kib = std::strtoull(meminfo.c_str() + p + 9, nullptr, 10);
    s.set("MiB of Memory", std::to_string(kib / 1024));
    if (!opt.datacenter.empty()) s.set("Datacenter Name", opt.datacenter);
    s.set("Setup", setup_complete(opt.setup_file) ? "true" : "false");
    std::string tag = opt.admin_tag.empty() ? "admin" : opt.admin_tag;
    if (!opt.admin_tag.empty()) s.set("Admin NIC Tag", opt.admin_tag);
    s.set("Boot Parameters", boot_parameters(root));

    std::string admin = opt.admin_nic.empty() ? default_route_interface(root) : opt.admin_nic;
    std::map<std::string, std::string> ip4;
    struct ifaddrs* ifs = nullptr;
    if (root.empty() && getifaddrs(&ifs) == 0) {
        for (auto* p = ifs; p; p = p->ifa_next) {
            if (!p->ifa_addr || p->ifa_addr->sa_family != AF_INET) continue;
            char buf[INET_ADDRSTRLEN];
            auto* in = reinterpret_cast<sockaddr_in*>(p->ifa_addr);
            if (inet_ntop(AF_INET, &in->sin_addr, buf, sizeof buf) && !ip4.count(p->ifa_name))
                ip4[p->ifa_name] = buf;
        }
        freeifaddrs(ifs);
    }
    json::Value nics = json::Value::object();
    std::vector<std::string> names;
    if (DIR* d = opendir((root + "/sys/class/net").c_str())) {
        while (struct dirent* e = readdir(d)) {
            std::string n = e->d_name;
            if (n != "." && n != ".." && n != "lo") names.push_back(n);
        }
        closedir(d);
    }
    std::sort(names.begin(), names.end());
    // A named admin NIC that is not there (a typo, or a driver not loaded
    // yet) is an error, retried, rather than a node without its MAC.
    if (!opt.admin_nic.empty() && !std::count(names.begin(), names.end(), opt.admin_nic)) {
        std::string have;
        for (const auto& n : names) have += (have.empty() ? "" : ", ") + n;
        error = "--admin-nic " + opt.admin_nic + ": not a network interface sysinfo lists (" +
                (have.empty() ? "none" : have) + "; lo never is)";
        return false;
    }
    for (const auto& n : names) {
        std::string dir = root + "/sys/class/net/" + n;
        json::Value nic = json::Value::object();
        nic.set("MAC Address", lower(trim(slurp(dir + "/address"))));
        nic.set("ip4addr", ip4.count(n) ? ip4[n] : "");
        std::string state = trim(slurp(dir + "/operstate"));
        nic.set("Link Status", state == "up" ? "up" : state == "" ? "unknown" : "down");
        json::Value tags = json::Value::array();
        if (n == admin) tags.push_back(tag);
        nic.set("NIC Names", std::move(tags));
        nics.set(json::string_from_bytes(n), std::move(nic));
    }
    s.set("Network Interfaces", std::move(nics));
    out = std::move(s);
    return true;
}

#else

bool builtin_sysinfo(const BuiltinSysinfoOptions&, json::Value&, std::string& error) {
    error = "no built-in sysinfo on this platform; use --sysinfo-cmd or --sysinfo-file";
    return false;
}

#endif

}  // namespace ur
