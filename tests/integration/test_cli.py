"""The command line: --help, --version, bad flags and values (no broker)."""

import subprocess

from urharness import AGENT, WRAPPER, AgentTestCase


def run_agent(*args, env=None, timeout=20):
    e = {"PATH": "/usr/bin:/bin"}
    e.update(env or {})
    return subprocess.run(WRAPPER + [AGENT] + list(args), env=e,
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=timeout)


class CommandLine(AgentTestCase):
    needs_rabbitmq = False

    def assertUsageError(self, p, flag):
        """exit 2, an error line naming the flag, then usage."""
        err = p.stderr.decode("utf-8", "replace")
        self.assertEqual(p.returncode, 2, "stderr: %r" % err)
        lines = [line for line in err.splitlines() if line.strip()]
        self.assertTrue(lines, "no error message on stderr")
        self.assertIn(flag, lines[0],
                      "first stderr line should name %s: %r" % (flag, err))
        self.assertIn("usage", "\n".join(lines[1:]).lower(),
                      "no usage after the error line: %r" % err)
        self.assertEqual([line for line in lines[1:] if flag in line], [],
                         "more than one error line: %r" % err)

    def test_help_exits_0_with_usage(self):
        p = run_agent("--help")
        out = (p.stdout + p.stderr).decode("utf-8", "replace")
        self.assertEqual(p.returncode, 0, out)
        self.assertIn("usage", out.lower())
        for flag in ("--broker", "--sysinfo-file", "--state-dir",
                     "--setup-file", "--max-concurrency", "--reboot-cmd"):
            self.assertIn(flag, out, "--help does not document " + flag)

    def test_version_exits_0(self):
        p = run_agent("--version")
        out = p.stdout.decode("utf-8", "replace").strip()
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(out, r"\d+\.\d+")

    def test_bogus_flag_exits_2_with_one_error_line(self):
        p = run_agent("--bogus")
        self.assertUsageError(p, "--bogus")

    def test_bad_values_exit_2(self):
        for args, flag in ((["--heartbeat", "abc"], "--heartbeat"),
                           (["--max-concurrency", "0"], "--max-concurrency"),
                           (["--max-concurrency", "-3"], "--max-concurrency"),
                           (["--sysinfo-interval", "1x"], "--sysinfo-interval"),
                           (["--max-output", "lots"], "--max-output"),
                           (["--default-timeout", "-1"], "--default-timeout"),
                           (["--broker", "host:99999"], "--broker"),
                           (["--log-level", "loud"], "--log-level"),
                           (["--state-dir"], "--state-dir")):
            with self.subTest(args=args):
                p = run_agent(*args)
                err = p.stderr.decode("utf-8", "replace")
                self.assertEqual(p.returncode, 2, "%s: %r" % (args, err))
                first = err.strip().splitlines()[0] if err.strip() else ""
                self.assertIn(flag, first, "%s: %r" % (args, err))

    def test_positional_argument_exits_2(self):
        p = run_agent("extra")
        self.assertEqual(p.returncode, 2, p.stderr)
