/* relay: blocking SMTP client towards the next hop. The socket is
 * non-blocking underneath so that every step waits in poll() with a
 * deadline; TLS uses the same socket through OpenSSL. */
#include "relay.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "../common/limits.h"
#include "../common/log.h"
#include "../common/xalloc.h"

/* RFC 5321 4.5.3.1.5: a reply line is at most 512 octets with CRLF. */
#define RELAY_MAX_LINE 512
/* Lines in one reply: EHLO lists a dozen; more is a broken or hostile
 * server. */
#define RELAY_MAX_LINES 100
/* Commands sent in one pipelined batch (RFC 2920 3.1): bounded so that
 * unread replies cannot fill both socket buffers and stall both ends. */
#define RELAY_BATCH 100
/* The wait for the reply to QUIT: the message is delivered by then, and
 * the runner must not stall on a server that never answers it. */
#define RELAY_QUIT_MS 5000

enum relay_ext {
    RELAY_EXT_STARTTLS = 1 << 0,
    RELAY_EXT_PIPELINING = 1 << 1,
    RELAY_EXT_8BITMIME = 1 << 2,
    RELAY_EXT_SIZE = 1 << 3,
};

struct relay_reply {
    int code;
    char text[RELAY_MAX_TEXT]; /* "250 2.0.0 Ok", continuation lines
                                  joined with a space */
};

struct relay {
    const struct cfg *cfg; /* borrowed */
    SSL_CTX *ctx;          /* owned; NULL when relay_tls = none */
    char host[SG_MAX_DOMAIN + 1];
    char port[8];
    int fd;              /* -1: not connected */
    SSL *ssl;            /* owned; NULL: plaintext */
    unsigned timeout_ms; /* per step: relay_timeout, shorter for QUIT */
    unsigned ext;
    unsigned nmsgs;    /* sent on this connection */
    long long last_ms; /* monotonic time of the last use */
    const char *qid;   /* borrowed: the message in progress, for logs */
    char peer[SG_MAX_DOMAIN + INET6_ADDRSTRLEN + 16];
    char tlsdesc[96];
    char err[RELAY_MAX_TEXT]; /* why the connection failed */
    char errdsn[16];
    size_t rpos, rlen;
    char rbuf[4096];
    size_t wlen;
    char wbuf[16384];
};

static long long relay_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Records why the connection failed (for every recipient not yet decided)
 * and returns -1. */
static int relay_fail(struct relay *r, const char *dsn, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int relay_fail(struct relay *r, const char *dsn, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(r->err, sizeof(r->err), fmt, ap);
    va_end(ap);
    snprintf(r->errdsn, sizeof(r->errdsn), "%s", dsn);
    return -1;
}

/* Splits relay_host: "[host]:port", "[host]", "host:port" or "host"; the
 * brackets allow an IPv6 literal. 0 ok, -1 malformed. */
static int relay_parse_host(const char *s, char *host, size_t hostlen,
                            char *port, size_t portlen)
{
    const char *h = s, *end, *p = NULL;
    size_t hl;

    if (s[0] == '[') {
        h = s + 1;
        end = strchr(h, ']');
        if (end == NULL)
            return -1;
        if (end[1] == ':')
            p = end + 2;
        else if (end[1] != '\0')
            return -1;
    } else {
        end = strchr(s, ':');
        if (end != NULL)
            p = end + 1;
        else
            end = s + strlen(s);
    }
    hl = (size_t)(end - h);
    if (hl == 0 || hl >= hostlen)
        return -1;
    memcpy(host, h, hl);
    host[hl] = '\0';
    if (p == NULL)
        p = "25";
    if (strlen(p) == 0 || strlen(p) > 5 || strlen(p) >= portlen ||
        strspn(p, "0123456789") != strlen(p) || strtoul(p, NULL, 10) < 1 ||
        strtoul(p, NULL, 10) > 65535)
        return -1;
    snprintf(port, portlen, "%s", p);
    return 0;
}

/* Waits until fd is ready for ev or the deadline passes. 0 ready,
 * -ETIMEDOUT, or -errno. A signal does not cut the wait short. */
static int relay_wait(int fd, short ev, long long deadline)
{
    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = ev};
        long long left = deadline - relay_now_ms();
        int n;

        if (left <= 0)
            return -ETIMEDOUT;
        n = poll(&pfd, 1, left > 60000 ? 60000 : (int)left);
        if (n > 0)
            return 0;
        if (n < 0 && errno != EINTR)
            return -errno;
    }
}

