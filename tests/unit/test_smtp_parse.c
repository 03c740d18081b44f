/* Unit tests for smtp_parse. Each table case is fed whole, byte by byte and
 * in chunks of 3 octets, and must give the same events; the limit cases
 * check a line of exactly the bound and one octet over it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../common/limits.h"
#include "../../server/smtp_parse.h"
#include "testutil.h"

static const char *const verb_names[] = {
    [SMTP_VERB_UNKNOWN] = "UNKNOWN", [SMTP_VERB_HELO] = "HELO",
    [SMTP_VERB_EHLO] = "EHLO",       [SMTP_VERB_MAIL] = "MAIL",
    [SMTP_VERB_RCPT] = "RCPT",       [SMTP_VERB_DATA] = "DATA",
    [SMTP_VERB_RSET] = "RSET",       [SMTP_VERB_NOOP] = "NOOP",
    [SMTP_VERB_QUIT] = "QUIT",       [SMTP_VERB_VRFY] = "VRFY",
    [SMTP_VERB_HELP] = "HELP",       [SMTP_VERB_STARTTLS] = "STARTTLS",
    [SMTP_VERB_AUTH] = "AUTH",       [SMTP_VERB_BDAT] = "BDAT",
    [SMTP_VERB_EXPN] = "EXPN",
};

/* How a run behaves like the session: with auth_hook, "AUTH ..." switches
 * to raw mode with the AUTH bound for one line, then back. */
struct run_opts {
    size_t max;      /* for _new() */
    size_t set_max;  /* if not 0, _set_max() before feeding */
    int raw;         /* raw mode from the start */
    int auth_hook;   /* simulate the AUTH exchange */
    size_t pending;  /* smtp_parse_pending() wanted at the end */
    const char *why; /* case name, for messages */
};

/* Records one command, checking the invariants of struct smtp_cmd. */
static void record_cmd(struct sb *ev, const struct smtp_cmd *c, int raw,
                       const char *name)
{
    check_size(name, "line_len", c->line_len, strlen(c->line));
    if (c->arg < c->line || c->arg > c->line + c->line_len) {
        print_error("%s: arg does not point into line\n", name);
        fail();
    }
    if (raw) {
        sb_add(ev, "RAW|");
        sb_esc(ev, c->line, c->line_len);
    } else {
        sb_add(ev, verb_names[c->verb]);
        sb_add(ev, " ");
        sb_esc(ev, c->verb_text, strlen(c->verb_text));
        sb_add(ev, "|");
        sb_esc(ev, c->arg, strlen(c->arg));
    }
    sb_add(ev, "\n");
}

/* Feeds in[0..len) in chunks of chunk octets (0: all at once), feeding
 * each chunk again until it is consumed, and returns the events. */
static char *run(const struct run_opts *o, const char *in, size_t len,
                 size_t chunk)
{
    struct smtp_parse *p = smtp_parse_new(o->max);
    struct sb ev = {0};
    int raw = o->raw, in_auth = 0;
    size_t off = 0;

    sb_add(&ev, "");
    if (o->set_max)
        smtp_parse_set_max(p, o->set_max);
    smtp_parse_set_raw(p, raw);
    while (off < len) {
        size_t n = chunk == 0 || len - off < chunk ? len - off : chunk;
        size_t pos = 0;

        while (pos < n) {
            struct smtp_cmd *cmd = NULL;
            const char *err = NULL;
            size_t used = 0;
            int rc =
                smtp_parse_feed(p, in + off + pos, n - pos, &used, &cmd, &err);

            if (used > n - pos || (rc == 0 && used != n - pos) ||
                (rc != 0 && used == 0)) {
                print_error("%s: rc %d used %zu of %zu\n", o->why, rc, used,
                            n - pos);
                fail();
            }
            pos += used;
            if (rc < 0) {
                assert_non_null(err);
                sb_add(&ev, "ERR ");
                sb_add(&ev, err);
                sb_add(&ev, "\n");
            } else if (rc > 0) {
                assert_non_null(cmd);
                record_cmd(&ev, cmd, raw, o->why);
            }
            if (rc != 0 && o->auth_hook && in_auth) {
                /* The AUTH response line is done. */
                in_auth = 0;
                raw = 0;
                smtp_parse_set_raw(p, 0);
                smtp_parse_set_max(p, o->set_max ? o->set_max : o->max);
            } else if (rc > 0 && o->auth_hook && cmd->verb == SMTP_VERB_AUTH) {
                in_auth = 1;
                raw = 1;
                smtp_parse_set_raw(p, 1);
                smtp_parse_set_max(p, SG_MAX_AUTH_LINE);
            }
        }
        off += n;
    }
    check_size(o->why, "pending", smtp_parse_pending(p), o->pending);
    smtp_parse_free(&p);
    assert_null(p);
    return ev.s;
}

