/* queue: the durable on-disk queue; the format is documented in queue.h and
 * docs/queue.md, the envelope parser is in queue_env.c. Every write goes
 * to tmp/ first (a new file, or a spare written over), is fsync'd, then
 * renamed into active/, and the directory is fsync'd (by the caller's
 * queue_sync_cb when it shares that fsync: queue_group.c), so a crash at
 * any point leaves either the complete old state or the complete new
 * one. */
#include "queue.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "../common/fsutil.h"
#include "../common/log.h"
#include "../common/xalloc.h"

static const char queue_digits[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";

/* Microseconds since the epoch from CLOCK_REALTIME. */
static uint64_t queue_now_usec(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* An id is one number written as 12 base-36 digits, most significant
 * first, so that string order is numeric order: the microsecond of
 * creation times 1024 plus 10 random bits. 36^12 / 1024 microseconds
 * reach beyond the year 2100. Waiting for the clock to move on before
 * returning keeps ids from one thread distinct without shared state; the
 * random bits separate processes that hit the same microsecond, and
 * queue_commit() refuses to replace an existing file should that fail. */
void queue_id_new(char *id)
{
    uint64_t usec = queue_now_usec();
    uint16_t rnd = 0;
    uint64_t v;

    while (getrandom(&rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
        if (errno != EINTR) {
            /* getrandom() on Linux >= 3.17 with a seeded pool does not
             * fail otherwise; the time part still orders and the
             * no-replace rename still protects. */
            rnd = (uint16_t)getpid();
            break;
        }
    }
    v = usec * 1024u + (rnd & 1023u);
    for (int i = QUEUE_ID_LEN - 1; i >= 0; i--) {
        id[i] = queue_digits[v % 36u];
        v /= 36u;
    }
    id[QUEUE_ID_LEN] = '\0';
    while (queue_now_usec() == usec) {
        /* at most one microsecond */
    }
}

/* Only names that pass this are ever joined to a directory path. */
int queue_id_valid(const char *id)
{
    size_t i;

    for (i = 0; i < QUEUE_ID_LEN; i++) {
        char c = id[i];
        if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z')))
            return 0;
    }
    return id[i] == '\0';
}

/* Joins "dir/sub/name" into out. 0 or -ENAMETOOLONG. */
static int queue_path(char *out, size_t outlen, const char *dir,
                      const char *sub, const char *name, const char *suffix)
{
    int n = snprintf(out, outlen, "%s/%s%s%s%s", dir, sub, name ? "/" : "",
                     name ? name : "", suffix);

    if (n < 0 || (size_t)n >= outlen)
        return -ENAMETOOLONG;
    return 0;
}

static int queue_mkdir(const char *path)
{
    if (mkdir(path, 0700) == 0)
        return 0;
    if (errno == EEXIST) {
        struct stat st;
        if (stat(path, &st) < 0)
            return -errno;
        return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
    }
    return -errno;
}

int queue_dirs_init(const char *queue_dir)
{
    char path[PATH_MAX];
    static const char *const subs[] = {"tmp", "active", "busy", "hold"};
    int rc;

    rc = queue_mkdir(queue_dir);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
        rc = queue_path(path, sizeof(path), queue_dir, subs[i], NULL, "");
        if (rc < 0)
            return rc;
        rc = queue_mkdir(path);
        if (rc < 0)
            return rc;
    }
    return 0;
}

const char *queue_dir_name(enum queue_where w)
{
    switch (w) {
    case QUEUE_ACTIVE:
        return "active";
    case QUEUE_BUSY:
        return "busy";
    case QUEUE_HOLD:
        return "hold";
    }
    return "active";
}

/* fsync()s a directory so that a rename or unlink in it is durable. */
static int queue_fsync_dir(const char *queue_dir, const char *sub)
{
    char path[PATH_MAX];
    int rc;

    rc = queue_path(path, sizeof(path), queue_dir, sub, NULL, "");
    if (rc < 0)
        return rc;
    return fsutil_sync_dir(path);
}

/* Writes all of iov[0..cnt) to fd, resuming after short writes and EINTR.
 * iov is modified. 0 or -errno. */
static int queue_writev_all(int fd, struct iovec *iov, int cnt)
{
    while (cnt > 0) {
        ssize_t n;

        if (iov->iov_len == 0) {
            iov++;
            cnt--;
            continue;
        }
        n = writev(fd, iov, cnt < IOV_MAX ? cnt : IOV_MAX);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return -EIO;
        while (cnt > 0 && (size_t)n >= iov->iov_len) {
            n -= (ssize_t)iov->iov_len;
            iov++;
            cnt--;
        }
        if (cnt > 0) {
            iov->iov_base = (char *)iov->iov_base + n;
            iov->iov_len -= (size_t)n;
        }
    }
    return 0;
}

/* 1 if s is at most max octets and has no control characters (a value
 * must stay on its line). Empty is allowed. */
static int queue_value_ok(const char *s, size_t max)
{
    size_t n = 0;

    for (; s[n] != '\0'; n++) {
        unsigned char c = (unsigned char)s[n];
        if (n >= max || c < 0x20 || c == 0x7f)
            return 0;
    }
    return 1;
}

/* Formats the envelope block of env into a new buffer; *len_r its length.
 * NULL with *err_r = -EINVAL for an envelope that could not be read back
 * (bad id, a value with a newline, no recipients, over the bounds). */
static char *queue_env_format(const struct queue_env *env, size_t *len_r,
                              int *err_r)
{
    size_t cap = SG_MAX_QUEUE_ENVELOPE, len;
    char *buf;
    int n;

    *err_r = -EINVAL;
    if (!queue_id_valid(env->id) || env->nrcpt == 0 ||
        env->nrcpt > SG_MAX_RECIPIENTS ||
        !queue_value_ok(env->session, sizeof(env->session) - 1) ||
        !queue_value_ok(env->member, SG_MAX_PATH) ||
        !queue_value_ok(env->sender, SG_MAX_PATH) ||
        !queue_value_ok(env->sign, SG_MAX_DOMAIN) || env->warned > 1 ||
        env->time < 0 || env->time > QUEUE_MAX_TIME || env->next < 0 ||
        env->next > QUEUE_MAX_TIME || env->attempts > QUEUE_MAX_ATTEMPTS)
        return NULL;
    for (size_t i = 0; i < env->nrcpt; i++) {
        if (env->rcpt[i] == NULL || env->rcpt[i][0] == '\0' ||
            !queue_value_ok(env->rcpt[i], SG_MAX_PATH))
            return NULL;
    }
    buf = xmalloc(cap);
    n = snprintf(buf, cap,
                 QUEUE_MAGIC "id %s\ntime %lld\nsession %s\nmember %s\n"
                             "sender %s\nattempts %u\nnext %lld\n",
                 env->id, env->time, env->session, env->member, env->sender,
                 env->attempts, env->next);
    if (n < 0 || (size_t)n >= cap)
        goto toolong;
    len = (size_t)n;
    /* The optional keys only when set, so that files without them stay
     * byte for byte what they were. */
    if (env->sign[0] != '\0' || env->warned) {
        n = snprintf(buf + len, cap - len, "%s%s%s%s",
                     env->sign[0] ? "sign " : "", env->sign,
                     env->sign[0] ? "\n" : "", env->warned ? "warned 1\n" : "");
        if (n < 0 || (size_t)n >= cap - len)
            goto toolong;
        len += (size_t)n;
    }
    for (size_t i = 0; i < env->nrcpt; i++) {
        n = snprintf(buf + len, cap - len, "rcpt %s\n", env->rcpt[i]);
        if (n < 0 || (size_t)n >= cap - len)
            goto toolong;
        len += (size_t)n;
    }
    if (len + 1 >= cap)
        goto toolong;
    buf[len++] = '\n';
    *len_r = len;
    return buf;
toolong:
    free(buf);
    return NULL;
}

/* Opens tmp for writing: with reuse the spare that queue_spare_take()
 * put there, else (or when it has gone meanwhile) a new file. The
 * descriptor or -errno. */
static int queue_open_tmp(const char *tmp, int reuse)
{
    int fd;

    if (reuse) {
        fd = open(tmp, O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
        if (fd >= 0 || errno != ENOENT)
            return fd < 0 ? -errno : fd;
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    return fd < 0 ? -errno : fd;
}

/* Writes the envelope block and the message to tmp, a new file or with
 * reuse an old one overwritten from its start and cut to the new length,
 * fsyncs and closes it. On failure the file is removed. 0 or -errno. */
static int queue_write_file(const char *tmp, int reuse, const char *envbuf,
                            size_t envlen, const struct iovec *iov, int iovcnt)
{
    struct iovec *v;
    off_t total = (off_t)envlen;
    int fd, rc;

    if (iovcnt < 0)
        return -EINVAL;
    fd = queue_open_tmp(tmp, reuse);
    if (fd < 0)
        return fd;
    v = xcalloc((size_t)iovcnt + 1, sizeof(*v));
    v[0].iov_base = (void *)(uintptr_t)envbuf;
    v[0].iov_len = envlen;
    for (int i = 0; i < iovcnt; i++) {
        v[i + 1] = iov[i];
        total += (off_t)iov[i].iov_len;
    }
    rc = queue_writev_all(fd, v, iovcnt + 1);
    free(v);
    /* Overwriting in place keeps the blocks the old content had; only
     * what is left beyond the new end is cut off. */
    if (rc == 0 && reuse && ftruncate(fd, total) < 0)
        rc = -errno;
    if (rc == 0 && fsync(fd) < 0)
        rc = -errno;
    if (close(fd) < 0 && rc == 0)
        rc = -errno;
    if (rc < 0)
        unlink(tmp);
    return rc;
}

/* rename() that fails with EEXIST instead of replacing: an id collision
 * must never overwrite a queued message. Falls back to link() + unlink()
 * on file systems without RENAME_NOREPLACE. */
static int queue_rename_noreplace(const char *from, const char *to)
{
    if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0)
        return 0;
    if (errno != EINVAL && errno != ENOSYS)
        return -errno;
    if (link(from, to) < 0)
        return -errno;
    unlink(from);
    return 0;
}

int queue_commit(const char *queue_dir, const struct queue_env *env,
                 const struct iovec *iov, int iovcnt)
{
    return queue_commit_via(queue_dir, env, iov, iovcnt, 0, NULL, NULL);
}

int queue_commit_via(const char *queue_dir, const struct queue_env *env,
                     const struct iovec *iov, int iovcnt, int reuse,
                     queue_sync_cb sync, void *arg)
{
    char tmp[PATH_MAX], act[PATH_MAX];
    size_t envlen;
    char *envbuf;
    int rc;

    envbuf = queue_env_format(env, &envlen, &rc);
    if (envbuf == NULL)
        return rc;
    if ((rc = queue_path(tmp, sizeof(tmp), queue_dir, "tmp", env->id, "")) <
            0 ||
        (rc = queue_path(act, sizeof(act), queue_dir, "active", env->id, "")) <
            0) {
        free(envbuf);
        return rc;
    }
    rc = queue_write_file(tmp, reuse, envbuf, envlen, iov, iovcnt);
    free(envbuf);
    if (rc < 0)
        return rc;
    rc = queue_rename_noreplace(tmp, act);
    if (rc < 0) {
        unlink(tmp);
        return rc;
    }
    rc = sync != NULL ? sync(arg) : queue_fsync_dir(queue_dir, "active");
    if (rc < 0) {
        /* Not durable: the client will be told to try again, so the copy
         * must not be delivered as well. */
        unlink(act);
        return rc;
    }
    return 0;
}

/* Writes env and body to tmp/ID.new for a rewrite of the message in sub,
 * after removing a left-over from a crash during an earlier rewrite. tmp
 * and dst (sub/ID) are PATH_MAX buffers filled here. With must_exist, a
 * dst deleted meanwhile (by the admin tool) stays deleted: -ENOENT, and
 * nothing is written. 0 or -errno; on failure no new file remains. */
static int queue_write_new(const char *queue_dir, const struct queue_env *env,
                           const char *body, size_t bodylen, const char *sub,
                           int must_exist, char *tmp, char *dst)
{
    struct iovec iov;
    size_t envlen;
    char *envbuf;
    int rc;

    envbuf = queue_env_format(env, &envlen, &rc);
    if (envbuf == NULL)
        return rc;
    if ((rc = queue_path(tmp, PATH_MAX, queue_dir, "tmp", env->id, ".new")) <
            0 ||
        (rc = queue_path(dst, PATH_MAX, queue_dir, sub, env->id, "")) < 0)
        goto out;
    if (must_exist && access(dst, F_OK) < 0) {
        rc = -errno;
        goto out;
    }
    if (unlink(tmp) < 0 && errno != ENOENT) {
        rc = -errno;
        goto out;
    }
    iov.iov_base = (void *)(uintptr_t)body;
    iov.iov_len = bodylen;
    rc = queue_write_file(tmp, 0, envbuf, envlen, &iov, 1);
out:
    free(envbuf);
    return rc;
}

int queue_update(const char *queue_dir, const struct queue_env *env,
                 const char *body, size_t bodylen)
{
    char tmp[PATH_MAX], act[PATH_MAX];
    int rc;

    rc = queue_write_new(queue_dir, env, body, bodylen, "active", 1, tmp, act);
    if (rc < 0)
        return rc;
    if (rename(tmp, act) < 0) {
        rc = -errno;
        unlink(tmp);
        return rc;
    }
    return queue_fsync_dir(queue_dir, "active");
}

int queue_remove(const char *queue_dir, const char *id)
{
    return queue_delete(queue_dir, id);
}

/* Opens the queue file id in w for reading, refusing links and anything
 * but a regular file; *st its status. The descriptor, or -errno. */
static int queue_open_file(const char *queue_dir, enum queue_where w,
                           const char *id, struct stat *st)
{
    char path[PATH_MAX];
    int fd, rc;

    if (!queue_id_valid(id))
        return -EINVAL;
    rc = queue_path(path, sizeof(path), queue_dir, queue_dir_name(w), id, "");
    if (rc < 0)
        return rc;
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -errno;
    if (fstat(fd, st) < 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    if (!S_ISREG(st->st_mode)) {
        close(fd);
        return -EINVAL;
    }
    return fd;
}

int queue_read(const char *queue_dir, enum queue_where w, const char *id,
               size_t max, char **buf_r, size_t *len_r)
{
    struct stat st;
    size_t len = 0;
    char *buf;
    int fd, err;

    fd = queue_open_file(queue_dir, w, id, &st);
    if (fd < 0)
        return fd;
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
    buf[len] = '\0';
    *buf_r = buf;
    *len_r = len;
    return 0;
}

int queue_read_env(const char *queue_dir, enum queue_where w, const char *id,
                   struct queue_env *env, long long *msgsize_r,
                   const char **err_r)
{
    struct stat st;
    size_t len = 0, cap = 0, off = 0;
    char *buf = NULL;
    int fd, rc;

    *err_r = "unreadable";
    memset(env, 0, sizeof(*env));
    fd = queue_open_file(queue_dir, w, id, &st);
    if (fd < 0)
        return fd;
    /* Reads in growing steps until the envelope ends: most are short. */
    for (;;) {
        ssize_t n;

        if (len == cap) {
            if (cap >= SG_MAX_QUEUE_ENVELOPE + 1)
                break;
            cap = cap ? cap * 4 : 16384;
            if (cap > SG_MAX_QUEUE_ENVELOPE + 1)
                cap = SG_MAX_QUEUE_ENVELOPE + 1;
            buf = xrealloc(buf, cap);
        }
        n = read(fd, buf + len, cap - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = -errno;
            close(fd);
            free(buf);
            return rc;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (memmem(buf, len, "\n\n", 2) != NULL)
            break;
    }
    close(fd);
    rc = queue_env_parse(buf ? buf : "", len, env, &off, err_r);
    free(buf);
    if (rc < 0)
        return -EINVAL;
    *msgsize_r = (long long)st.st_size - (long long)off;
    return 0;
}

/* Renames <from>/ID to <to>/ID without replacing and fsyncs <to>. */
static int queue_move(const char *queue_dir, const char *id,
                      enum queue_where from, enum queue_where to)
{
    char src[PATH_MAX], dst[PATH_MAX];
    int rc;

    if (!queue_id_valid(id))
        return -EINVAL;
    if ((rc = queue_path(src, sizeof(src), queue_dir, queue_dir_name(from), id,
                         "")) < 0 ||
        (rc = queue_path(dst, sizeof(dst), queue_dir, queue_dir_name(to), id,
                         "")) < 0)
        return rc;
    rc = queue_rename_noreplace(src, dst);
    if (rc < 0)
        return rc;
    return queue_fsync_dir(queue_dir, queue_dir_name(to));
}

int queue_claim(const char *queue_dir, const char *id)
{
    /* No fsync is needed for correctness here: after a crash the file is
     * in active/ or in busy/, and queue_recover() moves it back. */
    char src[PATH_MAX], dst[PATH_MAX];
    int rc;

    if (!queue_id_valid(id))
        return -EINVAL;
    if ((rc = queue_path(src, sizeof(src), queue_dir, "active", id, "")) < 0 ||
        (rc = queue_path(dst, sizeof(dst), queue_dir, "busy", id, "")) < 0)
        return rc;
    return queue_rename_noreplace(src, dst);
}

int queue_unclaim(const char *queue_dir, const char *id)
{
    return queue_move(queue_dir, id, QUEUE_BUSY, QUEUE_ACTIVE);
}

/* Puts the file tmp in the place of dst only if dst exists: an atomic
 * exchange, so that a dst deleted meanwhile is not brought back. On file
 * systems without RENAME_EXCHANGE a check then a rename does the same
 * with a short window. tmp is gone afterwards. 0, -ENOENT, -errno. */
static int queue_replace_existing(const char *tmp, const char *dst)
{
    int rc;

    if (renameat2(AT_FDCWD, tmp, AT_FDCWD, dst, RENAME_EXCHANGE) == 0) {
        unlink(tmp); /* now the old content */
        return 0;
    }
    if (errno == EINVAL || errno == ENOSYS) {
        if (access(dst, F_OK) == 0 && rename(tmp, dst) == 0)
            return 0;
    }
    rc = -errno;
    unlink(tmp);
    return rc;
}

int queue_settle(const char *queue_dir, const struct queue_env *env,
                 const char *body, size_t bodylen)
{
    char tmp[PATH_MAX], busy[PATH_MAX];
    int rc;

    rc = queue_write_new(queue_dir, env, body, bodylen, "busy", 0, tmp, busy);
    if (rc < 0)
        return rc;
    rc = queue_replace_existing(tmp, busy);
    if (rc < 0)
        return rc;
    /* Durable before anything else happens: a crash must not bring back
     * the recipients that have just accepted the message. */
    rc = queue_fsync_dir(queue_dir, "busy");
    if (rc < 0)
        return rc;
    return queue_unclaim(queue_dir, env->id);
}

int queue_done_nosync(const char *queue_dir, const char *id)
{
    char path[PATH_MAX];
    int rc;

    if (!queue_id_valid(id))
        return -EINVAL;
    rc = queue_path(path, sizeof(path), queue_dir, "busy", id, "");
    if (rc < 0)
        return rc;
    if (unlink(path) < 0)
        return -errno;
    return 0;
}

int queue_done(const char *queue_dir, const char *id)
{
    int rc = queue_done_nosync(queue_dir, id);

    if (rc < 0)
        return rc;
    return queue_fsync_dir(queue_dir, "busy");
}

int queue_recover(const char *queue_dir)
{
    char path[PATH_MAX];
    struct dirent *de;
    int n = 0, rc;
    DIR *d;

    rc = queue_path(path, sizeof(path), queue_dir, "busy", NULL, "");
    if (rc < 0)
        return rc;
    d = opendir(path);
    if (d == NULL)
        return -errno;
    while ((de = readdir(d)) != NULL) {
        if (!queue_id_valid(de->d_name))
            continue;
        rc = queue_move(queue_dir, de->d_name, QUEUE_BUSY, QUEUE_ACTIVE);
        if (rc == 0) {
            log_info("%s: delivery interrupted; back in active/", de->d_name);
            n++;
        } else
            log_error_errno(rc, "%s: cannot move busy/%s back to active/",
                            de->d_name, de->d_name);
    }
    closedir(d);
    return n;
}

/* 1 if <w>/ID exists, 0 if not, -errno. */
static int queue_exists(const char *queue_dir, enum queue_where w,
                        const char *id)
{
    char path[PATH_MAX];
    int rc =
        queue_path(path, sizeof(path), queue_dir, queue_dir_name(w), id, "");

    if (rc < 0)
        return rc;
    if (access(path, F_OK) == 0)
        return 1;
    return errno == ENOENT ? 0 : -errno;
}

int queue_locate(const char *queue_dir, const char *id, enum queue_where *w_r)
{
    static const enum queue_where order[] = {QUEUE_ACTIVE, QUEUE_BUSY,
                                             QUEUE_HOLD};

    if (!queue_id_valid(id))
        return -EINVAL;
    /* A file moving between two directories while we look may be
     * missed once; a second round finds it. */
    for (int round = 0; round < 2; round++) {
        for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
            int rc = queue_exists(queue_dir, order[i], id);
            if (rc != 0) {
                if (rc > 0)
                    *w_r = order[i];
                return rc;
            }
        }
    }
    return 0;
}

int queue_hold(const char *queue_dir, const char *id)
{
    enum queue_where w;
    int rc;

    if (!queue_id_valid(id))
        return -EINVAL;
    rc = queue_move(queue_dir, id, QUEUE_ACTIVE, QUEUE_HOLD);
    if (rc != -ENOENT)
        return rc;
    rc = queue_locate(queue_dir, id, &w);
    if (rc <= 0)
        return rc < 0 ? rc : -ENOENT;
    if (w == QUEUE_HOLD)
        return 0;
    if (w == QUEUE_BUSY)
        return -EBUSY;
    /* Back in active/ from a delivery that ended meanwhile. */
    return queue_move(queue_dir, id, QUEUE_ACTIVE, QUEUE_HOLD);
}

int queue_release(const char *queue_dir, const char *id)
{
    return queue_move(queue_dir, id, QUEUE_HOLD, QUEUE_ACTIVE);
}

int queue_delete(const char *queue_dir, const char *id)
{
    static const enum queue_where order[] = {QUEUE_ACTIVE, QUEUE_BUSY,
                                             QUEUE_HOLD};
    char path[PATH_MAX];
    int rc;

    if (!queue_id_valid(id))
        return -EINVAL;
    for (int round = 0; round < 3; round++) {
        for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++) {
            const char *sub = queue_dir_name(order[i]);
            rc = queue_path(path, sizeof(path), queue_dir, sub, id, "");
            if (rc < 0)
                return rc;
            if (unlink(path) == 0)
                return queue_fsync_dir(queue_dir, sub);
            if (errno != ENOENT)
                return -errno;
        }
    }
    return -ENOENT;
}

int queue_flush(const char *queue_dir, const char *id)
{
    char path[PATH_MAX];
    enum queue_where w;
    int rc;

    if (!queue_id_valid(id))
        return -EINVAL;
    rc = queue_path(path, sizeof(path), queue_dir, "active", id, "");
    if (rc < 0)
        return rc;
    /* The runner watches active/ for IN_ATTRIB: a new time stamp is the
     * request. */
    if (utimensat(AT_FDCWD, path, NULL, AT_SYMLINK_NOFOLLOW) == 0)
        return 0;
    if (errno != ENOENT)
        return -errno;
    rc = queue_locate(queue_dir, id, &w);
    if (rc <= 0)
        return rc < 0 ? rc : -ENOENT;
    if (w == QUEUE_HOLD)
        return -EPERM;
    if (w == QUEUE_BUSY)
        return 0;
    return utimensat(AT_FDCWD, path, NULL, AT_SYMLINK_NOFOLLOW) == 0 ? 0
                                                                     : -errno;
}

/* "tmp/spare.N" into out. */
static int queue_spare_path(char *out, size_t outlen, const char *queue_dir,
                            unsigned slot)
{
    char name[32];

    snprintf(name, sizeof(name), "%s%u", QUEUE_SPARE_PREFIX, slot);
    return queue_path(out, outlen, queue_dir, "tmp", name, "");
}

int queue_spare_take(const char *queue_dir, unsigned slot, const char *id)
{
    char src[PATH_MAX], dst[PATH_MAX];
    struct stat st;
    int rc;

    if (!queue_id_valid(id))
        return -EINVAL;
    if ((rc = queue_spare_path(src, sizeof(src), queue_dir, slot)) < 0 ||
        (rc = queue_path(dst, sizeof(dst), queue_dir, "tmp", id, "")) < 0)
        return rc;
    rc = queue_rename_noreplace(src, dst);
    if (rc < 0)
        return rc;
    /* Only a plain file of ours, 0600, not linked elsewhere, is written
     * over; anything else is dropped, and a new file is made. */
    if (lstat(dst, &st) < 0 || !S_ISREG(st.st_mode) || st.st_nlink != 1 ||
        st.st_uid != geteuid() || (st.st_mode & 07777) != 0600) {
        unlink(dst);
        return -ENOENT;
    }
    return 0;
}

int queue_spare_put(const char *queue_dir, unsigned slot, const char *id)
{
    char src[PATH_MAX], dst[PATH_MAX];
    struct stat st;
    int rc;

    if (!queue_id_valid(id))
        return -EINVAL;
    if ((rc = queue_path(src, sizeof(src), queue_dir, "busy", id, "")) < 0 ||
        (rc = queue_spare_path(dst, sizeof(dst), queue_dir, slot)) < 0)
        return rc;
    if (lstat(src, &st) < 0)
        return -errno;
    if (!S_ISREG(st.st_mode) || st.st_size > QUEUE_SPARE_MAX_SIZE)
        return -EFBIG;
    return queue_rename_noreplace(src, dst);
}
