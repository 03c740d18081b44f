"""Integration tests of the admin tool `subgate`: each test runs the real
binary against its own state directory and configuration file and checks
exit status, the documented output formats (docs/admin.md), the database
rows and the files on disk. Public keys printed as DNS records are loaded
back with openssl to prove they are what the private key files hold."""

import base64
import ctypes
import datetime
import os
import re
import sqlite3
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = os.environ.get("SUBGATE_BIN", str(REPO / "build" / "bin")) + "/subgate"

# What --random draws from: no 0/O, 1/l/I.
ALPHABET = set("23456789abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ")

ZONE_RE = re.compile(
    r'^(?P<sel>[a-z0-9-]+)\._domainkey\.(?P<dom>[a-z0-9.-]+)\. 3600 IN TXT'
    r'(?P<strings>( "[^"]*")+)$')


class Admin:
    """A state dir, a config file and a way to run `subgate -c` on them."""

    def __init__(self, root, extra=""):
        self.root = root
        self.state = root / "state"
        self.config = root / "subgate.conf"
        self.config.write_text(
            "state_dir = %s\nnode_name = test\n%s" % (self.state, extra))

    def run(self, *args, input=None):
        return subprocess.run(
            [BIN, "-c", str(self.config)] + [str(a) for a in args],
            input=input.encode() if isinstance(input, str) else input,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)

    def ok(self, *args, input=None):
        res = self.run(*args, input=input)
        assert res.returncode == 0, (
            "subgate %s: exit %d, stderr %r"
            % (" ".join(map(str, args)), res.returncode, res.stderr))
        assert res.stderr == b""
        return res.stdout.decode()

    def fails(self, *args, input=None, status=1):
        """Runs a command that must fail; returns its one error line."""
        res = self.run(*args, input=input)
        assert res.returncode == status, (
            "subgate %s: exit %d, want %d, stderr %r"
            % (" ".join(map(str, args)), res.returncode, status,
               res.stderr))
        err = res.stderr.decode()
        assert err.startswith("subgate: ") and err.count("\n") == 1, err
        return err.strip()

    def db(self):
        return sqlite3.connect(str(self.state / "subgate.db"))


@pytest.fixture
def adm(tmp_path):
    assert os.path.isfile(BIN), "build %s first" % BIN
    a = Admin(tmp_path)
    a.ok("init")
    return a


def kv(text):
    """'key: value' lines to a dict."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        assert sep or line.endswith(":"), line
        out[key.rstrip(":")] = value
    return out


def crypt(pw, setting):
    """libxcrypt's crypt(3), the same library the tool uses."""
    lib = ctypes.CDLL("libcrypt.so.1")
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    return lib.crypt(pw.encode(), setting.encode()).decode()


def stored_hash(adm, address):
    with adm.db() as db:
        return db.execute("SELECT password_hash FROM member"
                          " WHERE address = ?", (address,)).fetchone()[0]


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def today():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d")


# --- init --------------------------------------------------------------------


def test_init_twice(tmp_path):
    a = Admin(tmp_path)
    for _ in range(2):
        assert a.ok("init") == "initialised %s\n" % a.state
    assert (a.state / "subgate.db").is_file()
    assert mode(a.state) == 0o755
    assert mode(a.state / "queue") == 0o700
    assert mode(a.state / "queue" / "tmp") == 0o700
    assert mode(a.state / "queue" / "active") == 0o700
    assert mode(a.state / "keys") == 0o700
    assert mode(a.state / "run") == 0o755
    with a.db() as db:
        assert db.execute("SELECT value FROM meta WHERE key ="
                          " 'schema_version'").fetchone() == ("1",)


def test_no_database_before_init(tmp_path):
    a = Admin(tmp_path)
    err = a.fails("tenant", "list")
    assert "subgate init" in err
    assert not (a.state / "subgate.db").exists()


# --- tenants and domains -----------------------------------------------------


