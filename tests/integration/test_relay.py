"""The queue runner and the relay client: queue files written straight into
queue_dir (the format of docs/queue.md) are delivered to the test sink, and
temporary failures, refusals, partial success and STARTTLS behave as
documented.

These tests need only the queue runner inside subgated: the state dir has
no database or keys, so the SMTP worker and the signer may not come up,
which does not matter here. Each rig waits for the runner's start-up line
instead of the submission banner.
"""

import os
import random
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

import helpers
from helpers import BIN, HOST, Sink, token, wait_until

pytestmark = pytest.mark.skipif(
    not (BIN / "subgated").is_file(),
    reason="%s/subgated not built" % BIN)

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


class Rig:
    """subgated with its own state dir and config, and a sink as its
    relay_host. Queue files are written into queue_dir directly."""

    def __init__(self, root, settings=None, sink_tls=False):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.cert, self.key = helpers.make_cert(self.root)
        self.sink = Sink(self.root / "sink",
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
        tmp = self.queue / "tmp" / qid
        with open(tmp, "wb") as f:
            f.write(text.encode() + body)
        os.rename(tmp, self.queue / "active" / qid)
        return qid

    def path(self, qid):
        return self.queue / "active" / qid

    def read(self, qid):
        return parse_queue_file(self.path(qid).read_bytes())

    def wait_gone(self, qid):
        self.wait(lambda: not self.path(qid).exists(),
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


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    """A shared rig for cases that do not change its processes; each test
    uses its own recipients and clears the sink's scripted replies."""
    r = Rig(tmp_path_factory.mktemp("relay-shared"))
    try:
        r.start()
        yield r
    finally:
        r.close()


@pytest.fixture
def make_rig(tmp_path):
    rigs = []

    def make(settings=None, sink_tls=False, start=True):
        r = Rig(tmp_path / ("rig%d" % len(rigs)), settings, sink_tls)
        rigs.append(r)
        if start:
            r.start()
        return r

    yield make
    for r in rigs:
        r.close()


def body_with(tok, extra=b""):
    return (b"From: alice@example.org\r\nTo: bob@example.net\r\n"
            b"Subject: relay " + tok.encode() + b"\r\n\r\n"
            b"Hello " + tok.encode() + b"\r\n" + extra)


def test_delivered_and_removed(rig):
    tok = token()
    rcpt = "ok-%s@example.net" % tok
    # A line that is a lone dot and one that starts with a dot must
    # arrive as they were: dot-stuffing on the wire is undone by the sink.
    body = body_with(tok, b".\r\n..two\r\n.end\r\n")
    qid = rig.enqueue([rcpt], body)
    msg = rig.wait_sink(tok)[0]
    assert msg.raw == body
    assert msg.mail_from == "alice@example.org"
    assert msg.rcpt_to == [rcpt]
    rig.wait_gone(qid)
    line = rig.wait_log(r"to=<%s> .*status=sent" % re.escape(rcpt), qid)
    assert re.search(r"relay=%s\[%s\]:%d tls=none " % (
        re.escape(HOST), re.escape(HOST), rig.sink.port), line), line
    assert "dsn=2.0.0" in line and "(250 2.0.0 OK saved as" in line, line
    rig.wait_log(r": removed$", qid)


def test_null_sender_and_8bit(rig):
    tok = token()
    rcpt = "ok-%s@example.net" % tok
    body = body_with(tok, "Gr\u00fc\u00dfe\r\n".encode())
    qid = rig.enqueue([rcpt], body, sender="")
    msg = rig.wait_sink(tok)[0]
    assert msg.raw == body
    assert msg.mail_from == ""
    opts = rig.mail_options(msg)
    assert "BODY=8BITMIME" in opts, opts
    assert "SIZE=%d" % len(body) in opts, opts
    rig.wait_gone(qid)


def test_tempfail_deferred_then_delivered(rig):
    tok = token()
    rcpt = "later-%s@example.net" % tok
    rig.sink.set_rcpt_replies({rcpt: "451 4.3.0 try again later"})
    try:
        qid = rig.enqueue([rcpt], body_with(tok))
        line = rig.wait_log(r"to=<%s> .*status=deferred" % re.escape(rcpt),
                            qid)
        assert "dsn=4.3.0" in line and "(451 4.3.0 try again later)" in line
        rig.wait_log(r": deferred nrcpt=1 attempts=1 next=\d+", qid)
        # The file stays, with the attempt counted and a later next time.
        env, body = rig.read(qid)
        assert env["rcpt"] == [rcpt]
        assert int(env["attempts"]) >= 1
        assert int(env["next"]) > int(env["time"]) - 1
        assert body == body_with(tok)
        assert rig.sink.find(tok) == []
    finally:
        rig.sink.set_rcpt_replies(None)
    msg = rig.wait_sink(tok)[0]
    assert msg.rcpt_to == [rcpt]
    rig.wait_gone(qid)
    rig.wait_log(r"to=<%s> .*status=sent" % re.escape(rcpt), qid)


def test_permfail_drops_recipient(rig):
    tok = token()
    rcpt = "nobody-%s@example.net" % tok
    rig.sink.set_rcpt_replies({rcpt: "550 5.1.1 no such user"})
    try:
        qid = rig.enqueue([rcpt], body_with(tok))
        rig.wait_gone(qid)
        line = rig.wait_log(r"to=<%s> .*status=bounced" % re.escape(rcpt),
                            qid)
        assert "dsn=5.1.1" in line and "(550 5.1.1 no such user)" in line
    finally:
        rig.sink.set_rcpt_replies(None)
    assert rig.sink.find(tok) == []


def test_partial_success_keeps_only_failed(rig):
    tok = token()
    ok = "ok-%s@example.net" % tok
    later = "later-%s@example.net" % tok
    gone = "gone-%s@example.net" % tok
    rig.sink.set_rcpt_replies({later: "452 4.2.2 mailbox full",
                               gone: "550 5.1.1 no such user"})
    try:
        qid = rig.enqueue([ok, later, gone], body_with(tok))
        rig.wait_log(r": deferred nrcpt=1 attempts=1", qid)
        env, _ = rig.read(qid)
        assert env["rcpt"] == [later]
        first = rig.wait_sink(tok)
        assert [m.rcpt_to for m in first] == [[ok]]
        rig.wait_log(r"to=<%s> .*status=sent" % re.escape(ok), qid)
        rig.wait_log(r"to=<%s> .*status=bounced" % re.escape(gone), qid)
    finally:
        rig.sink.set_rcpt_replies(None)
    msgs = rig.wait_sink(tok, count=2)
    assert sorted(m.rcpt_to[0] for m in msgs) == sorted([ok, later])
    assert all(len(m.rcpt_to) == 1 for m in msgs)
    rig.wait_gone(qid)
    # Nobody got it twice.
    assert len(rig.sink.find(tok)) == 2


def test_data_tempfail_defers_all(rig):
    tok = token()
    rcpts = ["a-%s@example.net" % tok, "b-%s@example.net" % tok]
    rig.sink.set_data_reply("451 4.7.1 greylisted")
    try:
        qid = rig.enqueue(rcpts, body_with(tok))
        rig.wait_log(r": deferred nrcpt=2 attempts=1", qid)
        for r in rcpts:
            line = rig.wait_log(r"to=<%s> .*status=deferred" % re.escape(r),
                                qid)
            assert "(451 4.7.1 greylisted)" in line, line
    finally:
        rig.sink.set_data_reply(None)
    msg = rig.wait_sink(tok)[0]
    assert sorted(msg.rcpt_to) == sorted(rcpts)
    rig.wait_gone(qid)


def test_expired_after_lifetime(rig):
    tok = token()
    rcpt = "later-%s@example.net" % tok
    rig.sink.set_rcpt_replies({rcpt: "451 4.3.0 try again later"})
    try:
        # Queued two hours ago; max_queue_lifetime is one hour.
        qid = rig.enqueue([rcpt], body_with(tok),
                          time=int(time.time()) - 7200, attempts=9)
        rig.wait_gone(qid)
        line = rig.wait_log(r"to=<%s> .*status=expired" % re.escape(rcpt),
                            qid)
        assert "attempts=10 " in line and "(451 4.3.0 try again later)" \
            in line, line
    finally:
        rig.sink.set_rcpt_replies(None)
    assert rig.sink.find(tok) == []


def test_corrupt_file_left_alone(rig):
    tok = token()
    qid = rig.enqueue(["ok-%s@example.net" % tok], body_with(tok),
                      colour="blue")
    rig.wait_log(r"corrupt queue file \(unknown key\); left in place", qid)
    assert rig.path(qid).exists()
    # The runner goes on with the next message.
    good = rig.enqueue(["ok-%s@example.net" % tok], body_with(tok))
    rig.wait_gone(good)
    assert rig.path(qid).exists()
    rig.path(qid).unlink()


def test_future_next_waits(rig):
    tok = token()
    qid = rig.enqueue(["ok-%s@example.net" % tok], body_with(tok),
                      next=int(time.time()) + 3600)
    # A later message overtakes it; the first stays untouched.
    other = rig.enqueue(["ok2-%s@example.net" % tok], body_with(tok))
    rig.wait_gone(other)
    assert rig.path(qid).exists()
    assert rig.lines_for(qid) == []
    rig.path(qid).unlink()


def test_connection_reused(rig):
    tok = token()
    qids = [rig.enqueue(["r%d-%s@example.net" % (i, tok)], body_with(tok))
            for i in range(3)]
    rig.wait_sink(tok, count=3)
    for qid in qids:
        rig.wait_gone(qid)
    # At most the first of them opened a connection; the others used it.
    opened = [q for q in qids
              if any(" connected " in l for l in rig.lines_for(q))]
    assert len(opened) <= 1, opened


def test_next_hop_down_then_up(make_rig):
    r = make_rig(start=False)
    r.start(sink=False)
    tok = token()
    rcpt = "ok-%s@example.net" % tok
    qid = r.enqueue([rcpt], body_with(tok))
    line = r.wait_log(r"to=<%s> .*status=deferred" % re.escape(rcpt), qid)
    assert "dsn=4.4.1" in line and "connect to" in line, line
    assert r.path(qid).exists()
    r.sink.start()
    msg = r.wait_sink(tok)[0]
    assert msg.rcpt_to == [rcpt]
    r.wait_gone(qid)


def test_starttls_encrypt(make_rig):
    r = make_rig({"relay_tls": "encrypt"}, sink_tls=True)
    tok = token()
    rcpt = "ok-%s@example.net" % tok
    qid = r.enqueue([rcpt], body_with(tok))
    msg = r.wait_sink(tok)[0]
    assert msg.tls is True
    assert msg.raw == body_with(tok)
    r.wait_gone(qid)
    line = r.wait_log(r"to=<%s> .*status=sent" % re.escape(rcpt), qid)
    assert re.search(r" tls=TLSv1\.[23]/\S+ ", line), line


def test_encrypt_without_starttls_defers(make_rig):
    r = make_rig({"relay_tls": "encrypt"}, sink_tls=False)
    tok = token()
    rcpt = "ok-%s@example.net" % tok
    qid = r.enqueue([rcpt], body_with(tok))
    line = r.wait_log(r"to=<%s> .*status=deferred" % re.escape(rcpt), qid)
    assert "does not offer STARTTLS" in line, line
    assert r.path(qid).exists()
    assert r.sink.find(tok) == []


def test_verify_refuses_untrusted_certificate(make_rig):
    # The sink's certificate is self-signed and not in relay_ca_file's
    # trust: relay_tls = verify must not send the message.
    r = make_rig({"relay_tls": "verify"}, sink_tls=True, start=False)
    (r.root / "ca").mkdir()
    other, _ = helpers.make_cert(r.root / "ca")
    r.settings["relay_ca_file"] = str(other)
    helpers.write_config(r.config, r.settings)
    r.start()
    tok = token()
    rcpt = "ok-%s@example.net" % tok
    qid = r.enqueue([rcpt], body_with(tok))
    line = r.wait_log(r"to=<%s> .*status=deferred" % re.escape(rcpt), qid)
    assert "TLS handshake" in line and "dsn=4.7.5" in line, line
    assert r.sink.find(tok) == []


def test_verify_accepts_trusted_certificate(make_rig):
    # The sink's certificate (CN=localhost) is its own trust anchor here,
    # and the relay host is named by that name.
    r = make_rig({"relay_tls": "verify"}, sink_tls=True, start=False)
    r.settings["relay_ca_file"] = str(r.cert)
    r.settings["relay_host"] = "[localhost]:%d" % r.sink.port
    helpers.write_config(r.config, r.settings)
    r.start()
    tok = token()
    rcpt = "ok-%s@example.net" % tok
    qid = r.enqueue([rcpt], body_with(tok))
    msg = r.wait_sink(tok)[0]
    assert msg.tls is True
    r.wait_gone(qid)
    line = r.wait_log(r"to=<%s> .*status=sent" % re.escape(rcpt), qid)
    assert re.search(r"relay=localhost\[[0-9a-f:.]+\]:%d tls=TLSv1\.[23]/"
                     % r.sink.port, line), line


def test_reconnects_after_next_hop_restart(make_rig):
    # The kept connection dies while idle (the next hop restarts); the
    # next message must go out on a new one without a deferral.
    r = make_rig()
    tok = token()
    first = r.enqueue(["one-%s@example.net" % tok], body_with(tok))
    r.wait_sink(tok)
    r.wait_gone(first)
    r.sink.stop()
    r.sink.start()
    second = r.enqueue(["two-%s@example.net" % tok], body_with(tok))
    r.wait_sink(tok, count=2)
    r.wait_gone(second)
    assert not any("status=deferred" in l for l in r.lines_for(second))
    assert any(" connected " in l for l in r.lines_for(second))


class PipeliningHandler:
    """An in-process next hop that offers PIPELINING (aiosmtpd itself does
    not) and scripts replies per sender and recipient."""

    def __init__(self):
        self.messages = []      # (mail_from, [rcpt], raw)
        self.mail_replies = {}  # sender -> reply
        self.rcpt_replies = {}  # recipient -> reply
        self.buffered_at_mail = []

    async def handle_EHLO(self, server, session, envelope, hostname,
                          responses):
        session.host_name = hostname
        return responses[:-1] + ["250-PIPELINING", responses[-1]]

    async def handle_MAIL(self, server, session, envelope, address,
                          mail_options):
        # What the client had already sent when MAIL was read: with
        # pipelining, its RCPT commands.
        reader = getattr(server, "_reader", None)
        self.buffered_at_mail.append(len(getattr(reader, "_buffer", b"")))
        reply = self.mail_replies.get(address)
        if reply:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address,
                          rcpt_options):
        reply = self.rcpt_replies.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos),
                              envelope.original_content))
        return "250 2.0.0 OK pipelined %d" % len(self.messages)


