"""The benchmark's own tools (bench/, docs/performance.md) do what the
numbers rely on: sgsink counts every message and saves it as it was meant
(dot-stuffing removed), sgload gets messages through a real gateway with
STARTTLS, AUTH and PIPELINING and counts what was accepted, refused and
lost, and holds idle authenticated sessions. Nothing here measures speed.
"""

import smtplib
import subprocess

import dkimverify
from helpers import BIN, HOST, PASSWORDS, free_port, stop_process, wait_until

ALICE = "alice@example.org"


def sgload(gateway, *args, timeout=120):
    """Runs sgload against the gateway as alice: (exit status, RESULT
    dict, stdout, stderr)."""
    argv = [str(BIN / "sgload"), "-s", "%s:%d" % (HOST,
                                                   gateway.submission_port),
            "-S", "-a", "%s:%s" % (ALICE, PASSWORDS[ALICE]), "-T", "30"]
    res = subprocess.run(argv + list(args), capture_output=True, text=True,
                         timeout=timeout)
    result = {}
    for line in res.stdout.splitlines():
        if line.startswith("RESULT "):
            result = dict(tok.split("=", 1) for tok in line.split()[1:])
    return res.returncode, result, res.stdout, res.stderr


def read_stats(path):
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    return {k: int(v) for k, v in (t.split("=") for t in text.split())}


def test_sink_counts_and_saves_unstuffed(tmp_path):
    port = free_port()
    stats = tmp_path / "stats"
    msgs = tmp_path / "msgs"
    msgs.mkdir()
    proc = subprocess.Popen(
        [str(BIN / "sgsink"), "-l", "%s:%d" % (HOST, port), "-s", str(stats),
         "-d", str(msgs), "-k", "1"],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout.readline().strip() == b"ready"
        body = (b"From: a@example.org\r\nSubject: s\r\n\r\n"
                b".leading dot\r\n..two dots\r\nlast\r\n")
        with smtplib.SMTP(HOST, port, timeout=30) as s:
            assert s.ehlo()[0] == 250
            assert "pipelining" in s.esmtp_features
            s.sendmail("a@example.org", ["b@example.net", "c@example.net"],
                       body)
            s.sendmail("a@example.org", ["d@example.net"], body)
        got = wait_until(
            lambda: (lambda st: st if st.get("messages") == 2 else None)(
                read_stats(stats)),
            "the sink's stats file to count 2 messages")
        assert got["sessions"] == 1
        assert got["bytes"] == 2 * len(body)
        saved = sorted(p.name for p in msgs.iterdir())
        assert saved == ["00000001.eml", "00000001.env"], saved
        assert (msgs / "00000001.eml").read_bytes() == body
        env = (msgs / "00000001.env").read_text().splitlines()
        assert env[0].lower().startswith("mail from:<a@example.org>"), env
        assert [e.lower() for e in env[1:]] == [
            "rcpt to:<b@example.net>", "rcpt to:<c@example.net>"], env
    finally:
        stop_process(proc)
        proc.stdout.close()
    assert proc.returncode == 0


def test_load_through_gateway(gateway, dns_records):
    before = len(gateway.sink.find(b"sgload body of message"))
    rc, r, out, err = sgload(gateway, "-c", "2", "-m", "3", "-n", "6",
                             "-b", "3k")
    assert rc == 0, err
    assert (r["ok"], r["fail"], r["tls"], r["auth"],
            r["pipelining"]) == ("6", "0", "1", "1", "1"), out
    # Two slots of 3 messages each need 2 sessions; a slot may open a third
    # that finds the count already taken by the other slot and just QUITs.
    assert int(r["sessions"]) in (2, 3), out
    assert float(r["p50_ms"]) > 0 and float(r["sess_p50_ms"]) > 0
    got = gateway.sink.wait_for(b"sgload body of message", count=before + 6)
    results = dkimverify.verify_message(got[-1].raw, dns_records)
    assert sorted(tags["a"] for _, tags, _ in results) == [
        "ed25519-sha256", "rsa-sha256"]
    assert all(ok for _, _, ok in results), results


def test_load_counts_refusals(gateway):
    # bob@example.org is not alice's: every MAIL FROM is refused (553).
    rc, r, out, err = sgload(gateway, "-c", "1", "-m", "2", "-n", "2",
                             "-f", "bob@example.org")
    assert rc == 2, out + err
    assert (r["ok"], r["rej"], r["err"]) == ("0", "2", "0"), out
    # Without pipelining the refusal is counted the same way.
    rc, r, out, err = sgload(gateway, "-c", "1", "-n", "1",
                             "--no-pipelining", "-f", "bob@example.org")
    assert (rc, r["ok"], r["rej"], r["pipelining"]) == (2, "0", "1", "0"), out


def test_load_counts_lost_sessions(make_gateway):
    # A private gateway: the failed login counts against alice there only.
    gateway = make_gateway()
    rc, r, out, err = sgload(gateway, "-c", "1", "-n", "1", "-a",
                             "%s:wrong-password" % ALICE, "-T", "10")
    assert rc == 2, out + err
    assert (r["ok"], r["err"], r["sess_fail"]) == ("0", "1", "1"), out


def test_idle_sessions(gateway):
    rc, r, out, err = sgload(gateway, "-c", "3", "--idle", "-d", "1")
    assert rc == 0, err
    assert out.splitlines()[0].startswith("IDLE ready=3 failed=0"), out
    assert (r["idle_ready"], r["idle_failed"]) == ("3", "0"), out
