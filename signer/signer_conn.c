/* signer_conn: the signer's socket server; see signer_conn.h. */
#include "signer_conn.h"

#include <ctype.h>
#include <stddef.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "../common/db.h"
#include "../common/ipc.h"
#include "../common/limits.h"
#include "../common/log.h"
#include "../common/signer_proto.h"
#include "../common/xalloc.h"

/* A reply reason is short; this bounds what a reason can grow to. */
#define SIGNER_CONN_MAX_REASON 512
/* First size of the message buffer; it doubles up to max_message. */
#define SIGNER_CONN_MSG_INITIAL (64 * 1024)

enum signer_conn_state {
    SIGNER_CONN_BEGIN,   /* waiting for BEGIN */
    SIGNER_CONN_DATA,    /* DATA frames until END */
    SIGNER_CONN_SIGNING, /* END seen, work in the thread pool */
    SIGNER_CONN_REPLIED, /* reply written or being written */
};

/* One key of a signing job, copied so that the thread pool owns it. */
struct signer_conn_key {
    char selector[sizeof(((struct db_sign_key *)0)->selector)];
    enum signer_dkim_algo algo;
    char *pem; /* owned; wiped before free */
    size_t pemlen;
    EVP_PKEY *pkey; /* owned reference: pem parsed once by signer_keys */
};

/* What the thread pool works on and hands back. */
struct signer_conn_job {
    struct signer_conn_key keys[SIGNER_CONN_MAX_KEYS];
    size_t nkeys;
    char *out; /* owned: the signature fields, concatenated */
    size_t outlen;
    char err[SIGNER_CONN_MAX_REASON]; /* "" or why signing failed */
    size_t failed; /* index of the key that failed, nkeys if not a key */
};

struct signer_conn {
    uv_pipe_t pipe;              /* data = this */
    struct signer_conn_srv *srv; /* borrowed */
    struct signer_conn *prev, *next;
    enum signer_conn_state state;
    int closing; /* uv_close() called */
    int closed;  /* close callback ran */
    int working; /* thread pool work in flight */
    char qid[SIGNER_CONN_MAX_QID + 1];
    char domain[SG_MAX_DOMAIN + 1];
    char *msg; /* owned, the message being received */
    size_t len, cap;
    struct signer_conn_job *job; /* owned while signing */
    uv_work_t work;
    uv_write_t wr;
    uv_buf_t wbufs[2];
    uint8_t hdr[IPC_HDR_LEN];
    char *reply; /* owned until the write callback */
    /* Last: a new connection clears only what comes before it. */
    struct ipc_reader rd;
};

static const char *signer_conn_id(const struct signer_conn *c)
{
    return c->qid[0] != '\0' ? c->qid : "-";
}

static void signer_conn_job_free(struct signer_conn_job **jp)
{
    struct signer_conn_job *j = *jp;
    size_t i;

    if (j == NULL)
        return;
    for (i = 0; i < j->nkeys; i++) {
        if (j->keys[i].pem != NULL) {
            explicit_bzero(j->keys[i].pem, j->keys[i].pemlen);
            free(j->keys[i].pem);
        }
        EVP_PKEY_free(j->keys[i].pkey);
    }
    free(j->out);
    free(j);
    *jp = NULL;
}

static void signer_conn_accept(struct signer_conn_srv *s);

static void signer_conn_free(struct signer_conn *c)
{
    struct signer_conn_srv *s = c->srv;

    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    s->nconns--;
    signer_conn_job_free(&c->job);
    free(c->msg);
    free(c->reply);
    free(c);
    /* A connection that waited for this slot is taken now. */
    if (s->accept_waiting && s->listening) {
        s->accept_waiting = 0;
        signer_conn_accept(s);
    }
}

static void signer_conn_close_cb(uv_handle_t *h)
{
    struct signer_conn *c = h->data;

    c->closed = 1;
    if (!c->working)
        signer_conn_free(c);
}

