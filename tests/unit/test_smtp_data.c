/* Unit tests for smtp_data. Each table case is fed whole, byte by byte, in
 * chunks of 3, and split in two at every position (so the end marker is
 * split everywhere); all must give the same result. Limit cases check
 * exactly the bound and one octet over it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../common/limits.h"
#include "../../server/smtp_data.h"
#include "testutil.h"

static const char *const err_names[] = {
    [SMTP_DATA_OK] = "OK",
    [SMTP_DATA_TOO_BIG] = "TOO_BIG",
    [SMTP_DATA_LINE_TOO_LONG] = "LINE_TOO_LONG",
    [SMTP_DATA_TOO_MANY_HEADERS] = "TOO_MANY_HEADERS",
    [SMTP_DATA_HEADER_TOO_BIG] = "HEADER_TOO_BIG",
    [SMTP_DATA_BAD_HEADER] = "BAD_HEADER",
    [SMTP_DATA_BAD_OCTET] = "BAD_OCTET",
};

/* Checks that the header array is consistent with the message: fields in
 * order, each followed by CRLF, name_len up to the first ':'. */
static void check_layout(const char *name, const struct smtp_data *d)
{
    size_t len, n, i, prev_end = 0;
    const char *msg = smtp_data_message(d, &len);
    const struct smtp_header *h = smtp_data_headers(d, &n);

    for (i = 0; i < n; i++) {
        const char *colon;

        if (h[i].off < prev_end || h[i].off + h[i].len + 2 > len ||
            memcmp(msg + h[i].off + h[i].len, "\r\n", 2) != 0) {
            print_error("%s: header %zu at %zu+%zu misplaced (len %zu)\n", name,
                        i, h[i].off, h[i].len, len);
            fail();
        }
        colon = memchr(msg + h[i].off, ':', h[i].len);
        assert_non_null(colon);
        check_size(name, "name_len", h[i].name_len,
                   (size_t)(colon - (msg + h[i].off)));
        prev_end = h[i].off + h[i].len + 2;
    }
    if (smtp_data_body_offset(d) > len || smtp_data_body_offset(d) < prev_end)
        check_size(name, "body offset", smtp_data_body_offset(d), len);
}

/* "err=.. rest=.." and, when OK, the message, fields and body. */
static char *describe(const struct smtp_data *d, size_t rest, int full)
{
    struct sb b = {0};
    size_t len, n, i;
    const char *msg = smtp_data_message(d, &len);
    const struct smtp_header *h = smtp_data_headers(d, &n);
    char tmp[64];

    snprintf(tmp, sizeof(tmp), "err=%s rest=%zu", err_names[smtp_data_error(d)],
             rest);
    sb_add(&b, tmp);
    if (!full)
        return b.s;
    sb_add(&b, "\nmsg=");
    sb_esc(&b, msg, len);
    sb_add(&b, "\nhdrs=");
    for (i = 0; i < n; i++) {
        sb_esc(&b, msg + h[i].off, h[i].len);
        sb_add(&b, "|");
    }
    sb_add(&b, "\nbody=");
    sb_esc(&b, msg + smtp_data_body_offset(d), len - smtp_data_body_offset(d));
    return b.s;
}

static char *describe_want(enum smtp_data_err err, size_t rest, const char *msg,
                           size_t msg_len, const char *hdrs, const char *body,
                           size_t body_len)
{
    struct sb b = {0};
    char tmp[64];

    snprintf(tmp, sizeof(tmp), "err=%s rest=%zu", err_names[err], rest);
    sb_add(&b, tmp);
    if (err != SMTP_DATA_OK || msg == NULL)
        return b.s; /* only the outcome is compared */
    sb_add(&b, "\nmsg=");
    sb_esc(&b, msg, msg_len);
    sb_add(&b, "\nhdrs=");
    sb_esc(&b, hdrs, strlen(hdrs));
    sb_add(&b, "\nbody=");
    sb_esc(&b, body, body_len);
    return b.s;
}

