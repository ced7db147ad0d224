"""The Ur messages other than execute: ping, broadcast discovery, routing by
<uuid>-<mac>, the agent's queues, and invalid requests."""

import datetime
import json
import os
import re
import struct
import time

import pika

from urharness import (ISO8601_UTC, WAIT, AgentTestCase, FakeBrokerTestCase,
                       make_sysinfo, rabbitmqctl, random_token, raw_publish, wait_until)


class Ping(AgentTestCase):

    def test_ping_acks_with_req_id_and_iso8601_timestamp(self):
        a = self.start_agent()
        rid, body = self.client.ping(a.uuid)
        self.assertEqual(body.get("req_id"), rid, repr(body))
        ts = body.get("timestamp")
        self.assertIsInstance(ts, str)
        self.assertRegex(ts, ISO8601_UTC)
        when = datetime.datetime.fromisoformat(ts.replace("Z", "+00:00"))
        now = datetime.datetime.now(datetime.timezone.utc)
        self.assertLess(abs((now - when).total_seconds()), 60,
                        "timestamp %s is not now (%s)" % (ts, now))

    def test_first_ping_of_a_client_waits_100_ms_later_ones_do_not(self):
        # A client's first ping may come before its reply binding is in
        # place (urclient does not wait for bind-ok): answered 100 ms after
        # it arrived at the earliest; the next ones at once.
        a = self.start_agent()
        t0 = time.monotonic()
        sent = datetime.datetime.now(datetime.timezone.utc)
        rid, body = self.client.ping(a.uuid)
        self.assertGreaterEqual(time.monotonic() - t0, 0.1)
        self.assertEqual(body.get("req_id"), rid)
        # Its timestamp is "now" when it was answered (PROTOCOL.md), not
        # when it arrived (the ms of the ISO time rounded down: 1 ms slack).
        when = datetime.datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00"))
        self.assertGreaterEqual((when - sent).total_seconds(), 0.099, (body, sent))
        times = []
        for _ in range(5):
            t0 = time.monotonic()
            self.client.ping(a.uuid)
            times.append(time.monotonic() - t0)
        self.assertLess(min(times), 0.1, "no later ping was answered at once: %r" % times)

    def test_many_pings_all_acked(self):
        a = self.start_agent()
        rids = []
        for _ in range(20):
            rid = random_token()
            rids.append(rid)
            self.client.publish("ur.ping.%s" % a.uuid,
                                {"client_id": self.client.client_id,
                                 "id": rid})
        key = "ur.ack%s.%s" % (self.client.client_id, a.uuid)
        got = [self.client.wait_key(key).json()["req_id"] for _ in rids]
        self.assertEqual(sorted(got), sorted(rids))

    def test_ping_id_echoed_as_it_came(self):
        # The original agent sent msg.id back as it was: a number stays one.
        a = self.start_agent()
        key = "ur.ack%s.%s" % (self.client.client_id, a.uuid)
        for rid in (5, 1.5, "7"):
            self.client.publish("ur.ping.%s" % a.uuid,
                                {"client_id": self.client.client_id, "id": rid})
            got = self.client.wait_key(key).json()["req_id"]
            self.assertEqual((type(got), got), (type(rid), rid))


    def test_invalid_pings_do_not_hurt(self):
        a = self.start_agent()
        for body in (b"nope", b"[]", b"null", {"id": "x"},
                     {"client_id": 5, "id": "x"}, {"client_id": "c"},
                     os.urandom(200000)):
            self.client.publish("ur.ping.%s" % a.uuid, body)
        rid, body = self.client.ping(a.uuid)
        self.assertEqual(body.get("req_id"), rid)
        self.assertTrue(a.running())


