#include "src/output_capture.hpp"

#include <algorithm>
#include <cstring>

#include "json/write.hpp"
#include "src/memory.hpp"

namespace ur {

namespace {
// Crossing this many bytes, a stream is a big one (see keep_head()).
constexpr size_t kReserveAfter = 256 * 1024;
// The most reserved up front: a raised --max-output is taken at its word
// up to this (a 64 MiB output reserved 64 MiB, then doubled to 128 MiB for
// its escapes, copying all of it: peak RSS 2.02x the output).
constexpr size_t kReserveMax = 256u << 20;
}  // namespace

void append_note(StreamCapture& c, const std::string& note) {
    if (c.escaped)
        json::append_escaped(c.data, json::string_from_bytes(note));
    else
        c.data += note;
}

namespace {
// Whether the capture's text ends with a newline, escaped ("\\n" after an
// even run of backslashes) or raw.
bool ends_with_newline(const StreamCapture& c) {
    const std::string& d = c.data;
    if (!c.escaped) return !d.empty() && d.back() == '\n';
    if (d.size() < 2 || d.back() != 'n') return false;
    size_t slashes = 0;
    for (size_t i = d.size() - 1; i > 0 && d[i - 1] == '\\'; --i) ++slashes;
    return slashes % 2 == 1;
}
}  // namespace

void append_note_line(StreamCapture& c, const std::string& line) {
    append_note(c, (c.data.empty() || ends_with_newline(c) ? "" : "\n") + line + "\n");
}

OutputCapture::OutputCapture(size_t max_output, size_t tail_keep, Encoding enc)
    : head_cap_(max_output > tail_keep ? max_output - tail_keep : 0),
      tail_cap_(std::min(tail_keep, max_output)),
      enc_(enc) {}

std::string OutputCapture::marker(uint64_t cut) {
    return "\n[ur-agent: " + std::to_string(cut) + (cut == 1 ? " byte" : " bytes") + " cut]\n";
}

void OutputCapture::encode(const char* data, size_t n, std::string& out) {
    if (enc_ == Encoding::Raw) {
        out.append(data, n);
        return;
    }
    if (utf8_.idle()) {
        // The common case, well-formed output: escape it straight from the
        // read buffer; only what follows a bad or cut sequence goes through
        // the sanitizer (the same bytes either way).
        size_t ok = json::append_escaped_utf8_prefix(out, std::string_view(data, n));
        data += ok;
        n -= ok;
        if (n == 0)
            return;
    }
    scratch_.clear();
    utf8_.feed(std::string_view(data, n), scratch_);
    json::append_escaped(out, scratch_);
}

void OutputCapture::keep_head(const char* data, size_t n) {
    // Crossing kReserveAfter bytes, the stream is a big one: take the whole
    // head at once instead of doubling.  The capacity is only address
    // space until written (large blocks are mmap()ed or come from pages
    // freed earlier), while doubling would copy every byte again and fault
    // in twice the memory.  Capped, so that a huge --max-output does not
    // ask for gigabytes of address space up front (strict overcommit,
    // illumos swap reservations); past the cap the string doubles as usual.
    // The part still to be written is asked for huge pages: far fewer
    // page faults while the script writes.
    if (head_raw_ <= kReserveAfter && head_raw_ + n > kReserveAfter) {
        size_t want = head_cap_;
        if (enc_ == Encoding::JsonEscaped)
            want += head_cap_ / 16;  // a few escapes (one "\n" a line)
        head_.reserve(std::min(want, kReserveMax));
        memory::prefer_huge_pages(&head_[0] + head_.size(), head_.capacity() - head_.size());
    }
    head_raw_ += n;
    encode(data, n, head_);
}

void OutputCapture::append(const char* data, size_t n) {
    total_ += n;
    // The head is full at head_cap_ bytes as kept: escaped, one byte can
    // become six ("\u0001"), and a stream of control bytes made a reply six
    // times the cap.  A byte adds at most 12 escaped bytes (the last of a
    // 4-byte character, "\ud83d\ude00"; or a cut sequence it ends as
    // "\ufffd", then its own "\u00XX"), so taking ceil(room / 12) bytes at
    // a time, no byte but the last of a take can fill the head: it ends at
    // the first byte that does, however the reads cut the stream, within
    // 12 bytes of head_cap_.
    while (n > 0 && head_raw_ < head_cap_ && head_.size() < head_cap_) {
        size_t take = std::min(n, head_cap_ - head_raw_);
        if (enc_ == Encoding::JsonEscaped)
            take = std::min(take, (head_cap_ - head_.size() + 11) / 12);
        keep_head(data, take);
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
    c.escaped = enc_ == Encoding::JsonEscaped;
    uint64_t kept = head_raw_ + ring_.size();
    c.truncated = total_ > kept;
    c.data = std::move(head_);
    // ring_pos_ is the oldest byte once the ring has wrapped, else 0.
    size_t skip = 0;
    if (c.truncated && enc_ == Encoding::JsonEscaped) {
        // Cut on purpose, the head may end and the tail begin inside a
        // character: those bytes are left out with the cut ones, not
        // shown as U+FFFD (which means bytes that are not UTF-8).
        uint64_t dropped = utf8_.discard();
        while (skip < 3 && skip < ring_.size() &&
               (uint8_t(ring_[(ring_pos_ + skip) % ring_.size()]) & 0xC0) == 0x80)
            ++skip;
        kept -= dropped + skip;
    }
    if (c.truncated) {
        std::string m = marker(total_ - kept);
        encode(m.data(), m.size(), c.data);
    }
    size_t first = ring_.size() - ring_pos_;  // oldest part: ring_pos_ to the end
    if (skip < first) {
        encode(ring_.data() + ring_pos_ + skip, first - skip, c.data);
        encode(ring_.data(), ring_pos_, c.data);
    } else {
        encode(ring_.data() + (skip - first), ring_pos_ - (skip - first), c.data);
    }
    if (enc_ == Encoding::JsonEscaped) {
        // A sequence cut off by the end of the stream becomes U+FFFD.
        scratch_.clear();
        utf8_.finish(scratch_);
        json::append_escaped(c.data, scratch_);
        std::string().swap(scratch_);
    }
    head_.clear();
    head_raw_ = 0;
    ring_.clear();
    ring_pos_ = 0;
    total_ = 0;
    return c;
}

}  // namespace ur
