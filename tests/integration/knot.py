"""knot: a real authoritative DNS server (Knot DNS, knotd) for integration
tests, on a loopback address and a port picked at run time.

    from knot import Knot

    ns = Knot(tmp_path / "knot")                  # nothing runs yet
    key = ns.add_key("subgate-key")               # TSIG, hmac-sha256
    ns.add_zone("example.org",                    # SOA, NS, ns1 A added
                records=["mx1 300 IN A 127.0.0.1",
                         "@ 300 IN MX 10 mx1"],
                update_keys=[key.name])           # RFC 2136 with that key
    ns.start()                                    # waits until SOA answers
    ns.query("example.org", "MX")                 # ["10 mx1.example.org."]
    ns.txt("sel._domainkey.example.org")          # ["v=DKIM1; ..."]
    ns.serial("example.org")
    ns.stop()                                     # by PID; also on close()

Each instance has its own directory with the configuration, zone files,
journal/timer storage, control socket, pid file and log (knotd.log, shown
by log_tail() when a test fails). Zones are served as written in their
zone files and changed only by dynamic updates that an ACL allows:
update_keys (TSIG key names) and/or update_any=True (any client on
loopback, no TSIG). The server runs in the foreground of its own process
group and is stopped by PID: SIGTERM, then SIGKILL after STOP_TIMEOUT.
Queries use dnspython (python3-dnspython).

Several servers may run at once; a second one can serve a copy of a zone
on another loopback address with the same port (address="127.0.0.2",
port=first.port), as the secondary name servers of a zone would.
"""

import base64
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype
import dns.rcode

import helpers
from helpers import STOP_TIMEOUT, WaitTimeout, wait_until

KNOTD = shutil.which("knotd") or "/usr/sbin/knotd"
KNOTC = shutil.which("knotc") or "/usr/sbin/knotc"


class TsigKey:
    """A TSIG key: name, algorithm and base64 secret."""

    def __init__(self, name, algorithm="hmac-sha256", secret=None):
        self.name = name
        self.algorithm = algorithm
        self.secret = secret or base64.b64encode(os.urandom(32)).decode()

    def write_secret(self, path, mode=0o600):
        """Writes the secret as one base64 line (the form subgate reads)."""
        path = Path(path)
        path.write_text(self.secret + "\n")
        os.chmod(path, mode)
        return path


def _port_free(address, port):
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((address, port))
            except OSError:
                return False
    return True


def pick_port(address="127.0.0.1"):
    """A port free for both TCP and UDP on address a moment ago."""
    for _ in range(50):
        port = helpers.free_port()
        if _port_free(address, port):
            return port
    raise AssertionError("no free port for knotd")


