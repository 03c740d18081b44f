/* smtp_report: budget reports from the SMTP worker; see smtp_report.h.
 * The reports found due wait in a list; the head is the one the thread
 * pool works on. */
#include "smtp_report.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>

#include "../common/addr.h"
#include "../common/limits.h"
#include "../common/log.h"
#include "../common/xalloc.h"
#include "auth_sqlite.h"
#include "budget_report.h"
#include "queue.h"
#include "smtp_session.h"

/* How the work on one report ended. */
enum report_outcome {
    REPORT_QUEUED,
    REPORT_NO_ADMIN,    /* the tenant has no administrator address */
    REPORT_DB_FAILED,   /* the address could not be read */
    REPORT_BAD_ADMIN,   /* the stored address is not an address */
    REPORT_BAD_FACTS,   /* budget_report_build() refused them */
    REPORT_QUEUE_FAILED /* queue_commit() failed, rc in item */
};

/* One report: the facts copied from the session, then what the pool
 * made of them. */
struct report_item {
    struct report_item *next; /* owned: the next one in line */
    enum ratelimit_verdict budget;
    unsigned limit;
    long long now;
    char member[SG_MAX_PATH + 1];
    char tenant[SG_MAX_DOMAIN + 1];
    char client_ip[48];
    char session[16];
    char qid[QUEUE_ID_LEN + 1]; /* the refused message's; "" at MAIL */
    /* Written by the pool. */
    enum report_outcome outcome;
    int rc; /* REPORT_QUEUE_FAILED: -errno */
    char to[SG_MAX_PATH + 1];
    char report_qid[QUEUE_ID_LEN + 1];
    size_t size;
};

struct smtp_report {
    uv_loop_t *loop;                 /* borrowed */
    const struct cfg *cfg;           /* borrowed */
    struct budget_report *due;       /* owned: reports made lately */
    uv_work_t work;                  /* data = this; on head while busy */
    struct report_item *head, *tail; /* owned list; head first */
    size_t waiting;                  /* items in the list */
    int busy;                        /* the pool works on head */
};

struct smtp_report *smtp_report_new(uv_loop_t *loop, const struct cfg *cfg)
{
    struct smtp_report *r = xcalloc(1, sizeof(*r));

    r->loop = loop;
    r->cfg = cfg;
    r->due = budget_report_new(BUDGET_REPORT_MAX_ENTRIES);
    return r;
}

void smtp_report_free(struct smtp_report **rp)
{
    struct smtp_report *r = *rp;
    struct report_item *it, *next;

    if (r == NULL)
        return;
    SG_ASSERT(!r->busy);
    for (it = r->head; it != NULL; it = next) {
        next = it->next;
        free(it);
    }
    budget_report_free(&r->due);
    free(r);
    *rp = NULL;
}

/* ---- in the thread pool ---------------------------------------------- */

/* The administrator address of tenant into out: 1, 0 none, -1 the
 * database could not be read (logged by the caller). */
static int report_lookup(const char *database, const char *tenant, char *out,
                         size_t outlen)
{
    static const char sql[] = "SELECT n.admin_address FROM tenant_notify n"
                              " JOIN tenant t ON t.id = n.tenant_id"
                              " WHERE t.name = ?1";
    sqlite3 *db = auth_sqlite_db(database);
    sqlite3_stmt *st = NULL;
    const char *a;
    int rc, ret;

    if (db == NULL)
        return -1;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        /* A database not upgraded yet lacks the table: `subgate init`. */
        auth_sqlite_db_reset();
        return -1;
    }
    sqlite3_bind_text(st, 1, tenant, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        a = (const char *)sqlite3_column_text(st, 0);
        snprintf(out, outlen, "%s", a != NULL ? a : "");
        /* An address cut to fit is no address: addr_is_valid() says so. */
        if (a != NULL && strlen(a) >= outlen)
            out[0] = '\0';
        ret = 1;
    } else {
        ret = rc == SQLITE_DONE ? 0 : -1;
    }
    sqlite3_finalize(st);
    if (ret < 0)
        auth_sqlite_db_reset();
    return ret;
}

/* Builds the report of it and commits it to the queue. */
static void report_write(const struct cfg *cfg, struct report_item *it)
{
    struct budget_report_info info = {
        .budget = it->budget,
        .limit = it->limit,
        .member = it->member,
        .tenant = it->tenant,
        .to = it->to,
        .client_ip = it->client_ip,
        .session = it->session,
        .qid = it->qid,
        .report_qid = it->report_qid,
        .hostname = cfg->hostname,
        .now = it->now,
        .interval_s = cfg->budget_report_interval_s,
    };
    struct queue_env env;
    struct iovec iov;
    char *rcpt[1], *msg;

    queue_id_new(it->report_qid);
    msg = budget_report_build(&info, &it->size);
    if (msg == NULL) {
        it->outcome = REPORT_BAD_FACTS;
        return;
    }
    memset(&env, 0, sizeof(env));
    memcpy(env.id, it->report_qid, sizeof(env.id));
    env.time = it->now;
    snprintf(env.session, sizeof(env.session), "%s", it->session);
    snprintf(env.member, sizeof(env.member), "%s", it->member);
    /* The null sender (RFC 5321 4.5.5): a report that cannot be
     * delivered is dropped, never answered with another. */
    env.sender[0] = '\0';
    rcpt[0] = it->to;
    env.rcpt = rcpt;
    env.nrcpt = 1;
    /* The queue runner signs it with the tenant domain's keys before
     * delivery (queue.h, `sign`), so that d= aligns with From:. */
    snprintf(env.sign, sizeof(env.sign), "%s", it->tenant);
    iov.iov_base = msg;
    iov.iov_len = it->size;
    it->rc = queue_commit(cfg->queue_dir, &env, &iov, 1);
    it->outcome = it->rc == 0 ? REPORT_QUEUED : REPORT_QUEUE_FAILED;
    free(msg);
}

