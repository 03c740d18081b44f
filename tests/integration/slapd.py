"""slapd: a real OpenLDAP server (Debian's slapd) for integration tests.

    with Slapd(tmp_path / "ldap") as d:      # started, stopped at the end
        d.add(ldif_text)                     # ldapadd as the root DN
        d.ldap_uri, d.ldaps_uri, d.ca_file   # what a client needs

One Slapd is one server process with its own directory under root: a
slapd.conf (mdb backend, the core, cosine, inetorgperson and nis schemas
from /etc/ldap/schema plus subgate's schema/ldap/subgate.schema, the
memberof overlay), a self-signed certificate for 127.0.0.1 and localhost
(StartTLS on ldap://, and ldaps://), and loopback ports picked when it is
made and kept across restarts. It runs in the foreground (-d) as the user
that runs the tests, in its own process group, and is stopped by PID
(SIGTERM, then SIGKILL). stop() and start() again keep the data, as a
restarted directory server does; pause() and resume() (SIGSTOP/SIGCONT)
make a server that accepts connections but never answers.

Entries can be loaded before the first start with slapadd (load=) or
later with add(), which goes through the server (so the memberof overlay
maintains memberOf when groups are added). The root DN and its password
are rootdn/rootpw. access: userPassword is usable only to bind;
mailPassword is readable only by service_dn (when given); everything else
is readable by any bound identity and by nobody anonymously.

Nothing here depends on subgate: another test may import it for any
directory it needs (a second slapd for a two-node test, say).
"""

import contextlib
import ctypes
import ctypes.util
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

HOST = "127.0.0.1"
SCHEMA_DIR = Path("/etc/ldap/schema")
REPO = Path(__file__).resolve().parents[2]
SUBGATE_SCHEMA = REPO / "schema" / "ldap" / "subgate.schema"
SLAPD = "/usr/sbin/slapd"
WAIT_TIMEOUT = float(os.environ.get("SUBGATE_TEST_TIMEOUT", "40"))
STOP_TIMEOUT = 10.0
POLL = 0.05


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _port_open(port):
    try:
        with socket.create_connection((HOST, port), timeout=1):
            return True
    except OSError:
        return False


def ssha(password):
    """A {SSHA} userPassword value, made by slappasswd."""
    out = subprocess.run(
        ["slappasswd", "-h", "{SSHA}", "-s", password],
        check=True, stdout=subprocess.PIPE, timeout=30)
    return out.stdout.decode().strip()


def crypt_hash(password, prefix="$y$"):
    """crypt(3) of password with a fresh salt from libxcrypt's
    crypt_gensalt: prefix "$y$" (yescrypt) or "$6$" (SHA-512-crypt)."""
    lib = ctypes.CDLL(ctypes.util.find_library("crypt") or "libcrypt.so.1")
    lib.crypt_gensalt.restype = ctypes.c_char_p
    lib.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong,
                                  ctypes.c_char_p, ctypes.c_int]
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    salt = lib.crypt_gensalt(prefix.encode(), 0, None, 0)
    if not salt:
        raise RuntimeError("crypt_gensalt(%s) failed" % prefix)
    out = lib.crypt(password.encode(), salt)
    if not out or out.startswith(b"*"):
        raise RuntimeError("crypt(%s) failed" % prefix)
    return out.decode()


