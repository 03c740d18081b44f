/* queue: the durable on-disk queue. Layout under queue_dir:
 *   tmp/ID     being written; removed at start-up by the queue runner
 *   tmp/spare.N  a delivered file kept to be written over (queue_spare_*)
 *   active/ID  committed: envelope + signed message, fsync'd
 *   busy/ID    claimed by a delivery of the queue runner
 *   hold/ID    put aside by the administrator; never delivered
 * A file is one envelope block then the message:
 *   "SUBGATE-QUEUE 1\n" then "key value\n" lines:
 *     id ID / time UNIX / session SID / member ADDR / sender ADDR
 *     (empty value for the null sender) / attempts N / next UNIX /
 *     rcpt ADDR (one per remaining recipient)
 *     and, optionally, at most once each: sign DOMAIN (sign with this
 *     domain's keys before delivery) / warned 0|1 (delay warning sent)
 *   then "\n" and the message octets (CRLF, not dot-stuffed).
 * Ownership moves with rename(2): whoever renames a file out of active/
 * owns it until it is back. The runner claims active/ID as busy/ID, and
 * its result lands only if busy/ID is still there (queue_settle), so the
 * admin tool may delete a message at any time and hold or release one
 * that is not being delivered. Every function here is blocking (write +
 * fsync): call it from a worker thread, never from an event loop.
 * Queue ids: 12 characters [0-9A-Z], time-ordered, unique per node. */
#ifndef SG_QUEUE_H
#define SG_QUEUE_H

#include <stddef.h>
#include <sys/uio.h>
#include <time.h>

#include "../common/limits.h"

#define QUEUE_ID_LEN 12
/* The first line of every queue file. */
#define QUEUE_MAGIC "SUBGATE-QUEUE 1\n"
/* Bounds on numeric envelope fields: a corrupt file must not make the
 * runner compute with absurd values. */
#define QUEUE_MAX_ATTEMPTS 1000000u
#define QUEUE_MAX_TIME 253402300799LL /* 9999-12-31T23:59:59Z */

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
    /* Optional keys; zero (absent) in files written before they existed
     * and in envelopes of messages signed at submission. */
    char sign[SG_MAX_DOMAIN + 1]; /* "" or the d= domain still to sign */
    unsigned warned;              /* 1: the delay warning has gone out */
};

/* The subdirectories of queue_dir, and the states `subgate queue`
 * reports. */
enum queue_where {
    QUEUE_ACTIVE,
    QUEUE_BUSY,
    QUEUE_HOLD,
};

/* A new queue id into id (QUEUE_ID_LEN + 1 octets). Any thread. */
void queue_id_new(char *id);

/* 1 if id is exactly QUEUE_ID_LEN characters of [0-9A-Z]. */
int queue_id_valid(const char *id);

/* Creates queue_dir/{tmp,active,busy,hold} if missing. 0 or -errno. */
int queue_dirs_init(const char *queue_dir);
/* The directory name of w ("active", "busy", "hold"). */
const char *queue_dir_name(enum queue_where w);

/* Writes env and the message (the iovecs, in order) to tmp/ID, fsyncs it,
 * renames it to active/ID and fsyncs the directory. Nothing is left
 * behind on failure. 0 or -errno. Blocking. */
int queue_commit(const char *queue_dir, const struct queue_env *env,
                 const struct iovec *iov, int iovcnt);

/* The fsync of a queue directory, made by someone else: queue_group.h
 * shares one among the threads that changed the directory meanwhile.
 * 0 once every change made before the call is durable, or -errno. */
typedef int (*queue_sync_cb)(void *arg);

/* queue_commit(), except that active/ is made durable by sync(arg) (NULL:
 * its own fsync, as queue_commit()), and with reuse tmp/ID is a spare
 * file (queue_spare_take) to overwrite instead of a new one. */
int queue_commit_via(const char *queue_dir, const struct queue_env *env,
                     const struct iovec *iov, int iovcnt, int reuse,
                     queue_sync_cb sync, void *arg);

