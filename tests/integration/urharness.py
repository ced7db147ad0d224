"""Helpers for the ur-agent integration tests.

The tests drive the agent the way the headnode does: through a real RabbitMQ
with a client that was not written here (Debian's python3-pika), speaking the
Ur protocol as PROTOCOL.md defines it.

  Agent   one ur-agent process with its own sysinfo file (a random UUID, so
          tests never collide on the shared broker), state dir, setup file
          and log file; started, awaited, stopped and its log parsed.
  Client  a pika connection with an exclusive queue bound exactly as
          Triton's urclient binds it, plus execute / ping / discover.

Every wait is bounded (WAIT seconds unless told) and polls a condition;
nothing sleeps for a fixed time except where a test proves an absence.
"""

import json
import os
import re
import select
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import unittest
import uuid as uuidlib

import pika

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("BUILD", "build")
# UR_AGENT runs the suite against another agent binary.
AGENT = os.environ.get("UR_AGENT") or os.path.join(ROOT, BUILD, "ur-agent")
# UR_AGENT_WRAPPER runs every agent under a command, e.g. "valgrind
# --error-exitcode=99 --log-file=/tmp/vg.%p ..." (tools/valgrind-check):
# the agent keeps its pid, and an error turns its exit status into 99.
WRAPPER = shlex.split(os.environ.get("UR_AGENT_WRAPPER", ""))
RABBITMQ_PORT = os.environ.get("UR_TEST_RABBITMQ_PORT")
RABBITMQ_NODE = os.environ.get("UR_TEST_RABBITMQ_NODE")

# Agents and fake brokers die with the test runner (SIGKILL when their
# parent goes): a runner killed mid-test may not leave an agent connected
# to the shared broker, where the next run's broadcasts would find it.
# setpriv (util-linux) execs, so the process keeps its pid.
DIE_WITH_RUNNER = (["setpriv", "--pdeathsig", "KILL", "--"]
                   if shutil.which("setpriv") else [])

# Generous: the machine is shared and noisy.
WAIT = float(os.environ.get("UR_INTEG_WAIT", "20"))

JSON_CT = "application/json"
BUNYAN_FIELDS = ("name", "hostname", "pid", "level", "msg", "time", "v")
ISO8601_UTC = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)$")


def random_uuid():
    return str(uuidlib.uuid4())


def random_mac():
    b = os.urandom(5)
    return "02:" + ":".join("%02x" % x for x in b)


def random_token():
    """A request id: opaque, no dots (PROTOCOL.md)."""
    return uuidlib.uuid4().hex[:16]


def make_sysinfo(uuid=None, mac=None, tag=None, nics=True):
    """A SmartOS-like sysinfo object.  tag: value of "Admin NIC Tag" (the
    admin NIC then carries that name instead of "admin")."""
    uuid = uuid or random_uuid()
    mac = mac or random_mac()
    info = {
        "Live Image": "20260101T000000Z",
        "System Type": "SunOS",
        "UUID": uuid,
        "Hostname": "cn-" + uuid[:8],
        "Datacenter Name": "integ-1",
        "Setup": "false",
        "Boot Parameters": {"console": "text"},
    }
    if tag:
        info["Admin NIC Tag"] = tag
    if nics:
        info["Network Interfaces"] = {
            "e1000g1": {"MAC Address": "02:00:00:00:00:01",
                        "NIC Names": ["external"]},
            "e1000g0": {"MAC Address": mac, "NIC Names": [tag or "admin"]},
        }
    return info


def rabbitmqctl(*args, check=True):
    """rabbitmqctl against the private test node; returns stdout."""
    script = os.path.join(ROOT, "tests", "rabbitmq.sh")
    p = subprocess.run([script, "ctl", RABBITMQ_NODE] + list(args),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=120)
    if check and p.returncode != 0:
        raise AssertionError("rabbitmqctl %s failed (%d): %s" % (
            " ".join(args), p.returncode, p.stderr.decode(errors="replace")))
    return p.stdout.decode(errors="replace")


def write_executable(path, text):
    """Writes text to path as a program (mode 0755): a script for the agent
    to run by its path, a --sysinfo-cmd, a --reboot-cmd."""
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o755)


