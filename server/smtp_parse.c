/* smtp_parse: incremental SMTP command reader. See smtp_parse.h.
 *
 * The line buffer has the size of the bound in force for the line being
 * read; _set_max() takes effect at the next line, which is when the buffer
 * is made again at the new size (never larger than SG_MAX_AUTH_LINE, or
 * max_line if that is larger). Input never makes it grow. A bound counts every
 * octet of the line including its CRLF (RFC 5321 4.5.3.1.4 counts the CRLF in
 * the 512 octets).
 *
 * Input handling is split between the parser and its caller: the parser
 * keeps the bytes of the line in progress (smtp_parse_pending() counts
 * them), while bytes the caller handed in but the parser did not consume
 * (*used_r < len, because a complete line was returned first) stay with the
 * caller, who feeds them again. Before STARTTLS the session must check both:
 * pending == 0 and no unconsumed input (RFC 3207 5, command injection). */
#include "smtp_parse.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../common/limits.h"
#include "../common/xalloc.h"

/* Longest verb text kept for cmd->verb_text; longer verbs are unknown
 * anyway ("STARTTLS" is the longest we know) and are cut to this. */
#define SMTP_PARSE_VERB_MAX 31
/* Smallest usable bound: a bare CRLF. */
#define SMTP_PARSE_MIN_LINE 2

static const char err_too_long[] = "500 5.5.2 Line too long";
static const char err_bad_char[] = "500 5.5.2 Bad character in command";
static const char err_mail_syntax[] = "501 5.5.4 Syntax: MAIL FROM:<address>";
static const char err_rcpt_syntax[] = "501 5.5.4 Syntax: RCPT TO:<address>";

enum smtp_parse_state {
    SMTP_PARSE_LINE, /* storing octets of a line */
    SMTP_PARSE_SKIP, /* discarding up to LF, then reporting p->skip_err */
};

struct smtp_parse {
    char *buf;    /* owned: cap + 1 octets (line and its NUL) */
    size_t cap;   /* octets at buf: the bound of the line in progress */
    size_t limit; /* largest bound allowed, fixed at _new() */
    size_t max;   /* bound for the line in progress */
    size_t next;  /* bound for the lines after it (_set_max()) */
    size_t len;   /* octets of the current line in buf (CR included) */
    size_t seen;  /* octets of the current line seen, skipped ones too */
    int raw;      /* return lines as-is (AUTH responses) */
    int returned; /* buf holds the line last returned in cmd */
    enum smtp_parse_state state;
    const char *skip_err; /* borrowed: reply once the skipped line ends */
    char verb[SMTP_PARSE_VERB_MAX + 1];
    struct smtp_cmd cmd; /* points into buf and verb */
};

struct smtp_parse_verb {
    const char *text;
    enum smtp_verb verb;
};

static const struct smtp_parse_verb smtp_parse_verbs[] = {
    {"HELO", SMTP_VERB_HELO},         {"EHLO", SMTP_VERB_EHLO},
    {"MAIL", SMTP_VERB_MAIL},         {"RCPT", SMTP_VERB_RCPT},
    {"DATA", SMTP_VERB_DATA},         {"RSET", SMTP_VERB_RSET},
    {"NOOP", SMTP_VERB_NOOP},         {"QUIT", SMTP_VERB_QUIT},
    {"VRFY", SMTP_VERB_VRFY},         {"HELP", SMTP_VERB_HELP},
    {"STARTTLS", SMTP_VERB_STARTTLS}, {"AUTH", SMTP_VERB_AUTH},
    {"BDAT", SMTP_VERB_BDAT},         {"EXPN", SMTP_VERB_EXPN},
};

static size_t smtp_parse_clamp(const struct smtp_parse *p, size_t max_line)
{
    if (max_line < SMTP_PARSE_MIN_LINE)
        return SMTP_PARSE_MIN_LINE;
    if (max_line > p->limit)
        return p->limit;
    return max_line;
}

struct smtp_parse *smtp_parse_new(size_t max_line)
{
    struct smtp_parse *p = xcalloc(1, sizeof(*p));

    p->limit = max_line > SG_MAX_AUTH_LINE ? max_line : SG_MAX_AUTH_LINE;
    p->max = smtp_parse_clamp(p, max_line);
    p->next = p->max;
    p->cap = p->max;
    p->buf = xmalloc(p->cap + 1);
    p->state = SMTP_PARSE_LINE;
    return p;
}

void smtp_parse_free(struct smtp_parse **pp)
{
    struct smtp_parse *p = *pp;

    if (p == NULL)
        return;
    /* The buffer may have held an AUTH response (a password). */
    explicit_bzero(p->buf, p->cap + 1);
    free(p->buf);
    free(p);
    *pp = NULL;
}

void smtp_parse_set_max(struct smtp_parse *p, size_t max_line)
{
    p->next = smtp_parse_clamp(p, max_line);
    if (p->seen == 0)
        p->max = p->next;
}

void smtp_parse_set_raw(struct smtp_parse *p, int raw)
{
    p->raw = raw != 0;
}

size_t smtp_parse_pending(const struct smtp_parse *p)
{
    return p->seen;
}

static enum smtp_verb smtp_parse_lookup(const char *text)
{
    size_t i;

    for (i = 0; i < sizeof(smtp_parse_verbs) / sizeof(smtp_parse_verbs[0]);
         i++) {
        if (strcasecmp(text, smtp_parse_verbs[i].text) == 0)
            return smtp_parse_verbs[i].verb;
    }
    return SMTP_VERB_UNKNOWN;
}

/* For MAIL and RCPT: the line must go on with " FROM:" / " TO:" (case-
 * insensitive, no space before the colon, RFC 5321 4.1.1.2/3); spaces after
 * the colon are tolerated. Returns the argument or NULL. */
