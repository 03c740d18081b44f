/* Unit tests for smtp_auth: base64 (RFC 4648 10 vectors and malformed
 * input), PLAIN (RFC 4616 4 examples, missing NULs, field bounds) and
 * LOGIN. The decoders are not incremental, so each case runs whole; the
 * bounds are checked exactly at the limit and one octet over it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../server/smtp_auth.h"

static void check_long(const char *name, const char *what, long got, long want)
{
    if (got != want) {
        print_error("%s: %s: got %ld, want %ld\n", name, what, got, want);
        fail();
    }
}

static void check_str(const char *name, const char *what, const char *got,
                      const char *want)
{
    if (strcmp(got, want) != 0) {
        print_error("%s: %s:\n  got:  \"%s\"\n  want: \"%s\"\n", name, what,
                    got, want);
        fail();
    }
}

static void check_mem(const char *name, const unsigned char *got,
                      const char *want, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        if (got[i] != (unsigned char)want[i]) {
            print_error("%s: octet %zu: got 0x%02x, want 0x%02x\n", name, i,
                        got[i], (unsigned char)want[i]);
            fail();
        }
    }
}

/* 1 if the n octets at p all equal v. */
static int all_equal(const void *p, size_t n, unsigned char v)
{
    const unsigned char *s = p;
    size_t i;

    for (i = 0; i < n; i++) {
        if (s[i] != v)
            return 0;
    }
    return 1;
}

static int all_zero(const void *p, size_t n)
{
    return all_equal(p, n, 0);
}

struct b64_case {
    const char *name;
    const char *in;
    long want;       /* decoded length or -1 */
    const char *out; /* decoded octets when want >= 0 */
};

static const struct b64_case b64_cases[] = {
    {"empty", "", 0, ""},
    {"equals alone (RFC 4954 empty response)", "=", 0, ""},
    {"f", "Zg==", 1, "f"},
    {"fo", "Zm8=", 2, "fo"},
    {"foo", "Zm9v", 3, "foo"},
    {"foob", "Zm9vYg==", 4, "foob"},
    {"fooba", "Zm9vYmE=", 5, "fooba"},
    {"foobar", "Zm9vYmFy", 6, "foobar"},
    {"plus and slash", "+/+/", 3, "\xfb\xff\xbf"},
    {"NUL octets", "AAAA", 3, "\0\0\0"},
    {"padding missing", "Zg", -1, NULL},
    {"one pad short", "Zg=", -1, NULL},
    {"bad length", "Zm9vY", -1, NULL},
    {"three pads", "Z===", -1, NULL},
    {"only pads", "====", -1, NULL},
    {"two equals", "==", -1, NULL},
    {"too much padding", "Zm9v====", -1, NULL},
    {"pad in the middle", "Zg==Zg==", -1, NULL},
    {"pad then data", "Zm=v", -1, NULL},
    {"leftover bits after ==", "Zh==", -1, NULL},
    {"leftover bits after =", "Zm9=", -1, NULL},
    {"space", "Zm9v Zm9v", -1, NULL},
    {"trailing CRLF", "Zm9v\r\n", -1, NULL},
    {"bad character", "Zm9*", -1, NULL},
    {"url-safe alphabet", "-_-_", -1, NULL},
    {"8-bit octet", "Zm9\xc3", -1, NULL},
};

static void test_b64_case(void **state)
{
    const struct b64_case *c = &b64_cases[(uintptr_t)*state];
    unsigned char out[64];
    char enc[64];
    long n;

    memset(out, 0xaa, sizeof(out));
    n = smtp_auth_b64_decode(c->in, strlen(c->in), out, sizeof(out));
    check_long(c->name, "decoded length", n, c->want);
    if (n < 0) {
        check_long(c->name, "output untouched",
                   all_equal(out, sizeof(out), 0xaa), 1);
        return;
    }
    check_mem(c->name, out, c->out, (size_t)n);
    /* Exactly the decoded size is enough, one less is not. */
    check_long(c->name, "exact outcap",
               smtp_auth_b64_decode(c->in, strlen(c->in), out, (size_t)n), n);
    if (n > 0)
        check_long(
            c->name, "outcap one short",
            smtp_auth_b64_decode(c->in, strlen(c->in), out, (size_t)n - 1), -1);
    /* Canonical inputs encode back to themselves ("=" is the exception). */
    if (strcmp(c->in, "=") != 0) {
        check_long(c->name, "encoded length",
                   smtp_auth_b64_encode(out, (size_t)n, enc, sizeof(enc)),
                   (long)strlen(c->in));
        check_str(c->name, "encoded", enc, c->in);
    }
}

