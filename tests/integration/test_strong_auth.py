"""Stronger member authentication (docs/authentication.md): SCRAM-SHA-256
and SCRAM-SHA-256-PLUS with a client written here from RFC 5802 (hashlib
and hmac, independent of the gateway's C code), per-device submission
tokens, and TLS client certificates with AUTH EXTERNAL. Runs against the
shared gateway, except the tenant policy test, which gets its own."""

import base64
import hashlib
import hmac
import os
import re
import smtplib
import subprocess

from helpers import (
    HOST,
    PASSWORDS,
    WAIT_TIMEOUT,
    assert_queued,
    assert_reply,
    auth_plain,
    b64,
    connect,
    make_message,
    send,
    tls_context,
)

ALICE = "alice@example.org"
BOB = "bob@example.org"


def _hmac(key, msg):
    return hmac.new(key, msg, hashlib.sha256).digest()


def server_end_point(s):
    """RFC 5929 tls-server-end-point of the connection: SHA-256 of the
    server's certificate (the test certificate is signed with SHA-256)."""
    return hashlib.sha256(s.sock.getpeercert(binary_form=True)).digest()


class Scram:
    """The client side of one SCRAM-SHA-256(-PLUS) exchange (RFC 5802 3)."""

    def __init__(self, user, password, cbind=None, cnonce=None):
        self.user, self.password = user, password
        self.cbind = cbind  # None: flag "n"; bytes: "p=tls-server-end-point"
        self.cnonce = cnonce or base64.b64encode(os.urandom(18)).decode()
        self.gs2 = "p=tls-server-end-point,," if cbind is not None else "n,,"
        name = user.replace("=", "=3D").replace(",", "=2C")
        self.first_bare = "n=%s,r=%s" % (name, self.cnonce)
        self.final = None
        self.expected_server_final = None

    @property
    def mech(self):
        return "SCRAM-SHA-256-PLUS" if self.cbind is not None else \
            "SCRAM-SHA-256"

    def client_first(self):
        return self.gs2 + self.first_bare

    def client_final(self, server_first):
        attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
        nonce, salt, it = attrs["r"], base64.b64decode(attrs["s"]), \
            int(attrs["i"])
        assert nonce.startswith(self.cnonce) and len(nonce) > len(self.cnonce)
        assert it >= 4096
        salted = hashlib.pbkdf2_hmac("sha256", self.password.encode(), salt,
                                     it)
        ckey = _hmac(salted, b"Client Key")
        stored = hashlib.sha256(ckey).digest()
        cb = self.gs2.encode() + (self.cbind or b"")
        without = "c=%s,r=%s" % (base64.b64encode(cb).decode(), nonce)
        am = ",".join([self.first_bare, server_first, without]).encode()
        proof = bytes(a ^ b for a, b in zip(ckey, _hmac(stored, am)))
        self.expected_server_final = "v=" + base64.b64encode(
            _hmac(_hmac(salted, b"Server Key"), am)).decode()
        self.final = without + ",p=" + base64.b64encode(proof).decode()
        return self.final


def scram_auth(s, sc, final=None):
    """Runs the exchange on client s; final replaces the computed
    client-final (a replay). Returns (code, text) of the last reply."""
    code, text = s.docmd("AUTH", "%s %s" % (sc.mech, b64(sc.client_first())))
    if code != 334:
        return code, text.decode(errors="replace")
    server_first = base64.b64decode(text).decode()
    computed = sc.client_final(server_first)
    code, text = s.docmd(b64(final if final is not None else computed))
    if code != 334:
        return code, text.decode(errors="replace")
    # the server proves it knows the keys too
    assert base64.b64decode(text).decode() == sc.expected_server_final
    code, text = s.docmd("")
    return code, text.decode(errors="replace")


def closing(s):
    try:
        s.quit()
    except Exception:
        s.close()


# --- SCRAM ------------------------------------------------------------------


def test_ehlo_offers_scram_over_tls(gateway):
    s = connect(gateway)
    try:
        mechs = s.esmtp_features["auth"].split()
        assert "SCRAM-SHA-256" in mechs and "SCRAM-SHA-256-PLUS" in mechs
        assert "EXTERNAL" not in mechs  # no client certificate
    finally:
        closing(s)


def test_scram_success_then_mail(gateway):
    s = connect(gateway)
    try:
        assert_reply(scram_auth(s, Scram(ALICE, PASSWORDS[ALICE])), 235,
                     "2.7.0")
        msg, tok = make_message()
        assert_queued(send(s, ALICE, ["bob@example.net"], msg))
        # the sender policy applies whatever the mechanism
        res = send(s, BOB, ["bob@example.net"], make_message()[0])
        assert_reply(res["mail"], 553, "5.7.1")
    finally:
        closing(s)
    gateway.sink.wait_for(tok)
    gateway.wait_log(r"member=%s result=ok mech=SCRAM-SHA-256$" %
                     re.escape(ALICE))


