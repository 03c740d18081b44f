/* qmgr_deliver: one delivery attempt of one queued message, as a
 * delivery thread of the queue runner (qmgr.h) makes it. It reads the
 * file, claims it (queue_claim), signs it first if the envelope asks
 * (`sign DOMAIN`: a DSN whose signing failed when it was made), groups
 * the recipients by destination, sends one transaction per destination
 * over a pooled connection, logs one line per recipient, queues the DSN
 * for refused and expired recipients and the delay warning, and settles
 * the file (queue_settle or queue_done). Blocking; any number of threads
 * at once, each with its own struct qmgr_deliver_ctx, never two on the
 * same queue id. */
#ifndef SG_QMGR_DELIVER_H
#define SG_QMGR_DELIVER_H

#include <limits.h>
#include <stdint.h>

#include "../common/cfg.h"
#include "mx.h"
#include "queue_group.h"
#include "relay_pool.h"

/* Stands for "not before a restart": corrupt or oversized files. */
#define QMGR_NEVER LLONG_MAX
/* A queue file may be larger than max_message_size by its envelope and by
 * what signing added (DKIM-Signature fields, a few KiB); anything beyond
 * this slack is not a file we wrote. */
#define QMGR_FILE_SLACK (1024 * 1024)
/* Backoff exponent cap: 2^30 times retry_min is past any retry_max. */
#define QMGR_MAX_SHIFT 30
/* Seconds before a file that could not be read or claimed is looked at
 * again. */
#define QMGR_RETRY_IO_S 5

/* One delivery thread's tools. All borrowed. */
struct qmgr_deliver_ctx {
    const struct cfg *cfg;
    struct relay_pool *pool;
    struct mx_resolver *mx;    /* NULL when relay_host is set */
    struct queue_group *group; /* removals share fsyncs; NULL: each its own */
};

/* What the scheduler needs to know afterwards. */
struct qmgr_deliver_result {
    long long next; /* -1: the file is gone (done or deleted); else the
                       time of the next look (0: as soon as slotwait
                       allows; QMGR_NEVER: not before a restart) */
    uint64_t dest;  /* relay_pool_hash() of the only destination of the
                       recipients left, or 0 */
    int slotwait;   /* 1: some recipients wait for a connection to their
                       destination (relay_concurrency) */
};

/* Delivers queue id once its `next` time has come (or at once with
 * force) and fills out. */
void qmgr_deliver(const struct qmgr_deliver_ctx *c, const char *id, int force,
                  struct qmgr_deliver_result *out);

/* Seconds until the next attempt after `attempts` failed ones:
 * retry_min * 2^(attempts - 1), at most retry_max, at least 1. */
long long qmgr_deliver_backoff(const struct cfg *cfg, unsigned attempts);

#endif