@pytest.fixture
def pipelining_rig(make_rig):
    handler = PipeliningHandler()
    port = helpers.free_port()
    ctl = Controller(handler, hostname=HOST, port=port)
    ctl.start()
    try:
        r = make_rig({"relay_host": "[%s]:%d" % (HOST, port)}, start=False)
        r.start(sink=False)
        yield r, handler
    finally:
        ctl.stop()


def test_pipelining_many_recipients(pipelining_rig):
    r, handler = pipelining_rig
    tok = token()
    # More recipients than one pipelined batch (100 commands).
    rcpts = ["r%03d-%s@example.net" % (i, tok) for i in range(250)]
    handler.rcpt_replies = {rcpts[10]: "550 5.1.1 unknown",
                            rcpts[120]: "451 4.3.0 later",
                            rcpts[240]: "550 5.1.1 unknown"}
    qid = r.enqueue(rcpts, body_with(tok))
    r.wait_log(r": deferred nrcpt=1 attempts=1", qid)
    env, _ = r.read(qid)
    assert env["rcpt"] == [rcpts[120]]
    assert len(handler.messages) == 1
    sender, got, raw = handler.messages[0]
    assert sender == "alice@example.org"
    assert got == [x for i, x in enumerate(rcpts) if i not in (10, 120, 240)]
    assert raw == body_with(tok)
    if handler.buffered_at_mail[0] is not None:
        assert handler.buffered_at_mail[0] > 0, "RCPTs were not pipelined"
    for i in (10, 240):
        r.wait_log(r"to=<%s> .*dsn=5\.1\.1 status=bounced"
                   % re.escape(rcpts[i]), qid)
    handler.rcpt_replies = {}
    r.wait_gone(qid)
    assert len(handler.messages) == 2
    assert handler.messages[1][1] == [rcpts[120]]


