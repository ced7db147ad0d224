"""Real RabbitMQ outages: the agent against the private test node (and, for
the cluster test, two extra nodes of its own).

  stop_app/start_app while a script runs  -> its reply arrives after
  kill -STOP of the broker (heartbeat 2)   -> peer declared dead, reconnect
  restart cycles (UR_OUTAGE_CYCLES, 20)    -> no crash, no fd growth, no
                                              zombie; median recovery printed
  delete_queue of the request queue        -> consuming again within seconds
  memory alarm while a script runs         -> reply held, delivered after
  two-node cluster, stop the agent's node  -> served by the other

Replies are read from a durable queue (it survives stop_app) through a
pika connection that reconnects, so nothing published while the test's
client was away is missed.  Every test that stops or freezes the shared
node brings it back in a finally clause and waits until it serves.
"""

import json
import os
import signal
import statistics
import subprocess
import time

import pika

from test_lifecycle import agent_connection

from urharness import (AgentTestCase, RABBITMQ_PORT, RABBITMQ_NODE, ROOT,
                       WAIT, fd_count, free_port_pair, port_accepts,
                       rabbitmqctl, random_token, wait_until, wall_of,
                       zombie_children)

CYCLES = int(os.environ.get("UR_OUTAGE_CYCLES", "20"))
RABBITMQ_SH = os.path.join(ROOT, "tests", "rabbitmq.sh")


def report(what, seconds):
    print("\n    RECOVERY %s: %.3f s" % (what, seconds), end=" ", flush=True)


class DurableClient:
    """A requester whose reply queue is durable (not exclusive): it outlives
    broker restarts and this client's own connection.  Every operation
    reconnects (bounded) when the connection was lost."""

    def __init__(self, port, uuid):
        self.port = int(port)
        self.uuid = uuid
        self.client_id = random_token()
        self.queue = "ur-outage-" + random_token()
        self.conn = self.ch = None
        self.buffer = []
        self._with_conn(self._declare)

    def _declare(self, ch):
        ch.queue_declare(self.queue, durable=True, auto_delete=False)
        for key in ("ur.execute-reply.%s.*" % self.uuid,
                    "ur.sysinfo.%s.*" % self.uuid,
                    "ur.startup.%s" % self.uuid,
                    "ur.ack%s.%s" % (self.client_id, self.uuid)):
            ch.queue_bind(self.queue, "amq.topic", key)

    def _with_conn(self, op, timeout=60):
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.conn is None or not self.conn.is_open:
                    self.conn = pika.BlockingConnection(
                        pika.ConnectionParameters(
                            "127.0.0.1", self.port, heartbeat=0,
                            blocked_connection_timeout=WAIT))
                    self.ch = self.conn.channel()
                return op(self.ch)
            except (pika.exceptions.AMQPError, OSError) as e:
                self.close()
                if time.monotonic() > deadline:
                    raise AssertionError("broker on %d unusable: %r"
                                         % (self.port, e))
                time.sleep(0.2)

    def close(self):
        try:
            if self.conn is not None and self.conn.is_open:
                self.conn.close()
        except Exception:
            pass
        self.conn = self.ch = None

    def delete(self):
        try:
            self._with_conn(lambda ch: ch.queue_delete(self.queue), timeout=5)
        except AssertionError:
            pass
        self.close()

    def publish(self, key, body):
        data = json.dumps(body).encode("utf-8")
        props = pika.BasicProperties(content_type="application/json")
        self._with_conn(lambda ch: ch.basic_publish("amq.topic", key, data,
                                                    props))

    def send(self, script, req=None):
        req = req or random_token()
        self.publish("ur.execute.%s.%s" % (self.uuid, req),
                     {"type": "script", "script": script, "args": [],
                      "env": {}})
        return req

    def _fetch(self, ch):
        while True:
            method, props, body = ch.basic_get(self.queue, auto_ack=True)
            if method is None:
                return
            self.buffer.append((method.routing_key, props, body))

    def wait_key(self, key, timeout=WAIT):
        """The body (JSON-decoded) of the first message with routing key
        key; AssertionError after timeout seconds."""
        deadline = time.monotonic() + timeout
        while True:
            for i, (k, props, body) in enumerate(self.buffer):
                if k == key:
                    del self.buffer[i]
                    if props.content_type != "application/json":
                        raise AssertionError("%s: content-type %r"
                                             % (k, props.content_type))
                    return json.loads(body)
            if time.monotonic() > deadline:
                raise AssertionError("timed out after %.0fs waiting for %s"
                                     % (timeout, key))
            self._with_conn(self._fetch, timeout=max(
                1, deadline - time.monotonic()))
            time.sleep(0.05)

    def reply(self, req, timeout=WAIT):
        return self.wait_key("ur.execute-reply.%s.%s" % (self.uuid, req),
                             timeout)

    def count(self, prefix):
        self._with_conn(self._fetch)
        return len([k for k, _, _ in self.buffer if k.startswith(prefix)])


