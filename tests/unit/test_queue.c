/* test_queue: the on-disk queue. Ids, commit and read back, update,
 * remove, refusal of corrupt files, and that a failed commit leaves
 * nothing behind. Each test works in its own mkdtemp directory. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../server/queue.h"
#include "testutil.h"

/* Asserts with a got/want message. */

struct fixture {
    char dir[PATH_MAX]; /* the mkdtemp directory */
    char qdir[PATH_MAX];
};

static int rm_entry(const char *path, const struct stat *st, int flag,
                    struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    const char *tmp = getenv("TMPDIR");

    if (f == NULL)
        return -1;
    pathf(f->dir, "%s/test_queue.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (mkdtemp(f->dir) == NULL) {
        free(f);
        return -1;
    }
    pathf(f->qdir, "%s/queue", f->dir);
    if (queue_dirs_init(f->qdir) != 0)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

/* Reads a whole file into a new NUL-terminated buffer. */
static char *slurp(const char *path, size_t *len_r)
{
    struct stat st;
    char *buf;
    int fd = open(path, O_RDONLY);

    if (fd < 0)
        return NULL;
    if (fstat(fd, &st) < 0) {
        close(fd);
        return NULL;
    }
    buf = malloc((size_t)st.st_size + 1);
    assert_non_null(buf);
    assert_int_equal(read(fd, buf, (size_t)st.st_size), st.st_size);
    buf[st.st_size] = '\0';
    close(fd);
    *len_r = (size_t)st.st_size;
    return buf;
}

/* Number of entries (besides . and ..) in dir. */
static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    int n = 0;

    if (d == NULL)
        return -1;
    while ((de = readdir(d)) != NULL)
        n += strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0;
    closedir(d);
    return n;
}

static void sub_path(char *out, const struct fixture *f, const char *sub,
                     const char *id)
{
    pathf(out, "%s/%s/%s", f->qdir, sub, id);
}

/* An envelope with the given recipients; id fresh. */
static void make_env(struct queue_env *env, const char *sender, char **rcpt,
                     size_t nrcpt)
{
    memset(env, 0, sizeof(*env));
    queue_id_new(env->id);
    env->time = 1760000000;
    snprintf(env->session, sizeof(env->session), "s4c1e90a2");
    snprintf(env->member, sizeof(env->member), "alice@example.org");
    snprintf(env->sender, sizeof(env->sender), "%s", sender);
    env->attempts = 0;
    env->next = 0;
    env->rcpt = rcpt;
    env->nrcpt = nrcpt;
}

