"""The built-in Linux sysinfo (no /usr/bin/sysinfo, no --sysinfo-cmd or
--sysinfo-file), checked against what /sys, /proc and `ip` report on this
machine, and used by a running agent."""
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import unittest

from urharness import AGENT, AgentTestCase, wait_until, write_executable


def kill_quietly(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def print_sysinfo(*args):
    return subprocess.run([AGENT, "--print-sysinfo"] + list(args),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)


@unittest.skipUnless(platform.system() == "Linux", "the built-in sysinfo is for Linux")
class BuiltinSysinfo(AgentTestCase):
    needs_rabbitmq = False

    def setUp(self):
        super().setUp()
        if os.path.exists("/usr/bin/sysinfo"):
            self.skipTest("/usr/bin/sysinfo exists here: the agent would run it instead")

    def test_matches_sys_proc_and_ip(self):
        r = print_sysinfo("--datacenter", "dc-test")
        self.assertEqual(r.returncode, 0, r.stderr.decode())
        s = json.loads(r.stdout)
        self.assertEqual(s["System Type"], "Linux")
        self.assertEqual(s["Live Image"], platform.release())
        self.assertEqual(s["Hostname"], socket.gethostname())
        self.assertEqual(s["Datacenter Name"], "dc-test")
        self.assertEqual(s["CPU Total Cores"], os.cpu_count())
        with open("/proc/meminfo") as f:
            kib = int(re.search(r"MemTotal:\s+(\d+)", f.read()).group(1))
        self.assertEqual(s["MiB of Memory"], str(kib // 1024))
        self.assertRegex(s["UUID"], r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
        self.assertIn(s["Setup"], ("true", "false"))
        self.assertIsInstance(s["Boot Parameters"], dict)

        if not shutil.which("ip"):
            self.skipTest("no `ip` command to compare the NICs with")
        links = json.loads(subprocess.check_output(["ip", "-j", "link"]))
        addrs = json.loads(subprocess.check_output(["ip", "-j", "-4", "addr"]))
        nics = s["Network Interfaces"]
        expected = {l["ifname"]: l for l in links if l["ifname"] != "lo"}
        self.assertEqual(sorted(nics), sorted(expected))
        for name, link in expected.items():
            self.assertEqual(nics[name]["MAC Address"], link.get("address", "").lower(), name)
            v4 = [a["local"] for x in addrs if x["ifname"] == name
                  for a in x.get("addr_info", []) if a.get("family") == "inet"]
            if v4:
                self.assertIn(nics[name]["ip4addr"], v4, name)
            state = link.get("operstate", "").lower()
            if state in ("up", "down"):
                self.assertEqual(nics[name]["Link Status"], state, name)
        routes = json.loads(subprocess.check_output(["ip", "-j", "route", "show", "default"]))
        if routes:
            admin = routes[0]["dev"]
            self.assertEqual(nics[admin]["NIC Names"], ["admin"])
            for name in nics:
                if name != admin:
                    self.assertEqual(nics[name]["NIC Names"], [], name)

    def test_admin_nic_and_tag_flags(self):
        nics = sorted(os.listdir("/sys/class/net"))
        nic = [n for n in nics if n != "lo"][-1]
        r = print_sysinfo("--admin-nic", nic, "--admin-nic-tag", "mgmt")
        self.assertEqual(r.returncode, 0, r.stderr.decode())
        s = json.loads(r.stdout)
        self.assertEqual(s["Admin NIC Tag"], "mgmt")
        self.assertEqual(s["Network Interfaces"][nic]["NIC Names"], ["mgmt"])

    def test_an_admin_nic_that_is_not_there_is_an_error(self):
        # A typo must not give a node without its admin MAC, silently.
        r = print_sysinfo("--admin-nic", "nosuch0")
        self.assertNotEqual(r.returncode, 0)
        err = r.stderr.decode()
        self.assertIn("--admin-nic nosuch0: not a network interface sysinfo lists", err)
        for n in os.listdir("/sys/class/net"):
            if n != "lo":
                self.assertIn(n, err)

    def test_setup_file_sets_setup(self):
        setup = self.path("setup.json")
        with open(setup, "w") as f:
            f.write('{"complete": true}')
        s = json.loads(print_sysinfo("--setup-file", setup).stdout)
        self.assertEqual(s["Setup"], "true")
        s = json.loads(print_sysinfo("--setup-file", self.path("missing.json")).stdout)
        self.assertEqual(s["Setup"], "false")


@unittest.skipUnless(platform.system() == "Linux", "the built-in sysinfo is for Linux")
class BuiltinSysinfoAgent(AgentTestCase):

    def test_agent_announces_itself_with_builtin_sysinfo(self):
        if os.path.exists("/usr/bin/sysinfo"):
            self.skipTest("/usr/bin/sysinfo exists here")
        s = json.loads(print_sysinfo().stdout)
        a = self.new_agent(uuid=s["UUID"])
        argv = a.argv()
        i = argv.index("--sysinfo-file")
        del argv[i:i + 2]       # no sysinfo source given: the built-in one
        a.argv = lambda: argv
        a.start()
        msg = self.client.wait_message(
            lambda m: m.routing_key.startswith("ur.sysinfo.%s." % s["UUID"]),
            what="ur.sysinfo from the built-in sysinfo")
        body = msg.json()
        self.assertEqual(body["UUID"], s["UUID"])
        self.assertEqual(body["Hostname"], socket.gethostname())
        reply = self.client.execute(s["UUID"], "#!/bin/sh\necho builtin\n", env={})
        self.assertReply(reply, 0, "builtin\n")


class PrintSysinfo(AgentTestCase):
    """--print-sysinfo reads and checks sysinfo as the running agent does,
    and says why it would refuse it."""
    needs_rabbitmq = False

    def command(self, body):
        path = self.path("sysinfo.sh")
        write_executable(path, "#!/bin/sh\n" + body + "\n")
        return print_sysinfo("--sysinfo-cmd", path)

    def refused(self, r, why):
        self.assertEqual(r.returncode, 1, r)
        self.assertEqual(r.stdout, b"")
        err = r.stderr.decode()
        self.assertTrue(err.startswith("ur-agent: cannot read sysinfo: "), err)
        self.assertIn(why, err)
        self.assertEqual(err.count("\n"), 1, err)

    def test_prints_what_the_agent_would_send(self):
        r = self.command("""echo '{ "UUID": "abc-1",\n  "Hostname": "cn1" }'""")
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(r.stdout, b'{"UUID":"abc-1","Hostname":"cn1"}\n')
        # With stdout closed (or full) it has nowhere to print: an error,
        # not exit 0 with nothing printed.
        path = self.path("sysinfo.sh")
        r = subprocess.run([AGENT, "--print-sysinfo", "--sysinfo-cmd", path],
                           stderr=subprocess.PIPE, timeout=30, preexec_fn=lambda: os.close(1))
        self.assertEqual((r.returncode, r.stderr), (1, b"ur-agent: --print-sysinfo: stdout is closed\n"))
        with open("/dev/full", "wb") as full:
            r = subprocess.run([AGENT, "--print-sysinfo", "--sysinfo-cmd", path],
                               stdout=full, stderr=subprocess.PIPE, timeout=30)
        self.assertEqual(r.returncode, 1, r)
        self.assertIn(b"cannot write the sysinfo: No space left on device", r.stderr)

    def test_refuses_what_the_agent_refuses(self):
        self.refused(self.command("echo this is not json"), "sysinfo is not valid JSON")
        self.refused(self.command("""echo '{"Hostname": "x"}'"""), 'no "UUID"')
        self.refused(self.command("""echo '{"UUID": "a.b"}'"""), "routing key")
        self.refused(self.command("echo 'sysinfo: cannot read smbios' >&2; exit 3"),
                     "failed with exit status 3: sysinfo: cannot read smbios")
        self.refused(print_sysinfo("--sysinfo-cmd", self.path("none")),
                     "failed with exit status 127")
        # Killed by a signal: said so, not "exit status 139".
        self.refused(self.command("kill -SEGV $$"), "was killed by SIGSEGV")
        path = self.path("broken.json")
        with open(path, "w") as f:
            f.write('{"UUID": "x"')
        self.refused(print_sysinfo("--sysinfo-file", path), "not valid JSON")

    def test_output_past_16_mib_is_stopped(self):
        self.refused(self.command("exec yes '{}'"), "printed more than 16 MiB (stopped)")

    def test_a_signal_ends_the_wait_and_kills_the_command(self):
        # The command runs in a session of its own: killing ur-agent left
        # it running (a hung /usr/bin/sysinfo, for ever) with nothing to
        # enforce its 120 s any more.
        pidfile = self.path("cmd.pid")
        path = self.path("hung.sh")
        write_executable(path, "#!/bin/sh\necho $$ > %s\nexec /bin/sleep 300\n" % pidfile)
        p = subprocess.Popen([AGENT, "--print-sysinfo", "--sysinfo-cmd", path],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            wait_until(lambda: os.path.exists(pidfile) and open(pidfile).read().strip(),
                       what="the command started")
            pid = int(open(pidfile).read())
            self.addCleanup(kill_quietly, pid)  # left behind when the test fails
            p.send_signal(signal.SIGTERM)
            out, err = p.communicate(timeout=5)
        finally:
            if p.poll() is None:
                p.kill()
        self.assertEqual(p.returncode, 1)
        self.assertIn(b"interrupted by SIGTERM", err)
        wait_until(lambda: not os.path.exists("/proc/%d" % pid) or
                   open("/proc/%d/stat" % pid).read().split(") ")[1].startswith("Z"),
                   timeout=5, what="the command killed")

    def test_works_with_sigchld_ignored(self):
        # Inherited SIG_IGN for SIGCHLD: the kernel reaped the command and
        # its status was "lost".
        path = self.path("ok.sh")
        write_executable(path, "#!/bin/sh\necho '{\"UUID\": \"u1\"}'\n")
        r = subprocess.run([AGENT, "--print-sysinfo", "--sysinfo-cmd", path],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30,
                           preexec_fn=lambda: signal.signal(signal.SIGCHLD, signal.SIG_IGN))
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(r.stdout, b'{"UUID":"u1"}\n')
