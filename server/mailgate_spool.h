/* mailgate_spool: change-password requests that subgated accepted over
 * SMTP, kept in <queue_dir>/mailgate/ until `subgate mailgate` has handled
 * them (mailgate_worker.c). One file per request, named by its queue id:
 *
 *     sender <address>\n       ("" for the null sender)
 *     recipient <address>\n
 *     \n
 *     the message as received (CRLF lines, dot-unstuffed)
 *
 * A file is written to .ID.tmp, fsync'd, renamed to ID and the directory
 * fsync'd, so a file named ID is always complete. Requests that `subgate
 * mailgate` refused with a permanent error are moved to failed/. Any
 * thread. */
#ifndef SG_MAILGATE_SPOOL_H
#define SG_MAILGATE_SPOOL_H

#include <stddef.h>

#include "../common/limits.h"

#define MAILGATE_SPOOL_DIR "mailgate"
#define MAILGATE_SPOOL_FAILED "failed"
/* The longest envelope block: two lines and the empty line. */
#define MAILGATE_SPOOL_ENV_MAX (2 * SG_MAX_PATH + 32)

/* Creates <queue_dir>/mailgate and mailgate/failed if missing (0700). 0 or
 * -errno. */
int mailgate_spool_init(const char *queue_dir);

/* Writes one request durably as <queue_dir>/mailgate/<id>. sender and
 * rcpt must hold no control characters. 0 or -errno; nothing is left
 * behind on failure. Blocking. */
int mailgate_spool_write(const char *queue_dir, const char *id,
                         const char *sender, const char *rcpt, const char *msg,
                         size_t len);

/* Reads the envelope block of a spool file open as fd (at offset 0) into
 * sender_r and rcpt_r (SG_MAX_PATH + 1 octets each) and leaves fd at the
 * first octet of the message. 0, or -1 if the block is malformed. */
int mailgate_spool_read_env(int fd, char *sender_r, char *rcpt_r);

#endif