/* Waits as OpenSSL asks after a non-blocking call returned ret. 0 to
 * retry, or -1 on a real error (reason in *what). */
static int relay_ssl_retry(struct relay *r, int ret, long long deadline,
                           const char **what)
{
    int e = SSL_get_error(r->ssl, ret), rc;

    if (e == SSL_ERROR_WANT_READ)
        rc = relay_wait(r->fd, POLLIN, deadline);
    else if (e == SSL_ERROR_WANT_WRITE)
        rc = relay_wait(r->fd, POLLOUT, deadline);
    else if (e == SSL_ERROR_ZERO_RETURN) {
        *what = "connection closed";
        return -1;
    } else {
        unsigned long ec = ERR_peek_last_error();
        *what = ec ? ERR_reason_error_string(ec) : NULL;
        if (*what == NULL)
            *what = e == SSL_ERROR_SYSCALL ? "connection lost" : "TLS error";
        ERR_clear_error();
        return -1;
    }
    if (rc < 0) {
        *what = rc == -ETIMEDOUT ? "timeout" : strerror(-rc);
        return -1;
    }
    return 0;
}

/* Reads some bytes into the read buffer. 0 ok, -1 failed. */
static int relay_fill(struct relay *r, long long deadline, const char *step)
{
    const char *what = "connection closed";

    if (r->rpos > 0) {
        memmove(r->rbuf, r->rbuf + r->rpos, r->rlen - r->rpos);
        r->rlen -= r->rpos;
        r->rpos = 0;
    }
    for (;;) {
        size_t room = sizeof(r->rbuf) - r->rlen;
        ssize_t n;

        if (r->ssl != NULL) {
            int k = SSL_read(r->ssl, r->rbuf + r->rlen, (int)room);
            if (k > 0) {
                r->rlen += (size_t)k;
                return 0;
            }
            if (relay_ssl_retry(r, k, deadline, &what) == 0)
                continue;
            break;
        }
        n = recv(r->fd, r->rbuf + r->rlen, room, 0);
        if (n > 0) {
            r->rlen += (size_t)n;
            return 0;
        }
        if (n == 0)
            break;
        if (errno == EAGAIN || errno == EINTR) {
            int rc = relay_wait(r->fd, POLLIN, deadline);
            if (rc == 0)
                continue;
            what = rc == -ETIMEDOUT ? "timeout" : strerror(-rc);
        } else {
            what = strerror(errno);
        }
        break;
    }
    return relay_fail(r, "4.4.2", "lost connection with %s while %s: %s",
                      r->peer, step, what);
}

/* Writes all of buf; the deadline moves on whenever bytes go out. */
static int relay_write(struct relay *r, const char *buf, size_t len,
                       const char *step)
{
    long long deadline = relay_now_ms() + r->timeout_ms;
    const char *what = NULL;

    while (len > 0) {
        ssize_t n;

        if (r->ssl != NULL) {
            int chunk = len > 65536 ? 65536 : (int)len;
            int k = SSL_write(r->ssl, buf, chunk);
            if (k <= 0) {
                if (relay_ssl_retry(r, k, deadline, &what) == 0)
                    continue;
                break;
            }
            n = k;
        } else {
            n = send(r->fd, buf, len, MSG_NOSIGNAL);
            if (n < 0) {
                int rc = 0;
                if (errno != EAGAIN && errno != EINTR) {
                    what = strerror(errno);
                    break;
                }
                rc = relay_wait(r->fd, POLLOUT, deadline);
                if (rc < 0) {
                    what = rc == -ETIMEDOUT ? "timeout" : strerror(-rc);
                    break;
                }
                continue;
            }
        }
        buf += n;
        len -= (size_t)n;
        deadline = relay_now_ms() + r->timeout_ms;
    }
    if (len == 0)
        return 0;
    return relay_fail(r, "4.4.2", "lost connection with %s while %s: %s",
                      r->peer, step, what);
}

static int relay_flush(struct relay *r, const char *step)
{
    int rc = relay_write(r, r->wbuf, r->wlen, step);

    r->wlen = 0;
    return rc;
}

