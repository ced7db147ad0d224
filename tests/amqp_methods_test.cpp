#include <doctest/doctest.h>

#include "amqp/frame.hpp"
#include "amqp/methods.hpp"
#include "tests/amqp_hex.hpp"

using namespace amqp;
using amqp_test::from_hex;
using amqp_test::kPikaVectors;
using amqp_test::pika;
using amqp_test::to_hex;

namespace {

// The payload of a single whole frame.
std::string payload_of(const std::string& frame) {
    REQUIRE(frame.size() >= kFrameOverhead);
    return frame.substr(kFrameHeaderSize, frame.size() - kFrameOverhead);
}

}  // namespace

TEST_CASE("methods: every pika method frame decodes and re-encodes byte for byte") {
    int methods = 0;
    for (const auto& v : kPikaVectors) {
        std::string frame = from_hex(v.hex);
        if (frame[0] != char(kFrameMethod)) continue;
        CAPTURE(v.name);
        Method m;
        std::string why;
        REQUIRE(decode_method(payload_of(frame), m, &why) == DecodeStatus::Ok);
        uint16_t channel = uint16_t(uint8_t(frame[1]) << 8 | uint8_t(frame[2]));
        std::string out;
        encode_method_frame(out, channel, m);
        CHECK(to_hex(out) == to_hex(frame));
        methods++;
    }
    CHECK(methods == 36);
}

TEST_CASE("methods: decoded fields match what pika was given") {
    Method m;
    REQUIRE(decode_method(payload_of(pika("basic_deliver")), m) == DecodeStatus::Ok);
    auto* d = std::get_if<BasicDeliver>(&m);
    REQUIRE(d);
    CHECK(d->consumer_tag == "ctag");
    CHECK(d->delivery_tag == 42);
    CHECK(d->redelivered);
    CHECK(d->exchange == "amq.topic");
    CHECK(d->routing_key == "ur.x");

    REQUIRE(decode_method(payload_of(pika("queue_declare")), m) == DecodeStatus::Ok);
    auto* q = std::get_if<QueueDeclare>(&m);
    REQUIRE(q);
    CHECK(q->queue == "q1");
    CHECK(!q->passive);
    CHECK(!q->durable);
    CHECK(q->exclusive);
    CHECK(q->auto_delete);
    CHECK(!q->nowait);
    REQUIRE(table_find(q->arguments, "x-expires"));
    CHECK(table_find(q->arguments, "x-expires")->i == 60000);

    REQUIRE(decode_method(payload_of(pika("basic_nack")), m) == DecodeStatus::Ok);
    auto* n = std::get_if<BasicNack>(&m);
    REQUIRE(n);
    CHECK(n->delivery_tag == 8);
    CHECK(n->multiple);
    CHECK(!n->requeue);

    REQUIRE(decode_method(payload_of(pika("connection_close")), m) == DecodeStatus::Ok);
    auto* c = std::get_if<ConnectionClose>(&m);
    REQUIRE(c);
    CHECK(c->reply_code == 320);
    CHECK(c->reply_text == "CONNECTION_FORCED - bye");
    CHECK(method_name(m) == std::string("connection.close"));

    REQUIRE(decode_method(payload_of(pika("connection_start_ok")), m) == DecodeStatus::Ok);
    auto* so = std::get_if<ConnectionStartOk>(&m);
    REQUIRE(so);
    CHECK(so->response == std::string("\0guest\0guest", 12));
    const FieldValue* caps = table_find(so->client_properties, "capabilities");
    REQUIRE(caps);
    CHECK(table_find(caps->table, "publisher_confirms")->boolean);
}

TEST_CASE("methods: trailing bytes are 502") {
    std::string p = payload_of(pika("basic_ack")) + "x";
    Method m;
    std::string why;
    CHECK(decode_method(p, m, &why) == DecodeStatus::SyntaxError);
    CHECK(reply_code(DecodeStatus::SyntaxError) == 502);
    CHECK(why.find("basic.ack") != std::string::npos);
}

TEST_CASE("methods: every truncation of every method is 502, never a crash") {
    for (const auto& v : kPikaVectors) {
        std::string frame = from_hex(v.hex);
        if (frame[0] != char(kFrameMethod)) continue;
        std::string p = payload_of(frame);
        for (size_t n = 0; n < p.size(); n++) {
            Method m;
            DecodeStatus st = decode_method(std::string_view(p).substr(0, n), m);
            // Arguments are a fixed sequence, so no proper prefix is valid.
            CHECK(st == DecodeStatus::SyntaxError);
        }
    }
}

