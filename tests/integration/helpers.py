"""helpers: the pieces that subgate's integration tests share.

Processes (subgated, the test sink) are started on loopback ports picked at
run time, each in its own process group, and stopped by PID: SIGTERM, then
SIGKILL after STOP_TIMEOUT seconds. Waiting is always polling against a
deadline (WAIT_TIMEOUT); a test never asserts on how long something took.
"""

import base64
import contextlib
import email.utils
import os
import pwd
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / "tests" / "tools"
BIN = Path(os.environ.get("SUBGATE_BIN", str(REPO / "build" / "bin")))
PYTHON = "/usr/bin/python3"
HOST = "127.0.0.1"

# Sanitized builds are several times slower than release ones: the
# deadlines are generous, and only bound how long a failing test hangs.
WAIT_TIMEOUT = float(os.environ.get("SUBGATE_TEST_TIMEOUT", "40"))
STOP_TIMEOUT = 10.0
POLL = 0.05

sys.path.insert(0, str(TOOLS))
import dkimverify  # noqa: E402  (tests/tools, shared with the demo)

# The test tenants. Known passwords (provisioned with --password-stdin).
PASSWORDS = {
    "alice@example.org": "alice-Secret-1",
    "bob@example.org": "bob-Secret-2",
    "carol@other.org": "carol-Secret-3",
    "dave@rewrite.org": "dave-Secret-4",
    "erin@rsaonly.org": "erin-Secret-5",
    "frank@nokey.org": "frank-Secret-6",
    "gina@example.org": "gina-Secret-7",
}
DISABLED = ("gina@example.org",)
ALIASES = {"alice@example.org": ["alice.smith@example.com"]}
# tenant domain -> extra options of `tenant add`
TENANTS = {
    "example.org": ["--sign", "rsa,ed25519"],
    "other.org": ["--sign", "rsa,ed25519"],
    "rewrite.org": [
        "--sender-policy",
        "rewrite",
        "--from-policy",
        "rewrite",
        "--sign",
        "rsa,ed25519",
    ],
    "rsaonly.org": ["--sign", "rsa"],
    "nokey.org": ["--sign", "rsa,ed25519"],
}
EXTRA_DOMAINS = {"example.com": "example.org"}  # domain -> tenant
# Domains whose keys are generated and activated; nokey.org only gets
# pending keys, so it has no key to sign with.
SIGNING_DOMAINS = (
    "example.org",
    "example.com",
    "other.org",
    "rewrite.org",
    "rsaonly.org",
)
PENDING_ONLY_DOMAINS = ("nokey.org",)

QUEUED_RE = re.compile(r"queued as ([0-9A-Z]{12})\b", re.I)


class WaitTimeout(AssertionError):
    """wait_until's deadline passed."""


def wait_until(pred, what, timeout=None, interval=POLL):
    """Polls pred() until it returns a true value, which it returns. Raises
    AssertionError naming `what` when the deadline passes."""
    deadline = time.monotonic() + (timeout or WAIT_TIMEOUT)
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise WaitTimeout("timed out after %.0fs waiting for %s"
                              % (timeout or WAIT_TIMEOUT, what))
        time.sleep(interval)


def free_port():
    """A loopback TCP port that was free a moment ago (bind 0, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_open(port):
    try:
        with socket.create_connection((HOST, port), timeout=1):
            return True
    except OSError:
        return False


def make_cert(directory):
    """A self-signed certificate for CN=localhost: (cert_path, key_path)."""
    directory = Path(directory)
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
            "-subj", "/CN=localhost", "-days", "2",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    os.chmod(key, 0o600)
    return cert, key


def token():
    return uuid.uuid4().hex[:16]


# --- processes --------------------------------------------------------------


def _proc_stat(pid):
    """(ppid, comm) of a live process or None."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read().decode("ascii", "replace")
    except OSError:
        return None
    head, _, rest = data.rpartition(")")
    comm = head.partition("(")[2]
    fields = rest.split()
    if len(fields) < 2 or fields[0] == "Z":
        return None
    return int(fields[1]), comm


