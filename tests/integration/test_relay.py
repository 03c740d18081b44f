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
import re
import socket
import socketserver
import ssl
import subprocess
import threading
import time

import pytest
from aiosmtpd.controller import Controller

import helpers
from helpers import BIN, HOST, token
from queue_rig import AddrSink, Rig, body_with

pytestmark = pytest.mark.skipif(
    not (BIN / "subgated").is_file(),
    reason="%s/subgated not built" % BIN)

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


def test_large_body_dot_stuffing(rig):
    """A body larger than the relay's output buffer goes out partly
    straight from the message: lines that start with a dot, right at and
    around the buffer's 16 KiB boundaries, long runs without any, and a
    last line without CRLF (which gets one) must all arrive as they were."""
    tok = token()
    rcpt = "ok-%s@example.net" % tok
    parts = [b"x" * 70 + b"\r\n"] * 200          # 14 KiB without a dot
    parts += [b".a\r\n", b"..b\r\n", b".\r\n", b"c.\r\n"]
    parts += [b"y" * 998 + b"\r\n"] * 40          # 40 KiB in long lines
    for i in range(300):                          # dots at many offsets
        parts.append(b"." * (i % 3 + 1) + b"z" * (i % 97) + b"\r\n")
    parts.append(b".last line without CRLF")
    body = body_with(tok, b"".join(parts))
    qid = rig.enqueue([rcpt], body)
    msg = rig.wait_sink(tok)[0]
    assert msg.raw == body + b"\r\n"
    rig.wait_gone(qid)


def test_spare_file_and_tmp_cleanup(make_rig):
    """A delivered file is kept in tmp/ as a spare for the SMTP worker to
    write over (docs/queue.md); and a tmp/ file whose content is old but
    which was renamed just now (a spare being taken) is not a left-over:
    the runner's start-up cleanup goes by the change time."""
    r = make_rig(start=False)
    taken = r.queue / "tmp" / "ABCDEFGHIJKL"
    taken.write_bytes(b"old content\r\n")
    old = time.time() - 7200
    os.utime(taken, (old, old))
    r.start()
    tok = token()
    qid = r.enqueue(["ok-%s@example.net" % tok], body_with(tok))
    r.wait_sink(tok)
    r.wait_gone(qid)
    spares = []
    for _ in range(200):
        spares = [p for p in (r.queue / "tmp").glob("spare.*")
                  if tok.encode() in p.read_bytes()]
        if spares:
            break
        time.sleep(0.05)
    assert len(spares) == 1, sorted(os.listdir(r.queue / "tmp"))
    assert taken.exists()
    assert "removed stale" not in r.log.read_text()


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
                     r"\S+ verified=yes " % r.sink.port, line), line


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


def test_verified_flag_in_log(make_rig):
    # encrypt: TLS, certificate not checked.
    r = make_rig({"relay_tls": "encrypt"}, sink_tls=True)
    tok = token()
    qid = r.enqueue(["ok-%s@example.net" % tok], body_with(tok))
    r.wait_gone(qid)
    line = r.wait_log(r"status=sent", qid)
    assert re.search(r" tls=TLSv1\.[23]/\S+ verified=no ", line), line


def tls_server_context(cert, key, client_ca=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    if client_ca:
        # TLS 1.2 checks the client's certificate inside the handshake,
        # which the relay (it has none) then fails.
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(str(client_ca))
    return ctx


class RecordingHandler:
    """An in-process next hop that keeps what it got, scripts its EHLO
    keywords and checks AUTH."""

    def __init__(self, drop=(), users=None):
        self.messages = []  # (mail_from, [rcpt], raw, mail_options, tls)
        self.drop = set(drop)  # EHLO keywords to hide
        self.users = users or {}
        self.logins = []

    async def handle_EHLO(self, server, session, envelope, hostname,
                          responses):
        session.host_name = hostname
        keep = [r for r in responses
                if r[4:].split(" ")[0].upper() not in self.drop]
        # The last line of a multi-line reply has a space after the code.
        keep = [r[:3] + "-" + r[4:] for r in keep[:-1]] + \
            [keep[-1][:3] + " " + keep[-1][4:]]
        return keep

    async def handle_MAIL(self, server, session, envelope, address,
                          mail_options):
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos),
                              envelope.original_content,
                              list(envelope.mail_options),
                              session.ssl is not None))
        return "250 2.0.0 OK recorded %d" % len(self.messages)

    def authenticator(self, server, session, envelope, mechanism, data):
        from aiosmtpd.smtp import AuthResult
        login = data.login.decode()
        self.logins.append((mechanism, login))
        ok = self.users.get(login) == data.password.decode()
        return AuthResult(success=ok, handled=False)


