"""MX delivery (relay_host empty): a real knotd serves the test domains,
whose MX hosts are test sinks on 127.0.0.2, 127.0.0.3, ... sharing one
port (relay_port). Preference order, fallback to the next host, the
implicit MX, the null MX, DNS failures, one transaction per destination
and the per-destination connection limit.

Messages are written straight into the queue (queue_rig); they come from
the null sender, so that no DSN (which the rig cannot sign) is made."""

import asyncio
import re
import socket
import socketserver
import threading

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

import helpers
from helpers import BIN, token, wait_until
from knot import Knot
from queue_rig import AddrSink, Rig, body_with

pytestmark = pytest.mark.skipif(
    not (BIN / "subgated").is_file(),
    reason="%s/subgated not built" % BIN)

# The loopback addresses of the hosts (all of 127/8 is local on Linux).
A, B, C, BAD, SLOW, FAST = ("127.0.0.2", "127.0.0.3", "127.0.0.4",
                            "127.0.0.6", "127.0.0.7", "127.0.0.8")

ZONES = {
    # Two MX hosts; mx1 is preferred.
    "two.test": ["@ IN MX 10 mx1", "@ IN MX 20 mx2",
                 "mx1 IN A %s" % A, "mx2 IN A %s" % B],
    # No MX: the domain's own address (RFC 5321 5.1).
    "implicit.test": ["@ IN A %s" % C],
    # RFC 7505: no mail at all.
    "null.test": ["@ IN MX 0 ."],
    # The preferred host answers its greeting with 421.
    "greet.test": ["@ IN MX 10 bad", "@ IN MX 20 good",
                   "bad IN A %s" % BAD, "good IN A %s" % B],
    # The only MX host has no address.
    "noaddr.test": ["@ IN MX 10 ghost"],
    "slow.test": ["@ IN MX 10 mx", "mx IN A %s" % SLOW],
    "fast.test": ["@ IN MX 10 mx", "mx IN A %s" % FAST],
}


def port_free_on_all(port, addresses):
    for addr in addresses:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((addr, port))
            except OSError:
                return False
    return True


def pick_port(addresses):
    for _ in range(50):
        port = helpers.free_port()
        if port_free_on_all(port, addresses):
            return port
    raise AssertionError("no port free on %s" % (addresses,))


