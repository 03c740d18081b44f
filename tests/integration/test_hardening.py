"""Hardening: hostile clients against a real subgated. End-of-data
smuggling, NUL and bare CR, CR/LF injection into our Received: field,
relay-test address forms, header spoofing (Sender:, Resent-*, display
names, comments, encoded words, folding), brute-force AUTH, connection
floods, slow clients, outbound budgets, the TLS cipher policy, certificate
reload on SIGHUP, and privilege separation (as root).

STARTTLS command injection and authzid impersonation are tested in
test_submission.py; kill -9 under load in test_crash.py.

Every limit is tested on a private gateway with small values; the shared
gateway runs with the abuse limits off (helpers.base_settings), since all
tests connect from 127.0.0.1.
"""

import contextlib
import os
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import pytest

import helpers
from helpers import (
    HOST,
    PASSWORDS,
    WAIT_TIMEOUT,
    Gateway,
    assert_not_delivered,
    assert_queued,
    assert_reply,
    auth_plain,
    make_message,
    send,
    session,
    submit,
    tls_context,
    token,
    wait_until,
    peer_cert_der,
    pem_der,
)

ALICE = "alice@example.org"
BOB = "bob@example.org"
CAROL = "carol@other.org"
OTHER_IP = "127.0.0.2"  # a second client address on loopback


def client(gw, source=None, tls="starttls", user=None, port=None):
    """An smtplib client after EHLO (and STARTTLS, AUTH as asked), from
    source (an address on loopback) if given."""
    s = smtplib.SMTP(HOST, port or gw.submission_port, timeout=WAIT_TIMEOUT,
                     source_address=(source, 0) if source else None)
    s.ehlo("client.test")
    if tls == "starttls":
        s.starttls(context=tls_context())
        s.ehlo("client.test")
    if user is not None:
        code, text = auth_plain(s, user, PASSWORDS[user])
        assert code == 235, "AUTH as %s: %d %s" % (user, code, text)
    return s


def close(s):
    with contextlib.suppress(Exception):
        s.quit()
    with contextlib.suppress(Exception):
        s.close()


def raw_data(s, payload):
    """MAIL, RCPT, DATA on an authenticated client, then payload as it is
    (it must end the data itself). Returns the reply (code, text)."""
    code, text = s.mail(ALICE)
    assert code == 250, text
    code, text = s.rcpt("bob@example.net")
    assert code == 250, text
    code, text = s.docmd("DATA")
    assert code == 354, text
    s.send(payload)
    code, text = s.getreply()
    return code, text.decode(errors="replace")


def message_head(tok, extra=b""):
    return (b"From: alice@example.org\r\nTo: bob@example.net\r\n"
            b"Subject: smuggle " + tok.encode() + b"\r\n" + extra + b"\r\n")


# --- end-of-data smuggling ------------------------------------------------------

# Each payload tries to end the data early and start a second message to
# victim@example.net. "<CRLF>.<CRLF>" closes every one of them.
SMUGGLE_KEPT = {
    "lf-dot-lf": b"one\n.\nMAIL FROM:<alice@example.org>\r\n",
    "crlf-dot-lf": b"one\r\n.\nMAIL FROM:<alice@example.org>\r\n",
    "lf-dot-crlf": b"one\n.\r\nMAIL FROM:<alice@example.org>\r\n",
    "crlf-lf-dot-lf": b"one\r\n\n.\nMAIL FROM:<alice@example.org>\r\n",
}
SMUGGLE_REFUSED = {
    "cr-dot-cr": b"one\r.\rMAIL FROM:<alice@example.org>\r\n",
    "dot-cr": b"one\r\n.\rMAIL FROM:<alice@example.org>\r\n",
    "crlf-dot-cr-crlf": b"one\r\n.\r\r\nMAIL FROM:<alice@example.org>\r\n",
    "bare-cr-line": b"one\rtwo\r\n",
    "nul": b"one\x00two\r\n",
}
SMUGGLED_TAIL = (b"RCPT TO:<victim@example.net>\r\nDATA\r\n"
                 b"From: alice@example.org\r\nSubject: second %s\r\n\r\n"
                 b"smuggled\r\n")


