/* queue_group: group commit of the queue's directory fsyncs among the
 * threads of one process (docs/queue.md, "Group commit").
 *
 * A commit (queue_group_commit) writes and fsyncs its file and renames it
 * into active/ as queue_commit() does; then, instead of an fsync of
 * active/ of its own, it waits for the next fsync of active/ that starts
 * after its rename. One of the waiting threads makes that fsync for all
 * of them, the others sleep meanwhile: while one fsync runs, the commits
 * that finish their rename gather, and the next fsync covers them all.
 * A commit returns only when its file and its name in active/ are
 * durable, so the 250 that follows is never early; nothing waits for a
 * timer, and a commit alone costs what it did.
 *
 * A removal (queue_group_done) unlinks busy/ID at once (the process that
 * dies afterwards has removed it) and makes it durable later, with one
 * fsync of busy/ for many: when done_max removals are pending, when the
 * oldest pending one is done_delay_ms old, or at queue_group_flush(). A
 * crash of the machine before then can bring busy/ID back; the runner
 * then delivers it again as an interrupted delivery, as it does with any
 * file a crash left in busy/.
 *
 * Spare files: a removal leaves the delivered file as tmp/spare.SLOT
 * (queue_spare_put; at most QUEUE_SPARES of them, none larger than
 * QUEUE_SPARE_MAX_SIZE) and a commit writes the next message over one
 * (queue_spare_take) instead of creating a new inode, which on ext4
 * without a journal costs a scan past every inode of its group freed in
 * the last minutes, and everywhere an allocation and a release. Each side
 * walks the slots in turn, one step per call, whether the slot served
 * or not, so that the two processes (smtpd takes, the runner puts) find
 * each other's files without talking.
 *
 * Thread-safe: any number of threads of one process; a group is for one
 * queue_dir. */
#ifndef SG_QUEUE_GROUP_H
#define SG_QUEUE_GROUP_H

#include <stddef.h>
#include <sys/uio.h>

#include "queue.h"

/* Removals pending before one fsync of busy/ makes them durable, and
 * the longest a removal waits for it while the runner is busy. */
#define QUEUE_GROUP_DONE_MAX 64
#define QUEUE_GROUP_DONE_DELAY_MS 100

struct queue_group;

/* Options; all zero (or NULL opts) is the defaults above and fsync. */
struct queue_group_opts {
    unsigned done_max;      /* 0: QUEUE_GROUP_DONE_MAX */
    unsigned done_delay_ms; /* 0: QUEUE_GROUP_DONE_DELAY_MS */
    int no_spares;          /* 1: always create and unlink */
    /* For tests: called instead of fsync(dir); 0 or -errno. */
    int (*sync)(const char *dir, void *arg);
    void *sync_arg;
};

/* What a group did, for tests and logs. */
struct queue_group_stats {
    unsigned long commits;      /* queue_group_commit calls that synced */
    unsigned long active_syncs; /* fsyncs of active/ */
    unsigned long waiting;      /* commits waiting right now */
    unsigned long dones;        /* removals */
    unsigned long busy_syncs;   /* fsyncs of busy/ */
    unsigned long pending;      /* removals not yet durable */
    unsigned long spares_taken; /* commits that wrote over a spare */
    unsigned long spares_put;   /* removals that left a spare */
};

/* A group for queue_dir (copied). NULL opts: defaults. */
struct queue_group *queue_group_new(const char *queue_dir,
                                    const struct queue_group_opts *opts);
/* Makes pending removals durable (queue_group_flush) and frees *gp;
 * sets it to NULL. No commit may be running. */
void queue_group_free(struct queue_group **gp);

/* queue_commit() with the fsync of active/ shared (above). 0 or -errno;
 * on failure nothing is left in active/. Blocking. */
int queue_group_commit(struct queue_group *g, const struct queue_env *env,
                       const struct iovec *iov, int iovcnt);

/* queue_done() with the fsync of busy/ shared and deferred (above).
 * 0, -ENOENT when busy/ID was deleted meanwhile, or -errno. A failed
 * fsync is logged and tried again with the next one. Blocking. */
int queue_group_done(struct queue_group *g, const char *id);

/* Makes every removal so far durable now, unless one is pending for less
 * than done_delay_ms and want_all is 0. Call it from an idle thread now
 * and then (want_all 0), and before exit (want_all 1). 0 or -errno. */
int queue_group_flush(struct queue_group *g, int want_all);

/* A snapshot of the counters. */
void queue_group_stats(struct queue_group *g, struct queue_group_stats *st);

#endif
