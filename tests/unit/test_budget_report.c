/* Unit tests for server/budget_report: when a report about a used-up
 * budget is due (once per member or tenant and budget per interval, a
 * bounded table) and the report's text (headers, facts, refusal of
 * fields that could break a header). The clock is a plain number. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../common/cfg.h"
#include "../../common/limits.h"
#include "../../server/budget_report.h"
#include "testutil.h"

#define HOUR_MS 3600000ULL

#define ALICE "alice@example.org"
#define BOB "bob@example.org"
#define TENANT "example.org"

/* ---- when a report is due -------------------------------------------- */

/* One call of budget_report_due() and the answer it must give. */
struct due_step {
    const char *what;
    enum ratelimit_verdict v;
    const char *member, *tenant;
    uint64_t now_ms;
    int want;
};

static const struct due_step due_steps[] = {
    {"first refusal", RATELIMIT_MEMBER_MSG, ALICE, TENANT, 1000, 1},
    {"again at once", RATELIMIT_MEMBER_MSG, ALICE, TENANT, 1000, 0},
    {"just inside the hour", RATELIMIT_MEMBER_MSG, ALICE, TENANT,
     1000 + HOUR_MS - 1, 0},
    {"case of the name does not matter", RATELIMIT_MEMBER_MSG,
     "Alice@Example.ORG", TENANT, 2000, 0},
    {"another budget of the member", RATELIMIT_MEMBER_RCPT, ALICE, TENANT, 2000,
     1},
    {"another member", RATELIMIT_MEMBER_MSG, BOB, TENANT, 2000, 1},
    {"the tenant's budget", RATELIMIT_TENANT_MSG, ALICE, TENANT, 3000, 1},
    {"the tenant's budget, another member", RATELIMIT_TENANT_MSG, BOB,
     "EXAMPLE.org", 3000, 0},
    {"another tenant", RATELIMIT_TENANT_MSG, "carol@other.org", "other.org",
     3000, 1},
    {"no budget: connections", RATELIMIT_CONN_COUNT, ALICE, TENANT, 4000, 0},
    {"no budget: ok", RATELIMIT_OK, ALICE, TENANT, 4000, 0},
    {"a whole hour later", RATELIMIT_MEMBER_MSG, ALICE, TENANT, 1000 + HOUR_MS,
     1},
    {"and again at once", RATELIMIT_MEMBER_MSG, ALICE, TENANT,
     1000 + HOUR_MS + 1, 0},
    {"a clock gone back", RATELIMIT_MEMBER_RCPT, ALICE, TENANT, 1000, 0},
};

static void test_due_steps(void **state)
{
    struct budget_report *b = budget_report_new(100);
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(due_steps) / sizeof(due_steps[0]); i++) {
        const struct due_step *c = &due_steps[i];
        CHECK_INT(budget_report_due(b, c->v, c->member, c->tenant, c->now_ms,
                                    HOUR_MS),
                  c->want, c->what);
    }
    /* alice x2 budgets, bob, two tenants. */
    CHECK_INT(budget_report_count(b), 5, "entries");
    budget_report_free(&b);
    assert_null(b);
}

static void test_interval_zero_never(void **state)
{
    struct budget_report *b = budget_report_new(10);

    (void)state;
    CHECK_INT(budget_report_due(b, RATELIMIT_MEMBER_MSG, ALICE, TENANT, 5, 0),
              0, "interval 0");
    CHECK_INT(budget_report_due(b, RATELIMIT_TENANT_MSG, ALICE, TENANT, 5, 0),
              0, "interval 0, tenant");
    CHECK_INT(budget_report_count(b), 0, "entries");
    budget_report_free(&b);
}

static void test_forget(void **state)
{
    struct budget_report *b = budget_report_new(10);

    (void)state;
    CHECK_INT(
        budget_report_due(b, RATELIMIT_MEMBER_MSG, ALICE, TENANT, 10, HOUR_MS),
        1, "first");
    CHECK_INT(
        budget_report_due(b, RATELIMIT_MEMBER_RCPT, ALICE, TENANT, 10, HOUR_MS),
        1, "other budget");
    /* The report could not be made: the next refusal is due again, and
     * only that budget's entry went. */
    budget_report_forget(b, RATELIMIT_MEMBER_MSG, "ALICE@example.org", TENANT);
    CHECK_INT(budget_report_count(b), 1, "entries after forget");
    CHECK_INT(
        budget_report_due(b, RATELIMIT_MEMBER_MSG, ALICE, TENANT, 11, HOUR_MS),
        1, "due again");
    CHECK_INT(
        budget_report_due(b, RATELIMIT_MEMBER_RCPT, ALICE, TENANT, 11, HOUR_MS),
        0, "other budget kept");
    /* Forgetting what is not there is harmless. */
    budget_report_forget(b, RATELIMIT_TENANT_MSG, ALICE, TENANT);
    budget_report_forget(b, RATELIMIT_CONN_RATE, ALICE, TENANT);
    CHECK_INT(budget_report_count(b), 2, "entries");
    budget_report_free(&b);
}

