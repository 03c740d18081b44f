/* budget_report: see budget_report.h. The table is a small array searched
 * from end to end: it is consulted only when a budget refuses a command,
 * and BUDGET_REPORT_MAX_ENTRIES comparisons cost less than the log line
 * that the refusal writes anyway. */
#include "budget_report.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/limits.h"
#include "../common/log.h"
#include "../common/xalloc.h"

/* The longest report: a dozen fixed lines and at most ten fields of at
 * most SG_MAX_PATH octets each fit with room to spare. */
#define BR_MAX_MESSAGE 8192

struct br_entry {
    uint64_t at_ms;             /* when the last report was due */
    enum ratelimit_verdict v;   /* the budget */
    char name[SG_MAX_PATH + 1]; /* member or tenant, lower-cased */
};

struct budget_report {
    struct br_entry *e; /* owned: n used of cap allocated, cap <= max */
    size_t n, cap, max;
};

struct budget_report *budget_report_new(size_t max_entries)
{
    struct budget_report *b = xcalloc(1, sizeof(*b));

    if (max_entries < 1)
        max_entries = 1;
    b->max = max_entries < BUDGET_REPORT_MAX_ENTRIES
                 ? max_entries
                 : BUDGET_REPORT_MAX_ENTRIES;
    return b;
}

void budget_report_free(struct budget_report **bp)
{
    if (*bp == NULL)
        return;
    free((*bp)->e);
    free(*bp);
    *bp = NULL;
}

size_t budget_report_count(const struct budget_report *b)
{
    return b->n;
}

/* The name a budget is counted under: the tenant for the tenant's
 * budget, the member for the member's; NULL for other verdicts. */
static const char *br_name(enum ratelimit_verdict v, const char *member,
                           const char *tenant)
{
    switch (v) {
    case RATELIMIT_MEMBER_MSG:
    case RATELIMIT_MEMBER_RCPT:
        return member;
    case RATELIMIT_TENANT_MSG:
        return tenant;
    default:
        return NULL;
    }
}

/* name lower-cased and cut to SG_MAX_PATH into out. */
static void br_key(const char *name, char *out)
{
    size_t i;

    for (i = 0; i < SG_MAX_PATH && name[i] != '\0'; i++) {
        char c = name[i];
        out[i] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
    }
    out[i] = '\0';
}

/* The entry of (v, key), or NULL. */
static struct br_entry *br_find(struct budget_report *b,
                                enum ratelimit_verdict v, const char *key)
{
    for (size_t i = 0; i < b->n; i++) {
        if (b->e[i].v == v && strcmp(b->e[i].name, key) == 0)
            return &b->e[i];
    }
    return NULL;
}

/* A free entry: one older than the interval, or a new one while the
 * table has room; NULL when it is full of younger ones. */
static struct br_entry *br_slot(struct budget_report *b, uint64_t now_ms,
                                uint64_t interval_ms)
{
    for (size_t i = 0; i < b->n; i++) {
        if (now_ms >= b->e[i].at_ms && now_ms - b->e[i].at_ms >= interval_ms)
            return &b->e[i];
    }
    if (b->n == b->max)
        return NULL;
    if (b->n == b->cap) {
        b->cap = b->cap > 0 ? b->cap * 2 : 16;
        if (b->cap > b->max)
            b->cap = b->max;
        b->e = xrealloc(b->e, b->cap * sizeof(*b->e));
    }
    return &b->e[b->n++];
}

int budget_report_due(struct budget_report *b, enum ratelimit_verdict v,
                      const char *member, const char *tenant, uint64_t now_ms,
                      uint64_t interval_ms)
{
    const char *name = br_name(v, member, tenant);
    char key[SG_MAX_PATH + 1];
    struct br_entry *e;

    if (name == NULL || interval_ms == 0)
        return 0;
    br_key(name, key);
    e = br_find(b, v, key);
    if (e != NULL) {
        /* A clock that went backwards counts as within the interval. */
        if (now_ms < e->at_ms || now_ms - e->at_ms < interval_ms)
            return 0;
        e->at_ms = now_ms;
        return 1;
    }
    e = br_slot(b, now_ms, interval_ms);
    if (e == NULL)
        return -1;
    e->at_ms = now_ms;
    e->v = v;
    memcpy(e->name, key, strlen(key) + 1);
    return 1;
}