#define NO_SPLIT ((size_t)-1)

/* Feeds in[0..len) in chunks (0: whole) or in two parts at split, until
 * the end of data. Returns the octets not consumed. */
static size_t feed(const char *name, struct smtp_data *d, const char *in,
                   size_t len, size_t chunk, size_t split)
{
    size_t off = 0, used, n;
    int rc;

    while (off < len) {
        if (split != NO_SPLIT)
            n = off < split ? split - off : len - off;
        else
            n = chunk == 0 || len - off < chunk ? len - off : chunk;
        used = n + 1;
        rc = smtp_data_feed(d, in + off, n, &used);
        if (used > n || (rc == 0 && used != n)) {
            print_error("%s: rc %d used %zu of %zu\n", name, rc, used, n);
            fail();
        }
        off += used;
        if (rc == 1)
            return len - off;
    }
    print_error("%s: end of data not found\n", name);
    fail();
    return 0;
}

/* Runs all the feeding modes, each on a fresh reader, and compares the
 * description with want. */
static void run_modes(const char *name, size_t max_size, const char *in,
                      size_t len, int full, const char *want)
{
    static const struct {
        size_t chunk;
        const char *mode;
    } modes[] = {{0, "whole"}, {1, "byte by byte"}, {3, "chunks of 3"}};
    struct smtp_data *d = smtp_data_new(max_size);
    size_t i, rest;
    char mode[64];
    char *got;

    for (i = 0; i < sizeof(modes) / sizeof(modes[0]) + len + 1; i++) {
        smtp_data_reset(d);
        if (i < sizeof(modes) / sizeof(modes[0])) {
            rest = feed(name, d, in, len, modes[i].chunk, NO_SPLIT);
            snprintf(mode, sizeof(mode), "%s", modes[i].mode);
        } else {
            size_t split = i - sizeof(modes) / sizeof(modes[0]);

            if (len > 4096 && split > 0 && split < len)
                continue; /* long inputs: whole and byte by byte do */
            rest = feed(name, d, in, len, 0, split);
            snprintf(mode, sizeof(mode), "split at %zu", split);
        }
        if (smtp_data_error(d) == SMTP_DATA_OK)
            check_layout(name, d);
        got = describe(d, rest, full && smtp_data_error(d) == SMTP_DATA_OK);
        check_str(name, mode, got, want);
        free(got);
    }
    smtp_data_free(&d);
    assert_null(d);
}

struct data_case {
    const char *name;
    const char *in;
    size_t in_len; /* 0: strlen(in) */
    enum smtp_data_err err;
    size_t rest;      /* octets left after the end of data */
    const char *msg;  /* stored message */
    size_t msg_len;   /* 0: strlen(msg) */
    const char *hdrs; /* the fields, each followed by '|' */
    const char *body; /* from smtp_data_body_offset() on */
    size_t body_len;  /* 0: strlen(body) */
};

