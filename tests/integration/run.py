#!/usr/bin/python3
"""Runs the ur-agent integration tests (tests/integration/test_*.py).

    BUILD=build /usr/bin/python3 tests/integration/run.py [SUBSTRING...]

Prints one line per test and ends with
    integration: N passed, M failed, K skipped
exiting non-zero when a test failed.  A test that fails runs once more:
failing twice, it is FAILED; passing the second time, it counts as passed
and is named FLAKY in the recap above the summary (UR_INTEG_RETRY=0: no
second run).  With SUBSTRINGs only the tests whose
id contains one of them run.  Needs UR_TEST_RABBITMQ_PORT and
UR_TEST_RABBITMQ_NODE (tests/run exports them); without them the tests that
need RabbitMQ are skipped, saying so.  Each test is bounded by
UR_INTEG_TEST_LIMIT seconds (default 120) on top of its own waits.
"""

import os
import signal
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import npm_fixtures  # noqa: E402

TEST_LIMIT = int(os.environ.get("UR_INTEG_TEST_LIMIT", "120"))
# UR_INTEG_RETRY=0: a failed test is not run a second time.
RETRY = os.environ.get("UR_INTEG_RETRY", "1") != "0"


class TestTimeout(Exception):
    pass


def _on_alarm(signum, frame):
    raise TestTimeout("test exceeded %ds (UR_INTEG_TEST_LIMIT)" % TEST_LIMIT)


class Result(unittest.TestResult):
    """Prints each test as it finishes: name, outcome, seconds."""

    def __init__(self):
        super().__init__()
        self.succeeded = set()  # ids of the tests that passed
        self.t0 = 0.0

    def startTest(self, test):
        super().startTest(test)
        self.t0 = time.monotonic()
        self.reported = False
        print("%s ..." % test.id(), end=" ", flush=True)
        signal.alarm(TEST_LIMIT)

    def stopTest(self, test):
        signal.alarm(0)
        if not self.reported:  # only subtests failed; they were counted
            self._done("FAIL")
        super().stopTest(test)

    def _done(self, word, detail=None):
        self.reported = True
        print("%s (%.1fs)" % (word, time.monotonic() - self.t0), flush=True)
        if detail:
            print("    " + detail.rstrip().replace("\n", "\n    "),
                  flush=True)

    def addSuccess(self, test):
        super().addSuccess(test)
        self.succeeded.add(test.id())
        self._done("ok")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._done("FAIL", self.failures[-1][1])

    def addError(self, test, err):
        super().addError(test, err)
        self._done("ERROR", self.errors[-1][1])

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._done("skipped", reason)

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._done("expected failure")

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._done("UNEXPECTED SUCCESS")

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            print("\n    subtest %s FAILED:\n    %s" % (
                subtest._subDescription(),
                self._exc_info_to_string(err, test).rstrip().replace(
                    "\n", "\n    ")), flush=True)


def last_words(traceback_text, limit=400):
    """The exception of a traceback (all that follows its last frame), on
    one line, at most limit characters: enough to tell one failure from
    another in the tail of a log."""
    lines = traceback_text.rstrip().splitlines()
    start = 0
    for i, line in enumerate(lines):
        if line.startswith("  File "):
            start = i + 1
    while start < len(lines) and lines[start].startswith(" "):
        start += 1  # the frame's source line
    words = " | ".join(l.strip() for l in lines[start:] if l.strip())
    return words if len(words) <= limit else words[:limit - 3] + "..."


def failed_tests(result):
    """(test, traceback) for each test that failed or errored, a test whose
    subtests failed counted once, as itself."""
    seen, out = set(), []
    for test, text in result.failures + result.errors:
        test = getattr(test, "test_case", test)  # a subtest's own test
        if test.id() not in seen:
            seen.add(test.id())
            out.append((test, text))
    return out


def flatten(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from flatten(t)
        else:
            yield t


def main(argv):
    signal.signal(signal.SIGALRM, _on_alarm)
    if not (os.environ.get("UR_TEST_RABBITMQ_PORT")
            and os.environ.get("UR_TEST_RABBITMQ_NODE")):
        print("integration: UR_TEST_RABBITMQ_PORT/UR_TEST_RABBITMQ_NODE are "
              "unset: the tests that need RabbitMQ are skipped "
              "(tests/run starts a private node)")
    loader = unittest.TestLoader()
    tests = list(flatten(loader.discover(HERE, pattern="test_*.py",
                                         top_level_dir=HERE)))
    if argv:
        tests = [t for t in tests if any(a in t.id() for a in argv)]
    if any(("urclient" in t.id() or "bunyan" in t.id()) for t in tests):
        npm_fixtures.prepare()
    result = Result()
    start = time.monotonic()
    unittest.TestSuite(tests).run(result)
    first = failed_tests(result)

    # A test that failed runs once more, on a fresh instance: a failure on
    # a shared, noisy machine is told from a broken test by its second
    # run.  Both outcomes are printed: FLAKY (failed, then passed) lines
    # stay in the recap whatever the summary says.
    again = Result()
    if first and RETRY:
        print("integration: running the %d failed test(s) once more" % len(first))
        unittest.TestSuite([type(t)(t._testMethodName) for t, _ in first]).run(again)
    # Only a pass on the second run clears a test (a skip does not).
    still = {t.id() for t, _ in first} - again.succeeded
    print("integration: %d tests in %.0fs" % (result.testsRun,
                                              time.monotonic() - start))
    # A recap right above the summary: CI shows only the end of the log.
    for test, text in first:
        if test.id() in still:
            print("integration: FAILED %s: %s" % (test.id(), last_words(text)))
        else:
            print("integration: FLAKY %s (failed, then passed on its second run): %s"
                  % (test.id(), last_words(text)))
    failed = len(still) + len(result.unexpectedSuccesses)
    flaky = len(first) - len(still)
    print("integration: %d passed, %d failed, %d skipped%s" % (
        len(result.succeeded) + flaky, failed, len(result.skipped),
        ", %d flaky" % flaky if flaky else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
