/* smtp_cmd: the SMTP verbs of a submission session (RFC 5321 4.1.1) and
 * the table that decides which of them a client may use in its state.
 * AUTH lives in smtp_cmd_auth.c, the end of DATA in smtp_txn.c. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../common/addr.h"
#include "../common/log.h"
#include "metrics.h"
#include "policy.h"
#include "queue.h"
#include "smtp_data.h"
#include "smtp_gate.h"
#include "smtp_limit.h"
#include "smtp_session.h"

/* Allowed before TLS is active. */
#define SMTP_CMD_PRETLS 0x1
/* Allowed before AUTH has succeeded. */
#define SMTP_CMD_PREAUTH 0x2
/* Needs a preceding EHLO (AUTH is an extension, RFC 4954 4). */
#define SMTP_CMD_EHLO 0x4
/* Allowed before AUTH (and TLS) for a change-password request only: the
 * handler keeps such a transaction to one configured address
 * (smtp_gate.h). */
#define SMTP_CMD_GATE 0x8

typedef void (*smtp_cmd_fn)(struct smtp_session *s, const struct smtp_cmd *c);

struct smtp_cmd_def {
    enum smtp_verb verb;
    smtp_cmd_fn fn;
    unsigned flags;
};

/* Escapes network text for a log line into out (SMTP_CMD_ESC octets). */
#define SMTP_CMD_ESC (4 * SG_LOG_MAX_PEER_TEXT + 4)

static const char *smtp_cmd_esc(const char *in, char *out)
{
    return log_escape(in, strlen(in), out, SMTP_CMD_ESC);
}

/* Keeps the greeting argument for the Received: field: printable ASCII
 * only, and nothing that would end the comment it is written into. */
static void smtp_cmd_keep_helo(struct smtp_session *s, const char *arg)
{
    size_t i;

    for (i = 0; arg[i] != '\0' && arg[i] != ' ' && i < SMTP_HELO_MAX; i++) {
        unsigned char c = (unsigned char)arg[i];
        s->helo[i] = (c > 0x20 && c < 0x7f && c != '(' && c != ')' && c != '\\')
                         ? (char)c
                         : '?';
    }
    s->helo[i] = '\0';
}

static void smtp_cmd_ehlo(struct smtp_session *s, const struct smtp_cmd *c)
{
    const char *ext[8];
    size_t n = 0, i;

    if (c->arg[0] == '\0') {
        smtp_reply_error(s, "501 5.5.4 Syntax: EHLO hostname");
        return;
    }
    /* RFC 5321 4.1.4: EHLO also resets the transaction. */
    smtp_txn_reset(&s->txn);
    s->greeting = SMTP_GREET_EHLO;
    smtp_cmd_keep_helo(s, c->arg);
    smtp_reply(s, "250-%s", s->srv->cfg->hostname);
    ext[n++] = "PIPELINING";
    ext[n++] = NULL; /* SIZE, formatted below */
    ext[n++] = "8BITMIME";
    ext[n++] = "ENHANCEDSTATUSCODES";
    /* RFC 3207 4.2: no STARTTLS once TLS is on; RFC 4954 / our policy:
     * AUTH only over TLS. */
    ext[n++] = s->tls == NULL ? "STARTTLS" : smtp_cmd_scram_mechs(s);
    for (i = 0; i < n; i++) {
        char sep = i + 1 < n ? '-' : ' ';
        if (ext[i] == NULL)
            smtp_reply(s, "250%cSIZE %zu", sep, s->srv->cfg->max_message_size);
        else
            smtp_reply(s, "250%c%s", sep, ext[i]);
    }
}

static void smtp_cmd_helo(struct smtp_session *s, const struct smtp_cmd *c)
{
    if (c->arg[0] == '\0') {
        smtp_reply_error(s, "501 5.5.4 Syntax: HELO hostname");
        return;
    }
    smtp_txn_reset(&s->txn);
    s->greeting = SMTP_GREET_HELO;
    smtp_cmd_keep_helo(s, c->arg);
    smtp_reply(s, "250 %s", s->srv->cfg->hostname);
}

