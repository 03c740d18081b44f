/* test_queue_group: group commit of the queue's directory fsyncs. That
 * commits made while an fsync of active/ runs share the next one, that
 * no commit returns before an fsync that started after its rename has
 * ended, that a failed fsync fails every commit of its batch and leaves
 * nothing behind, that removals are made durable in batches, and that
 * delivered files are written over as spares. The fsync is replaced by a
 * hook that records what each call covered. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../server/queue.h"
#include "../../server/queue_group.h"
#include "testutil.h"

#define NTHREADS 6
#define MAX_SYNCS 64
/* How long a test waits for its threads before it fails, in ms. */
#define WAIT_MS 20000

/* One call of the sync hook: the files in active/ when it started. */
struct sync_rec {
    char ids[NTHREADS * 2][QUEUE_ID_LEN + 1];
    int nids;
    int completed;
};

struct fixture {
    char dir[PATH_MAX];
    char qdir[PATH_MAX];
    struct queue_group *g;
    pthread_mutex_t mu;
    struct sync_rec rec[MAX_SYNCS]; /* calls for active/, under mu */
    int nrec;
    int busy_calls;  /* calls for busy/ */
    int fail_active; /* the hook returns -EIO for active/ */
    int fail_busy;   /* ... for busy/, this many times */
    int hold_first;  /* the first active/ call waits for all threads */
    int first_entered;
};

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);

    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Waits (bounded) until the group has want commits waiting. */
static int wait_waiting(struct queue_group *g, unsigned long want)
{
    struct queue_group_stats st;

    for (int i = 0; i < WAIT_MS; i++) {
        queue_group_stats(g, &st);
        if (st.waiting >= want)
            return 0;
        sleep_ms(1);
    }
    return -1;
}

static int sync_hook(const char *dir, void *arg)
{
    struct fixture *f = arg;
    struct sync_rec *r;
    struct dirent *de;
    int first, fail;
    DIR *d;

    if (ends_with(dir, "/busy")) {
        pthread_mutex_lock(&f->mu);
        f->busy_calls++;
        fail = f->fail_busy > 0;
        if (fail)
            f->fail_busy--;
        pthread_mutex_unlock(&f->mu);
        return fail ? -EIO : 0;
    }
    if (!ends_with(dir, "/active"))
        return -EINVAL;
    pthread_mutex_lock(&f->mu);
    if (f->nrec == MAX_SYNCS) {
        /* Only the first calls are recorded. */
        pthread_mutex_unlock(&f->mu);
        return 0;
    }
    r = &f->rec[f->nrec++];
    first = f->nrec == 1;
    d = opendir(dir);
    while (d != NULL && (de = readdir(d)) != NULL) {
        if (queue_id_valid(de->d_name) && r->nids < NTHREADS * 2)
            memcpy(r->ids[r->nids++], de->d_name, QUEUE_ID_LEN + 1);
    }
    if (d != NULL)
        closedir(d);
    if (first)
        f->first_entered = 1;
    pthread_mutex_unlock(&f->mu);
    /* The first fsync "takes long": every other thread renames its file
     * and joins the next batch meanwhile. */
    if (first && f->hold_first && wait_waiting(f->g, NTHREADS) < 0)
        return -ETIMEDOUT;
    pthread_mutex_lock(&f->mu);
    r->completed = 1;
    fail = f->fail_active;
    pthread_mutex_unlock(&f->mu);
    return fail ? -EIO : 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag,
                    struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* A new group on the fixture's queue, as a restarted process has. */
static void fixture_regroup(struct fixture *f, const struct queue_group_opts *o)
{
    struct queue_group_opts opts = {0};

    queue_group_free(&f->g);
    if (o != NULL)
        opts = *o;
    opts.sync = sync_hook;
    opts.sync_arg = f;
    f->g = queue_group_new(f->qdir, &opts);
}

static struct fixture *fixture_new(const struct queue_group_opts *o)
{
    struct fixture *f = calloc(1, sizeof(*f));
    const char *tmp = getenv("TMPDIR");

    assert_non_null(f);
    pathf(f->dir, "%s/test_queue_group.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    assert_non_null(mkdtemp(f->dir));
    pathf(f->qdir, "%s/queue", f->dir);
    CHECK_INT(queue_dirs_init(f->qdir), 0, "queue_dirs_init");
    pthread_mutex_init(&f->mu, NULL);
    fixture_regroup(f, o);
    return f;
}

/* Waits (bounded) until the first fsync of active/ has started. */
static void wait_first_entered(struct fixture *f)
{
    int entered = 0;

    for (int i = 0; i < WAIT_MS && !entered; i++) {
        pthread_mutex_lock(&f->mu);
        entered = f->first_entered;
        pthread_mutex_unlock(&f->mu);
        if (!entered)
            sleep_ms(1);
    }
    CHECK_INT(entered, 1, "first fsync started");
}

static void fixture_free(struct fixture *f)
{
    queue_group_free(&f->g);
    assert_null(f->g);
    pthread_mutex_destroy(&f->mu);
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
}

static int count_files(const struct fixture *f, const char *sub)
{
    char path[PATH_MAX];
    struct dirent *de;
    int n = 0;
    DIR *d;

    pathf(path, "%s/%s", f->qdir, sub);
    d = opendir(path);
    assert_non_null(d);
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] != '.')
            n++;
    }
    closedir(d);
    return n;
}