/* Appends one command line (CRLF added) to the output buffer. Commands
 * are short (an address is at most SG_MAX_PATH); the buffer is flushed
 * when full. */
static int relay_cmd(struct relay *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int relay_cmd(struct relay *r, const char *fmt, ...)
{
    char line[SG_MAX_CMD_LINE];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(line, sizeof(line) - 2, fmt, ap);
    va_end(ap);
    SG_ASSERT(n > 0 && (size_t)n < sizeof(line) - 2);
    memcpy(line + n, "\r\n", 2);
    if (r->wlen + (size_t)n + 2 > sizeof(r->wbuf) &&
        relay_flush(r, "sending commands") < 0)
        return -1;
    memcpy(r->wbuf + r->wlen, line, (size_t)n + 2);
    r->wlen += (size_t)n + 2;
    return 0;
}

/* Reads one reply line (without CRLF) into line. 0 ok, -1 failed. */
static int relay_getline(struct relay *r, char *line, size_t *len_r,
                         long long deadline, const char *step)
{
    for (;;) {
        char *nl = memchr(r->rbuf + r->rpos, '\n', r->rlen - r->rpos);
        if (nl != NULL) {
            size_t n = (size_t)(nl - (r->rbuf + r->rpos));
            size_t used = n + 1;
            if (n > 0 && r->rbuf[r->rpos + n - 1] == '\r')
                n--;
            if (used > RELAY_MAX_LINE)
                break;
            memcpy(line, r->rbuf + r->rpos, n);
            line[n] = '\0';
            *len_r = n;
            r->rpos += used;
            return 0;
        }
        if (r->rlen - r->rpos >= RELAY_MAX_LINE)
            break;
        if (relay_fill(r, deadline, step) < 0)
            return -1;
    }
    return relay_fail(r, "4.5.0", "%s: reply line too long while %s", r->peer,
                      step);
}

/* Appends a trimmed text piece to rep->text. */
static void relay_text_add(struct relay_reply *rep, const char *s, size_t n)
{
    size_t have = strlen(rep->text), room = sizeof(rep->text) - 1 - have;

    if (have > 0 && room > 0) {
        rep->text[have++] = ' ';
        room--;
    }
    if (n > room)
        n = room;
    memcpy(rep->text + have, s, n);
    rep->text[have + n] = '\0';
}

/* Notes an EHLO keyword line (RFC 5321 4.1.1.1). */
static void relay_ehlo_line(struct relay *r, const char *kw)
{
    static const struct {
        const char *name;
        unsigned flag;
    } exts[] = {
        {"STARTTLS", RELAY_EXT_STARTTLS},
        {"PIPELINING", RELAY_EXT_PIPELINING},
        {"8BITMIME", RELAY_EXT_8BITMIME},
        {"SIZE", RELAY_EXT_SIZE},
    };
    size_t kl = strcspn(kw, " =");

    for (size_t i = 0; i < sizeof(exts) / sizeof(exts[0]); i++) {
        if (strlen(exts[i].name) == kl &&
            strncasecmp(kw, exts[i].name, kl) == 0)
            r->ext |= exts[i].flag;
    }
}

/* Reads one (multi-line) reply. 0 ok, -1 failed. ehlo != 0 collects the
 * extension keywords into r->ext. */
static int relay_reply(struct relay *r, struct relay_reply *rep, int ehlo,
                       const char *step)
{
    long long deadline = relay_now_ms() + r->timeout_ms;
    char line[RELAY_MAX_LINE + 1];

    rep->code = 0;
    rep->text[0] = '\0';
    for (int i = 0; i < RELAY_MAX_LINES; i++) {
        size_t n = 0;

        if (relay_getline(r, line, &n, deadline, step) < 0)
            return -1;
        if (n < 3 || line[0] < '2' || line[0] > '5' || line[1] < '0' ||
            line[1] > '9' || line[2] < '0' || line[2] > '9' ||
            (n > 3 && line[3] != ' ' && line[3] != '-'))
            return relay_fail(r, "4.5.0", "%s: bad reply while %s", r->peer,
                              step);
        rep->code =
            (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
        if (i == 0)
            relay_text_add(rep, line, 3);
        if (n > 4)
            relay_text_add(rep, line + 4, n - 4);
        if (ehlo && i > 0 && n > 4)
            relay_ehlo_line(r, line + 4);
        if (n == 3 || line[3] == ' ') {
            if (rep->code == 421)
                return relay_fail(r, "4.4.2", "%s closed the session: %s",
                                  r->peer, rep->text);
            return 0;
        }
    }
    return relay_fail(r, "4.5.0", "%s: reply too long while %s", r->peer, step);
}

/* The enhanced status code (RFC 3463) at the start of the reply text, or
 * one made from the reply class. */
static void relay_dsn(const struct relay_reply *rep, char *out, size_t len)
{
    const char *t = rep->text + 3;
    size_t n;

    while (*t == ' ' || *t == '-')
        t++;
    n = strspn(t, "0123456789.");
    if (n >= 5 && n < len && t[0] == rep->text[0] && t[1] == '.' &&
        (t[n] == ' ' || t[n] == '\0')) {
        memcpy(out, t, n);
        out[n] = '\0';
        return;
    }
    snprintf(out, len, "%c.0.0", rep->text[0]);
}

/* Drops the connection without QUIT. */
static void relay_drop(struct relay *r)
{
    if (r->ssl != NULL) {
        SSL_free(r->ssl);
        r->ssl = NULL;
    }
    if (r->fd >= 0)
        close(r->fd);
    r->fd = -1;
    r->rpos = r->rlen = r->wlen = 0;
    r->ext = 0;
}

/* Connects to one address. 0 ok, -1 failed (reason recorded). */
static int relay_connect_ai(struct relay *r, const struct addrinfo *ai)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    long long deadline = relay_now_ms() + r->timeout_ms;
    int fd, rc = 0;
    socklen_t sl = sizeof(rc);

    if (getnameinfo(ai->ai_addr, ai->ai_addrlen, ip, sizeof(ip), NULL, 0,
                    NI_NUMERICHOST) != 0)
        snprintf(ip, sizeof(ip), "?");
    snprintf(r->peer, sizeof(r->peer), "%s[%s]:%s", r->host, ip, r->port);
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return relay_fail(r, "4.4.1", "connect to %s: %s", r->peer,
                          strerror(errno));
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
        if (errno != EINPROGRESS) {
            rc = -errno;
        } else if ((rc = relay_wait(fd, POLLOUT, deadline)) == 0) {
            if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &rc, &sl) < 0)
                rc = errno;
            rc = -rc;
        }
    }
    if (rc < 0) {
        close(fd);
        return relay_fail(r, "4.4.1", "connect to %s: %s", r->peer,
                          rc == -ETIMEDOUT ? "timeout" : strerror(-rc));
    }
    r->fd = fd;
    return 0;
}

