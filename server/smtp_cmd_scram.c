/* smtp_cmd_scram: AUTH SCRAM-SHA-256, SCRAM-SHA-256-PLUS (RFC 5802, RFC
 * 7677; channel binding tls-server-end-point or tls-exporter) and
 * EXTERNAL (RFC 4422 appendix A; the TLS client certificate) over SMTP
 * (RFC 4954). The SASL state machine is scram.h's, the lookups
 * auth_strong.h's; the verdict goes through smtp_cmd_auth_verdict(), so
 * that logging, failure delay, limits and sender policy are the same as
 * for PLAIN. Loop thread only.
 *
 * SCRAM: AUTH [ir] -> client-first -> (lookup) 334 server-first ->
 * client-final -> 334 server-final -> empty line -> 235. An unknown
 * login gets a server-first with random keys and fails at the proof, as
 * a wrong password does. */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "../common/addr.h"
#include "../common/log.h"
#include "../common/xalloc.h"
#include "auth_strong.h"
#include "scram.h"
#include "smtp_auth.h"
#include "smtp_limit.h"
#include "smtp_session.h"
#include "tls.h"

enum smtp_strong_phase {
    SMTP_STRONG_FIRST,    /* waiting for client-first */
    SMTP_STRONG_FINAL,    /* server-first sent */
    SMTP_STRONG_ACK,      /* server-final sent, waiting for "" */
    SMTP_STRONG_EXTERNAL, /* waiting for the EXTERNAL response */
};

struct smtp_strong {
    enum smtp_strong_phase phase;
    struct scram sc;
    struct auth_strong_req *req;   /* in flight, borrowed (cancel) */
    struct db_member *m;           /* owned: the member, once looked up */
    const char *reason;            /* static: why an unknown login fails */
    char authzid[SG_MAX_PATH + 1]; /* EXTERNAL: the requested identity */
};

const char *smtp_cmd_scram_mechs(const struct smtp_session *s)
{
    char fp[65];

    if (s->tls != NULL && tls_conn_peer_sha256(s->tls, fp, sizeof fp))
        return "AUTH PLAIN LOGIN SCRAM-SHA-256 SCRAM-SHA-256-PLUS EXTERNAL";
    return "AUTH PLAIN LOGIN SCRAM-SHA-256 SCRAM-SHA-256-PLUS";
}

void smtp_cmd_scram_abort(struct smtp_session *s)
{
    struct smtp_strong *st = s->strong;

    if (st == NULL)
        return;
    if (st->req != NULL)
        auth_strong_cancel(st->req);
    free(st->m);
    OPENSSL_cleanse(st, sizeof *st);
    free(st);
    s->strong = NULL;
}

/* Ends the exchange with a verdict. async: from a lookup callback, while
 * the session waits; it is resumed unless the refusal delay runs. */
static void smtp_strong_verdict(struct smtp_session *s, int result,
                                const char *reason, int async)
{
    struct db_member *m = NULL;

    if (result == 1) {
        m = s->strong->m;
        s->strong->m = NULL;
    }
    smtp_cmd_scram_abort(s);
    s->auth_step = SMTP_AUTH_NONE;
    s->state = SMTP_STATE_CMD;
    smtp_session_parse_mode(s, 0);
    if (result == 0) {
        smtp_cmd_auth_refuse(s, reason);
        return;
    }
    if (result == 1) {
        smtp_cmd_auth_accept(s, m);
    } else {
        smtp_cmd_auth_tempfail(s, reason);
    }
    if (async)
        smtp_session_resume(s);
}

/* Sends a 334 challenge (text already base64 or empty). */
static void smtp_strong_ask(struct smtp_session *s, const char *b64)
{
    s->auth_step = SMTP_AUTH_STRONG;
    s->state = SMTP_STATE_AUTH;
    smtp_session_parse_mode(s, 1);
    smtp_reply(s, "334 %s", b64);
}

/* Base64 of a SASL message into out; -1 too long. */
static int smtp_strong_b64(const char *msg, char *out, size_t cap)
{
    return smtp_auth_b64_encode((const unsigned char *)msg, strlen(msg), out,
                                cap) < 0
               ? -1
               : 0;
}