static const struct data_case data_cases[] = {
    {"simple", "From: a@example.org\r\nSubject: hi\r\n\r\nHello\r\n.\r\n", 0,
     SMTP_DATA_OK, 0, "From: a@example.org\r\nSubject: hi\r\n\r\nHello\r\n", 0,
     "From: a@example.org|Subject: hi|", "Hello\r\n", 0},
    {"next command not consumed", "Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n", 0,
     SMTP_DATA_OK, 6, "Subject: x\r\n\r\nbody\r\n", 0, "Subject: x|",
     "body\r\n", 0},
    {"dot-stuffing removed",
     "Subject: x\r\n\r\n..leading\r\n..\r\n.x\r\n...\r\n.\r\n", 0, SMTP_DATA_OK,
     0, "Subject: x\r\n\r\n.leading\r\n.\r\nx\r\n..\r\n", 0, "Subject: x|",
     ".leading\r\n.\r\nx\r\n..\r\n", 0},
    {"empty message", ".\r\n", 0, SMTP_DATA_OK, 0, "", 0, "", "", 0},
    {"dot LF first is no end", ".\nNOOP\r\n.\r\nQUIT\r\n", 0, SMTP_DATA_OK, 6,
     "\r\n.\r\nNOOP\r\n", 0, "", ".\r\nNOOP\r\n", 0},
    {"bare LF becomes CRLF", "Subject: x\n\nline1\nline2\r\n.\r\n", 0,
     SMTP_DATA_OK, 0, "Subject: x\r\n\r\nline1\r\nline2\r\n", 0, "Subject: x|",
     "line1\r\nline2\r\n", 0},
    {"LF dot LF is no end", "S: x\n\na\n.\nMAIL FROM:<x@y>\n\n.\nb\r\n.\r\n", 0,
     SMTP_DATA_OK, 0, "S: x\r\n\r\na\r\n.\r\nMAIL FROM:<x@y>\r\n\r\n.\r\nb\r\n",
     0, "S: x|", "a\r\n.\r\nMAIL FROM:<x@y>\r\n\r\n.\r\nb\r\n", 0},
    {"LF then dot CRLF is no end", "S: x\n\na\n.\r\nb\r\n.\r\n", 0,
     SMTP_DATA_OK, 0, "S: x\r\n\r\na\r\n.\r\nb\r\n", 0, "S: x|",
     "a\r\n.\r\nb\r\n", 0},
    {"CRLF then dot LF is no end", "S: x\r\n\r\na\r\n.\nQUIT\r\n.\r\n", 0,
     SMTP_DATA_OK, 0, "S: x\r\n\r\na\r\n.\r\nQUIT\r\n", 0, "S: x|",
     "a\r\n.\r\nQUIT\r\n", 0},
    {"bare CR in field refused", "Subject: a\rb\r\n\r\nx\r\n.\r\nQUIT\r\n", 0,
     SMTP_DATA_BAD_OCTET, 6, NULL, 0, NULL, NULL, 0},
    {"bare CR in body refused", "S: x\r\n\r\nx\ry\r\n.\r\n", 0,
     SMTP_DATA_BAD_OCTET, 0, NULL, 0, NULL, NULL, 0},
    {"CR CR LF refused", "S: x\r\n\r\nx\r\r\n.\r\n", 0, SMTP_DATA_BAD_OCTET, 0,
     NULL, 0, NULL, NULL, 0},
    {"CR dot CR is no end",
     "S: x\r\n\r\na\r.\rMAIL FROM:<x@y>\r\n.\r\nRSET\r\n", 0,
     SMTP_DATA_BAD_OCTET, 6, NULL, 0, NULL, NULL, 0},
    {"dot CR x refused", "S: x\r\n\r\n.\rx\r\n.\r\n", 0, SMTP_DATA_BAD_OCTET, 0,
     NULL, 0, NULL, NULL, 0},
    {"dot CR CR LF refused", "S: x\r\n\r\n.\r\r\n.\r\n", 0, SMTP_DATA_BAD_OCTET,
     0, NULL, 0, NULL, NULL, 0},
    {"folded fields",
     "Subject: one\r\n two\r\n\tthree\r\nFrom: a@b\r\nX-Empty:\r\n\r\n"
     "body\r\n.\r\n",
     0, SMTP_DATA_OK, 0,
     "Subject: one\r\n two\r\n\tthree\r\nFrom: a@b\r\nX-Empty:\r\n\r\n"
     "body\r\n",
     0, "Subject: one\r\n two\r\n\tthree|From: a@b|X-Empty:|", "body\r\n", 0},
    {"missing empty line inserted",
     "Subject: x\r\nThis is the body, yes\r\n.\r\n", 0, SMTP_DATA_OK, 0,
     "Subject: x\r\n\r\nThis is the body, yes\r\n", 0, "Subject: x|",
     "This is the body, yes\r\n", 0},
    /* A line with a colon is taken as a field, so its name must be valid. */
    {"body line with colon and no empty line",
     "Subject: x\r\nThis is the body: yes\r\n.\r\n", 0, SMTP_DATA_BAD_HEADER, 0,
     NULL, 0, NULL, NULL, 0},
    {"no header at all", "Hello world\r\n.\r\n", 0, SMTP_DATA_OK, 0,
     "\r\nHello world\r\n", 0, "", "Hello world\r\n", 0},
    {"empty line first", "\r\nSubject: no\r\n.\r\n", 0, SMTP_DATA_OK, 0,
     "\r\nSubject: no\r\n", 0, "", "Subject: no\r\n", 0},
    {"continuation without field", " x: y\r\nSubject: z\r\n.\r\n", 0,
     SMTP_DATA_OK, 0, "\r\n x: y\r\nSubject: z\r\n", 0, "",
     " x: y\r\nSubject: z\r\n", 0},
    {"headers only", "Subject: x\r\nTo: y\r\n.\r\n", 0, SMTP_DATA_OK, 0,
     "Subject: x\r\nTo: y\r\n", 0, "Subject: x|To: y|", "", 0},
    {"8-bit header and body", "Subject: caf\xc3\xa9\r\n\r\n\xff\r\n.\r\n", 0,
     SMTP_DATA_OK, 0, "Subject: caf\xc3\xa9\r\n\r\n\xff\r\n", 0,
     "Subject: caf\xc3\xa9|", "\xff\r\n", 0},
    {"NUL in body refused", "S: x\r\n\r\na\0b\r\n.\r\n", 16,
     SMTP_DATA_BAD_OCTET, 0, NULL, 0, NULL, NULL, 0},
    {"empty field name", ": x\r\n\r\n.\r\nQUIT\r\n", 0, SMTP_DATA_BAD_HEADER, 6,
     NULL, 0, NULL, NULL, 0},
    {"space before colon", "Subject : x\r\n\r\n.\r\n", 0, SMTP_DATA_BAD_HEADER,
     0, NULL, 0, NULL, NULL, 0},
    {"control in name", "Sub\tject: x\r\n\r\n.\r\n", 0, SMTP_DATA_BAD_HEADER, 0,
     NULL, 0, NULL, NULL, 0},
    {"NUL in field", "Subject: a\0b\r\n\r\nbody\r\n.\r\nQUIT\r\n", 31,
     SMTP_DATA_BAD_OCTET, 6, NULL, 0, NULL, NULL, 0},
    {"NUL in continuation", "Subject: a\r\n b\0\r\n\r\n.\r\n", 22,
     SMTP_DATA_BAD_OCTET, 0, NULL, 0, NULL, NULL, 0},
    {"bad field after bad field", "A: b\r\n: x\r\nC d\0: e\r\n\r\n.\r\n", 25,
     SMTP_DATA_BAD_HEADER, 0, NULL, 0, NULL, NULL, 0},
};

