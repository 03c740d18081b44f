"""The Prometheus endpoint (metrics_listen): counters move as sessions,
AUTH, messages, signatures and deliveries happen; queue gauges follow the
queue; the endpoint answers only GET /metrics and bounds what it reads;
it is off unless configured. Each test runs its own gateway."""

import re
import socket
import time

from helpers import (
    HOST,
    assert_queued,
    assert_reply,
    auth_plain,
    connect,
    free_port,
    make_message,
    send,
    session,
    submit,
    wait_until,
)

ALICE = "alice@example.org"
SERIES_RE = re.compile(r"^([a-z_]+(?:\{[^}]*\})?) (\S+)$")


def http(port, request, timeout=10):
    """Sends request (bytes) and returns the whole answer (bytes)."""
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return data
            data += chunk


def scrape(port):
    """{series: value} of GET /metrics; checks the status and headers."""
    answer = http(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 200 OK", lines[0]
    headers = dict(l.split(": ", 1) for l in lines[1:])
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert int(headers["Content-Length"]) == len(body), headers
    series = {}
    for line in body.decode().splitlines():
        if line.startswith("#"):
            continue
        m = SERIES_RE.match(line)
        assert m, "not an exposition line: %r" % line
        assert m.group(1) not in series, "series twice: %s" % m.group(1)
        series[m.group(1)] = float(m.group(2))
    return series


def metrics_gateway(make_gateway, **kw):
    port = free_port()
    gw = make_gateway({"metrics_listen": "%s:%d" % (HOST, port)}, **kw)
    wait_until(lambda: gw.wait_log(r"metrics: listening on"),
               "the metrics endpoint")
    return gw, port


def delta(before, after, name):
    return after.get(name, 0) - before.get(name, 0)


def refused(code, enhanced):
    return ('subgate_messages_refused_total{code="%s",enhanced="%s"}'
            % (code, enhanced))


def test_counters_follow_sessions(make_gateway):
    gw, port = metrics_gateway(make_gateway)
    before = scrape(port)
    assert before['subgate_node_info{node="t1"}'] == 1

    # Accepted, signed with both algorithms, delivered.
    msg, tok = make_message()
    assert_queued(submit(gw, ALICE, msg))
    # The tenant rsaonly.org signs with RSA only.
    msg2, tok2 = make_message(from_hdr="erin@rsaonly.org")
    assert_queued(submit(gw, "erin@rsaonly.org", msg2))
    # A wrong password.
    with session(gw) as s:
        code, text = auth_plain(s, ALICE, "wrong")
        assert code == 535, (code, text)
    # A sender the member does not own, refused at MAIL.
    with session(gw, ALICE) as s:
        res = send(s, "bob@example.org", ["x@example.net"], msg)
        assert_reply(res["mail"], 553, "5.7.1")
    # A From: the member does not own, refused at the end of DATA.
    bad, _ = make_message(from_hdr="bob@example.org")
    res = submit(gw, ALICE, bad)
    assert_reply(res["data"], 550, "5.7.1")
    # No active key: 451 4.7.0, nothing signed.
    nokey, _ = make_message(from_hdr="frank@nokey.org")
    res = submit(gw, "frank@nokey.org", nokey)
    assert_reply(res["data"], 451, "4.7.0")
    gw.sink.wait_for(tok)
    gw.sink.wait_for(tok2)

    after = wait_until(
        lambda: (lambda m: m if delta(before, m, 'subgate_deliveries_total'
                                      '{status="sent"}') >= 2 else None)(
            scrape(port)),
        "two deliveries counted")
    assert delta(before, after, "subgate_connections_total") == 6
    assert delta(before, after, 'subgate_auth_total{result="ok"}') == 5
    assert delta(before, after, 'subgate_auth_total{result="fail"}') == 1
    assert delta(before, after, 'subgate_auth_total{result="tempfail"}') == 0
    assert delta(before, after, "subgate_messages_accepted_total") == 2
    assert delta(before, after, refused("553", "5.7.1")) == 1
    assert delta(before, after, refused("550", "5.7.1")) == 1
    assert delta(before, after, refused("451", "4.7.0")) == 1
    assert delta(before, after,
                 'subgate_signatures_total{algorithm="rsa-sha256"}') == 2
    assert delta(before, after,
                 'subgate_signatures_total{algorithm="ed25519-sha256"}') == 1
    assert delta(before, after,
                 'subgate_signatures_total{algorithm="other"}') == 0
    # Three messages reached the signer (two signed, one without a key).
    assert delta(before, after, "subgate_data_end_duration_seconds_count") == 3
    assert after['subgate_data_end_duration_seconds_bucket{le="+Inf"}'] == \
        after["subgate_data_end_duration_seconds_count"]
    assert after["subgate_data_end_duration_seconds_sum"] > 0
    assert after["subgate_qmgr_stats_up"] == 1
    assert after["subgate_sessions"] == 0


def test_sessions_gauge(make_gateway):
    gw, port = metrics_gateway(make_gateway)
    s1, s2 = connect(gw), connect(gw, tls=None)
    try:
        m = wait_until(
            lambda: (lambda x: x if x["subgate_sessions"] == 2 else None)(
                scrape(port)),
            "two open sessions")
        assert m["subgate_connections_total"] >= 2
    finally:
        s1.close()
        s2.close()
    wait_until(lambda: scrape(port)["subgate_sessions"] == 0,
               "sessions to close")


def test_queue_gauges_and_deferred(make_gateway):
    gw, port = metrics_gateway(make_gateway, start_sink=False)
    m = scrape(port)
    assert m["subgate_queue_messages"] == 0
    assert m["subgate_queue_oldest_seconds"] == 0
    msg, tok = make_message()
    qid = assert_queued(submit(gw, ALICE, msg))
    gw.wait_log(r"status=deferred", qid=qid)
    m = wait_until(
        lambda: (lambda x: x if x['subgate_deliveries_total'
                                  '{status="deferred"}'] >= 1 else None)(
            scrape(port)),
        "a deferred delivery counted")
    assert m["subgate_queue_messages"] == 1
    # The age comes from the queue id: it grows while the message waits.
    wait_until(lambda: scrape(port)["subgate_queue_oldest_seconds"] >= 2,
               "the oldest message to age")
    gw.sink.start()
    gw.sink.wait_for(tok)
    m = wait_until(
        lambda: (lambda x: x if x["subgate_queue_messages"] == 0 and
                 x['subgate_deliveries_total{status="sent"}'] == 1
                 else None)(scrape(port)),
        "the queue to drain and the delivery to be counted")
    assert m["subgate_queue_oldest_seconds"] == 0


def test_delivery_counts_survive_a_restart(make_gateway):
    gw, port = metrics_gateway(make_gateway)
    msg, tok = make_message()
    assert_queued(submit(gw, ALICE, msg))
    gw.sink.wait_for(tok)
    wait_until(lambda: scrape(port)['subgate_deliveries_total'
                                    '{status="sent"}'] == 1,
               "the delivery counted")
    status, left = gw.stop()
    assert status == 0 and left == [], (status, left)
    gw.start()
    wait_until(lambda: gw.log_text().count("metrics: listening on") == 2,
               "the endpoint after the restart")
    m = scrape(port)
    assert m['subgate_deliveries_total{status="sent"}'] == 1
    # The SMTP worker's counters start again.
    assert m["subgate_messages_accepted_total"] == 0


def test_http_answers(make_gateway):
    gw, port = metrics_gateway(make_gateway)
    cases = [
        (b"GET / HTTP/1.1\r\n\r\n", b"HTTP/1.1 404 "),
        (b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
         b"HTTP/1.1 405 "),
        (b"hello\r\n\r\n", b"HTTP/1.1 400 "),
        (b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 5000 + b"\r\n\r\n",
         b"HTTP/1.1 431 "),
    ]
    for request, want in cases:
        answer = http(port, request)
        assert answer.startswith(want), (request[:40], answer[:80])
    head = http(port, b"HEAD /metrics HTTP/1.0\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n"), head
    assert head.endswith(b"\r\n\r\n"), "HEAD must have no body: %r" % head
    # A client that connects and says nothing does not hold up others.
    idle = socket.create_connection((HOST, port))
    try:
        assert scrape(port)["subgate_sessions"] == 0
    finally:
        idle.close()
    # A request sent byte by byte is read whole.
    with socket.create_connection((HOST, port), timeout=10) as s:
        for b in b"GET /metrics HTTP/1.1\r\n\r\n":
            s.sendall(bytes([b]))
            time.sleep(0.001)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK"), data[:80]
    assert b"subgate_connections_total" in data


def test_off_by_default(make_gateway):
    gw = make_gateway()
    assert "metrics:" not in gw.log_text()


def test_bad_address_keeps_mail_flowing(make_gateway):
    # Another process holds the port: the endpoint cannot listen, mail
    # goes on.
    with socket.socket() as holder:
        holder.bind((HOST, 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        gw = make_gateway({"metrics_listen": "%s:%d" % (HOST, port)})
        gw.wait_log(r"metrics: cannot listen on")
        msg, tok = make_message()
        assert_queued(submit(gw, ALICE, msg))
        gw.sink.wait_for(tok)


def status(gw):
    out = gw.admin("status").stdout.decode()
    return dict(l.split(": ", 1) for l in out.splitlines())


def test_status_summary(make_gateway):
    gw = make_gateway()
    msg, tok = make_message()
    assert_queued(submit(gw, ALICE, msg))
    gw.sink.wait_for(tok)
    st = wait_until(
        lambda: (lambda x: x if x["deliveries"].startswith("sent=1 ")
                 else None)(status(gw)),
        "the delivery in subgate status")
    assert st["gateway"] == "running pid=%d" % gw.pid, st
    assert st["deliveries"] == "sent=1 deferred=0 bounced=0 expired=0", st
    assert st["queue_oldest"] == "0s" and st["queue_held"] == "0", st
    status_code, left = gw.stop()
    assert status_code == 0 and left == []
    assert status(gw)["gateway"] == "not running"