@pytest.mark.parametrize("name", sorted(SMUGGLE_KEPT))
def test_smuggling_variant_kept_as_data(gateway, name):
    tok, tok2 = token(), token()
    payload = (message_head(tok) + SMUGGLE_KEPT[name] +
               SMUGGLED_TAIL % tok2.encode() + b".\r\n")
    s = client(gateway, user=ALICE)
    try:
        reply = raw_data(s, payload)
        assert_reply(reply, 250, "2.0.0")
        # The connection is still in step: the next command is answered.
        assert s.noop()[0] == 250
    finally:
        close(s)
    got = gateway.sink.wait_for(tok)
    assert len(got) == 1
    # The would-be second message is part of the first, and the lone dot
    # line reached the next hop dot-stuffed, as data.
    assert b"Subject: second " + tok2.encode() in got[0].body
    assert got[0].rcpt_to == ["bob@example.net"]
    # No second message: tok2 is in that one body only, never a subject.
    assert [m.path for m in gateway.sink.find(tok2)] == [got[0].path]
    assert not [m for m in gateway.sink.messages()
                if any(tok2 in v for v in m.headers("Subject"))
                or "victim@example.net" in m.rcpt_to]


@pytest.mark.parametrize("name", sorted(SMUGGLE_REFUSED))
def test_bare_cr_and_nul_in_data_refused(gateway, name):
    tok, tok2 = token(), token()
    payload = (message_head(tok) + SMUGGLE_REFUSED[name] +
               SMUGGLED_TAIL % tok2.encode() + b".\r\n")
    s = client(gateway, user=ALICE)
    try:
        reply = raw_data(s, payload)
        assert_reply(reply, 554, "5.6.0")
        assert s.noop()[0] == 250
    finally:
        close(s)
    assert_not_delivered(gateway, tok)
    assert_not_delivered(gateway, tok2)


def test_nul_and_bare_cr_in_commands(gateway):
    s = client(gateway, user=ALICE)
    try:
        for line in (b"NOOP\x00\r\n", b"NOOP a\rb\r\n",
                     b"MAIL FROM:<alice@example.org>\rRCPT TO:<x@y.example>\r\n"):
            s.send(line)
            code, text = s.getreply()
            assert (code, text) == (500, b"5.5.2 Bad character in command"), \
                (line, code, text)
        assert s.noop()[0] == 250
        # Nothing of the refused MAIL was kept.
        code, text = s.rcpt("x@y.example")
        assert code == 503, text
    finally:
        close(s)


# --- CR/LF injection into header fields ------------------------------------------


def test_ehlo_cannot_inject_into_received(gateway):
    tok = token()
    s = smtplib.SMTP(HOST, gateway.submission_port, timeout=WAIT_TIMEOUT)
    try:
        s.ehlo("client.test")
        s.starttls(context=tls_context())
        # A second line after the greeting is just another (unknown)
        # command; characters that would close the comment are replaced.
        s.send(b"EHLO evil(x)\\y.example\r\nX-Injected: yes\r\n")
        code, _ = s.getreply()
        assert code == 250
        code, _ = s.getreply()
        assert code == 500
        code, text = auth_plain(s, ALICE, PASSWORDS[ALICE])
        assert code == 235, text
        msg, tok = make_message(tok=tok)
        assert_queued(send(s, ALICE, ["bob@example.net"], msg))
    finally:
        close(s)
    got = gateway.sink.wait_for(tok)[0]
    received = [r for r in got.headers("Received") if "subgate" in r]
    assert len(received) == 1, got.headers("Received")
    assert received[0].startswith("from evil?x??y.example ([127.0.0.1])"), \
        received
    assert got.headers("X-Injected") == []
    assert b"X-Injected" not in got.raw


# --- relay-test address forms ------------------------------------------------------


