/* qmgr: the queue runner. Keeps a schedule (queue id -> next attempt) in
 * memory, filled from scans of active/ and from inotify events; the queue
 * files stay the only durable state, so a restart loses nothing. The
 * delivery of one message (qmgr_deliver) takes the worker's relay as an
 * argument so that several workers could share the schedule later. */
#include "qmgr.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../common/log.h"
#include "../common/xalloc.h"
#include "queue.h"
#include "relay.h"

/* A queue file may be larger than max_message_size by its envelope and by
 * what signing added (DKIM-Signature fields, a few KiB); anything beyond
 * this slack is not a file we wrote. */
#define QMGR_FILE_SLACK (1024 * 1024)
/* Backoff exponent cap: 2^30 times retry_min is past any retry_max. */
#define QMGR_MAX_SHIFT 30
/* Stands for "not before a restart": corrupt or oversized files. */
#define QMGR_NEVER LLONG_MAX

/* Set by the signal handler, read by the loop; the one piece of state a
 * signal handler may touch (C11 7.14.1.1). */
static volatile sig_atomic_t qmgr_stop;

struct qmgr_entry {
    char id[QUEUE_ID_LEN + 1];
    long long next; /* 0: look at the file now */
    int seen;       /* mark for the scan */
};

struct qmgr {
    const struct cfg *cfg; /* borrowed */
    struct relay *relay;   /* owned; the (only) worker's connection */
    int ino;               /* inotify fd, owned */
    char active[PATH_MAX];
    struct qmgr_entry *ents; /* owned, sorted by id (= arrival order) */
    size_t nents, cap;
};

static void qmgr_on_signal(int sig)
{
    (void)sig;
    qmgr_stop = 1;
}

static int qmgr_id_valid(const char *name)
{
    size_t n = strspn(name, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ");

    return n == QUEUE_ID_LEN && name[n] == '\0';
}

/* Index of id in the schedule, or where it would go (*found_r 0). */
static size_t qmgr_find(const struct qmgr *q, const char *id, int *found_r)
{
    size_t lo = 0, hi = q->nents;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(q->ents[mid].id, id);
        if (c == 0) {
            *found_r = 1;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found_r = 0;
    return lo;
}

/* Schedules id for a look now (new file, or one rewritten by someone). */
static void qmgr_touch(struct qmgr *q, const char *id)
{
    int found;
    size_t i = qmgr_find(q, id, &found);

    if (!found) {
        if (q->nents == q->cap) {
            q->cap = q->cap ? q->cap * 2 : 64;
            q->ents = xrealloc(q->ents, q->cap * sizeof(*q->ents));
        }
        memmove(&q->ents[i + 1], &q->ents[i],
                (q->nents - i) * sizeof(*q->ents));
        q->nents++;
        memcpy(q->ents[i].id, id, QUEUE_ID_LEN + 1);
    }
    q->ents[i].next = 0;
    q->ents[i].seen = 1;
}

static void qmgr_forget(struct qmgr *q, size_t i)
{
    memmove(&q->ents[i], &q->ents[i + 1],
            (q->nents - i - 1) * sizeof(*q->ents));
    q->nents--;
}

/* Lists active/: new files are scheduled now, vanished ones (delivered,
 * or deleted by the admin tool) are forgotten. */
static void qmgr_scan(struct qmgr *q)
{
    DIR *d = opendir(q->active);
    struct dirent *de;

    if (d == NULL) {
        log_error_errno(errno, "queue: cannot scan %s", q->active);
        return;
    }
    for (size_t i = 0; i < q->nents; i++)
        q->ents[i].seen = 0;
    while ((de = readdir(d)) != NULL) {
        int found;
        size_t i;

        if (!qmgr_id_valid(de->d_name))
            continue;
        i = qmgr_find(q, de->d_name, &found);
        if (found)
            q->ents[i].seen = 1;
        else
            qmgr_touch(q, de->d_name);
    }
    closedir(d);
    for (size_t i = q->nents; i-- > 0;) {
        if (!q->ents[i].seen)
            qmgr_forget(q, i);
    }
}

/* Drains inotify events; 1 when the queue must be rescanned (overflow). */
static int qmgr_events(struct qmgr *q)
{
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    ssize_t n;

    while ((n = read(q->ino, buf, sizeof(buf))) > 0) {
        for (char *p = buf; p < buf + n;) {
            const struct inotify_event *ev = (const void *)p;
            if (ev->mask & IN_Q_OVERFLOW)
                return 1;
            if (ev->len > 0 && qmgr_id_valid(ev->name))
                qmgr_touch(q, ev->name);
            p += sizeof(*ev) + ev->len;
        }
    }
    return 0;
}

/* Removes tmp/ files a crash left behind (see QMGR_STALE_TMP_S). */
static void qmgr_clean_tmp(const struct cfg *cfg)
{
    char path[PATH_MAX];
    struct dirent *de;
    time_t now = time(NULL);
    DIR *d;

    snprintf(path, sizeof(path), "%s/tmp", cfg->queue_dir);
    d = opendir(path);
    if (d == NULL) {
        log_error_errno(errno, "queue: cannot open %s", path);
        return;
    }
    while ((de = readdir(d)) != NULL) {
        struct stat st;

        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
            !S_ISREG(st.st_mode) || st.st_mtime > now - QMGR_STALE_TMP_S)
            continue;
        if (unlinkat(dirfd(d), de->d_name, 0) == 0)
            log_info("queue: removed stale tmp/%s", de->d_name);
        else
            log_error_errno(errno, "queue: cannot remove tmp/%s", de->d_name);
    }
    closedir(d);
}

/* Reads a whole queue file of at most max octets into a new buffer.
 * 0 ok, -EFBIG when larger, -errno else. */
static int qmgr_read_file(const char *path, size_t max, char **buf_r,
                          size_t *len_r)
{
    struct stat st;
    size_t len = 0;
    char *buf;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW), err;

    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) < 0) {
        err = -errno;
        close(fd);
        return err;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return -EINVAL;
    }
    if ((unsigned long long)st.st_size > max) {
        close(fd);
        return -EFBIG;
    }
    buf = xmalloc((size_t)st.st_size + 1);
    while (len < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + len, (size_t)st.st_size - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            err = n < 0 ? -errno : -EIO;
            free(buf);
            close(fd);
            return err;
        }
        len += (size_t)n;
    }
    close(fd);
    *buf_r = buf;
    *len_r = len;
    return 0;
}

