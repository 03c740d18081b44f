/* metrics_http: the GET /metrics endpoint of metrics.h on the SMTP
 * worker's loop. Plain HTTP/1.1, one request per connection, answered
 * with "Connection: close". A request is read into a fixed buffer of
 * SG_MAX_METRICS_REQUEST octets and must be complete within
 * METRICS_TIMEOUT_MS; the queue directory and qmgr.stats are read in the
 * thread pool, so a long queue never holds up SMTP sessions. */
#include "metrics.h"

#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/limits.h"
#include "../common/log.h"
#include "../common/xalloc.h"

struct metrics_conn;

struct metrics_http {
    uv_loop_t *loop;           /* borrowed */
    const struct cfg *cfg;     /* borrowed */
    const unsigned *nsessions; /* borrowed */
    uv_tcp_t ls[METRICS_MAX_LISTEN];
    size_t nls;
    struct metrics_conn *conns; /* live connections (list head) */
    unsigned nconns;
    unsigned refs; /* listeners not yet closed + connections not freed */
    int stopping;
};

struct metrics_conn {
    struct metrics_http *h; /* borrowed */
    struct metrics_conn *prev, *next;
    uv_tcp_t tcp;     /* data = this */
    uv_timer_t timer; /* data = this */
    uv_shutdown_t shutdown_req;
    uv_write_t wreq;
    uv_work_t work;
    int handles; /* tcp and timer until closed */
    int busy;    /* work or write in flight */
    int closing; /* handles are being closed */
    int head;    /* HEAD: no body */
    char req[SG_MAX_METRICS_REQUEST];
    size_t reqlen;
    char queue_dir[PATH_MAX]; /* copies for the thread pool */
    char stats_path[PATH_MAX];
    struct metrics_snapshot snap;
    char *resp; /* owned while written */
};

/* ---- the request -------------------------------------------------------- */

enum metrics_req metrics_http_parse(const char *buf, size_t len, int *head_r)
{
    const char *eol = memchr(buf, '\n', len), *sp1, *sp2, *end;
    size_t mlen, tlen;

    *head_r = 0;
    if (eol == NULL)
        return METRICS_REQ_INCOMPLETE;
    /* The header section ends with an empty line (RFC 9112 2.1). */
    end = eol + 1;
    for (;;) {
        const char *nl = memchr(end, '\n', (size_t)(buf + len - end));
        if (nl == NULL)
            return METRICS_REQ_INCOMPLETE;
        if (nl == end || (nl == end + 1 && *end == '\r'))
            break;
        end = nl + 1;
    }
    /* request-line = method SP request-target SP HTTP-version */
    sp1 = memchr(buf, ' ', (size_t)(eol - buf));
    if (sp1 == NULL)
        return METRICS_REQ_BAD;
    sp2 = memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1));
    if (sp2 == NULL || eol - sp2 < 9 || strncmp(sp2 + 1, "HTTP/1.", 7) != 0)
        return METRICS_REQ_BAD;
    mlen = (size_t)(sp1 - buf);
    tlen = strcspn(sp1 + 1, "? ");
    if (mlen == 4 && memcmp(buf, "HEAD", 4) == 0)
        *head_r = 1;
    else if (!(mlen == 3 && memcmp(buf, "GET", 3) == 0))
        return METRICS_REQ_BAD_METHOD;
    if (tlen == 8 && memcmp(sp1 + 1, "/metrics", 8) == 0)
        return METRICS_REQ_METRICS;
    return METRICS_REQ_NOT_FOUND;
}

/* ---- connection life ---------------------------------------------------- */

static void metrics_http_unref(struct metrics_http *h)
{
    if (--h->refs == 0)
        free(h);
}

/* Frees c once its handles are closed and nothing is in flight. */
static void metrics_conn_maybe_free(struct metrics_conn *c)
{
    struct metrics_http *h = c->h;

    if (c->handles > 0 || c->busy)
        return;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        h->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    h->nconns--;
    free(c->resp);
    free(c);
    metrics_http_unref(h);
}

static void metrics_conn_on_close(uv_handle_t *hd)
{
    struct metrics_conn *c = hd->data;

    c->handles--;
    metrics_conn_maybe_free(c);
}

static void metrics_conn_close(struct metrics_conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    uv_close((uv_handle_t *)&c->tcp, metrics_conn_on_close);
    uv_close((uv_handle_t *)&c->timer, metrics_conn_on_close);
}

static void metrics_conn_on_timeout(uv_timer_t *t)
{
    metrics_conn_close(t->data);
}

static void metrics_conn_on_shutdown(uv_shutdown_t *req, int status)
{
    (void)status;
    metrics_conn_close(req->data);
}

static void metrics_conn_on_write(uv_write_t *req, int status)
{
    struct metrics_conn *c = req->data;

    c->busy = 0;
    free(c->resp);
    c->resp = NULL;
    if (c->closing) {
        metrics_conn_maybe_free(c); /* its handles may be closed already */
        return;
    }
    if (status < 0 || uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp,
                                  metrics_conn_on_shutdown) != 0)
        metrics_conn_close(c);
}

