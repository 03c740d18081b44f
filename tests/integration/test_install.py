"""Installing subgate: `make install` with DESTDIR and PREFIX puts the
expected files in place with their modes; the man pages and units it
installs are well-formed; the gateway runs from the installed tree as its
systemd unit starts it (deploy/run-unit: NoNewPrivileges, the capability
bounding set and the read-only file system of the unit); the Debian
package builds with dpkg-buildpackage.

Installing the package into this machine (dpkg -i, a run of the real unit,
dpkg --purge) changes the system: that test runs only with
SUBGATE_TEST_DPKG=1 and when no subgate package or /etc/subgate is there.
"""

import grp
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

import dkimverify
from helpers import (
    BIN,
    HOST,
    REPO,
    Sink,
    assert_queued,
    descendants,
    free_port,
    make_cert,
    make_message,
    session,
    send,
    stop_process,
    wait_until,
)

UNITS = ("subgated.service", "subgate-rotate.service", "subgate-rotate.timer")
RUN_UNIT = REPO / "deploy" / "run-unit"
PASSWORD = "install-Secret-1"


def sanitized():
    """True when BIN holds an AddressSanitizer build (make SANITIZE=1)."""
    return b"libasan.so" in (BIN / "subgated").read_bytes()


def make_install(destdir, **variables):
    """`make install` of the build in BIN's parent into destdir."""
    argv = ["make", "-s", "-C", str(REPO), "B=%s" % BIN.parent,
            "DESTDIR=%s" % destdir]
    if sanitized():
        argv.append("SANITIZE=1")
    argv += ["%s=%s" % kv for kv in variables.items()]
    argv.append("install")
    res = subprocess.run(argv, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, timeout=600)
    assert res.returncode == 0, res.stdout.decode(errors="replace")


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture(scope="module")
def usr_tree(tmp_path_factory):
    """A `make install DESTDIR=... PREFIX=/usr` tree, as the package has."""
    root = tmp_path_factory.mktemp("install") / "root"
    make_install(root, PREFIX="/usr", UNITDIR="/lib/systemd/system")
    return root


EXPECTED = {
    "usr/sbin/subgated": 0o755,
    "usr/sbin/subgate-signer": 0o755,
    "usr/sbin/subgate": 0o755,
    "usr/share/man/man8/subgated.8": 0o644,
    "usr/share/man/man8/subgate.8": 0o644,
    "usr/share/man/man5/subgate.conf.5": 0o644,
    "lib/systemd/system/subgated.service": 0o644,
    "lib/systemd/system/subgate-rotate.service": 0o644,
    "lib/systemd/system/subgate-rotate.timer": 0o644,
    "etc/subgate/subgate.conf": 0o644,
    "usr/share/doc/subgate/subgate.conf.example": 0o644,
    "usr/share/doc/subgate/README.md": 0o644,
    "usr/share/doc/subgate/install.md": 0o644,
    "usr/share/doc/subgate/operations.md": 0o644,
    "usr/share/doc/subgate/clients.md": 0o644,
    "usr/share/doc/subgate/scaling.md": 0o644,
    "usr/share/doc/subgate/configuration.md": 0o644,
}


def test_install_files_and_modes(usr_tree):
    for rel, want in EXPECTED.items():
        path = usr_tree / rel
        assert path.is_file(), "not installed: %s" % rel
        assert mode(path) == want, "%s: mode %o, want %o" % (
            rel, mode(path), want)
    # The example configuration is installed as the configuration.
    assert (usr_tree / "etc/subgate/subgate.conf").read_bytes() == \
        (REPO / "deploy/subgate.conf.example").read_bytes()
    # The units name the installed programs.
    unit = (usr_tree / "lib/systemd/system/subgated.service").read_text()
    assert "\nExecStart=/usr/sbin/subgated -c /etc/subgate/subgate.conf\n" \
        in unit
    # Nothing beyond what was asked for outside usr/, lib/ and etc/.
    assert sorted(p.name for p in usr_tree.iterdir()) == ["etc", "lib", "usr"]


