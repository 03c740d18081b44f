/* smtp_data: incremental reader of the DATA section. See smtp_data.h.
 *
 * Two layers. The octet layer (smtp_data_feed) is a state machine over the
 * stream: it removes dot-stuffing (RFC 5321 4.5.2), finds the end of data
 * and hands each line's content, then its end, to the line layer, which
 * stores the line with CRLF and splits the header section into fields.
 *
 * Decisions the RFCs leave to us, in one place:
 * - Line ends: CRLF, or a bare LF, which is stored as CRLF. A CR not
 *   followed by LF, and a NUL, are refused (SMTP_DATA_BAD_OCTET, RFC 5322
 *   2.3 and RFC 6152 allow neither): a later hop could take a bare CR for
 *   a line end ("<CR>.<CR>" smuggling, a header hidden in another), and
 *   no signature should cover octets that hops treat differently.
 * - End of data: only "<CRLF>.<CRLF>" (RFC 5321 4.1.1.4): a line of a
 *   single "." ended by CRLF, after a line ended by CRLF (or first in the
 *   data). Every other form ("<LF>.<LF>", "<CRLF>.<LF>", "<LF>.<CRLF>")
 *   is the material of SMTP smuggling — a hop before us may have passed it
 *   on as content — and is kept as a line "." (which the relay sends on
 *   dot-stuffed, as content).
 * - Header section: a field starts with a line that is not blank and has a
 *   ':'; its name (the octets before the first ':') must be non-empty
 *   printable ASCII (RFC 5322 2.2: %d33-126 without ':'; the obsolete space
 *   before the colon is refused), else SMTP_DATA_BAD_HEADER. A line
 *   starting with SP or HTAB continues the previous field (RFC 5322
 *   2.2.3). A NUL anywhere in a field is SMTP_DATA_BAD_HEADER.
 * - Missing empty line: the first line that has no ':' and is not a
 *   continuation (or a continuation with no field before it) ends the
 *   header section and is the first body line, as many MTAs do. The empty
 *   line the client left out is then inserted in the stored message (it
 *   counts toward max_size), so that the stored message is always "header
 *   fields, empty line, body" and smtp_data_body_offset() points at the
 *   body. A message that starts with such a line has no header field.
 * - Bounds: every line at most SG_MAX_TEXT_LINE octets with CRLF after
 *   unstuffing; the stored message at most max_size; one field (with its
 *   folds, without its final CRLF) at most SG_MAX_HEADER_FIELD; the fields
 *   with their CRLFs (without the empty line) at most
 *   SG_MAX_HEADER_SECTION; at most SG_MAX_HEADER_COUNT fields. The first
 *   bound hit is recorded, storing stops and the octet layer only looks
 *   for the end of data. */
#include "smtp_data.h"

#include <stdlib.h>
#include <string.h>

#include "../common/limits.h"
#include "../common/xalloc.h"

/* First allocation of the message buffer; it then doubles. */
#define SMTP_DATA_INIT_CAP 8192
/* First allocation of the header array; it then doubles. */
#define SMTP_DATA_INIT_HEADERS 32
/* Room beyond max_size that smtp_data_replace_header() may use, so that
 * rewriting From: in a message of exactly max_size still works. */
#define SMTP_DATA_SLACK 1024
/* Content octets of one line: SG_MAX_TEXT_LINE less the CRLF. */
#define SMTP_DATA_MAX_CONTENT ((size_t)SG_MAX_TEXT_LINE - 2)
/* The header bounds as size_t, for comparisons with offsets. */
#define SMTP_DATA_MAX_FIELD ((size_t)SG_MAX_HEADER_FIELD)
#define SMTP_DATA_MAX_SECTION ((size_t)SG_MAX_HEADER_SECTION)

