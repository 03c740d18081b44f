/* smtp_txn: one mail transaction after the end of DATA: From: policy,
 * signing by subgate-signer, the durable queue commit in the thread pool,
 * and the reply. Until the reply the session waits (SMTP_STATE_WAIT), so
 * commands pipelined after the final dot are answered afterwards, in
 * order. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/log.h"
#include "../common/xalloc.h"
#include "policy.h"
#include "queue.h"
#include "queue_group.h"
#include "metrics.h"
#include "signer_client.h"
#include "smtp_data.h"
#include "smtp_limit.h"
#include "smtp_session.h"
#include "smtp_txn.h"

#define TXN_ESC (4 * SG_LOG_MAX_PEER_TEXT + 4)
/* The Received: field: fixed text, a greeting, an address, a host name,
 * a queue id and a date. */
#define TXN_RECEIVED_MAX (SMTP_HELO_MAX + 3 * 256)

static const char txn_reply_sign[] =
    "451 4.7.0 Signing temporarily unavailable, try again later";
static const char txn_reply_queue[] =
    "451 4.3.0 Queue write failed, try again later";

void smtp_txn_add_rcpt(struct smtp_txn *t, const char *addr)
{
    if (t->nrcpt == t->rcpt_cap) {
        t->rcpt_cap = t->rcpt_cap > 0 ? 2 * t->rcpt_cap : 8;
        t->rcpt = xrealloc(t->rcpt, t->rcpt_cap * sizeof(*t->rcpt));
    }
    t->rcpt[t->nrcpt++] = xstrdup(addr);
}

void smtp_txn_reset(struct smtp_txn *t)
{
    size_t i;

    SG_ASSERT(t->sign_req == NULL);
    for (i = 0; i < t->nrcpt; i++)
        free(t->rcpt[i]);
    free(t->rcpt);
    free(t->msg);
    free(t->hdr);
    memset(t, 0, sizeof(*t));
}

static const char *txn_esc(const char *in, char *out)
{
    return log_escape(in, strlen(in), out, TXN_ESC);
}

void smtp_txn_finish(struct smtp_session *s, const char *reply, int in_handler)
{
    metrics_message(reply, s->txn.metrics_t0);
    smtp_reply(s, "%s", reply);
    smtp_txn_reset(&s->txn);
    if (in_handler)
        s->state = SMTP_STATE_CMD;
    else
        smtp_session_resume(s);
}

static void txn_reject(struct smtp_session *s, const char *reply,
                       const char *reason)
{
    log_warn("%s: reject code=%.3s reason=\"%s\"", s->txn.qid, reply, reason);
    smtp_txn_finish(s, reply, 1);
}

/* Our trace field (RFC 5321 4.4), "with ESMTPSA" per RFC 3848, into
 * out. Returns its length. */
static size_t txn_received(const struct smtp_session *s, char *out,
                           size_t outlen)
{
    char date[64];
    struct tm tm;
    time_t now = time(NULL);
    int n;

    localtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S %z", &tm);
    n = snprintf(out, outlen,
                 "Received: from %s ([%s%s])\r\n"
                 "\tby %s (subgate) with ESMTPSA id %s;\r\n"
                 "\t%s\r\n",
                 s->helo[0] != '\0' ? s->helo : "unknown",
                 strchr(s->client_ip, ':') != NULL ? "IPv6:" : "", s->client_ip,
                 s->srv->cfg->hostname, s->txn.qid, date);
    if (n < 0 || (size_t)n >= outlen)
        return 0;
    return (size_t)n;
}

static void txn_commit_work(uv_work_t *w)
{
    struct smtp_session *s = w->data;
    struct smtp_txn *t = &s->txn;
    struct iovec iov[2];

    iov[0].iov_base = t->hdr;
    iov[0].iov_len = t->hdrlen;
    iov[1].iov_base = t->msg;
    iov[1].iov_len = t->msglen;
    /* Concurrent commits share the fsync of active/ (queue_group.h). */
    t->commit_rc = queue_group_commit(s->srv->qgroup, &t->env, iov, 2);
}