@pytest.mark.parametrize("rcpt,want", [
    ("user%other.example@example.net", "user%other.example@example.net"),
    ('"user@other.example"@example.net', '"user@other.example"@example.net'),
    ("other.example!user@example.net", "other.example!user@example.net"),
    ("@relay.example:user@example.net", "user@example.net"),
    ("@a.example,@b.example:user@example.net", "user@example.net"),
], ids=["percent-hack", "quoted-at", "bang-path", "source-route",
        "source-route-list"])
def test_relay_forms_are_plain_recipients(gateway, rcpt, want):
    """Every form is one recipient address, relayed as it is (a source
    route is dropped, RFC 5321 C); nothing reroutes through the domain
    the local part names."""
    msg, tok = make_message()
    s = client(gateway, user=ALICE)
    try:
        assert s.mail(ALICE)[0] == 250
        s.send(("RCPT TO:<%s>\r\n" % rcpt).encode())
        code, text = s.getreply()
        assert code == 250, (code, text)
        code, text = s.data(msg)
        assert code == 250, (code, text)
    finally:
        close(s)
    got = gateway.sink.wait_for(tok)[0]
    assert got.rcpt_to == [want]


@pytest.mark.parametrize("rcpt", [
    "user@other.example@example.net", "user@", "@example.net",
    "<user@example.net", "user@[300.1.1.1]",
], ids=["two-ats", "no-domain", "no-local", "unclosed", "bad-literal"])
def test_malformed_recipients_refused(gateway, rcpt):
    s = client(gateway, user=ALICE)
    try:
        assert s.mail(ALICE)[0] == 250
        s.send(("RCPT TO:<%s>\r\n" % rcpt).encode()
               if not rcpt.startswith("<") else
               ("RCPT TO:%s\r\n" % rcpt).encode())
        code, text = s.getreply()
        assert code == 501, (rcpt, code, text)
    finally:
        close(s)


@pytest.mark.parametrize("sender", [
    "alice%evil.example@example.org", '"alice"@example.org',
    "evil.example!alice@example.org", "alice@example.org.evil.example",
])
def test_sender_forms_not_owned(gateway, sender):
    s = client(gateway, user=ALICE)
    try:
        s.send(("MAIL FROM:<%s>\r\n" % sender).encode())
        code, text = s.getreply()
        assert_reply((code, text.decode()), 553, "5.7.1")
    finally:
        close(s)


def test_sender_source_route_dropped(gateway):
    msg, tok = make_message()
    s = client(gateway, user=ALICE)
    try:
        s.send(b"MAIL FROM:<@evil.example:alice@example.org>\r\n")
        assert s.getreply()[0] == 250
        assert s.rcpt("bob@example.net")[0] == 250
        assert s.data(msg)[0] == 250
    finally:
        close(s)
    assert gateway.sink.wait_for(tok)[0].mail_from == ALICE


# --- header identity ---------------------------------------------------------------


SPOOFS = {
    "sender-other-member": ["Sender: bob@example.org"],
    "sender-other-tenant": ["Sender: Carol <carol@other.org>"],
    "resent-from": ["Resent-From: bob@example.org"],
    "resent-sender": ["Resent-Sender: someone@foreign.test"],
    "sender-list": ["Sender: alice@example.org, bob@example.org"],
    "sender-display-smuggle": ['Sender: "bob@example.org" <alice@example.org>'],
}
FROM_SPOOFS = {
    "encoded-word-q": "=?utf-8?q?bob=40example=2Eorg?= <alice@example.org>",
    "encoded-word-b": "=?utf-8?b?Ym9iQGV4YW1wbGUub3Jn?= <alice@example.org>",
    "quoted-display": '"bob@example.org" <alice@example.org>',
    "comment": "alice@example.org (bob@example.org)",
    "folded-other": "Alice\r\n <bob@example.org>",
    "fullwidth-at": "=?utf-8?q?bob=EF=BC=A0example.org?= <alice@example.org>",
}