enum smtp_data_state {
    SMTP_DATA_S_LINE_START, /* before the first octet of a line */
    SMTP_DATA_S_DOT,        /* "." at line start */
    SMTP_DATA_S_DOT_CR,     /* ".<CR>" at line start */
    SMTP_DATA_S_IN_LINE,    /* inside a line */
    SMTP_DATA_S_CR,         /* CR inside a line */
    SMTP_DATA_S_END,        /* end of data seen */
};

enum smtp_data_phase {
    SMTP_DATA_P_HEADER,
    SMTP_DATA_P_BODY,
};

/* How the previous line ended, for the end-of-data rule. */
enum smtp_data_eol {
    SMTP_DATA_EOL_NONE, /* no line yet */
    SMTP_DATA_EOL_CRLF,
    SMTP_DATA_EOL_LF,
};

struct smtp_data {
    size_t max_size;
    char *msg; /* owned, NULL until the first octet is stored */
    size_t msg_len;
    size_t msg_cap;
    struct smtp_header *hdr; /* owned */
    size_t nhdr;
    size_t hdr_cap;
    size_t body_off;
    size_t line_off; /* where the current line starts in msg */
    size_t line_len; /* its content octets so far, unstuffed */
    enum smtp_data_state state;
    enum smtp_data_phase phase;
    enum smtp_data_eol eol;
    enum smtp_data_err err;
};

static int smtp_data_is_name_char(unsigned char c)
{
    return c >= 33 && c <= 126 && c != ':';
}

/* 1 if s[0..n) is "name:..." with a valid name, its length in *name_r. */
static int smtp_data_field_name(const char *s, size_t n, size_t *name_r)
{
    const char *colon = memchr(s, ':', n);
    size_t i;

    if (colon == NULL || colon == s)
        return 0;
    for (i = 0; s + i < colon; i++) {
        if (!smtp_data_is_name_char((unsigned char)s[i]))
            return 0;
    }
    *name_r = i;
    return 1;
}

static void smtp_data_fail(struct smtp_data *d, enum smtp_data_err e)
{
    if (d->err == SMTP_DATA_OK)
        d->err = e;
}

/* Makes room for need octets; the caller has checked need against
 * max_size (+ SMTP_DATA_SLACK), so that growth stays bounded. */
static void smtp_data_reserve(struct smtp_data *d, size_t need)
{
    size_t limit = d->max_size + SMTP_DATA_SLACK;
    size_t cap = d->msg_cap > 0 ? d->msg_cap : SMTP_DATA_INIT_CAP;

    if (need <= d->msg_cap)
        return;
    while (cap < need)
        cap *= 2;
    if (cap > limit)
        cap = limit;
    d->msg = xrealloc(d->msg, cap);
    d->msg_cap = cap;
}

struct smtp_data *smtp_data_new(size_t max_size)
{
    struct smtp_data *d = xcalloc(1, sizeof(*d));

    d->max_size = max_size;
    smtp_data_reset(d);
    return d;
}

void smtp_data_free(struct smtp_data **dp)
{
    struct smtp_data *d = *dp;

    if (d == NULL)
        return;
    free(d->msg);
    free(d->hdr);
    free(d);
    *dp = NULL;
}

void smtp_data_reset(struct smtp_data *d)
{
    size_t max_size = d->max_size;

    /* A big message's buffer is not kept for the next one. */
    free(d->msg);
    free(d->hdr);
    memset(d, 0, sizeof(*d));
    d->max_size = max_size;
    d->state = SMTP_DATA_S_LINE_START;
    d->phase = SMTP_DATA_P_HEADER;
    d->eol = SMTP_DATA_EOL_NONE;
    d->err = SMTP_DATA_OK;
}

/* Appends content octets s[0..n) to the current line, or records the
 * first bound they break. */
static void smtp_data_put(struct smtp_data *d, const char *s, size_t n)
{
    size_t line_room = SMTP_DATA_MAX_CONTENT - d->line_len;
    size_t size_room = d->max_size - d->msg_len;

    if (d->err != SMTP_DATA_OK || n == 0)
        return;
    if (n > line_room || n > size_room) {
        /* The octet that breaks a bound first decides which. */
        smtp_data_fail(d, line_room <= size_room ? SMTP_DATA_LINE_TOO_LONG
                                                 : SMTP_DATA_TOO_BIG);
        return;
    }
    smtp_data_reserve(d, d->msg_len + n);
    memcpy(d->msg + d->msg_len, s, n);
    d->msg_len += n;
    d->line_len += n;
}

