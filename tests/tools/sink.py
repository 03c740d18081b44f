#!/usr/bin/python3
"""sink.py: the SMTP server that stands for the next hop in subgate's tests.

    sink.py --listen 127.0.0.1:PORT --dir DIR [--reply 'CODE TEXT']
            [--tls-cert CERT --tls-key KEY] [--pidfile FILE]
            [--delay-ms N]

Every accepted message is saved as DIR/NNNNNN.eml, byte for byte as it came
over the wire once dot-stuffing is removed, beside DIR/NNNNNN.env:

    mail_from=<ADDR>
    rcpt_to=<ADDR>          (one line per accepted recipient)
    tls=yes|no
    mail_options=PARAMS     (MAIL FROM parameters, e.g. BODY=8BITMIME)

The .env file is written first and the .eml is renamed into place last, so a
reader that sees NNNNNN.eml may read both at once.

Replies are scripted so that tests can model the next hop's failures:
  --reply 'CODE TEXT'   answers every DATA with this (a 4xx or 5xx);
  DIR/data-reply        if it exists, its first line overrides --reply; it is
                        reread at each DATA;
  DIR/rcpt-replies      "address CODE TEXT" lines, reread at each RCPT: a
                        listed recipient gets that reply instead of 250.
Each DATA outcome is appended to DIR/attempts.log as
"NNNNNN|- CODE mail_from=<...> rcpt=N" so tests can count deliveries that were
refused. --delay-ms N makes every answer to the end of DATA wait N
milliseconds: a slow next hop. STARTTLS is offered when a certificate is
given. The sink prints
"ready" on stdout once it listens and exits 0 on SIGTERM or SIGINT.
"""

import argparse
import asyncio
import os
import signal
import ssl
import sys

from aiosmtpd.smtp import SMTP

# Larger than any max_message_size the tests configure, so that the sink
# never is the reason a message fails.
SINK_DATA_LIMIT = 256 * 1024 * 1024


def parse_reply(text):
    """'451 4.3.0 try later' -> '451 4.3.0 try later' after checking it."""
    text = text.strip()
    if len(text) < 3 or not text[:3].isdigit() or text[0] not in "2345":
        raise ValueError("reply must start with a 3-digit code: %r" % text)
    return text


def read_first_line(path):
    try:
        with open(path, "r", encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#"):
                    return line
    except FileNotFoundError:
        return None
    return None


def read_rcpt_replies(path):
    """{address(lowercase): 'CODE TEXT'} from DIR/rcpt-replies."""
    out = {}
    try:
        with open(path, "r", encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                parts = line.split(None, 1)
                if len(parts) == 2:
                    out[parts[0].strip("<>").lower()] = parse_reply(parts[1])
    except FileNotFoundError:
        pass
    return out


class SinkHandler:
    def __init__(self, directory, reply, delay_ms=0):
        self.dir = directory
        self.reply = reply
        self.delay = delay_ms / 1000.0
        self.seq = self._last_seq()

    def _last_seq(self):
        last = 0
        for name in os.listdir(self.dir):
            stem, _, ext = name.partition(".")
            if ext in ("eml", "env") and stem.isdigit():
                last = max(last, int(stem))
        return last

    def _attempt(self, what, code, envelope):
        line = "%s %s mail_from=<%s> rcpt=%d\n" % (
            what,
            code,
            envelope.mail_from or "",
            len(envelope.rcpt_tos),
        )
        with open(os.path.join(self.dir, "attempts.log"), "a") as f:
            f.write(line)

    async def handle_RCPT(self, server, session, envelope, address,
                          rcpt_options):
        replies = read_rcpt_replies(os.path.join(self.dir, "rcpt-replies"))
        scripted = replies.get(address.lower())
        if scripted is not None and not scripted.startswith("2"):
            return scripted
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return scripted or "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.delay > 0:
            await asyncio.sleep(self.delay)
        reply = read_first_line(os.path.join(self.dir, "data-reply"))
        if reply is not None:
            reply = parse_reply(reply)
        else:
            reply = self.reply
        if reply is not None and not reply.startswith("2"):
            self._attempt("-", reply[:3], envelope)
            return reply
        self.seq += 1
        stem = os.path.join(self.dir, "%06d" % self.seq)
        env_lines = ["mail_from=<%s>" % (envelope.mail_from or "")]
        env_lines += ["rcpt_to=<%s>" % r for r in envelope.rcpt_tos]
        env_lines.append("tls=%s" % ("yes" if session.ssl else "no"))
        env_lines.append("mail_options=%s" % " ".join(envelope.mail_options))
        with open(stem + ".env", "w", encoding="utf-8") as f:
            f.write("\n".join(env_lines) + "\n")
        tmp = stem + ".tmp"
        with open(tmp, "wb") as f:
            f.write(envelope.original_content)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, stem + ".eml")
        self._attempt("%06d" % self.seq, "250", envelope)
        return reply or "250 2.0.0 OK saved as %06d" % self.seq


def parse_listen(text):
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError("expected HOST:PORT, got %r" % text)
    return host.strip("[]"), int(port)


def main(argv=None):
    ap = argparse.ArgumentParser(description="test SMTP sink")
    ap.add_argument("--listen", required=True, type=parse_listen)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--reply", type=parse_reply, default=None)
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--pidfile")
    ap.add_argument("--hostname", default="sink.test")
    ap.add_argument("--delay-ms", type=int, default=0)
    args = ap.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        ap.error("--tls-cert and --tls-key go together")

    os.makedirs(args.dir, exist_ok=True)
    tls = None
    if args.tls_cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(args.tls_cert, args.tls_key)
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE

    handler = SinkHandler(args.dir, args.reply, args.delay_ms)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    def factory():
        return SMTP(
            handler,
            data_size_limit=SINK_DATA_LIMIT,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=args.hostname,
            tls_context=tls,
            require_starttls=False,
            loop=loop,
        )

    host, port = args.listen
    server = loop.run_until_complete(
        loop.create_server(factory, host=host, port=port, reuse_address=True)
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.pidfile:
        with open(args.pidfile, "w") as f:
            f.write("%d\n" % os.getpid())
    print("ready", flush=True)
    try:
        loop.run_until_complete(stop.wait())
    finally:
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()
        if args.pidfile:
            try:
                os.unlink(args.pidfile)
            except FileNotFoundError:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
