"""Members from an LDAP directory: a tenant (ldapco.org, with ldapco.net)
whose members are entries in a real slapd (tests/integration/slapd.py),
checked by a running subgated.

Covered: `subgate tenant ldap` and `tenant show`; bind by DN template and
search-then-bind; the submit filter (a group, a locked account); logins
that try to inject into the filter or the DN; alias addresses from
mailAlternateAddress as envelope sender and From:, and addresses the
member does not own (553/550); the mail password attribute (yescrypt and
SHA-512-crypt) instead of the account password; StartTLS and ldaps, with
the certificate verified; failover to the next URI; a directory that is
stopped or does not answer gives 454 4.7.0 and never 535, even for a
wrong password, and works again once it is back, without restarting
subgated. Mail from directory members is signed with the tenant's keys
and the signatures verify (dkimpy).

The directory requires TLS for simple binds (security simple_bind=128),
so a check that does not encrypt fails visibly. A tenant's settings are
read at each login, so tests reconfigure the one tenant as they need;
changed settings also make the auth cache forget the tenant's verdicts.
"""

import contextlib
import re
import shutil
import sqlite3

import pytest

import dkimverify
import helpers
from helpers import (
    Gateway,
    admin,
    assert_queued,
    assert_reply,
    auth_login,
    auth_plain,
    connect,
    make_message,
    send,
    wait_until,
)
from slapd import Slapd, crypt_hash, ssha

TENANT = "ldapco.org"
SECOND = "ldapco.net"
SUFFIX = "dc=example,dc=org"
PEOPLE = "ou=people," + SUFFIX
SERVICE_DN = "cn=subgate,ou=services," + SUFFIX
SERVICE_PW = "service-Secret-9"
GROUP_DN = "cn=mailers,ou=groups," + SUFFIX
SUBMIT_FILTER = "(&(memberOf=%s)(!(shadowExpire=1)))" % GROUP_DN
DN_TEMPLATE = "uid=%u," + PEOPLE
FINGERPRINT = "0123456789ABCDEF0123456789ABCDEF01234567"

# uid -> entry. "group": in cn=mailers; "locked": shadowExpire=1;
# "crypt": the mail password's hash method.
USERS = {
    "alice": {
        "password": "alice-Dir-1",
        "mail_password": "alice-Mail-1",
        "crypt": "$y$",
        "mail": ["alice@ldapco.org"],
        # example.org belongs to another tenant: never the member's
        "alt": ["al@ldapco.org", "alice.smith@ldapco.net",
                "alice@example.org"],
        "group": True,
    },
    "bob": {
        "password": "bob-Dir-2",
        "mail_password": "bob-Mail-2",
        "crypt": "$6$",
        "mail": ["bob@ldapco.org"],
        "group": True,
    },
    "carol": {"password": "carol-Dir-3", "mail": ["carol@ldapco.org"],
              "group": False},
    "dave": {"password": "dave-Dir-4", "mail": ["dave@ldapco.org"],
             "group": True, "locked": True},
    # a uid that must be escaped in a DN
    "e,ve": {"password": "eve-Dir-5", "mail": ["eve@ldapco.org"],
             "group": True},
    "frank": {"password": "frank-Dir-6", "mail": ["frank@ldapco.org"],
              "group": True},
    "gina": {"password": "gina-Dir-7", "mail": ["gina@ldapco.org"],
             "group": True},
    "hugo": {"password": "hugo-Dir-8", "mail": ["hugo@ldapco.org"],
             "group": True},
}


def dn_of(uid):
    return "uid=%s,%s" % (uid.replace(",", "\\,"), PEOPLE)


