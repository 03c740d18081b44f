/* queue: the durable on-disk queue. Layout under queue_dir:
 *   tmp/ID     being written; removed at start-up by the queue runner
 *   active/ID  committed: envelope + signed message, fsync'd
 * A file is one envelope block then the message:
 *   "SUBGATE-QUEUE 1\n" then "key value\n" lines:
 *     id ID / time UNIX / session SID / member ADDR / sender ADDR
 *     (empty value for the null sender) / attempts N / next UNIX /
 *     rcpt ADDR (one per remaining recipient)
 *   then "\n" and the message octets (CRLF, not dot-stuffed).
 * queue_commit() is blocking (write + fsync): call it from a worker thread.
 * Queue ids: 12 characters [0-9A-Z], time-ordered, unique per node. */
#ifndef SG_QUEUE_H
#define SG_QUEUE_H

#include <stddef.h>
#include <sys/uio.h>
#include <time.h>

#include "../common/limits.h"

#define QUEUE_ID_LEN 12

struct queue_env {
    char id[QUEUE_ID_LEN + 1];
    long long time;   /* arrival */
    char session[32]; /* the SMTP session id, for logs */
    char member[SG_MAX_PATH + 1];
    char sender[SG_MAX_PATH + 1]; /* "" = null sender */
    unsigned attempts;
    long long next; /* earliest next attempt; 0 = now */
    size_t nrcpt;
    char **rcpt; /* owned by whoever filled it */
};

/* A new queue id into id (QUEUE_ID_LEN + 1 octets). Any thread. */
void queue_id_new(char *id);

/* Creates queue_dir/{tmp,active} if missing. 0 or -errno. */
int queue_dirs_init(const char *queue_dir);

/* Writes env and the message (the iovecs, in order) to tmp/ID, fsyncs it,
 * renames it to active/ID and fsyncs the directory. Nothing is left
 * behind on failure. 0 or -errno. Blocking. */
int queue_commit(const char *queue_dir, const struct queue_env *env,
                 const struct iovec *iov, int iovcnt);

/* Parses the envelope block at the start of a queue file held in buf.
 * Recipients are allocated (free with queue_env_clear). *body_off_r is
 * where the message starts. 0 ok, -1 corrupt (reason in *err_r). */
int queue_env_parse(const char *buf, size_t len, struct queue_env *env,
                    size_t *body_off_r, const char **err_r);
void queue_env_clear(struct queue_env *env);

/* Rewrites the envelope of active/ID (remaining recipients, attempts,
 * next) atomically: tmp + fsync + rename + dir fsync. 0 or -errno. */
int queue_update(const char *queue_dir, const struct queue_env *env,
                 const char *body, size_t bodylen);

/* Removes active/ID (delivered) and fsyncs the directory. 0 or -errno. */
int queue_remove(const char *queue_dir, const char *id);

#endif
