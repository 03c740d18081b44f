"""queue_rig: a subgated whose queue the tests fill directly, for the
queue runner's tests (test_relay, test_mx, test_queue_cmd, ...).

    rig = Rig(tmp_path / "rig", settings={...}, sink_tls=False)
    rig.start()                       # waits for "queue: runner started"
    qid = rig.enqueue(["bob@example.net"], body_with(tok))
    rig.wait_sink(tok)                # the message at the sink
    rig.wait_gone(qid)                # "removed" logged, file nowhere
    rig.close()

A Rig's state dir has no database or keys, so the SMTP worker and the
signer may not come up, which does not matter to the runner; a DSN it
makes then waits for a signature (`sign` in its envelope). Queue files
are written as docs/queue.md describes: tmp/ then a rename into active/.

AddrSink is tests/tools/sink.py on any loopback address (MX hosts on
127.0.0.2, 127.0.0.3, ... share one port), with --delay-ms.
"""

import os
import random
import re
import signal
import subprocess
import time
from pathlib import Path

import helpers
from helpers import BIN, HOST, PYTHON, TOOLS, Sink, wait_until

ID_DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def queue_id():
    """A fresh queue id as subgate makes them: microseconds * 1024 plus 10
    random bits, as 12 base-36 digits."""
    v = (time.time_ns() // 1000) * 1024 + random.getrandbits(10)
    out = ""
    for _ in range(12):
        out = ID_DIGITS[v % 36] + out
        v //= 36
    return out


def enqueue(queue_dir, rcpts, body, sender="alice@example.org", **fields):
    """Writes a queue file into queue_dir/tmp and renames it into
    active/, as the SMTP worker commits one; returns its id. fields set
    or add envelope keys (time=..., attempts=...)."""
    queue_dir = Path(queue_dir)
    qid = queue_id()
    env = {
        "id": qid, "time": str(int(time.time())), "session": "stest",
        "member": "alice@example.org", "sender": sender,
        "attempts": "0", "next": "0",
    }
    env.update({k: str(v) for k, v in fields.items()})
    text = "SUBGATE-QUEUE 1\n"
    text += "".join("%s %s\n" % (k, v) for k, v in env.items())
    text += "".join("rcpt %s\n" % r for r in rcpts) + "\n"
    tmp = queue_dir / "tmp" / qid
    with open(tmp, "wb") as f:
        f.write(text.encode() + body)
    os.rename(tmp, queue_dir / "active" / qid)
    return qid


def parse_queue_file(data):
    """(envelope dict, body bytes) of a queue file; rcpt is a list."""
    head, sep, body = data.partition(b"\n\n")
    assert sep, "no end of envelope in %r" % data[:200]
    lines = head.decode().split("\n")
    assert lines[0] == "SUBGATE-QUEUE 1", lines[0]
    env = {"rcpt": []}
    for line in lines[1:]:
        key, _, value = line.partition(" ")
        if key == "rcpt":
            env["rcpt"].append(value)
        else:
            assert key not in env, "duplicate %s" % key
            env[key] = value
    return env, body


class AddrSink(Sink):
    """The test sink on address:port, optionally slow (delay_ms before
    each end-of-DATA reply)."""

    def __init__(self, directory, address=HOST, port=None, tls=None,
                 reply=None, delay_ms=0):
        super().__init__(directory, port=port, tls=tls, reply=reply)
        self.address = address
        self.delay_ms = delay_ms

    def start(self, reply="unchanged"):
        if reply != "unchanged":
            self.reply = reply
        argv = [PYTHON, str(TOOLS / "sink.py"),
                "--listen", "%s:%d" % (self.address, self.port),
                "--dir", str(self.dir)]
        if self.reply:
            argv += ["--reply", self.reply]
        if self.delay_ms:
            argv += ["--delay-ms", str(self.delay_ms)]
        if self.tls:
            argv += ["--tls-cert", str(self.tls[0]),
                     "--tls-key", str(self.tls[1])]
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=logf, start_new_session=True)
        logf.close()
        line = self.proc.stdout.readline()
        if line.strip() != b"ready":
            self.proc.wait()
            raise AssertionError("sink did not start (exit %s): %s" % (
                self.proc.returncode, self.log.read_text()[-2000:]))
        return self


