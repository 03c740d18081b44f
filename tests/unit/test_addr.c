/* Unit tests for common/addr: envelope paths (RFC 5321 4.1.2), mailbox
 * checks and From: values (RFC 5322 3.4). Each input is copied into a heap
 * block of its exact size, so that AddressSanitizer reports a read past
 * the end. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../common/addr.h"

/* Inputs too long to write out, filled in by build_inputs(). */
static char local64[128], local65[128], label63[128], label64[128];
static char dom255[320], dom256[320], path256[320], path257[320];
static char from_local65[128], from_nest8[64], from_nest9[64];

/* n octets of 'a' with a dot at every 50th position: labels stay under
 * 63 octets and the name never ends with a dot for the lengths used. */
static void fill_domain(char *out, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        out[i] = i % 50 == 49 ? '.' : 'a';
    out[n] = '\0';
}

static void build_inputs(void)
{
    char dom[300];

    snprintf(local64, sizeof(local64), "<%.*s@example.org>", 64,
             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
             "aaaa");
    snprintf(local65, sizeof(local65), "<%.*s@example.org>", 65,
             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
             "aaaa");
    snprintf(
        label63, sizeof(label63), "<a@%.*s.org>", 63,
        "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb");
    snprintf(
        label64, sizeof(label64), "<a@%.*s.org>", 64,
        "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb");
    fill_domain(dom, 255);
    snprintf(dom255, sizeof(dom255), "<a@%s>", dom);
    fill_domain(dom, 256);
    snprintf(dom256, sizeof(dom256), "<a@%s>", dom);
    /* Mailbox of 256 octets: "a@" and a 254-octet domain. */
    fill_domain(dom, 254);
    snprintf(path256, sizeof(path256), "<a@%s>", dom);
    snprintf(path257, sizeof(path257), "<ab@%s>", dom);
    snprintf(from_local65, sizeof(from_local65), "%s", local65 + 1);
    from_local65[strlen(from_local65) - 1] = '\0';
    snprintf(from_nest8, sizeof(from_nest8),
             "a@example.org (1(2(3(4(5(6(7(8))))))))");
    snprintf(from_nest9, sizeof(from_nest9),
             "a@example.org (1(2(3(4(5(6(7(8(9)))))))))");
}

/* Copies s (len octets) into a heap block of exactly that size. */
static char *exact_copy(const char *s, size_t len)
{
    char *p = malloc(len ? len : 1);

    assert_non_null(p);
    memcpy(p, s, len);
    return p;
}

struct path_case {
    const char *name;
    const char *arg;
    int rc;
    const char *addr;   /* rc 0 */
    const char *params; /* rc 0 */
    const char *err;    /* rc -1: expected substring of the reason */
};