@pytest.mark.parametrize("name", sorted(SPOOFS))
def test_sender_fields_of_others_refused(gateway, name):
    msg, tok = make_message(extra=SPOOFS[name])
    res = submit(gateway, ALICE, msg)
    assert_reply(res["data"], 550, "5.7.1")
    assert res["qid"] is None
    assert_not_delivered(gateway, tok)


@pytest.mark.parametrize("name", sorted(FROM_SPOOFS))
def test_from_smuggling_refused(gateway, name):
    msg, tok = make_message(from_hdr=FROM_SPOOFS[name])
    res = submit(gateway, ALICE, msg)
    assert_reply(res["data"], 550, "5.7.1")
    assert_not_delivered(gateway, tok)


def test_own_sender_fields_accepted_and_signed(gateway, dns_records):
    extra = ["Sender: Alice <alice.smith@example.com>",
             "Resent-From: alice@example.org"]
    msg, tok = make_message(
        from_hdr="Alice\r\n <alice@example.org> (at work)", extra=extra)
    assert_queued(submit(gateway, ALICE, msg))
    got = gateway.sink.wait_for(tok)[0]
    assert got.headers("Sender") == ["Alice <alice.smith@example.com>"]
    results = helpers.dkimverify.verify_message(got.raw, dns_records)
    assert results and all(ok for _, _, ok in results), results
    assert {tags["d"] for _, tags, _ in results} == {"example.org"}


def test_foreign_sender_fields_removed_by_policy(make_gateway, dns_records):
    gw = make_gateway({"remove_foreign_sender": "yes"})
    msg, tok = make_message(extra=["Sender: bob@example.org",
                                   "Resent-Sender: Alice <alice@example.org>",
                                   "Resent-From: carol@other.org"])
    qid = assert_queued(submit(gw, ALICE, msg))
    got = gw.sink.wait_for(tok)[0]
    assert got.headers("Sender") == []
    assert got.headers("Resent-From") == []
    assert got.headers("Resent-Sender") == ["Alice <alice@example.org>"]
    gw.wait_log(r"header removed field=Sender address=<bob@example\.org>",
                qid=qid)
    results = helpers.dkimverify.verify_message(got.raw, dns_records)
    assert results and all(ok for _, _, ok in results), results


# --- brute-force AUTH --------------------------------------------------------------


def auth_once(gw, user, password, source=None):
    """One AUTH PLAIN on a fresh connection: (code, text), or (421, ...)
    when the connection is refused at the greeting."""
    try:
        s = smtplib.SMTP(HOST, gw.submission_port, timeout=WAIT_TIMEOUT,
                         source_address=(source, 0) if source else None)
    except smtplib.SMTPConnectError as e:
        return e.smtp_code, e.smtp_error.decode(errors="replace")
    try:
        s.ehlo("client.test")
        s.starttls(context=tls_context())
        s.ehlo("client.test")
        return auth_plain(s, user, password)
    finally:
        close(s)


@pytest.fixture
def two_address_gateway(make_gateway):
    """A gateway listening on 127.0.0.1 and 127.0.0.2 (same port)."""
    def make(settings):
        port = helpers.free_port()
        settings = dict(settings)
        settings["submission_listen"] = "%s:%d %s:%d" % (HOST, port, OTHER_IP,
                                                         port)
        gw = make_gateway(settings, start=False)
        gw.submission_port = port
        gw.settings.update(settings)
        helpers.write_config(gw.config, gw.settings)
        return gw.start()
    return make


