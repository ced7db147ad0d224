"""Drives the fake broker with python3-pika, a client not written here.

Usage: fake_broker_pika.py PORT.  Prints PASS and exits 0 when every check
held; otherwise prints what failed and exits 1.  Run by
tests/fake_broker_test.cpp.
"""
import sys

import pika


def main(port):
    params = pika.ConnectionParameters("127.0.0.1", port, heartbeat=5,
                                       credentials=pika.PlainCredentials("guest", "guest"))
    conn = pika.BlockingConnection(params)
    ch = conn.channel()
    ch.confirm_delivery()
    q = ch.queue_declare("", exclusive=True, auto_delete=True).method.queue
    assert q.startswith("amq.gen-"), q
    ch.queue_bind(q, "amq.topic", "ur.execute.u1.*")
    ch.queue_bind(q, "amq.topic", "ur.broadcast.#")
    json = pika.BasicProperties(content_type="application/json")
    ch.basic_publish("amq.topic", "ur.execute.u1.r1", b'{"a":1}', json)
    ch.basic_publish("amq.topic", "ur.execute.u2.r1", b'{"no":1}', json)
    big = b"0123456789" * 50000  # 500 kB: several body frames each way
    ch.basic_publish("amq.topic", "ur.broadcast.x.y", big, json)
    try:
        ch.basic_publish("amq.topic", "ur.nowhere", b"{}", json, mandatory=True)
        raise AssertionError("mandatory unroutable publish was confirmed")
    except pika.exceptions.UnroutableError:
        pass
    got = []
    for method, props, body in ch.consume(q, inactivity_timeout=3):
        if method is None:
            break
        got.append((method.routing_key, body, props.content_type, method.redelivered))
        ch.basic_ack(method.delivery_tag)
        if len(got) == 2:
            break
    ch.cancel()
    assert got == [("ur.execute.u1.r1", b'{"a":1}', "application/json", False),
                   ("ur.broadcast.x.y", big, "application/json", False)], got[:1]
    try:
        ch.queue_declare("absent", passive=True)
        raise AssertionError("passive declare of an absent queue succeeded")
    except pika.exceptions.ChannelClosedByBroker as e:
        assert e.reply_code == 404, e
    conn.close()
    print("PASS")


if __name__ == "__main__":
    try:
        main(int(sys.argv[1]))
    except Exception as e:  # noqa: BLE001 - report any failure as a test failure
        print("FAIL: %r" % (e,))
        sys.exit(1)
