/* qmgr: the queue runner. Watches queue_dir/active (inotify, plus a
 * rescan every QMGR_SCAN_S seconds), hands each message whose `next` time
 * has come to the relay, and settles the outcome per recipient: delivered
 * (2xx) and refused (5xx) recipients leave the file, the rest stay with a
 * later `next` (exponential backoff from retry_min to retry_max) until
 * max_queue_lifetime has passed. A message is removed once no recipient
 * is left. See docs/queue.md for the log lines. Runs in its own process,
 * single-threaded; messages are delivered one at a time over one reused
 * relay connection. */
#ifndef SG_QMGR_H
#define SG_QMGR_H

#include "../common/cfg.h"

/* Seconds between two full scans of active/. */
#define QMGR_SCAN_S 5
/* tmp/ files older than this are left-overs of a crash and are removed at
 * start-up; younger ones may still be being written by the SMTP worker. */
#define QMGR_STALE_TMP_S 3600

/* Runs the queue runner until SIGTERM (or SIGINT): installs its signal
 * handlers, ignores SIGPIPE and SIGHUP, creates the queue directories if
 * missing, removes stale tmp/ files, then delivers for ever. On SIGTERM it
 * finishes the message in progress, closes the relay connection (QUIT)
 * and returns 0. Returns 1 after logging a start-up failure. cfg is
 * borrowed and must stay valid. */
int qmgr_main(const struct cfg *cfg);

#endif