void budget_report_forget(struct budget_report *b, enum ratelimit_verdict v,
                          const char *member, const char *tenant)
{
    const char *name = br_name(v, member, tenant);
    char key[SG_MAX_PATH + 1];
    struct br_entry *e;

    if (name == NULL)
        return;
    br_key(name, key);
    e = br_find(b, v, key);
    if (e == NULL)
        return;
    *e = b->e[b->n - 1];
    b->n--;
}

/* The configuration key of a budget; NULL for other verdicts. */
static const char *br_cfg_key(enum ratelimit_verdict v)
{
    switch (v) {
    case RATELIMIT_MEMBER_MSG:
        return "member_msg_per_hour";
    case RATELIMIT_MEMBER_RCPT:
        return "member_rcpt_per_day";
    case RATELIMIT_TENANT_MSG:
        return "tenant_msg_per_hour";
    default:
        return NULL;
    }
}

const char *budget_report_key(const struct cfg *cfg, enum ratelimit_verdict v,
                              unsigned *value_r)
{
    switch (v) {
    case RATELIMIT_MEMBER_MSG:
        *value_r = cfg->member_msg_per_hour;
        break;
    case RATELIMIT_MEMBER_RCPT:
        *value_r = cfg->member_rcpt_per_day;
        break;
    case RATELIMIT_TENANT_MSG:
        *value_r = cfg->tenant_msg_per_hour;
        break;
    default:
        *value_r = 0;
    }
    return br_cfg_key(v);
}

/* ---- the message ----------------------------------------------------- */

struct br_out {
    char buf[BR_MAX_MESSAGE];
    size_t len;
};