static const struct path_case path_cases[] = {
    {"simple", "<alice@example.org>", 0, "alice@example.org", "", NULL},
    {"params", "<alice@example.org> SIZE=100 BODY=8BITMIME", 0,
     "alice@example.org", "SIZE=100 BODY=8BITMIME", NULL},
    {"params after spaces", "<a@b.example>   SIZE=1", 0, "a@b.example",
     "SIZE=1", NULL},
    {"trailing space", "<a@b.example> ", 0, "a@b.example", "", NULL},
    {"space after colon", " <a@b.example>", 0, "a@b.example", "", NULL},
    {"null path", "<>", 0, "", "", NULL},
    {"null path params", "<> SIZE=10", 0, "", "SIZE=10", NULL},
    {"quoted local", "<\"john doe\"@example.org>", 0,
     "\"john doe\"@example.org", "", NULL},
    {"quoted pair", "<\"a\\\"b\"@example.org>", 0, "\"a\\\"b\"@example.org", "",
     NULL},
    {"quoted angle", "<\"a>b\"@example.org>", 0, "\"a>b\"@example.org", "",
     NULL},
    {"quoted empty", "<\"\"@example.org>", 0, "\"\"@example.org", "", NULL},
    {"atext", "<a.b+tag!#$%&'*/=?^_`{|}~-@example.org>", 0,
     "a.b+tag!#$%&'*/=?^_`{|}~-@example.org", "", NULL},
    {"ipv4 literal", "<a@[192.0.2.1]>", 0, "a@[192.0.2.1]", "", NULL},
    {"ipv6 literal", "<a@[IPv6:2001:db8::1]>", 0, "a@[IPv6:2001:db8::1]", "",
     NULL},
    {"ipv6 tag lower", "<a@[ipv6:::1]>", 0, "a@[ipv6:::1]", "", NULL},
    {"source route", "<@relay.example,@b.example:a@example.org>", 0,
     "a@example.org", "", NULL},
    {"digit label", "<a@3com.example>", 0, "a@3com.example", "", NULL},
    {"single label", "<postmaster@localhost>", 0, "postmaster@localhost", "",
     NULL},
    {"local 64", local64, 0, NULL, "", NULL},
    {"label 63", label63, 0, NULL, "", NULL},
    {"path 256", path256, 0, NULL, "", NULL},
    {"no brackets", "alice@example.org", -1, NULL, NULL, "angle brackets"},
    {"empty", "", -1, NULL, NULL, "angle brackets"},
    {"no close", "<alice@example.org", -1, NULL, NULL, "expected '>'"},
    {"no at", "<alice>", -1, NULL, NULL, "missing '@'"},
    {"empty local", "<@example.org>", -1, NULL, NULL, "source route"},
    {"double dot", "<a..b@example.org>", -1, NULL, NULL, "local part"},
    {"leading dot", "<.a@example.org>", -1, NULL, NULL, "local part"},
    {"trailing dot local", "<a.@example.org>", -1, NULL, NULL, "local part"},
    {"trailing dot domain", "<a@example.org.>", -1, NULL, NULL, "bad domain"},
    {"hyphen end", "<a@ex-.org>", -1, NULL, NULL, "bad domain"},
    {"hyphen start", "<a@-ex.org>", -1, NULL, NULL, "bad domain"},
    {"underscore", "<a@ex_ample.org>", -1, NULL, NULL, "expected '>'"},
    {"empty domain", "<a@>", -1, NULL, NULL, "bad domain"},
    {"space inside", "<a b@example.org>", -1, NULL, NULL, "missing '@'"},
    {"text after", "<a@b.example>x", -1, NULL, NULL, "text after"},
    {"bad ipv4", "<a@[300.1.1.1]>", -1, NULL, NULL, "address literal"},
    {"bad tag", "<a@[foo:bar]>", -1, NULL, NULL, "address literal"},
    {"open literal", "<a@[192.0.2.1>", -1, NULL, NULL, "address literal"},
    {"open quote", "<\"abc@example.org>", -1, NULL, NULL, "local part"},
    {"8bit", "<j\xc3\xb6rg@example.org>", -1, NULL, NULL, "missing '@'"},
    {"control", "<a\x01@example.org>", -1, NULL, NULL, "missing '@'"},
    {"quoted control", "<\"a\x01\"@example.org>", -1, NULL, NULL, "local part"},
    {"route to null", "<@a.example:>", -1, NULL, NULL, "local part"},
    {"bad route", "<@a.example;b@example.org>", -1, NULL, NULL, "source route"},
    {"local 65", local65, -1, NULL, NULL, "local part too long"},
    {"label 64", label64, -1, NULL, NULL, "label too long"},
    /* A 255-octet domain is within its own limit (RFC 5321 4.5.3.1.2) but
     * no mailbox with it fits in a 256-octet path. */
    {"domain 255", dom255, -1, NULL, NULL, "path too long"},
    {"domain 256", dom256, -1, NULL, NULL, "domain too long"},
    {"path 257", path257, -1, NULL, NULL, "path too long"},
};

/* The expected address of a generated good case: the path without its
 * angle brackets. */
static void want_addr_of(const struct path_case *tc, char *out, size_t len)
{
    if (tc->addr != NULL) {
        snprintf(out, len, "%s", tc->addr);
        return;
    }
    snprintf(out, len, "%.*s", (int)strlen(tc->arg) - 2, tc->arg + 1);
}