class Broadcast(AgentTestCase):

    def test_broadcast_sysinfo_replies_with_sysinfo(self):
        a = self.start_agent()
        req = random_token()
        self.client.publish("ur.broadcast.sysinfo.%s" % req, {})
        m = self.client.wait_key("ur.execute-reply.%s.%s" % (a.uuid, req))
        self.assertEqual(m.json(), a.sysinfo)

    def test_discover_finds_every_agent(self):
        agents = [self.start_agent() for _ in range(3)]
        found = self.client.discover(seconds=3)
        for a in agents:
            self.assertIn(a.uuid, found)
            self.assertEqual(found[a.uuid]["UUID"], a.uuid)

    def test_broadcast_answered_no_sooner_than_100_ms(self):
        # See test_urclient: urclient may not have bound its reply queue yet.
        a = self.start_agent()
        req = random_token()
        t0 = time.monotonic()
        self.client.publish("ur.broadcast.sysinfo.%s" % req, {})
        self.client.wait_key("ur.execute-reply.%s.%s" % (a.uuid, req))
        self.assertGreaterEqual(time.monotonic() - t0, 0.1)

    def test_broadcast_sysinfo_is_read_fresh(self):
        a = self.start_agent()
        info = dict(a.sysinfo, Hostname="renamed-node", Setup=True)
        a.write_sysinfo(info)
        req = random_token()
        self.client.publish("ur.broadcast.sysinfo.%s" % req, {})
        m = self.client.wait_key("ur.execute-reply.%s.%s" % (a.uuid, req))
        self.assertEqual(m.json()["Hostname"], "renamed-node")

    def test_broadcast_after_the_uuid_changed_names_the_node_served(self):
        # The reply went out on the start-up UUID's key with the new UUID
        # in its body: urclient's discover, reading the body, listed a node
        # that no agent serves.
        a = self.start_agent()
        a.write_sysinfo(dict(a.sysinfo, UUID="99999999-9999-9999-9999-999999999999",
                             Hostname="renamed"))
        req = random_token()
        self.client.publish("ur.broadcast.sysinfo.%s" % req, {})
        m = self.client.wait_key("ur.execute-reply.%s.%s" % (a.uuid, req))
        self.assertEqual(m.json(), a.sysinfo)
        a.wait_log(lambda rec: rec.get("msg", "").startswith("sysinfo UUID changed"),
                   what="the change said")

    def test_broadcast_when_sysinfo_cannot_be_read_gets_the_last_one(self):
        # urclient's discover reads UUID and Hostname from the body: an
        # error body would list a node with neither.
        a = self.start_agent()
        with open(a.sysinfo_file, "w") as f:
            f.write("{garbage")
        req = random_token()
        self.client.publish("ur.broadcast.sysinfo.%s" % req, {})
        m = self.client.wait_key("ur.execute-reply.%s.%s" % (a.uuid, req))
        body = m.json()
        self.assertEqual(body.get("UUID"), a.uuid, body)
        self.assertEqual(body.get("Hostname"), a.sysinfo["Hostname"], body)
        self.assertNotIn("exit_status", body)
        self.assertTrue(a.running())

    def test_other_broadcast_kinds_ignored_and_agent_serves_on(self):
        a = self.start_agent()
        req = random_token()
        self.client.publish("ur.broadcast.bogus.%s" % req, {})
        r = self.client.execute(a.uuid, "#!/bin/sh\necho ok\n", env={})
        self.assertReply(r, 0, "ok\n")
        stray = self.client.collect(
            lambda m: m.routing_key.endswith("." + req), 0.5)
        self.assertEqual(stray, [], "replied to an unknown broadcast kind")
        self.assertTrue(a.running())