def directory_ldif():
    """The base entries (slapadd'ed) for USERS."""
    out = [
        "dn: %s\nobjectClass: dcObject\nobjectClass: organization\n"
        "o: Example\ndc: example\n" % SUFFIX,
        "dn: ou=people,%s\nobjectClass: organizationalUnit\nou: people\n"
        % SUFFIX,
        "dn: ou=groups,%s\nobjectClass: organizationalUnit\nou: groups\n"
        % SUFFIX,
        "dn: ou=services,%s\nobjectClass: organizationalUnit\n"
        "ou: services\n" % SUFFIX,
        "dn: %s\nobjectClass: applicationProcess\n"
        "objectClass: simpleSecurityObject\ncn: subgate\n"
        "userPassword: %s\n" % (SERVICE_DN, ssha(SERVICE_PW)),
    ]
    for uid, u in USERS.items():
        lines = [
            "dn: %s" % dn_of(uid),
            "objectClass: inetOrgPerson",
            "objectClass: shadowAccount",
            "objectClass: subgateMailUser",
            "uid: %s" % uid,
            "cn: %s" % uid,
            "sn: %s" % uid,
            "userPassword: %s" % ssha(u["password"]),
        ]
        lines += ["mail: %s" % a for a in u["mail"]]
        lines += ["mailAlternateAddress: %s" % a for a in u.get("alt", [])]
        if "mail_password" in u:
            lines.append("mailPassword: {CRYPT}%s" % crypt_hash(
                u["mail_password"], u["crypt"]))
        if uid == "alice":
            lines.append("keyFingerPrint: %s" % FINGERPRINT.lower())
        if u.get("locked"):
            lines.append("shadowExpire: 1")
        out.append("\n".join(lines) + "\n")
    return "\n".join(out)


def group_ldif():
    """The group, added through the server so that memberof fills in
    memberOf."""
    members = "".join("member: %s\n" % dn_of(uid)
                      for uid, u in USERS.items() if u["group"])
    return "dn: %s\nobjectClass: groupOfNames\ncn: mailers\n%s" % (
        GROUP_DN, members)


def start_directory(root):
    d = Slapd(root, suffix=SUFFIX, service_dn=SERVICE_DN, require_tls=True,
              load=directory_ldif())
    d.start()
    try:
        d.add(group_ldif())
    except BaseException:
        d.close()
        raise
    return d


@pytest.fixture(scope="module")
def directory(tmp_path_factory):
    d = start_directory(tmp_path_factory.mktemp("slapd"))
    yield d
    d.close()


@pytest.fixture(scope="module")
def ldap_template(gateway_template, tmp_path_factory):
    """The provisioned template plus the LDAP tenant (no members in the
    database) with active keys, and a service password file."""
    root = tmp_path_factory.mktemp("ldap-template")
    state = root / "state"
    shutil.copytree(gateway_template["state"], state, symlinks=True)
    config = root / "subgate.conf"
    helpers.write_config(config, helpers.base_settings(
        state, gateway_template["cert"], gateway_template["key"],
        helpers.free_port(), helpers.free_port(), helpers.free_port()))
    admin(config, "tenant", "add", TENANT)
    admin(config, "domain", "add", TENANT, SECOND)
    records = dict(gateway_template["records"])
    for domain in (TENANT, SECOND):
        admin(config, "key", "generate", domain)
        # No DNS server here: the records are handed to the verifier.
        admin(config, "key", "activate", domain, "--force")
        records.update(dkimverify.parse_records(
            admin(config, "dns", "records", domain).stdout.decode()))
    dns_file = root / "dns.txt"
    helpers.write_dns_file(dns_file, records)
    secret = root / "service.pw"
    secret.write_text(SERVICE_PW + "\n")
    secret.chmod(0o600)
    return {
        "root": root,
        "state": state,
        "config": config,
        "cert": gateway_template["cert"],
        "key": gateway_template["key"],
        "records": records,
        "dns_file": dns_file,
        "secret": secret,
    }


def start_gateway(root, template, settings=None):
    gw = Gateway(root, template, settings)
    try:
        gw.start()
    except BaseException:
        gw.close()
        raise
    return gw


@pytest.fixture(scope="module")
def gw(ldap_template, tmp_path_factory):
    gw = start_gateway(tmp_path_factory.mktemp("gw-ldap"), ldap_template,
                       {"ldap_timeout": "3s"})
    yield gw
    gw.close()


def set_ldap(gw, directory, template, mode="dn", uri=None, **opts):
    """Points the tenant at directory. mode "dn" (template, no service
    identity), "dn+service" or "search"; opts are further options
    (underscores for dashes; True for a flag)."""
    argv = ["tenant", "ldap", TENANT, "--uri",
            uri or directory.ldap_uri, "--ca-file", str(directory.ca_file)]
    if mode.startswith("dn"):
        argv += ["--dn-template", DN_TEMPLATE]
    else:
        argv += ["--search-base", PEOPLE, "--search-filter", "(uid=%u)"]
    if mode != "dn":
        argv += ["--bind-dn", SERVICE_DN, "--bind-password-file",
                 str(template["secret"])]
    for key, value in opts.items():
        argv.append("--" + key.replace("_", "-"))
        if value is not True:
            argv.append(value)
    gw.admin(*argv)


