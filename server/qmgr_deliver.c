/* qmgr_deliver: see qmgr_deliver.h. The attempt keeps one record per
 * recipient (its outcome and the connection it went over) so that the
 * log lines, the DSN and the rewritten envelope all come from the same
 * facts. */
#include "qmgr_deliver.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/uio.h>
#include <time.h>

#include "../common/limits.h"
#include "../common/log.h"
#include "../common/signer_proto.h"
#include "../common/signer_sync.h"
#include "../common/xalloc.h"
#include "bounce.h"
#include "metrics.h"
#include "queue.h"
#include "relay.h"

/* The text the log and the DSN give for a destination at its limit when
 * the message expires before it got a connection. */
#define QMGR_BUSY_TEXT "destination busy: relay_concurrency reached"

/* One destination of the message and how its transaction went. */
struct qd_group {
    char key[SG_MAX_DOMAIN + 1]; /* lower-cased domain, or relay_host */
    size_t first, n;             /* its recipients: order[first..+n) */
    int skipped;                 /* no connection: not attempted */
    char peer[SG_MAX_DOMAIN + 64];
    char mta[SG_MAX_DOMAIN + 1];
    char tls[96];
    int verified;
};

/* The attempt in progress. */
struct qd_msg {
    const struct qmgr_deliver_ctx *c;
    struct queue_env env;
    const char *body; /* borrowed from buf, or signed */
    size_t bodylen;
    char *signed_body; /* owned: signature + body after `sign` */
    struct relay_rcpt *res;
    size_t *order; /* recipient indices sorted by destination */
    size_t *grp;   /* recipient index -> group */
    struct qd_group *groups;
    size_t ngroups;
    int attempted; /* some transaction was tried */
    long long now;
};

long long qmgr_deliver_backoff(const struct cfg *cfg, unsigned attempts)
{
    unsigned shift = attempts > 0 ? attempts - 1 : 0;
    unsigned long long d;

    if (shift > QMGR_MAX_SHIFT)
        shift = QMGR_MAX_SHIFT;
    d = (unsigned long long)cfg->retry_min_s << shift;
    if (d > cfg->retry_max_s)
        d = cfg->retry_max_s;
    return d > 0 ? (long long)d : 1;
}

/* The destination key of a recipient: relay_host, or its domain in lower
 * case ("" when it has none). */
static void qd_key(const struct cfg *cfg, const char *rcpt, char *out,
                   size_t len)
{
    const char *at = strrchr(rcpt, '@');
    const char *dom = at != NULL ? at + 1 : "";
    size_t i = 0;

    if (cfg->relay_host[0] != '\0') {
        snprintf(out, len, "%s", cfg->relay_host);
        return;
    }
    for (; dom[i] != '\0' && i + 1 < len; i++)
        out[i] =
            (dom[i] >= 'A' && dom[i] <= 'Z') ? (char)(dom[i] + 32) : dom[i];
    out[i] = '\0';
}

/* qsort context: recipient keys. qsort_r keeps it off globals. */
static int qd_cmp(const void *a, const void *b, void *arg)
{
    char *const *keys = arg;
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    int c = strcmp(keys[x], keys[y]);

    return c != 0 ? c : (x < y ? -1 : x > y);
}

