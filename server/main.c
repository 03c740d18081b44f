/* subgated: the master process. It reads the configuration, binds the
 * listeners, and starts and supervises four workers: the signer (the only
 * process that opens private keys; a separate program), the SMTP worker
 * (smtpd_main), the queue runner (qmgr_main) and the mailgate worker
 * (mailgate_worker_main: change-password requests taken over SMTP, run
 * through the `subgate` program found beside this one). A worker that dies is
 * restarted with a growing delay; SIGTERM/SIGINT stop everything; SIGHUP is
 * passed on to the workers. The master itself runs no event loop and
 * touches no network input. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../common/cfg.h"
#include "../common/log.h"
#include "../common/signer_proto.h"
#include "../common/xalloc.h"
#include "mailgate_spool.h"
#include "mailgate_worker.h"
#include "qmgr.h"
#include "queue.h"
#include "smtpd.h"
#include "smtpd_jail.h"

#define MAIN_MAX_LISTENERS 16
#define MAIN_LISTEN_BACKLOG 511
/* Restart delays for a dying worker: doubled per quick death, capped. */
#define MAIN_RESTART_MIN_MS 500
#define MAIN_RESTART_MAX_MS 30000
/* A worker that lived this long is considered healthy again. */
#define MAIN_HEALTHY_S 30
#define MAIN_STOP_GRACE_S 10
#define MAIN_SIGNER_WAIT_MS 5000

enum main_worker_kind {
    WORKER_SIGNER,
    WORKER_SMTPD,
    WORKER_QMGR,
    WORKER_MAILGATE,
    WORKER_COUNT,
};

static const char *const worker_names[WORKER_COUNT] = {"signer", "smtpd",
                                                       "qmgr", "mailgate"};

struct main_worker {
    pid_t pid;           /* 0: not running */
    time_t started;      /* when the current instance started */
    unsigned delay_ms;   /* next restart delay */
    struct timespec due; /* restart time while pid == 0 */
    int disabled;        /* never started (its program is missing) */
};

struct main_state {
    struct cfg *cfg; /* owned */
    struct smtpd_listener ls[MAIN_MAX_LISTENERS];
    size_t nls;
    char signer_path[PATH_MAX];
    char admin_path[PATH_MAX]; /* subgate, for the mailgate worker */
    struct main_worker w[WORKER_COUNT];
};

static void usage(void)
{
    fprintf(stderr,
            "usage: subgated [-n] [-c CONFIG]\n"
            "  -c CONFIG  configuration file (default %s)\n"
            "  -n         check the configuration, print the "
            "effective settings and exit\n",
            SG_DEFAULT_CONFIG);
    exit(2);
}

/* Splits "host:port" or "[v6]:port" into host and port. 0 or -1. */
static int split_hostport(const char *s, char *host, size_t hostlen, char *port,
                          size_t portlen)
{
    const char *colon;
    size_t n;

    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (end == NULL || end[1] != ':')
            return -1;
        n = (size_t)(end - s - 1);
        if (n >= hostlen)
            return -1;
        memcpy(host, s + 1, n);
        host[n] = '\0';
        colon = end + 1;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL)
            return -1;
        n = (size_t)(colon - s);
        if (n >= hostlen)
            return -1;
        memcpy(host, s, n);
        host[n] = '\0';
    }
    if (strlen(colon + 1) == 0 || strlen(colon + 1) >= portlen)
        return -1;
    strcpy(port, colon + 1);
    return 0;
}

/* Binds one "host:port" listener. 0, or -errno (logged by the caller). */
static int bind_one(const char *spec, int *fd_r)
{
    char host[256], port[16];
    struct addrinfo hints, *res = NULL;
    int fd, on = 1, err;

    if (split_hostport(spec, host, sizeof(host), port, sizeof(port)) != 0)
        return -EINVAL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    err = getaddrinfo(host[0] != '\0' ? host : NULL, port, &hints, &res);
    if (err != 0)
        return err == EAI_SYSTEM ? -errno : -EADDRNOTAVAIL;
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        err = -errno;
        freeaddrinfo(res);
        return err;
    }
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
    if (res->ai_family == AF_INET6)
        (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on));
    if (bind(fd, res->ai_addr, res->ai_addrlen) != 0 ||
        listen(fd, MAIN_LISTEN_BACKLOG) != 0) {
        err = -errno;
        close(fd);
        freeaddrinfo(res);
        return err;
    }
    freeaddrinfo(res);
    *fd_r = fd;
    return 0;
}

