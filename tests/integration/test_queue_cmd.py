"""`subgate queue list|show|flush|delete|hold|release` against a running
gateway: output formats, and that each command is safe while the queue
runner works (a held message is not delivered, a deleted one never comes
back, a message being delivered cannot be held)."""

import re
import time

import pytest

from helpers import (
    assert_queued,
    make_message,
    submit,
    wait_until,
)
from queue_rig import AddrSink

ALICE = "alice@example.org"
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
# Retries far away: only `queue flush` makes a deferred message go.
SLOW_RETRY = {"retry_min": "1h", "retry_max": "1h"}


def listing(gw):
    """`queue list` as {id: fields}; checks the line format."""
    out = {}
    for line in gw.admin("queue", "list").stdout.decode().splitlines():
        f = line.split("\t")
        assert len(f) == 8, line
        out[f[0]] = {
            "arrival": f[1], "size": f[2], "sender": f[3], "state": f[4],
            "attempts": f[5], "next": f[6], "nrcpt": f[7],
        }
    return out


def queued_and_deferred(gw, rcpts=("bob@example.net",)):
    """Submits a message while the next hop is down; returns (qid, tok)
    once its first attempt failed."""
    msg, tok = make_message()
    qid = assert_queued(submit(gw, ALICE, msg, rcpts=rcpts))
    gw.wait_log(r"deferred nrcpt=\d+ attempts=1 ", qid)
    return qid, tok


@pytest.fixture
def downgw(make_gateway):
    """A gateway whose next hop is down, with hourly retries."""
    return make_gateway(SLOW_RETRY, start_sink=False)


def test_list_and_show(downgw):
    gw = downgw
    q1, _ = queued_and_deferred(gw, rcpts=("a@example.net", "b@example.net"))
    q2, tok2 = queued_and_deferred(gw)
    got = listing(gw)
    assert sorted(got) == sorted([q1, q2])
    for qid, n in ((q1, "2"), (q2, "1")):
        f = got[qid]
        assert ISO.match(f["arrival"]) and ISO.match(f["next"]), f
        assert int(f["size"]) > 0
        assert f["sender"] == ALICE
        assert f["state"] == "deferred", f
        assert f["attempts"] == "1" and f["nrcpt"] == n, f
    out = gw.admin("queue", "show", q2).stdout.decode()
    env, sep, headers = out.partition("\n\n")
    assert sep, out
    fields = [l.split(": ", 1) for l in env.splitlines()]
    keys = [k for k, _ in fields]
    assert keys == ["id", "state", "arrival", "size", "session", "member",
                    "sender", "attempts", "next", "warned", "rcpt"], keys
    d = dict(fields)
    assert d["id"] == q2 and d["state"] == "deferred"
    assert d["size"] == got[q2]["size"]
    assert d["member"] == ALICE and d["sender"] == ALICE
    assert d["rcpt"] == "bob@example.net" and d["warned"] == "no"
    assert "Message-ID: <%s@client.test>" % tok2 in headers
    assert "\nDKIM-Signature: " in "\n" + headers
    assert "this is test message" not in out  # headers only
    assert "\r" not in out


def test_flush_one_and_all(downgw):
    gw = downgw
    q1, t1 = queued_and_deferred(gw)
    q2, t2 = queued_and_deferred(gw)
    q3, t3 = queued_and_deferred(gw)
    gw.sink.start()
    gw.admin("queue", "flush", q1)
    gw.sink.wait_for(t1)
    wait_until(lambda: q1 not in listing(gw), "%s to leave the queue" % q1)
    assert gw.sink.find(t2) == [] and gw.sink.find(t3) == []
    gw.admin("queue", "flush")
    gw.sink.wait_for(t2)
    gw.sink.wait_for(t3)
    wait_until(lambda: listing(gw) == {}, "the queue to be empty")