def test_scram_without_initial_response(gateway):
    sc = Scram(BOB, PASSWORDS[BOB])
    s = connect(gateway)
    try:
        code, text = s.docmd("AUTH", sc.mech)
        assert (code, text) == (334, b"")
        code, text = s.docmd(b64(sc.client_first()))
        assert code == 334
        code, text = s.docmd(b64(sc.client_final(
            base64.b64decode(text).decode())))
        assert code == 334
        assert base64.b64decode(text).decode() == sc.expected_server_final
        assert_reply(s.docmd(""), 235, "2.7.0")
    finally:
        closing(s)


def test_scram_wrong_password(gateway):
    s = connect(gateway)
    try:
        assert_reply(scram_auth(s, Scram(ALICE, "not-the-password")), 535,
                     "5.7.8")
    finally:
        closing(s)
    gateway.wait_log(r"member=%s result=fail reason=\"wrong proof\"" %
                     re.escape(ALICE))


def test_scram_unknown_member_fails_like_wrong_password(gateway):
    s = connect(gateway)
    try:
        assert_reply(scram_auth(s, Scram("nobody@example.org", "x")), 535,
                     "5.7.8")
    finally:
        closing(s)
    gateway.wait_log(r"member=nobody@example.org result=fail "
                     r"reason=\"unknown member\"")


def test_scram_replayed_exchange_refused(gateway):
    first = Scram(ALICE, PASSWORDS[ALICE])
    s = connect(gateway)
    try:
        assert_reply(scram_auth(s, first), 235, "2.7.0")
    finally:
        closing(s)
    # the same client-first and client-final in a new session: the
    # server's nonce differs, so the recorded proof is worthless
    again = Scram(ALICE, PASSWORDS[ALICE], cnonce=first.cnonce)
    s = connect(gateway)
    try:
        assert_reply(scram_auth(s, again, final=first.final), 535, "5.7.8")
    finally:
        closing(s)
    gateway.wait_log(r"result=fail reason=\"nonce mismatch\"")


def test_scram_plus_server_end_point(gateway):
    s = connect(gateway)
    try:
        sc = Scram(ALICE, PASSWORDS[ALICE], cbind=server_end_point(s))
        assert_reply(scram_auth(s, sc), 235, "2.7.0")
    finally:
        closing(s)
    gateway.wait_log(r"member=%s result=ok mech=SCRAM-SHA-256-PLUS$" %
                     re.escape(ALICE))


def test_scram_plus_binding_mismatch_refused(gateway):
    s = connect(gateway)
    try:
        # what a man in the middle with another certificate would bind to
        sc = Scram(ALICE, PASSWORDS[ALICE], cbind=b"\x00" * 32)
        assert_reply(scram_auth(s, sc), 535, "5.7.8")
    finally:
        closing(s)
    gateway.wait_log(r"result=fail reason=\"channel binding mismatch\"")


def test_scram_downgrade_refused(gateway):
    """Flag "y" (client could bind, thinks we cannot) while -PLUS is on
    offer: a stripped mechanism list, refused (RFC 5802 6)."""
    s = connect(gateway)
    try:
        code, _ = s.docmd("AUTH", "SCRAM-SHA-256 " +
                          b64("y,,n=%s,r=abcdef" % ALICE))
        assert code == 535
    finally:
        closing(s)
    gateway.wait_log(r"result=fail reason=\"channel binding downgrade\"")


# --- submission tokens ------------------------------------------------------


def add_token(gw, address, label):
    out = gw.admin("member", "token", "add", address, "--label",
                   label).stdout.decode().strip()
    assert re.fullmatch(r"sgt_\d+_[A-Za-z0-9]+", out), out
    return out


def test_token_auth_list_and_revoke(gateway):
    tok = add_token(gateway, ALICE, "laptop")
    s = connect(gateway)
    try:
        assert_reply(auth_plain(s, ALICE, tok), 235, "2.7.0")
    finally:
        closing(s)
    gateway.wait_log(r"member=%s result=ok token=laptop$" % re.escape(ALICE))
    listing = gateway.admin("member", "token", "list", ALICE).stdout.decode()
    row = [ln for ln in listing.splitlines() if ln.startswith("laptop ")]
    assert len(row) == 1, listing
    fields = row[0].split()
    assert fields[2] != "-" and fields[3] == "127.0.0.1", row  # last used
    # the token is the member's: another login cannot use it
    s = connect(gateway)
    try:
        assert_reply(auth_plain(s, BOB, tok), 535, "5.7.8")
    finally:
        closing(s)
    gateway.admin("member", "token", "del", ALICE, "laptop")
    s = connect(gateway)
    try:
        assert_reply(auth_plain(s, ALICE, tok), 535, "5.7.8")
        # the account password still works
        assert_reply(auth_plain(s, ALICE, PASSWORDS[ALICE]), 235, "2.7.0")
    finally:
        closing(s)