def login(gw, user, password, mech="plain", tls="starttls"):
    """(code, text) of one AUTH on a new connection."""
    s = connect(gw, tls)
    try:
        if mech == "plain":
            return auth_plain(s, user, password)
        return auth_login(s, user, password)
    finally:
        with contextlib.suppress(Exception):
            s.quit()


@contextlib.contextmanager
def member_session(gw, user, password):
    s = connect(gw)
    try:
        code, text = auth_plain(s, user, password)
        assert code == 235, "AUTH as %s: %d %s" % (user, code, text)
        yield s
    finally:
        with contextlib.suppress(Exception):
            s.quit()


def submit_as(gw, user, password, mail_from, from_hdr, to="bob@example.net"):
    msg, tok = make_message(from_hdr=from_hdr, to=to)
    with member_session(gw, user, password) as s:
        return send(s, mail_from, [to], msg), tok


def assert_verifies(message, records, domain):
    results = dkimverify.verify_message(message.raw, records)
    assert {tags["a"] for _, tags, _ in results} == {
        "rsa-sha256", "ed25519-sha256"}, results
    assert all(tags["d"] == domain for _, tags, _ in results), results
    assert all(ok for _, _, ok in results), results


def log_count(gw, regex):
    pat = re.compile(regex)
    return sum(1 for line in gw.log_text().splitlines() if pat.search(line))


STANDARD = {"address_attrs": "mail,mailAlternateAddress",
            "submit_filter": SUBMIT_FILTER}


# --- the admin tool -------------------------------------------------------


def kv(text):
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(": ")
        out[key] = value
    return out


def test_tenant_ldap_admin(gw, directory, ldap_template):
    gw.admin("tenant", "ldap", TENANT, "--off")
    assert kv(gw.admin("tenant", "show", TENANT).stdout.decode())[
        "auth"] == "sqlite"
    set_ldap(gw, directory, ldap_template, "search", uid_domain=True,
             fingerprint_attr="keyFingerPrint", login_form="uid",
             starttls="yes", timeout="2s", **STANDARD)
    show = kv(gw.admin("tenant", "show", TENANT).stdout.decode())
    assert show["auth"] == "ldap"
    assert show["ldap_uris"] == directory.ldap_uri
    assert show["ldap_bind"] == "search"
    assert show["ldap_search_filter"] == "(uid=%u)"
    assert show["ldap_bind_dn"] == SERVICE_DN
    assert show["ldap_submit_filter"] == SUBMIT_FILTER
    assert show["ldap_address_attrs"] == "mail,mailAlternateAddress"
    assert show["ldap_uid_domain"] == "yes"
    assert show["ldap_fingerprint_attr"] == "keyFingerPrint"
    assert show["ldap_starttls"] == "yes"
    assert show["ldap_timeout"] == "2000ms"
    assert show["ldap_ca_file"] == str(directory.ca_file)
    secret = str(ldap_template["secret"])
    bad = [
        ["--dn-template", DN_TEMPLATE],                      # no --uri
        ["--uri", "http://127.0.0.1/", "--dn-template", DN_TEMPLATE],
        ["--uri", directory.ldap_uri + ",", "--dn-template", DN_TEMPLATE],
        ["--uri", directory.ldap_uri],                       # no mode
        ["--uri", directory.ldap_uri, "--dn-template", "uid=x," + PEOPLE],
        ["--uri", directory.ldap_uri, "--dn-template", "uid=%s," + PEOPLE],
        ["--uri", directory.ldap_uri, "--dn-template", DN_TEMPLATE,
         "--search-base", PEOPLE, "--search-filter", "(uid=%u)"],
        ["--uri", directory.ldap_uri, "--search-base", PEOPLE,
         "--search-filter", "(uid=%u)"],                     # no service
        ["--uri", directory.ldap_uri, "--search-base", PEOPLE,
         "--search-filter", "uid=%u", "--bind-dn", SERVICE_DN,
         "--bind-password-file", secret],
        ["--uri", directory.ldap_uri, "--dn-template", DN_TEMPLATE,
         "--mail-password-attr", "mailPassword"],            # no service
        ["--uri", directory.ldap_uri, "--dn-template", DN_TEMPLATE,
         "--submit-filter", "(a=b)(c=d)"],
        ["--uri", directory.ldap_uri, "--dn-template", DN_TEMPLATE,
         "--address-attrs", "mail,,x"],
        ["--uri", directory.ldap_uri, "--dn-template", DN_TEMPLATE,
         "--starttls", "maybe"],
        ["--uri", directory.ldap_uri, "--dn-template", DN_TEMPLATE,
         "--login-form", "email"],
        ["--uri", directory.ldap_uri, "--dn-template", DN_TEMPLATE,
         "--timeout", "1ms"],
        ["--off", "--uri", directory.ldap_uri],
    ]
    for args in bad:
        res = gw.admin("tenant", "ldap", TENANT, *args, check=False)
        assert res.returncode == 2, (args, res.returncode, res.stderr)
        assert res.stderr.decode().startswith("subgate: "), res.stderr
    res = gw.admin("tenant", "ldap", TENANT, "--uri", directory.ldap_uri,
                   "--search-base", PEOPLE, "--search-filter", "(uid=%u)",
                   "--bind-dn", SERVICE_DN, "--bind-password-file",
                   "/nonexistent/secret", check=False)
    assert res.returncode == 1, res
    res = gw.admin("tenant", "ldap", "nope.test", "--off", check=False)
    assert res.returncode == 1 and b"no tenant nope.test" in res.stderr
    # Nothing of that changed the settings.
    assert kv(gw.admin("tenant", "show", TENANT).stdout.decode()) == show


