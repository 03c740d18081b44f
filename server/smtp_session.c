/* smtp_session: connection life, input pump, replies and TLS glue of one
 * SMTP client; see smtp_session.h. */
#include "smtp_session.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "../common/log.h"
#include "../common/xalloc.h"
#include "metrics.h"
#include "smtp_data.h"
#include "smtp_limit.h"
#include "tls.h"

/* One uv_write with its own copy of the octets, freed in the callback. */
struct smtp_wreq {
    uv_write_t req; /* req.data = the session */
    char data[];
};

static void session_process(struct smtp_session *s);
static void session_abort(struct smtp_session *s);

static const char *const smtp_state_names[] = {
    [SMTP_STATE_CMD] = "command",     [SMTP_STATE_AUTH] = "auth",
    [SMTP_STATE_DATA] = "data",       [SMTP_STATE_WAIT] = "wait",
    [SMTP_STATE_CLOSING] = "closing",
};

const char *smtp_session_logid(const struct smtp_session *s)
{
    return s->txn.qid[0] != '\0' ? s->txn.qid : s->id;
}

/* ---- output ---------------------------------------------------------- */

static void session_on_write(uv_write_t *req, int status)
{
    struct smtp_session *s = req->data;

    free(req); /* struct smtp_wreq starts with req */
    if (status < 0) {
        if (status != UV_ECANCELED && !s->closed)
            log_info("%s: write failed client=%s: %s", s->id, s->client,
                     uv_strerror(status));
        session_abort(s);
        return;
    }
    if (s->out_blocked && !s->closed &&
        uv_stream_get_write_queue_size((uv_stream_t *)&s->tcp) <
            SMTP_MAX_WRITE_QUEUE / 2) {
        s->out_blocked = 0;
        session_process(s);
    }
}

/* Queues len octets of w->data for the socket. */
static void session_write_req(struct smtp_session *s, struct smtp_wreq *w,
                              size_t len)
{
    uv_buf_t b = uv_buf_init(w->data, (unsigned)len);
    int rc;

    w->req.data = s;
    rc = uv_write(&w->req, (uv_stream_t *)&s->tcp, &b, 1, session_on_write);
    if (rc != 0) {
        free(w);
        if (!s->closed)
            log_info("%s: write failed client=%s: %s", s->id, s->client,
                     uv_strerror(rc));
        session_abort(s);
    }
}

/* Sends the ciphertext the TLS engine has produced. */
static void session_send_tls_output(struct smtp_session *s)
{
    size_t n;

    while (!s->closed && (n = tls_conn_output_pending(s->tls)) > 0) {
        struct smtp_wreq *w = xmalloc(sizeof(*w) + n);
        n = tls_conn_output_read(s->tls, w->data, n);
        if (n == 0) {
            free(w);
            return;
        }
        session_write_req(s, w, n);
    }
}

/* Writes the collected replies: through TLS once its handshake is done
 * (an implicit-TLS banner waits for it), else in the clear. */
static void session_flush(struct smtp_session *s)
{
    if (s->closed || s->outlen == 0)
        return;
    if (s->tls != NULL) {
        if (!tls_conn_handshake_done(s->tls))
            return;
        if (tls_conn_write(s->tls, s->out, s->outlen) != 0) {
            log_warn("%s: tls write failed client=%s: %s", s->id, s->client,
                     tls_conn_error(s->tls));
            s->outlen = 0;
            session_abort(s);
            return;
        }
        s->outlen = 0;
        session_send_tls_output(s);
    } else {
        struct smtp_wreq *w = xmalloc(sizeof(*w) + s->outlen);
        size_t n = s->outlen;

        memcpy(w->data, s->out, n);
        s->outlen = 0;
        session_write_req(s, w, n);
    }
    if (!s->closed && uv_stream_get_write_queue_size((uv_stream_t *)&s->tcp) >
                          SMTP_MAX_WRITE_QUEUE)
        s->out_blocked = 1;
}

