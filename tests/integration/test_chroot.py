"""The SMTP worker in a chroot (the `chroot` setting; docs/security.md,
"Chroot"), against a real subgated started as root.

Covered: the SMTP worker's root is the chroot directory (from
/proc/PID/root) while the master's, the signer's and the other workers'
are not, it runs as `user` without a way back to root; AUTH, a message
accepted, signed, relayed to the sink, its DKIM signatures verified; the
copies of the name service files in the chroot's etc/; certificate reload
on SIGHUP from the names inside, with a session kept across it, and a
broken file that leaves the old certificate; an LDAP tenant whose URI
names a host ("localhost", resolved inside through the copied etc/hosts)
and whose CA file lies in the chroot; `subgate tenant ldap` refusing
files outside the chroot; and refusals at start: a path outside the
chroot (file:line), no root, a key file the worker's user cannot read
inside, an LDAP tenant whose CA file is outside, and an etc/ in the chroot
that is a symbolic link or not root's (the master, root, writes there).

Everything but the configuration checks needs root (users, chroot) and is
skipped without it. The users are this module's own, so that
test_hardening.py's privilege test can run at the same time.
"""

import contextlib
import datetime
import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

import dkimverify
import helpers
from helpers import (
    BIN,
    WAIT_TIMEOUT,
    Gateway,
    assert_queued,
    assert_reply,
    auth_plain,
    connect,
    make_message,
    send,
    submit,
    peer_cert_der,
    pem_der,
)
from conftest import GatewayFactory
from slapd import Slapd, ssha

ALICE = "alice@example.org"
SMTPD_USER = "sgchroot-smtpd"
SIGNER_USER = "sgchroot-signer"

LDAP_TENANT = "chrootco.org"
SUFFIX = "dc=chrootco,dc=org"
PEOPLE = "ou=people," + SUFFIX
LDAP_UID = "lena"
LDAP_PASSWORD = "lena-Dir-1"


def needs_root():
    if os.geteuid() != 0:
        pytest.skip("needs root to create users and chroot")
    if shutil.which("useradd") is None:
        pytest.skip("no useradd")


@pytest.fixture(scope="module")
def chroot_users():
    needs_root()
    with helpers.service_users(SMTPD_USER, SIGNER_USER) as users:
        yield users


@pytest.fixture
def scratch(gateway_template):
    """Gateways under a directory outside pytest's 0700 tree, so that the
    users reach it; a GatewayFactory, so that a failure shows their logs."""
    root = Path(tempfile.mkdtemp(prefix="sg-chroot-", dir="/tmp"))
    os.chmod(root, 0o755)
    factory = GatewayFactory(root, gateway_template)
    yield factory
    factory.close()
    shutil.rmtree(root, ignore_errors=True)


def chroot_gateway(scratch, template, settings=None):
    """A gateway (not started) whose state directory is the chroot, with
    its TLS certificate and key inside, in tls/."""
    root, gateways = scratch.root, scratch.gateways
    gwroot = root / ("gw%d" % len(gateways))
    state = gwroot / "state"
    base = {"user": SMTPD_USER, "signer_user": SIGNER_USER,
            "chroot": str(state),
            "tls_cert": str(state / "tls" / "cert.pem"),
            "tls_key": str(state / "tls" / "key.pem")}
    base.update(settings or {})
    gw = Gateway(gwroot, template, base)
    gateways.append(gw)
    os.chmod(gw.root, 0o755)
    (state / "tls").mkdir()
    helpers.make_cert(state / "tls")
    return gw


def lay_out(gw, users):
    """docs/security.md's layout: the state directory (the chroot) is
    root's, group user, setgid; the database user's; key_dir the signer's
    only; the TLS key user's."""
    smtpd_pw, state = users[SMTPD_USER], gw.state
    helpers.lay_out_state(state, smtpd_pw, users[SIGNER_USER])
    os.chmod(state / "tls", 0o755)
    os.chown(state / "tls" / "key.pem", smtpd_pw.pw_uid, smtpd_pw.pw_gid)