/* The table never holds more than its bound; when it is full of recent
 * reports, none more is due until one of them is older than the
 * interval, whose place is then taken. */
static void test_table_bounded(void **state)
{
    struct budget_report *b = budget_report_new(3);
    char name[64];
    int i;

    (void)state;
    for (i = 0; i < 3; i++) {
        snprintf(name, sizeof(name), "m%d@example.org", i);
        CHECK_INT(budget_report_due(b, RATELIMIT_MEMBER_MSG, name, TENANT,
                                    (uint64_t)i * 1000, HOUR_MS),
                  1, "while there is room");
    }
    CHECK_INT(budget_report_due(b, RATELIMIT_MEMBER_MSG, "m9@example.org",
                                TENANT, 5000, HOUR_MS),
              -1, "full of recent reports");
    CHECK_INT(budget_report_count(b), 3, "entries when full");
    /* m0's report is an hour old: its place goes to m9. */
    CHECK_INT(budget_report_due(b, RATELIMIT_MEMBER_MSG, "m9@example.org",
                                TENANT, HOUR_MS, HOUR_MS),
              1, "an old entry reused");
    CHECK_INT(budget_report_count(b), 3, "entries after reuse");
    CHECK_INT(budget_report_due(b, RATELIMIT_MEMBER_MSG, "m1@example.org",
                                TENANT, HOUR_MS, HOUR_MS),
              0, "m1 still remembered");
    CHECK_INT(budget_report_due(b, RATELIMIT_MEMBER_MSG, "m9@example.org",
                                TENANT, HOUR_MS + 1, HOUR_MS),
              0, "m9 now remembered");
    budget_report_free(&b);

    /* The bound is clamped. */
    b = budget_report_new(0);
    CHECK_INT(
        budget_report_due(b, RATELIMIT_MEMBER_MSG, ALICE, TENANT, 0, HOUR_MS),
        1, "one entry at least");
    CHECK_INT(
        budget_report_due(b, RATELIMIT_MEMBER_MSG, BOB, TENANT, 0, HOUR_MS), -1,
        "only one");
    budget_report_free(&b);
    b = budget_report_new(BUDGET_REPORT_MAX_ENTRIES * 4);
    for (i = 0; i < BUDGET_REPORT_MAX_ENTRIES + 5; i++) {
        snprintf(name, sizeof(name), "n%d@example.org", i);
        budget_report_due(b, RATELIMIT_MEMBER_RCPT, name, TENANT, 7, HOUR_MS);
    }
    CHECK_INT(budget_report_count(b), BUDGET_REPORT_MAX_ENTRIES,
              "clamped to the maximum");
    budget_report_free(&b);
    budget_report_free(&b); /* NULL is fine */
}

/* Names longer than SG_MAX_PATH are cut, not overflowed. */
static void test_long_names(void **state)
{
    struct budget_report *b = budget_report_new(10);
    struct sb n1 = {0}, n2 = {0};

    (void)state;
    sb_fill(&n1, 'a', SG_MAX_PATH);
    sb_add(&n1, "x@example.org");
    sb_fill(&n2, 'a', SG_MAX_PATH);
    sb_add(&n2, "y@example.org");
    CHECK_INT(
        budget_report_due(b, RATELIMIT_MEMBER_MSG, n1.s, TENANT, 1, HOUR_MS), 1,
        "long name");
    CHECK_INT(
        budget_report_due(b, RATELIMIT_MEMBER_MSG, n2.s, TENANT, 1, HOUR_MS), 0,
        "same first SG_MAX_PATH octets");
    free(n1.s);
    free(n2.s);
    budget_report_free(&b);
}

static void test_key(void **state)
{
    struct cfg *cfg = cfg_defaults();
    unsigned v = 99;

    (void)state;
    CHECK_STR(budget_report_key(cfg, RATELIMIT_MEMBER_MSG, &v),
              "member_msg_per_hour", "member msg key");
    CHECK_INT(v, cfg->member_msg_per_hour, "member msg value");
    CHECK_STR(budget_report_key(cfg, RATELIMIT_MEMBER_RCPT, &v),
              "member_rcpt_per_day", "member rcpt key");
    CHECK_INT(v, cfg->member_rcpt_per_day, "member rcpt value");
    CHECK_STR(budget_report_key(cfg, RATELIMIT_TENANT_MSG, &v),
              "tenant_msg_per_hour", "tenant key");
    CHECK_INT(v, cfg->tenant_msg_per_hour, "tenant value");
    assert_null(budget_report_key(cfg, RATELIMIT_IP_BLOCKED, &v));
    CHECK_INT(v, 0, "no budget");
    CHECK_INT(cfg->budget_report_interval_s, 3600, "default interval");
    cfg_free(&cfg);
}

