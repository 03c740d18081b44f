#!/usr/bin/python3
"""dkimverify.py: checks every DKIM-Signature of a message with dkimpy,
taking the public keys from a file instead of the DNS.

    dkimverify.py --dns DNSFILE MESSAGE.eml [MESSAGE.eml ...]

DNSFILE holds either "NAME TXT-TEXT" lines
    20250101-n1-rsa._domainkey.example.org v=DKIM1; k=rsa; p=MIIB...
or the zone-file lines that `subgate dns records DOMAIN` prints
    SEL._domainkey.example.org. 3600 IN TXT "v=DKIM1; k=rsa; p=..." "..."
(the quoted strings are joined). Prints one line per signature:
    FILE: sig 0 d=example.org s=SEL a=rsa-sha256: pass
and exits 0 when every signature of every file passes, 1 otherwise
(a message without a signature counts as a failure), 2 on usage errors.

The functions are shared with the integration tests (test_dkim.py)."""

import argparse
import re
import sys

import dkim

_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_ZONE_TXT = re.compile(r"^(\S+)\s+(?:\d+\s+)?(?:IN\s+)?TXT\s+(.*)$", re.I)


def _unescape_zone(text):
    """Undoes RFC 1035 5.1 escapes inside one quoted character-string."""
    out = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            if text[i + 1 : i + 4].isdigit() and len(text[i + 1 : i + 4]) == 3:
                out.append(chr(int(text[i + 1 : i + 4])))
                i += 4
                continue
            out.append(text[i + 1])
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def normalize_name(name):
    if isinstance(name, bytes):
        name = name.decode("ascii")
    return name.strip().rstrip(".").lower()


def parse_zone_line(line):
    """(name, text) from one zone-file TXT line, or None."""
    m = _ZONE_TXT.match(line.strip())
    if not m:
        return None
    parts = _QUOTED.findall(m.group(2))
    if not parts:
        return None
    return normalize_name(m.group(1)), "".join(_unescape_zone(p) for p in parts)


def parse_records(text):
    """{name: txt} from DNSFILE contents (either format, mixed allowed).
    Names are lower case without the trailing dot."""
    records = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or line.startswith(";"):
            continue
        parsed = parse_zone_line(line) if '"' in line else None
        if parsed is None:
            name, _, value = line.partition(" ")
            parsed = normalize_name(name), value.strip()
        records[parsed[0]] = parsed[1]
    return records


def load_records(path):
    with open(path, "r", encoding="ascii") as f:
        return parse_records(f.read())


def make_dnsfunc(records):
    """A dnsfunc for dkimpy: gets b'sel._domainkey.dom.' (or str), returns
    the TXT text as bytes, or None when there is no such record."""

    def dnsfunc(name, timeout=5):
        value = records.get(normalize_name(name))
        return None if value is None else value.encode("ascii")

    return dnsfunc


def _unfold(value):
    return re.sub(rb"\r?\n[ \t]", b" ", value)


def signature_tags(message):
    """The tags of each DKIM-Signature header, in message order, as
    {str: str} with whitespace removed from b= and bh=."""
    head = message.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    fields = re.split(rb"\r?\n(?![ \t])", head)
    out = []
    for field in fields:
        name, sep, value = field.partition(b":")
        if not sep or name.strip().lower() != b"dkim-signature":
            continue
        tags = {}
        for part in _unfold(value).split(b";"):
            k, sep2, v = part.partition(b"=")
            if not sep2:
                continue
            k = k.strip().decode("ascii", "replace")
            v = v.decode("ascii", "replace")
            tags[k] = re.sub(r"\s+", "", v) if k in ("b", "bh", "h") else (
                v.strip()
            )
        out.append(tags)
    return out


def verify_message(message, records):
    """[(index, tags, ok)] for each signature, verified by dkimpy."""
    dnsfunc = make_dnsfunc(records)
    results = []
    for i, tags in enumerate(signature_tags(message)):
        try:
            ok = bool(dkim.DKIM(message).verify(idx=i, dnsfunc=dnsfunc))
        except dkim.DKIMException:
            ok = False
        results.append((i, tags, ok))
    return results


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dns", required=True, help="DNS records file")
    ap.add_argument("messages", nargs="+")
    args = ap.parse_args(argv)
    try:
        records = load_records(args.dns)
    except OSError as e:
        print("dkimverify: %s" % e, file=sys.stderr)
        return 2
    all_ok = True
    for path in args.messages:
        with open(path, "rb") as f:
            message = f.read()
        results = verify_message(message, records)
        if not results:
            print("%s: no DKIM-Signature" % path)
            all_ok = False
        for i, tags, ok in results:
            print(
                "%s: sig %d d=%s s=%s a=%s: %s"
                % (
                    path,
                    i,
                    tags.get("d", "?"),
                    tags.get("s", "?"),
                    tags.get("a", "?"),
                    "pass" if ok else "fail",
                )
            )
            all_ok = all_ok and ok
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