static void smtp_cmd_starttls(struct smtp_session *s, const struct smtp_cmd *c)
{
    if (s->tls != NULL) {
        smtp_reply_error(s, "503 5.5.1 TLS already active");
        return;
    }
    if (c->arg[0] != '\0') {
        smtp_reply_error(s, "501 5.5.4 Syntax: STARTTLS");
        return;
    }
    smtp_session_start_tls(s);
}

static void smtp_cmd_noop(struct smtp_session *s, const struct smtp_cmd *c)
{
    (void)c;
    smtp_reply(s, "250 2.0.0 Ok");
}

static void smtp_cmd_rset(struct smtp_session *s, const struct smtp_cmd *c)
{
    (void)c;
    smtp_txn_reset(&s->txn);
    smtp_reply(s, "250 2.0.0 Ok");
}

static void smtp_cmd_quit(struct smtp_session *s, const struct smtp_cmd *c)
{
    (void)c;
    smtp_session_close(s, "221 2.0.0 Bye");
}

static const char smtp_cmd_reply_size[] =
    "552 5.3.4 Message size exceeds fixed limit";
static const char smtp_cmd_reply_auth[] = "530 5.7.0 Authentication required";

/* The message size bound of the session: a change-password request
 * (before AUTH) gets no more than SG_MAX_MAILGATE_MESSAGE. */
static size_t smtp_cmd_max_size(const struct smtp_session *s)
{
    size_t max = s->srv->cfg->max_message_size;

    if (s->member == NULL && max > SG_MAX_MAILGATE_MESSAGE)
        max = SG_MAX_MAILGATE_MESSAGE;
    return max;
}

/* Checks the MAIL parameters (RFC 5321 4.1.2 esmtp-param, keywords
 * case-insensitive). NULL if acceptable, else the reply: a client error,
 * or smtp_cmd_reply_size for a declared size over the limit. */
static const char *smtp_cmd_mail_params(const struct smtp_session *s,
                                        const char *p)
{
    while (*p != '\0') {
        size_t klen = strcspn(p, "= "), vlen = 0;
        const char *v = NULL;

        if (p[klen] == '=') {
            v = p + klen + 1;
            vlen = strcspn(v, " ");
        }
        if (klen == 4 && strncasecmp(p, "SIZE", 4) == 0) {
            /* RFC 1870 6: SIZE=digits; more than 20 cannot be a size. */
            char digits[21];
            unsigned long long n;
            if (v == NULL || vlen == 0 || vlen >= sizeof(digits) ||
                strspn(v, "0123456789") < vlen)
                return "501 5.5.4 Bad SIZE parameter";
            memcpy(digits, v, vlen);
            digits[vlen] = '\0';
            errno = 0;
            n = strtoull(digits, NULL, 10);
            if (errno != 0 || n > smtp_cmd_max_size(s))
                return smtp_cmd_reply_size;
        } else if (klen == 4 && strncasecmp(p, "BODY", 4) == 0) {
            /* RFC 6152: 7BIT or 8BITMIME; both are passed as they are. */
            if (v == NULL ||
                !((vlen == 4 && strncasecmp(v, "7BIT", 4) == 0) ||
                  (vlen == 8 && strncasecmp(v, "8BITMIME", 8) == 0)))
                return "501 5.5.4 Bad BODY parameter";
        } else if (klen == 4 && strncasecmp(p, "AUTH", 4) == 0) {
            /* RFC 4954 5: a server that offers AUTH accepts the parameter
             * and may ignore its value. We do: the session's own AUTH is
             * what counts. */
        } else {
            return "555 5.5.4 Unsupported parameter";
        }
        p += klen + (v != NULL ? 1 + vlen : 0);
        while (*p == ' ')
            p++;
    }
    return NULL;
}