/* ---- the message ----------------------------------------------------- */

static struct budget_report_info info(void)
{
    struct budget_report_info r = {
        .budget = RATELIMIT_MEMBER_MSG,
        .limit = 500,
        .member = ALICE,
        .tenant = TENANT,
        .to = "admin@example.net",
        .client_ip = "192.0.2.7",
        .session = "s4c1e90a2",
        .qid = "",
        .report_qid = "0123456789AB",
        .hostname = "gw.example.org",
        .now = 1767225600, /* Thu, 01 Jan 2026 00:00:00 +0000 */
        .interval_s = 3600,
    };
    return r;
}

/* Every line ends in CRLF, none is longer than 998 octets, and only
 * printable ASCII is used. */
static void check_lines(const char *msg, size_t len, const char *what)
{
    size_t start = 0, i;

    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)msg[i];
        if (c == '\n') {
            if (i == 0 || msg[i - 1] != '\r')
                fail_msg("%s: bare LF at %zu", what, i);
            if (i - 1 - start > 998)
                fail_msg("%s: line of %zu octets", what, i - 1 - start);
            start = i + 1;
        } else if (c == '\r') {
            if (i + 1 >= len || msg[i + 1] != '\n')
                fail_msg("%s: bare CR at %zu", what, i);
        } else if (c < 0x20 || c > 0x7e) {
            fail_msg("%s: octet 0x%02x at %zu", what, c, i);
        }
    }
    if (start != len)
        fail_msg("%s: last line without CRLF", what);
}

static void expect_has(const char *msg, const char *want, const char *what)
{
    if (strstr(msg, want) == NULL)
        fail_msg("%s: no \"%s\" in:\n%s", what, want, msg);
}

static const char want_head[] =
    "From: Mail Submission Gateway <postmaster@example.org>\r\n"
    "To: <admin@example.net>\r\n"
    "Subject: Sending limit reached by alice@example.org: member messages "
    "per hour\r\n"
    "Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n"
    "Message-ID: <0123456789AB.limit@gw.example.org>\r\n"
    "Auto-Submitted: auto-generated\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=us-ascii\r\n"
    "Content-Transfer-Encoding: 7bit\r\n"
    "\r\n";

static void test_build_member(void **state)
{
    struct budget_report_info r = info();
    size_t len = 0;
    char *msg;

    (void)state;
    msg = budget_report_build(&r, &len);
    assert_non_null(msg);
    CHECK_INT(strlen(msg), len, "length");
    check_lines(msg, len, "member report");
    /* The header section, in order, then the blank line. */
    if (strncmp(msg, want_head, strlen(want_head)) != 0)
        fail_msg("header section: got\n%s\nwant\n%s", msg, want_head);
    expect_has(msg, "\r\nMember:   alice@example.org\r\n", "member");
    expect_has(msg, "\r\nTenant:   example.org\r\n", "tenant");
    expect_has(msg,
               "\r\nLimit:    member messages per hour "
               "(member_msg_per_hour = 500)\r\n",
               "limit");
    expect_has(msg, "\r\nClient:   192.0.2.7\r\n", "client");
    expect_has(msg, "\r\nTime:     Thu, 01 Jan 2026 00:00:00 +0000\r\n",
               "time");
    expect_has(msg, "\r\nQueue ID: none (refused at MAIL FROM)\r\n", "qid");
    expect_has(msg, "\r\nSession:  s4c1e90a2\r\n", "session");
    expect_has(msg,
               "for this member is sent for\r\n1h (budget_report_interval)",
               "interval");
    expect_has(msg, "Member alice@example.org of tenant example.org",
               "first sentence");
    free(msg);
}

static void test_build_kinds(void **state)
{
    struct budget_report_info r = info();
    size_t len;
    char *msg;

    (void)state;
    r.budget = RATELIMIT_MEMBER_RCPT;
    r.limit = 2000;
    r.qid = "7KQ2M4XJ9A00";
    r.interval_s = 90;
    msg = budget_report_build(&r, &len);
    assert_non_null(msg);
    check_lines(msg, len, "recipient report");
    expect_has(msg,
               "Subject: Sending limit reached by alice@example.org: member "
               "recipients per day\r\n",
               "subject");
    expect_has(msg,
               "Limit:    member recipients per day "
               "(member_rcpt_per_day = 2000)\r\n",
               "limit");
    expect_has(msg, "Queue ID: 7KQ2M4XJ9A00 (the refused message)\r\n", "qid");
    expect_has(msg, "took no more recipients", "recipients");
    expect_has(msg, "\r\n90s (budget_report_interval)", "interval in s");
    free(msg);

    r = info();
    r.budget = RATELIMIT_TENANT_MSG;
    r.member = BOB;
    r.limit = 10000;
    r.interval_s = 1800;
    msg = budget_report_build(&r, &len);
    assert_non_null(msg);
    check_lines(msg, len, "tenant report");
    expect_has(msg,
               "Subject: Sending limit reached by bob@example.org: tenant "
               "messages per hour\r\n",
               "subject");
    expect_has(msg,
               "Tenant example.org has reached a sending limit of all its\r\n"
               "members together, at a message from member bob@example.org.",
               "first sentence");
    expect_has(msg,
               "Limit:    tenant messages per hour "
               "(tenant_msg_per_hour = 10000)\r\n",
               "limit");
    expect_has(msg, "Member:   bob@example.org\r\n", "member");
    expect_has(msg, "for this tenant is sent for\r\n30m", "tenant, 30m");
    free(msg);
}