def test_tenant_add_list_show(adm):
    adm.ok("tenant", "add", "Example.ORG")
    adm.ok("tenant", "add", "rewrite.test", "--sender-policy", "rewrite",
           "--from-policy=rewrite", "--sign", "rsa")
    adm.ok("domain", "add", "example.org", "example.com")
    adm.ok("member", "add", "alice@example.org")
    assert adm.ok("tenant", "list") == (
        "example.org\tsender_policy=reject\tfrom_policy=reject"
        "\tsign=rsa,ed25519\tdomains=2\tmembers=1\n"
        "rewrite.test\tsender_policy=rewrite\tfrom_policy=rewrite"
        "\tsign=rsa\tdomains=1\tmembers=0\n")
    show = kv(adm.ok("tenant", "show", "example.org"))
    assert show["name"] == "example.org"
    assert show["sender_policy"] == "reject"
    assert show["from_policy"] == "reject"
    assert show["sign"] == "rsa,ed25519"
    assert show["domains"] == "example.com example.org"
    assert show["members"] == "1"
    assert "example.org" in adm.fails("tenant", "add", "example.org")
    assert "example.org" in adm.fails("tenant", "add", "example.com")
    assert "no tenant nope.test" in adm.fails("tenant", "show", "nope.test")


def test_tenant_bad_options(adm):
    adm.fails("tenant", "add", "a.test", "--sign", "ed25519", status=2)
    adm.fails("tenant", "add", "a.test", "--sender-policy", "drop", status=2)
    adm.fails("tenant", "add", "a.test", "--from-policy", status=2)
    adm.fails("tenant", "add", status=2)
    adm.fails("tenant", "add", "bad_domain!")
    assert adm.ok("tenant", "list") == ""


def test_tenant_del(adm):
    adm.ok("tenant", "add", "example.org")
    adm.ok("member", "add", "alice@example.org")
    assert "--force" in adm.fails("tenant", "del", "example.org")
    adm.ok("tenant", "del", "example.org", "--force")
    assert adm.ok("tenant", "list") == ""
    assert adm.ok("member", "list") == ""
    with adm.db() as db:
        assert db.execute("SELECT count(*) FROM domain").fetchone() == (0,)


def test_domain_add_del(adm):
    adm.ok("tenant", "add", "example.org")
    adm.ok("tenant", "add", "other.org")
    adm.ok("domain", "add", "example.org", "example.com")
    assert "already" in adm.fails("domain", "add", "other.org",
                                  "example.com")
    assert "no tenant" in adm.fails("domain", "add", "nope.org", "x.org")
    adm.ok("member", "add", "bob@example.com")
    assert "used by" in adm.fails("domain", "del", "example.org",
                                  "example.com")
    adm.ok("member", "del", "bob@example.com")
    assert "primary" in adm.fails("domain", "del", "example.org",
                                  "example.org")
    assert "does not belong" in adm.fails("domain", "del", "other.org",
                                          "example.com")
    adm.ok("domain", "del", "example.org", "example.com")
    assert kv(adm.ok("tenant", "show", "example.org"))["domains"] == \
        "example.org"


# --- members -----------------------------------------------------------------


def test_member_password_stdin(adm):
    adm.ok("tenant", "add", "example.org")
    assert adm.ok("member", "add", "alice@example.org", "--password-stdin",
                  input="Secret-1\r\n") == ""
    h = stored_hash(adm, "alice@example.org")
    assert h.startswith("$y$")
    assert crypt("Secret-1", h) == h
    assert crypt("Secret-2", h) != h
    show = kv(adm.ok("member", "show", "alice@example.org"))
    assert show["password_set"] == "yes"
    assert show["tenant"] == "example.org"
    assert show["status"] == "enabled"
    # passwd replaces the hash and records when.
    adm.ok("member", "passwd", "alice@example.org", "--password-stdin",
           input="Secret-2")
    h2 = stored_hash(adm, "alice@example.org")
    assert h2.startswith("$y$") and crypt("Secret-2", h2) == h2
    with adm.db() as db:
        assert db.execute("SELECT password_changed FROM member").fetchone()[
            0] > 0