/* Resolves the host and connects to the first address that answers. */
static int relay_connect_host(struct relay *r)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res, *ai;
    int rc;

    rc = getaddrinfo(r->host, r->port, &hints, &res);
    if (rc != 0) {
        snprintf(r->peer, sizeof(r->peer), "%s:%s", r->host, r->port);
        return relay_fail(r, "4.4.3", "host %s lookup failed: %s", r->host,
                          gai_strerror(rc));
    }
    rc = -1;
    for (ai = res; ai != NULL && rc < 0; ai = ai->ai_next)
        rc = relay_connect_ai(r, ai);
    freeaddrinfo(res);
    return rc;
}

/* EHLO, falling back to HELO on a 5xx (RFC 5321 3.2). */
static int relay_ehlo(struct relay *r)
{
    struct relay_reply rep;

    r->ext = 0;
    if (relay_cmd(r, "EHLO %s", r->cfg->hostname) < 0 ||
        relay_flush(r, "sending EHLO") < 0 ||
        relay_reply(r, &rep, 1, "receiving the EHLO reply") < 0)
        return -1;
    if (rep.code / 100 == 5) {
        r->ext = 0;
        if (relay_cmd(r, "HELO %s", r->cfg->hostname) < 0 ||
            relay_flush(r, "sending HELO") < 0 ||
            relay_reply(r, &rep, 0, "receiving the HELO reply") < 0)
            return -1;
    }
    if (rep.code / 100 != 2)
        return relay_fail(r, "4.0.0", "%s refused the greeting: %s", r->peer,
                          rep.text);
    return 0;
}

