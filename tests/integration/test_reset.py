"""Password reset: `subgate member pgpkey`, `subgate member reset` and
`subgate mailgate` against a running gateway. OpenPGP keys are made in a
temporary GNUPGHOME with gpg (no passphrase); signatures in the past come
from gpg's --faked-system-time. A reset is shown end to end: the reply
reaches the sink, carries valid DKIM signatures (dkimpy), decrypts with
the member's key, and the password in it works for AUTH while the old one
is refused (535). A refused request leaves the stored hash as it was and
the old password working."""

import email
import os
import pwd
import re
import shutil
import sqlite3
import subprocess
import tempfile
import time

import pytest

import dkimverify
from helpers import (
    BIN,
    Gateway,
    auth_plain,
    connect,
    token,
    wait_until,
)

CHPASSWD = "chpasswd@example.org"
PHRASE = "Please change my mail password"
WINDOW = 3600
RATE = 2
EX_TEMPFAIL = 75


# --- gpg ----------------------------------------------------------------


class Gpg:
    """gpg in its own GNUPGHOME; every key without a passphrase."""

    def __init__(self, home):
        self.home = str(home)
        os.makedirs(self.home, mode=0o700, exist_ok=True)

    def run(self, *args, input=None, faked=None, check=True):
        argv = ["gpg", "--homedir", self.home, "--batch", "--yes",
                "--pinentry-mode", "loopback", "--passphrase", ""]
        if faked is not None:
            # "!" freezes the clock at that second.
            argv += ["--faked-system-time", "%d!" % faked,
                     "--ignore-time-conflict"]
        res = subprocess.run(argv + list(args),
                             input=b"" if input is None else input,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             timeout=120)
        if check and res.returncode != 0:
            raise AssertionError("gpg %s: %s" % (" ".join(args),
                                                 res.stderr.decode()))
        return res

    def fpr(self, uid):
        out = self.run("--with-colons", "--list-keys", uid).stdout.decode()
        for line in out.splitlines():
            if line.startswith("fpr:"):
                return line.split(":")[9]
        raise AssertionError("no key for %s" % uid)

    def gen(self, uid, faked=None, sign_subkey=False):
        """A primary ed25519 signing key with a cv25519 encryption subkey
        (and a signing subkey if asked): returns the fingerprint."""
        self.run("--quick-gen-key", uid, "ed25519", "sign", "2d",
                 faked=faked)
        fpr = self.fpr(uid)
        self.run("--quick-add-key", fpr, "cv25519", "encr", "2d",
                 faked=faked)
        if sign_subkey:
            self.run("--quick-add-key", fpr, "ed25519", "sign", "2d",
                     faked=faked)
        return fpr

    def export(self, fpr):
        return self.run("--armor", "--export", fpr).stdout

    def export_secret(self, fpr):
        return self.run("--armor", "--export-secret-keys", fpr).stdout

    def clearsign(self, fpr, text, faked=None):
        return self.run("--local-user", fpr, "--clearsign",
                        input=text.encode(), faked=faked).stdout

    def detach(self, fpr, data, faked=None):
        return self.run("--local-user", fpr, "--armor", "--detach-sign",
                        input=data, faked=faked).stdout

    def decrypt(self, data):
        return self.run("--decrypt", input=data).stdout

    def revoke(self, fpr):
        """Imports the revocation certificate gpg made with the key."""
        path = os.path.join(self.home, "openpgp-revocs.d", fpr + ".rev")
        with open(path) as f:
            cert = f.read().replace(":-----BEGIN", "-----BEGIN")
        self.run("--import", input=cert.encode())

    def expire(self, fpr, faked):
        """Makes the key (and its subkeys) expire 100 seconds after the
        faked time."""
        self.run("--quick-set-expire", fpr, "seconds=100", faked=faked)
        self.run("--quick-set-expire", fpr, "seconds=100", "*", faked=faked)

    def close(self):
        # gpg-agent, started for the secret keys, belongs to this home.
        subprocess.run(["gpgconf", "--homedir", self.home, "--kill", "all"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=60)


# --- fixtures -----------------------------------------------------------


@pytest.fixture(scope="module")
def gpg(tmp_path_factory):
    g = Gpg(tmp_path_factory.mktemp("gnupg"))
    yield g
    g.close()


@pytest.fixture(scope="module")
def gw(gateway_template, tmp_path_factory):
    g = Gateway(tmp_path_factory.mktemp("gw-reset"), gateway_template,
                {"reset_window": "1h", "reset_rate": str(RATE)})
    try:
        g.start()
        g.admin("tenant", "reset", "example.org", "--address", CHPASSWD)
    except BaseException:
        g.close()
        raise
    yield g
    g.close()
    # The tenant keyring never holds a secret key, so gpg never started
    # an agent there; make sure of it all the same.
    keyring = g.state / "pgp" / "example.org"
    if keyring.is_dir():
        subprocess.run(["gpgconf", "--homedir", str(keyring), "--kill",
                        "all"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=60)


class Member:
    def __init__(self, address, password, fpr):
        self.address = address
        self.password = password
        self.fpr = fpr


def new_member(gw, gpg, faked=None, sign_subkey=False, register=True):
    """A fresh member of example.org with a password and (by default) a
    registered key made `faked` seconds since the epoch."""
    address = "m%s@example.org" % token()[:10]
    password = "pw-" + token()
    gw.admin("member", "add", address, "--password-stdin",
             input=password + "\n")
    fpr = gpg.gen("Member <%s>" % address, faked=faked,
                  sign_subkey=sign_subkey)
    if register:
        out = gw.admin("member", "pgpkey", address,
                       input=gpg.export(fpr)).stdout.decode()
        assert out.split() == [address, fpr]
    return Member(address, password, fpr)


def stored_hash(gw, address):
    db = sqlite3.connect(str(gw.state / "subgate.db"))
    try:
        row = db.execute("SELECT password_hash FROM member WHERE address = ?",
                         (address,)).fetchone()
    finally:
        db.close()
    return row[0] if row else None


def auth_code(gw, address, password):
    s = connect(gw)
    try:
        return auth_plain(s, address, password)[0]
    finally:
        try:
            s.quit()
        except Exception:
            s.close()


def tenant_keyring(gw):
    return Gpg(gw.state / "pgp" / "example.org")


def mailgate(gw, message, sender="someone@example.net", extra=(),
             config=None):
    argv = [str(BIN / "subgate"), "-c", str(config or gw.config), "mailgate"]
    if sender is not None:
        argv += ["-f", sender]
    argv += list(extra)
    return subprocess.run(argv, input=message, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=120)


def headers(to=CHPASSWD, subject="password", extra=()):
    lines = ["From: Someone <someone@example.net>", "To: %s" % to,
             "Subject: %s" % subject,
             "Message-ID: <%s@client.test>" % token(),
             "Date: %s" % email.utils.formatdate()]
    return "\r\n".join(lines + list(extra)) + "\r\n"


def inline_request(gpg, fpr, text=PHRASE, faked=None, to=CHPASSWD):
    body = gpg.clearsign(fpr, text + "\n", faked=faked)
    return headers(to).encode() + b"\r\n" + body


def mime_request(gpg, fpr, text=PHRASE, faked=None):
    """RFC 3156 multipart/signed: the first part is signed as sent, with
    CRLF line ends."""
    part = ("Content-Type: text/plain; charset=us-ascii\r\n"
            "Content-Transfer-Encoding: 7bit\r\n\r\n%s\r\n" % text).encode()
    sig = gpg.detach(fpr, part, faked=faked)
    b = "sig-" + token()
    head = headers(extra=[
        "MIME-Version: 1.0",
        'Content-Type: multipart/signed; micalg=pgp-sha256;\r\n'
        ' protocol="application/pgp-signature"; boundary="%s"' % b])
    return (head.encode() + b"\r\nThis is an OpenPGP/MIME signed message.\r\n"
            + b"--" + b.encode() + b"\r\n" + part + b"\r\n--" + b.encode()
            + b"\r\nContent-Type: application/pgp-signature;"
            + b' name="signature.asc"\r\n\r\n'
            + sig.replace(b"\n", b"\r\n") + b"\r\n--" + b.encode()
            + b"--\r\n")


def mailgate_line(res, needle):
    """The mailgate log line (stderr) that holds needle."""
    for line in res.stderr.decode(errors="replace").splitlines():
        if " mailgate " in line and needle in line:
            return line
    raise AssertionError("no mailgate line with %r in: %s"
                         % (needle, res.stderr.decode(errors="replace")))


def reply_for(gw, address, count=1):
    """The messages to address at the sink, once there are count."""
    def find():
        ms = [m for m in gw.sink.messages() if address in m.rcpt_to]
        return ms if len(ms) >= count else None
    return wait_until(find, "%d message(s) to %s at the sink"
                      % (count, address))


def password_from(gpg, msg):
    """Decrypts the PGP/MIME reply with the member's key and returns the
    password in it."""
    assert b"multipart/encrypted" in msg.head
    assert b'protocol="application/pgp-encrypted"' in msg.raw
    armored = re.search(rb"-----BEGIN PGP MESSAGE-----.*?"
                        rb"-----END PGP MESSAGE-----", msg.raw, re.S)
    assert armored, "no OpenPGP message in the reply"
    plain = gpg.decrypt(armored.group(0)).decode()
    assert plain.startswith("Content-Type: text/plain")
    m = re.search(r"^    (\S+)\r?$", plain, re.M)
    assert m, "no password in %r" % plain
    return m.group(1)


def assert_signed(gw, msg, domain="example.org"):
    results = dkimverify.verify_message(msg.raw, gw.records)
    assert results, "reply has no DKIM signature"
    for _, tags, ok in results:
        assert ok, "DKIM signature %r does not verify" % (tags,)
        assert tags["d"] == domain
    assert {tags["a"] for _, tags, _ in results} == {"rsa-sha256",
                                                     "ed25519-sha256"}


def assert_reset_works(gw, gpg, member, msg):
    """The reply decrypts, is signed, and its password replaced the old."""
    assert_signed(gw, msg)
    assert msg.mail_from == CHPASSWD
    assert msg.headers("From") == ["<%s>" % CHPASSWD]
    pw = password_from(gpg, msg)
    # 24 characters of the 57-letter alphabet: 140 bits.
    assert re.fullmatch(
        r"[23456789abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ]{24}", pw)
    assert PHRASE.encode() not in msg.raw and pw.encode() not in msg.raw
    assert auth_code(gw, member.address, pw) == 235
    assert auth_code(gw, member.address, member.password) == 535
    return pw


def assert_unchanged(gw, member, before):
    assert stored_hash(gw, member.address) == before
    assert auth_code(gw, member.address, member.password) == 235


# --- member pgpkey ------------------------------------------------------


def test_pgpkey_registers_the_fingerprint(gw, gpg):
    m = new_member(gw, gpg)
    show = gw.admin("member", "show", m.address).stdout.decode()
    assert "pgp_fingerprint: %s\n" % m.fpr in show
    listed = tenant_keyring(gw).run("--with-colons", "--list-keys",
                                    m.fpr).stdout.decode()
    assert "fpr:::::::::%s:" % m.fpr in listed
    # No secret key ever reaches the tenant keyring.
    secret = tenant_keyring(gw).run("--with-colons", "--list-secret-keys",
                                    check=False).stdout
    assert b"sec:" not in secret


def test_pgpkey_replacing_drops_the_old_key(gw, gpg):
    m = new_member(gw, gpg)
    other = gpg.gen("Other <%s>" % m.address.replace("@", "-2@"))
    gw.admin("member", "pgpkey", m.address, input=gpg.export(other))
    assert "pgp_fingerprint: %s\n" % other in gw.admin(
        "member", "show", m.address).stdout.decode()
    old = tenant_keyring(gw).run("--list-keys", m.fpr, check=False)
    assert old.returncode != 0, "the replaced key is still in the keyring"


@pytest.mark.parametrize("what", ["secret", "two-keys", "garbage", "empty",
                                  "expired", "revoked"])
def test_pgpkey_refuses(gw, gpg, what):
    m = new_member(gw, gpg, faked=int(time.time()) - 86400, register=False)
    if what == "secret":
        data = gpg.export_secret(m.fpr)
    elif what == "two-keys":
        other = gpg.gen("Two <two-%s@example.net>" % token())
        data = gpg.export(m.fpr) + gpg.export(other)
    elif what == "garbage":
        data = b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nnot a key\n"
    elif what == "empty":
        data = b""
    elif what == "expired":
        gpg.expire(m.fpr, int(time.time()) - 3600)
        data = gpg.export(m.fpr)
    else:
        gpg.revoke(m.fpr)
        data = gpg.export(m.fpr)
    res = gw.admin("member", "pgpkey", m.address, input=data, check=False)
    assert res.returncode == 1, res
    err = res.stderr.decode()
    assert err.startswith("subgate: ") and err.count("\n") == 1
    assert "pgp_fingerprint: \n" in gw.admin("member", "show",
                                             m.address).stdout.decode()
    secret = tenant_keyring(gw).run("--with-colons", "--list-secret-keys",
                                    check=False).stdout
    assert b"sec:" not in secret
    # Nothing made gpg start an agent for the tenant keyring.
    assert not list((gw.state / "pgp" / "example.org").glob("S.gpg-agent*"))


def test_pgpkey_refuses_a_key_of_another_member(gw, gpg):
    a = new_member(gw, gpg)
    b = new_member(gw, gpg, register=False)
    res = gw.admin("member", "pgpkey", b.address, input=gpg.export(a.fpr),
                   check=False)
    assert res.returncode == 1
    assert "another member" in res.stderr.decode()


# --- member reset -------------------------------------------------------


def test_reset_command_mails_the_password_encrypted(gw, gpg):
    m = new_member(gw, gpg)
    before = stored_hash(gw, m.address)
    out = gw.admin("member", "reset", m.address).stdout.decode()
    qid = re.fullmatch(r"%s\tqueued as ([0-9A-Z]{12})\n" % re.escape(
        m.address), out).group(1)
    msg = reply_for(gw, m.address)[0]
    assert msg.headers("Auto-Submitted") == ["auto-generated"]
    assert_reset_works(gw, gpg, m, msg)
    assert stored_hash(gw, m.address) != before
    gw.wait_log(r"to=<%s> .*status=sent" % re.escape(m.address), qid=qid)


def test_reset_print_shows_the_password(gw, gpg):
    m = new_member(gw, gpg, register=False)
    out = gw.admin("member", "reset", m.address, "--print").stdout.decode()
    pw = out.strip()
    assert re.fullmatch(r"[2-9a-km-zA-HJ-NP-Z]{24}", pw)
    assert auth_code(gw, m.address, pw) == 235
    assert auth_code(gw, m.address, m.password) == 535


def test_reset_without_key_is_refused(gw, gpg):
    m = new_member(gw, gpg, register=False)
    before = stored_hash(gw, m.address)
    res = gw.admin("member", "reset", m.address, check=False)
    assert res.returncode == 1
    assert "no OpenPGP key" in res.stderr.decode()
    assert stored_hash(gw, m.address) == before


def test_reset_leaves_the_password_when_the_queue_fails(gw, gpg, tmp_path):
    """Atomicity: a reply that cannot be queued changes nothing."""
    m = new_member(gw, gpg)
    before = stored_hash(gw, m.address)
    queue = tmp_path / "queue"
    queue.mkdir()
    (queue / "tmp").write_text("not a directory\n")
    (queue / "active").mkdir()
    conf = tmp_path / "broken-queue.conf"
    conf.write_text(gw.config.read_text() + "queue_dir = %s\n" % queue)
    res = subprocess.run([str(BIN / "subgate"), "-c", str(conf), "member",
                          "reset", m.address], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, timeout=120)
    assert res.returncode == 1
    assert "not changed" in res.stderr.decode()
    assert list((queue / "active").iterdir()) == []
    assert_unchanged(gw, m, before)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_reset_as_root_queues_as_the_service_user(gw, gpg):
    """Run as root with `user` set, the reply is queued as that user, so
    that the queue runner (which runs as it) can read and remove it."""
    nobody = pwd.getpwnam("nobody")
    m = new_member(gw, gpg)
    top = tempfile.mkdtemp(prefix="sg-reset-q-", dir="/tmp")
    try:
        os.chmod(top, 0o755)
        queue = os.path.join(top, "queue")
        for d in (queue, queue + "/tmp", queue + "/active"):
            os.mkdir(d, 0o700)
            os.chown(d, nobody.pw_uid, nobody.pw_gid)
        conf = os.path.join(top, "root.conf")
        with open(conf, "w") as f:
            f.write(gw.config.read_text() + "user = nobody\n"
                    "queue_dir = %s\n" % queue)
        res = subprocess.run([str(BIN / "subgate"), "-c", conf, "member",
                              "reset", m.address], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, timeout=120)
        assert res.returncode == 0, res
        files = os.listdir(queue + "/active")
        assert len(files) == 1
        st = os.stat(os.path.join(queue, "active", files[0]))
        assert (st.st_uid, st.st_gid) == (nobody.pw_uid, nobody.pw_gid)
        assert os.geteuid() == 0
    finally:
        shutil.rmtree(top)


def test_reset_leaves_the_password_when_the_signer_is_away(gw, gpg,
                                                           tmp_path):
    m = new_member(gw, gpg)
    before = stored_hash(gw, m.address)
    conf = tmp_path / "no-signer.conf"
    conf.write_text(gw.config.read_text() + "run_dir = %s\n" % tmp_path)
    req = inline_request(gpg, m.fpr)
    res = mailgate(gw, req, config=conf)
    assert res.returncode == EX_TEMPFAIL, res
    assert_unchanged(gw, m, before)
    # Nothing was recorded: the same request works once the signer is back.
    res = mailgate(gw, req)
    assert res.returncode == 0
    mailgate_line(res, "result=reset")


# --- mailgate: accepted -------------------------------------------------


def test_mailgate_inline_request(gw, gpg):
    m = new_member(gw, gpg)
    res = mailgate(gw, inline_request(gpg, m.fpr))
    assert res.returncode == 0, res
    line = mailgate_line(res, "result=reset")
    assert "fpr=%s" % m.fpr in line and "member=%s" % m.address in line
    msg = reply_for(gw, m.address)[0]
    assert msg.headers("Auto-Submitted") == ["auto-replied"]
    assert_reset_works(gw, gpg, m, msg)


def test_mailgate_pgp_mime_request_signed_by_a_subkey(gw, gpg):
    m = new_member(gw, gpg, sign_subkey=True)
    res = mailgate(gw, mime_request(gpg, m.fpr))
    assert res.returncode == 0, res
    line = mailgate_line(res, "result=reset")
    # The subkey's signature counts for the registered primary key.
    assert "fpr=%s" % m.fpr in line and "kind=mime" in line
    assert_reset_works(gw, gpg, m, reply_for(gw, m.address)[0])


def test_mailgate_lf_lines_and_return_path(gw, gpg):
    """As an MTA pipe hands it over: LF line ends, the sender in
    Return-Path:, no -f."""
    m = new_member(gw, gpg)
    req = inline_request(gpg, m.fpr).replace(b"\r\n", b"\n")
    req = b"Return-Path: <someone@example.net>\n" + req
    res = mailgate(gw, req, sender=None)
    assert res.returncode == 0, res
    mailgate_line(res, "result=reset")
    assert_reset_works(gw, gpg, m, reply_for(gw, m.address)[0])


# --- mailgate: refused --------------------------------------------------


def refused_request(gw, gpg, m, what):
    """A request of kind what for member m, and the reason it must log."""
    now = int(time.time())
    if what == "tampered":
        req = inline_request(gpg, m.fpr).replace(b"mail password",
                                                 b"mail  password")
        return req, "bad-signature"
    if what == "tampered-mime":
        req = mime_request(gpg, m.fpr).replace(b"mail password\r\n",
                                               b"mail passwort\r\n")
        return req, "bad-signature"
    if what == "unsigned":
        return headers().encode() + b"\r\n" + PHRASE.encode() + b"\r\n", \
            "unsigned"
    if what == "wrong-key":
        other = gpg.gen("Stranger <s-%s@example.net>" % token())
        return inline_request(gpg, other), "unknown-key"
    if what == "keyring-but-unregistered":
        other = gpg.gen("Known <k-%s@example.net>" % token())
        tenant_keyring(gw).run("--import", input=gpg.export(other))
        return inline_request(gpg, other), "unknown-key"
    if what == "wrong-text":
        return inline_request(gpg, m.fpr, text="Please change my password"), \
            "wrong-text"
    if what == "old-dated":
        return inline_request(gpg, m.fpr, faked=now - 2 * WINDOW), "too-old"
    if what == "future-dated":
        return inline_request(gpg, m.fpr, faked=now + 2 * WINDOW), "too-new"
    if what == "expired-key":
        req = inline_request(gpg, m.fpr)
        # The key expired after the request was signed (its new expiry
        # reaches the tenant keyring as an update would).
        gpg.expire(m.fpr, now - 1000)
        tenant_keyring(gw).run("--import", input=gpg.export(m.fpr))
        return req, "key-expired"
    if what == "revoked-key":
        req = inline_request(gpg, m.fpr)
        gpg.revoke(m.fpr)
        tenant_keyring(gw).run("--import", input=gpg.export(m.fpr))
        return req, "key-revoked"
    raise AssertionError(what)


@pytest.mark.parametrize("what", [
    "tampered", "tampered-mime", "unsigned", "wrong-key",
    "keyring-but-unregistered", "wrong-text", "old-dated", "future-dated",
    "expired-key", "revoked-key"])
def test_mailgate_refuses(gw, gpg, what):
    # Keys made a day ago, so that signatures in the past are younger than
    # the key.
    m = new_member(gw, gpg, faked=int(time.time()) - 86400)
    before = stored_hash(gw, m.address)
    req, reason = refused_request(gw, gpg, m, what)
    res = mailgate(gw, req)
    assert res.returncode == 0, res
    line = mailgate_line(res, "result=refused")
    if reason is not None:
        assert "reason=%s" % reason in line, line
    assert_unchanged(gw, m, before)


def test_mailgate_refuses_a_replay(gw, gpg):
    m = new_member(gw, gpg)
    req = inline_request(gpg, m.fpr)
    first = mailgate(gw, req)
    assert first.returncode == 0
    mailgate_line(first, "result=reset")
    pw = password_from(gpg, reply_for(gw, m.address)[0])
    after = stored_hash(gw, m.address)
    again = mailgate(gw, req)
    assert again.returncode == 0
    assert "reason=replay" in mailgate_line(again, "result=refused")
    assert stored_hash(gw, m.address) == after
    assert auth_code(gw, m.address, pw) == 235


def test_mailgate_rate_limit(gw, gpg):
    m = new_member(gw, gpg, faked=int(time.time()) - 86400)
    now = int(time.time())
    for i in range(RATE):
        res = mailgate(gw, inline_request(gpg, m.fpr, faked=now - 60 * (i + 1)))
        mailgate_line(res, "result=reset")
    before = stored_hash(gw, m.address)
    res = mailgate(gw, inline_request(gpg, m.fpr, faked=now - 600))
    assert res.returncode == 0
    assert "reason=rate-limit" in mailgate_line(res, "result=refused")
    assert stored_hash(gw, m.address) == before


@pytest.mark.parametrize("how", ["-f", "return-path", "no-sender"])
def test_mailgate_drops_null_sender(gw, gpg, how):
    m = new_member(gw, gpg)
    before = stored_hash(gw, m.address)
    req = inline_request(gpg, m.fpr)
    if how == "-f":
        res = mailgate(gw, req, sender="")
    elif how == "return-path":
        res = mailgate(gw, b"Return-Path: <>\r\n" + req, sender=None)
    else:
        res = mailgate(gw, req, sender=None)
    assert res.returncode == 0
    assert "reason=null-sender" in mailgate_line(res, "result=dropped")
    assert_unchanged(gw, m, before)


def test_mailgate_notice_to_members_only(gw, gpg):
    """A refused request of a member gets a short plain notice at their
    own address, at most reset_rate a day; a stranger gets nothing."""
    m = new_member(gw, gpg, faked=int(time.time()) - 86400)
    res = mailgate(gw, inline_request(gpg, m.fpr, text="Change it now"))
    assert "reason=wrong-text" in mailgate_line(res, "result=refused")
    notice = reply_for(gw, m.address)[0]
    assert_signed(gw, notice)
    assert notice.headers("Auto-Submitted") == ["auto-replied"]
    body = notice.body.decode()
    assert "was not" in body and len(body) < 600
    for internal in (m.fpr, "gpg", "gpgme", "sqlite", "/"):
        assert internal not in body, internal
    for i in range(RATE + 1):
        res = mailgate(gw, inline_request(gpg, m.fpr, text="Change it now",
                                          faked=int(time.time()) - 30 - i))
        assert "reason=wrong-text" in mailgate_line(res, "result=refused")
    # Unsigned mail from a stranger: logged, never answered.
    stranger = "nobody-%s@example.net" % token()
    res = mailgate(gw, headers().encode() + b"\r\nhello\r\n", sender=stranger)
    assert "reason=unsigned" in mailgate_line(res, "result=refused")
    # One more message all the way through shows that the sink has seen
    # everything the gateway queued before it.
    probe = new_member(gw, gpg)
    gw.admin("member", "reset", probe.address)
    reply_for(gw, probe.address)
    assert len([x for x in gw.sink.messages()
                if m.address in x.rcpt_to]) == RATE
    assert not [x for x in gw.sink.messages() if stranger in x.rcpt_to]


def test_mailgate_oversized_and_unknown_recipient(gw, gpg):
    m = new_member(gw, gpg)
    before = stored_hash(gw, m.address)
    big = inline_request(gpg, m.fpr) + b"x" * (1024 * 1024)
    res = mailgate(gw, big)
    assert res.returncode == 0
    assert "reason=too-large" in mailgate_line(res, "result=dropped")
    res = mailgate(gw, inline_request(gpg, m.fpr, to="chpasswd@unknown.test"))
    assert res.returncode == 0
    assert "reason=unknown-recipient" in mailgate_line(res, "result=refused")
    assert_unchanged(gw, m, before)


def test_tenant_reset_settings(gw):
    out = gw.admin("tenant", "reset", "example.org").stdout.decode()
    assert out == "address: %s\naccept_in_gateway: no\n" % CHPASSWD
    res = gw.admin("tenant", "reset", "example.org", "--address",
                   "chpasswd@other.org", check=False)
    assert res.returncode == 1
    res = gw.admin("tenant", "reset", "example.org", "--address",
                   "alice@example.org", check=False)
    assert res.returncode == 1


# --- requests taken by subgated itself (accept_in_gateway) --------------

OTHER_CHPASSWD = "chpasswd@other.org"


def spool_dir(gw):
    return gw.queue_dir / "mailgate"


def spool_files(gw):
    d = spool_dir(gw)
    return sorted(p.name for p in d.iterdir() if p.is_file()) \
        if d.is_dir() else []


def failed_files(gw):
    d = spool_dir(gw) / "failed"
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def plain(gw):
    """A client on the submission port that never authenticates and
    stays in plain text."""
    return connect(gw, tls=None)


def gate_open(gw):
    """Whether subgated has picked up CHPASSWD as accepted in gateway
    (it rereads the setting every few seconds)."""
    s = plain(gw)
    try:
        if s.mail("probe@example.net")[0] != 250:
            return False
        return s.rcpt(CHPASSWD)[0] == 250
    finally:
        s.close()


@pytest.fixture(scope="module")
def gated(gw):
    """example.org takes requests in the gateway; other.org has a
    change-password address but does not."""
    gw.admin("tenant", "reset", "other.org", "--address", OTHER_CHPASSWD)
    gw.admin("tenant", "reset", "example.org", "--address", CHPASSWD,
             "--accept-in-gateway", "yes")
    wait_until(lambda: gate_open(gw), "subgated to accept %s" % CHPASSWD)
    yield gw
    gw.admin("tenant", "reset", "example.org", "--address", CHPASSWD,
             "--accept-in-gateway", "no")


def submit_request(gw, message, sender="someone@example.net"):
    """Sends message to CHPASSWD without AUTH or TLS; returns the queue id
    of the 250 reply."""
    s = plain(gw)
    try:
        code, text = s.mail(sender)
        assert code == 250, (code, text)
        code, text = s.rcpt(CHPASSWD)
        assert code == 250, (code, text)
        code, text = s.data(message)
        assert code == 250, (code, text)
        m = re.search(r"^2\.0\.0 Ok: queued as ([0-9A-Z]{12})$",
                      text.decode())
        assert m, text
        return m.group(1)
    finally:
        s.quit()


def wait_handled(gw, qid):
    """The worker ran `subgate mailgate` for qid and removed the file."""
    gw.wait_log(r"mailgate done$", qid=qid)
    assert qid not in spool_files(gw)


def test_gateway_takes_a_signed_request_without_auth(gated, gpg):
    gw = gated
    m = new_member(gw, gpg)
    qid = submit_request(gw, inline_request(gpg, m.fpr))
    line = gw.wait_log(r"chpasswd request", qid=qid)
    assert ("from=<someone@example.net> to=<%s> client=[127.0.0.1]"
            % CHPASSWD) in line
    msg = reply_for(gw, m.address)[0]
    assert_reset_works(gw, gpg, m, msg)
    wait_handled(gw, qid)
    # Nothing of the request itself was relayed.
    assert not [x for x in gw.sink.messages() if CHPASSWD in x.rcpt_to]


def test_gateway_refuses_other_recipients_without_auth(gated):
    gw = gated
    before_queue = gw.queue_files()
    before_spool = spool_files(gw)
    tok = token()
    s = plain(gw)
    try:
        assert s.mail("someone@example.net")[0] == 250
        for rcpt in ("bob@example.net", "alice@example.org",
                     "CHPASSWD@example.org.evil.test"):
            code, text = s.rcpt(rcpt)
            assert (code, text.decode()[:5]) == (530, "5.7.0"), (rcpt, text)
        code, text = s.docmd("DATA")
        assert code == 503, (code, text)
        # A message sent anyway is read as commands and refused.
        code, _ = s.docmd("Subject: %s" % tok)
        assert code >= 500
        code, text = s.docmd("BDAT", "10 LAST")
        assert code >= 500, (code, text)
    finally:
        s.close()
    # With TLS it is the same.
    s = connect(gw)
    try:
        assert s.mail("someone@example.net")[0] == 250
        assert s.rcpt("bob@example.net")[0] == 530
    finally:
        s.close()
    assert gw.queue_files() == before_queue
    assert spool_files(gw) == before_spool
    assert not gw.sink.find(tok.encode())


def test_gateway_takes_one_recipient_only(gated, gpg):
    gw = gated
    s = plain(gw)
    try:
        assert s.mail("someone@example.net")[0] == 250
        assert s.rcpt(CHPASSWD)[0] == 250
        code, text = s.rcpt("bob@example.net")
        assert (code, text.decode()[:5]) == (530, "5.7.0"), text
        code, text = s.rcpt(CHPASSWD)
        assert (code, text.decode()[:5]) == (452, "4.5.3"), text
        # AUTH cannot turn the request into something else.
        code, text = auth_plain(s, "alice@example.org", "alice-Secret-1")
        assert code == 503 or code == 530, (code, text)
        assert s.rset()[0] == 250
    finally:
        s.quit()


@pytest.mark.parametrize("what", ["unsigned", "null-sender"])
def test_gateway_invalid_request_is_handled_once(gated, gpg, what):
    gw = gated
    m = new_member(gw, gpg)
    before = stored_hash(gw, m.address)
    if what == "unsigned":
        qid = submit_request(gw, headers().encode() + b"\r\n" +
                             PHRASE.encode() + b"\r\n")
    else:
        qid = submit_request(gw, inline_request(gpg, m.fpr), sender="<>")
    wait_handled(gw, qid)
    assert qid not in failed_files(gw)
    assert_unchanged(gw, m, before)


def test_gateway_spool_file_that_fails_is_set_aside(gated):
    """A request that `subgate mailgate` cannot take at all is moved to
    failed/ instead of being run again and again."""
    gw = gated
    qid = "ZZ" + token().upper()[:10]
    qid = re.sub(r"[^0-9A-Z]", "Q", qid)
    path = spool_dir(gw) / qid
    path.write_bytes(b"no envelope here\n")
    gw.wait_log(r"mailgate failed .*moved to", qid=qid)
    assert qid in failed_files(gw)
    assert qid not in spool_files(gw)


def test_gateway_request_deferred_while_database_is_locked(gated, gpg):
    """`subgate mailgate` exits 75 when the database cannot take the
    change: the worker keeps the request, logs when it tries again and
    then carries it out once the lock is gone."""
    gw = gated
    m = new_member(gw, gpg)
    before = stored_hash(gw, m.address)
    lock = sqlite3.connect(str(gw.state / "subgate.db"), timeout=10,
                           isolation_level=None)
    try:
        # A writer holds the database: readers go on (WAL), writers wait
        # for the busy timeout and give up.
        lock.execute("BEGIN IMMEDIATE")
        qid = submit_request(gw, inline_request(gpg, m.fpr))
        line = gw.wait_log(r"mailgate deferred \(exit status 75\); "
                           r"retry in \d+ s", qid=qid, timeout=60)
        assert qid in spool_files(gw), line
        assert qid not in failed_files(gw)
        assert stored_hash(gw, m.address) == before
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    wait_handled(gw, qid)
    assert qid not in failed_files(gw)
    assert_reset_works(gw, gpg, m, reply_for(gw, m.address)[0])


def test_gateway_limits_requests_per_session(gated):
    gw = gated
    stranger = "nobody-%s@example.net" % token()
    s = plain(gw)
    qids = []
    try:
        for _ in range(3):
            assert s.mail(stranger)[0] == 250
            assert s.rcpt(CHPASSWD)[0] == 250
            code, text = s.data(headers().encode() + b"\r\nhello\r\n")
            assert code == 250, (code, text)
            qids.append(text.decode().split()[-1])
        code, text = s.mail(stranger)
        assert (code, text.decode()[:5]) == (421, "4.7.0"), text
    finally:
        s.close()
    for qid in qids:
        wait_handled(gw, qid)


def test_gateway_refuses_a_tenant_without_accept_in_gateway(gated):
    gw = gated
    s = plain(gw)
    try:
        assert s.mail("someone@example.net")[0] == 250
        code, text = s.rcpt(OTHER_CHPASSWD)
        assert (code, text.decode()[:5]) == (530, "5.7.0"), text
        code, text = s.docmd("DATA")
        assert code == 503, (code, text)
    finally:
        s.close()


def test_gateway_without_any_gated_tenant_refuses_mail(gw):
    """Runs last: with accept_in_gateway off everywhere, MAIL before AUTH
    is refused as it always was."""
    gw.admin("tenant", "reset", "example.org", "--address", CHPASSWD,
             "--accept-in-gateway", "no")

    def closed():
        s = plain(gw)
        try:
            return s.mail("someone@example.net")[0] == 530
        finally:
            s.close()

    wait_until(closed, "subgated to stop accepting %s" % CHPASSWD)