/* A refused MAIL: logged with the reason, not counted as a client
 * error. */
static void smtp_cmd_mail_reject(struct smtp_session *s, const char *reply,
                                 const char *reason, const char *addr)
{
    char esc[SMTP_CMD_ESC];

    log_warn("%s: reject code=%.3s reason=\"%s\" from=<%s> member=%s", s->id,
             reply, reason, smtp_cmd_esc(addr, esc), s->member->address);
    metrics_message(reply, 0);
    smtp_reply(s, "%s", reply);
}

/* MAIL before AUTH: taken provisionally for a change-password request;
 * RCPT decides (smtp_cmd_rcpt_gate). Any sender, the null one too
 * (`subgate mailgate` drops those). */
static void smtp_cmd_mail_gate(struct smtp_session *s, const char *addr,
                               const char *params)
{
    char esc[SMTP_CMD_ESC];
    const char *r;

    if (s->greeting == SMTP_GREET_NONE) {
        smtp_reply_error(s, "503 5.5.1 Send HELO or EHLO first");
        return;
    }
    if (s->nmsgs >= SMTP_GATE_MAX_PER_SESSION) {
        log_warn("%s: reject code=421 reason=\"too many change-password "
                 "requests\" client=%s",
                 s->id, s->client);
        smtp_session_close(s, "421 4.7.0 Too many requests, closing");
        return;
    }
    r = smtp_cmd_mail_params(s, params);
    if (r == smtp_cmd_reply_size) {
        log_warn("%s: reject code=552 reason=\"declared size over limit\" "
                 "from=<%s> client=%s",
                 s->id, smtp_cmd_esc(addr, esc), s->client);
        smtp_reply(s, "%s", r);
        return;
    }
    if (r != NULL) {
        smtp_reply_error(s, "%s", r);
        return;
    }
    queue_id_new(s->txn.qid);
    snprintf(s->txn.sender, sizeof(s->txn.sender), "%s", addr);
    s->txn.gate = 1;
    smtp_reply(s, "250 2.1.0 Ok");
}

static void smtp_cmd_mail(struct smtp_session *s, const struct smtp_cmd *c)
{
    char addr[SG_MAX_PATH + 1], esc[SMTP_CMD_ESC], esc2[SMTP_CMD_ESC];
    char reply[POLICY_REPLY_MAX];
    const char *params, *err, *use, *r;
    int rewritten;

    if (s->txn.qid[0] != '\0') {
        smtp_reply_error(s, "503 5.5.1 Sender already specified");
        return;
    }
    if (addr_parse_path(c->arg, addr, &params, &err) != 0) {
        smtp_reply_error(s, "501 5.1.7 Bad sender address syntax");
        return;
    }
    if (s->member == NULL) {
        smtp_cmd_mail_gate(s, addr, params);
        return;
    }
    r = smtp_cmd_mail_params(s, params);
    if (r == smtp_cmd_reply_size) {
        smtp_cmd_mail_reject(s, r, "declared size over limit", addr);
        return;
    }
    if (r != NULL) {
        smtp_reply_error(s, "%s", r);
        return;
    }
    r = policy_check_sender(s->member, addr, &use, &rewritten, reply,
                            sizeof(reply));
    if (r != NULL) {
        smtp_cmd_mail_reject(
            s, r, addr[0] == '\0' ? "null sender" : "sender not owned", addr);
        return;
    }
    r = smtp_limit_mail(s);
    if (r != NULL) {
        metrics_message(r, 0);
        smtp_reply(s, "%s", r);
        return;
    }
    queue_id_new(s->txn.qid);
    snprintf(s->txn.sender, sizeof(s->txn.sender), "%s", use);
    if (rewritten)
        log_info("%s: sender rewritten from=<%s> to=<%s>", s->txn.qid,
                 smtp_cmd_esc(addr, esc), smtp_cmd_esc(use, esc2));
    smtp_reply(s, "250 2.1.0 Ok");
}