/* The header section ends before the current line, which had to be a
 * field: insert the missing empty line, the current line is the body's
 * first. */
static void smtp_data_body_starts(struct smtp_data *d)
{
    char *line;

    if (d->max_size - d->msg_len < 2) {
        smtp_data_fail(d, SMTP_DATA_TOO_BIG);
        return;
    }
    smtp_data_reserve(d, d->msg_len + 2);
    line = d->msg + d->line_off;
    memmove(line + 2, line, d->line_len);
    line[0] = '\r';
    line[1] = '\n';
    d->msg_len += 2;
    d->line_off += 2;
    d->body_off = d->line_off;
    d->phase = SMTP_DATA_P_BODY;
}

static void smtp_data_add_field(struct smtp_data *d, size_t name_len)
{
    struct smtp_header *h;

    if (d->nhdr == SG_MAX_HEADER_COUNT) {
        smtp_data_fail(d, SMTP_DATA_TOO_MANY_HEADERS);
        return;
    }
    if (d->nhdr == d->hdr_cap) {
        d->hdr_cap = d->hdr_cap > 0 ? d->hdr_cap * 2 : SMTP_DATA_INIT_HEADERS;
        if (d->hdr_cap > SG_MAX_HEADER_COUNT)
            d->hdr_cap = SG_MAX_HEADER_COUNT;
        d->hdr = xrealloc(d->hdr, d->hdr_cap * sizeof(*d->hdr));
    }
    h = &d->hdr[d->nhdr++];
    h->off = d->line_off;
    h->len = d->line_len;
    h->name_len = name_len;
}

/* A complete line of the header section (its content is stored, its CRLF
 * not yet): classify it as field, continuation, empty line or first body
 * line. */
static void smtp_data_header_line(struct smtp_data *d)
{
    size_t n = d->line_len;
    const char *l;
    size_t name_len;
    struct smtp_header *h;

    if (n == 0) {
        d->phase = SMTP_DATA_P_BODY;
        d->body_off = d->line_off + 2;
        return;
    }
    l = d->msg + d->line_off; /* n > 0: the line is stored */
    if ((l[0] == ' ' || l[0] == '\t') && d->nhdr > 0) {
        h = &d->hdr[d->nhdr - 1];
        if (memchr(l, '\0', n) != NULL)
            smtp_data_fail(d, SMTP_DATA_BAD_HEADER);
        else if (d->line_off + n - h->off > SMTP_DATA_MAX_FIELD)
            smtp_data_fail(d, SMTP_DATA_HEADER_TOO_BIG);
        else
            h->len = d->line_off + n - h->off;
        return;
    }
    if (l[0] == ' ' || l[0] == '\t' || memchr(l, ':', n) == NULL) {
        smtp_data_body_starts(d);
        return;
    }
    if (!smtp_data_field_name(l, n, &name_len) || memchr(l, '\0', n) != NULL) {
        smtp_data_fail(d, SMTP_DATA_BAD_HEADER);
        return;
    }
    smtp_data_add_field(d, name_len);
}

/* The current line ended (CRLF or bare LF): check it, store its CRLF. */
static void smtp_data_end_line(struct smtp_data *d)
{
    if (d->err == SMTP_DATA_OK && d->phase == SMTP_DATA_P_HEADER)
        smtp_data_header_line(d);
    if (d->err == SMTP_DATA_OK) {
        if (d->max_size - d->msg_len < 2) {
            smtp_data_fail(d, SMTP_DATA_TOO_BIG);
        } else {
            smtp_data_reserve(d, d->msg_len + 2);
            memcpy(d->msg + d->msg_len, "\r\n", 2);
            d->msg_len += 2;
        }
    }
    /* Header fields start at offset 0, so the section so far is msg_len. */
    if (d->err == SMTP_DATA_OK && d->phase == SMTP_DATA_P_HEADER &&
        d->msg_len > SMTP_DATA_MAX_SECTION)
        smtp_data_fail(d, SMTP_DATA_HEADER_TOO_BIG);
    d->line_off = d->msg_len;
    d->line_len = 0;
}