static void signer_conn_close(struct signer_conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    uv_close((uv_handle_t *)&c->pipe, signer_conn_close_cb);
}

/* A bug in the client: say what and hang up. */
static void signer_conn_protocol_error(struct signer_conn *c, const char *what)
{
    log_error("%s: signer protocol error: %s", signer_conn_id(c), what);
    signer_conn_close(c);
}

static void signer_conn_write_cb(uv_write_t *wr, int status)
{
    struct signer_conn *c = wr->data;

    if (status < 0 && status != UV_ECANCELED)
        log_error_errno(status, "%s: signer reply not sent", signer_conn_id(c));
    free(c->reply);
    c->reply = NULL;
    signer_conn_close(c);
}

/* Sends the one reply of this connection, then closes it. */
static void signer_conn_reply(struct signer_conn *c, uint32_t type,
                              const char *payload, size_t len)
{
    int rc;

    /* Whatever else the client sends is of no use now. */
    c->state = SIGNER_CONN_REPLIED;
    uv_read_stop((uv_stream_t *)&c->pipe);
    free(c->msg);
    c->msg = NULL;
    c->len = c->cap = 0;
    SG_ASSERT(len <= SG_IPC_MAX_PAYLOAD);
    c->reply = xmalloc(len + 1);
    memcpy(c->reply, payload, len);
    ipc_hdr_encode(c->hdr, type, (uint32_t)len);
    c->wbufs[0] = uv_buf_init((char *)c->hdr, IPC_HDR_LEN);
    c->wbufs[1] = uv_buf_init(c->reply, (unsigned int)len);
    c->wr.data = c;
    rc = uv_write(&c->wr, (uv_stream_t *)&c->pipe, c->wbufs, 2,
                  signer_conn_write_cb);
    if (rc < 0) {
        log_error_errno(rc, "%s: signer reply not sent", signer_conn_id(c));
        signer_conn_close(c);
    }
}

/* Refuses the request with reason, logging it with detail (may be NULL)
 * for the administrator. */
static void signer_conn_tempfail(struct signer_conn *c, const char *reason,
                                 const char *detail)
{
    log_error("%s: sign failed d=%s reason=%s%s%s%s", signer_conn_id(c),
              c->domain[0] != '\0' ? c->domain : "-", reason,
              detail != NULL ? " (" : "", detail != NULL ? detail : "",
              detail != NULL ? ")" : "");
    signer_conn_reply(c, SIGNER_TEMPFAIL, reason, strlen(reason));
}

/* Queue ids: letters and digits (queue file names). */
static int signer_conn_qid_ok(const char *s, size_t len)
{
    size_t i;

    if (len == 0 || len > SIGNER_CONN_MAX_QID)
        return 0;
    for (i = 0; i < len; i++)
        if (!isalnum((unsigned char)s[i]))
            return 0;
    return 1;
}

/* A domain name for d=: LDH labels (underscore allowed), dot-separated. */
static int signer_conn_domain_ok(const char *s, size_t len)
{
    size_t i;

    if (len == 0 || len > SG_MAX_DOMAIN || s[0] == '.' || s[len - 1] == '.')
        return 0;
    for (i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];

        if (ch == '.' && s[i + 1] == '.')
            return 0;
        if (!isalnum(ch) && ch != '-' && ch != '_' && ch != '.')
            return 0;
    }
    return 1;
}