static void txn_committed(uv_work_t *w, int status)
{
    struct smtp_session *s = w->data;
    struct smtp_txn *t = &s->txn;
    char esc[TXN_ESC];
    char reply[64];

    s->pending--;
    if (status != 0)
        t->commit_rc = status;
    if (t->commit_rc != 0) {
        log_error_errno(t->commit_rc, "%s: queue write failed", t->qid);
        if (smtp_session_release(s))
            return;
        smtp_txn_finish(s, txn_reply_queue, 0);
        return;
    }
    /* Committed: it stays queued even if the client has gone. */
    log_info("%s: queued session=%s member=%s from=<%s> size=%zu nrcpt=%zu",
             t->qid, s->id, s->member->address, txn_esc(t->sender, esc),
             t->msglen, t->nrcpt);
    s->nmsgs++;
    if (smtp_session_release(s))
        return;
    snprintf(reply, sizeof(reply), "250 2.0.0 Ok: queued as %s", t->qid);
    smtp_txn_finish(s, reply, 0);
}

/* The envelope for the queue file; borrows the recipients. */
static void txn_fill_env(struct smtp_session *s)
{
    struct smtp_txn *t = &s->txn;
    struct queue_env *e = &t->env;

    memset(e, 0, sizeof(*e));
    memcpy(e->id, t->qid, sizeof(e->id));
    e->time = (long long)time(NULL);
    snprintf(e->session, sizeof(e->session), "%s", s->id);
    snprintf(e->member, sizeof(e->member), "%s", s->member->address);
    snprintf(e->sender, sizeof(e->sender), "%s", t->sender);
    e->nrcpt = t->nrcpt;
    e->rcpt = t->rcpt;
}

static void txn_signed(void *arg, int status, const char *sig, size_t siglen,
                       const char *err)
{
    struct smtp_session *s = arg;
    struct smtp_txn *t = &s->txn;
    char received[TXN_RECEIVED_MAX];
    size_t rlen, extra;
    int rc;

    t->sign_req = NULL;
    s->pending--;
    if (status != 0) {
        log_error("%s: sign failed reason=\"%s\"", t->qid,
                  err != NULL ? err : "unknown");
        if (!smtp_session_release(s))
            smtp_txn_finish(s, txn_reply_sign, 0);
        return;
    }
    if (s->closed) {
        /* No 250 was sent, so the client still owns the message. */
        log_info("%s: client gone before the reply; not queued", t->qid);
        smtp_session_release(s);
        return;
    }
    metrics_signatures(sig, siglen);
    /* Signature fields end in CRLF (signer_proto.h); make sure the
     * message still starts on a line of its own. */
    extra = siglen > 0 && sig[siglen - 1] != '\n' ? 2 : 0;
    rlen = txn_received(s, received, sizeof(received));
    t->hdr = xmalloc(siglen + extra + rlen + 1);
    memcpy(t->hdr, sig, siglen);
    memcpy(t->hdr + siglen, "\r\n", extra);
    memcpy(t->hdr + siglen + extra, received, rlen);
    t->hdrlen = siglen + extra + rlen;
    txn_fill_env(s);
    t->work.data = s;
    rc = uv_queue_work(s->srv->loop, &t->work, txn_commit_work, txn_committed);
    if (rc != 0) {
        log_error("%s: queue write failed: %s", t->qid, uv_strerror(rc));
        smtp_txn_finish(s, txn_reply_queue, 0);
        return;
    }
    s->pending++;
}

/* From: policy, possibly rewriting the field. 0 if the message may go
 * on, with its signing domain in domain; -1 if it has been answered. */
