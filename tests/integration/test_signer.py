"""subgate-signer on its own: a real signer process on a temporary state
directory, a database made from schema/schema.sql, keys made with
`openssl genpkey`, and requests framed by hand per common/signer_proto.h.
Signatures are checked with dkimpy against key records built from the
public keys, as a receiver would find them in DNS.

The signer binary comes from SUBGATE_BIN (default <repo>/build/bin). Each
signer is stopped by PID (SIGTERM, then SIGKILL) in a finalizer; its log
is printed when a test fails.
"""

import base64
import os
import re
import signal
import socket
import sqlite3
import stat
import struct
import subprocess
import threading
import time
from pathlib import Path

import dkim
import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("SUBGATE_BIN", str(REPO / "build" / "bin")))
SIGNER = BIN / "subgate-signer"
SCHEMA = REPO / "schema" / "schema.sql"
WAIT = float(os.environ.get("SUBGATE_TEST_TIMEOUT", "40"))

# common/signer_proto.h
BEGIN, DATA, END, OK, TEMPFAIL = 1, 2, 3, 4, 5
MAX_PAYLOAD = 64 * 1024  # SG_IPC_MAX_PAYLOAD

MESSAGE = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: bob@example.net\r\n"
    b"Subject: signer test\r\n"
    b"Date: Thu, 26 Nov 2026 15:00:00 +0000\r\n"
    b"Message-ID: <signer-test@example.org>\r\n"
    b"Received: from client by gateway; Thu, 26 Nov 2026 15:00:00 +0000\r\n"
    b"\r\n"
    b"Hello Bob,\r\n"
    b"\r\n"
    b"a line with  two spaces  \r\n"
)


def wait_until(pred, what):
    deadline = time.monotonic() + WAIT
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for %s" % what)
        time.sleep(0.05)


# --- keys and database ------------------------------------------------------


def make_key(path, algo):
    """Writes a private key (PEM, mode 0600) and returns its DNS record."""
    if algo == "rsa":
        args = ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]
    else:
        args = ["-algorithm", "ED25519"]
    tmp = path.with_suffix(".tmp")
    subprocess.run(["openssl", "genpkey", *args, "-out", str(tmp)],
                   check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE)
    os.chmod(tmp, 0o600)
    der = subprocess.run(
        ["openssl", "pkey", "-in", str(tmp), "-pubout", "-outform", "DER"],
        check=True, stdout=subprocess.PIPE).stdout
    os.replace(tmp, path)  # a new file, as key rotation writes one
    if algo == "rsa":
        pub = der  # RFC 6376 3.6.1: SubjectPublicKeyInfo
    else:
        pub = der[-32:]  # RFC 8463 4.2: the raw 32-octet key
    return "v=DKIM1; k=%s; p=%s" % (algo, base64.b64encode(pub).decode())


class State:
    """A state directory with a database and keys; records maps
    "SEL._domainkey.DOMAIN" to the TXT text."""

    def __init__(self, root):
        self.root = root
        self.state = root / "state"
        self.keys = self.state / "keys"
        self.db = self.state / "subgate.db"
        self.conf = root / "subgate.conf"
        self.log = root / "signer.log"
        self.records = {}
        self.keys.mkdir(parents=True)
        self.conf.write_text(
            "# written by test_signer.py\n"
            "state_dir = %s\n"
            "max_message_size = 64K\n" % self.state)

    def create_db(self):
        db = sqlite3.connect(str(self.db))
        db.executescript(SCHEMA.read_text())
        db.commit()
        db.close()

    def sql(self, query, *args):
        db = sqlite3.connect(str(self.db))
        with db:
            db.execute(query, args)
        db.close()

    def add_tenant(self, name, sign_algos="rsa,ed25519"):
        now = int(time.time())
        self.sql("INSERT INTO tenant(name, sign_algos, created) "
                 "VALUES (?, ?, ?)", name, sign_algos, now)
        self.sql("INSERT INTO domain(name, tenant_id, created) "
                 "SELECT ?, id, ? FROM tenant WHERE name = ?",
                 name, now, name)

    def add_key(self, domain, selector, algo, state="active", write=True):
        """Makes the key file (unless write is False) and its row."""
        (self.keys / domain).mkdir(exist_ok=True)
        rel = "%s/%s.pem" % (domain, selector)
        record = "v=DKIM1; k=%s; p=" % algo
        if write:
            record = make_key(self.keys / rel, algo)
        self.records["%s._domainkey.%s" % (selector, domain)] = record
        p = record.rpartition("p=")[2]
        self.sql("INSERT INTO dkim_key(domain, selector, algo, bits, state, "
                 "public_key, key_file, created) VALUES (?,?,?,?,?,?,?,?)",
                 domain, selector, algo, 2048 if algo == "rsa" else 256,
                 state, p, rel, int(time.time()))
        return rel

    def dnsfunc(self, name, timeout=5):
        if isinstance(name, bytes):
            name = name.decode()
        return self.records.get(name.rstrip("."), "").encode() or None

    @property
    def sock(self):
        return str(self.state / "run" / "signer.sock")


