/* Unit tests for server/ratelimit: connection counts and rates per
 * address (IPv6 per /64), AUTH failure delays and blocks per address and
 * per (account, address), outbound budgets per member and tenant, and the
 * bound on the table. The clock is a plain number passed in, so every
 * case runs in no time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "../../server/ratelimit.h"

#define MIN_MS 60000ULL
#define HOUR_MS (60 * MIN_MS)
#define DAY_MS (24 * HOUR_MS)

static struct ratelimit_limits limits(void)
{
    struct ratelimit_limits l;

    memset(&l, 0, sizeof(l));
    l.max_conn_per_ip = 3;
    l.conn_rate_per_ip = 10;
    l.auth_fail_limit_ip = 6;
    l.auth_fail_limit_account = 3;
    l.auth_block_ms = 600000;
    l.auth_fail_delay_ms = 1000;
    l.member_msg_per_hour = 4;
    l.member_rcpt_per_day = 10;
    l.tenant_msg_per_hour = 6;
    return l;
}

static void expect_verdict(enum ratelimit_verdict got,
                           enum ratelimit_verdict want, const char *what)
{
    if (got != want)
        fail_msg("%s: got %s, want %s", what, ratelimit_verdict_text(got),
                 ratelimit_verdict_text(want));
}

/* ---- keys ------------------------------------------------------------ */

struct key_case {
    const char *ip, *want;
};

static const struct key_case key_cases[] = {
    {"192.0.2.7", "192.0.2.7"},
    {"2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"},
    {"2001:db8:1:2::ffff", "2001:db8:1:2::/64"},
    {"::ffff:192.0.2.9", "192.0.2.9"},
    {"::1", "::/64"},
    {"unknown", "unknown"},
};

static void test_ip_key(void **state)
{
    char out[64];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(key_cases) / sizeof(key_cases[0]); i++) {
        ratelimit_ip_key(key_cases[i].ip, out, sizeof(out));
        if (strcmp(out, key_cases[i].want) != 0)
            fail_msg("%s: got %s, want %s", key_cases[i].ip, out,
                     key_cases[i].want);
    }
}

/* ---- connections ----------------------------------------------------- */

static void test_conn_count(void **state)
{
    struct ratelimit_limits l = limits();
    struct ratelimit *rl = ratelimit_new(&l, 1000);
    uint64_t t = 1000;

    (void)state;
    expect_verdict(ratelimit_conn_open(rl, "192.0.2.1", t), RATELIMIT_OK, "1");
    expect_verdict(ratelimit_conn_open(rl, "192.0.2.1", t), RATELIMIT_OK, "2");
    expect_verdict(ratelimit_conn_open(rl, "192.0.2.1", t), RATELIMIT_OK, "3");
    expect_verdict(ratelimit_conn_open(rl, "192.0.2.1", t),
                   RATELIMIT_CONN_COUNT, "4th at once");
    /* Another address has its own count. */
    expect_verdict(ratelimit_conn_open(rl, "192.0.2.2", t), RATELIMIT_OK,
                   "other address");
    ratelimit_conn_close(rl, "192.0.2.1", t);
    expect_verdict(ratelimit_conn_open(rl, "192.0.2.1", t), RATELIMIT_OK,
                   "after one closed");
    /* A close of an address never seen is harmless. */
    ratelimit_conn_close(rl, "198.51.100.1", t);
    ratelimit_free(&rl);
    assert_null(rl);
}

static void test_conn_ipv6_prefix(void **state)
{
    struct ratelimit_limits l = limits();
    struct ratelimit *rl = ratelimit_new(&l, 1000);

    (void)state;
    expect_verdict(ratelimit_conn_open(rl, "2001:db8::1", 0), RATELIMIT_OK,
                   "1");
    expect_verdict(ratelimit_conn_open(rl, "2001:db8::2", 0), RATELIMIT_OK,
                   "2");
    expect_verdict(ratelimit_conn_open(rl, "2001:db8::3", 0), RATELIMIT_OK,
                   "3");
    expect_verdict(ratelimit_conn_open(rl, "2001:db8::4", 0),
                   RATELIMIT_CONN_COUNT, "same /64");
    expect_verdict(ratelimit_conn_open(rl, "2001:db8:0:1::4", 0), RATELIMIT_OK,
                   "next /64");
    ratelimit_free(&rl);
}