static void test_data_case(void **state)
{
    const struct data_case *c = &data_cases[(uintptr_t)*state];
    size_t len = c->in_len ? c->in_len : strlen(c->in);
    char *want;

    if (c->err == SMTP_DATA_OK)
        want = describe_want(
            c->err, c->rest, c->msg, c->msg_len ? c->msg_len : strlen(c->msg),
            c->hdrs, c->body, c->body_len ? c->body_len : strlen(c->body));
    else
        want = describe_want(c->err, c->rest, NULL, 0, NULL, NULL, 0);
    run_modes(c->name, SG_MIN_MESSAGE_SIZE, c->in, len, 1, want);
    free(want);
}

/* Builders for the limit cases: over = 0 builds an input exactly at the
 * bound, over = 1 one octet over it. */
static void build_body_line(struct sb *b, int over)
{
    sb_add(b, "Subject: x\r\n\r\n");
    sb_fill(b, 'x', 998 + (size_t)over);
    sb_add(b, "\r\n.\r\n");
}

static void build_header_line(struct sb *b, int over)
{
    sb_add(b, "Subject: ");
    sb_fill(b, 'x', 998 - 9 + (size_t)over);
    sb_add(b, "\r\n\r\nbody\r\n.\r\n");
}

static void build_stuffed_line(struct sb *b, int over)
{
    /* 999 octets on the wire, 998 once the dot is removed. */
    sb_add(b, "\r\n.");
    sb_fill(b, '.', 998 + (size_t)over);
    sb_add(b, "\r\n.\r\n");
}