class Signer:
    def __init__(self, state):
        self.state = state
        self.proc = None

    def start(self):
        self.logf = open(self.state.log, "ab")
        self.proc = subprocess.Popen(
            [str(SIGNER), "-c", str(self.state.conf)],
            stdin=subprocess.DEVNULL, stdout=self.logf, stderr=self.logf,
            start_new_session=True)
        wait_until(lambda: self._ready() or self.proc.poll() is not None,
                   "the signer socket")
        assert self.proc.poll() is None, "signer exited:\n" + self.log_text()
        return self

    def _ready(self):
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(self.state.sock)
            return True
        except OSError:
            return False

    def stop(self):
        """SIGTERM by PID; returns the exit status (SIGKILL after WAIT)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logf.close()
        rc, self.proc = self.proc.returncode, None
        return rc

    def log_text(self):
        return self.state.log.read_text(errors="replace")

    def wait_log(self, pattern):
        rx = re.compile(pattern)
        return wait_until(lambda: rx.search(self.log_text()),
                          "log line /%s/" % pattern)


# --- the protocol -----------------------------------------------------------


def frame(ftype, payload=b""):
    return struct.pack("!II", ftype, len(payload)) + payload


def request_frames(qid, domain, msg):
    out = [frame(BEGIN, qid.encode() + b"\0" + domain.encode() + b"\0")]
    for off in range(0, len(msg), MAX_PAYLOAD):
        out.append(frame(DATA, msg[off:off + MAX_PAYLOAD]))
    out.append(frame(END))
    return b"".join(out)


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        try:
            chunk = s.recv(n - len(buf))
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return None
        buf += chunk
    return buf


def read_reply(s):
    """(type, payload) of one frame, or None when the signer hung up."""
    hdr = recv_exact(s, 8)
    if hdr is None:
        return None
    ftype, length = struct.unpack("!II", hdr)
    payload = recv_exact(s, length) if length else b""
    return ftype, payload


def exchange(sock, data):
    """Sends raw bytes (tolerating a signer that answers early and hangs
    up) and reads the reply."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(WAIT)
        s.connect(sock)
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return read_reply(s)


def sign(state, qid, domain, msg=MESSAGE):
    return exchange(state.sock, request_frames(qid, domain, msg))


def fields(payload):
    """Splits the OK payload into DKIM-Signature header fields."""
    text = payload.decode()
    assert text.endswith("\r\n"), repr(text)
    parts = re.split(r"\r\n(?=DKIM-Signature:)", text[:-2])
    return [p + "\r\n" for p in parts]


def tag(field, name):
    value = field.partition(":")[2]
    for item in value.split(";"):
        k, _, v = item.strip().partition("=")
        if k.strip() == name:
            return re.sub(r"\s+", "", v)
    return None


def verify_all(state, signed, count):
    d = dkim.DKIM(signed)
    for idx in range(count):
        assert d.verify(idx=idx, dnsfunc=state.dnsfunc), \
            "signature %d does not verify" % idx


# --- fixtures ---------------------------------------------------------------


def _check_binary():
    if not SIGNER.is_file():
        pytest.fail("missing %s: build it first (make)" % SIGNER,
                    pytrace=False)


