#include <doctest/doctest.h>

#include <string>

#include "json/utf8.hpp"
#include "json/write.hpp"
#include "src/output_capture.hpp"

using ur::OutputCapture;
using ur::StreamCapture;

namespace {

std::string pattern(size_t n) {
    std::string s;
    for (size_t i = 0; i < n; ++i)
        s.push_back(static_cast<char>('a' + i % 26));
    return s;
}

// Feeds `all` in pieces of `chunk` bytes.
StreamCapture capture(const std::string& all, size_t max, size_t tail, size_t chunk) {
    OutputCapture c(max, tail);
    for (size_t i = 0; i < all.size(); i += chunk)
        c.append(all.data() + i, std::min(chunk, all.size() - i));
    return c.finish();
}

std::string expected(const std::string& all, size_t max, size_t tail) {
    if (all.size() <= max)
        return all;
    size_t head = max > tail ? max - tail : 0;
    size_t keep_tail = std::min(tail, max);
    return all.substr(0, head) + OutputCapture::marker(all.size() - head - keep_tail) +
           all.substr(all.size() - keep_tail);
}

}  // namespace

TEST_CASE("output capture: a stream under the cap is kept whole") {
    std::string s = pattern(100);
    for (size_t chunk : {1, 7, 100}) {
        StreamCapture c = capture(s, 100, 30, chunk);
        CHECK(c.data == s);
        CHECK(c.total == 100);
        CHECK_FALSE(c.truncated);
    }
}

TEST_CASE("output capture: empty stream") {
    OutputCapture c(10, 4);
    StreamCapture r = c.finish();
    CHECK(r.data.empty());
    CHECK(r.total == 0);
    CHECK_FALSE(r.truncated);
}

TEST_CASE("output capture: past the cap keeps head, marker and tail") {
    std::string s = pattern(1000);
    for (size_t chunk : {1, 3, 29, 30, 31, 64, 999, 1000}) {
        CAPTURE(chunk);
        StreamCapture c = capture(s, 100, 30, chunk);
        CHECK(c.truncated);
        CHECK(c.total == 1000);
        CHECK(c.data == s.substr(0, 70) + "\n[ur-agent: 900 bytes cut]\n" + s.substr(970));
    }
}

TEST_CASE("output capture: one byte over the cap") {
    std::string s = pattern(101);
    StreamCapture c = capture(s, 100, 30, 101);
    CHECK(c.truncated);
    CHECK(c.data == expected(s, 100, 30));
    CHECK(c.data.find("[ur-agent: 1 byte cut]") != std::string::npos);
}

TEST_CASE("output capture: exhaustive small sizes against the model") {
    for (size_t max : {0, 1, 5, 10}) {
        for (size_t tail : {0, 1, 4, 10, 20}) {
            for (size_t n : {0, 1, 4, 5, 9, 10, 11, 25, 60}) {
                for (size_t chunk : {1, 2, 3, 7, 64}) {
                    CAPTURE(max);
                    CAPTURE(tail);
                    CAPTURE(n);
                    CAPTURE(chunk);
                    std::string s = pattern(n);
                    StreamCapture c = capture(s, max, tail, chunk);
                    CHECK(c.total == n);
                    CHECK(c.truncated == (n > max));
                    CHECK(c.data == expected(s, max, tail));
                }
            }
        }
    }
}

TEST_CASE("output capture: memory stays bounded by the cap") {
    OutputCapture c(1000, 100);
    std::string chunk(4096, 'x');
    for (int i = 0; i < 2000; ++i)
        c.append(chunk.data(), chunk.size());
    StreamCapture r = c.finish();
    CHECK(r.total == 2000u * 4096u);
    CHECK(r.data.size() == 1000 + OutputCapture::marker(r.total - 1000).size());
}

TEST_CASE("output capture: a big stream (head reserved at once) is kept exactly") {
    // Crossing 256 KiB the head is reserved whole instead of doubled; the
    // bytes must not change, whichever chunk straddles the threshold, with
    // and without truncation.
    std::string all = pattern(1000003);
    for (size_t chunk : {size_t(65536), size_t(4093), size_t(262145), size_t(1000003)}) {
        CAPTURE(chunk);
        CHECK(capture(all, 2000000, 65536, chunk).data == all);
        CHECK(capture(all, 600000, 65536, chunk).data == expected(all, 600000, 65536));
        CHECK(capture(all, 300000, 200000, chunk).data == expected(all, 300000, 200000));
    }
}