static void smtp_vreply(struct smtp_session *s, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

static void smtp_vreply(struct smtp_session *s, const char *fmt, va_list ap)
{
    char line[SMTP_OUTBUF_SIZE];
    int n = vsnprintf(line, sizeof(line) - 2, fmt, ap);
    size_t len;

    if (n < 0 || s->closed)
        return;
    len = (size_t)n < sizeof(line) - 2 ? (size_t)n : sizeof(line) - 3;
    memcpy(line + len, "\r\n", 2);
    len += 2;
    if (s->outlen + len > sizeof(s->out))
        session_flush(s);
    if (s->outlen + len > sizeof(s->out))
        return; /* only while an implicit-TLS handshake runs: never */
    memcpy(s->out + s->outlen, line, len);
    s->outlen += len;
}

void smtp_reply(struct smtp_session *s, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    smtp_vreply(s, fmt, ap);
    va_end(ap);
}

void smtp_reply_error(struct smtp_session *s, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    smtp_vreply(s, fmt, ap);
    va_end(ap);
    if (++s->nbad >= SG_MAX_BAD_COMMANDS) {
        log_warn("%s: too many errors client=%s errors=%u", s->id, s->client,
                 s->nbad);
        smtp_session_close(s, "421 4.7.0 Too many errors");
    }
}

/* ---- closing --------------------------------------------------------- */

static void session_free(struct smtp_session *s)
{
    struct smtp_server *srv = s->srv;

    smtp_limit_disconnect(s);
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        srv->sessions = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    srv->nsessions--;
    smtp_txn_reset(&s->txn);
    smtp_parse_free(&s->parse);
    smtp_data_free(&s->data);
    tls_conn_free(&s->tls);
    free(s->inbuf);
    free(s->member);
    free(s);
}

int smtp_session_release(struct smtp_session *s)
{
    if (s->closed && s->open_handles == 0 && s->pending == 0) {
        session_free(s);
        return 1;
    }
    return 0;
}

static void session_on_close(uv_handle_t *h)
{
    struct smtp_session *s = h->data;

    s->open_handles--;
    smtp_session_release(s);
}

/* Closes the handles now; the session is freed when they are closed and
 * no signer request or queue work refers to it any more. */
static void session_abort(struct smtp_session *s)
{
    if (s->closed)
        return;
    s->closed = 1;
    s->state = SMTP_STATE_CLOSING;
    s->reading = 0;
    smtp_cmd_auth_abort(s);
    log_info("%s: disconnect commands=%u messages=%u", s->id, s->ncmds,
             s->nmsgs);
    uv_close((uv_handle_t *)&s->tcp, session_on_close);
    uv_close((uv_handle_t *)&s->timer, session_on_close);
}

static void session_on_shutdown(uv_shutdown_t *req, int status)
{
    (void)status;
    session_abort(req->data);
}

static void session_on_timer(uv_timer_t *t);

void smtp_session_close(struct smtp_session *s, const char *reply)
{
    int rc;

    if (s->state == SMTP_STATE_CLOSING || s->closed)
        return;
    if (reply != NULL)
        smtp_reply(s, "%s", reply);
    s->state = SMTP_STATE_CLOSING;
    session_flush(s);
    if (s->closed)
        return;
    if (s->tls != NULL && tls_conn_handshake_done(s->tls)) {
        tls_conn_shutdown(s->tls);
        session_send_tls_output(s);
        if (s->closed)
            return;
    }
    if (s->reading) {
        uv_read_stop((uv_stream_t *)&s->tcp);
        s->reading = 0;
    }
    /* The FIN goes out once the replies are written; a client that does
     * not read them gets SMTP_CLOSE_WAIT_MS. */
    s->timer_use = SMTP_TIMER_CLOSE;
    uv_timer_start(&s->timer, session_on_timer, SMTP_CLOSE_WAIT_MS, 0);
    s->shutdown_req.data = s;
    rc = uv_shutdown(&s->shutdown_req, (uv_stream_t *)&s->tcp,
                     session_on_shutdown);
    if (rc != 0)
        session_abort(s);
}

void smtp_session_stop(struct smtp_session *s)
{
    /* A waiting session finishes its step; smtp_session_resume() then
     * sees srv->stopping. */
    if (s->state == SMTP_STATE_WAIT || s->state == SMTP_STATE_CLOSING)
        return;
    log_info("%s: shutting down client=%s", s->id, s->client);
    smtp_session_close(s, "421 4.3.2 Service shutting down");
}

/* ---- timers and waiting ---------------------------------------------- */

/* The clock for the next command line (smtp_limit.c picks it): restarted
 * when a line is complete, not by octets that dribble in. */
static void session_idle_timer(struct smtp_session *s)
{
    s->timer_use = SMTP_TIMER_IDLE;
    uv_timer_start(&s->timer, session_on_timer, smtp_limit_cmd_timeout(s), 0);
}

void smtp_session_set_timer(struct smtp_session *s, enum smtp_timer_use use,
                            unsigned ms, unsigned repeat)
{
    s->timer_use = use;
    uv_timer_start(&s->timer, session_on_timer, ms, repeat);
}

static void session_on_timer(uv_timer_t *t)
{
    struct smtp_session *s = t->data;

    switch (s->timer_use) {
    case SMTP_TIMER_IDLE:
        log_info("%s: timeout client=%s state=%s", smtp_session_logid(s),
                 s->client, smtp_state_names[s->state]);
        smtp_session_close(s, "421 4.4.2 Timeout");
        break;
    case SMTP_TIMER_AUTH_DELAY:
        smtp_cmd_auth_delay_done(s);
        break;
    case SMTP_TIMER_CLOSE:
        session_abort(s);
        break;
    case SMTP_TIMER_DATA:
        smtp_limit_data_tick(s);
        break;
    }
}

/* Reads from the socket exactly when input would be processed. */
static void session_update_reading(struct smtp_session *s);

void smtp_session_wait(struct smtp_session *s)
{
    s->state = SMTP_STATE_WAIT;
    uv_timer_stop(&s->timer);
    session_update_reading(s);
}

void smtp_session_wait_auth_delay(struct smtp_session *s, unsigned delay_ms)
{
    smtp_session_wait(s);
    s->timer_use = SMTP_TIMER_AUTH_DELAY;
    uv_timer_start(&s->timer, session_on_timer, delay_ms, 0);
}

void smtp_session_resume(struct smtp_session *s)
{
    if (s->closed || s->state == SMTP_STATE_CLOSING)
        return;
    /* a multi-step AUTH exchange (SCRAM) goes on after its lookup */
    s->state =
        s->auth_step != SMTP_AUTH_NONE ? SMTP_STATE_AUTH : SMTP_STATE_CMD;
    if (s->srv->stopping) {
        smtp_session_close(s, "421 4.3.2 Service shutting down");
        return;
    }
    session_idle_timer(s);
    session_process(s);
}

void smtp_session_parse_mode(struct smtp_session *s, int raw)
{
    smtp_parse_set_raw(s->parse, raw);
    if (raw)
        smtp_parse_set_max(s->parse, SG_MAX_AUTH_LINE);
    else
        smtp_parse_set_max(s->parse, s->member != NULL ? SG_MAX_CMD_LINE
                                                       : SG_MAX_PREAUTH_LINE);
}

/* ---- input ----------------------------------------------------------- */

/* The plaintext buffer, made when input arrives. */
static char *session_inbuf(struct smtp_session *s)
{
    if (s->inbuf == NULL)
        s->inbuf = xmalloc(SMTP_INBUF_SIZE);
    return s->inbuf;
}

static void session_on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct smtp_session *s = h->data;

    (void)hint;
    if (s->tls != NULL) {
        *buf = uv_buf_init(s->srv->tls_rbuf, SMTP_INBUF_SIZE);
        return;
    }
    if (s->inoff == s->inlen)
        s->inoff = s->inlen = 0;
    *buf = uv_buf_init(session_inbuf(s) + s->inlen,
                       (unsigned)(SMTP_INBUF_SIZE - s->inlen));
}