static void build_lf_line(struct sb *b, int over)
{
    sb_add(b, "\n");
    sb_fill(b, 'x', 998 + (size_t)over);
    sb_add(b, "\n\r\n.\r\n");
}

static void build_header_count(struct sb *b, int over)
{
    size_t i;

    for (i = 0; i < SG_MAX_HEADER_COUNT + (size_t)over; i++)
        sb_add(b, "H: v\r\n");
    sb_add(b, "\r\nbody\r\n.\r\n");
}

/* A field of exactly total octets with its final CRLF, folded into lines
 * of about 900 octets. */
static void add_field(struct sb *b, const char *name, size_t total)
{
    size_t start = b->len, line;

    sb_add(b, name);
    sb_add(b, ": ");
    line = strlen(name) + 2;
    while (b->len - start + 2 < total) {
        if (line >= 900 && total - (b->len - start + 2) > 3) {
            sb_add(b, "\r\n ");
            line = 1;
        } else {
            sb_add(b, "a");
            line++;
        }
    }
    sb_add(b, "\r\n");
}

static void build_field_size(struct sb *b, int over)
{
    sb_add(b, "From: a@example.org\r\n");
    add_field(b, "X-Big", SG_MAX_HEADER_FIELD + 2 + (size_t)over);
    sb_add(b, "\r\nbody\r\n.\r\n");
}

static void build_section_size(struct sb *b, int over)
{
    size_t per = SG_MAX_HEADER_SECTION / 16, i;

    for (i = 0; i < 16; i++)
        add_field(b, "X-Fill", per + (i == 15 ? (size_t)over : 0));
    sb_add(b, "\r\nbody\r\n.\r\n");
}

/* A stored message of exactly SG_MIN_MESSAGE_SIZE (+ over) octets. */
static void build_message_size(struct sb *b, int over)
{
    size_t left = SG_MIN_MESSAGE_SIZE + (size_t)over;

    sb_add(b, "Subject: x\r\n\r\n..\r\n"); /* stored: 17 octets */
    left -= 17;
    while (left >= 502 + 3) {
        sb_fill(b, 'y', 500);
        sb_add(b, "\r\n");
        left -= 502;
    }
    sb_fill(b, 'y', left - 2);
    sb_add(b, "\r\n.\r\n");
}

/* The empty line inserted before a body counts toward the size. */
static void build_inserted_size(struct sb *b, int over)
{
    sb_add(b, "Subject: x\r\n");
    sb_fill(b, 'y', 998 - (size_t)(1 - over));
    sb_add(b, "\r\n.\r\n");
}

struct limit_case {
    const char *name;
    void (*build)(struct sb *b, int over);
    size_t max_size;
    enum smtp_data_err over_err;
    size_t nhdr; /* fields at the bound */
};