/* The TLS handshake on the connected socket. */
static int relay_handshake(struct relay *r)
{
    long long deadline = relay_now_ms() + r->timeout_ms;
    struct in6_addr a6;
    struct in_addr a4;
    const char *what = NULL;
    int lit = inet_pton(AF_INET, r->host, &a4) == 1 ||
              inet_pton(AF_INET6, r->host, &a6) == 1;

    r->ssl = SSL_new(r->ctx);
    if (r->ssl == NULL || SSL_set_fd(r->ssl, r->fd) != 1)
        return relay_fail(r, "4.7.5", "%s: cannot set up TLS", r->peer);
    /* SNI only for names (RFC 6066 3); the name is also what a
     * certificate must match under relay_tls = verify. */
    if (!lit && SSL_set_tlsext_host_name(r->ssl, r->host) != 1)
        return relay_fail(r, "4.7.5", "%s: cannot set SNI", r->peer);
    if (r->cfg->relay_tls == CFG_RELAY_TLS_VERIFY) {
        int ok =
            lit ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(r->ssl), r->host)
                : SSL_set1_host(r->ssl, r->host);
        if (ok != 1)
            return relay_fail(r, "4.7.5",
                              "%s: cannot set the name to "
                              "verify",
                              r->peer);
    }
    for (;;) {
        int k = SSL_connect(r->ssl);
        if (k == 1)
            break;
        if (relay_ssl_retry(r, k, deadline, &what) < 0) {
            long vr = SSL_get_verify_result(r->ssl);
            if (r->cfg->relay_tls == CFG_RELAY_TLS_VERIFY && vr != X509_V_OK)
                what = X509_verify_cert_error_string(vr);
            return relay_fail(r, "4.7.5", "TLS handshake with %s failed: %s",
                              r->peer, what);
        }
    }
    snprintf(r->tlsdesc, sizeof(r->tlsdesc), "%s/%s", SSL_get_version(r->ssl),
             SSL_get_cipher_name(r->ssl));
    return 0;
}

/* STARTTLS as relay_tls asks, then EHLO again (RFC 3207 4.2). */
static int relay_starttls(struct relay *r)
{
    enum cfg_relay_tls pol = r->cfg->relay_tls;
    struct relay_reply rep;

    if (pol == CFG_RELAY_TLS_NONE)
        return 0;
    if (!(r->ext & RELAY_EXT_STARTTLS)) {
        if (pol == CFG_RELAY_TLS_MAY)
            return 0;
        return relay_fail(r, "4.7.4",
                          "TLS is required, but %s does not "
                          "offer STARTTLS",
                          r->peer);
    }
    if (relay_cmd(r, "STARTTLS") < 0 ||
        relay_flush(r, "sending STARTTLS") < 0 ||
        relay_reply(r, &rep, 0, "receiving the STARTTLS reply") < 0)
        return -1;
    if (rep.code != 220) {
        if (pol == CFG_RELAY_TLS_MAY)
            return 0;
        return relay_fail(r, "4.7.4", "%s refused STARTTLS: %s", r->peer,
                          rep.text);
    }
    /* Bytes after the 220 were sent in the clear and would be taken as
     * coming through TLS: a known injection attack. */
    if (r->rpos != r->rlen)
        return relay_fail(r, "4.7.0",
                          "%s sent data after the STARTTLS "
                          "reply",
                          r->peer);
    if (relay_handshake(r) < 0)
        return -1;
    return relay_ehlo(r);
}

/* Opens the connection: connect, greeting, EHLO, STARTTLS. */
static int relay_open(struct relay *r)
{
    struct relay_reply rep;

    snprintf(r->tlsdesc, sizeof(r->tlsdesc), "none");
    if (r->host[0] == '\0')
        return relay_fail(r, "4.3.5", "no relay_host configured");
    if (relay_connect_host(r) < 0)
        return -1;
    if (relay_reply(r, &rep, 0, "receiving the greeting") < 0)
        goto fail;
    if (rep.code != 220) {
        relay_fail(r, "4.0.0", "%s refused to talk: %s", r->peer, rep.text);
        goto fail;
    }
    if (relay_ehlo(r) < 0 || relay_starttls(r) < 0)
        goto fail;
    r->nmsgs = 0;
    r->last_ms = relay_now_ms();
    log_info("%s: relay=%s connected tls=%s", r->qid, r->peer, r->tlsdesc);
    return 0;
fail:
    relay_drop(r);
    return -1;
}

