// Capture of one output stream of a child (stdout or stderr) under a byte cap.
//
// The child must never block on a full pipe, so the supervisor reads every
// byte it writes; this class decides what is kept.  Up to `max_output` bytes
// the stream is kept whole.  Past that, it keeps the first
// (max_output - tail_keep) bytes and, in a ring buffer, the last tail_keep
// bytes, and finish() joins them with a marker line saying how many bytes
// were cut.  Memory is O(max_output) whatever the child writes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace ur {

struct StreamCapture {
    std::string data;       // raw bytes kept: the whole stream, or (when truncated) head + marker line + last tail bytes
    uint64_t total = 0;     // total bytes the child wrote to this stream
    bool truncated = false;
};

class OutputCapture {
public:
    // If tail_keep >= max_output the head is empty and the tail holds
    // max_output bytes.
    OutputCapture(size_t max_output, size_t tail_keep);

    void append(const char* data, size_t n);
    uint64_t total() const { return total_; }

    // The kept bytes, in stream order.  Leaves the capture empty.
    StreamCapture finish();

    // The marker line put between head and tail when `cut` bytes were dropped.
    static std::string marker(uint64_t cut);

private:
    size_t head_cap_;
    size_t tail_cap_;
    std::string head_;
    std::string ring_;       // grows to tail_cap_, then wraps at ring_pos_
    size_t ring_pos_ = 0;    // next write position once ring_ is full
    uint64_t total_ = 0;
};

}  // namespace ur