def test_member_password_limits(adm):
    adm.ok("tenant", "add", "example.org")
    adm.fails("member", "add", "a@example.org", "--password-stdin",
              input="\n")
    adm.fails("member", "add", "b@example.org", "--password-stdin", input="")
    adm.fails("member", "add", "c@example.org", "--password-stdin",
              input="x" * 512 + "\n")
    adm.fails("member", "add", "d@example.org", "--password-stdin",
              input="a\0b\n")
    adm.ok("member", "add", "e@example.org", "--password-stdin",
           input="y" * 511 + "\n")
    assert adm.ok("member", "list") == "e@example.org\tenabled\taliases=\n"
    adm.fails("member", "passwd", "e@example.org", status=2)
    adm.fails("member", "passwd", "e@example.org", "--random",
              "--password-stdin", status=2)
    adm.fails("member", "passwd", "nobody@example.org", "--random")


def test_member_random(adm):
    adm.ok("tenant", "add", "example.org")
    out = adm.ok("member", "add", "bob@example.org", "--random")
    pw = out.rstrip("\n")
    assert out == pw + "\n" and len(pw) == 20
    assert set(pw) <= ALPHABET
    h = stored_hash(adm, "bob@example.org")
    assert h.startswith("$y$") and crypt(pw, h) == h
    pw2 = adm.ok("member", "passwd", "bob@example.org", "--random").strip()
    assert len(pw2) == 20 and pw2 != pw
    h2 = stored_hash(adm, "bob@example.org")
    assert crypt(pw2, h2) == h2


def test_member_without_password(adm):
    adm.ok("tenant", "add", "example.org")
    assert adm.ok("member", "add", "carol@Example.ORG") == ""
    assert stored_hash(adm, "carol@example.org") is None
    show = kv(adm.ok("member", "show", "carol@example.org"))
    assert show["address"] == "carol@example.org"
    assert show["password_set"] == "no"


def test_member_unknown_domain(adm):
    adm.ok("tenant", "add", "example.org")
    err = adm.fails("member", "add", "x@nowhere.test", "--random")
    assert err == "subgate: no tenant owns domain nowhere.test"
    assert "invalid address" in adm.fails("member", "add", "not-an-address")
    adm.ok("member", "add", "x@example.org")
    assert "already in use" in adm.fails("member", "add", "X@example.org")


def test_password_not_on_command_line(adm):
    adm.ok("tenant", "add", "example.org")
    adm.fails("member", "add", "a@example.org", "--password", "s3cret",
              status=2)
    adm.fails("member", "add", "a@example.org", "--password=s3cret",
              status=2)
    adm.fails("member", "add", "a@example.org", "s3cret", status=2)
    adm.fails("member", "add", "a@example.org", "-p", "s3cret", status=2)
    adm.fails("member", "add", "a@example.org", "--password-stdin=s3cret",
              status=2)
    assert adm.ok("member", "list") == ""


def test_member_disable_enable_del(adm):
    adm.ok("tenant", "add", "example.org")
    adm.ok("tenant", "add", "other.org")
    adm.ok("member", "add", "a@example.org")
    adm.ok("member", "add", "b@other.org")
    adm.ok("member", "disable", "a@example.org")
    assert adm.ok("member", "list") == (
        "a@example.org\tdisabled\taliases=\n"
        "b@other.org\tenabled\taliases=\n")
    assert adm.ok("member", "list", "other.org") == \
        "b@other.org\tenabled\taliases=\n"
    adm.ok("member", "enable", "A@example.org")
    assert kv(adm.ok("member", "show", "a@example.org"))["status"] == \
        "enabled"
    adm.ok("member", "del", "a@example.org")
    assert "no member" in adm.fails("member", "del", "a@example.org")
    assert "no member" in adm.fails("member", "show", "a@example.org")
    assert "no tenant" in adm.fails("member", "list", "nope.org")