/* Sends status line, headers and body (not for HEAD), then closes. */
static void metrics_conn_respond(struct metrics_conn *c, const char *status,
                                 const char *ctype, const char *body,
                                 size_t blen)
{
    size_t cap = blen + 256;
    int n;
    uv_buf_t b;

    uv_read_stop((uv_stream_t *)&c->tcp);
    c->resp = xmalloc(cap);
    n = snprintf(c->resp, cap,
                 "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: "
                 "%zu\r\nConnection: close\r\n\r\n",
                 status, ctype, blen);
    SG_ASSERT(n > 0 && (size_t)n < cap - blen);
    if (!c->head)
        memcpy(c->resp + n, body, blen);
    b = uv_buf_init(c->resp, (unsigned)n + (c->head ? 0 : (unsigned)blen));
    c->wreq.data = c;
    c->shutdown_req.data = c;
    if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1,
                 metrics_conn_on_write) != 0) {
        free(c->resp);
        c->resp = NULL;
        metrics_conn_close(c);
        return;
    }
    c->busy = 1;
}

static void metrics_conn_error(struct metrics_conn *c, const char *status)
{
    char body[64];
    int n = snprintf(body, sizeof(body), "%s\n", status);

    metrics_conn_respond(c, status, "text/plain; charset=utf-8", body,
                         (size_t)n);
}

/* ---- a scrape ----------------------------------------------------------- */

static void metrics_scrape_work(uv_work_t *w)
{
    struct metrics_conn *c = w->data;
    struct metrics_snapshot *sn = &c->snap;

    if (metrics_queue_scan(c->queue_dir, (long long)time(NULL), sn) != 0)
        sn->queue_len = -1;
    sn->qmgr_ok = metrics_stats_read(c->stats_path, sn->counter) == 0;
}

static void metrics_scrape_done(uv_work_t *w, int status)
{
    struct metrics_conn *c = w->data;
    char *body = NULL;
    size_t blen = 0;
    FILE *f;

    c->busy = 0;
    if (c->closing) {
        metrics_conn_maybe_free(c);
        return;
    }
    if (status != 0) {
        metrics_conn_error(c, "503 Service Unavailable");
        return;
    }
    f = open_memstream(&body, &blen);
    if (f == NULL)
        log_panic("metrics: open_memstream: out of memory");
    metrics_render(&c->snap, f);
    if (fclose(f) != 0)
        log_panic("metrics: cannot render the exposition");
    metrics_conn_respond(
        c, "200 OK", "text/plain; version=0.0.4; charset=utf-8", body, blen);
    free(body);
}

static void metrics_scrape_start(struct metrics_conn *c)
{
    const struct cfg *cfg = c->h->cfg;

    uv_read_stop((uv_stream_t *)&c->tcp);
    memset(&c->snap, 0, sizeof(c->snap));
    metrics_snapshot_take(&c->snap);
    c->snap.sessions = *c->h->nsessions;
    c->snap.node = cfg->node_name;
    snprintf(c->queue_dir, sizeof(c->queue_dir), "%s", cfg->queue_dir);
    snprintf(c->stats_path, sizeof(c->stats_path), "%s/%s", cfg->run_dir,
             METRICS_STATS_FILE);
    c->work.data = c;
    if (uv_queue_work(c->h->loop, &c->work, metrics_scrape_work,
                      metrics_scrape_done) != 0) {
        metrics_conn_error(c, "503 Service Unavailable");
        return;
    }
    c->busy = 1;
}

/* ---- reading ------------------------------------------------------------ */

static void metrics_conn_alloc(uv_handle_t *hd, size_t hint, uv_buf_t *buf)
{
    struct metrics_conn *c = hd->data;

    (void)hint;
    *buf =
        uv_buf_init(c->req + c->reqlen, (unsigned)(sizeof(c->req) - c->reqlen));
}

static void metrics_conn_on_read(uv_stream_t *st, ssize_t nread,
                                 const uv_buf_t *buf)
{
    struct metrics_conn *c = st->data;
    enum metrics_req r;

    (void)buf;
    if (nread == 0 || c->closing)
        return;
    if (nread < 0) {
        metrics_conn_close(c);
        return;
    }
    c->reqlen += (size_t)nread;
    r = metrics_http_parse(c->req, c->reqlen, &c->head);
    switch (r) {
    case METRICS_REQ_INCOMPLETE:
        if (c->reqlen == sizeof(c->req))
            metrics_conn_error(c, "431 Request Header Fields Too Large");
        break;
    case METRICS_REQ_METRICS:
        metrics_scrape_start(c);
        break;
    case METRICS_REQ_NOT_FOUND:
        metrics_conn_error(c, "404 Not Found");
        break;
    case METRICS_REQ_BAD_METHOD:
        metrics_conn_error(c, "405 Method Not Allowed");
        break;
    case METRICS_REQ_BAD:
        metrics_conn_error(c, "400 Bad Request");
        break;
    }
}