/* Seconds until the next attempt after `attempts` failed ones:
 * retry_min * 2^(attempts - 1), at most retry_max, at least 1. */
static long long qmgr_backoff(const struct cfg *cfg, unsigned attempts)
{
    unsigned shift = attempts > 0 ? attempts - 1 : 0;
    unsigned long long d;

    if (shift > QMGR_MAX_SHIFT)
        shift = QMGR_MAX_SHIFT;
    d = (unsigned long long)cfg->retry_min_s << shift;
    if (d > cfg->retry_max_s)
        d = cfg->retry_max_s;
    return d > 0 ? (long long)d : 1;
}

/* One log line for one recipient's outcome. */
static void qmgr_log_rcpt(const struct qmgr *q, const struct queue_env *env,
                          size_t i, const struct relay_rcpt *res,
                          unsigned attempts, const char *status)
{
    char text[4 * SG_LOG_MAX_PEER_TEXT + 4];
    const char *relay = q->cfg->relay_host[0] ? relay_peer(q->relay) : "none";

    log_escape(res->text, strlen(res->text), text, sizeof(text));
    log_info("%s: to=<%s> relay=%s tls=%s delay=%llds attempts=%u dsn=%s "
             "status=%s (%s)",
             env->id, env->rcpt[i], relay, relay_tls(q->relay),
             (long long)time(NULL) - env->time, attempts,
             res->dsn[0] ? res->dsn : "4.0.0", status, text);
}

/* Applies the outcome: logs each recipient, then removes the file or
 * rewrites it with the recipients still to try. Returns the new `next`
 * for the schedule, or -1 when the file is gone. */