def descendants(pid):
    """PIDs of all live descendants of pid."""
    children = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        st = _proc_stat(int(name))
        if st:
            children.setdefault(st[0], []).append(int(name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


@contextlib.contextmanager
def service_users(user, signer_user):
    """Creates system users user and signer_user (also in user's group),
    replacing left-overs of an earlier run; yields their pwd entries and
    deletes them afterwards. Needs root."""
    made = []
    try:
        for name, extra in ((user, []), (signer_user, ["-G", user])):
            with contextlib.suppress(KeyError):
                pwd.getpwnam(name)
                subprocess.run(["userdel", name], check=False)
            subprocess.run(["useradd", "--system", "--no-create-home",
                            "--shell", "/usr/sbin/nologin", "--user-group"]
                           + extra + [name], check=True)
            made.append(name)
        yield {n: pwd.getpwnam(n) for n in made}
    finally:
        for name in reversed(made):
            subprocess.run(["userdel", name], check=False)
        with contextlib.suppress(Exception):
            subprocess.run(["groupdel", user], check=False,
                           stderr=subprocess.DEVNULL)


def lay_out_state(state, smtpd_pw, signer_pw):
    """docs/security.md's file layout under state: the directory root's,
    group of the workers' user, setgid (SQLite's -wal and -shm files get
    that group, whichever worker makes them); the database the workers'
    user's, 0660; key_dir and its keys the signer user's only."""
    os.chown(state, 0, smtpd_pw.pw_gid)
    os.chmod(state, 0o2770)
    for p in state.glob("subgate.db*"):
        os.chown(p, smtpd_pw.pw_uid, smtpd_pw.pw_gid)
        os.chmod(p, 0o660)
    for dirpath, _, files in os.walk(state / "keys"):
        os.chown(dirpath, signer_pw.pw_uid, signer_pw.pw_gid)
        os.chmod(dirpath, 0o700)
        for f in files:
            os.chown(os.path.join(dirpath, f), signer_pw.pw_uid,
                     signer_pw.pw_gid)
            os.chmod(os.path.join(dirpath, f), 0o600)


def pid_alive(pid):
    return _proc_stat(pid) is not None


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def stop_process(proc, sig=signal.SIGTERM, timeout=STOP_TIMEOUT):
    """Stops a Popen by PID: sig, wait up to timeout, then SIGKILL. Returns
    the exit status (negative: killed by that signal)."""
    if proc.poll() is None:
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


def kill_pids(pids):
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# --- the sink ---------------------------------------------------------------


class Message:
    """A message the sink saved: raw bytes and the envelope it came with."""

    def __init__(self, path):
        self.path = Path(path)
        self.raw = self.path.read_bytes()
        self.mail_from = None
        self.rcpt_to = []
        self.tls = None
        env = self.path.with_suffix(".env")
        for line in env.read_text().splitlines():
            key, _, value = line.partition("=")
            if key == "mail_from":
                self.mail_from = value.strip("<>")
            elif key == "rcpt_to":
                self.rcpt_to.append(value.strip("<>"))
            elif key == "tls":
                self.tls = value == "yes"

    @property
    def head(self):
        return self.raw.split(b"\r\n\r\n", 1)[0]

    @property
    def body(self):
        parts = self.raw.split(b"\r\n\r\n", 1)
        return parts[1] if len(parts) > 1 else b""

    def headers(self, name):
        """Unfolded values of every header field called name, in order."""
        out = []
        for field in re.split(rb"\r\n(?![ \t])", self.head):
            n, sep, v = field.partition(b":")
            if sep and n.strip().lower() == name.lower().encode():
                out.append(re.sub(rb"\r\n[ \t]", b" ", v).strip().decode(
                    "utf-8", "replace"))
        return out

    def signatures(self):
        return dkimverify.signature_tags(self.raw)

    def __repr__(self):
        return "<Message %s from=%s>" % (self.path.name, self.mail_from)


class Sink:
    """tests/tools/sink.py on a loopback port, saving into directory."""

    def __init__(self, directory, port=None, tls=None, reply=None):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.tls = tls  # (cert, key) or None
        self.reply = reply
        self.proc = None
        self.log = self.dir.parent / ("%s.log" % self.dir.name)

    def start(self, reply="unchanged"):
        if reply != "unchanged":
            self.reply = reply
        argv = [
            PYTHON, str(TOOLS / "sink.py"),
            "--listen", "%s:%d" % (HOST, self.port),
            "--dir", str(self.dir),
        ]
        if self.reply:
            argv += ["--reply", self.reply]
        if self.tls:
            argv += ["--tls-cert", str(self.tls[0]),
                     "--tls-key", str(self.tls[1])]
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=logf,
            start_new_session=True,
        )
        logf.close()
        line = self.proc.stdout.readline()
        if line.strip() != b"ready":
            self.proc.wait()
            raise AssertionError(
                "sink did not start (exit %s): %s"
                % (self.proc.returncode, self.log.read_text()[-2000:])
            )
        return self

    def stop(self):
        if self.proc is not None:
            stop_process(self.proc)
            self.proc.stdout.close()
            self.proc = None

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def messages(self):
        return [Message(p) for p in sorted(self.dir.glob("*.eml"))]

    def find(self, needle):
        if isinstance(needle, str):
            needle = needle.encode()
        return [m for m in self.messages() if needle in m.raw]

    def wait_for(self, needle, count=1, timeout=None):
        """The messages holding needle, once there are at least count."""
        return wait_until(
            lambda: (lambda ms: ms if len(ms) >= count else None)(
                self.find(needle)),
            "%d message(s) with %r at the sink %s" % (count, needle, self.dir),
            timeout,
        )

    def wait_count(self, n, timeout=None):
        return wait_until(
            lambda: (lambda ms: ms if len(ms) >= n else None)(self.messages()),
            "%d message(s) at the sink %s" % (n, self.dir),
            timeout,
        )

    def attempts(self):
        """Lines of attempts.log: 'NNNNNN 250 ...' or '- CODE ...'."""
        try:
            return (self.dir / "attempts.log").read_text().splitlines()
        except FileNotFoundError:
            return []

    def set_data_reply(self, reply):
        path = self.dir / "data-reply"
        if reply is None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        else:
            path.write_text(reply + "\n")

    def set_rcpt_replies(self, replies):
        """{address: 'CODE TEXT'}; empty or None removes the file."""
        path = self.dir / "rcpt-replies"
        if not replies:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        else:
            path.write_text(
                "".join("%s %s\n" % (a, r) for a, r in replies.items()))


# --- the admin tool and provisioning -----------------------------------------


def admin(config, *args, input=None, check=True):
    """Runs `subgate -c config ARGS`; returns the CompletedProcess."""
    argv = [str(BIN / "subgate"), "-c", str(config)] + [str(a) for a in args]
    res = subprocess.run(
        argv,
        input=input.encode() if isinstance(input, str) else input,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        timeout=120,
    )
    if check and res.returncode != 0:
        raise AssertionError(
            "%s exited %d\nstdout: %s\nstderr: %s"
            % (" ".join(argv[3:]), res.returncode,
               res.stdout.decode(errors="replace"),
               res.stderr.decode(errors="replace"))
        )
    return res


def write_config(path, settings):
    lines = ["# written by tests/integration (helpers.write_config)"]
    for key, value in settings.items():
        if value is not None:
            lines.append("%s = %s" % (key, value))
    Path(path).write_text("\n".join(lines) + "\n")


def base_settings(state_dir, cert, key, submission, submissions, relay_port):
    return {
        "state_dir": str(state_dir),
        "node_name": "t1",
        "hostname": "gw.test",
        "submission_listen": "%s:%d" % (HOST, submission),
        "submissions_listen": "%s:%d" % (HOST, submissions),
        "tls_cert": str(cert),
        "tls_key": str(key),
        "relay_host": "[%s]:%d" % (HOST, relay_port),
        "relay_tls": "may",
        "max_message_size": "1M",
        "max_recipients": "100",
        "auth_fail_delay": "0s",
        "retry_min": "1s",
        "retry_max": "4s",
        "log_syslog": "no",
        # Every test connects from 127.0.0.1: the abuse limits (on by
        # default) are off here and tested with their own settings in
        # test_hardening.py.
        "max_conn_per_ip": "0",
        "conn_rate_per_ip": "0",
        "auth_fail_limit_ip": "0",
        "auth_fail_limit_account": "0",
        "member_msg_per_hour": "0",
        "member_rcpt_per_day": "0",
        "tenant_msg_per_hour": "0",
    }


def provision(config):
    """Creates the test tenants, members and keys in the database that
    config names. Returns {name: txt} of every DNS record to publish."""
    admin(config, "init")
    for domain, opts in TENANTS.items():
        admin(config, "tenant", "add", domain, *opts)
    for domain, tenant in EXTRA_DOMAINS.items():
        admin(config, "domain", "add", tenant, domain)
    for address, password in PASSWORDS.items():
        admin(config, "member", "add", address, "--password-stdin",
              input=password + "\n")
    for address, aliases in ALIASES.items():
        for alias in aliases:
            admin(config, "member", "alias", "add", address, alias)
    for address in DISABLED:
        admin(config, "member", "disable", address)
    for domain in SIGNING_DOMAINS + PENDING_ONLY_DOMAINS:
        admin(config, "key", "generate", domain)
    for domain in SIGNING_DOMAINS:
        # No DNS server here: the records are handed to the verifiers.
        admin(config, "key", "activate", domain, "--force")
    records = {}
    for domain in SIGNING_DOMAINS:
        out = admin(config, "dns", "records", domain).stdout.decode()
        records.update(dkimverify.parse_records(out))
    return records


def write_dns_file(path, records):
    Path(path).write_text(
        "".join("%s %s\n" % (n, t) for n, t in sorted(records.items())))


# --- the gateway ------------------------------------------------------------


class Gateway:
    """One subgated with its own state dir (a copy of the provisioned
    template), config, ports, log file and sink."""

    def __init__(self, root, template, settings=None, sink=True,
                 sink_tls=True, sink_reply=None, start_sink=True):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.name = self.root.name
        self.state = self.root / "state"
        shutil.copytree(template["state"], self.state, symlinks=True)
        self.cert, self.key = template["cert"], template["key"]
        self.records = template["records"]
        self.dns_file = template["dns_file"]
        self.submission_port = free_port()
        self.submissions_port = free_port()
        self.sink = Sink(self.root / "sink", tls=(self.cert, self.key)
                         if sink_tls else None, reply=sink_reply)
        self.settings = base_settings(
            self.state, self.cert, self.key, self.submission_port,
            self.submissions_port, self.sink.port)
        self.settings.update(settings or {})
        self.config = self.root / "subgate.conf"
        write_config(self.config, self.settings)
        self.log = self.root / "subgated.log"
        self.proc = None
        self.starts = 0
        self._want_sink = sink and start_sink

    # paths -------------------------------------------------------------
    @property
    def run_dir(self):
        return Path(self.settings.get("run_dir") or self.state / "run")

    @property
    def queue_dir(self):
        return Path(self.settings.get("queue_dir") or self.state / "queue")

    @property
    def signer_socket(self):
        return self.run_dir / "signer.sock"

    def queue_files(self):
        """Queue ids in active/ and busy/ (being delivered)."""
        out = set()
        for sub in ("active", "busy"):
            d = self.queue_dir / sub
            if d.is_dir():
                out.update(p.name for p in d.iterdir())
        return sorted(out)

    def admin(self, *args, **kw):
        return admin(self.config, *args, **kw)

    # lifecycle ---------------------------------------------------------
    def start(self, wait=True):
        if self._want_sink and not self.sink.running:
            self.sink.start()
        self.starts += 1
        with open(self.log, "ab") as f:
            f.write(b"=== harness: start %d of subgated ===\n" % self.starts)
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [str(BIN / "subgated"), "-c", str(self.config)],
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=logf,
            start_new_session=True,
        )
        logf.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self):
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(
                    "subgated exited with %s during start-up; log:\n%s"
                    % (self.proc.returncode, self.log_tail()))
            return self.signer_socket.exists() and banner(
                self.submission_port)

        try:
            wait_until(ready, "subgated to answer 220 on port %d and %s to "
                       "exist" % (self.submission_port, self.signer_socket))
        except WaitTimeout as e:
            raise AssertionError("%s; log:\n%s" % (e, self.log_tail()))

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self):
        return self.proc.pid

    def children(self):
        return descendants(self.proc.pid) if self.running else []

    def signer_pid(self):
        """The PID of our subgate-signer: a descendant of our master whose
        program is subgate-signer."""
        for pid in self.children():
            argv0 = (cmdline(pid) or [b""])[0]
            st = _proc_stat(pid)
            if argv0.endswith(b"subgate-signer") or (
                    st and st[1] == "subgate-signer"):
                return pid
        return None

    def stop(self, sig=signal.SIGTERM):
        """Stops the master by PID and makes sure no child is left: returns
        (exit status, PIDs of children that outlived the master)."""
        if self.proc is None:
            return None, []
        kids = self.children()
        status = stop_process(self.proc, sig)
        # Children get the same grace period as the master, then are
        # reported and killed so that nothing leaks into the next test.
        deadline = time.monotonic() + STOP_TIMEOUT
        left = [p for p in kids if pid_alive(p)]
        while left and time.monotonic() < deadline:
            time.sleep(POLL)
            left = [p for p in kids if pid_alive(p)]
        kill_pids(left)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with open(self.log, "ab") as f:
            f.write(b"=== harness: subgated exited with %d ===\n"
                    % (status if status is not None else -999))
        self.proc = None
        return status, left

    def kill9(self):
        """SIGKILL to the master and every child at once (a crash)."""
        pids = [self.proc.pid] + self.children()
        kill_pids(pids)
        self.proc.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        wait_until(lambda: not any(pid_alive(p) for p in pids),
                   "killed processes to be gone")
        self.proc = None

    def close(self):
        self.stop()
        self.sink.stop()

    # logs --------------------------------------------------------------
    def log_text(self):
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n=80):
        return "\n".join(self.log_text().splitlines()[-n:])

    def lines_for(self, qid):
        """Log lines whose text starts with "QID:" after the tag."""
        pat = re.compile(r"^\S+\[\d+\]: %s: " % re.escape(qid))
        return [l for l in self.log_text().splitlines() if pat.match(l)]

    def wait_log(self, regex, qid=None, timeout=None):
        """The first log line (for qid, if given) matching regex."""
        pat = re.compile(regex)

        def find():
            lines = self.lines_for(qid) if qid else self.log_text().splitlines()
            for line in lines:
                if pat.search(line):
                    return line
            return None

        return wait_until(find, "a log line matching %r%s in %s" % (
            regex, " for %s" % qid if qid else "", self.log), timeout)

    def __repr__(self):
        return "<Gateway %s submission=%d>" % (self.name, self.submission_port)