/* RCPT of a transaction begun before AUTH: exactly one recipient, and
 * it must be a change-password address accepted in the gateway; anything
 * else is refused as it was before MAIL was let through. */
static void smtp_cmd_rcpt_gate(struct smtp_session *s, const char *addr)
{
    char esc[SMTP_CMD_ESC];

    if (!smtp_gate_is_address(s->srv->gate, addr)) {
        log_warn("%s: reject code=530 reason=\"not authenticated\" "
                 "to=<%s> client=%s",
                 s->txn.qid, smtp_cmd_esc(addr, esc), s->client);
        smtp_reply_error(s, "%s", smtp_cmd_reply_auth);
        return;
    }
    if (s->txn.nrcpt > 0) {
        log_warn("%s: reject code=452 reason=\"one recipient per "
                 "change-password request\" to=<%s> client=%s",
                 s->txn.qid, smtp_cmd_esc(addr, esc), s->client);
        smtp_reply(s, "452 4.5.3 Too many recipients");
        return;
    }
    smtp_txn_add_rcpt(&s->txn, addr);
    smtp_reply(s, "250 2.1.5 Ok");
}

static void smtp_cmd_rcpt(struct smtp_session *s, const struct smtp_cmd *c)
{
    char addr[SG_MAX_PATH + 1], esc[SMTP_CMD_ESC];
    const char *params, *err, *limit;

    if (s->txn.qid[0] == '\0') {
        smtp_reply_error(s, "503 5.5.1 Need MAIL command");
        return;
    }
    if (addr_parse_path(c->arg, addr, &params, &err) != 0 || addr[0] == '\0') {
        smtp_reply_error(s, "501 5.1.3 Bad recipient address syntax");
        return;
    }
    /* No RCPT parameter is offered (no DSN extension). */
    if (params[0] != '\0') {
        smtp_reply_error(s, "555 5.5.4 Unsupported parameter");
        return;
    }
    if (s->txn.gate) {
        smtp_cmd_rcpt_gate(s, addr);
        return;
    }
    if (s->txn.nrcpt >= s->srv->cfg->max_recipients) {
        /* RFC 5321 4.5.3.1.10: 452, the client sends the rest later. */
        log_warn("%s: reject code=452 reason=\"too many recipients\" "
                 "to=<%s>",
                 s->txn.qid, smtp_cmd_esc(addr, esc));
        smtp_reply(s, "452 4.5.3 Too many recipients");
        return;
    }
    limit = smtp_limit_rcpt(s);
    if (limit != NULL) {
        smtp_reply(s, "%s", limit);
        return;
    }
    smtp_txn_add_rcpt(&s->txn, addr);
    smtp_reply(s, "250 2.1.5 Ok");
}

static void smtp_cmd_data(struct smtp_session *s, const struct smtp_cmd *c)
{
    if (s->txn.nrcpt == 0) {
        /* In a pipelined group this answers DATA after the failed RCPTs,
         * in order (RFC 2920 3.1). */
        smtp_reply_error(s, "503 5.5.1 Need RCPT command");
        return;
    }
    if (c->arg[0] != '\0') {
        smtp_reply_error(s, "501 5.5.4 Syntax: DATA");
        return;
    }
    if (s->data != NULL && s->data_max != smtp_cmd_max_size(s))
        smtp_data_free(&s->data);
    if (s->data == NULL) {
        s->data_max = smtp_cmd_max_size(s);
        s->data = smtp_data_new(s->data_max);
    } else {
        smtp_data_reset(s->data);
    }
    smtp_reply(s, "354 End data with <CR><LF>.<CR><LF>");
    s->state = SMTP_STATE_DATA;
    smtp_limit_data_start(s);
}

static void smtp_cmd_bdat(struct smtp_session *s, const struct smtp_cmd *c)
{
    (void)c;
    smtp_reply_error(s, "502 5.5.1 BDAT not supported");
}