static void test_parse_path(void **state)
{
    char addr[SG_MAX_PATH + 1], want[SG_MAX_PATH + 8];
    size_t i;
    int failed = 0;

    (void)state;
    for (i = 0; i < sizeof(path_cases) / sizeof(path_cases[0]); i++) {
        const struct path_case *tc = &path_cases[i];
        char *arg = exact_copy(tc->arg, strlen(tc->arg) + 1);
        const char *params = NULL, *err = NULL;
        int rc = addr_parse_path(arg, addr, &params, &err);

        if (rc != tc->rc) {
            print_error("path %s: got rc %d (%s), want %d\n", tc->name, rc,
                        err ? err : "-", tc->rc);
            failed++;
        } else if (rc == 0) {
            want_addr_of(tc, want, sizeof(want));
            if (strcmp(addr, want) != 0 || strcmp(params, tc->params) != 0) {
                print_error("path %s: got <%s> '%s', want <%s> '%s'\n",
                            tc->name, addr, params, want, tc->params);
                failed++;
            }
        } else if (err == NULL || strstr(err, tc->err) == NULL) {
            print_error("path %s: got reason '%s', want '%s'\n", tc->name,
                        err ? err : "(null)", tc->err);
            failed++;
        }
        free(arg);
    }
    if (failed)
        fail_msg("%d path case(s) failed", failed);
}

struct valid_case {
    const char *name;
    const char *addr;
    int want;
};

static const struct valid_case valid_cases[] = {
    {"plain", "alice@example.org", 1},
    {"quoted", "\"a b\"@example.org", 1},
    {"literal", "a@[192.0.2.1]", 1},
    {"empty", "", 0},
    {"no at", "alice", 0},
    {"no local", "@example.org", 0},
    {"no domain", "alice@", 0},
    {"two at", "a@b@example.org", 0},
    {"angle", "<a@example.org>", 0},
    {"trailing space", "a@example.org ", 0},
    {"trailing dot", "a@example.org.", 0},
};

static void test_is_valid(void **state)
{
    size_t i;
    int failed = 0;

    (void)state;
    for (i = 0; i < sizeof(valid_cases) / sizeof(valid_cases[0]); i++) {
        const struct valid_case *tc = &valid_cases[i];
        int got = addr_is_valid(tc->addr);
        if (got != tc->want) {
            print_error("is_valid %s: got %d, want %d\n", tc->name, got,
                        tc->want);
            failed++;
        }
    }
    /* The limits through the generated paths, without their brackets. */
    {
        char a[400];
        snprintf(a, sizeof(a), "%.*s", (int)strlen(path256) - 2, path256 + 1);
        if (addr_is_valid(a) != 1) {
            print_error("is_valid path 256: got 0, want 1\n");
            failed++;
        }
        snprintf(a, sizeof(a), "%.*s", (int)strlen(path257) - 2, path257 + 1);
        if (addr_is_valid(a) != 0) {
            print_error("is_valid path 257: got 1, want 0\n");
            failed++;
        }
    }
    if (failed)
        fail_msg("%d is_valid case(s) failed", failed);
}

static void test_domain_helpers(void **state)
{
    char out[16];

    (void)state;
    assert_string_equal(addr_domain("a@Example.ORG"), "Example.ORG");
    assert_string_equal(addr_domain("\"x@y\"@b.example"), "b.example");
    assert_null(addr_domain("nodomain"));
    addr_domain_lower("Example.ORG", out, sizeof(out));
    assert_string_equal(out, "example.org");
    /* Cut to the buffer, still terminated. */
    addr_domain_lower("ABCDEFGHIJKLMNOPQRSTUVWXYZ", out, 5);
    assert_string_equal(out, "abcd");
    assert_int_equal(addr_equal("Alice@Example.ORG", "alice@example.org"), 1);
    assert_int_equal(addr_equal("alice@example.org", "alice@example.org.x"), 0);
    assert_int_equal(addr_equal("alice@example.org", "alicf@example.org"), 0);
    assert_int_equal(addr_equal("", ""), 1);
}

struct from_case {
    const char *name;
    const char *value;
    size_t len; /* 0: strlen(value) */
    int rc;
    const char *addr; /* rc 1 */
    const char *err;  /* rc 0: expected substring of the reason */
};