def test_installed_subgated_checks_config(usr_tree):
    conf = usr_tree / "etc/subgate/subgate.conf"
    res = subprocess.run([str(usr_tree / "usr/sbin/subgated"), "-n", "-c",
                          str(conf)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, timeout=60)
    assert res.returncode == 0, res.stderr
    out = res.stdout.decode()
    assert "\nuser = subgate\n" in out
    assert "\nsigner_user = subgate-signer\n" in out
    # The signer goes beside subgated, where the master looks for it.
    assert '\nsigner_program = ""\n' in out


def test_install_keeps_an_existing_config(usr_tree):
    conf = usr_tree / "etc/subgate/subgate.conf"
    conf.write_text(conf.read_text() + "# edited by the administrator\n")
    make_install(usr_tree, PREFIX="/usr", UNITDIR="/lib/systemd/system")
    assert conf.read_text().endswith("# edited by the administrator\n")


def test_install_libexecdir(tmp_path):
    root = tmp_path / "root"
    make_install(root, PREFIX="/opt/sg", LIBEXECDIR="/opt/sg/libexec/subgate",
                 CONFDIR="/opt/sg/etc")
    signer = root / "opt/sg/libexec/subgate/subgate-signer"
    assert signer.is_file() and mode(signer) == 0o755
    assert not (root / "opt/sg/sbin/subgate-signer").exists()
    conf = root / "opt/sg/etc/subgate.conf"
    res = subprocess.run([str(root / "opt/sg/sbin/subgated"), "-n", "-c",
                          str(conf)], stdout=subprocess.PIPE, timeout=60)
    assert res.returncode == 0
    assert ("\nsigner_program = /opt/sg/libexec/subgate/subgate-signer\n"
            in res.stdout.decode())
    unit = (root / "opt/sg/lib/systemd/system/subgated.service").read_text()
    assert "\nExecStart=/opt/sg/sbin/subgated -c /opt/sg/etc/subgate.conf\n" \
        in unit
    rotate = (root / "opt/sg/lib/systemd/system/subgate-rotate.service")
    assert "ExecStart=/opt/sg/sbin/subgate -c /opt/sg/etc/subgate.conf key " \
        "rotate --due" in rotate.read_text()


def test_man_pages(usr_tree):
    man = usr_tree / "usr/share/man"
    pages = [man / "man8/subgated.8", man / "man8/subgate.8",
             man / "man5/subgate.conf.5"]
    for page in pages:
        res = subprocess.run(["groff", "-man", "-ww", "-z", str(page)],
                             stderr=subprocess.PIPE, timeout=60)
        assert res.returncode == 0 and res.stderr == b"", (page, res.stderr)
    # subgate.conf(5) documents every key `subgated -n` knows...
    conf5 = (man / "man5/subgate.conf.5").read_text()
    keys = subprocess.run([str(BIN / "subgated"), "-n", "-c", "/dev/null"],
                          stdout=subprocess.PIPE, timeout=60).stdout.decode()
    names = [l.split(" = ")[0] for l in keys.splitlines()]
    assert len(names) > 20
    for name in names:
        assert "\n.B %s\n" % name in conf5, "subgate.conf(5) lacks %s" % name
    # ... and subgate(8) every command of `subgate help`.
    subgate8 = (man / "man8/subgate.8").read_text()
    helptext = subprocess.run([str(BIN / "subgate"), "help"],
                              stdout=subprocess.PIPE, timeout=60).stdout
    commands = re.findall(r"^  ([a-z]+(?: [a-z|]+)?)", helptext.decode(), re.M)
    assert len(commands) > 5
    for cmd in commands:
        assert cmd.replace("-", "\\-") in subgate8, \
            "subgate(8) lacks %r" % cmd


@pytest.mark.skipif(not shutil.which("systemd-analyze"),
                    reason="systemd-analyze is not installed")
def test_units_verify(usr_tree, tmp_path):
    """systemd-analyze verify with the unit's programs pointed into the
    installed tree: no unknown key, no missing program."""
    for name in UNITS:
        text = (usr_tree / "lib/systemd/system" / name).read_text()
        (tmp_path / name).write_text(
            text.replace("/usr/sbin/", "%s/usr/sbin/" % usr_tree))
    res = subprocess.run(["systemd-analyze", "verify", "--man=no"] +
                         [str(tmp_path / n) for n in UNITS],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         timeout=120)
    assert res.returncode == 0 and res.stderr == b"", res.stderr.decode()
    unit = (usr_tree / "lib/systemd/system/subgated.service").read_text()
    for line in ("NoNewPrivileges=yes", "ProtectSystem=strict",
                 "ProtectHome=yes", "PrivateTmp=yes",
                 "ReadWritePaths=/var/lib/subgate",
                 "ExecReload=/bin/kill -HUP $MAINPID"):
        assert "\n%s\n" % line in unit, line


def test_build_depends_match_install_deps():
    """debian/control builds with what deploy/install-deps installs for
    building (build-essential is implied in a Debian build)."""
    text = (REPO / "deploy/install-deps").read_text()
    block = text.split("# build\n", 1)[1].split("#", 1)[0]
    wanted = set(block.split()) - {"build-essential"}
    control = (REPO / "debian/control").read_text()
    field = re.search(r"^Build-Depends:(.*?)^\S", control, re.M | re.S)
    got = set()
    for dep in field.group(1).split(","):
        name = dep.split()[0] if dep.split() else ""
        if name and name != "debhelper-compat":
            got.add(name)
    assert got == wanted, "only in debian/control: %s; only in " \
        "install-deps: %s" % (sorted(got - wanted), sorted(wanted - got))


# --- the installed gateway, started as its unit starts it -------------------


def can_sandbox():
    if os.geteuid() != 0 or not shutil.which("setpriv") or \
            not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "--mount", "true"]).returncode == 0