class Routing(AgentTestCase):

    def test_execute_addressed_by_uuid_and_mac(self):
        a = self.start_agent()
        req = self.client.send_execute(a.uuid, "#!/bin/sh\necho mac\n",
                                       env={},
                                       address="%s-%s" % (a.uuid, a.mac))
        r = self.client.wait_reply(a.uuid, req)
        self.assertReply(r, 0, "mac\n")

    def test_uuid_and_mac_used_as_sysinfo_gives_them(self):
        # CNAPI publishes to ur.execute.<the body's UUID> and checks that a
        # ur.sysinfo key holds the body's UUID: upper case must stay so
        # (they were lower-cased).
        uuid = make_sysinfo()["UUID"].upper()
        info = make_sysinfo(uuid=uuid, mac="02:AB:CD:EF:00:01")
        a = self.start_agent(sysinfo=info)
        m = self.client.wait_sysinfo(uuid)
        self.assertEqual(m.json()["UUID"], uuid)
        self.assertReply(self.client.execute(uuid, "#!/bin/sh\necho up\n", env={}), 0, "up\n")
        req = self.client.send_execute(uuid, "#!/bin/sh\necho mac\n", env={},
                                       address="%s-%s" % (uuid, a.mac))
        self.assertReply(self.client.wait_reply(uuid, req), 0, "mac\n")
        rid, body = self.client.ping(uuid)
        self.assertEqual(body.get("req_id"), rid)

    def test_admin_nic_tag_selects_mac(self):
        a = self.start_agent(sysinfo=make_sysinfo(tag="adminx"))
        self.assertIsNotNone(a.mac)
        req = self.client.send_execute(a.uuid, "#!/bin/sh\necho tag\n",
                                       env={},
                                       address="%s-%s" % (a.uuid, a.mac))
        self.assertReply(self.client.wait_reply(a.uuid, req), 0, "tag\n")

    def test_no_admin_nic_still_serves(self):
        a = self.start_agent(sysinfo=make_sysinfo(nics=False))
        r = self.client.execute(a.uuid, "#!/bin/sh\necho nonic\n", env={})
        self.assertReply(r, 0, "nonic\n")
        queues = rabbitmqctl("list_queues", "-q", "--no-table-headers",
                             "name")
        self.assertIn("ur.request.%s" % a.uuid, queues.split())

    def test_queues_declared_as_protocol_says(self):
        a = self.start_agent()
        out = rabbitmqctl("list_queues", "-q", "--no-table-headers", "name",
                          "exclusive", "auto_delete", "durable", "consumers")
        rows = {line.split()[0]: line.split()[1:]
                for line in out.splitlines() if line.strip()}
        req_q = "ur.request.%s.%s" % (a.uuid, a.mac)
        ping_q = "ur.ping.%s" % a.uuid
        self.assertIn(req_q, rows, out)
        self.assertIn(ping_q, rows, out)
        self.assertEqual(rows[req_q][:3], ["true", "true", "false"],
                         "request queue exclusive/auto_delete/durable")
        # Not exclusive on a RabbitMQ that permits it (before 4.3).
        version = tuple(int(x) for x in re.findall(r"\d+", rabbitmqctl("version"))[:2])
        exclusive = "true" if version >= (4, 3) else "false"
        self.assertEqual(rows[ping_q][:3], [exclusive, "true", "false"],
                         "ping queue exclusive/auto_delete/durable (RabbitMQ %s)" % (version,))
        self.assertEqual(rows[req_q][3], "1")
        self.assertEqual(rows[ping_q][3], "1")
        binds = rabbitmqctl("list_bindings", "-q", "--no-table-headers",
                            "source_name", "destination_name",
                            "routing_key")
        keys = {tuple(line.split("\t")[1:]) for line in binds.splitlines()
                if line.startswith("amq.topic\t")}
        for k in ("ur.execute.%s.*" % a.uuid,
                  "ur.execute.%s-%s.*" % (a.uuid, a.mac),
                  "ur.broadcast.*.*"):
            self.assertIn((req_q, k), keys)
        self.assertIn((ping_q, "ur.ping.%s" % a.uuid), keys)

    def test_ping_queue_is_bound_after_the_request_queue_bindings(self):
        # Bindings to amq.topic made at once on two channels contend in
        # RabbitMQ (one waits or is retried): start-up took 1 ms longer at
        # the median and up to 10 ms at the tail.  The ping queue is
        # declared at once but bound only after the request queue's three
        # bind-oks; the proxy sees the order the bytes were forwarded in,
        # so the agent cannot have sent the bind before it read them.
        p = self.proxy(record=True)
        a = self.start_agent(args=["--broker", "127.0.0.1:%d" % p.port])
        with p.lock:
            frames = list(p.frames)
        req_q = "ur.request.%s.%s" % (a.uuid, a.mac)
        ping_q = "ur.ping.%s" % a.uuid

        def index(sender, cls, meth, name=None, ch=None):
            return [i for i, f in enumerate(frames)
                    if f[0] == sender and f[2:4] == (cls, meth)
                    and (name is None or f[4] == name)
                    and (ch is None or f[1] == ch)]
        declares = {frames[i][4]: frames[i][1] for i in index("agent", 50, 10)}
        self.assertIn(req_q, declares, frames)
        self.assertIn(ping_q, declares, frames)
        req_ch, ping_ch = declares[req_q], declares[ping_q]
        self.assertNotEqual(req_ch, ping_ch)
        req_binds = len(index("agent", 50, 20, name=req_q))
        bind_oks = index("broker", 50, 21, ch=req_ch)
        ping_binds = index("agent", 50, 20, name=ping_q)
        self.assertGreaterEqual(req_binds, 2, frames)
        self.assertGreaterEqual(len(bind_oks), req_binds, frames)
        self.assertEqual(len(ping_binds), 1, frames)
        self.assertGreater(ping_binds[0], bind_oks[req_binds - 1], frames)
        # ... and its declare went out with the request queue's, at once.
        self.assertLess(index("agent", 50, 10, name=ping_q)[0], bind_oks[0], frames)
        self.assertEqual(frames[ping_binds[0]][1], ping_ch)
        r = self.client.ping(a.uuid)
        self.assertIsNotNone(r)


    def test_request_consumer_manual_ack_and_prefetch(self):
        a = self.start_agent(args=["--max-concurrency", "3"])
        queue = "ur.request.%s.%s" % (a.uuid, a.mac)
        out = rabbitmqctl("list_consumers", "-q", "--no-table-headers",
                          "queue_name", "channel_pid", "ack_required",
                          "prefetch_count")
        rows = [line.split("\t") for line in out.splitlines()
                if line.split("\t")[0] == queue]
        self.assertEqual(len(rows), 1, out)
        _, chan, ack_required, prefetch = rows[0]
        self.assertEqual(ack_required, "true", "requests must be acked")
        if prefetch == "0":  # basic.qos global: the channel's limit
            chans = rabbitmqctl("list_channels", "-q", "--no-table-headers",
                                "pid", "prefetch_count")
            prefetch = [line.split("\t")[1] for line in chans.splitlines()
                        if line.split("\t")[0] == chan][0]
        self.assertEqual(prefetch, "3", "prefetch != --max-concurrency")

    def test_a_leftover_request_queue_that_is_not_exclusive_is_named(self):
        # A durable ur.request.<uuid>.<mac> left by someone else: RabbitMQ
        # refuses the exclusive declare with 405 RESOURCE_LOCKED for ever.
        # The log named only "another connection" and hid the broker's own
        # text, which says the flags differ.
        a = self.new_agent()
        rq = "ur.request.%s.%s" % (a.uuid, a.mac)
        self.client.ch.queue_declare(rq, durable=True, auto_delete=False)
        self.addCleanup(rabbitmqctl, "delete_queue", rq, check=False)
        a.start()
        rec = a.wait_log(lambda r: r.get("code") == 405, what="the 405 said")
        self.assertEqual(rec.get("level"), 40, rec)
        self.assertIn("not exclusive", rec["msg"])
        self.assertIn("exclusive", rec.get("text", ""), rec)
        time.sleep(3)  # retries at about 0.5, 1.5 and 3.5 s: said once, not at each
        self.assertEqual(len([r for r in a.logs() if r.get("code") == 405 and
                              r.get("level", 0) >= 40]), 1)
        self.client.ch.queue_delete(rq)
        a.wait_log(lambda r: r.get("msg") == "serving requests", timeout=20)
        r = self.client.execute(a.uuid, "#!/bin/sh\necho served\n", env={})
        self.assertReply(r, 0, "served\n")

    def test_a_ping_queue_the_broker_refuses_costs_pings_only(self):
        # ur.ping.<uuid> declared beforehand with other flags (durable): the
        # agent's declare is refused (406).  It shared the request queue's
        # channel, so the request queue went down with it, over and over:
        # the node served nothing.  Now the ping queue has its own channel:
        # requests are served, start-up is announced, and the ping queue is
        # tried again with backoff until it can be declared.
        a = self.new_agent()
        pq = "ur.ping.%s" % a.uuid
        self.client.ch.queue_declare(pq, durable=True, auto_delete=False)
        self.addCleanup(rabbitmqctl, "delete_queue", pq, check=False)
        a.start()
        m = self.client.wait_message(lambda m: m.routing_key == "ur.startup.%s" % a.uuid,
                                     WAIT, "start-up announced")
        self.assertEqual(m.json()["UUID"], a.uuid)
        r = self.client.execute(a.uuid, "#!/bin/sh\necho served\n", env={})
        self.assertReply(r, 0, "served\n")
        rec = a.wait_log(lambda r: r.get("msg", "").startswith("the broker closed the ping channel"))
        self.assertEqual(rec.get("code"), 406, rec)
        time.sleep(2)  # retries at about 0.5, 1.5 and 3.5 s: said once, not at each
        self.assertEqual(len([r for r in a.logs() if r.get("msg", "").startswith(
            "the broker closed the ping channel")]), 1)
        self.client.ch.queue_delete(pq)
        a.wait_log(lambda r: r.get("msg") == "answering pings again", timeout=40)
        rid, body = self.client.ping(a.uuid)
        self.assertEqual(body.get("req_id"), rid)
        r = self.client.execute(a.uuid, "#!/bin/sh\necho still\n", env={})
        self.assertReply(r, 0, "still\n")
        self.assertEqual(a.count_log("serving requests"), 1)


