"""Submission: TLS and AUTH, sender and From: policy, limits, the queue-id
log lines, and a real client (swaks). Runs against the shared gateway
(max_recipients 100, max_message_size 1M) except where a test changes
state."""

import email.utils
import shutil
import socket
import subprocess

import pytest

from helpers import (
    HOST,
    PASSWORDS,
    WAIT_TIMEOUT,
    assert_not_delivered,
    assert_queued,
    assert_reply,
    auth_login,
    auth_plain,
    b64,
    connect,
    make_message,
    send,
    session,
    submit,
    tls_context,
    token,
)

ALICE = "alice@example.org"


# --- EHLO and TLS -----------------------------------------------------------


def test_ehlo_before_tls_offers_starttls_not_auth(gateway):
    s = connect(gateway, tls=None)
    try:
        assert s.has_extn("starttls"), s.ehlo_resp
        assert not s.has_extn("auth"), s.ehlo_resp
        for ext in ("pipelining", "size", "8bitmime", "enhancedstatuscodes"):
            assert s.has_extn(ext), "no %s in %r" % (ext, s.ehlo_resp)
        assert s.esmtp_features["size"].strip() == str(1024 * 1024)
    finally:
        s.quit()


def test_ehlo_after_tls_offers_auth_not_starttls(gateway):
    s = connect(gateway, tls="starttls")
    try:
        assert not s.has_extn("starttls"), s.ehlo_resp
        assert s.has_extn("auth"), s.ehlo_resp
        mechs = s.esmtp_features["auth"].upper().split()
        assert "PLAIN" in mechs and "LOGIN" in mechs, mechs
        for ext in ("pipelining", "size", "8bitmime", "enhancedstatuscodes"):
            assert s.has_extn(ext), "no %s in %r" % (ext, s.ehlo_resp)
    finally:
        s.quit()


def test_implicit_tls_port(gateway):
    s = connect(gateway, tls="implicit")
    try:
        assert not s.has_extn("starttls"), s.ehlo_resp
        assert s.has_extn("auth"), s.ehlo_resp
        assert_reply(auth_plain(s, ALICE, PASSWORDS[ALICE]), 235, "2.7.0")
        msg, tok = make_message()
        qid = assert_queued(send(s, ALICE, ["bob@example.net"], msg))
    finally:
        s.quit()
    got = gateway.sink.wait_for(tok)[0]
    assert got.rcpt_to == ["bob@example.net"]
    assert qid


def test_auth_before_tls_refused(gateway):
    s = connect(gateway, tls=None)
    try:
        reply = auth_plain(s, ALICE, PASSWORDS[ALICE])
        assert_reply(reply, 530, "5.7.0")
        code, text = s.docmd("AUTH", "LOGIN")
        assert_reply((code, text.decode()), 530, "5.7.0")
    finally:
        s.close()


@pytest.mark.parametrize("tls", [None, "starttls"])
def test_mail_without_auth_refused(gateway, tls):
    msg, tok = make_message()
    s = connect(gateway, tls=tls)
    try:
        code, text = s.mail(ALICE)
        assert_reply((code, text.decode()), 530, "5.7.0")
        # Whatever follows must not open a transaction either.
        code, text = s.rcpt("bob@example.net")
        assert code >= 500, (code, text)
        code, text = s.docmd("DATA")
        assert code >= 500, (code, text)
    finally:
        s.close()
    assert_not_delivered(gateway, tok)


# --- AUTH -------------------------------------------------------------------


def test_auth_plain_ok(gateway):
    with session(gateway) as s:
        assert_reply(auth_plain(s, ALICE, PASSWORDS[ALICE]), 235, "2.7.0")


def test_auth_plain_with_same_authzid_ok(gateway):
    with session(gateway) as s:
        reply = auth_plain(s, ALICE, PASSWORDS[ALICE], authzid=ALICE)
        assert_reply(reply, 235, "2.7.0")