static void test_id_format_unique(void **state)
{
    enum { N = 10000 };
    char(*ids)[QUEUE_ID_LEN + 1] = calloc(N, sizeof(*ids));

    (void)state;
    assert_non_null(ids);
    for (int i = 0; i < N; i++) {
        queue_id_new(ids[i]);
        CHECK_INT(strlen(ids[i]), QUEUE_ID_LEN, "id length");
        CHECK_INT(strspn(ids[i], "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
                  QUEUE_ID_LEN, "id characters");
    }
    /* Made one after the other, they must come out strictly ascending:
     * time order, and therefore no duplicates. */
    for (int i = 1; i < N; i++) {
        if (strcmp(ids[i - 1], ids[i]) >= 0)
            fail_msg("id %d: got %s after %s, want ascending", i, ids[i],
                     ids[i - 1]);
    }
    free(ids);
}

static void test_commit_parse(void **state)
{
    struct fixture *f = *state;
    char rcpt0[] = "bob@example.net";
    char rcpt1[] = "carol@example.com";
    char rcpt2[] = "\"dave x\"@example.org";
    char *rcpt[] = {rcpt0, rcpt1, rcpt2};
    static const char part1[] = "From: alice@example.org\r\n";
    static const char part2[] = "Subject: hi\r\n\r\n.leading dot\r\n";
    struct iovec iov[] = {{(void *)(uintptr_t)part1, sizeof(part1) - 1},
                          {(void *)(uintptr_t)part2, sizeof(part2) - 1}};
    struct queue_env env, got;
    char path[PATH_MAX];
    const char *err = NULL;
    size_t len = 0, off = 0;
    char *buf;

    make_env(&env, "alice@example.org", rcpt, 3);
    env.attempts = 2;
    env.next = 1760000300;
    CHECK_INT(queue_commit(f->qdir, &env, iov, 2), 0, "queue_commit");
    sub_path(path, f, "active", env.id);
    buf = slurp(path, &len);
    assert_non_null(buf);
    CHECK_INT(queue_env_parse(buf, len, &got, &off, &err), 0, "parse");
    CHECK_STR(got.id, env.id, "id");
    CHECK_INT(got.time, 1760000000, "time");
    CHECK_STR(got.session, "s4c1e90a2", "session");
    CHECK_STR(got.member, "alice@example.org", "member");
    CHECK_STR(got.sender, "alice@example.org", "sender");
    CHECK_INT(got.attempts, 2, "attempts");
    CHECK_INT(got.next, 1760000300, "next");
    CHECK_INT(got.nrcpt, 3, "nrcpt");
    for (size_t i = 0; i < 3; i++)
        CHECK_STR(got.rcpt[i], rcpt[i], "rcpt");
    CHECK_INT(len - off, sizeof(part1) - 1 + sizeof(part2) - 1, "body len");
    CHECK_STR(buf + off,
              "From: alice@example.org\r\nSubject: hi\r\n\r\n"
              ".leading dot\r\n",
              "body");
    /* tmp, active, busy, hold: nothing else. */
    CHECK_INT(count_entries(f->qdir), 4, "entries in queue_dir");
    pathf(path, "%s/tmp", f->qdir);
    CHECK_INT(count_entries(path), 0, "files left in tmp/");
    queue_env_clear(&got);
    free(buf);
}

static void test_null_sender(void **state)
{
    struct fixture *f = *state;
    char rcpt0[] = "bob@example.net";
    char *rcpt[] = {rcpt0};
    struct iovec iov = {(void *)(uintptr_t) "x\r\n", 3};
    struct queue_env env, got;
    char path[PATH_MAX];
    const char *err = NULL;
    size_t len = 0, off = 0;
    char *buf;

    make_env(&env, "", rcpt, 1);
    CHECK_INT(queue_commit(f->qdir, &env, &iov, 1), 0, "queue_commit");
    sub_path(path, f, "active", env.id);
    buf = slurp(path, &len);
    assert_non_null(buf);
    CHECK_INT(queue_env_parse(buf, len, &got, &off, &err), 0, "parse");
    CHECK_STR(got.sender, "", "sender");
    CHECK_STR(buf + off, "x\r\n", "body");
    queue_env_clear(&got);
    free(buf);
}

/* A valid envelope block followed by a body, for the corrupt-file
 * cases to start from. */
#define GOOD_HEAD                                                              \
    "SUBGATE-QUEUE 1\nid 0123456789AB\ntime 1760000000\nsession s1\n"          \
    "member a@example.org\nsender a@example.org\nattempts 0\nnext 0\n"

static const struct {
    const char *name;
    const char *text;
    const char *why; /* expected reason; NULL: parses */
} parse_cases[] = {
    {"valid", GOOD_HEAD "rcpt b@example.net\n\nbody\r\n", NULL},
    {"empty value without the space",
     "SUBGATE-QUEUE 1\nid 0123456789AB\ntime 1760000000\nsession\n"
     "member\nsender\nattempts 0\nnext 0\nrcpt b@example.net\n\n",
     NULL},
    {"unknown key", GOOD_HEAD "colour blue\nrcpt b@example.net\n\n",
     "unknown key"},
    {"missing blank line", GOOD_HEAD "rcpt b@example.net\n",
     "no end of envelope"},
    {"bad magic", "SUBGATE-QUEUE 2\nid 0123456789AB\n\n", "not a queue file"},
    {"empty", "", "not a queue file"},
    {"duplicate key", GOOD_HEAD "attempts 1\nrcpt b@example.net\n\n",
     "duplicate key"},
    {"missing key",
     "SUBGATE-QUEUE 1\nid 0123456789AB\ntime 1\nsession s\nmember m\n"
     "sender s\nattempts 0\nrcpt b@example.net\n\n",
     "missing key"},
    {"no recipients", GOOD_HEAD "\n", "no recipients"},
    {"empty recipient", GOOD_HEAD "rcpt \n\n", "bad recipient"},
    {"bad id", "SUBGATE-QUEUE 1\nid ../../etc/x\n\n", "bad id"},
    {"lower-case id", "SUBGATE-QUEUE 1\nid 0123456789ab\n\n", "bad id"},
    {"negative time", "SUBGATE-QUEUE 1\nid 0123456789AB\ntime -1\n\n",
     "bad time"},
    {"bad number", "SUBGATE-QUEUE 1\nid 0123456789AB\ntime 12x\n\n",
     "bad time"},
    {"huge number",
     "SUBGATE-QUEUE 1\nid 0123456789AB\ntime 99999999999999999999\n\n",
     "bad time"},
    {"leading zero", "SUBGATE-QUEUE 1\nid 0123456789AB\ntime 01\n\n",
     "bad time"},
    {"attempts too large",
     "SUBGATE-QUEUE 1\nid 0123456789AB\nattempts 1000001\n\n", "bad attempts"},
    {"carriage return", GOOD_HEAD "rcpt b@example.net\r\n\n", "bad recipient"},
    {"session too long",
     "SUBGATE-QUEUE 1\nid 0123456789AB\n"
     "session 0123456789012345678901234567890123\n\n",
     "bad session"},
};

/* Parses text from an exactly sized heap copy, so that ASan sees any
 * read past the end. */
static int parse_copy(const char *text, size_t len, struct queue_env *env,
                      size_t *off_r, const char **err_r)
{
    char *copy = malloc(len ? len : 1);
    int rc;

    assert_non_null(copy);
    memcpy(copy, text, len);
    rc = queue_env_parse(copy, len, env, off_r, err_r);
    free(copy);
    return rc;
}

static void test_parse_cases(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(parse_cases) / sizeof(parse_cases[0]); i++) {
        const char *text = parse_cases[i].text;
        const char *want = parse_cases[i].why, *err = "(none)";
        struct queue_env env;
        size_t off = 0;
        int rc = parse_copy(text, strlen(text), &env, &off, &err);

        if (want == NULL && rc != 0)
            fail_msg("%s: got -1 (%s), want 0", parse_cases[i].name, err);
        if (want != NULL && (rc != -1 || strcmp(err, want) != 0))
            fail_msg("%s: got %d (%s), want -1 (%s)", parse_cases[i].name, rc,
                     rc ? err : "ok", want);
        if (rc == 0 && env.nrcpt != 1)
            fail_msg("%s: got %zu recipients, want 1", parse_cases[i].name,
                     env.nrcpt);
        if (rc != 0 && (env.rcpt != NULL || env.nrcpt != 0))
            fail_msg("%s: recipients left after a refusal",
                     parse_cases[i].name);
        queue_env_clear(&env);
    }
}

