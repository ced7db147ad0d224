"""A DNS outage while the agent looks up a broker's name.

The agent runs in a mount namespace of its own (unshare -m) where
/etc/resolv.conf names one name server, on a 127.x.y.z address of this
test's choosing, whose UDP port 53 is bound and never answers: a lookup
there hangs for resolv.conf's timeout x attempts (5 s x 2), as in an
outage of the datacenter's DNS.  Its broker list names the fake broker
first by address, then by a name that only DNS could resolve.

  a script's timeout while the lookup hangs  -> enforced on time (2 s),
                                                well before the lookup ends
  SIGTERM while the lookup hangs             -> the agent exits at once,
                                                its lookup process with it

Before the lookup moved to a child process the agent called getaddrinfo()
in its poll() loop and froze for the whole lookup: the script's 2 s
timeout took 10 s, SIGTERM waited for the lookup to end.

Needs root and unshare (else skipped); no RabbitMQ.  NameLookup: a
broker named in /etc/hosts is reached through the lookup process.
"""

import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time

from urharness import FakeBrokerTestCase, WAIT, alive, children, wait_until, wall_of

NAME = "broker.invalid-ur-test.example"
LOOKUP_S = 10  # resolv.conf: timeout:5 attempts:2, one name server
PREFLIGHT = 'mount --bind "$0" /etc/resolv.conf && exec "$@"'


class DeafNameServer:
    """A UDP socket on 127.x.y.z:53 that takes queries and never answers;
    queries holds the wall time of each one received."""

    def __init__(self):
        self.queries = []
        for _ in range(20):
            self.address = "127.53.%d.%d" % (random.randint(0, 255),
                                             random.randint(1, 254))
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                self.sock.bind((self.address, 53))
                break
            except OSError:
                self.sock.close()
        else:
            raise AssertionError("no free 127.53.x.y:53")
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                self.sock.recvfrom(4096)
            except OSError:
                return
            self.queries.append(time.time())

    def wait_query(self, after=0.0):
        """The wall time of the first query received after `after`."""
        return wait_until(lambda: next((t for t in self.queries if t > after), None),
                          what="a DNS query to %s" % self.address)

    def close(self):
        self.sock.close()


class DnsOutage(FakeBrokerTestCase):

    def setUp(self):
        super().setUp()
        if os.geteuid() != 0 or not shutil.which("unshare"):
            self.skipTest("needs root and unshare (a mount namespace for resolv.conf)")
        self.dns = DeafNameServer()
        self.addCleanup(self.dns.close)
        self.resolv_conf = self.path("resolv.conf")
        with open(self.resolv_conf, "w") as f:
            f.write("nameserver %s\noptions timeout:5 attempts:2\n" % self.dns.address)
        # The outage's view, checked before an agent depends on it.
        r = subprocess.run(self.outage_prefix() + ["cat", "/etc/resolv.conf"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if r.returncode != 0 or self.dns.address.encode() not in r.stdout:
            self.skipTest("cannot bind-mount resolv.conf in a mount namespace: %s"
                          % r.stdout.decode(errors="replace").strip())

    def outage_prefix(self):
        """A command that runs the rest of its arguments with our
        resolv.conf in place of the system's."""
        return ["unshare", "-m", "--propagation", "private", "/bin/sh", "-c", PREFLIGHT,
                self.resolv_conf]

    def lookup_failures(self, a):
        """Log records of a broker name that did not resolve."""
        return [r for r in a.logs() if "cannot resolve" in str(r.get("reason", ""))]

    def test_script_timeout_enforced_while_the_lookup_hangs(self):
        b = self.start_broker()
        a = self.new_agent([b, "%s:%d" % (NAME, b.port)], args=["--connect-timeout", "5"],
                           prefix=self.outage_prefix())
        a.start()
        self.wait_serving(b, a)
        req = self.send(b, a, "#!/bin/sh\nexec /bin/sleep 100\n", timeout=2)
        received = wall_of(a.wait_log(lambda r: r.get("msg") == "execute request"
                                      and r.get("req_id") == req))
        # The connection lost, the agent reconnects to the next broker of
        # its list: the name, whose lookup hangs.
        b.cmd("drop-now")
        queried = self.dns.wait_query()
        self.assertLess(queried - received, 2.0, "the lookup began after the script's timeout")
        rec = a.wait_log(lambda r: r.get("msg") == "execute finished" and r.get("req_id") == req,
                         what="the script's end")
        self.assertTrue(rec["timed_out"], rec)
        print("\n    script with timeout 2 s ended after %.3f s, the lookup hanging"
              % (rec["duration_ms"] / 1000.0), end=" ", flush=True)
        self.assertLess(rec["duration_ms"], 3500, "the script's timeout waited for the lookup")
        # The lookup was still hanging then; it is given up at
        # --connect-timeout, and the agent goes back to the address.
        failed = a.wait_log(lambda r: "cannot resolve" in str(r.get("reason", "")),
                            what="the lookup given up")
        self.assertEqual(failed["reason"], "cannot resolve '%s': no answer in 5 s" % NAME)
        self.assertGreater(wall_of(failed), wall_of(rec))
        reply = self.reply(b, a, req)
        self.assertNotEqual(reply["exit_status"], 0, reply)

    def test_sigterm_ends_the_agent_while_the_lookup_hangs(self):
        a = self.new_agent(["%s:5672" % NAME], args=["--connect-timeout", "30"],
                           prefix=self.outage_prefix())
        a.start()
        queried = self.dns.wait_query()
        lookups = children(a.proc.pid)[0]
        sent = time.monotonic()
        self.assertLess(time.time() - queried, LOOKUP_S - 2, "the lookup is over already")
        a.send_signal(signal.SIGTERM)
        status = a.wait_exit(WAIT)
        took = time.monotonic() - sent
        print("\n    SIGTERM handled in %.3f s, the lookup hanging" % took, end=" ", flush=True)
        self.assertEqual(status, 0, a.log_tail())
        self.assertLess(took, 2.0, "SIGTERM waited for the lookup")
        self.assertEqual(self.lookup_failures(a), [])
        # Its lookup process does not outlive it.
        self.assertEqual(len(lookups), 1, "no lookup process")
        for pid in lookups:
            wait_until(lambda: not alive(pid), what="lookup process %d gone" % pid)


class NameLookup(FakeBrokerTestCase):

    def test_broker_named_in_etc_hosts_is_reached_through_the_lookup_process(self):
        name = loopback_name_in_etc_hosts()
        if not name:
            self.skipTest("/etc/hosts names 127.0.0.1 only as localhost")
        b = self.start_broker()
        a = self.new_agent(["%s:%d" % (name, b.port)]).start()
        self.wait_serving(b, a)
        rec = a.wait_log(lambda r: r.get("msg") == "looked up the broker's name")
        self.assertEqual(rec["broker"], "%s:%d" % (name, b.port))
        self.assertEqual(self.execute(b, a, "#!/bin/sh\necho hi\n")["stdout"], "hi\n")


def loopback_name_in_etc_hosts():
    """A name /etc/hosts gives 127.0.0.1, other than localhost (which the
    agent resolves without a lookup); None if it has none."""
    try:
        with open("/etc/hosts") as f:
            for line in f:
                words = line.split("#")[0].split()
                if words and words[0] == "127.0.0.1":
                    for w in words[1:]:
                        if w != "localhost":
                            return w
    except OSError:
        pass
    return None