def test_alias_add_del(adm):
    adm.ok("tenant", "add", "example.org")
    adm.ok("domain", "add", "example.org", "example.com")
    adm.ok("tenant", "add", "foreign.org")
    adm.ok("member", "add", "alice@example.org")
    adm.ok("member", "add", "bob@example.org")
    adm.ok("member", "alias", "add", "alice@example.org",
           "alice.smith@example.com")
    adm.ok("member", "alias", "add", "alice@example.org", "al@example.org")
    assert adm.ok("member", "list") == (
        "alice@example.org\tenabled"
        "\taliases=al@example.org,alice.smith@example.com\n"
        "bob@example.org\tenabled\taliases=\n")
    assert kv(adm.ok("member", "show", "alice@example.org"))["aliases"] == \
        "al@example.org alice.smith@example.com"
    # A foreign tenant's domain, someone's primary, someone's alias.
    err = adm.fails("member", "alias", "add", "alice@example.org",
                    "alice@foreign.org")
    assert "foreign.org" in err and "does not belong" in err
    assert "already in use" in adm.fails(
        "member", "alias", "add", "alice@example.org", "bob@example.org")
    assert "already in use" in adm.fails(
        "member", "alias", "add", "bob@example.org", "AL@example.org")
    assert "no member" in adm.fails(
        "member", "alias", "add", "nobody@example.org", "x@example.org")
    assert "not an alias" in adm.fails(
        "member", "alias", "del", "bob@example.org", "al@example.org")
    adm.ok("member", "alias", "del", "alice@example.org", "al@example.org")
    assert adm.ok("member", "list", "example.org").splitlines()[0] == \
        "alice@example.org\tenabled\taliases=alice.smith@example.com"
    # Deleting the member frees its aliases.
    adm.ok("member", "del", "alice@example.org")
    adm.ok("member", "alias", "add", "bob@example.org",
           "alice.smith@example.com")


# --- keys --------------------------------------------------------------------


def key_list(adm, domain):
    rows = []
    for line in adm.ok("key", "list", domain).splitlines():
        sel, algo, bits, state, created = line.split("\t")
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", created)
        rows.append((sel, algo, int(bits), state))
    return rows


def test_key_generate_both_algos(adm):
    adm.ok("tenant", "add", "example.org")
    before = today()
    out = adm.ok("key", "generate", "example.org")
    after = today()
    lines = out.splitlines()
    assert len(lines) == 2
    for day in {before, after}:
        if lines[0].startswith(day):
            break
    assert lines == ["%s-rsa-test\trsa\t2048" % day,
                     "%s-ed25519-test\ted25519\t256" % day]
    assert key_list(adm, "example.org") == [
        ("%s-rsa-test" % day, "rsa", 2048, "pending"),
        ("%s-ed25519-test" % day, "ed25519", 256, "pending")]
    keydir = adm.state / "keys" / "example.org"
    assert mode(keydir) == 0o700
    for sel in ("%s-rsa-test" % day, "%s-ed25519-test" % day):
        pem = keydir / (sel + ".pem")
        assert mode(pem) == 0o600
        assert pem.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert [p.name for p in keydir.iterdir() if p.name.startswith(".")] == []
    # Same template again: a suffix keeps the selectors apart.
    out = adm.ok("key", "generate", "example.org", "--algo", "ed25519")
    assert out == "%s-ed25519-test-2\ted25519\t256\n" % day
    with adm.db() as db:
        assert db.execute(
            "SELECT key_file FROM dkim_key WHERE selector = ?",
            ("%s-rsa-test" % day,)).fetchone() == (
                "example.org/%s-rsa-test.pem" % day,)


