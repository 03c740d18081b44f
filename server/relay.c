/* relay: blocking SMTP client towards the next hop. The socket is
 * non-blocking underneath so that every step waits in poll() with a
 * deadline; TLS uses the same socket through OpenSSL. A connection is
 * opened by trying the destination's addresses in order (relay_open):
 * each try connects, reads the greeting, says EHLO, starts TLS as the
 * policy asks and authenticates to a smarthost; any failure moves on to
 * the next address. */
#include "relay.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
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
/* The AUTH password file: one line; RFC 4954 leaves the length open,
 * this is what an administrator will ever type. */
#define RELAY_MAX_PASSWORD 512

enum relay_ext {
    RELAY_EXT_STARTTLS = 1 << 0,
    RELAY_EXT_PIPELINING = 1 << 1,
    RELAY_EXT_8BITMIME = 1 << 2,
    RELAY_EXT_SIZE = 1 << 3,
    RELAY_EXT_SMTPUTF8 = 1 << 4,
    RELAY_EXT_AUTH_PLAIN = 1 << 5,
    RELAY_EXT_AUTH_LOGIN = 1 << 6,
};

/* How one try of relay_try() went. */
enum relay_try_rc {
    RELAY_TRY_OK = 0,
    RELAY_TRY_FAIL = -1,  /* try the next address */
    RELAY_TRY_PLAIN = -2, /* relay_tls = may: TLS failed; again in clear */
};

struct relay_reply {
    int code;
    char text[RELAY_MAX_TEXT]; /* "250 2.0.0 Ok", continuation lines
                                  joined with a space */
};

struct relay_conf {
    const struct cfg *cfg;        /* borrowed */
    SSL_CTX *ctx;                 /* owned; NULL when relay_tls = none */
    char host[SG_MAX_DOMAIN + 1]; /* relay_host's host; "" for MX */
    char port[8];
    char *auth_user; /* owned; NULL: no AUTH */
    char *auth_pass; /* owned, wiped at free */
};

/* One address to try, with the name it belongs to. */
struct relay_cand {
    const char *name; /* borrowed */
    struct sockaddr_storage ss;
    socklen_t len;
};

struct relay {
    const struct relay_conf *conf; /* borrowed */
    const struct cfg *cfg;         /* borrowed */
    char host[SG_MAX_DOMAIN + 1];  /* the host connected to */
    int fd;                        /* -1: not connected */
    SSL *ssl;                      /* owned; NULL: plaintext */
    int verified;                  /* the certificate was verified */
    int smarthost;                 /* AUTH applies */
    unsigned timeout_ms;           /* per step: relay_timeout, less for QUIT */
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

/* Notes the SASL mechanisms of an AUTH keyword line that we can use. */
static void relay_auth_mechs(struct relay *r, const char *mechs)
{
    while (*mechs != '\0') {
        size_t n;

        mechs += strspn(mechs, " =");
        n = strcspn(mechs, " ");
        if (n == 5 && strncasecmp(mechs, "PLAIN", 5) == 0)
            r->ext |= RELAY_EXT_AUTH_PLAIN;
        else if (n == 5 && strncasecmp(mechs, "LOGIN", 5) == 0)
            r->ext |= RELAY_EXT_AUTH_LOGIN;
        mechs += n;
    }
}

/* Notes an EHLO keyword line (RFC 5321 4.1.1.1). */
static void relay_ehlo_line(struct relay *r, const char *kw)
{
    static const struct {
        const char *name;
        unsigned flag;
    } exts[] = {
        {"STARTTLS", RELAY_EXT_STARTTLS}, {"PIPELINING", RELAY_EXT_PIPELINING},
        {"8BITMIME", RELAY_EXT_8BITMIME}, {"SIZE", RELAY_EXT_SIZE},
        {"SMTPUTF8", RELAY_EXT_SMTPUTF8},
    };
    size_t kl = strcspn(kw, " =");

    for (size_t i = 0; i < sizeof(exts) / sizeof(exts[0]); i++) {
        if (strlen(exts[i].name) == kl &&
            strncasecmp(kw, exts[i].name, kl) == 0)
            r->ext |= exts[i].flag;
    }
    if (kl == 4 && strncasecmp(kw, "AUTH", 4) == 0)
        relay_auth_mechs(r, kw + 4);
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
    r->verified = 0;
    snprintf(r->tlsdesc, sizeof(r->tlsdesc), "none");
}

/* Connects to one candidate address. 0 ok, -1 failed (reason recorded). */
static int relay_connect(struct relay *r, const struct relay_cand *c,
                         const char *port)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    unsigned cms =
        r->timeout_ms < RELAY_CONNECT_MS ? r->timeout_ms : RELAY_CONNECT_MS;
    long long deadline = relay_now_ms() + cms;
    int fd, rc = 0;
    socklen_t sl = sizeof(rc);