/* Every proper prefix of a valid file up to the blank line is refused. */
static void test_parse_prefixes(void **state)
{
    static const char text[] = GOOD_HEAD "rcpt b@example.net\n\nbody";
    size_t head = strlen(text) - strlen("body");

    (void)state;
    for (size_t n = 0; n < head; n++) {
        struct queue_env env;
        const char *err = NULL;
        size_t off;

        if (parse_copy(text, n, &env, &off, &err) != -1)
            fail_msg("prefix of %zu octets: got 0, want -1", n);
    }
}

/* Builds GOOD_HEAD plus nrcpt recipients, the first of addrlen octets. */
static char *build_file(size_t nrcpt, size_t addrlen, size_t *len_r)
{
    size_t cap = strlen(GOOD_HEAD) + nrcpt * 32 + addrlen + 64, len;
    char *buf = malloc(cap);

    assert_non_null(buf);
    len = (size_t)snprintf(buf, cap, "%s", GOOD_HEAD);
    for (size_t i = 0; i < nrcpt; i++) {
        if (i == 0) {
            len += (size_t)snprintf(buf + len, cap - len, "rcpt ");
            memset(buf + len, 'a', addrlen - 12);
            len += addrlen - 12;
            len += (size_t)snprintf(buf + len, cap - len, "@example.net\n");
        } else {
            len += (size_t)snprintf(buf + len, cap - len,
                                    "rcpt r%zu@example.net\n", i);
        }
    }
    buf[len++] = '\n';
    *len_r = len;
    return buf;
}