static void test_conn_rate(void **state)
{
    struct ratelimit_limits l = limits();
    struct ratelimit *rl;
    uint64_t t = 5000;
    int i;

    (void)state;
    l.max_conn_per_ip = 0;
    rl = ratelimit_new(&l, 1000);
    /* A burst of the whole minute's budget, then no more. */
    for (i = 0; i < 10; i++)
        expect_verdict(ratelimit_conn_open(rl, "192.0.2.1", t), RATELIMIT_OK,
                       "within the burst");
    expect_verdict(ratelimit_conn_open(rl, "192.0.2.1", t), RATELIMIT_CONN_RATE,
                   "11th in the same instant");
    /* One comes back every 6 seconds (10 per minute). */
    expect_verdict(ratelimit_conn_open(rl, "192.0.2.1", t + 5999),
                   RATELIMIT_CONN_RATE, "before 6 s");
    expect_verdict(ratelimit_conn_open(rl, "192.0.2.1", t + 6000), RATELIMIT_OK,
                   "after 6 s");
    expect_verdict(ratelimit_conn_open(rl, "192.0.2.1", t + 6000),
                   RATELIMIT_CONN_RATE, "only one came back");
    /* After a quiet minute the whole burst is back. */
    for (i = 0; i < 10; i++)
        expect_verdict(ratelimit_conn_open(rl, "192.0.2.1", t + 3 * MIN_MS),
                       RATELIMIT_OK, "burst again");
    ratelimit_free(&rl);
}

/* ---- AUTH ------------------------------------------------------------ */

static void test_auth_delay_grows(void **state)
{
    struct ratelimit_limits l = limits();
    struct ratelimit *rl;
    const unsigned want[] = {1000, 2000, 4000, 8000, 16000, 30000, 30000};
    size_t i;

    (void)state;
    l.auth_fail_limit_ip = 0;
    l.auth_fail_limit_account = 0;
    rl = ratelimit_new(&l, 1000);
    for (i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        unsigned got =
            ratelimit_auth_fail(rl, "192.0.2.1", "a@example.org", 1000 + i);
        if (got != want[i])
            fail_msg("failure %zu: delay %u, want %u", i + 1, got, want[i]);
    }
    /* Forgotten after auth_block_time without failures. */
    assert_int_equal(ratelimit_auth_fail(rl, "192.0.2.1", "a@example.org",
                                         1000 + 600000 + 10),
                     1000);
    ratelimit_free(&rl);
}

static void test_auth_account_block(void **state)
{
    struct ratelimit_limits l = limits();
    struct ratelimit *rl = ratelimit_new(&l, 1000);
    uint64_t t = 10000, until = 0;
    int i;

    (void)state;
    for (i = 0; i < 2; i++) {
        expect_verdict(
            ratelimit_auth_check(rl, "192.0.2.1", "Alice@Example.org", t, NULL),
            RATELIMIT_OK, "before the limit");
        ratelimit_auth_fail(rl, "192.0.2.1", "Alice@Example.org", t);
    }
    ratelimit_auth_fail(rl, "192.0.2.1", "alice@example.org", t);
    /* Three failures: blocked for this login from this address, whatever
     * the case of the login. */
    expect_verdict(ratelimit_auth_check(rl, "192.0.2.1", "ALICE@example.org",
                                        t + 1, &until),
                   RATELIMIT_ACCOUNT_BLOCKED, "after 3 failures");
    assert_int_equal(until, t + 600000);
    /* Not from another address, and not another login. */
    expect_verdict(
        ratelimit_auth_check(rl, "192.0.2.2", "alice@example.org", t + 1, NULL),
        RATELIMIT_OK, "other address");
    expect_verdict(
        ratelimit_auth_check(rl, "192.0.2.1", "bob@example.org", t + 1, NULL),
        RATELIMIT_OK, "other login");
    /* The block ends. */
    expect_verdict(ratelimit_auth_check(rl, "192.0.2.1", "alice@example.org",
                                        t + 600000, NULL),
                   RATELIMIT_OK, "after auth_block_time");
    ratelimit_free(&rl);
}

static void test_auth_ip_block(void **state)
{
    struct ratelimit_limits l = limits();
    struct ratelimit *rl = ratelimit_new(&l, 1000);
    char login[32];
    uint64_t t = 10000;
    int i;

    (void)state;
    /* Six different logins, one failure each: the address is blocked. */
    for (i = 0; i < 6; i++) {
        snprintf(login, sizeof(login), "user%d@example.org", i);
        ratelimit_auth_fail(rl, "192.0.2.1", login, t);
    }
    expect_verdict(
        ratelimit_auth_check(rl, "192.0.2.1", "new@example.org", t, NULL),
        RATELIMIT_IP_BLOCKED, "any login from the address");
    expect_verdict(ratelimit_conn_open(rl, "192.0.2.1", t),
                   RATELIMIT_IP_BLOCKED, "new connections too");
    expect_verdict(
        ratelimit_auth_check(rl, "192.0.2.2", "new@example.org", t, NULL),
        RATELIMIT_OK, "other address");
    expect_verdict(ratelimit_conn_open(rl, "192.0.2.1", t + 600000),
                   RATELIMIT_OK, "after the block");
    ratelimit_free(&rl);
}

