"""The agent's life: ur.startup once per boot, the sysinfo heartbeat and the
setup file, clean shutdown, a second agent for the same node, credentials,
broker lists and the log."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pika

from npm_fixtures import find_bunyan
from urharness import (BUNYAN_FIELDS, RABBITMQ_PORT, WAIT, AgentTestCase, make_sysinfo,
                       rabbitmqctl, random_token, wait_until, write_executable)


def is_startup(uuid):
    return lambda m: m.routing_key == "ur.startup.%s" % uuid


def is_sysinfo(uuid):
    return lambda m: m.routing_key.startswith("ur.sysinfo.%s." % uuid)


class Startup(AgentTestCase):

    def barrier(self, a):
        """Returns once the agent has answered a ping: by then whatever it
        publishes on becoming ready has been published."""
        self.client.ping(a.uuid)

    def test_startup_once_per_boot(self):
        sysinfo = make_sysinfo()
        state = self.path("state")
        os.mkdir(state)
        marker = os.path.join(state, ".ur-startup")

        a = self.start_agent(sysinfo=sysinfo, state_dir=state, name="first")
        m = self.client.wait_message(is_startup(a.uuid),
                                     what="ur.startup.<uuid>")
        self.assertEqual(m.json(), sysinfo)
        self.assertTrue(os.path.exists(marker), "marker not created")
        self.barrier(a)
        self.assertEqual(self.client.collect(is_startup(a.uuid), 0.5), [],
                         "ur.startup sent twice by one agent")
        a.stop()
        self.client.drop(lambda m: True)

        # Same state dir: the machine has not rebooted.
        b = self.start_agent(sysinfo=sysinfo, state_dir=state, name="second")
        self.barrier(b)
        self.assertEqual(self.client.collect(is_startup(b.uuid), 1.0), [],
                         "ur.startup re-sent with the marker present")
        self.assertEqual(b.count_log("start-up was announced earlier in this boot "
                                     "(the marker exists)"), 1)
        b.stop()
        self.client.drop(lambda m: True)

        # Marker gone: a reboot.
        os.unlink(marker)
        c = self.start_agent(sysinfo=sysinfo, state_dir=state, name="third")
        m = self.client.wait_message(is_startup(c.uuid),
                                     what="ur.startup after reboot")
        self.assertEqual(m.json()["UUID"], c.uuid)
        self.assertTrue(os.path.exists(marker))
        c.stop()

    def test_a_start_up_marker_another_user_made_is_ignored(self):
        # In /tmp (the default state dir) any local user could create
        # .ur-startup before the agent's first start after boot, and the
        # booted node was never announced, silently.  Only a file of the
        # agent's own user counts; another is replaced, and announced.
        if os.geteuid() != 0:
            self.skipTest("needs root to make a file owned by nobody")
        state = self.path("state")
        os.mkdir(state)
        marker = os.path.join(state, ".ur-startup")
        with open(marker, "w"):
            pass
        os.chown(marker, 65534, 65534)
        a = self.start_agent(state_dir=state)
        self.client.wait_message(is_startup(a.uuid), what="ur.startup despite the marker")
        self.assertEqual(a.count_log("a start-up marker this agent's user did not make "
                                     "is ignored"), 1)
        self.assertEqual(os.lstat(marker).st_uid, 0)
        a.stop()
        # A hard link to a file of ours (any root-owned file on that file
        # system) is not our marker either.
        self.client.drop(lambda m: True)
        os.unlink(marker)
        other = os.path.join(state, "not-a-marker")
        with open(other, "w"):
            pass
        os.link(other, marker)
        b = self.start_agent(state_dir=state, sysinfo=a.sysinfo, name="linked")
        self.client.wait_message(is_startup(b.uuid), what="ur.startup despite the hard link")
        self.assertEqual(os.lstat(marker).st_nlink, 1)
        b.stop()

    def test_startup_announced_when_the_marker_cannot_be_made(self):
        # A read-only state dir: no marker can be made, and the booted node
        # was never announced.  Announced all the same, once, logged.
        if os.geteuid() != 0 or not shutil.which("mount"):
            self.skipTest("needs root to mount a read-only file system")
        state = self.path("ro-state")
        os.mkdir(state)
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", state],
                          stderr=subprocess.DEVNULL).returncode != 0:
            self.skipTest("cannot mount a tmpfs here")
        self.addCleanup(subprocess.run, ["umount", "-l", state])
        a = self.start_agent(state_dir=state, args=["--work-dir", self.path("work")])
        self.client.wait_message(is_startup(a.uuid), what="ur.startup")
        a.wait_log(lambda rec: rec.get("msg", "").startswith(
            "cannot create the start-up marker"), what="the marker's failure logged")
        self.barrier(a)
        self.assertEqual(self.client.collect(is_startup(a.uuid), 0.5), [],
                         "ur.startup sent twice by one agent")
        self.assertReply(self.client.execute(a.uuid, "#!/bin/sh\necho rw\n", env={}),
                         0, "rw\n")
        a.stop()

    def test_sysinfo_cmd(self):
        info = make_sysinfo()
        cmd = self.path("sysinfo.sh")
        src = self.path("sysinfo-src.json")
        with open(src, "w") as f:
            json.dump(info, f)
        write_executable(cmd, "#!/bin/sh\n/bin/cat %s\n" % src)
        self.start_agent(sysinfo=info, sysinfo_cmd=cmd, wait=False)
        m = self.client.wait_message(is_startup(info["UUID"]),
                                     what="ur.startup with --sysinfo-cmd")
        self.assertEqual(m.json(), info)
        r = self.client.execute(info["UUID"], "#!/bin/sh\necho cmd\n", env={})
        self.assertReply(r, 0, "cmd\n")

    def sysinfo_cmd_agent(self, then):
        """An agent whose --sysinfo-cmd prints its sysinfo until the file
        it returns exists, then runs the shell text `then` instead."""
        info = make_sysinfo()
        src, flag, cmd = self.path("si.json"), self.path("si.flag"), self.path("si.sh")
        with open(src, "w") as f:
            json.dump(info, f)
        write_executable(cmd, "#!/bin/sh\nif [ -e %s ]; then %s; fi\n/bin/cat %s\n" % (flag, then, src))
        a = self.start_agent(sysinfo=info, sysinfo_cmd=cmd)
        # The read made on connecting is done (its ur.sysinfo is out): the
        # next read is one the test makes, after the flag.
        self.client.wait_sysinfo(a.uuid)
        return a, flag

    def test_a_hung_sysinfo_command_does_not_hide_the_node_from_discovers(self):
        # Each discover waits for a fresh sysinfo: with the command hung,
        # the node was missing from every discover for 120 s at a time.
        # After 2 s it is answered with the sysinfo read last, said once.
        a, flag = self.sysinfo_cmd_agent("exec /bin/sleep 300")
        open(flag, "w").close()
        found = self.client.discover(4.0)
        self.assertIn(a.uuid, found)
        self.assertEqual(found[a.uuid]["UUID"], a.uuid)
        rec = a.wait_log(lambda rec: rec.get("msg", "").startswith("the sysinfo command is slow"),
                         what="the slow command logged")
        self.assertEqual(rec.get("level"), 40)
        self.assertIn(a.uuid, self.client.discover(4.0))
        self.assertEqual(a.count_log("the sysinfo command is slow; answering discovers with the "
                                     "sysinfo read last"), 1)

    def test_a_hung_sysinfo_command_at_start_is_said_before_it_is_killed(self):
        # The node cannot take part until its first sysinfo: a hung command
        # left the log at "ur-agent starting" for the whole 120 s.
        cmd = self.path("hung.sh")
        write_executable(cmd, "#!/bin/sh\nexec /bin/sleep 300\n")
        a = self.new_agent(sysinfo_cmd=cmd)
        t0 = time.monotonic()
        a.start()
        rec = a.wait_log(lambda rec: rec.get("msg", "").startswith("still waiting for the sysinfo"),
                         timeout=20, what="the slow first read said")
        self.assertGreaterEqual(time.monotonic() - t0, 9.5)
        self.assertEqual(rec.get("level"), 40)
        self.assertEqual(rec.get("command"), cmd)
        self.assertTrue(a.running())

    def test_a_sysinfo_command_that_prints_without_end_is_stopped(self):
        # It ran at full speed until its 120 s timeout, the agent draining
        # it at 100% CPU, and then again at the next read.
        a, flag = self.sysinfo_cmd_agent("exec /usr/bin/yes '{\"UUID\": \"x\"}'")
        open(flag, "w").close()
        t0 = time.monotonic()
        self.client.discover(0.5)
        rec = a.wait_log(lambda rec: rec.get("msg") == "cannot read sysinfo; the one read last is sent instead",
                         what="the endless command stopped")
        self.assertLess(time.monotonic() - t0, 15)
        self.assertIn("printed more than 16 MiB (stopped)", rec.get("error", ""))
        self.assertReply(self.client.execute(a.uuid, "#!/bin/sh\necho on\n", env={}), 0, "on\n")

    def test_sysinfo_without_uuid_waits_and_retries(self):
        info = make_sysinfo()
        uuid = info.pop("UUID")
        a = self.new_agent(sysinfo=info)
        a.uuid = uuid
        a.start()
        # It cannot take part: it must say so, keep running, and pick up
        # the UUID once sysinfo has one.
        a.wait_log(lambda r: "uuid" in json.dumps(r).lower()
                   and r.get("level", 0) >= 40, what="a warning about UUID")
        self.assertTrue(a.running(), "agent exited without a UUID")
        a.write_sysinfo(dict(info, UUID=uuid))
        self.client.wait_message(is_startup(uuid), timeout=60,
                                 what="ur.startup once sysinfo has a UUID")


class SysinfoHeartbeat(AgentTestCase):

    def test_sysinfo_on_connect_and_every_interval_while_not_setup(self):
        a = self.start_agent(args=["--sysinfo-interval", "1"])
        got = [self.client.wait_sysinfo(a.uuid) for _ in range(4)]
        ids = [m.routing_key.split(".")[-1] for m in got]
        for i in ids:
            self.assertRegex(i, r"^[0-9a-f]{8}$")
        self.assertEqual(len(set(ids)), 4, "ids not fresh: %r" % ids)
        for m in got:
            self.assertEqual(m.json(), a.sysinfo)
        gaps = [b.received - a_.received for a_, b in zip(got[1:], got[2:])]
        for g in gaps:
            self.assertGreater(g, 0.5, "interval %.2fs for 1s" % g)
            self.assertLess(g, 5, "interval %.2fs for 1s" % g)

    def test_an_odd_byte_in_sysinfo_is_read_and_a_broken_sysinfo_keeps_the_last(self):
        # One byte that is not UTF-8 in a hardware string stopped every
        # heartbeat (a code review): read as Node read it now.  A sysinfo
        # that cannot be read at all sends the one read last, so that CNAPI
        # does not mark a live node "unknown".
        a = self.start_agent(args=["--sysinfo-interval", "1"])
        self.client.wait_sysinfo(a.uuid)
        raw = json.dumps(dict(a.sysinfo, Product="@@")).encode()
        with open(a.sysinfo_file + ".tmp", "wb") as f:
            f.write(raw.replace(b"@@", b"Acme \xff Server"))
        os.rename(a.sysinfo_file + ".tmp", a.sysinfo_file)
        odd = dict(a.sysinfo, Product="Acme \ufffd Server")
        wait_until(lambda: self.client.wait_sysinfo(a.uuid).json() == odd,
                   timeout=WAIT, what="a heartbeat with the repaired Product")
        with open(a.sysinfo_file, "w") as f:
            f.write('{"UUID": ')
        a.wait_log_n("cannot read sysinfo; the one read last is sent instead", 1)
        for _ in range(2):
            self.assertEqual(self.client.wait_sysinfo(a.uuid).json(), odd)

    def test_setup_file_incomplete_keeps_heartbeat(self):
        a = self.new_agent(args=["--sysinfo-interval", "1"])
        with open(a.setup_file, "w") as f:
            json.dump({"complete": False, "current_state": "x"}, f)
        a.start()
        for _ in range(3):
            self.client.wait_sysinfo(a.uuid)

    def test_setup_file_unreadable_is_said_once_and_keeps_heartbeat(self):
        a = self.new_agent(args=["--sysinfo-interval", "1"])
        with open(a.setup_file, "w") as f:
            f.write('{"complete": tr')  # cut short by a full disk, say
        a.start()
        for _ in range(3):
            self.client.wait_sysinfo(a.uuid)
        msg = ("cannot read the setup-state file: setup taken as not "
               "complete; sysinfo heartbeats go on")
        rec = a.wait_log_n(msg, 1)
        self.assertEqual(rec["level"], 40)
        self.assertEqual(rec["file"], a.setup_file)
        self.assertTrue(rec["error"].startswith("not valid JSON: "), rec)
        # Said once, not at every heartbeat; a different problem is said.
        self.assertEqual(a.count_log(msg), 1)
        with open(a.setup_file, "w") as f:
            json.dump({"complete": "yes"}, f)
        rec = a.wait_log_n(msg, 2)
        self.assertEqual(rec["error"], '"complete" is not true or false')
        self.client.wait_sysinfo(a.uuid)
        self.client.wait_sysinfo(a.uuid)
        self.assertEqual(a.count_log(msg), 2)
        # Mended: heartbeats stop.
        with open(a.setup_file + ".tmp", "w") as f:
            json.dump({"complete": True}, f)
        os.rename(a.setup_file + ".tmp", a.setup_file)
        a.wait_log_n("setup is complete; sysinfo heartbeats stop", 1)

    def test_setup_complete_one_last_message_then_none(self):
        a = self.start_agent(args=["--sysinfo-interval", "1"])
        self.client.wait_sysinfo(a.uuid)
        self.client.wait_sysinfo(a.uuid)
        with open(a.setup_file + ".tmp", "w") as f:
            json.dump({"complete": True}, f)
        os.rename(a.setup_file + ".tmp", a.setup_file)
        # One last message (one more may have been under way when the file
        # appeared), then silence over four intervals.
        last = self.client.wait_sysinfo(a.uuid, timeout=10)
        after = [last] + self.client.collect(is_sysinfo(a.uuid), 4.5)
        self.assertLessEqual(len(after), 2,
                             "heartbeat went on after setup completed: %d "
                             "messages in 4.5 intervals" % len(after))
        self.assertTrue(a.running())

    def test_setup_complete_at_start_no_heartbeat(self):
        a = self.new_agent(args=["--sysinfo-interval", "1"])
        with open(a.setup_file, "w") as f:
            json.dump({"complete": True}, f)
        a.start()
        self.client.wait_sysinfo(a.uuid)
        more = self.client.collect(is_sysinfo(a.uuid), 4.0)
        self.assertLessEqual(len(more), 1, "heartbeat with setup complete")


class Shutdown(AgentTestCase):

    def _running_script(self, a, secs=2):
        """Sends a script that runs `secs` and prints "finished"; returns its
        request id once it has started."""
        started = self.path("started")
        req = self.client.send_execute(
            a.uuid, "#!/bin/sh\n: > %s\n/bin/sleep %d\necho finished\n" % (started, secs),
            env={})
        wait_until(lambda: os.path.exists(started), what="script started")
        return req

    def _term_during_script(self, sig):
        a = self.start_agent()
        req = self._running_script(a)
        t0 = time.monotonic()
        a.send_signal(sig)
        r = self.client.wait_reply(a.uuid, req)
        self.assertReply(r, 0, "finished\n")
        self.assertEqual(a.wait_exit(), 0, "exit status after %s" % sig.name)
        self.assertLess(time.monotonic() - t0, 12)

    def test_sigterm_lets_running_script_finish_and_reply(self):
        self._term_during_script(signal.SIGTERM)

    def test_sigint_lets_running_script_finish_and_reply(self):
        self._term_during_script(signal.SIGINT)

    def test_a_second_signal_while_shutting_down_is_said_and_keeps_the_grace(self):
        # Ctrl-C twice during the grace: acknowledged in the log (it was
        # silent), the running script still finishes and is answered.
        a = self.start_agent()
        req = self._running_script(a)
        a.send_signal(signal.SIGINT)
        a.wait_log(lambda rec: rec.get("msg", "").startswith("shutting down"),
                   what="shutting down")
        a.send_signal(signal.SIGINT)
        rec = a.wait_log(lambda rec: rec.get("msg", "").startswith("already shutting down"),
                         what="the second signal acknowledged")
        self.assertEqual(rec["running"], 1, rec)
        self.assertGreater(rec["grace_left_s"], 0, rec)
        self.assertReply(self.client.wait_reply(a.uuid, req), 0, "finished\n")
        self.assertEqual(a.wait_exit(), 0)

    def test_sigterm_answers_requests_waiting_for_a_slot_not_run(self):
        # One slot, taken; two requests wait.  On SIGTERM the running one
        # finishes and is answered; the waiting ones are answered "not run"
        # at once (the request queue, and they with it, goes with us).
        a = self.start_agent(args=["--max-concurrency", "1"])
        running = self._running_script(a)
        waiting = [self.client.send_execute(a.uuid, "#!/bin/sh\necho never\n", env={})
                   for _ in range(2)]
        a.wait_log(lambda rec: rec.get("msg") == "execute request" and
                   rec.get("req_id") == waiting[0], what="the first waiting request received")
        t0 = time.monotonic()
        a.send_signal(signal.SIGTERM)
        r = self.client.wait_reply(a.uuid, waiting[0])
        self.assertLess(time.monotonic() - t0, 1.5, "answered only when the script ended")
        self.assertReply(r, 1, "", "ur-agent: not run: the agent is shutting down\n")
        self.assertReply(self.client.wait_reply(a.uuid, running), 0, "finished\n")
        self.assertEqual(a.wait_exit(), 0)

    def test_requests_arriving_while_scripts_finish_at_shutdown_are_answered_not_run(self):
        # During the shutdown grace (scripts still running) the agent closed
        # its request and ping channels at once: requests, pings and
        # discovers sent meanwhile got nothing for up to --shutdown-grace
        # + 5 s, and then were dropped with the queue.  They are answered:
        # requests "not run", pings as ever; a discover is not (the node
        # is going away).  Once the scripts are done, deliveries stop.
        a = self.start_agent()
        running = self._running_script(a)
        a.send_signal(signal.SIGTERM)
        a.wait_log(lambda rec: rec.get("msg", "").startswith("shutting down"),
                   what="the shutdown begun")
        t0 = time.monotonic()
        late = self.client.send_execute(a.uuid, "#!/bin/sh\necho never\n", env={})
        r = self.client.wait_reply(a.uuid, late)
        self.assertLess(time.monotonic() - t0, 1.5, "answered only when the script ended")
        self.assertReply(r, 1, "", "ur-agent: not run: the agent is shutting down\n")
        _, pong = self.client.ping(a.uuid)
        self.assertIn("timestamp", pong)
        self.assertNotIn(a.uuid, self.client.discover(0.5))
        self.assertReply(self.client.wait_reply(a.uuid, running), 0, "finished\n")
        self.assertEqual(a.wait_exit(), 0)

    def test_request_waiting_past_max_queue_wait_is_answered_not_run(self):
        a = self.start_agent(args=["--max-concurrency", "1", "--max-queue-wait", "1"])
        running = self._running_script(a, 4)
        t0 = time.monotonic()
        waiting = self.client.send_execute(a.uuid, "#!/bin/sh\necho never\n", env={})
        r = self.client.wait_reply(a.uuid, waiting)
        took = time.monotonic() - t0
        self.assertReply(r, 1, "")
        self.assertIn("not run: it waited 1 s for one of the 1 script slots", r["stderr"])
        self.assertGreater(took, 0.9)
        self.assertLess(took, 3.5, "answered only when the slot came free")
        self.assertReply(self.client.wait_reply(a.uuid, running), 0, "finished\n")
        # Acked: nothing is left unacked or redelivered.
        self.assertReply(self.client.execute(a.uuid, "#!/bin/sh\necho next\n", env={}),
                         0, "next\n")

    def test_stray_signals_do_not_end_it(self):
        # Signals whose default action is to terminate, sent by an operator
        # or a tool by mistake: the agent would have died without answering
        # what it held.  USR1/USR2 are logged, the others ignored.
        a = self.start_agent()
        sigs = [signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM,
                signal.SIGXFSZ, signal.SIGVTALRM, signal.SIGPROF, signal.SIGIO,
                signal.SIGPWR, signal.SIGPIPE]
        for sig in sigs:
            a.send_signal(sig)
        a.wait_log(lambda rec: rec.get("msg") == "SIGUSR2 ignored", what="SIGUSR2 logged")
        self.assertTrue(a.running())
        self.assertReply(self.client.execute(a.uuid, "#!/bin/sh\necho on\n", env={}),
                         0, "on\n")
        a.stop()

    def test_sigterm_when_idle_exits_0_promptly(self):
        a = self.start_agent()
        t0 = time.monotonic()
        a.stop()
        self.assertLess(time.monotonic() - t0, 5)


def strings_in(v):
    """Every string in a JSON value (keys excluded)."""
    if isinstance(v, str):
        yield v
    elif isinstance(v, dict):
        for x in v.values():
            yield from strings_in(x)
    elif isinstance(v, list):
        for x in v:
            yield from strings_in(x)


def is_resource_locked_retry(rec):
    """A log record that names the 405 / RESOURCE_LOCKED refusal (in its
    text or as a reply code field, not a digit run in some number) and
    says the agent retries."""
    text = " ".join(strings_in(rec))
    named = re.search(r"\b405\b|RESOURCE_LOCKED", text) or any(
        rec.get(k) == 405 for k in ("code", "reply_code", "amqp_code"))
    return bool(named) and re.search(r"(?i)retr", json.dumps(rec))


def ping_consumers(uuid):
    """The number of consumers of ur.ping.<uuid>, from RabbitMQ."""
    out = rabbitmqctl("list_queues", "-q", "--no-table-headers", "name", "consumers")
    for line in out.splitlines():
        name, _, n = line.partition("\t")
        if name == "ur.ping.%s" % uuid:
            return int(n)
    return 0


class SameNodeTwice(AgentTestCase):

    def test_second_agent_waits_for_resource_locked_then_takes_over(self):
        info = make_sysinfo()
        a = self.start_agent(sysinfo=info, name="first",
                             env={"WHO": "first"})
        b = self.new_agent(sysinfo=info, name="second",
                           env={"WHO": "second"})
        b.start()
        b.wait_log(is_resource_locked_retry,
                   what="the second agent logging that it retries after 405 "
                   "RESOURCE_LOCKED")
        self.assertTrue(b.running(), "second agent exited on 405")
        # The first still serves, and alone answers pings: the second, which
        # serves nothing, took every other ping of the shared ping queue.
        b.wait_log(lambda r: r.get("msg", "").startswith("pings are left to the connection"),
                   what="the second agent's ping consumer gone")
        self.assertEqual(ping_consumers(a.uuid), 1)
        for _ in range(4):
            rid, body = self.client.ping(a.uuid)
            self.assertEqual(body.get("req_id"), rid)
        r = self.client.execute(a.uuid, "#!/bin/sh\necho $WHO\n")
        self.assertReply(r, 0, "first\n")
        self.assertTrue(b.running())
        a.stop()
        # Requests published before the second has its queue are unroutable;
        # keep asking until it answers.
        deadline = time.monotonic() + 60
        while True:
            req = self.client.send_execute(a.uuid, "#!/bin/sh\necho $WHO\n")
            try:
                r = self.client.wait_reply(a.uuid, req, timeout=2)
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise AssertionError("second agent never took over; log:"
                                         "\n" + b.log_tail())
        self.assertReply(r, 0, "second\n")
        # Serving now, the second answers pings too.
        rid, body = self.client.ping(a.uuid)
        self.assertEqual(body.get("req_id"), rid)
        self.assertEqual(ping_consumers(a.uuid), 1)
        b.stop()


    def first_running_a_script(self):
        """An agent "first" running a 3 s script that prints first-done:
        (its sysinfo, the agent, the request's token)."""
        info = make_sysinfo()
        a = self.start_agent(sysinfo=info, name="first")
        started = self.path("started")
        req = self.client.send_execute(
            a.uuid, "#!/bin/sh\n: > %s\n/bin/sleep 3\necho first-done\n" % started, env={})
        wait_until(lambda: os.path.exists(started), what="script started")
        return info, a, req

    def test_a_state_dir_removed_while_running_is_made_again_with_its_lock(self):
        # Review: the state directory removed under a running agent (a /tmp
        # cleaner, an operator) was not made again: scripts failed 126 until
        # someone made it, and with the lock file gone a second agent on the
        # directory answered the first's running request "agent restarted".
        # The next request makes both again.
        # An agent already waiting on the removed lock file waits on (the
        # first keeps it locked); one started after waits on the new one.
        info, a, req = self.first_running_a_script()
        waiting = ("another ur-agent uses this state directory; waiting for it to exit")
        b = self.new_agent(sysinfo=info, name="second", state_dir=a.state_dir)
        b.start()
        b.wait_log(lambda r: r.get("msg") == waiting, what="the second agent waiting")
        shutil.rmtree(a.state_dir)
        r = self.client.execute(a.uuid, "#!/bin/sh\necho after\n", env={})
        self.assertReply(r, 0, "after\n")
        self.assertEqual(a.count_log("the state directory's lock file was removed; made again"), 1)
        self.assertTrue(os.path.exists(os.path.join(a.state_dir, ".ur-agent.lock")))
        c = self.new_agent(sysinfo=info, name="third", state_dir=a.state_dir)
        c.start()
        c.wait_log(lambda r: r.get("msg") == waiting, what="the third agent waiting")
        self.assertReply(self.client.wait_reply(a.uuid, req), 0, "first-done\n")
        replies = self.client.collect(
            lambda m: m.routing_key == "ur.execute-reply.%s.%s" % (a.uuid, req), 1.0)
        self.assertEqual(replies, [], "a second reply to the first agent's request")
        for other in (b, c):
            self.assertEqual(other.count_log("the other ur-agent is gone; starting"), 0)
        c.stop()
        # The first gone, the second takes the lock at the path, not the
        # removed file it waited on.
        a.stop()
        b.wait_log(lambda r: r.get("msg") == "serving requests", timeout=30,
                   what="the second agent serving once the first is gone")
        self.assertEqual(b.count_log("cannot use the state directory's lock file; "
                                     "running without it"), 0)
        b.stop()

    def test_a_state_dir_whose_parent_comes_later_is_made_with_lock_and_journal(self):
        # A --state-dir whose parent did not exist at start (a file system
        # mounted later) was never made: scripts failed 126 ("cannot create
        # .../.ur-agent-work") for as long as the agent ran, without lock or
        # journal.  The first execute request after the parent appears makes
        # it, takes its lock, opens the journal and answers what that
        # journal held from an earlier run.
        info = make_sysinfo()
        parent = os.path.join(self.tmp, "mounted-later")
        state = os.path.join(parent, "state")
        a = self.new_agent(sysinfo=info, state_dir=os.path.join(self.tmp, "placeholder"))
        a.state_dir = state
        a.start()
        self.client.wait_message(is_startup(a.uuid))
        r = self.client.execute(a.uuid, "#!/bin/sh\necho before\n", env={})
        self.assertEqual(r["exit_status"], 126, r)
        self.assertEqual(a.count_log("cannot create the state directory; running without it, "
                                     "trying again at each execute request"), 1)
        os.mkdir(parent)
        os.mkdir(state)
        os.mkdir(os.path.join(state, ".ur-agent-inflight"), 0o700)
        with open(os.path.join(state, ".ur-agent-inflight", "journal"), "w") as f:
            f.write("+ 1-old ur.execute-reply.%s.old1\n" % a.uuid)
        r = self.client.execute(a.uuid, "#!/bin/sh\necho after\n", env={})
        self.assertReply(r, 0, "after\n")
        self.assertEqual(a.count_log("the state directory could be made now; using it"), 1)
        self.assertTrue(os.path.exists(os.path.join(state, ".ur-agent.lock")))
        old = self.client.wait_reply(a.uuid, "old1")
        self.assertTrue(old.get("agent_restarted"), old)
        a.stop()

    def test_second_agent_on_the_same_state_dir_waits_and_answers_nothing_of_the_first(self):
        # Started while the first still runs a script, a second agent with
        # the same state directory read its journal and answered that
        # request "agent restarted" (exit 1) before the first answered it
        # (exit 0): urclient took the false failure.  It now waits for the
        # state directory's lock, and SIGTERM ends the wait.
        info, a, req = self.first_running_a_script()
        b = self.new_agent(sysinfo=info, name="second", state_dir=a.state_dir)
        b.start()
        rec = b.wait_log(lambda r: r.get("msg") == "another ur-agent uses this state "
                         "directory; waiting for it to exit", what="the second agent waiting")
        self.assertEqual(rec.get("holder_pid"), a.proc.pid)
        # Said after "ur-agent starting" (version, brokers, state dir), not
        # as the first word of an agent that otherwise seems silent.
        msgs = [r.get("msg") for r in b.logs()]
        self.assertEqual(msgs[0], "ur-agent starting", msgs)
        self.assertEqual(b.logs()[0].get("state_dir"), a.state_dir)
        # ...and has not cleaned the first's script files (work dir prepared
        # after the lock): the running script's file is still there.
        work = os.path.join(a.state_dir, ".ur-agent-work")
        self.assertTrue([f for f in os.listdir(work) if f.startswith("ur-job.")],
                        "the first agent's script file was removed")
        self.assertReply(self.client.wait_reply(a.uuid, req), 0, "first-done\n")
        replies = self.client.collect(
            lambda m: m.routing_key == "ur.execute-reply.%s.%s" % (a.uuid, req), 2.0)
        self.assertEqual(replies, [], "a second reply to the first agent's request")
        self.assertEqual(b.count_log("answering a request that was running when the agent "
                                     "stopped"), 0)
        a.stop()
        b.wait_log(lambda r: r.get("msg") == "serving requests", timeout=30,
                   what="the second agent serving once the first is gone")
        b.stop()
        # SIGTERM while waiting: exit 0 at once.
        c = self.new_agent(sysinfo=info, name="third", state_dir=a.state_dir)
        d = self.new_agent(sysinfo=info, name="fourth", state_dir=a.state_dir)
        c.start()
        c.wait_log(lambda r: r.get("msg") == "serving requests", timeout=30, what="third serving")
        d.start()
        d.wait_log(lambda r: "waiting for it to exit" in r.get("msg", ""), what="fourth waiting")
        t0 = time.monotonic()
        d.stop()
        self.assertLess(time.monotonic() - t0, 3)
        c.stop()


    def test_a_lock_file_someone_else_made_is_not_used(self):
        # In a world-writable state dir (/tmp by default) another user could
        # make .ur-agent.lock first and hold a lock on it: the agent would
        # wait forever.  A lock file not of ours is refused; the agent runs.
        if os.geteuid() != 0:
            self.skipTest("needs root to act as another user")
        state = self.path("shared-state")
        os.mkdir(state)
        os.chmod(state, 0o1777)
        lock = os.path.join(state, ".ur-agent.lock")
        holder = subprocess.Popen(
            [sys.executable, "-c",
             "import fcntl, os, sys, time\n"
             "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)\n"
             "fcntl.lockf(fd, fcntl.LOCK_EX)\n"
             "print('locked', flush=True)\n"
             "time.sleep(60)\n", lock],
            stdout=subprocess.PIPE, preexec_fn=lambda: (os.setgid(65534), os.setuid(65534)))
        self.pids_to_kill.append(holder.pid)
        self.assertEqual(holder.stdout.readline().strip(), b"locked")
        a = self.start_agent(state_dir=state)
        a.wait_log(lambda r: "cannot use the state directory's lock file" in r.get("msg", ""),
                   what="the foreign lock file refused")
        self.assertReply(self.client.execute(a.uuid, "#!/bin/sh\necho ok\n", env={}), 0, "ok\n")


def add_rabbitmq_user(test, configure=".*", write=".*", read=".*"):
    """(user, password) of a new RabbitMQ user with these permissions on
    "/", deleted when `test` ends."""
    user = "urinteg-" + random_token()[:8]
    password = "Pw-" + random_token() + "-zq9"
    rabbitmqctl("add_user", user, password)
    test.addCleanup(rabbitmqctl, "delete_user", user, check=False)
    rabbitmqctl("set_permissions", "-p", "/", user, configure, write, read)
    return user, password


class Credentials(AgentTestCase):

    def test_a_ping_queue_another_connection_consumes_exclusively_is_named(self):
        # Was logged as a missing permission on the vhost ("until it is
        # set up again"): the broker's text says "in exclusive use".
        a = self.new_agent()
        other = pika.BlockingConnection(pika.ConnectionParameters(
            host="127.0.0.1", port=int(RABBITMQ_PORT)))
        self.addCleanup(lambda: other.is_open and other.close())
        ch = other.channel()
        ch.queue_declare("ur.ping." + a.uuid, auto_delete=True)
        ch.basic_consume("ur.ping." + a.uuid, lambda *args: None, exclusive=True)
        a.start()
        self.client.wait_ready(a.uuid)
        rec = a.wait_log(lambda r: r.get("msg", "").startswith(
            "403 ACCESS_REFUSED on the ping queue"), what="the refusal")
        self.assertIn("another connection consumes it exclusively", rec["msg"])
        self.assertReply(self.client.execute(a.uuid, "#!/bin/sh\necho x\n"), 0, "x\n")
        other.close()
        a.wait_log(lambda r: r.get("msg") == "answering pings again", what="pings again")
        self.assertIsNotNone(self.client.ping(a.uuid))

    def test_missing_permissions_are_named(self):
        # A login allowed in but not allowed what the agent does was
        # logged as a routine channel retry ("the broker closed the request
        # channel"), the 403 only in a field.  And at shutdown the pending
        # start-up announcement was called undelivered replies.
        user, password = add_rabbitmq_user(self, "", "", "")
        a = self.start_agent(wait=False, login=user, password=password)
        rec = a.wait_log(lambda r: r.get("msg", "").startswith(
            "403 ACCESS_REFUSED on the request queue"), what="the refusal named")
        self.assertEqual((rec.get("level"), rec.get("code")), (40, 403), rec)
        self.assertIn("configure, write and read on ur.* queues", rec["msg"])
        # Said once, not at every retry (100 ms doubling: four or more in
        # 1.5 s), then at error every 12th attempt.
        time.sleep(1.5)
        self.assertEqual(len([r for r in a.logs() if r.get("msg", "").startswith(
            "403 ACCESS_REFUSED on the request queue")]), 1, a.log_tail(10))
        # Queues allowed, publishing to amq.topic not: the start-up
        # announcement cannot go.
        user, password = add_rabbitmq_user(self, ".*", "^ur\\..*", ".*")
        b = self.start_agent(name="nowrite", wait=False, login=user, password=password,
                             args=["--shutdown-grace", "1"])
        rec = b.wait_log(lambda r: r.get("msg", "").startswith("403 ACCESS_REFUSED on a publish"),
                         what="the refused publish named")
        self.assertIn("write permission on amq.topic", rec["msg"])
        b.send_signal(signal.SIGTERM)
        self.assertEqual(b.wait_exit(30), 0)
        self.assertEqual(b.count_log("exiting without the broker's confirm of the start-up "
                                     "announcement"), 1, b.log_tail(10))
        self.assertFalse([r for r in b.logs() if r.get("msg", "").startswith(
            "exiting with undelivered replies")], "the announcement called a reply")

    def test_a_refused_reply_key_holds_back_no_other_reply(self):
        # A topic permission refusing one reply key: the broker closes the
        # publishing channel at each try of that reply, and every reply
        # queued behind it waited for ever.  Now it waits (1, 2, 4 ... s,
        # then every 60 s) while the others go at once, and it is never
        # given up: the permission may be fixed (and every reply key
        # refused looks the same, key by key).
        user, password = add_rabbitmq_user(self)
        a = self.start_agent(login=user, password=password, args=["--log-level", "debug"])
        rabbitmqctl("set_topic_permissions", "-p", "/", user, "amq.topic",
                    "^(?!ur\\.execute-reply\\.[^.]+\\.evil$).*", ".*")
        self.addCleanup(rabbitmqctl, "clear_topic_permissions", "-p", "/", user,
                        check=False)
        evil = self.client.send_execute(a.uuid, "#!/bin/sh\necho evil\n", req="evil")
        a.wait_log(lambda r: r.get("msg", "").startswith(
            "403 ACCESS_REFUSED on a publish to one routing key"), what="the refusal")
        good = self.client.send_execute(a.uuid, "#!/bin/sh\necho good\n")
        self.assertReply(self.client.wait_reply(a.uuid, good, timeout=5), 0, "good\n")
        # Refused again at its retries, never given up; once allowed, sent.
        wait_until(lambda: len([r for r in a.logs() if r.get("msg", "").startswith(
            "403 ACCESS_REFUSED on a publish to one routing key")]) >= 3, 20, "the third refusal")
        rabbitmqctl("clear_topic_permissions", "-p", "/", user)
        self.assertReply(self.client.wait_reply(a.uuid, evil, timeout=20), 0, "evil\n")
        self.assertFalse([r for r in a.logs() if r.get("msg", "").startswith(
            "message given up")], "a reply was given up")
        r = self.client.execute(a.uuid, "#!/bin/sh\necho after\n")
        self.assertReply(r, 0, "after\n")
        self.assertTrue(a.running())

    def test_password_from_env_never_logged(self):
        user, password = add_rabbitmq_user(self)
        a = self.start_agent(login=user, password=password,
                             args=["--log-level", "debug"])
        r = self.client.execute(a.uuid, "#!/bin/sh\necho $AMQP_PASSWORD\n")
        self.assertReply(r, 0, "\n")
        if os.path.exists("/proc/%d/environ" % a.proc.pid):
            with open("/proc/%d/environ" % a.proc.pid, "rb") as f:
                self.assertNotIn(password.encode(), f.read())
        a.stop()
        self.assertNotIn(password, a.log_text())
        self.assertNotIn(password, open(a.out_path).read())

    def test_password_file(self):
        user, password = add_rabbitmq_user(self)
        pwfile = self.path("pw")
        with open(pwfile, "w") as f:
            f.write(password + "\n")
        os.chmod(pwfile, 0o600)
        a = self.start_agent(login=user, password="wrong-on-purpose",
                             args=["--password-file", pwfile,
                                   "--log-level", "debug"])
        r = self.client.execute(a.uuid, "#!/bin/sh\necho pwfile\n", env={})
        self.assertReply(r, 0, "pwfile\n")
        a.stop()
        self.assertNotIn(password, a.log_text())

    def test_login_flag_and_wrong_password_not_logged(self):
        user, password = add_rabbitmq_user(self)
        bad = "Wrong-" + random_token() + "-pw"
        a = self.new_agent(password=bad, args=["--login", user,
                                               "--log-level", "debug"])
        a.start()
        a.wait_log(lambda r: r.get("level", 0) >= 40 and re.search(
            r"(?i)403|access.refused|auth|login|refused|closed",
            json.dumps(r)), what="a warning about the refused login")
        self.assertTrue(a.running(), "agent gave up after a refused login")
        a.stop()
        self.assertNotIn(bad, a.log_text())


def agent_connection(a, check=True):
    """The broker's pid of the connection consuming the agent's request
    queue (None, or AssertionError with check, when there is none)."""
    queue = "ur.request.%s.%s" % (a.uuid, a.mac)
    consumers = rabbitmqctl("list_consumers", "-q", "--no-table-headers",
                            "queue_name", "channel_pid")
    chans = [line.split("\t")[1] for line in consumers.splitlines()
             if line.split("\t")[0] == queue]
    channels = rabbitmqctl("list_channels", "-q", "--no-table-headers",
                           "pid", "connection")
    conns = [line.split("\t")[1] for line in channels.splitlines()
             if line.split("\t")[0] in chans]
    if check and not conns:
        raise AssertionError("no connection consumes %s:\n%s\n%s"
                             % (queue, consumers, channels))
    return conns[0] if conns else None


class Brokers(AgentTestCase):

    def test_broker_flag_list_skips_dead_broker(self):
        from urharness import RABBITMQ_PORT
        a = self.start_agent(use_env_broker=False, args=[
            "--broker", "127.0.0.1:1,127.0.0.1:%s" % RABBITMQ_PORT,
            "--login", "guest"], env={"AMQP_PASSWORD": "guest"})
        r = self.client.execute(a.uuid, "#!/bin/sh\necho list\n", env={})
        self.assertReply(r, 0, "list\n")

    def test_an_unbracketed_ipv6_address_and_port_is_pointed_out(self):
        # "--broker ::1:5732" is the IPv6 address ::1:5732 on port 5672: the
        # agent connected there, for ever, and only its log of failed
        # connects showed the odd address.  Said once at start, with the
        # bracketed form; the other brokers of the list serve.
        from urharness import RABBITMQ_PORT
        a = self.start_agent(use_env_broker=False, args=[
            "--broker", "::1:%s,127.0.0.1:%s" % (RABBITMQ_PORT, RABBITMQ_PORT),
            "--login", "guest"], env={"AMQP_PASSWORD": "guest"})
        self.assertEqual(a.count_log(
            "an IPv6 address without brackets has no port: connecting to '::1:%s' on port "
            "5672; if '%s' is a port, write [::1]:%s" % ((RABBITMQ_PORT,) * 3)), 1)
        b = self.start_agent(use_env_broker=False, args=[
            "--broker", "fd00::1234,127.0.0.1:%s" % RABBITMQ_PORT,
            "--login", "guest"], env={"AMQP_PASSWORD": "guest"})
        self.assertEqual([r for r in b.logs()
                          if r.get("msg", "").startswith("an IPv6 address without")], [])

    def test_broker_flag_overrides_env(self):
        from urharness import RABBITMQ_PORT
        a = self.start_agent(args=["--broker", "127.0.0.1:%s" % RABBITMQ_PORT],
                             env={"AMQP_HOST": "127.0.0.1",
                                  "AMQP_PORT": "1"})
        r = self.client.execute(a.uuid, "#!/bin/sh\necho flag\n", env={})
        self.assertReply(r, 0, "flag\n")

    def test_boot_parameter_rabbitmq_names_the_broker_when_nothing_else_does(self):
        # A Triton compute node is told its broker by the boot parameter
        # rabbitmq=LOGIN:PASSWORD:HOST:PORT (sysinfo's "Boot Parameters"),
        # which Triton's agents read: with no --broker or AMQP_* the
        # installed agent tried localhost:5672 for ever.  --boot-rabbitmq
        # (the services pass it) takes it.
        from urharness import RABBITMQ_PORT
        user, password = add_rabbitmq_user(self)
        info = make_sysinfo()
        info["Boot Parameters"]["rabbitmq"] = "%s:%s:127.0.0.1:%s" % (user, password,
                                                                      RABBITMQ_PORT)
        a = self.start_agent(sysinfo=info, use_env_broker=False, args=["--boot-rabbitmq"])
        self.assertReply(self.client.execute(a.uuid, "#!/bin/sh\necho booted\n", env={}), 0,
                         "booted\n")
        rec = a.wait_log(lambda rec: rec.get("msg", "").startswith(
            "broker from the boot parameter rabbitmq"))
        self.assertEqual((rec.get("brokers"), rec.get("login")),
                         (["127.0.0.1:%s" % RABBITMQ_PORT], user), rec)
        # The password is in sysinfo (as on SmartOS), in no log line.
        self.assertNotIn(password, a.log_text())
        # A broker configured wins over it; a malformed one is said.
        info = make_sysinfo()
        info["Boot Parameters"]["rabbitmq"] = "guest:guest:127.0.0.1:1"
        b = self.start_agent(name="configured", sysinfo=info, args=["--boot-rabbitmq"])
        self.assertReply(self.client.execute(b.uuid, "#!/bin/sh\necho env\n", env={}), 0, "env\n")
        info = make_sysinfo()
        info["Boot Parameters"]["rabbitmq"] = "10.99.99.20"
        c = self.start_agent(name="malformed", sysinfo=info, args=["--boot-rabbitmq"])
        rec = c.wait_log(lambda rec: rec.get("msg") == "the boot parameter rabbitmq is malformed; "
                         "ignored")
        self.assertEqual(rec.get("error"), "expected LOGIN:PASSWORD:HOST:PORT, got 1 part")
        # Without the flag a sysinfo copied from a real node does not send
        # the agent to that node's broker: the default stays localhost.
        info = make_sysinfo()
        info["Boot Parameters"]["rabbitmq"] = "%s:%s:127.0.0.1:%s" % (user, password,
                                                                      RABBITMQ_PORT)
        d = self.start_agent(name="noflag", sysinfo=info, use_env_broker=False, wait=False)
        rec = d.wait_log(lambda rec: rec.get("msg") == "ur-agent starting")
        self.assertEqual((rec.get("brokers"), rec.get("broker_source")),
                         (["localhost:5672"], "default"), rec)
        d.wait_log(lambda rec: rec.get("msg") == "node identity")  # the boot parameter's turn
        self.assertFalse([r for r in d.logs() if "boot parameter" in r.get("msg", "")])
        self.assertFalse([r for r in d.logs()
                          if r.get("broker") == "127.0.0.1:%s" % RABBITMQ_PORT])

    def test_connection_closed_by_broker_reconnects(self):
        # The broker closes the agent's connection; the agent reconnects
        # by itself and serves again, without a second ur.startup.
        a = self.start_agent()
        self.client.wait_message(is_startup(a.uuid))
        self.client.drop(lambda m: True)
        old = agent_connection(a)
        rabbitmqctl("close_connection", old, "integ test: forced close")
        wait_until(lambda: agent_connection(a, check=False) not in
                   (None, old), timeout=60, what="the agent reconnected",
                   interval=0.5)
        self.client.wait_sysinfo(a.uuid, timeout=60)
        r = self.client.execute(a.uuid, "#!/bin/sh\necho back\n", env={})
        self.assertReply(r, 0, "back\n")
        self.assertEqual(self.client.collect(is_startup(a.uuid), 0.5), [])


    def test_reply_of_script_finished_while_disconnected_is_delivered(self):
        a = self.start_agent()
        started = self.path("started")
        release = self.path("release")
        # The script finishes only once the test has cut the connection.
        req = self.client.send_execute(
            a.uuid, "#!/bin/sh\n: > %s\nn=0\nwhile [ ! -e %s ] && "
            "[ $n -lt 600 ]; do /bin/sleep 0.1; n=$((n+1)); done\n"
            "echo survived\n" % (started, release), env={})
        wait_until(lambda: os.path.exists(started), what="script started")
        old = agent_connection(a)
        rabbitmqctl("close_connection", old,
                    "integ test: outage while a script runs")
        open(release, "w").close()
        r = self.client.wait_reply(a.uuid, req, timeout=60)
        self.assertReply(r, 0, "survived\n")
        self.assertNotEqual(agent_connection(a), old)


class Outages(AgentTestCase):
    """Network failures made with a TCP proxy between agent and broker."""

    def start_via(self, proxy, *args):
        return self.start_agent(args=["--broker", "127.0.0.1:%d" % proxy.port]
                                + list(args))

    def test_connection_reset_reconnects_and_serves(self):
        p = self.proxy()
        a = self.start_via(p)
        self.client.wait_message(is_startup(a.uuid))
        # A round trip, so that the broker's confirm of ur.startup has
        # reached the agent: an unconfirmed one is rightly published again.
        self.client.ping(a.uuid)
        self.client.drop(lambda m: True)
        p.cut()
        self.client.wait_sysinfo(a.uuid, timeout=60)
        r = self.client.execute(a.uuid, "#!/bin/sh\necho again\n", env={})
        self.assertReply(r, 0, "again\n")
        self.assertGreaterEqual(p.accepted, 2)
        self.assertEqual(self.client.collect(is_startup(a.uuid), 0.5), [])

    def test_reply_survives_connection_reset(self):
        p = self.proxy()
        a = self.start_via(p)
        started, release = self.path("started"), self.path("release")
        req = self.client.send_execute(
            a.uuid, "#!/bin/sh\n: > %s\nn=0\nwhile [ ! -e %s ] && "
            "[ $n -lt 600 ]; do /bin/sleep 0.1; n=$((n+1)); done\n"
            "echo survived\n" % (started, release), env={})
        wait_until(lambda: os.path.exists(started), what="script started")
        p.cut()
        open(release, "w").close()
        r = self.client.wait_reply(a.uuid, req, timeout=60)
        self.assertReply(r, 0, "survived\n")

    def test_big_reply_cut_mid_write_is_published_again_whole(self):
        # A big reply goes out as slices of its own body (no copy).  The
        # connection stops carrying bytes half-way through it and is then
        # reset, with most of the body unwritten: the next connection must
        # carry all of it, once.
        size = 12 * 1000 * 1000  # more than loopback's socket buffers hold
        p = self.proxy()
        a = self.start_via(p, "--max-output", str(16 << 20))
        req = self.client.send_execute(
            a.uuid, "#!/bin/sh\n/bin/sleep 0.5\nhead -c %d /dev/zero | tr '\\0' x\n"
            % size, env={})
        a.wait_log_n("execute request", 1)
        p.freeze()
        a.wait_log_n("execute finished", 1)
        time.sleep(0.5)  # the writes fill the socket buffers and stall
        lost0 = a.count_log("lost the broker connection")
        p.cut()
        r = self.client.wait_reply(a.uuid, req, timeout=60)
        self.assertGreater(a.count_log("lost the broker connection"), lost0)
        self.assertEqual(r.get("exit_status"), 0, {k: v for k, v in r.items()
                                                   if k != "stdout"})
        self.assertFalse(r.get("stdout_truncated", False))
        self.assertEqual(len(r["stdout"]), size)
        self.assertEqual(r["stdout"].strip("x"), "")
        self.assertEqual(self.client.collect(
            lambda m: m.routing_key.endswith("." + req), 1.0), [])

    def test_silent_broker_found_by_heartbeat(self):
        # The connection goes silent (no RST, no FIN): only heartbeats can
        # tell.  With --heartbeat 2 the agent must give up on it within a
        # few intervals and come back on a new connection.
        p = self.proxy()
        a = self.start_via(p, "--heartbeat", "2")
        self.client.drop(lambda m: True)
        serving0 = a.count_log("serving requests")
        p.freeze()
        t0 = time.monotonic()
        wait_until(lambda: p.accepted >= 2, timeout=30,
                   what="the agent reconnecting after heartbeats stopped")
        self.assertLess(time.monotonic() - t0, 15)
        self.client.wait_sysinfo(a.uuid, timeout=60)
        # A sysinfo re-sent from the outbox can arrive before the request
        # queue is ours again: RabbitMQ keeps the frozen connection's
        # exclusive queue (and routes to it) until its own heartbeat gives
        # up on it, and the agent retries the 405.  Execute once serving.
        a.wait_log_n("serving requests", serving0 + 1, secs=60)
        r = self.client.execute(a.uuid, "#!/bin/sh\necho hb\n", env={})
        self.assertReply(r, 0, "hb\n")

    def test_sigterm_while_broker_unreachable_exits_0(self):
        a = self.start_agent(wait=False, use_env_broker=False,
                             args=["--broker", "127.0.0.1:1"])
        a.wait_log(lambda r: r.get("level", 0) >= 40,
                   what="a warning about the failed connect")
        a.stop()


class Log(AgentTestCase):

    def test_log_is_bunyan_json_lines(self):
        a = self.start_agent()
        req = self.client.send_execute(a.uuid, "#!/bin/sh\nexit 5\n", env={})
        self.assertReply(self.client.wait_reply(a.uuid, req), 5)
        a.stop()
        parsed, bad = a.log_lines()
        self.assertEqual(bad, [], "stderr lines that are not JSON objects")
        self.assertTrue(parsed, "no log at all")
        for rec in parsed:
            for k in BUNYAN_FIELDS:
                self.assertIn(k, rec, "log record lacks %s: %r" % (k, rec))
            self.assertEqual(rec["v"], 0)
            self.assertEqual(rec["pid"], a.proc.pid)
            self.assertIn(rec["level"], (10, 20, 30, 40, 50, 60))
            self.assertRegex(rec["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d"
                                          r"(\.\d+)?Z$")
        mine = [rec for rec in parsed if rec.get("req_id") == req]
        self.assertTrue(mine, "no log record with req_id %s" % req)
        self.assertTrue([rec for rec in mine if rec.get("exit_status") == 5],
                        "no record of req %s with its exit_status" % req)

    def test_log_renders_with_the_bunyan_cli(self):
        """Triton reads agent logs with the `bunyan` CLI (npm package
        bunyan): a real log piped through it renders every record."""
        bunyan = find_bunyan()
        if not bunyan:
            self.skipTest("no bunyan CLI and no npm to install it with")
        a = self.start_agent()
        req = self.client.send_execute(a.uuid, "#!/bin/sh\nexit 4\n", env={})
        self.assertReply(self.client.wait_reply(a.uuid, req), 4)
        a.stop()
        log = a.log_text()
        out = subprocess.run([bunyan, "--strict", "-o", "short", "--no-color"],
                             input=log.encode(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr.decode(errors="replace"))
        text = out.stdout.decode()
        records = [l for l in log.splitlines() if l.strip()]
        rendered = [l for l in text.splitlines() if re.match(
            r"^\d\d:\d\d:\d\d\.\d+Z +(TRACE|DEBUG|INFO|WARN|ERROR|FATAL) ur:", l)]
        # --strict drops anything that is not a bunyan record: all must stay.
        self.assertEqual(len(rendered), len(records), text)
        self.assertRegex(text, r"INFO ur: execute finished \(.*req_id=%s" % re.escape(req))

    def test_started_with_stdio_closed(self):
        """`ur-agent <&- >&- 2>&-`: the agent's own files must not take
        fds 0-2.  They did: the log went into the state dir's lock file and
        scripts ran with stdin closed."""
        a = self.start_agent(close_stdio=True)
        r = self.client.execute(
            a.uuid, "#!/bin/sh\ncat; echo \"cat $?\"; echo e >&2\n", env={})
        self.assertReply(r, 0, "cat 0\n", "e\n")
        a.stop()
        lock = os.path.join(a.state_dir, ".ur-agent.lock")
        self.assertEqual(os.path.getsize(lock), 0, "the lock file holds: %r"
                         % open(lock, "rb").read(300))

    def test_log_reader_that_stops_reading_costs_lines_not_service(self):
        # stderr a pipe nobody reads (a stopped `| bunyan`, a stalled
        # journald): the agent froze in write() once the pipe was full (107
        # of 300 requests answered in a review).  Now lines are dropped
        # and counted, and said once there is room.
        a = self.start_agent(log_to_pipe=True)
        reqs = [self.client.send_execute(a.uuid, "#!/bin/sh\necho %d\n" % i, env={})
                for i in range(300)]
        for i, req in enumerate(reqs):
            self.assertReply(self.client.wait_reply(a.uuid, req), 0, "%d\n" % i)
        rid, body = self.client.ping(a.uuid)
        self.assertEqual(body.get("req_id"), rid)
        os.set_blocking(a.proc.stderr.fileno(), False)
        while a.proc.stderr.read(1 << 16):
            pass
        self.assertReply(self.client.execute(a.uuid, "#!/bin/sh\necho last\n", env={}),
                         0, "last\n")
        text = b""
        deadline = time.monotonic() + 10
        while b"log lines dropped" not in text and time.monotonic() < deadline:
            time.sleep(0.1)
            text += a.proc.stderr.read(1 << 16) or b""
        self.assertIn(b"log lines dropped", text)
        a.stop()

    def test_log_level_warn_is_quiet(self):
        a = self.start_agent(args=["--log-level", "warn"])
        r = self.client.execute(a.uuid, "#!/bin/sh\necho q\n", env={})
        self.assertReply(r, 0, "q\n")
        a.stop()
        low = [rec for rec in a.logs() if rec.get("level", 0) < 40]
        self.assertEqual(low, [], "records below warn were logged")