def make_cert(directory):
    """A self-signed certificate for 127.0.0.1 and localhost, which is also
    the CA file a client trusts: (cert, key)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
         "-subj", "/CN=localhost", "-days", "2",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        timeout=60)
    os.chmod(key, 0o600)
    return cert, key


class Slapd:
    def __init__(self, root, suffix="dc=example,dc=org", rootpw="root-Secret",
                 service_dn=None, require_tls=False, load=None):
        """root: a new directory for this server's files. service_dn: the
        identity that may read mailPassword. require_tls: simple binds
        need a TLS-protected connection (security simple_bind=128).
        load: LDIF text slapadd'ed before the first start."""
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.suffix = suffix
        self.rootdn = "cn=admin," + suffix
        self.rootpw = rootpw
        self.service_dn = service_dn
        self.require_tls = require_tls
        self.port = free_port()
        self.tls_port = free_port()
        while self.tls_port == self.port:
            self.tls_port = free_port()
        self.cert, self.key = make_cert(self.root / "tls")
        self.ca_file = self.cert
        self.db_dir = self.root / "db"
        self.db_dir.mkdir(exist_ok=True)
        self.conf = self.root / "slapd.conf"
        self.log = self.root / "slapd.log"
        self.proc = None
        self.starts = 0
        self._write_conf()
        if load:
            self.slapadd(load)

    # configuration -----------------------------------------------------
    def _write_conf(self):
        schemas = [SCHEMA_DIR / n for n in (
            "core.schema", "cosine.schema", "inetorgperson.schema",
            "nis.schema")] + [SUBGATE_SCHEMA]
        lines = ["include %s" % p for p in schemas]
        lines += [
            "pidfile %s" % (self.root / "slapd.pid"),
            "argsfile %s" % (self.root / "slapd.args"),
            "modulepath /usr/lib/ldap",
            "moduleload back_mdb",
            "moduleload memberof",
            "TLSCertificateFile %s" % self.cert,
            "TLSCertificateKeyFile %s" % self.key,
        ]
        if self.require_tls:
            lines.append("security simple_bind=128")
        lines += [
            "database mdb",
            "maxsize 16777216",
            'suffix "%s"' % self.suffix,
            'rootdn "%s"' % self.rootdn,
            "rootpw %s" % self.rootpw,
            "directory %s" % self.db_dir,
            "index objectClass eq",
            "index uid eq",
            "index mail eq",
            "overlay memberof",
            "access to attrs=userPassword by anonymous auth by self write "
            "by * none",
        ]
        if self.service_dn:
            lines.append('access to attrs=mailPassword by dn.exact="%s" read '
                         "by self write by * none" % self.service_dn)
        else:
            lines.append("access to attrs=mailPassword by self write "
                         "by * none")
        lines.append("access to * by users read by * none")
        self.conf.write_text("\n".join(lines) + "\n")

    @property
    def ldap_uri(self):
        return "ldap://%s:%d" % (HOST, self.port)

    @property
    def ldaps_uri(self):
        return "ldaps://%s:%d" % (HOST, self.tls_port)

    # lifecycle ---------------------------------------------------------
    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self):
        if self.running:
            return self
        self.starts += 1
        with open(self.log, "ab") as f:
            f.write(b"=== harness: start %d of slapd ===\n" % self.starts)
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [SLAPD, "-d", "0", "-f", str(self.conf),
             "-h", "%s/ %s/" % (self.ldap_uri, self.ldaps_uri)],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
            start_new_session=True)
        logf.close()
        deadline = time.monotonic() + WAIT_TIMEOUT
        while not (_port_open(self.port) and _port_open(self.tls_port)):
            if self.proc.poll() is not None:
                raise AssertionError("slapd exited with %s at start: %s" % (
                    self.proc.returncode, self.log_tail()))
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError("slapd did not listen on %d and %d: %s"
                                     % (self.port, self.tls_port,
                                        self.log_tail()))
            time.sleep(POLL)
        return self

    def stop(self):
        """SIGTERM by PID, SIGKILL after STOP_TIMEOUT. Returns the exit
        status, None if it was not running."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)  # if paused
                os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        status = self.proc.returncode
        self.proc = None
        return status

    def restart(self):
        self.stop()
        return self.start()

    def pause(self):
        """SIGSTOP: connections are accepted by the kernel, nothing is
        answered."""
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self):
        os.kill(self.proc.pid, signal.SIGCONT)

    def close(self):
        self.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    def log_tail(self, n=40):
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return ""
        return "\n".join(lines[-n:])

    # data --------------------------------------------------------------
    def slapadd(self, ldif):
        """Loads LDIF text offline (the server must be stopped)."""
        assert not self.running, "slapadd needs slapd stopped"
        path = self.root / ("load-%d.ldif" % time.monotonic_ns())
        path.write_text(ldif)
        self._run(["slapadd", "-f", str(self.conf), "-l", str(path)])

    def _client_env(self):
        env = dict(os.environ)
        env["LDAPTLS_CACERT"] = str(self.ca_file)
        env["LDAPTLS_REQCERT"] = "demand"
        env["LDAPCONF"] = os.devnull
        env["LDAPRC"] = os.devnull
        return env

    def _run(self, argv, input=None):
        res = subprocess.run(
            argv, input=input.encode() if isinstance(input, str) else input,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=self._client_env(), timeout=60)
        if res.returncode != 0:
            raise AssertionError("%s exited %d: %s %s" % (
                " ".join(argv[:2]), res.returncode,
                res.stdout.decode(errors="replace"),
                res.stderr.decode(errors="replace")))
        return res.stdout.decode(errors="replace")

    def _admin_argv(self, tool):
        # Over ldaps, so that it works with require_tls as well.
        return [tool, "-x", "-H", self.ldaps_uri, "-D", self.rootdn,
                "-w", self.rootpw]

    def add(self, ldif):
        """ldapadd as the root DN, through the running server."""
        return self._run(self._admin_argv("ldapadd"), input=ldif)

    def modify(self, ldif):
        return self._run(self._admin_argv("ldapmodify"), input=ldif)

    def search(self, base, filt="(objectClass=*)", *attrs):
        return self._run(self._admin_argv("ldapsearch") + [
            "-LLL", "-b", base, filt] + list(attrs))

    def __repr__(self):
        return "<Slapd %s %s>" % (self.ldap_uri, self.ldaps_uri)
