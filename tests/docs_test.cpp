// The documentation tells the truth: every flag of --help is in the man page.
#include <doctest/doctest.h>

#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "src/config.hpp"
#include "tools/urctl/options.hpp"

static std::set<std::string> flags_in(const std::string& text, const std::regex& re) {
    std::set<std::string> out;
    for (auto it = std::sregex_iterator(text.begin(), text.end(), re); it != std::sregex_iterator(); ++it)
        out.insert((*it)[1]);
    return out;
}

static void check_man_page(const char* path, const std::string& usage) {
    std::ifstream in(path);
    REQUIRE_MESSAGE(in.good(), "run the tests from the repository root");
    std::stringstream ss;
    ss << in.rdbuf();
    // In roff the dashes are escaped: \-\-max\-output
    std::string man = std::regex_replace(ss.str(), std::regex(R"(\\-)"), "-");
    std::set<std::string> help = flags_in(usage, std::regex(R"((?:^|\s)(--[a-z][a-z-]*))"));
    std::set<std::string> page = flags_in(man, std::regex(R"(\.BR? (--[a-z][a-z-]*))"));
    CHECK(help.size() > 10);
    for (const auto& f : help) {
        INFO(f);
        CHECK(page.count(f) == 1);
    }
    for (const auto& f : page) {
        INFO(f);
        CHECK(help.count(f) == 1);
    }
}

TEST_CASE("ur-agent(8) documents every flag of --help, and no other") {
    check_man_page("tools/man/ur-agent.8", ur::usage_text());
}

TEST_CASE("urctl(1) documents every flag of --help, and no other") {
    check_man_page("tools/man/urctl.1", urctl::usage_text());
}