/* At the limit parses, one over is refused. */
static void test_parse_limits(void **state)
{
    static const struct {
        const char *name;
        size_t nrcpt, addrlen;
        int want;
    } cases[] = {
        {"address at SG_MAX_PATH", 1, SG_MAX_PATH, 0},
        {"address one over", 1, SG_MAX_PATH + 1, -1},
        {"SG_MAX_RECIPIENTS recipients", SG_MAX_RECIPIENTS, 20, 0},
        {"one recipient too many", SG_MAX_RECIPIENTS + 1, 20, -1},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct queue_env env;
        const char *err = "(none)";
        size_t len = 0, off = 0;
        char *buf = build_file(cases[i].nrcpt, cases[i].addrlen, &len);
        int rc = queue_env_parse(buf, len, &env, &off, &err);

        if (rc != cases[i].want)
            fail_msg("%s: got %d (%s), want %d", cases[i].name, rc,
                     rc ? err : "ok", cases[i].want);
        if (rc == 0)
            CHECK_INT(env.nrcpt, cases[i].nrcpt, cases[i].name);
        queue_env_clear(&env);
        free(buf);
    }
}

/* A value the parser would refuse is not written either. */
static void test_commit_refuses_bad_env(void **state)
{
    struct fixture *f = *state;
    char nl0[] = "bob@example.net\nrcpt evil@example.com";
    char *nl[] = {nl0};
    char ok0[] = "bob@example.net";
    char *ok[] = {ok0};
    struct iovec iov = {(void *)(uintptr_t) "x\r\n", 3};
    struct queue_env env;
    char path[PATH_MAX];

    make_env(&env, "alice@example.org", nl, 1);
    CHECK_INT(queue_commit(f->qdir, &env, &iov, 1), -EINVAL, "newline");
    make_env(&env, "alice@example.org", ok, 0);
    CHECK_INT(queue_commit(f->qdir, &env, &iov, 1), -EINVAL, "no rcpt");
    make_env(&env, "alice@example.org", ok, 1);
    memcpy(env.id, "../../x", 8);
    CHECK_INT(queue_commit(f->qdir, &env, &iov, 1), -EINVAL, "bad id");
    pathf(path, "%s/active", f->qdir);
    CHECK_INT(count_entries(path), 0, "files in active/");
    pathf(path, "%s/tmp", f->qdir);
    CHECK_INT(count_entries(path), 0, "files in tmp/");
}

/* An id that is already queued is never overwritten. */
static void test_commit_no_overwrite(void **state)
{
    struct fixture *f = *state;
    char rcpt0[] = "bob@example.net";
    char *rcpt[] = {rcpt0};
    struct iovec one = {(void *)(uintptr_t) "one\r\n", 5};
    struct iovec two = {(void *)(uintptr_t) "two\r\n", 5};
    struct queue_env env, got;
    char path[PATH_MAX];
    const char *err;
    size_t len = 0, off = 0;
    char *buf;

    make_env(&env, "alice@example.org", rcpt, 1);
    CHECK_INT(queue_commit(f->qdir, &env, &one, 1), 0, "first commit");
    CHECK_INT(queue_commit(f->qdir, &env, &two, 1), -EEXIST, "second commit");
    sub_path(path, f, "active", env.id);
    buf = slurp(path, &len);
    assert_non_null(buf);
    CHECK_INT(queue_env_parse(buf, len, &got, &off, &err), 0, "parse");
    CHECK_STR(buf + off, "one\r\n", "body");
    pathf(path, "%s/tmp", f->qdir);
    CHECK_INT(count_entries(path), 0, "files in tmp/");
    queue_env_clear(&got);
    free(buf);
}