static int session_wants_input(const struct smtp_session *s)
{
    return (s->state == SMTP_STATE_CMD || s->state == SMTP_STATE_AUTH ||
            s->state == SMTP_STATE_DATA) &&
           !s->out_blocked && !s->closed;
}

static void session_on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf);

static void session_update_reading(struct smtp_session *s)
{
    int want = session_wants_input(s) && s->inoff == s->inlen;

    if (s->closed)
        return;
    if (want && !s->reading) {
        int rc = uv_read_start((uv_stream_t *)&s->tcp, session_on_alloc,
                               session_on_read);
        if (rc != 0) {
            log_info("%s: read failed client=%s: %s", s->id, s->client,
                     uv_strerror(rc));
            session_abort(s);
            return;
        }
        s->reading = 1;
    } else if (!want && s->reading) {
        uv_read_stop((uv_stream_t *)&s->tcp);
        s->reading = 0;
    }
}

/* Logs the end of the TLS handshake once and sends what waited for it
 * (the banner of an implicit-TLS session). */
static void session_tls_check_ready(struct smtp_session *s)
{
    if (s->tls_logged || !tls_conn_handshake_done(s->tls))
        return;
    s->tls_logged = 1;
    log_info("%s: tls client=%s version=%s cipher=%s", s->id, s->client,
             tls_conn_version(s->tls), tls_conn_cipher(s->tls));
    session_flush(s);
}