# Invalid requests: body -> description.  Each must be answered with
# exit_status 2 and a one-line reason, and the agent must go on serving.
INVALID = {
    "body_not_json": b"this is {not json",
    "body_not_utf8": b'{"type": "script", "script": "\xff\xfe"}',
    "json_array": b'["type", "script"]',
    "json_string": b'"#!/bin/sh\\necho hi"',
    "json_null": b"null",
    "empty_body": b"",
    "unknown_type": {"type": "bogus", "script": "#!/bin/sh\necho hi\n"},
    "type_not_string": {"type": 7, "script": "#!/bin/sh\necho hi\n"},
    "missing_script": {"type": "script", "args": []},
    "script_not_string": {"type": "script", "script": ["#!/bin/sh"]},
    "missing_file": {"type": "file", "args": []},
    "args_not_array": {"type": "script", "script": "#!/bin/sh\n",
                       "args": "a b"},
    "args_not_strings": {"type": "script", "script": "#!/bin/sh\n",
                         "args": ["a", 1, None]},
    "env_not_object": {"type": "script", "script": "#!/bin/sh\n",
                       "env": ["A=b"]},
    "env_not_strings": {"type": "script", "script": "#!/bin/sh\n",
                        "env": {"A": 1}},
    "deeply_nested": b'{"type": "script", "x": ' + b"[" * 100000
                     + b"]" * 100000 + b"}",
    "garbage_5mib": os.urandom(5 * 1024 * 1024),
}