static const struct limit_case limit_cases[] = {
    {"body line 998", build_body_line, SG_MIN_MESSAGE_SIZE,
     SMTP_DATA_LINE_TOO_LONG, 1},
    {"header line 998", build_header_line, SG_MIN_MESSAGE_SIZE,
     SMTP_DATA_LINE_TOO_LONG, 1},
    {"dot-stuffed line 998", build_stuffed_line, SG_MIN_MESSAGE_SIZE,
     SMTP_DATA_LINE_TOO_LONG, 0},
    {"bare LF line 998", build_lf_line, SG_MIN_MESSAGE_SIZE,
     SMTP_DATA_LINE_TOO_LONG, 0},
    {"header count", build_header_count, SG_MIN_MESSAGE_SIZE,
     SMTP_DATA_TOO_MANY_HEADERS, SG_MAX_HEADER_COUNT},
    {"header field size", build_field_size, 4 * SG_MAX_HEADER_FIELD,
     SMTP_DATA_HEADER_TOO_BIG, 2},
    {"header section size", build_section_size, 2 * SG_MAX_HEADER_SECTION,
     SMTP_DATA_HEADER_TOO_BIG, 16},
    {"message size", build_message_size, SG_MIN_MESSAGE_SIZE, SMTP_DATA_TOO_BIG,
     1},
    {"message size with inserted empty line", build_inserted_size, 1013,
     SMTP_DATA_TOO_BIG, 1},
};

static void test_limit_case(void **state)
{
    const struct limit_case *c = &limit_cases[(uintptr_t)*state];
    int over;

    for (over = 0; over <= 1; over++) {
        struct sb in = {0};
        char *want;

        c->build(&in, over);
        sb_add(&in, "QUIT\r\n"); /* not consumed, error or not */
        want = describe_want(over ? c->over_err : SMTP_DATA_OK, 6, NULL, 0,
                             NULL, NULL, 0);
        run_modes(c->name, c->max_size, in.s, in.len, 0, want);
        free(want);
        if (!over) {
            struct smtp_data *d = smtp_data_new(c->max_size);
            size_t n, len;

            feed(c->name, d, in.s, in.len, 0, NO_SPLIT);
            smtp_data_headers(d, &n);
            check_size(c->name, "fields", n, c->nhdr);
            smtp_data_message(d, &len);
            if (c->build == build_message_size ||
                c->build == build_inserted_size)
                check_size(c->name, "stored size", len, c->max_size);
            smtp_data_free(&d);
        }
        free(in.s);
    }
}

/* A bound hit early: the rest is scanned (not stored) up to the end. */
static void test_error_then_end(void **state)
{
    struct sb in = {0};
    size_t i;

    (void)state;
    sb_add(&in, "Subject: x\r\n\r\n");
    for (i = 0; i < 200; i++) {
        sb_fill(&in, 'z', 1000);
        sb_add(&in, "\r\n");
    }
    sb_add(&in, ".\r\nMAIL FROM:<a@b>\r\n");
    run_modes("line too long early", SG_MIN_MESSAGE_SIZE, in.s, in.len, 0,
              "err=LINE_TOO_LONG rest=17");
    free(in.s);
}

static struct smtp_data *parse_msg(const char *in, size_t max_size)
{
    struct smtp_data *d = smtp_data_new(max_size);

    assert_int_equal(feed("parse_msg", d, in, strlen(in), 0, NO_SPLIT), 0);
    assert_int_equal(smtp_data_error(d), SMTP_DATA_OK);
    return d;
}

static void check_desc(const char *name, const struct smtp_data *d,
                       const char *msg, const char *hdrs, const char *body)
{
    char *got = describe(d, 0, 1);
    char *want = describe_want(SMTP_DATA_OK, 0, msg, strlen(msg), hdrs, body,
                               strlen(body));

    check_layout(name, d);
    check_str(name, "replace", got, want);
    free(got);
    free(want);
}