class GreetingRefuser(socketserver.ThreadingTCPServer):
    """A host that answers every connection with a 421 greeting."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, address, port):
        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                self.server.connections += 1
                self.request.sendall(b"421 4.3.2 too busy, try later\r\n")

        self.connections = 0
        super().__init__((address, port), Handler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.shutdown()
        self.server_close()


class MxWorld:
    """knotd, the sinks and the greeting refuser, shared by the tests of
    this module."""

    def __init__(self, root):
        self.root = root
        self.port = pick_port([A, B, C, BAD, SLOW, FAST])
        self.knot = Knot(root / "knot")
        for name, records in ZONES.items():
            self.knot.add_zone(name, records=records)
        self.sinks = {
            addr: AddrSink(root / ("sink-%s" % addr), address=addr,
                           port=self.port)
            for addr in (A, B, C, FAST)
        }
        self.refuser = None

    def start(self):
        self.knot.start()
        for s in self.sinks.values():
            s.start()
        self.refuser = GreetingRefuser(BAD, self.port)
        return self

    def close(self):
        if self.refuser is not None:
            self.refuser.stop()
        for s in self.sinks.values():
            s.stop()
        self.knot.stop()

    def settings(self, **extra):
        out = {
            "relay_host": "",
            "relay_port": str(self.port),
            "dns_resolver": "127.0.0.1:%d" % self.knot.port,
            "dns_timeout": "2s",
        }
        out.update({k: str(v) for k, v in extra.items()})
        return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = MxWorld(tmp_path_factory.mktemp("mx-world"))
    try:
        w.start()
        yield w
    finally:
        w.close()


@pytest.fixture(scope="module")
def mxrig(world, tmp_path_factory):
    r = Rig(tmp_path_factory.mktemp("mx-rig"), world.settings())
    try:
        r.start(sink=False)
        yield r
    finally:
        r.close()


def send(rig, rcpts, tok):
    return rig.enqueue(rcpts, body_with(tok), sender="")


def test_preferred_mx_gets_it(world, mxrig):
    tok = token()
    rcpt = "bob-%s@two.test" % tok
    qid = send(mxrig, [rcpt], tok)
    msg = world.sinks[A].wait_for(tok)[0]
    assert msg.rcpt_to == [rcpt]
    assert msg.raw == body_with(tok)
    assert world.sinks[B].find(tok) == []
    mxrig.wait_gone(qid)
    line = mxrig.wait_log(r"to=<%s> .*status=sent" % re.escape(rcpt), qid)
    assert "relay=mx1.two.test[%s]:%d " % (A, world.port) in line, line


def test_next_mx_when_first_is_down(world, mxrig):
    tok = token()
    rcpt = "bob-%s@two.test" % tok
    world.sinks[A].stop()
    try:
        qid = send(mxrig, [rcpt], tok)
        msg = world.sinks[B].wait_for(tok)[0]
        assert msg.rcpt_to == [rcpt]
        mxrig.wait_gone(qid)
        line = mxrig.wait_log(r"to=<%s> .*status=sent" % re.escape(rcpt),
                              qid)
        assert "relay=mx2.two.test[%s]:%d " % (B, world.port) in line, line
    finally:
        world.sinks[A].start()
    assert world.sinks[A].find(tok) == []


def test_next_mx_after_4xx_greeting(world, mxrig):
    tok = token()
    rcpt = "bob-%s@greet.test" % tok
    before = world.refuser.connections
    qid = send(mxrig, [rcpt], tok)
    world.sinks[B].wait_for(tok)
    mxrig.wait_gone(qid)
    assert world.refuser.connections > before, "the 421 host was not tried"
    line = mxrig.wait_log(r"to=<%s> .*status=sent" % re.escape(rcpt), qid)
    assert "relay=good.greet.test[%s]" % B in line, line


def test_implicit_mx(world, mxrig):
    tok = token()
    rcpt = "carol-%s@implicit.test" % tok
    qid = send(mxrig, [rcpt], tok)
    msg = world.sinks[C].wait_for(tok)[0]
    assert msg.rcpt_to == [rcpt]
    mxrig.wait_gone(qid)
    line = mxrig.wait_log(r"to=<%s> .*status=sent" % re.escape(rcpt), qid)
    assert "relay=implicit.test[%s]:%d " % (C, world.port) in line, line


@pytest.mark.parametrize("domain,dsn,why", [
    ("null.test", "5.1.10", "accepts no mail (null MX)"),
    ("nx.two.test", "5.1.2", "does not exist"),
    ("noaddr.test", "5.4.4", "no MX host of noaddr.test has an address"),
])
def test_undeliverable_domain_bounces(world, mxrig, domain, dsn, why):
    tok = token()
    rcpt = "x-%s@%s" % (tok, domain)
    qid = send(mxrig, [rcpt], tok)
    mxrig.wait_gone(qid)
    line = mxrig.wait_log(r"to=<%s> .*status=bounced" % re.escape(rcpt), qid)
    assert "dsn=%s " % dsn in line and why in line, line
    # From the null sender: logged, no notification.
    assert not any("notification" in l for l in mxrig.lines_for(qid))


def test_dns_failure_defers(world, mxrig):
    # knotd refuses questions about zones it does not serve: a temporary
    # failure, as SERVFAIL or a timeout would be.
    tok = token()
    rcpt = "x-%s@unserved.example" % tok
    qid = send(mxrig, [rcpt], tok)
    line = mxrig.wait_log(r"to=<%s> .*status=deferred" % re.escape(rcpt),
                          qid)
    assert "dsn=4.4.3 " in line and "relay=none " in line, line
    env, _ = mxrig.read(qid)
    assert env["rcpt"] == [rcpt]
    mxrig.admin("queue", "delete", qid)


def test_one_transaction_per_destination(world, mxrig):
    tok = token()
    two = ["a-%s@two.test" % tok, "b-%s@TWO.test" % tok]
    imp = ["c-%s@implicit.test" % tok]
    qid = send(mxrig, [two[0], imp[0], two[1]], tok)
    at_c = world.sinks[C].wait_for(tok)
    mxrig.wait_gone(qid)
    # two.test's connection may still be the one to mx2 that an earlier
    # test opened: reuse is per destination, whichever host it reached.
    at_two = world.sinks[A].find(tok) + world.sinks[B].find(tok)
    assert [m.rcpt_to for m in at_two] == [two]
    assert [m.rcpt_to for m in at_c] == [imp]


class GateHandler:
    """A next hop that holds every message at the end of DATA until the
    gate opens, and counts its concurrent connections."""

    def __init__(self):
        self.gate = threading.Event()
        self.lock = threading.Lock()
        self.in_data = 0
        self.sessions = 0
        self.max_sessions = 0
        self.messages = []

    def connected(self, delta):
        with self.lock:
            self.sessions += delta
            self.max_sessions = max(self.max_sessions, self.sessions)

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.in_data += 1
        while not self.gate.is_set():
            await asyncio.sleep(0.05)
        with self.lock:
            self.in_data -= 1
            self.messages.append(list(envelope.rcpt_tos))
        return "250 2.0.0 OK held and saved"


class GateController(Controller):
    def __init__(self, handler, **kw):
        super().__init__(handler, **kw)
        self.gate_handler = handler

    def factory(self):
        handler = self.gate_handler

        class Counting(SMTP):
            def connection_made(self, transport):
                handler.connected(1)
                super().connection_made(transport)

            def connection_lost(self, exc):
                handler.connected(-1)
                super().connection_lost(exc)

        return Counting(handler, hostname="slow.test")


def test_concurrency_limit_per_destination(world, tmp_path):
    # Six messages to a host that holds each one at the end of DATA, with
    # relay_concurrency = 2: two connections take two messages and wait;
    # a message for another destination goes out meanwhile; once the gate
    # opens, the six go over those two connections and never more.
    h = GateHandler()
    ctl = GateController(h, hostname=SLOW, port=world.port)
    ctl.start()
    r = Rig(tmp_path / "rig", world.settings(relay_concurrency=2))
    try:
        r.start(sink=False)
        tok = token()
        qids = [send(r, ["s%d-%s@slow.test" % (i, tok)], tok)
                for i in range(6)]
        wait_until(lambda: h.in_data == 2, "two messages held at the gate")
        fast = send(r, ["f-%s@fast.test" % tok], tok)
        world.sinks[FAST].wait_for(tok)
        r.wait_gone(fast)
        assert h.in_data == 2 and h.max_sessions == 2, (h.in_data,
                                                        h.max_sessions)
        h.gate.set()
        for q in qids:
            r.wait_gone(q)
        assert sorted(m[0] for m in h.messages) == sorted(
            "s%d-%s@slow.test" % (i, tok) for i in range(6))
        assert h.max_sessions == 2, h.max_sessions
        opened = [l for l in r.log_text().splitlines()
                  if re.search(r"relay=mx\.slow\.test\[.* connected ", l)]
        assert len(opened) == 2, opened
    finally:
        r.close()
        ctl.stop()
