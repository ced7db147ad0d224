"""The agent through Triton's real client library: urclient (npm), the
library CNAPI and sdc-oneachnode use, installed by npm_fixtures.py."""
import json
import os
import subprocess

from npm_fixtures import install_urclient
from urharness import RABBITMQ_PORT, AgentTestCase, rabbitmqctl

HERE = os.path.dirname(os.path.abspath(__file__))


def broker_state():
    """The test broker's connections (with flow state) and alarms, for a
    failure message."""
    try:
        return (rabbitmqctl("list_connections", "-q", "peer_port", "state", "channels",
                            check=False) +
                rabbitmqctl("eval", "rabbit_alarm:get_alarms().", check=False))
    except Exception as e:  # a failure message must not fail itself
        return "(rabbitmqctl: %s)" % e


class URClient(AgentTestCase):

    def node_env(self):
        """The environment for a node script that requires urclient; skips
        the test without node/npm or when urclient cannot be installed."""
        prefix = install_urclient()
        if not prefix:
            self.skipTest("no node/npm, or urclient could not be installed from npm")
        return dict(os.environ, NODE_PATH=os.path.join(prefix, "node_modules"))

    def test_discover_ping_exec_through_urclient(self):
        a = self.start_agent()
        env = self.node_env()
        r = subprocess.run(["node", os.path.join(HERE, "urclient_drive.js"),
                            str(RABBITMQ_PORT), a.uuid], env=env, timeout=90,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        lines = [json.loads(l) for l in r.stdout.decode().splitlines() if l.startswith("{")]
        steps = {l["step"]: l for l in lines}
        # On failure, the agent's side too: one run in a full suite once saw
        # neither discover nor ping answered, and its log was gone.
        self.assertEqual(r.returncode, 0, "%r\nstderr: %s\nagent log tail:\n%s\nbroker "
                         "state:\n%s" % (lines, r.stderr.decode()[-2000:], a.log_tail(40),
                                          broker_state()))

        found = steps["discover"]["value"]
        self.assertIsNone(steps["discover"]["error"])
        self.assertEqual([s["uuid"] for s in found], [a.uuid])
        self.assertEqual(found[0]["hostname"], a.sysinfo["Hostname"])

        self.assertIsNone(steps["ping"]["error"])
        self.assertIn("timestamp", steps["ping"]["value"])

        ex = steps["exec"]
        self.assertIsNone(ex["error"])
        self.assertEqual(ex["value"]["exit_status"], 7)
        self.assertEqual(ex["value"]["stdout"], "hello big world\n")
        self.assertEqual(ex["value"]["stderr"], "FOO=bar\n")

        # urclient sends env {} when none is given: an empty environment.
        de = steps["exec-default-env"]["value"]
        self.assertEqual(de["exit_status"], 0)
        names = [l.split("=", 1)[0] for l in de["stdout"].splitlines()]
        self.assertNotIn("AMQP_PASSWORD", names)
        self.assertNotIn("HOME", names)

        # Multi-byte characters across body-frame boundaries arrive whole
        # (they were two U+FFFD each: urclient decodes each frame alone).
        u = steps["exec-utf8"]
        self.assertIsNone(u["error"])
        self.assertEqual(u["value"], {"exit_status": 0, "same": True, "length": 420000,
                                      "replacement_chars": 0})

    def test_discover_and_ping_right_after_connecting_are_answered_every_time(self):
        # urclient binds its reply queue and publishes on different channels
        # without waiting for bind-ok.  Answered at once, 5-8 of 100
        # discovers and 72 of 100 pings made right after connecting were
        # unroutable.  A broadcast, and a client's first ping, are answered
        # 100 ms after they arrived at the earliest.
        a = self.start_agent()
        env = self.node_env()
        # Likewise every ping of a client until 100 ms after its first one
        # (only the first waited: of three sent at once, the other two were
        # often lost), and an invalid request's exit 2 (5 of 60 lost).
        for mode in ("discover", "ping", "pings", "invalid"):
            r = subprocess.run(["node", os.path.join(HERE, "urclient_right_after_connect.js"),
                                str(RABBITMQ_PORT), a.uuid, "40", mode], env=env, timeout=180,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            self.assertEqual(r.returncode, 0, r.stdout.decode() + r.stderr.decode()[-2000:])
            self.assertEqual(json.loads(r.stdout.decode().splitlines()[-1]),
                             {"found": 40, "missed": 0}, mode)