static void test_b64_encode_bounds(void **state)
{
    char enc[9];

    (void)state;
    /* "foobar" needs 8 octets and the NUL. */
    check_long("encode", "fits",
               smtp_auth_b64_encode((const unsigned char *)"foobar", 6, enc, 9),
               8);
    check_str("encode", "text", enc, "Zm9vYmFy");
    check_long("encode", "one short",
               smtp_auth_b64_encode((const unsigned char *)"foobar", 6, enc, 8),
               -1);
    check_long("encode", "empty",
               smtp_auth_b64_encode((const unsigned char *)"", 0, enc, 1), 0);
    check_str("encode", "empty text", enc, "");
}

/* Every octet value and every length modulo 3 survive a round trip. */
static void test_b64_round_trip(void **state)
{
    unsigned char raw[256], back[256];
    char enc[400];
    size_t len, i;

    (void)state;
    for (i = 0; i < sizeof(raw); i++)
        raw[i] = (unsigned char)i;
    for (len = 0; len <= sizeof(raw); len++) {
        long e = smtp_auth_b64_encode(raw, len, enc, sizeof(enc));
        long d;

        check_long("round trip", "encoded length", e,
                   (long)((len + 2) / 3 * 4));
        d = smtp_auth_b64_decode(enc, (size_t)e, back, sizeof(back));
        check_long("round trip", "decoded length", d, (long)len);
        check_mem("round trip", back, (const char *)raw, len);
    }
}

struct plain_case {
    const char *name;
    const char *b64;
    int want;
    const char *authzid, *login, *password;
};

static const struct plain_case plain_cases[] = {
    {"RFC 4616 no authzid", "AHRpbQB0YW5zdGFhZnRhbnN0YWFm", 0, "", "tim",
     "tanstaaftanstaaf"},
    {"RFC 4616 with authzid", "VXJzZWwAS3VydAB4aXBqM3BsbXE=", 0, "Ursel",
     "Kurt", "xipj3plmq"},
    {"one-octet fields", "AHQAcA==", 0, "", "t", "p"},
    {"one NUL only", "dGltAHRhbnN0YWFm", -1, NULL, NULL, NULL},
    {"no NUL", "dGlt", -1, NULL, NULL, NULL},
    {"three NULs", "YQBiAGMAZA==", -1, NULL, NULL, NULL},
    {"trailing NUL", "AHRpbQBwYXNzAA==", -1, NULL, NULL, NULL},
    {"empty password", "AHRpbQA=", -1, NULL, NULL, NULL},
    {"empty login", "AABwdw==", -1, NULL, NULL, NULL},
    {"empty response", "=", -1, NULL, NULL, NULL},
    {"empty line", "", -1, NULL, NULL, NULL},
    {"bad base64", "AHRpbQB0YW5zdGFhZnRhbnN0YWF", -1, NULL, NULL, NULL},
    {"base64 with space", "AHRpbQB0 YW5zdGFhZnRhbnN0YWFm", -1, NULL, NULL,
     NULL},
    {"cancel", "*", -1, NULL, NULL, NULL},
};

static void test_plain_case(void **state)
{
    const struct plain_case *c = &plain_cases[(uintptr_t)*state];
    struct smtp_auth_creds cr;
    int rc;

    memset(&cr, 0x55, sizeof(cr));
    rc = smtp_auth_plain_decode(c->b64, strlen(c->b64), &cr);
    check_long(c->name, "result", rc, c->want);
    if (rc < 0) {
        check_long(c->name, "creds wiped", all_zero(&cr, sizeof(cr)), 1);
        return;
    }
    check_str(c->name, "authzid", cr.authzid, c->authzid);
    check_str(c->name, "login", cr.login, c->login);
    check_str(c->name, "password", cr.password, c->password);
    smtp_auth_creds_wipe(&cr);
    check_long(c->name, "wipe", all_zero(&cr, sizeof(cr)), 1);
}

/* Builds base64 of "A\0L\0P" with fields of the given sizes. */
static long plain_of(size_t za, size_t zl, size_t zp, char *out, size_t cap)
{
    unsigned char raw[3 * SMTP_AUTH_MAX_FIELD + 16];
    size_t n = 0;

    memset(raw + n, 'a', za);
    n += za;
    raw[n++] = '\0';
    memset(raw + n, 'l', zl);
    n += zl;
    raw[n++] = '\0';
    memset(raw + n, 'p', zp);
    n += zp;
    return smtp_auth_b64_encode(raw, n, out, cap);
}