/* More pieces than one writev() takes (IOV_MAX). */
static void test_commit_many_iov(void **state)
{
    struct fixture *f = *state;
    enum { N = 3000 };
    char rcpt0[] = "bob@example.net";
    char *rcpt[] = {rcpt0};
    struct iovec *iov = calloc(N, sizeof(*iov));
    struct queue_env env, got;
    char path[PATH_MAX];
    const char *err;
    size_t len = 0, off = 0;
    char *buf;

    assert_non_null(iov);
    for (int i = 0; i < N; i++) {
        iov[i].iov_base = (void *)(uintptr_t)(i % 2 ? "ab\r\n" : "");
        iov[i].iov_len = i % 2 ? 4 : 0;
    }
    make_env(&env, "alice@example.org", rcpt, 1);
    CHECK_INT(queue_commit(f->qdir, &env, iov, N), 0, "queue_commit");
    sub_path(path, f, "active", env.id);
    buf = slurp(path, &len);
    assert_non_null(buf);
    CHECK_INT(queue_env_parse(buf, len, &got, &off, &err), 0, "parse");
    CHECK_INT(len - off, (N / 2) * 4, "body length");
    queue_env_clear(&got);
    free(buf);
    free(iov);
}

static void test_update_keeps_body(void **state)
{
    struct fixture *f = *state;
    char rcpt0[] = "bob@example.net";
    char rcpt1[] = "carol@example.com";
    char *rcpt[] = {rcpt0, rcpt1};
    char left0[] = "carol@example.com";
    char *left[] = {left0};
    static const char body[] = "Subject: x\r\n\r\nbody\r\n";
    struct iovec iov = {(void *)(uintptr_t)body, sizeof(body) - 1};
    struct queue_env env, got;
    char path[PATH_MAX];
    const char *err;
    size_t len = 0, off = 0;
    char *buf;

    make_env(&env, "alice@example.org", rcpt, 2);
    CHECK_INT(queue_commit(f->qdir, &env, &iov, 1), 0, "queue_commit");
    env.rcpt = left;
    env.nrcpt = 1;
    env.attempts = 1;
    env.next = 1760000060;
    CHECK_INT(queue_update(f->qdir, &env, body, sizeof(body) - 1), 0,
              "queue_update");
    sub_path(path, f, "active", env.id);
    buf = slurp(path, &len);
    assert_non_null(buf);
    CHECK_INT(queue_env_parse(buf, len, &got, &off, &err), 0, "parse");
    CHECK_INT(got.nrcpt, 1, "nrcpt");
    CHECK_STR(got.rcpt[0], "carol@example.com", "rcpt");
    CHECK_INT(got.attempts, 1, "attempts");
    CHECK_INT(got.next, 1760000060, "next");
    CHECK_INT(got.time, 1760000000, "time");
    CHECK_STR(buf + off, body, "body");
    pathf(path, "%s/tmp", f->qdir);
    CHECK_INT(count_entries(path), 0, "files in tmp/");
    queue_env_clear(&got);
    free(buf);
}

/* A message removed meanwhile is not brought back by an update. */
static void test_update_removed(void **state)
{
    struct fixture *f = *state;
    char rcpt0[] = "bob@example.net";
    char *rcpt[] = {rcpt0};
    struct iovec iov = {(void *)(uintptr_t) "x\r\n", 3};
    struct queue_env env;
    char path[PATH_MAX];

    make_env(&env, "alice@example.org", rcpt, 1);
    CHECK_INT(queue_commit(f->qdir, &env, &iov, 1), 0, "queue_commit");
    CHECK_INT(queue_remove(f->qdir, env.id), 0, "queue_remove");
    CHECK_INT(queue_update(f->qdir, &env, "x\r\n", 3), -ENOENT, "queue_update");
    pathf(path, "%s/active", f->qdir);
    CHECK_INT(count_entries(path), 0, "files in active/");
}

static void test_remove(void **state)
{
    struct fixture *f = *state;
    char rcpt0[] = "bob@example.net";
    char *rcpt[] = {rcpt0};
    struct iovec iov = {(void *)(uintptr_t) "x\r\n", 3};
    struct queue_env env;
    char path[PATH_MAX];

    make_env(&env, "alice@example.org", rcpt, 1);
    CHECK_INT(queue_commit(f->qdir, &env, &iov, 1), 0, "queue_commit");
    sub_path(path, f, "active", env.id);
    CHECK_INT(access(path, F_OK), 0, "file exists");
    CHECK_INT(queue_remove(f->qdir, env.id), 0, "queue_remove");
    CHECK_INT(access(path, F_OK), -1, "file gone");
    CHECK_INT(queue_remove(f->qdir, env.id), -ENOENT, "second remove");
    CHECK_INT(queue_remove(f->qdir, "../tmp"), -EINVAL, "bad id");
}

