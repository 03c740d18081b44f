/* queue_group: see queue_group.h. A commit joins the open batch; the
 * first thread that finds no fsync running takes the open batch (new
 * arrivals start the next one), syncs, and wakes its members. A batch is
 * freed by the last member that leaves it, so every member reads its own
 * batch's result, whatever happened to the batches after it. */
#include "queue_group.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/fsutil.h"
#include "../common/log.h"
#include "../common/xalloc.h"

/* The commits that one fsync of active/ covers. */
struct qg_batch {
    int done;      /* its fsync has ended */
    int rc;        /* and returned this */
    unsigned refs; /* members still to read the result */
};

struct queue_group {
    char active[PATH_MAX];
    char busy[PATH_MAX];
    char *queue_dir; /* owned */
    struct queue_group_opts o;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* Commits, under mu. */
    struct qg_batch *open; /* owned with its members: the one to join */
    int active_running;    /* an fsync of active/ is running */
    /* Spare slots, under spare_mu: the next to try on each side. */
    pthread_mutex_t spare_mu;
    unsigned take_slot, put_slot;
    /* Removals, under mu. */
    int busy_running;    /* an fsync of busy/ is running */
    unsigned long since; /* when the oldest pending one was made, ms */
    struct queue_group_stats st;
};

static unsigned long qg_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned long)ts.tv_sec * 1000ul +
           (unsigned long)ts.tv_nsec / 1000000ul;
}

static int qg_sync(struct queue_group *g, const char *dir)
{
    if (g->o.sync != NULL)
        return g->o.sync(dir, g->o.sync_arg);
    return fsutil_sync_dir(dir);
}

struct queue_group *queue_group_new(const char *queue_dir,
                                    const struct queue_group_opts *opts)
{
    struct queue_group *g = xcalloc(1, sizeof(*g));

    if (opts != NULL)
        g->o = *opts;
    if (g->o.done_max == 0)
        g->o.done_max = QUEUE_GROUP_DONE_MAX;
    if (g->o.done_delay_ms == 0)
        g->o.done_delay_ms = QUEUE_GROUP_DONE_DELAY_MS;
    g->queue_dir = xstrdup(queue_dir);
    snprintf(g->active, sizeof(g->active), "%s/active", queue_dir);
    snprintf(g->busy, sizeof(g->busy), "%s/busy", queue_dir);
    pthread_mutex_init(&g->mu, NULL);
    pthread_mutex_init(&g->spare_mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    return g;
}

void queue_group_free(struct queue_group **gp)
{
    struct queue_group *g = *gp;

    if (g == NULL)
        return;
    queue_group_flush(g, 1);
    SG_ASSERT(g->open == NULL && !g->active_running);
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->spare_mu);
    pthread_mutex_destroy(&g->mu);
    free(g->queue_dir);
    free(g);
    *gp = NULL;
}

/* The queue_sync_cb of a commit, called after its rename: joins the open
 * batch and returns when that batch's fsync has ended. */
static int qg_commit_sync(void *arg)
{
    struct queue_group *g = arg;
    struct qg_batch *b;
    int rc;

    pthread_mutex_lock(&g->mu);
    if (g->open == NULL)
        g->open = xcalloc(1, sizeof(*g->open));
    b = g->open;
    b->refs++;
    g->st.waiting++;
    while (!b->done) {
        if (g->active_running) {
            pthread_cond_wait(&g->cv, &g->mu);
            continue;
        }
        /* b is the open batch: the only one not done while no fsync
         * runs. Its members all renamed before this fsync starts. */
        SG_ASSERT(g->open == b);
        g->open = NULL;
        g->active_running = 1;
        pthread_mutex_unlock(&g->mu);
        rc = qg_sync(g, g->active);
        pthread_mutex_lock(&g->mu);
        g->active_running = 0;
        g->st.active_syncs++;
        b->rc = rc;
        b->done = 1;
        pthread_cond_broadcast(&g->cv);
    }
    rc = b->rc;
    g->st.waiting--;
    g->st.commits++;
    if (--b->refs == 0)
        free(b);
    pthread_mutex_unlock(&g->mu);
    return rc;
}

/* The next slot of one side's walk. */
static unsigned qg_next_slot(struct queue_group *g, unsigned *cursor)
{
    unsigned slot;

    pthread_mutex_lock(&g->spare_mu);
    slot = *cursor;
    *cursor = (slot + 1) % QUEUE_SPARES;
    pthread_mutex_unlock(&g->spare_mu);
    return slot;
}

int queue_group_commit(struct queue_group *g, const struct queue_env *env,
                       const struct iovec *iov, int iovcnt)
{
    int reuse = 0;

    if (!g->o.no_spares &&
        queue_spare_take(g->queue_dir, qg_next_slot(g, &g->take_slot),
                         env->id) == 0) {
        reuse = 1;
        pthread_mutex_lock(&g->mu);
        g->st.spares_taken++;
        pthread_mutex_unlock(&g->mu);
    }
    return queue_commit_via(g->queue_dir, env, iov, iovcnt, reuse,
                            qg_commit_sync, g);
}

/* Under mu: 1 when the pending removals should be made durable now. */
static int qg_busy_due(const struct queue_group *g, int want_all)
{
    if (g->st.pending == 0 || g->busy_running)
        return 0;
    return want_all || g->st.pending >= g->o.done_max ||
           qg_now_ms() - g->since >= g->o.done_delay_ms;
}

/* Under mu, which it drops during the fsync: syncs busy/ for the
 * removals pending now. Those made meanwhile stay pending. 0 or -errno. */
static int qg_busy_sync(struct queue_group *g)
{
    unsigned long n = g->st.pending, since = g->since;
    int rc;

    g->busy_running = 1;
    g->st.pending = 0;
    pthread_mutex_unlock(&g->mu);
    rc = qg_sync(g, g->busy);
    pthread_mutex_lock(&g->mu);
    g->busy_running = 0;
    g->st.busy_syncs++;
    if (rc < 0) {
        /* Tried again with the next removal or flush. */
        log_error_errno(rc, "queue: cannot sync %s", g->busy);
        if (g->st.pending == 0)
            g->since = since;
        g->st.pending += n;
    }
    pthread_cond_broadcast(&g->cv);
    return rc;
}

int queue_group_done(struct queue_group *g, const char *id)
{
    int rc = -EEXIST, spare = 0;

    if (!g->o.no_spares)
        rc = queue_spare_put(g->queue_dir, qg_next_slot(g, &g->put_slot), id);
    if (rc == 0)
        spare = 1;
    else if (rc != -ENOENT)
        rc = queue_done_nosync(g->queue_dir, id);
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&g->mu);
    g->st.dones++;
    g->st.spares_put += (unsigned long)spare;
    if (g->st.pending++ == 0)
        g->since = qg_now_ms();
    if (qg_busy_due(g, 0))
        qg_busy_sync(g);
    pthread_mutex_unlock(&g->mu);
    return 0;
}

int queue_group_flush(struct queue_group *g, int want_all)
{
    int rc = 0;

    pthread_mutex_lock(&g->mu);
    if (want_all) {
        /* What a running fsync covers is not known here: wait for it,
         * then sync what is left. */
        while (g->busy_running)
            pthread_cond_wait(&g->cv, &g->mu);
    }
    if (qg_busy_due(g, want_all))
        rc = qg_busy_sync(g);
    pthread_mutex_unlock(&g->mu);
    return rc;
}

void queue_group_stats(struct queue_group *g, struct queue_group_stats *st)
{
    pthread_mutex_lock(&g->mu);
    *st = g->st;
    pthread_mutex_unlock(&g->mu);
}