TEST_CASE("output capture: a 64 MiB stream of lines fits its reservation, escapes included") {
    // The head is reserved once, with room for one escape a line: it is
    // never reallocated (a doubling would copy it all and double its RSS).
    const size_t size = 64u << 20;
    OutputCapture c(size + (1u << 20), 65536, OutputCapture::Encoding::JsonEscaped);
    std::string line(63, 'a');
    line += '\n';
    std::string chunk;
    while (chunk.size() < 65536) chunk += line;
    const char* first = nullptr;
    for (size_t done = 0; done < size; done += chunk.size()) {
        c.append(chunk.data(), chunk.size());
        if (done == 1u << 20) first = c.head_data();
    }
    CHECK(c.head_data() == first);
    StreamCapture r = c.finish();
    CHECK_FALSE(r.truncated);
    CHECK(r.data.size() == size + size / 64);  // "\n" for each newline
    CHECK(r.data.capacity() < size + size / 8);
}

TEST_CASE("output capture: JsonEscaped is the raw capture repaired and escaped, however split") {
    // The reply must not depend on how the pipe cut the stream: a UTF-8
    // sequence, an invalid byte or a control character may straddle any
    // read, the head/marker boundary or the tail ring's wrap.
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    auto rnd = [&seed] {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        return seed;
    };
    const std::string pieces[] = {"a", "\n", "\"", "\\", "\x01", "\x7f", "\xc3\xa9",
                                  "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\xed\xa0\x80",
                                  "\xc3", "\xe2\x82", "\xf0\x9f", "\x80", "\xff", "\xc0\xaf"};
    for (int round = 0; round < 400; ++round) {
        std::string all;
        size_t len = rnd() % 3000;
        while (all.size() < len) all += pieces[rnd() % (sizeof pieces / sizeof pieces[0])];
        size_t max = 1 + rnd() % 2500, tail = rnd() % 700, chunk = 1 + rnd() % 300;
        CAPTURE(round);
        StreamCapture raw = capture(all, max, tail, chunk);
        OutputCapture c(max, tail, OutputCapture::Encoding::JsonEscaped);
        for (size_t i = 0; i < all.size(); i += chunk)
            c.append(all.data() + i, std::min(chunk, all.size() - i));
        StreamCapture esc = c.finish();
        CHECK(esc.escaped);
        CHECK(esc.total == raw.total);
        // The same bytes however the stream was cut into reads.
        OutputCapture bytewise(max, tail, OutputCapture::Encoding::JsonEscaped);
        for (char ch : all) bytewise.append(&ch, 1);
        StreamCapture one = bytewise.finish();
        CHECK(one.data == esc.data);
        CHECK(one.truncated == esc.truncated);
        // The cap counts escaped bytes: the head ends within 12 of it.
        size_t head_cap = tail >= max ? 0 : max - tail;
        std::string marker_esc;
        json::append_escaped(marker_esc, OutputCapture::marker(all.size()));
        CHECK(esc.data.size() <= head_cap + 12 + marker_esc.size() + 12 * std::min(tail, max));
        std::string want;
        json::append_escaped(want, json::string_from_bytes(raw.data));
        if (!raw.truncated && want.size() <= head_cap) {
            // Fits escaped as well: kept whole, exactly.
            CHECK_FALSE(esc.truncated);
            CHECK(esc.data == want);
        }
        if (raw.truncated) CHECK(esc.truncated);
    }
}