/* A queue_dir that does not exist: the commit fails, nothing appears. */
static void test_commit_missing_dir(void **state)
{
    struct fixture *f = *state;
    char rcpt0[] = "bob@example.net";
    char *rcpt[] = {rcpt0};
    struct iovec iov = {(void *)(uintptr_t) "x\r\n", 3};
    struct queue_env env;
    char path[PATH_MAX], qdir[PATH_MAX];
    int rc;

    make_env(&env, "alice@example.org", rcpt, 1);
    pathf(qdir, "%s/none", f->dir);
    rc = queue_commit(qdir, &env, &iov, 1);
    CHECK_INT(rc, -ENOENT, "commit into a missing queue_dir");
    CHECK_INT(access(qdir, F_OK), -1, "queue_dir still missing");
    /* tmp/ there but active/ gone: the rename fails, tmp/ is cleaned. */
    pathf(path, "%s/active", f->qdir);
    CHECK_INT(rmdir(path), 0, "rmdir active");
    rc = queue_commit(f->qdir, &env, &iov, 1);
    CHECK_INT(rc, -ENOENT, "commit without active/");
    pathf(path, "%s/tmp", f->qdir);
    CHECK_INT(count_entries(path), 0, "files in tmp/");
    CHECK_INT(count_entries(f->qdir), 3, "entries in queue_dir");
}

static void test_dirs_init(void **state)
{
    struct fixture *f = *state;
    char path[PATH_MAX];
    int fd;

    CHECK_INT(queue_dirs_init(f->qdir), 0, "again on existing dirs");
    pathf(path, "%s/file", f->dir);
    fd = open(path, O_WRONLY | O_CREAT, 0600);
    assert_true(fd >= 0);
    close(fd);
    CHECK_INT(queue_dirs_init(path), -ENOTDIR, "a file in the way");
}

/* Commits a one-recipient message with body; returns its id in env. */
static void commit_one(const struct fixture *f, struct queue_env *env,
                       char **rcpt, const char *body)
{
    struct iovec iov = {(void *)(uintptr_t)body, strlen(body)};

    make_env(env, "alice@example.org", rcpt, 1);
    CHECK_INT(queue_commit(f->qdir, env, &iov, 1), 0, "queue_commit");
}

/* 1 if <sub>/id exists. */
static int exists(const struct fixture *f, const char *sub, const char *id)
{
    char path[PATH_MAX];

    sub_path(path, f, sub, id);
    return access(path, F_OK) == 0;
}

/* The claim moves the file to busy/; settle writes the new envelope with
 * the optional keys and brings it back; the body stays. */
static void test_claim_settle(void **state)
{
    struct fixture *f = *state;
    char rcpt0[] = "bob@example.net", *rcpt[] = {rcpt0};
    static const char body[] = "Subject: x\r\n\r\nbody\r\n";
    struct queue_env env, got;
    enum queue_where w;
    const char *err = NULL;
    long long size = 0;
    char path[PATH_MAX];
    size_t len = 0, off = 0;
    char *buf;

    commit_one(f, &env, rcpt, body);
    CHECK_INT(queue_claim(f->qdir, env.id), 0, "claim");
    CHECK_INT(exists(f, "active", env.id), 0, "in active/ after claim");
    CHECK_INT(exists(f, "busy", env.id), 1, "in busy/ after claim");
    CHECK_INT(queue_locate(f->qdir, env.id, &w), 1, "locate");
    CHECK_INT(w, QUEUE_BUSY, "where");
    CHECK_INT(queue_claim(f->qdir, env.id), -ENOENT, "second claim");
    env.attempts = 3;
    env.next = 1760000999;
    env.warned = 1;
    snprintf(env.sign, sizeof(env.sign), "example.org");
    CHECK_INT(queue_settle(f->qdir, &env, body, sizeof(body) - 1), 0, "settle");
    CHECK_INT(exists(f, "busy", env.id), 0, "in busy/ after settle");
    sub_path(path, f, "active", env.id);
    buf = slurp(path, &len);
    assert_non_null(buf);
    if (strstr(buf, "\nsign example.org\nwarned 1\n") == NULL)
        fail_msg("optional keys not written: %s", buf);
    CHECK_INT(queue_env_parse(buf, len, &got, &off, &err), 0, "parse");
    CHECK_INT(got.attempts, 3, "attempts");
    CHECK_INT(got.next, 1760000999, "next");
    CHECK_INT(got.warned, 1, "warned");
    CHECK_STR(got.sign, "example.org", "sign");
    CHECK_STR(buf + off, body, "body");
    queue_env_clear(&got);
    free(buf);
    CHECK_INT(queue_read_env(f->qdir, QUEUE_ACTIVE, env.id, &got, &size, &err),
              0, "read_env");
    CHECK_INT(size, sizeof(body) - 1, "message size");
    CHECK_INT(got.nrcpt, 1, "read_env nrcpt");
    queue_env_clear(&got);
    pathf(path, "%s/tmp", f->qdir);
    CHECK_INT(count_entries(path), 0, "files in tmp/");
}