static void smtp_cmd_vrfy(struct smtp_session *s, const struct smtp_cmd *c)
{
    (void)c;
    smtp_reply(s, "252 2.5.0 Cannot VRFY user");
}

static void smtp_cmd_not_impl(struct smtp_session *s, const struct smtp_cmd *c)
{
    (void)c;
    smtp_reply(s, "502 5.5.1 Command not implemented");
}

static const struct smtp_cmd_def smtp_cmd_table[] = {
    {SMTP_VERB_EHLO, smtp_cmd_ehlo, SMTP_CMD_PRETLS | SMTP_CMD_PREAUTH},
    {SMTP_VERB_HELO, smtp_cmd_helo, SMTP_CMD_PRETLS | SMTP_CMD_PREAUTH},
    {SMTP_VERB_STARTTLS, smtp_cmd_starttls, SMTP_CMD_PRETLS | SMTP_CMD_PREAUTH},
    {SMTP_VERB_AUTH, smtp_cmd_auth, SMTP_CMD_PREAUTH | SMTP_CMD_EHLO},
    {SMTP_VERB_NOOP, smtp_cmd_noop, SMTP_CMD_PRETLS | SMTP_CMD_PREAUTH},
    {SMTP_VERB_RSET, smtp_cmd_rset, SMTP_CMD_PRETLS | SMTP_CMD_PREAUTH},
    {SMTP_VERB_QUIT, smtp_cmd_quit, SMTP_CMD_PRETLS | SMTP_CMD_PREAUTH},
    {SMTP_VERB_MAIL, smtp_cmd_mail, SMTP_CMD_GATE},
    {SMTP_VERB_RCPT, smtp_cmd_rcpt, SMTP_CMD_GATE},
    {SMTP_VERB_DATA, smtp_cmd_data, SMTP_CMD_GATE},
    {SMTP_VERB_BDAT, smtp_cmd_bdat, 0},
    {SMTP_VERB_VRFY, smtp_cmd_vrfy, 0},
    {SMTP_VERB_EXPN, smtp_cmd_not_impl, 0},
    {SMTP_VERB_HELP, smtp_cmd_not_impl, 0},
};

void smtp_cmd_dispatch(struct smtp_session *s, const struct smtp_cmd *cmd)
{
    const struct smtp_cmd_def *d = NULL;
    size_t i;

    for (i = 0; i < sizeof(smtp_cmd_table) / sizeof(smtp_cmd_table[0]); i++) {
        if (smtp_cmd_table[i].verb == cmd->verb) {
            d = &smtp_cmd_table[i];
            break;
        }
    }
    if (d == NULL) {
        smtp_reply_error(s, "500 5.5.1 Command unrecognized");
        return;
    }
    /* A change-password request needs neither AUTH nor TLS: its
     * handlers keep it to that (smtp_cmd_mail_gate, smtp_cmd_rcpt_gate;
     * DATA needs an accepted RCPT). Without any such address configured
     * MAIL is refused before AUTH as ever. */
    if (s->member == NULL && (d->flags & SMTP_CMD_GATE) &&
        (s->txn.gate || smtp_gate_active(s->srv->gate))) {
        d->fn(s, cmd);
        return;
    }
    /* Authentication needs TLS, so "not authenticated" covers "no TLS"
     * for everything but the verbs that lead there. */
    if (s->member == NULL && !(d->flags & SMTP_CMD_PREAUTH)) {
        smtp_reply_error(s, "%s", smtp_cmd_reply_auth);
        return;
    }
    if (s->tls == NULL && !(d->flags & SMTP_CMD_PRETLS)) {
        smtp_reply_error(s, "530 5.7.0 Must issue a STARTTLS command first");
        return;
    }
    if ((d->flags & SMTP_CMD_EHLO) && s->greeting != SMTP_GREET_EHLO) {
        smtp_reply_error(s, "503 5.5.1 Send EHLO first");
        return;
    }
    d->fn(s, cmd);
}