def wait_until(cond, timeout=WAIT, what="condition", interval=0.05):
    """Polls cond() until it returns a true value (returned) or timeout
    seconds pass (AssertionError naming what)."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.0fs waiting for %s"
                                 % (timeout, what))
        time.sleep(interval)


class Message:
    """One message the client received."""

    def __init__(self, routing_key, properties, body):
        self.routing_key = routing_key
        self.properties = properties
        self.raw = body
        self.received = time.monotonic()
        self._json = None

    @property
    def content_type(self):
        return self.properties.content_type

    def json(self):
        """The body as JSON; AssertionError when it is not JSON or does not
        carry content-type application/json (urclient depends on it)."""
        if self.content_type != JSON_CT:
            raise AssertionError("%s: content-type %r, want %r" % (
                self.routing_key, self.content_type, JSON_CT))
        if self._json is None:
            try:
                self._json = json.loads(self.raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as e:
                raise AssertionError("%s: body is not UTF-8 JSON (%s): %r"
                                     % (self.routing_key, e, self.raw[:200]))
        return self._json

    def __repr__(self):
        return "<Message %s %r>" % (self.routing_key, self.raw[:120])


class Client:
    """A urclient look-alike on pika's BlockingConnection.

    Its exclusive, server-named queue is bound to ur.execute-reply.*.*,
    ur.startup.#, ur.sysinfo.# and ur.ack<client_id>.*, as urclient does.
    Messages are buffered in arrival order; wait_message() takes the first
    that matches a predicate."""

    def __init__(self, login="guest", password="guest"):
        params = pika.ConnectionParameters(
            host="127.0.0.1", port=int(RABBITMQ_PORT),
            credentials=pika.PlainCredentials(login, password),
            heartbeat=0, blocked_connection_timeout=WAIT,
            connection_attempts=3, retry_delay=1)
        self.client_id = random_token()
        self.conn = pika.BlockingConnection(params)
        self.ch = self.conn.channel()
        q = self.ch.queue_declare(queue="", exclusive=True, auto_delete=True)
        self.queue = q.method.queue
        for key in ("ur.execute-reply.*.*", "ur.startup.#", "ur.sysinfo.#",
                    "ur.ack%s.*" % self.client_id):
            self.ch.queue_bind(queue=self.queue, exchange="amq.topic",
                               routing_key=key)
        self.messages = []
        self.bad_content_type = []  # every message lacking application/json
        self.ch.basic_consume(self.queue, self._on_message, auto_ack=True)

    def _on_message(self, ch, method, properties, body):
        m = Message(method.routing_key, properties, body)
        if m.content_type != JSON_CT:
            self.bad_content_type.append(m)
        self.messages.append(m)

    def close(self):
        try:
            if self.conn.is_open:
                self.conn.close()
        except Exception:
            pass

    # -- sending --------------------------------------------------------

    def publish(self, routing_key, body, content_type=JSON_CT):
        """Publishes body (bytes, str, or a JSON-able value) on amq.topic."""
        if not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode("utf-8")
        props = pika.BasicProperties(content_type=content_type)
        self.ch.basic_publish(exchange="amq.topic", routing_key=routing_key,
                              body=body, properties=props)

    # -- receiving ------------------------------------------------------

    def pump(self, seconds=0.0):
        """Lets pika deliver what has arrived, for up to seconds."""
        self.conn.process_data_events(time_limit=seconds)

    def wait_message(self, pred, timeout=WAIT, what=None):
        """Returns (and removes from the buffer) the first buffered or
        arriving message for which pred(msg) is true; AssertionError after
        timeout seconds."""
        deadline = time.monotonic() + timeout
        while True:
            for i, m in enumerate(self.messages):
                if pred(m):
                    return self.messages.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    "timed out after %.0fs waiting for %s; buffered: %r" % (
                        timeout, what or "a message", self.messages[-5:]))
            self.pump(min(0.2, left))

    def wait_key(self, routing_key, timeout=WAIT):
        return self.wait_message(lambda m: m.routing_key == routing_key,
                                 timeout, routing_key)

    def collect(self, pred, seconds):
        """Every message matching pred that arrives within seconds
        (removed from the buffer).  Only for proving an absence or
        counting over a window."""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.pump(min(0.2, left))
        got = [m for m in self.messages if pred(m)]
        self.messages = [m for m in self.messages if not pred(m)]
        return got

    def drop(self, pred):
        self.messages = [m for m in self.messages if not pred(m)]

    # -- the Ur protocol ------------------------------------------------

    def wait_sysinfo(self, uuid, timeout=WAIT):
        """The next ur.sysinfo.<uuid>.<id> message."""
        prefix = "ur.sysinfo.%s." % uuid
        return self.wait_message(lambda m: m.routing_key.startswith(prefix),
                                 timeout, prefix + "*")

    def wait_ready(self, uuid, timeout=WAIT):
        """Waits for the agent's first ur.sysinfo.<uuid>.* or
        ur.startup.<uuid>: both are published after its queues are bound and
        consumed.  Leaves the message in the buffer."""
        pre = ("ur.sysinfo.%s." % uuid, "ur.startup.%s" % uuid)
        m = self.wait_message(lambda m: m.routing_key.startswith(pre),
                              timeout, "agent %s ready" % uuid)
        self.messages.insert(0, m)
        return m

    def send_execute(self, uuid, script=None, args=None, env=None, req=None,
                     address=None, body=None, **extra):
        """Publishes an execute request; returns its req token.  With body
        (bytes/str/value) that is sent as is.  address replaces <uuid> in
        the routing key (e.g. "<uuid>-<mac>")."""
        req = req or random_token()
        if body is None:
            body = {"type": "script", "script": script,
                    "args": [] if args is None else args,
                    "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                               time.gmtime()),
                    "origin": {"user": "integ"}}
            if env is not None:
                body["env"] = env
            body.update(extra)
            body = {k: v for k, v in body.items() if v is not None}
        self.publish("ur.execute.%s.%s" % (address or uuid, req), body)
        return req

    def wait_reply(self, uuid, req, timeout=WAIT):
        """The execute-reply body (a dict) for req."""
        m = self.wait_key("ur.execute-reply.%s.%s" % (uuid, req), timeout)
        body = m.json()
        if not isinstance(body, dict):
            raise AssertionError("reply is not an object: %r" % (body,))
        return body

    def execute(self, uuid, script, args=None, env=None, wait=WAIT,
                **extra):
        """Runs script (type "script") and returns the reply dict, waiting
        up to wait seconds; extra fields (e.g. timeout=1) go in the request.
        env=None leaves "env" out of the request (inherit); pass {} for
        urclient's empty environment."""
        req = self.send_execute(uuid, script, args, env, **extra)
        return self.wait_reply(uuid, req, wait)

    def execute_file(self, uuid, path, args=None, env=None, wait=WAIT):
        body = {"type": "file", "file": path,
                "args": [] if args is None else args}
        if env is not None:
            body["env"] = env
        req = self.send_execute(uuid, body=body)
        return self.wait_reply(uuid, req, wait)

    def ping(self, uuid, timeout=WAIT):
        """Pings the agent; returns (rid, reply body)."""
        rid = random_token()
        self.publish("ur.ping.%s" % uuid,
                     {"client_id": self.client_id, "id": rid})
        m = self.wait_key("ur.ack%s.%s" % (self.client_id, uuid), timeout)
        return rid, m.json()

    def discover(self, seconds=3.0, req=None):
        """Broadcasts ur.broadcast.sysinfo.<id>; returns {uuid: sysinfo}
        from the replies that arrive within seconds."""
        req = req or random_token()
        self.publish("ur.broadcast.sysinfo.%s" % req, {})
        suffix = "." + req
        got = self.collect(lambda m: m.routing_key.startswith(
            "ur.execute-reply.") and m.routing_key.endswith(suffix), seconds)
        out = {}
        for m in got:
            node = m.routing_key[len("ur.execute-reply."):-len(suffix)]
            out[node] = m.json()
        return out


