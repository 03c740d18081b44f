"""Two gateway nodes, laid out as docs/scaling.md describes, on one
machine: each subgated with its own node_name, state directory, database,
DKIM keys and queue; the members of the tenant in one LDAP directory (a
real slapd, tests/integration/slapd.py) that both nodes check through
`subgate tenant ldap`; both nodes' keys published by `subgate dns publish`
into one zone of a real Knot DNS server (tests/integration/knot.py).

A member submits through either node and the signatures of both nodes
verify from that DNS server; a node killed with SIGKILL while it holds
accepted mail in its queue delivers all of it once restarted.
"""

import contextlib
import shutil

import dkim
import pytest

import dkimverify
import helpers
from helpers import (
    Gateway,
    assert_queued,
    assert_reply,
    auth_plain,
    connect,
    make_message,
    send,
    wait_until,
)
from knot import Knot
from slapd import Slapd, ssha

DOMAIN = "example.org"
SUFFIX = "dc=example,dc=org"
PEOPLE = "ou=people," + SUFFIX
MEMBERS = {
    # uid: (password, addresses)
    "alice": ("alice-Dir-1", ["alice@example.org"]),
    "bob": ("bob-Dir-2", ["bob@example.org", "robert@example.org"]),
}
NODES = ("n1", "n2")

pytestmark = pytest.mark.skipif(
    not shutil.which("slapd") and not shutil.which("/usr/sbin/slapd"),
    reason="slapd is not installed (deploy/install-deps)")


def directory_ldif():
    out = [
        "dn: %s\nobjectClass: dcObject\nobjectClass: organization\n"
        "o: Example\ndc: example\n" % SUFFIX,
        "dn: %s\nobjectClass: organizationalUnit\nou: people\n" % PEOPLE,
    ]
    for uid, (password, addrs) in MEMBERS.items():
        out.append("\n".join(
            ["dn: uid=%s,%s" % (uid, PEOPLE), "objectClass: inetOrgPerson",
             "uid: %s" % uid, "cn: %s" % uid, "sn: %s" % uid,
             "userPassword: %s" % ssha(password)]
            + ["mail: %s" % a for a in addrs]) + "\n")
    return "\n".join(out)


@pytest.fixture(scope="module")
def directory(tmp_path_factory):
    d = Slapd(tmp_path_factory.mktemp("slapd"), suffix=SUFFIX,
              load=directory_ldif())
    d.start()
    yield d
    d.close()


@pytest.fixture(scope="module")
def zone(tmp_path_factory):
    ns = Knot(tmp_path_factory.mktemp("knot"))
    ns.add_key("subgate-key")
    ns.add_zone(DOMAIN, update_keys=["subgate-key"])
    ns.start()
    yield ns
    ns.stop()


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    return helpers.make_cert(tmp_path_factory.mktemp("cert"))


def provision(gw, directory, zone):
    """This node's database: the tenant, its members in the directory,
    DNS publication into the zone, and keys of its own, published and
    activated once every name server serves them."""
    secret = zone.keys["subgate-key"].write_secret(gw.root / "tsig.key")
    gw.admin("init")
    gw.admin("tenant", "add", DOMAIN, "--sign", "rsa,ed25519")
    gw.admin("tenant", "ldap", DOMAIN, "--uri", directory.ldap_uri,
             "--ca-file", str(directory.ca_file),
             "--dn-template", "uid=%u," + PEOPLE, "--address-attrs", "mail")
    gw.admin("dns", "set", DOMAIN, "--server", "127.0.0.1:%d" % zone.port,
             "--tsig-name", "subgate-key", "--tsig-secret-file", str(secret))
    gw.admin("key", "generate", DOMAIN)
    gw.admin("dns", "publish", DOMAIN)
    out = gw.admin("key", "activate", DOMAIN).stdout.decode()
    return [line.split("\t")[0] for line in out.splitlines()
            if line.split("\t")[2:3] == ["active"]]


def make_node(name, root, cert, directory, zone):
    empty = root / "empty-state"
    empty.mkdir(parents=True)
    template = {"state": empty, "cert": cert[0], "key": cert[1],
                "records": {}, "dns_file": None}
    gw = Gateway(root / name, template, {
        "node_name": name,
        "dns_resolver": "127.0.0.1:%d" % zone.port,
        "dns_timeout": "3s",
    })
    try:
        gw.selectors = provision(gw, directory, zone)
        gw.start()
    except BaseException:
        gw.close()
        raise
    return gw


@pytest.fixture(scope="module")
def node1(tmp_path_factory, cert, directory, zone):
    gw = make_node("n1", tmp_path_factory.mktemp("node1"), cert, directory,
                   zone)
    yield gw
    gw.close()


@pytest.fixture(scope="module")
def node2(tmp_path_factory, cert, directory, zone, node1):
    # After node1: its records are in the zone when node2 publishes.
    gw = make_node("n2", tmp_path_factory.mktemp("node2"), cert, directory,
                   zone)
    yield gw
    gw.close()