/* Runs whole, byte by byte and in chunks of 3; all must give want. */
static void run_all(const struct run_opts *o, const char *in, size_t len,
                    const char *want)
{
    static const struct {
        size_t chunk;
        const char *mode;
    } modes[] = {{0, "whole"}, {1, "byte by byte"}, {3, "chunks of 3"}};
    size_t i;

    for (i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        char *got = run(o, in, len, modes[i].chunk);

        check_str(o->why, modes[i].mode, got, want);
        free(got);
    }
}

#define TOO_LONG "ERR 500 5.5.2 Line too long\n"
#define BAD_CHAR "ERR 500 5.5.2 Bad character in command\n"
#define MAIL_SYNTAX "ERR 501 5.5.4 Syntax: MAIL FROM:<address>\n"
#define RCPT_SYNTAX "ERR 501 5.5.4 Syntax: RCPT TO:<address>\n"

struct parse_case {
    const char *name;
    const char *in;
    size_t in_len; /* 0: strlen(in) */
    int auth_hook;
    size_t pending;
    const char *want;
};

static const struct parse_case parse_cases[] = {
    {"ehlo", "EHLO client.example.org\r\n", 0, 0, 0,
     "EHLO EHLO|client.example.org\n"},
    {"verbs are case-insensitive", "eHlO x\r\nquit\r\nStartTls\r\n", 0, 0, 0,
     "EHLO eHlO|x\nQUIT quit|\nSTARTTLS StartTls|\n"},
    {"pipelined transaction",
     "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n"
     "RCPT TO:<c@example.net>\r\nDATA\r\n",
     0, 0, 0,
     "MAIL MAIL|<a@example.org>\nRCPT RCPT|<b@example.net>\n"
     "RCPT RCPT|<c@example.net>\nDATA DATA|\n"},
    {"mail parameters kept", "mail from:<a@x> SIZE=100 BODY=8BITMIME\r\n", 0, 0,
     0, "MAIL mail|<a@x> SIZE=100 BODY=8BITMIME\n"},
    {"spaces after colon tolerated", "MAIL FROM:  <a@x>\r\nRCPT To: <b@y>\r\n",
     0, 0, 0, "MAIL MAIL|<a@x>\nRCPT RCPT|<b@y>\n"},
    {"null reverse path", "MAIL FROM:<>\r\n", 0, 0, 0, "MAIL MAIL|<>\n"},
    {"mail without from", "MAIL <a@x>\r\nNOOP\r\n", 0, 0, 0,
     MAIL_SYNTAX "NOOP NOOP|\n"},
    {"mail space before colon", "MAIL FROM :<a@x>\r\n", 0, 0, 0, MAIL_SYNTAX},
    {"mail alone", "MAIL\r\n", 0, 0, 0, MAIL_SYNTAX},
    {"rcpt without to", "RCPT <b@x>\r\nRCPT TO <b@x>\r\n", 0, 0, 0,
     RCPT_SYNTAX RCPT_SYNTAX},
    {"bare LF ends a line", "NOOP\nQUIT\n", 0, 0, 0,
     "NOOP NOOP|\nQUIT QUIT|\n"},
    {"unknown verb", "FOO bar baz\r\n", 0, 0, 0, "UNKNOWN FOO|bar baz\n"},
    {"verb prefix is not a verb", "MAILX FROM:<a>\r\n", 0, 0, 0,
     "UNKNOWN MAILX|FROM:<a>\n"},
    {"long verb cut", "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX y\r\n", 0, 0, 0,
     "UNKNOWN XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX|y\n"},
    {"empty line", "\r\n\n", 0, 0, 0, "UNKNOWN |\nUNKNOWN |\n"},
    {"one space after verb removed", "NOOP  x \r\n", 0, 0, 0,
     "NOOP NOOP| x \n"},
    {"bare CR refused then resync", "NOOP a\rb\r\r\nQUIT\r\n", 0, 0, 0,
     BAD_CHAR "QUIT QUIT|\n"},
    {"CR injection in EHLO", "EHLO a\rX-Injected: 1\r\nNOOP\r\n", 0, 0, 0,
     BAD_CHAR "NOOP NOOP|\n"},
    {"bare CR in raw mode", "AUTH LOGIN\r\na\rb\r\n", 0, 1, 0,
     "AUTH AUTH|LOGIN\n" BAD_CHAR},
    {"NUL refused then resync", "NO\0OP x\r\nQUIT\r\n", 15, 0, 0,
     BAD_CHAR "QUIT QUIT|\n"},
    {"NUL right before LF", "NOOP\0\nQUIT\r\n", 12, 0, 0,
     BAD_CHAR "QUIT QUIT|\n"},
    {"incomplete line pending", "NOOP\r\nQUI", 0, 0, 3, "NOOP NOOP|\n"},
    {"CR pending", "NOOP\r", 0, 0, 5, ""},
    {"auth response in raw mode",
     "AUTH PLAIN\r\nAHRpbQB0YW5zdGFhZnRhbnN0YWFm\r\nQUIT\r\n", 0, 1, 0,
     "AUTH AUTH|PLAIN\nRAW|AHRpbQB0YW5zdGFhZnRhbnN0YWFm\nQUIT QUIT|\n"},
    {"raw mode takes any line", "AUTH LOGIN\r\nMAIL\r\nMAIL\r\n", 0, 1, 0,
     "AUTH AUTH|LOGIN\nRAW|MAIL\n" MAIL_SYNTAX},
    {"raw cancel and empty", "AUTH LOGIN\r\n*\r\nAUTH LOGIN\r\n\r\n", 0, 1, 0,
     "AUTH AUTH|LOGIN\nRAW|*\nAUTH AUTH|LOGIN\nRAW|\n"},
};