@pytest.fixture
def next_hop(make_rig, tmp_path):
    """make(handler, **controller kwargs) -> (rig, handler): a rig whose
    relay_host is an in-process aiosmtpd with that handler."""
    ctls = []

    def make(handler, settings=None, **kw):
        port = helpers.free_port()
        ctl = Controller(handler, hostname=HOST, port=port,
                         enable_SMTPUTF8=True, **kw)
        ctl.start()
        ctls.append(ctl)
        st = {"relay_host": "[%s]:%d" % (HOST, port)}
        st.update(settings or {})
        r = make_rig(st, start=False)
        r.start(sink=False)
        return r, handler

    yield make
    for ctl in ctls:
        ctl.stop()


def test_may_falls_back_to_plaintext(next_hop, tmp_path):
    # A server whose TLS fails: relay_tls = may delivers in clear.
    cert, key = helpers.make_cert(tmp_path)
    (tmp_path / "ca").mkdir()
    other, _ = helpers.make_cert(tmp_path / "ca")
    r, h = next_hop(RecordingHandler(),
                    {"relay_tls": "may"},
                    tls_context=tls_server_context(cert, key, other))
    tok = token()
    qid = r.enqueue(["ok-%s@example.net" % tok], body_with(tok))
    r.wait_gone(qid)
    r.wait_log(r"TLS failed .*trying without TLS", qid)
    line = r.wait_log(r"status=sent", qid)
    assert " tls=none verified=no " in line, line
    assert [(m[2], m[4]) for m in h.messages] == [(body_with(tok), False)]


def test_encrypt_does_not_fall_back(next_hop, tmp_path):
    cert, key = helpers.make_cert(tmp_path)
    (tmp_path / "ca").mkdir()
    other, _ = helpers.make_cert(tmp_path / "ca")
    r, h = next_hop(RecordingHandler(),
                    {"relay_tls": "encrypt"},
                    tls_context=tls_server_context(cert, key, other))
    tok = token()
    qid = r.enqueue(["ok-%s@example.net" % tok], body_with(tok))
    line = r.wait_log(r"status=deferred", qid)
    assert "dsn=4.7.5" in line and "TLS handshake" in line, line
    assert h.messages == []
    r.admin("queue", "delete", qid)


def auth_rig(next_hop, tmp_path, password, tls=True, users=None,
             exclude=()):
    cert, key = helpers.make_cert(tmp_path)
    pwfile = tmp_path / "relay.secret"
    pwfile.write_text(password + "\n")
    os.chmod(pwfile, 0o600)
    handler = RecordingHandler(users=users or {"relayuser": "s3cret pass"})
    kw = {"authenticator": handler.authenticator, "auth_require_tls": True,
          "auth_exclude_mechanism": list(exclude)}
    if tls:
        kw["tls_context"] = tls_server_context(cert, key)
    return next_hop(handler, {
        "relay_tls": "may",
        "relay_auth_user": "relayuser",
        "relay_auth_password_file": str(pwfile),
    }, **kw)


def test_auth_to_smarthost(next_hop, tmp_path):
    r, h = auth_rig(next_hop, tmp_path, "s3cret pass")
    tok = token()
    qid = r.enqueue(["ok-%s@example.net" % tok], body_with(tok))
    r.wait_gone(qid)
    assert h.logins == [("PLAIN", "relayuser")], h.logins
    assert [(m[2], m[4]) for m in h.messages] == [(body_with(tok), True)]
    # The secret never reaches the log.
    assert "s3cret" not in r.log_text()


def test_auth_login_when_no_plain(next_hop, tmp_path):
    r, h = auth_rig(next_hop, tmp_path, "s3cret pass", exclude=["PLAIN"])
    tok = token()
    qid = r.enqueue(["ok-%s@example.net" % tok], body_with(tok))
    r.wait_gone(qid)
    assert h.logins == [("LOGIN", "relayuser")], h.logins
    assert [m[2] for m in h.messages] == [body_with(tok)]


def test_auth_failure_defers(next_hop, tmp_path):
    r, h = auth_rig(next_hop, tmp_path, "wrong")
    tok = token()
    qid = r.enqueue(["ok-%s@example.net" % tok], body_with(tok))
    line = r.wait_log(r"status=deferred", qid)
    assert "authentication to" in line and "failed" in line, line
    assert h.messages == []
    assert "wrong" not in r.log_text().replace(line, "")
    r.admin("queue", "delete", qid)


def test_no_auth_without_tls(next_hop, tmp_path):
    # The smarthost offers no STARTTLS: the password is not sent.
    r, h = auth_rig(next_hop, tmp_path, "s3cret pass", tls=False)
    tok = token()
    qid = r.enqueue(["ok-%s@example.net" % tok], body_with(tok))
    line = r.wait_log(r"status=deferred", qid)
    assert "no TLS, so no AUTH" in line, line
    assert h.logins == [] and h.messages == []
    r.admin("queue", "delete", qid)


