/* subgate-signer: the only process that reads DKIM private keys. Serves
 * signing requests on <run_dir>/signer.sock (see signer_conn.h) until
 * SIGTERM or SIGINT. Started by subgated's master as
 * `subgate-signer -c CONFIG`; -f (foreground) is accepted, it is the only
 * mode. */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include <uv.h>

#include "../common/cfg.h"
#include "../common/log.h"
#include "signer_conn.h"

struct signer_main {
    struct signer_conn_srv srv;
    uv_signal_t sigterm;
    uv_signal_t sigint;
};

static void signer_main_usage(void)
{
    fprintf(stderr, "usage: subgate-signer [-f] [-c CONFIG]\n");
    exit(2);
}

static void signer_main_signal_cb(uv_signal_t *h, int signum)
{
    struct signer_main *m = h->data;

    log_info("signer: signal %d, stopping", signum);
    signer_conn_srv_stop(&m->srv);
    uv_close((uv_handle_t *)&m->sigterm, NULL);
    uv_close((uv_handle_t *)&m->sigint, NULL);
}

/* Run as the signer's user when started as root: it owns the key files;
 * the socket goes to it and to the group of subgated's workers (cfg user)
 * so that they, and nobody else, may connect. */
static void signer_main_drop(const struct cfg *cfg, const char *sock_path)
{
    const char *name =
        cfg->signer_user[0] != '\0' ? cfg->signer_user : cfg->user;
    struct passwd *pw;
    uid_t uid;
    gid_t gid, sock_gid;

    if (geteuid() != 0 || name[0] == '\0')
        return;
    pw = getpwnam(name);
    if (pw == NULL)
        log_fatal("signer: unknown user %s", name);
    uid = pw->pw_uid;
    gid = sock_gid = pw->pw_gid;
    if (cfg->user[0] != '\0' && strcmp(cfg->user, name) != 0) {
        pw = getpwnam(cfg->user);
        if (pw == NULL)
            log_fatal("signer: unknown user %s", cfg->user);
        sock_gid = pw->pw_gid;
    }
    if (chown(sock_path, uid, sock_gid) < 0)
        log_fatal_errno(errno, "signer: chown %s", sock_path);
    if (initgroups(name, gid) < 0)
        log_fatal_errno(errno, "signer: initgroups %s", name);
    if (setgid(gid) < 0)
        log_fatal_errno(errno, "signer: setgid %u", (unsigned)gid);
    if (setuid(uid) < 0)
        log_fatal_errno(errno, "signer: setuid %u", (unsigned)uid);
    if (uid != 0 && setuid(0) == 0)
        log_fatal("signer: could still regain root after dropping it");
}

static void signer_main_signals(struct signer_main *m, uv_loop_t *loop)
{
    int rc;

    /* A client that hangs up early must not kill us with SIGPIPE; SIGHUP
     * has nothing to reload: keys and database are read per request. */
    signal(SIGPIPE, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    uv_signal_init(loop, &m->sigterm);
    uv_signal_init(loop, &m->sigint);
    m->sigterm.data = m->sigint.data = m;
    rc = uv_signal_start(&m->sigterm, signer_main_signal_cb, SIGTERM);
    if (rc == 0)
        rc = uv_signal_start(&m->sigint, signer_main_signal_cb, SIGINT);
    if (rc < 0)
        log_fatal_errno(rc, "signer: signal handlers");
}

int main(int argc, char **argv)
{
    struct signer_main m;
    const char *path = NULL;
    struct cfg *cfg = NULL;
    uv_loop_t loop;
    char err[1024];
    int opt, rc;

    while ((opt = getopt(argc, argv, "c:f")) != -1) {
        if (opt == 'c')
            path = optarg;
        else if (opt != 'f')
            signer_main_usage();
    }
    if (optind != argc)
        signer_main_usage();
    log_init("subgate-signer", 0);
    if (cfg_load(path, &cfg, err, sizeof(err)) < 0)
        log_fatal("%s", err);
    log_init("subgate-signer", cfg->log_syslog);

    memset(&m, 0, sizeof(m));
    rc = uv_loop_init(&loop);
    if (rc < 0)
        log_fatal_errno(rc, "signer: event loop");
    if (signer_conn_srv_init(&m.srv, &loop, cfg, err, sizeof(err)) < 0)
        log_fatal("signer: %s", err);
    signer_main_drop(cfg, m.srv.sock_path);
    signer_main_signals(&m, &loop);
    /* Failure is logged; requests retry the database until it opens. */
    signer_conn_srv_open_db(&m.srv);
    log_info("signer: listening on %s parsed_keys=%s", m.srv.sock_path,
             signer_dkim_handoff(m.srv.dkim) ? "yes" : "no");

    uv_run(&loop, UV_RUN_DEFAULT);

    signer_conn_srv_close(&m.srv);
    rc = uv_loop_close(&loop);
    if (rc < 0)
        log_error_errno(rc, "signer: event loop not empty at exit");
    cfg_free(&cfg);
    log_info("signer: stopped");
    return 0;
}