class InvalidRequests(AgentTestCase):

    def setUp(self):
        super().setUp()
        self.agent = self.start_agent()

    def check_invalid(self, body):
        req = self.client.send_execute(self.agent.uuid, body=body)
        r = self.client.wait_reply(self.agent.uuid, req)
        self.assertReply(r, 2, "")
        reason = r["stderr"]
        self.assertTrue(reason.strip(), "no reason given")
        self.assertNotIn("\n", reason.rstrip("\n"),
                         "reason is more than one line: %r" % reason)
        self.assertLess(len(reason), 1000, "reason too long")
        # ...and the agent serves on.
        ok = self.client.execute(self.agent.uuid, "#!/bin/sh\necho fine\n",
                                 env={})
        self.assertReply(ok, 0, "fine\n")
        self.assertTrue(self.agent.running())

    def test_all_invalid_in_a_row_then_valid(self):
        reqs = [self.client.send_execute(self.agent.uuid, body=b)
                for b in INVALID.values()]
        for name, req in zip(INVALID, reqs):
            r = self.client.wait_reply(self.agent.uuid, req)
            self.assertEqual(r.get("exit_status"), 2, "%s: %r" % (name, r))
        ok = self.client.execute(self.agent.uuid, "#!/bin/sh\necho fine\n",
                                 env={})
        self.assertReply(ok, 0, "fine\n")

    def test_request_without_content_type_is_parsed(self):
        req = random_token()
        body = json.dumps({"type": "script", "script": "#!/bin/sh\necho ct\n",
                           "env": {}})
        self.client.publish("ur.execute.%s.%s" % (self.agent.uuid, req), body,
                            content_type=None)
        self.assertReply(self.client.wait_reply(self.agent.uuid, req), 0,
                         "ct\n")

    def test_request_with_headers_nested_40_deep_is_served(self):
        # RabbitMQ delivers it; the agent decodes tables 32 deep at most and
        # used to close the connection (502), losing every queued request.
        headers = {}
        cur = headers
        for _ in range(40):
            cur["a"] = {}
            cur = cur["a"]
        req = random_token()
        body = json.dumps({"type": "script", "script": "#!/bin/sh\necho deep\n",
                           "env": {}}).encode()
        self.client.ch.basic_publish(
            exchange="amq.topic",
            routing_key="ur.execute.%s.%s" % (self.agent.uuid, req), body=body,
            properties=pika.BasicProperties(content_type="application/json",
                                            headers=headers))
        self.assertReply(self.client.wait_reply(self.agent.uuid, req), 0,
                         "deep\n")
        self.assertEqual(self.agent.count_log("lost the broker connection"), 0)

    def test_lone_surrogate_escape_runs_as_replacement_char(self):
        # JSON.stringify writes a lone surrogate as "\ud800"; the original
        # agent (Node) ran such a request with U+FFFD in its place.
        r = self.client.execute(self.agent.uuid, "#!/bin/sh\necho 'a\ud800b'\n",
                                env={}, args=["x\udc00"])
        self.assertReply(r, 0, "a\ufffdb\n")

    def test_headers_we_cannot_read_are_skipped_not_a_reason_to_drop_the_link(self):
        # RabbitMQ routes these content headers as they were published: a
        # headers value of a type we do not know (the spec's 'L', unsigned
        # 64-bit), alone or in an array; property flag bit 1, which basic
        # does not have.  They closed the connection (502), and the
        # exclusive request queue with every request in it went too.
        def short(b):
            return bytes([len(b)]) + b

        def sized(b):
            return struct.pack(">I", len(b)) + b
        ct = short(b"application/json")
        l_value = b"L" + struct.pack(">Q", 5)
        headers = {
            "L-in-headers": struct.pack(">H", 0xA000) + ct + sized(short(b"x-count") + l_value),
            "L-in-array": struct.pack(">H", 0xA000) + ct + sized(short(b"a") + b"A" + sized(l_value)),
            "bit-1": struct.pack(">H", 0x8002) + ct,
        }
        reqs = {}
        for name, props in headers.items():
            req = "raw-" + name
            raw_publish("ur.execute.%s.%s" % (self.agent.uuid, req),
                        {"type": "script", "script": "#!/bin/sh\necho %s\n" % name,
                         "env": {}}, props)
            reqs[name] = req
        for name, req in reqs.items():
            self.assertReply(self.client.wait_reply(self.agent.uuid, req), 0, name + "\n")
        self.assertEqual(self.agent.count_log("lost the broker connection"), 0,
                         self.agent.log_tail())
        self.assertReply(self.client.execute(self.agent.uuid, "#!/bin/sh\necho x\n", env={}),
                         0, "x\n")

    def test_unknown_fields_ignored(self):
        r = self.client.execute(self.agent.uuid, "#!/bin/sh\necho x\n",
                                env={}, origin={"user": "x", "n": [1, 2]},
                                frobnicate=True)
        self.assertReply(r, 0, "x\n")


