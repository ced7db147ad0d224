"""Triton's own npm packages that tests drive the agent with: the urclient
library (test_urclient.py) and the bunyan CLI (test_lifecycle.py).

Each is installed from the npm registry once per build directory, under
$BUILD/npm-urclient and $BUILD/npm, with --ignore-scripts (urclient's
native `libuuid` and bunyan's optional `dtrace-provider` would compile,
and node-gyp fetches headers from a host this network may not reach).
run.py calls prepare() before the first test, so that a slow registry
costs set-up time, not a test's time limit.  Without node and npm, or when
the registry fails, the functions return None and the tests that need
them skip, saying so."""
import json
import os
import shutil
import subprocess
import time

URCLIENT_VERSION = "1.2.2"
INSTALL_TIMEOUT = 300


def _build_dir(name):
    return os.path.abspath(os.path.join(os.environ.get("BUILD", "build"), name))


def _npm_install(prefix, package):
    if not (shutil.which("npm") and shutil.which("node")):
        return False
    os.makedirs(prefix, exist_ok=True)
    try:
        r = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent",
                            "--ignore-scripts", "--prefix", prefix, package],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=INSTALL_TIMEOUT)
    except subprocess.TimeoutExpired:
        return False
    return r.returncode == 0


def install_urclient():
    """The prefix whose node_modules holds urclient, or None.  urclient's
    `libuuid` dependency does not build on current Node: a one-line
    stand-in providing `create()` replaces it (a test fixture, not part of
    the agent)."""
    prefix = _build_dir("npm-urclient")
    lib = os.path.join(prefix, "node_modules", "urclient")
    if not os.path.isdir(lib):
        if not _npm_install(prefix, "urclient@" + URCLIENT_VERSION) or not os.path.isdir(lib):
            return None
    uuid_dir = os.path.join(prefix, "node_modules", "libuuid")
    with open(os.path.join(uuid_dir, "ur-test-stand-in.js"), "w") as f:
        f.write("module.exports = { create: function () {"
                " return require('crypto').randomUUID(); } };\n")
    pkg_path = os.path.join(uuid_dir, "package.json")
    with open(pkg_path) as f:
        pkg = json.load(f)
    pkg["main"] = "ur-test-stand-in.js"
    with open(pkg_path, "w") as f:
        json.dump(pkg, f)
    return prefix


def find_bunyan():
    """The bunyan CLI: on PATH, already installed under $BUILD/npm, or
    installed there from the npm registry; None when none can be had."""
    on_path = shutil.which("bunyan")
    if on_path:
        return on_path
    local = os.path.join(_build_dir("npm"), "node_modules", ".bin", "bunyan")
    if not os.access(local, os.X_OK):
        _npm_install(_build_dir("npm"), "bunyan@1")
    return local if os.access(local, os.X_OK) else None


def prepare():
    """Installs both up front; prints what it did and how long it took."""
    t0 = time.monotonic()
    urclient = install_urclient()
    bunyan = find_bunyan()
    print("integration: npm fixtures in %.1fs: urclient %s, bunyan %s" % (
        time.monotonic() - t0, "ready" if urclient else "unavailable (its test skips)",
        "ready" if bunyan else "unavailable (its test skips)"), flush=True)
