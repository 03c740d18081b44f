/* mailgate_worker: runs `subgate mailgate` for the spooled change-password
 * requests; see mailgate_worker.h. */
#include "mailgate_worker.h"

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
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../common/log.h"
#include "../common/xalloc.h"
#include "mailgate_spool.h"
#include "queue.h"

/* A request that failed temporarily, and when to try it again. */
struct mgw_retry {
    char id[QUEUE_ID_LEN + 1];
    unsigned delay_s; /* the next delay */
    time_t due;
    int seen; /* found by the current scan */
};

struct mgw {
    const struct cfg *cfg; /* borrowed */
    const char *admin;     /* borrowed */
    char dir[PATH_MAX];    /* <queue_dir>/mailgate */
    int sfd, ifd;          /* signalfd, inotify */
    int stop;
    struct mgw_retry *retry; /* owned, nretry entries */
    size_t nretry, retry_cap;
};

enum mgw_outcome {
    MGW_DONE,    /* handled: remove */
    MGW_RETRY,   /* temporary failure: keep */
    MGW_FAILED,  /* move to failed/ */
    MGW_STOPPED, /* stopped by SIGTERM: keep, no backoff */
};

static struct mgw_retry *mgw_retry_find(struct mgw *w, const char *id)
{
    size_t i;

    for (i = 0; i < w->nretry; i++) {
        if (strcmp(w->retry[i].id, id) == 0)
            return &w->retry[i];
    }
    return NULL;
}

static void mgw_retry_drop(struct mgw *w, const char *id)
{
    struct mgw_retry *r = mgw_retry_find(w, id);

    if (r != NULL)
        *r = w->retry[--w->nretry];
}

/* Schedules id again; returns the delay. */
static unsigned mgw_retry_later(struct mgw *w, const char *id)
{
    struct mgw_retry *r = mgw_retry_find(w, id);
    unsigned d;

    if (r == NULL) {
        if (w->nretry == w->retry_cap) {
            w->retry_cap = w->retry_cap > 0 ? 2 * w->retry_cap : 16;
            w->retry = xrealloc(w->retry, w->retry_cap * sizeof(*w->retry));
        }
        r = &w->retry[w->nretry++];
        memset(r, 0, sizeof(*r));
        snprintf(r->id, sizeof(r->id), "%.*s", QUEUE_ID_LEN, id);
        r->delay_s = MAILGATE_WORKER_RETRY_MIN_S;
    }
    d = r->delay_s;
    r->due = time(NULL) + d;
    r->seen = 1;
    r->delay_s = d * 2 > MAILGATE_WORKER_RETRY_MAX_S
                     ? MAILGATE_WORKER_RETRY_MAX_S
                     : d * 2;
    return d;
}

/* Reads pending signals: SIGTERM/SIGINT stop; returns 1 if SIGCHLD was
 * among them. */
static int mgw_signals(struct mgw *w)
{
    struct signalfd_siginfo si;
    int chld = 0;

    while (read(w->sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT)
            w->stop = 1;
        else if (si.ssi_signo == SIGCHLD)
            chld = 1;
    }
    return chld;
}

/* In the child: never returns. */
static void mgw_exec(struct mgw *w, int fd, const char *sender,
                     const char *rcpt)
{
    sigset_t none;

    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (dup2(fd, STDIN_FILENO) < 0)
        _exit(MAILGATE_WORKER_EX_EXEC);
    execl(w->admin, "subgate", "-c", w->cfg->path, "mailgate", "-f", sender,
          "--recipient", rcpt, (char *)NULL);
    log_error_errno(errno, "cannot run %s", w->admin);
    _exit(MAILGATE_WORKER_EX_EXEC);
}

/* Waits for the child, killing it on timeout or stop. Returns its wait
 * status, and in *why_r what we did to it (NULL: nothing). */