/* Binds every address of a listen list. An IPv6 wildcard on a host
 * without IPv6 is skipped with a warning; anything else is fatal. */
static void bind_list(struct main_state *st, const char *list, int implicit_tls,
                      const char *key)
{
    char *copy = xstrdup(list), *save = NULL, *tok;

    for (tok = strtok_r(copy, " ,\t", &save); tok != NULL;
         tok = strtok_r(NULL, " ,\t", &save)) {
        struct smtpd_listener *l;
        int fd = -1, err;

        if (st->nls == MAIN_MAX_LISTENERS)
            log_fatal("%s: more than %d listeners", key, MAIN_MAX_LISTENERS);
        err = bind_one(tok, &fd);
        if (err == -EAFNOSUPPORT || (err == -EADDRNOTAVAIL && tok[0] == '[')) {
            log_warn("%s: skipping %s: no IPv6 on this host", key, tok);
            continue;
        }
        if (err < 0)
            log_fatal_errno(err, "%s: cannot listen on %s", key, tok);
        l = &st->ls[st->nls++];
        l->fd = fd;
        l->implicit_tls = implicit_tls;
        snprintf(l->name, sizeof(l->name), "%s", tok);
        log_info("listening on %s (%s)", tok,
                 implicit_tls ? "implicit TLS" : "STARTTLS");
    }
    free(copy);
}

static void make_dir(const char *path, mode_t mode)
{
    if (mkdir(path, mode) != 0 && errno != EEXIST)
        log_fatal_errno(errno, "cannot create %s", path);
}

/* The signer program: configured, or subgate-signer beside this binary. */
static void find_signer(struct main_state *st)
{
    char self[PATH_MAX];
    ssize_t n;
    char *slash;

    if (st->cfg->signer_program[0] != '\0') {
        snprintf(st->signer_path, sizeof(st->signer_path), "%s",
                 st->cfg->signer_program);
        return;
    }
    n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0)
        log_fatal_errno(errno, "cannot find own path for subgate-signer");
    self[n] = '\0';
    slash = strrchr(self, '/');
    if (slash != NULL)
        *slash = '\0';
    if (strlen(self) + sizeof("/subgate-signer") > sizeof(st->signer_path))
        log_fatal("path of subgated too long: %s", self);
    memcpy(st->signer_path, self, strlen(self));
    memcpy(st->signer_path + strlen(self), "/subgate-signer",
           sizeof("/subgate-signer"));
    if (access(st->signer_path, X_OK) != 0)
        log_fatal_errno(errno, "signer program %s", st->signer_path);
}

/* The admin program `subgate` beside this binary, for the mailgate
 * worker; without it that worker is not started (logged). */
static void find_admin(struct main_state *st)
{
    char self[PATH_MAX];
    ssize_t n;
    char *slash;

    n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0)
        log_fatal_errno(errno, "cannot find own path for subgate");
    self[n] = '\0';
    slash = strrchr(self, '/');
    if (slash != NULL)
        *slash = '\0';
    if (strlen(self) + sizeof("/subgate") > sizeof(st->admin_path))
        log_fatal("path of subgated too long: %s", self);
    memcpy(st->admin_path, self, strlen(self));
    memcpy(st->admin_path + strlen(self), "/subgate", sizeof("/subgate"));
    if (access(st->admin_path, X_OK) != 0) {
        log_warn("no program %s: change-password requests taken over SMTP "
                 "stay in %s/%s",
                 st->admin_path, st->cfg->queue_dir, MAILGATE_SPOOL_DIR);
        st->w[WORKER_MAILGATE].disabled = 1;
    }
}

/* In a worker, as root: becomes the configured user. The master stays
 * root only to bind, restart and stop its workers. */
static void drop_privileges(const char *user)
{
    struct passwd *pw;

    if (user[0] == '\0' || geteuid() != 0)
        return;
    pw = getpwnam(user);
    if (pw == NULL)
        log_fatal("unknown user %s", user);
    if (initgroups(pw->pw_name, pw->pw_gid) != 0 || setgid(pw->pw_gid) != 0 ||
        setuid(pw->pw_uid) != 0)
        log_fatal_errno(errno, "cannot switch to user %s", user);
}

