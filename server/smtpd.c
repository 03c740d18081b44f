/* smtpd: the SMTP worker's event loop: listeners, the session limit and
 * signals. Sessions themselves are in smtp_session.c. */
#include "smtpd.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "../common/log.h"
#include "../common/signer_proto.h"
#include "../common/xalloc.h"
#include "metrics.h"
#include "auth.h"
#include "queue_group.h"
#include "ratelimit.h"
#include "smtp_gate.h"
#include "smtp_report.h"
#include "smtp_session.h"
#include "tls.h"

/* Connections the kernel queues before the loop accepts them: a thousand
 * clients connecting at once overflow 511 and wait a second for their SYN
 * to be sent again. Linux caps it at net.core.somaxconn. */
#define SMTPD_BACKLOG 4096

struct smtpd;

struct smtpd_lsock {
    uv_tcp_t tcp;                   /* data = this */
    struct smtpd *d;                /* borrowed */
    const struct smtpd_listener *l; /* borrowed from the caller */
};

struct smtpd {
    uv_loop_t loop;
    struct smtp_server srv;
    struct smtpd_lsock *ls; /* owned, nls entries */
    size_t nls;
    uv_signal_t sig_term, sig_int, sig_hup;
    struct metrics_http *metrics; /* owned; NULL: no endpoint */
};

/* A connection over max_sessions: one reply, then close. */
struct smtpd_busy {
    uv_tcp_t tcp; /* data = this */
    uv_write_t req;
    char reply[40]; /* the octets being written */
};

static const char smtpd_busy_reply[] = "421 4.7.0 Too many connections\r\n";

static void smtpd_busy_on_close(uv_handle_t *h)
{
    free(h->data);
}

static void smtpd_busy_on_write(uv_write_t *req, int status)
{
    struct smtpd_busy *b = req->data;

    (void)status;
    uv_close((uv_handle_t *)&b->tcp, smtpd_busy_on_close);
}

static void smtpd_reject_busy(struct smtpd_lsock *ls)
{
    struct smtpd_busy *b = xcalloc(1, sizeof(*b));
    uv_buf_t buf;

    memcpy(b->reply, smtpd_busy_reply, sizeof(smtpd_busy_reply));
    buf = uv_buf_init(b->reply, sizeof(smtpd_busy_reply) - 1);

    uv_tcp_init(&ls->d->loop, &b->tcp);
    b->tcp.data = b;
    b->req.data = b;
    if (uv_accept((uv_stream_t *)&ls->tcp, (uv_stream_t *)&b->tcp) != 0) {
        uv_close((uv_handle_t *)&b->tcp, smtpd_busy_on_close);
        return;
    }
    log_warn("too many sessions (%u): refused a connection on %s",
             ls->d->srv.nsessions, ls->l->name);
    /* An implicit-TLS client would not understand a clear-text reply;
     * a handshake just to refuse is not worth it. */
    if (ls->l->implicit_tls || uv_write(&b->req, (uv_stream_t *)&b->tcp, &buf,
                                        1, smtpd_busy_on_write) != 0)
        uv_close((uv_handle_t *)&b->tcp, smtpd_busy_on_close);
}

static void smtpd_on_connection(uv_stream_t *server, int status)
{
    struct smtpd_lsock *ls = server->data;
    struct smtpd *d = ls->d;

    if (status < 0) {
        log_error("listener %s: %s", ls->l->name, uv_strerror(status));
        return;
    }
    if (d->srv.stopping)
        return;
    if (d->srv.nsessions >= d->srv.cfg->max_sessions) {
        metrics_inc(METRIC_CONNECTIONS_REFUSED);
        smtpd_reject_busy(ls);
        return;
    }
    smtp_session_start(&d->srv, server, ls->l->name, ls->l->implicit_tls);
}

static void smtpd_stop(struct smtpd *d)
{
    struct smtp_session *s, *next;
    size_t i;

    if (d->srv.stopping)
        return;
    d->srv.stopping = 1;
    log_info("smtpd: stopping, sessions=%u", d->srv.nsessions);
    for (i = 0; i < d->nls; i++)
        uv_close((uv_handle_t *)&d->ls[i].tcp, NULL);
    uv_close((uv_handle_t *)&d->sig_term, NULL);
    uv_close((uv_handle_t *)&d->sig_int, NULL);
    uv_close((uv_handle_t *)&d->sig_hup, NULL);
    metrics_http_stop(&d->metrics);
    smtp_gate_stop(d->srv.gate);
    /* Sessions are freed from close callbacks only, never in here. */
    for (s = d->srv.sessions; s != NULL; s = next) {
        next = s->next;
        smtp_session_stop(s);
    }
}

/* SIGHUP: loads tls_cert and tls_key again into a new context, which new
 * sessions get; sessions already running keep the context they started
 * with (each holds a reference). A file that cannot be loaded keeps the
 * old context. */
static void smtpd_reload_tls(struct smtpd *d)
{
    const struct cfg *cfg = d->srv.cfg;
    char err[512];
    SSL_CTX *ctx;

    ctx = tls_server_ctx_new(cfg->tls_cert, cfg->tls_key, err, sizeof(err));
    if (ctx == NULL) {
        log_error("smtpd: tls reload failed, keeping the old certificate: %s",
                  err);
        return;
    }
    tls_server_ctx_free(&d->srv.tls_ctx);
    d->srv.tls_ctx = ctx;
    log_info("smtpd: tls certificate reloaded cert=%s sessions=%u",
             cfg->tls_cert, d->srv.nsessions);
}