/* Whether an open, idle connection is still usable: a server that has
 * closed it, or sent an unsolicited 421 (RFC 5321 3.8), leaves data to
 * read. TLS 1.3 session tickets also arrive unasked; OpenSSL consumes
 * them and reports that it wants more. */
static int relay_alive(struct relay *r)
{
    struct pollfd pfd = {.fd = r->fd, .events = POLLIN};

    if (r->rpos != r->rlen)
        return 0;
    if (poll(&pfd, 1, 0) <= 0)
        return 1;
    if (r->ssl != NULL) {
        char c;
        int k = SSL_read(r->ssl, &c, 1);
        if (k <= 0 && SSL_get_error(r->ssl, k) == SSL_ERROR_WANT_READ)
            return 1;
        ERR_clear_error();
    }
    return 0;
}

/* Sends the message dot-stuffed (RFC 5321 4.5.2) and the final ".". */
static int relay_body(struct relay *r, const char *p, size_t len)
{
    int bol = 1;

    for (size_t i = 0; i < len; i++) {
        if (r->wlen + 2 > sizeof(r->wbuf) &&
            relay_flush(r, "sending the message") < 0)
            return -1;
        if (bol && p[i] == '.')
            r->wbuf[r->wlen++] = '.';
        r->wbuf[r->wlen++] = p[i];
        bol = p[i] == '\n';
    }
    if (r->wlen + 5 > sizeof(r->wbuf) &&
        relay_flush(r, "sending the message") < 0)
        return -1;
    if (len > 0 && !bol) {
        memcpy(r->wbuf + r->wlen, "\r\n", 2);
        r->wlen += 2;
    }
    memcpy(r->wbuf + r->wlen, ".\r\n", 3);
    r->wlen += 3;
    return relay_flush(r, "sending the message");
}

static void relay_set(struct relay_rcpt *res, const struct relay_reply *rep)
{
    res->code = rep->code;
    relay_dsn(rep, res->dsn, sizeof(res->dsn));
    snprintf(res->text, sizeof(res->text), "%s", rep->text);
}

/* One transaction state, shared by the steps of relay_transact(). */
struct relay_tx {
    const struct relay_msg *m;
    struct relay_rcpt *res;
    struct relay_reply mail; /* the MAIL FROM reply */
    size_t accepted;         /* RCPTs with a 2xx */
    int data_sent;           /* DATA went out */
    struct relay_reply data; /* its reply */
};

/* Queues command i of the transaction: 0 MAIL, 1..n RCPT, n+1 DATA. */
static int relay_tx_cmd(struct relay *r, const struct relay_tx *tx, size_t i)
{
    const struct relay_msg *m = tx->m;
    char size[32] = "";
    int eight = 0;

    if (i == 0) {
        if (r->ext & RELAY_EXT_SIZE)
            snprintf(size, sizeof(size), " SIZE=%zu", m->len);
        if (r->ext & RELAY_EXT_8BITMIME) {
            for (size_t k = 0; k < m->len && !eight; k++)
                eight = (unsigned char)m->data[k] >= 0x80;
        }
        return relay_cmd(r, "MAIL FROM:<%s>%s%s", m->sender, size,
                         eight ? " BODY=8BITMIME" : "");
    }
    if (i <= m->nrcpt)
        return relay_cmd(r, "RCPT TO:<%s>", m->rcpt[i - 1]);
    return relay_cmd(r, "DATA");
}

/* Reads the reply to command i and records it. */
static int relay_tx_reply(struct relay *r, struct relay_tx *tx, size_t i)
{
    struct relay_reply rep;

    if (i == 0)
        return relay_reply(r, &tx->mail, 0, "receiving the MAIL reply");
    if (i <= tx->m->nrcpt) {
        if (relay_reply(r, &rep, 0, "receiving a RCPT reply") < 0)
            return -1;
        /* After a refused MAIL every RCPT fails with the MAIL reply. */
        relay_set(&tx->res[i - 1], tx->mail.code / 100 == 2 ? &rep : &tx->mail);
        if (tx->mail.code / 100 == 2 && rep.code / 100 == 2) {
            tx->accepted++;
            /* Decided only by the reply to the end of DATA. */
            tx->res[i - 1].code = 0;
        }
        return 0;
    }
    return relay_reply(r, &tx->data, 0, "receiving the DATA reply");
}