/* Gives the workers' directories to the unprivileged user, if any. */
static void chown_dirs(const struct cfg *cfg)
{
    static const char *const subs[] = {"",
                                       "/tmp",
                                       "/active",
                                       "/busy",
                                       "/hold",
                                       "/" MAILGATE_SPOOL_DIR,
                                       "/" MAILGATE_SPOOL_DIR
                                       "/" MAILGATE_SPOOL_FAILED};
    struct passwd *pw;
    char path[PATH_MAX];
    size_t i;

    if (cfg->user[0] == '\0' || geteuid() != 0)
        return;
    pw = getpwnam(cfg->user);
    if (pw == NULL)
        log_fatal("unknown user %s", cfg->user);
    if (chown(cfg->run_dir, pw->pw_uid, pw->pw_gid) != 0)
        log_fatal_errno(errno, "chown %s", cfg->run_dir);
    for (i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
        snprintf(path, sizeof(path), "%s%s", cfg->queue_dir, subs[i]);
        if (chown(path, pw->pw_uid, pw->pw_gid) != 0)
            log_fatal_errno(errno, "chown %s", path);
    }
}

static void unblock_signals(void)
{
    sigset_t set;

    sigemptyset(&set);
    sigprocmask(SIG_SETMASK, &set, NULL);
}

static void close_listeners(struct main_state *st)
{
    size_t i;

    for (i = 0; i < st->nls; i++)
        close(st->ls[i].fd);
}

/* A worker must not outlive the master (killed with SIGKILL, say): a
 * restarted master could not bind its listeners, and two queue runners
 * would work one queue. SIGTERM lets it finish what it is doing. Set
 * after any change of user, which clears it. */
static void die_with_master(pid_t master)
{
    (void)prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != master)
        _exit(1);
}

/* Runs in the child; never returns. */
static void worker_run(struct main_state *st, enum main_worker_kind kind,
                       pid_t master)
{
    const struct cfg *cfg = st->cfg;
    int rc;

    unblock_signals();
    switch (kind) {
    case WORKER_SIGNER:
        /* The signer starts as root when we are root: it creates its
         * socket, hands it to the workers' group, then becomes
         * signer_user (signer_main.c). */
        close_listeners(st);
        die_with_master(master);
        execl(st->signer_path, "subgate-signer", "-c", cfg->path, (char *)NULL);
        log_error_errno(errno, "cannot run %s", st->signer_path);
        _exit(1);
    case WORKER_SMTPD:
        /* With chroot, the worker locks itself in before it becomes
         * user; its copy of cfg then names files as seen inside. */
        if (cfg->chroot[0] != '\0')
            smtpd_jail_enter(st->cfg);
        else
            drop_privileges(cfg->user);
        die_with_master(master);
        rc = smtpd_main(cfg, st->ls, st->nls);
        _exit(rc);
    case WORKER_QMGR:
        close_listeners(st);
        drop_privileges(cfg->user);
        die_with_master(master);
        rc = qmgr_main(cfg);
        _exit(rc);
    case WORKER_MAILGATE:
        close_listeners(st);
        drop_privileges(cfg->user);
        die_with_master(master);
        rc = mailgate_worker_main(cfg, st->admin_path);
        _exit(rc);
    case WORKER_COUNT:
        break;
    }
    _exit(1);
}

static void worker_start(struct main_state *st, enum main_worker_kind kind)
{
    struct main_worker *w = &st->w[kind];
    pid_t master = getpid(), pid = fork();

    if (pid < 0) {
        log_error_errno(errno, "cannot fork %s worker", worker_names[kind]);
        clock_gettime(CLOCK_MONOTONIC, &w->due);
        w->due.tv_sec += 1;
        return;
    }
    if (pid == 0)
        worker_run(st, kind, master);
    w->pid = pid;
    w->started = time(NULL);
    log_info("started %s worker pid=%ld", worker_names[kind], (long)pid);
}

/* A socket left by a signer that was killed would make wait_for_signer()
 * return before the new signer listens. */
