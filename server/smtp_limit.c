/* smtp_limit: abuse limits at the decision points of an SMTP session; see
 * smtp_limit.h. */
#include "smtp_limit.h"

#include <stdio.h>
#include <string.h>

#include "../common/log.h"
#include "ratelimit.h"
#include "smtp_report.h"
#include "smtp_session.h"

static const char limit_reply_conn[] =
    "421 4.7.0 Too many connections from your address, try again later";
static const char limit_reply_blocked[] =
    "421 4.7.0 Too many authentication failures, try again later";
static const char limit_reply_account[] =
    "454 4.7.0 Too many authentication failures, try again later";
static const char limit_reply_msg[] =
    "451 4.7.1 Message rate limit reached, try again later";
static const char limit_reply_rcpt[] =
    "451 4.7.1 Recipient rate limit reached, try again later";

static uint64_t limit_now(const struct smtp_session *s)
{
    return uv_now(s->srv->loop);
}

int smtp_limit_connect(struct smtp_session *s, int implicit_tls)
{
    enum ratelimit_verdict v;

    v = ratelimit_conn_open(s->srv->rl, s->client_ip, limit_now(s));
    if (v == RATELIMIT_OK) {
        s->lim.counted = 1;
        return 0;
    }
    log_warn("%s: reject code=421 reason=\"%s\" client=%s", s->id,
             ratelimit_verdict_text(v), s->client);
    if (implicit_tls)
        smtp_session_close(s, NULL);
    else
        smtp_session_close(s, v == RATELIMIT_IP_BLOCKED ? limit_reply_blocked
                                                        : limit_reply_conn);
    return -1;
}

void smtp_limit_disconnect(struct smtp_session *s)
{
    if (!s->lim.counted)
        return;
    s->lim.counted = 0;
    ratelimit_conn_close(s->srv->rl, s->client_ip, limit_now(s));
}

unsigned smtp_limit_cmd_timeout(const struct smtp_session *s)
{
    return s->member != NULL ? s->srv->cfg->smtp_timeout_ms
                             : s->srv->cfg->command_timeout_ms;
}

/* ---- AUTH ------------------------------------------------------------ */

int smtp_limit_auth_check(struct smtp_session *s, const char *login)
{
    enum ratelimit_verdict v;
    uint64_t now = limit_now(s), until = now;

    snprintf(s->lim.account, sizeof(s->lim.account), "%s", login);
    v = ratelimit_auth_check(s->srv->rl, s->client_ip, s->lim.account, now,
                             &until);
    if (v == RATELIMIT_OK)
        return 0;
    log_warn("%s: auth client=[%s] member=%s result=blocked reason=\"%s\" "
             "seconds_left=%llu",
             s->id, s->client_ip, s->auth_login, ratelimit_verdict_text(v),
             (unsigned long long)((until - now + 999) / 1000));
    if (v == RATELIMIT_IP_BLOCKED) {
        smtp_session_close(s, limit_reply_blocked);
        return -1;
    }
    smtp_reply(s, "%s", limit_reply_account);
    /* A refused attempt counts against the session like a failure. */
    if (++s->nauthfail >= SG_MAX_AUTH_FAILURES)
        smtp_session_close(s, limit_reply_blocked);
    return -1;
}

unsigned smtp_limit_auth_failed(struct smtp_session *s)
{
    struct ratelimit *rl = s->srv->rl;
    uint64_t now = limit_now(s), until = now;
    enum ratelimit_verdict v;
    unsigned delay;

    delay = ratelimit_auth_fail(rl, s->client_ip, s->lim.account, now);
    v = ratelimit_auth_check(rl, s->client_ip, s->lim.account, now, &until);
    if (v != RATELIMIT_OK)
        log_warn("%s: auth block client=[%s] member=%s reason=\"%s\" "
                 "seconds=%llu",
                 s->id, s->client_ip, s->auth_login, ratelimit_verdict_text(v),
                 (unsigned long long)((until - now + 999) / 1000));
    return delay;
}

void smtp_limit_auth_ok(struct smtp_session *s)
{
    ratelimit_auth_ok(s->srv->rl, s->client_ip, s->lim.account, limit_now(s));
}