def test_brute_force_blocks_pair_then_address(two_address_gateway):
    gw = two_address_gateway({"auth_fail_limit_account": "2",
                              "auth_fail_limit_ip": "4",
                              "auth_block_time": "10m",
                              "auth_fail_delay": "0s"})
    for _ in range(2):
        code, text = auth_once(gw, ALICE, "wrong-guess")
        assert_reply((code, text), 535, "5.7.8")
    # The pair is blocked: even the right password is not checked.
    code, text = auth_once(gw, ALICE, PASSWORDS[ALICE])
    assert_reply((code, text), 454, "4.7.0")
    gw.wait_log(r"auth client=\[127\.0\.0\.1\] member=alice@example\.org "
                r"result=blocked")
    # Alice from another address is not locked out, nor bob from this one.
    assert auth_once(gw, ALICE, PASSWORDS[ALICE], source=OTHER_IP)[0] == 235
    assert auth_once(gw, BOB, PASSWORDS[BOB])[0] == 235
    # Two more failures (other logins) reach the address's limit.
    assert auth_once(gw, "nobody@example.org", "x")[0] == 535
    assert auth_once(gw, "root@example.org", "x")[0] == 535
    gw.wait_log(r"auth block client=\[127\.0\.0\.1\]")
    code, text = auth_once(gw, BOB, PASSWORDS[BOB])
    assert_reply((code, text), 421, "4.7.0")
    # The other address still gets in.
    assert auth_once(gw, BOB, PASSWORDS[BOB], source=OTHER_IP)[0] == 235


def test_failed_auth_delay_grows(make_gateway):
    """auth_fail_delay doubles per failure from the address; shown through
    the log, not the clock."""
    gw = make_gateway({"auth_fail_delay": "100ms",
                       "auth_fail_limit_account": "0",
                       "auth_fail_limit_ip": "0"})
    for _ in range(3):
        assert auth_once(gw, ALICE, "wrong")[0] == 535
    fails = [l for l in gw.log_text().splitlines()
             if "result=fail" in l and "alice@example.org" in l]
    assert len(fails) == 3, fails


# --- connection floods --------------------------------------------------------------


def greet(port, source=None, implicit_tls=False):
    """Connects and reads the first reply line: the line, or "" when the
    server closed the connection without one."""
    sock = socket.create_connection((HOST, port), timeout=WAIT_TIMEOUT,
                                    source_address=(source, 0) if source
                                    else None)
    if implicit_tls:
        try:
            sock = tls_context().wrap_socket(sock)
        except (ssl.SSLError, OSError):
            sock.close()
            return "", None
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = sock.recv(512)
            if not chunk:
                break
            data += chunk
    except (ssl.SSLError, ConnectionResetError):
        pass
    return data.decode(errors="replace").split("\r\n")[0], sock


def test_connections_per_address(two_address_gateway):
    gw = two_address_gateway({"max_conn_per_ip": "3"})
    held = []

    def hold_three():
        # The start-up check's own connection may still be counted for a
        # moment: retry until three are held.
        line, sock = greet(gw.submission_port)
        if line.startswith("220 "):
            held.append(sock)
        else:
            sock.close()
        return len(held) == 3

    try:
        wait_until(hold_three, "three connections held")
        line, sock = greet(gw.submission_port)
        assert line.startswith("421 4.7.0 Too many connections"), line
        sock.close()
        # Implicit TLS: closed without a reply (the client expects TLS).
        line, sock = greet(gw.submissions_port, implicit_tls=True)
        assert line == "", line
        if sock:
            sock.close()
        # Another address is counted apart.
        line, sock = greet(gw.submission_port, source=OTHER_IP)
        assert line.startswith("220 "), line
        held.append(sock)
        # One closed: room for one more.
        held.pop(0).close()

        def one_more():
            line, sock = greet(gw.submission_port)
            held.append(sock)
            return line.startswith("220 ")
        wait_until(one_more, "a fourth connection after one closed")
    finally:
        for sock in held:
            with contextlib.suppress(OSError):
                sock.close()
    gw.wait_log(r'reject code=421 reason="connections per address" '
                r'client=\[127\.0\.0\.1\]')


def test_connection_rate_per_address(two_address_gateway):
    gw = two_address_gateway({"conn_rate_per_ip": "5"})
    accepted, line = 0, ""
    # The start-up check used one or two of the five already.
    for _ in range(10):
        line, sock = greet(gw.submission_port)
        if not line.startswith("220 "):
            sock.close()
            break
        accepted += 1
        sock.sendall(b"QUIT\r\n")
        sock.close()
    assert line.startswith("421 4.7.0"), line
    assert 3 <= accepted <= 5, accepted
    line, sock = greet(gw.submission_port, source=OTHER_IP)
    assert line.startswith("220 "), line
    sock.close()
    gw.wait_log(r'reason="connection rate per address"')


