/* qmgr: the queue runner's scheduler and its delivery threads. The main
 * thread keeps a schedule (queue id -> next attempt) in memory, filled
 * from scans of active/ and from inotify events, and hands due ids to
 * the threads; the queue files stay the only durable state, so a restart
 * loses nothing. The threads deliver (qmgr_deliver.c) and report back
 * through a list and a pipe that wakes the main thread's poll(). */
#include "qmgr.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../common/log.h"
#include "../common/xalloc.h"
#include "metrics.h"
#include "mx.h"
#include "qmgr_deliver.h"
#include "queue.h"
#include "queue_group.h"
#include "relay.h"
#include "relay_pool.h"

/* Set by the signal handler, read by the loop; the one piece of state a
 * signal handler may touch (C11 7.14.1.1). */
static volatile sig_atomic_t qmgr_stop;

struct qmgr_entry {
    char id[QUEUE_ID_LEN + 1];
    long long next;      /* 0: look at the file now */
    uint64_t dest;       /* the only destination, if known (relay_pool_hash) */
    unsigned char busy;  /* handed to a thread */
    unsigned char force; /* `subgate queue flush`: now, whatever next */
    unsigned char seen;  /* mark for the scan */
    unsigned char slotwait; /* its destination was full: wait for a wake */
};

/* What inotify said about a file. */
enum qmgr_event {
    QMGR_EV_NEW,     /* renamed in (IN_MOVED_TO, IN_CREATE) */
    QMGR_EV_WRITTEN, /* written in place by some tool (IN_CLOSE_WRITE) */
    QMGR_EV_FLUSH,   /* time stamp touched (IN_ATTRIB) */
};

struct qmgr_job {
    char id[QUEUE_ID_LEN + 1];
    int force;
};

struct qmgr_done {
    char id[QUEUE_ID_LEN + 1];
    struct qmgr_deliver_result r;
};

struct qmgr;

struct qmgr_thread {
    struct qmgr *q;         /* borrowed */
    struct mx_resolver *mx; /* owned; NULL with relay_host */
    pthread_t tid;
};

struct qmgr {
    const struct cfg *cfg;     /* borrowed */
    struct relay_conf *rconf;  /* owned */
    struct relay_pool *pool;   /* owned */
    struct queue_group *group; /* owned: removals share fsyncs of busy/ */
    int ino;                   /* inotify fd, owned */
    int lockfd;                /* queue_dir/busy, flock'd; owned */
    int wake[2];               /* threads -> main thread; owned */
    uint64_t smarthost;        /* hash of relay_host; 0 for MX delivery */
    char active[PATH_MAX];
    struct qmgr_entry *ents; /* owned, sorted by id (= arrival order) */
    size_t nents, cap;
    size_t inflight; /* jobs handed out, not yet reported; main only */
    struct qmgr_thread thr[QMGR_WORKERS];
    size_t nthr;
    /* Shared with the threads, under mu. */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct qmgr_job jobs[QMGR_WORKERS]; /* a ring */
    size_t jhead, njobs;
    struct qmgr_done *done; /* owned */
    size_t ndone, dcap;
    int stopping;
};