/* Groups the recipients by destination; keeps their order within each. */
static void qd_group(struct qd_msg *m)
{
    size_t n = m->env.nrcpt;
    char **keys = xcalloc(n, sizeof(*keys));

    m->order = xcalloc(n, sizeof(*m->order));
    m->grp = xcalloc(n, sizeof(*m->grp));
    m->groups = xcalloc(n, sizeof(*m->groups));
    for (size_t i = 0; i < n; i++) {
        keys[i] = xmalloc(SG_MAX_DOMAIN + 1);
        qd_key(m->c->cfg, m->env.rcpt[i], keys[i], SG_MAX_DOMAIN + 1);
        m->order[i] = i;
    }
    qsort_r(m->order, n, sizeof(*m->order), qd_cmp, keys);
    for (size_t k = 0; k < n; k++) {
        size_t i = m->order[k];
        struct qd_group *g = &m->groups[m->ngroups > 0 ? m->ngroups - 1 : 0];
        if (m->ngroups == 0 || strcmp(g->key, keys[i]) != 0) {
            g = &m->groups[m->ngroups++];
            memcpy(g->key, keys[i], strlen(keys[i]) + 1);
            g->first = k;
            snprintf(g->peer, sizeof(g->peer), "none");
            snprintf(g->tls, sizeof(g->tls), "none");
        }
        g->n++;
        m->grp[i] = (size_t)(g - m->groups);
    }
    for (size_t i = 0; i < n; i++)
        free(keys[i]);
    free(keys);
}

/* Every recipient of g fails the same way, without a transaction. */
static void qd_group_fail(struct qd_msg *m, struct qd_group *g, int code,
                          const char *dsn, const char *text)
{
    for (size_t k = g->first; k < g->first + g->n; k++) {
        struct relay_rcpt *r = &m->res[m->order[k]];
        r->code = code;
        r->remote = 0;
        snprintf(r->dsn, sizeof(r->dsn), "%s", dsn);
        snprintf(r->text, sizeof(r->text), "%s", text);
    }
}

/* One transaction to one destination. */
static void qd_group_send(struct qd_msg *m, struct qd_group *g)
{
    const struct cfg *cfg = m->c->cfg;
    struct relay_dest d = {.name = g->key, .mx = NULL};
    struct relay_rcpt *res;
    struct mx_list *mx = NULL;
    struct relay *r = NULL;
    char **rcpts;
    char dsn[16], why[RELAY_MAX_TEXT];

    if (g->key[0] == '\0') {
        qd_group_fail(m, g, 550, "5.1.3", "no domain in the address");
        return;
    }
    if (cfg->relay_host[0] == '\0') {
        int rc;
        mx = xmalloc(sizeof(*mx));
        rc = mx_lookup(m->c->mx, g->key, cfg->relay_port, mx, dsn, sizeof(dsn),
                       why, sizeof(why));
        if (rc != 1) {
            qd_group_fail(m, g, rc == 0 ? 550 : 0, dsn, why);
            m->attempted = 1;
            free(mx);
            return;
        }
        d.mx = mx;
    }
    if (relay_pool_get(m->c->pool, g->key, &r) == 0) {
        g->skipped = 1;
        free(mx);
        return;
    }
    m->attempted = 1;
    rcpts = xcalloc(g->n, sizeof(*rcpts));
    res = xcalloc(g->n, sizeof(*res));
    for (size_t k = 0; k < g->n; k++)
        rcpts[k] = m->env.rcpt[m->order[g->first + k]];
    {
        struct relay_msg rm = {
            .qid = m->env.id,
            .sender = m->env.sender,
            .rcpt = rcpts,
            .nrcpt = g->n,
            .data = m->body,
            .len = m->bodylen,
        };
        relay_send(r, &d, &rm, res);
    }
    for (size_t k = 0; k < g->n; k++)
        m->res[m->order[g->first + k]] = res[k];
    snprintf(g->peer, sizeof(g->peer), "%s", relay_peer(r));
    snprintf(g->mta, sizeof(g->mta), "%s", relay_mta(r));
    snprintf(g->tls, sizeof(g->tls), "%s", relay_tls(r));
    g->verified = relay_verified(r);
    relay_pool_put(m->c->pool, g->key, &r);
    free(res);
    free(rcpts);
    free(mx);
}

/* `sign DOMAIN`: the signature is made now. 0, or -1 with every
 * recipient deferred. */