def proc_root(pid):
    return os.readlink("/proc/%d/root" % pid)


def proc_status(pid, name):
    text = Path("/proc/%d/status" % pid).read_text()
    return re.search(r"^%s:[ \t]*(.*)$" % name, text, re.M).group(1)


def smtpd_pid(gw):
    """The PID of the SMTP worker now running, from the master's log."""
    pids = re.findall(r"started smtpd worker pid=(\d+)", gw.log_text())
    assert pids, gw.log_tail()
    return int(pids[-1])


def config_line(gw, key):
    """The line number of key in the gateway's configuration file."""
    for n, line in enumerate(gw.config.read_text().splitlines(), 1):
        if line.split("=")[0].strip() == key:
            return n
    raise AssertionError("no %s in %s" % (key, gw.config))


def refused_start(gw):
    """Starts subgated and waits for it to exit: (status, log text)."""
    gw.start(wait=False)
    status = gw.proc.wait(timeout=WAIT_TIMEOUT)
    return status, gw.log_text()


# --- the worker in its chroot ----------------------------------------------


def test_smtp_worker_chrooted(chroot_users, gateway_template, dns_records,
                              scratch, monkeypatch):
    gw = chroot_gateway(scratch, gateway_template)
    lay_out(gw, chroot_users)
    # A time zone file outside the chroot: the worker must have read it
    # before entering (glibc reads it once), or its dates come out in UTC.
    zone = Path("/usr/share/zoneinfo/Europe/Berlin")
    if zone.is_file():
        monkeypatch.setenv("TZ", ":%s" % zone)
    gw.start()
    state = str(gw.state)
    smtpd_pw = chroot_users[SMTPD_USER]

    # Only the SMTP worker is locked in.
    smtpd = smtpd_pid(gw)
    assert proc_root(smtpd) == state
    assert [int(x) for x in proc_status(smtpd, "Uid").split()] == \
        [smtpd_pw.pw_uid] * 4
    assert proc_status(smtpd, "NoNewPrivs") == "1"
    signer = gw.signer_pid()
    assert signer is not None and proc_root(signer) == "/"
    assert proc_root(gw.pid) == "/"
    others = [p for p in gw.children() if p not in (smtpd, signer)]
    assert others  # the queue runner (and the mailgate worker)
    for pid in others:
        assert proc_root(pid) == "/", pid
    gw.wait_log(r"chroot %s: checked as %s inside" % (re.escape(state),
                                                       SMTPD_USER))

    # The name service files the worker reads inside, refreshed at start.
    gw.wait_log(r"chroot %s: copied etc/hosts etc/resolv.conf "
                r"etc/nsswitch.conf" % re.escape(state))
    etc = gw.state / "etc"
    assert (etc / "hosts").read_bytes() == Path("/etc/hosts").read_bytes()
    assert "hosts: files dns" in (etc / "nsswitch.conf").read_text()
    for p in [etc, etc / "hosts", etc / "nsswitch.conf"]:
        st = p.lstat()
        assert st.st_uid == 0 and st.st_mode & 0o022 == 0, p

    # AUTH, a message accepted, signed by the signer outside, relayed.
    msg, tok = make_message()
    qid = assert_queued(submit(gw, ALICE, msg))
    gw.wait_log(r"queued .*member=alice@example\.org", qid=qid)
    got = gw.sink.wait_for(tok)[0]
    results = dkimverify.verify_message(got.raw, dns_records)
    assert len(results) == 2 and all(ok for _, _, ok in results), results
    # The worker's Received: field is dated in the zone read outside.
    if zone.is_file():
        received = got.headers("Received")[0]
        want = datetime.datetime.now(ZoneInfo("Europe/Berlin")).strftime("%z")
        assert re.search(r"; .* ([+-]\d{4})$", received).group(1) == want, \
            received