static const struct from_case from_cases[] = {
    {"bare", "alice@example.org", 0, 1, "alice@example.org", NULL},
    {"angle", "<alice@example.org>", 0, 1, "alice@example.org", NULL},
    {"display", "Alice <alice@example.org>", 0, 1, "alice@example.org", NULL},
    {"display words", " Alice B Smith <alice@example.org>", 0, 1,
     "alice@example.org", NULL},
    {"quoted display", "\"Smith, Alice\" <alice@example.org>", 0, 1,
     "alice@example.org", NULL},
    {"quoted display specials", "\"a <b@c> (d)\" <alice@example.org>", 0, 1,
     "alice@example.org", NULL},
    {"comment", "alice@example.org (Alice)", 0, 1, "alice@example.org", NULL},
    {"comment first", "(Alice) alice@example.org", 0, 1, "alice@example.org",
     NULL},
    {"comment escaped", "alice@example.org (a \\) b)", 0, 1,
     "alice@example.org", NULL},
    {"comment after angle", "Alice <alice@example.org> (work)", 0, 1,
     "alice@example.org", NULL},
    {"folded", "Alice\r\n <alice@example.org>", 0, 1, "alice@example.org",
     NULL},
    {"folded tab crlf end", "\"Smith, Alice\"\r\n\t<alice@example.org>\r\n", 0,
     1, "alice@example.org", NULL},
    {"crlf end", " alice@example.org\r\n", 0, 1, "alice@example.org", NULL},
    {"encoded word", "=?UTF-8?B?QWxpY2U=?= <alice@example.org>", 0, 1,
     "alice@example.org", NULL},
    {"encoded word q", "=?utf-8?q?J=C3=B6rg?= <jorg@example.org>", 0, 1,
     "jorg@example.org", NULL},
    {"utf8 display", "J\xc3\xb6rg <jorg@example.org>", 0, 1, "jorg@example.org",
     NULL},
    {"obs dot display", "John Q. Public <john@example.org>", 0, 1,
     "john@example.org", NULL},
    {"space around at", "alice @ example.org", 0, 1, "alice@example.org", NULL},
    {"space in angle", "< alice@example.org >", 0, 1, "alice@example.org",
     NULL},
    {"quoted local", "\"a b\"@example.org", 0, 1, "\"a b\"@example.org", NULL},
    {"dotted local", "a.b.c@mail.example.org", 0, 1, "a.b.c@mail.example.org",
     NULL},
    {"literal", "a@[192.0.2.1]", 0, 1, "a@[192.0.2.1]", NULL},
    {"nested 8", from_nest8, 0, 1, "a@example.org", NULL},
    {"empty", "", 0, 0, NULL, "empty"},
    {"blank", "  \r\n ", 0, 0, NULL, "empty"},
    {"only comment", "(Alice)", 0, 0, NULL, "empty"},
    {"two", "a@x.example, b@y.example", 0, 0, NULL, "more than one"},
    {"two named", "A <a@x.example>, B <b@y.example>", 0, 0, NULL,
     "more than one"},
    {"trailing comma", "a@x.example,", 0, 0, NULL, "more than one"},
    {"unquoted comma", "Smith, Alice <alice@example.org>", 0, 0, NULL,
     "more than one"},
    {"group", "undisclosed-recipients:;", 0, 0, NULL, "group"},
    {"group member", "team: a@x.example;", 0, 0, NULL, "group"},
    {"no at", "alice", 0, 0, NULL, "missing '@'"},
    {"no at angle", "Alice <alice>", 0, 0, NULL, "missing '@'"},
    {"name no angle", "Alice alice@example.org", 0, 0, NULL, "missing '@'"},
    {"open quote", "\"Alice <alice@example.org>", 0, 0, NULL,
     "unterminated quoted"},
    {"open angle", "Alice <alice@example.org", 0, 0, NULL,
     "unterminated angle"},
    {"open comment", "alice@example.org (Alice", 0, 0, NULL,
     "unterminated comment"},
    {"open literal", "a@[192.0.2.1", 0, 0, NULL, "unterminated domain"},
    {"nested 9", from_nest9, 0, 0, NULL, "nested too deep"},
    {"close paren", "alice@example.org)", 0, 0, NULL, "unbalanced"},
    {"bare cr", "alice@example.org\rx", 0, 0, NULL, "bare CR"},
    {"cr at end", "alice@example.org\r", 0, 0, NULL, "bare CR"},
    {"fold no ws", "Alice\r\n<alice@example.org>", 0, 0, NULL,
     "not followed by white space"},
    {"bare lf", "Alice\n <alice@example.org>", 0, 0, NULL, "invalid character"},
    {"nul", "alice@example.org\0x", 19, 0, NULL, "invalid character"},
    {"two angles", "<a@x.example> <b@y.example>", 0, 0, NULL,
     "unexpected text"},
    {"text after", "alice@example.org bob", 0, 0, NULL, "unexpected text"},
    {"space in local", "alice. smith@example.org", 0, 0, NULL,
     "white space inside"},
    {"space in domain", "alice@example .org", 0, 0, NULL, "white space inside"},
    {"trailing dot", "alice@example.org.", 0, 0, NULL, "bad address"},
    {"no domain", "alice@", 0, 0, NULL, "missing domain"},
    {"no local", "@example.org", 0, 0, NULL, "bad address"},
    {"8bit address", "j\xc3\xb6rg@example.org", 0, 0, NULL, "non-ASCII"},
    {"bad domain", "alice@exa_mple.org", 0, 0, NULL, "bad address"},
    {"at in name", "a@b <alice@example.org>", 0, 0, NULL, "display name"},
    {"local 65", from_local65, 0, 0, NULL, "local part too long"},
    {"route", "<@a.example:b@example.org>", 0, 0, NULL, "group"},
};

