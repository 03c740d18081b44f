"""Delivery status notifications (RFC 3464) against a running, provisioned
gateway: a permanent refusal, an expiry and a delay warning each give the
member one DSN from the null sender, From: MAILER-DAEMON@<the sender's
domain>, DKIM-signed with that domain's keys; a message from the null
sender never gets one (no loops); a DSN that cannot be signed when it is
made waits in the queue and is signed before it leaves.

Some messages are written straight into the gateway's queue (queue_rig)
to set their age; the others are submitted over SMTP."""

import email
import email.policy
import re
import time

import pytest

import dkimverify
import helpers
from helpers import (
    assert_queued,
    make_message,
    submit,
    token,
    wait_until,
)
from queue_rig import body_with, enqueue

ALICE = "alice@example.org"


def dsns(gw, to=ALICE, tok=None):
    """DSNs at the sink for `to` (and holding tok, if given)."""
    out = []
    for m in gw.sink.messages():
        if m.mail_from != "" or m.rcpt_to != [to]:
            continue
        if tok is not None and tok.encode() not in m.raw:
            continue
        out.append(m)
    return out


def wait_dsns(gw, tok, count=1, to=ALICE):
    return wait_until(
        lambda: (lambda ms: ms if len(ms) >= count else None)(
            dsns(gw, to, tok)),
        "%d DSN(s) about %s at the sink" % (count, tok))


def parse_report(raw):
    """(message, [text part, status part, headers part], per-message
    fields, [per-recipient fields])."""
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    assert msg.get_content_type() == "multipart/report", msg.get_content_type()
    parts = msg.get_payload()
    assert len(parts) == 3, [p.get_content_type() for p in parts]
    assert parts[0].get_content_type() == "text/plain"
    assert parts[1].get_content_type() == "message/delivery-status"
    assert parts[2].get_content_type() == "text/rfc822-headers"
    blocks = parts[1].get_payload()
    return msg, parts, blocks[0], blocks[1:]


def assert_signed_by(raw, records, domain):
    results = dkimverify.verify_message(raw, records)
    assert results and all(ok for _, _, ok in results), results
    tags = dkimverify.signature_tags(raw)
    assert {t["d"] for t in tags} == {domain}, tags


def check_lines(raw):
    for line in raw.split(b"\r\n"):
        assert len(line) <= 998, line[:80]
        assert b"\n" not in line and b"\r" not in line


def qid_of_notification(gw, qid, kind="non-delivery"):
    line = gw.wait_log(r"sender %s notification: [0-9A-Z]{12}$" % kind, qid)
    return line.rsplit(" ", 1)[1]


def test_permanent_failure_returns_one_dsn(make_gateway):
    gw = make_gateway()
    msg, tok = make_message(subject="bounce me %s" % token())
    bad1, bad2 = "nobody-%s@example.net" % tok, "gone-%s@example.net" % tok
    good = "ok-%s@example.net" % tok
    gw.sink.set_rcpt_replies({bad1: "550 5.1.1 no such user",
                              bad2: "553 5.1.3 bad mailbox"})
    qid = assert_queued(submit(gw, ALICE, msg, rcpts=(bad1, good, bad2)))
    dsn = wait_dsns(gw, tok)[0]
    new = qid_of_notification(gw, qid)
    gw.wait_log(r"removed$", qid)
    gw.wait_log(r"status=sent", new)
    # The good recipient got the message, and only once.
    assert [m.rcpt_to for m in gw.sink.find(tok) if m.mail_from] == [[good]]

    check_lines(dsn.raw)
    assert_signed_by(dsn.raw, gw.records, "example.org")
    report, parts, fields, rcpts = parse_report(dsn.raw)
    assert report["From"] == \
        "Mail Delivery System <MAILER-DAEMON@example.org>"
    assert report["To"] == "<%s>" % ALICE
    assert report["Auto-Submitted"] == "auto-replied"
    assert report["Subject"] == "Undelivered Mail Returned to Sender"
    assert report["Message-ID"] == "<%s.dsn@gw.test>" % new
    assert fields["Reporting-MTA"] == "dns; gw.test"
    assert fields["X-Subgate-Queue-ID"] == qid
    got = {r["Final-Recipient"]: r for r in rcpts}
    assert sorted(got) == sorted(["rfc822; " + bad1, "rfc822; " + bad2])
    r1 = got["rfc822; " + bad1]
    assert r1["Action"] == "failed" and r1["Status"] == "5.1.1", r1.items()
    assert r1["Remote-MTA"] == "dns; 127.0.0.1"
    assert r1["Diagnostic-Code"] == "smtp; 550 5.1.1 no such user"
    assert got["rfc822; " + bad2]["Status"] == "5.1.3"
    # The original's header section comes back, its body does not.
    headers = parts[2].get_payload()
    assert "Message-ID: <%s@client.test>" % tok in headers
    assert "DKIM-Signature:" in headers
    assert "this is test message" not in dsn.raw.decode()
    assert bad1 in parts[0].get_payload()


def test_expiry_returns_dsn(make_gateway):
    gw = make_gateway({"max_queue_lifetime": "1h"})
    tok = token()
    rcpt = "later-%s@example.net" % tok
    gw.sink.set_rcpt_replies({rcpt: "451 4.3.0 try again later"})
    # Queued two hours ago.
    qid = enqueue(gw.queue_dir, [rcpt], body_with(tok),
                  time=int(time.time()) - 7200, attempts=20)
    dsn = wait_dsns(gw, tok)[0]
    line = gw.wait_log(r"to=<%s> .*status=expired" % re.escape(rcpt), qid)
    assert "(451 4.3.0 try again later)" in line, line
    assert_signed_by(dsn.raw, gw.records, "example.org")
    _, _, _, rcpts = parse_report(dsn.raw)
    assert len(rcpts) == 1
    assert rcpts[0]["Action"] == "failed"
    assert rcpts[0]["Status"] == "4.3.0"
    assert rcpts[0]["Diagnostic-Code"] == "smtp; 451 4.3.0 try again later"
    assert [m.path for m in gw.sink.find(tok)] == [dsn.path]