static void qmgr_on_signal(int sig)
{
    (void)sig;
    qmgr_stop = 1;
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

/* Notes an event about id. A new file is looked at now. Our own threads
 * move files back into active/ too; their report, not the event, says
 * when to look again, or every put-back would be a new attempt. */
static void qmgr_touch(struct qmgr *q, const char *id, enum qmgr_event ev)
{
    int found;
    size_t i = qmgr_find(q, id, &found);
    struct qmgr_entry *e;

    if (!found) {
        if (q->nents == q->cap) {
            q->cap = q->cap ? q->cap * 2 : 64;
            q->ents = xrealloc(q->ents, q->cap * sizeof(*q->ents));
        }
        memmove(&q->ents[i + 1], &q->ents[i],
                (q->nents - i) * sizeof(*q->ents));
        q->nents++;
        e = &q->ents[i];
        memset(e, 0, sizeof(*e));
        memcpy(e->id, id, QUEUE_ID_LEN + 1);
        e->dest = q->smarthost;
    }
    e = &q->ents[i];
    e->seen = 1;
    if (ev == QMGR_EV_FLUSH)
        e->force = 1;
    /* A file rewritten in place, or one that replaced a corrupt one, is
     * read again. */
    if (ev == QMGR_EV_WRITTEN || e->next == QMGR_NEVER)
        e->next = 0;
}

static void qmgr_forget(struct qmgr *q, size_t i)
{
    memmove(&q->ents[i], &q->ents[i + 1],
            (q->nents - i - 1) * sizeof(*q->ents));
    q->nents--;
}

/* Lists active/: new files are scheduled now, vanished ones (delivered,
 * held, or deleted by the admin tool) are forgotten unless a thread has
 * them. */
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

        if (!queue_id_valid(de->d_name))
            continue;
        i = qmgr_find(q, de->d_name, &found);
        if (found)
            q->ents[i].seen = 1;
        else
            qmgr_touch(q, de->d_name, QMGR_EV_NEW);
    }
    closedir(d);
    for (size_t i = q->nents; i-- > 0;) {
        if (!q->ents[i].seen && !q->ents[i].busy)
            qmgr_forget(q, i);
        else
            q->ents[i].slotwait = 0;
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
            if (ev->len > 0 && queue_id_valid(ev->name))
                qmgr_touch(q, ev->name,
                           (ev->mask & IN_ATTRIB)        ? QMGR_EV_FLUSH
                           : (ev->mask & IN_CLOSE_WRITE) ? QMGR_EV_WRITTEN
                                                         : QMGR_EV_NEW);
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

        /* The change time, not the modification time: a spare that the
         * SMTP worker has just renamed to tmp/ID to write over keeps the
         * old message's mtime until the first write. */
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
            !S_ISREG(st.st_mode) || st.st_ctime > now - QMGR_STALE_TMP_S)
            continue;
        if (unlinkat(dirfd(d), de->d_name, 0) == 0)
            log_info("queue: removed stale tmp/%s", de->d_name);
        else
            log_error_errno(errno, "queue: cannot remove tmp/%s", de->d_name);
    }
    closedir(d);
}

/* Wakes the main thread's poll(). A full pipe already wakes it. */
static void qmgr_wake(struct qmgr *q)
{
    char c = 1;

    if (write(q->wake[1], &c, 1) < 0 && errno != EAGAIN) {
        /* Nothing to do: the next scan catches up. */
    }
}

