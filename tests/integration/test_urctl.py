"""urctl, the CLI, against real agents: every command, and every error exit,
through the fake broker (tools/fake-broker) and through the test RabbitMQ.
Also runs tools/demo (what `make demo` runs) so that it cannot rot."""

import json
import os
import select
import signal
import socket
import subprocess
import threading
import time

from urharness import (AGENT, BUILD, RABBITMQ_PORT, ROOT, WAIT, AgentTestCase,
                       make_sysinfo, random_uuid, wait_until)

URCTL = os.path.join(ROOT, BUILD, "urctl")
FAKE_BROKER = os.path.join(ROOT, BUILD, "fake-broker")

# urctl's documented exit codes (urctl --help).
USAGE, BROKER, TIMEOUT, UNKNOWN_NODE = 2, 3, 4, 5


class LineReader:
    """Reads lines from a pipe with a deadline (no blocking forever)."""

    def __init__(self, f):
        self.fd = f.fileno()
        self.buf = b""

    def readline(self, timeout=WAIT):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no line within %.0fs (got %r)"
                                     % (timeout, self.buf))
            r, _, _ = select.select([self.fd], [], [], left)
            if r:
                chunk = os.read(self.fd, 4096)
                if not chunk:
                    raise AssertionError("EOF before a line (got %r)"
                                         % self.buf)
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode("utf-8", "replace")


class FakeBroker:
    """build/fake-broker as a subprocess, control commands on its stdin."""

    def __init__(self):
        self.proc = subprocess.Popen([FAKE_BROKER, "--port", "0"],
                                     stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)
        self.out = LineReader(self.proc.stdout)
        line = self.out.readline()
        if not line.startswith("listening 127.0.0.1:"):
            raise AssertionError("fake-broker said %r" % line)
        self.port = int(line.rsplit(":", 1)[1])

    def command(self, line):
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()
        while True:
            answer = self.out.readline()
            if not answer.startswith("event "):
                return answer

    def stop(self):
        try:
            self.proc.stdin.close()
            self.proc.wait(WAIT)
        except Exception:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