static void smtpd_on_signal(uv_signal_t *h, int signum)
{
    struct smtpd *d = h->data;

    if (signum == SIGHUP) {
        smtpd_reload_tls(d);
        return;
    }
    smtpd_stop(d);
}

static void smtpd_close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* Start-up failed half-way: closes what was opened and the loop. */
static void smtpd_teardown(struct smtpd *d)
{
    uv_walk(&d->loop, smtpd_close_walk, NULL);
    uv_run(&d->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&d->loop) != 0)
        log_error("smtpd: event loop still busy at exit");
}

static int smtpd_listen(struct smtpd *d, const struct smtpd_listener *ls,
                        size_t nls)
{
    size_t i;
    int rc;

    d->ls = xcalloc(nls, sizeof(*d->ls));
    for (i = 0; i < nls; i++) {
        struct smtpd_lsock *l = &d->ls[i];

        l->d = d;
        l->l = &ls[i];
        uv_tcp_init(&d->loop, &l->tcp);
        l->tcp.data = l;
        d->nls++;
        rc = uv_tcp_open(&l->tcp, ls[i].fd);
        if (rc == 0)
            rc = uv_listen((uv_stream_t *)&l->tcp, SMTPD_BACKLOG,
                           smtpd_on_connection);
        if (rc != 0) {
            log_error("smtpd: cannot listen on %s: %s", ls[i].name,
                      uv_strerror(rc));
            return -1;
        }
    }
    return 0;
}

static int smtpd_signals(struct smtpd *d)
{
    uv_signal_t *h[] = {&d->sig_term, &d->sig_int, &d->sig_hup};
    const int signo[] = {SIGTERM, SIGINT, SIGHUP};
    size_t i;

    for (i = 0; i < 3; i++) {
        uv_signal_init(&d->loop, h[i]);
        h[i]->data = d;
        if (uv_signal_start(h[i], smtpd_on_signal, signo[i]) != 0) {
            log_error("smtpd: cannot handle signal %d", signo[i]);
            return -1;
        }
    }
    return 0;
}

static void smtpd_free(struct smtpd *d)
{
    ratelimit_free(&d->srv.rl);
    smtp_report_free(&d->srv.report);
    auth_free(&d->srv.auth);
    smtp_gate_free(&d->srv.gate);
    tls_server_ctx_free(&d->srv.tls_ctx);
    free(d->srv.signer_sock);
    free(d->srv.tls_rbuf);
    queue_group_free(&d->srv.qgroup);
    free(d->ls);
    free(d);
}

int smtpd_main(const struct cfg *cfg, const struct smtpd_listener *ls,
               size_t nls)
{
    struct ratelimit_limits lim;
    struct smtpd *d;
    SSL_CTX *ctx;
    char err[512];
    int rc;

    /* A client that goes away must not kill the worker with SIGPIPE. */
    signal(SIGPIPE, SIG_IGN);
    ctx = tls_server_ctx_new(cfg->tls_cert, cfg->tls_key, err, sizeof(err));
    if (ctx == NULL) {
        log_error("smtpd: %s", err);
        return 1;
    }
    d = xcalloc(1, sizeof(*d));
    rc = uv_loop_init(&d->loop);
    if (rc != 0) {
        log_error("smtpd: event loop: %s", uv_strerror(rc));
        tls_server_ctx_free(&ctx);
        free(d);
        return 1;
    }
    d->srv.loop = &d->loop;
    d->srv.cfg = cfg;
    d->srv.tls_ctx = ctx;
    d->srv.signer_sock = xasprintf("%s/%s", cfg->run_dir, SIGNER_SOCKET_NAME);
    d->srv.tls_rbuf = xmalloc(SMTP_INBUF_SIZE);
    d->srv.qgroup = queue_group_new(cfg->queue_dir, NULL);
    d->srv.auth = auth_new(&d->loop, cfg);
    ratelimit_limits_from_cfg(cfg, &lim);
    d->srv.rl = ratelimit_new(&lim, RATELIMIT_MAX_ENTRIES);
    d->srv.report = smtp_report_new(&d->loop, cfg);
    if (smtpd_listen(d, ls, nls) != 0 || smtpd_signals(d) != 0) {
        smtpd_teardown(d);
        smtpd_free(d);
        return 1;
    }
    d->srv.gate = smtp_gate_new(&d->loop, cfg);
    d->metrics = metrics_http_start(&d->loop, cfg, &d->srv.nsessions);
    log_info("smtpd: ready listeners=%zu max_sessions=%u", nls,
             cfg->max_sessions);
    uv_run(&d->loop, UV_RUN_DEFAULT);
    /* Every session, signer request and queue work has ended here: they
     * keep the loop alive until then. */
    if (uv_loop_close(&d->loop) != 0)
        log_error("smtpd: event loop still busy at exit");
    log_info("smtpd: stopped");
    smtpd_free(d);
    return 0;
}