static void remove_stale_socket(const struct cfg *cfg)
{
    char path[PATH_MAX];

    snprintf(path, sizeof(path), "%s/%s", cfg->run_dir, SIGNER_SOCKET_NAME);
    if (unlink(path) != 0 && errno != ENOENT)
        log_warn("cannot remove %s: %s", path, strerror(errno));
}

/* Waits until the signer's socket exists, so that the first messages are
 * not refused for a signer that is still starting. */
static void wait_for_signer(const struct cfg *cfg)
{
    char path[PATH_MAX];
    struct stat sb;
    int waited;

    snprintf(path, sizeof(path), "%s/%s", cfg->run_dir, SIGNER_SOCKET_NAME);
    for (waited = 0; waited < MAIN_SIGNER_WAIT_MS; waited += 20) {
        if (stat(path, &sb) == 0 && S_ISSOCK(sb.st_mode))
            return;
        usleep(20 * 1000);
    }
    log_warn("signer socket %s not there after %d ms; starting anyway", path,
             MAIN_SIGNER_WAIT_MS);
}

static void reap(struct main_state *st, pid_t pid, int status)
{
    struct main_worker *w;
    enum main_worker_kind k;

    for (k = 0; k < WORKER_COUNT; k++) {
        if (st->w[k].pid == pid)
            break;
    }
    if (k == WORKER_COUNT)
        return;
    w = &st->w[k];
    w->pid = 0;
    if (time(NULL) - w->started >= MAIN_HEALTHY_S)
        w->delay_ms = MAIN_RESTART_MIN_MS;
    if (WIFSIGNALED(status))
        log_error("%s worker pid=%ld killed by signal %d; restart in %u ms",
                  worker_names[k], (long)pid, WTERMSIG(status), w->delay_ms);
    else
        log_error("%s worker pid=%ld exited with status %d; restart in %u ms",
                  worker_names[k], (long)pid, WEXITSTATUS(status), w->delay_ms);
    clock_gettime(CLOCK_MONOTONIC, &w->due);
    w->due.tv_sec += w->delay_ms / 1000;
    w->due.tv_nsec += (long)(w->delay_ms % 1000) * 1000000L;
    if (w->due.tv_nsec >= 1000000000L) {
        w->due.tv_sec++;
        w->due.tv_nsec -= 1000000000L;
    }
    w->delay_ms *= 2;
    if (w->delay_ms > MAIN_RESTART_MAX_MS)
        w->delay_ms = MAIN_RESTART_MAX_MS;
}

static void restart_due(struct main_state *st)
{
    struct timespec now;
    enum main_worker_kind k;

    clock_gettime(CLOCK_MONOTONIC, &now);
    for (k = 0; k < WORKER_COUNT; k++) {
        struct main_worker *w = &st->w[k];
        if (w->pid != 0 || w->disabled)
            continue;
        if (now.tv_sec > w->due.tv_sec ||
            (now.tv_sec == w->due.tv_sec && now.tv_nsec >= w->due.tv_nsec))
            worker_start(st, k);
    }
}

static void stop_all(struct main_state *st)
{
    enum main_worker_kind k;
    time_t deadline = time(NULL) + MAIN_STOP_GRACE_S;
    int alive;

    for (k = 0; k < WORKER_COUNT; k++) {
        if (st->w[k].pid > 0)
            kill(st->w[k].pid, SIGTERM);
    }
    do {
        pid_t pid;
        int status;

        alive = 0;
        while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
            for (k = 0; k < WORKER_COUNT; k++) {
                if (st->w[k].pid == pid)
                    st->w[k].pid = 0;
            }
        }
        for (k = 0; k < WORKER_COUNT; k++)
            alive += st->w[k].pid > 0;
        if (alive > 0)
            usleep(20 * 1000);
    } while (alive > 0 && time(NULL) < deadline);
    for (k = 0; k < WORKER_COUNT; k++) {
        if (st->w[k].pid > 0) {
            log_warn("%s worker pid=%ld did not stop; killing it",
                     worker_names[k], (long)st->w[k].pid);
            kill(st->w[k].pid, SIGKILL);
            waitpid(st->w[k].pid, NULL, 0);
        }
    }
}