    if (getnameinfo((const struct sockaddr *)&c->ss, c->len, ip, sizeof(ip),
                    NULL, 0, NI_NUMERICHOST) != 0)
        snprintf(ip, sizeof(ip), "?");
    snprintf(r->host, sizeof(r->host), "%s", c->name);
    snprintf(r->peer, sizeof(r->peer), "%s[%s]:%s", c->name, ip, port);
    fd = socket(c->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return relay_fail(r, "4.4.1", "connect to %s: %s", r->peer,
                          strerror(errno));
    /* The last write of a message (its tail and the final dot) is small:
     * Nagle would hold it until the next hop acknowledges the previous
     * one, which a delayed ACK puts off by up to 40 ms per message on a
     * reused connection. Every write here is a whole command batch or
     * buffer anyway. */
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int){1}, sizeof(int));
    if (connect(fd, (const struct sockaddr *)&c->ss, c->len) < 0) {
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

/* The TLS handshake on the connected socket. Under relay_tls = verify
 * the certificate must chain to the trust store and match the host name
 * (an address literal: the address). */
static int relay_handshake(struct relay *r)
{
    long long deadline = relay_now_ms() + r->timeout_ms;
    int verify = r->cfg->relay_tls == CFG_RELAY_TLS_VERIFY;
    char host[SG_MAX_DOMAIN + 1];
    struct in6_addr a6;
    struct in_addr a4;
    const char *what = NULL;
    int lit;

    /* A domain literal "[IPv6:...]" or "[192.0.2.1]" names an address. */
    snprintf(host, sizeof(host), "%s", r->host);
    if (host[0] == '[') {
        size_t n = strcspn(host, "]");
        memmove(host, host + 1, n);
        host[n > 0 ? n - 1 : 0] = '\0';
        if (strncasecmp(host, "IPv6:", 5) == 0)
            memmove(host, host + 5, strlen(host + 5) + 1);
    }
    lit = inet_pton(AF_INET, host, &a4) == 1 ||
          inet_pton(AF_INET6, host, &a6) == 1;
    r->ssl = SSL_new(r->conf->ctx);
    if (r->ssl == NULL || SSL_set_fd(r->ssl, r->fd) != 1)
        return relay_fail(r, "4.7.5", "%s: cannot set up TLS", r->peer);
    /* SNI only for names (RFC 6066 3); the name is also what a
     * certificate must match under relay_tls = verify. */
    if (!lit && SSL_set_tlsext_host_name(r->ssl, host) != 1)
        return relay_fail(r, "4.7.5", "%s: cannot set SNI", r->peer);
    if (verify) {
        int ok =
            lit ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(r->ssl), host)
                : SSL_set1_host(r->ssl, host);
        if (ok != 1)
            return relay_fail(r, "4.7.5", "%s: cannot set the name to verify",
                              r->peer);
    }
    for (;;) {
        int k = SSL_connect(r->ssl);
        if (k == 1)
            break;
        if (relay_ssl_retry(r, k, deadline, &what) < 0) {
            long vr = SSL_get_verify_result(r->ssl);
            if (verify && vr != X509_V_OK)
                what = X509_verify_cert_error_string(vr);
            return relay_fail(r, "4.7.5", "TLS handshake with %s failed: %s",
                              r->peer, what);
        }
    }
    r->verified = verify && SSL_get_verify_result(r->ssl) == X509_V_OK;
    snprintf(r->tlsdesc, sizeof(r->tlsdesc), "%s/%s", SSL_get_version(r->ssl),
             SSL_get_cipher_name(r->ssl));
    return 0;
}

/* STARTTLS as relay_tls asks, then EHLO again (RFC 3207 4.2). tls 0:
 * this try is the plaintext fallback of relay_tls = may. */
