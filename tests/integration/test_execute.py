"""ur.execute: scripts and files, args, env, output capture, exit statuses,
timeouts, signals, reboot, concurrency."""

import json
import os
import re
import signal
import time

import pika

from urharness import (RABBITMQ_PORT, WRAPPER, AgentTestCase, alive, wait_until,
                       write_executable)

# What sh itself may add to an otherwise empty environment (dash: PWD;
# bash: PWD, SHLVL, _, OLDPWD).
SH_VARS = {"PWD", "SHLVL", "_", "OLDPWD"}

MIB = 1024 * 1024


def signal_set(pid, field, sigs):
    """The signals of sigs that /proc/PID/status lists under field
    (SigIgn, SigBlk, ...), as a bit mask (bit s-1 for signal s)."""
    with open("/proc/%d/status" % pid) as f:
        have = int(re.search(r"%s:\t(\w+)" % field, f.read()).group(1), 16)
    return have & sum(1 << (s - 1) for s in sigs)


def env_names(stdout):
    return {line.split("=", 1)[0] for line in stdout.splitlines() if line}


def check_truncated(tc, out, expected, min_head, tail=64 * 1024):
    """Asserts that out is expected cut as PROTOCOL.md says: a head that is
    exactly the stream's first bytes (at least min_head of them), a marker
    line that names how many bytes were cut, and the last 64 KiB."""
    total = len(expected)
    tc.assertTrue(out.endswith(expected[-tail:]),
                  "last 64 KiB not kept: ...%r" % out[-200:])
    rest = out[:-tail]
    head = marker = None
    # Whatever the head size, some number in the marker must be the count
    # of bytes cut, and the head before it must match the stream.
    base = max(0, len(rest) - 1024)
    for m in re.finditer(r"\d+", rest[base:]):
        n = total - tail - int(m.group())
        # The number must lie in the marker, after the head it implies.
        if 0 < n <= base + m.start() and rest[:n] == expected[:n]:
            head, marker = n, rest[n:]
            break
    tc.assertIsNotNone(head, "no marker naming the cut byte count; around "
                       "the cut: %r" % rest[-300:])
    tc.assertGreaterEqual(head, min_head, "head too small")
    tc.assertTrue(marker.endswith("\n"), repr(marker))
    tc.assertTrue(expected[head - 1] == "\n" or marker.startswith("\n"),
                  "marker not on its own line: %r" % marker)
    tc.assertNotIn("\n", marker.strip("\n"),
                   "marker is more than one line: %r" % marker)


