/* signer_client: one signing request to subgate-signer over its Unix
 * socket; see signer_client.h. The message goes out as BEGIN, DATA frames
 * that point into the caller's buffer (no copy) and END, in one uv_write;
 * the reply is read as it comes, even before the write has finished (the
 * signer answers "message too big" early). A timer bounds the whole
 * request. The request is freed once both handles are closed.
 *
 * The process must ignore SIGPIPE (subgated does): a signer that hangs up
 * early makes the write fail with EPIPE. timeout_ms 0 times out at once.
 * signer_client_cancel() is for a request whose callback has not run yet;
 * once it has run, the request is gone. */
#include "signer_client.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "../common/ipc.h"
#include "../common/limits.h"
#include "../common/log.h"
#include "../common/signer_proto.h"
#include "../common/xalloc.h"

/* Queue ids are short; this only keeps BEGIN well inside one frame. */
#define SIGNER_CLIENT_MAX_QID 64
/* A TEMPFAIL reason is a short sentence; longer text is cut. */
#define SIGNER_CLIENT_MAX_REASON 256

struct signer_req {
    uv_pipe_t pipe;   /* data = this */
    uv_timer_t timer; /* data = this */
    uv_connect_t connect;
    uv_write_t wr;
    signer_done_cb cb;
    void *arg;
    int done;       /* outcome decided: callback ran or was suppressed */
    int cancelled;  /* owner gone: never call cb */
    int nopen;      /* handles not yet closed */
    int write_err;  /* first write error, reported if no reply comes */
    uv_buf_t *bufs; /* owned array; bases: hdrs, begin, caller's msg */
    unsigned int nbufs;
    uint8_t *hdrs; /* owned, IPC_HDR_LEN per frame */
    char *begin;   /* owned, the BEGIN payload */
    struct ipc_reader rd;
    char rbuf[4096];
};

static void signer_client_close_cb(uv_handle_t *h)
{
    struct signer_req *req = h->data;

    if (--req->nopen > 0)
        return;
    free(req->bufs);
    free(req->hdrs);
    free(req->begin);
    free(req);
}

/* Decides the outcome once. The handles are closed first, so that
 * nothing reads the caller's message once its callback has run (pending
 * connect and write callbacks see UV_ECANCELED and done set); the request
 * itself, and sig in its read buffer, live until the close callbacks. */
static void signer_client_finish(struct signer_req *req, int status,
                                 const char *sig, size_t siglen,
                                 const char *err)
{
    if (req->done)
        return;
    req->done = 1;
    uv_close((uv_handle_t *)&req->pipe, signer_client_close_cb);
    uv_close((uv_handle_t *)&req->timer, signer_client_close_cb);
    if (!req->cancelled)
        req->cb(req->arg, status, sig, siglen, err);
}

static void signer_client_fail(struct signer_req *req, const char *what,
                               int uverr)
{
    char err[SIGNER_CLIENT_MAX_REASON];

    snprintf(err, sizeof(err), "%s: %s", what, uv_strerror(uverr));
    signer_client_finish(req, -1, NULL, 0, err);
}

/* TEMPFAIL: the signer's reason, cut and made printable. */
static void signer_client_tempfail(struct signer_req *req, const uint8_t *p,
                                   uint32_t len)
{
    char err[SIGNER_CLIENT_MAX_REASON];
    size_t i, n = len < sizeof(err) - 1 ? len : sizeof(err) - 1;

    for (i = 0; i < n; i++)
        err[i] = p[i] >= 0x20 && p[i] < 0x7f ? (char)p[i] : '?';
    err[n] = '\0';
    if (n == 0)
        snprintf(err, sizeof(err), "signer refused without reason");
    signer_client_finish(req, -1, NULL, 0, err);
}

static void signer_client_frame(struct signer_req *req, uint32_t type,
                                const uint8_t *p, uint32_t len)
{
    if (type == SIGNER_OK && len > 0)
        signer_client_finish(req, 0, (const char *)p, len, NULL);
    else if (type == SIGNER_OK)
        signer_client_finish(req, -1, NULL, 0, "signer returned no signature");
    else if (type == SIGNER_TEMPFAIL)
        signer_client_tempfail(req, p, len);
    else
        signer_client_finish(req, -1, NULL, 0, "signer protocol error");
}

static void signer_client_alloc_cb(uv_handle_t *h, size_t suggested,
                                   uv_buf_t *buf)
{
    struct signer_req *req = h->data;

    (void)suggested;
    *buf = uv_buf_init(req->rbuf, sizeof(req->rbuf));
}

static void signer_client_read_cb(uv_stream_t *st, ssize_t nread,
                                  const uv_buf_t *buf)
{
    struct signer_req *req = st->data;
    const char *p = buf->base;
    size_t left = nread > 0 ? (size_t)nread : 0, used;
    const uint8_t *payload;
    uint32_t type, len;
    int rc;

    if (req->done)
        return;
    if (nread < 0) {
        if (req->write_err < 0)
            signer_client_fail(req, "signer unavailable", req->write_err);
        else if (nread == UV_EOF)
            signer_client_finish(req, -1, NULL, 0,
                                 "signer closed the connection");
        else
            signer_client_fail(req, "signer unavailable", (int)nread);
        return;
    }
    while (left > 0 && !req->done) {
        rc = ipc_reader_feed(&req->rd, p, left, &used, &type, &payload, &len);
        p += used;
        left -= used;
        if (rc < 0)
            signer_client_finish(req, -1, NULL, 0, "signer protocol error");
        else if (rc == 1)
            signer_client_frame(req, type, payload, len);
    }
}