static int mgw_wait(struct mgw *w, pid_t pid, const char **why_r)
{
    time_t deadline = time(NULL) + MAILGATE_WORKER_RUN_TIMEOUT_S;
    int status, termed = 0;

    *why_r = NULL;
    for (;;) {
        struct pollfd p = {.fd = w->sfd, .events = POLLIN};
        pid_t r = waitpid(pid, &status, WNOHANG);

        if (r == pid)
            return status;
        if (r < 0 && errno != EINTR)
            return -1;
        if (w->stop && !termed) {
            kill(pid, SIGTERM);
            termed = 1;
            *why_r = "stopping";
        }
        if (time(NULL) >= deadline) {
            kill(pid, SIGKILL);
            *why_r = "timeout";
            deadline = time(NULL) + 3600;
        }
        if (poll(&p, 1, 1000) > 0)
            mgw_signals(w);
    }
}

/* Moves the request to failed/. */
static void mgw_fail(struct mgw *w, const char *id, const char *why)
{
    char from[PATH_MAX], to[PATH_MAX];
    int n1, n2;

    n1 = snprintf(from, sizeof(from), "%s/%s", w->dir, id);
    n2 =
        snprintf(to, sizeof(to), "%s/%s/%s", w->dir, MAILGATE_SPOOL_FAILED, id);
    mgw_retry_drop(w, id);
    if (n1 < 0 || (size_t)n1 >= sizeof(from) || n2 < 0 ||
        (size_t)n2 >= sizeof(to))
        return; /* cannot be: dir was checked at start */
    if (rename(from, to) != 0) {
        log_error_errno(errno,
                        "%s: mailgate failed (%s); cannot move to "
                        "%s/%s/; removing it",
                        id, why, w->dir, MAILGATE_SPOOL_FAILED);
        unlink(from);
        return;
    }
    log_error("%s: mailgate failed (%s); moved to %s", id, why, to);
}

/* Runs `subgate mailgate` for one request file (open as fd). */
static enum mgw_outcome mgw_run(struct mgw *w, const char *id, int fd,
                                const char **why_r)
{
    static char why[64];
    char sender[SG_MAX_PATH + 1], rcpt[SG_MAX_PATH + 1];
    const char *killed;
    pid_t pid;
    int status;

    if (mailgate_spool_read_env(fd, sender, rcpt) != 0) {
        *why_r = "malformed envelope";
        return MGW_FAILED;
    }
    pid = fork();
    if (pid < 0) {
        log_error_errno(errno, "%s: mailgate cannot fork", id);
        *why_r = "fork";
        return MGW_RETRY;
    }
    if (pid == 0)
        mgw_exec(w, fd, sender, rcpt);
    status = mgw_wait(w, pid, &killed);
    if (killed != NULL) {
        *why_r = killed;
        return w->stop ? MGW_STOPPED : MGW_RETRY;
    }
    if (status >= 0 && WIFEXITED(status)) {
        snprintf(why, sizeof(why), "exit status %d", WEXITSTATUS(status));
        *why_r = why;
        if (WEXITSTATUS(status) == 0)
            return MGW_DONE;
        return WEXITSTATUS(status) == 75 ||
                       WEXITSTATUS(status) == MAILGATE_WORKER_EX_EXEC
                   ? MGW_RETRY
                   : MGW_FAILED;
    }
    snprintf(why, sizeof(why), "killed by signal %d",
             status >= 0 && WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    *why_r = why;
    return MGW_FAILED;
}

/* One request: run it and settle the file. */
static void mgw_one(struct mgw *w, const char *id)
{
    char path[PATH_MAX];
    const char *why = "";
    struct stat st;
    enum mgw_outcome o;
    unsigned d;
    int fd;

    fd = snprintf(path, sizeof(path), "%s/%s", w->dir, id);
    if (fd < 0 || (size_t)fd >= sizeof(path))
        return;
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        if (errno != ENOENT)
            mgw_fail(w, id, "cannot open");
        mgw_retry_drop(w, id);
        return;
    }
    o = fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ? MGW_FAILED
                                                    : mgw_run(w, id, fd, &why);
    close(fd);
    switch (o) {
    case MGW_DONE:
        mgw_retry_drop(w, id);
        if (unlink(path) != 0)
            log_error_errno(errno, "%s: mailgate cannot remove %s", id, path);
        log_info("%s: mailgate done", id);
        return;
    case MGW_STOPPED:
        log_info("%s: mailgate interrupted by stop; kept", id);
        return;
    case MGW_RETRY:
        if (time(NULL) - st.st_mtime > MAILGATE_WORKER_MAX_AGE_S) {
            mgw_fail(w, id, "too old");
            return;
        }
        d = mgw_retry_later(w, id);
        log_warn("%s: mailgate deferred (%s); retry in %u s", id, why, d);
        return;
    case MGW_FAILED:
        mgw_fail(w, id, why[0] != '\0' ? why : "not a file");
        return;
    }
}

