/* metrics: what subgated counts, and the Prometheus text exposition
 * (format 0.0.4) of it on metrics_listen, for monitoring.
 *
 * Each process keeps its counters in this module's one registry, so that a
 * hook in the session or queue code is a single call without a handle
 * (metrics_inc(METRIC_AUTH_OK)). The registry is the process's own: call
 * the counting functions from the SMTP worker's loop thread, never from
 * thread-pool work; metrics_delivery() alone may be called from any
 * thread (the queue runner's delivery threads), metrics_qmgr_flush()
 * from one thread at a time.
 *
 * The SMTP worker counts connections, AUTH results, messages accepted and
 * refused (by reply code), signatures by algorithm and the time of the
 * end-of-data step, and serves GET /metrics from its loop
 * (metrics_http_start). The queue runner is another process: it counts
 * deliveries by outcome and rewrites <run_dir>/qmgr.stats
 * (metrics_qmgr_flush), which the endpoint reads at each scrape, together
 * with the length of the queue and the age of its oldest message.
 * The series are listed in docs/operations.md. */
#ifndef SG_METRICS_H
#define SG_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <uv.h>

#include "../common/cfg.h"

enum metrics_counter {
    METRIC_CONNECTIONS,         /* SMTP connections taken on */
    METRIC_CONNECTIONS_REFUSED, /* turned away at max_sessions */
    METRIC_AUTH_OK,             /* 235 */
    METRIC_AUTH_FAIL,           /* 535: unknown member, bad password */
    METRIC_AUTH_TEMPFAIL,       /* 454: the member store failed */
    METRIC_DELIVERY_SENT,       /* per recipient, queue runner */
    METRIC_DELIVERY_DEFERRED,
    METRIC_DELIVERY_BOUNCED,
    METRIC_DELIVERY_EXPIRED,
    METRIC_COUNT,
};

/* Signature algorithms told apart; anything else is counted as other. */
enum metrics_sig_algo {
    METRICS_SIG_RSA_SHA256,
    METRICS_SIG_ED25519_SHA256,
    METRICS_SIG_OTHER,
    METRICS_SIG_COUNT,
};

/* Distinct (reply code, enhanced code) pairs kept for refused messages;
 * the replies are subgate's own, a few dozen at most. Beyond this they
 * are counted under code "other". */
#define METRICS_MAX_CODES 32
/* Upper bounds of the end-of-data latency histogram, in seconds; +Inf is
 * implied. */
#define METRICS_NBUCKETS 12
/* Listening addresses for the endpoint. */
#define METRICS_MAX_LISTEN 4
/* Scrapes served at once; more connections are closed at once. */
#define METRICS_MAX_CONNS 8
/* A scrape must send its request and take the answer within this. */
#define METRICS_TIMEOUT_MS 10000
/* The queue runner rewrites qmgr.stats at most this often. */
#define METRICS_FLUSH_MS 1000
/* qmgr.stats is a few short lines; anything longer is not ours. */
#define METRICS_MAX_STATS_FILE 4096
#define METRICS_STATS_FILE "qmgr.stats"

struct metrics_code {
    char code[4];      /* "553", or "" in the overflow row ("other") */
    char enhanced[12]; /* "5.7.1", or "" when the reply had none */
    uint64_t n;
};

/* What one scrape shows: the registry, copied on the loop thread, plus
 * what the thread pool found on disk. */
struct metrics_snapshot {
    uint64_t counter[METRIC_COUNT];
    uint64_t sig[METRICS_SIG_COUNT];
    uint64_t accepted;
    struct metrics_code refused[METRICS_MAX_CODES + 1]; /* + "other" */
    size_t nrefused;
    uint64_t bucket[METRICS_NBUCKETS + 1]; /* not cumulative; last: +Inf */
    uint64_t latency_count;
    uint64_t latency_sum_ns;
    unsigned sessions;      /* open SMTP sessions */
    long long queue_len;    /* -1: queue_dir unreadable */
    long long queue_held;   /* in hold/ */
    long long queue_oldest; /* seconds; 0 when empty */
    int qmgr_ok;            /* the deliveries came from qmgr.stats */
    const char *node;       /* borrowed: node_name */
};