/* The longest fields still give lines within 998 octets. */
static void test_build_longest(void **state)
{
    struct budget_report_info r = info();
    struct sb member = {0}, to = {0}, tenant = {0}, host = {0};
    size_t len;
    char *msg;

    (void)state;
    sb_fill(&member, 'm', SG_MAX_PATH - strlen("@example.org"));
    sb_add(&member, "@example.org");
    sb_fill(&to, 't', SG_MAX_PATH - strlen("@example.net"));
    sb_add(&to, "@example.net");
    sb_fill(&tenant, 'd', SG_MAX_DOMAIN);
    sb_fill(&host, 'h', SG_MAX_DOMAIN);
    r.member = member.s;
    r.to = to.s;
    r.tenant = tenant.s;
    r.hostname = host.s;
    r.budget = RATELIMIT_TENANT_MSG;
    r.limit = 100000000;
    r.interval_s = 7 * 24 * 3600;
    msg = budget_report_build(&r, &len);
    assert_non_null(msg);
    check_lines(msg, len, "longest");
    free(msg);
    free(member.s);
    free(to.s);
    free(tenant.s);
    free(host.s);
}

/* A field that could break a header or a line, or is empty where it may
 * not be, gives no report. */
struct bad_case {
    const char *what;
    int field; /* 0 member, 1 tenant, 2 to, 3 client, 4 session, 5 qid,
                  6 report_qid, 7 hostname, 8 budget */
    const char *value;
};

static const struct bad_case bad_cases[] = {
    {"CRLF in the address", 2, "admin@example.net\r\nBcc: x@example.com"},
    {"LF in the member", 0, "alice@example.org\nX: y"},
    {"CR in the tenant", 1, "example.org\r"},
    {"tab in the client", 3, "192.0.2.7\t"},
    {"non-ASCII in the member", 0, "al\xc3\xa9@example.org"},
    {"DEL in the hostname", 7, "gw\x7f.example.org"},
    {"empty address", 2, ""},
    {"empty member", 0, ""},
    {"empty session", 4, ""},
    {"empty report qid", 6, ""},
    {"CRLF in the queue id", 5, "0123\r\n"},
    {"no budget", 8, NULL},
};

static void test_build_refuses(void **state)
{
    struct budget_report_info r;
    struct sb long_to = {0};
    size_t i, len;
    char *msg;

    (void)state;
    for (i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
        const char **f[] = {&r.member,  &r.tenant, &r.to,         &r.client_ip,
                            &r.session, &r.qid,    &r.report_qid, &r.hostname};

        r = info();
        if (bad_cases[i].field == 8)
            r.budget = RATELIMIT_CONN_RATE;
        else
            *f[bad_cases[i].field] = bad_cases[i].value;
        msg = budget_report_build(&r, &len);
        if (msg != NULL)
            fail_msg("%s: got a message:\n%s", bad_cases[i].what, msg);
    }
    /* One octet over the bound of an address, then at the bound. */
    sb_fill(&long_to, 't', SG_MAX_PATH + 1 - strlen("@example.net"));
    sb_add(&long_to, "@example.net");
    r = info();
    r.to = long_to.s;
    assert_null(budget_report_build(&r, &len));
    r.to = long_to.s + 1;
    msg = budget_report_build(&r, &len);
    assert_non_null(msg);
    free(msg);
    free(long_to.s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_due_steps),
        cmocka_unit_test(test_interval_zero_never),
        cmocka_unit_test(test_forget),
        cmocka_unit_test(test_table_bounded),
        cmocka_unit_test(test_long_names),
        cmocka_unit_test(test_key),
        cmocka_unit_test(test_build_member),
        cmocka_unit_test(test_build_kinds),
        cmocka_unit_test(test_build_longest),
        cmocka_unit_test(test_build_refuses),
    };

    return cmocka_run_group_tests_name("budget_report", tests, NULL, NULL);
}