def test_hold_and_release(downgw):
    gw = downgw
    held, th = queued_and_deferred(gw)
    other, to = queued_and_deferred(gw)
    gw.admin("queue", "hold", held)
    assert listing(gw)[held]["state"] == "hold"
    assert (gw.queue_dir / "hold" / held).exists()
    # Holding twice is fine; flushing a held message is refused.
    gw.admin("queue", "hold", held)
    res = gw.admin("queue", "flush", held, check=False)
    assert res.returncode == 1 and b"on hold" in res.stderr, res.stderr
    gw.sink.start()
    gw.admin("queue", "flush")
    gw.sink.wait_for(to)
    wait_until(lambda: other not in listing(gw), "%s delivered" % other)
    assert gw.sink.find(th) == []
    assert listing(gw)[held]["state"] == "hold"
    gw.admin("queue", "release", held)
    assert listing(gw)[held]["state"] in ("deferred", "active")
    gw.admin("queue", "flush", held)
    gw.sink.wait_for(th)
    wait_until(lambda: listing(gw) == {}, "the queue to be empty")
    assert len(gw.sink.find(th)) == 1


def test_delete(downgw):
    gw = downgw
    gone, tg = queued_and_deferred(gw)
    kept, tk = queued_and_deferred(gw)
    gw.admin("queue", "delete", gone)
    assert sorted(listing(gw)) == [kept]
    gw.sink.start()
    gw.admin("queue", "flush")
    gw.sink.wait_for(tk)
    wait_until(lambda: listing(gw) == {}, "the queue to be empty")
    assert gw.sink.find(tg) == []
    gw.sink.stop()
    a, _ = queued_and_deferred(gw)
    b, _ = queued_and_deferred(gw)
    gw.admin("queue", "hold", b)
    res = gw.admin("queue", "delete", "--all")
    assert res.stdout == b"2\n", res.stdout
    assert listing(gw) == {}


def test_errors(downgw):
    gw = downgw
    cases = [
        (("show", "0123456789AB"), 1, b"no message 0123456789AB"),
        (("show", "nonsense"), 2, b"not a queue id"),
        (("hold", "0123456789AB"), 1, b"no message"),
        (("release", "0123456789AB"), 1, b"no message"),
        (("delete",), 2, b"usage"),
        (("delete", "0123456789AB", "--all"), 2, b"usage"),
        (("frobnicate",), 2, b"usage"),
    ]
    for args, code, text in cases:
        res = gw.admin("queue", *args, check=False)
        assert res.returncode == code, (args, res.returncode, res.stderr)
        assert text in res.stderr, (args, res.stderr)
        assert len(res.stderr.splitlines()) == 1, res.stderr
    q, _ = queued_and_deferred(gw)
    res = gw.admin("queue", "release", q, check=False)
    assert res.returncode == 1 and b"not on hold" in res.stderr


def slow_gateway(make_gateway, tmp_path, reply=None):
    sink = AddrSink(tmp_path / "slow", reply=reply, delay_ms=4000)
    sink.start()
    gw = make_gateway(dict(SLOW_RETRY, relay_host="[127.0.0.1]:%d"
                           % sink.port, relay_tls="none"), start_sink=False)
    return gw, sink


def wait_busy(gw, qid):
    wait_until(lambda: (gw.queue_dir / "busy" / qid).exists(),
               "%s to be in delivery" % qid)


def test_no_hold_during_delivery(make_gateway, tmp_path):
    gw, sink = slow_gateway(make_gateway, tmp_path)
    try:
        msg, tok = make_message()
        qid = assert_queued(submit(gw, ALICE, msg))
        wait_busy(gw, qid)
        assert listing(gw)[qid]["state"] == "active"
        res = gw.admin("queue", "hold", qid, check=False)
        assert res.returncode == 1, res.stderr
        assert b"being delivered" in res.stderr, res.stderr
        # Flushing a message in delivery is a no-op.
        gw.admin("queue", "flush", qid)
        sink.wait_for(tok)
        gw.wait_log(r"removed$", qid)
        assert listing(gw) == {}
    finally:
        sink.stop()


def test_delete_during_delivery(make_gateway, tmp_path):
    # The attempt fails (451) after the message was deleted: the runner
    # must not bring it back.
    gw, sink = slow_gateway(make_gateway, tmp_path, reply="451 4.3.0 later")
    try:
        msg, tok = make_message()
        qid = assert_queued(submit(gw, ALICE, msg))
        wait_busy(gw, qid)
        gw.admin("queue", "delete", qid)
        gw.wait_log(r"deleted while being delivered", qid)
        time.sleep(0.5)
        assert listing(gw) == {}
        for sub in ("active", "busy", "hold"):
            assert not (gw.queue_dir / sub / qid).exists()
    finally:
        sink.stop()