static void test_auth_ok_resets_pair_only(void **state)
{
    struct ratelimit_limits l = limits();
    struct ratelimit *rl = ratelimit_new(&l, 1000);
    uint64_t t = 10000;

    (void)state;
    ratelimit_auth_fail(rl, "192.0.2.1", "alice@example.org", t);
    ratelimit_auth_fail(rl, "192.0.2.1", "alice@example.org", t);
    ratelimit_auth_ok(rl, "192.0.2.1", "alice@example.org", t);
    ratelimit_auth_fail(rl, "192.0.2.1", "alice@example.org", t);
    ratelimit_auth_fail(rl, "192.0.2.1", "alice@example.org", t);
    expect_verdict(
        ratelimit_auth_check(rl, "192.0.2.1", "alice@example.org", t, NULL),
        RATELIMIT_OK, "pair reset by the success");
    /* The address's count was not reset: its delay has grown to the fifth
     * step. */
    assert_int_equal(ratelimit_auth_fail(rl, "192.0.2.1", "bob@example.org", t),
                     16000);
    ratelimit_free(&rl);
}

/* ---- outbound budgets ------------------------------------------------ */

static void test_member_messages(void **state)
{
    struct ratelimit_limits l = limits();
    struct ratelimit *rl = ratelimit_new(&l, 1000);
    uint64_t t = HOUR_MS;
    int i;

    (void)state;
    for (i = 0; i < 4; i++) {
        expect_verdict(ratelimit_msg_check(rl, "a@x.org", "x.org", 1, t),
                       RATELIMIT_OK, "check within budget");
        expect_verdict(ratelimit_msg_take(rl, "a@x.org", "x.org", 1, t),
                       RATELIMIT_OK, "take within budget");
    }
    expect_verdict(ratelimit_msg_check(rl, "A@X.ORG", "x.org", 1, t),
                   RATELIMIT_MEMBER_MSG, "fifth in the hour");
    expect_verdict(ratelimit_msg_take(rl, "a@x.org", "x.org", 1, t),
                   RATELIMIT_MEMBER_MSG, "take refused too");
    /* Another member of the tenant still may. */
    expect_verdict(ratelimit_msg_take(rl, "b@x.org", "x.org", 1, t),
                   RATELIMIT_OK, "other member");
    /* One message comes back every 15 minutes. */
    expect_verdict(
        ratelimit_msg_take(rl, "a@x.org", "x.org", 1, t + 15 * MIN_MS),
        RATELIMIT_OK, "after a quarter hour");
    ratelimit_free(&rl);
}

static void test_member_recipients(void **state)
{
    struct ratelimit_limits l = limits();
    struct ratelimit *rl = ratelimit_new(&l, 1000);
    uint64_t t = DAY_MS;

    (void)state;
    l.member_msg_per_hour = 0;
    ratelimit_free(&rl);
    rl = ratelimit_new(&l, 1000);
    expect_verdict(ratelimit_msg_take(rl, "a@x.org", "x.org", 7, t),
                   RATELIMIT_OK, "7 of 10");
    expect_verdict(ratelimit_msg_check(rl, "a@x.org", "x.org", 3, t),
                   RATELIMIT_OK, "3 more fit");
    expect_verdict(ratelimit_msg_check(rl, "a@x.org", "x.org", 4, t),
                   RATELIMIT_MEMBER_RCPT, "4 more do not");
    /* Refused as a whole: nothing was taken. */
    expect_verdict(ratelimit_msg_take(rl, "a@x.org", "x.org", 4, t),
                   RATELIMIT_MEMBER_RCPT, "take 4");
    expect_verdict(ratelimit_msg_take(rl, "a@x.org", "x.org", 3, t),
                   RATELIMIT_OK, "take 3");
    /* More than the whole budget never fits. */
    expect_verdict(ratelimit_msg_check(rl, "b@x.org", "x.org", 11, t),
                   RATELIMIT_MEMBER_RCPT, "11 at once");
    ratelimit_free(&rl);
}

