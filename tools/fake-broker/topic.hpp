// AMQP topic-exchange matching.  A routing key and a binding pattern are
// both lists of words separated by '.'; in a pattern "*" stands for exactly
// one word and "#" for zero or more words.  Empty words between dots are words
// ("a..b" has three) but "" has none, as in RabbitMQ.
#pragma once

#include <string_view>

namespace fake {

// True when `key` matches the binding `pattern`.  Runs in
// O(words(pattern) * words(key)) time and constant extra space, so a
// hostile pattern full of '#' cannot make it blow up.
bool topic_matches(std::string_view pattern, std::string_view key);

}  // namespace fake