/* MAIL, RCPT..., DATA: in batches with PIPELINING, one by one without;
 * stops early when MAIL fails or, without PIPELINING, when no recipient
 * was accepted. 0 when the commands ran (tx says how), -1 on a
 * connection failure. */
static int relay_envelope(struct relay *r, struct relay_tx *tx)
{
    size_t total = tx->m->nrcpt + 2, sent = 0, done = 0;
    size_t batch = (r->ext & RELAY_EXT_PIPELINING) ? RELAY_BATCH : 1;

    while (done < total) {
        while (sent < total && sent - done < batch) {
            if (sent == total - 1 &&
                (tx->accepted == 0 && done == sent && sent > 1))
                break; /* no recipient: no DATA */
            if (relay_tx_cmd(r, tx, sent) < 0)
                return -1;
            if (sent == total - 1)
                tx->data_sent = 1;
            sent++;
        }
        if (sent == done)
            break;
        if (relay_flush(r, "sending the envelope") < 0)
            return -1;
        while (done < sent) {
            if (relay_tx_reply(r, tx, done) < 0)
                return -1;
            done++;
        }
        if (tx->mail.code / 100 != 2)
            break;
    }
    return 0;
}

/* One transaction on the open connection. 0 when it ran to its end
 * (whatever the replies), -1 on a connection failure. */
static int relay_transact(struct relay *r, struct relay_tx *tx)
{
    struct relay_reply rep;
    int clean;

    if (relay_envelope(r, tx) < 0)
        return -1;
    clean = tx->data_sent && tx->data.code == 354 && tx->accepted > 0;
    if (tx->data_sent && tx->data.code == 354) {
        /* Never leave the server waiting in DATA; with nobody accepted
         * an empty message is ended at once. */
        if (relay_body(r, tx->accepted > 0 ? tx->m->data : "",
                       tx->accepted > 0 ? tx->m->len : 0) < 0 ||
            relay_reply(r, &rep, 0, "receiving the end of DATA reply") < 0)
            return -1;
    } else {
        rep = tx->data_sent ? tx->data : tx->mail;
    }
    for (size_t i = 0; i < tx->m->nrcpt; i++) {
        /* Recipients accepted at RCPT are decided by the last reply. */
        if (tx->res[i].code == 0 && tx->mail.code / 100 == 2)
            relay_set(&tx->res[i], &rep);
        else if (tx->res[i].code == 0)
            relay_set(&tx->res[i], &tx->mail);
    }
    if (clean)
        return 0;
    /* A transaction that ended early is reset (RFC 5321 4.1.1.5). */
    if (relay_cmd(r, "RSET") < 0 || relay_flush(r, "sending RSET") < 0 ||
        relay_reply(r, &rep, 0, "receiving the RSET reply") < 0)
        return -1;
    if (rep.code / 100 != 2)
        return relay_fail(r, "4.0.0", "%s refused RSET: %s", r->peer, rep.text);
    return 0;
}

/* Fills every undecided recipient with the connection failure. */
static void relay_fail_all(struct relay *r, const struct relay_msg *m,
                           struct relay_rcpt *res, int undecided_only)
{
    for (size_t i = 0; i < m->nrcpt; i++) {
        if (undecided_only && res[i].code != 0)
            continue;
        res[i].code = 0;
        snprintf(res[i].dsn, sizeof(res[i].dsn), "%s", r->errdsn);
        snprintf(res[i].text, sizeof(res[i].text), "%s", r->err);
    }
}

size_t relay_send(struct relay *r, const struct relay_msg *m,
                  struct relay_rcpt *res)
{
    size_t ok = 0;

    r->qid = m->qid;
    memset(res, 0, m->nrcpt * sizeof(*res));
    for (int tries = 0; tries < 2; tries++) {
        struct relay_tx tx = {.m = m, .res = res};
        int reused = r->fd >= 0;

        if (reused && (r->nmsgs >= RELAY_MAX_MSGS || relay_idle_ms(r) == 0 ||
                       !relay_alive(r))) {
            if (relay_alive(r))
                relay_close(r);
            else
                relay_drop(r);
            reused = 0;
        }
        if (r->fd < 0 && relay_open(r) < 0) {
            relay_fail_all(r, m, res, 0);
            break;
        }
        if (relay_transact(r, &tx) == 0) {
            r->nmsgs++;
            r->last_ms = relay_now_ms();
            break;
        }
        relay_drop(r);
        /* A reused connection may have died unnoticed: one more try on a
         * fresh one, unless the message itself may have gone out. */
        if (!reused || tx.data_sent || tx.mail.code != 0) {
            relay_fail_all(r, m, res, 1);
            break;
        }
        memset(res, 0, m->nrcpt * sizeof(*res));
    }
    r->qid = "-";
    for (size_t i = 0; i < m->nrcpt; i++)
        ok += res[i].code / 100 == 2;
    return ok;
}

