#!/usr/bin/env python3
"""Writes the seed corpora fuzz/corpus/<target>/ from the golden vectors.

The AMQP seeds are the bytes RabbitMQ and python3-pika really sent
(tests/vectors/*.inc); the Ur seeds are urclient-style requests.  Each
target's input layout is described at the top of fuzz/<target>.cpp.
Run from the repository root; it rewrites the generated files only.
"""
import json
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VEC = os.path.join(ROOT, "tests", "vectors")
OUT = os.path.join(ROOT, "fuzz", "corpus")
UUID = "00000000-abcd-0000-fedc-ba9876543210"
MAC = "01:23:45:67:89:ab"


def hex_strings(name):
    path = os.path.join(VEC, name)
    if not os.path.exists(path):
        return []
    text = open(path).read()
    return [bytes.fromhex(h) for h in re.findall(r'"([0-9a-f]{8,})"', text)]


def pika_vectors():
    text = open(os.path.join(VEC, "pika_vectors.inc")).read()
    return [(n, bytes.fromhex(h)) for n, h in re.findall(r'\{"(\w+)", "([0-9a-f]+)"\}', text)]


def frames(stream):
    """Splits a byte stream into (type, channel, payload) frames."""
    out = []
    while len(stream) >= 8:
        size = int.from_bytes(stream[3:7], "big")
        out.append((stream[0], int.from_bytes(stream[1:3], "big"), stream[7:7 + size]))
        stream = stream[8 + size:]
    return out


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def table_of(payload, offset):
    """The field table (with its length) at payload[offset:]."""
    size = int.from_bytes(payload[offset:offset + 4], "big")
    return payload[offset:offset + 4 + size]


