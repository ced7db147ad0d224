// The documentation tells the truth: every flag of --help is in the man
// page, and the man page documents no flag --help does not have.
#include <doctest/doctest.h>

#include <fstream>
#include <set>
#include <sstream>

#include "src/config.hpp"
#include "tools/urctl/options.hpp"

namespace {

bool flag_char(char c) { return (c >= 'a' && c <= 'z') || c == '-'; }

// "--name" words that start a word (after white space or at a line start).
std::set<std::string> help_flags(const std::string& text) {
    std::set<std::string> out;
    for (size_t i = 0; i + 2 < text.size(); ++i) {
        if (text.compare(i, 2, "--") != 0 || (i > 0 && text[i - 1] != ' ' && text[i - 1] != '\n'))
            continue;
        if (text[i + 2] < 'a' || text[i + 2] > 'z') continue;
        size_t j = i + 2;
        while (j < text.size() && flag_char(text[j])) ++j;
        out.insert(text.substr(i, j - i));
        i = j;
    }
    return out;
}

// Flags that a man page documents: lines ".B --x" or ".BR --x ..." (roff
// escapes the dashes: "\-\-x").
std::set<std::string> man_flags(const std::string& roff) {
    std::set<std::string> out;
    std::istringstream in(roff);
    std::string line;
    while (std::getline(in, line)) {
        std::string plain;
        for (size_t i = 0; i < line.size(); ++i) {
            if (line[i] == '\\' && i + 1 < line.size() && line[i + 1] == '-') continue;
            plain += line[i];
        }
        for (const char* macro : {".B --", ".BR --"}) {
            std::string m = macro;
            if (plain.compare(0, m.size(), m) != 0) continue;
            size_t j = m.size() - 2;
            size_t k = j + 2;
            while (k < plain.size() && flag_char(plain[k])) ++k;
            out.insert(plain.substr(j, k - j));
        }
    }
    return out;
}

void check_man_page(const char* path, const std::string& usage) {
    std::ifstream in(path);
    REQUIRE_MESSAGE(in.good(), "run the tests from the repository root");
    std::stringstream ss;
    ss << in.rdbuf();
    std::set<std::string> help = help_flags(usage);
    std::set<std::string> page = man_flags(ss.str());
    CHECK(help.size() > 10);
    for (const auto& f : help) {
        INFO(path << " lacks " << f);
        CHECK(page.count(f) == 1);
    }
    for (const auto& f : page) {
        INFO(path << " documents " << f << ", which --help does not list");
        CHECK(help.count(f) == 1);
    }
}

}  // namespace

TEST_CASE("ur-agent(8) documents every flag of --help, and no other") {
    check_man_page("tools/man/ur-agent.8", ur::usage_text());
}

TEST_CASE("urctl(1) documents every flag of --help, and no other") {
    check_man_page("tools/man/urctl.1", urctl::usage_text());
}

TEST_CASE("the man page check finds flags, so it can fail") {
    CHECK(help_flags("  --a-b X\n--c\nx--d --e=1") == std::set<std::string>{"--a-b", "--c", "--e"});
    CHECK(man_flags(".BR \\-\\-max\\-output \" B\"\n.B \\-\\-json\n.TP\n") ==
          std::set<std::string>{"--max-output", "--json"});
}