/* Runs every request that is due; returns the seconds until the next
 * retry is due (at most MAILGATE_WORKER_SCAN_S). */
static unsigned mgw_scan(struct mgw *w)
{
    unsigned wait_s = MAILGATE_WORKER_SCAN_S;
    struct dirent *de;
    DIR *d;
    size_t i;

    for (i = 0; i < w->nretry; i++)
        w->retry[i].seen = 0;
    d = opendir(w->dir);
    if (d == NULL) {
        log_error_errno(errno, "mailgate: cannot read %s", w->dir);
        return wait_s;
    }
    while (!w->stop && (de = readdir(d)) != NULL) {
        struct mgw_retry *r;

        if (!queue_id_valid(de->d_name))
            continue; /* ".", "..", failed/, .ID.tmp */
        r = mgw_retry_find(w, de->d_name);
        if (r != NULL) {
            time_t now = time(NULL);
            r->seen = 1;
            if (r->due > now) {
                if ((unsigned)(r->due - now) < wait_s)
                    wait_s = (unsigned)(r->due - now);
                continue;
            }
        }
        mgw_one(w, de->d_name);
        if (w->sfd >= 0)
            mgw_signals(w);
    }
    closedir(d);
    /* Forget the retries of files that went away (removed by hand). */
    for (i = 0; i < w->nretry;) {
        if (!w->retry[i].seen && !w->stop)
            w->retry[i] = w->retry[--w->nretry];
        else
            i++;
    }
    return wait_s > 0 ? wait_s : 1;
}

static void mgw_drain_inotify(struct mgw *w)
{
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));

    while (read(w->ifd, buf, sizeof(buf)) > 0)
        ;
}

static int mgw_setup(struct mgw *w)
{
    sigset_t set;
    int rc;

    rc = snprintf(w->dir, sizeof(w->dir) - QUEUE_ID_LEN - 16, "%s/%s",
                  w->cfg->queue_dir, MAILGATE_SPOOL_DIR);
    if (rc < 0 || (size_t)rc >= sizeof(w->dir) - QUEUE_ID_LEN - 16) {
        log_error("mailgate: queue_dir too long");
        return -1;
    }
    rc = mailgate_spool_init(w->cfg->queue_dir);
    if (rc < 0) {
        log_error_errno(rc, "mailgate: cannot create %s", w->dir);
        return -1;
    }
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, NULL);
    w->sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    w->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (w->sfd < 0 || w->ifd < 0) {
        log_error_errno(errno, "mailgate: signalfd/inotify");
        return -1;
    }
    if (inotify_add_watch(w->ifd, w->dir, IN_MOVED_TO | IN_CREATE) < 0) {
        log_error_errno(errno, "mailgate: cannot watch %s", w->dir);
        return -1;
    }
    return 0;
}

int mailgate_worker_main(const struct cfg *cfg, const char *admin)
{
    struct mgw w;
    int rc = 0;

    memset(&w, 0, sizeof(w));
    w.cfg = cfg;
    w.admin = admin;
    w.sfd = w.ifd = -1;
    if (mgw_setup(&w) != 0) {
        rc = 1;
        goto out;
    }
    log_info("mailgate: ready dir=%s program=%s", w.dir, admin);
    while (!w.stop) {
        unsigned wait_s = mgw_scan(&w);
        struct pollfd p[2] = {{.fd = w.sfd, .events = POLLIN},
                              {.fd = w.ifd, .events = POLLIN}};

        if (w.stop)
            break;
        if (poll(p, 2, (int)wait_s * 1000) > 0) {
            mgw_signals(&w);
            mgw_drain_inotify(&w);
        }
    }
    log_info("mailgate: stopped");
out:
    if (w.sfd >= 0)
        close(w.sfd);
    if (w.ifd >= 0)
        close(w.ifd);
    free(w.retry);
    return rc;
}
