/* mailgate_spool: the spool of change-password requests; see
 * mailgate_spool.h. */
#include "mailgate_spool.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "../common/fsutil.h"

static int spool_mkdir(const char *path)
{
    struct stat st;

    if (mkdir(path, 0700) == 0)
        return 0;
    if (errno != EEXIST)
        return -errno;
    if (stat(path, &st) < 0)
        return -errno;
    return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

int mailgate_spool_init(const char *queue_dir)
{
    char path[PATH_MAX];
    int n, rc;

    n = snprintf(path, sizeof(path), "%s/%s", queue_dir, MAILGATE_SPOOL_DIR);
    if (n < 0 || (size_t)n >= sizeof(path))
        return -ENAMETOOLONG;
    rc = spool_mkdir(path);
    if (rc < 0)
        return rc;
    n = snprintf(path, sizeof(path), "%s/%s/%s", queue_dir, MAILGATE_SPOOL_DIR,
                 MAILGATE_SPOOL_FAILED);
    if (n < 0 || (size_t)n >= sizeof(path))
        return -ENAMETOOLONG;
    return spool_mkdir(path);
}

/* Writes all of buf to fd. 0 or -errno. */
static int spool_write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

static int spool_value_ok(const char *s)
{
    size_t i;

    for (i = 0; s[i] != '\0'; i++) {
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return 0;
    }
    return i <= SG_MAX_PATH;
}

/* Creates tmp, writes env and the message, fsyncs. 0 or -errno. */
static int spool_write_file(const char *tmp, const char *env, size_t envlen,
                            const char *msg, size_t len)
{
    int fd, rc;

    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    rc = spool_write_all(fd, env, envlen);
    if (rc == 0)
        rc = spool_write_all(fd, msg, len);
    if (rc == 0 && fsync(fd) < 0)
        rc = -errno;
    if (close(fd) < 0 && rc == 0)
        rc = -errno;
    return rc;
}

int mailgate_spool_write(const char *queue_dir, const char *id,
                         const char *sender, const char *rcpt, const char *msg,
                         size_t len)
{
    char dir[PATH_MAX], tmp[PATH_MAX], dst[PATH_MAX];
    char env[MAILGATE_SPOOL_ENV_MAX];
    int n, envlen, rc;

    if (!spool_value_ok(sender) || !spool_value_ok(rcpt) || id[0] == '\0' ||
        strchr(id, '/') != NULL)
        return -EINVAL;
    n = snprintf(dir, sizeof(dir), "%s/%s", queue_dir, MAILGATE_SPOOL_DIR);
    if (n < 0 || (size_t)n >= sizeof(dir))
        return -ENAMETOOLONG;
    n = snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", dir, id);
    if (n < 0 || (size_t)n >= sizeof(tmp))
        return -ENAMETOOLONG;
    n = snprintf(dst, sizeof(dst), "%s/%s", dir, id);
    if (n < 0 || (size_t)n >= sizeof(dst))
        return -ENAMETOOLONG;
    envlen =
        snprintf(env, sizeof(env), "sender %s\nrecipient %s\n\n", sender, rcpt);
    if (envlen < 0 || (size_t)envlen >= sizeof(env))
        return -EINVAL;
    rc = spool_write_file(tmp, env, (size_t)envlen, msg, len);
    if (rc == 0 && link(tmp, dst) < 0)
        rc = -errno; /* link: never replaces an existing request */
    unlink(tmp);
    if (rc == 0) {
        rc = fsutil_sync_dir(dir);
        if (rc < 0)
            unlink(dst); /* not durable: the client will try again */
    }
    return rc;
}

/* Copies the value after "key " of line (len octets, no newline) to out
 * (SG_MAX_PATH + 1). 0 or -1. */
static int spool_env_value(const char *line, size_t len, const char *key,
                           char *out)
{
    size_t klen = strlen(key);

    if (len < klen + 1 || memcmp(line, key, klen) != 0 || line[klen] != ' ' ||
        len - klen - 1 > SG_MAX_PATH)
        return -1;
    memcpy(out, line + klen + 1, len - klen - 1);
    out[len - klen - 1] = '\0';
    return 0;
}

int mailgate_spool_read_env(int fd, char *sender_r, char *rcpt_r)
{
    char buf[MAILGATE_SPOOL_ENV_MAX];
    const char *nl1, *nl2;
    ssize_t n;
    size_t len;

    do
        n = pread(fd, buf, sizeof(buf), 0);
    while (n < 0 && errno == EINTR);
    if (n <= 0)
        return -1;
    len = (size_t)n;
    nl1 = memchr(buf, '\n', len);
    if (nl1 == NULL)
        return -1;
    nl2 = memchr(nl1 + 1, '\n', len - (size_t)(nl1 + 1 - buf));
    if (nl2 == NULL || (size_t)(nl2 + 1 - buf) >= len || nl2[1] != '\n')
        return -1;
    if (spool_env_value(buf, (size_t)(nl1 - buf), "sender", sender_r) != 0 ||
        spool_env_value(nl1 + 1, (size_t)(nl2 - nl1 - 1), "recipient",
                        rcpt_r) != 0 ||
        rcpt_r[0] == '\0')
        return -1;
    if (lseek(fd, nl2 + 2 - buf, SEEK_SET) < 0)
        return -1;
    return 0;
}