static void smtp_strong_keys_done(void *arg, int result, const char *reason,
                                  struct db_member *m,
                                  const struct scram_keys *k)
{
    struct smtp_session *s = arg;
    struct smtp_strong *st = s->strong;
    char nonce[2 * SCRAM_NONCE_RAW + 1], msg[SCRAM_MAX_MSG + 1];
    char b64[2 * SCRAM_MAX_MSG + 8];
    struct scram_keys fake;
    const char *err = NULL;

    st->req = NULL;
    if (result < 0) {
        smtp_strong_verdict(s, -1, reason, 1);
        return;
    }
    if (result == 0) {
        /* Go on with random keys: the proof fails as for a bad password. */
        unsigned char salt[SCRAM_SALT_LEN];

        memset(&fake, 0, sizeof fake);
        fake.iterations = s->srv->cfg->scram_iterations;
        fake.salt_len = sizeof salt;
        if (RAND_bytes(salt, sizeof salt) != 1 ||
            RAND_bytes(fake.stored_key, sizeof fake.stored_key) != 1) {
            smtp_strong_verdict(s, -1, "no random bytes", 1);
            return;
        }
        memcpy(fake.salt, salt, sizeof salt);
        k = &fake;
        st->reason = reason;
    }
    st->m = m;
    if (scram_nonce_new(nonce, sizeof nonce) != 0 ||
        scram_server_first(&st->sc, k, nonce, msg, sizeof msg, &err) != 0 ||
        smtp_strong_b64(msg, b64, sizeof b64) != 0) {
        OPENSSL_cleanse(&fake, sizeof fake);
        smtp_strong_verdict(s, -1, err != NULL ? err : "no random bytes", 1);
        return;
    }
    OPENSSL_cleanse(&fake, sizeof fake);
    st->phase = SMTP_STRONG_FINAL;
    smtp_strong_ask(s, b64);
    smtp_session_resume(s); /* stays in SMTP_STATE_AUTH */
}

static void smtp_strong_first(struct smtp_session *s, const char *msg,
                              size_t len)
{
    struct smtp_strong *st = s->strong;
    const char *err;

    if (scram_client_first(&st->sc, msg, len, &err) != 0) {
        smtp_strong_verdict(s, 0, err, 0);
        return;
    }
    log_escape(st->sc.user, strlen(st->sc.user), s->auth_login,
               sizeof(s->auth_login));
    s->auth_step = SMTP_AUTH_NONE; /* while the lookup runs */
    s->state = SMTP_STATE_CMD;
    smtp_session_parse_mode(s, 0);
    if (smtp_limit_auth_check(s, st->sc.user) != 0) {
        smtp_cmd_scram_abort(s);
        return;
    }
    st->req =
        auth_strong_lookup(s->srv->loop, s->srv->cfg, s->id, AUTH_STRONG_SCRAM,
                           st->sc.user, smtp_strong_keys_done, s);
    if (st->req == NULL) {
        smtp_strong_verdict(s, -1, "cannot start check", 0);
        return;
    }
    s->auth_step = SMTP_AUTH_STRONG;
    smtp_session_wait(s);
}

static void smtp_strong_final(struct smtp_session *s, const char *msg,
                              size_t len)
{
    struct smtp_strong *st = s->strong;
    unsigned char cb[EVP_MAX_MD_SIZE];
    long cblen = -1;
    char out[SCRAM_MAX_MSG + 1], b64[2 * SCRAM_MAX_MSG + 8];
    const char *err;
    int rc;

    if (st->sc.cb_flag == 'p' && s->tls != NULL)
        cblen = tls_conn_channel_binding(s->tls, st->sc.cb_name, cb, sizeof cb);
    rc = scram_client_final(&st->sc, msg, len, cblen > 0 ? cb : NULL,
                            cblen > 0 ? (size_t)cblen : 0, out, sizeof out,
                            &err);
    if (rc != 1 || st->m == NULL) { /* an unknown login: its reason */
        smtp_strong_verdict(s, 0, st->m == NULL ? st->reason : err, 0);
        return;
    }
    if (smtp_strong_b64(out, b64, sizeof b64) != 0) {
        smtp_strong_verdict(s, -1, "server-final too long", 0);
        return;
    }
    snprintf(st->m->auth_via, sizeof st->m->auth_via, "mech=%s",
             st->sc.plus ? "SCRAM-SHA-256-PLUS" : "SCRAM-SHA-256");
    st->phase = SMTP_STRONG_ACK;
    smtp_strong_ask(s, b64);
}

/* Ends the exchange on a client response that does not decode. */
static void smtp_strong_undecodable(struct smtp_session *s)
{
    smtp_cmd_scram_abort(s);
    s->auth_step = SMTP_AUTH_NONE;
    s->state = SMTP_STATE_CMD;
    smtp_session_parse_mode(s, 0);
    smtp_reply_error(s, "501 5.5.2 Cannot decode response");
}

static void smtp_strong_cert_done(void *arg, int result, const char *reason,
                                  struct db_member *m,
                                  const struct scram_keys *k)
{
    struct smtp_session *s = arg;
    struct smtp_strong *st = s->strong;

    (void)k;
    st->req = NULL;
    if (result == 1 && st->authzid[0] != '\0' &&
        !addr_equal(st->authzid, m->address)) {
        free(m);
        m = NULL;
        result = 0;
        reason = "authorization identity differs";
    }
    if (result == 1)
        log_escape(m->address, strlen(m->address), s->auth_login,
                   sizeof(s->auth_login));
    st->m = m;
    smtp_strong_verdict(s, result, reason, 1);
}