/* ---- outbound budgets ------------------------------------------------ */

/* The reply for a refused budget, logged under id; the tenant's
 * administrator may get a report (smtp_report.h). */
static const char *limit_refuse(struct smtp_session *s, const char *id,
                                enum ratelimit_verdict v)
{
    const char *reply =
        v == RATELIMIT_MEMBER_RCPT ? limit_reply_rcpt : limit_reply_msg;

    log_warn("%s: reject code=451 reason=\"%s\" member=%s tenant=%s", id,
             ratelimit_verdict_text(v), s->member->address, s->member->tenant);
    smtp_report_refused(s->srv->report, s, v);
    return reply;
}

const char *smtp_limit_mail(struct smtp_session *s)
{
    enum ratelimit_verdict v;

    if (s->member == NULL)
        return NULL; /* no member, no member's budget */
    v = ratelimit_msg_check(s->srv->rl, s->member->address, s->member->tenant,
                            0, limit_now(s));
    return v == RATELIMIT_OK ? NULL : limit_refuse(s, s->id, v);
}

const char *smtp_limit_rcpt(struct smtp_session *s)
{
    enum ratelimit_verdict v;

    if (s->member == NULL)
        return NULL;
    v = ratelimit_msg_check(s->srv->rl, s->member->address, s->member->tenant,
                            s->txn.nrcpt + 1, limit_now(s));
    return v == RATELIMIT_OK ? NULL : limit_refuse(s, s->txn.qid, v);
}

const char *smtp_limit_data_end(struct smtp_session *s)
{
    enum ratelimit_verdict v;

    if (s->member == NULL)
        return NULL;
    v = ratelimit_msg_take(s->srv->rl, s->member->address, s->member->tenant,
                           s->txn.nrcpt, limit_now(s));
    return v == RATELIMIT_OK ? NULL : limit_refuse(s, s->txn.qid, v);
}

/* ---- slow clients ---------------------------------------------------- */

void smtp_limit_data_start(struct smtp_session *s)
{
    uint64_t now = limit_now(s);

    s->lim.data_start_ms = now;
    s->lim.data_last_ms = now;
    s->lim.data_octets = 0;
    smtp_session_set_timer(s, SMTP_TIMER_DATA, SMTP_LIMIT_DATA_TICK_MS,
                           SMTP_LIMIT_DATA_TICK_MS);
}

void smtp_limit_data_read(struct smtp_session *s, size_t n)
{
    uint64_t max =
        (uint64_t)s->srv->cfg->max_message_size * 2 + SMTP_LIMIT_DATA_OVERRUN;

    s->lim.data_last_ms = limit_now(s);
    s->lim.data_octets += n;
    if (s->lim.data_octets > max) {
        log_warn("%s: reject code=552 reason=\"data far over the size "
                 "limit\" client=%s octets=%llu",
                 smtp_session_logid(s), s->client,
                 (unsigned long long)s->lim.data_octets);
        smtp_session_close(s, "552 5.3.4 Message size exceeds fixed limit");
    }
}

void smtp_limit_data_tick(struct smtp_session *s)
{
    const struct cfg *cfg = s->srv->cfg;
    uint64_t now = limit_now(s), elapsed = now - s->lim.data_start_ms;

    if (now - s->lim.data_last_ms >= cfg->data_timeout_ms) {
        log_info("%s: timeout client=%s state=data octets=%llu",
                 smtp_session_logid(s), s->client,
                 (unsigned long long)s->lim.data_octets);
        smtp_session_close(s, "421 4.4.2 Timeout");
        return;
    }
    if (cfg->min_data_rate > 0 && elapsed >= SMTP_LIMIT_RATE_GRACE_MS &&
        s->lim.data_octets * 1000 < (uint64_t)cfg->min_data_rate * elapsed) {
        log_warn("%s: data rate too low client=%s octets=%llu ms=%llu "
                 "min_data_rate=%zu",
                 smtp_session_logid(s), s->client,
                 (unsigned long long)s->lim.data_octets,
                 (unsigned long long)elapsed, cfg->min_data_rate);
        smtp_session_close(s, "421 4.4.2 Data rate too low");
    }
}
