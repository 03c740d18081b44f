/* test_bounce: the DSN builder. Each case builds a notification and
 * checks its envelope-independent shape: CRLF lines of at most 998
 * octets, the header fields, the three MIME parts with the boundary, the
 * per-recipient fields, cleaning of remote text, the cut of a large
 * header section, the global (UTF-8) variant, and the refusals (null
 * sender, no domain, no recipient). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../server/bounce.h"
#include "testutil.h"

static const char orig[] =
    "DKIM-Signature: v=1; a=ed25519-sha256; d=example.org; s=x;\r\n"
    "\tb=abc\r\n"
    "From: alice@example.org\r\n"
    "To: bob@example.net\r\n"
    "Subject: hello\r\n"
    "Message-ID: <m1@example.org>\r\n"
    "\r\n"
    "The body, which must not come back.\r\n";

static const struct bounce_rcpt two[] = {
    {"bob@example.net", "5.1.1", "mx.example.net",
     "550 5.1.1 <bob@example.net>: no such user", 1},
    {"carol@example.com", "4.4.1", NULL, "connect to mx: refused", 0},
};

static struct bounce_info info(enum bounce_action act)
{
    struct bounce_info b = {
        .action = act,
        .qid = "DYXL5X46HGXY",
        .dsn_qid = "DYXL5X46HGZZ",
        .hostname = "gw.example.org",
        .sender = "alice@example.org",
        .arrival = 1760000000,
        .now = 1760000300,
        .until = 1760432000,
        .msg = orig,
        .msglen = sizeof(orig) - 1,
        .rcpt = two,
        .nrcpt = 2,
    };
    return b;
}

/* Every line ends in CRLF, none is longer than 998 octets, no bare CR
 * or LF, no NUL. */
static void check_lines(const char *m, size_t len)
{
    size_t start = 0;

    if (len < 2 || m[len - 2] != '\r' || m[len - 1] != '\n')
        fail_msg("does not end in CRLF");
    for (size_t i = 0; i < len; i++) {
        if (m[i] == '\0')
            fail_msg("NUL at %zu", i);
        if (m[i] == '\r' && (i + 1 >= len || m[i + 1] != '\n'))
            fail_msg("bare CR at %zu", i);
        if (m[i] == '\n') {
            if (i == 0 || m[i - 1] != '\r')
                fail_msg("bare LF at %zu", i);
            if (i - 1 - start > 998)
                fail_msg("line of %zu octets at %zu", i - 1 - start, start);
            start = i + 1;
        }
    }
}