def status_field(pid, name):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(name + ":"):
                return line.split(":", 1)[1].strip()
    return None


def provision(sbin, conf):
    """A tenant, a member with PASSWORD, active keys; the DNS records."""
    def sg(*args, stdin=None):
        res = subprocess.run([str(sbin / "subgate"), "-c", str(conf)] +
                             list(args), input=stdin, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, timeout=120)
        assert res.returncode == 0, (args, res.stderr)
        return res.stdout.decode()
    sg("init")
    sg("tenant", "add", "example.org", "--sign", "rsa,ed25519")
    sg("member", "add", "alice@example.org", "--password-stdin",
       stdin=(PASSWORD + "\n").encode())
    sg("key", "generate", "example.org")
    sg("key", "activate", "example.org", "--force")
    return dkimverify.parse_records(sg("dns", "records", "example.org"))


class UnitRun:
    """deploy/run-unit of an installed unit; its PID is subgated's."""

    def __init__(self, unit, log, args=(), env=None):
        self.log = log
        logf = open(log, "ab")
        self.proc = subprocess.Popen(
            [str(RUN_UNIT)] + list(args) + [str(unit)],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
            start_new_session=True, env=env)
        logf.close()

    def text(self):
        return Path(self.log).read_text(errors="replace")

    def wait_ready(self, port):
        def ready():
            assert self.proc.poll() is None, "exited: %s" % self.text()
            try:
                with socket.create_connection((HOST, port), timeout=2) as s:
                    return s.recv(64).startswith(b"220")
            except OSError:
                return False
        wait_until(ready, "the installed gateway to greet on %d" % port)
        wait_until(lambda: "smtpd: ready" in self.text(), "smtpd ready")

    def stop(self):
        status = stop_process(self.proc)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return status