def main():
    pika = pika_vectors()
    start = hex_strings("rabbitmq_connection_start.inc")[0]
    session = hex_strings("rabbitmq_session.inc")

    # frame_decoder: [frame_max selector][chunk seed] stream
    put("frame_decoder", "rabbitmq-start-bytewise", b"\x00\x00" + start)
    for i, chunk in enumerate(session):
        put("frame_decoder", "rabbitmq-session-%d" % i, bytes([i & 3, (i * 0x47) & 0xFF]) + chunk)
    for i, (name, raw) in enumerate(pika):
        put("frame_decoder", "pika-" + name, bytes([i & 3, (i * 0x35) & 0xFF]) + raw)
    deliver = dict(pika)
    put("frame_decoder", "pika-deliver-header-body", b"\x02\x83" + deliver["basic_deliver"] +
        deliver["header_all_props"] + deliver["body_hello"] + deliver["heartbeat"])

    # amqp_connection: [chunk seed][time step][options] server bytes after
    # the captured handshake (session[0]) and the session's requests
    if session:
        put("amqp_connection", "rabbitmq-session-whole", b"\xc0\x00\x00" + session[1])
        put("amqp_connection", "rabbitmq-session-bytewise", b"\x00\x01\x01" + session[1])
        put("amqp_connection", "rabbitmq-session-chunks", b"\x8b\x10\x00" + session[1])
        put("amqp_connection", "rabbitmq-session-slow", b"\x45\xff\x00" + session[1])
        put("amqp_connection", "rabbitmq-session-and-close", b"\xc7\x00\x00" + session[1] + session[2])
    put("amqp_connection", "silent-server", b"\x00\xff\x00")
    put("amqp_connection", "heartbeats", b"\x46\xff\x01" + deliver["heartbeat"] * 4)
    put("amqp_connection", "pika-delivery", b"\x83\x02\x00" + deliver["basic_deliver"] +
        deliver["header_all_props"] + deliver["body_hello"])
    put("amqp_connection", "pika-delivery-no-props", b"\x21\x00\x01" + deliver["basic_deliver"] +
        deliver["header_no_props"] + deliver["body_hello"] + deliver["basic_deliver"])
    for name in ("connection_close", "connection_blocked", "connection_unblocked", "channel_close",
                 "channel_flow", "basic_cancel", "basic_ack", "basic_nack", "basic_return",
                 "channel_open_ok", "queue_declare_ok", "basic_consume_ok", "connection_close_ok"):
        put("amqp_connection", "pika-" + name, b"\x40\x01\x00" + deliver[name])

    # method_decoder: a method frame payload
    put("method_decoder", "rabbitmq-connection_start", frames(start)[0][2])
    for name, raw in pika:
        for ftype, _, payload in frames(raw):
            if ftype == 1:
                put("method_decoder", "pika-" + name, payload)
    for i, chunk in enumerate(session):
        for j, (ftype, _, payload) in enumerate(frames(chunk)):
            if ftype == 1:
                put("method_decoder", "rabbitmq-session-%d-%d" % (i, j), payload)

    # content_header: a header frame payload
    for name, raw in pika:
        for ftype, _, payload in frames(raw):
            if ftype == 2:
                put("content_header", "pika-" + name, payload)
    for i, chunk in enumerate(session):
        for j, (ftype, _, payload) in enumerate(frames(chunk)):
            if ftype == 2:
                put("content_header", "rabbitmq-session-%d-%d" % (i, j), payload)

    # field_table: [mode: 0 table, 1 array, 2 value] bytes
    server_props = table_of(frames(start)[0][2], 6)
    put("field_table", "rabbitmq-server-properties", b"\x00" + server_props)
    hdr = frames(deliver["header_all_props"])[0][2]
    headers = table_of(hdr, 2 + 2 + 8 + 2 + 1 + 16 + 1 + 5)  # after content type/encoding
    put("field_table", "pika-headers", b"\x00" + headers)
    ex = frames(deliver["exchange_declare"])[0][2]
    put("field_table", "pika-exchange-args", b"\x00" + ex[-(len(ex) - 4 - 2 - 3 - 6 - 1):])
    put("field_table", "array-int-string", b"\x01" + bytes.fromhex("0000000d4900000001530000000374776f"))
    put("field_table", "value-nested", b"\x02F" + bytes.fromhex("00000007016149000000 01".replace(" ", "")))
    put("field_table", "value-decimal", b"\x02D" + bytes.fromhex("0200000539"))
    put("field_table", "value-double", b"\x02d" + bytes.fromhex("400921fb54442d18"))
    put("field_table", "value-bytes", b"\x02x" + bytes.fromhex("00000003010203"))
    put("field_table", "value-void-timestamp", b"\x01" + bytes.fromhex("0000000a5654000000006553f100"))

    # json_parse: small documents
    docs = {
        "execute-script": {"type": "script", "script": "#!/bin/bash\necho hi", "args": [],
                           "env": {}, "origin": {"user": "admin", "hostname": "headnode",
                                                 "ips": ["10.0.0.1"]}},
        "numbers": [0, -1, 1.5, -0.0, 1e308, 5e-324, 9007199254740993, -9223372036854775808,
                    18446744073709551615],
        "strings": ["", "caf\u00e9", "\u2603", "\U0001F600", "tab\tnl\n\"q\"\\", "\u0000"],
        "nested": {"a": [{"b": [[], {}]}, None, True, False]},
        "sysinfo": {"UUID": UUID, "Hostname": "cn1", "Network Interfaces":
                    {"eth0": {"MAC Address": MAC, "NIC Names": ["admin"]}}},
    }
    for name, doc in docs.items():
        put("json_parse", name, json.dumps(doc).encode())
    put("json_parse", "surrogate-escapes", b'["\\ud83d\\ude00","\\u00e9","\\/"]')
    put("json_parse", "whitespace", b' \t\r\n{ "k" : [ 1 , 2 ] }\n')
    put("json_parse", "duplicate-keys", b'{"a":1,"b":2,"a":3}')
    put("json_parse", "exponents", b'[1E2,1e-2,-0.5e+10,123456789012345678901234567890]')

    # json_utf8: [chunk seed] bytes
    put("json_utf8", "ascii", b"\x00hello, world\n")
    put("json_utf8", "multibyte", b"\x40caf\xc3\xa9 \xe2\x98\x83 \xf0\x9f\x98\x80")
    put("json_utf8", "ill-formed", b"\x81\xc0\xaf\xe0\x80\xaf\xed\xa0\x80\xf4\x90\x80\x80\xf8\x88")
    put("json_utf8", "truncated", b"\xc2a\xe2\x98b\xf0\x9f\x98c\xf0\x9f")
    put("json_utf8", "latin1", b"\xc1na\xefve r\xe9sum\xe9")

    # ur_request: routing key NUL body (no NUL: body of an execute to us)
    execute = json.dumps(docs["execute-script"]).encode()
    put("ur_request", "execute-script", b"ur.execute." + UUID.encode() + b".req1\0" + execute)
    put("ur_request", "execute-mac", b"ur.execute." + UUID.encode() + b"-" + MAC.encode() +
        b".9f3a\0" + execute)
    put("ur_request", "execute-body-only", execute)
    put("ur_request", "execute-file", json.dumps(
        {"type": "file", "file": "/opt/smartdc/bin/sdc-vmapi", "args": ["a b", "c"],
         "env": {"PATH": "/usr/bin", "N": 3, "T": True}, "timeout": 60,
         "timestamp": "2024-01-01T00:00:00.000Z"}).encode())
    put("ur_request", "execute-bad-type", b'{"type":"shell","script":"x"}')
    put("ur_request", "execute-other-node",
        b"ur.execute.11111111-abcd-0000-fedc-ba9876543210.r\0" + execute)
    put("ur_request", "ping", b"ur.ping." + UUID.encode() +
        b'\0{"client_id":"urclient-4ad1","id":"7"}')
    put("ur_request", "ping-numeric-id", b"ur.ping." + UUID.encode() +
        b'\0{"client_id":"c","id":12}')
    put("ur_request", "broadcast-sysinfo", b"ur.broadcast.sysinfo.d8f2c1\0{}")
    put("ur_request", "broadcast-unknown", b"ur.broadcast.reboot.d8f2c1\0{}")
    put("ur_request", "startup-key", b"ur.startup." + UUID.encode() + b"\0{}")
    # Regression: a request id long enough to push the reply key past 255.
    key = b"ur.execute." + UUID.encode() + b"."
    put("ur_request", "long-request-id", key + b"r" * (255 - len(key)) + b"\0" +
        b'{"type":"script","script":"x"}')


if __name__ == "__main__":
    main()