def test_tenant_del_removes_ldap_settings(gw, directory, ldap_template):
    gw.admin("tenant", "add", "gone.test")
    gw.admin("tenant", "ldap", "gone.test", "--uri", directory.ldap_uri,
             "--dn-template", DN_TEMPLATE)
    assert kv(gw.admin("tenant", "show", "gone.test").stdout.decode())[
        "auth"] == "ldap"
    gw.admin("tenant", "del", "gone.test")
    with contextlib.closing(sqlite3.connect(gw.state / "subgate.db")) as db:
        assert db.execute("SELECT count(*) FROM tenant_ldap t"
                          " LEFT JOIN tenant n ON n.id = t.tenant_id"
                          " WHERE n.id IS NULL").fetchone() == (0,)


def test_example_ldif_loads(tmp_path):
    """schema/ldap/example.ldif is valid against schema/ldap/subgate.schema
    (placeholders replaced by real values)."""
    text = (helpers.REPO / "schema" / "ldap" / "example.ldif").read_text()
    text = text.replace("{SSHA}REPLACE-WITH-slappasswd-OUTPUT", ssha("x"))
    text = text.replace("$y$REPLACE-WITH-mkpasswd-m-yescrypt-OUTPUT",
                        crypt_hash("x"))
    with Slapd(tmp_path / "example", load=text) as d:
        out = d.search(SUFFIX, "(uid=alice)", "mail", "mailAlternateAddress",
                       "keyFingerPrint")
    assert "mail: alice@example.org" in out, out
    assert "mailAlternateAddress: alice.example@example.net" in out, out
    assert "keyFingerPrint: " in out, out


# --- binding ----------------------------------------------------------------


def test_dn_template_bind_signed_and_verified(gw, directory, ldap_template):
    set_ldap(gw, directory, ldap_template, "dn", **STANDARD)
    # The bare uid, the full address, AUTH LOGIN.
    assert_reply(login(gw, "alice", "alice-Dir-1"), 235, "2.7.0")
    assert_reply(login(gw, "alice@ldapco.org", "alice-Dir-1"), 235, "2.7.0")
    assert_reply(login(gw, "alice@ldapco.net", "alice-Dir-1", mech="login"),
                 235, "2.7.0")
    assert_reply(login(gw, "alice", "alice-Dir-1x"), 535, "5.7.8")
    assert_reply(login(gw, "nobody", "alice-Dir-1"), 535, "5.7.8")
    # An empty password would be an unauthenticated bind, which a
    # directory "accepts" (RFC 4513 5.1.2): refused, whoever refuses it.
    code, text = login(gw, "alice", "")
    assert code in (501, 535), (code, text)
    gw.wait_log(r"auth client=\S+ member=alice@ldapco\.org result=ok")
    res, tok = submit_as(gw, "alice", "alice-Dir-1", "alice@ldapco.org",
                         "Alice <alice@ldapco.org>")
    qid = assert_queued(res)
    gw.wait_log(r"queued .*member=alice@ldapco\.org", qid=qid)
    msg = gw.sink.wait_for(tok)[0]
    assert msg.mail_from == "alice@ldapco.org"
    assert_verifies(msg, ldap_template["records"], TENANT)