/* A message deleted while it was being delivered stays deleted. */
static void test_settle_after_delete(void **state)
{
    struct fixture *f = *state;
    char rcpt0[] = "bob@example.net", *rcpt[] = {rcpt0};
    struct queue_env env;
    char path[PATH_MAX];

    commit_one(f, &env, rcpt, "x\r\n");
    CHECK_INT(queue_claim(f->qdir, env.id), 0, "claim");
    CHECK_INT(queue_delete(f->qdir, env.id), 0, "delete");
    CHECK_INT(queue_settle(f->qdir, &env, "x\r\n", 3), -ENOENT, "settle");
    CHECK_INT(queue_unclaim(f->qdir, env.id), -ENOENT, "unclaim");
    CHECK_INT(queue_done(f->qdir, env.id), -ENOENT, "done");
    static const char *const subs[] = {"tmp", "active", "busy", "hold"};
    for (size_t i = 0; i < 4; i++) {
        pathf(path, "%s/%s", f->qdir, subs[i]);
        CHECK_INT(count_entries(path), 0, subs[i]);
    }
    CHECK_INT(queue_delete(f->qdir, env.id), -ENOENT, "delete again");
}

static void test_unclaim_done_recover(void **state)
{
    struct fixture *f = *state;
    char rcpt0[] = "bob@example.net", *rcpt[] = {rcpt0};
    struct queue_env a, b, c;

    commit_one(f, &a, rcpt, "a\r\n");
    commit_one(f, &b, rcpt, "b\r\n");
    commit_one(f, &c, rcpt, "c\r\n");
    CHECK_INT(queue_claim(f->qdir, a.id), 0, "claim a");
    CHECK_INT(queue_unclaim(f->qdir, a.id), 0, "unclaim a");
    CHECK_INT(exists(f, "active", a.id), 1, "a back in active/");
    CHECK_INT(queue_claim(f->qdir, a.id), 0, "claim a again");
    CHECK_INT(queue_done(f->qdir, a.id), 0, "done a");
    CHECK_INT(exists(f, "busy", a.id) + exists(f, "active", a.id), 0, "a gone");
    /* A runner died with b and c claimed. */
    CHECK_INT(queue_claim(f->qdir, b.id), 0, "claim b");
    CHECK_INT(queue_claim(f->qdir, c.id), 0, "claim c");
    CHECK_INT(queue_recover(f->qdir), 2, "recovered");
    CHECK_INT(exists(f, "active", b.id) + exists(f, "active", c.id), 2,
              "b and c in active/");
    CHECK_INT(queue_recover(f->qdir), 0, "nothing more");
}