TEST_CASE("output capture: JsonEscaped caps what it keeps, escaped") {
    // 1 MiB of control bytes under a 64 KiB cap: "\u0001" each, so at most
    // about 64 KiB of them, not 6x the cap.
    const size_t max = 64 * 1024, tail = 4096;
    std::string ctl(1 << 20, '\x01');
    OutputCapture c(max, tail, OutputCapture::Encoding::JsonEscaped);
    for (size_t i = 0; i < ctl.size(); i += 65536) c.append(ctl.data() + i, 65536);
    StreamCapture s = c.finish();
    CHECK(s.truncated);
    CHECK(s.total == ctl.size());
    CHECK(s.data.size() <= max - tail + 12 + 64 + 6 * tail);
    CHECK(s.data.rfind("\\u0001\\u0001", 0) == 0);
    // Plain text still keeps the whole head.
    std::string text(200000, 'x');
    OutputCapture t(max, tail, OutputCapture::Encoding::JsonEscaped);
    t.append(text.data(), text.size());
    StreamCapture ts = t.finish();
    CHECK(ts.data.rfind(std::string(max - tail, 'x') + "\\n[ur-agent: ", 0) == 0);
}

TEST_CASE("output capture: a cut inside a character leaves it out, not U+FFFD") {
    // 4-byte characters after 0..3 ASCII bytes, so that the head's end and
    // the tail's start fall at every offset inside one; read in pieces of
    // every size up to 5 as well.
    const std::string smile = "\xF0\x9F\x98\x80";
    for (size_t lead = 0; lead < 4; ++lead) {
        for (size_t max : {size_t(101), size_t(102), size_t(103), size_t(104)}) {
            for (size_t chunk = 1; chunk <= 5; ++chunk) {
                CAPTURE(lead);
                CAPTURE(max);
                CAPTURE(chunk);
                std::string all(lead, 'a');
                for (int i = 0; i < 1000; ++i) all += smile;
                OutputCapture c(max, 41, OutputCapture::Encoding::JsonEscaped);
                for (size_t i = 0; i < all.size(); i += chunk)
                    c.append(all.data() + i, std::min(chunk, all.size() - i));
                StreamCapture r = c.finish();
                REQUIRE(r.truncated);
                CHECK(r.data.find("\\ufffd") == std::string::npos);
                // What is shown plus what the marker says was cut is all of it.
                size_t at = r.data.find("[ur-agent: ");
                REQUIRE(at != std::string::npos);
                uint64_t cut = std::stoull(r.data.substr(at + 11));
                size_t shown_chars = 0, pos = 0;
                while ((pos = r.data.find("\\ud83d\\ude00", pos)) != std::string::npos) {
                    ++shown_chars;
                    pos += 12;
                }
                CHECK(lead + 4 * shown_chars + cut == all.size());
            }
        }
    }
}

TEST_CASE("output capture: a note is appended in the capture's encoding") {
    StreamCapture raw;
    raw.data = "x";
    ur::append_note(raw, "ur-agent: \"q\"\n");
    CHECK(raw.data == "xur-agent: \"q\"\n");
    StreamCapture esc;
    esc.escaped = true;
    esc.data = "x";
    ur::append_note(esc, "ur-agent: \"q\" \xff\n");
    CHECK(esc.data == "xur-agent: \\\"q\\\" \\ufffd\\n");
}

TEST_CASE("output capture: a note line goes on a line of its own, with no blank line before it") {
    auto raw_after = [](const std::string& data) {
        StreamCapture c;
        c.data = data;
        ur::append_note_line(c, "ur-agent: note");
        return c.data;
    };
    CHECK(raw_after("") == "ur-agent: note\n");  // bug: "\nur-agent: ..." on an empty stderr
    CHECK(raw_after("out\n") == "out\nur-agent: note\n");
    CHECK(raw_after("out") == "out\nur-agent: note\n");
    auto esc_after = [](const std::string& data) {
        StreamCapture c;
        c.escaped = true;
        c.data = data;
        ur::append_note_line(c, "ur-agent: note");
        return c.data;
    };
    CHECK(esc_after("") == "ur-agent: note\\n");
    CHECK(esc_after("out\\n") == "out\\nur-agent: note\\n");
    CHECK(esc_after("out") == "out\\nur-agent: note\\n");
    // An escaped backslash then 'n' is not a newline; an escaped backslash
    // then an escaped newline is.
    CHECK(esc_after("a\\\\n") == "a\\\\n\\nur-agent: note\\n");
    CHECK(esc_after("a\\\\\\n") == "a\\\\\\nur-agent: note\\n");
}