def test_auth_login_ok(gateway):
    with session(gateway) as s:
        assert_reply(auth_login(s, ALICE, PASSWORDS[ALICE]), 235, "2.7.0")
        msg, tok = make_message()
        assert_queued(send(s, ALICE, ["bob@example.net"], msg))
    gateway.sink.wait_for(tok)


@pytest.mark.parametrize(
    "user,password",
    [
        (ALICE, "wrong-password"),
        ("nobody@example.org", "whatever"),
        ("alice@unknown.test", PASSWORDS[ALICE]),
        ("gina@example.org", PASSWORDS["gina@example.org"]),  # disabled
    ],
    ids=["bad-password", "unknown-member",
         "unknown-domain", "disabled-member"],
)
def test_auth_refused(gateway, user, password):
    with session(gateway) as s:
        assert_reply(auth_plain(s, user, password), 535, "5.7.8")
    with session(gateway) as s:
        assert_reply(auth_login(s, user, password), 535, "5.7.8")


def test_auth_empty_password_refused(gateway):
    # RFC 4616 2: the password is 1*SAFE, so an empty one is malformed (501)
    # or simply wrong (535); either way no login.
    with session(gateway) as s:
        code, text = auth_plain(s, ALICE, "")
        assert (code, text.split(" ")[0]) in ((535, "5.7.8"), (501, "5.5.2")), (
            code, text)
        code, text = s.mail(ALICE)
        assert_reply((code, text.decode()), 530, "5.7.0")


def test_auth_authzid_other_than_login_refused(gateway):
    with session(gateway) as s:
        # Raw, so that the client library cannot tidy the response.
        code, text = s.docmd("AUTH", "PLAIN " + b64(
            "bob@example.org\0%s\0%s" % (ALICE, PASSWORDS[ALICE])))
        assert_reply((code, text.decode()), 535, "5.7.8")
        code, text = s.mail(ALICE)
        assert_reply((code, text.decode()), 530, "5.7.0")


def test_after_failed_auth_mail_is_refused(gateway):
    with session(gateway) as s:
        assert_reply(auth_plain(s, ALICE, "nope"), 535, "5.7.8")
        code, text = s.mail(ALICE)
        assert_reply((code, text.decode()), 530, "5.7.0")


# --- envelope sender policy ---------------------------------------------------


@pytest.mark.parametrize(
    "sender",
    [ALICE, "alice.smith@example.com"],
    ids=["primary", "alias"],
)
def test_sender_owned_accepted(gateway, sender):
    msg, tok = make_message(from_hdr=sender)
    res = submit(gateway, ALICE, msg, mail_from=sender)
    assert_reply(res["mail"], 250)
    assert_queued(res)
    got = gateway.sink.wait_for(tok)[0]
    assert got.mail_from == sender


@pytest.mark.parametrize(
    "sender",
    [
        "bob@example.org",  # another member of the same tenant
        "carol@other.org",  # a member of another tenant
        "someone@foreign.test",  # a domain nobody here owns
        "alice@other.org",  # own local part, another tenant's domain
        "",  # the null sender
    ],
    ids=["same-tenant", "other-tenant", "foreign", "other-domain", "null"],
)
def test_sender_not_owned_refused(gateway, sender):
    with session(gateway, ALICE) as s:
        code, text = s.mail(sender)
        assert_reply((code, text.decode()), 553, "5.7.1")


def test_rewrite_tenant_replaces_sender_and_from(gateway, dns_records):
    user = "dave@rewrite.org"
    msg, tok = make_message(from_hdr="Some One <someone@elsewhere.test>")
    res = submit(gateway, user, msg, mail_from="someone@elsewhere.test")
    assert_reply(res["mail"], 250)
    assert_queued(res)
    got = gateway.sink.wait_for(tok)[0]
    assert got.mail_from == user
    froms = got.headers("From")
    assert len(froms) == 1, froms
    assert [a for _, a in email.utils.getaddresses(froms)] == [user]
    assert "elsewhere.test" not in froms[0]


