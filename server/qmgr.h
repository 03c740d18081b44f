/* qmgr: the queue runner. Watches queue_dir/active (inotify, plus a
 * rescan every QMGR_SCAN_S seconds) and hands each message whose `next`
 * time has come to one of QMGR_WORKERS delivery threads. A thread claims
 * the file (active/ID to busy/ID, queue.h), groups the recipients by
 * destination (the smarthost, or each recipient domain for MX delivery),
 * runs one SMTP transaction per destination over a pooled connection,
 * and settles the outcome per recipient: delivered (2xx) and refused
 * (5xx) recipients leave the file, the rest stay with a later `next`
 * (exponential backoff from retry_min to retry_max) until
 * max_queue_lifetime has passed. Refused and expired recipients are
 * reported to the sender in one signed DSN per message (bounce.h); an
 * optional delay warning goes out once after delay_warning. The message
 * is removed once no recipient is left (its file kept as a spare, the
 * removal made durable with others': queue_group.h).
 *
 * Threads: the main thread owns the schedule (queue id -> next attempt)
 * and never blocks on the network; delivery threads share only the job
 * list, the results list and the connection pool, under one mutex. At
 * most relay_concurrency connections (busy or idle) exist per
 * destination. One queue file has at most one owner at a time: the
 * scheduler gives each id to one thread, and the rename to busy/ keeps
 * the admin tool from moving it meanwhile. One runner per queue_dir: a
 * lock on queue_dir/busy makes a second one wait. See docs/queue.md for
 * the log lines. */
#ifndef SG_QMGR_H
#define SG_QMGR_H

#include "../common/cfg.h"

/* Seconds between two full scans of active/. */
#define QMGR_SCAN_S 5
/* tmp/ files older than this are left-overs of a crash and are removed at
 * start-up; younger ones may still be being written by the SMTP worker. */
#define QMGR_STALE_TMP_S 3600
/* Delivery threads. Each waits on the network most of the time; eight
 * keep several destinations busy without many idle stacks. */
#define QMGR_WORKERS 8

/* Runs the queue runner until SIGTERM (or SIGINT): installs its signal
 * handlers, ignores SIGPIPE and SIGHUP, takes the runner lock, creates
 * the queue directories if missing, moves busy/ files back to active/
 * (deliveries a crash interrupted), removes stale tmp/ files, then
 * delivers for ever. On SIGTERM the threads finish the message in
 * progress, the pooled connections are closed (QUIT) and it returns 0.
 * Returns 1 after logging a start-up failure. cfg is borrowed and must
 * stay valid. */
int qmgr_main(const struct cfg *cfg);

#endif
