#include "tools/fake-broker/topic.hpp"

#include <vector>

namespace fake {

namespace {

std::vector<std::string_view> split_words(std::string_view s) {
    std::vector<std::string_view> words;
    if (s.empty()) return words;  // "" is no words: "#" matches it, "*" does not
    size_t start = 0;
    for (;;) {
        size_t dot = s.find('.', start);
        if (dot == std::string_view::npos) {
            words.push_back(s.substr(start));
            return words;
        }
        words.push_back(s.substr(start, dot - start));
        start = dot + 1;
    }
}

}  // namespace

bool topic_matches(std::string_view pattern, std::string_view key) {
    std::vector<std::string_view> p = split_words(pattern), k = split_words(key);
    // Dynamic programming over (pattern words consumed, key words consumed):
    // row[j] says whether p[0..i) matches k[0..j).  Backtracking would be
    // exponential on patterns like "#.#.#.#.x".
    std::vector<char> row(k.size() + 1, 0), next(k.size() + 1, 0);
    row[0] = 1;
    for (size_t i = 0; i < p.size(); i++) {
        std::string_view w = p[i];
        next.assign(k.size() + 1, 0);
        if (w == "#") {
            // '#' eats zero or more words: next[j] = any row[j'] with j' <= j.
            char any = 0;
            for (size_t j = 0; j <= k.size(); j++) {
                any = char(any | row[j]);
                next[j] = any;
            }
        } else {
            for (size_t j = 0; j < k.size(); j++)
                if (row[j] && (w == "*" || w == k[j])) next[j + 1] = 1;
        }
        row.swap(next);
    }
    return row[k.size()] != 0;
}

}  // namespace fake
