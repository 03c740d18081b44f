/* Helpers shared by the unit tests: a growing string for results and built
 * inputs, and got/want checks that print what differs before failing.
 * Everything is static inline, so a test uses what it needs. Include after
 * <cmocka.h>. */
#ifndef SUBGATE_TESTUTIL_H
#define SUBGATE_TESTUTIL_H

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* got == want, else fails naming what; a NULL got fails too. */
#define CHECK_STR(got, want, what)                                             \
    do {                                                                       \
        const char *g_ = (got), *w_ = (want);                                  \
        if (g_ == NULL || strcmp(g_, w_) != 0)                                 \
            fail_msg("%s: got \"%s\", want \"%s\"", (what),                    \
                     g_ ? g_ : "(null)", w_);                                  \
    } while (0)
#define CHECK_INT(got, want, what)                                             \
    do {                                                                       \
        long long g_ = (long long)(got), w_ = (long long)(want);               \
        if (g_ != w_)                                                          \
            fail_msg("%s: got %lld, want %lld", (what), g_, w_);               \
    } while (0)

/* snprintf into a PATH_MAX buffer; a test fails rather than truncate. */
static inline void pathf(char *out, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static inline void pathf(char *out, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(out, PATH_MAX, fmt, ap);
    va_end(ap);
    if (n < 0 || n >= PATH_MAX)
        fail_msg("path too long: %s", out);
}

/* A growing string; all zero is empty. */
struct sb {
    char *s;
    size_t len;
    size_t cap;
};

static inline void sb_addn(struct sb *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->s = realloc(b->s, b->cap);
        assert_non_null(b->s);
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static inline void sb_add(struct sb *b, const char *s)
{
    sb_addn(b, s, strlen(s));
}

static inline void sb_fill(struct sb *b, char c, size_t n)
{
    while (n-- > 0)
        sb_addn(b, &c, 1);
}

/* Appends s[0..n) with CR, LF, NUL and other controls made visible. */
static inline void sb_esc(struct sb *b, const char *s, size_t n)
{
    char tmp[8];
    size_t i;

    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c == '\r')
            sb_add(b, "\\r");
        else if (c == '\n')
            sb_add(b, "\\n");
        else if (c < 32 || c == 127) {
            snprintf(tmp, sizeof(tmp), "\\x%02x", c);
            sb_add(b, tmp);
        } else
            sb_addn(b, s + i, 1);
    }
}

static inline void sb_free(struct sb *b)
{
    free(b->s);
    memset(b, 0, sizeof(*b));
}

/* Prints got and want; long strings only around the first difference. */
static inline void check_str(const char *name, const char *mode,
                             const char *got, const char *want)
{
    size_t i = 0, from;

    if (strcmp(got, want) == 0)
        return;
    while (got[i] != '\0' && got[i] == want[i])
        i++;
    from = i > 40 ? i - 40 : 0;
    print_error("%s (%s): first difference at octet %zu\n"
                "  got:  %s%.120s\n  want: %s%.120s\n",
                name, mode, i, from ? "..." : "", got + from, from ? "..." : "",
                want + from);
    fail();
}

static inline void check_size(const char *name, const char *what, size_t got,
                              size_t want)
{
    if (got != want) {
        print_error("%s: %s: got %zu, want %zu\n", name, what, got, want);
        fail();
    }
}

#endif