def check_sandboxed_master(pid, user, signer_user):
    """The master keeps only the unit's capabilities, cannot gain more,
    sees a read-only system; its workers run as the configured users."""
    # CAP_CHOWN 0, DAC_OVERRIDE 1, KILL 5, SETGID 6, SETUID 7,
    # NET_BIND_SERVICE 10
    want = (1 << 0) | (1 << 1) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 10)
    assert int(status_field(pid, "CapBnd"), 16) == want
    assert status_field(pid, "NoNewPrivs") == "1"
    with open("/proc/%d/mountinfo" % pid) as f:
        root = [l.split() for l in f if l.split()[4] == "/"]
    assert root and "ro" in root[-1][5].split(","), root
    users = []
    for kid in descendants(pid):
        uid = int(status_field(kid, "Uid").split()[0])
        users.append(pwd.getpwuid(uid).pw_name)
    # smtpd, qmgr, mailgate; the signer
    assert sorted(users) == sorted([user, user, user, signer_user]), users


def submit_and_verify(port, sink, records):
    msg, tok = make_message()
    with session(_Port(port), "alice@example.org", PASSWORD) as s:
        assert_queued(send(s, "alice@example.org", ["bob@example.net"], msg))
    got = sink.wait_for(tok)[0]
    results = dkimverify.verify_message(got.raw, records)
    assert len(results) == 2 and all(ok for _, _, ok in results), results


class _Port:
    """What helpers.session needs of a gateway: its submission port."""

    def __init__(self, port):
        self.submission_port = port


@pytest.mark.skipif(not can_sandbox(), reason="needs root and unshare")
def test_installed_gateway_under_unit_sandbox(usr_tree, tmp_path, request):
    """`make install`, then the unit's ExecStartPre and ExecStart under its
    sandbox, with the test's configuration and state in a temporary
    directory (which the unit's PrivateTmp would hide, hence
    PrivateTmp=no, and which replaces ReadWritePaths as a drop-in would).
    The workers run as nobody."""
    sbin = usr_tree / "usr/sbin"
    # The workers run as nobody, who cannot enter pytest's own 0700
    # directories: their files go to a directory of their own.
    top = Path(tempfile.mkdtemp(prefix="subgate-install-"))
    request.addfinalizer(lambda: shutil.rmtree(top, ignore_errors=True))
    os.chmod(top, 0o755)
    state = top / "state"
    cert, key = make_cert(top)
    sink = Sink(tmp_path / "sink", tls=(cert, key)).start()
    port = free_port()
    conf = top / "subgate.conf"
    conf.write_text("\n".join([
        "state_dir = %s" % state, "node_name = inst", "hostname = gw.test",
        "submission_listen = %s:%d" % (HOST, port),
        "submissions_listen = %s:%d" % (HOST, free_port()),
        "tls_cert = %s" % cert, "tls_key = %s" % key,
        "relay_host = [%s]:%d" % (HOST, sink.port),
        "retry_min = 1s", "retry_max = 2s", "auth_fail_delay = 0s",
        "user = nobody", "signer_user = nobody", ""]))
    records = provision(sbin, conf)
    nobody = pwd.getpwnam("nobody")
    for dirpath, dirnames, filenames in os.walk(state):
        for name in dirnames + filenames + [""]:
            os.chown(os.path.join(dirpath, name), nobody.pw_uid,
                     nobody.pw_gid)
    os.chmod(key, 0o640)
    os.chown(key, 0, nobody.pw_gid)
    env = dict(os.environ)
    # LeakSanitizer cannot trace a process that changed its user.
    env["ASAN_OPTIONS"] = "detect_leaks=0"
    run = UnitRun(usr_tree / "lib/systemd/system/subgated.service",
                  tmp_path / "unit.log",
                  ["--destdir", str(usr_tree), "--config", str(conf),
                   "--set", "PrivateTmp=no", "--set", "ReadWritePaths=",
                   "--set", "ReadWritePaths=%s" % state], env)
    try:
        run.wait_ready(port)
        # ExecStartPre ran `subgated -n` first.
        assert run.text().startswith("node_name = inst\n")
        check_sandboxed_master(run.proc.pid, "nobody", "nobody")
        submit_and_verify(port, sink, records)
        # systemctl reload: the gateway goes on serving.
        os.kill(run.proc.pid, signal.SIGHUP)
        wait_until(lambda: "SIGHUP: passing on" in run.text(), "SIGHUP")
        submit_and_verify(port, sink, records)
        assert run.stop() == 0, run.text()
        assert "subgated" in run.text() and "stopped" in run.text()
    finally:
        run.stop()
        sink.stop()