static const char *smtp_parse_path_arg(const char *rest, const char *keyword)
{
    size_t n = strlen(keyword);

    if (rest[0] != ' ' || strncasecmp(rest + 1, keyword, n) != 0)
        return NULL;
    rest += 1 + n;
    while (*rest == ' ')
        rest++;
    return rest;
}

/* Splits the finished line in buf (NUL-terminated) into cmd. Returns NULL
 * or the syntax error reply. */
static const char *smtp_parse_split(struct smtp_parse *p)
{
    struct smtp_cmd *c = &p->cmd;
    size_t vlen = strcspn(p->buf, " ");
    size_t keep = vlen < SMTP_PARSE_VERB_MAX ? vlen : SMTP_PARSE_VERB_MAX;
    const char *rest = p->buf + vlen;

    c->line = p->buf;
    c->line_len = p->len;
    if (p->raw) {
        c->verb = SMTP_VERB_UNKNOWN;
        c->verb_text = "";
        c->arg = p->buf;
        return NULL;
    }
    memcpy(p->verb, p->buf, keep);
    p->verb[keep] = '\0';
    c->verb_text = p->verb;
    c->verb = vlen <= SMTP_PARSE_VERB_MAX ? smtp_parse_lookup(p->verb)
                                          : SMTP_VERB_UNKNOWN;
    switch (c->verb) {
    case SMTP_VERB_MAIL:
        c->arg = smtp_parse_path_arg(rest, "FROM:");
        return c->arg != NULL ? NULL : err_mail_syntax;
    case SMTP_VERB_RCPT:
        c->arg = smtp_parse_path_arg(rest, "TO:");
        return c->arg != NULL ? NULL : err_rcpt_syntax;
    default:
        c->arg = *rest == ' ' ? rest + 1 : rest;
        return NULL;
    }
}

/* A line ended (its LF consumed): the next line starts with the new bound. */
static void smtp_parse_next_line(struct smtp_parse *p)
{
    p->seen = 0;
    p->max = p->next;
    p->state = SMTP_PARSE_LINE;
}

/* Enters the skipping state; the first reason wins. */
static void smtp_parse_skip(struct smtp_parse *p, const char *err)
{
    explicit_bzero(p->buf, p->len);
    p->len = 0;
    p->skip_err = err;
    p->state = SMTP_PARSE_SKIP;
}

/* Stores the octets of buf[0..n) (none of them LF) in the line, or starts
 * skipping when one of them breaks a rule. */
static void smtp_parse_store(struct smtp_parse *p, const char *s, size_t n)
{
    /* A stored octet needs its place plus one for the LF still to come:
     * the line with its terminator stays within p->max. */
    size_t room = p->max - 1 - p->len;
    size_t upto = n < room ? n : room;

    /* Whichever rule an octet breaks first is the one reported. */
    if (memchr(s, '\0', upto) != NULL) {
        smtp_parse_skip(p, err_bad_char);
        return;
    }
    if (n > room) {
        smtp_parse_skip(p, err_too_long);
        return;
    }
    memcpy(p->buf + p->len, s, n);
    p->len += n;
}

/* The LF of the current line was consumed: finish it. Returns 1 (command)
 * or -1 (error). */
static int smtp_parse_end_line(struct smtp_parse *p, struct smtp_cmd **cmd_r,
                               const char **err_r)
{
    const char *err;

    if (p->state == SMTP_PARSE_SKIP) {
        *err_r = p->skip_err;
        smtp_parse_next_line(p);
        return -1;
    }
    /* CRLF or a bare LF (RFC 5321 2.3.8 asks for CRLF; we take both). */
    if (p->len > 0 && p->buf[p->len - 1] == '\r')
        p->len--;
    p->buf[p->len] = '\0';
    smtp_parse_next_line(p);
    /* Any other CR is bare (RFC 5321 2.3.8): refused, so that no CR from a
     * command can reach a header or a log line. */
    if (memchr(p->buf, '\r', p->len) != NULL) {
        explicit_bzero(p->buf, p->len);
        p->len = 0;
        *err_r = err_bad_char;
        return -1;
    }
    p->returned = 1;
    err = smtp_parse_split(p);
    if (err != NULL) {
        *err_r = err;
        return -1;
    }
    *cmd_r = &p->cmd;
    return 1;
}

int smtp_parse_feed(struct smtp_parse *p, const char *buf, size_t len,
                    size_t *used_r, struct smtp_cmd **cmd_r, const char **err_r)
{
    size_t off = 0;

    *cmd_r = NULL;
    *err_r = NULL;
    if (p->returned) {
        /* The previous command is no longer referenced. */
        explicit_bzero(p->buf, p->len + 1);
        p->len = 0;
        p->returned = 0;
    }
    if (p->seen == 0 && p->cap != p->max) {
        /* A line starts under a new bound: the buffer takes its size, so
         * that a session holds 12 KiB only during an AUTH exchange. The
         * old one may have held a password. */
        explicit_bzero(p->buf, p->cap + 1);
        free(p->buf);
        p->cap = p->max;
        p->buf = xmalloc(p->cap + 1);
    }
    while (off < len) {
        const char *s = buf + off;
        const char *lf = memchr(s, '\n', len - off);
        size_t n = lf != NULL ? (size_t)(lf - s) : len - off;

        p->seen += n;
        if (p->state == SMTP_PARSE_LINE)
            smtp_parse_store(p, s, n);
        off += n;
        if (lf == NULL)
            break;
        off++; /* the LF, for which _store() kept room */
        *used_r = off;
        return smtp_parse_end_line(p, cmd_r, err_r);
    }
    *used_r = off;
    return 0;
}