static int count(const char *hay, const char *needle)
{
    int n = 0;

    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

static void expect(const char *m, const char *needle)
{
    if (strstr(m, needle) == NULL)
        fail_msg("missing \"%s\" in:\n%s", needle, m);
}

static void test_failed(void **state)
{
    struct bounce_info b = info(BOUNCE_FAILED);
    size_t len = 0;
    char *m;

    (void)state;
    m = bounce_build(&b, &len);
    assert_non_null(m);
    assert_int_equal(strlen(m), len);
    check_lines(m, len);
    expect(m, "From: Mail Delivery System <MAILER-DAEMON@example.org>\r\n");
    expect(m, "To: <alice@example.org>\r\n");
    expect(m, "Subject: Undelivered Mail Returned to Sender\r\n");
    expect(m, "Date: Thu, 09 Oct 2025 08:58:20 +0000\r\n");
    expect(m, "Message-ID: <DYXL5X46HGZZ.dsn@gw.example.org>\r\n");
    expect(m, "Auto-Submitted: auto-replied\r\n");
    expect(m, "Content-Type: multipart/report; report-type=delivery-status;"
              "\r\n\tboundary=\"=_subgate_DYXL5X46HGZZ_0\"\r\n");
    /* Three parts and the closing delimiter. */
    assert_int_equal(count(m, "\r\n--=_subgate_DYXL5X46HGZZ_0\r\n"), 3);
    expect(m, "\r\n--=_subgate_DYXL5X46HGZZ_0--\r\n");
    expect(m, "Content-Type: message/delivery-status\r\n");
    expect(m, "Content-Type: text/rfc822-headers\r\n");
    expect(m, "Reporting-MTA: dns; gw.example.org\r\n");
    expect(m, "Arrival-Date: Thu, 09 Oct 2025 08:53:20 +0000\r\n");
    expect(m, "\r\nFinal-Recipient: rfc822; bob@example.net\r\n"
              "Action: failed\r\nStatus: 5.1.1\r\n"
              "Remote-MTA: dns; mx.example.net\r\n"
              "Diagnostic-Code: smtp; 550 5.1.1 <bob@example.net>: no such "
              "user\r\n");
    expect(m, "\r\nFinal-Recipient: rfc822; carol@example.com\r\n"
              "Action: failed\r\nStatus: 4.4.1\r\n"
              "Diagnostic-Code: x-subgate; connect to mx: refused\r\n");
    assert_null(strstr(m, "Will-Retry-Until"));
    /* The header section comes back, the body does not. */
    expect(m, "Message-ID: <m1@example.org>\r\n");
    expect(m, "\tb=abc\r\n");
    assert_null(strstr(m, "must not come back"));
    expect(m, "<bob@example.net>: host mx.example.net said: 550 5.1.1");
    free(m);
}

static void test_delayed(void **state)
{
    struct bounce_info b = info(BOUNCE_DELAYED);
    size_t len = 0;
    char *m;

    (void)state;
    b.nrcpt = 1;
    m = bounce_build(&b, &len);
    assert_non_null(m);
    check_lines(m, len);
    expect(m, "Subject: Delayed Mail (still being retried)\r\n");
    expect(m, "Action: delayed\r\n");
    expect(m, "Will-Retry-Until: Tue, 14 Oct 2025 08:53:20 +0000\r\n");
    assert_int_equal(count(m, "Final-Recipient:"), 1);
    free(m);
}

/* Remote text is cut and cleaned: no control or 8-bit octet, no line
 * over the limit, whatever the server sent. */
static void test_hostile_reply(void **state)
{
    char diag[2000];
    struct bounce_rcpt r = {"bob@example.net", "5.0.0", "mx", diag, 1};
    struct bounce_info b = info(BOUNCE_FAILED);
    size_t len = 0;
    char *m;

    (void)state;
    memset(diag, 'x', sizeof(diag) - 1);
    diag[sizeof(diag) - 1] = '\0';
    memcpy(diag, "550 \r\nInjected: yes\t\x01\xff", 22);
    b.rcpt = &r;
    b.nrcpt = 1;
    m = bounce_build(&b, &len);
    assert_non_null(m);
    check_lines(m, len);
    assert_null(strstr(m, "\r\nInjected"));
    expect(m, "Diagnostic-Code: smtp; 550 ??Injected: yes???xxx");
    expect(m, "xxx...\r\n");
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)m[i] >= 0x80)
            fail_msg("8-bit octet at %zu", i);
    }
    free(m);
}

/* A huge header section is cut at a line end; a message without a body
 * gives all of its headers. */
static void test_header_section_bounds(void **state)
{
    size_t n = BOUNCE_MAX_HEADERS * 2, len = 0;
    char *big = malloc(n + 64), *m;
    struct bounce_info b = info(BOUNCE_FAILED);
    size_t pos = 0;

    (void)state;
    assert_non_null(big);
    while (pos + 80 < n) {
        memcpy(big + pos, "X-Filler: ", 10);
        memset(big + pos + 10, 'y', 68);
        memcpy(big + pos + 78, "\r\n", 2);
        pos += 80;
    }
    memcpy(big + pos, "\r\nbody\r\n", 8);
    b.msg = big;
    b.msglen = pos + 8;
    m = bounce_build(&b, &len);
    assert_non_null(m);
    check_lines(m, len);
    assert_true(len < BOUNCE_MAX_HEADERS + 8192);
    assert_null(strstr(m, "body\r\n"));
    free(m);

    b.msg = "Subject: no body\r\n";
    b.msglen = strlen(b.msg);
    m = bounce_build(&b, &len);
    assert_non_null(m);
    check_lines(m, len);
    expect(m, "Content-Type: text/rfc822-headers\r\n\r\nSubject: no body\r\n");
    free(m);
    free(big);
}