class UrctlCases:
    """The tests; a subclass says which broker (self.port) they go through."""

    needs_rabbitmq = False

    def urctl(self, *args, stdin=None, timeout=WAIT + 30):
        """Runs urctl with the broker in its environment; returns
        (exit status, stdout, stderr)."""
        env = {"PATH": "/usr/bin:/bin", "USER": "integ",
               "AMQP_HOST": "127.0.0.1", "AMQP_PORT": str(self.port)}
        p = subprocess.run([URCTL] + list(args), env=env,
                           input=stdin.encode() if stdin else None,
                           stdin=None if stdin else subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=timeout)
        return (p.returncode, p.stdout.decode("utf-8", "replace"),
                p.stderr.decode("utf-8", "replace"))

    def json_lines(self, out):
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def urctl_agent(self, uuid=None, hostname=None):
        """An agent on self.port, awaited until urctl finds it by discover
        and by ping."""
        sysinfo = make_sysinfo(uuid or random_uuid())
        if hostname:
            sysinfo["Hostname"] = hostname
        a = self.new_agent(sysinfo=sysinfo,
                           env={"AMQP_PORT": str(self.port)},
                           args=["--shutdown-grace", "1"]).start()

        def ready():
            if not a.running():
                raise AssertionError("agent exited; log:\n" + a.log_tail())
            rc, out, _ = self.urctl("discover", "--json", "--timeout", "0.3")
            if rc != 0 or a.uuid not in out:
                return False
            return self.urctl("ping", a.uuid, "--timeout", "1")[0] == 0
        wait_until(ready, what="agent %s found by urctl" % a.uuid)
        a.hostname = a.sysinfo["Hostname"]
        return a

    # -- ping, discover ---------------------------------------------------

    def test_ping(self):
        a = self.urctl_agent()
        rc, out, err = self.urctl("ping", a.uuid)
        self.assertEqual(rc, 0, err)
        self.assertIn(a.uuid + " is alive", out)
        rc, out, err = self.urctl("ping", a.uuid.upper(), "--json")
        self.assertEqual(rc, 0, err)
        [v] = self.json_lines(out)
        self.assertEqual(v["uuid"], a.uuid)
        self.assertIsInstance(v["rtt_ms"], int)
        self.assertTrue(v["timestamp"].endswith("Z"), v)
        rc, out, err = self.urctl("ping", a.hostname)
        self.assertEqual(rc, 0, err)
        self.assertIn(a.uuid, out)

    def test_node_whose_uuid_is_upper_case(self):
        # Its routing keys hold the UUID as its sysinfo has it; urctl
        # addresses it so, and finds it typed in either case.
        a = self.urctl_agent(random_uuid().upper())
        for name in (a.uuid, a.uuid.lower()):
            rc, out, err = self.urctl("ping", name, "--json")
            self.assertEqual(rc, 0, err)
            self.assertEqual(self.json_lines(out)[0]["uuid"], a.uuid)
            rc, out, err = self.urctl("exec", name, "echo hi")
            self.assertEqual((rc, out), (0, "hi\n"), err)

    def test_ping_unknown_node_exits_5(self):
        # With an agent on the broker, as in any datacenter: it answers the
        # discover that looks for the UUID in another case, so that
        # discover ends at --find-timeout, not at --timeout.
        self.urctl_agent()
        t0 = time.monotonic()
        rc, out, err = self.urctl("ping", random_uuid(), "--timeout", "20",
                                  "--json")
        self.assertEqual(rc, UNKNOWN_NODE, err)
        self.assertIn("unknown node", err)
        self.assertEqual(self.json_lines(out)[0]["error"], "unknown-node")
        # Nothing is bound to its key: the broker returns the mandatory
        # publish at once, and the discover ends at --find-timeout (3 s),
        # well before the timeout.
        self.assertLess(time.monotonic() - t0, 10)
        rc, _, err = self.urctl("ping", "no-such-host", "--timeout", "0.5")
        self.assertEqual(rc, UNKNOWN_NODE, err)

    def test_ping_of_an_agent_that_does_not_answer_is_a_timeout(self):
        # An agent listens (its ping queue is bound) but is stopped: exit
        # 4, told apart from a node no agent serves (5).
        a = self.urctl_agent()
        os.kill(a.proc.pid, signal.SIGSTOP)
        try:
            rc, out, err = self.urctl("ping", a.uuid, "--timeout", "1")
            rc2, _, err2 = self.urctl("exec", a.uuid, "--find-timeout", "1", "echo hi")
        finally:
            os.kill(a.proc.pid, signal.SIGCONT)
        self.assertEqual(rc, TIMEOUT, err)
        self.assertIn("no ping reply from %s within 1 s (an agent listens for its pings)"
                      % a.uuid, err)
        # exec finds the node by the same ping.
        self.assertEqual(rc2, TIMEOUT, err2)
        self.assertIn("(an agent listens for its pings)", err2)

    def test_discover(self):
        a = self.urctl_agent()
        rc, out, err = self.urctl("discover", "--timeout", "1", "--json")
        self.assertEqual(rc, 0, err)
        mine = [v for v in self.json_lines(out) if v["uuid"] == a.uuid]
        self.assertEqual(len(mine), 1, out)
        self.assertEqual(mine[0]["hostname"], a.hostname)
        self.assertEqual(mine[0]["sysinfo"]["UUID"], a.uuid)
        self.assertEqual(mine[0]["datacenter"], "integ-1")
        rc, out, err = self.urctl("discover", "--timeout", "1")
        self.assertEqual(rc, 0, err)
        self.assertTrue(out.startswith("UUID "), out)
        row = [line for line in out.splitlines() if a.uuid in line]
        self.assertEqual(len(row), 1, out)
        self.assertIn(a.hostname, row[0])

    def test_discover_expect_ends_at_n_nodes_or_exits_4(self):
        a = self.urctl_agent()
        # One node expected: over as soon as one answers, not at --timeout.
        t0 = time.monotonic()
        rc, out, err = self.urctl("discover", "--json", "--timeout", "30",
                                  "--expect", "1")
        took = time.monotonic() - t0
        self.assertEqual(rc, 0, err)
        self.assertGreaterEqual(len(self.json_lines(out)), 1, out)
        self.assertLess(took, 15, "sat out --timeout 30 with --expect 1")
        # More than will answer: the whole window, the nodes seen, exit 4.
        t0 = time.monotonic()
        rc, out, err = self.urctl("discover", "--json", "--timeout", "1",
                                  "--expect", "100000")
        took = time.monotonic() - t0
        self.assertEqual(rc, TIMEOUT, err)
        self.assertIn("of the 100000 expected nodes answered a discover "
                      "within 1 s", err)
        vs = self.json_lines(out)
        self.assertIn(a.uuid, [v.get("uuid") for v in vs], out)
        self.assertEqual(vs[-1].get("error"), "timeout", out)
        self.assertGreaterEqual(took, 0.9)

    # -- exec -------------------------------------------------------------

    def test_exec(self):
        a = self.urctl_agent()
        script = ('echo "args: $*"; echo "FOO=$FOO"; '
                  'echo "HOME=${HOME-unset}"; echo oops >&2; exit 7')
        rc, out, err = self.urctl("exec", a.hostname, "--env", "FOO=b a r",
                                  script, "--", "one", "two words")
        self.assertEqual(rc, 7, err)
        # env is {} unless --env adds: HOME (set for the agent) is unset.
        self.assertEqual(out, "args: one two words\nFOO=b a r\nHOME=unset\n")
        self.assertEqual(err, "oops\n")

        rc, out, err = self.urctl("exec", a.uuid, "--json", "echo hi")
        self.assertEqual(rc, 0, err)
        [v] = self.json_lines(out)
        self.assertEqual((v["uuid"], v["exit_status"], v["stdout"],
                          v["stderr"]), (a.uuid, 0, "hi\n", ""))

        rc, out, err = self.urctl("exec", a.uuid, "-", "--", "x",
                                  stdin="#!/bin/sh\necho from stdin $1\n")
        self.assertEqual((rc, out), (0, "from stdin x\n"), err)
        # Nothing on stdin (a heredoc that expanded to nothing): no run.
        rc, out, err = self.urctl("exec", a.uuid, "-")
        self.assertEqual((rc, out), (USAGE, ""), err)
        self.assertIn("the script read from stdin is empty", err)

        rc, out, err = self.urctl("exec", a.uuid, "--file", "/bin/echo",
                                  "--", "x", "y")
        self.assertEqual((rc, out), (0, "x y\n"), err)

    def test_exec_kill_after_is_the_agent_side_timeout(self):
        a = self.urctl_agent()
        rc, out, err = self.urctl("exec", a.uuid, "--json", "--kill-after",
                                  "1", "--timeout", "20", "sleep 30")
        [v] = self.json_lines(out)
        self.assertTrue(v.get("timed_out"), v)
        self.assertEqual(rc, v["exit_status"])
        self.assertGreater(rc, 128, v)

    def test_exec_errors(self):
        a = self.urctl_agent()
        t0 = time.monotonic()
        rc, out, err = self.urctl("exec", random_uuid(), "echo")
        self.assertEqual(rc, UNKNOWN_NODE, err)
        self.assertIn("unknown node", err)
        rc, _, err = self.urctl("exec", "no-such-host", "--find-timeout",
                                "0.5", "echo")
        self.assertEqual(rc, UNKNOWN_NODE, err)
        self.assertLess(time.monotonic() - t0, 10)

        t0 = time.monotonic()
        rc, out, err = self.urctl("exec", a.uuid, "--timeout", "0.5",
                                  "--json", "sleep 8")
        self.assertEqual(rc, TIMEOUT, err)
        self.assertIn("no reply", err)
        self.assertEqual(self.json_lines(out)[0]["error"], "timeout")
        self.assertLess(time.monotonic() - t0, 6)  # not the script's 8 s

        for args in (["exec"], ["exec", a.uuid], ["exec", a.uuid, "x", "y"],
                     ["exec", a.uuid, "--env", "novalue", "x"], ["bogus"],
                     ["exec", a.uuid, "--timeout", "soon", "x"]):
            rc, out, err = self.urctl(*args)
            self.assertEqual(rc, USAGE, "%s: %s" % (args, err))
            self.assertIn("urctl: ", err)

    def test_output_that_cannot_be_written_is_an_error(self):
        # urctl exec into a full disk left part of the output, said nothing
        # and exited 0 (the script's status); discover, oneach and --help
        # did the same.  A write error is said and is exit 1.
        a = self.urctl_agent()
        env = {"PATH": "/usr/bin:/bin", "USER": "integ",
               "AMQP_HOST": "127.0.0.1", "AMQP_PORT": str(self.port)}
        for args in (["exec", a.uuid, "echo hi"], ["exec", a.uuid, "--json", "echo hi"],
                     ["discover", "--expect", "1", "--timeout", "5"],
                     ["oneach", "--nodes", a.uuid, "--find-timeout", "1", "echo hi"],
                     ["--help"], ["--version"]):
            with open("/dev/full", "wb") as full:
                p = subprocess.run([URCTL] + args, env=env, stdin=subprocess.DEVNULL,
                                   stdout=full, stderr=subprocess.PIPE, timeout=WAIT + 30)
            err = p.stderr.decode("utf-8", "replace")
            self.assertEqual(p.returncode, 1, "%s: %s" % (args, err))
            self.assertIn("urctl: cannot write", err, args)
            self.assertIn("No space left on device", err, args)
        # A reader that goes away (| head) took what it wanted: no error.
        p = subprocess.Popen([URCTL, "exec", a.uuid, "seq 300000"], env=env,
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        p.stdout.read(10)
        p.stdout.close()
        err = p.stderr.read().decode("utf-8", "replace")
        self.assertEqual((p.wait(WAIT), err), (0, ""))
        with open("/dev/full", "wb") as full:
            p = subprocess.run([AGENT, "--help"], stdout=full, stderr=subprocess.PIPE)
        self.assertEqual(p.returncode, 1)
        self.assertIn(b"ur-agent: cannot write to stdout: No space left", p.stderr)
        # Closed: the agent's /dev/null in its place took the text.
        for args in (["--help"], ["--version"]):
            p = subprocess.run([AGENT] + args, stderr=subprocess.PIPE,
                               preexec_fn=lambda: os.close(1))
            self.assertEqual((p.returncode, p.stderr), (
                1, b"ur-agent: cannot write to stdout: it is closed\n"), args)

    # -- oneach -----------------------------------------------------------

    def test_oneach(self):
        a, b = self.urctl_agent(), self.urctl_agent()
        names = "%s,%s" % (a.hostname, b.uuid)
        rc, out, err = self.urctl("oneach", "--nodes", names,
                                  "--find-timeout", "1",
                                  'echo "hello $1"', "--", "there")
        self.assertEqual(rc, 0, err)
        lines = out.splitlines()
        self.assertTrue(lines[0].startswith("HOSTNAME"), out)
        for node in (a, b):
            [row] = [x for x in lines if node.uuid in x]
            self.assertIn(node.hostname, row)
            self.assertIn("exit 0", row)
            self.assertTrue(row.endswith("hello there"), row)
        self.assertEqual(lines[-1], "2 nodes: 2 ok, 0 failed, 0 no reply")

        rc, out, err = self.urctl("oneach", "--nodes", names, "--json",
                                  "--find-timeout", "1",
                                  "echo $FOO; exit 1", "--env", "FOO=x")
        self.assertEqual(rc, 1, err)
        vs = self.json_lines(out)
        self.assertEqual(sorted(v["uuid"] for v in vs[:2]),
                         sorted([a.uuid, b.uuid]))
        self.assertTrue(all(v["stdout"] == "x\n" for v in vs[:2]), vs)
        self.assertEqual(vs[2], {"summary": {"nodes": 2, "ok": 0,
                                             "failed": 2, "no_reply": 0}})

        # The discover ends once every named node has answered, not at
        # --find-timeout, when they are named by UUID.
        t0 = time.monotonic()
        rc, out, err = self.urctl("oneach", "--nodes", "%s,%s" % (a.uuid, b.uuid),
                                  "--find-timeout", "30", "true")
        self.assertEqual(rc, 0, err)
        self.assertLess(time.monotonic() - t0, 15,
                        "sat out --find-timeout 30 with every node found")
        # --expect that cannot be met: exit 4 and nothing runs.
        rc, out, err = self.urctl("oneach", "--expect", "100000",
                                  "--find-timeout", "1", "echo ran")
        self.assertEqual(rc, TIMEOUT, err)
        self.assertIn("ran nothing", err)
        self.assertEqual(out, "")

        rc, out, err = self.urctl("oneach", "--nodes", "ghost," + a.hostname,
                                  "--find-timeout", "1", "true")
        self.assertEqual(rc, UNKNOWN_NODE, err)
        self.assertIn("ghost", err)
        self.assertIn("ran nothing", err)

        rc, out, err = self.urctl("oneach", "--nodes", a.uuid,
                                  "--find-timeout", "1", "--timeout", "0.5",
                                  "sleep 3")
        self.assertEqual(rc, TIMEOUT, err)
        self.assertIn("no reply", out)

    def test_a_hostname_two_nodes_share_is_refused_not_picked(self):
        # urclient sends to whichever node of that hostname answers first;
        # a script meant for one node must not land on another.
        name = "cn-twin-" + random_uuid()[:8]
        a = self.urctl_agent(hostname=name)
        b = self.urctl_agent(hostname=name)
        marker = self.path("ran")
        script = "echo x >> %s" % marker
        # The default --find-timeout (3 s): both twins must have answered.
        for args in (["exec", name, script], ["ping", name],
                     ["oneach", "--nodes", name, script],
                     ["oneach", "--nodes", "%s,%s" % (a.uuid, name), script]):
            rc, out, err = self.urctl(*args)
            self.assertEqual(rc, UNKNOWN_NODE, "%s: %s %s" % (args, out, err))
            self.assertIn("ambiguous node %s: 2 nodes" % name, err)
            self.assertIn(a.uuid, err)
            self.assertIn(b.uuid, err)
        self.assertFalse(os.path.exists(marker), "a script ran")
        # By UUID each is still reachable.
        rc, out, err = self.urctl("exec", b.uuid, "echo ok")
        self.assertEqual((rc, out), (0, "ok\n"), err)

    # -- watch ------------------------------------------------------------

    def start_watch(self, *args):
        env = {"PATH": "/usr/bin:/bin", "AMQP_HOST": "127.0.0.1",
               "AMQP_PORT": str(self.port)}
        p = subprocess.Popen([URCTL, "watch"] + list(args), env=env,
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        self.pids_to_kill.append(p.pid)
        self.addCleanup(p.stdout.close)
        self.addCleanup(p.stderr.close)
        line = LineReader(p.stderr).readline()
        self.assertTrue(line.startswith("urctl: watching"), line)
        return p

    def test_watch(self):
        a = self.urctl_agent()
        w = self.start_watch("--json", "--count", "2", "--timeout", "20",
                             "ur.*.%s" % a.uuid)
        rc, _, err = self.urctl("ping", a.uuid)
        self.assertEqual(rc, 0, err)
        out, _ = w.communicate(timeout=WAIT)
        self.assertEqual(w.returncode, 0)
        vs = self.json_lines(out.decode())
        self.assertEqual(len(vs), 2, vs)
        self.assertEqual(vs[0]["routing_key"], "ur.ping." + a.uuid)
        self.assertEqual(vs[0]["exchange"], "amq.topic")
        self.assertEqual(vs[0]["content_type"], "application/json")
        self.assertIn("client_id", vs[0]["body"])
        self.assertTrue(vs[1]["routing_key"].startswith("ur.ack"), vs[1])

        # Human output: one line per message, the routing key in it.
        w = self.start_watch("--count", "1", "--timeout", "20")
        self.assertEqual(self.urctl("ping", a.uuid)[0], 0)
        out, _ = w.communicate(timeout=WAIT)
        self.assertEqual(w.returncode, 0)
        self.assertIn("  ur.ping.%s  {" % a.uuid, out.decode())

    def test_watch_ends(self):
        w = self.start_watch("ur.nothing.#")
        w.send_signal(signal.SIGINT)
        w.communicate(timeout=WAIT)
        self.assertEqual(w.returncode, 0)
        rc, out, err = self.urctl("watch", "--timeout", "0.3", "ur.nothing.#")
        self.assertEqual((rc, out), (0, ""), err)
        rc, out, err = self.urctl("watch", "--timeout", "0.3", "--count", "2",
                                  "ur.nothing.#")
        self.assertEqual(rc, TIMEOUT, err)

    # -- the broker -------------------------------------------------------

    def test_broker_unreachable_or_refused_exits_3(self):
        rc, out, err = self.urctl("discover", "--broker", "127.0.0.1:1",
                                  "--json")
        self.assertEqual(rc, BROKER, err)
        self.assertIn("broker unreachable", err)
        self.assertEqual(self.json_lines(out)[0]["error"], "broker")
        # A list of brokers: the dead one is skipped.
        rc, _, err = self.urctl("discover", "--timeout", "0.3", "--broker",
                                "127.0.0.1:1,127.0.0.1:%d" % self.port)
        self.assertEqual(rc, 0, err)

        # One that accepts and hangs up at once (a node stopping, a port
        # with no AMQP behind it) is skipped as well, not taken for a refusal.
        closer = socket.socket()
        closer.bind(("127.0.0.1", 0))
        closer.listen(8)
        self.addCleanup(closer.close)

        def hang_up():
            while True:
                try:
                    c, _ = closer.accept()
                except OSError:
                    return
                c.close()
        threading.Thread(target=hang_up, daemon=True).start()
        rc, _, err = self.urctl("discover", "--timeout", "0.3", "--broker",
                                "127.0.0.1:%d,127.0.0.1:%d"
                                % (closer.getsockname()[1], self.port))
        self.assertEqual(rc, 0, err)
        # Alone, it is named for what it likely is.
        rc, _, err = self.urctl("discover", "--timeout", "0.3", "--broker",
                                "127.0.0.1:%d" % closer.getsockname()[1])
        self.assertEqual(rc, BROKER, err)
        self.assertIn("before the AMQP handshake began (not an AMQP 0-9-1 "
                      "broker? a TLS port?)", err)

        args = self.refuse_login()
        rc, out, err = self.urctl("discover", *args)
        self.assertEqual(rc, BROKER, err)
        self.assertIn("refused", err)
        self.assertNotIn("wrong-password", err + out)


class UrctlThroughFakeBroker(UrctlCases, AgentTestCase):
    needs_rabbitmq = False

    def setUp(self):
        super().setUp()
        if not os.access(FAKE_BROKER, os.X_OK) or \
                not os.access(URCTL, os.X_OK):
            self.fail("build/fake-broker or build/urctl is not built")
        self.broker = FakeBroker()
        self.addCleanup(self.broker.stop)
        self.port = self.broker.port

    def refuse_login(self):
        self.assertTrue(self.broker.command("refuse-login on")
                        .startswith("ok"))
        return []


class UrctlThroughRabbitMQ(UrctlCases, AgentTestCase):
    needs_rabbitmq = True

    def setUp(self):
        super().setUp()
        self.port = int(RABBITMQ_PORT)

    def refuse_login(self):
        path = self.path("password")
        with open(path, "w") as f:
            f.write("wrong-password\n")
        os.chmod(path, 0o600)
        return ["--password-file", path]

    def test_a_vhost_that_does_not_exist_is_refused_not_unreachable(self):
        rc, out, err = self.urctl("discover", "--vhost", "no-such-vhost")
        self.assertEqual(rc, BROKER, err)
        self.assertIn("broker refused us", err)
        self.assertIn("no-such-vhost", err)


class MakeDemo(AgentTestCase):
    """tools/demo is what `make demo` runs after building."""
    needs_rabbitmq = False

    def test_demo_runs_and_says_ok(self):
        p = subprocess.run([os.path.join(ROOT, "tools", "demo"), BUILD],
                           cwd=ROOT, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=120)
        out = p.stdout.decode("utf-8", "replace")
        self.assertEqual(p.returncode, 0, out[-3000:])
        self.assertIn("demo: OK", out)
        self.assertIn("args: hello world", out)
        self.assertIn("FOO=bar", out)