static void metrics_on_reject_close(uv_handle_t *hd)
{
    free(hd);
}

static void metrics_on_connection(uv_stream_t *server, int status)
{
    struct metrics_http *h = server->data;
    struct metrics_conn *c;

    if (status < 0 || h->stopping)
        return;
    if (h->nconns >= METRICS_MAX_CONNS) {
        uv_tcp_t *t = xcalloc(1, sizeof(*t));

        uv_tcp_init(h->loop, t);
        if (uv_accept(server, (uv_stream_t *)t) == 0)
            log_warn("metrics: %d scrapes in progress; closing another",
                     METRICS_MAX_CONNS);
        uv_close((uv_handle_t *)t, metrics_on_reject_close);
        return;
    }
    c = xcalloc(1, sizeof(*c));
    c->h = h;
    uv_tcp_init(h->loop, &c->tcp);
    uv_timer_init(h->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->handles = 2;
    c->next = h->conns;
    if (c->next != NULL)
        c->next->prev = c;
    h->conns = c;
    h->nconns++;
    h->refs++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0 ||
        uv_read_start((uv_stream_t *)&c->tcp, metrics_conn_alloc,
                      metrics_conn_on_read) != 0) {
        metrics_conn_close(c);
        return;
    }
    uv_timer_start(&c->timer, metrics_conn_on_timeout, METRICS_TIMEOUT_MS, 0);
}

/* ---- listening ---------------------------------------------------------- */

/* Binds and listens on one "host:port" or "[v6]:port". 0 or -1 (logged). */
static int metrics_listen_one(struct metrics_http *h, const char *spec)
{
    char host[256];
    const char *port;
    struct addrinfo hints, *res = NULL;
    uv_tcp_t *t = &h->ls[h->nls];
    size_t hlen;
    int rc;

    if (spec[0] == '[') {
        const char *close = strchr(spec, ']');
        hlen = close != NULL ? (size_t)(close - spec - 1) : 0;
        port = close != NULL ? close + 2 : "";
        spec++;
    } else {
        port = strrchr(spec, ':');
        hlen = port != NULL ? (size_t)(port - spec) : 0;
        port = port != NULL ? port + 1 : "";
    }
    if (hlen == 0 || hlen >= sizeof(host) || port[0] == '\0') {
        log_error("metrics: bad address %s", spec);
        return -1;
    }
    memcpy(host, spec, hlen);
    host[hlen] = '\0';
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        log_error("metrics: cannot resolve %s: %s", host, gai_strerror(rc));
        return -1;
    }
    uv_tcp_init(h->loop, t);
    t->data = h;
    h->nls++;
    h->refs++;
    rc = uv_tcp_bind(t, res->ai_addr, 0);
    freeaddrinfo(res);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)t, 16, metrics_on_connection);
    if (rc != 0) {
        log_error("metrics: cannot listen on %s:%s: %s", host, port,
                  uv_strerror(rc));
        return -1;
    }
    log_info("metrics: listening on %s:%s", host, port);
    return 0;
}

static void metrics_listener_on_close(uv_handle_t *hd)
{
    metrics_http_unref(hd->data);
}

struct metrics_http *metrics_http_start(uv_loop_t *loop, const struct cfg *cfg,
                                        const unsigned *nsessions)
{
    struct metrics_http *h;
    char *copy, *tok, *save = NULL;
    int rc = 0;

    if (cfg->metrics_listen[0] == '\0')
        return NULL;
    h = xcalloc(1, sizeof(*h));
    h->loop = loop;
    h->cfg = cfg;
    h->nsessions = nsessions;
    h->refs = 1; /* ours, until stop */
    copy = xstrdup(cfg->metrics_listen);
    for (tok = strtok_r(copy, " ", &save); tok != NULL && rc == 0;
         tok = strtok_r(NULL, " ", &save)) {
        if (h->nls == METRICS_MAX_LISTEN) {
            log_error("metrics: more than %d addresses in metrics_listen",
                      METRICS_MAX_LISTEN);
            rc = -1;
            break;
        }
        rc = metrics_listen_one(h, tok);
    }
    free(copy);
    if (rc != 0) {
        log_error("metrics: endpoint off; mail is served as usual");
        metrics_http_stop(&h);
        return NULL;
    }
    return h;
}

void metrics_http_stop(struct metrics_http **hp)
{
    struct metrics_http *h = *hp;
    struct metrics_conn *c, *next;
    size_t i;

    if (h == NULL)
        return;
    *hp = NULL;
    h->stopping = 1;
    for (i = 0; i < h->nls; i++)
        uv_close((uv_handle_t *)&h->ls[i], metrics_listener_on_close);
    for (c = h->conns; c != NULL; c = next) {
        next = c->next;
        metrics_conn_close(c);
    }
    metrics_http_unref(h);
}