def banner(port):
    """True when port answers with a 220 greeting."""
    try:
        with socket.create_connection((HOST, port), timeout=2) as s:
            s.settimeout(5)
            data = b""
            while b"\r\n" not in data:
                chunk = s.recv(512)
                if not chunk:
                    return False
                data += chunk
            with contextlib.suppress(OSError):
                s.sendall(b"QUIT\r\n")
            return data.startswith(b"220")
    except OSError:
        return False


# --- SMTP clients -----------------------------------------------------------


def tls_context():
    """A client context that does not verify (the test certificate is
    self-signed)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def peer_cert_der(port):
    """The DER certificate the implicit-TLS listener on port presents."""
    sock = socket.create_connection((HOST, port), timeout=WAIT_TIMEOUT)
    try:
        tls = tls_context().wrap_socket(sock)
        der = tls.getpeercert(binary_form=True)
        tls.close()
        return der
    finally:
        sock.close()


def pem_der(path):
    return ssl.PEM_cert_to_DER_cert(Path(path).read_text())


def connect(gw, tls="starttls"):
    """An smtplib client after EHLO: tls is "starttls", "implicit" or None."""
    if tls == "implicit":
        s = smtplib.SMTP_SSL(HOST, gw.submissions_port, timeout=WAIT_TIMEOUT,
                             context=tls_context())
        s.ehlo("client.test")
        return s
    s = smtplib.SMTP(HOST, gw.submission_port, timeout=WAIT_TIMEOUT)
    s.ehlo("client.test")
    if tls == "starttls":
        s.starttls(context=tls_context())
        s.ehlo("client.test")
    return s


def b64(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.b64encode(data).decode()


def auth_plain(s, user, password, authzid=""):
    """(code, text) of AUTH PLAIN with an initial response."""
    code, text = s.docmd("AUTH", "PLAIN " + b64("%s\0%s\0%s" % (
        authzid, user, password)))
    return code, text.decode(errors="replace")


def auth_login(s, user, password):
    code, text = s.docmd("AUTH", "LOGIN")
    if code != 334:
        return code, text.decode(errors="replace")
    code, text = s.docmd(b64(user))
    if code != 334:
        return code, text.decode(errors="replace")
    code, text = s.docmd(b64(password))
    return code, text.decode(errors="replace")


@contextlib.contextmanager
def session(gw, user=None, password=None, tls="starttls"):
    """An smtplib client, authenticated as user (password defaults to the
    provisioned one) unless user is None; QUIT at the end."""
    s = connect(gw, tls)
    try:
        if user is not None:
            pw = PASSWORDS[user] if password is None else password
            code, text = auth_plain(s, user, pw)
            assert code == 235, "AUTH as %s: %d %s" % (user, code, text)
        yield s
    finally:
        with contextlib.suppress(Exception):
            s.quit()
        with contextlib.suppress(Exception):
            s.close()


def make_message(from_hdr="alice@example.org", to="bob@example.net",
                 subject=None, body=None, tok=None, extra=(), from_count=1):
    """A CRLF message carrying tok (returned) in Subject and body. from_hdr
    None means no From: field; from_count repeats it."""
    tok = tok or token()
    lines = []
    if from_hdr is not None:
        lines += ["From: %s" % from_hdr] * from_count
    lines += [
        "To: %s" % to,
        "Subject: %s" % (subject or "test %s" % tok),
        "Date: %s" % email.utils.formatdate(localtime=False),
        "Message-ID: <%s@client.test>" % tok,
    ]
    lines += list(extra)
    if body is None:
        body = ("Hello,\r\n\r\nthis is test message %s.\r\n\r\n-- \r\n"
                "client" % tok)
    lines += ["", body]
    text = "\r\n".join(lines)
    if not text.endswith("\r\n"):
        text += "\r\n"
    return text.encode(), tok


def send(s, mail_from, rcpts, message, mail_options=()):
    """One transaction on an open client. Returns a dict with the replies
    (code, text) of "mail", each "rcpt" (list) and "data" (None when DATA
    was not reached: MAIL or every RCPT failed)."""
    out = {"mail": None, "rcpt": [], "data": None, "qid": None}
    code, text = s.mail(mail_from, list(mail_options))
    out["mail"] = (code, text.decode(errors="replace"))
    if code != 250:
        s.rset()
        return out
    ok = 0
    for r in rcpts:
        code, text = s.rcpt(r)
        out["rcpt"].append((code, text.decode(errors="replace")))
        ok += code in (250, 251)
    if not ok:
        s.rset()
        return out
    code, text = s.data(message)
    out["data"] = (code, text.decode(errors="replace"))
    m = QUEUED_RE.search(out["data"][1]) if code == 250 else None
    out["qid"] = m.group(1) if m else None
    return out


def submit(gw, user, message, mail_from=None, rcpts=("bob@example.net",),
           tls="starttls"):
    """Logs in as user and sends message; returns send()'s dict."""
    with session(gw, user, tls=tls) as s:
        return send(s, user if mail_from is None else mail_from, rcpts,
                    message)