static void test_hold_release_flush(void **state)
{
    struct fixture *f = *state;
    char rcpt0[] = "bob@example.net", *rcpt[] = {rcpt0};
    struct timespec old[2] = {{.tv_sec = 1000000000}, {.tv_sec = 1000000000}};
    struct queue_env env;
    enum queue_where w;
    char path[PATH_MAX];
    struct stat st;

    commit_one(f, &env, rcpt, "x\r\n");
    sub_path(path, f, "active", env.id);
    CHECK_INT(utimensat(AT_FDCWD, path, old, 0), 0, "age the file");
    CHECK_INT(queue_flush(f->qdir, env.id), 0, "flush");
    CHECK_INT(stat(path, &st), 0, "stat");
    if (st.st_mtime <= 1000000000)
        fail_msg("flush did not touch the file");
    CHECK_INT(queue_hold(f->qdir, env.id), 0, "hold");
    CHECK_INT(queue_hold(f->qdir, env.id), 0, "hold again");
    CHECK_INT(queue_locate(f->qdir, env.id, &w), 1, "locate");
    CHECK_INT(w, QUEUE_HOLD, "held");
    CHECK_INT(queue_claim(f->qdir, env.id), -ENOENT, "claim while held");
    CHECK_INT(queue_flush(f->qdir, env.id), -EPERM, "flush while held");
    CHECK_INT(queue_release(f->qdir, env.id), 0, "release");
    CHECK_INT(queue_release(f->qdir, env.id), -ENOENT, "release again");
    CHECK_INT(exists(f, "active", env.id), 1, "back in active/");
    CHECK_INT(queue_claim(f->qdir, env.id), 0, "claim");
    CHECK_INT(queue_hold(f->qdir, env.id), -EBUSY, "hold in delivery");
    CHECK_INT(queue_flush(f->qdir, env.id), 0, "flush in delivery");
    CHECK_INT(queue_unclaim(f->qdir, env.id), 0, "unclaim");
    CHECK_INT(queue_delete(f->qdir, env.id), 0, "delete");
    CHECK_INT(queue_locate(f->qdir, env.id, &w), 0, "nowhere");
    CHECK_INT(queue_hold(f->qdir, env.id), -ENOENT, "hold missing");
    CHECK_INT(queue_flush(f->qdir, env.id), -ENOENT, "flush missing");
    CHECK_INT(queue_flush(f->qdir, "../../etc"), -EINVAL, "bad id");
}

/* The optional keys: absent is fine, at most once, bounded values. */
static void test_parse_optional(void **state)
{
    static const struct {
        const char *name, *text, *why;
    } cases[] = {
        {"warned 0", GOOD_HEAD "warned 0\nrcpt b@example.net\n\n", NULL},
        {"sign", GOOD_HEAD "sign example.org\nrcpt b@example.net\n\n", NULL},
        {"warned 2", GOOD_HEAD "warned 2\nrcpt b@example.net\n\n",
         "bad warned"},
        {"empty sign", GOOD_HEAD "sign\nrcpt b@example.net\n\n",
         "bad sign domain"},
        {"two signs",
         GOOD_HEAD "sign a.org\nsign b.org\nrcpt b@example.net\n\n",
         "duplicate key"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *err = "(none)";
        struct queue_env env;
        size_t off = 0;
        int rc =
            parse_copy(cases[i].text, strlen(cases[i].text), &env, &off, &err);

        if (cases[i].why == NULL && rc != 0)
            fail_msg("%s: got -1 (%s), want 0", cases[i].name, err);
        if (cases[i].why != NULL && (rc != -1 || strcmp(err, cases[i].why)))
            fail_msg("%s: got %d (%s), want -1 (%s)", cases[i].name, rc,
                     rc ? err : "ok", cases[i].why);
        queue_env_clear(&env);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_id_format_unique),
        cmocka_unit_test_setup_teardown(test_commit_parse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_null_sender, setup, teardown),
        cmocka_unit_test(test_parse_cases),
        cmocka_unit_test(test_parse_prefixes),
        cmocka_unit_test(test_parse_limits),
        cmocka_unit_test_setup_teardown(test_commit_refuses_bad_env, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_commit_no_overwrite, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_commit_many_iov, setup, teardown),
        cmocka_unit_test_setup_teardown(test_update_keeps_body, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_update_removed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_remove, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commit_missing_dir, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_dirs_init, setup, teardown),
        cmocka_unit_test_setup_teardown(test_claim_settle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_settle_after_delete, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_unclaim_done_recover, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_hold_release_flush, setup,
                                        teardown),
        cmocka_unit_test(test_parse_optional),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