/* Decrypts the next plaintext into the empty inbuf. 1 if there is some;
 * 0 if TLS needs more from the peer or the session ended. */
static int session_tls_pull(struct smtp_session *s)
{
    int n = tls_conn_read(s->tls, session_inbuf(s), SMTP_INBUF_SIZE);

    session_send_tls_output(s);
    if (s->closed)
        return 0;
    session_tls_check_ready(s);
    if (s->closed)
        return 0;
    if (n > 0) {
        s->inoff = 0;
        s->inlen = (size_t)n;
        return 1;
    }
    if (n == TLS_CONN_EOF) {
        log_info("%s: tls close_notify client=%s", s->id, s->client);
        smtp_session_close(s, NULL);
    } else if (n == TLS_CONN_ERR) {
        log_warn("%s: tls error client=%s state=%s: %s", s->id, s->client,
                 s->tls_logged ? "established" : "handshake",
                 tls_conn_error(s->tls));
        s->outlen = 0;
        session_send_tls_output(s); /* the alert, if any */
        session_abort(s);
    }
    return 0;
}

/* Feeds inbuf to the command parser: one command at most. */
static void session_feed_cmd(struct smtp_session *s)
{
    struct smtp_cmd *cmd = NULL;
    const char *err = NULL;
    size_t used = 0;
    int rc;

    rc = smtp_parse_feed(s->parse, s->inbuf + s->inoff, s->inlen - s->inoff,
                         &used, &cmd, &err);
    s->inoff += used;
    if (rc != 0)
        session_idle_timer(s); /* a line is complete */
    if (rc == 1) {
        if (s->state == SMTP_STATE_AUTH) {
            smtp_cmd_auth_line(s, cmd);
        } else {
            s->ncmds++;
            smtp_cmd_dispatch(s, cmd);
        }
    } else if (rc < 0) {
        if (s->state == SMTP_STATE_AUTH) {
            /* An unusable response ends the exchange (RFC 4954 4). */
            smtp_cmd_auth_abort(s);
            s->auth_step = SMTP_AUTH_NONE;
            s->state = SMTP_STATE_CMD;
            smtp_session_parse_mode(s, 0);
        }
        smtp_reply_error(s, "%s", err != NULL ? err : "500 5.5.2 Bad line");
    } else if (used == 0) {
        s->inoff = s->inlen; /* a parser that takes nothing: never */
    }
}

static void session_feed_data(struct smtp_session *s)
{
    size_t used = 0;

    if (smtp_data_feed(s->data, s->inbuf + s->inoff, s->inlen - s->inoff,
                       &used) == 1) {
        s->inoff += used;
        session_idle_timer(s);
        smtp_txn_data_end(s);
        return;
    }
    s->inoff += used;
    if (used == 0)
        s->inoff = s->inlen; /* never: the reader takes all it is given */
}

/* Runs everything the held input allows, then sends the replies and reads
 * again if the session may go on. */
static void session_process(struct smtp_session *s)
{
    while (session_wants_input(s)) {
        if (s->inoff == s->inlen) {
            s->inoff = s->inlen = 0;
            if (s->tls == NULL || !session_tls_pull(s))
                break;
            continue;
        }
        if (s->state == SMTP_STATE_DATA)
            session_feed_data(s);
        else
            session_feed_cmd(s);
    }
    if (s->closed || s->state == SMTP_STATE_CLOSING)
        return;
    session_flush(s);
    session_update_reading(s);
    /* Most sessions wait for their client most of the time: they keep no
     * input buffer meanwhile. */
    if (!s->closed && s->inoff == s->inlen) {
        free(s->inbuf);
        s->inbuf = NULL;
        s->inoff = s->inlen = 0;
    }
}

static void session_on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    struct smtp_session *s = st->data;

    if (n == 0 || s->closed)
        return;
    if (n < 0) {
        if (s->state == SMTP_STATE_DATA)
            log_info("%s: lost connection during DATA client=%s",
                     smtp_session_logid(s), s->client);
        else if (n != UV_EOF)
            log_info("%s: read failed client=%s: %s", s->id, s->client,
                     uv_strerror((int)n));
        session_abort(s);
        return;
    }
    if (s->state == SMTP_STATE_CLOSING)
        return;
    if (s->state == SMTP_STATE_DATA) {
        smtp_limit_data_read(s, (size_t)n);
        if (s->state == SMTP_STATE_CLOSING)
            return;
    }
    if (s->tls != NULL)
        tls_conn_feed(s->tls, buf->base, (size_t)n);
    else
        s->inlen += (size_t)n; /* buf is inbuf + inlen */
    session_process(s);
}