# --- the Debian package ------------------------------------------------------


def copy_source(dest):
    """The source tree without builds, run state and VCS data."""
    skip_top = {"build", "build-san", "run", ".git", ".pytest_cache"}

    def ignore(directory, names):
        out = {n for n in names if n == "__pycache__"}
        if Path(directory) == REPO:
            out |= skip_top & set(names)
        if Path(directory) == REPO / "debian":
            out |= {"build", "subgate", ".debhelper"} & set(names)
        return out
    shutil.copytree(REPO, dest, ignore=ignore, symlinks=True)


@pytest.fixture(scope="module")
def deb(tmp_path_factory):
    """dpkg-buildpackage -us -uc -b of a copy of the tree (so that the
    package build touches nothing in the working tree); the .deb."""
    if not shutil.which("dpkg-buildpackage") or not shutil.which("dh"):
        pytest.skip("dpkg-dev and debhelper are not installed "
                    "(deploy/install-deps)")
    root = tmp_path_factory.mktemp("deb")
    src = root / "subgate"
    copy_source(src)
    env = dict(os.environ, DEB_BUILD_OPTIONS="parallel=2")
    res = subprocess.run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=src,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         env=env, timeout=900)
    log = res.stdout.decode(errors="replace")
    assert res.returncode == 0, log[-5000:]
    # The unit tests ran during the build.
    assert "[  PASSED  ]" in log and "[  FAILED  ]" not in log, log[-3000:]
    debs = list(root.glob("subgate_*_*.deb"))
    assert len(debs) == 1, list(root.iterdir())
    return debs[0]


def dpkg_deb(*args):
    res = subprocess.run(["dpkg-deb"] + [str(a) for a in args],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout.decode()


def test_deb_contents(deb, tmp_path):
    info = dpkg_deb("--info", deb)
    assert re.search(r"^ Package: subgate$", info, re.M)
    depends = re.search(r"^ Depends: (.*)$", info, re.M).group(1)
    for lib in ("adduser", "libuv1", "libssl3", "libopendkim11",
                "libsqlite3-0"):
        assert lib in depends, depends
    files = dpkg_deb("-c", deb)
    for path in ("./usr/sbin/subgated", "./usr/sbin/subgate-signer",
                 "./usr/sbin/subgate", "./etc/subgate/subgate.conf",
                 "./lib/systemd/system/subgated.service",
                 "./lib/systemd/system/subgate-rotate.timer",
                 "./usr/share/man/man8/subgated.8.gz",
                 "./usr/share/man/man5/subgate.conf.5.gz"):
        assert re.search(r" %s$" % re.escape(path), files, re.M), path
    ctl = tmp_path / "control"
    dpkg_deb("-e", deb, ctl)
    assert (ctl / "conffiles").read_text().split() == \
        ["/etc/subgate/subgate.conf"]
    postinst = (ctl / "postinst").read_text()
    assert "adduser --system" in postinst
    # Units are enabled only if they were enabled before (an upgrade);
    # deb-systemd-invoke starts no disabled unit.
    enables = re.findall(r"^.*deb-systemd-helper enable.*$", postinst, re.M)
    assert enables and all("was-enabled" not in l for l in enables)
    assert "was-enabled" in postinst
    assert "subgate -c \"$CONF\" init" in postinst
    assert "rm -rf /var/lib/subgate /etc/subgate" in \
        (ctl / "postrm").read_text()


def deb_installable():
    if os.environ.get("SUBGATE_TEST_DPKG") != "1":
        return False, "set SUBGATE_TEST_DPKG=1 to install the package here"
    if os.geteuid() != 0:
        return False, "needs root"
    st = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Status}",
                         "subgate"], stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL).stdout
    if st.strip() not in (b"", b"not-installed", b"config-files") or \
            os.path.exists("/etc/subgate") or \
            os.path.exists("/var/lib/subgate"):
        return False, "a subgate installation is present"
    return True, ""