static void report_work(uv_work_t *w)
{
    struct smtp_report *r = w->data;
    struct report_item *it = r->head;
    int found;

    found = report_lookup(r->cfg->database, it->tenant, it->to, sizeof(it->to));
    if (found <= 0) {
        it->outcome = found == 0 ? REPORT_NO_ADMIN : REPORT_DB_FAILED;
        return;
    }
    if (!addr_is_valid(it->to)) {
        it->outcome = REPORT_BAD_ADMIN;
        return;
    }
    report_write(r->cfg, it);
}

/* ---- on the loop ----------------------------------------------------- */

static void report_next(struct smtp_report *r);

/* The id the refused command was logged under. */
static const char *report_refused_id(const struct report_item *it)
{
    return it->qid[0] != '\0' ? it->qid : it->session;
}

static void report_log(struct smtp_report *r, const struct report_item *it)
{
    const char *id = report_refused_id(it);

    switch (it->outcome) {
    case REPORT_QUEUED:
        log_info("%s: queued from=<> to=<%s> size=%zu nrcpt=1 budget report "
                 "for %s member=%s tenant=%s budget=\"%s\"",
                 it->report_qid, it->to, it->size, id, it->member, it->tenant,
                 ratelimit_verdict_text(it->budget));
        return;
    case REPORT_NO_ADMIN:
        return; /* the refusal's own log line is all there is */
    case REPORT_DB_FAILED:
        log_error("%s: budget report not made: cannot read the "
                  "administrator address of tenant %s from %s",
                  id, it->tenant, r->cfg->database);
        break;
    case REPORT_BAD_ADMIN:
        log_error("%s: budget report not made: tenant %s has an invalid "
                  "administrator address (subgate tenant notify)",
                  id, it->tenant);
        return;
    case REPORT_BAD_FACTS:
        log_error("%s: budget report not made: member or tenant name "
                  "unusable in a header",
                  id);
        return;
    case REPORT_QUEUE_FAILED:
        log_error_errno(it->rc, "%s: budget report not queued", id);
        break;
    }
    /* A failure that may pass: the next refusal may try again. */
    budget_report_forget(r->due, it->budget, it->member, it->tenant);
}

static void report_done(uv_work_t *w, int status)
{
    struct smtp_report *r = w->data;
    struct report_item *it = r->head;

    r->busy = 0;
    r->head = it->next;
    if (r->head == NULL)
        r->tail = NULL;
    r->waiting--;
    if (status != 0) {
        it->outcome = REPORT_QUEUE_FAILED;
        it->rc = status;
    }
    report_log(r, it);
    free(it);
    report_next(r);
}

/* Starts the work on the head of the list, if any and none runs. */
static void report_next(struct smtp_report *r)
{
    struct report_item *it;
    int rc;

    while (!r->busy && r->head != NULL) {
        r->work.data = r;
        rc = uv_queue_work(r->loop, &r->work, report_work, report_done);
        if (rc == 0) {
            r->busy = 1;
            return;
        }
        it = r->head;
        log_error("%s: budget report not made: %s", report_refused_id(it),
                  uv_strerror(rc));
        budget_report_forget(r->due, it->budget, it->member, it->tenant);
        r->head = it->next;
        if (r->head == NULL)
            r->tail = NULL;
        r->waiting--;
        free(it);
    }
}

void smtp_report_refused(struct smtp_report *r, const struct smtp_session *s,
                         enum ratelimit_verdict v)
{
    const struct db_member *m = s->member;
    const char *id = smtp_session_logid(s);
    struct report_item *it;
    uint64_t interval;
    int due;

    if (r == NULL)
        return;
    interval = (uint64_t)r->cfg->budget_report_interval_s * 1000;
    due = budget_report_due(r->due, v, m->address, m->tenant, uv_now(r->loop),
                            interval);
    if (due == 0)
        return;
    if (due < 0) {
        log_warn("%s: budget report not made: %d reports within "
                 "budget_report_interval already",
                 id, BUDGET_REPORT_MAX_ENTRIES);
        return;
    }
    if (r->waiting >= SMTP_REPORT_MAX_WAITING) {
        log_warn("%s: budget report not made: %d reports waiting already", id,
                 SMTP_REPORT_MAX_WAITING);
        budget_report_forget(r->due, v, m->address, m->tenant);
        return;
    }
    it = xcalloc(1, sizeof(*it));
    it->budget = v;
    budget_report_key(r->cfg, v, &it->limit);
    it->now = (long long)time(NULL);
    snprintf(it->member, sizeof(it->member), "%s", m->address);
    snprintf(it->tenant, sizeof(it->tenant), "%s", m->tenant);
    snprintf(it->client_ip, sizeof(it->client_ip), "%s", s->client_ip);
    snprintf(it->session, sizeof(it->session), "%s", s->id);
    snprintf(it->qid, sizeof(it->qid), "%s", s->txn.qid);
    if (r->tail != NULL)
        r->tail->next = it;
    else
        r->head = it;
    r->tail = it;
    r->waiting++;
    report_next(r);
}