def test_sighup_reload_inside_chroot(chroot_users, gateway_template, scratch):
    gw = chroot_gateway(scratch, gateway_template)
    lay_out(gw, chroot_users)
    gw.start()
    smtpd = smtpd_pid(gw)
    cert, key = gw.state / "tls" / "cert.pem", gw.state / "tls" / "key.pem"
    assert peer_cert_der(gw.submissions_port) == pem_der(cert)
    old = connect(gw)
    try:
        assert_reply(auth_plain(old, ALICE, helpers.PASSWORDS[ALICE]), 235)
        # A renewed certificate, put into the chroot as docs/security.md
        # says; the worker reads it by its name inside.
        newdir = gw.root / "tls-new"
        newdir.mkdir()
        cert2, key2 = helpers.make_cert(newdir)
        os.chown(key2, chroot_users[SMTPD_USER].pw_uid, -1)
        shutil.copy(cert2, str(cert) + ".new")
        shutil.copy(key2, str(key) + ".new")
        os.chown(str(key) + ".new", chroot_users[SMTPD_USER].pw_uid, -1)
        os.replace(str(key) + ".new", key)
        os.replace(str(cert) + ".new", cert)
        os.kill(gw.pid, signal.SIGHUP)
        gw.wait_log(r"smtpd: tls certificate reloaded cert=/tls/cert\.pem")
        assert peer_cert_der(gw.submissions_port) == pem_der(cert2)
        # The master copied etc/ again.
        helpers.wait_until(
            lambda: len(re.findall(r"chroot \S+: copied", gw.log_text())) >= 2,
            "etc/ to be copied again on SIGHUP")
        # The session from before goes on.
        msg, tok = make_message()
        assert_queued(send(old, ALICE, ["bob@example.net"], msg))
        gw.sink.wait_for(tok)
    finally:
        with contextlib.suppress(Exception):
            old.quit()
    # A file that does not load keeps the loaded certificate.
    key.write_text("not a key\n")
    os.kill(gw.pid, signal.SIGHUP)
    gw.wait_log(r"smtpd: tls reload failed, keeping the old certificate")
    assert peer_cert_der(gw.submissions_port) == pem_der(cert2)
    # The same worker all along: nothing was restarted.
    assert smtpd_pid(gw) == smtpd and proc_root(smtpd) == str(gw.state)


# --- LDAP from inside the chroot ---------------------------------------------


def ldap_ldif():
    return (
        "dn: %s\nobjectClass: dcObject\nobjectClass: organization\n"
        "o: Chrootco\ndc: chrootco\n\n"
        "dn: %s\nobjectClass: organizationalUnit\nou: people\n\n"
        "dn: uid=%s,%s\nobjectClass: inetOrgPerson\nuid: %s\ncn: %s\n"
        "sn: %s\nuserPassword: %s\nmail: %s@%s\n"
        % (SUFFIX, PEOPLE, LDAP_UID, PEOPLE, LDAP_UID, LDAP_UID, LDAP_UID,
           ssha(LDAP_PASSWORD), LDAP_UID, LDAP_TENANT))


def ldap_login(gw, login, password):
    s = connect(gw)
    try:
        return auth_plain(s, login, password)
    finally:
        with contextlib.suppress(Exception):
            s.quit()