def test_alias_addresses_from_directory(gw, directory, ldap_template):
    set_ldap(gw, directory, ldap_template, "dn", **STANDARD)
    # mailAlternateAddress values as envelope sender and From:, in both
    # of the tenant's domains; d= follows From:.
    res, tok = submit_as(gw, "alice", "alice-Dir-1", "al@ldapco.org",
                         "alice.smith@ldapco.net")
    assert_queued(res)
    msg = gw.sink.wait_for(tok)[0]
    assert msg.mail_from == "al@ldapco.org"
    assert_verifies(msg, ldap_template["records"], SECOND)
    with member_session(gw, "alice", "alice-Dir-1") as s:
        msg, _ = make_message(from_hdr="alice@ldapco.org")
        # another member's address
        out = send(s, "bob@ldapco.org", ["bob@example.net"], msg)
        assert_reply(out["mail"], 553, "5.7.1")
        # in alice's entry, but in another tenant's domain
        out = send(s, "alice@example.org", ["bob@example.net"], msg)
        assert_reply(out["mail"], 553, "5.7.1")
        # a From: she does not own
        msg, _ = make_message(from_hdr="bob@ldapco.org")
        out = send(s, "alice@ldapco.org", ["bob@example.net"], msg)
        assert_reply(out["data"], 550, "5.7.1")
    gw.wait_log(r"ldap tenant=ldapco\.org entry=\"uid=alice,ou=people,"
                r"dc=example,dc=org\" addresses outside the tenant's "
                r"domains ignored=1")


def test_uid_domain_addresses(gw, directory, ldap_template):
    # Only uid@domain for each tenant domain: no address attribute read.
    set_ldap(gw, directory, ldap_template, "dn", uid_domain=True,
             address_attrs="description")
    with member_session(gw, "gina", "gina-Dir-7") as s:
        for sender in ("gina@ldapco.org", "gina@ldapco.net"):
            msg, _ = make_message(from_hdr=sender)
            assert_queued(send(s, sender, ["bob@example.net"], msg))
        msg, _ = make_message(from_hdr="gina@ldapco.org")
        out = send(s, "alice@ldapco.org", ["bob@example.net"], msg)
        assert_reply(out["mail"], 553, "5.7.1")


def test_bare_login_needs_one_ldap_tenant(gw, directory, ldap_template):
    set_ldap(gw, directory, ldap_template, "search", **STANDARD)
    assert_reply(login(gw, "alice", "alice-Dir-1"), 235, "2.7.0")
    gw.admin("tenant", "add", "second.test")
    try:
        gw.admin("tenant", "ldap", "second.test", "--uri", directory.ldap_uri,
                 "--dn-template", DN_TEMPLATE)
        # Which tenant's alice? Refused; with the domain it is clear.
        assert_reply(login(gw, "alice", "alice-Dir-1"), 535, "5.7.8")
        assert_reply(login(gw, "alice@ldapco.org", "alice-Dir-1"), 235,
                     "2.7.0")
    finally:
        gw.admin("tenant", "del", "second.test")
    assert_reply(login(gw, "alice", "alice-Dir-1"), 235, "2.7.0")


def test_search_then_bind(gw, directory, ldap_template):
    set_ldap(gw, directory, ldap_template, "search", **STANDARD)
    assert_reply(login(gw, "bob", "bob-Dir-2"), 235, "2.7.0")
    assert_reply(login(gw, "bob@ldapco.org", "bob-Dir-2"), 235, "2.7.0")
    assert_reply(login(gw, "bob", "bob-Dir-2-wrong"), 535, "5.7.8")
    assert_reply(login(gw, "nobody", "bob-Dir-2"), 535, "5.7.8")
    gw.wait_log(r"member=nobody result=fail reason=\"unknown member\"")
    # The connection is bound as bob after his check: the next search
    # must be the service's again.
    assert_reply(login(gw, "alice", "alice-Dir-1"), 235, "2.7.0")
    res, tok = submit_as(gw, "bob", "bob-Dir-2", "bob@ldapco.org",
                         "bob@ldapco.org")
    assert_queued(res)
    assert_verifies(gw.sink.wait_for(tok)[0], ldap_template["records"],
                    TENANT)