# --- slow clients -------------------------------------------------------------------


def read_until_closed(sock, deadline_s=None):
    """Everything the server sends until it closes the connection."""
    data = b""
    sock.settimeout(deadline_s or WAIT_TIMEOUT)
    with contextlib.suppress(ConnectionResetError, socket.timeout):
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return data


def dribble(sock, chunk):
    """Sends chunk every 200 ms until the server answers and closes (or
    WAIT_TIMEOUT passes); returns what the server sent."""
    got = b""
    deadline = time.monotonic() + WAIT_TIMEOUT
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            data = sock.recv(512)
            if not data:
                break
            got += data
            continue
        except (socket.timeout, ssl.SSLWantReadError):
            pass
        except (ConnectionResetError, ssl.SSLError):
            break
        try:
            sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            break
    return got + read_until_closed(sock, 5)


def test_command_timeout_not_extended_by_dribbling(make_gateway):
    gw = make_gateway({"command_timeout": "2s"})
    sock = socket.create_connection((HOST, gw.submission_port),
                                    timeout=WAIT_TIMEOUT)
    try:
        assert sock.recv(512).startswith(b"220")
        # One octet of a never-ending line every 200 ms: the line never
        # completes, so the timer is never restarted.
        got = dribble(sock, b"N")
    finally:
        sock.close()
    assert b"421 4.4.2 Timeout" in got, got
    gw.wait_log(r"timeout client=\[127\.0\.0\.1\]:\d+ state=command")


def test_data_timeout(make_gateway):
    gw = make_gateway({"data_timeout": "2s"})
    s = client(gw, user=ALICE)
    try:
        assert s.mail(ALICE)[0] == 250
        assert s.rcpt("bob@example.net")[0] == 250
        assert s.docmd("DATA")[0] == 354
        s.send(b"Subject: slow\r\n")
        # Then nothing: the server gives up and says so.
        code, text = s.getreply()
        assert_reply((code, text.decode()), 421, "4.4.2")
    finally:
        close(s)
    gw.wait_log(r"timeout client=\S+ state=data")


def test_min_data_rate(make_gateway):
    gw = make_gateway({"min_data_rate": "1K"})
    s = client(gw, user=ALICE)
    reply = None
    try:
        assert s.mail(ALICE)[0] == 250
        assert s.rcpt("bob@example.net")[0] == 250
        assert s.docmd("DATA")[0] == 354
        # 20 octets every 200 ms is 100 octets a second, under 1K.
        reply = dribble(s.sock, b"X-Slow: 0123456789\r\n").decode(
            errors="replace")
    finally:
        close(s)
    assert "421 4.4.2 Data rate too low" in reply, reply
    gw.wait_log(r"data rate too low client=")


# --- outbound budgets ---------------------------------------------------------------


def test_member_and_tenant_message_budgets(make_gateway):
    gw = make_gateway({"member_msg_per_hour": "2",
                       "tenant_msg_per_hour": "3"})
    for _ in range(2):
        msg, tok = make_message()
        assert_queued(submit(gw, ALICE, msg))
    msg, tok = make_message()
    res = submit(gw, ALICE, msg)
    assert_reply(res["mail"], 451, "4.7.1")
    # Bob's own budget is whole, the tenant has one message left.
    msg, tok = make_message(from_hdr=BOB)
    assert_queued(submit(gw, BOB, msg))
    msg, tok = make_message(from_hdr=BOB)
    res = submit(gw, BOB, msg)
    assert_reply(res["mail"], 451, "4.7.1")
    gw.wait_log(r'reject code=451 reason="tenant messages per hour" '
                r'member=bob@example\.org tenant=example\.org')
    # Another tenant is not affected.
    msg, tok = make_message(from_hdr=CAROL)
    assert_queued(submit(gw, CAROL, msg))


