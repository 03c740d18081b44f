/* smtp_cmd_auth: the AUTH command (RFC 4954) with SASL PLAIN (RFC 4616)
 * and LOGIN, the check against the tenant's backend (auth.c, off the
 * loop), the delay before refusing, and the limit of failures per
 * session. SCRAM-SHA-256(-PLUS) and EXTERNAL: smtp_cmd_scram.c. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../common/addr.h"
#include "../common/log.h"
#include "../common/xalloc.h"
#include "auth.h"
#include "metrics.h"
#include "smtp_limit.h"
#include "smtp_session.h"

/* base64("Username:") and base64("Password:"), as every LOGIN client
 * expects them. */
static const char smtp_auth_prompt_user[] = "334 VXNlcm5hbWU6";
static const char smtp_auth_prompt_pass[] = "334 UGFzc3dvcmQ6";

static void smtp_auth_creds_drop(struct smtp_session *s)
{
    if (s->creds == NULL)
        return;
    smtp_auth_creds_wipe(s->creds);
    free(s->creds);
    s->creds = NULL;
}

/* Ends the exchange without a verdict (the reply is the caller's). */
static void smtp_auth_end(struct smtp_session *s)
{
    smtp_auth_creds_drop(s);
    smtp_cmd_scram_abort(s);
    s->auth_step = SMTP_AUTH_NONE;
    if (s->state == SMTP_STATE_AUTH)
        s->state = SMTP_STATE_CMD;
    smtp_session_parse_mode(s, 0);
}

/* Sends a 334 challenge and reads the next line as a response. */
static void smtp_auth_ask(struct smtp_session *s, enum smtp_auth_step step,
                          const char *prompt)
{
    s->auth_step = step;
    s->state = SMTP_STATE_AUTH;
    smtp_session_parse_mode(s, 1);
    smtp_reply(s, "%s", prompt);
}

/* A refusal: counted, logged, answered after the configured delay. */
static void smtp_auth_fail(struct smtp_session *s, const char *reason)
{
    unsigned delay;

    s->nauthfail++;
    metrics_inc(METRIC_AUTH_FAIL);
    log_warn("%s: auth client=[%s] member=%s result=fail reason=\"%s\"", s->id,
             s->client_ip, s->auth_login, reason);
    delay = smtp_limit_auth_failed(s);
    smtp_session_wait_auth_delay(s, delay);
}

void smtp_cmd_auth_delay_done(struct smtp_session *s)
{
    smtp_reply(s, "535 5.7.8 Authentication credentials invalid");
    if (s->nauthfail >= SG_MAX_AUTH_FAILURES) {
        log_warn("%s: too many authentication failures client=%s", s->id,
                 s->client);
        smtp_session_close(s, "421 4.7.0 Too many authentication failures");
        return;
    }
    smtp_session_resume(s);
}

void smtp_cmd_auth_refuse(struct smtp_session *s, const char *reason)
{
    smtp_auth_fail(s, reason);
}

/* The member database could not answer: 454, the client may retry. */
void smtp_cmd_auth_tempfail(struct smtp_session *s, const char *reason)
{
    log_warn("%s: auth client=[%s] member=%s result=tempfail reason=\"%s\"",
             s->id, s->client_ip, s->auth_login, reason);
    metrics_inc(METRIC_AUTH_TEMPFAIL);
    smtp_reply(s, "454 4.7.0 Temporary authentication failure");
}

void smtp_cmd_auth_accept(struct smtp_session *s, struct db_member *m)
{
    m = db_member_shrink(m); /* kept for the session's life */
    s->member = m;
    metrics_inc(METRIC_AUTH_OK);
    smtp_limit_auth_ok(s);
    log_info("%s: auth client=[%s] member=%s result=ok%s%s", s->id,
             s->client_ip, m->address, m->auth_via[0] != '\0' ? " " : "",
             m->auth_via);
    smtp_session_parse_mode(s, 0); /* SG_MAX_CMD_LINE from now on */
    smtp_reply(s, "235 2.7.0 Authentication successful");
}

static void smtp_auth_done(void *arg, int result, const char *reason,
                           struct db_member *m)
{
    struct smtp_session *s = arg;

    s->auth_req = NULL;
    if (result == 1) {
        smtp_cmd_auth_accept(s, m);
        smtp_session_resume(s);
    } else if (result == 0) {
        smtp_auth_fail(s, reason);
    } else {
        smtp_cmd_auth_tempfail(s, reason);
        smtp_session_resume(s);
    }
}