static void signer_client_write_cb(uv_write_t *wr, int status)
{
    struct signer_req *req = wr->data;

    /* The signer may have answered and hung up (message too big): the
     * reply, or EOF, comes through the read side. */
    if (status < 0 && !req->done)
        req->write_err = status;
}

static void signer_client_connect_cb(uv_connect_t *cr, int status)
{
    struct signer_req *req = cr->data;
    int rc;

    if (req->done)
        return;
    if (status < 0) {
        signer_client_fail(req, "signer unavailable", status);
        return;
    }
    rc = uv_read_start((uv_stream_t *)&req->pipe, signer_client_alloc_cb,
                       signer_client_read_cb);
    if (rc == 0) {
        req->wr.data = req;
        rc = uv_write(&req->wr, (uv_stream_t *)&req->pipe, req->bufs,
                      req->nbufs, signer_client_write_cb);
    }
    if (rc < 0)
        signer_client_fail(req, "signer unavailable", rc);
}

/* Lays out BEGIN, DATA frames over msg, END as write buffers. */
static void signer_client_frames(struct signer_req *req, const char *qid,
                                 const char *domain, const char *msg,
                                 size_t len)
{
    size_t qlen = strlen(qid), dlen = strlen(domain);
    size_t nchunks = (len + SG_IPC_MAX_PAYLOAD - 1) / SG_IPC_MAX_PAYLOAD;
    size_t i, off, n, b = 0;
    uint8_t *h;

    req->begin = xmalloc(qlen + dlen + 2);
    memcpy(req->begin, qid, qlen + 1);
    memcpy(req->begin + qlen + 1, domain, dlen + 1);
    req->hdrs = xcalloc(nchunks + 2, IPC_HDR_LEN);
    req->bufs = xcalloc(2 * nchunks + 3, sizeof(*req->bufs));

    h = req->hdrs;
    ipc_hdr_encode(h, SIGNER_BEGIN, (uint32_t)(qlen + dlen + 2));
    req->bufs[b++] = uv_buf_init((char *)h, IPC_HDR_LEN);
    req->bufs[b++] = uv_buf_init(req->begin, (unsigned int)(qlen + dlen + 2));
    for (i = 0, off = 0; i < nchunks; i++, off += n) {
        n = len - off < SG_IPC_MAX_PAYLOAD ? len - off : SG_IPC_MAX_PAYLOAD;
        h += IPC_HDR_LEN;
        ipc_hdr_encode(h, SIGNER_DATA, (uint32_t)n);
        req->bufs[b++] = uv_buf_init((char *)h, IPC_HDR_LEN);
        /* uv_buf_t is not const; libuv only reads what it writes. */
        req->bufs[b++] =
            uv_buf_init((char *)(uintptr_t)(msg + off), (unsigned int)n);
    }
    h += IPC_HDR_LEN;
    ipc_hdr_encode(h, SIGNER_END, 0);
    req->bufs[b++] = uv_buf_init((char *)h, IPC_HDR_LEN);
    req->nbufs = (unsigned int)b;
}

static void signer_client_timer_cb(uv_timer_t *t)
{
    signer_client_finish(t->data, -1, NULL, 0, "signer timeout");
}

struct signer_req *signer_client_sign(uv_loop_t *loop, const char *sock_path,
                                      const char *qid, const char *domain,
                                      const char *msg, size_t len,
                                      unsigned timeout_ms, signer_done_cb cb,
                                      void *arg)
{
    struct sockaddr_un sun;
    struct signer_req *req;

    if (cb == NULL || qid[0] == '\0' || domain[0] == '\0' ||
        strlen(qid) > SIGNER_CLIENT_MAX_QID || strlen(domain) > SG_MAX_DOMAIN ||
        strlen(sock_path) >= sizeof(sun.sun_path) ||
        len > 2 * SG_MAX_MESSAGE_SIZE) {
        log_error("%s: signer request not started: bad argument", qid);
        return NULL;
    }
    req = xcalloc(1, sizeof(*req));
    req->cb = cb;
    req->arg = arg;
    ipc_reader_init(&req->rd);
    signer_client_frames(req, qid, domain, msg, len);
    uv_pipe_init(loop, &req->pipe, 0);
    uv_timer_init(loop, &req->timer);
    req->pipe.data = req->timer.data = req->connect.data = req;
    req->nopen = 2;
    /* A connect error, even an immediate one, comes through the
     * callback on a later loop turn. */
    uv_pipe_connect(&req->connect, &req->pipe, sock_path,
                    signer_client_connect_cb);
    uv_timer_start(&req->timer, signer_client_timer_cb, timeout_ms, 0);
    return req;
}

void signer_client_cancel(struct signer_req *req)
{
    if (req == NULL)
        return;
    req->cancelled = 1;
    signer_client_finish(req, -1, NULL, 0, NULL);
}