def test_delay_warning_once(make_gateway):
    gw = make_gateway({"delay_warning": "1s"})
    tok = token()
    rcpt = "later-%s@example.net" % tok
    gw.sink.set_rcpt_replies({rcpt: "452 4.2.2 mailbox full"})
    qid = enqueue(gw.queue_dir, [rcpt], body_with(tok),
                  time=int(time.time()) - 5)
    dsn = wait_dsns(gw, tok)[0]
    new = qid_of_notification(gw, qid, "delay")
    report, _, _, rcpts = parse_report(dsn.raw)
    assert report["Subject"] == "Delayed Mail (still being retried)"
    assert rcpts[0]["Action"] == "delayed"
    assert rcpts[0]["Status"] == "4.2.2"
    assert "Will-Retry-Until" in rcpts[0]
    assert_signed_by(dsn.raw, gw.records, "example.org")
    gw.wait_log(r"status=sent", new)
    # More attempts, no second warning.
    gw.wait_log(r"deferred nrcpt=1 attempts=4 ", qid)
    assert len(dsns(gw, ALICE, tok)) == 1
    gw.sink.set_rcpt_replies(None)
    gw.sink.wait_for(tok, count=2)
    gw.wait_log(r"removed$", qid)
    assert len(dsns(gw, ALICE, tok)) == 1


def test_null_sender_gets_no_dsn(make_gateway):
    gw = make_gateway()
    tok = token()
    rcpt = "nobody-%s@example.net" % tok
    gw.sink.set_rcpt_replies({rcpt: "550 5.1.1 no such user"})
    qid = enqueue(gw.queue_dir, [rcpt], body_with(tok), sender="")
    gw.wait_log(r"status=bounced", qid)
    gw.wait_log(r"removed$", qid)
    # A later message goes all the way; still no notification.
    msg, marker = make_message()
    assert_queued(submit(gw, ALICE, msg))
    gw.sink.wait_for(marker)
    assert not any("sender non-delivery notification" in l
                   for l in gw.lines_for(qid))
    assert [m for m in gw.sink.messages() if m.mail_from == ""] == []


def test_undeliverable_dsn_does_not_loop(make_gateway):
    # The DSN itself is refused: it is dropped, with no DSN about it.
    gw = make_gateway()
    tok = token()
    rcpt = "nobody-%s@example.net" % tok
    gw.sink.set_rcpt_replies({rcpt: "550 5.1.1 no such user",
                              ALICE: "550 5.2.1 mailbox disabled"})
    qid = enqueue(gw.queue_dir, [rcpt], body_with(tok))
    new = qid_of_notification(gw, qid)
    line = gw.wait_log(r"to=<%s> .*status=bounced" % re.escape(ALICE), new)
    assert "dsn=5.2.1" in line, line
    gw.wait_log(r"removed$", new)
    assert not any("sender non-delivery notification" in l
                   for l in gw.lines_for(new))
    assert gw.sink.find(tok) == []
    assert gw.queue_files() == []


def test_dsn_signed_when_the_key_arrives(make_gateway):
    # nokey.org has no active key: the DSN is queued unsigned with `sign`
    # in its envelope and leaves only once the signer can sign it.
    gw = make_gateway()
    tok = token()
    frank = "frank@nokey.org"
    rcpt = "nobody-%s@example.net" % tok
    gw.sink.set_rcpt_replies({rcpt: "550 5.1.1 no such user"})
    qid = enqueue(gw.queue_dir, [rcpt], body_with(tok), sender=frank,
                  member=frank)
    new = qid_of_notification(gw, qid)
    gw.wait_log(r"sign failed .*signing before delivery", new)
    line = gw.wait_log(r"to=<%s> .*status=deferred" % re.escape(frank), new)
    assert "not signed yet" in line, line
    env = gw.admin("queue", "show", new).stdout.decode()
    assert "\nsign: nokey.org\n" in env, env
    assert dsns(gw, frank, tok) == []
    gw.admin("key", "activate", "nokey.org", "--force")
    records = dkimverify.parse_records(
        gw.admin("dns", "records", "nokey.org").stdout.decode())
    gw.admin("queue", "flush", new)
    dsn = wait_dsns(gw, tok, to=frank)[0]
    assert_signed_by(dsn.raw, records, "nokey.org")
    report, _, _, _ = parse_report(dsn.raw)
    assert report["From"] == "Mail Delivery System <MAILER-DAEMON@nokey.org>"
    gw.wait_log(r"removed$", new)


@pytest.mark.parametrize("n", [1])
def test_dsn_from_alias_domain(make_gateway, n):
    # The member sends as an alias in another domain of the tenant: the
    # DSN comes from, and is signed for, that domain.
    gw = make_gateway()
    alias = helpers.ALIASES[ALICE][0]
    msg, tok = make_message(from_hdr=alias)
    rcpt = "nobody-%s@example.net" % tok
    gw.sink.set_rcpt_replies({rcpt: "550 5.1.1 no such user"})
    assert_queued(submit(gw, ALICE, msg, mail_from=alias, rcpts=(rcpt,)))
    dsn = wait_dsns(gw, tok, count=n, to=alias)[0]
    domain = alias.split("@")[1]
    assert_signed_by(dsn.raw, gw.records, domain)