static int qd_sign(struct qd_msg *m)
{
    const struct cfg *cfg = m->c->cfg;
    char sock[4096], err[256];
    char *sig = NULL;
    size_t siglen = 0, extra;

    snprintf(sock, sizeof(sock), "%s/%s", cfg->run_dir, SIGNER_SOCKET_NAME);
    if (signer_sync_sign(sock, m->env.id, m->env.sign, m->body, m->bodylen,
                         cfg->signer_timeout_ms, &sig, &siglen, err,
                         sizeof(err)) < 0) {
        char text[RELAY_MAX_TEXT];
        log_error("%s: sign failed reason=\"%s\"; the message waits", m->env.id,
                  err);
        snprintf(text, sizeof(text), "not signed yet: %s", err);
        for (size_t i = 0; i < m->env.nrcpt; i++) {
            m->res[i].code = 0;
            snprintf(m->res[i].dsn, sizeof(m->res[i].dsn), "4.7.0");
            snprintf(m->res[i].text, sizeof(m->res[i].text), "%s", text);
        }
        m->attempted = 1;
        return -1;
    }
    /* Signature fields end in CRLF (signer_proto.h); make sure the
     * message still starts on a line of its own. */
    extra = siglen > 0 && sig[siglen - 1] != '\n' ? 2 : 0;
    m->signed_body = xmalloc(siglen + extra + m->bodylen + 1);
    memcpy(m->signed_body, sig, siglen);
    memcpy(m->signed_body + siglen, "\r\n", extra);
    memcpy(m->signed_body + siglen + extra, m->body, m->bodylen);
    m->body = m->signed_body;
    m->bodylen += siglen + extra;
    m->env.sign[0] = '\0';
    free(sig);
    return 0;
}

/* Signs and queues one notification (bounce.h) to the sender. When the
 * signer cannot sign now, the notification is queued with `sign` set, to
 * be signed before delivery. 0, or -1 when nothing could be queued. */
static int qd_notify(struct qd_msg *m, enum bounce_action act,
                     const struct bounce_rcpt *br, size_t n)
{
    const struct cfg *cfg = m->c->cfg;
    struct bounce_info b = {
        .action = act,
        .qid = m->env.id,
        .hostname = cfg->hostname,
        .sender = m->env.sender,
        .arrival = m->env.time,
        .now = m->now,
        .until = m->env.time + (long long)cfg->max_queue_lifetime_s,
        .msg = m->body,
        .msglen = m->bodylen,
        .rcpt = br,
        .nrcpt = n,
    };
    struct queue_env de;
    struct iovec iov[2];
    char dsn_qid[QUEUE_ID_LEN + 1], sock[4096], err[256];
    char *msg, *sig = NULL, *rcpt[1];
    size_t len, siglen = 0;
    const char *domain = bounce_domain(m->env.sender);
    int rc, nv = 0;

    queue_id_new(dsn_qid);
    b.dsn_qid = dsn_qid;
    msg = bounce_build(&b, &len);
    if (msg == NULL || domain == NULL || strlen(domain) > SG_MAX_DOMAIN) {
        free(msg);
        log_warn("%s: sender <%s> has no domain; no notification", m->env.id,
                 m->env.sender);
        return 0;
    }
    memset(&de, 0, sizeof(de));
    memcpy(de.id, dsn_qid, sizeof(de.id));
    de.time = m->now;
    snprintf(de.member, sizeof(de.member), "%s", m->env.member);
    rcpt[0] = m->env.sender;
    de.rcpt = rcpt;
    de.nrcpt = 1;
    snprintf(sock, sizeof(sock), "%s/%s", cfg->run_dir, SIGNER_SOCKET_NAME);
    if (signer_sync_sign(sock, dsn_qid, domain, msg, len,
                         cfg->signer_timeout_ms, &sig, &siglen, err,
                         sizeof(err)) == 0) {
        iov[nv].iov_base = sig;
        iov[nv++].iov_len = siglen;
    } else {
        log_warn("%s: sign failed reason=\"%s\"; signing before delivery",
                 dsn_qid, err);
        snprintf(de.sign, sizeof(de.sign), "%s", domain);
    }
    iov[nv].iov_base = msg;
    iov[nv++].iov_len = len;
    rc = queue_commit(cfg->queue_dir, &de, iov, nv);
    free(sig);
    free(msg);
    if (rc < 0) {
        log_error_errno(rc, "%s: cannot queue the %s notification", m->env.id,
                        act == BOUNCE_FAILED ? "non-delivery" : "delay");
        return -1;
    }
    log_info("%s: sender %s notification: %s", m->env.id,
             act == BOUNCE_FAILED ? "non-delivery" : "delay", dsn_qid);
    log_info("%s: queued from=<> to=<%s> size=%zu nrcpt=1 notification for %s",
             dsn_qid, m->env.sender, len + siglen, m->env.id);
    return 0;
}