@pytest.mark.parametrize("mode", ["dn", "dn+service", "search"])
def test_submit_filter_group_and_lock(gw, directory, ldap_template, mode):
    set_ldap(gw, directory, ldap_template, mode, **STANDARD)
    # carol is not in the group, dave's account is locked: both with
    # their right passwords.
    assert_reply(login(gw, "carol", "carol-Dir-3"), 535, "5.7.8")
    assert_reply(login(gw, "dave", "dave-Dir-4"), 535, "5.7.8")
    assert_reply(login(gw, "frank", "frank-Dir-6"), 235, "2.7.0")
    before = log_count(gw, r"member=dave result=fail "
                           r"reason=\"not allowed by submit filter")
    assert before >= 1
    # Without the filter they may log in.
    set_ldap(gw, directory, ldap_template, mode,
             address_attrs="mail,mailAlternateAddress")
    assert_reply(login(gw, "carol", "carol-Dir-3"), 235, "2.7.0")
    assert_reply(login(gw, "dave", "dave-Dir-4"), 235, "2.7.0")


@pytest.mark.parametrize("mode", ["dn", "search"])
def test_injection_is_escaped(gw, directory, ldap_template, mode):
    set_ldap(gw, directory, ldap_template, mode, **STANDARD)
    # Each would find alice's entry (or another) if put into the filter
    # or the DN unescaped; with her password, a leak would be a 235.
    for evil in ("alic*", "al*ce", "*", "alice)(uid=*", "*)(|(uid=*",
                 "x)(|(uid=alice)", "alice,ou=people",
                 "uid=alice,ou=people,dc=example,dc=org", "alice\\2a",
                 "#alice"):
        assert_reply(login(gw, evil, "alice-Dir-1"), 535, "5.7.8")
    # A uid with a comma: its DN needs RFC 4514 escaping to be found.
    assert_reply(login(gw, "e,ve", "eve-Dir-5"), 235, "2.7.0")


def test_mail_password(gw, directory, ldap_template):
    set_ldap(gw, directory, ldap_template, "search",
             mail_password_attr="mailPassword", **STANDARD)
    # The account password never works here; the mail password does
    # (alice: yescrypt, bob: SHA-512-crypt).
    assert_reply(login(gw, "alice", "alice-Dir-1"), 535, "5.7.8")
    assert_reply(login(gw, "alice", "alice-Mail-1"), 235, "2.7.0")
    assert_reply(login(gw, "bob@ldapco.org", "bob-Mail-2"), 235, "2.7.0")
    assert_reply(login(gw, "bob", "bob-Dir-2"), 535, "5.7.8")
    # frank has no mail password at all.
    assert_reply(login(gw, "frank", "frank-Dir-6"), 535, "5.7.8")
    gw.wait_log(r"member=frank result=fail reason=\"no mail password\"")
    res, tok = submit_as(gw, "alice", "alice-Mail-1", "alice.smith@ldapco.net",
                         "alice@ldapco.org")
    assert_queued(res)
    assert_verifies(gw.sink.wait_for(tok)[0], ldap_template["records"],
                    TENANT)
    # DN template with a service identity reads it too.
    set_ldap(gw, directory, ldap_template, "dn+service",
             mail_password_attr="mailPassword", **STANDARD)
    assert_reply(login(gw, "bob", "bob-Mail-2"), 235, "2.7.0")
    assert_reply(login(gw, "bob", "bob-Dir-2"), 535, "5.7.8")