void smtp_session_start_tls(struct smtp_session *s)
{
    size_t dropped = (s->inlen - s->inoff) + smtp_parse_pending(s->parse);

    /* RFC 3207 4.2/5: anything sent in the clear after STARTTLS could be
     * an injection by a man in the middle; none of it may be run. */
    if (dropped > 0)
        log_warn("%s: plaintext after STARTTLS discarded client=%s "
                 "octets=%zu",
                 s->id, s->client, dropped);
    s->inoff = s->inlen = 0;
    smtp_parse_free(&s->parse);
    s->parse = smtp_parse_new(SG_MAX_PREAUTH_LINE);
    smtp_reply(s, "220 2.0.0 Ready to start TLS");
    session_flush(s);
    if (s->closed)
        return;
    /* RFC 3207 4.2: the client must greet again; nothing learned before
     * TLS is kept. */
    s->greeting = SMTP_GREET_NONE;
    s->helo[0] = '\0';
    smtp_txn_reset(&s->txn);
    s->tls = tls_conn_new(s->srv->tls_ctx);
}

/* ---- start ----------------------------------------------------------- */

/* Fills s->client ("[ip]:port") and s->client_ip. */
static void session_peer_name(struct smtp_session *s)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    unsigned port = 0;

    snprintf(s->client_ip, sizeof(s->client_ip), "unknown");
    if (uv_tcp_getpeername(&s->tcp, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET) {
            const struct sockaddr_in *sin = (const struct sockaddr_in *)&ss;
            uv_ip4_name(sin, s->client_ip, sizeof(s->client_ip));
            port = ntohs(sin->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&ss;
            uv_ip6_name(sin6, s->client_ip, sizeof(s->client_ip));
            port = ntohs(sin6->sin6_port);
        }
    }
    snprintf(s->client, sizeof(s->client), "[%s]:%u", s->client_ip, port);
}

static void session_new_id(struct smtp_session *s)
{
    unsigned char r[4];

    if (RAND_bytes(r, sizeof(r)) != 1)
        log_panic("no random bytes for a session id");
    snprintf(s->id, sizeof(s->id), "s%02x%02x%02x%02x", r[0], r[1], r[2], r[3]);
}

static void session_on_reject_close(uv_handle_t *h)
{
    free(h->data);
}

int smtp_session_start(struct smtp_server *srv, uv_stream_t *listener,
                       const char *listener_name, int implicit_tls)
{
    struct smtp_session *s = xcalloc(1, sizeof(*s));
    int rc;

    s->srv = srv;
    uv_tcp_init(srv->loop, &s->tcp);
    s->tcp.data = s;
    rc = uv_accept(listener, (uv_stream_t *)&s->tcp);
    if (rc != 0) {
        log_error("accept on %s failed: %s", listener_name, uv_strerror(rc));
        uv_close((uv_handle_t *)&s->tcp, session_on_reject_close);
        return rc;
    }
    uv_timer_init(srv->loop, &s->timer);
    s->timer.data = s;
    s->open_handles = 2;
    s->next = srv->sessions;
    if (s->next != NULL)
        s->next->prev = s;
    srv->sessions = s;
    srv->nsessions++;
    metrics_inc(METRIC_CONNECTIONS);
    s->listener = listener_name;
    session_new_id(s);
    session_peer_name(s);
    /* OpenSSL sends TLS 1.3 tickets as writes of their own; Nagle would
     * hold them back until the client's next packet. */
    uv_tcp_nodelay(&s->tcp, 1);
    log_info("%s: connect client=%s listener=%s", s->id, s->client,
             listener_name);
    if (smtp_limit_connect(s, implicit_tls) != 0)
        return 0;
    s->parse = smtp_parse_new(SG_MAX_PREAUTH_LINE);
    if (implicit_tls) {
        s->tls = tls_conn_new(srv->tls_ctx);
    }
    s->state = SMTP_STATE_CMD;
    smtp_reply(s, "220 %s ESMTP subgate", srv->cfg->hostname);
    session_idle_timer(s);
    session_process(s);
    return 0;
}