def raw_publish(routing_key, body, properties, exchange="amq.topic"):
    """Publishes one message over a connection of our own, with the content
    header's property flags and values given as bytes (`properties`), for
    headers pika cannot write: field types it does not know, property flags
    basic does not have.  Waits for the broker to confirm it."""
    def short(b):
        return bytes([len(b)]) + b

    def frame(kind, channel, payload):
        return struct.pack(">BHI", kind, channel, len(payload)) + payload + b"\xce"

    def method(channel, cls, mid, args=b""):
        return frame(1, channel, struct.pack(">HH", cls, mid) + args)

    s = socket.create_connection(("127.0.0.1", int(RABBITMQ_PORT)), timeout=WAIT)
    buf = b""

    def next_method():
        nonlocal buf
        while True:
            while len(buf) < 7 or len(buf) < 8 + struct.unpack(">I", buf[3:7])[0]:
                data = s.recv(65536)
                if not data:
                    raise AssertionError("raw_publish: the broker closed the connection")
                buf += data
            kind, n = buf[0], struct.unpack(">I", buf[3:7])[0]
            payload, buf = buf[7:7 + n], buf[8 + n:]
            if kind == 1:
                return struct.unpack(">HH", payload[:4])

    try:
        s.sendall(b"AMQP\x00\x00\x09\x01")
        next_method()  # connection.start
        s.sendall(method(0, 10, 11, struct.pack(">I", 0) + short(b"PLAIN") +
                         struct.pack(">I", 12) + b"\x00guest\x00guest" + short(b"en_US")))
        next_method()  # connection.tune
        s.sendall(method(0, 10, 31, struct.pack(">HIH", 1, 131072, 0)) +
                  method(0, 10, 40, short(b"/") + short(b"") + b"\x00") +
                  method(1, 20, 10, short(b"")) + method(1, 85, 10, b"\x00"))
        for want in ((10, 41), (20, 11), (85, 11)):  # open-ok, channel open-ok, select-ok
            got = next_method()
            if got != want:
                raise AssertionError("raw_publish: got method %r, want %r" % (got, want))
        body = body if isinstance(body, bytes) else json.dumps(body).encode()
        s.sendall(method(1, 60, 40, struct.pack(">H", 0) + short(exchange.encode()) +
                         short(routing_key.encode()) + b"\x00") +
                  frame(2, 1, struct.pack(">HHQ", 60, 0, len(body)) + properties) +
                  frame(3, 1, body))
        got = next_method()
        if got != (60, 80):  # basic.ack
            raise AssertionError("raw_publish: got method %r, not basic.ack" % (got,))
    finally:
        s.close()