static void test_parse_case(void **state)
{
    const struct parse_case *c = &parse_cases[(uintptr_t)*state];
    struct run_opts o = {SG_MAX_CMD_LINE, 0,          0,
                         c->auth_hook,    c->pending, c->name};

    run_all(&o, c->in, c->in_len ? c->in_len : strlen(c->in), c->want);
}

/* Line-length bounds: a line of exactly the bound (terminator included)
 * passes, one octet more is refused, and the next line is read again. */
struct limit_case {
    const char *name;
    size_t new_max; /* for _new() */
    size_t set_max; /* 0 or _set_max() before feeding */
    size_t bound;   /* the bound in effect */
    int raw;
    const char *eol;
};

static const struct limit_case limit_cases[] = {
    {"command line 2048", SG_MAX_CMD_LINE, 0, SG_MAX_CMD_LINE, 0, "\r\n"},
    {"command line bare LF", SG_MAX_CMD_LINE, 0, SG_MAX_CMD_LINE, 0, "\n"},
    {"lowered to pre-auth 512", SG_MAX_CMD_LINE, SG_MAX_PREAUTH_LINE,
     SG_MAX_PREAUTH_LINE, 0, "\r\n"},
    {"new at pre-auth 512", SG_MAX_PREAUTH_LINE, 0, SG_MAX_PREAUTH_LINE, 0,
     "\r\n"},
    {"raised to AUTH 12288", SG_MAX_PREAUTH_LINE, SG_MAX_AUTH_LINE,
     SG_MAX_AUTH_LINE, 1, "\r\n"},
    {"raised beyond AUTH is clamped", SG_MAX_PREAUTH_LINE, 100000,
     SG_MAX_AUTH_LINE, 1, "\r\n"},
};

/* "NOOP aaa...<eol>" of total octets, and the events it gives. */
static void build_line(struct sb *in, struct sb *want, size_t total, int raw,
                       const char *eol, size_t bound)
{
    size_t start = in->len;

    sb_add(in, "NOOP ");
    sb_fill(in, 'a', total - strlen(eol) - 5);
    if (total > bound) {
        sb_add(want, TOO_LONG);
    } else {
        sb_add(want, raw ? "RAW|" : "NOOP NOOP|");
        sb_addn(want, in->s + start + (raw ? 0 : 5),
                in->len - start - (raw ? 0 : 5));
        sb_add(want, "\n");
    }
    sb_add(in, eol);
}

static void test_limit_case(void **state)
{
    const struct limit_case *c = &limit_cases[(uintptr_t)*state];
    struct run_opts o = {c->new_max, c->set_max, c->raw, 0, 0, c->name};
    size_t total;

    for (total = c->bound; total <= c->bound + 1; total++) {
        struct sb in = {0}, want = {0};

        build_line(&in, &want, total, c->raw, c->eol, c->bound);
        /* A short line after it must be read normally (resync). */
        build_line(&in, &want, 12, c->raw, c->eol, c->bound);
        run_all(&o, in.s, in.len, want.s);
        free(in.s);
        free(want.s);
    }
}