static int commit_one(struct fixture *f, char *id, const char *body)
{
    struct queue_env env;
    char rcpt0[] = "bob@example.net";
    char *rcpt[] = {rcpt0};
    struct iovec iov;

    memset(&env, 0, sizeof(env));
    queue_id_new(env.id);
    env.time = 1700000000;
    snprintf(env.session, sizeof(env.session), "s1");
    snprintf(env.sender, sizeof(env.sender), "alice@example.org");
    env.nrcpt = 1;
    env.rcpt = rcpt;
    iov.iov_base = (void *)(uintptr_t)body;
    iov.iov_len = strlen(body);
    memcpy(id, env.id, QUEUE_ID_LEN + 1);
    return queue_group_commit(f->g, &env, &iov, 1);
}

struct worker {
    struct fixture *f;
    char id[QUEUE_ID_LEN + 1];
    int rc;
    int covered; /* a completed fsync had seen its file */
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct fixture *f = w->f;

    w->rc = commit_one(f, w->id, "Subject: x\r\n\r\nbody\r\n");
    pthread_mutex_lock(&f->mu);
    for (int i = 0; i < f->nrec && !w->covered; i++) {
        if (!f->rec[i].completed)
            continue;
        for (int k = 0; k < f->rec[i].nids; k++) {
            if (strcmp(f->rec[i].ids[k], w->id) == 0)
                w->covered = 1;
        }
    }
    pthread_mutex_unlock(&f->mu);
    return NULL;
}

/* One commit's fsync is held until NTHREADS - 1 more commits wait: they
 * all go into the second fsync, and each returns only after an fsync
 * that had seen its file. */