def test_ldap_tenant_inside_chroot(chroot_users, gateway_template, scratch):
    root = scratch.root
    directory = Slapd(root / "slapd", suffix=SUFFIX, load=ldap_ldif())
    directory.start()
    try:
        gw = chroot_gateway(scratch, gateway_template)
        gw.admin("tenant", "add", LDAP_TENANT)
        gw.admin("key", "generate", LDAP_TENANT)
        gw.admin("key", "activate", LDAP_TENANT, "--force")
        records = dict(gw.records)
        records.update(dkimverify.parse_records(
            gw.admin("dns", "records", LDAP_TENANT).stdout.decode()))
        dn_template = "uid=%u," + PEOPLE
        # A CA file outside the chroot is refused by the admin tool, and so
        # is an ldapi:// URI.
        res = gw.admin("tenant", "ldap", LDAP_TENANT, "--uri",
                       directory.ldap_uri, "--dn-template", dn_template,
                       "--ca-file", str(directory.ca_file), check=False)
        assert res.returncode != 0
        assert ("--ca-file %s is outside the chroot directory (chroot = %s)"
                % (directory.ca_file, gw.state)) in res.stderr.decode()
        res = gw.admin("tenant", "ldap", LDAP_TENANT, "--uri",
                       "ldapi://%2Frun%2Fslapd%2Fldapi", "--dn-template",
                       dn_template, check=False)
        assert res.returncode != 0
        assert "ldapi:// cannot be reached" in res.stderr.decode()
        # Inside: StartTLS with the certificate verified against the CA
        # file, read by its name inside.
        ca = gw.state / "ldap-ca.pem"
        shutil.copy(directory.ca_file, ca)
        os.chmod(ca, 0o644)
        gw.admin("tenant", "ldap", LDAP_TENANT, "--uri", directory.ldap_uri,
                 "--dn-template", dn_template, "--ca-file", str(ca))
        lay_out(gw, chroot_users)
        gw.start()
        assert proc_root(smtpd_pid(gw)) == str(gw.state)

        s = connect(gw)
        try:
            assert_reply(auth_plain(s, LDAP_UID, LDAP_PASSWORD), 235, "2.7.0")
            address = "%s@%s" % (LDAP_UID, LDAP_TENANT)
            msg, tok = make_message(from_hdr=address)
            assert_queued(send(s, address, ["bob@example.net"], msg))
        finally:
            with contextlib.suppress(Exception):
                s.quit()
        got = gw.sink.wait_for(tok)[0]
        results = dkimverify.verify_message(got.raw, records)
        assert results and all(ok for _, _, ok in results), results
        assert all(tags["d"] == LDAP_TENANT for _, tags, _ in results)
        gw.wait_log(r"auth client=\S+ member=%s@%s result=ok"
                    % (LDAP_UID, re.escape(LDAP_TENANT)))
        # A wrong password is a refusal, not a directory failure.
        assert_reply(ldap_login(gw, LDAP_UID, LDAP_PASSWORD + "x"), 535)

        # A host name, resolved inside the chroot (etc/hosts, copied there
        # by the master). Without TLS here: libldap checks a certificate
        # for "localhost" against the machine's own name instead.
        gw.admin("tenant", "ldap", LDAP_TENANT, "--uri",
                 "ldap://localhost:%d" % directory.port,
                 "--dn-template", dn_template, "--starttls", "no")
        assert_reply(ldap_login(gw, LDAP_UID, LDAP_PASSWORD), 235, "2.7.0")
        assert "uri=ldap://localhost" not in gw.log_text()
    finally:
        directory.close()


# --- refused at start --------------------------------------------------------