static long long qmgr_settle(struct qmgr *q, struct queue_env *env,
                             const char *body, size_t bodylen,
                             const struct relay_rcpt *res)
{
    long long now = time(NULL);
    int expired = now - env->time >= (long long)q->cfg->max_queue_lifetime_s;
    unsigned attempts = env->attempts + 1;
    char **keep = xcalloc(env->nrcpt, sizeof(*keep));
    char **all = env->rcpt;
    size_t nkeep = 0, nall = env->nrcpt;
    long long next = -1;
    int rc;

    for (size_t i = 0; i < env->nrcpt; i++) {
        int cls = res[i].code / 100;
        const char *status = cls == 2   ? "sent"
                             : cls == 5 ? "bounced"
                             : expired  ? "expired"
                                        : "deferred";
        qmgr_log_rcpt(q, env, i, &res[i], attempts, status);
        if (cls != 2 && cls != 5 && !expired)
            keep[nkeep++] = env->rcpt[i];
    }
    if (nkeep == 0) {
        rc = queue_remove(q->cfg->queue_dir, env->id);
        if (rc < 0 && rc != -ENOENT)
            log_error_errno(rc, "%s: cannot remove the queue file", env->id);
        else
            log_info("%s: removed", env->id);
    } else {
        env->rcpt = keep;
        env->nrcpt = nkeep;
        env->attempts = attempts;
        env->next = now + qmgr_backoff(q->cfg, attempts);
        rc = queue_update(q->cfg->queue_dir, env, body, bodylen);
        next = env->next;
        if (rc == -ENOENT) {
            log_info("%s: deleted while being delivered", env->id);
            next = -1;
        } else if (rc < 0) {
            /* The old file stays and will be retried as it was: the
             * recipients that accepted it may receive it twice. */
            log_error_errno(rc, "%s: cannot update the queue file", env->id);
        } else {
            log_info("%s: deferred nrcpt=%zu attempts=%u next=%lld", env->id,
                     nkeep, attempts, next);
        }
        env->rcpt = all;
        env->nrcpt = nall;
    }
    free(keep);
    return next;
}

/* Delivers the message in entry i if its time has come; updates or
 * forgets the entry. */
static void qmgr_deliver(struct qmgr *q, size_t i)
{
    struct qmgr_entry *e = &q->ents[i];
    size_t max = q->cfg->max_message_size + (size_t)SG_MAX_QUEUE_ENVELOPE +
                 (size_t)QMGR_FILE_SLACK;
    char path[PATH_MAX];
    struct queue_env env;
    struct relay_rcpt *res;
    const char *why = NULL;
    size_t len = 0, off = 0;
    char *buf = NULL;
    int rc;

    /* q->active leaves room: qmgr_setup() checked its length. */
    if (snprintf(path, sizeof(path), "%s/%s", q->active, e->id) >=
        (int)sizeof(path))
        rc = -ENAMETOOLONG;
    else
        rc = qmgr_read_file(path, max, &buf, &len);
    if (rc == -ENOENT) {
        qmgr_forget(q, i);
        return;
    }
    if (rc < 0) {
        if (rc == -EFBIG)
            log_error("%s: queue file larger than %zu octets; left in "
                      "place, not delivered",
                      e->id, max);
        else
            log_error_errno(rc, "%s: cannot read the queue file", e->id);
        e->next = rc == -EFBIG ? QMGR_NEVER : time(NULL) + QMGR_SCAN_S;
        return;
    }
    rc = queue_env_parse(buf, len, &env, &off, &why);
    if (rc == 0 && strcmp(env.id, e->id) != 0) {
        why = "id differs from the file name";
        rc = -1;
    }
    if (rc < 0) {
        log_error("%s: corrupt queue file (%s); left in place, not "
                  "delivered",
                  e->id, why);
        queue_env_clear(&env);
        free(buf);
        e->next = QMGR_NEVER;
        return;
    }
    if (env.next > time(NULL)) {
        e->next = env.next;
    } else {
        struct relay_msg m = {
            .qid = env.id,
            .sender = env.sender,
            .rcpt = env.rcpt,
            .nrcpt = env.nrcpt,
            .data = buf + off,
            .len = len - off,
        };
        res = xcalloc(env.nrcpt, sizeof(*res));
        if (q->cfg->relay_host[0] == '\0') {
            log_error("%s: MX delivery not implemented; set relay_host",
                      env.id);
            for (size_t k = 0; k < env.nrcpt; k++) {
                snprintf(res[k].dsn, sizeof(res[k].dsn), "4.3.5");
                snprintf(res[k].text, sizeof(res[k].text),
                         "MX delivery not implemented");
            }
        } else {
            relay_send(q->relay, &m, res);
        }
        e->next = qmgr_settle(q, &env, buf + off, len - off, res);
        free(res);
        if (e->next < 0)
            qmgr_forget(q, i);
    }
    queue_env_clear(&env);
    free(buf);
}

