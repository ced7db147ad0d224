// Bunyan-compatible JSON-lines logging on stderr (Triton's `bunyan` CLI
// renders it).  Each record: name, hostname, pid, level (10..60), msg,
// time, v: 0, then the caller's fields (req_id, routing_key, ...).
#pragma once
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

#include "json/json.hpp"

namespace ur::log {

enum class Level { Trace = 10, Debug = 20, Info = 30, Warn = 40, Error = 50, Fatal = 60 };

// Parses "trace" .. "fatal"; false when the name is unknown.
bool parse_level(std::string_view name, Level& out);

// Sets the logger's name, minimum level and output fd (default: stderr).
void init(std::string name, Level min_level, int fd = 2);
void set_level(Level min_level);
bool enabled(Level level);

struct Field {
    const char* key;
    json::Value value;
};

// Writes one record as a single write(2) so concurrent writers do not
// interleave.  Never fails loudly: a log that cannot be written is lost.
void write(Level level, std::string_view msg, std::initializer_list<Field> fields = {});

// Lines not written because the output (a pipe, socket or terminal) had
// no room: they are counted, and said in a warn line once there is room.
uint64_t dropped_lines();

inline void trace(std::string_view m, std::initializer_list<Field> f = {}) { write(Level::Trace, m, f); }
inline void debug(std::string_view m, std::initializer_list<Field> f = {}) { write(Level::Debug, m, f); }
inline void info(std::string_view m, std::initializer_list<Field> f = {}) { write(Level::Info, m, f); }
inline void warn(std::string_view m, std::initializer_list<Field> f = {}) { write(Level::Warn, m, f); }
inline void error(std::string_view m, std::initializer_list<Field> f = {}) { write(Level::Error, m, f); }
inline void fatal(std::string_view m, std::initializer_list<Field> f = {}) { write(Level::Fatal, m, f); }

}  // namespace ur::log