def test_auth_needs_tls_in_config(tmp_path):
    rig = Rig(tmp_path / "rig", {"relay_auth_user": "u",
                                 "relay_auth_password_file": "/dev/null",
                                 "relay_tls": "none"})
    res = subprocess.run([str(BIN / "subgated"), "-n", "-c", str(rig.config)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert res.returncode != 0
    assert b"relay_auth_user needs" in res.stderr, res.stderr


def test_8bit_without_8bitmime_bounces(next_hop):
    # Converting the signed 8-bit body to 7 bits would break the DKIM
    # signature: the next hop must offer 8BITMIME, or the message fails.
    r, h = next_hop(RecordingHandler(drop={"8BITMIME", "SMTPUTF8"}))
    tok = token()
    rcpt = "ok-%s@example.net" % tok
    qid = r.enqueue([rcpt], body_with(tok, "Gr\u00fc\u00dfe\r\n".encode()),
                    sender="")
    r.wait_gone(qid)
    line = r.wait_log(r"to=<%s> .*status=bounced" % re.escape(rcpt), qid)
    assert "dsn=5.6.3 " in line and "8BITMIME" in line, line
    assert h.messages == []
    # A 7-bit message goes through the same server.
    ok = r.enqueue([rcpt], body_with(tok), sender="")
    r.wait_gone(ok)
    assert [m[2] for m in h.messages] == [body_with(tok)]


def test_utf8_address_needs_smtputf8(next_hop):
    r, h = next_hop(RecordingHandler(drop={"SMTPUTF8"}))
    tok = token()
    rcpt = "j\u00f6rg-%s@example.net" % tok
    qid = r.enqueue([rcpt], body_with(tok), sender="")
    r.wait_gone(qid)
    line = r.wait_log(r"status=bounced", qid)
    assert "dsn=5.6.7 " in line and "SMTPUTF8" in line, line
    assert h.messages == []


def test_utf8_address_with_smtputf8(next_hop):
    r, h = next_hop(RecordingHandler())
    tok = token()
    rcpt = "j\u00f6rg-%s@example.net" % tok
    qid = r.enqueue([rcpt], body_with(tok), sender="")
    r.wait_gone(qid)
    assert [m[1] for m in h.messages] == [[rcpt]]
    assert "SMTPUTF8" in h.messages[0][3], h.messages[0][3]


class Dropper(socketserver.ThreadingTCPServer):
    """A next hop that takes the message and drops the connection instead
    of answering the end of DATA."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, port):
        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                w = self.wfile.write
                w(b"220 dropper ESMTP\r\n")
                data = False
                for line in self.rfile:
                    if data:
                        if line == b".\r\n":
                            self.server.dropped += 1
                            return  # no reply: the connection goes away
                        continue
                    verb = line[:4].upper()
                    if verb in (b"EHLO", b"HELO"):
                        w(b"250 dropper\r\n")
                    elif verb == b"DATA":
                        w(b"354 go on\r\n")
                        data = True
                    elif verb == b"QUIT":
                        w(b"221 bye\r\n")
                        return
                    else:
                        w(b"250 ok\r\n")

        self.dropped = 0
        super().__init__((HOST, port), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def stop(self):
        self.shutdown()
        self.server_close()


def test_dropped_connection_defers_then_delivers(make_rig):
    r = make_rig(start=False)
    dropper = Dropper(r.sink.port)
    try:
        r.start(sink=False)
        tok = token()
        rcpt = "ok-%s@example.net" % tok
        qid = r.enqueue([rcpt], body_with(tok))
        line = r.wait_log(r"to=<%s> .*status=deferred" % re.escape(rcpt),
                          qid)
        assert "dsn=4.4.2 " in line and "lost connection" in line, line
        assert dropper.dropped >= 1
    finally:
        dropper.stop()
    r.sink.start()
    msg = r.wait_sink(tok)[0]
    assert msg.rcpt_to == [rcpt]
    r.wait_gone(qid)


def test_slow_next_hop(make_rig, tmp_path):
    # A next hop slower than relay_timeout is given up on (and retried);
    # one that is slow but within it gets the message.
    r = make_rig({"relay_timeout": "2s"}, start=False)
    slow = AddrSink(tmp_path / "slow", port=r.sink.port, delay_ms=8000)
    slow.start()
    try:
        r.start(sink=False)
        tok = token()
        rcpt = "ok-%s@example.net" % tok
        qid = r.enqueue([rcpt], body_with(tok))
        line = r.wait_log(r"to=<%s> .*status=deferred" % re.escape(rcpt),
                          qid)
        assert "dsn=4.4.2 " in line and "timeout" in line, line
    finally:
        slow.stop()
    r.sink.delay_ms = 200
    r.sink.start()
    r.wait_sink(tok)
    r.wait_gone(qid)
    r.wait_log(r"to=<%s> .*status=sent" % re.escape(rcpt), qid)
