/* smtp_report: the SMTP worker's reports of used-up budgets to a tenant's
 * administrator (docs/security.md, "Abuse limits").
 *
 * When smtp_limit refuses a member for a budget and a report is due
 * (budget_report.h: once per member or tenant and budget per
 * budget_report_interval), the facts are copied out of the session and
 * handed to libuv's thread pool, which reads the tenant's administrator
 * address (table tenant_notify; none: nothing more happens), builds the
 * report and commits it to the queue: null envelope sender, the one
 * recipient, and `sign TENANT`, so that the queue runner signs it with
 * the tenant domain's keys before it leaves, as it does for a DSN that
 * could not be signed at once. From there it is relayed like any message.
 *
 * One report is worked on at a time, in the order they were found due;
 * at most SMTP_REPORT_MAX_WAITING wait. Nothing of the session is used
 * after smtp_report_refused() returns. Loop thread only. */
#ifndef SG_SMTP_REPORT_H
#define SG_SMTP_REPORT_H

#include <uv.h>

#include "../common/cfg.h"
#include "ratelimit.h"

/* Reports waiting for the one being written: a burst of refusals of
 * distinct members. Past it a due report is dropped (logged). */
#define SMTP_REPORT_MAX_WAITING 64

struct smtp_report;
struct smtp_session;

/* The worker's reporter; loop and cfg are borrowed and outlive it. */
struct smtp_report *smtp_report_new(uv_loop_t *loop, const struct cfg *cfg);
/* Once the loop has ended (no report is being written). Sets *rp to
 * NULL. */
void smtp_report_free(struct smtp_report **rp);

/* Budget v refused session s (the refusal is logged by the caller): a
 * report goes to the tenant's administrator if one is due. r NULL: no
 * reports. */
void smtp_report_refused(struct smtp_report *r, const struct smtp_session *s,
                         enum ratelimit_verdict v);

#endif