def submit(gw, uid, mail_from, from_hdr=None):
    """Logs in as the directory member uid and sends one message."""
    msg, tok = make_message(from_hdr=from_hdr or mail_from)
    s = connect(gw)
    try:
        code, text = auth_plain(s, uid, MEMBERS[uid][0])
        assert code == 235, "AUTH %s at %s: %d %s" % (uid, gw.name, code, text)
        res = send(s, mail_from, ["someone@example.net"], msg)
    finally:
        with contextlib.suppress(Exception):
            s.quit()
    return res, tok


def queued(gw):
    """Queue ids in the node's queue, wherever in it they are."""
    out = set()
    for sub in gw.queue_dir.iterdir():
        if sub.is_dir() and sub.name != "tmp":
            out.update(p.name for p in sub.iterdir())
    return out


def verify_from_dns(zone, raw):
    """[(selector, ok)] per signature, keys looked up in the zone."""
    out = []
    for i, tags in enumerate(dkimverify.signature_tags(raw)):
        try:
            ok = bool(dkim.DKIM(raw).verify(idx=i, dnsfunc=zone.dnsfunc))
        except dkim.DKIMException:
            ok = False
        out.append((tags["s"], tags["d"], tags["a"], ok))
    return out


def assert_signed_by(zone, gw, message):
    results = verify_from_dns(zone, message.raw)
    assert sorted(a for _, _, a, _ in results) == [
        "ed25519-sha256", "rsa-sha256"], results
    for sel, d, _, ok in results:
        assert d == DOMAIN and ok, results
        assert sel in gw.selectors, (sel, gw.selectors)


def test_nodes_have_their_own_keys_in_one_zone(node1, node2, zone):
    assert len(node1.selectors) == 2 and len(node2.selectors) == 2
    assert not set(node1.selectors) & set(node2.selectors)
    assert all(s.endswith("-n1") for s in node1.selectors), node1.selectors
    assert all(s.endswith("-n2") for s in node2.selectors), node2.selectors
    # node2's publication left node1's records in place.
    for sel in node1.selectors + node2.selectors:
        txt = zone.txt("%s._domainkey.%s" % (sel, DOMAIN))
        assert len(txt) == 1 and txt[0].startswith("v=DKIM1;"), (sel, txt)
    # Each node checks the other's records are none of its business.
    for gw in (node1, node2):
        out = gw.admin("dns", "check", DOMAIN).stdout.decode()
        names = {line.split("\t")[0] for line in out.splitlines()}
        assert names == {"%s._domainkey.%s" % (s, DOMAIN)
                         for s in gw.selectors}, out


def test_member_submits_through_either_node(node1, node2, zone):
    sent = []
    for gw, uid, addr in ((node1, "alice", "alice@example.org"),
                          (node2, "alice", "alice@example.org"),
                          (node2, "bob", "robert@example.org"),
                          (node1, "bob", "bob@example.org")):
        res, tok = submit(gw, uid, addr)
        qid = assert_queued(res)
        gw.wait_log(r"queued ", qid=qid)
        sent.append((gw, tok))
    for gw, tok in sent:
        message = gw.sink.wait_for(tok)[0]
        assert_signed_by(zone, gw, message)
    # The directory decides who is a member, on both nodes.
    for gw in (node1, node2):
        s = connect(gw)
        try:
            assert_reply(auth_plain(s, "alice", "wrong"), 535, "5.7.8")
        finally:
            with contextlib.suppress(Exception):
                s.quit()
        res, _ = submit(gw, "alice", "bob@example.org")
        assert_reply(res["mail"], 553, "5.7.1")


def test_killed_node_delivers_what_it_accepted(node1, node2, zone):
    # node1's next hop is down: what it accepts stays in its queue.
    node1.sink.stop()
    accepted = []
    for uid, addr in (("alice", "alice@example.org"),
                      ("bob", "bob@example.org"),
                      ("bob", "robert@example.org")):
        res, tok = submit(node1, uid, addr)
        accepted.append((assert_queued(res), tok))
    for qid, _ in accepted:
        node1.wait_log(r"status=deferred", qid=qid)
    # node2 serves on meanwhile.
    res, tok2 = submit(node2, "alice", "alice@example.org")
    assert_queued(res)
    node1.kill9()
    # All of it is on disk: waiting (active/) or claimed by the delivery
    # that was cut short (busy/).
    on_disk = queued(node1)
    assert all(q in on_disk for q, _ in accepted), (accepted, on_disk)
    node1.sink.start()
    node1.start()
    for qid, tok in accepted:
        message = node1.sink.wait_for(tok)[0]
        assert_signed_by(zone, node1, message)
        node1.wait_log(r"status=sent", qid=qid)
    wait_until(lambda: not any(q in queued(node1) for q, _ in accepted),
               "node1's queue to drain")
    # Each message once: the sink has no duplicates of them.
    for _, tok in accepted:
        assert len(node1.sink.find(tok)) == 1
    assert_signed_by(zone, node2, node2.sink.wait_for(tok2)[0])
