"""DKIM key lifecycle and DNS publication against a real Knot DNS server
(tests/integration/knot.py): RFC 2136 UPDATE with TSIG, the check of what
is served, the activation gate, rotation by command and by schedule,
revocation and deletion, delegated mode with CNAMEs, and a running gateway
whose mail, signed before, during and after a rotation, verifies with
dkimpy looking its keys up in that server.

Every test has its own knotd and state directory. Waiting for a timer
(publish_lead, retire_for, ...) is polling `subgate key rotate` against a
deadline; nothing asserts how long anything took."""

import os
import sqlite3
import subprocess

import dkim
import dns.query
import dns.tsigkeyring
import dns.update
import pytest

import helpers
from helpers import BIN, wait_until
from knot import Knot

# Short timers: seconds instead of days.
FAST = {
    "dkim_ttl": "1s",
    "publish_lead": "2s",
    "retire_for": "2s",
    "revoke_for": "2s",
    "rotate_after": "1h",
    "dns_timeout": "3s",
}


class Admin:
    """`subgate -c CONFIG` on a state dir of its own."""

    def __init__(self, root, settings):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.state = root / "state"
        self.config = root / "subgate.conf"
        lines = ["state_dir = %s" % self.state, "node_name = t1"]
        lines += ["%s = %s" % kv for kv in settings.items()]
        self.config.write_text("\n".join(lines) + "\n")

    def run(self, *args):
        return subprocess.run(
            [str(BIN / "subgate"), "-c", str(self.config)]
            + [str(a) for a in args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)

    def ok(self, *args):
        res = self.run(*args)
        assert res.returncode == 0, "subgate %s: exit %d: %s" % (
            " ".join(map(str, args)), res.returncode, res.stderr.decode())
        assert res.stderr == b"", res.stderr
        return res.stdout.decode()

    def fails(self, *args, status=1):
        res = self.run(*args)
        assert res.returncode == status, "subgate %s: exit %d: %s %s" % (
            " ".join(map(str, args)), res.returncode, res.stdout,
            res.stderr)
        err = res.stderr.decode()
        assert err.count("\n") <= 1 and (err == "" or err.startswith(
            "subgate: ")), err
        return res.stdout.decode(), err.strip()

    def keys(self, domain="example.org"):
        """{selector: (algo, state)}"""
        out = {}
        for line in self.ok("key", "list", domain).splitlines():
            sel, algo, _, state, _ = line.split("\t")
            out[sel] = (algo, state)
        return out

    def db_rows(self, sql):
        with sqlite3.connect(str(self.state / "subgate.db")) as db:
            return db.execute(sql).fetchall()

    def public(self, sel):
        return self.db_rows("SELECT algo, public_key FROM dkim_key WHERE"
                            " selector = '%s'" % sel)[0]


@pytest.fixture
def knot(tmp_path):
    ns = Knot(tmp_path / "knot")
    ns.add_key("subgate-key")
    ns.add_key("other-key")  # allowed to update tenant.test only
    ns.add_zone("example.org", update_keys=["subgate-key"])
    ns.add_zone("dkim.gateway.example", update_keys=["subgate-key"])
    ns.add_zone("tenant.test", update_keys=["other-key"], update_any=True)
    ns.start()
    yield ns
    ns.stop()


def make_admin(tmp_path, knot, extra=None, tenants=("example.org",)):
    settings = dict(FAST, dns_resolver="127.0.0.1:%d" % knot.port)
    settings.update(extra or {})
    a = Admin(tmp_path / "adm", settings)
    a.ok("init")
    for t in tenants:
        a.ok("tenant", "add", t)
    a.secret = knot.keys["subgate-key"].write_secret(tmp_path / "tsig.key")
    return a


def dns_set(a, knot, domain="example.org", *extra, key="subgate-key",
            secret=None):
    a.ok("dns", "set", domain, "--server", "127.0.0.1:%d" % knot.port,
         "--tsig-name", key, "--tsig-secret-file", secret or a.secret,
         *extra)


def served(knot, sel, domain="example.org"):
    return knot.txt("%s._domainkey.%s" % (sel, domain))


def want_txt(a, sel):
    algo, pub = a.public(sel)
    return "v=DKIM1; k=%s; p=%s" % (algo, pub)


def check_lines(out):
    """[(name, status, server)] of `dns check` output."""
    return [tuple(line.split("\t")) for line in out.splitlines()]


def rotate_until(a, pred, what, *args):
    """Runs `key rotate ARGS` until pred(key list) holds."""
    def step():
        a.ok("key", "rotate", *args)
        return pred(a.keys())
    return wait_until(step, what, interval=0.5)


def states(keys, state):
    return sorted(s for s, (_, st) in keys.items() if st == state)


# --- publication, check, activation gate -------------------------------------


def test_publish_check_and_activation_gate(tmp_path, knot):
    a = make_admin(tmp_path, knot)
    a.ok("key", "generate", "example.org")
    dns_set(a, knot)
    assert "tsig_name: subgate-key" in a.ok("dns", "show", "example.org")
    sels = sorted(a.keys())
    server = "127.0.0.1:%d" % knot.port

    # Nothing published yet: the check says so, activation is refused.
    out, err = a.fails("dns", "check", "example.org")
    assert sorted(check_lines(out)) == sorted(
        ("%s._domainkey.example.org" % s, "missing", server) for s in sels)
    _, err = a.fails("key", "activate", "example.org")
    assert "not served by %s (missing)" % server in err
    assert set(st for _, st in a.keys().values()) == {"pending"}

    # --dry-run prints the update and sends nothing.
    serial = knot.serial("example.org")
    out = a.ok("dns", "publish", "example.org", "--dry-run")
    assert out.splitlines()[0] == "server 127.0.0.1 %d" % knot.port
    assert out.count("update add ") == 2 and out.endswith("send\n")
    assert knot.serial("example.org") == serial
    assert all(served(knot, s) == [] for s in sels)
    assert a.db_rows("SELECT * FROM dns_published") == []

    out = a.ok("dns", "publish", "example.org")
    assert sorted(out.splitlines()) == sorted(
        "%s._domainkey.example.org\tadded" % s for s in sels)
    for s in sels:
        assert served(knot, s) == [want_txt(a, s)]
    rsa = [s for s in sels if a.keys()[s][0] == "rsa"][0]
    strings = knot.txt_strings("%s._domainkey.example.org" % rsa)[0]
    assert [len(x) for x in strings[:-1]] == [255] and len(strings) == 2

    out = a.ok("dns", "check", "example.org")
    assert sorted(check_lines(out)) == sorted(
        ("%s._domainkey.example.org" % s, "ok", server) for s in sels)
    assert set(st for _, st in a.keys().values()) == {"published"}
    out = a.ok("key", "activate", "example.org")
    assert sorted(out.splitlines()) == sorted(
        "%s\t%s\tactive" % (s, a.keys()[s][0]) for s in sels)
    # Nothing changed since: nothing is sent.
    serial = knot.serial("example.org")
    assert a.ok("dns", "publish", "example.org") == ""
    assert knot.serial("example.org") == serial


def test_activation_gate_names_the_lagging_server(tmp_path, knot):
    """Two name servers; the second never gets the update (a secondary
    that lags): activation is refused naming it, --force skips the
    check."""
    lag = Knot(tmp_path / "knot2", address="127.0.0.2", port=knot.port)
    lag.add_zone("lag.test", ns=["ns1.lag.test.", "ns2.lag.test."],
                 records=["ns1 IN A 127.0.0.1", "ns2 IN A 127.0.0.2"])
    knot.stop()
    knot.add_zone("lag.test", update_keys=["subgate-key"],
                  ns=["ns1.lag.test.", "ns2.lag.test."],
                  records=["ns1 IN A 127.0.0.1", "ns2 IN A 127.0.0.2"])
    knot.start()
    lag.start()
    try:
        a = make_admin(tmp_path, knot, tenants=("lag.test",))
        a.ok("key", "generate", "lag.test", "--algo", "ed25519",
             "--selector", "s1")
        dns_set(a, knot, "lag.test")
        a.ok("dns", "publish", "lag.test")
        out, _ = a.fails("dns", "check", "lag.test")
        assert sorted(check_lines(out)) == [
            ("s1._domainkey.lag.test", "missing", "127.0.0.2:%d" % knot.port),
            ("s1._domainkey.lag.test", "ok", "127.0.0.1:%d" % knot.port)]
        _, err = a.fails("key", "activate", "lag.test", "s1")
        assert "not served by 127.0.0.2:%d (missing)" % knot.port in err
        assert a.keys("lag.test")["s1"][1] == "pending"
        out = a.ok("key", "activate", "lag.test", "s1", "--force")
        assert out == "s1\ted25519\tactive\tforced\n"
    finally:
        lag.stop()


def test_wrong_tsig_or_refused_update_changes_nothing(tmp_path, knot):
    a = make_admin(tmp_path, knot)
    a.ok("key", "generate", "example.org", "--algo", "ed25519")
    sel = list(a.keys())[0]
    before = (a.ok("key", "list", "example.org"),
              a.db_rows("SELECT * FROM dns_published"),
              knot.serial("example.org"))
    wrong = knot.keys["subgate-key"].__class__("subgate-key").write_secret(
        tmp_path / "wrong.key")
    cases = [("subgate-key", wrong, "BADSIG"),
             ("nokey", a.secret, "BADKEY"),
             # Knot answers a key its ACL does not allow for the zone
             # as if it did not know the key.
             ("other-key", tmp_path / "other.key", "key other-key")]
    knot.keys["other-key"].write_secret(tmp_path / "other.key")
    for key, secret, what in cases:
        dns_set(a, knot, key=key, secret=secret)
        _, err = a.fails("dns", "publish", "example.org")
        assert what in err, err
        assert (a.ok("key", "list", "example.org"),
                a.db_rows("SELECT * FROM dns_published"),
                knot.serial("example.org")) == before
        assert served(knot, sel) == []
    # A secret others may read is refused before anything is sent.
    os.chmod(a.secret, 0o644)
    _, err = a.fails("dns", "set", "example.org", "--server",
                     "127.0.0.1:%d" % knot.port, "--tsig-name",
                     "subgate-key", "--tsig-secret-file", a.secret)
    assert "chmod 600" in err
    os.chmod(a.secret, 0o600)
    dns_set(a, knot)
    a.ok("dns", "publish", "example.org")
    assert served(knot, sel) == [want_txt(a, sel)]


# --- rotation, revocation, deletion -------------------------------------------


def test_rotate_revoke_delete(tmp_path, knot):
    a = make_admin(tmp_path, knot)
    a.ok("key", "generate", "example.org", "--selector", "old")
    dns_set(a, knot)
    a.ok("dns", "publish", "example.org")
    a.ok("key", "activate", "example.org")
    old = sorted(a.keys())
    old_txt = {s: want_txt(a, s) for s in old}
    old_files = [a.state / "keys" / "example.org" / (s + ".pem") for s in old]
    assert all(f.exists() for f in old_files)

    # A rotation publishes new keys at once, activates them only after
    # publish_lead, and retires the old ones, which stay served.
    out = a.ok("key", "rotate", "example.org")
    new = sorted(set(a.keys()) - set(old))
    assert len(new) == 2
    assert {l.split("\t")[3] for l in out.splitlines()} == {"pending",
                                                            "published"}
    for s in new:
        assert served(knot, s) == [want_txt(a, s)]
    rotate_until(a, lambda k: states(k, "active") == new,
                 "the new keys to become active", "example.org")
    assert states(a.keys(), "retired") == old
    for s in old:
        assert served(knot, s) == [old_txt[s]]

    # Retired -> revoked after retire_for: p= empty in DNS.
    rotate_until(a, lambda k: states(k, "revoked") == old,
                 "the old keys to be revoked", "--due")
    for s in old:
        assert served(knot, s) == [old_txt[s].split("p=")[0] + "p="]
    # Revoked -> deleted after revoke_for: row, file and record gone.
    rotate_until(a, lambda k: not set(old) & set(k),
                 "the old keys to be deleted", "--due")
    for s, f in zip(old, old_files):
        assert served(knot, s) == []
        assert not f.exists()
    assert sorted(n for n, in a.db_rows("SELECT name FROM dns_published")) \
        == sorted("%s._domainkey.example.org" % s for s in new)
    assert states(a.keys(), "active") == new


def test_state_refusals_and_manual_revocation(tmp_path, knot):
    a = make_admin(tmp_path, knot)
    a.ok("key", "generate", "example.org", "--algo", "ed25519",
         "--selector", "k1")
    dns_set(a, knot)
    _, err = a.fails("key", "retire", "example.org", "k1")
    assert err == "subgate: key k1 is pending; only active keys can be retired"
    _, err = a.fails("key", "revoke", "example.org", "k1")
    assert "only retired keys can be revoked (--force" in err
    _, err = a.fails("key", "delete", "example.org", "k1")
    assert err == ("subgate: key k1 is pending; only revoked keys can be "
                   "deleted")
    a.ok("dns", "publish", "example.org")
    a.ok("key", "activate", "example.org", "k1")
    _, err = a.fails("key", "retire", "example.org")
    assert "only active ed25519 key" in err and "--force" in err
    assert a.ok("key", "retire", "example.org", "--force") == \
        "k1\ted25519\tretired\n"
    _, err = a.fails("key", "activate", "example.org", "k1")
    assert "only pending or published" in err
    assert a.ok("key", "revoke", "example.org") == "k1\ted25519\trevoked\n"
    _, err = a.fails("key", "revoke", "example.org", "k1")
    assert "key k1 is revoked" in err
    assert served(knot, "k1") != ["v=DKIM1; k=ed25519; p="]
    a.ok("dns", "publish", "example.org")
    assert served(knot, "k1") == ["v=DKIM1; k=ed25519; p="]
    assert a.ok("key", "delete", "example.org", "k1") == \
        "k1\ted25519\tdeleted\n"
    assert not (a.state / "keys" / "example.org" / "k1.pem").exists()
    assert a.ok("dns", "publish", "example.org") == \
        "k1._domainkey.example.org\tdeleted\n"
    assert served(knot, "k1") == []


def test_rotation_by_schedule_reveals_old_keys(tmp_path, knot):
    a = make_admin(tmp_path, knot, {"rotate_after": "2s",
                                    "reveal_after": "1s"})
    a.ok("key", "generate", "example.org", "--algo", "ed25519",
         "--selector", "first")
    dns_set(a, knot)
    a.ok("dns", "publish", "example.org")
    a.ok("key", "activate", "example.org")
    pem = (a.state / "keys" / "example.org" / "first.pem").read_bytes()
    # Nothing is due at first.
    assert a.ok("key", "rotate", "--due") == ""
    rotate_until(a, lambda k: k.get("first", ("", ""))[1] == "retired",
                 "a scheduled rotation", "--due")
    revealed = a.state / "revealed" / "example.org" / "first.pem"
    assert not revealed.exists()  # still in DNS: not yet
    rotate_until(a, lambda k: "first" not in k,
                 "the first key to be revealed and deleted", "--due")
    assert revealed.read_bytes() == pem
    assert revealed.stat().st_mode & 0o777 == 0o644
    assert served(knot, "first") == []


# --- delegated mode ------------------------------------------------------------


def add_cnames(knot, zone, lines):
    upd = dns.update.Update(zone)
    for line in lines:
        name, ttl, _, _, target = line.split()
        upd.add(name, int(ttl), "CNAME", target)
    r = dns.query.tcp(upd, "127.0.0.1", port=knot.port, timeout=5)
    assert r.rcode() == 0, r


def test_delegated_mode(tmp_path, knot):
    a = make_admin(tmp_path, knot, tenants=("tenant.test",))
    dns_set(a, knot, "tenant.test", "--delegate", "dkim.gateway.example",
            "--slots", "2")
    a.ok("key", "generate", "tenant.test")
    assert sorted(a.keys("tenant.test")) == ["ed25519-t1-1", "rsa-t1-1"]
    lines = a.ok("dns", "records", "tenant.test").splitlines()
    cnames = [l for l in lines if " IN CNAME " in l]
    assert sorted(cnames) == sorted(
        "%s-t1-%d._domainkey.tenant.test. 1 IN CNAME "
        "%s-t1-%d.tenant-test.dkim.gateway.example." % (al, i, al, i)
        for al in ("rsa", "ed25519") for i in (1, 2))
    txts = [l.split()[0] for l in lines if " IN TXT " in l]
    assert sorted(txts) == ["ed25519-t1-1.tenant-test.dkim.gateway.example.",
                            "rsa-t1-1.tenant-test.dkim.gateway.example."]
    a.ok("dns", "publish", "tenant.test")
    target = "rsa-t1-1.tenant-test.dkim.gateway.example"
    assert knot.txt(target) == [want_txt(a, "rsa-t1-1")]
    assert served(knot, "rsa-t1-1", "tenant.test") == []

    # The tenant has not added the CNAMEs yet.
    out, _ = a.fails("dns", "check", "tenant.test")
    res = {(n, s) for n, s, _ in check_lines(out)}
    assert (target, "ok") in res
    assert ("rsa-t1-1._domainkey.tenant.test", "missing") in res
    _, err = a.fails("key", "activate", "tenant.test")
    assert "not served" in err

    add_cnames(knot, "tenant.test", cnames)
    out = a.ok("dns", "check", "tenant.test")
    assert {s for _, s, _ in check_lines(out)} == {"ok"}
    assert len(check_lines(out)) == 6  # 4 CNAMEs, 2 TXT
    a.ok("key", "activate", "tenant.test")
    # A verifier following the CNAME finds the key.
    assert knot.dnsfunc(b"rsa-t1-1._domainkey.tenant.test.").decode() == \
        want_txt(a, "rsa-t1-1")

    # The next keys take the second slot: no new CNAME needed.
    a.ok("key", "rotate", "tenant.test")
    assert sorted(a.keys("tenant.test")) == [
        "ed25519-t1-1", "ed25519-t1-2", "rsa-t1-1", "rsa-t1-2"]
    assert states(a.keys("tenant.test"), "published") == [
        "ed25519-t1-2", "rsa-t1-2"]
    # Two slots in use per algorithm: a third rotation has no selector.
    assert a.ok("dns", "records", "tenant.test").count(" IN CNAME ") == 4


def test_delegated_label_collision(tmp_path, knot):
    a = make_admin(tmp_path, knot, tenants=("a-b.test", "a.b-test"))
    dns_set(a, knot, "a-b.test", "--delegate", "dkim.gateway.example")
    res = a.run("dns", "set", "a.b-test", "--server",
                "127.0.0.1:%d" % knot.port, "--tsig-name", "subgate-key",
                "--tsig-secret-file", a.secret, "--delegate",
                "dkim.gateway.example")
    assert res.returncode == 1
    assert b"would both be a-b-test.dkim.gateway.example" in res.stderr


# --- a running gateway ---------------------------------------------------------


def verify(knot, raw):
    """[(s=, ok)] for every signature, keys looked up in knotd."""
    out = []
    for i, tags in enumerate(helpers.dkimverify.signature_tags(raw)):
        try:
            ok = bool(dkim.DKIM(raw).verify(idx=i, dnsfunc=knot.dnsfunc))
        except dkim.DKIMException:
            ok = False
        out.append((tags["s"], ok))
    return out


def send_one(gw):
    msg, tok = helpers.make_message()
    helpers.assert_queued(helpers.submit(gw, "alice@example.org", msg))
    return gw.sink.wait_for(tok)[0].raw


def test_gateway_signs_through_a_rotation(make_gateway, knot, tmp_path):
    gw = make_gateway(settings=dict(FAST, dns_resolver="127.0.0.1:%d"
                                    % knot.port))
    secret = knot.keys["subgate-key"].write_secret(tmp_path / "tsig.key")
    gw.admin("dns", "set", "example.org", "--server",
             "127.0.0.1:%d" % knot.port, "--tsig-name", "subgate-key",
             "--tsig-secret-file", secret)
    gw.admin("dns", "publish", "example.org")
    old = {l.split("\t")[0] for l in gw.admin(
        "key", "list", "example.org").stdout.decode().splitlines()
        if "\tactive\t" in l}
    assert len(old) == 2

    before = send_one(gw)
    res = verify(knot, before)
    assert {s for s, _ in res} == old and all(ok for _, ok in res)

    gw.admin("key", "rotate", "example.org")
    during = send_one(gw)  # the new keys are published, not yet signing
    res = verify(knot, during)
    assert {s for s, _ in res} == old and all(ok for _, ok in res)

    def rotated():
        out = gw.admin("key", "rotate", "example.org").stdout.decode()
        keys = gw.admin("key", "list", "example.org").stdout.decode()
        return {l.split("\t")[0] for l in keys.splitlines()
                if "\tactive\t" in l} - old or None
    new = wait_until(rotated, "the new keys to become active", interval=0.5)
    assert len(new) == 2
    # The running signer uses the new keys without a restart.
    after = send_one(gw)
    res = verify(knot, after)
    assert {s for s, _ in res} == new and all(ok for _, ok in res)
    # Mail signed before still verifies: the retired keys are served.
    for raw in (before, during):
        assert all(ok for _, ok in verify(knot, raw))
    # Revoked (p= empty, published), the old keys verify nothing more:
    # the verifier really asks knotd.
    gw.admin("key", "revoke", "example.org")
    gw.admin("dns", "publish", "example.org")
    assert not any(ok for _, ok in verify(knot, before))
    assert all(ok for _, ok in verify(knot, after))