/* Ends a line whose end was looked at by the octet layer. */
static void smtp_data_eol(struct smtp_data *d, enum smtp_data_eol eol)
{
    smtp_data_end_line(d);
    d->eol = eol;
    d->state = SMTP_DATA_S_LINE_START;
}

/* A "." line ended with eol: either the end of data, or a line ".". */
static void smtp_data_dot_line(struct smtp_data *d, enum smtp_data_eol eol)
{
    if (eol == SMTP_DATA_EOL_CRLF && d->eol != SMTP_DATA_EOL_LF) {
        if (d->phase == SMTP_DATA_P_HEADER)
            d->body_off = d->msg_len;
        d->state = SMTP_DATA_S_END;
        return;
    }
    smtp_data_put(d, ".", 1);
    smtp_data_eol(d, eol);
}

/* In a line: stores the octets up to the next CR or LF at once. Returns
 * how many were taken (at least one unless buf[0] is CR or LF). */
static size_t smtp_data_span(struct smtp_data *d, const char *s, size_t n)
{
    const char *lf = memchr(s, '\n', n);
    size_t upto = lf != NULL ? (size_t)(lf - s) : n;
    const char *cr = memchr(s, '\r', upto);

    if (cr != NULL)
        upto = (size_t)(cr - s);
    if (memchr(s, '\0', upto) != NULL)
        smtp_data_fail(d, SMTP_DATA_BAD_OCTET);
    smtp_data_put(d, s, upto);
    return upto;
}

/* One step of the octet layer on c = buf[0]: returns the octets consumed
 * (0 when the state changed and c must be looked at again; the next step
 * then consumes it). */
static size_t smtp_data_step(struct smtp_data *d, const char *buf, size_t n)
{
    char c = buf[0];

    switch (d->state) {
    case SMTP_DATA_S_LINE_START:
        d->state = c == '.' ? SMTP_DATA_S_DOT : SMTP_DATA_S_IN_LINE;
        return c == '.' ? 1 : 0;
    case SMTP_DATA_S_DOT:
        if (c == '\r')
            d->state = SMTP_DATA_S_DOT_CR;
        else if (c == '\n')
            smtp_data_dot_line(d, SMTP_DATA_EOL_LF);
        else /* dot-stuffing: the leading dot goes, c is content */
            d->state = SMTP_DATA_S_IN_LINE;
        return c == '\r' || c == '\n' ? 1 : 0;
    case SMTP_DATA_S_DOT_CR:
        if (c == '\n') {
            smtp_data_dot_line(d, SMTP_DATA_EOL_CRLF);
            return 1;
        }
        smtp_data_fail(d, SMTP_DATA_BAD_OCTET); /* ".<CR>x" */
        d->state = SMTP_DATA_S_IN_LINE;
        return 0;
    case SMTP_DATA_S_IN_LINE:
        if (c == '\r')
            d->state = SMTP_DATA_S_CR;
        else if (c == '\n')
            smtp_data_eol(d, SMTP_DATA_EOL_LF);
        else
            return smtp_data_span(d, buf, n);
        return 1;
    case SMTP_DATA_S_CR:
        if (c == '\n') {
            smtp_data_eol(d, SMTP_DATA_EOL_CRLF);
            return 1;
        }
        smtp_data_fail(d, SMTP_DATA_BAD_OCTET); /* a bare CR */
        d->state = SMTP_DATA_S_IN_LINE;
        return 0;
    case SMTP_DATA_S_END:
        break;
    }
    return 0;
}