static void test_parse_from(void **state)
{
    char addr[SG_MAX_PATH + 1];
    size_t i;
    int failed = 0;

    (void)state;
    for (i = 0; i < sizeof(from_cases) / sizeof(from_cases[0]); i++) {
        const struct from_case *tc = &from_cases[i];
        size_t len = tc->len ? tc->len : strlen(tc->value);
        char *v = exact_copy(tc->value, len);
        const char *err = NULL;
        int rc = addr_parse_from(v, len, addr, &err);

        if (rc != tc->rc) {
            print_error("from %s: got rc %d (%s <%s>), want %d\n", tc->name, rc,
                        err ? err : "-", addr, tc->rc);
            failed++;
        } else if (rc == 1 && strcmp(addr, tc->addr) != 0) {
            print_error("from %s: got <%s>, want <%s>\n", tc->name, addr,
                        tc->addr);
            failed++;
        } else if (rc == 0 && (err == NULL || strstr(err, tc->err) == NULL)) {
            print_error("from %s: got reason '%s', want '%s'\n", tc->name,
                        err ? err : "(null)", tc->err);
            failed++;
        } else if (rc == 0 && addr[0] != '\0') {
            print_error("from %s: got <%s> on failure, want empty\n", tc->name,
                        addr);
            failed++;
        }
        free(v);
    }
    if (failed)
        fail_msg("%d From: case(s) failed", failed);
}

/* A From: value at the size of a header field does not make the parser
 * read or write out of bounds, and a long address is refused. */
static void test_parse_from_long(void **state)
{
    size_t len = 64 * 1024;
    char *v = malloc(len);
    char addr[SG_MAX_PATH + 1];
    const char *err = NULL;

    (void)state;
    assert_non_null(v);
    memset(v, 'a', len);
    v[10] = '@';
    assert_int_equal(addr_parse_from(v, len, addr, &err), 0);
    assert_non_null(err);
    assert_string_equal(addr, "");
    memset(v, ' ', len);
    memcpy(v + len - 17, "alice@example.org", 17);
    assert_int_equal(addr_parse_from(v, len, addr, &err), 1);
    assert_string_equal(addr, "alice@example.org");
    free(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_path),
        cmocka_unit_test(test_is_valid),
        cmocka_unit_test(test_domain_helpers),
        cmocka_unit_test(test_parse_from),
        cmocka_unit_test(test_parse_from_long),
    };

    build_inputs();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
