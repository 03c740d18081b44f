/* outmail: messages of the admin tool, signed and queued. See outmail.h. */
#include "outmail.h"

#include <errno.h>
#include <pwd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../common/addr.h"
#include "../common/log.h"
#include "../common/signer_proto.h"
#include "../common/signer_sync.h"
#include "../common/xalloc.h"

/* RFC 5322 2.1.1: at most 998 octets per line before the CRLF. */
#define OUTMAIL_MAX_LINE 998
/* The header section we write: fixed text, two addresses, a subject, a
 * date, a message id and the content fields. */
#define OUTMAIL_MAX_HEADER 4096

/* A growing output buffer. */
struct outmail_buf {
    char *p;
    size_t len, cap;
};

static void outmail_put(struct outmail_buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->p = xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

/* Appends text with every line end made CRLF. -1 when a line is longer
 * than RFC 5322 allows (it would have to be folded by a later hop and
 * break the signature). */
static int outmail_put_lines(struct outmail_buf *b, const char *s, size_t n)
{
    size_t i = 0;

    while (i < n) {
        const char *nl = memchr(s + i, '\n', n - i);
        size_t end = nl != NULL ? (size_t)(nl - s) : n, ll = end - i;

        if (ll > 0 && s[end - 1] == '\r')
            ll--;
        if (ll > OUTMAIL_MAX_LINE)
            return -1;
        outmail_put(b, s + i, ll);
        outmail_put(b, "\r\n", 2);
        i = end + 1;
    }
    return 0;
}

/* 1 if s may stand in a header field as it is: printable ASCII. */
static int outmail_hdr_ok(const char *s, size_t max)
{
    size_t n = 0;

    for (; s[n] != '\0'; n++)
        if (n >= max || (unsigned char)s[n] < 0x20 ||
            (unsigned char)s[n] > 0x7e)
            return 0;
    return 1;
}

/* Fills m's addresses and queue id and writes the header section (up to
 * and without the content fields) into b. 0 or -1. */
static int outmail_head(struct outmail *m, struct outmail_buf *b,
                        const char *hostname, const char *from, const char *to,
                        const char *subject, const char *auto_submitted)
{
    char head[OUTMAIL_MAX_HEADER], date[64];
    time_t now = time(NULL);
    struct tm tm;
    int n;

    memset(m, 0, sizeof *m);
    if (!addr_is_valid(from) || !addr_is_valid(to) ||
        strlen(from) > SG_MAX_PATH || strlen(to) > SG_MAX_PATH ||
        !outmail_hdr_ok(subject, 200) || !outmail_hdr_ok(hostname, 253))
        return -1;
    memcpy(m->from, from, strlen(from) + 1);
    memcpy(m->to, to, strlen(to) + 1);
    queue_id_new(m->qid);
    gmtime_r(&now, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm);
    n = snprintf(head, sizeof head,
                 "From: <%s>\r\n"
                 "To: <%s>\r\n"
                 "Subject: %s\r\n"
                 "Date: %s\r\n"
                 "Message-ID: <%s.reset@%s>\r\n"
                 "Auto-Submitted: %s\r\n"
                 "MIME-Version: 1.0\r\n",
                 from, to, subject, date, m->qid, hostname, auto_submitted);
    if (n < 0 || (size_t)n >= sizeof head)
        return -1;
    outmail_put(b, head, (size_t)n);
    return 0;
}

int outmail_plain(struct outmail *m, const char *hostname, const char *from,
                  const char *to, const char *subject,
                  const char *auto_submitted, const char *text)
{
    static const char ct[] = "Content-Type: text/plain; charset=utf-8\r\n"
                             "Content-Transfer-Encoding: 8bit\r\n\r\n";
    struct outmail_buf b = {0};

    if (outmail_head(m, &b, hostname, from, to, subject, auto_submitted) != 0)
        goto fail;
    outmail_put(&b, ct, sizeof ct - 1);
    if (outmail_put_lines(&b, text, strlen(text)) != 0)
        goto fail;
    m->msg = b.p;
    m->msglen = b.len;
    return 0;
fail:
    free(b.p);
    return -1;
}

int outmail_encrypted(struct outmail *m, const char *hostname, const char *from,
                      const char *to, const char *subject,
                      const char *auto_submitted, const char *armored,
                      size_t alen)
{
    struct outmail_buf b = {0};
    char part[512];
    int n;

    if (outmail_head(m, &b, hostname, from, to, subject, auto_submitted) != 0)
        goto fail;
    /* RFC 3156 4: multipart/encrypted with the version part and the
     * ciphertext part. Armored text has no line starting with "--", so
     * the queue id makes a boundary that cannot occur in it. */
    n = snprintf(part, sizeof part,
                 "Content-Type: multipart/encrypted;\r\n"
                 "\tprotocol=\"application/pgp-encrypted\";\r\n"
                 "\tboundary=\"subgate-%s\"\r\n"
                 "\r\n"
                 "This is an OpenPGP/MIME encrypted message (RFC 4880 and "
                 "3156).\r\n"
                 "--subgate-%s\r\n"
                 "Content-Type: application/pgp-encrypted\r\n"
                 "Content-Description: PGP/MIME version identification\r\n"
                 "\r\n"
                 "Version: 1\r\n"
                 "\r\n"
                 "--subgate-%s\r\n"
                 "Content-Type: application/octet-stream; "
                 "name=\"encrypted.asc\"\r\n"
                 "Content-Description: OpenPGP encrypted message\r\n"
                 "Content-Disposition: inline; filename=\"encrypted.asc\"\r\n"
                 "\r\n",
                 m->qid, m->qid, m->qid);
    if (n < 0 || (size_t)n >= sizeof part)
        goto fail;
    outmail_put(&b, part, (size_t)n);
    if (outmail_put_lines(&b, armored, alen) != 0)
        goto fail;
    n = snprintf(part, sizeof part, "\r\n--subgate-%s--\r\n", m->qid);
    outmail_put(&b, part, (size_t)n);
    m->msg = b.p;
    m->msglen = b.len;
    return 0;
fail:
    free(b.p);
    return -1;
}

int outmail_sign(struct outmail *m, const struct cfg *cfg, char *err,
                 size_t errlen)
{
    char sock[4096], domain[SG_MAX_DOMAIN + 1];
    const char *d = addr_domain(m->from);
    int n;

    if (d == NULL || strlen(d) > SG_MAX_DOMAIN) {
        snprintf(err, errlen, "no domain in %s", m->from);
        return -1;
    }
    addr_domain_lower(d, domain, sizeof domain);
    n = snprintf(sock, sizeof sock, "%s/%s", cfg->run_dir, SIGNER_SOCKET_NAME);
    if (n < 0 || (size_t)n >= sizeof sock) {
        snprintf(err, errlen, "run_dir too long");
        return -1;
    }
    return signer_sync_sign(sock, m->qid, domain, m->msg, m->msglen,
                            cfg->signer_timeout_ms, &m->sig, &m->siglen, err,
                            errlen);
}

static void outmail_unbecome(gid_t gid)
{
    if (gid == (gid_t)-1)
        return;
    /* Back to root: the real user id is still 0, so this cannot fail. */
    if (seteuid(0) != 0 || setegid(gid) != 0)
        log_panic("cannot switch back to root: %s", strerror(errno));
}

/* As root with `user` set, the queue file is written as that user, so
 * that the queue runner (which runs as it) can read and remove it. 0 and
 * *gid_r (the group to go back to; -1: nothing switched), or -errno. */
static int outmail_become(const struct cfg *cfg, gid_t *gid_r)
{
    struct passwd *pw;
    int e;

    *gid_r = (gid_t)-1;
    if (geteuid() != 0 || cfg->user[0] == '\0')
        return 0;
    pw = getpwnam(cfg->user);
    if (pw == NULL)
        return -ENOENT;
    *gid_r = getegid();
    if (setegid(pw->pw_gid) != 0 || seteuid(pw->pw_uid) != 0) {
        e = errno;
        outmail_unbecome(*gid_r);
        *gid_r = (gid_t)-1;
        return -e;
    }
    return 0;
}

int outmail_commit(struct outmail *m, const struct cfg *cfg,
                   const char *session, const char *member)
{
    gid_t gid;
    struct queue_env env;
    struct iovec iov[3];
    char *rcpt[1] = {m->to};
    int n = 0, rc;

    memset(&env, 0, sizeof env);
    memcpy(env.id, m->qid, sizeof env.id);
    env.time = (long long)time(NULL);
    snprintf(env.session, sizeof env.session, "%s", session);
    snprintf(env.member, sizeof env.member, "%s", member);
    snprintf(env.sender, sizeof env.sender, "%s", m->from);
    env.nrcpt = 1;
    env.rcpt = rcpt;
    iov[n].iov_base = m->sig;
    iov[n++].iov_len = m->siglen;
    /* The signature fields end in CRLF (signer_proto.h); should one not,
     * the message must still start on a line of its own. */
    if (m->siglen > 0 && m->sig[m->siglen - 1] != '\n') {
        iov[n].iov_base = (void *)(uintptr_t) "\r\n";
        iov[n++].iov_len = 2;
    }
    iov[n].iov_base = m->msg;
    iov[n++].iov_len = m->msglen;
    rc = outmail_become(cfg, &gid);
    if (rc != 0)
        return rc;
    rc = queue_commit(cfg->queue_dir, &env, iov, n);
    outmail_unbecome(gid);
    if (rc == 0)
        m->committed = 1;
    return rc;
}

int outmail_withdraw(struct outmail *m, const struct cfg *cfg)
{
    int rc;

    if (!m->committed)
        return 0;
    rc = queue_remove(cfg->queue_dir, m->qid);
    if (rc == 0 || rc == -ENOENT)
        m->committed = 0;
    return rc == -ENOENT ? 0 : rc;
}

void outmail_clear(struct outmail *m)
{
    if (m->msg != NULL)
        explicit_bzero(m->msg, m->msglen);
    free(m->msg);
    free(m->sig);
    m->msg = NULL;
    m->sig = NULL;
    m->msglen = m->siglen = 0;
}