static void test_commits_share_fsync(void **state)
{
    struct fixture *f = fixture_new(NULL);
    struct worker w[NTHREADS];
    pthread_t t[NTHREADS];
    struct queue_group_stats st;
    int i;

    (void)state;
    f->hold_first = 1;
    memset(w, 0, sizeof(w));
    for (i = 0; i < NTHREADS; i++)
        w[i].f = f;
    assert_int_equal(pthread_create(&t[0], NULL, worker_main, &w[0]), 0);
    wait_first_entered(f);
    for (i = 1; i < NTHREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
    for (i = 0; i < NTHREADS; i++)
        pthread_join(t[i], NULL);
    for (i = 0; i < NTHREADS; i++) {
        CHECK_INT(w[i].rc, 0, "commit");
        CHECK_INT(w[i].covered, 1, "returned after an fsync that saw it");
    }
    queue_group_stats(f->g, &st);
    CHECK_INT(st.commits, NTHREADS, "commits");
    CHECK_INT(st.active_syncs, 2, "fsyncs of active/");
    CHECK_INT(f->nrec, 2, "hook calls");
    CHECK_INT(f->rec[1].nids, NTHREADS, "files seen by the second fsync");
    CHECK_INT(st.waiting, 0, "waiting after");
    CHECK_INT(count_files(f, "active"), NTHREADS, "files in active/");
    fixture_free(f);
}

/* Commits one after another: one fsync each, as before. */
static void test_commit_alone(void **state)
{
    struct fixture *f = fixture_new(NULL);
    struct queue_group_stats st;
    char id[QUEUE_ID_LEN + 1];
    char *buf;
    size_t len;

    (void)state;
    for (int i = 0; i < 3; i++)
        CHECK_INT(commit_one(f, id, "Subject: a\r\n\r\nx\r\n"), 0, "commit");
    queue_group_stats(f->g, &st);
    CHECK_INT(st.active_syncs, 3, "fsyncs");
    CHECK_INT(queue_read(f->qdir, QUEUE_ACTIVE, id, 1 << 20, &buf, &len), 0,
              "read back");
    assert_non_null(strstr(buf, "\n\nSubject: a\r\n\r\nx\r\n"));
    free(buf);
    fixture_free(f);
}

/* A failed fsync fails every commit of its batch, and none of their
 * files stays in active/ or tmp/. */
static void test_commit_fsync_fails(void **state)
{
    struct fixture *f = fixture_new(NULL);
    struct worker w[NTHREADS];
    pthread_t t[NTHREADS];
    int i;

    (void)state;
    f->fail_active = 1;
    f->hold_first = 1;
    memset(w, 0, sizeof(w));
    for (i = 0; i < NTHREADS; i++)
        w[i].f = f;
    assert_int_equal(pthread_create(&t[0], NULL, worker_main, &w[0]), 0);
    wait_first_entered(f);
    for (i = 1; i < NTHREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
    for (i = 0; i < NTHREADS; i++)
        pthread_join(t[i], NULL);
    for (i = 0; i < NTHREADS; i++)
        CHECK_INT(w[i].rc, -EIO, "commit");
    CHECK_INT(count_files(f, "active"), 0, "files in active/");
    CHECK_INT(count_files(f, "tmp"), 0, "files in tmp/");
    fixture_free(f);
}

/* Commits and claims a message, ready for queue_group_done(). */
static void commit_claimed(struct fixture *f, char *id, const char *body)
{
    CHECK_INT(commit_one(f, id, body), 0, "commit");
    CHECK_INT(queue_claim(f->qdir, id), 0, "claim");
}

/* Removals wait for done_max of them, or a flush. */
static void test_done_batched(void **state)
{
    struct queue_group_opts o = {
        .done_max = 3, .done_delay_ms = 600000, .no_spares = 1};
    struct fixture *f = fixture_new(&o);
    struct queue_group_stats st;
    char id[5][QUEUE_ID_LEN + 1];

    (void)state;
    for (int i = 0; i < 5; i++)
        commit_claimed(f, id[i], "Subject: d\r\n\r\nx\r\n");
    CHECK_INT(queue_group_done(f->g, id[0]), 0, "done 0");
    CHECK_INT(queue_group_done(f->g, id[1]), 0, "done 1");
    CHECK_INT(f->busy_calls, 0, "no fsync of busy/ yet");
    queue_group_stats(f->g, &st);
    CHECK_INT(st.pending, 2, "pending");
    CHECK_INT(count_files(f, "busy"), 3, "unlinked at once");
    CHECK_INT(queue_group_done(f->g, id[2]), 0, "done 2");
    CHECK_INT(f->busy_calls, 1, "one fsync for three");
    queue_group_stats(f->g, &st);
    CHECK_INT(st.pending, 0, "pending after");
    CHECK_INT(queue_group_done(f->g, id[3]), 0, "done 3");
    CHECK_INT(queue_group_flush(f->g, 0), 0, "flush when due");
    CHECK_INT(f->busy_calls, 1, "not due yet");
    CHECK_INT(queue_group_flush(f->g, 1), 0, "flush all");
    CHECK_INT(f->busy_calls, 2, "flushed");
    CHECK_INT(queue_group_flush(f->g, 1), 0, "nothing left");
    CHECK_INT(f->busy_calls, 2, "no fsync for nothing");
    CHECK_INT(queue_group_done(f->g, id[3]), -ENOENT, "done twice");
    /* A failed fsync keeps the removals pending for the next one. */
    f->fail_busy = 1;
    CHECK_INT(queue_group_done(f->g, id[4]), 0, "done 4");
    CHECK_INT(queue_group_flush(f->g, 1), -EIO, "flush fails");
    queue_group_stats(f->g, &st);
    CHECK_INT(st.pending, 1, "still pending");
    CHECK_INT(queue_group_flush(f->g, 1), 0, "flush again");
    queue_group_stats(f->g, &st);
    CHECK_INT(st.pending, 0, "pending at end");
    CHECK_INT(st.dones, 5, "removals");
    CHECK_INT(count_files(f, "busy"), 0, "busy/ empty");
    CHECK_INT(count_files(f, "tmp"), 0, "no spares");
    fixture_free(f);
}

/* The oldest pending removal makes the next removal or flush sync once
 * done_delay_ms has passed. */
static void test_done_delay(void **state)
{
    struct queue_group_opts o = {
        .done_max = 100, .done_delay_ms = 20, .no_spares = 1};
    struct fixture *f = fixture_new(&o);
    char id[QUEUE_ID_LEN + 1];

    (void)state;
    commit_claimed(f, id, "Subject: d\r\n\r\nx\r\n");
    CHECK_INT(queue_group_done(f->g, id), 0, "done");
    CHECK_INT(f->busy_calls, 0, "not yet");
    sleep_ms(40);
    CHECK_INT(queue_group_flush(f->g, 0), 0, "flush when due");
    CHECK_INT(f->busy_calls, 1, "synced after the delay");
    fixture_free(f);
}

static ino_t inode_of(const struct fixture *f, const char *sub,
                      const char *name)
{
    char path[PATH_MAX];
    struct stat st;

    pathf(path, "%s/%s/%s", f->qdir, sub, name);
    if (lstat(path, &st) < 0)
        return 0;
    return st.st_ino;
}

/* A delivered file becomes a spare, the next commit writes over it (the
 * same inode, cut to the new length), and a spare that is not a plain
 * 0600 file of ours is dropped instead. */
static void test_spares(void **state)
{
    struct fixture *f = fixture_new(NULL);
    struct queue_group_stats st;
    char a[QUEUE_ID_LEN + 1], b[QUEUE_ID_LEN + 1], c[QUEUE_ID_LEN + 1];
    char path[PATH_MAX], *buf, *big;
    struct sb longbody = {0};
    struct queue_env env;
    size_t len, off;
    const char *err;
    struct stat sbuf;
    ino_t ino;

    (void)state;
    sb_add(&longbody, "Subject: long\r\n\r\n");
    sb_fill(&longbody, 'x', 5000);
    sb_add(&longbody, "\r\n");
    commit_claimed(f, a, longbody.s);
    ino = inode_of(f, "busy", a);
    CHECK_INT(queue_group_done(f->g, a), 0, "done a");
    CHECK_INT(inode_of(f, "tmp", "spare.0") == ino, 1, "a is spare.0");
    queue_group_stats(f->g, &st);
    CHECK_INT(st.spares_put, 1, "spares put");
    /* Each side walks the slots from 0: a new process (group) takes
     * slot 0 first. */
    fixture_regroup(f, NULL);
    CHECK_INT(commit_one(f, b, "Subject: short\r\n\r\nb\r\n"), 0, "commit b");
    CHECK_INT(inode_of(f, "active", b) == ino, 1, "b reuses a's inode");
    CHECK_INT(count_files(f, "tmp"), 0, "spare taken");
    CHECK_INT(queue_read(f->qdir, QUEUE_ACTIVE, b, 1 << 20, &buf, &len), 0,
              "read b");
    CHECK_INT(queue_env_parse(buf, len, &env, &off, &err), 0, "parse b");
    CHECK_STR(env.id, b, "id of b");
    CHECK_INT(len - off, strlen("Subject: short\r\n\r\nb\r\n"), "b's length");
    assert_memory_equal(buf + off, "Subject: short\r\n\r\nb\r\n", len - off);
    queue_env_clear(&env);
    free(buf);
    /* The next take looks at slot 1: a file there that is not ours in
     * the expected way is removed, and a new file is made. */
    pathf(path, "%s/tmp/spare.1", f->qdir);
    CHECK_INT(close(open(path, O_WRONLY | O_CREAT | O_EXCL, 0644)), 0,
              "plant spare.1");
    CHECK_INT(chmod(path, 0644), 0, "chmod");
    CHECK_INT(commit_one(f, c, "Subject: c\r\n\r\nc\r\n"), 0, "commit c");
    pathf(path, "%s/active/%s", f->qdir, c);
    CHECK_INT(stat(path, &sbuf), 0, "stat c");
    CHECK_INT(sbuf.st_mode & 07777, 0600, "c is a new file, 0600");
    CHECK_INT(count_files(f, "tmp"), 0, "bad spare dropped");
    /* Files over QUEUE_SPARE_MAX_SIZE are removed, not kept. */
    big = calloc(1, QUEUE_SPARE_MAX_SIZE + 2);
    assert_non_null(big);
    memcpy(big, "Subject: big\r\n\r\n", 16);
    memset(big + 16, 'y', QUEUE_SPARE_MAX_SIZE - 16);
    commit_claimed(f, a, big);
    free(big);
    CHECK_INT(queue_group_done(f->g, a), 0, "done big");
    CHECK_INT(count_files(f, "tmp"), 0, "big file not kept");
    CHECK_INT(count_files(f, "busy"), 0, "big file removed");
    queue_group_stats(f->g, &st);
    CHECK_INT(st.spares_put, 0, "spares put since the new group");
    CHECK_INT(st.spares_taken, 1, "spares taken");
    sb_free(&longbody);
    fixture_free(f);
}

/* Many threads commit and remove at once; every message ends in
 * active/ exactly once, and all removals end durable. */
static void *churn_main(void *arg)
{
    struct worker *w = arg;

    for (int i = 0; i < 50 && w->rc == 0; i++) {
        char id[QUEUE_ID_LEN + 1];

        w->rc = commit_one(w->f, id, "Subject: churn\r\n\r\nz\r\n");
        if (w->rc == 0)
            w->rc = queue_claim(w->f->qdir, id);
        if (w->rc == 0)
            w->rc = queue_group_done(w->f->g, id);
    }
    return NULL;
}

static void test_churn(void **state)
{
    struct fixture *f = fixture_new(NULL);
    struct worker w[NTHREADS];
    pthread_t t[NTHREADS];
    struct queue_group_stats st;

    (void)state;
    memset(w, 0, sizeof(w));
    for (int i = 0; i < NTHREADS; i++) {
        w[i].f = f;
        assert_int_equal(pthread_create(&t[i], NULL, churn_main, &w[i]), 0);
    }
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < NTHREADS; i++)
        CHECK_INT(w[i].rc, 0, "churn");
    CHECK_INT(queue_group_flush(f->g, 1), 0, "flush");
    queue_group_stats(f->g, &st);
    CHECK_INT(st.commits, NTHREADS * 50, "commits");
    CHECK_INT(st.dones, NTHREADS * 50, "removals");
    CHECK_INT(st.pending, 0, "pending");
    CHECK_INT(st.active_syncs <= st.commits, 1, "fsyncs at most commits");
    CHECK_INT(count_files(f, "active"), 0, "active/ empty");
    CHECK_INT(count_files(f, "busy"), 0, "busy/ empty");
    CHECK_INT(count_files(f, "tmp") <= QUEUE_SPARES, 1, "spares bounded");
    fixture_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_commits_share_fsync),
        cmocka_unit_test(test_commit_alone),
        cmocka_unit_test(test_commit_fsync_fails),
        cmocka_unit_test(test_done_batched),
        cmocka_unit_test(test_done_delay),
        cmocka_unit_test(test_spares),
        cmocka_unit_test(test_churn),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