def _make_invalid_test(body):
    def test(self):
        self.check_invalid(body)
    return test


for _name, _body in INVALID.items():
    setattr(InvalidRequests, "test_invalid_" + _name,
            _make_invalid_test(_body))


class AckOrder(FakeBrokerTestCase):
    """PROTOCOL.md: a ping is acked "when it has been answered".  The fake
    broker's event lines (--verbose) give the order in which it handled
    the agent's frames.  (Answers held back on purpose, a new client's
    first pings, discovers and invalid requests, are acked at once: the
    queues go with the connection, so an ack after them would change
    nothing.)"""

    def test_a_ping_answered_at_once_is_acked_behind_its_answer(self):
        b = self.start_broker(verbose=True)
        a = self.new_agent([b]).start()
        a.wait_log_n("serving requests", 1)
        ping = "ur.ping." + a.uuid
        b.cmd("publish amq.topic %s %s" % (ping, json.dumps({"client_id": "t", "id": "p1"})))
        # A new client's pings wait until 100 ms after its first for its
        # reply queue's bindings (ping_reply_due): once p1 is answered, p2
        # is answered at once.
        b.wait_count("ur.ackt.%s" % a.uuid, 1)
        b.poll_events()
        del b.events[:]
        b.cmd("publish amq.topic %s %s" % (ping, json.dumps({"client_id": "t", "id": "p2"})))
        b.wait_count("ur.ackt.%s" % a.uuid, 2)
        events = wait_until(lambda: [e for e in b.poll_events() if e.startswith("ack ")] and
                            list(b.events), what="the ping's ack")
        got = [i for i, e in enumerate(events) if e.startswith("publish amq.topic %s " % ping)]
        answered = [i for i, e in enumerate(events)
                    if e.startswith("publish amq.topic ur.ackt.%s " % a.uuid)]
        acked = [i for i, e in enumerate(events) if e.startswith("ack ")]
        self.assertTrue(got and answered and acked, events)
        self.assertLess(got[0], answered[0], events)
        self.assertLess(answered[0], acked[0], "the ping was acked before its answer: %r" % events)