struct relay *relay_new(const struct cfg *cfg)
{
    struct relay *r = xcalloc(1, sizeof(*r));

    r->cfg = cfg;
    r->timeout_ms = cfg->relay_timeout_ms;
    r->fd = -1;
    r->qid = "-";
    snprintf(r->tlsdesc, sizeof(r->tlsdesc), "none");
    if (cfg->relay_host[0] != '\0' &&
        relay_parse_host(cfg->relay_host, r->host, sizeof(r->host), r->port,
                         sizeof(r->port)) < 0) {
        log_error("relay_host %s: expected [host]:port or host:port",
                  cfg->relay_host);
        free(r);
        return NULL;
    }
    snprintf(r->peer, sizeof(r->peer), "%s:%s", r->host, r->port);
    if (cfg->relay_tls == CFG_RELAY_TLS_NONE)
        return r;
    r->ctx = SSL_CTX_new(TLS_client_method());
    if (r->ctx == NULL ||
        SSL_CTX_set_min_proto_version(r->ctx, TLS1_2_VERSION) != 1)
        goto fail;
    SSL_CTX_set_mode(r->ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (cfg->relay_tls == CFG_RELAY_TLS_VERIFY) {
        int ok = cfg->relay_ca_file[0] != '\0'
                     ? SSL_CTX_load_verify_locations(r->ctx, cfg->relay_ca_file,
                                                     NULL)
                     : SSL_CTX_set_default_verify_paths(r->ctx);
        if (ok != 1)
            goto fail;
        SSL_CTX_set_verify(r->ctx, SSL_VERIFY_PEER, NULL);
    } else {
        /* encrypt and may: encryption against passive listeners only;
         * RFC 7435 opportunistic security. */
        SSL_CTX_set_verify(r->ctx, SSL_VERIFY_NONE, NULL);
    }
    return r;
fail:
    log_error("relay: TLS set-up failed%s%s: %s",
              cfg->relay_ca_file[0] ? " with relay_ca_file " : "",
              cfg->relay_ca_file,
              ERR_reason_error_string(ERR_peek_last_error())
                  ? ERR_reason_error_string(ERR_peek_last_error())
                  : "unknown error");
    ERR_clear_error();
    SSL_CTX_free(r->ctx);
    free(r);
    return NULL;
}

void relay_close(struct relay *r)
{
    struct relay_reply rep;

    if (r->fd < 0)
        return;
    /* A polite goodbye (RFC 5321 4.1.1.10); its failure changes nothing. */
    if (r->timeout_ms > RELAY_QUIT_MS)
        r->timeout_ms = RELAY_QUIT_MS;
    if (relay_cmd(r, "QUIT") == 0 && relay_flush(r, "sending QUIT") == 0)
        (void)relay_reply(r, &rep, 0, "receiving the QUIT reply");
    r->timeout_ms = r->cfg->relay_timeout_ms;
    if (r->ssl != NULL)
        (void)SSL_shutdown(r->ssl);
    ERR_clear_error();
    relay_drop(r);
}

void relay_free(struct relay **rp)
{
    struct relay *r = *rp;

    if (r == NULL)
        return;
    relay_close(r);
    SSL_CTX_free(r->ctx);
    free(r);
    *rp = NULL;
}

const char *relay_peer(const struct relay *r)
{
    return r->peer;
}

const char *relay_tls(const struct relay *r)
{
    return r->tlsdesc;
}

int relay_idle_ms(const struct relay *r)
{
    long long left;

    if (r->fd < 0)
        return -1;
    left = r->last_ms + (long long)RELAY_IDLE_S * 1000 - relay_now_ms();
    return left > 0 ? (int)left : 0;
}

void relay_tick(struct relay *r)
{
    if (r->fd >= 0 && relay_idle_ms(r) == 0)
        relay_close(r);
}