/* A long line is refused once, however much of it there is. */
static void test_very_long_line(void **state)
{
    struct run_opts o = {SG_MAX_PREAUTH_LINE, 0, 0, 0, 0, "very long line"};
    struct sb in = {0};

    (void)state;
    sb_fill(&in, 'x', 100000);
    sb_add(&in, "\r\nQUIT\r\n");
    run_all(&o, in.s, in.len, TOO_LONG "QUIT QUIT|\n");
    free(in.s);
}

/* _set_max() does not change the line in progress, only the next. */
static void test_set_max_next_line(void **state)
{
    struct smtp_parse *p = smtp_parse_new(SG_MAX_CMD_LINE);
    struct smtp_cmd *cmd;
    const char *err;
    size_t used;
    int rc;

    (void)state;
    rc = smtp_parse_feed(p, "NOOP aaaa", 9, &used, &cmd, &err);
    assert_int_equal(rc, 0);
    check_size("set_max", "pending", smtp_parse_pending(p), 9);
    smtp_parse_set_max(p, 8);
    rc = smtp_parse_feed(p, "\r\nNOOP aaaa\r\n", 13, &used, &cmd, &err);
    assert_int_equal(rc, 1);
    check_size("set_max", "used", used, 2);
    check_str("set_max", "line in progress", cmd->line, "NOOP aaaa");
    rc = smtp_parse_feed(p, "NOOP aaaa\r\n", 11, &used, &cmd, &err);
    assert_int_equal(rc, -1);
    check_str("set_max", "next line", err, "500 5.5.2 Line too long");
    smtp_parse_free(&p);
}

/* For STARTTLS the session needs to know about both kinds of leftover
 * input: the parser's partial line and its own unconsumed bytes. */
static void test_pending_starttls(void **state)
{
    struct smtp_parse *p = smtp_parse_new(SG_MAX_PREAUTH_LINE);
    struct smtp_cmd *cmd;
    const char *err;
    const char in[] = "STARTTLS\r\nEHLO x";
    size_t used;
    int rc;

    (void)state;
    rc = smtp_parse_feed(p, in, strlen(in), &used, &cmd, &err);
    assert_int_equal(rc, 1);
    assert_int_equal(cmd->verb, SMTP_VERB_STARTTLS);
    check_size("starttls", "used", used, 10);
    check_size("starttls", "pending", smtp_parse_pending(p), 0);
    rc = smtp_parse_feed(p, in + used, strlen(in) - used, &used, &cmd, &err);
    assert_int_equal(rc, 0);
    check_size("starttls", "pending after", smtp_parse_pending(p), 6);
    smtp_parse_free(&p);
    smtp_parse_free(&p); /* NULL is fine */
}

/* While a too-long line is skipped, it is still pending. */
static void test_pending_while_skipping(void **state)
{
    struct smtp_parse *p = smtp_parse_new(SG_MAX_PREAUTH_LINE);
    struct smtp_cmd *cmd;
    const char *err;
    char big[600];
    size_t used;
    int rc;

    (void)state;
    memset(big, 'x', sizeof(big));
    rc = smtp_parse_feed(p, big, sizeof(big), &used, &cmd, &err);
    assert_int_equal(rc, 0);
    check_size("skipping", "used", used, sizeof(big));
    check_size("skipping", "pending", smtp_parse_pending(p), sizeof(big));
    rc = smtp_parse_feed(p, "\n", 1, &used, &cmd, &err);
    assert_int_equal(rc, -1);
    check_size("skipping", "pending after", smtp_parse_pending(p), 0);
    smtp_parse_free(&p);
}

#define N_PARSE (sizeof(parse_cases) / sizeof(parse_cases[0]))
#define N_LIMIT (sizeof(limit_cases) / sizeof(limit_cases[0]))

int main(void)
{
    struct CMUnitTest tests[N_PARSE + N_LIMIT + 5];
    size_t n = 0, i;

    for (i = 0; i < N_PARSE; i++) {
        struct CMUnitTest t = {parse_cases[i].name, test_parse_case, NULL, NULL,
                               (void *)(uintptr_t)i};
        tests[n++] = t;
    }
    for (i = 0; i < N_LIMIT; i++) {
        struct CMUnitTest t = {limit_cases[i].name, test_limit_case, NULL, NULL,
                               (void *)(uintptr_t)i};
        tests[n++] = t;
    }
    {
        const struct CMUnitTest more[] = {
            cmocka_unit_test(test_very_long_line),
            cmocka_unit_test(test_set_max_next_line),
            cmocka_unit_test(test_pending_starttls),
            cmocka_unit_test(test_pending_while_skipping),
        };
        for (i = 0; i < sizeof(more) / sizeof(more[0]); i++)
            tests[n++] = more[i];
    }
    return _cmocka_run_group_tests("smtp_parse", tests, n, NULL, NULL);
}