@pytest.fixture(scope="module")
def provisioned(tmp_path_factory):
    """A database with example.org (rsa + ed25519), rsaonly.org (both keys
    active, tenant signs rsa only), rotate.org, nokeys.org (a pending key
    only), broken.org (active key whose file is missing) and mismatch.org
    (an rsa key row whose file holds an Ed25519 key)."""
    _check_binary()
    st = State(tmp_path_factory.mktemp("signer"))
    st.create_db()
    for name, algos in (("example.org", "rsa,ed25519"),
                        ("rsaonly.org", "rsa"), ("rotate.org", "rsa"),
                        ("nokeys.org", "rsa,ed25519"),
                        ("broken.org", "rsa,ed25519"),
                        ("mismatch.org", "rsa,ed25519")):
        st.add_tenant(name, algos)
    st.add_key("example.org", "rsa1", "rsa")
    st.add_key("example.org", "ed1", "ed25519")
    st.add_key("example.org", "old1", "rsa", state="retired")
    st.add_key("rsaonly.org", "rsa1", "rsa")
    st.add_key("rsaonly.org", "ed1", "ed25519")
    st.add_key("rotate.org", "rot1", "rsa")
    st.add_key("nokeys.org", "pend1", "rsa", state="pending")
    st.add_key("broken.org", "gone1", "rsa", write=False)
    # Labelled rsa in the database, an Ed25519 key on disk.
    rel = st.add_key("mismatch.org", "mix1", "rsa", write=False)
    make_key(st.keys / rel, "ed25519")
    return st


@pytest.fixture(scope="module")
def signer(provisioned):
    sg = Signer(provisioned)
    try:
        sg.start()
        yield sg
    finally:
        rc = sg.stop()
        assert rc == 0, "signer exit status %s\n%s" % (rc, sg.log_text())
        assert not os.path.exists(provisioned.sock), "socket left behind"


@pytest.fixture
def show_log(signer):
    """Prints the signer log's tail; pytest shows it for a failed test."""
    yield
    print("---- signer log ----\n" + signer.log_text()[-4000:])


# --- tests ------------------------------------------------------------------


def test_socket_mode(signer, show_log):
    mode = stat.S_IMODE(os.stat(signer.state.sock).st_mode)
    assert mode == 0o660, "socket mode %o, want 660" % mode


def test_signs_rsa_and_ed25519(signer, show_log):
    reply = sign(signer.state, "7KQ2M4XJ9A", "example.org")
    assert reply is not None and reply[0] == OK, reply
    sigs = fields(reply[1])
    assert [tag(f, "a") for f in sigs] == ["rsa-sha256", "ed25519-sha256"]
    assert [tag(f, "s") for f in sigs] == ["rsa1", "ed1"]
    for f in sigs:
        assert tag(f, "d") == "example.org"
        assert tag(f, "c") == "relaxed/relaxed"
        assert tag(f, "l") is None, "l= tag in %r" % f
        h = [n.lower() for n in tag(f, "h").split(":")]
        assert h.count("from") == 2 and h.count("subject") == 2, h
        assert "received" not in h
        # A valid wire header: every line break is CRLF + white space.
        assert re.fullmatch(r"DKIM-Signature: [^\r\n]*(\r\n[ \t][^\r\n]*)*"
                            r"\r\n", f), repr(f)
    signed = reply[1] + MESSAGE
    verify_all(signer.state, signed, 2)
    signer.wait_log(r"7KQ2M4XJ9A: signed d=example\.org s=rsa1 a=rsa-sha256")
    signer.wait_log(
        r"7KQ2M4XJ9A: signed d=example\.org s=ed1 a=ed25519-sha256")

    # Over-signing: a second From added later breaks both signatures.
    forged = reply[1] + b"From: mallory@evil.example\r\n" + MESSAGE
    d = dkim.DKIM(forged)
    assert not d.verify(idx=0, dnsfunc=signer.state.dnsfunc)
    assert not d.verify(idx=1, dnsfunc=signer.state.dnsfunc)


def test_domain_case_and_big_message(signer, show_log):
    body = b"".join(b"line %06d of a long body\r\n" % i for i in range(2500))
    msg = MESSAGE + body  # several DATA frames
    reply = sign(signer.state, "BIGMSG1", "Example.ORG", msg)
    assert reply is not None and reply[0] == OK, reply
    assert tag(fields(reply[1])[0], "d") == "example.org"
    verify_all(signer.state, reply[1] + msg, 2)


def test_tenant_rsa_only(signer, show_log):
    reply = sign(signer.state, "RSAONLY1", "rsaonly.org")
    assert reply is not None and reply[0] == OK, reply
    sigs = fields(reply[1])
    assert [tag(f, "a") for f in sigs] == ["rsa-sha256"]
    verify_all(signer.state, reply[1] + MESSAGE, 1)