static void test_tenant_messages(void **state)
{
    struct ratelimit_limits l = limits();
    struct ratelimit *rl = ratelimit_new(&l, 1000);
    char member[32];
    int i;

    (void)state;
    for (i = 0; i < 6; i++) {
        snprintf(member, sizeof(member), "m%d@x.org", i);
        expect_verdict(ratelimit_msg_take(rl, member, "x.org", 1, 0),
                       RATELIMIT_OK, "within the tenant's budget");
    }
    expect_verdict(ratelimit_msg_take(rl, "m9@x.org", "x.org", 1, 0),
                   RATELIMIT_TENANT_MSG, "seventh of the tenant");
    expect_verdict(ratelimit_msg_take(rl, "m9@y.org", "y.org", 1, 0),
                   RATELIMIT_OK, "other tenant");
    /* The refused message was not counted for its member. */
    for (i = 0; i < 4; i++)
        expect_verdict(ratelimit_msg_check(rl, "m9@x.org", "z.org", 1, 0),
                       RATELIMIT_OK, "member budget untouched");
    ratelimit_free(&rl);
}

static void test_limits_off(void **state)
{
    struct ratelimit_limits l;
    struct ratelimit *rl;
    int i;

    (void)state;
    memset(&l, 0, sizeof(l));
    l.auth_block_ms = 1000;
    rl = ratelimit_new(&l, 1000);
    for (i = 0; i < 500; i++) {
        expect_verdict(ratelimit_conn_open(rl, "192.0.2.1", 0), RATELIMIT_OK,
                       "conn");
        expect_verdict(ratelimit_msg_take(rl, "a@x.org", "x.org", 100, 0),
                       RATELIMIT_OK, "msg");
        assert_int_equal(
            ratelimit_auth_fail(rl, "192.0.2.1", "a@x.org", (uint64_t)i), 0);
    }
    expect_verdict(ratelimit_auth_check(rl, "192.0.2.1", "a@x.org", 500, NULL),
                   RATELIMIT_OK, "never blocked");
    ratelimit_free(&rl);
}

/* ---- the bound on the table ------------------------------------------ */

static void test_table_bounded(void **state)
{
    struct ratelimit_limits l = limits();
    struct ratelimit *rl = ratelimit_new(&l, 100);
    char ip[32];
    int i;

    (void)state;
    /* Ten open connections stay, whatever else comes. */
    for (i = 0; i < 10; i++) {
        snprintf(ip, sizeof(ip), "10.0.0.%d", i);
        expect_verdict(ratelimit_conn_open(rl, ip, 0), RATELIMIT_OK, "open");
    }
    /* Thousands of failed logins from other addresses and logins. */
    for (i = 0; i < 5000; i++) {
        char login[32];
        snprintf(ip, sizeof(ip), "10.1.%d.%d", i / 250, i % 250);
        snprintf(login, sizeof(login), "guess%d@example.org", i);
        ratelimit_auth_fail(rl, ip, login, (uint64_t)i);
        if (ratelimit_count(rl) > 100)
            fail_msg("table holds %zu entries, bound 100", ratelimit_count(rl));
    }
    /* The open connections were never evicted: closing them all makes
     * room, and a fourth connection of one address is still refused. */
    for (i = 0; i < 2; i++)
        expect_verdict(ratelimit_conn_open(rl, "10.0.0.0", 5000), RATELIMIT_OK,
                       "2nd and 3rd");
    expect_verdict(ratelimit_conn_open(rl, "10.0.0.0", 5000),
                   RATELIMIT_CONN_COUNT, "4th");
    /* Idle entries are swept once their state has run out. */
    for (i = 0; i < 10; i++) {
        snprintf(ip, sizeof(ip), "10.0.0.%d", i);
        ratelimit_conn_close(rl, ip, 5000);
    }
    ratelimit_free(&rl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ip_key),
        cmocka_unit_test(test_conn_count),
        cmocka_unit_test(test_conn_ipv6_prefix),
        cmocka_unit_test(test_conn_rate),
        cmocka_unit_test(test_auth_delay_grows),
        cmocka_unit_test(test_auth_account_block),
        cmocka_unit_test(test_auth_ip_block),
        cmocka_unit_test(test_auth_ok_resets_pair_only),
        cmocka_unit_test(test_member_messages),
        cmocka_unit_test(test_member_recipients),
        cmocka_unit_test(test_tenant_messages),
        cmocka_unit_test(test_limits_off),
        cmocka_unit_test(test_table_bounded),
    };

    return cmocka_run_group_tests_name("ratelimit", tests, NULL, NULL);
}