static void write_pidfile(const struct cfg *cfg)
{
    char path[PATH_MAX];
    FILE *f;

    snprintf(path, sizeof(path), "%s/subgated.pid", cfg->run_dir);
    f = fopen(path, "w");
    if (f == NULL) {
        log_warn("cannot write %s: %s", path, strerror(errno));
        return;
    }
    fprintf(f, "%ld\n", (long)getpid());
    fclose(f);
}

/* The supervision loop: signals are blocked and taken with sigtimedwait,
 * so no handler runs and no state is shared with one. */
static int supervise(struct main_state *st)
{
    sigset_t set;

    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    for (;;) {
        struct timespec tick = {0, 200 * 1000000L};
        siginfo_t si;
        int sig = sigtimedwait(&set, &si, &tick);
        pid_t pid;
        int status;
        enum main_worker_kind k;

        if (sig == SIGTERM || sig == SIGINT) {
            log_info("stopping on signal %d", sig);
            stop_all(st);
            log_info("stopped");
            return 0;
        }
        if (sig == SIGHUP) {
            log_info("SIGHUP: passing on to workers");
            if (st->cfg->chroot[0] != '\0')
                (void)smtpd_jail_refresh(st->cfg); /* logs its errors */
            for (k = 0; k < WORKER_COUNT; k++) {
                if (st->w[k].pid > 0)
                    kill(st->w[k].pid, SIGHUP);
            }
        }
        while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
            reap(st, pid, status);
        restart_due(st);
    }
}

int main(int argc, char **argv)
{
    struct main_state st;
    const char *path = NULL;
    char err[512];
    int check_only = 0, opt;
    sigset_t set;
    enum main_worker_kind k;

    while ((opt = getopt(argc, argv, "c:nh")) != -1) {
        switch (opt) {
        case 'c':
            path = optarg;
            break;
        case 'n':
            check_only = 1;
            break;
        default:
            usage();
        }
    }
    if (optind != argc)
        usage();
    log_init("subgated", 0);
    memset(&st, 0, sizeof(st));
    if (cfg_load(path, &st.cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "subgated: %s\n", err);
        return 1;
    }
    if (check_only) {
        cfg_print(st.cfg, stdout);
        cfg_free(&st.cfg);
        return 0;
    }
    log_init("subgated", st.cfg->log_syslog);
    if (st.cfg->tls_cert[0] == '\0' || st.cfg->tls_key[0] == '\0')
        log_fatal("%s: tls_cert and tls_key must be set", st.cfg->path);
    if (st.cfg->chroot[0] != '\0' && geteuid() != 0)
        log_fatal("%s: chroot = %s needs subgated to start as root",
                  st.cfg->path, st.cfg->chroot);

    /* Signals are taken synchronously by supervise(); block them before
     * any worker exists so none is lost. Workers unblock them. */
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigprocmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    make_dir(st.cfg->state_dir, 0755);
    make_dir(st.cfg->run_dir, 0755);
    if (queue_dirs_init(st.cfg->queue_dir) != 0)
        log_fatal("cannot create queue directories under %s",
                  st.cfg->queue_dir);
    if (mailgate_spool_init(st.cfg->queue_dir) != 0)
        log_fatal("cannot create %s/%s", st.cfg->queue_dir, MAILGATE_SPOOL_DIR);
    chown_dirs(st.cfg);
    if (st.cfg->chroot[0] != '\0')
        smtpd_jail_prepare(st.cfg);
    find_signer(&st);
    find_admin(&st);
    bind_list(&st, st.cfg->submission_listen, 0, "submission_listen");
    bind_list(&st, st.cfg->submissions_listen, 1, "submissions_listen");
    if (st.nls == 0)
        log_fatal("%s: no listener configured", st.cfg->path);
    write_pidfile(st.cfg);

    for (k = 0; k < WORKER_COUNT; k++)
        st.w[k].delay_ms = MAIN_RESTART_MIN_MS;
    remove_stale_socket(st.cfg);
    worker_start(&st, WORKER_SIGNER);
    wait_for_signer(st.cfg);
    worker_start(&st, WORKER_QMGR);
    if (!st.w[WORKER_MAILGATE].disabled)
        worker_start(&st, WORKER_MAILGATE);
    worker_start(&st, WORKER_SMTPD);
    log_info("subgated started node=%s", st.cfg->node_name);
    supervise(&st);
    close_listeners(&st);
    cfg_free(&st.cfg);
    return 0;
}