static void test_replace_header(void **state)
{
    static const char in[] = "From: a@x\r\nSubject: s\r\n two\r\nTo: t@y\r\n"
                             "\r\nbody\r\n.\r\n";
    struct smtp_data *d = parse_msg(in, SG_MIN_MESSAGE_SIZE);
    static const char from[] = "From: Alice Example <alice@example.org>";
    size_t len;

    (void)state;
    assert_int_equal(smtp_data_replace_header(d, 0, from, strlen(from)), 0);
    check_desc("longer first field", d,
               "From: Alice Example <alice@example.org>\r\nSubject: s\r\n"
               " two\r\nTo: t@y\r\n\r\nbody\r\n",
               "From: Alice Example <alice@example.org>|Subject: s\r\n two|"
               "To: t@y|",
               "body\r\n");
    assert_int_equal(smtp_data_replace_header(d, 1, "Subject:x", 9), 0);
    check_desc("shorter folded field", d,
               "From: Alice Example <alice@example.org>\r\nSubject:x\r\n"
               "To: t@y\r\n\r\nbody\r\n",
               "From: Alice Example <alice@example.org>|Subject:x|To: t@y|",
               "body\r\n");
    assert_int_equal(smtp_data_replace_header(d, 2, "To: <t@y>", 9), 0);
    check_desc("last field", d,
               "From: Alice Example <alice@example.org>\r\nSubject:x\r\n"
               "To: <t@y>\r\n\r\nbody\r\n",
               "From: Alice Example <alice@example.org>|Subject:x|To: <t@y>|",
               "body\r\n");
    /* Refused: no such field, no colon, empty name, NUL. */
    assert_int_equal(smtp_data_replace_header(d, 3, "X: y", 4), -1);
    assert_int_equal(smtp_data_replace_header(d, 0, "From", 4), -1);
    assert_int_equal(smtp_data_replace_header(d, 0, ": y", 3), -1);
    assert_int_equal(smtp_data_replace_header(d, 0, "X: \0", 4), -1);
    smtp_data_message(d, &len);
    check_size("refused replace", "length", len, 71);
    smtp_data_free(&d);
}

static void test_remove_header(void **state)
{
    static const char in[] = "From: a@x\r\nSender: s@y\r\n two\r\nTo: t@y\r\n"
                             "Resent-From: r@z\r\n\r\nbody\r\n.\r\n";
    struct smtp_data *d = parse_msg(in, SG_MIN_MESSAGE_SIZE);

    (void)state;
    assert_int_equal(smtp_data_remove_header(d, 3), 0);
    check_desc("last field", d,
               "From: a@x\r\nSender: s@y\r\n two\r\nTo: t@y\r\n\r\nbody\r\n",
               "From: a@x|Sender: s@y\r\n two|To: t@y|", "body\r\n");
    assert_int_equal(smtp_data_remove_header(d, 1), 0);
    check_desc("folded middle field", d, "From: a@x\r\nTo: t@y\r\n\r\nbody\r\n",
               "From: a@x|To: t@y|", "body\r\n");
    assert_int_equal(smtp_data_remove_header(d, 2), -1);
    assert_int_equal(smtp_data_remove_header(d, 0), 0);
    assert_int_equal(smtp_data_remove_header(d, 0), 0);
    check_desc("all fields", d, "\r\nbody\r\n", "", "body\r\n");
    assert_int_equal(smtp_data_remove_header(d, 0), -1);
    smtp_data_free(&d);
}

/* Near max_size a field may grow a little, not by much. */
static void test_replace_at_max(void **state)
{
    struct sb in = {0}, field = {0};
    struct smtp_data *d;
    size_t len;

    (void)state;
    build_message_size(&in, 0);
    d = parse_msg(in.s, SG_MIN_MESSAGE_SIZE);
    sb_add(&field, "Subject: ");
    sb_fill(&field, 'x', 200);
    assert_int_equal(smtp_data_replace_header(d, 0, field.s, field.len), 0);
    smtp_data_message(d, &len);
    check_size("replace at max", "length", len, SG_MIN_MESSAGE_SIZE + 199);
    sb_fill(&field, 'x', 4000);
    assert_int_equal(smtp_data_replace_header(d, 0, field.s, field.len), -1);
    smtp_data_free(&d);
    free(in.s);
    free(field.s);
}