@pytest.mark.skipif(not deb_installable()[0], reason=deb_installable()[1])
def test_deb_install_run_purge(deb, tmp_path):
    """dpkg -i; the users, directories and modes; the real unit started
    with deploy/run-unit (the whole sandbox, the installed paths) serves
    and signs; dpkg --purge removes users and state."""
    res = subprocess.run(["dpkg", "-i", str(deb)], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, timeout=300)
    assert res.returncode == 0, res.stdout.decode()
    sink = run = None
    try:
        sg = pwd.getpwnam("subgate")
        signer = pwd.getpwnam("subgate-signer")
        assert "subgate-signer" in grp.getgrnam("subgate").gr_mem
        st = os.stat("/var/lib/subgate")
        assert (st.st_uid, grp.getgrgid(st.st_gid).gr_name) == (0, "subgate")
        assert mode("/var/lib/subgate") == 0o2770
        assert os.stat("/var/lib/subgate/keys").st_uid == signer.pw_uid
        assert mode("/var/lib/subgate/keys") == 0o700
        assert os.stat("/var/lib/subgate/subgate.db").st_uid == sg.pw_uid
        assert mode("/var/lib/subgate/subgate.db") == 0o660
        assert os.stat("/var/lib/subgate/queue").st_uid == sg.pw_uid
        # Installed, not enabled, not running.
        assert not os.path.exists("/etc/systemd/system/multi-user.target."
                                  "wants/subgated.service")

        os.makedirs("/etc/subgate/tls")
        cert, key = make_cert(Path("/etc/subgate/tls"))
        os.chown(key, 0, grp.getgrnam("subgate").gr_gid)
        os.chmod(key, 0o640)
        sink = Sink(tmp_path / "sink", tls=(cert, key)).start()
        port = free_port()
        conf = Path("/etc/subgate/subgate.conf")
        text = conf.read_text()
        for k, v in (("submission_listen", "%s:%d" % (HOST, port)),
                     ("submissions_listen", "%s:%d" % (HOST, free_port())),
                     ("tls_cert", str(cert)), ("tls_key", str(key)),
                     ("retry_min", "1s"), ("retry_max", "2s")):
            text = re.sub(r"^%s = .*$" % k, "%s = %s" % (k, v), text,
                          flags=re.M)
        text += "relay_host = [%s]:%d\n" % (HOST, sink.port)
        conf.write_text(text)
        records = provision(Path("/usr/sbin"), conf)
        # Keys generated by root go to the signer (docs/install.md).
        subprocess.run(["chown", "-R", "subgate-signer:subgate-signer",
                        "/var/lib/subgate/keys"], check=True)
        env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0")
        run = UnitRun("/lib/systemd/system/subgated.service",
                      tmp_path / "unit.log", env=env)
        run.wait_ready(port)
        check_sandboxed_master(run.proc.pid, "subgate", "subgate-signer")
        submit_and_verify(port, sink, records)
        assert run.stop() == 0, run.text()
    finally:
        if run is not None:
            run.stop()
        if sink is not None:
            sink.stop()
        res = subprocess.run(["dpkg", "--purge", "subgate"],
                             stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, timeout=300)
    assert res.returncode == 0, res.stdout.decode()
    for user in ("subgate", "subgate-signer"):
        with pytest.raises(KeyError):
            pwd.getpwnam(user)
    assert not os.path.exists("/var/lib/subgate")
    assert not os.path.exists("/etc/subgate")