def _unique_keys(pairs):
    """json object_pairs_hook: a dict, or ValueError for a repeated key."""
    d = {}
    for k, v in pairs:
        if k in d:
            raise ValueError("key %r twice" % k)
        d[k] = v
    return d


class Agent:
    """One ur-agent process (not started: call start()).

    Files live in workdir: NAME-sysinfo.json (--sysinfo-file, unless
    sysinfo_cmd is given), NAME-state/ (--state-dir), NAME-setup.json
    (--setup-file, not created), NAME.log (stderr), NAME.out (stdout).
    The broker comes from AMQP_* in its environment (use_env_broker) with
    login/password; env adds to or overrides its environment."""

    def __init__(self, workdir, uuid=None, sysinfo=None, args=(), env=None,
                 state_dir=None, setup_file=None, name="agent",
                 password="guest", login="guest", use_env_broker=True,
                 sysinfo_cmd=None, ignore_signals=(), block_signals=(),
                 close_stdio=False, log_to_pipe=False, prefix=()):
        self.workdir = workdir
        self.name = name
        self.sysinfo = sysinfo or make_sysinfo(uuid)
        self.uuid = self.sysinfo.get("UUID", uuid)
        nic = None
        for n in (self.sysinfo.get("Network Interfaces") or {}).values():
            if (self.sysinfo.get("Admin NIC Tag") or "admin") in \
                    n.get("NIC Names", []):
                nic = n
                break
        self.mac = nic["MAC Address"] if nic else None
        self.sysinfo_cmd = sysinfo_cmd
        self.sysinfo_file = os.path.join(workdir, name + "-sysinfo.json")
        self.write_sysinfo(self.sysinfo)
        self.state_dir = state_dir or os.path.join(workdir, name + "-state")
        os.makedirs(self.state_dir, exist_ok=True)
        self.setup_file = setup_file or os.path.join(workdir,
                                                     name + "-setup.json")
        self.log_path = os.path.join(workdir, name + ".log")
        self.out_path = os.path.join(workdir, name + ".out")
        self.args = list(args)
        # Never the real default (a reboot of this machine) by accident.
        self.reboot_log = os.path.join(workdir, name + "-reboot.log")
        if "--reboot-cmd" not in self.args:
            self.args += ["--reboot-cmd", "echo reboot >> " + self.reboot_log]
        self.env = {"PATH": "/usr/bin:/bin", "HOME": workdir,
                    "LANG": "C.UTF-8"}
        if use_env_broker:
            self.env.update({"AMQP_HOST": "127.0.0.1",
                             "AMQP_PORT": str(RABBITMQ_PORT),
                             "AMQP_LOGIN": login,
                             "AMQP_PASSWORD": password,
                             "AMQP_VHOST": "/"})
        self.env.update(env or {})
        # Signals the agent is started with ignored (as a parent may leave
        # them): dispositions survive exec.
        self.ignore_signals = tuple(ignore_signals)
        # Signals the agent is started with blocked: the mask survives exec.
        self.block_signals = tuple(block_signals)
        # Started with fds 0, 1 and 2 closed (its log then goes nowhere).
        self.close_stdio = close_stdio
        # stderr a pipe the test reads only when it wants (proc.stderr).
        self.log_to_pipe = log_to_pipe
        # A command the agent runs under (["prlimit", "--as=N"]).
        self.prefix = list(prefix)
        self.proc = None
        self.status = None

    def write_sysinfo(self, info):
        tmp = self.sysinfo_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(info, f)
        os.rename(tmp, self.sysinfo_file)

    def argv(self):
        if self.sysinfo_cmd:
            src = ["--sysinfo-cmd", self.sysinfo_cmd]
        else:
            src = ["--sysinfo-file", self.sysinfo_file]
        return [AGENT] + src + ["--state-dir", self.state_dir,
                "--setup-file", self.setup_file] + self.args

    def start(self):
        self.log = open(self.log_path, "ab")
        self.out = open(self.out_path, "ab")
        ignored, blocked = self.ignore_signals, self.block_signals
        close_stdio = self.close_stdio

        def inherit():
            for sig in ignored:
                signal.signal(sig, signal.SIG_IGN)
            if blocked:
                signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
            if close_stdio:
                os.closerange(0, 3)

        self.proc = subprocess.Popen(DIE_WITH_RUNNER + self.prefix + WRAPPER + self.argv(),
                                     env=self.env,
                                     stdin=subprocess.DEVNULL,
                                     stdout=self.out,
                                     stderr=subprocess.PIPE if self.log_to_pipe else self.log,
                                     close_fds=True,
                                     preexec_fn=inherit if ignored or blocked or close_stdio
                                     else None)
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig):
        if self.running():
            self.proc.send_signal(sig)

    def wait_exit(self, timeout=WAIT):
        try:
            self.status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("agent %s still running %.0fs later; log "
                                 "tail:\n%s" % (self.name, timeout,
                                                self.log_tail()))
        self._close_files()
        return self.status

    def stop(self, sig=signal.SIGTERM, expect=0, timeout=WAIT):
        """Sends sig, waits, and checks the exit status (expect=None: any).
        Returns the status (negative: killed by that signal)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        st = self.wait_exit(timeout)
        if expect is not None and st != expect:
            raise AssertionError("agent %s exited %d after %s, want %d; log "
                                 "tail:\n%s" % (self.name, st, sig.name,
                                                expect, self.log_tail()))
        return st

    def kill(self):
        """Cleanup: SIGKILL if still running, no checks."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                pass
        self._close_files()

    def _close_files(self):
        pipe = self.proc.stderr if self.proc is not None else None
        for f in (getattr(self, "log", None), getattr(self, "out", None), pipe):
            if f and not f.closed:
                f.close()

    # -- the log --------------------------------------------------------

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n=25):
        return "\n".join(self.log_text().splitlines()[-n:])

    def log_lines(self):
        """(parsed, bad): the stderr lines that are JSON objects, parsed,
        and the raw lines that are not (a key twice in one object is not)."""
        parsed, bad = [], []
        for line in self.log_text().splitlines():
            if not line.strip():
                continue
            try:
                v = json.loads(line, object_pairs_hook=_unique_keys)
            except ValueError:
                bad.append(line)
                continue
            (parsed if isinstance(v, dict) else bad).append(
                v if isinstance(v, dict) else line)
        return parsed, bad

    def logs(self):
        return self.log_lines()[0]

    def wait_log(self, pred, timeout=WAIT, what="a log line"):
        """The first parsed log record for which pred(record) is true."""
        def find():
            for rec in self.logs():
                if pred(rec):
                    return rec
            return None
        try:
            return wait_until(find, timeout, what)
        except AssertionError as e:
            raise AssertionError("%s; log tail:\n%s" % (e, self.log_tail()))

    def count_log(self, text):
        """How many log records have msg == text."""
        return len([r for r in self.logs() if r.get("msg") == text])

    def wait_log_n(self, text, n, secs=WAIT):
        """The n-th (1-based) log record whose msg is text."""
        def nth():
            got = [r for r in self.logs() if r.get("msg") == text]
            return got[n - 1] if len(got) >= n else None
        try:
            return wait_until(nth, secs, "log record #%d %r" % (n, text))
        except AssertionError as e:
            raise AssertionError("%s; agent running: %s; log tail:\n%s" % (
                e, self.running(), self.log_tail(30)))


