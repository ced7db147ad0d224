// AMQP 0-9-1 framing: the 7-byte header (type, channel, size), the payload
// and the 0xCE frame-end octet.  FrameParser turns a byte stream delivered
// in arbitrary chunks into whole frames; the encoders append frames to an
// output string.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace amqp {

constexpr uint8_t kFrameMethod = 1;
constexpr uint8_t kFrameHeader = 2;
constexpr uint8_t kFrameBody = 3;
constexpr uint8_t kFrameHeartbeat = 8;
constexpr uint8_t kFrameEnd = 0xCE;
constexpr size_t kFrameHeaderSize = 7;
constexpr size_t kFrameOverhead = 8;       // header + frame-end
constexpr uint32_t kFrameMinSize = 4096;   // frame_max may never be lower

// Reply codes used by the codec (spec "constants").
constexpr uint16_t kReplySuccess = 200;
constexpr uint16_t kConnectionForced = 320;
constexpr uint16_t kAccessRefused = 403;
constexpr uint16_t kFrameError = 501;
constexpr uint16_t kSyntaxError = 502;
constexpr uint16_t kCommandInvalid = 503;
constexpr uint16_t kChannelError = 504;
constexpr uint16_t kUnexpectedFrame = 505;
constexpr uint16_t kResourceError = 506;
constexpr uint16_t kNotAllowed = 530;
constexpr uint16_t kNotImplemented = 540;

// The protocol header a client sends first: "AMQP" 0 0 9 1.
constexpr std::string_view kProtocolHeader{"AMQP\x00\x00\x09\x01", 8};

// One frame.  `payload` points either into the bytes passed to
// FrameParser::next() or into the parser's own buffer; it is valid until
// the next call to next() or the end of that input, whichever is first.
struct FrameView {
    uint8_t type = 0;
    uint16_t channel = 0;
    std::string_view payload;
};

enum class FrameStatus {
    Frame,     // `out` holds a complete frame
    NeedMore,  // all input consumed, no complete frame yet
    Error,     // framing violation; error_code()/error_text() say which (501)
};

class FrameParser {
public:
    // frame_max bounds the whole frame (header + payload + end), as the
    // spec's tune.frame-max does.
    explicit FrameParser(uint32_t frame_max = kFrameMinSize) { set_frame_max(frame_max); }

    // Before tune the peer may only send frames up to kFrameMinSize; after
    // tune, the negotiated value.  0 (no limit) is clamped to 2^31 so a
    // size is still checked before allocation.
    void set_frame_max(uint32_t frame_max);
    uint32_t frame_max() const { return frame_max_; }

    // Consumes bytes from [data, data+n), advancing data and n, until one
    // frame is complete (Frame), the input is used up (NeedMore), or the
    // stream is invalid (Error, sticky: the connection must be closed).
    // A declared size over frame_max is refused from the header alone,
    // before any buffer is grown.
    FrameStatus next(const char*& data, size_t& n, FrameView& out);

    uint16_t error_code() const { return error_code_; }
    const std::string& error_text() const { return error_text_; }
    // Bytes of an incomplete frame held in the parser.
    size_t buffered() const { return buf_.size(); }

private:
    FrameStatus fail(std::string text);
    // Checks a complete 7-byte header; sets need_ to the whole frame size.
    bool check_header(const char* h);

    uint32_t frame_max_ = kFrameMinSize;
    std::string buf_;    // partial frame (header first), when input split it
    size_t need_ = 0;    // total bytes of the frame in buf_, once its header is known
    bool deliver_from_buf_ = false;  // buf_ held the previous frame: drop it first
    uint16_t error_code_ = 0;
    std::string error_text_;
};

// Appends a frame with the given payload.
void encode_frame(std::string& out, uint8_t type, uint16_t channel, std::string_view payload);
void encode_heartbeat(std::string& out);

// For encoders that write the payload in place: begin_frame() appends a
// header with a size placeholder and returns its offset; end_frame() patches
// the size and appends the frame-end octet.
size_t begin_frame(std::string& out, uint8_t type, uint16_t channel);
void end_frame(std::string& out, size_t frame_start);
// Appends only a frame header declaring `size` payload bytes: the payload
// and the frame-end octet are the caller's to send after it.
void append_frame_header(std::string& out, uint8_t type, uint16_t channel, uint32_t size);

}  // namespace amqp