/* BEGIN: "QUEUEID\0DOMAIN\0", nothing more. */
static void signer_conn_begin(struct signer_conn *c, const uint8_t *p,
                              uint32_t len)
{
    const char *qid = (const char *)p, *dom, *end;
    char esc[4 * SG_LOG_MAX_PEER_TEXT + 4];
    size_t qlen, dlen, i;

    end = memchr(qid, '\0', len);
    if (end == NULL) {
        signer_conn_protocol_error(c, "BEGIN without queue id");
        return;
    }
    qlen = (size_t)(end - qid);
    dom = end + 1;
    end = memchr(dom, '\0', len - qlen - 1);
    if (end == NULL || (size_t)(end - qid) + 1 != len) {
        signer_conn_protocol_error(c, "BEGIN payload malformed");
        return;
    }
    dlen = (size_t)(end - dom);
    c->state = SIGNER_CONN_DATA;
    if (!signer_conn_qid_ok(qid, qlen)) {
        signer_conn_tempfail(c, "bad queue id",
                             log_escape(qid, qlen, esc, sizeof(esc)));
        return;
    }
    memcpy(c->qid, qid, qlen + 1);
    if (!signer_conn_domain_ok(dom, dlen)) {
        signer_conn_tempfail(c, "bad domain",
                             log_escape(dom, dlen, esc, sizeof(esc)));
        return;
    }
    for (i = 0; i <= dlen; i++)
        c->domain[i] = (char)tolower((unsigned char)dom[i]);
}

static void signer_conn_data(struct signer_conn *c, const uint8_t *p,
                             uint32_t len)
{
    size_t need = c->len + len;

    if (need > c->srv->max_message) {
        signer_conn_tempfail(c, "message too big", NULL);
        return;
    }
    if (need > c->cap) {
        size_t cap = c->cap != 0 ? c->cap : SIGNER_CONN_MSG_INITIAL;

        while (cap < need)
            cap *= 2;
        if (cap > c->srv->max_message)
            cap = c->srv->max_message;
        c->msg = xrealloc(c->msg, cap);
        c->cap = cap;
    }
    memcpy(c->msg + c->len, p, len);
    c->len = need;
}

/* Thread pool: parse once, sign with every key. Touches only the job and
 * the connection's message, qid and domain, which the loop leaves alone
 * while working is set. */
static void signer_conn_work_cb(uv_work_t *w)
{
    struct signer_conn *c = w->data;
    struct signer_conn_job *j = c->job;
    struct signer_dkim_msg m;
    const char *perr = NULL;
    size_t i, siglen;
    char *sig;

    j->failed = j->nkeys;
    if (signer_dkim_msg_parse(&m, c->msg, c->len, &perr) < 0) {
        snprintf(j->err, sizeof(j->err), "message refused: %s", perr);
        return;
    }
    for (i = 0; i < j->nkeys; i++) {
        struct signer_dkim_key k = {
            .selector = j->keys[i].selector,
            .algo = j->keys[i].algo,
            .pem = j->keys[i].pem,
            .pkey = j->keys[i].pkey,
        };

        if (signer_dkim_sign(c->srv->dkim, c->qid, c->domain, &k, &m, &sig,
                             &siglen, j->err, sizeof(j->err)) < 0) {
            j->failed = i;
            break;
        }
        j->out = xrealloc(j->out, j->outlen + siglen);
        memcpy(j->out + j->outlen, sig, siglen);
        j->outlen += siglen;
        free(sig);
    }
    signer_dkim_msg_clear(&m);
}

static void signer_conn_after_work_cb(uv_work_t *w, int status)
{
    struct signer_conn *c = w->data;
    struct signer_conn_job *j = c->job;
    char detail[sizeof(j->keys[0].selector) + 8];
    size_t i;

    c->working = 0;
    if (c->closed) {
        signer_conn_free(c);
        return;
    }
    if (c->closing)
        return;
    if (status < 0) {
        signer_conn_tempfail(c, "internal error", uv_strerror(status));
    } else if (j->err[0] != '\0') {
        detail[0] = '\0';
        if (j->failed < j->nkeys)
            snprintf(detail, sizeof(detail), "s=%s",
                     j->keys[j->failed].selector);
        signer_conn_tempfail(c, j->err, detail[0] != '\0' ? detail : NULL);
    } else if (j->outlen > SG_IPC_MAX_PAYLOAD) {
        signer_conn_tempfail(c, "signatures too large", NULL);
    } else {
        for (i = 0; i < j->nkeys; i++)
            log_info("%s: signed d=%s s=%s a=%s", c->qid, c->domain,
                     j->keys[i].selector,
                     signer_dkim_algo_name(j->keys[i].algo));
        signer_conn_reply(c, SIGNER_OK, j->out, j->outlen);
    }
    signer_conn_job_free(&c->job);
}