def test_key_generate_template_and_options(tmp_path):
    a = Admin(tmp_path, "selector_template = K%a-%n-%Y\n")
    a.ok("init")
    a.ok("tenant", "add", "rsaonly.org", "--sign", "rsa")
    year = datetime.datetime.now(datetime.timezone.utc).strftime("%Y")
    out = a.ok("key", "generate", "rsaonly.org", "--bits", "1024")
    assert out == "krsa-test-%s\trsa\t1024\n" % year
    out = a.ok("key", "generate", "rsaonly.org", "--algo", "ed25519",
               "--selector", "mine", "--bits", "3000")
    assert out == "mine\ted25519\t256\n"
    a.fails("key", "generate", "rsaonly.org", "--bits", "512", status=2)
    a.fails("key", "generate", "rsaonly.org", "--bits", "1x", status=2)
    a.fails("key", "generate", "rsaonly.org", "--algo", "dsa", status=2)
    a.fails("key", "generate", "rsaonly.org", "--selector", "-x", status=2)
    a.fails("key", "generate", "rsaonly.org", "--selector", "A_b", status=2)
    assert "no tenant owns" in a.fails("key", "generate", "nope.org")
    assert len(key_list(a, "rsaonly.org")) == 2


def test_key_activate_rotation(adm):
    adm.ok("tenant", "add", "example.org")
    adm.ok("key", "generate", "example.org", "--selector", "one",
           "--bits", "1024")
    # No DNS server here: --force skips the check and says so.
    out = adm.ok("key", "activate", "example.org", "--force")
    assert out == ("one\trsa\tactive\tforced\n"
                   "one-2\ted25519\tactive\tforced\n")
    assert "no pending or published" in adm.fails(
        "key", "activate", "example.org")
    adm.ok("key", "generate", "example.org", "--algo", "rsa",
           "--selector", "two", "--bits", "1024")
    out = adm.ok("key", "activate", "example.org", "two", "--force")
    assert out == "two\trsa\tactive\tforced\none\trsa\tretired\n"
    assert [(s, st) for s, _, _, st in key_list(adm, "example.org")] == [
        ("one", "retired"), ("one-2", "active"), ("two", "active")]
    with adm.db() as db:
        row = db.execute("SELECT activated, retired FROM dkim_key"
                         " WHERE selector = 'one'").fetchone()
        assert row[0] > 0 and row[1] > 0


def test_key_activate_illegal(adm):
    adm.ok("tenant", "add", "example.org", "--sign", "rsa")
    adm.ok("key", "generate", "example.org", "--selector", "a",
           "--bits", "1024")
    adm.ok("key", "activate", "example.org", "a", "--force")
    adm.ok("key", "generate", "example.org", "--selector", "b",
           "--bits", "1024")
    adm.ok("key", "activate", "example.org", "b", "--force")
    err = adm.fails("key", "activate", "example.org", "a")
    assert err == ("subgate: key a is retired; only pending or published "
                   "keys can be activated")
    err = adm.fails("key", "activate", "example.org", "b")
    assert err == ("subgate: key b is active; only pending or published "
                   "keys can be activated")
    assert "no key zz" in adm.fails("key", "activate", "example.org", "zz")
    # Two pending keys of one algorithm: which one is meant is a guess.
    adm.ok("key", "generate", "example.org", "--selector", "c",
           "--bits", "1024")
    adm.ok("key", "generate", "example.org", "--selector", "d",
           "--bits", "1024")
    assert "name the selector" in adm.fails("key", "activate",
                                            "example.org")


# --- DNS records ---------------------------------------------------------------


def parse_zone(text):
    """[(selector, domain, txt value, [character-strings])]"""
    out = []
    for line in text.splitlines():
        m = ZONE_RE.match(line)
        assert m, line
        strings = re.findall(r'"([^"]*)"', m.group("strings"))
        out.append((m.group("sel"), m.group("dom"), "".join(strings),
                    strings))
    return out


def tags(value):
    return dict(t.strip().split("=", 1) for t in value.split(";"))


def openssl(*args, input=None):
    return subprocess.run(["openssl"] + list(args), input=input,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          check=True).stdout


def check_rsa_record(p, keyfile):
    der = base64.b64decode(p, validate=True)
    pem = ("-----BEGIN PUBLIC KEY-----\n"
           + "\n".join(p[i:i + 64] for i in range(0, len(p), 64))
           + "\n-----END PUBLIC KEY-----\n").encode()
    # Loads as a public key, and is the one of the private key file.
    openssl("pkey", "-pubin", "-noout", input=pem)
    assert openssl("pkey", "-in", str(keyfile), "-pubout",
                   "-outform", "DER") == der