def test_rewrite_tenant_keeps_own_sender(gateway):
    user = "dave@rewrite.org"
    msg, tok = make_message(from_hdr="Dave <%s>" % user)
    assert_queued(submit(gateway, user, msg))
    got = gateway.sink.wait_for(tok)[0]
    assert got.mail_from == user
    assert got.headers("From") == ["Dave <%s>" % user]


# --- From: policy -------------------------------------------------------------


@pytest.mark.parametrize(
    "from_hdr",
    [ALICE, "Alice Liddell <alice@example.org>",
     "\"Liddell, Alice\" <alice.smith@example.com>"],
    ids=["bare", "display-name", "alias-quoted-name"],
)
def test_from_owned_accepted(gateway, from_hdr):
    msg, tok = make_message(from_hdr=from_hdr)
    assert_queued(submit(gateway, ALICE, msg))
    got = gateway.sink.wait_for(tok)[0]
    assert got.headers("From") == [from_hdr]


@pytest.mark.parametrize(
    "kw",
    [
        {"from_hdr": "bob@example.org"},
        {"from_hdr": "Carol <carol@other.org>"},
        {"from_hdr": "Alice <alice@foreign.test>"},
        {"from_hdr": ALICE, "from_count": 2},
        {"from_hdr": "alice@example.org, bob@example.org"},
        {"from_hdr": "alice@example.org, alice.smith@example.com"},
        {"from_hdr": None},
    ],
    ids=["other-member", "other-tenant", "foreign", "two-from-headers",
         "two-mailboxes", "two-own-mailboxes", "no-from"],
)
def test_from_refused(gateway, kw):
    msg, tok = make_message(**kw)
    res = submit(gateway, ALICE, msg)
    assert_reply(res["data"], 550, "5.7.1")
    assert res["qid"] is None


def test_from_refused_leaves_nothing(gateway):
    msg, tok = make_message(from_hdr="bob@example.org")
    assert_reply(submit(gateway, ALICE, msg)["data"], 550, "5.7.1")
    assert_not_delivered(gateway, tok)


# --- limits -------------------------------------------------------------------


def test_max_recipients(gateway):
    limit = int(gateway.settings["max_recipients"])
    with session(gateway, ALICE) as s:
        code, text = s.mail(ALICE)
        assert code == 250, text
        for i in range(limit):
            code, text = s.rcpt("r%d@example.net" % i)
            assert code == 250, "RCPT %d: %d %s" % (i + 1, code, text)
        code, text = s.rcpt("one-too-many@example.net")
        assert_reply((code, text.decode()), 452, "4.5.3")
        code, text = s.rset()
        assert code == 250


def test_line_over_998_refused(gateway):
    long_line = "x" * 999
    msg, tok = make_message(body="short\r\n%s\r\nend" % long_line)
    res = None
    try:
        res = submit(gateway, ALICE, msg)
    except (ConnectionError, OSError) as e:  # smtplib raises these
        pytest.fail("connection closed instead of a 552 reply: %r" % e)
    assert_reply(res["data"], 552, "5.3.4")
    assert_not_delivered(gateway, tok)


def test_line_of_998_accepted_intact(gateway):
    line = ("y" * 997) + "z"  # 998 octets, the RFC 5322 2.1.1 maximum
    msg, tok = make_message(body="short\r\n%s\r\nend" % line)
    assert_queued(submit(gateway, ALICE, msg))
    got = gateway.sink.wait_for(tok)[0]
    assert (line + "\r\n").encode() in got.raw