def test_path_outside_chroot_refused(gateway_template, scratch):
    """Needs no root: the configuration is refused before anything runs."""
    root, gateways = scratch.root, scratch.gateways
    # The template's key and certificate lie outside the state directory.
    gwroot = root / "gw-outside"
    gw = Gateway(gwroot, gateway_template,
                 {"user": "nobody", "chroot": str(gwroot / "state")})
    gateways.append(gw)
    status, log = refused_start(gw)
    assert status == 1
    # tls_cert comes before tls_key; chroot is the later line.
    want = ("%s:%d: tls_cert %s is outside the chroot directory (chroot = "
            "%s): the SMTP worker opens it from inside the chroot"
            % (gw.config, config_line(gw, "chroot"), gateway_template["cert"],
               gw.state))
    assert want in log, log
    # subgated -n (ExecStartPre of the unit) says the same.
    res = subprocess.run([str(BIN / "subgated"), "-n", "-c", str(gw.config)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         timeout=WAIT_TIMEOUT)
    assert res.returncode == 1 and want in res.stderr.decode()


def test_chroot_needs_root(gateway_template, scratch):
    gw = chroot_gateway(scratch, gateway_template, {"user": "nobody"})
    os.chmod(gw.root, 0o755)

    def as_nobody():
        if os.geteuid() == 0:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)

    res = subprocess.run([str(BIN / "subgated"), "-c", str(gw.config)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         preexec_fn=as_nobody, timeout=WAIT_TIMEOUT)
    assert res.returncode == 1
    assert ("%s: chroot = %s needs subgated to start as root"
            % (gw.config, gw.state)) in res.stderr.decode()


def test_unreadable_key_inside_refused(chroot_users, gateway_template,
                                       scratch):
    gw = chroot_gateway(scratch, gateway_template)
    lay_out(gw, chroot_users)
    # Inside the chroot by name, but the worker's user cannot read it.
    os.chown(gw.state / "tls" / "key.pem", 0, 0)
    os.chmod(gw.state / "tls" / "key.pem", 0o600)
    status, log = refused_start(gw)
    assert status == 1
    assert re.search(r"chroot check: .*/tls/key\.pem", log), log
    assert "chroot %s: the SMTP worker cannot work inside it" % gw.state in log
    assert "started smtpd worker" not in log


def test_ldap_file_outside_refused(chroot_users, gateway_template, scratch):
    root = scratch.root
    gw = chroot_gateway(scratch, gateway_template)
    outside = root / "ca-outside.pem"
    shutil.copy(gateway_template["cert"], outside)
    # Set through a configuration without chroot (an older tenant, or a
    # chroot turned on later): the admin tool would refuse it.
    plain = root / "plain.conf"
    settings = dict(gw.settings)
    settings.pop("chroot")
    helpers.write_config(plain, settings)
    helpers.admin(plain, "tenant", "add", LDAP_TENANT)
    helpers.admin(plain, "tenant", "ldap", LDAP_TENANT, "--uri",
                  "ldap://localhost:389", "--dn-template", "uid=%u," + PEOPLE,
                  "--ca-file", str(outside))
    lay_out(gw, chroot_users)
    status, log = refused_start(gw)
    assert status == 1
    assert ("chroot check: ldap tenant=%s ca_file %s is outside the chroot "
            "directory (chroot = %s)" % (LDAP_TENANT, outside, gw.state)) \
        in log
    assert "chroot %s: the SMTP worker cannot work inside it" % gw.state in log


def test_etc_in_chroot_guarded(chroot_users, gateway_template, scratch):
    """The master writes etc/ as root in a directory the worker's user may
    write in: it never follows a link there, nor writes in a directory
    that is not root's alone."""
    gw = chroot_gateway(scratch, gateway_template)
    lay_out(gw, chroot_users)
    elsewhere = scratch.root / "elsewhere"
    elsewhere.mkdir()
    (gw.state / "etc").symlink_to(elsewhere)
    status, log = refused_start(gw)
    assert status == 1
    assert "chroot: %s/etc is not a directory" % gw.state in log, log
    assert list(elsewhere.iterdir()) == []
    assert "started smtpd worker" not in log

    (gw.state / "etc").unlink()
    (gw.state / "etc").mkdir()
    smtpd_pw = chroot_users[SMTPD_USER]
    os.chown(gw.state / "etc", smtpd_pw.pw_uid, smtpd_pw.pw_gid)
    status, log = refused_start(gw)
    assert status == 1
    assert ("chroot: %s/etc must belong to root and be writable by root only"
            % gw.state) in log, log
    assert list((gw.state / "etc").iterdir()) == []