/* Copies the keys of the domain into a job. 0, or -1 after a TEMPFAIL. */
static int signer_conn_load_keys(struct signer_conn *c,
                                 struct signer_conn_job *j)
{
    struct signer_conn_srv *s = c->srv;
    struct db_sign_key keys[SIGNER_CONN_MAX_KEYS];
    struct signer_keys_info info;
    char reason[SIGNER_CONN_MAX_REASON], detail[1024];
    const char *pem;
    size_t n, i, len;
    int rc;

    if (s->db == NULL &&
        db_open(s->db_path, 0, &s->db, detail, sizeof(detail)) < 0) {
        signer_conn_tempfail(c, "database unavailable", detail);
        return -1;
    }
    rc = signer_lookup_keys(s->lookup, s->db, c->domain, keys,
                            SIGNER_CONN_MAX_KEYS, &n);
    if (rc < 0) {
        /* Reopen on the next request: the file may have been replaced. */
        signer_lookup_forget(s->lookup);
        db_close(&s->db);
        signer_conn_tempfail(c, "database unavailable", NULL);
        return -1;
    }
    if (rc == 0) {
        snprintf(reason, sizeof(reason), "no active key for %s", c->domain);
        signer_conn_tempfail(c, reason, NULL);
        return -1;
    }
    for (i = 0; i < n; i++) {
        struct signer_conn_key *k = &j->keys[i];

        memcpy(k->selector, keys[i].selector, sizeof(k->selector));
        if (signer_dkim_algo_parse(keys[i].algo, &k->algo) < 0) {
            snprintf(detail, sizeof(detail), "s=%s algo=%s", k->selector,
                     keys[i].algo);
            signer_conn_tempfail(c, "unknown key algorithm", detail);
            return -1;
        }
        rc = signer_keys_get(s->keys, keys[i].key_file, &pem, &len, &info);
        if (rc < 0) {
            snprintf(detail, sizeof(detail), "s=%s file=%s: %s", k->selector,
                     keys[i].key_file,
                     rc == -EBADMSG ? "not a PEM private key" : strerror(-rc));
            signer_conn_tempfail(
                c, rc == -EBADMSG ? "key unusable" : "key file unreadable",
                detail);
            return -1;
        }
        if (signer_dkim_key_check(k->algo, info.type, info.bits, reason,
                                  sizeof(reason)) < 0) {
            snprintf(detail, sizeof(detail), "s=%s file=%s", k->selector,
                     keys[i].key_file);
            signer_conn_tempfail(c, reason, detail);
            return -1;
        }
        k->pem = xstrndup(pem, len);
        k->pemlen = len;
        if (info.pkey != NULL && EVP_PKEY_up_ref(info.pkey) == 1)
            k->pkey = info.pkey;
        j->nkeys++;
    }
    return 0;
}

/* END: look up the keys here, sign in the thread pool. */
static void signer_conn_end(struct signer_conn *c)
{
    struct signer_conn_job *j = xcalloc(1, sizeof(*j));
    int rc;

    c->state = SIGNER_CONN_SIGNING;
    if (signer_conn_load_keys(c, j) < 0) {
        signer_conn_job_free(&j);
        return;
    }
    c->job = j;
    c->work.data = c;
    rc = uv_queue_work(c->srv->loop, &c->work, signer_conn_work_cb,
                       signer_conn_after_work_cb);
    if (rc < 0) {
        signer_conn_job_free(&c->job);
        signer_conn_tempfail(c, "internal error", uv_strerror(rc));
        return;
    }
    c->working = 1;
}