static int relay_starttls(struct relay *r, int tls)
{
    enum cfg_relay_tls pol = r->cfg->relay_tls;
    struct relay_reply rep;

    if (pol == CFG_RELAY_TLS_NONE || !tls)
        return RELAY_TRY_OK;
    if (!(r->ext & RELAY_EXT_STARTTLS)) {
        if (pol == CFG_RELAY_TLS_MAY)
            return RELAY_TRY_OK;
        return relay_fail(r, "4.7.4",
                          "TLS is required, but %s does not offer STARTTLS",
                          r->peer);
    }
    if (relay_cmd(r, "STARTTLS") < 0 ||
        relay_flush(r, "sending STARTTLS") < 0 ||
        relay_reply(r, &rep, 0, "receiving the STARTTLS reply") < 0)
        return RELAY_TRY_FAIL;
    if (rep.code != 220) {
        if (pol == CFG_RELAY_TLS_MAY)
            return RELAY_TRY_OK;
        return relay_fail(r, "4.7.4", "%s refused STARTTLS: %s", r->peer,
                          rep.text);
    }
    /* Bytes after the 220 were sent in the clear and would be taken as
     * coming through TLS: a known injection attack. */
    if (r->rpos != r->rlen)
        return relay_fail(r, "4.7.0", "%s sent data after the STARTTLS reply",
                          r->peer);
    if (relay_handshake(r) < 0) {
        /* Opportunistic TLS (RFC 7435) must not make mail undeliverable:
         * a server whose TLS is broken gets the message in clear. */
        return pol == CFG_RELAY_TLS_MAY ? RELAY_TRY_PLAIN : RELAY_TRY_FAIL;
    }
    return relay_ehlo(r) < 0 ? RELAY_TRY_FAIL : RELAY_TRY_OK;
}

/* Sends one AUTH line holding a secret; the buffers are wiped. */
static int relay_auth_line(struct relay *r, const char *prefix,
                           const unsigned char *data, size_t len,
                           struct relay_reply *rep)
{
    char b64[4 * ((2 * SG_MAX_PATH + RELAY_MAX_PASSWORD + 4) / 3) + 8];
    int rc;

    SG_ASSERT(len <= 2 * SG_MAX_PATH + RELAY_MAX_PASSWORD + 2);
    EVP_EncodeBlock((unsigned char *)b64, data, (int)len);
    rc = relay_cmd(r, "%s%s", prefix, b64);
    OPENSSL_cleanse(b64, sizeof(b64));
    if (rc == 0)
        rc = relay_flush(r, "sending AUTH");
    OPENSSL_cleanse(r->wbuf, sizeof(r->wbuf));
    if (rc < 0)
        return -1;
    return relay_reply(r, rep, 0, "receiving the AUTH reply");
}

/* AUTH PLAIN, else LOGIN (RFC 4954, RFC 4616), to the smarthost; only
 * inside TLS: a password never crosses the network in clear. */
static int relay_auth(struct relay *r)
{
    const struct relay_conf *c = r->conf;
    unsigned char buf[2 * SG_MAX_PATH + RELAY_MAX_PASSWORD + 2];
    size_t ul, pl;
    struct relay_reply rep;
    int rc;

    if (!r->smarthost || c->auth_user == NULL)
        return 0;
    if (r->ssl == NULL)
        return relay_fail(r, "4.7.0",
                          "%s: no TLS, so no AUTH (relay_auth_user is set)",
                          r->peer);
    ul = strlen(c->auth_user);
    pl = strlen(c->auth_pass);
    if (r->ext & RELAY_EXT_AUTH_PLAIN) {
        buf[0] = '\0';
        memcpy(buf + 1, c->auth_user, ul);
        buf[1 + ul] = '\0';
        memcpy(buf + 2 + ul, c->auth_pass, pl);
        rc = relay_auth_line(r, "AUTH PLAIN ", buf, ul + pl + 2, &rep);
    } else if (r->ext & RELAY_EXT_AUTH_LOGIN) {
        /* The user name and the password each answer a 334 prompt. */
        rc = relay_cmd(r, "AUTH LOGIN") < 0 ||
                     relay_flush(r, "sending AUTH") < 0 ||
                     relay_reply(r, &rep, 0, "receiving the AUTH reply") < 0
                 ? -1
                 : 0;
        memcpy(buf, c->auth_user, ul);
        if (rc == 0 && rep.code == 334)
            rc = relay_auth_line(r, "", buf, ul, &rep);
        memcpy(buf, c->auth_pass, pl);
        if (rc == 0 && rep.code == 334)
            rc = relay_auth_line(r, "", buf, pl, &rep);
    } else {
        return relay_fail(r, "4.7.0", "%s offers no AUTH PLAIN or LOGIN",
                          r->peer);
    }
    OPENSSL_cleanse(buf, sizeof(buf));
    if (rc < 0)
        return -1;
    if (rep.code != 235)
        return relay_fail(r, "4.7.0", "authentication to %s failed: %s",
                          r->peer, rep.text);
    return 0;
}

