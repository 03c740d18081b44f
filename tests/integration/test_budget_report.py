"""Budget reports: when a member's or a tenant's outbound budget refuses a
member (451 4.7.1), subgated mails the tenant's administrator address
(`subgate tenant notify DOMAIN --admin ADDRESS`) one report, from the null
sender, DKIM-signed with the tenant domain's keys, and no other about the
same member (tenant) and budget within budget_report_interval. A tenant
without an administrator address gets only the log line.

Reports are written one after the other in the order they were found
due, each with a log line "QID: queued from=<> ... budget report for ID";
so once a later report's line is in the log, a report that an earlier
refusal would have made would be logged already. The tests use such a
later report as the barrier before they assert that one was not made.

The admin tool's side (set, show, clear, refuse a malformed address) is
tested here too."""

import email
import email.policy
import re

import dkimverify
from helpers import (
    assert_queued,
    assert_reply,
    make_message,
    send,
    session,
    submit,
    wait_until,
)

ALICE = "alice@example.org"
BOB = "bob@example.org"
CAROL = "carol@other.org"
ADMIN = "limits-admin@example.net"
OTHER_ADMIN = "boss@other.net"

REPORT_RE = (r"^\S+\[\d+\]: (?P<qid>[0-9A-Z]{12}): queued from=<> "
             r"to=<(?P<to>[^>]*)> size=\d+ nrcpt=1 budget report for "
             r"(?P<id>\S+) member=(?P<member>\S+) tenant=(?P<tenant>\S+) "
             r'budget="(?P<budget>[^"]+)"$')


def report_lines(gw, **want):
    """The report log lines, as match dicts, whose fields equal want."""
    out = []
    for line in gw.log_text().splitlines():
        m = re.match(REPORT_RE, line)
        if m and all(m.group(k) == v for k, v in want.items()):
            out.append(m.groupdict())
    return out


def wait_report_line(gw, **want):
    return wait_until(lambda: report_lines(gw, **want),
                      "a budget report log line with %r" % want)[0]


def refusal_id(gw, member, reason):
    """The id (session or queue id) of the last budget refusal of member
    for reason."""
    pat = re.compile(r'^\S+\[\d+\]: (\S+): reject code=451 reason="%s" '
                     r"member=%s " % (re.escape(reason), re.escape(member)))
    ids = [m.group(1) for m in map(pat.match, gw.log_text().splitlines())
           if m]
    assert ids, "no refusal of %s for %s in the log" % (member, reason)
    return ids[-1]


def reports_at_sink(gw, to):
    return [m for m in gw.sink.messages()
            if m.mail_from == "" and m.rcpt_to == [to]]


def wait_report(gw, qid, to=ADMIN):
    """The report with Message-ID <qid.limit@gw.test> at the sink."""
    needle = "<%s.limit@gw.test>" % qid
    return wait_until(
        lambda: [m for m in reports_at_sink(gw, to)
                 if m.headers("Message-ID") == [needle]],
        "report %s at the sink" % qid)[0]


def assert_signed_by(raw, records, domain):
    results = dkimverify.verify_message(raw, records)
    assert results and all(ok for _, _, ok in results), results
    assert {t["d"] for t in dkimverify.signature_tags(raw)} == {domain}


def send_ok(gw, user, n, rcpts=("bob@example.net",)):
    for _ in range(n):
        msg, _ = make_message(from_hdr=user)
        assert_queued(submit(gw, user, msg, rcpts=rcpts))


def refused_at_mail(gw, user):
    msg, _ = make_message(from_hdr=user)
    res = submit(gw, user, msg)
    assert_reply(res["mail"], 451, "4.7.1")
    assert res["data"] is None