static void test_steal_reset(void **state)
{
    static const char in1[] = "Subject: one\r\n\r\n1\r\n.\r\n";
    static const char in2[] = "Subject: two\r\n\r\n2\r\n.\r\n";
    struct smtp_data *d = parse_msg(in1, SG_MIN_MESSAGE_SIZE);
    size_t used = 99, len, n;
    char *msg;

    (void)state;
    /* After the end, nothing more is consumed. */
    assert_int_equal(smtp_data_feed(d, "x", 1, &used), 1);
    check_size("after end", "used", used, 0);
    msg = smtp_data_steal(d, &len);
    check_size("steal", "length", len, strlen(in1) - 3);
    assert_memory_equal(msg, in1, len);
    free(msg);
    smtp_data_message(d, &len);
    smtp_data_headers(d, &n);
    check_size("after steal", "length", len, 0);
    check_size("after steal", "fields", n, 0);
    /* A half-read message is forgotten by reset. */
    assert_int_equal(smtp_data_feed(d, "X: y\r\n", 6, &used), 0);
    assert_int_equal(smtp_data_feed(d, "", 0, &used), 0);
    check_size("empty feed", "used", used, 0);
    smtp_data_reset(d);
    assert_int_equal(feed("second", d, in2, strlen(in2), 0, NO_SPLIT), 0);
    check_desc("second message", d, "Subject: two\r\n\r\n2\r\n",
               "Subject: two|", "2\r\n");
    /* Stealing an empty message gives a buffer too. */
    smtp_data_reset(d);
    assert_int_equal(feed("empty", d, ".\r\n", 3, 0, NO_SPLIT), 0);
    msg = smtp_data_steal(d, &len);
    assert_non_null(msg);
    check_size("steal empty", "length", len, 0);
    free(msg);
    smtp_data_free(&d);
    smtp_data_free(&d);
}

static void test_error_replies(void **state)
{
    static const struct {
        enum smtp_data_err e;
        const char *want;
    } r[] = {
        {SMTP_DATA_TOO_BIG, "552 5.3.4 Message size exceeds fixed limit"},
        {SMTP_DATA_LINE_TOO_LONG,
         "552 5.3.4 Message line longer than 998 octets (RFC 5322 2.1.1)"},
        {SMTP_DATA_TOO_MANY_HEADERS, "552 5.3.4 Too many header fields"},
        {SMTP_DATA_HEADER_TOO_BIG, "552 5.3.4 Header section too big"},
        {SMTP_DATA_BAD_HEADER, "554 5.6.0 Malformed header field"},
        {SMTP_DATA_BAD_OCTET,
         "554 5.6.0 Message contains a NUL or a CR without LF"},
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(r) / sizeof(r[0]); i++)
        check_str(err_names[r[i].e], "reply", smtp_data_error_reply(r[i].e),
                  r[i].want);
    assert_null(smtp_data_error_reply(SMTP_DATA_OK));
}

#define N_DATA (sizeof(data_cases) / sizeof(data_cases[0]))
#define N_LIMIT (sizeof(limit_cases) / sizeof(limit_cases[0]))

int main(void)
{
    const struct CMUnitTest more[] = {
        cmocka_unit_test(test_error_then_end),
        cmocka_unit_test(test_replace_header),
        cmocka_unit_test(test_remove_header),
        cmocka_unit_test(test_replace_at_max),
        cmocka_unit_test(test_steal_reset),
        cmocka_unit_test(test_error_replies),
    };
    struct CMUnitTest tests[N_DATA + N_LIMIT + sizeof(more) / sizeof(more[0])];
    size_t n = 0, i;

    for (i = 0; i < N_DATA; i++) {
        struct CMUnitTest t = {data_cases[i].name, test_data_case, NULL, NULL,
                               (void *)(uintptr_t)i};
        tests[n++] = t;
    }
    for (i = 0; i < N_LIMIT; i++) {
        struct CMUnitTest t = {limit_cases[i].name, test_limit_case, NULL, NULL,
                               (void *)(uintptr_t)i};
        tests[n++] = t;
    }
    for (i = 0; i < sizeof(more) / sizeof(more[0]); i++)
        tests[n++] = more[i];
    return _cmocka_run_group_tests("smtp_data", tests, n, NULL, NULL);
}