/* The DSN record of recipient i. */
static void qd_bounce_rcpt(const struct qd_msg *m, size_t i,
                           struct bounce_rcpt *br)
{
    const struct relay_rcpt *r = &m->res[i];
    const struct qd_group *g = &m->groups[m->grp[i]];

    br->addr = m->env.rcpt[i];
    br->status = r->dsn[0] ? r->dsn : "4.0.0";
    br->remote_mta = r->remote && g->mta[0] ? g->mta : NULL;
    br->diag = r->text;
    br->diag_smtp = r->remote;
}

enum qd_status {
    QD_KEEP, /* not attempted: stays, no log line */
    QD_SENT,
    QD_BOUNCED,
    QD_DEFERRED,
    QD_EXPIRED,
};

static const char *const qd_status_names[] = {"", "sent", "bounced", "deferred",
                                              "expired"};

/* The outcome of recipient i. */
static enum qd_status qd_status(struct qd_msg *m, size_t i, int expired)
{
    struct relay_rcpt *r = &m->res[i];

    if (m->groups[m->grp[i]].skipped) {
        if (!expired)
            return QD_KEEP;
        r->code = 0;
        snprintf(r->dsn, sizeof(r->dsn), "4.4.5");
        snprintf(r->text, sizeof(r->text), "%s", QMGR_BUSY_TEXT);
    }
    if (r->code / 100 == 2)
        return QD_SENT;
    if (r->code / 100 == 5)
        return QD_BOUNCED;
    return expired ? QD_EXPIRED : QD_DEFERRED;
}

static void qd_log(const struct qd_msg *m, size_t i, enum qd_status st,
                   unsigned attempts)
{
    const struct relay_rcpt *r = &m->res[i];
    const struct qd_group *g = &m->groups[m->grp[i]];
    char text[4 * SG_LOG_MAX_PEER_TEXT + 4];

    log_escape(r->text, strlen(r->text), text, sizeof(text));
    log_info("%s: to=<%s> relay=%s tls=%s verified=%s delay=%llds "
             "attempts=%u dsn=%s status=%s (%s)",
             m->env.id, m->env.rcpt[i], g->peer, g->tls,
             g->verified ? "yes" : "no", m->now - m->env.time, attempts,
             r->dsn[0] ? r->dsn : "4.0.0", qd_status_names[st], text);
    metrics_delivery(qd_status_names[st]);
}

/* The hash of the one destination of all recipients, or 0. */
static uint64_t qd_dest(const struct cfg *cfg, const struct queue_env *env)
{
    char first[SG_MAX_DOMAIN + 1], key[SG_MAX_DOMAIN + 1];

    if (env->nrcpt == 0)
        return 0;
    qd_key(cfg, env->rcpt[0], first, sizeof(first));
    for (size_t i = 1; i < env->nrcpt; i++) {
        qd_key(cfg, env->rcpt[i], key, sizeof(key));
        if (strcmp(key, first) != 0)
            return 0;
    }
    return first[0] ? relay_pool_hash(first) : 0;
}

/* Writes the outcome back: removes the file, rewrites it with the
 * recipients in keep, or puts it back unchanged. Fills out. */