def test_message_over_max_size_refused(gateway):
    limit = 1024 * 1024
    body = ("z" * 78 + "\r\n") * (limit // 80 + 200)
    msg, tok = make_message(body=body)
    assert len(msg) > limit
    res = submit(gateway, ALICE, msg)
    assert_reply(res["data"], 552, "5.3.4")
    assert_not_delivered(gateway, tok)


def test_mail_size_parameter_over_limit_refused(gateway):
    with session(gateway, ALICE) as s:
        code, text = s.mail(ALICE, ["SIZE=%d" % (1024 * 1024 + 1)])
        assert_reply((code, text.decode()), 552, "5.3.4")


# --- STARTTLS command injection -----------------------------------------------


class _Lines:
    """Reads CRLF lines from a socket, keeping what comes after."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed; buffered %r" % self.buf)
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line.decode(errors="replace")

    def reply(self):
        lines = [self.line()]
        while len(lines[-1]) > 3 and lines[-1][3] == "-":
            lines.append(self.line())
        return int(lines[0][:3]), lines


def test_starttls_command_injection(gateway):
    raw = socket.create_connection((HOST, gateway.submission_port),
                                   timeout=WAIT_TIMEOUT)
    try:
        plain = _Lines(raw)
        assert plain.reply()[0] == 220
        raw.sendall(b"EHLO client.test\r\n")
        assert plain.reply()[0] == 250
        # Both commands in one packet: the NOOP was sent in clear text and
        # must not be answered, neither before nor after the handshake.
        raw.sendall(b"STARTTLS\r\nNOOP\r\n")
        code, lines = plain.reply()
        if code != 220:
            # Refusing the pipelined STARTTLS outright is also safe.
            assert code >= 500, lines
            return
        assert plain.buf == b"", (
            "clear-text bytes after the STARTTLS reply: %r" % plain.buf)
        tls = tls_context().wrap_socket(raw, server_hostname=None)
        enc = _Lines(tls)
        tls.sendall(b"EHLO client.test\r\n")
        code, lines = enc.reply()
        assert code == 250, lines
        assert len(lines) > 1 and any("AUTH" in l for l in lines), (
            "first reply after the handshake is not our EHLO's: %r" % lines)
        tls.sendall(b"NOOP\r\n")
        code, lines = enc.reply()
        assert code == 250, lines
        tls.sendall(b"QUIT\r\n")
        code, lines = enc.reply()
        assert code == 221, lines
        assert enc.buf == b""
    finally:
        raw.close()


# --- queue ids and logging ------------------------------------------------------


def test_queue_id_log_lines(gateway):
    msg, tok = make_message()
    res = submit(gateway, ALICE, msg)
    qid = assert_queued(res)
    assert len(qid) == 12 and qid.isalnum() and qid.upper() == qid
    gateway.sink.wait_for(tok)
    sent = gateway.wait_log(r"to=<bob@example\.net>.*status=sent", qid=qid)
    lines = gateway.lines_for(qid)
    queued = [l for l in lines if "queued" in l]
    assert queued, "no '%s: ... queued' line; lines: %r" % (qid, lines)
    assert lines.index(queued[0]) < lines.index(sent)
    # Every line that names the message starts with its queue id.
    for line in gateway.log_text().splitlines():
        if qid in line:
            assert line in lines, "line names %s elsewhere: %r" % (qid, line)


# --- a real client ------------------------------------------------------------


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks not installed")
def test_swaks_client(gateway):
    tok = token()
    argv = [
        "swaks", "--server", "%s:%d" % (HOST, gateway.submission_port),
        "--tls", "--auth", "PLAIN",
        "--auth-user", ALICE, "--auth-password", PASSWORDS[ALICE],
        "--from", ALICE, "--to", "someone@example.net",
        "--h-From:", ALICE, "--h-Subject:", "swaks %s" % tok,
        "--timeout", "60",
    ]
    res = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         timeout=120)
    out = res.stdout.decode(errors="replace")
    assert res.returncode == 0, out
    assert "queued as" in out, out
    got = gateway.sink.wait_for(tok)[0]
    assert got.mail_from == ALICE
    assert got.rcpt_to == ["someone@example.net"]
    assert len(got.headers("DKIM-Signature")) == 2