class Execute(AgentTestCase):

    def setUp(self):
        super().setUp()
        self.agent = self.start_agent(env={"UR_INTEG_MARKER": "inherited-42"})
        self.uuid = self.agent.uuid

    def run_script(self, script, **kw):
        return self.client.execute(self.uuid, script, **kw)

    # -- the basics ---------------------------------------------------

    def test_script_reply_has_compatible_fields(self):
        r = self.run_script("#!/bin/sh\necho hello $1\necho oops >&2\n"
                            "exit 3\n", args=["world"], env={})
        self.assertReply(r, 3, "hello world\n", "oops\n")

    def test_bash_script_example_from_protocol(self):
        r = self.run_script("#!/bin/bash\necho hello $1\nexit 0",
                            args=["world"], env={"FOO": "bar"})
        self.assertReply(r, 0, "hello world\n", "")

    def test_args_with_spaces_quotes_unicode(self):
        args = ["a b", "  lead and trail  ", "it's", '"dq"', "back\\slash",
                "ünïcödé ☃ 𝄞", "", "$HOME", "*", "; rm -rf /", "$(id)",
                "new\nline", "tab\there"]
        r = self.run_script('#!/bin/sh\nfor a in "$@"; do printf "[%s]\\n" '
                            '"$a"; done\n', args=args, env={})
        self.assertReply(r, 0, "".join("[%s]\n" % a for a in args), "")

    def test_3mib_script_body(self):
        # Incoming bodies span many frames; every byte must arrive in order.
        filler = "".join("# %07d %s\n" % (i, "x" * 50)
                         for i in range(3 * MIB // 61))
        script = "#!/bin/sh\n" + filler + "/usr/bin/wc -c < \"$0\"\n"
        r = self.run_script(script, env={}, wait=60)
        self.assertReply(r, 0, "%d\n" % len(script.encode()), "")

    def test_100000_args(self):
        args = [str(i) for i in range(100000)]
        r = self.run_script('#!/bin/sh\necho "$# $1 ${50000} ${100000}"\n',
                            args=args, env={})
        self.assertReply(r, 0, "100000 0 49999 99999\n", "")

    def test_env_empty_object_gives_empty_environment(self):
        r = self.run_script("#!/bin/sh\n/usr/bin/env\n", env={})
        self.assertReply(r, 0)
        extra = env_names(r["stdout"]) - SH_VARS
        self.assertEqual(extra, set(), "env {} leaked: %r" % r["stdout"])

    def test_env_object_is_whole_environment(self):
        r = self.run_script("#!/bin/sh\n/usr/bin/env\n",
                            env={"FOO": "bar", "SP ACE": "x y"})
        self.assertReply(r, 0)
        lines = r["stdout"].splitlines()
        self.assertIn("FOO=bar", lines)
        self.assertEqual(env_names(r["stdout"]) - SH_VARS - {"FOO", "SP ACE"},
                         set(), "more than the given env: %r" % r["stdout"])

    def test_env_absent_inherits_agent_environment_without_password(self):
        r = self.run_script("#!/bin/sh\n/usr/bin/env\n")  # no "env" field
        self.assertReply(r, 0)
        lines = r["stdout"].splitlines()
        self.assertIn("UR_INTEG_MARKER=inherited-42", lines,
                      "agent environment not inherited: %r" % r["stdout"])
        self.assertIn("PATH=/usr/bin:/bin", lines)
        self.assertNotIn("AMQP_PASSWORD", env_names(r["stdout"]),
                         "the broker password leaked to a child")

    def test_stdin_is_not_a_pipe_to_the_agent(self):
        # A child that reads stdin must see EOF at once, never hang.
        r = self.run_script("#!/bin/sh\n/bin/cat\necho eof\n", env={})
        self.assertReply(r, 0, "eof\n")

    def test_script_gets_default_signal_handling_whatever_the_agent_got(self):
        # The agent takes its signal dispositions once at start-up and its
        # children reset just those: the ones it set and the ones it was
        # started with ignored, which exec would otherwise pass on.
        sigs = (signal.SIGQUIT, signal.SIGTTIN, signal.SIGTTOU)
        a = self.start_agent(name="ignoring", ignore_signals=sigs)
        if not WRAPPER:
            self.assertEqual(signal_set(a.proc.pid, "SigIgn", sigs),
                             sum(1 << (s - 1) for s in sigs),
                             "the agent was not started ignoring them")
        r = self.client.execute(a.uuid, "#!/bin/sh\n/bin/grep -E '^Sig(Ign|Blk)' /proc/self/status\n",
                                env={})
        self.assertReply(r, 0)
        self.assertIn("SigIgn:\t0000000000000000\n", r["stdout"])
        self.assertIn("SigBlk:\t0000000000000000\n", r["stdout"])

    def test_agent_started_with_signals_blocked_still_reaps_and_stops(self):
        # A parent may start the agent with signals blocked, and the mask
        # survives exec: with SIGCHLD blocked no script would ever be seen
        # to end, with SIGTERM blocked the agent could not be stopped.
        sigs = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        a = self.start_agent(name="blocked", block_signals=sigs)
        r = self.client.execute(a.uuid, "#!/bin/sh\n/bin/grep -E '^SigBlk' /proc/self/status\n",
                                env={})
        self.assertReply(r, 0, "SigBlk:\t0000000000000000\n")
        if not WRAPPER:
            self.assertEqual(signal_set(a.proc.pid, "SigBlk", sigs), 0,
                             "the agent kept them blocked")
        self.assertEqual(a.stop(), 0)

    def test_script_file_is_private_and_removed(self):
        r = self.run_script('#!/bin/sh\n/usr/bin/stat -c "%a %u" "$0"\n'
                            'echo "$0"\n', env={})
        self.assertReply(r, 0)
        mode_uid, path = r["stdout"].splitlines()
        self.assertEqual(mode_uid.split()[0], "700",
                         "script file mode: %r" % mode_uid)
        if not path.startswith("/dev/fd/") and not path.startswith("/proc/"):
            wait_until(lambda: not os.path.exists(path),
                       what="%s removed" % path)

    # -- type file ----------------------------------------------------

    def test_file_type_with_args(self):
        path = self.path("tool.sh")
        write_executable(path, '#!/bin/sh\nprintf "%s|" "$@"; echo; echo err >&2; '
                               'exit 7\n')
        r = self.client.execute_file(self.uuid, path, ["x y", "ü"], env={})
        self.assertReply(r, 7, "x y|ü|\n", "err\n")

    def test_file_type_binary(self):
        r = self.client.execute_file(self.uuid, "/bin/echo", ["a", "b c"])
        self.assertReply(r, 0, "a b c\n", "")

    def test_file_without_slash_is_looked_up_in_path(self):
        # As the original's execvp(): urclient sends env {}, so the
        # default search path; else the PATH the request gives.
        r = self.client.execute_file(self.uuid, "echo", ["a", "b c"], env={})
        self.assertReply(r, 0, "a b c\n", "")
        d = self.path("bin")
        os.makedirs(d, exist_ok=True)
        write_executable(os.path.join(d, "ur-tool"), '#!/bin/sh\necho "tool $1"\n')
        r = self.client.execute_file(self.uuid, "ur-tool", ["x"],
                                     env={"PATH": "/nonexistent:" + d})
        self.assertReply(r, 0, "tool x\n", "")
        r = self.client.execute_file(self.uuid, "ur-no-such-tool", env={})
        self.assertEqual(r["exit_status"], 127, r)
        self.assertIn("not found in PATH", r["stderr"])

    def test_file_missing_is_127_with_reason(self):
        r = self.client.execute_file(self.uuid, self.path("no/such/file"))
        self.assertReply(r, 127, "")
        self.assertTrue(r["stderr"].strip(), "no reason in stderr")

    def test_file_not_executable_is_126_with_reason(self):
        path = self.path("noexec.sh")
        with open(path, "w") as f:
            f.write("#!/bin/sh\necho hi\n")
        os.chmod(path, 0o644)
        r = self.client.execute_file(self.uuid, path)
        self.assertReply(r, 126, "")
        self.assertTrue(r["stderr"].strip(), "no reason in stderr")

    def test_script_without_shebang_is_run_by_bin_sh(self):
        # CNAPI's own example request, '{"script": "echo Hello world"}'
        # (no type, args or env): the original ran it through execvp(),
        # which hands a file without #! to /bin/sh.
        req = self.client.send_execute(self.uuid, body={"type": "script",
                                                        "script": "echo Hello world"})
        self.assertReply(self.client.wait_reply(self.uuid, req), 0, "Hello world\n", "")
        r = self.run_script("echo \"$1\"; exit 3\n", args=["an arg"], env={})
        self.assertReply(r, 3, "an arg\n", "")
        # An empty script too, as the original ran it (urclient sends it).
        req = self.client.send_execute(self.uuid, body={"type": "script", "script": ""})
        self.assertReply(self.client.wait_reply(self.uuid, req), 0, "", "")

    # -- output -------------------------------------------------------

    def test_utf8_output_preserved(self):
        r = self.run_script("#!/bin/sh\nprintf 'h\\303\\251llo \\342\\230"
                            "\\203 \\360\\235\\204\\236\\n'\nprintf "
                            "'\\316\\273\\n' >&2\n", env={})
        self.assertReply(r, 0, "héllo ☃ 𝄞\n", "λ\n")

    def test_invalid_utf8_becomes_replacement_char(self):
        # \377 and a lone continuation byte \200 are each one invalid
        # sequence: one U+FFFD apiece, whatever decoder policy.
        r = self.run_script("#!/bin/sh\nprintf 'a\\377b\\200c\\n'\n"
                            "printf '\\377x' >&2\n", env={})
        self.assertReply(r, 0, "a\ufffdb\ufffdc\n", "\ufffdx")

    def test_invalid_utf8_sequences_never_leak_raw(self):
        # Overlong, surrogate, truncated and out-of-range sequences: how
        # many U+FFFD each becomes is policy, but no raw byte, no surrogate
        # code point and every valid neighbour survives.
        r = self.run_script("#!/bin/sh\nprintf '1\\300\\2572\\355\\240\\200"
                            "3\\342\\2304\\364\\220\\200\\2005\\n'\n", env={})
        self.assertReply(r, 0)
        out = r["stdout"]
        self.assertFalse(any(0xD800 <= ord(c) <= 0xDFFF for c in out),
                         "surrogate in output: %r" % out)
        self.assertEqual(re.sub("\ufffd+", "", out), "12345\n", repr(out))
        self.assertEqual(len(re.findall("\ufffd+", out)), 4, repr(out))

    def test_nul_bytes_in_output(self):
        r = self.run_script("#!/bin/sh\nprintf 'a\\000b\\n'\n", env={})
        self.assertReply(r, 0, "a\x00b\n")

    def test_6mib_output_truncated_head_and_tail_kept(self):
        # 98304 lines of 64 bytes = 6 MiB, each line carrying its number.
        total = 6 * MIB
        script = ("#!/bin/sh\n/usr/bin/awk 'BEGIN { for (i = 0; i < 98304; "
                  "i++) printf \"%063d\\n\", i }'\necho small >&2\n")
        r = self.run_script(script, env={}, wait=60)
        self.assertReply(r, 0, stderr="small\n")
        expected = "".join("%063d\n" % i for i in range(98304))
        out = r["stdout"]
        self.assertIs(r.get("stdout_truncated"), True)
        self.assertEqual(r.get("stdout_bytes"), total)
        self.assertNotEqual(r.get("stderr_truncated"), True)
        self.assertLess(len(out), 5 * MIB + 4096, "cap not applied")
        check_truncated(self, out, expected, min_head=MIB)

    # -- children that misbehave --------------------------------------

    def test_background_child_holding_stdout_does_not_delay_reply(self):
        pidfile = self.path("bg.pid")
        t0 = time.monotonic()
        r = self.run_script("#!/bin/sh\necho started\n/bin/sleep 600 &\n"
                            "echo $! > %s\necho done\nexit 0\n" % pidfile,
                            env={})
        took = time.monotonic() - t0
        if os.path.exists(pidfile):
            with open(pidfile) as f:
                self.pids_to_kill.append(int(f.read().strip()))
        self.assertReply(r, 0)
        self.assertTrue(r["stdout"].startswith("started\n"), repr(r))
        # The pipe grace is 2 s; the grandchild would hold the pipes 600 s.
        self.assertLess(took, 30, "reply took %.1fs (want ~2 s)" % took)

    def test_timeout_kills_process_group(self):
        pidfile = self.path("grandchild.pid")
        t0 = time.monotonic()
        r = self.run_script("#!/bin/sh\n/bin/sleep 300 &\necho $! > %s\n"
                            "echo before\nwait\necho never\n" % pidfile,
                            env={}, timeout=1)
        took = time.monotonic() - t0
        self.assertIs(r.get("timed_out"), True, repr(r))
        self.assertIn(r["exit_status"], (143, 137), repr(r))
        self.assertEqual(r["stdout"], "before\n")
        # Said on stderr, which urclient and sdc-oneachnode show (bug: empty).
        self.assertIn(r["stderr"], ("ur-agent: timed out after 1 s; killed by SIGTERM\n",
                                    "ur-agent: timed out after 1 s; killed by SIGKILL\n"))
        self.assertLess(took, 15, "timeout of 1s took %.1fs" % took)
        self.assertGreater(took, 0.9)
        with open(pidfile) as f:
            pid = int(f.read().strip())
        self.pids_to_kill.append(pid)
        wait_until(lambda: not alive(pid), what="grandchild %d killed" % pid)

    def test_sigkilled_child_is_137_with_signal_name(self):
        r = self.run_script("#!/bin/sh\necho bye\nkill -9 $$\necho never\n",
                            env={})
        self.assertReply(r, 137, "bye\n")
        self.assertEqual(r.get("signal"), "SIGKILL", repr(r))
        self.assertNotEqual(r.get("timed_out"), True)

    def test_exit_codes_pass_through(self):
        for code in (0, 1, 2, 42, 126, 127, 255):
            r = self.run_script("#!/bin/sh\nexit %d\n" % code, env={})
            self.assertReply(r, code, "", "")

    def test_request_after_many_requests_still_served(self):
        # Sequential traffic: no fd or child leak makes the agent stall.
        for i in range(30):
            r = self.run_script("#!/bin/sh\necho %d\n" % i, env={})
            self.assertReply(r, 0, "%d\n" % i)
        self.assertTrue(self.agent.running())


class Limits(AgentTestCase):

    def test_default_timeout_flag(self):
        a = self.start_agent(args=["--default-timeout", "1"])
        t0 = time.monotonic()
        r = self.client.execute(a.uuid, "#!/bin/sh\n/bin/sleep 30\n", env={})
        self.assertIs(r.get("timed_out"), True, repr(r))
        self.assertIn(r["exit_status"], (143, 137))
        self.assertLess(time.monotonic() - t0, 15)

    def test_request_timeout_overrides_default(self):
        a = self.start_agent(args=["--default-timeout", "1"])
        r = self.client.execute(a.uuid, "#!/bin/sh\n/bin/sleep 2\necho ok\n",
                                env={}, timeout=20)
        self.assertReply(r, 0, "ok\n")
        self.assertNotEqual(r.get("timed_out"), True)

    def test_request_timeout_under_1_ms_is_1_ms_not_unlimited(self):
        # 0.0001 s is 0.1 ms: rounded down it would be 0, "no limit", and
        # would outlast even --default-timeout.
        a = self.start_agent(args=["--default-timeout", "30"])
        t0 = time.monotonic()
        r = self.client.execute(a.uuid, "#!/bin/sh\n/bin/sleep 20\necho done\n",
                                env={}, timeout=0.0001)
        self.assertIs(r.get("timed_out"), True, r)
        self.assertNotIn("done", r["stdout"])
        self.assertLess(time.monotonic() - t0, 15)

    def test_max_output_flag_caps_stderr(self):
        a = self.start_agent(args=["--max-output", "200000"])
        total = 300000
        expected = "".join("%09d\n" % i for i in range(total // 10))
        r = self.client.execute(
            a.uuid, "#!/bin/sh\n/usr/bin/awk 'BEGIN { for (i = 0; i < %d; "
            "i++) printf \"%%09d\\n\", i }' >&2\necho out\n"
            % (total // 10), env={})
        self.assertReply(r, 0, "out\n")
        self.assertIs(r.get("stderr_truncated"), True, repr(r)[:300])
        self.assertEqual(r.get("stderr_bytes"), total)
        self.assertNotEqual(r.get("stdout_truncated"), True)
        err = r["stderr"]
        self.assertLess(len(err), 200000 + 1024, "cap not applied")
        check_truncated(self, err, expected, min_head=50000)


    def test_max_output_caps_the_escaped_reply_not_only_raw_bytes(self):
        # Control bytes escape to six ("\u0001"): a cap on raw bytes let a
        # 1 MB cap make a 6 MB reply.
        a = self.start_agent(args=["--max-output", "1000000"])
        r = self.client.execute(
            a.uuid, "#!/bin/sh\n/usr/bin/head -c 3000000 /dev/zero | "
            "/usr/bin/tr '\\0' '\\1'\n", env={})
        self.assertEqual(r["exit_status"], 0)
        self.assertIs(r.get("stdout_truncated"), True)
        self.assertEqual(r.get("stdout_bytes"), 3000000)
        escaped = len(json.dumps(r["stdout"]))
        self.assertLess(escaped, 1000000 + 6 * 65536 + 1024, "reply not capped")
        self.assertTrue(r["stdout"].startswith("\x01" * 1000))

class UnwritableStateDir(AgentTestCase):

    def test_serves_pings_and_files_and_answers_scripts_126(self):
        # A state dir that cannot be made (here under a regular file: even
        # root gets ENOTDIR; a read-only file system is the real case) used
        # to stop the agent at start, unreachable.  It serves what needs no
        # state and says why scripts cannot run.
        blocker = os.path.join(self.tmp, "not-a-dir")
        open(blocker, "w").close()
        a = self.start_agent(args=["--state-dir", blocker + "/state"])
        self.assertTrue(a.running())
        rid, body = self.client.ping(a.uuid)
        self.assertEqual(body.get("req_id"), rid)
        r = self.client.execute_file(a.uuid, "/bin/echo", args=["via file"], env={})
        self.assertReply(r, 0, "via file\n")
        r = self.client.execute(a.uuid, "#!/bin/sh\necho no\n", env={})
        self.assertEqual(r["exit_status"], 126, r)
        self.assertIn("cannot write the script", r["stderr"])
        self.assertEqual(a.count_log("no usable script directory; script requests "
                                     "fail until it can be made"), 1)

class Reboot(AgentTestCase):

    def test_exit_113_replies_0_then_runs_reboot_cmd(self):
        flag = self.path("rebooted")
        cmd = self.path("reboot.sh")
        write_executable(cmd, "#!/bin/sh\necho called \"$@\" >> %s\n" % flag)
        a = self.start_agent(args=["--reboot-cmd", cmd + " now"])
        r = self.client.execute(a.uuid, "#!/bin/sh\necho rebooting\nexit 113\n",
                                env={})
        self.assertReply(r, 0, "rebooting\n")
        wait_until(lambda: os.path.exists(flag), what="reboot command run")
        with open(flag) as f:
            self.assertEqual(f.read(), "called now\n")

    def test_a_failed_reboot_command_is_run_again_by_a_later_113(self):
        # The first reboot command fails (exits 1): a later exit 113 runs it
        # again (once rebooting was under way, never twice).
        calls = self.path("calls")
        cmd = self.path("reboot.sh")
        write_executable(cmd, "#!/bin/sh\necho x >> %s\n"
                              "[ $(wc -l < %s) -ge 2 ] || { echo no way >&2; exit 1; }\n"
                              % (calls, calls))
        a = self.start_agent(args=["--reboot-cmd", cmd])

        def ran():
            return open(calls).read().count("x") if os.path.exists(calls) else 0
        for n in (1, 2):
            r = self.client.execute(a.uuid, "#!/bin/sh\nexit 113\n", env={})
            self.assertReply(r, 0)
            wait_until(lambda: ran() == n, what="reboot command run %d times" % n)
            if n == 1:
                rec = a.wait_log(lambda rec: rec.get("msg", "").startswith(
                    "the reboot command failed"), what="failure logged")
                self.assertEqual(rec.get("stderr"), "no way\n")
        self.assertReply(self.client.execute(a.uuid, "#!/bin/sh\nexit 113\n", env={}), 0)
        time.sleep(0.5)
        self.assertEqual(ran(), 2, "the reboot command ran again after it succeeded")

    def test_a_timed_out_script_that_traps_term_and_exits_113_does_not_reboot(self):
        # It ran out of time: reported as killed (143, timed_out), not as
        # the 0 or 113 its trap chose (which rebooted the node).
        reboot_log = self.path("reboot-called")
        a = self.start_agent(args=["--reboot-cmd", "echo called >> " + reboot_log])
        r = self.client.execute(a.uuid, "#!/bin/sh\ntrap 'exit 113' TERM\n/bin/sleep 30 & wait\n",
                                env={}, timeout=1)
        self.assertReply(r, 143)
        self.assertEqual((r.get("signal"), r.get("timed_out")), ("SIGTERM", True), r)
        self.assertIn("ur-agent: timed out after 1 s; it exited 113 after SIGTERM", r["stderr"])
        time.sleep(0.5)
        self.assertFalse(os.path.exists(reboot_log), "the reboot command ran")

    def test_a_script_stopped_at_shutdown_that_traps_term_and_exits_113_does_not_reboot(self):
        # svcadm restart of the agent: the script's trap chose 113 and the
        # node rebooted.  It is reported as killed (143).
        reboot_log = self.path("reboot-called")
        started = self.path("started")
        a = self.start_agent(args=["--reboot-cmd", "echo called >> " + reboot_log,
                                   "--shutdown-grace", "1"])
        req = self.client.send_execute(
            a.uuid, "#!/bin/sh\ntrap 'exit 113' TERM\n: > %s\n/bin/sleep 30 & wait\n" % started,
            env={})
        wait_until(lambda: os.path.exists(started), what="the script started")
        self.assertEqual(a.stop(), 0)
        r = self.client.wait_reply(a.uuid, req)
        self.assertReply(r, 143)
        self.assertEqual(r.get("signal"), "SIGTERM", r)
        self.assertIn("ur-agent: stopped by the agent (shutting down); it exited 113 after SIGTERM", r["stderr"])
        self.assertFalse(os.path.exists(reboot_log), "the reboot command ran")


class Concurrency(AgentTestCase):

    def test_50_requests_with_max_concurrency_4(self):
        a = self.start_agent(args=["--max-concurrency", "4"])
        log = self.path("spans")
        script = ("#!/bin/sh\necho \"S $(date +%%s%%N) $1\" >> %s\n"
                  "sleep 0.2\necho \"E $(date +%%s%%N) $1\" >> %s\n"
                  "echo $1\n" % (log, log))
        env = {"PATH": "/usr/bin:/bin"}
        reqs = [self.client.send_execute(a.uuid, script, args=[str(i)],
                                         env=env) for i in range(50)]
        for i, req in enumerate(reqs):
            r = self.client.wait_reply(a.uuid, req, timeout=60)
            self.assertReply(r, 0, "%d\n" % i)
        events = []
        with open(log) as f:
            for line in f:
                kind, ns, _ = line.split()
                # At equal times count the end first: not an overlap.
                events.append((int(ns), 0 if kind == "E" else 1))
        self.assertEqual(len(events), 100)
        running = peak = 0
        for _, start in sorted(events):
            running += 1 if start else -1
            peak = max(peak, running)
        self.assertLessEqual(peak, 4, "more than 4 scripts ran at once")
        self.assertGreaterEqual(peak, 2, "requests were not run concurrently")


class LateRequester(AgentTestCase):
    """urclient publishes before its reply queue's bindings exist (after it
    connects, and again after each reconnect).  An answer faster than them
    was unroutable and lost: a 127 for a missing program (4 of 500 sdcadm
    style runs in a black-box test), a ping from a reconnected client (19
    of 30).  Answers are published mandatory; one no queue took comes back
    and is sent again, 100, 200, 400 and 800 ms later, then given up."""

    def test_an_answer_no_queue_took_is_sent_again_then_given_up(self):
        a = self.start_agent()
        self.client.close()  # its ur.execute-reply.*.* binding takes every reply
        conn = pika.BlockingConnection(pika.ConnectionParameters(
            host="127.0.0.1", port=int(RABBITMQ_PORT)))
        self.addCleanup(lambda: conn.is_open and conn.close())
        ch = conn.channel()
        q = ch.queue_declare("", exclusive=True).method.queue
        props = pika.BasicProperties(content_type="application/json")

        def wait_body(key, secs=5):
            deadline = time.monotonic() + secs
            while time.monotonic() < deadline:
                method, _, body = ch.basic_get(q, auto_ack=True)
                if method and method.routing_key == key:
                    return json.loads(body)
                conn.sleep(0.01)
            raise AssertionError("no message on " + key)

        # A 127, answered in a millisecond; the binding 300 ms later.
        ch.basic_publish("amq.topic", "ur.execute.%s.late1" % a.uuid,
                         json.dumps({"type": "file", "file": "/nonexistent"}), props)
        conn.sleep(0.3)
        key = "ur.execute-reply.%s.late1" % a.uuid
        ch.queue_bind(q, "amq.topic", key)
        self.assertEqual(wait_body(key)["exit_status"], 127)
        # A client already answered once (its pings are answered at once)
        # binds again late, as after a reconnect.
        ack = "ur.ackLATE.%s" % a.uuid
        ch.queue_bind(q, "amq.topic", ack)
        ch.basic_publish("amq.topic", "ur.ping." + a.uuid,
                         json.dumps({"client_id": "LATE", "id": "p1"}), props)
        self.assertEqual(wait_body(ack)["req_id"], "p1")
        ch.queue_unbind(q, "amq.topic", ack)
        ch.basic_publish("amq.topic", "ur.ping." + a.uuid,
                         json.dumps({"client_id": "LATE", "id": "p2"}), props)
        conn.sleep(0.3)
        ch.queue_bind(q, "amq.topic", ack)
        self.assertEqual(wait_body(ack)["req_id"], "p2")
        # Nobody binds: given up (at info: a requester gone is no fault
        # of ours) and its journal entry removed.
        t0 = time.monotonic()
        ch.basic_publish("amq.topic", "ur.execute.%s.gone" % a.uuid,
                         json.dumps({"type": "file", "file": "/bin/true"}), props)
        rec = a.wait_log(lambda r: r.get("msg", "").startswith(
            "message given up, not sent again: no queue took it in 5 tries"),
            what="the unroutable reply given up")
        self.assertGreaterEqual(time.monotonic() - t0, 1.4)
        self.assertEqual((rec.get("req_id"), rec.get("level")), ("gone", 30), rec)
        self.assertEqual(a.count_log("message returned by the broker"), 0)
        inflight = os.path.join(a.state_dir, ".ur-agent-inflight")
        self.assertTrue(os.path.isdir(inflight))
        for name in os.listdir(inflight):
            with open(os.path.join(inflight, name), "rb") as f:
                self.assertNotIn(b".gone", f.read(), name)