/* The credentials in s->creds are complete: check them. */
static void smtp_auth_check(struct smtp_session *s)
{
    struct smtp_auth_creds *c = s->creds;

    s->auth_step = SMTP_AUTH_NONE;
    s->state = SMTP_STATE_CMD;
    smtp_session_parse_mode(s, 0);
    log_escape(c->login, strlen(c->login), s->auth_login,
               sizeof(s->auth_login));
    /* A blocked login or address gets no password check at all. */
    if (smtp_limit_auth_check(s, c->login) != 0) {
        smtp_auth_creds_drop(s);
        return;
    }
    /* RFC 4616 2: acting for another identity is not offered; naming
     * oneself is fine. */
    if (c->authzid[0] != '\0' && !addr_equal(c->authzid, c->login)) {
        smtp_auth_creds_drop(s);
        smtp_auth_fail(s, "authorization identity differs");
        return;
    }
    s->auth_req = auth_check(s->srv->auth, s->id, s->client_ip, c->login,
                             c->password, smtp_auth_done, s);
    smtp_auth_creds_drop(s);
    if (s->auth_req == NULL) {
        log_warn("%s: auth client=[%s] member=%s result=tempfail "
                 "reason=\"cannot start check\"",
                 s->id, s->client_ip, s->auth_login);
        metrics_inc(METRIC_AUTH_TEMPFAIL);
        smtp_reply(s, "454 4.7.0 Temporary authentication failure");
        return;
    }
    smtp_session_wait(s);
}

static void smtp_auth_plain(struct smtp_session *s, const char *b64, size_t len)
{
    smtp_auth_creds_drop(s);
    s->creds = xcalloc(1, sizeof(*s->creds));
    if (smtp_auth_plain_decode(b64, len, s->creds) != 0) {
        smtp_auth_end(s);
        smtp_reply_error(s, "501 5.5.2 Cannot decode response");
        return;
    }
    smtp_auth_check(s);
}

/* A LOGIN response: the user name, then the password. */
static void smtp_auth_login(struct smtp_session *s, const char *b64, size_t len)
{
    struct smtp_auth_creds *c = s->creds;
    int user = s->auth_step != SMTP_AUTH_LOGIN_PASS;
    char *out = user ? c->login : c->password;
    size_t cap = user ? sizeof(c->login) : sizeof(c->password);

    if (smtp_auth_login_decode(b64, len, out, cap) != 0) {
        smtp_auth_end(s);
        smtp_reply_error(s, "501 5.5.2 Cannot decode response");
        return;
    }
    if (user)
        smtp_auth_ask(s, SMTP_AUTH_LOGIN_PASS, smtp_auth_prompt_pass);
    else
        smtp_auth_check(s);
}

void smtp_cmd_auth(struct smtp_session *s, const struct smtp_cmd *c)
{
    size_t mlen = strcspn(c->arg, " ");
    const char *ir = c->arg[mlen] == ' ' ? c->arg + mlen + 1 : NULL;

    /* RFC 4954 4: 503 during a transaction and after a success. */
    if (s->txn.qid[0] != '\0') {
        smtp_reply_error(
            s, "503 5.5.1 AUTH not allowed during a mail transaction");
        return;
    }
    if (s->member != NULL) {
        smtp_reply_error(s, "503 5.5.1 Already authenticated");
        return;
    }
    if (mlen == 0) {
        smtp_reply_error(s,
                         "501 5.5.4 Syntax: AUTH mechanism [initial-response]");
        return;
    }
    if (mlen == 5 && strncasecmp(c->arg, "PLAIN", 5) == 0) {
        if (ir != NULL)
            smtp_auth_plain(s, ir, strlen(ir));
        else
            smtp_auth_ask(s, SMTP_AUTH_PLAIN, "334 ");
    } else if (mlen == 5 && strncasecmp(c->arg, "LOGIN", 5) == 0) {
        smtp_auth_creds_drop(s);
        s->creds = xcalloc(1, sizeof(*s->creds));
        s->auth_step = SMTP_AUTH_LOGIN_USER;
        if (ir != NULL)
            smtp_auth_login(s, ir, strlen(ir));
        else
            smtp_auth_ask(s, SMTP_AUTH_LOGIN_USER, smtp_auth_prompt_user);
    } else if (mlen == 13 && strncasecmp(c->arg, "SCRAM-SHA-256", 13) == 0) {
        smtp_cmd_scram(s, 0, ir);
    } else if (mlen == 18 &&
               strncasecmp(c->arg, "SCRAM-SHA-256-PLUS", 18) == 0) {
        smtp_cmd_scram(s, 1, ir);
    } else if (mlen == 8 && strncasecmp(c->arg, "EXTERNAL", 8) == 0) {
        smtp_cmd_external(s, ir);
    } else {
        smtp_reply_error(s, "504 5.5.4 Unrecognized authentication type");
    }
}

void smtp_cmd_auth_line(struct smtp_session *s, const struct smtp_cmd *c)
{
    /* RFC 4954 4: "*" cancels the exchange. */
    if (c->line_len == 1 && c->line[0] == '*') {
        smtp_auth_end(s);
        smtp_reply_error(s, "501 5.0.0 Authentication cancelled");
        return;
    }
    if (s->auth_step == SMTP_AUTH_STRONG)
        smtp_cmd_scram_line(s, c->line, c->line_len);
    else if (s->auth_step == SMTP_AUTH_PLAIN)
        smtp_auth_plain(s, c->line, c->line_len);
    else
        smtp_auth_login(s, c->line, c->line_len);
}

void smtp_cmd_auth_abort(struct smtp_session *s)
{
    if (s->auth_req != NULL) {
        auth_cancel(s->auth_req);
        s->auth_req = NULL;
    }
    smtp_auth_creds_drop(s);
    smtp_cmd_scram_abort(s);
}