static void qd_write(struct qd_msg *m, char **keep, size_t nkeep, int slotwait,
                     struct qmgr_deliver_result *out)
{
    const struct cfg *cfg = m->c->cfg;
    char **all = m->env.rcpt;
    size_t nall = m->env.nrcpt;
    int rc;

    out->slotwait = slotwait;
    out->dest = 0;
    if (nkeep == 0) {
        rc = m->c->group != NULL ? queue_group_done(m->c->group, m->env.id)
                                 : queue_done(cfg->queue_dir, m->env.id);
        if (rc < 0 && rc != -ENOENT)
            log_error_errno(rc, "%s: cannot remove the queue file", m->env.id);
        else
            log_info("%s: removed", m->env.id);
        out->next = -1;
        return;
    }
    if (!m->attempted && m->signed_body == NULL) {
        rc = queue_unclaim(cfg->queue_dir, m->env.id);
        out->next = rc == -ENOENT ? -1 : 0;
        out->dest = qd_dest(cfg, &m->env);
        if (rc < 0 && rc != -ENOENT)
            log_error_errno(rc, "%s: cannot put the queue file back",
                            m->env.id);
        return;
    }
    m->env.rcpt = keep;
    m->env.nrcpt = nkeep;
    if (m->attempted) {
        m->env.attempts++;
        m->env.next = m->now + qmgr_deliver_backoff(cfg, m->env.attempts);
    }
    if (slotwait)
        m->env.next = 0;
    rc = queue_settle(cfg->queue_dir, &m->env, m->body, m->bodylen);
    out->next = m->env.next;
    out->dest = qd_dest(cfg, &m->env);
    if (rc == -ENOENT) {
        log_info("%s: deleted while being delivered", m->env.id);
        out->next = -1;
    } else if (rc < 0) {
        /* The old file goes back as it was: the recipients that accepted
         * it may receive it twice. */
        log_error_errno(rc, "%s: cannot update the queue file", m->env.id);
        if (queue_unclaim(cfg->queue_dir, m->env.id) < 0)
            log_error("%s: left in busy/ until the runner restarts", m->env.id);
        out->next = m->now + QMGR_RETRY_IO_S;
    } else if (m->attempted) {
        log_info("%s: deferred nrcpt=%zu attempts=%u next=%lld", m->env.id,
                 nkeep, m->env.attempts, m->env.next);
    }
    m->env.rcpt = all;
    m->env.nrcpt = nall;
}

/* Logs each recipient, sends the notifications, and writes the file. */
static void qd_settle(struct qd_msg *m, struct qmgr_deliver_result *out)
{
    const struct cfg *cfg = m->c->cfg;
    size_t n = m->env.nrcpt, nkeep = 0, nfail = 0, ndef = 0;
    int expired = m->now - m->env.time >= (long long)cfg->max_queue_lifetime_s;
    char **keep = xcalloc(n, sizeof(*keep));
    struct bounce_rcpt *fail = xcalloc(n, sizeof(*fail));
    struct bounce_rcpt *def = xcalloc(n, sizeof(*def));
    size_t *failidx = xcalloc(n, sizeof(*failidx));
    unsigned attempts = m->env.attempts + (m->attempted ? 1 : 0);
    int slotwait = 0;

    for (size_t i = 0; i < n; i++) {
        enum qd_status st = qd_status(m, i, expired);
        if (st != QD_KEEP)
            qd_log(m, i, st, attempts);
        if (st == QD_KEEP || st == QD_DEFERRED)
            keep[nkeep++] = m->env.rcpt[i];
        slotwait |= st == QD_KEEP;
        if (st == QD_DEFERRED)
            qd_bounce_rcpt(m, i, &def[ndef++]);
        if (st == QD_BOUNCED || st == QD_EXPIRED) {
            failidx[nfail] = i;
            qd_bounce_rcpt(m, i, &fail[nfail++]);
        }
    }
    /* No notification about a notification (RFC 5321 4.5.5): mail from
     * the null sender is only logged. When the notification cannot be
     * queued, its recipients stay and fail again at the next attempt. */
    if (nfail > 0 && m->env.sender[0] != '\0' &&
        qd_notify(m, BOUNCE_FAILED, fail, nfail) < 0) {
        for (size_t k = 0; k < nfail; k++)
            keep[nkeep++] = m->env.rcpt[failidx[k]];
    }
    if (ndef > 0 && cfg->delay_warning_s > 0 && !m->env.warned &&
        m->env.sender[0] != '\0' &&
        m->now - m->env.time >= (long long)cfg->delay_warning_s &&
        qd_notify(m, BOUNCE_DELAYED, def, ndef) == 0)
        m->env.warned = 1;
    qd_write(m, keep, nkeep, slotwait, out);
    free(failidx);
    free(def);
    free(fail);
    free(keep);
}