/* A boundary must not occur in the returned headers. */
static void test_boundary_collision(void **state)
{
    static const char sneaky[] = "X-Trap: --=_subgate_DYXL5X46HGZZ_0\r\n"
                                 "Subject: trap\r\n\r\nbody\r\n";
    struct bounce_info b = info(BOUNCE_FAILED);
    size_t len = 0;
    char *m;

    (void)state;
    b.msg = sneaky;
    b.msglen = sizeof(sneaky) - 1;
    m = bounce_build(&b, &len);
    assert_non_null(m);
    expect(m, "boundary=\"=_subgate_DYXL5X46HGZZ_1\"");
    assert_int_equal(count(m, "\r\n--=_subgate_DYXL5X46HGZZ_1\r\n"), 3);
    free(m);
}

static void test_global(void **state)
{
    static const struct bounce_rcpt r = {"j\xc3\xb6rg@example.net", "5.6.7",
                                         NULL, "no SMTPUTF8", 0};
    static const char hdrs[] = "Subject: Gr\xc3\xbc\xc3\x9f"
                               "e\r\n\r\nbody\r\n";
    struct bounce_info b = info(BOUNCE_FAILED);
    size_t len = 0;
    char *m;

    (void)state;
    b.rcpt = &r;
    b.nrcpt = 1;
    b.msg = hdrs;
    b.msglen = sizeof(hdrs) - 1;
    m = bounce_build(&b, &len);
    assert_non_null(m);
    check_lines(m, len);
    expect(m, "report-type=global-delivery-status;");
    expect(m, "Content-Type: message/global-delivery-status\r\n");
    expect(m, "Final-Recipient: utf-8; j\xc3\xb6rg@example.net\r\n");
    expect(m, "Content-Type: message/global-headers\r\n");
    expect(m, "Content-Type: text/plain; charset=utf-8\r\n");
    free(m);
}

static void test_refusals(void **state)
{
    static const struct {
        const char *name;
        const char *sender;
        size_t nrcpt;
    } cases[] = {
        {"null sender", "", 2},
        {"no domain", "postmaster", 2},
        {"empty domain", "alice@", 2},
        {"no recipient", "alice@example.org", 0},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct bounce_info b = info(BOUNCE_FAILED);
        size_t len = 0;
        char *m;

        b.sender = cases[i].sender;
        b.nrcpt = cases[i].nrcpt;
        m = bounce_build(&b, &len);
        if (m != NULL) {
            free(m);
            fail_msg("%s: got a notification, want none", cases[i].name);
        }
    }
}

static void test_domain(void **state)
{
    static const struct {
        const char *in, *want;
    } cases[] = {
        {"alice@example.org", "example.org"},
        {"\"a@b\"@example.org", "example.org"},
        {"", NULL},
        {"alice", NULL},
        {"alice@", NULL},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *got = bounce_domain(cases[i].in);
        if (cases[i].want == NULL && got != NULL)
            fail_msg("%s: got %s, want NULL", cases[i].in, got);
        if (cases[i].want != NULL)
            CHECK_STR(got, cases[i].want, cases[i].in);
    }
    assert_null(bounce_domain(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_failed),
        cmocka_unit_test(test_delayed),
        cmocka_unit_test(test_hostile_reply),
        cmocka_unit_test(test_header_section_bounds),
        cmocka_unit_test(test_boundary_collision),
        cmocka_unit_test(test_global),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_domain),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
