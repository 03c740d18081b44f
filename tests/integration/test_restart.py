"""Durability and process life: a 250 means the signed message is on disk,
so it survives a stop, a crash (kill -9) and a next hop that is down or
answers 4xx; SIGTERM stops the master and all its children; SIGHUP keeps
the gateway serving. Every test runs its own gateway."""

import signal

import dkimverify
from helpers import (
    assert_queued,
    make_message,
    pid_alive,
    submit,
    wait_until,
)

ALICE = "alice@example.org"


def _queue_and_wait_for_attempt(gw):
    """Submits a message while the next hop is down and waits for the queue
    runner's first attempt on it. Returns (qid, token)."""
    msg, tok = make_message()
    qid = assert_queued(submit(gw, ALICE, msg))
    assert qid in gw.queue_files(), (qid, gw.queue_files())
    # The runner tries at once, fails to connect, and logs the outcome.
    line = gw.wait_log(r"status=", qid=qid)
    assert "status=sent" not in line, line
    assert qid in gw.queue_files()
    return qid, tok


def _assert_delivered_and_verifies(gw, tok, qid):
    got = gw.sink.wait_for(tok)[0]
    results = dkimverify.verify_message(got.raw, gw.records)
    assert len(results) == 2 and all(ok for _, _, ok in results), results
    gw.wait_log(r"status=sent", qid=qid)
    wait_until(lambda: qid not in gw.queue_files(),
               "%s to leave the queue" % qid)
    return got


def test_sigterm_stops_master_and_children(make_gateway):
    gw = make_gateway()
    kids = wait_until(gw.children, "worker processes")
    status, left = gw.stop()
    assert status == 0, "subgated exited with %s" % status
    assert left == [], "children outlived the master: %r" % left
    assert not any(pid_alive(p) for p in kids)


def test_queued_message_survives_restart(make_gateway):
    gw = make_gateway(start_sink=False)
    qid, tok = _queue_and_wait_for_attempt(gw)
    status, left = gw.stop()
    assert status == 0 and left == [], (status, left)
    assert qid in gw.queue_files(), "queue file lost at stop"
    gw.sink.start()
    gw.start()
    got = _assert_delivered_and_verifies(gw, tok, qid)
    assert got.mail_from == ALICE
    assert got.rcpt_to == ["bob@example.net"]


def test_kill9_after_250_loses_nothing(make_gateway):
    gw = make_gateway(start_sink=False)
    msg, tok = make_message()
    qid = assert_queued(submit(gw, ALICE, msg))
    gw.kill9()
    assert qid in gw.queue_files(), "queue file lost at kill -9"
    gw.sink.start()
    gw.start()
    _assert_delivered_and_verifies(gw, tok, qid)


def test_deferred_by_4xx_then_delivered(make_gateway):
    gw = make_gateway(sink_reply="451 4.3.0 try again later")
    msg, tok = make_message()
    qid = assert_queued(submit(gw, ALICE, msg))
    wait_until(lambda: any(a.startswith("- 451") for a in gw.sink.attempts()),
               "the sink to refuse a delivery attempt with 451")
    line = gw.wait_log(r"status=", qid=qid)
    assert "status=sent" not in line, line
    assert qid in gw.queue_files()
    # The next hop recovers; the message goes out on a later retry
    # (retry_min = 1s) without any help.
    gw.sink.stop()
    gw.sink.start(reply=None)
    got = _assert_delivered_and_verifies(gw, tok, qid)
    assert got.mail_from == ALICE
    refused = [a for a in gw.sink.attempts() if a.startswith("- ")]
    assert refused, gw.sink.attempts()
    assert len(gw.sink.find(tok)) == 1, "delivered more than once"


def test_sighup_keeps_serving(make_gateway):
    gw = make_gateway()
    master = gw.pid
    gw.proc.send_signal(signal.SIGHUP)
    # Before, during and after the reload the gateway keeps accepting and
    # relaying; the master stays the same process.
    for _ in range(2):
        msg, tok = make_message()
        qid = assert_queued(submit(gw, ALICE, msg))
        _assert_delivered_and_verifies(gw, tok, qid)
    assert gw.running and gw.pid == master
