/* addr: see addr.h. Two grammars live here: the SMTP envelope's Mailbox
 * (RFC 5321 4.1.2), checked octet by octet on a NUL-terminated string, and
 * the From: field's mailbox-list (RFC 5322 3.4), read by a small lexer that
 * skips folding white space and comments and hands tokens to a parser that
 * accepts exactly one mailbox. Neither recurses; comment nesting is counted
 * and bounded. Obsolete syntax (RFC 5322 4) is refused, except the '.' in
 * a display name ("John Q. Public"), which clients still send. */
#include "addr.h"

#include <arpa/inet.h>
#include <string.h>
#include <strings.h>

/* RFC 1035 2.3.4: a label is at most 63 octets. */
#define ADDR_MAX_LABEL 63
/* Longest text inside an address literal: "IPv6:" plus the longest IPv6
 * form, 45 octets (INET6_ADDRSTRLEN - 1). */
#define ADDR_MAX_LITERAL 50
/* Nested comments in a From: field deeper than this are refused. */
#define ADDR_MAX_COMMENT_DEPTH 8

static int addr_is_alpha(int c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static int addr_is_digit(int c)
{
    return c >= '0' && c <= '9';
}

/* RFC 5322 3.2.3 atext (shared by RFC 5321 Atom). */
static int addr_is_atext(int c)
{
    return addr_is_alpha(c) || addr_is_digit(c) ||
           (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

static int addr_lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c;
}

/* ---- RFC 5321 Mailbox ------------------------------------------------ */

/* Quoted-string = DQUOTE *QcontentSMTP DQUOTE. p points at the opening
 * quote; returns the octet after the closing one, or NULL. */
static const char *addr_scan_quoted(const char *p)
{
    for (p++;; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"')
            return p + 1;
        if (c == '\\') {
            /* quoted-pairSMTP = %d92 %d32-126 */
            unsigned char n = (unsigned char)p[1];
            if (n < 32 || n > 126)
                return NULL;
            p++;
        } else if (c < 32 || c > 126) {
            return NULL; /* also the end of the string */
        }
    }
}

/* Dot-string = Atom *("." Atom). Returns the end, or NULL if empty or a
 * dot is not followed by an atom. */
static const char *addr_scan_dot_string(const char *p)
{
    for (;;) {
        const char *start = p;
        while (addr_is_atext((unsigned char)*p))
            p++;
        if (p == start)
            return NULL;
        if (*p != '.')
            return p;
        p++;
    }
}

/* Domain = sub-domain *("." sub-domain); sub-domain = Let-dig [Ldh-str].
 * Returns the end, or NULL with a reason. */
static const char *addr_scan_domain(const char *p, const char **err_r)
{
    for (;;) {
        const char *start = p;
        if (!addr_is_alpha((unsigned char)*p) &&
            !addr_is_digit((unsigned char)*p)) {
            *err_r = "bad domain";
            return NULL;
        }
        while (addr_is_alpha((unsigned char)*p) ||
               addr_is_digit((unsigned char)*p) || *p == '-')
            p++;
        if (p[-1] == '-') {
            *err_r = "bad domain";
            return NULL;
        }
        if (p - start > ADDR_MAX_LABEL) {
            *err_r = "domain label too long";
            return NULL;
        }
        if (*p != '.')
            return p;
        p++;
    }
}

/* Checks the text between '[' and ']': IPv4-address-literal or
 * "IPv6:" IPv6-addr (RFC 5321 4.1.3). General-address-literal has no
 * registered tag besides IPv6 and is refused. */
static int addr_literal_ok(const char *s, size_t n)
{
    char buf[ADDR_MAX_LITERAL + 1];
    unsigned char bin[16];

    if (n > ADDR_MAX_LITERAL)
        return 0;
    memcpy(buf, s, n);
    buf[n] = '\0';
    if (n > 5 && strncasecmp(buf, "IPv6:", 5) == 0)
        return inet_pton(AF_INET6, buf + 5, bin) == 1;
    return inet_pton(AF_INET, buf, bin) == 1;
}

/* Mailbox = Local-part "@" ( Domain / address-literal ), starting at s.
 * Returns the end of the mailbox (the caller checks what follows), or NULL
 * with a reason. Checks the local part and domain lengths, not the total. */
static const char *addr_scan_mailbox(const char *s, const char **err_r)
{
    const char *p, *d;

    p = *s == '"' ? addr_scan_quoted(s) : addr_scan_dot_string(s);
    if (p == NULL) {
        *err_r = "bad local part";
        return NULL;
    }
    if (p - s > SG_MAX_LOCAL_PART) {
        *err_r = "local part too long";
        return NULL;
    }
    if (*p != '@') {
        *err_r = "missing '@' after local part";
        return NULL;
    }
    d = ++p;
    if (*p == '[') {
        const char *close = p + 1;
        while (*close != '\0' && *close != ']' &&
               close - p <= ADDR_MAX_LITERAL + 1)
            close++;
        if (*close != ']' || !addr_literal_ok(p + 1, (size_t)(close - p - 1))) {
            *err_r = "bad address literal";
            return NULL;
        }
        p = close + 1;
    } else {
        p = addr_scan_domain(p, err_r);
        if (p == NULL)
            return NULL;
    }
    if (p - d > SG_MAX_DOMAIN) {
        *err_r = "domain too long";
        return NULL;
    }
    return p;
}

/* A-d-l = At-domain *( "," At-domain ) ":" (RFC 5321 4.1.2); p points at
 * the first '@'. Returns the octet after ':', or NULL. */
static const char *addr_skip_route(const char *p, const char **err_r)
{
    for (;;) {
        const char *d = p + 1;
        p = addr_scan_domain(d, err_r);
        if (p == NULL)
            return NULL;
        if (p - d > SG_MAX_DOMAIN) {
            *err_r = "domain too long";
            return NULL;
        }
        if (*p == ':')
            return p + 1;
        if (p[0] != ',' || p[1] != '@') {
            *err_r = "bad source route";
            return NULL;
        }
        p++;
    }
}

int addr_parse_path(const char *arg, char *addr, const char **params_r,
                    const char **err_r)
{
    const char *p = arg, *mb, *end;

    addr[0] = '\0';
    /* RFC 5321 has no space after the colon; many clients send one. */
    while (*p == ' ')
        p++;
    if (*p != '<') {
        *err_r = "path must be in angle brackets";
        return -1;
    }
    p++;
    if (*p == '>') {
        end = p; /* null path, "<>" */
        mb = p;
    } else {
        if (*p == '@') {
            p = addr_skip_route(p, err_r);
            if (p == NULL)
                return -1;
        }
        mb = p;
        end = addr_scan_mailbox(mb, err_r);
        if (end == NULL)
            return -1;
        if (end - mb > SG_MAX_PATH) {
            *err_r = "path too long";
            return -1;
        }
        if (*end != '>') {
            *err_r = "bad path: expected '>' after address";
            return -1;
        }
    }
    p = end + 1;
    if (*p != '\0' && *p != ' ') {
        *err_r = "bad path: text after '>'";
        return -1;
    }
    while (*p == ' ')
        p++;
    memcpy(addr, mb, (size_t)(end - mb));
    addr[end - mb] = '\0';
    *params_r = p;
    return 0;
}

int addr_is_valid(const char *addr)
{
    const char *err;
    const char *end = addr_scan_mailbox(addr, &err);

    return end != NULL && *end == '\0' && end - addr <= SG_MAX_PATH;
}

const char *addr_domain(const char *addr)
{
    const char *at = strrchr(addr, '@');

    return at != NULL ? at + 1 : NULL;
}

void addr_domain_lower(const char *domain, char *out, size_t outlen)
{
    size_t i;

    if (outlen == 0)
        return;
    for (i = 0; domain[i] != '\0' && i + 1 < outlen; i++)
        out[i] = (char)addr_lower((unsigned char)domain[i]);
    out[i] = '\0';
}

int addr_equal(const char *a, const char *b)
{
    for (; *a != '\0' && *b != '\0'; a++, b++)
        if (addr_lower((unsigned char)*a) != addr_lower((unsigned char)*b))
            return 0;
    return *a == *b;
}

/* ---- RFC 5322 From: ------------------------------------------------- */

enum addr_tok_type {
    ADDR_TOK_END,
    ADDR_TOK_ATOM,    /* 1*atext (also encoded words, RFC 2047) */
    ADDR_TOK_QSTRING, /* "...", quotes included */
    ADDR_TOK_DLIT,    /* [...], brackets included */
    ADDR_TOK_SPECIAL, /* one of < > @ , ; : . */
};

struct addr_tok {
    enum addr_tok_type type;
    const char *start;
    size_t len;
    int space_before; /* CFWS came before this token */
};

struct addr_lexer {
    const char *p;
    const char *end;
};

/* At a CR: accepts CRLF followed by WSP (folding, RFC 5322 3.2.2) or CRLF
 * at the very end of the value. Advances past CRLF. 0 ok, -1 bad. */
static int addr_lex_crlf(struct addr_lexer *lx, const char **err_r)
{
    const char *p = lx->p;

    if (p + 1 >= lx->end || p[1] != '\n') {
        *err_r = "bare CR in header field";
        return -1;
    }
    p += 2;
    if (p < lx->end && *p != ' ' && *p != '\t') {
        *err_r = "line break not followed by white space";
        return -1;
    }
    lx->p = p;
    return 0;
}

/* Skips a comment, lx->p at '('. ccontent may nest (bounded). */
static int addr_lex_comment(struct addr_lexer *lx, const char **err_r)
{
    int depth = 0;

    while (lx->p < lx->end) {
        unsigned char c = (unsigned char)*lx->p;
        if (c == '\r') {
            if (addr_lex_crlf(lx, err_r) < 0)
                return -1;
            continue;
        }
        if (c == '(' && ++depth > ADDR_MAX_COMMENT_DEPTH) {
            *err_r = "comments nested too deep";
            return -1;
        }
        if (c == ')' && --depth == 0) {
            lx->p++;
            return 0;
        }
        if (c == '\\' && lx->p + 1 < lx->end)
            lx->p++;
        c = (unsigned char)*lx->p;
        if ((c < 32 && c != '\t') || c == 127) {
            *err_r = "control character in comment";
            return -1;
        }
        lx->p++;
    }
    *err_r = "unterminated comment";
    return -1;
}

/* Skips CFWS; sets *skipped if anything was skipped. */
static int addr_lex_cfws(struct addr_lexer *lx, int *skipped,
                         const char **err_r)
{
    *skipped = 0;
    while (lx->p < lx->end) {
        char c = *lx->p;
        if (c == ' ' || c == '\t') {
            lx->p++;
        } else if (c == '\r') {
            if (addr_lex_crlf(lx, err_r) < 0)
                return -1;
        } else if (c == '(') {
            if (addr_lex_comment(lx, err_r) < 0)
                return -1;
        } else {
            return 0;
        }
        *skipped = 1;
    }
    return 0;
}

/* Reads a quoted string or domain literal up to the closing octet, lx->p
 * at the opening one. Folding is allowed inside; controls are not. */
static int addr_lex_delimited(struct addr_lexer *lx, char close,
                              const char **err_r)
{
    lx->p++;
    while (lx->p < lx->end) {
        unsigned char c = (unsigned char)*lx->p;
        if (c == (unsigned char)close) {
            lx->p++;
            return 0;
        }
        if (c == '\r') {
            if (addr_lex_crlf(lx, err_r) < 0)
                return -1;
            continue;
        }
        if (c == '\\' || (close == ']' && c == '[')) {
            if (close == ']') {
                *err_r = "bad domain literal";
                return -1;
            }
            if (lx->p + 1 >= lx->end)
                break;
            c = (unsigned char)*++lx->p;
        }
        if ((c < 32 && c != '\t') || c == 127) {
            *err_r = "control character in quoted text";
            return -1;
        }
        lx->p++;
    }
    *err_r = close == '"' ? "unterminated quoted string"
                          : "unterminated domain literal";
    return -1;
}

/* Next token after CFWS. 0 ok (ADDR_TOK_END at the end), -1 bad. */
static int addr_lex_next(struct addr_lexer *lx, struct addr_tok *t,
                         const char **err_r)
{
    unsigned char c;

    if (addr_lex_cfws(lx, &t->space_before, err_r) < 0)
        return -1;
    t->start = lx->p;
    if (lx->p >= lx->end) {
        t->type = ADDR_TOK_END;
        t->len = 0;
        return 0;
    }
    c = (unsigned char)*lx->p;
    if (c == '"' || c == '[') {
        t->type = c == '"' ? ADDR_TOK_QSTRING : ADDR_TOK_DLIT;
        if (addr_lex_delimited(lx, c == '"' ? '"' : ']', err_r) < 0)
            return -1;
    } else if (c != '\0' && strchr("<>@,;:.", c) != NULL) {
        t->type = ADDR_TOK_SPECIAL;
        lx->p++;
    } else if (addr_is_atext(c) || c >= 0x80) {
        /* Octets >= 0x80: UTF-8 display names (RFC 6532); the address
         * itself is checked against the RFC 5321 syntax afterwards. */
        t->type = ADDR_TOK_ATOM;
        while (lx->p < lx->end && (addr_is_atext((unsigned char)*lx->p) ||
                                   (unsigned char)*lx->p >= 0x80))
            lx->p++;
    } else if (c == ')') {
        *err_r = "unbalanced ')'";
        return -1;
    } else {
        *err_r = "invalid character in address";
        return -1;
    }
    t->len = (size_t)(lx->p - t->start);
    return 0;
}

static int addr_tok_is(const struct addr_tok *t, char special)
{
    return t->type == ADDR_TOK_SPECIAL && *t->start == special;
}

/* The output buffer for the addr-spec being rebuilt without CFWS. */
struct addr_out {
    char *buf;
    size_t len;
};

static int addr_out_put(struct addr_out *o, const struct addr_tok *t,
                        const char **err_r)
{
    if (o->len + t->len > SG_MAX_PATH) {
        *err_r = "address too long";
        return -1;
    }
    memcpy(o->buf + o->len, t->start, t->len);
    o->len += t->len;
    o->buf[o->len] = '\0';
    return 0;
}

/* dot-atom-text (no CFWS inside, RFC 5322 3.2.3), first atom in *t.
 * Leaves the token after it in *t. */
static int addr_parse_dot_atom(struct addr_lexer *lx, struct addr_tok *t,
                               struct addr_out *o, const char **err_r)
{
    for (;;) {
        if (t->type != ADDR_TOK_ATOM) {
            *err_r = "bad address";
            return -1;
        }
        if (addr_out_put(o, t, err_r) < 0 || addr_lex_next(lx, t, err_r) < 0)
            return -1;
        if (!addr_tok_is(t, '.'))
            return 0;
        if (t->space_before) {
            *err_r = "white space inside address";
            return -1;
        }
        if (addr_out_put(o, t, err_r) < 0 || addr_lex_next(lx, t, err_r) < 0)
            return -1;
        if (t->space_before) {
            *err_r = "white space inside address";
            return -1;
        }
    }
}

/* The rebuilt addr-spec must also be an RFC 5321 Mailbox: it is compared
 * with envelope addresses and gives DKIM its d=. */
static int addr_spec_check(const char *a, const char **err_r)
{
    const char *p, *end;

    for (p = a; *p != '\0'; p++) {
        if ((unsigned char)*p >= 0x80) {
            *err_r = "non-ASCII address";
            return -1;
        }
    }
    end = addr_scan_mailbox(a, err_r);
    if (end == NULL)
        return -1;
    if (*end != '\0') {
        *err_r = "bad address";
        return -1;
    }
    return 0;
}

/* addr-spec = local-part "@" domain, first token in *t; leaves the token
 * after it in *t. */
static int addr_parse_spec(struct addr_lexer *lx, struct addr_tok *t,
                           struct addr_out *o, const char **err_r)
{
    if (t->type == ADDR_TOK_QSTRING) {
        if (addr_out_put(o, t, err_r) < 0 || addr_lex_next(lx, t, err_r) < 0)
            return -1;
    } else if (t->type == ADDR_TOK_ATOM) {
        if (addr_parse_dot_atom(lx, t, o, err_r) < 0)
            return -1;
    } else {
        *err_r = t->type == ADDR_TOK_END ? "missing address" : "bad address";
        return -1;
    }
    if (!addr_tok_is(t, '@')) {
        *err_r = "missing '@' in address";
        return -1;
    }
    if (addr_out_put(o, t, err_r) < 0 || addr_lex_next(lx, t, err_r) < 0)
        return -1;
    if (t->type == ADDR_TOK_DLIT) {
        if (addr_out_put(o, t, err_r) < 0 || addr_lex_next(lx, t, err_r) < 0)
            return -1;
    } else if (t->type == ADDR_TOK_ATOM) {
        if (addr_parse_dot_atom(lx, t, o, err_r) < 0)
            return -1;
    } else {
        *err_r = "missing domain";
        return -1;
    }
    return addr_spec_check(o->buf, err_r);
}

/* First pass: a top-level ',' means a list, ':' or ';' a group; both are
 * refused before the address is parsed. Also finds whether an angle
 * address follows and surfaces lexical errors. */
static int addr_from_scan(const char *value, size_t len, int *angle_r,
                          const char **err_r)
{
    struct addr_lexer lx = {value, value + len};
    struct addr_tok t;
    int any = 0;

    *angle_r = 0;
    for (;;) {
        if (addr_lex_next(&lx, &t, err_r) < 0)
            return -1;
        if (t.type == ADDR_TOK_END)
            break;
        any = 1;
        if (addr_tok_is(&t, ',')) {
            *err_r = "more than one mailbox";
            return -1;
        }
        if (addr_tok_is(&t, ':') || addr_tok_is(&t, ';')) {
            *err_r = "group syntax not allowed";
            return -1;
        }
        if (addr_tok_is(&t, '<'))
            *angle_r = 1;
    }
    if (!any) {
        *err_r = "empty From: field";
        return -1;
    }
    return 0;
}

int addr_parse_from(const char *value, size_t len, char *addr,
                    const char **err_r)
{
    struct addr_lexer lx = {value, value + len};
    struct addr_out o = {addr, 0};
    struct addr_tok t;
    int angle, words = 0;

    addr[0] = '\0';
    *err_r = NULL;
    if (addr_from_scan(value, len, &angle, err_r) < 0)
        return 0;
    if (addr_lex_next(&lx, &t, err_r) < 0)
        return 0;
    if (angle) {
        /* display-name = phrase = 1*word, '.' tolerated after a word. */
        while (t.type == ADDR_TOK_ATOM || t.type == ADDR_TOK_QSTRING ||
               (words > 0 && addr_tok_is(&t, '.'))) {
            words++;
            if (addr_lex_next(&lx, &t, err_r) < 0)
                return 0;
        }
        if (!addr_tok_is(&t, '<')) {
            *err_r = "bad display name";
            return 0;
        }
        if (addr_lex_next(&lx, &t, err_r) < 0 ||
            addr_parse_spec(&lx, &t, &o, err_r) < 0)
            goto fail;
        if (!addr_tok_is(&t, '>')) {
            *err_r = t.type == ADDR_TOK_END ? "unterminated angle address"
                                            : "bad angle address";
            goto fail;
        }
        if (addr_lex_next(&lx, &t, err_r) < 0)
            goto fail;
    } else if (addr_parse_spec(&lx, &t, &o, err_r) < 0) {
        goto fail;
    }
    if (t.type != ADDR_TOK_END) {
        *err_r = "unexpected text after address";
        goto fail;
    }
    return 1;
fail:
    addr[0] = '\0';
    return 0;
}