def test_pipelining_mail_refused(pipelining_rig):
    r, handler = pipelining_rig
    tok = token()
    handler.mail_replies = {"blocked@example.org": "553 5.7.1 not you"}
    rcpts = ["a-%s@example.net" % tok, "b-%s@example.net" % tok]
    qid = r.enqueue(rcpts, body_with(tok), sender="blocked@example.org")
    r.wait_gone(qid)
    for x in rcpts:
        line = r.wait_log(r"to=<%s> .*status=bounced" % re.escape(x), qid)
        assert "(553 5.7.1 not you)" in line, line
    assert handler.messages == []
    # The connection is still good for the next message.
    ok = r.enqueue(["c-%s@example.net" % tok], body_with(tok))
    r.wait_gone(ok)
    assert [m[1] for m in handler.messages] == [["c-%s@example.net" % tok]]


def ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
            return True
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback")
def test_ipv6_literal_relay_host(make_rig):
    handler = PipeliningHandler()
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
        s.bind(("::1", 0))
        port = s.getsockname()[1]
    ctl = Controller(handler, hostname="::1", port=port)
    ctl.start()
    try:
        r = make_rig({"relay_host": "[::1]:%d" % port}, start=False)
        r.start(sink=False)
        tok = token()
        qid = r.enqueue(["ok-%s@example.net" % tok], body_with(tok))
        r.wait_gone(qid)
        line = r.wait_log(r"status=sent", qid)
        assert "relay=::1[::1]:%d " % port in line, line
        assert [m[2] for m in handler.messages] == [body_with(tok)]
    finally:
        ctl.stop()


def test_no_relay_host_defers(make_rig):
    r = make_rig({"relay_host": ""})
    tok = token()
    rcpt = "ok-%s@example.net" % tok
    qid = r.enqueue([rcpt], body_with(tok))
    r.wait_log(r"MX delivery not implemented; set relay_host", qid)
    line = r.wait_log(r"to=<%s> relay=none .*status=deferred" % re.escape(rcpt),
                      qid)
    assert "dsn=4.3.5" in line, line
    assert r.path(qid).exists()