def test_member_recipient_budget(make_gateway):
    gw = make_gateway({"member_rcpt_per_day": "3"})
    msg, tok = make_message()
    with session(gw, ALICE) as s:
        res = send(s, ALICE, ["r%d@example.net" % i for i in range(4)], msg)
        assert [c for c, _ in res["rcpt"]] == [250, 250, 250, 451]
        assert_reply(res["rcpt"][3], 451, "4.7.1")
        assert_queued(res)
        msg2, tok2 = make_message()
        res = send(s, ALICE, ["more@example.net"], msg2)
        assert_reply(res["rcpt"][0], 451, "4.7.1")
        assert res["data"] is None
    got = gw.sink.wait_for(tok)[0]
    assert sorted(got.rcpt_to) == ["r0@example.net", "r1@example.net",
                                   "r2@example.net"]


# --- TLS ----------------------------------------------------------------------------


@pytest.mark.parametrize("ciphers,ok", [
    ("ECDHE-RSA-AES128-GCM-SHA256", True),
    ("ECDHE-RSA-CHACHA20-POLY1305", True),
    ("ECDHE-RSA-AES128-SHA", False),
    ("AES128-GCM-SHA256", False),
    ("ECDHE-RSA-AES256-SHA384", False),
])
def test_tls12_cipher_policy(gateway, ciphers, ok):
    ctx = tls_context()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(ciphers + ":@SECLEVEL=0")
    sock = socket.create_connection((HOST, gateway.submissions_port),
                                    timeout=WAIT_TIMEOUT)
    try:
        if ok:
            tls = ctx.wrap_socket(sock)
            assert tls.cipher()[0] == ciphers
            assert tls.recv(512).startswith(b"220")
            tls.close()
        else:
            with pytest.raises((ssl.SSLError, ConnectionResetError)):
                ctx.wrap_socket(sock).recv(512)
    finally:
        sock.close()


def test_tls_below_1_2_refused(gateway):
    ctx = tls_context()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    except (ValueError, ssl.SSLError):
        pytest.skip("this OpenSSL cannot offer TLS 1.1")
    sock = socket.create_connection((HOST, gateway.submissions_port),
                                    timeout=WAIT_TIMEOUT)
    try:
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            ctx.wrap_socket(sock).recv(512)
    finally:
        sock.close()
    # The server saw the offer and refused it (not a client-side failure).
    gateway.wait_log(r"tls error client=\S+ state=handshake: .*"
                     r"unsupported protocol")


def test_sighup_reloads_certificate_keeping_sessions(make_gateway, tmp_path):
    certdir = tmp_path / "tls"
    certdir.mkdir()
    cert, key = helpers.make_cert(certdir)
    gw = make_gateway({"tls_cert": str(cert), "tls_key": str(key)})
    assert peer_cert_der(gw.submissions_port) == pem_der(cert)
    # A session that started with the old certificate.
    old = client(gw, user=ALICE)
    try:
        newdir = tmp_path / "tls-new"
        newdir.mkdir()
        cert2, key2 = helpers.make_cert(newdir)
        os.replace(key2, key)
        os.replace(cert2, cert)
        os.kill(gw.pid, signal.SIGHUP)
        gw.wait_log(r"smtpd: tls certificate reloaded")
        assert peer_cert_der(gw.submissions_port) == pem_der(cert)
        # The old session goes on, on its old context.
        msg, tok = make_message()
        assert_queued(send(old, ALICE, ["bob@example.net"], msg))
        gw.sink.wait_for(tok)
    finally:
        close(old)
    # A broken file is refused and the loaded certificate stays.
    current = pem_der(cert)
    key.write_text("not a key\n")
    os.kill(gw.pid, signal.SIGHUP)
    gw.wait_log(r"smtpd: tls reload failed, keeping the old certificate")
    assert peer_cert_der(gw.submissions_port) == current


# --- privilege separation (root only) ----------------------------------------------