/* A delivery thread: takes jobs until the runner stops. */
static void *qmgr_thread_main(void *arg)
{
    struct qmgr_thread *t = arg;
    struct qmgr *q = t->q;
    struct qmgr_deliver_ctx ctx = {
        .cfg = q->cfg,
        .pool = q->pool,
        .mx = t->mx,
        .group = q->group,
    };

    pthread_mutex_lock(&q->mu);
    for (;;) {
        struct qmgr_job job;
        struct qmgr_done d;

        while (q->njobs == 0 && !q->stopping) {
            struct timespec ts;
            int rc;

            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            rc = pthread_cond_timedwait(&q->cv, &q->mu, &ts);
            if (rc == ETIMEDOUT) {
                pthread_mutex_unlock(&q->mu);
                if (relay_pool_reap(q->pool) > 0)
                    qmgr_wake(q);
                /* Idle: the last removals become durable now. */
                queue_group_flush(q->group, 0);
                pthread_mutex_lock(&q->mu);
            }
        }
        if (q->stopping)
            break;
        job = q->jobs[q->jhead];
        q->jhead = (q->jhead + 1) % QMGR_WORKERS;
        q->njobs--;
        pthread_mutex_unlock(&q->mu);

        memcpy(d.id, job.id, sizeof(d.id));
        qmgr_deliver(&ctx, job.id, job.force, &d.r);
        relay_pool_reap(q->pool);

        pthread_mutex_lock(&q->mu);
        if (q->ndone == q->dcap) {
            q->dcap = q->dcap ? q->dcap * 2 : QMGR_WORKERS * 2;
            q->done = xrealloc(q->done, q->dcap * sizeof(*q->done));
        }
        q->done[q->ndone++] = d;
        qmgr_wake(q);
    }
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

/* Takes the threads' reports into the schedule. 1 if there were any. */
static int qmgr_collect(struct qmgr *q)
{
    struct qmgr_done *list;
    size_t n;

    pthread_mutex_lock(&q->mu);
    list = q->done;
    n = q->ndone;
    q->done = NULL;
    q->ndone = q->dcap = 0;
    pthread_mutex_unlock(&q->mu);
    for (size_t k = 0; k < n; k++) {
        int found;
        size_t i = qmgr_find(q, list[k].id, &found);
        struct qmgr_entry *e = &q->ents[i];

        SG_ASSERT(q->inflight > 0);
        q->inflight--;
        if (!found)
            continue;
        e->busy = 0;
        if (list[k].r.next < 0) {
            qmgr_forget(q, i);
            continue;
        }
        e->next = list[k].r.next;
        e->dest = list[k].r.dest ? list[k].r.dest : q->smarthost;
        e->slotwait = (unsigned char)list[k].r.slotwait;
    }
    free(list);
    return n > 0;
}

/* Hands due messages to the threads, oldest first, while a thread is
 * free. A message whose only destination is at its connection limit
 * waits for the next wake instead of taking a thread. */
static void qmgr_dispatch(struct qmgr *q)
{
    long long now = time(NULL);
    size_t queued = 0;

    for (size_t i = 0; i < q->nents && q->inflight < QMGR_WORKERS; i++) {
        struct qmgr_entry *e = &q->ents[i];
        struct qmgr_job *j;

        if (e->busy || e->slotwait || (!e->force && e->next > now))
            continue;
        if (e->dest != 0 && relay_pool_full(q->pool, e->dest)) {
            e->slotwait = 1;
            continue;
        }
        pthread_mutex_lock(&q->mu);
        j = &q->jobs[(q->jhead + q->njobs) % QMGR_WORKERS];
        memcpy(j->id, e->id, sizeof(j->id));
        j->force = e->force;
        q->njobs++;
        pthread_mutex_unlock(&q->mu);
        e->busy = 1;
        e->force = 0;
        q->inflight++;
        queued++;
    }
    /* One thread per job: a broadcast would wake every idle thread for
     * each message, and all but one would go back to sleep. */
    for (; queued > 0; queued--)
        pthread_cond_signal(&q->cv);
}

/* Milliseconds until something is due: a message or the next scan.
 * Times in the schedule are whole seconds of the wall clock, so the wait
 * is measured against it. */
static int qmgr_timeout_ms(const struct qmgr *q, long long next_scan)
{
    struct timespec ts;
    long long now_ms, t = next_scan, ms;

    clock_gettime(CLOCK_REALTIME, &ts);
    now_ms = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    if (q->inflight < QMGR_WORKERS) {
        for (size_t i = 0; i < q->nents; i++) {
            const struct qmgr_entry *e = &q->ents[i];
            if (e->busy || e->slotwait)
                continue;
            if (e->force)
                t = 0;
            else if (e->next < t)
                t = e->next;
        }
    }
    ms = t * 1000 > now_ms ? t * 1000 - now_ms : 0;
    return ms > 60000 ? 60000 : (int)ms;
}

/* One runner per queue: the lock is held for the process's life. A
 * runner that outlived a crashed master finishes its deliveries first. */
static int qmgr_lock(struct qmgr *q)
{
    char path[PATH_MAX];

    snprintf(path, sizeof(path), "%s/busy", q->cfg->queue_dir);
    q->lockfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (q->lockfd < 0) {
        log_error_errno(errno, "queue: cannot open %s", path);
        return -1;
    }
    if (flock(q->lockfd, LOCK_EX | LOCK_NB) == 0)
        return 0;
    log_info("queue: waiting for another queue runner of %s to stop",
             q->cfg->queue_dir);
    while (flock(q->lockfd, LOCK_EX) < 0) {
        if (errno != EINTR || qmgr_stop) {
            log_error_errno(errno, "queue: cannot lock %s", path);
            return -1;
        }
    }
    return 0;
}

static int qmgr_start_threads(struct qmgr *q)
{
    sigset_t all, old;
    char err[256];
    int rc = 0;

    /* Signals go to the main thread, whose poll() they interrupt. */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    for (size_t i = 0; i < QMGR_WORKERS; i++) {
        struct qmgr_thread *t = &q->thr[i];

        t->q = q;
        if (q->cfg->relay_host[0] == '\0') {
            t->mx = mx_resolver_new(q->cfg->dns_resolver,
                                    q->cfg->dns_timeout_ms, err, sizeof(err));
            if (t->mx == NULL) {
                log_error("queue: %s", err);
                rc = -1;
                break;
            }
        }
        if (pthread_create(&t->tid, NULL, qmgr_thread_main, t) != 0) {
            log_error("queue: cannot start a delivery thread");
            mx_resolver_free(&t->mx);
            rc = -1;
            break;
        }
        q->nthr++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

static void qmgr_stop_threads(struct qmgr *q)
{
    pthread_mutex_lock(&q->mu);
    q->stopping = 1;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
    for (size_t i = 0; i < q->nthr; i++) {
        pthread_join(q->thr[i].tid, NULL);
        mx_resolver_free(&q->thr[i].mx);
    }
    q->nthr = 0;
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
    if (qmgr_lock(q) < 0)
        return -1;
    q->group = queue_group_new(cfg->queue_dir, NULL);
    rc = queue_recover(cfg->queue_dir);
    if (rc < 0) {
        log_error_errno(rc, "queue: cannot look into %s/busy", cfg->queue_dir);
        return -1;
    }
    if (rc > 0)
        log_info("queue: %d interrupted deliveries back in active/", rc);
    qmgr_clean_tmp(cfg);
    /* Files arrive by rename (IN_MOVED_TO). A file written in place by
     * some other tool is looked at again when it is closed, so a read
     * that caught it half-written does not shelve it for good. A new
     * time stamp (IN_ATTRIB) is `subgate queue flush`. */
    q->ino = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (q->ino < 0 || inotify_add_watch(q->ino, q->active,
                                        IN_MOVED_TO | IN_CREATE |
                                            IN_CLOSE_WRITE | IN_ATTRIB) < 0) {
        log_error_errno(errno, "queue: cannot watch %s", q->active);
        return -1;
    }
    if (pipe2(q->wake, O_NONBLOCK | O_CLOEXEC) < 0) {
        log_error_errno(errno, "queue: cannot make a pipe");
        return -1;
    }
    q->rconf = relay_conf_new(cfg);
    if (q->rconf == NULL)
        return -1;
    q->pool = relay_pool_new(q->rconf, cfg->relay_concurrency);
    if (cfg->relay_host[0] != '\0')
        q->smarthost = relay_pool_hash(cfg->relay_host);
    return qmgr_start_threads(q);
}

/* Waits for an event or a timeout and takes it in. */
static void qmgr_wait(struct qmgr *q, long long *next_scan)
{
    struct pollfd pfd[2] = {{.fd = q->ino, .events = POLLIN},
                            {.fd = q->wake[0], .events = POLLIN}};

    if (poll(pfd, 2, qmgr_timeout_ms(q, *next_scan)) <= 0)
        return;
    if ((pfd[0].revents & POLLIN) && qmgr_events(q))
        *next_scan = 0;
    if (pfd[1].revents & POLLIN) {
        char buf[256];
        while (read(q->wake[0], buf, sizeof(buf)) > 0) {
        }
        /* A connection was given back or closed: waiting messages may
         * find a place now. */
        for (size_t i = 0; i < q->nents; i++)
            q->ents[i].slotwait = 0;
    }
}

int qmgr_main(const struct cfg *cfg)
{
    struct qmgr q;
    long long next_scan = 0;
    int rc = 0;

    memset(&q, 0, sizeof(q));
    q.cfg = cfg;
    q.ino = q.lockfd = q.wake[0] = q.wake[1] = -1;
    pthread_mutex_init(&q.mu, NULL);
    pthread_cond_init(&q.cv, NULL);
    if (qmgr_setup(&q, cfg) < 0) {
        rc = 1;
        goto out;
    }
    log_info("queue: runner started queue_dir=%s relay_host=%s threads=%d",
             cfg->queue_dir, cfg->relay_host[0] ? cfg->relay_host : "(MX)",
             QMGR_WORKERS);
    while (!qmgr_stop) {
        if (time(NULL) >= next_scan) {
            qmgr_scan(&q);
            next_scan = time(NULL) + QMGR_SCAN_S;
        }
        qmgr_collect(&q);
        qmgr_dispatch(&q);
        metrics_qmgr_flush(cfg, 0);
        if (qmgr_stop)
            break;
        qmgr_wait(&q, &next_scan);
    }
    log_info("queue: runner stopping");
out:
    qmgr_stop_threads(&q);
    qmgr_collect(&q);
    metrics_qmgr_flush(cfg, 1);
    queue_group_free(&q.group);
    relay_pool_free(&q.pool);
    relay_conf_free(&q.rconf);
    if (q.ino >= 0)
        close(q.ino);
    if (q.lockfd >= 0)
        close(q.lockfd);
    for (int i = 0; i < 2; i++) {
        if (q.wake[i] >= 0)
            close(q.wake[i]);
    }
    pthread_cond_destroy(&q.cv);
    pthread_mutex_destroy(&q.mu);
    free(q.done);
    free(q.ents);
    return rc;
}
