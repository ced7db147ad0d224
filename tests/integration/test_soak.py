"""The short soak of make check: tools/soak with 500 executions (the full
run is 10,000, by hand).  See tools/soak for the mix and the checks: every
request answered exactly once as expected, no zombie, constant fd count,
flat VmRSS, the agent unchanged and a clean SIGTERM exit."""

import os
import subprocess
import sys
import time

from urharness import BUILD, ROOT, AgentTestCase

COUNT = int(os.environ.get("UR_SOAK_COUNT", "500"))


class Soak(AgentTestCase):
    needs_agent = True

    def test_soak_500_executions(self):
        t0 = time.monotonic()
        p = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "soak"),
                            "--count", str(COUNT), "--build", BUILD],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=110)
        took = time.monotonic() - t0
        out = p.stdout.decode("utf-8", "replace")
        self.assertEqual(p.returncode, 0, "tools/soak failed:\n" + out)
        self.assertIn("soak: PASS", out)
        self.assertIn("soak: %d executions" % COUNT, out)
        print("\n    " + "\n    ".join(
            l for l in out.splitlines() if l.startswith("soak: ")) +
            "\n    (%.1fs)" % took, end=" ")