TEST_CASE("methods: unknown class or method is 503") {
    Method m;
    std::string why;
    CHECK(decode_method(from_hex("0063 000a"), m, &why) == DecodeStatus::UnknownMethod);
    CHECK(reply_code(DecodeStatus::UnknownMethod) == 503);
    CHECK(decode_method(from_hex("003c 0046 0000 00 00"), m) == DecodeStatus::UnknownMethod);  // basic.get
    CHECK(why == "unknown method 99.10");
}

TEST_CASE("methods: unknown table type inside a method is 502") {
    // queue.declare whose arguments table holds type 'Z'.
    std::string p = from_hex("0032 000a 0000 02 7131 00 00000004 01 61 5a 00");
    Method m;
    CHECK(decode_method(p, m) == DecodeStatus::SyntaxError);
}

TEST_CASE("content header: all 14 properties from pika") {
    std::string frame = pika("header_all_props");
    ContentHeader h;
    std::string why;
    REQUIRE(decode_content_header(payload_of(frame), h, &why) == DecodeStatus::Ok);
    CHECK(h.class_id == 60);
    CHECK(h.body_size == 300);
    const BasicProperties& p = h.properties;
    CHECK(p.content_type == "application/json");
    CHECK(p.content_encoding == "utf-8");
    REQUIRE(p.headers);
    CHECK(table_find(*p.headers, "x-int")->i == 7);
    CHECK(table_find(*p.headers, "x-str")->bytes == "v");
    CHECK(table_find(*p.headers, "x-bool")->boolean);
    CHECK(table_find(*p.headers, "x-neg")->i == -5);
    CHECK(table_find(*p.headers, "x-big")->i == (int64_t(1) << 40));
    CHECK(table_find(*p.headers, "x-list")->array.at(1).bytes == "two");
    CHECK(p.delivery_mode == 2);
    CHECK(p.priority == 9);
    CHECK(p.correlation_id == "corr-1");
    CHECK(p.reply_to == "reply.q");
    CHECK(p.expiration == "60000");
    CHECK(p.message_id == "mid-1");
    CHECK(p.timestamp == 1700000000u);
    CHECK(p.type == "cmd");
    CHECK(p.user_id == "guest");
    CHECK(p.app_id == "ur");
    CHECK(p.cluster_id == "c1");

    std::string out;
    encode_header_frame(out, 1, h);
    CHECK(to_hex(out) == to_hex(frame));

    ContentHeader empty;
    REQUIRE(decode_content_header(payload_of(pika("header_no_props")), empty) == DecodeStatus::Ok);
    CHECK(empty.properties == BasicProperties());
    CHECK(empty.body_size == 0);
}

TEST_CASE("content header: only a payload shorter than its fixed part is an error") {
    std::string p = payload_of(pika("header_all_props"));
    ContentHeader h;
    for (size_t n = 0; n < 14; n++)
        CHECK(decode_content_header(std::string_view(p).substr(0, n), h) == DecodeStatus::SyntaxError);
    // Cut inside the properties: the body size stands, the properties go.
    for (size_t n = 14; n < p.size(); n++) {
        CAPTURE(n);
        REQUIRE(decode_content_header(std::string_view(p).substr(0, n), h) == DecodeStatus::Ok);
        CHECK(h.body_size != 0);
        CHECK(h.properties == BasicProperties());
        CHECK(h.skipped == n - 14);
    }
    ContentHeader whole;
    REQUIRE(decode_content_header(p, whole) == DecodeStatus::Ok);
    CHECK(whole.skipped == 0);
    // Trailing bytes are skipped, the properties kept.
    REQUIRE(decode_content_header(p + "xy", h) == DecodeStatus::Ok);
    CHECK(h.properties == whole.properties);
    CHECK(h.skipped == 2);
}