def check_ed25519_record(p, keyfile):
    raw = base64.b64decode(p, validate=True)
    assert len(raw) == 32
    spki = openssl("pkey", "-in", str(keyfile), "-pubout", "-outform", "DER")
    assert spki[-32:] == raw


def test_dns_records(adm):
    adm.ok("tenant", "add", "example.org")
    adm.ok("key", "generate", "example.org", "--selector", "big",
           "--algo", "rsa", "--bits", "4096")
    adm.ok("key", "generate", "example.org", "--selector", "s")
    keydir = adm.state / "keys" / "example.org"
    recs = parse_zone(adm.ok("dns", "records", "Example.Org"))
    assert [(r[0], r[1]) for r in recs] == [
        ("big", "example.org"), ("s", "example.org"),
        ("s-2", "example.org")]
    for sel, _, value, strings in recs:
        assert all(len(s) <= 255 for s in strings)
        assert all(len(s) == 255 for s in strings[:-1])
        t = tags(value)
        assert t["v"] == "DKIM1"
        if t["k"] == "rsa":
            check_rsa_record(t["p"], keydir / (sel + ".pem"))
        else:
            assert t["k"] == "ed25519"
            check_ed25519_record(t["p"], keydir / (sel + ".pem"))
    assert len(recs[0][3]) == 3  # 4096-bit key: three strings
    assert len(recs[1][3]) == 2  # 2048-bit key: two strings
    assert len(recs[2][3]) == 1  # ed25519


def test_dns_records_states(adm):
    adm.ok("tenant", "add", "example.org", "--sign", "rsa")
    adm.ok("key", "generate", "example.org", "--selector", "a",
           "--bits", "1024")
    adm.ok("key", "activate", "example.org", "--force")
    adm.ok("key", "generate", "example.org", "--selector", "b",
           "--bits", "1024")
    adm.ok("key", "activate", "example.org", "--force")
    with adm.db() as db:
        db.execute("UPDATE dkim_key SET state = 'revoked' WHERE selector"
                   " = 'a'")
    recs = parse_zone(adm.ok("dns", "records", "example.org"))
    assert [r[0] for r in recs] == ["a", "b"]
    assert recs[0][2] == "v=DKIM1; k=rsa; p="
    assert tags(recs[1][2])["p"] != ""
    assert "no tenant owns" in adm.fails("dns", "records", "nope.org")


# --- the rest ------------------------------------------------------------------


def test_status(adm):
    adm.ok("tenant", "add", "example.org")
    adm.ok("member", "add", "a@example.org")
    adm.ok("key", "generate", "example.org", "--algo", "ed25519")
    (adm.state / "queue" / "active" / "0000000000AB").write_text("x")
    st = kv(adm.ok("status"))
    assert st["config"] == str(adm.config)
    assert st["database"] == str(adm.state / "subgate.db")
    assert st["tenants"] == "1"
    assert st["members"] == "1"
    assert st["keys"] == ("pending=1 published=0 active=0 retired=0 "
                          "revoked=0")
    assert st["queue"] == "1"


def test_usage_errors(adm):
    for args in (["tenant"], ["tenant", "frob"], ["member", "alias"],
                 ["key", "list"], ["dns", "records"], ["frob"],
                 ["status", "extra"], ["member", "show"]):
        adm.fails(*args, status=2)
    res = subprocess.run([BIN], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    assert res.returncode == 2
    res = subprocess.run([BIN, "help"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    assert res.returncode == 0 and b"member add" in res.stdout


def test_bad_config(tmp_path):
    conf = tmp_path / "bad.conf"
    conf.write_text("no_such_key = 1\n")
    res = subprocess.run([BIN, "-c", str(conf), "status"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert res.returncode == 1
    err = res.stderr.decode()
    assert err.startswith("subgate: ") and err.count("\n") == 1
    assert str(conf) in err