static void br_printf(struct br_out *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void br_printf(struct br_out *o, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(o->buf + o->len, sizeof(o->buf) - o->len, fmt, ap);
    va_end(ap);
    /* The fields are checked for length first; the sum fits. */
    SG_ASSERT(n >= 0 && (size_t)n < sizeof(o->buf) - o->len);
    o->len += (size_t)n;
}

/* 1 if s is 1..max octets of printable ASCII (empty allowed with
 * may_be_empty): safe in a header field and in a line of the text. */
static int br_text_ok(const char *s, size_t max, int may_be_empty)
{
    size_t i;

    if (s == NULL)
        return 0;
    for (i = 0; s[i] != '\0'; i++) {
        if (i >= max || (unsigned char)s[i] < 0x20 ||
            (unsigned char)s[i] > 0x7e)
            return 0;
    }
    return i > 0 || may_be_empty;
}

static int br_info_ok(const struct budget_report_info *r)
{
    return br_cfg_key(r->budget) != NULL &&
           br_text_ok(r->member, SG_MAX_PATH, 0) &&
           br_text_ok(r->tenant, SG_MAX_DOMAIN, 0) &&
           br_text_ok(r->to, SG_MAX_PATH, 0) &&
           br_text_ok(r->client_ip, 64, 0) && br_text_ok(r->session, 32, 0) &&
           br_text_ok(r->qid, 32, 1) && br_text_ok(r->report_qid, 32, 0) &&
           br_text_ok(r->hostname, SG_MAX_DOMAIN, 0);
}

/* RFC 5322 3.3 date-time in UTC. subgated never sets a locale, so the
 * names strftime gives are the English ones of the C locale. */
static void br_date(long long t, char *out, size_t len)
{
    time_t tt = (time_t)t;
    struct tm tm;

    if (gmtime_r(&tt, &tm) == NULL ||
        strftime(out, len, "%a, %d %b %Y %H:%M:%S +0000", &tm) == 0)
        snprintf(out, len, "Thu, 01 Jan 1970 00:00:00 +0000");
}

/* A duration as the configuration writes it: "1h", "30m", "45s". */
static void br_duration(unsigned s, char *out, size_t len)
{
    if (s >= 3600 && s % 3600 == 0)
        snprintf(out, len, "%uh", s / 3600);
    else if (s >= 60 && s % 60 == 0)
        snprintf(out, len, "%um", s / 60);
    else
        snprintf(out, len, "%us", s);
}

static void br_head(struct br_out *o, const struct budget_report_info *r,
                    const char *date)
{
    br_printf(o, "From: Mail Submission Gateway <postmaster@%s>\r\n",
              r->tenant);
    br_printf(o, "To: <%s>\r\n", r->to);
    br_printf(o, "Subject: Sending limit reached by %s: %s\r\n", r->member,
              ratelimit_verdict_text(r->budget));
    br_printf(o, "Date: %s\r\n", date);
    br_printf(o, "Message-ID: <%s.limit@%s>\r\n", r->report_qid, r->hostname);
    /* RFC 3834 5: made by the gateway itself, never to be answered. */
    br_printf(o, "Auto-Submitted: auto-generated\r\n");
    br_printf(o, "MIME-Version: 1.0\r\n");
    br_printf(o, "Content-Type: text/plain; charset=us-ascii\r\n");
    br_printf(o, "Content-Transfer-Encoding: 7bit\r\n\r\n");
}

static void br_body(struct br_out *o, const struct budget_report_info *r,
                    const char *date)
{
    const char *key = br_cfg_key(r->budget);
    int tenant = r->budget == RATELIMIT_TENANT_MSG;
    char interval[32];

    br_duration(r->interval_s, interval, sizeof(interval));
    br_printf(o, "This is the mail submission gateway at host %s.\r\n\r\n",
              r->hostname);
    if (tenant)
        br_printf(o,
                  "Tenant %s has reached a sending limit of all its\r\n"
                  "members together, at a message from member %s.\r\n",
                  r->tenant, r->member);
    else
        br_printf(o,
                  "Member %s of tenant %s has reached\r\n"
                  "a sending limit.\r\n",
                  r->member, r->tenant);
    br_printf(o,
              "The gateway answered the mail client with a temporary "
              "error (451 4.7.1)\r\nand took no more %s for now; the "
              "client may try again later.\r\n\r\n",
              r->budget == RATELIMIT_MEMBER_RCPT ? "recipients" : "messages");
    br_printf(o, "Member:   %s\r\n", r->member);
    br_printf(o, "Tenant:   %s\r\n", r->tenant);
    br_printf(o, "Limit:    %s (%s = %u)\r\n",
              ratelimit_verdict_text(r->budget), key, r->limit);
    br_printf(o, "Client:   %s\r\n", r->client_ip);
    br_printf(o, "Time:     %s\r\n", date);
    if (r->qid[0] != '\0')
        br_printf(o, "Queue ID: %s (the refused message)\r\n", r->qid);
    else
        br_printf(o, "Queue ID: none (refused at MAIL FROM)\r\n");
    br_printf(o, "Session:  %s\r\n\r\n", r->session);
    br_printf(o,
              "If this much mail is expected, raise %s in the\r\n"
              "gateway's configuration. If not, the %s may be\r\n"
              "in the wrong hands: look for the queue id and the "
              "session above\r\nin the gateway's log.\r\n\r\n",
              key, tenant ? "password of some member" : "member's password");
    br_printf(o,
              "No other report about this limit for this %s is sent "
              "for\r\n%s (budget_report_interval).\r\n",
              tenant ? "tenant" : "member", interval);
}

char *budget_report_build(const struct budget_report_info *r, size_t *len_r)
{
    struct br_out *o;
    char date[64], *msg;

    if (!br_info_ok(r))
        return NULL;
    o = xmalloc(sizeof(*o));
    o->len = 0;
    br_date(r->now, date, sizeof(date));
    br_head(o, r, date);
    br_body(o, r, date);
    msg = xmalloc(o->len + 1);
    memcpy(msg, o->buf, o->len + 1);
    *len_r = o->len;
    free(o);
    return msg;
}