/* Spare files: instead of removing a delivered file and creating a new
 * one for the next message, the runner leaves it as tmp/spare.SLOT and
 * the next commit writes over it (queue_group.h). Creating and removing
 * an inode costs more than rewriting one: on ext4 without a journal the
 * allocator scans past every inode of the group freed in the last
 * minutes. SLOT < QUEUE_SPARES.
 * take: renames tmp/spare.SLOT to tmp/ID (0, -ENOENT when the slot is
 * empty, or -errno). put: renames busy/ID to tmp/spare.SLOT (0, -EEXIST
 * when the slot is taken, -EFBIG for a file larger than
 * QUEUE_SPARE_MAX_SIZE, -ENOENT when busy/ID is gone, or -errno); no
 * fsync: see queue_done_nosync(). */
#define QUEUE_SPARES 64
#define QUEUE_SPARE_PREFIX "spare."
#define QUEUE_SPARE_MAX_SIZE (256 * 1024)
int queue_spare_take(const char *queue_dir, unsigned slot, const char *id);
int queue_spare_put(const char *queue_dir, unsigned slot, const char *id);

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

/* Removes the message ID, in active/ or wherever it has moved (a
 * delivery in progress then drops its result), and fsyncs the directory:
 * the same as queue_delete(). 0 or -errno (-ENOENT: not there). */
int queue_remove(const char *queue_dir, const char *id);

/* Reads the whole file <w>/ID into a new buffer (NUL added after len
 * octets; caller frees). 0, -ENOENT when it is not there, -EFBIG when it
 * is larger than max octets, or -errno. */
int queue_read(const char *queue_dir, enum queue_where w, const char *id,
               size_t max, char **buf_r, size_t *len_r);

/* Reads only the envelope of <w>/ID (as queue_env_parse() does; free
 * with queue_env_clear) and the size of the message after it into
 * *msgsize_r. 0; -ENOENT when it is not there; -EINVAL for a corrupt
 * file, with the reason in *err_r; or -errno. */
int queue_read_env(const char *queue_dir, enum queue_where w, const char *id,
                   struct queue_env *env, long long *msgsize_r,
                   const char **err_r);

/* The runner's side of the ownership protocol. queue_claim() renames
 * active/ID to busy/ID: 0, -ENOENT when the file is no longer in active/
 * (delivered, deleted or held meanwhile), or -errno. The claim ends with
 * exactly one of the three calls below. */
int queue_claim(const char *queue_dir, const char *id);
/* Puts a claimed file back unchanged (busy/ID to active/ID). 0, -ENOENT
 * when busy/ID was deleted meanwhile, or -errno. */
int queue_unclaim(const char *queue_dir, const char *id);
/* Replaces the claimed busy/ID with env and the message (tmp + fsync,
 * then an atomic exchange that fails when busy/ID is gone) and moves it
 * back to active/. -ENOENT when busy/ID was deleted meanwhile: nothing is
 * written. 0 or -errno; on other errors the old file stays in busy/ and
 * comes back to active/ at the next queue_recover(). */
int queue_settle(const char *queue_dir, const struct queue_env *env,
                 const char *body, size_t bodylen);
/* Removes the claimed busy/ID: every recipient is done. 0, -ENOENT when
 * it was deleted meanwhile, or -errno. */
int queue_done(const char *queue_dir, const char *id);
/* queue_done() without the fsync of busy/: the caller makes the removal
 * durable later (queue_group_done). Until then a crash of the machine
 * may bring busy/ID back, and it is delivered again as an interrupted
 * delivery. */
int queue_done_nosync(const char *queue_dir, const char *id);
/* Moves every busy/ file back to active/: claims left by a runner that
 * died. Call only when no runner is running. Returns the number moved or
 * -errno; a file that cannot be moved is logged and left. */
int queue_recover(const char *queue_dir);

/* The administrator's side. hold: active/ID to hold/ID; -EBUSY while it
 * is being delivered (busy/), -ENOENT when it is nowhere. release:
 * hold/ID to active/ID. delete: unlinks ID wherever it is (a delivery in
 * progress then drops its outcome). flush: touches active/ID so that a
 * running runner attempts it at once, whatever its `next` says; 0 also
 * when it is being delivered, -EPERM when it is on hold. Each fsyncs the
 * directories it changed. 0 or -errno. */
int queue_hold(const char *queue_dir, const char *id);
int queue_release(const char *queue_dir, const char *id);
int queue_delete(const char *queue_dir, const char *id);
int queue_flush(const char *queue_dir, const char *id);
/* Where ID is now: 1 with *w_r set, 0 nowhere, -errno. */
int queue_locate(const char *queue_dir, const char *id, enum queue_where *w_r);

#endif
