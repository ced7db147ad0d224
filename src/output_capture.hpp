// Capture of one output stream of a child (stdout or stderr) under a byte cap.
//
// The child must never block on a full pipe, so the supervisor reads every
// byte it writes; this class decides what is kept.  Up to `max_output` bytes
// the stream is kept whole.  Past that, it keeps the first
// (max_output - tail_keep) bytes and, in a ring buffer, the last tail_keep
// bytes, and finish() joins them with a marker line saying how many bytes
// were cut.  Memory is O(max_output) whatever the child writes.
//
// Encoding::JsonEscaped keeps the same bytes already in the form a JSON
// reply carries them: made valid UTF-8 as Node's Buffer.toString() does
// (json::string_from_bytes) and escaped (json::append_escaped), as they
// arrive.  The agent uses it for requests, so that a big output is not
// converted all at once after the script exits, while the requester waits,
// but while the script is still writing it.  The result is byte for byte
// append_escaped(string_from_bytes(raw data)), however the stream was cut
// into reads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "json/utf8.hpp"

namespace ur {

struct StreamCapture {
    std::string data;       // bytes kept: the whole stream, or (when truncated) head + marker line + last tail bytes
    uint64_t total = 0;     // total bytes the child wrote to this stream
    bool truncated = false;
    bool escaped = false;   // data is JSON-escaped UTF-8 (without quotes), not raw bytes
};

// Appends a note of the agent's own (ASCII or not) to a finished capture,
// in the capture's encoding.  `total` is left to the caller.
void append_note(StreamCapture& c, const std::string& note);
// The same for one line of the agent's (`line` without its newline): on a
// line of its own, after a newline only when the output does not already
// end with one.
void append_note_line(StreamCapture& c, const std::string& line);

class OutputCapture {
public:
    enum class Encoding { Raw, JsonEscaped };

    // If tail_keep >= max_output the head is empty and the tail holds
    // max_output bytes.
    OutputCapture(size_t max_output, size_t tail_keep, Encoding enc = Encoding::Raw);

    void append(const char* data, size_t n);
    uint64_t total() const { return total_; }
    // Where the head is buffered now (tests: it must not move once reserved).
    const char* head_data() const { return head_.data(); }

    // The kept bytes, in stream order.  Leaves the capture empty.
    StreamCapture finish();

    // The marker line put between head and tail when `cut` bytes were dropped.
    static std::string marker(uint64_t cut);

private:
    void keep_head(const char* data, size_t n);
    void encode(const char* data, size_t n, std::string& out);

    size_t head_cap_;
    size_t tail_cap_;
    Encoding enc_;
    size_t head_raw_ = 0;       // raw bytes in the head (head_ is longer once escaped)
    std::string head_;
    json::Utf8Sanitizer utf8_;  // JsonEscaped: a sequence cut between reads
    std::string scratch_;       // JsonEscaped: one read made valid UTF-8
    std::string ring_;       // grows to tail_cap_, then wraps at ring_pos_
    size_t ring_pos_ = 0;    // next write position once ring_ is full
    uint64_t total_ = 0;
};

}  // namespace ur