/* Reads and parses the file in active/. 0, or -1 with out filled. */
static int qd_load(const struct qmgr_deliver_ctx *c, const char *id,
                   struct qd_msg *m, char **buf_r,
                   struct qmgr_deliver_result *out)
{
    const struct cfg *cfg = c->cfg;
    size_t max = cfg->max_message_size + (size_t)SG_MAX_QUEUE_ENVELOPE +
                 (size_t)QMGR_FILE_SLACK;
    const char *why = NULL;
    size_t len = 0, off = 0;
    int rc = queue_read(cfg->queue_dir, QUEUE_ACTIVE, id, max, buf_r, &len);

    if (rc == -ENOENT) {
        out->next = -1;
        return -1;
    }
    if (rc < 0) {
        if (rc == -EFBIG)
            log_error("%s: queue file larger than %zu octets; left in "
                      "place, not delivered",
                      id, max);
        else
            log_error_errno(rc, "%s: cannot read the queue file", id);
        out->next = rc == -EFBIG ? QMGR_NEVER : time(NULL) + QMGR_RETRY_IO_S;
        return -1;
    }
    rc = queue_env_parse(*buf_r, len, &m->env, &off, &why);
    if (rc == 0 && strcmp(m->env.id, id) != 0) {
        why = "id differs from the file name";
        queue_env_clear(&m->env);
        rc = -1;
    }
    if (rc < 0) {
        log_error("%s: corrupt queue file (%s); left in place, not delivered",
                  id, why);
        out->next = QMGR_NEVER;
        return -1;
    }
    m->body = *buf_r + off;
    m->bodylen = len - off;
    return 0;
}

void qmgr_deliver(const struct qmgr_deliver_ctx *c, const char *id, int force,
                  struct qmgr_deliver_result *out)
{
    struct qd_msg m;
    char *buf = NULL;
    int rc;

    memset(&m, 0, sizeof(m));
    memset(out, 0, sizeof(*out));
    m.c = c;
    if (qd_load(c, id, &m, &buf, out) < 0) {
        free(buf);
        return;
    }
    out->dest = qd_dest(c->cfg, &m.env);
    /* A file in active/ is never changed in place, only replaced by a
     * rename, so what was read is what is claimed. */
    if (!force && m.env.next > time(NULL)) {
        out->next = m.env.next;
        goto out;
    }
    rc = queue_claim(c->cfg->queue_dir, id);
    if (rc < 0) {
        if (rc != -ENOENT)
            log_error_errno(rc, "%s: cannot claim the queue file", id);
        out->next = rc == -ENOENT ? -1 : time(NULL) + QMGR_RETRY_IO_S;
        goto out;
    }
    m.res = xcalloc(m.env.nrcpt, sizeof(*m.res));
    qd_group(&m);
    if (m.env.sign[0] == '\0' || qd_sign(&m) == 0) {
        for (size_t g = 0; g < m.ngroups; g++)
            qd_group_send(&m, &m.groups[g]);
    }
    m.now = time(NULL);
    qd_settle(&m, out);
out:
    free(m.res);
    free(m.order);
    free(m.grp);
    free(m.groups);
    free(m.signed_body);
    queue_env_clear(&m.env);
    free(buf);
}