int smtp_data_feed(struct smtp_data *d, const char *buf, size_t len,
                   size_t *used_r)
{
    size_t off = 0;

    while (off < len && d->state != SMTP_DATA_S_END)
        off += smtp_data_step(d, buf + off, len - off);
    *used_r = off;
    return d->state == SMTP_DATA_S_END;
}

enum smtp_data_err smtp_data_error(const struct smtp_data *d)
{
    return d->err;
}

const char *smtp_data_error_reply(enum smtp_data_err e)
{
    switch (e) {
    case SMTP_DATA_OK:
        break;
    case SMTP_DATA_TOO_BIG:
        return "552 5.3.4 Message size exceeds fixed limit";
    case SMTP_DATA_LINE_TOO_LONG:
        return "552 5.3.4 Message line longer than 998 octets "
               "(RFC 5322 2.1.1)";
    case SMTP_DATA_TOO_MANY_HEADERS:
        return "552 5.3.4 Too many header fields";
    case SMTP_DATA_HEADER_TOO_BIG:
        return "552 5.3.4 Header section too big";
    case SMTP_DATA_BAD_HEADER:
        return "554 5.6.0 Malformed header field";
    case SMTP_DATA_BAD_OCTET:
        return "554 5.6.0 Message contains a NUL or a CR without LF";
    }
    return NULL;
}

const char *smtp_data_message(const struct smtp_data *d, size_t *len_r)
{
    *len_r = d->msg_len;
    return d->msg != NULL ? d->msg : "";
}

const struct smtp_header *smtp_data_headers(const struct smtp_data *d,
                                            size_t *n_r)
{
    *n_r = d->nhdr;
    return d->hdr;
}

size_t smtp_data_body_offset(const struct smtp_data *d)
{
    return d->body_off;
}

char *smtp_data_steal(struct smtp_data *d, size_t *len_r)
{
    char *msg = d->msg != NULL ? d->msg : xmalloc(1);

    *len_r = d->msg_len;
    d->msg = NULL;
    smtp_data_reset(d);
    return msg;
}

int smtp_data_remove_header(struct smtp_data *d, size_t i)
{
    struct smtp_header *h;
    size_t start, cut, j;

    if (d->state != SMTP_DATA_S_END || d->err != SMTP_DATA_OK || i >= d->nhdr)
        return -1;
    h = &d->hdr[i];
    start = h->off;
    cut = h->len + 2; /* with its CRLF */
    memmove(d->msg + start, d->msg + start + cut, d->msg_len - start - cut);
    d->msg_len -= cut;
    d->body_off -= cut;
    for (j = i + 1; j < d->nhdr; j++) {
        d->hdr[j - 1] = d->hdr[j];
        d->hdr[j - 1].off -= cut;
    }
    d->nhdr--;
    return 0;
}

int smtp_data_replace_header(struct smtp_data *d, size_t i,
                             const char *new_field, size_t len)
{
    struct smtp_header *h;
    size_t name_len, old_end, new_len, j;

    if (d->state != SMTP_DATA_S_END || d->err != SMTP_DATA_OK || i >= d->nhdr ||
        len > SMTP_DATA_MAX_FIELD ||
        !smtp_data_field_name(new_field, len, &name_len) ||
        memchr(new_field, '\0', len) != NULL)
        return -1;
    h = &d->hdr[i];
    old_end = h->off + h->len;
    new_len = d->msg_len - h->len + len;
    if (new_len > d->max_size + SMTP_DATA_SLACK)
        return -1;
    smtp_data_reserve(d, new_len);
    memmove(d->msg + h->off + len, d->msg + old_end, d->msg_len - old_end);
    memcpy(d->msg + h->off, new_field, len);
    for (j = i + 1; j < d->nhdr; j++)
        d->hdr[j].off = d->hdr[j].off - h->len + len;
    d->body_off = d->body_off - h->len + len;
    d->msg_len = new_len;
    h->len = len;
    h->name_len = name_len;
    return 0;
}