static int txn_check_from(struct smtp_session *s, char *domain,
                          size_t domainlen)
{
    struct smtp_txn *t = &s->txn;
    struct policy_from pf;
    char reply[POLICY_REPLY_MAX], esc[TXN_ESC], esc2[TXN_ESC];
    const struct smtp_header *h;
    const char *msg, *r;
    size_t len, nh;

    msg = smtp_data_message(s->data, &len);
    h = smtp_data_headers(s->data, &nh);
    r = policy_check_from(s->member, msg, len, h, nh, &pf, reply,
                          sizeof(reply));
    if (r != NULL) {
        txn_reject(s, r,
                   r == reply ? "from not owned" : "not exactly one from");
        return -1;
    }
    if (pf.rewritten) {
        if (smtp_data_replace_header(s->data, pf.hdr_index, pf.new_field,
                                     strlen(pf.new_field)) != 0) {
            txn_reject(s, "552 5.3.4 Message size exceeds fixed limit",
                       "no room to rewrite from");
            return -1;
        }
        log_info("%s: from rewritten from=<%s> to=<%s>", t->qid,
                 txn_esc(pf.addr, esc), txn_esc(pf.use, esc2));
    }
    if (policy_sign_domain(s->member, pf.use, domain, domainlen) != 0) {
        txn_reject(s, "550 5.7.1 From: address has no domain to sign for",
                   "from without domain");
        return -1;
    }
    return 0;
}

/* Sender:, Resent-From:, Resent-Sender: must be the member's: otherwise
 * the message is refused, or with remove_foreign_sender such fields are
 * removed before signing. 0 if the message may go on; -1 if it has been
 * answered. */
static int txn_check_ident(struct smtp_session *s)
{
    char reply[POLICY_REPLY_MAX], found[SG_MAX_PATH + 1], esc[TXN_ESC];
    const struct smtp_header *h;
    const char *msg, *r;
    size_t len, nh, i;

    msg = smtp_data_message(s->data, &len);
    h = smtp_data_headers(s->data, &nh);
    for (i = nh; i-- > 0;) {
        r = policy_check_ident_field(s->member, msg, len, &h[i], found,
                                     sizeof(found), reply, sizeof(reply));
        if (r == NULL)
            continue;
        if (!s->srv->cfg->remove_foreign_sender) {
            txn_reject(s, r, "sender field not owned");
            return -1;
        }
        log_info("%s: header removed field=%.*s address=<%s>", s->txn.qid,
                 (int)h[i].name_len, msg + h[i].off, txn_esc(found, esc));
        if (smtp_data_remove_header(s->data, i) != 0)
            log_panic("%s: header %zu vanished", s->txn.qid, i);
        msg = smtp_data_message(s->data, &len);
        h = smtp_data_headers(s->data, &nh);
    }
    return 0;
}

void smtp_txn_data_end(struct smtp_session *s)
{
    struct smtp_txn *t = &s->txn;
    enum smtp_data_err e = smtp_data_error(s->data);
    char domain[SG_MAX_DOMAIN + 1], esc[TXN_ESC];
    const char *r;
    size_t len;

    if (t->gate) {
        smtp_txn_gate_end(s);
        return;
    }
    smtp_data_message(s->data, &len);
    log_info("%s: session=%s from=<%s> size=%zu nrcpt=%zu", t->qid, s->id,
             txn_esc(t->sender, esc), len, t->nrcpt);
    if (e != SMTP_DATA_OK) {
        /* The reader has read on to the end, so the reply is in step. */
        txn_reject(s, smtp_data_error_reply(e), smtp_data_error_reply(e) + 10);
        return;
    }
    if (txn_check_ident(s) != 0 ||
        txn_check_from(s, domain, sizeof(domain)) != 0)
        return;
    r = smtp_limit_data_end(s);
    if (r != NULL) {
        smtp_txn_finish(s, r, 1);
        return;
    }
    t->msg = smtp_data_steal(s->data, &t->msglen);
    t->metrics_t0 = uv_hrtime();
    t->sign_req = signer_client_sign(
        s->srv->loop, s->srv->signer_sock, t->qid, domain, t->msg, t->msglen,
        s->srv->cfg->signer_timeout_ms, txn_signed, s);
    if (t->sign_req == NULL) {
        log_error("%s: sign failed reason=\"cannot reach signer\"", t->qid);
        smtp_txn_finish(s, txn_reply_sign, 1);
        return;
    }
    s->pending++;
    smtp_session_wait(s);
}
