/* mailgate_worker: the worker of subgated that hands the change-password
 * requests taken over SMTP (mailgate_spool.h) to `subgate mailgate`, one
 * at a time. It watches <queue_dir>/mailgate with inotify plus a rescan
 * every MAILGATE_WORKER_SCAN_S seconds and runs, for each request file,
 *
 *     ADMIN -c CONFIG mailgate -f SENDER --recipient RCPT < message
 *
 * as the worker's own user (`user`). Exit 0: handled (reset, refused or
 * dropped), the file is removed. Exit 75: kept and tried again after
 * MAILGATE_WORKER_RETRY_MIN_S, doubling up to MAILGATE_WORKER_RETRY_MAX_S,
 * until it is MAILGATE_WORKER_MAX_AGE_S old. Any other end (another exit
 * status, a signal, a file that cannot be read, too old): the file is
 * moved to mailgate/failed/ with one log line, so nothing loops. A run
 * that takes longer than MAILGATE_WORKER_RUN_TIMEOUT_S is killed and
 * counts as a temporary failure. SIGTERM ends the worker once the running
 * request (sent SIGTERM too) has ended. Single-threaded. */
#ifndef SG_MAILGATE_WORKER_H
#define SG_MAILGATE_WORKER_H

#include "../common/cfg.h"

#define MAILGATE_WORKER_SCAN_S 5
#define MAILGATE_WORKER_RETRY_MIN_S 10
#define MAILGATE_WORKER_RETRY_MAX_S 600
#define MAILGATE_WORKER_MAX_AGE_S (2 * 24 * 3600)
#define MAILGATE_WORKER_RUN_TIMEOUT_S 300
/* The exit status of a child that could not run the program. */
#define MAILGATE_WORKER_EX_EXEC 127

/* Runs until SIGTERM or SIGINT; admin is the path of the `subgate`
 * program. Returns the exit status for the worker (0 after a stop, 1 if
 * it could not start). */
int mailgate_worker_main(const struct cfg *cfg, const char *admin);

#endif