SMTPD_USER = "sgtest-smtpd"
SIGNER_USER = "sgtest-signer"


def proc_ids(pid):
    """(uids, gids, groups) of a process from /proc/PID/status."""
    text = Path("/proc/%d/status" % pid).read_text()

    def field(name):
        return [int(x) for x in
                re.search(r"^%s:[ \t]*(.*)$" % name, text, re.M).group(1).split()]
    return field("Uid"), field("Gid"), field("Groups")


def can_open_as(ids, path):
    """Opens path for reading in a child process that has exactly the
    credentials ids (from proc_ids): True if that worked."""
    uids, gids, groups = ids
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups(groups)
            os.setresgid(gids[0], gids[0], gids[0])
            os.setresuid(uids[0], uids[0], uids[0])
            with open(path, "rb"):
                os._exit(0)
        except PermissionError:
            os._exit(1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    assert code in (0, 1), "child failed unexpectedly (%d)" % code
    return code == 0


@pytest.fixture
def system_users():
    if os.geteuid() != 0:
        pytest.skip("needs root to create users and drop privileges")
    if shutil.which("useradd") is None:
        pytest.skip("no useradd")
    with helpers.service_users(SMTPD_USER, SIGNER_USER) as users:
        yield users


def test_privilege_separation(system_users, gateway_template, dns_records):
    smtpd_pw, signer_pw = system_users[SMTPD_USER], system_users[SIGNER_USER]
    # Outside pytest's 0700 temporary tree, so that the users can reach it.
    root = Path(tempfile.mkdtemp(prefix="sg-privsep-", dir="/tmp"))
    os.chmod(root, 0o755)
    gw = None
    try:
        tls = root / "tls"
        tls.mkdir()
        cert, key = helpers.make_cert(tls)
        gw = Gateway(root / "gw", gateway_template,
                     {"user": SMTPD_USER, "signer_user": SIGNER_USER,
                      "tls_cert": str(cert), "tls_key": str(key)})
        os.chmod(gw.root, 0o755)
        # The layout docs/security.md describes: the workers' group may
        # use the state directory and the database; only the signer user
        # may enter key_dir; the TLS key belongs to the SMTP user.
        helpers.lay_out_state(gw.state, smtpd_pw, signer_pw)
        os.chown(key, smtpd_pw.pw_uid, smtpd_pw.pw_gid)
        gw.start()

        signer = gw.signer_pid()
        assert signer is not None
        workers = [p for p in gw.children() if p != signer]
        assert len(workers) >= 2, workers  # smtpd, qmgr (and any other)
        for pid in workers:
            uids, gids, _ = proc_ids(pid)
            assert set(uids) == {smtpd_pw.pw_uid}, (pid, uids)
            assert set(gids) == {smtpd_pw.pw_gid}, (pid, gids)
        uids, gids, _ = proc_ids(signer)
        assert set(uids) == {signer_pw.pw_uid}, uids
        # The master keeps root only to bind, supervise and stop.
        assert proc_ids(gw.pid)[0][0] == 0

        key_files = sorted((gw.state / "keys").rglob("*.pem"))
        assert key_files
        for pid in workers:
            ids = proc_ids(pid)
            for kf in key_files:
                assert not can_open_as(ids, kf), \
                    "worker %d could open %s" % (pid, kf)
        # The signer's credentials do open them (the check is real).
        assert can_open_as(proc_ids(signer), key_files[0])
        res = subprocess.run(["runuser", "-u", SMTPD_USER, "--", "cat",
                              str(key_files[0])], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        assert res.returncode != 0 and b"Permission denied" in res.stderr

        # Mail still gets signed and relayed.
        msg, tok = make_message()
        assert_queued(submit(gw, ALICE, msg))
        got = gw.sink.wait_for(tok)[0]
        results = helpers.dkimverify.verify_message(got.raw, dns_records)
        assert len(results) == 2 and all(ok for _, _, ok in results), results
    finally:
        if gw is not None:
            gw.close()
        shutil.rmtree(root, ignore_errors=True)