/* The EXTERNAL response: an authorization identity, or "=" for none. */
static void smtp_strong_external(struct smtp_session *s, const char *b64,
                                 size_t len)
{
    struct smtp_strong *st = s->strong;
    char fp[65];
    long n;

    n = smtp_auth_b64_decode(b64, len, (unsigned char *)st->authzid,
                             sizeof st->authzid - 1);
    if (n < 0 || memchr(st->authzid, '\0', (size_t)n) != NULL) {
        smtp_strong_undecodable(s);
        return;
    }
    st->authzid[n] = '\0';
    s->auth_step = SMTP_AUTH_NONE;
    s->state = SMTP_STATE_CMD;
    smtp_session_parse_mode(s, 0);
    if (s->tls == NULL || !tls_conn_peer_sha256(s->tls, fp, sizeof fp)) {
        snprintf(s->auth_login, sizeof s->auth_login, "-");
        smtp_strong_verdict(s, 0, "no client certificate", 0);
        return;
    }
    snprintf(s->auth_login, sizeof s->auth_login, "cert:%s", fp);
    if (smtp_limit_auth_check(s, fp) != 0) {
        smtp_cmd_scram_abort(s);
        return;
    }
    st->req =
        auth_strong_lookup(s->srv->loop, s->srv->cfg, s->id, AUTH_STRONG_CERT,
                           fp, smtp_strong_cert_done, s);
    if (st->req == NULL) {
        smtp_strong_verdict(s, -1, "cannot start check", 0);
        return;
    }
    smtp_session_wait(s);
}

/* The decoded client message, NUL-free, into buf; its length or -1. */
static long smtp_strong_decode(const char *b64, size_t len, char *buf,
                               size_t cap)
{
    long n = smtp_auth_b64_decode(b64, len, (unsigned char *)buf, cap);

    if (n < 0 || memchr(buf, '\0', (size_t)n) != NULL)
        return -1;
    return n;
}

void smtp_cmd_scram_line(struct smtp_session *s, const char *line, size_t len)
{
    struct smtp_strong *st = s->strong;
    char msg[SCRAM_MAX_MSG + 1];
    long n;

    if (st == NULL) { /* cannot happen: the step says an exchange runs */
        s->auth_step = SMTP_AUTH_NONE;
        s->state = SMTP_STATE_CMD;
        smtp_session_parse_mode(s, 0);
        smtp_reply_error(s, "503 5.5.1 No exchange in progress");
        return;
    }
    if (st->phase == SMTP_STRONG_EXTERNAL) {
        smtp_strong_external(s, line, len);
        return;
    }
    if (st->phase == SMTP_STRONG_ACK) {
        /* RFC 4954 4: an empty response after the server's last data */
        if (len == 0 || (len == 1 && line[0] == '='))
            smtp_strong_verdict(s, 1, "ok", 0);
        else
            smtp_strong_verdict(s, 0, "unexpected response after server-final",
                                0);
        return;
    }
    n = smtp_strong_decode(line, len, msg, sizeof msg - 1);
    if (n < 0) {
        smtp_strong_undecodable(s);
        return;
    }
    if (st->phase == SMTP_STRONG_FIRST)
        smtp_strong_first(s, msg, (size_t)n);
    else
        smtp_strong_final(s, msg, (size_t)n);
    OPENSSL_cleanse(msg, sizeof msg);
}

static void smtp_strong_new(struct smtp_session *s,
                            enum smtp_strong_phase phase)
{
    smtp_cmd_scram_abort(s);
    s->strong = xcalloc(1, sizeof *s->strong);
    s->strong->phase = phase;
}

void smtp_cmd_scram(struct smtp_session *s, int plus, const char *ir)
{
    smtp_strong_new(s, SMTP_STRONG_FIRST);
    /* AUTH is offered only over TLS, and -PLUS with it. */
    scram_init(&s->strong->sc, plus, 1);
    s->auth_step = SMTP_AUTH_STRONG;
    if (ir != NULL)
        smtp_cmd_scram_line(s, ir, strlen(ir));
    else
        smtp_strong_ask(s, "");
}

void smtp_cmd_external(struct smtp_session *s, const char *ir)
{
    smtp_strong_new(s, SMTP_STRONG_EXTERNAL);
    s->auth_step = SMTP_AUTH_STRONG;
    if (ir != NULL)
        smtp_cmd_scram_line(s, ir, strlen(ir));
    else
        smtp_strong_ask(s, "");
}