@pytest.mark.parametrize("domain,reason", [
    ("unknown.example", "no active key for unknown.example"),
    ("nokeys.org", "no active key for nokeys.org"),
    ("broken.org", "key file unreadable"),
    ("mismatch.org", "key unusable: not an rsa-sha256 key"),
])
def test_tempfail(signer, show_log, domain, reason):
    reply = sign(signer.state, "TF1", domain)
    assert reply == (TEMPFAIL, reason.encode())
    signer.wait_log(r"TF1: sign failed d=%s reason=%s" %
                    (re.escape(domain), re.escape(reason)))


def test_refused_messages(signer, show_log):
    reply = sign(signer.state, "NOHDR1", "example.org", b"\r\nbody only\r\n")
    assert reply == (TEMPFAIL, b"message refused: no header")
    big = MESSAGE + b"x" * (200 * 1024)  # over 64K + 64K headroom
    reply = sign(signer.state, "TOOBIG1", "example.org", big)
    assert reply == (TEMPFAIL, b"message too big")
    signer.wait_log(r"TOOBIG1: sign failed d=example\.org "
                    r"reason=message too big")
    reply = sign(signer.state, "bad/id", "example.org")
    assert reply == (TEMPFAIL, b"bad queue id")
    reply = sign(signer.state, "BADDOM1", "exa mple.org")
    assert reply == (TEMPFAIL, b"bad domain")


@pytest.mark.parametrize("name,data", [
    ("DATA before BEGIN", frame(DATA, b"x") + frame(END)),
    ("END before BEGIN", frame(END)),
    ("unknown type", frame(99, b"")),
    ("OK from client", frame(BEGIN, b"Q1\0example.org\0") + frame(OK)),
    ("two BEGINs", frame(BEGIN, b"Q1\0example.org\0") * 2),
    ("BEGIN without NUL", frame(BEGIN, b"Q1")),
    ("BEGIN with trailing byte", frame(BEGIN, b"Q1\0example.org\0x")),
    ("END with payload",
     frame(BEGIN, b"Q1\0example.org\0") + frame(DATA, MESSAGE) +
     frame(END, b"x")),
    ("data after END", request_frames("Q1", "example.org", MESSAGE) +
     frame(DATA, b"more")),
    ("oversized frame", struct.pack("!II", DATA, MAX_PAYLOAD + 1)),
])
def test_protocol_errors_close(signer, show_log, name, data):
    before = signer.log_text().count("signer protocol error")
    assert exchange(signer.state.sock, data) is None, name
    wait_until(lambda: signer.log_text().count("signer protocol error") >
               before, "the protocol error log line")
    # The signer goes on serving.
    reply = sign(signer.state, "AFTER1", "example.org")
    assert reply is not None and reply[0] == OK


def test_parallel_requests(signer, show_log):
    results = [None] * 8

    def one(i):
        results[i] = sign(signer.state, "PAR%d" % i, "example.org")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    for r in results:
        assert r is not None and r[0] == OK, r
        verify_all(signer.state, r[1] + MESSAGE, 2)


def test_waits_at_connection_limit(signer, show_log):
    """Past SIGNER_CONN_MAX_CONNS (1024) open connections the signer takes
    no more until one closes: the next client waits instead of being
    refused, and is served once a slot frees."""
    held = []
    try:
        for i in range(1024):
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(WAIT)
            s.connect(signer.state.sock)
            s.sendall(frame(BEGIN, b"HOLD%d\0example.org\0" % i))
            held.append(s)
        result = []
        t = threading.Thread(target=lambda: result.append(
            sign(signer.state, "WAITER1", "example.org")))
        t.start()
        t.join(1.0)
        assert t.is_alive() and not result, "served past the limit"
        held.pop(0).close()
        t.join(WAIT)
        assert result and result[0] is not None and result[0][0] == OK, result
    finally:
        for s in held:
            s.close()
    reply = sign(signer.state, "AFTER3", "example.org")
    assert reply is not None and reply[0] == OK