static void signer_conn_frame(struct signer_conn *c, uint32_t type,
                              const uint8_t *p, uint32_t len)
{
    if (type == SIGNER_BEGIN && c->state == SIGNER_CONN_BEGIN)
        signer_conn_begin(c, p, len);
    else if (type == SIGNER_DATA && c->state == SIGNER_CONN_DATA)
        signer_conn_data(c, p, len);
    else if (type == SIGNER_END && c->state == SIGNER_CONN_DATA && len == 0)
        signer_conn_end(c);
    else if (type == SIGNER_END && c->state == SIGNER_CONN_DATA)
        signer_conn_protocol_error(c, "END with payload");
    else if (type < SIGNER_BEGIN || type > SIGNER_TEMPFAIL)
        signer_conn_protocol_error(c, "unknown frame type");
    else
        signer_conn_protocol_error(c, "frame out of order");
}

static void signer_conn_alloc_cb(uv_handle_t *h, size_t suggested,
                                 uv_buf_t *buf)
{
    struct signer_conn *c = h->data;

    /* libuv calls the read callback right after this one, on the loop
     * thread, and the frame reader copies what it keeps: one buffer
     * serves every connection. */
    (void)suggested;
    *buf = uv_buf_init(c->srv->rbuf, SG_IPC_MAX_PAYLOAD);
}

static void signer_conn_read_cb(uv_stream_t *st, ssize_t nread,
                                const uv_buf_t *buf)
{
    struct signer_conn *c = st->data;
    const char *p = buf->base;
    size_t left = nread > 0 ? (size_t)nread : 0, used;
    const uint8_t *payload;
    uint32_t type, len;
    int rc;

    if (nread < 0) {
        /* The client gave up (its timeout) or sent half a frame. */
        if (nread != UV_EOF)
            log_error_errno((int)nread, "%s: signer read", signer_conn_id(c));
        else if (c->rd.have > 0)
            log_error("%s: signer protocol error: truncated frame",
                      signer_conn_id(c));
        signer_conn_close(c);
        return;
    }
    while (left > 0 && !c->closing && c->state != SIGNER_CONN_REPLIED) {
        if (c->state == SIGNER_CONN_SIGNING) {
            signer_conn_protocol_error(c, "data after END");
            return;
        }
        rc = ipc_reader_feed(&c->rd, p, left, &used, &type, &payload, &len);
        p += used;
        left -= used;
        if (rc < 0) {
            signer_conn_protocol_error(c, "frame too long");
            return;
        }
        if (rc == 1)
            signer_conn_frame(c, type, payload, len);
    }
}

/* Takes the connection that libuv has accepted (one is there). */
static void signer_conn_accept(struct signer_conn_srv *s)
{
    struct signer_conn *c;
    int rc;

    /* The frame reader's 64 KiB buffer is written before it is read:
     * clearing it for every message would cost more than the rest. */
    c = xmalloc(sizeof(*c));
    memset(c, 0, offsetof(struct signer_conn, rd));
    c->srv = s;
    uv_pipe_init(s->loop, &c->pipe, 0);
    c->pipe.data = c;
    c->next = s->conns;
    if (s->conns != NULL)
        s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    ipc_reader_init(&c->rd);
    rc = uv_accept((uv_stream_t *)&s->listener, (uv_stream_t *)&c->pipe);
    if (rc == 0)
        rc = uv_read_start((uv_stream_t *)&c->pipe, signer_conn_alloc_cb,
                           signer_conn_read_cb);
    if (rc < 0) {
        log_error_errno(rc, "signer: accept");
        signer_conn_close(c);
    }
}

static void signer_conn_accept_cb(uv_stream_t *server, int status)
{
    struct signer_conn_srv *s = server->data;

    if (status < 0) {
        log_error_errno(status, "signer: accept");
        return;
    }
    /* Not taking it makes libuv stop listening until we do. */
    if (s->nconns >= SIGNER_CONN_MAX_CONNS) {
        s->accept_waiting = 1;
        return;
    }
    signer_conn_accept(s);
}