def assert_reply(reply, code, enhanced=None):
    """reply is (code, text): checks the 3-digit code and the enhanced
    status code that starts the text."""
    assert reply is not None, "no reply (command not reached)"
    got_code, text = reply
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    assert got_code == code, "got %d %s, want %d %s" % (
        got_code, text, code, enhanced or "")
    if enhanced:
        assert text.split(" ", 1)[0] == enhanced, "got %d %s, want %d %s" % (
            got_code, text, code, enhanced)


def assert_queued(res):
    assert_reply(res["data"], 250, "2.0.0")
    assert res["qid"], "no 'queued as QID' in %r" % (res["data"],)
    return res["qid"]


def assert_not_delivered(gw, tok):
    """Shows that nothing holding tok was queued or delivered: a later
    message from alice goes all the way through, and by then no file in
    the queue and no message at the sink holds tok."""
    msg, marker = make_message()
    assert_queued(submit(gw, "alice@example.org", msg))
    gw.sink.wait_for(marker)
    assert gw.sink.find(tok) == [], "message %s reached the sink" % tok
    for name in gw.queue_files():
        for sub in ("active", "busy"):
            try:
                data = (gw.queue_dir / sub / name).read_bytes()
            except FileNotFoundError:
                continue
            assert tok.encode() not in data, "message %s is queued" % tok