TEST_CASE("content header: properties basic does not have are skipped, the known ones kept") {
    // content-type "a" (bit 15), reserved bit 1 with 3 bytes of its value.
    std::string bit1 = from_hex("003c 0000 0000000000000007 8002 01 61 aabbcc");
    ContentHeader h;
    REQUIRE(decode_content_header(bit1, h) == DecodeStatus::Ok);
    CHECK(h.body_size == 7);
    CHECK(h.properties.content_type == std::optional<std::string>("a"));
    CHECK(h.skipped == 3);
    // A continuation word (and its properties) after content-type's word.
    std::string cont = from_hex("003c 0000 0000000000000007 8001 8000 01 61 0462636465");
    REQUIRE(decode_content_header(cont, h) == DecodeStatus::Ok);
    CHECK(h.properties.content_type == std::optional<std::string>("a"));
    CHECK(h.skipped == 2 + 5);
    // Continuation words that run off the end: no properties, still a header.
    std::string runoff = from_hex("003c 0000 0000000000000007 8001");
    REQUIRE(decode_content_header(runoff, h) == DecodeStatus::Ok);
    CHECK(h.properties == BasicProperties());
    CHECK(h.body_size == 7);
}

TEST_CASE("content header: a headers table with a field type we do not know is skipped") {
    // headers {"x-count": 'L' (the spec's unsigned 64-bit, which RabbitMQ
    // routes unchanged)}, then delivery-mode 2.
    std::string table = from_hex("00000011 07 782d636f756e74 4c 0000000000000005");
    std::string p = from_hex("003c 0000 0000000000000001 3000") + table + from_hex("02");
    ContentHeader h;
    std::string why;
    REQUIRE_MESSAGE(decode_content_header(p, h, &why) == DecodeStatus::Ok, why);
    CHECK_FALSE(h.properties.headers.has_value());
    CHECK(h.properties.delivery_mode == std::optional<uint8_t>(2));
    CHECK(h.skipped == table.size());
    // The same inside an array and a nested table.
    auto sized = [](const std::string& bytes) {
        uint32_t n = uint32_t(bytes.size());
        return std::string{char(n >> 24), char(n >> 16), char(n >> 8), char(n)} + bytes;
    };
    std::string L = from_hex("4c 0000000000000005"), more = from_hex("01 63 74 01");
    for (std::string t : {sized(from_hex("01 61 41") + sized(L) + more),
                          sized(from_hex("01 61 46") + sized(from_hex("01 62") + L) + more)}) {
        std::string q = from_hex("003c 0000 0000000000000001 3000") + t + from_hex("02");
        REQUIRE(decode_content_header(q, h) == DecodeStatus::Ok);
        CHECK_FALSE(h.properties.headers.has_value());
        CHECK(h.properties.delivery_mode == std::optional<uint8_t>(2));
        CHECK(h.skipped == t.size());
    }
}

TEST_CASE("content header: headers nested too deep are skipped, not a reason to fail") {
    // content-type "a", headers {"a":{"a":{...}}} depth levels, delivery-mode 2.
    auto nested = [](int depth) {
        std::string t;  // innermost: an empty table
        for (int i = 0; i < depth; ++i) {
            std::string entry = std::string("\x01" "a" "F", 3);
            uint32_t n = uint32_t(t.size());
            std::string len = {char(n >> 24), char(n >> 16), char(n >> 8), char(n)};
            entry += len + t;
            t = entry;
        }
        uint32_t n = uint32_t(t.size());
        return std::string{char(n >> 24), char(n >> 16), char(n >> 8), char(n)} + t;
    };
    for (int depth : {kMaxTableDepth - 1, kMaxTableDepth + 8}) {
        CAPTURE(depth);
        std::string table = nested(depth);
        std::string p = from_hex("003c 0000 0000000000000005 b000");  // content-type, headers, delivery-mode
        p += std::string("\x01" "a", 2) + table + std::string("\x02", 1);
        ContentHeader h;
        std::string why;
        REQUIRE_MESSAGE(decode_content_header(p, h, &why) == DecodeStatus::Ok, why);
        CHECK(h.properties.content_type == std::optional<std::string>("a"));
        CHECK(h.properties.delivery_mode == std::optional<uint8_t>(2));
        CHECK(h.body_size == 5);
        if (depth < kMaxTableDepth) {
            CHECK(h.properties.headers.has_value());
            CHECK(h.skipped == 0);
        } else {
            CHECK_FALSE(h.properties.headers.has_value());
            CHECK(h.skipped == table.size());
        }
    }
    // A headers table whose size runs past the header: no properties.
    std::string bad = from_hex("003c 0000 0000000000000009 2000 000000ff 01");
    ContentHeader h;
    REQUIRE(decode_content_header(bad, h) == DecodeStatus::Ok);
    CHECK(h.body_size == 9);
    CHECK(h.properties == BasicProperties());
    CHECK(h.skipped == 5);
}