/* Removes a socket file that nobody listens on; a live one is an error. */
static int signer_conn_clear_stale(const char *path, char *err, size_t errlen)
{
    struct sockaddr_un sun;
    int fd, rc, e;

    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    memcpy(sun.sun_path, path, strlen(path) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    rc = connect(fd, (struct sockaddr *)&sun, sizeof(sun));
    e = errno;
    close(fd);
    if (rc == 0) {
        snprintf(err, errlen, "%s: another signer is listening", path);
        return -1;
    }
    if (e != ENOENT && unlink(path) < 0 && errno != ENOENT) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

static int signer_conn_listen(struct signer_conn_srv *s, const char *run_dir,
                              char *err, size_t errlen)
{
    struct sockaddr_un sun;
    mode_t old;
    int rc;

    if (strlen(s->sock_path) >= sizeof(sun.sun_path)) {
        snprintf(err, errlen, "%s: socket path too long", s->sock_path);
        return -1;
    }
    if (mkdir(run_dir, 0755) < 0 && errno != EEXIST) {
        snprintf(err, errlen, "%s: %s", run_dir, strerror(errno));
        return -1;
    }
    if (signer_conn_clear_stale(s->sock_path, err, errlen) < 0)
        return -1;
    uv_pipe_init(s->loop, &s->listener, 0);
    s->listener.data = s;
    /* Owner and group (subgated's workers) may connect, nobody else. */
    old = umask(0117);
    rc = uv_pipe_bind(&s->listener, s->sock_path);
    umask(old);
    if (rc == 0) {
        s->listening = 1;
        rc = uv_listen((uv_stream_t *)&s->listener, SIGNER_CONN_BACKLOG,
                       signer_conn_accept_cb);
    }
    if (rc < 0) {
        snprintf(err, errlen, "%s: %s", s->sock_path, uv_strerror(rc));
        signer_conn_srv_stop(s);
        return -1;
    }
    return 0;
}

int signer_conn_srv_init(struct signer_conn_srv *s, uv_loop_t *loop,
                         const struct cfg *cfg, char *err, size_t errlen)
{
    memset(s, 0, sizeof(*s));
    s->loop = loop;
    s->max_message = cfg->max_message_size + SIGNER_CONN_HEADROOM;
    s->dkim = signer_dkim_new(err, errlen);
    if (s->dkim == NULL)
        return -1;
    s->keys = signer_keys_new(cfg->key_dir);
    s->lookup = signer_lookup_new();
    s->rbuf = xmalloc(SG_IPC_MAX_PAYLOAD);
    s->db_path = xstrdup(cfg->database);
    s->sock_path = xasprintf("%s/%s", cfg->run_dir, SIGNER_SOCKET_NAME);
    if (signer_conn_listen(s, cfg->run_dir, err, errlen) < 0) {
        /* The listener may still be closing: let the loop finish it. */
        uv_run(loop, UV_RUN_DEFAULT);
        signer_conn_srv_close(s);
        return -1;
    }
    return 0;
}

int signer_conn_srv_open_db(struct signer_conn_srv *s)
{
    char err[512];

    if (s->db != NULL)
        return 0;
    if (db_open(s->db_path, 0, &s->db, err, sizeof(err)) < 0) {
        log_error("signer: database unavailable: %s", err);
        return -1;
    }
    return 0;
}

void signer_conn_srv_stop(struct signer_conn_srv *s)
{
    struct signer_conn *c;

    if (s->listening) {
        s->listening = 0;
        unlink(s->sock_path);
    }
    if (s->listener.loop != NULL && !uv_is_closing((uv_handle_t *)&s->listener))
        uv_close((uv_handle_t *)&s->listener, NULL);
    for (c = s->conns; c != NULL; c = c->next)
        signer_conn_close(c);
}

void signer_conn_srv_close(struct signer_conn_srv *s)
{
    signer_lookup_free(&s->lookup); /* before the handle it prepared on */
    db_close(&s->db);
    free(s->rbuf);
    signer_keys_free(&s->keys);
    signer_dkim_free(&s->dkim);
    free(s->sock_path);
    free(s->db_path);
    memset(s, 0, sizeof(*s));
}
