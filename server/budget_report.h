/* budget_report: the report that tells a tenant's administrator that a
 * member, or the tenant as a whole, has used up an outbound budget
 * (member_msg_per_hour, member_rcpt_per_day, tenant_msg_per_hour; see
 * ratelimit.h): when one is due, and its text. No I/O; the clock is
 * passed in, so tests drive it.
 *
 * A report is due at most once per (member, budget) for the member's
 * budgets and once per (tenant, budget) for the tenant's, per interval
 * (budget_report_interval). The table that remembers the reports made
 * holds at most the max_entries given to _new(); an entry older than the
 * interval is reused, and when every entry is younger no report is due
 * (the refusal is still logged). So however many accounts hit their
 * budgets, a worker mails at most max_entries reports per interval.
 *
 * The table: loop thread only. budget_report_build(): any thread. */
#ifndef SG_BUDGET_REPORT_H
#define SG_BUDGET_REPORT_H

#include <stddef.h>
#include <stdint.h>

#include "../common/cfg.h"
#include "ratelimit.h"

/* Reports remembered at once: far more members than one tenant's
 * administrator reads reports about within an hour. */
#define BUDGET_REPORT_MAX_ENTRIES 1024

struct budget_report;

/* An empty table; max_entries is clamped to 1 .. BUDGET_REPORT_MAX_ENTRIES. */
struct budget_report *budget_report_new(size_t max_entries);
void budget_report_free(struct budget_report **bp); /* sets *bp to NULL */

/* Budget v (RATELIMIT_MEMBER_MSG, RATELIMIT_MEMBER_RCPT or
 * RATELIMIT_TENANT_MSG) refused member of tenant at now_ms: is a report
 * due? 1: yes, and it counts as made now; 0: one was made less than
 * interval_ms ago, interval_ms is 0 (never report), or v is no budget;
 * -1: the table is full of reports younger than interval_ms (none due).
 * Names compare case-insensitively and are cut to SG_MAX_PATH. */
int budget_report_due(struct budget_report *b, enum ratelimit_verdict v,
                      const char *member, const char *tenant, uint64_t now_ms,
                      uint64_t interval_ms);
/* The report that budget_report_due() just found due could not be made:
 * forgets it, so that the next refusal is due again. */
void budget_report_forget(struct budget_report *b, enum ratelimit_verdict v,
                          const char *member, const char *tenant);
/* Entries in the table (tests). */
size_t budget_report_count(const struct budget_report *b);

/* The configuration key of budget v ("member_msg_per_hour") with its
 * value in cfg into *value_r; NULL for a verdict that is no budget. */
const char *budget_report_key(const struct cfg *cfg, enum ratelimit_verdict v,
                              unsigned *value_r);

/* What one report says. Strings are borrowed. */
struct budget_report_info {
    enum ratelimit_verdict budget; /* the budget used up */
    unsigned limit;                /* its configured value */
    const char *member;            /* whose message was refused */
    const char *tenant;            /* the tenant's name (primary domain) */
    const char *to;                /* the tenant's administrator */
    const char *client_ip;         /* the refused client's address */
    const char *session;           /* the refused session's id */
    const char *qid;        /* the refused message's queue id; "" at MAIL */
    const char *report_qid; /* the report's own queue id */
    const char *hostname;   /* this node, for the text and Message-ID */
    long long now;          /* the refusal, Unix time */
    unsigned interval_s;    /* budget_report_interval */
};

/* The report as a message (CRLF lines, each under 998 octets): From:
 * "Mail Submission Gateway <postmaster@TENANT>", To: the administrator,
 * a Subject: naming the member and the budget, Auto-Submitted:
 * auto-generated (RFC 3834), a text/plain body with the facts. Returns a
 * malloc'd message (caller frees) of *len_r octets, or NULL when a field
 * is empty where it may not be, too long, or holds other than printable
 * ASCII (nothing read from the database reaches a header unchecked). */
char *budget_report_build(const struct budget_report_info *r, size_t *len_r);

#endif