static void test_plain_bounds(void **state)
{
    static const struct {
        const char *name;
        size_t za, zl, zp;
    } f[] = {
        {"authzid", SMTP_AUTH_MAX_FIELD, 1, 1},
        {"login", 0, SMTP_AUTH_MAX_FIELD, 1},
        {"password", 0, 1, SMTP_AUTH_MAX_FIELD},
    };
    char b64[4 * SMTP_AUTH_MAX_FIELD + 64];
    struct smtp_auth_creds cr;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
        long n = plain_of(f[i].za, f[i].zl, f[i].zp, b64, sizeof(b64));

        assert_true(n > 0);
        check_long(f[i].name, "at the limit",
                   smtp_auth_plain_decode(b64, (size_t)n, &cr), 0);
        check_long(f[i].name, "login length", (long)strlen(cr.login),
                   (long)f[i].zl);
        check_long(f[i].name, "password length", (long)strlen(cr.password),
                   (long)f[i].zp);
        n = plain_of(f[i].za + (f[i].za > 1), f[i].zl + (f[i].zl > 1),
                     f[i].zp + (f[i].zp > 1), b64, sizeof(b64));
        assert_true(n > 0);
        check_long(f[i].name, "one over",
                   smtp_auth_plain_decode(b64, (size_t)n, &cr), -1);
        check_long(f[i].name, "wiped", all_zero(&cr, sizeof(cr)), 1);
    }
    /* All three at the limit at once. */
    {
        long n = plain_of(SMTP_AUTH_MAX_FIELD, SMTP_AUTH_MAX_FIELD,
                          SMTP_AUTH_MAX_FIELD, b64, sizeof(b64));

        check_long("all fields", "at the limit",
                   smtp_auth_plain_decode(b64, (size_t)n, &cr), 0);
        smtp_auth_creds_wipe(&cr);
    }
}

struct login_case {
    const char *name;
    const char *b64;
    size_t outcap;
    int want;
    const char *out;
};

static const struct login_case login_cases[] = {
    {"user name", "dGlt", 64, 0, "tim"},
    {"exact room", "dGlt", 4, 0, "tim"},
    {"no room for NUL", "dGlt", 3, -1, NULL},
    {"empty response", "=", 64, -1, NULL},
    {"empty line", "", 64, -1, NULL},
    {"NUL inside", "YQBi", 64, -1, NULL},
    {"bad base64", "dGl", 64, -1, NULL},
    {"no room at all", "dGlt", 0, -1, NULL},
};

static void test_login_case(void **state)
{
    const struct login_case *c = &login_cases[(uintptr_t)*state];
    char out[64];
    int rc;

    memset(out, 0x55, sizeof(out));
    rc = smtp_auth_login_decode(c->b64, strlen(c->b64), out, c->outcap);
    check_long(c->name, "result", rc, c->want);
    if (rc == 0)
        check_str(c->name, "field", out, c->out);
    else
        check_long(c->name, "wiped", all_zero(out, c->outcap), 1);
}

static void test_login_bounds(void **state)
{
    struct smtp_auth_creds cr;
    unsigned char raw[SMTP_AUTH_MAX_FIELD + 1];
    char b64[4 * SMTP_AUTH_MAX_FIELD];
    long n;

    (void)state;
    memset(raw, 'x', sizeof(raw));
    n = smtp_auth_b64_encode(raw, SMTP_AUTH_MAX_FIELD, b64, sizeof(b64));
    check_long(
        "login", "at the limit",
        smtp_auth_login_decode(b64, (size_t)n, cr.login, sizeof(cr.login)), 0);
    check_long("login", "length", (long)strlen(cr.login), SMTP_AUTH_MAX_FIELD);
    n = smtp_auth_b64_encode(raw, SMTP_AUTH_MAX_FIELD + 1, b64, sizeof(b64));
    /* Even with a larger buffer, the field bound holds. */
    {
        char big[2 * SMTP_AUTH_MAX_FIELD];

        check_long("login", "one over",
                   smtp_auth_login_decode(b64, (size_t)n, big, sizeof(big)),
                   -1);
    }
}

#define N_B64 (sizeof(b64_cases) / sizeof(b64_cases[0]))
#define N_PLAIN (sizeof(plain_cases) / sizeof(plain_cases[0]))
#define N_LOGIN (sizeof(login_cases) / sizeof(login_cases[0]))

int main(void)
{
    const struct CMUnitTest more[] = {
        cmocka_unit_test(test_b64_encode_bounds),
        cmocka_unit_test(test_b64_round_trip),
        cmocka_unit_test(test_plain_bounds),
        cmocka_unit_test(test_login_bounds),
    };
    struct CMUnitTest
        tests[N_B64 + N_PLAIN + N_LOGIN + sizeof(more) / sizeof(more[0])];
    size_t n = 0, i;

    for (i = 0; i < N_B64; i++) {
        struct CMUnitTest t = {b64_cases[i].name, test_b64_case, NULL, NULL,
                               (void *)(uintptr_t)i};
        tests[n++] = t;
    }
    for (i = 0; i < N_PLAIN; i++) {
        struct CMUnitTest t = {plain_cases[i].name, test_plain_case, NULL, NULL,
                               (void *)(uintptr_t)i};
        tests[n++] = t;
    }
    for (i = 0; i < N_LOGIN; i++) {
        struct CMUnitTest t = {login_cases[i].name, test_login_case, NULL, NULL,
                               (void *)(uintptr_t)i};
        tests[n++] = t;
    }
    for (i = 0; i < sizeof(more) / sizeof(more[0]); i++)
        tests[n++] = more[i];
    return _cmocka_run_group_tests("smtp_auth", tests, n, NULL, NULL);
}
