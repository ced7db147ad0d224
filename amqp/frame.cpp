#include "amqp/frame.hpp"

#include "amqp/wire.hpp"

#include <algorithm>

namespace amqp {

namespace {
constexpr size_t kReserveCap = size_t(1) << 20;
}  // namespace

void FrameParser::set_frame_max(uint32_t frame_max) {
    if (frame_max == 0 || frame_max > (1u << 31)) frame_max = 1u << 31;
    if (frame_max < kFrameMinSize) frame_max = kFrameMinSize;
    frame_max_ = frame_max;
}

FrameStatus FrameParser::fail(std::string text) {
    error_code_ = kFrameError;
    error_text_ = std::move(text);
    return FrameStatus::Error;
}

bool FrameParser::check_header(const char* h) {
    uint8_t type = uint8_t(h[0]);
    uint16_t channel = get_u16(h + 1);
    uint32_t size = get_u32(h + 3);
    if (type != kFrameMethod && type != kFrameHeader && type != kFrameBody &&
        type != kFrameHeartbeat) {
        fail("unknown frame type " + std::to_string(type));
        return false;
    }
    if (type == kFrameHeartbeat && channel != 0) {
        fail("heartbeat frame on channel " + std::to_string(channel));
        return false;
    }
    // Compare without adding to size first: size + 8 could wrap.
    if (size > frame_max_ - kFrameOverhead) {
        fail("frame size " + std::to_string(size) + " exceeds frame_max " +
             std::to_string(frame_max_));
        return false;
    }
    need_ = size + kFrameOverhead;
    return true;
}

FrameStatus FrameParser::next(const char*& data, size_t& n, FrameView& out) {
    if (error_code_ != 0) return FrameStatus::Error;
    if (deliver_from_buf_) {
        buf_.clear();
        need_ = 0;
        deliver_from_buf_ = false;
    }
    if (buf_.empty()) {
        // Fast path: a whole frame sits in the input; hand out a view of it.
        if (n >= kFrameHeaderSize) {
            if (!check_header(data)) return FrameStatus::Error;
            if (n >= need_) {
                if (uint8_t(data[need_ - 1]) != kFrameEnd) return fail("bad frame-end octet");
                out.type = uint8_t(data[0]);
                out.channel = get_u16(data + 1);
                out.payload = std::string_view(data + kFrameHeaderSize, need_ - kFrameOverhead);
                data += need_;
                n -= need_;
                need_ = 0;
                return FrameStatus::Frame;
            }
        }
        if (n == 0) return FrameStatus::NeedMore;
    }
    // Slow path: accumulate a split frame.  The header is completed first so
    // that the size is checked before the buffer grows to hold the payload.
    if (buf_.size() < kFrameHeaderSize) {
        size_t take = std::min(n, kFrameHeaderSize - buf_.size());
        buf_.append(data, take);
        data += take;
        n -= take;
        if (buf_.size() < kFrameHeaderSize) return FrameStatus::NeedMore;
        if (!check_header(buf_.data())) return FrameStatus::Error;
        // Reserve at most kReserveCap from the header alone: with no
        // frame_max limit (clamped to 2^31) a 7-byte header could make us
        // allocate 2 GiB.  Larger frames grow the buffer as bytes arrive.
        buf_.reserve(std::min(need_, kReserveCap));
    }
    size_t take = std::min(n, need_ - buf_.size());
    buf_.append(data, take);
    data += take;
    n -= take;
    if (buf_.size() < need_) return FrameStatus::NeedMore;
    if (uint8_t(buf_[need_ - 1]) != kFrameEnd) return fail("bad frame-end octet");
    out.type = uint8_t(buf_[0]);
    out.channel = get_u16(buf_.data() + 1);
    out.payload = std::string_view(buf_.data() + kFrameHeaderSize, need_ - kFrameOverhead);
    deliver_from_buf_ = true;
    return FrameStatus::Frame;
}

size_t begin_frame(std::string& out, uint8_t type, uint16_t channel) {
    size_t start = out.size();
    append_frame_header(out, type, channel, 0);
    return start;
}

void append_frame_header(std::string& out, uint8_t type, uint16_t channel, uint32_t size) {
    Writer w(out);
    w.u8(type);
    w.u16(channel);
    w.u32(size);
}

void end_frame(std::string& out, size_t frame_start) {
    put_u32_at(out, frame_start + 3, uint32_t(out.size() - frame_start - kFrameHeaderSize));
    out.push_back(char(kFrameEnd));
}

void encode_frame(std::string& out, uint8_t type, uint16_t channel, std::string_view payload) {
    size_t at = begin_frame(out, type, channel);
    out.append(payload.data(), payload.size());
    end_frame(out, at);
}

void encode_heartbeat(std::string& out) { encode_frame(out, kFrameHeartbeat, 0, {}); }

}  // namespace amqp