class Outage(AgentTestCase):

    def setUp(self):
        super().setUp()
        self.client.close()  # the base class's; it would not survive

    # -- helpers ---------------------------------------------------------

    def agent(self, heartbeat=2, port=None, args=(), **kw):
        brokers = ["--broker", "127.0.0.1:%s" % (port or RABBITMQ_PORT)]
        a = self.new_agent(args=brokers + ["--heartbeat", str(heartbeat),
                                           "--log-level", "debug"]
                           + list(args), **kw).start()
        c = DurableClient(port or RABBITMQ_PORT, a.uuid)
        self.addCleanup(c.delete)
        a.wait_log_n("serving requests", 1)
        r = c.reply(c.send("#!/bin/sh\necho up\n"))
        self.assertEqual(r.get("stdout"), "up\n", r)
        # A slow (e.g. ASan) agent may publish its first ur.startup after our
        # queue was bound: forget it, the tests count re-sends after outages.
        c.count("ur.startup.")
        c.buffer[:] = [m for m in c.buffer if not m[0].startswith("ur.startup.")]
        return a, c

    def held(self, c, tag="held", limit=600):
        """Sends a script that waits (at most limit/20 s) for a release
        file, then prints a line; returns (req, release, pid)."""
        started, release = self.path(tag + ".started"), self.path(
            tag + ".release")
        script = ("#!/bin/sh\necho $$ > %s.tmp && /bin/mv %s.tmp %s\n"
                  "n=0\nwhile [ ! -e %s ] && [ $n -lt %d ]; do "
                  "/bin/sleep 0.05; n=$((n+1)); done\necho '%s done'\n"
                  % (started, started, started, release, limit, tag))
        req = c.send(script)
        wait_until(lambda: os.path.exists(started), what="script started")
        pid = int(open(started).read())
        self.pids_to_kill.append(pid)
        return req, release, pid

    def ensure_node_up(self):
        """Leaves the shared node running and serving."""
        if not port_accepts(RABBITMQ_PORT):
            rabbitmqctl("start_app", check=False)
        wait_until(lambda: port_accepts(RABBITMQ_PORT), 60,
                   "the test RabbitMQ serving again", interval=0.2)

    def prove_served(self, a, c, what):
        r = c.reply(c.send("#!/bin/sh\necho after %s\n" % what))
        self.assertEqual((r.get("exit_status"), r.get("stdout")),
                         (0, "after %s\n" % what), r)
        self.assertTrue(a.running())

    # -- the tests -------------------------------------------------------

    def test_stop_app_start_app_while_script_runs(self):
        a, c = self.agent()
        req, release, pid = self.held(c)
        # The first ur.startup may reach our queue if the agent published it
        # after the queue was bound (a slow, e.g. ASan, agent): count from here.
        startups0 = c.count("ur.startup.%s" % a.uuid)
        self.addCleanup(self.ensure_node_up)
        rabbitmqctl("stop_app")
        a.wait_log_n("lost the broker connection", 1)
        open(release, "w").close()
        a.wait_log_n("execute finished", 2)  # while the broker is away
        serving0 = a.count_log("serving requests")
        rabbitmqctl("start_app")
        t_back = time.time()
        wait_until(lambda: port_accepts(RABBITMQ_PORT), 60, "port back",
                   interval=0.02)
        t_back = time.time()
        rec = a.wait_log_n("serving requests", serving0 + 1, secs=60)
        report("start_app -> agent serving", max(0.0, wall_of(rec) - t_back))
        r = c.reply(req, timeout=60)
        self.assertEqual((r.get("exit_status"), r.get("stdout")),
                         (0, "held done\n"), r)
        self.prove_served(a, c, "start_app")
        self.assertEqual(c.count("ur.startup.%s" % a.uuid), startups0,
                         "ur.startup re-sent after a reconnect")

    def test_sigstop_broker_peer_declared_dead(self):
        a, c = self.agent(heartbeat=2)
        hb = [r for r in a.logs() if r.get("msg") == "connected to the broker"]
        self.assertEqual(hb[-1].get("heartbeat_s"), 2, hb)
        out = rabbitmqctl("eval", "os:getpid().")
        pid = int(out.strip().strip('"'))
        lost0 = a.count_log("lost the broker connection")
        t0 = time.time()
        os.kill(pid, signal.SIGSTOP)
        try:
            rec = a.wait_log_n("lost the broker connection", lost0 + 1,
                               secs=15)
            dead_after = wall_of(rec) - t0
            self.assertIn("peer dead", rec.get("reason", ""), rec)
            # A little longer than two intervals, then thaw.
            time.sleep(max(0.0, 5.0 - (time.time() - t0)))
        finally:
            os.kill(pid, signal.SIGCONT)
        t_cont = time.time()
        report("SIGSTOP: declared dead after (heartbeat 2 s)", dead_after)
        self.assertGreaterEqual(dead_after, 2.0)
        self.assertLess(dead_after, 7.0)
        rec = a.wait_log_n("serving requests", 2, secs=60)
        report("SIGCONT -> agent serving", wall_of(rec) - t_cont)
        self.prove_served(a, c, "SIGCONT")

    def test_restart_cycles_no_crash_no_leak(self):
        a, c = self.agent()
        self.addCleanup(self.ensure_node_up)
        c.close()
        pid = a.proc.pid
        fds0 = fd_count(pid)
        sync = self.path("cycles")
        os.makedirs(sync)
        os.chmod(sync, 0o777)
        # One rabbitmqctl for all cycles (each costs ~3 s of CLI start):
        # stop_app, a short outage, start_app, then wait for the test to
        # say the agent serves again.
        code = (
            'W = fun Wt(P, T) -> case filelib:is_file(P) orelse T =< 0 of '
            'true -> ok; false -> timer:sleep(20), Wt(P, T - 20) end end, '
            'lists:foreach(fun(I) -> ok = rabbit:stop(), timer:sleep(300), '
            'ok = rabbit:start(), W("%s/served." ++ integer_to_list(I), '
            '60000) end, lists:seq(1, %d)), cycles_done.' % (sync, CYCLES))
        proc = subprocess.Popen([RABBITMQ_SH, "ctl", RABBITMQ_NODE, "eval",
                                 code], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        times = []
        try:
            for i in range(1, CYCLES + 1):
                a.wait_log_n("lost the broker connection", i, secs=60)
                wait_until(lambda: port_accepts(RABBITMQ_PORT, 0.05), 60,
                           "broker back, cycle %d" % i, interval=0.01)
                t_back = time.time()
                rec = a.wait_log_n("serving requests", i + 1, secs=60)
                times.append(max(0.0, wall_of(rec) - t_back))
                open(os.path.join(sync, "served.%d" % i), "w").close()
                self.assertTrue(a.running(), "agent died in cycle %d" % i)
            out, _ = proc.communicate(timeout=60)
            self.assertIn(b"cycles_done", out)
        finally:
            for i in range(1, CYCLES + 1):  # release the loop whatever
                open(os.path.join(sync, "served.%d" % i), "w").close()
        print("\n    cycles: %s" % " ".join("%.2f" % t for t in times),
              end="")
        report("median over %d stop_app/start_app cycles: broker back -> "
               "serving" % CYCLES, statistics.median(times))
        report("max over the cycles", max(times))
        # Each outage is ~2 s: its backoff reaches about 1.6 s, never the
        # 30 s cap carried over from the cycles before.
        self.assertLess(statistics.median(times), 4.0, times)
        self.assertLess(max(times), 10.0, times)
        self.prove_served(a, c, "%d cycles" % CYCLES)
        # The reconnects may leave no descriptor or child behind.
        wait_until(lambda: fd_count(pid) <= fds0, 10,
                   "fd count back to %d (now %d)" % (fds0, fd_count(pid)))
        self.assertEqual(zombie_children(pid), [])
        self.assertEqual(c.count("ur.startup.%s" % a.uuid), 0)

    def test_delete_request_queue(self):
        a, c = self.agent()
        serving0 = a.count_log("serving requests")
        queue = "ur.request.%s.%s" % (a.uuid, a.mac)
        t0 = time.time()
        rabbitmqctl("delete_queue", queue)
        rec = a.wait_log_n("serving requests", serving0 + 1, secs=15)
        report("delete_queue -> consuming again", wall_of(rec) - t0)
        self.assertLess(wall_of(rec) - t0, 10)
        self.prove_served(a, c, "delete_queue")
        self.assertEqual(a.count_log("lost the broker connection"), 0)

    def test_memory_alarm_holds_reply_until_cleared(self):
        a, c = self.agent()
        req, release, pid = self.held(c)
        self.addCleanup(rabbitmqctl, "set_vm_memory_high_watermark", "0.4",
                        check=False)
        rabbitmqctl("set_vm_memory_high_watermark", "0.0000001")
        try:
            open(release, "w").close()
            a.wait_log_n("execute finished", 2)
            a.wait_log(lambda r: "blocked" in r.get("msg", "")
                       and r.get("level") == 40, timeout=30,
                       what="connection.blocked logged")
            time.sleep(1.0)  # proving an absence
            self.assertEqual(c.count("ur.execute-reply.%s.%s"
                                     % (a.uuid, req)), 0,
                             "reply delivered during the alarm")
            self.assertTrue(os.path.exists(release))
        finally:
            rabbitmqctl("set_vm_memory_high_watermark", "0.4")
        t0 = time.time()
        r = c.reply(req, timeout=30)
        report("alarm cleared -> held reply delivered", time.time() - t0)
        self.assertEqual((r.get("exit_status"), r.get("stdout")),
                         (0, "held done\n"), r)
        a.wait_log(lambda r: r.get("msg") == "the broker unblocked publishing",
                   what="unblocked logged")
        self.prove_served(a, c, "the alarm")


    def test_consumer_timeout_closes_the_request_channel_not_the_connection(self):
        # RabbitMQ closes a channel whose delivery stays unacked past its
        # consumer_timeout (a request waiting for a slot), and 3.10 sends
        # that channel.close twice.  The agent took the second for a frame
        # on a closed channel and dropped the connection (504), and with it
        # every request of the node.  A channel reads the limits when it
        # opens: set them before the agent connects.
        for key, default in (("consumer_timeout", 1800000), ("channel_tick_interval", 60000)):
            self.addCleanup(rabbitmqctl, "eval",
                            "application:set_env(rabbit, %s, %d)." % (key, default), check=False)
        rabbitmqctl("eval", "application:set_env(rabbit, consumer_timeout, 5000).")
        rabbitmqctl("eval", "application:set_env(rabbit, channel_tick_interval, 1000).")
        a, c = self.agent(heartbeat=30, args=["--max-concurrency", "1", "--max-queue-wait", "0",
                                             "--max-waiting", "0"])
        # Three at once, as a headnode does (the double close was seen so):
        # one runs, one waits for the slot unacked (--max-waiting 0: none
        # is acked early), one stays in the queue (it goes with the
        # auto-delete queue when the channel closes).
        release = self.path("held.release")
        req = c.send("#!/bin/sh\nwhile [ ! -e %s ]; do /bin/sleep 0.05; done\necho 'held done'\n"
                     % release)
        waiting = c.send("#!/bin/sh\necho waited\n")
        c.send("#!/bin/sh\necho in the queue\n")
        r = c.reply(waiting, timeout=30)
        self.assertIs(r.get("not_run"), True, r)
        self.assertIn("406", r.get("stderr", ""), r)
        a.wait_log_n("serving requests", 2)
        open(release, "w").close()
        r = c.reply(req, timeout=30)
        self.assertEqual((r.get("exit_status"), r.get("stdout")), (0, "held done\n"), r)
        self.assertEqual(a.count_log("lost the broker connection"), 0,
                         "the connection was dropped over the channel's close")
        self.prove_served(a, c, "the consumer timeout")

    def test_reply_over_the_broker_max_message_size_is_cut_to_fit(self):
        # RabbitMQ closes the channel of a publish over max_message_size
        # (16 MiB by default from 4.0).  The agent used to publish the same
        # reply again at once, forever, every later reply stuck behind it.
        # A channel reads the limit when it opens: set it before the agent
        # connects.
        limit = 1 << 20
        self.addCleanup(rabbitmqctl, "eval",
                        "application:set_env(rabbit, max_message_size, 134217728).",
                        check=False)
        rabbitmqctl("eval", "application:set_env(rabbit, max_message_size, %d)." % limit)
        a, c = self.agent()
        big = c.send("#!/bin/sh\n/usr/bin/head -c 3000000 /dev/zero | /usr/bin/tr '\\0' x\n"
                     "echo err >&2\nexit 3\n")
        r = c.reply(big, timeout=30)
        self.assertEqual(r.get("exit_status"), 3, str(r)[:300])
        self.assertIs(r.get("stdout_truncated"), True, str(r)[:300])
        self.assertEqual(r.get("stdout_bytes"), 3000000)
        self.assertIn("larger than the broker takes (%d bytes)" % limit, r["stdout"])
        self.assertTrue(r["stdout"].startswith("x" * 1000))
        self.assertEqual(r.get("stderr"), "err\n")
        # Later replies get through, and the channel was not reopened in a loop.
        self.prove_served(a, c, "a refused reply")
        self.assertLessEqual(a.count_log("closed the publishing channel"), 2)
        # The limit raised, on the next connection replies go whole: the
        # agent kept cutting them to the old limit until it restarted.
        rabbitmqctl("eval", "application:set_env(rabbit, max_message_size, 134217728).")
        old = agent_connection(a)
        rabbitmqctl("close_connection", old, "integ test: limit raised")
        wait_until(lambda: agent_connection(a, check=False) not in (None, old), timeout=60,
                   what="the agent reconnected", interval=0.5)
        r = c.reply(c.send("#!/bin/sh\n/usr/bin/head -c 3000000 /dev/zero | /usr/bin/tr '\\0' x\n"),
                    timeout=30)
        self.assertEqual(r.get("exit_status"), 0, str(r)[:300])
        self.assertNotIn("stdout_truncated", r)
        self.assertEqual(r.get("stdout"), "x" * 3000000)

    def test_a_reply_the_broker_keeps_refusing_is_retried_with_backoff_then_given_up(self):
        # A queue bound to every reply (a dead consumer's), full, with
        # overflow reject-publish: RabbitMQ nacks each reply, yet delivers
        # it to the requester's queue.  The agent published it again every
        # second, forever: a duplicate a second for each requester, and
        # queues growing until a memory alarm.  Now: 1, 2, 4 s, given up.
        a, c = self.agent()
        stale = "ur-integ-stale-" + random_token()
        policy = "ur-integ-" + random_token()
        c._with_conn(lambda ch: ch.queue_declare(stale, durable=False, auto_delete=False))
        self.addCleanup(lambda: c._with_conn(lambda ch: ch.queue_delete(stale), timeout=5))
        c._with_conn(lambda ch: ch.queue_bind(stale, "amq.topic",
                                              "ur.execute-reply.%s.*" % a.uuid))
        rabbitmqctl("set_policy", policy, "^%s$" % stale,
                    '{"max-length":1,"overflow":"reject-publish"}', "--apply-to", "queues")
        self.addCleanup(rabbitmqctl, "clear_policy", policy, check=False)
        c.publish("ur.execute-reply.%s.filler" % a.uuid, {"fill": 1})  # now full
        c.reply("filler")
        req = c.send("#!/bin/sh\necho refused\n")
        self.assertEqual(c.reply(req).get("stdout"), "refused\n")
        a.wait_log(lambda rec: "given up" in rec.get("msg", "") and rec.get("req_id") == req,
                   timeout=20, what="the reply given up")
        time.sleep(2)
        copies = c.count("ur.execute-reply.%s.%s" % (a.uuid, req))
        self.assertLessEqual(copies, 3, "copies after the first: %d" % copies)  # + the first: 4
        time.sleep(3)
        self.assertEqual(c.count("ur.execute-reply.%s.%s" % (a.uuid, req)), copies,
                         "still sent after it was given up")
        self.prove_served(a, c, "a refused reply")

    def test_sysinfo_over_the_broker_max_message_size_is_not_sent_as_an_error_reply(self):
        # Only an execute reply's output can be cut; a sysinfo (heartbeat,
        # start-up, discover answer) over the limit became an execute-reply
        # error body under ur.sysinfo.* and ur.startup.*.  Now it is given
        # up, logged.
        limit = 4096
        self.addCleanup(rabbitmqctl, "eval",
                        "application:set_env(rabbit, max_message_size, 134217728).",
                        check=False)
        rabbitmqctl("eval", "application:set_env(rabbit, max_message_size, %d)." % limit)
        a = self.new_agent(args=["--broker", "127.0.0.1:%s" % RABBITMQ_PORT,
                                 "--sysinfo-interval", "1"])
        info = dict(a.sysinfo, Padding="p" * 8000)
        a.write_sysinfo(info)
        c = DurableClient(RABBITMQ_PORT, a.uuid)
        self.addCleanup(c.delete)
        a.start()
        a.wait_log(lambda rec: "given up" in rec.get("msg", "") and
                   rec.get("routing_key", "").startswith("ur.sysinfo."),
                   timeout=30, what="a sysinfo heartbeat given up")
        r = c.reply(c.send("#!/bin/sh\necho small\n"))
        self.assertEqual(r.get("stdout"), "small\n")
        time.sleep(1.5)
        c.count("")
        for key, _, body in c.buffer:
            self.assertFalse(key.startswith(("ur.sysinfo.", "ur.startup.")),
                             "%s sent: %s" % (key, body[:200]))

class Cluster(AgentTestCase):
    """Two extra RabbitMQ nodes of this test's own, clustered on loopback;
    the shared test node is not touched."""

    def ctl(self, node, *args):
        p = subprocess.run([RABBITMQ_SH, "ctl", node] + list(args),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=120)
        if p.returncode != 0:
            raise AssertionError("rabbitmqctl -n %s %s: %s" % (
                node, " ".join(args), p.stdout.decode(errors="replace")))
        return p.stdout.decode(errors="replace")

    def test_failover_to_the_other_node(self):
        # Node start-up (~20 s each) and clustering alone take about a
        # minute on this machine: this test gets its own, larger bound.
        signal.alarm(300)
        self.client.close()
        tag = "%d" % os.getpid()
        names = ["urclA" + tag, "urclB" + tag]
        ports = []
        starts = []
        for n in names:
            p = free_port_pair(taken=ports)
            ports.append(p)
            starts.append(subprocess.Popen(
                [RABBITMQ_SH, "start", n, str(p)], stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT))
            self.addCleanup(subprocess.run, [RABBITMQ_SH, "stop", n],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, timeout=120)
        for n, s in zip(names, starts):
            out, _ = s.communicate(timeout=150)
            self.assertEqual(s.returncode, 0, "node %s: %s" % (n, out))
        a_node, b_node = names
        self.ctl(b_node, "stop_app")
        self.ctl(b_node, "join_cluster", a_node + "@localhost")
        self.ctl(b_node, "start_app")
        status = self.ctl(a_node, "cluster_status")
        self.assertIn(b_node + "@localhost", status)

        a = self.new_agent(use_env_broker=False, args=[
            "--broker", "127.0.0.1:%d,127.0.0.1:%d" % tuple(ports),
            "--heartbeat", "2", "--log-level", "debug"]).start()
        a.wait_log(lambda r: r.get("msg") == "serving requests", timeout=30,
                   what="serving")
        first = [r for r in a.logs()
                 if r.get("msg") == "connected to the broker"][-1]["broker"]
        self.assertTrue(first.endswith(":%d" % ports[0]), first)
        # The requester lives on the node that stays.
        c = DurableClient(ports[1], a.uuid)
        self.addCleanup(c.delete)
        r = c.reply(c.send("#!/bin/sh\necho before\n"))
        self.assertEqual(r.get("stdout"), "before\n")
        started, release = self.path("s"), self.path("r")
        req = c.send("#!/bin/sh\n: > %s\nn=0\nwhile [ ! -e %s ] && "
                     "[ $n -lt 600 ]; do /bin/sleep 0.05; n=$((n+1)); done\n"
                     "echo survived\n" % (started, release))
        wait_until(lambda: os.path.exists(started), what="script started")

        t0 = time.time()
        self.ctl(a_node, "stop_app")

        def serving_again():
            got = [r for r in a.logs() if r.get("msg") == "serving requests"]
            return got[1] if len(got) >= 2 else None
        rec = wait_until(serving_again, 60, "serving through the other node")
        lost = [r for r in a.logs()
                if r.get("msg") == "lost the broker connection"][0]
        now_on = [r for r in a.logs()
                  if r.get("msg") == "connected to the broker"][-1]["broker"]
        self.assertTrue(now_on.endswith(":%d" % ports[1]), now_on)
        report("cluster failover: connection lost -> serving on the other "
               "node", wall_of(rec) - wall_of(lost))
        self.assertLess(wall_of(rec) - t0, 30)
        open(release, "w").close()
        r = c.reply(req, timeout=30)
        self.assertEqual((r.get("exit_status"), r.get("stdout")),
                         (0, "survived\n"), r)
        # Nothing published after the failover is lost.
        reqs = [c.send("#!/bin/sh\necho n%d\n" % i) for i in range(10)]
        for i, q in enumerate(reqs):
            r = c.reply(q, timeout=30)
            self.assertEqual(r.get("stdout"), "n%d\n" % i, r)
        self.assertTrue(a.running())