def test_token_with_wrong_secret_refused(gateway):
    tok = add_token(gateway, BOB, "phone")
    forged = tok[:-1] + ("A" if tok[-1] != "A" else "B")
    s = connect(gateway)
    try:
        assert_reply(auth_plain(s, BOB, forged), 535, "5.7.8")
        assert_reply(auth_plain(s, BOB, tok), 235, "2.7.0")
    finally:
        closing(s)


def test_tenant_requiring_tokens_refuses_password(make_gateway):
    gw = make_gateway()
    tok = add_token(gw, ALICE, "mta")
    gw.admin("tenant", "require-tokens", "example.org", "yes")
    s = connect(gw)
    try:
        assert_reply(auth_plain(s, ALICE, PASSWORDS[ALICE]), 535, "5.7.8")
        assert_reply(scram_auth(s, Scram(ALICE, PASSWORDS[ALICE])), 535,
                     "5.7.8")
        assert_reply(auth_plain(s, ALICE, tok), 235, "2.7.0")
    finally:
        closing(s)
    gw.wait_log(r"reason=\"account password refused, tokens required\"")
    # other tenants are not affected
    s = connect(gw)
    try:
        assert_reply(auth_plain(s, "carol@other.org",
                                PASSWORDS["carol@other.org"]), 235, "2.7.0")
    finally:
        closing(s)


# --- client certificates ----------------------------------------------------


def client_cert(directory, name):
    cert, key = directory / (name + ".pem"), directory / (name + ".key")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=" + name,
         "-days", "2", "-keyout", str(key), "-out", str(cert)],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return cert, key


def connect_with_cert(gw, cert, key):
    ctx = tls_context()
    ctx.load_cert_chain(str(cert), str(key))
    s = smtplib.SMTP(HOST, gw.submission_port, timeout=WAIT_TIMEOUT)
    s.ehlo("client.test")
    s.starttls(context=ctx)
    s.ehlo("client.test")
    return s


def test_external_with_registered_certificate(gateway, tmp_path):
    cert, key = client_cert(tmp_path, "alice-mta")
    fp = gateway.admin("member", "cert", "add", ALICE,
                       input=cert.read_bytes()).stdout.decode().strip()
    assert fp in gateway.admin("member", "cert", "list",
                               ALICE).stdout.decode()
    s = connect_with_cert(gateway, cert, key)
    try:
        assert "EXTERNAL" in s.esmtp_features["auth"].split()
        code, text = s.docmd("AUTH", "EXTERNAL =")
        assert_reply((code, text), 235, "2.7.0")
        msg, tok = make_message()
        assert_queued(send(s, ALICE, ["bob@example.net"], msg))
        res = send(s, BOB, ["bob@example.net"], make_message()[0])
        assert_reply(res["mail"], 553, "5.7.1")
    finally:
        closing(s)
    got = gateway.sink.wait_for(tok)
    assert got[0].headers("DKIM-Signature"), "not signed"
    gateway.wait_log(r"member=%s result=ok mech=EXTERNAL$" % re.escape(ALICE))
    # without initial response: 334, then an empty response
    s = connect_with_cert(gateway, cert, key)
    try:
        assert s.docmd("AUTH", "EXTERNAL")[0] == 334
        assert_reply(s.docmd(""), 235, "2.7.0")
    finally:
        closing(s)
    # removed: refused from now on
    gateway.admin("member", "cert", "del", ALICE, fp)
    s = connect_with_cert(gateway, cert, key)
    try:
        assert_reply(s.docmd("AUTH", "EXTERNAL ="), 535, "5.7.8")
    finally:
        closing(s)


def test_external_unknown_certificate_refused(gateway, tmp_path):
    cert, key = client_cert(tmp_path, "stranger")
    s = connect_with_cert(gateway, cert, key)
    try:
        assert_reply(s.docmd("AUTH", "EXTERNAL ="), 535, "5.7.8")
    finally:
        closing(s)
    gateway.wait_log(r"member=cert:[0-9a-f]{64} result=fail "
                     r"reason=\"unknown certificate\"")


def test_external_without_certificate_refused(gateway):
    s = connect(gateway)
    try:
        assert_reply(s.docmd("AUTH", "EXTERNAL ="), 535, "5.7.8")
    finally:
        closing(s)


def test_external_authzid_of_another_member_refused(gateway, tmp_path):
    cert, key = client_cert(tmp_path, "bob-mta")
    gateway.admin("member", "cert", "add", BOB, input=cert.read_bytes())
    s = connect_with_cert(gateway, cert, key)
    try:
        assert_reply(s.docmd("AUTH", "EXTERNAL " + b64(ALICE)), 535,
                     "5.7.8")
        assert_reply(s.docmd("AUTH", "EXTERNAL " + b64(BOB)), 235, "2.7.0")
    finally:
        closing(s)