def body_fields(msg):
    """'Key:   value' lines of the report's text, as a dict."""
    out = {}
    for line in msg.body.decode("ascii").split("\r\n"):
        m = re.match(r"^([A-Z][A-Za-z ]+):\s+(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


# --- reports -----------------------------------------------------------------


def test_member_budget_report_once_per_interval(make_gateway):
    gw = make_gateway({"member_msg_per_hour": "2"})
    gw.admin("tenant", "notify", "example.org", "--admin", ADMIN)
    send_ok(gw, ALICE, 2)
    refused_at_mail(gw, ALICE)
    sid = refusal_id(gw, ALICE, "member messages per hour")
    line = wait_report_line(gw, member=ALICE)
    assert line["to"] == ADMIN
    assert line["id"] == sid  # refused at MAIL: no queue id yet
    assert line["tenant"] == "example.org"
    assert line["budget"] == "member messages per hour"
    rep = wait_report(gw, line["qid"])
    gw.wait_log(r"to=<%s> .*status=sent" % re.escape(ADMIN), line["qid"])

    assert rep.mail_from == "" and rep.rcpt_to == [ADMIN]
    assert_signed_by(rep.raw, gw.records, "example.org")
    head = email.message_from_bytes(rep.raw, policy=email.policy.compat32)
    assert head["From"] == "Mail Submission Gateway <postmaster@example.org>"
    assert head["To"] == "<%s>" % ADMIN
    assert head["Subject"] == (
        "Sending limit reached by %s: member messages per hour" % ALICE)
    assert head["Auto-Submitted"] == "auto-generated"
    assert head.get_content_type() == "text/plain"
    fields = body_fields(rep)
    assert fields["Member"] == ALICE
    assert fields["Tenant"] == "example.org"
    assert fields["Limit"] == (
        "member messages per hour (member_msg_per_hour = 2)")
    assert fields["Client"] == "127.0.0.1"
    assert fields["Queue ID"] == "none (refused at MAIL FROM)"
    assert fields["Session"] == sid
    assert re.match(r"^\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d \+0000$",
                    fields["Time"]), fields["Time"]
    for raw_line in rep.raw.split(b"\r\n"):
        assert len(raw_line) <= 998 and b"\n" not in raw_line

    # Refused again within the interval: still 451, no second report.
    refused_at_mail(gw, ALICE)
    refused_at_mail(gw, ALICE)
    # Barrier: a later report, about bob.
    send_ok(gw, BOB, 2)
    refused_at_mail(gw, BOB)
    bob = wait_report_line(gw, member=BOB)
    wait_report(gw, bob["qid"])
    assert len(report_lines(gw, member=ALICE)) == 1
    assert [m.path for m in reports_at_sink(gw, ADMIN)
            if ALICE.encode() in m.raw] == [rep.path]


def test_recipient_and_tenant_budget_reports(make_gateway):
    gw = make_gateway({"member_rcpt_per_day": "4",
                       "tenant_msg_per_hour": "3"})
    gw.admin("tenant", "notify", "example.org", "--admin", ADMIN)
    gw.admin("tenant", "notify", "other.org", "--admin", OTHER_ADMIN)
    send_ok(gw, ALICE, 1, rcpts=("r1@example.net", "r2@example.net",
                                 "r3@example.net"))
    # The fifth recipient of the day is refused; the message goes to four.
    msg, _ = make_message()
    with session(gw, ALICE) as s:
        res = send(s, ALICE, ["r4@example.net", "r5@example.net"], msg)
    assert [c for c, _ in res["rcpt"]] == [250, 451]
    qid = assert_queued(res)
    line = wait_report_line(gw, member=ALICE)
    assert line["id"] == qid
    assert line["budget"] == "member recipients per day"
    rep = wait_report(gw, line["qid"])
    assert_signed_by(rep.raw, gw.records, "example.org")
    fields = body_fields(rep)
    assert fields["Limit"] == (
        "member recipients per day (member_rcpt_per_day = 4)")
    assert fields["Queue ID"] == "%s (the refused message)" % qid

    # Two messages of the tenant so far; bob's is the third, then the
    # tenant is refused, whoever sends.
    send_ok(gw, BOB, 1)
    refused_at_mail(gw, BOB)
    line = wait_report_line(gw, budget="tenant messages per hour")
    assert line["member"] == BOB and line["tenant"] == "example.org"
    rep = wait_report(gw, line["qid"])
    assert_signed_by(rep.raw, gw.records, "example.org")
    assert rep.headers("Subject") == [
        "Sending limit reached by %s: tenant messages per hour" % BOB]
    fields = body_fields(rep)
    assert fields["Member"] == BOB
    assert fields["Limit"] == (
        "tenant messages per hour (tenant_msg_per_hour = 3)")
    # The same tenant budget refusing another member: not reported again.
    refused_at_mail(gw, ALICE)
    assert gw.wait_log(r'reject code=451 reason="tenant messages per hour" '
                       r"member=alice@example\.org")
    # Barrier: other.org's first report, to its own administrator.
    send_ok(gw, CAROL, 3)
    refused_at_mail(gw, CAROL)
    carol = wait_report_line(gw, member=CAROL)
    assert carol["to"] == OTHER_ADMIN
    assert carol["budget"] == "tenant messages per hour"
    rep = wait_report(gw, carol["qid"], to=OTHER_ADMIN)
    assert_signed_by(rep.raw, gw.records, "other.org")
    assert rep.headers("From") == [
        "Mail Submission Gateway <postmaster@other.org>"]
    assert len(report_lines(gw, tenant="example.org",
                            budget="tenant messages per hour")) == 1


def test_tenant_without_admin_gets_no_report(make_gateway):
    gw = make_gateway({"member_msg_per_hour": "1"})
    gw.admin("tenant", "notify", "example.org", "--admin", ADMIN)
    # other.org has no administrator address.
    assert "admin_address: -" in gw.admin(
        "tenant", "show", "other.org").stdout.decode()
    send_ok(gw, CAROL, 1)
    refused_at_mail(gw, CAROL)
    gw.wait_log(r'reject code=451 reason="member messages per hour" '
                r"member=carol@other\.org tenant=other\.org")
    # Barrier: a report about alice, found due after carol's refusal.
    send_ok(gw, ALICE, 1)
    refused_at_mail(gw, ALICE)
    alice = wait_report_line(gw, member=ALICE)
    wait_report(gw, alice["qid"])
    assert report_lines(gw, member=CAROL) == []
    assert [m for m in gw.sink.messages() if m.mail_from == ""
            and CAROL.encode() in m.raw] == []
    assert "budget report not made" not in gw.log_text()


def test_report_again_after_the_interval(make_gateway):
    gw = make_gateway({"member_msg_per_hour": "1",
                       "budget_report_interval": "1s"})
    gw.admin("tenant", "notify", "example.org", "--admin", ADMIN)
    send_ok(gw, ALICE, 1)

    def second_report():
        refused_at_mail(gw, ALICE)
        return len(report_lines(gw, member=ALICE)) >= 2

    wait_until(second_report, "a second report once the interval passed",
               interval=0.3)
    qids = [r["qid"] for r in report_lines(gw, member=ALICE)]
    for qid in qids[:2]:
        assert_signed_by(wait_report(gw, qid).raw, gw.records, "example.org")


# --- the admin tool -----------------------------------------------------------


def test_admin_address_set_show_clear(make_gateway):
    gw = make_gateway(start=False)

    def show(tenant="example.org"):
        out = gw.admin("tenant", "show", tenant).stdout.decode()
        return [l for l in out.splitlines() if l.startswith("admin_address:")]

    def notify(*args, check=True):
        return gw.admin("tenant", "notify", *args, check=check)

    assert show() == ["admin_address: -"]
    assert notify("example.org").stdout == b"admin_address: -\n"
    res = notify("example.org", "--admin", "Limits-Admin@Example.NET")
    assert (res.returncode, res.stdout, res.stderr) == (0, b"", b"")
    # The domain is kept lower-case, the local part as given.
    assert show() == ["admin_address: Limits-Admin@example.net"]
    assert notify("example.org").stdout == (
        b"admin_address: Limits-Admin@example.net\n")
    assert show("other.org") == ["admin_address: -"]
    notify("example.org", "--admin=%s" % ADMIN)
    assert show() == ["admin_address: %s" % ADMIN]

    for bad in ("no-at-sign", "two@@example.net", "a b@example.net",
                "x@[192.0.2.1]", "x@-bad-.net", "x@example.net\r\nBcc: y@z",
                ""):
        res = notify("example.org", "--admin", bad, check=False)
        assert res.returncode == 1, (bad, res)
        assert res.stderr.decode().startswith("subgate: invalid address"), \
            res.stderr
        assert show() == ["admin_address: %s" % ADMIN]

    res = notify("nope.org", "--admin", ADMIN, check=False)
    assert (res.returncode, res.stderr) == (1, b"subgate: no tenant nope.org\n")
    res = notify("example.org", "--bogus", check=False)
    assert res.returncode == 2 and b"usage:" in res.stderr

    notify("example.org", "--admin", "none")
    assert show() == ["admin_address: -"]
    # Clearing twice is not an error.
    notify("example.org", "--admin", "none")
    assert show() == ["admin_address: -"]
    # Deleting the tenant deletes its address with it.
    notify("other.org", "--admin", OTHER_ADMIN)
    gw.admin("tenant", "del", "other.org", "--force")
    gw.admin("tenant", "add", "other.org")
    assert show("other.org") == ["admin_address: -"]