/* Milliseconds until something is due: a message, the next scan, or the
 * relay connection's idle limit. Times in the schedule are whole seconds
 * of the wall clock, so the wait is measured against it. */
static int qmgr_timeout_ms(const struct qmgr *q, long long next_scan)
{
    struct timespec ts;
    long long now_ms, t = next_scan, ms;
    int idle = relay_idle_ms(q->relay);

    clock_gettime(CLOCK_REALTIME, &ts);
    now_ms = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    for (size_t i = 0; i < q->nents; i++) {
        if (q->ents[i].next < t)
            t = q->ents[i].next;
    }
    ms = t * 1000 > now_ms ? t * 1000 - now_ms : 0;
    if (idle >= 0 && idle < ms)
        ms = idle;
    return (int)ms;
}

static int qmgr_setup(struct qmgr *q, const struct cfg *cfg)
{
    struct sigaction sa = {.sa_handler = qmgr_on_signal};
    struct sigaction ign = {.sa_handler = SIG_IGN};
    int rc;

    /* No SA_RESTART: the signal wakes the loop's poll(). */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigemptyset(&ign.sa_mask);
    sigaction(SIGPIPE, &ign, NULL);
    /* The master passes SIGHUP on; the runner has nothing to reload (its
     * settings come from the master at fork) and must not die of it. */
    sigaction(SIGHUP, &ign, NULL);
    memset(q, 0, sizeof(*q));
    q->cfg = cfg;
    q->ino = -1;
    rc = queue_dirs_init(cfg->queue_dir);
    if (rc < 0) {
        log_error_errno(rc, "queue: cannot create %s", cfg->queue_dir);
        return -1;
    }
    if (snprintf(q->active, sizeof(q->active), "%s/active", cfg->queue_dir) >=
        (int)sizeof(q->active) - QUEUE_ID_LEN - 1) {
        log_error("queue: queue_dir is too long");
        return -1;
    }
    qmgr_clean_tmp(cfg);
    /* Files arrive by rename (IN_MOVED_TO). A file written in place by
     * some other tool is looked at again when it is closed, so a read
     * that caught it half-written does not shelve it for good. */
    q->ino = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (q->ino < 0 ||
        inotify_add_watch(q->ino, q->active,
                          IN_MOVED_TO | IN_CREATE | IN_CLOSE_WRITE) < 0) {
        log_error_errno(errno, "queue: cannot watch %s", q->active);
        return -1;
    }
    q->relay = relay_new(cfg);
    if (q->relay == NULL)
        return -1;
    return 0;
}

int qmgr_main(const struct cfg *cfg)
{
    struct qmgr q;
    long long next_scan = 0;
    int rc = 0;

    if (qmgr_setup(&q, cfg) < 0) {
        rc = 1;
        goto out;
    }
    log_info("queue: runner started queue_dir=%s relay_host=%s", cfg->queue_dir,
             cfg->relay_host[0] ? cfg->relay_host : "(MX)");
    while (!qmgr_stop) {
        struct pollfd pfd = {.fd = q.ino, .events = POLLIN};

        if (time(NULL) >= next_scan) {
            qmgr_scan(&q);
            next_scan = time(NULL) + QMGR_SCAN_S;
        }
        /* Entries are in arrival order; qmgr_deliver() may forget the
         * one at i, so i moves on only when it is still there. */
        for (size_t i = 0; i < q.nents && !qmgr_stop;) {
            size_t before = q.nents;
            if (q.ents[i].next <= time(NULL))
                qmgr_deliver(&q, i);
            if (q.nents == before)
                i++;
        }
        relay_tick(q.relay);
        if (qmgr_stop)
            break;
        if (poll(&pfd, 1, qmgr_timeout_ms(&q, next_scan)) > 0 &&
            qmgr_events(&q))
            next_scan = 0;
    }
    log_info("queue: runner stopping");
out:
    relay_free(&q.relay);
    if (q.ino >= 0)
        close(q.ino);
    free(q.ents);
    return rc;
}