class Proxy:
    """A TCP proxy on 127.0.0.1 to the test broker, to make outages the
    broker's own tools cannot: cut() resets every current connection;
    freeze() stops forwarding on them but keeps them open (a silent peer,
    found only by heartbeats).  New connections are always forwarded.
    record=True keeps every AMQP method frame forwarded, in the order
    forwarded, in `frames` (see _Framer)."""

    def __init__(self, target_port=None, record=False):
        self.target = ("127.0.0.1", int(target_port or RABBITMQ_PORT))
        self.record = record
        self.frames = []
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.pairs = []      # [client, upstream, frozen]
        self.accepted = 0
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.listener.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(self.target, timeout=5)
            except OSError:
                c.close()
                continue
            pair = [c, u, False]
            with self.lock:
                self.pairs.append(pair)
                self.accepted += 1
            threading.Thread(target=self._pump, args=(pair,),
                             daemon=True).start()

    def _pump(self, pair):
        c, u, _ = pair
        framers = {c: _Framer("agent", self), u: _Framer("broker", self)}
        try:
            while not self.closed:
                r, _, _ = select.select([c, u], [], [], 0.1)
                if pair[2]:
                    continue  # frozen: read nothing, send nothing
                for s in r:
                    data = s.recv(65536)
                    if not data:
                        return
                    if self.record:
                        framers[s].feed(data)
                    (u if s is c else c).sendall(data)
        except (OSError, ValueError):
            # ValueError: reset_all() closed a socket under select() (fd -1).
            return
        finally:
            if not pair[2]:
                for s in (c, u):
                    try:
                        s.close()
                    except OSError:
                        pass

    def _reset(self, s):
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                         b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()
        except OSError:
            pass

    def cut(self):
        """Resets (RST) both sides of every current connection."""
        with self.lock:
            pairs, self.pairs = self.pairs, []
        for c, u, _ in pairs:
            self._reset(c)
            self._reset(u)

    def freeze(self):
        """Current connections go silent; their sockets stay open."""
        with self.lock:
            for p in self.pairs:
                p[2] = True

    def close(self):
        self.closed = True
        self.listener.close()
        self.cut()


