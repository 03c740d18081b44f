"""DKIM: what leaves the gateway is signed with the From: domain's keys and
verifies with two verifiers that share no code with subgate's signer:
dkimpy (both algorithms) and Perl Mail::DKIM (rsa-sha256; the Debian
package has no Ed25519 support). Mail is never relayed unsigned: with the
signer down or no active key the client gets 451 4.7.0."""

import os
import re
import signal
import subprocess

import pytest

import dkimverify
from helpers import (
    TOOLS,
    assert_not_delivered,
    assert_queued,
    assert_reply,
    make_message,
    pid_alive,
    submit,
    wait_until,
)

ALICE = "alice@example.org"
BOTH = {"rsa-sha256", "ed25519-sha256"}


def perl_verify(raw, dns_file):
    """{index: (tags_line, result)} from tests/tools/dkimverify.pl."""
    res = subprocess.run(
        ["perl", str(TOOLS / "dkimverify.pl"), str(dns_file)],
        input=raw, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    out = {}
    for line in res.stdout.decode().splitlines():
        m = re.match(r"sig (\d+) d=(\S+) s=(\S+) a=(\S+): (\S+)$", line)
        if m:
            out[int(m.group(1))] = (m.group(4), m.group(5))
    assert out, "dkimverify.pl said: %r %r" % (res.stdout, res.stderr)
    return out


def dkimpy_verify(raw, records):
    return [(tags["a"], ok) for _, tags, ok in
            dkimverify.verify_message(raw, records)]


def send_signed(gateway, user=ALICE, from_hdr=None, mail_from=None):
    msg, tok = make_message(from_hdr=from_hdr or user)
    assert_queued(submit(gateway, user, msg, mail_from=mail_from))
    return gateway.sink.wait_for(tok)[0]


@pytest.fixture(scope="module")
def signed(gateway):
    """One message from alice@example.org, as the sink got it."""
    return send_signed(gateway)


def test_two_signatures_d_is_from_domain(signed):
    sigs = signed.signatures()
    assert len(sigs) == 2, sigs
    assert {s["a"] for s in sigs} == BOTH
    assert all(s["d"] == "example.org" for s in sigs), sigs
    assert len({s["s"] for s in sigs}) == 2, "one selector per algorithm"


def test_signatures_verify_with_dkimpy(signed, dns_records):
    results = dkimpy_verify(signed.raw, dns_records)
    assert {a for a, _ in results} == BOTH
    assert all(ok for _, ok in results), results


def test_rsa_signature_verifies_with_mail_dkim(signed, dns_file):
    sigs = signed.signatures()
    results = perl_verify(signed.raw, dns_file)
    rsa = [i for i, s in enumerate(sigs) if s["a"] == "rsa-sha256"]
    assert len(rsa) == 1
    assert results[rsa[0]] == ("rsa-sha256", "pass"), results


def test_from_over_signed_and_no_length_tag(signed):
    for tags in signed.signatures():
        h = [x.strip().lower() for x in tags["h"].split(":")]
        assert h.count("from") >= 2, "From not over-signed: h=%s" % tags["h"]
        assert "l" not in tags, "l= tag present: %r" % tags
        assert "dkim-signature" not in h


def test_dkimverify_cli(signed, dns_file):
    res = subprocess.run(
        ["/usr/bin/python3", str(TOOLS / "dkimverify.py"), "--dns",
         str(dns_file), str(signed.path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    out = res.stdout.decode()
    assert res.returncode == 0, out
    assert out.count(": pass") == 2, out


@pytest.mark.parametrize(
    "old,new",
    [(b"this is test message", b"this is TEST message"),
     (b"\r\nSubject: test ", b"\r\nSubject: Test ")],
    ids=["body", "subject"],
)
def test_tampered_copy_fails(signed, dns_records, dns_file, old, new):
    assert old in signed.raw
    tampered = signed.raw.replace(old, new, 1)
    results = dkimpy_verify(tampered, dns_records)
    assert len(results) == 2
    assert not any(ok for _, ok in results), results
    perl = perl_verify(tampered, dns_file)
    assert [r for a, r in perl.values() if a == "rsa-sha256"] == ["fail"], perl


def test_rsa_only_tenant(gateway, dns_records, dns_file):
    got = send_signed(gateway, user="erin@rsaonly.org")
    sigs = got.signatures()
    assert [(s["a"], s["d"]) for s in sigs] == [("rsa-sha256", "rsaonly.org")]
    assert dkimpy_verify(got.raw, dns_records) == [("rsa-sha256", True)]
    assert perl_verify(got.raw, dns_file) == {0: ("rsa-sha256", "pass")}


def test_alias_domain_signs_with_its_own_d(gateway, dns_records, dns_file):
    got = send_signed(gateway, from_hdr="Alice <alice.smith@example.com>")
    sigs = got.signatures()
    assert {s["a"] for s in sigs} == BOTH
    assert {s["d"] for s in sigs} == {"example.com"}, sigs
    assert all(ok for _, ok in dkimpy_verify(got.raw, dns_records))
    perl = perl_verify(got.raw, dns_file)
    assert [r for a, r in perl.values() if a == "rsa-sha256"] == ["pass"]


def test_other_tenant_signs_with_its_domain(gateway, dns_records):
    got = send_signed(gateway, user="carol@other.org")
    assert {s["d"] for s in got.signatures()} == {"other.org"}
    assert all(ok for _, ok in dkimpy_verify(got.raw, dns_records))


def test_rewritten_from_signed_with_primary_domain(gateway, dns_records):
    got = send_signed(gateway, user="dave@rewrite.org",
                      from_hdr="x@elsewhere.test",
                      mail_from="x@elsewhere.test")
    assert {s["d"] for s in got.signatures()} == {"rewrite.org"}
    results = dkimpy_verify(got.raw, dns_records)
    assert len(results) == 2 and all(ok for _, ok in results), results


def test_no_active_key_tempfails(gateway):
    msg, tok = make_message(from_hdr="frank@nokey.org")
    res = submit(gateway, "frank@nokey.org", msg)
    assert_reply(res["data"], 451, "4.7.0")
    assert res["qid"] is None
    assert_not_delivered(gateway, tok)


def test_signer_down_tempfails_then_recovers(make_gateway):
    gw = make_gateway()
    signer = wait_until(gw.signer_pid, "the subgate-signer process")
    msg, tok = make_message()
    # Stop the master first so that it cannot restart the signer while the
    # client talks to the SMTP worker: the signer is really down.
    os.kill(gw.pid, signal.SIGSTOP)
    try:
        os.kill(signer, signal.SIGKILL)
        wait_until(lambda: not pid_alive(signer), "the signer to die")
        res = submit(gw, ALICE, msg)
        assert_reply(res["data"], 451, "4.7.0")
        assert res["qid"] is None
        assert gw.queue_files() == []
    finally:
        os.kill(gw.pid, signal.SIGCONT)
    # The master restarts the signer; signing resumes without a restart.
    def accepted():
        again, again_tok = make_message()
        res2 = submit(gw, ALICE, again)
        ok = res2["data"] is not None and res2["data"][0] == 250
        return again_tok if ok else None

    again_tok = wait_until(accepted, "signing to resume after the signer "
                           "restarts", interval=0.5)
    gw.sink.wait_for(again_tok)
    assert gw.sink.find(tok) == [], "the refused message was relayed"
    assert gw.signer_pid() not in (None, signer)