def test_ldaps_and_starttls(gw, directory, ldap_template):
    set_ldap(gw, directory, ldap_template, "search",
             uri=directory.ldaps_uri, **STANDARD)
    assert_reply(login(gw, "alice", "alice-Dir-1"), 235, "2.7.0")
    assert_reply(login(gw, "alice", "alice-Dir-1", tls="implicit"), 235,
                 "2.7.0")
    # ldap:// without StartTLS: this directory refuses simple binds in
    # the clear, so a check that does not encrypt cannot pass.
    set_ldap(gw, directory, ldap_template, "dn", starttls="no", **STANDARD)
    assert_reply(login(gw, "alice", "alice-Dir-1"), 454, "4.7.0")
    set_ldap(gw, directory, ldap_template, "dn", starttls="yes", **STANDARD)
    assert_reply(login(gw, "alice", "alice-Dir-1"), 235, "2.7.0")
    # A certificate that does not verify (no --ca-file: the system's CAs
    # do not know it): a temporary failure, not a wrong password.
    gw.admin("tenant", "ldap", TENANT, "--uri", directory.ldaps_uri,
             "--dn-template", DN_TEMPLATE)
    assert_reply(login(gw, "alice", "alice-Dir-1"), 454, "4.7.0")
    assert_reply(login(gw, "alice", "wrong"), 454, "4.7.0")
    gw.wait_log(r"ldap tenant=ldapco\.org uri=ldaps://\S+ step=connect")


def test_failover_to_next_uri(gw, directory, ldap_template):
    dead = "ldap://127.0.0.1:%d" % helpers.free_port()
    set_ldap(gw, directory, ldap_template, "search",
             uri="%s,%s" % (dead, directory.ldap_uri), **STANDARD)
    assert_reply(login(gw, "hugo", "hugo-Dir-8"), 235, "2.7.0")
    gw.wait_log(r"ldap tenant=ldapco\.org uri=%s step=" % re.escape(dead))


# --- a directory that goes away ------------------------------------------------


@pytest.fixture
def outage(ldap_template, tmp_path):
    """A slapd and a gateway of this test's own (stopping the module's
    directory would disturb other tests)."""
    d = start_directory(tmp_path / "slapd")
    gw = None
    try:
        gw = start_gateway(tmp_path / "gw", ldap_template,
                           {"ldap_timeout": "2s"})
        set_ldap(gw, d, ldap_template, "search", **STANDARD)
        yield gw, d
    finally:
        if gw is not None:
            gw.close()
        d.close()


def test_directory_stopped_gives_454_then_recovers(outage):
    gw, d = outage
    assert_reply(login(gw, "alice", "alice-Dir-1"), 235, "2.7.0")
    d.stop()
    # Credentials the auth cache has never seen: the directory must be
    # asked, and cannot be. Never 535, not even for a wrong password.
    assert_reply(login(gw, "bob", "bob-Dir-2"), 454, "4.7.0")
    assert_reply(login(gw, "alice", "not-her-password"), 454, "4.7.0")
    assert_reply(login(gw, "carol", "carol-Dir-3"), 454, "4.7.0")
    gw.wait_log(r"member=bob result=tempfail reason=\"directory "
                r"unavailable\"")
    # alice's accepted login is remembered (auth_cache_ttl).
    assert_reply(login(gw, "alice", "alice-Dir-1"), 235, "2.7.0")
    starts = gw.starts
    pid = gw.pid
    d.start()
    # Back, without restarting subgated.
    assert_reply(login(gw, "bob", "bob-Dir-2"), 235, "2.7.0")
    assert_reply(login(gw, "carol", "carol-Dir-3"), 535, "5.7.8")
    assert gw.running and gw.pid == pid and gw.starts == starts
    res, tok = submit_as(gw, "bob", "bob-Dir-2", "bob@ldapco.org",
                         "bob@ldapco.org")
    assert_queued(res)
    gw.sink.wait_for(tok)


def test_directory_not_answering_gives_454(outage):
    gw, d = outage
    assert_reply(login(gw, "alice", "alice-Dir-1"), 235, "2.7.0")
    d.pause()
    try:
        # The pooled connection's search times out (ldap_timeout 2s).
        assert_reply(login(gw, "bob", "bob-Dir-2"), 454, "4.7.0")
        # A new connection: accepted by the kernel, StartTLS never
        # answered.
        assert_reply(login(gw, "frank", "frank-Dir-6"), 454, "4.7.0")
        gw.wait_log(r"member=bob result=tempfail reason=\"directory "
                    r"timeout\"")
    finally:
        d.resume()
    wait_until(lambda: login(gw, "bob", "bob-Dir-2")[0] == 235,
               "logins to work again once the directory answers")