class Knot:
    def __init__(self, root, address="127.0.0.1", port=None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.address = address
        self.port = port
        self.keys = {}
        self.zones = {}  # name -> (records, update_keys, update_any)
        self.proc = None
        self.conf = self.root / "knot.conf"
        self.log = self.root / "knotd.log"

    # --- set-up ---------------------------------------------------------
    def add_key(self, name, algorithm="hmac-sha256", secret=None):
        key = TsigKey(name, algorithm, secret)
        self.keys[name] = key
        return key

    def add_zone(self, name, records=(), update_keys=(), update_any=False,
                 ttl=60, ns=None):
        """Adds a zone. records are zone-file lines relative to the zone
        ($ORIGIN is the zone). A SOA is always added; an NS record
        "ns1.ZONE." with an A record for the server's address is added
        unless ns is given (a list of "NAME" targets, their addresses then
        up to the caller's records)."""
        name = name.rstrip(".").lower()
        self.zones[name] = (list(records), list(update_keys), update_any,
                            ttl, ns)

    def _zone_text(self, name):
        records, _, _, ttl, ns = self.zones[name]
        lines = [
            "$ORIGIN %s." % name,
            "$TTL %d" % ttl,
            "@ IN SOA ns1.%s. hostmaster.%s. 1 3600 600 86400 1"
            % (name, name),
        ]
        if ns is None:
            lines += ["@ IN NS ns1.%s." % name,
                      "ns1 IN A %s" % self.address]
        else:
            lines += ["@ IN NS %s" % n for n in ns]
        lines += records
        return "\n".join(lines) + "\n"

    def _config(self):
        run = self.root / "run"
        out = [
            "server:",
            '    rundir: "%s"' % run,
            '    pidfile: "%s"' % (run / "knot.pid"),
            "    listen: %s@%d" % (self.address, self.port),
            "    udp-workers: 1",
            "    tcp-workers: 1",
            "    background-workers: 1",
            "control:",
            '    listen: "%s"' % (run / "knot.sock"),
            "database:",
            '    storage: "%s"' % (self.root / "db"),
            "log:",
            "  - target: stderr",
            "    any: info",
        ]
        if self.keys:
            out.append("key:")
            for k in self.keys.values():
                out += ["  - id: %s" % k.name,
                        "    algorithm: %s" % k.algorithm,
                        "    secret: %s" % k.secret]
        acls = []
        for name, (_, keys, anyone, _, _) in self.zones.items():
            for k in keys:
                acls.append(("upd-%s-%s" % (name, k), "    key: %s" % k))
            if anyone:
                acls.append(("upd-%s-any" % name,
                             "    address: 127.0.0.0/8"))
        if acls:
            out.append("acl:")
            for acl_id, line in acls:
                out += ["  - id: %s" % acl_id, line,
                        "    action: update"]
        out += [
            "template:",
            "  - id: default",
            '    storage: "%s"' % (self.root / "zones"),
            '    file: "%s.zone"',
            "    zonefile-sync: -1",
            "    zonefile-load: whole",
            "    journal-content: changes",
            "    semantic-checks: off",
            "zone:",
        ]
        for name, (_, keys, anyone, _, _) in self.zones.items():
            out.append("  - domain: %s" % name)
            ids = ["upd-%s-%s" % (name, k) for k in keys]
            if anyone:
                ids.append("upd-%s-any" % name)
            if ids:
                out.append("    acl: [%s]" % ", ".join(ids))
        return "\n".join(out) + "\n"

    # --- life -------------------------------------------------------------
    def start(self):
        """Writes the files and starts knotd; returns once every zone
        answers its SOA. A port taken in between is retried with another
        (unless the port was given)."""
        fixed = self.port is not None
        for attempt in range(3):
            if not fixed:
                self.port = pick_port(self.address)
            self._write_files()
            try:
                self._spawn()
                return self
            except AssertionError:
                self.stop()
                if fixed or attempt == 2:
                    raise
        return self

    def _write_files(self):
        for d in ("run", "db", "zones"):
            p = self.root / d
            if p.exists():
                shutil.rmtree(p)
            p.mkdir()
        for name in self.zones:
            (self.root / "zones" / ("%s.zone" % name)).write_text(
                self._zone_text(name))
        self.conf.write_text(self._config())

    def _spawn(self):
        with open(self.log, "ab") as f:
            f.write(b"=== harness: start knotd on %s@%d ===\n"
                    % (self.address.encode(), self.port))
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [KNOTD, "-c", str(self.conf)],
            stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
            start_new_session=True)
        logf.close()

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("knotd exited with %s; log:\n%s"
                                     % (self.proc.returncode,
                                        self.log_tail()))
            return all(self._soa_ok(z) for z in self.zones)

        try:
            wait_until(ready, "knotd on %s@%d to serve %s"
                       % (self.address, self.port, ", ".join(self.zones)))
        except WaitTimeout as e:
            raise AssertionError("%s; log:\n%s" % (e, self.log_tail()))

    def _soa_ok(self, zone):
        try:
            r = self.ask(zone, "SOA", timeout=1)
        except Exception:
            return False
        return r.rcode() == dns.rcode.NOERROR and bool(r.answer)

    def stop(self):
        if self.proc is not None:
            helpers.stop_process(self.proc, signal.SIGTERM, STOP_TIMEOUT)
            self.proc = None

    close = stop

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n=60):
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return ""
        return "\n".join(lines[-n:])

    # --- queries ------------------------------------------------------------
    def ask(self, name, rtype, timeout=5):
        """The dnspython response to one question (UDP, TCP if
        truncated)."""
        q = dns.message.make_query(name, rtype)
        q.flags &= ~dns.flags.RD
        r = dns.query.udp(q, self.address, port=self.port, timeout=timeout)
        if r.flags & dns.flags.TC:
            r = dns.query.tcp(q, self.address, port=self.port,
                              timeout=timeout)
        return r

    def query(self, name, rtype):
        """Rdata of the answer in presentation form, [] if none."""
        r = self.ask(name, rtype)
        want = dns.rdatatype.from_text(rtype)
        out = []
        for rrset in r.answer:
            if rrset.rdtype == want:
                out += [rd.to_text() for rd in rrset]
        return out

    def txt(self, name):
        """The TXT records of name, each with its strings joined."""
        r = self.ask(name, "TXT")
        out = []
        for rrset in r.answer:
            if rrset.rdtype == dns.rdatatype.TXT:
                out += [b"".join(rd.strings).decode("ascii", "replace")
                        for rd in rrset]
        return out

    def txt_strings(self, name):
        """The character-strings of each TXT record of name."""
        r = self.ask(name, "TXT")
        return [list(rd.strings) for rrset in r.answer
                if rrset.rdtype == dns.rdatatype.TXT for rd in rrset]

    def serial(self, zone):
        return self.ask(zone, "SOA").answer[0][0].serial

    def dnsfunc(self, name, timeout=5):
        """A dnsfunc for dkimpy: the TXT text of name, following CNAMEs
        within this server, or None."""
        if isinstance(name, bytes):
            name = name.decode("ascii")
        for _ in range(8):
            r = self.ask(name, "TXT")
            txt = [b"".join(rd.strings) for rrset in r.answer
                   if rrset.rdtype == dns.rdatatype.TXT
                   and rrset.name.to_text().lower()
                   == name.rstrip(".").lower() + "." for rd in rrset]
            if txt:
                return txt[0]
            cname = self.query(name, "CNAME")
            if not cname:
                return None
            name = cname[0]
        return None

    def __repr__(self):
        return "<Knot %s@%s>" % (self.address, self.port)