/* ---- counting (any process) -------------------------------------------- */

void metrics_inc(enum metrics_counter c);
/* A message was answered: reply is the whole reply line ("250 2.0.0 Ok:
 * queued as ...", "553 5.7.1 ..."), counted as accepted (2xx) or refused
 * by its codes. t0_ns, if not 0, is uv_hrtime() when signing was asked
 * for: the time since goes into the end-of-data histogram. */
void metrics_message(const char *reply, uint64_t t0_ns);
/* Counts the DKIM-Signature fields in the len octets of fields (what the
 * signer returned for one message) by their a= tag. */
void metrics_signatures(const char *fields, size_t len);
/* Counts one recipient's delivery outcome: "sent", "deferred",
 * "bounced" or "expired" (the queue runner's status words); others are
 * ignored. Any thread. */
void metrics_delivery(const char *status);

/* ---- the queue runner -------------------------------------------------- */

/* Rewrites <run_dir>/qmgr.stats (tmp file + rename) when deliveries were
 * counted since the last write and METRICS_FLUSH_MS have passed, or
 * whenever force is 1 and something changed. On its first call it adds
 * the counts of an existing file, so that the totals survive a restart.
 * Errors are logged once. */
void metrics_qmgr_flush(const struct cfg *cfg, int force);

/* ---- the SMTP worker's endpoint ---------------------------------------- */

struct metrics_http;

/* Listens on cfg->metrics_listen (NULL, nothing done, when it is empty).
 * nsessions is read at each scrape. A failure is logged and NULL is
 * returned: the worker serves mail without the endpoint. Loop only. */
struct metrics_http *metrics_http_start(uv_loop_t *loop, const struct cfg *cfg,
                                        const unsigned *nsessions);
/* Closes the listeners and any scrape in progress; the memory goes once
 * the loop has run their close callbacks. Sets *hp to NULL. */
void metrics_http_stop(struct metrics_http **hp);

/* ---- parts exposed for the unit tests ---------------------------------- */

/* Copies the registry into sn (the disk fields are left alone). */
void metrics_snapshot_take(struct metrics_snapshot *sn);
/* Clears the registry. */
void metrics_reset(void);
/* Writes the exposition of sn to f. */
void metrics_render(const struct metrics_snapshot *sn, FILE *f);
/* Counts the messages waiting for delivery (queue_dir/active and busy/,
 * where the queue runner keeps the one it is delivering) into
 * sn->queue_len, those in hold/ into sn->queue_held, and the age in
 * seconds (at now) of the oldest waiting one, from the time in its queue
 * id, into sn->queue_oldest. A subdirectory that does not exist counts as
 * empty. 0, or -errno when active/ cannot be read. */
int metrics_queue_scan(const char *queue_dir, long long now,
                       struct metrics_snapshot *sn);
/* The creation time (Unix seconds) in a queue id, or -1 if id is not
 * one. */
long long metrics_queue_id_time(const char *id);
/* Reads a qmgr.stats file into the METRIC_DELIVERY_* slots of counter.
 * 0, or -1 (missing, too long or malformed: counter unchanged). */
int metrics_stats_read(const char *path, uint64_t *counter);
/* What a request asks for. */
enum metrics_req {
    METRICS_REQ_INCOMPLETE, /* no blank line yet */
    METRICS_REQ_METRICS,    /* GET /metrics */
    METRICS_REQ_NOT_FOUND,  /* GET of another path */
    METRICS_REQ_BAD_METHOD, /* not GET or HEAD */
    METRICS_REQ_BAD,        /* not HTTP */
};
/* Looks at the len octets received so far; *head_r is 1 for HEAD. */
enum metrics_req metrics_http_parse(const char *buf, size_t len, int *head_r);

#endif
