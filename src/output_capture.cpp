#include "src/output_capture.hpp"

#include <algorithm>
#include <cstring>

namespace ur {

OutputCapture::OutputCapture(size_t max_output, size_t tail_keep)
    : head_cap_(max_output > tail_keep ? max_output - tail_keep : 0),
      tail_cap_(std::min(tail_keep, max_output)) {}

std::string OutputCapture::marker(uint64_t cut) {
    return "\n[ur-agent: " + std::to_string(cut) + " bytes cut]\n";
}

void OutputCapture::append(const char* data, size_t n) {
    total_ += n;
    if (head_.size() < head_cap_) {
        size_t take = std::min(n, head_cap_ - head_.size());
        head_.append(data, take);
        data += take;
        n -= take;
    }
    if (n == 0 || tail_cap_ == 0)
        return;
    // Only the last tail_cap_ bytes of this chunk can survive.
    if (n > tail_cap_) {
        data += n - tail_cap_;
        n = tail_cap_;
    }
    if (ring_.size() < tail_cap_) {
        size_t take = std::min(n, tail_cap_ - ring_.size());
        ring_.append(data, take);
        data += take;
        n -= take;
        if (n == 0)
            return;
        ring_pos_ = 0;  // the ring just became full: wrap to its start
    }
    // Ring full: overwrite the oldest bytes, in at most two pieces.
    size_t first = std::min(n, tail_cap_ - ring_pos_);
    std::memcpy(&ring_[ring_pos_], data, first);
    std::memcpy(&ring_[0], data + first, n - first);
    ring_pos_ = (ring_pos_ + n) % tail_cap_;
}

StreamCapture OutputCapture::finish() {
    StreamCapture c;
    c.total = total_;
    uint64_t kept = head_.size() + ring_.size();
    c.truncated = total_ > kept;
    c.data = std::move(head_);
    if (c.truncated)
        c.data += marker(total_ - kept);
    // ring_pos_ is the oldest byte once the ring has wrapped, else 0.
    c.data.append(ring_, ring_pos_, std::string::npos);
    c.data.append(ring_, 0, ring_pos_);
    head_.clear();
    ring_.clear();
    ring_pos_ = 0;
    total_ = 0;
    return c;
}

}  // namespace ur