class Rig:
    """subgated with its own state dir and config, and a sink as its
    relay_host. Queue files are written into queue_dir directly."""

    def __init__(self, root, settings=None, sink_tls=False):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.cert, self.key = helpers.make_cert(self.root)
        self.sink = AddrSink(self.root / "sink",
                             tls=(self.cert, self.key) if sink_tls else None)
        self.state = self.root / "state"
        self.state.mkdir()
        self.settings = helpers.base_settings(
            self.state, self.cert, self.key, helpers.free_port(),
            helpers.free_port(), self.sink.port)
        self.settings.update({
            "relay_tls": "none",
            "retry_min": "1s",
            "retry_max": "1s",
            "relay_timeout": "10s",
            "max_queue_lifetime": "1h",
            # One connection per destination, so that reuse is visible;
            # tests of concurrency set their own.
            "relay_concurrency": "1",
        })
        self.settings.update(settings or {})
        self.config = self.root / "subgate.conf"
        helpers.write_config(self.config, self.settings)
        self.queue = self.state / "queue"
        for sub in ("tmp", "active"):
            (self.queue / sub).mkdir(parents=True, exist_ok=True)
        self.log = self.root / "subgated.log"
        self.proc = None

    def start(self, sink=True):
        if sink:
            self.sink.start()
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [str(BIN / "subgated"), "-c", str(self.config)],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
            start_new_session=True)
        logf.close()
        self.wait_log(r"queue: runner started")
        return self

    def close(self):
        if self.proc is not None:
            helpers.stop_process(self.proc)
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.proc = None
        self.sink.stop()

    # queue files -------------------------------------------------------
    def enqueue(self, rcpts, body, sender="alice@example.org", **fields):
        """Commits a queue file as the SMTP worker would (tmp, rename);
        returns its id."""
        return enqueue(self.queue, rcpts, body, sender, **fields)

    def where(self, qid):
        """The queue file of qid wherever it is (active/, or busy/ while
        a delivery has it), or None."""
        for _ in range(3):
            for sub in ("active", "busy", "hold"):
                p = self.queue / sub / qid
                if p.exists():
                    return p
        return None

    def admin(self, *args, **kw):
        """`subgate -c CONFIG ARGS` for this rig."""
        return helpers.admin(self.config, *args, **kw)

    def path(self, qid):
        return self.where(qid) or self.queue / "active" / qid

    def read(self, qid):
        # A delivery may move the file between active/ and busy/.
        for _ in range(50):
            try:
                return parse_queue_file(self.path(qid).read_bytes())
            except FileNotFoundError:
                time.sleep(0.05)
        raise AssertionError("queue file %s not found" % qid)

    def wait_gone(self, qid):
        """The runner said it removed the file, and it is nowhere."""
        self.wait_log(r": removed$", qid)
        self.wait(lambda: self.where(qid) is None,
                  "queue file %s to be removed" % qid)

    # logs --------------------------------------------------------------
    def log_text(self):
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def lines_for(self, qid):
        pat = re.compile(r"^\S+\[\d+\]: %s: " % re.escape(qid))
        return [l for l in self.log_text().splitlines() if pat.match(l)]

    def wait(self, pred, what):
        try:
            return wait_until(pred, what)
        except AssertionError as e:
            raise AssertionError("%s\n--- subgated log (tail) ---\n%s"
                                 % (e, "\n".join(
                                     self.log_text().splitlines()[-60:])))

    def wait_log(self, regex, qid=None):
        pat = re.compile(regex)

        def find():
            lines = (self.lines_for(qid) if qid
                     else self.log_text().splitlines())
            return next((l for l in lines if pat.search(l)), None)

        return self.wait(find, "log line %r%s" % (
            regex, " for %s" % qid if qid else ""))

    def wait_sink(self, tok, count=1):
        return self.wait(
            lambda: (lambda ms: ms if len(ms) >= count else None)(
                self.sink.find(tok)),
            "%d message(s) with %s at the sink" % (count, tok))

    def mail_options(self, msg):
        env = msg.path.with_suffix(".env").read_text()
        m = re.search(r"^mail_options=(.*)$", env, re.M)
        return m.group(1).split() if m else []


def body_with(tok, extra=b""):
    return (b"From: alice@example.org\r\nTo: bob@example.net\r\n"
            b"Subject: relay " + tok.encode() + b"\r\n\r\n"
            b"Hello " + tok.encode() + b"\r\n" + extra)