/* One try on one address: connect, greeting, EHLO, STARTTLS, AUTH. */
static int relay_try(struct relay *r, const struct relay_cand *c,
                     const char *port, int tls)
{
    struct relay_reply rep;
    int rc;

    if (relay_connect(r, c, port) < 0)
        return RELAY_TRY_FAIL;
    if (relay_reply(r, &rep, 0, "receiving the greeting") < 0)
        goto fail;
    /* RFC 5321 3.1, 5.1: a host that will not talk (4xx or 554) is
     * skipped for the next one. */
    if (rep.code != 220) {
        relay_fail(r, "4.0.0", "%s refused to talk: %s", r->peer, rep.text);
        goto fail;
    }
    if (relay_ehlo(r) < 0)
        goto fail;
    rc = relay_starttls(r, tls);
    if (rc != RELAY_TRY_OK) {
        relay_drop(r);
        return rc;
    }
    if (relay_auth(r) < 0)
        goto fail;
    return RELAY_TRY_OK;
fail:
    relay_drop(r);
    return RELAY_TRY_FAIL;
}

/* The addresses of the destination, in the order to try them. Returns
 * how many; 0 with the reason recorded when the smarthost has none. */
static size_t relay_cands(struct relay *r, const struct relay_dest *d,
                          struct relay_cand *out, char *port, size_t portlen)
{
    const struct relay_conf *c = r->conf;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res, *ai;
    size_t n = 0;
    int rc;

    if (d->mx != NULL) {
        snprintf(port, portlen, "%u", r->cfg->relay_port);
        for (size_t h = 0; h < d->mx->n; h++) {
            const struct mx_host *mh = &d->mx->host[h];
            for (size_t a = 0; a < mh->naddr && n < RELAY_MAX_ADDRS; a++) {
                out[n].name = mh->name;
                memcpy(&out[n].ss, &mh->addr[a], sizeof(out[n].ss));
                out[n].len = mh->addrlen[a];
                n++;
            }
        }
        return n;
    }
    snprintf(port, portlen, "%s", c->port);
    rc = getaddrinfo(c->host, c->port, &hints, &res);
    if (rc != 0) {
        snprintf(r->peer, sizeof(r->peer), "%s:%s", c->host, c->port);
        relay_fail(r, "4.4.3", "host %s lookup failed: %s", c->host,
                   gai_strerror(rc));
        return 0;
    }
    for (ai = res; ai != NULL && n < RELAY_MAX_ADDRS; ai = ai->ai_next) {
        if (ai->ai_addrlen > sizeof(out[n].ss))
            continue;
        out[n].name = c->host;
        memcpy(&out[n].ss, ai->ai_addr, ai->ai_addrlen);
        out[n].len = ai->ai_addrlen;
        n++;
    }
    freeaddrinfo(res);
    return n;
}