class _Framer:
    """Splits one direction of an AMQP connection into frames and appends
    each method frame to proxy.frames as (sender, channel, class_id,
    method_id, name): name is the queue of a queue.declare or queue.bind,
    else None.  Sender is "agent" or "broker"."""

    def __init__(self, sender, proxy):
        self.sender, self.proxy, self.buf = sender, proxy, b""

    def feed(self, data):
        self.buf += data
        if self.buf.startswith(b"AMQP") and len(self.buf) >= 8:
            self.buf = self.buf[8:]
        while len(self.buf) >= 7:
            kind, ch, size = struct.unpack(">BHI", self.buf[:7])
            if len(self.buf) < 8 + size:
                return
            payload, self.buf = self.buf[7:7 + size], self.buf[8 + size:]
            if kind != 1 or size < 4:
                continue
            cls, meth = struct.unpack(">HH", payload[:4])
            name = None
            if cls == 50 and meth in (10, 20) and size >= 7:
                name = payload[7:7 + payload[6]].decode("utf-8", "replace")
            with self.proxy.lock:
                self.proxy.frames.append((self.sender, ch, cls, meth, name))


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes.
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


class _AgentsTestCase(unittest.TestCase):
    """What both test bases share: a temp dir, agents and stray pids that
    are killed at the end whatever happened; a test that passed also
    proves, for every agent it left running, a clean SIGTERM shutdown
    (exit 0).  Subclasses release what else they hold in _release()."""

    tmp_prefix = "ur-integ-"
    log_tails_on_failure = False

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix=self.tmp_prefix)
        os.chmod(self.tmp, 0o755)
        self.agents = []
        self.pids_to_kill = []
        self.addCleanup(self._cleanup)

    def _passed(self):
        outcome = getattr(self, "_outcome", None)
        return outcome is None or getattr(outcome, "success", True)

    def tearDown(self):
        if not self._passed():
            if self.log_tails_on_failure:
                for a in self.agents:
                    print("\n    --- %s log tail:\n%s" % (a.name, a.log_tail(40)))
            return
        for a in self.agents:
            if a.running():
                a.stop()

    def _release(self):
        pass

    def _cleanup(self):
        for a in self.agents:
            a.kill()
        for pid in self.pids_to_kill:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        self._release()
        if os.environ.get("UR_INTEG_KEEP"):
            print("  (kept %s)" % self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def path(self, name):
        return os.path.join(self.tmp, name)


class AgentTestCase(_AgentsTestCase):
    """Base class: skips without RabbitMQ, gives each test a temp dir, a
    Client, and agents that are killed at the end whatever happened."""

    needs_rabbitmq = True
    needs_agent = True

    def setUp(self):
        if self.needs_rabbitmq and not (RABBITMQ_PORT and RABBITMQ_NODE):
            self.skipTest("UR_TEST_RABBITMQ_PORT/UR_TEST_RABBITMQ_NODE unset:"
                          " no RabbitMQ (run via tests/run or make check)")
        if self.needs_agent and not os.access(AGENT, os.X_OK):
            self.fail("%s is not built (make -j2)" % AGENT)
        self.client = None
        super().setUp()
        self.client = Client() if self.needs_rabbitmq else None

    def proxy(self, record=False):
        """A Proxy to the broker, closed at the end of the test."""
        p = Proxy(record=record)
        self.addCleanup(p.close)
        return p

    def tearDown(self):
        """A test that passed also proves, for every agent it left running,
        a clean SIGTERM shutdown (exit 0), and that every message the
        client received carried content-type application/json."""
        super().tearDown()
        if self._passed() and self.client:
            self.assertEqual(self.client.bad_content_type, [],
                             "messages without content-type %s" % JSON_CT)

    def _release(self):
        if self.client:
            self.client.close()

    def new_agent(self, **kw):
        kw.setdefault("name", "agent%d" % len(self.agents))
        a = Agent(self.tmp, **kw)
        self.agents.append(a)
        return a

    def start_agent(self, wait=True, **kw):
        """Starts an agent and (wait=True) waits until it is ready."""
        a = self.new_agent(**kw).start()
        if wait:
            try:
                self.client.wait_ready(a.uuid)
            except AssertionError as e:
                raise AssertionError("%s (agent running: %s); log tail:\n%s"
                                     % (e, a.running(), a.log_tail()))
        return a

    def assertReply(self, reply, exit_status=0, stdout=None, stderr=None):
        """Checks the compatible reply fields and their types."""
        for k in ("exit_status", "stdout", "stderr"):
            self.assertIn(k, reply, "reply lacks %s: %r" % (k, reply))
        self.assertIsInstance(reply["exit_status"], int)
        self.assertIsInstance(reply["stdout"], str)
        self.assertIsInstance(reply["stderr"], str)
        if exit_status is not None:
            self.assertEqual(reply["exit_status"], exit_status,
                             "reply: %r" % (_short(reply),))
        if stdout is not None:
            self.assertEqual(reply["stdout"], stdout)
        if stderr is not None:
            self.assertEqual(reply["stderr"], stderr)


def _short(reply):
    return {k: (v[:300] + "...") if isinstance(v, str) and len(v) > 300
            else v for k, v in reply.items()}


# ---------------------------------------------------------------------------
# Resilience helpers (tests/integration/test_resilience.py, test_outage.py).
# Additive only: nothing above depends on this section.
# ---------------------------------------------------------------------------

FAKE_BROKER = os.path.join(ROOT, BUILD, "fake-broker")


def wall_of(rec):
    """A log record's "time" as seconds since the epoch (float)."""
    import datetime
    t = rec["time"].replace("Z", "+00:00")
    return datetime.datetime.fromisoformat(t).timestamp()


def port_accepts(port, timeout=0.2):
    """True when 127.0.0.1:port accepts a TCP connection."""
    try:
        with socket.create_connection(("127.0.0.1", int(port)),
                                      timeout=timeout):
            return True
    except OSError:
        return False


def free_port_pair(taken=()):
    """A port p with p and p + 10000 (its Erlang distribution port) free.

    Ports in taken, and their own p + 10000, are skipped: a node picked
    earlier may not listen yet, and the kernel hands a port that nothing
    listens on to the next bind(0) as readily as to the first.
    """
    busy = set()
    for q in taken:
        busy.update((q, q + 10000))
    for _ in range(200):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        p = s.getsockname()[1]
        s.close()
        if p + 10000 < 65536 and not busy & {p, p + 10000} and \
                not port_accepts(p) and not port_accepts(p + 10000):
            return p
    raise AssertionError("no free port pair")


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def children(pid):
    """(children, zombies) of pid, from /proc/*/stat (Linux)."""
    kids, zombies = [], []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                fields = f.read().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if len(fields) >= 2 and int(fields[1]) == pid:
            kids.append(int(name))
            if fields[0] == "Z":
                zombies.append(int(name))
    return kids, zombies


def zombie_children(pid):
    """Pids of pid's children that are zombies (Linux /proc)."""
    return children(pid)[1]


class FakeBroker:
    """build/fake-broker as a subprocess (tools/fake-broker; its control
    commands are one line each, answered by one line).  cmd() sends one
    and returns the answer; with check (default) an answer not starting
    "ok" raises AssertionError."""

    def __init__(self, workdir, name="fake", heartbeat=None, channel_max=None, verbose=False):
        self.name = name
        self.events = []  # with verbose: its "event ..." lines, in order, without "event "
        # --reply-sink: the tests read what the agent published instead of
        # binding a requester's queue (its answers are published mandatory).
        argv = [FAKE_BROKER, "--port", "0", "--reply-sink"] + (["--verbose"] if verbose else [])
        if heartbeat is not None:
            argv += ["--heartbeat", str(heartbeat)]
        if channel_max is not None:
            argv += ["--channel-max", str(channel_max)]
        self.log = open(os.path.join(workdir, name + ".log"), "ab")
        self.proc = subprocess.Popen(DIE_WITH_RUNNER + argv, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log,
                                     close_fds=True)
        self._buf = b""
        line = self._readline(WAIT)
        m = re.match(r"^listening 127\.0\.0\.1:(\d+)$", line)
        if not m:
            raise AssertionError("fake-broker said %r" % line)
        self.port = int(m.group(1))
        self.address = "127.0.0.1:%d" % self.port

    def _readline(self, timeout):
        """The next answer line; event lines (--verbose) go to self.events."""
        while True:
            line = self._rawline(timeout)
            if not line.startswith("event "):
                return line
            self.events.append(line[6:])

    def poll_events(self):
        """Reads the event lines the broker has written so far."""
        fd = self.proc.stdout.fileno()
        while select.select([fd], [], [], 0)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            self._buf += chunk
        while b"\n" in self._buf and self._buf.startswith(b"event "):
            line, self._buf = self._buf.split(b"\n", 1)
            self.events.append(line.decode("utf-8", errors="replace")[6:])
        return self.events

    def _rawline(self, timeout):
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("fake-broker %s: no answer in %.0fs"
                                     % (self.name, timeout))
            r, _, _ = select.select([fd], [], [], left)
            if r:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise AssertionError("fake-broker %s exited (%s)" % (
                        self.name, self.proc.poll()))
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode("utf-8", errors="replace")

    def cmd(self, line, check=True, timeout=None):
        """Sends one command; returns its answer line.  wait-* commands
        answer when their condition holds (or SECS passed)."""
        if "\n" in line:
            raise ValueError("one line per command")
        self.proc.stdin.write(line.encode("utf-8") + b"\n")
        self.proc.stdin.flush()
        # wait-* commands carry their own bound as the last word.
        limit = WAIT
        if line.startswith("wait-"):
            limit = float(line.split()[-1]) + 10
        ans = self._readline(timeout or limit)
        if check and not ans.startswith("ok"):
            raise AssertionError("fake-broker %r -> %r" % (line, ans))
        return ans

    def cmds(self, lines):
        """Sends several commands in one write (the broker runs them in one
        pass, e.g. publishes that must arrive together); returns their
        answers."""
        if any("\n" in l for l in lines):
            raise ValueError("one line per command")
        self.proc.stdin.write("".join(l + "\n" for l in lines).encode("utf-8"))
        self.proc.stdin.flush()
        return [self._readline(WAIT) for _ in lines]

    def count(self, key_pattern):
        """Messages ever published with a routing key matching the topic
        pattern."""
        return int(self.cmd("messages " + key_pattern).split()[1])

    def last(self, key_pattern):
        """(routing key, body bytes as text) of the last matching message,
        or None."""
        ans = self.cmd("last-message " + key_pattern, check=False)
        if not ans.startswith("ok "):
            return None
        _, key, body = ans.split(" ", 2)
        return key, body

    def wait_count(self, key_pattern, n, secs=WAIT):
        return self.cmd("wait-messages %s %d %g" % (key_pattern, n, secs))

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if not self.log.closed:
            self.log.close()


class FakeBrokerTestCase(_AgentsTestCase):
    """Base class of the fake-broker tests: no RabbitMQ needed.  Gives each
    test a temp dir, fake brokers and agents (killed at the end whatever
    happened; a test that passed also proves exit 0 on SIGTERM)."""

    tmp_prefix = "ur-resil-"
    log_tails_on_failure = True

    def setUp(self):
        for exe in (AGENT, FAKE_BROKER):
            if not os.access(exe, os.X_OK):
                self.fail("%s is not built (make -j2)" % exe)
        self.brokers = []
        super().setUp()

    def _release(self):
        for b in self.brokers:
            b.stop()

    def start_broker(self, **kw):
        kw.setdefault("name", "fake%d" % len(self.brokers))
        b = FakeBroker(self.tmp, **kw)
        self.brokers.append(b)
        return b

    def new_agent(self, brokers, heartbeat=None, args=(), **kw):
        """An agent (not started) whose --broker names brokers (FakeBroker
        objects or "host:port" strings), in that order."""
        kw.setdefault("name", "agent%d" % len(self.agents))
        addrs = [b.address if isinstance(b, FakeBroker) else b
                 for b in brokers]
        argv = ["--broker", ",".join(addrs), "--log-level", "debug"]
        if heartbeat is not None:
            argv += ["--heartbeat", str(heartbeat)]
        a = Agent(self.tmp, args=argv + list(args), use_env_broker=False,
                  **kw)
        self.agents.append(a)
        return a

    @staticmethod
    def request_queue(a):
        return "ur.request.%s.%s" % (a.uuid, a.mac)

    def wait_serving(self, broker, a, secs=WAIT):
        """Waits until a consumes its request queue on broker."""
        ans = broker.cmd("wait-consumers %s 1 %g" % (self.request_queue(a),
                                                     secs), check=False)
        if not ans.startswith("ok"):
            raise AssertionError("agent %s not consuming on %s: %s\nlog:\n%s"
                                 % (a.name, broker.name, ans,
                                    a.log_tail(30)))

    def send(self, broker, a, script, req=None, **extra):
        """Publishes an execute request as the broker itself; returns the
        req token.  Retries (bounded) while no queue takes it."""
        req = req or random_token()
        body = {"type": "script", "script": script, "args": [], "env": {}}
        body.update(extra)
        line = "publish amq.topic ur.execute.%s.%s %s" % (
            a.uuid, req, json.dumps(body))
        wait_until(lambda: broker.cmd(line).split()[-1] != "0",
                   what="a queue routing ur.execute.%s.%s" % (a.uuid, req),
                   interval=0.05)
        return req

    def reply(self, broker, a, req, secs=WAIT):
        """The (last) execute-reply body for req, as a dict."""
        key = "ur.execute-reply.%s.%s" % (a.uuid, req)
        ans = broker.wait_count(key, 1, secs) if secs else "ok"
        if not ans.startswith("ok"):
            raise AssertionError("no reply to %s: %s\nlog:\n%s" % (
                req, ans, a.log_tail(30)))
        got = broker.last(key)
        self.assertIsNotNone(got)
        return json.loads(got[1])

    def execute(self, broker, a, script, secs=WAIT, **extra):
        return self.reply(broker, a, self.send(broker, a, script, **extra),
                          secs)