def test_client_gives_up(signer, show_log):
    """A client that closes mid-message leaves no trace but a clean
    connection end; the signer keeps serving."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(signer.state.sock)
        s.sendall(frame(BEGIN, b"GONE1\0example.org\0") + frame(DATA, b"Fr"))
    reply = sign(signer.state, "AFTER2", "example.org")
    assert reply is not None and reply[0] == OK


def test_key_change_without_restart(signer, show_log):
    st = signer.state
    first = sign(st, "ROT1", "rotate.org")
    assert first is not None and first[0] == OK
    old_records = dict(st.records)
    verify_all(st, first[1] + MESSAGE, 1)

    # A new key in the same file: the next request signs with it.
    st.records["rot1._domainkey.rotate.org"] = make_key(
        st.keys / "rotate.org" / "rot1.pem", "rsa")
    second = sign(st, "ROT2", "rotate.org")
    assert second is not None and second[0] == OK
    verify_all(st, second[1] + MESSAGE, 1)
    d = dkim.DKIM(second[1] + MESSAGE)
    assert not d.verify(idx=0, dnsfunc=lambda n, timeout=5:
                        old_records.get(n.decode().rstrip("."), "")
                        .encode())


def test_database_retry_and_stale_socket(tmp_path):
    """No database at start: TEMPFAIL "database unavailable" until it
    appears, then signing works without a restart. A stale socket file
    from a dead signer does not stop a new one from starting."""
    _check_binary()
    st = State(tmp_path)
    run = st.state / "run"
    run.mkdir()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(st.sock)
    stale.close()
    sg = Signer(st).start()
    try:
        reply = sign(st, "NODB1", "example.org")
        assert reply == (TEMPFAIL, b"database unavailable")
        st.create_db()
        st.add_tenant("example.org")
        st.add_key("example.org", "ed9", "ed25519")
        reply = sign(st, "NODB2", "example.org")
        assert reply is not None and reply[0] == OK, reply
        verify_all(st, reply[1] + MESSAGE, 1)
        assert tag(fields(reply[1])[0], "a") == "ed25519-sha256"
    except BaseException:
        print("---- signer log ----\n" + sg.log_text()[-4000:])
        raise
    finally:
        rc = sg.stop()
    assert rc == 0, sg.log_text()
    assert not os.path.exists(st.sock)


def test_second_signer_refuses_live_socket(signer):
    """A second signer on the same run_dir must not steal the socket."""
    proc = subprocess.run([str(SIGNER), "-c", str(signer.state.conf)],
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=WAIT)
    assert proc.returncode == 1
    assert b"another signer is listening" in proc.stdout
    reply = sign(signer.state, "STILL1", "example.org")
    assert reply is not None and reply[0] == OK


def test_bad_usage():
    _check_binary()
    proc = subprocess.run([str(SIGNER), "-x"], stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=WAIT)
    assert proc.returncode == 2 and b"usage" in proc.stdout
    proc = subprocess.run([str(SIGNER), "-f", "-c", "/nonexistent/x.conf"],
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=WAIT)
    assert proc.returncode == 1 and b"/nonexistent/x.conf" in proc.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_drops_privileges():
    """Started as root with signer_user set: the socket goes to that user
    and the group of `user`, and the process runs as signer_user."""
    _check_binary()
    import pwd
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user nobody")
    import tempfile
    root = Path(tempfile.mkdtemp(prefix="sg-priv-", dir="/tmp"))
    os.chmod(root, 0o755)
    try:
        st = State(root)
        with open(st.conf, "a") as f:
            f.write("signer_user = nobody\nuser = root\n")
        st.create_db()
        st.add_tenant("example.org")
        st.add_key("example.org", "ed7", "ed25519")
        for dirpath, dirs, files in os.walk(st.state):
            for name in dirs + files:
                os.chown(os.path.join(dirpath, name), nobody.pw_uid,
                         nobody.pw_gid)
        os.chown(st.state, nobody.pw_uid, nobody.pw_gid)
        sg = Signer(st).start()
        try:
            status = Path("/proc/%d/status" % sg.proc.pid).read_text()
            uids = re.search(r"^Uid:\s+(.*)$", status, re.M).group(1).split()
            gids = re.search(r"^Gid:\s+(.*)$", status, re.M).group(1).split()
            assert set(uids) == {str(nobody.pw_uid)}, uids
            assert set(gids) == {str(nobody.pw_gid)}, gids
            sock = os.stat(st.sock)
            assert (sock.st_uid, sock.st_gid) == (nobody.pw_uid, 0)
            reply = sign(st, "PRIV1", "example.org")
            assert reply is not None and reply[0] == OK, \
                (reply, sg.log_text())
            verify_all(st, reply[1] + MESSAGE, 1)
        finally:
            rc = sg.stop()
        assert rc == 0, sg.log_text()
    finally:
        subprocess.run(["rm", "-rf", str(root)], check=False)