/* Opens a connection to d: each address in turn until one works. */
static int relay_open(struct relay *r, const struct relay_dest *d)
{
    struct relay_cand cands[RELAY_MAX_ADDRS];
    char port[8];
    size_t n;

    relay_drop(r);
    r->smarthost = d->mx == NULL;
    n = relay_cands(r, d, cands, port, sizeof(port));
    if (n == 0 && d->mx != NULL)
        return relay_fail(r, "4.4.4", "%s: no host to connect to", d->name);
    for (size_t i = 0; i < n; i++) {
        int rc = relay_try(r, &cands[i], port, 1);
        if (rc == RELAY_TRY_PLAIN) {
            log_warn("%s: relay=%s TLS failed (%s); trying without TLS as "
                     "relay_tls = may allows",
                     r->qid, r->peer, r->err);
            rc = relay_try(r, &cands[i], port, 0);
        }
        if (rc == RELAY_TRY_OK) {
            r->nmsgs = 0;
            r->last_ms = relay_now_ms();
            log_info("%s: relay=%s connected tls=%s verified=%s", r->qid,
                     r->peer, r->tlsdesc, r->verified ? "yes" : "no");
            return 0;
        }
    }
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

/* Appends n octets to the output buffer; a run too large for it goes
 * out at once, straight from the message. 0 or -1. */
static int relay_put(struct relay *r, const char *p, size_t n)
{
    if (r->wlen + n <= sizeof(r->wbuf)) {
        memcpy(r->wbuf + r->wlen, p, n);
        r->wlen += n;
        return 0;
    }
    if (relay_flush(r, "sending the message") < 0)
        return -1;
    if (n >= sizeof(r->wbuf) / 2)
        return relay_write(r, p, n, "sending the message");
    memcpy(r->wbuf, p, n);
    r->wlen = n;
    return 0;
}

/* The offset of the next line at or after from (from > 0) that starts
 * with ".", or len. memchr() for the dot: dots are rarer than line ends,
 * and a dot that does not start a line costs one look back. */
static size_t relay_next_dot_line(const char *p, size_t len, size_t from)
{
    while (from < len) {
        const char *dot = memchr(p + from, '.', len - from);

        if (dot == NULL)
            return len;
        from = (size_t)(dot - p);
        if (p[from - 1] == '\n')
            return from;
        from++;
    }
    return len;
}

/* Sends the message dot-stuffed (RFC 5321 4.5.2: a line that starts with
 * "." gets one more) and the final ".". The text between two such lines
 * is copied whole, not tested octet by octet. */
static int relay_body(struct relay *r, const char *p, size_t len)
{
    size_t pos = 0;

    while (pos < len) {
        size_t end;

        /* pos is at the start of a line. */
        if (p[pos] == '.' && relay_put(r, ".", 1) < 0)
            return -1;
        end = relay_next_dot_line(p, len, pos + 1);
        if (relay_put(r, p + pos, end - pos) < 0)
            return -1;
        pos = end;
    }
    if (len > 0 && p[len - 1] != '\n' && relay_put(r, "\r\n", 2) < 0)
        return -1;
    if (relay_put(r, ".\r\n", 3) < 0)
        return -1;
    return relay_flush(r, "sending the message");
}

static void relay_set(struct relay_rcpt *res, const struct relay_reply *rep)
{
    res->code = rep->code;
    res->remote = 1;
    relay_dsn(rep, res->dsn, sizeof(res->dsn));
    snprintf(res->text, sizeof(res->text), "%s", rep->text);
}

/* What the message needs from the next hop. */
struct relay_needs {
    int eight; /* 8-bit octets anywhere (RFC 6152) */
    int utf8;  /* a non-ASCII address (RFC 6531) */
    int utf8h; /* 8-bit octets in the header section */
};

/* 1 if any of the n octets at s has its high bit set. Eight at a time:
 * the whole message is looked at for every delivery. */
static int relay_nonascii(const char *s, size_t n)
{
    const uint64_t high = 0x8080808080808080ull;
    size_t i = 0;

    for (; i + 8 <= n; i += 8) {
        uint64_t w;

        memcpy(&w, s + i, 8);
        if (w & high)
            return 1;
    }
    for (; i < n; i++) {
        if ((unsigned char)s[i] >= 0x80)
            return 1;
    }
    return 0;
}

static void relay_needs(const struct relay_msg *m, struct relay_needs *nd)
{
    const char *end = memmem(m->data, m->len, "\r\n\r\n", 4);
    size_t hlen = end ? (size_t)(end - m->data) : m->len;

    nd->utf8h = relay_nonascii(m->data, hlen);
    nd->eight = nd->utf8h || relay_nonascii(m->data + hlen, m->len - hlen);
    nd->utf8 = relay_nonascii(m->sender, strlen(m->sender));
    for (size_t i = 0; i < m->nrcpt && !nd->utf8; i++)
        nd->utf8 = relay_nonascii(m->rcpt[i], strlen(m->rcpt[i]));
}

/* A local permanent failure for every recipient: the next hop cannot
 * take this message as it is. */
static void relay_refuse_all(const struct relay_msg *m, struct relay_rcpt *res,
                             const char *dsn, const char *text)
{
    for (size_t i = 0; i < m->nrcpt; i++) {
        res[i].code = 554;
        res[i].remote = 0;
        snprintf(res[i].dsn, sizeof(res[i].dsn), "%s", dsn);
        snprintf(res[i].text, sizeof(res[i].text), "%s", text);
    }
}

/* 0 when the next hop can take the message unchanged; else fills res
 * and returns -1. A signed message is never converted: 8BITMIME to 7bit
 * would re-encode the body and break every DKIM signature. */
static int relay_check_needs(struct relay *r, const struct relay_msg *m,
                             const struct relay_needs *nd,
                             struct relay_rcpt *res)
{
    char text[RELAY_MAX_TEXT];

    if (nd->utf8 && !(r->ext & RELAY_EXT_SMTPUTF8)) {
        snprintf(text, sizeof(text),
                 "%s does not support SMTPUTF8, needed for a non-ASCII "
                 "address",
                 r->peer);
        relay_refuse_all(m, res, "5.6.7", text);
        return -1;
    }
    /* RFC 6531 3.3: a server with SMTPUTF8 takes 8-bit data too. */
    if (nd->eight && !(r->ext & (RELAY_EXT_8BITMIME | RELAY_EXT_SMTPUTF8))) {
        snprintf(text, sizeof(text),
                 "%s does not support 8BITMIME, and the signed 8-bit "
                 "message cannot be converted",
                 r->peer);
        relay_refuse_all(m, res, "5.6.3", text);
        return -1;
    }
    return 0;
}

/* One transaction state, shared by the steps of relay_transact(). */
struct relay_tx {
    const struct relay_msg *m;
    struct relay_needs needs;
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
    int eight = tx->needs.eight && (r->ext & RELAY_EXT_8BITMIME);
    int utf8 =
        (tx->needs.utf8 || tx->needs.utf8h) && (r->ext & RELAY_EXT_SMTPUTF8);

    if (i == 0) {
        if (r->ext & RELAY_EXT_SIZE)
            snprintf(size, sizeof(size), " SIZE=%zu", m->len);
        return relay_cmd(r, "MAIL FROM:<%s>%s%s%s", m->sender, size,
                         eight ? " BODY=8BITMIME" : "",
                         utf8 ? " SMTPUTF8" : "");
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

    if (relay_check_needs(r, tx->m, &tx->needs, tx->res) < 0)
        return 0;
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
        res[i].remote = 0;
        snprintf(res[i].dsn, sizeof(res[i].dsn), "%s", r->errdsn);
        snprintf(res[i].text, sizeof(res[i].text), "%s", r->err);
    }
}

size_t relay_send(struct relay *r, const struct relay_dest *d,
                  const struct relay_msg *m, struct relay_rcpt *res)
{
    size_t ok = 0;

    r->qid = m->qid;
    memset(res, 0, m->nrcpt * sizeof(*res));
    for (int tries = 0; tries < 2; tries++) {
        struct relay_tx tx = {.m = m, .res = res};
        int reused = r->fd >= 0;

        relay_needs(m, &tx.needs);
        if (reused && (!relay_reusable(r) || !relay_alive(r))) {
            if (relay_alive(r))
                relay_close(r);
            else
                relay_drop(r);
            reused = 0;
        }
        if (r->fd < 0 && relay_open(r, d) < 0) {
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

/* Reads the first line of the AUTH password file. 0 or -1 (logged). */
static int relay_read_password(struct relay_conf *c, const char *path)
{
    char buf[RELAY_MAX_PASSWORD + 3];
    struct stat st;
    ssize_t n;
    size_t len;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

    if (fd < 0) {
        log_error_errno(errno, "relay_auth_password_file %s", path);
        return -1;
    }
    if (fstat(fd, &st) == 0 && (st.st_mode & 0007) != 0)
        log_warn("relay_auth_password_file %s is readable by everyone", path);
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n < 0) {
        log_error_errno(errno, "relay_auth_password_file %s", path);
        return -1;
    }
    buf[n] = '\0';
    len = strcspn(buf, "\r\n");
    if (len == 0 || len > RELAY_MAX_PASSWORD ||
        memchr(buf, '\0', len) != NULL) {
        OPENSSL_cleanse(buf, sizeof(buf));
        log_error("relay_auth_password_file %s: expected one line of 1 to "
                  "%d octets",
                  path, RELAY_MAX_PASSWORD);
        return -1;
    }
    buf[len] = '\0';
    c->auth_pass = xstrdup(buf);
    OPENSSL_cleanse(buf, sizeof(buf));
    return 0;
}

struct relay_conf *relay_conf_new(const struct cfg *cfg)
{
    struct relay_conf *c = xcalloc(1, sizeof(*c));

    c->cfg = cfg;
    if (cfg->relay_host[0] != '\0' &&
        relay_parse_host(cfg->relay_host, c->host, sizeof(c->host), c->port,
                         sizeof(c->port)) < 0) {
        log_error("relay_host %s: expected [host]:port or host:port",
                  cfg->relay_host);
        goto fail0;
    }
    if (cfg->relay_auth_user[0] != '\0') {
        if (relay_read_password(c, cfg->relay_auth_password_file) < 0)
            goto fail0;
        c->auth_user = xstrdup(cfg->relay_auth_user);
    }
    if (cfg->relay_tls == CFG_RELAY_TLS_NONE)
        return c;
    c->ctx = SSL_CTX_new(TLS_client_method());
    if (c->ctx == NULL ||
        SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION) != 1)
        goto fail;
    SSL_CTX_set_mode(c->ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (cfg->relay_tls == CFG_RELAY_TLS_VERIFY) {
        int ok = cfg->relay_ca_file[0] != '\0'
                     ? SSL_CTX_load_verify_locations(c->ctx, cfg->relay_ca_file,
                                                     NULL)
                     : SSL_CTX_set_default_verify_paths(c->ctx);
        if (ok != 1)
            goto fail;
        SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
    } else {
        /* encrypt and may: encryption against passive listeners only;
         * RFC 7435 opportunistic security. */
        SSL_CTX_set_verify(c->ctx, SSL_VERIFY_NONE, NULL);
    }
    return c;
fail:
    log_error("relay: TLS set-up failed%s%s: %s",
              cfg->relay_ca_file[0] ? " with relay_ca_file " : "",
              cfg->relay_ca_file,
              ERR_reason_error_string(ERR_peek_last_error())
                  ? ERR_reason_error_string(ERR_peek_last_error())
                  : "unknown error");
    ERR_clear_error();
fail0:
    relay_conf_free(&c);
    return NULL;
}

void relay_conf_free(struct relay_conf **cp)
{
    struct relay_conf *c = *cp;

    if (c == NULL)
        return;
    if (c->auth_pass != NULL) {
        OPENSSL_cleanse(c->auth_pass, strlen(c->auth_pass));
        free(c->auth_pass);
    }
    free(c->auth_user);
    SSL_CTX_free(c->ctx);
    free(c);
    *cp = NULL;
}

struct relay *relay_new(const struct relay_conf *conf)
{
    struct relay *r = xcalloc(1, sizeof(*r));

    r->conf = conf;
    r->cfg = conf->cfg;
    r->timeout_ms = r->cfg->relay_timeout_ms;
    r->fd = -1;
    r->qid = "-";
    snprintf(r->tlsdesc, sizeof(r->tlsdesc), "none");
    if (conf->host[0] != '\0')
        snprintf(r->peer, sizeof(r->peer), "%s:%s", conf->host, conf->port);
    else
        snprintf(r->peer, sizeof(r->peer), "-");
    return r;
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
    free(r);
    *rp = NULL;
}

const char *relay_peer(const struct relay *r)
{
    return r->peer;
}

const char *relay_mta(const struct relay *r)
{
    return r->host;
}

const char *relay_tls(const struct relay *r)
{
    return r->tlsdesc;
}

int relay_verified(const struct relay *r)
{
    return r->verified;
}

int relay_connected(const struct relay *r)
{
    return r->fd >= 0;
}

int relay_idle_ms(const struct relay *r)
{
    long long left;

    if (r->fd < 0)
        return -1;
    left = r->last_ms + (long long)RELAY_IDLE_S * 1000 - relay_now_ms();
    return left > 0 ? (int)left : 0;
}

int relay_reusable(const struct relay *r)
{
    return r->fd >= 0 && r->nmsgs < RELAY_MAX_MSGS && relay_idle_ms(r) > 0;
}