TEST_CASE("body frames are split at frame_max - 8") {
    std::string body(4096 * 2 + 5, 'b');
    std::string out;
    encode_body_frames(out, 3, body, 4096);
    // 4088 + 4088 + 21 bytes of payload in three frames.
    CHECK(out.size() == body.size() + 3 * kFrameOverhead);
    FrameParser p(4096);
    const char* data = out.data();
    size_t left = out.size();
    std::string joined;
    FrameView f;
    int frames = 0;
    while (p.next(data, left, f) == FrameStatus::Frame) {
        CHECK(f.type == kFrameBody);
        CHECK(f.channel == 3);
        CHECK(f.payload.size() <= 4088);
        joined.append(f.payload);
        frames++;
    }
    CHECK(frames == 3);
    CHECK(joined == body);
    out.clear();
    encode_body_frames(out, 3, "", 4096);
    CHECK(out.empty());
}

TEST_CASE("methods: connection.start captured from RabbitMQ 3.10") {
    std::string frame = from_hex(
#include "tests/vectors/rabbitmq_connection_start.inc"
    );
    REQUIRE(frame.size() > kFrameOverhead);
    CHECK(frame[0] == char(kFrameMethod));
    Method m;
    std::string why;
    REQUIRE(decode_method(payload_of(frame), m, &why) == DecodeStatus::Ok);
    auto* s = std::get_if<ConnectionStart>(&m);
    REQUIRE(s);
    CHECK(s->version_major == 0);
    CHECK(s->version_minor == 9);
    CHECK(s->mechanisms.find("PLAIN") != std::string::npos);
    CHECK(s->locales == "en_US");
    const FieldValue* product = table_find(s->server_properties, "product");
    REQUIRE(product);
    CHECK(product->bytes == "RabbitMQ");
    const FieldValue* caps = table_find(s->server_properties, "capabilities");
    REQUIRE(caps);
    REQUIRE(caps->type == FieldType::Table);
    CHECK(table_find(caps->table, "publisher_confirms")->boolean);
    CHECK(table_find(caps->table, "authentication_failure_close")->boolean);
    std::string out;
    encode_method_frame(out, 0, m);
    CHECK(to_hex(out) == to_hex(frame));
}

// The encoders used to cut a shortstr over 255 bytes and report it in a
// return value nobody read: a publish went out with a truncated key.
TEST_CASE("methods: a shortstr over 255 bytes is refused, not cut; 255 bytes is fine") {
    std::string out = "kept";
    QueueBind b;
    b.queue = "q";
    b.exchange = "amq.topic";
    b.routing_key = std::string(256, 'k');
    CHECK_FALSE(encode_method(b, out));
    CHECK(out == "kept");
    CHECK_FALSE(encode_method_frame(out, 1, b));
    CHECK(out == "kept");
    BasicPublish p;
    p.routing_key = std::string(256, 'k');
    CHECK_FALSE(encode_method_frame(out, 1, p));
    CHECK(out == "kept");

    b.routing_key = std::string(255, 'k');
    REQUIRE(encode_method_frame(out, 1, b));
    Method m;
    REQUIRE(decode_method(payload_of(out.substr(4)), m) == DecodeStatus::Ok);
    CHECK(std::get<QueueBind>(m).routing_key == std::string(255, 'k'));

    ContentHeader h;
    h.properties.correlation_id = std::string(256, 'c');
    out = "kept";
    CHECK_FALSE(encode_content_header(h, out));
    CHECK_FALSE(encode_header_frame(out, 1, h));
    CHECK(out == "kept");
    h.properties.correlation_id = std::string(255, 'c');
    CHECK(encode_header_frame(out, 1, h));
}

TEST_CASE("methods: a reply text over 255 bytes is cut so the close still goes out") {
    ConnectionClose c;
    c.reply_code = 320;
    c.reply_text = std::string(300, 't');
    std::string out;
    REQUIRE(encode_method_frame(out, 0, c));
    Method m;
    REQUIRE(decode_method(payload_of(out), m) == DecodeStatus::Ok);
    CHECK(std::get<ConnectionClose>(m).reply_text == std::string(255, 't'));
    CHECK(std::get<ConnectionClose>(m).reply_code == 320);
}
