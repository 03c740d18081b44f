/* Unit tests for server/auth_cache: hits and misses, positive and negative
 * TTLs on an injected clock, generations, the size bound with least
 * recently used eviction, member records kept for positive entries, and
 * keys and stamps that are keyed hashes holding nothing of the password. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../server/auth_cache.h"

/* The injected clock: milliseconds, moved by the tests. */
static uint64_t fake_now_ms;

static uint64_t fake_clock(void *arg)
{
    (void)arg;
    return fake_now_ms;
}

static struct auth_cache *new_cache(size_t max, uint64_t pos, uint64_t neg)
{
    struct auth_cache *c;

    fake_now_ms = 1000000;
    c = auth_cache_new(max, pos, neg, fake_clock, NULL);
    assert_non_null(c);
    return c;
}

static void make_key(struct auth_cache *c, long long tid, const char *login,
                     const char *pw, unsigned char *key)
{
    if (auth_cache_key(c, tid, login, pw, key) != 0)
        fail_msg("auth_cache_key(%lld, %s) failed", tid, login);
}

/* A member with n addresses of the form uN@example.org. */
static struct db_member *member_new(size_t n)
{
    struct db_member *m = calloc(1, sizeof(*m));
    size_t i;

    assert_non_null(m);
    m->tenant_id = 7;
    snprintf(m->tenant, sizeof m->tenant, "example.org");
    m->sender_policy = DB_POLICY_REWRITE;
    m->from_policy = DB_POLICY_REJECT;
    snprintf(m->pgp_fingerprint, sizeof m->pgp_fingerprint, "%s",
             "0123456789ABCDEF0123456789ABCDEF01234567");
    for (i = 0; i < n; i++)
        snprintf(m->addrs[i], sizeof m->addrs[i], "u%zu@example.org", i);
    m->naddrs = n;
    snprintf(m->address, sizeof m->address, "%s", m->addrs[0]);
    return m;
}

static void test_hit_and_miss(void **state)
{
    struct auth_cache *c = new_cache(100, 60000, 10000);
    struct db_member *m = member_new(3), *got = calloc(1, sizeof(*got));
    unsigned char k1[AUTH_CACHE_KEY_LEN], k2[AUTH_CACHE_KEY_LEN];
    struct auth_cache_hit hit;

    (void)state;
    assert_non_null(got);
    make_key(c, 7, "alice", "right", k1);
    make_key(c, 7, "alice", "wrong", k2);
    if (auth_cache_get(c, k1, 1, &hit, got) != 0)
        fail_msg("empty cache: got a hit, want a miss");
    auth_cache_put(c, k1, 1, 1, "ok", NULL, m);
    if (auth_cache_get(c, k1, 1, &hit, got) != 1)
        fail_msg("after put: got a miss, want a hit");
    if (hit.verdict != 1 || !hit.has_member)
        fail_msg("hit: got verdict %d has_member %d, want 1 1", hit.verdict,
                 hit.has_member);
    if (got->naddrs != 3 || strcmp(got->addrs[2], "u2@example.org") != 0 ||
        strcmp(got->address, "u0@example.org") != 0 ||
        strcmp(got->tenant, "example.org") != 0 || got->tenant_id != 7 ||
        got->sender_policy != DB_POLICY_REWRITE ||
        strcmp(got->pgp_fingerprint, m->pgp_fingerprint) != 0 ||
        got->password_hash != NULL)
        fail_msg("member: got %zu addrs, [2]=%s address=%s tenant=%s fp=%s",
                 got->naddrs, got->addrs[2], got->address, got->tenant,
                 got->pgp_fingerprint);
    if (auth_cache_get(c, k2, 1, &hit, NULL) != 0)
        fail_msg("other password: got a hit, want a miss");
    /* Another generation (the tenant's settings changed): a miss, and the
     * entry is gone for its own generation too. */
    if (auth_cache_get(c, k1, 2, &hit, NULL) != 0)
        fail_msg("other generation: got a hit, want a miss");
    if (auth_cache_count(c) != 0)
        fail_msg("stale generation: got %zu entries, want 0",
                 auth_cache_count(c));
    free(m);
    free(got);
    auth_cache_free(&c);
    assert_null(c);
}

static void test_ttl_expiry(void **state)
{
    struct auth_cache *c = new_cache(100, 1000, 500);
    unsigned char kp[AUTH_CACHE_KEY_LEN], kn[AUTH_CACHE_KEY_LEN];
    struct auth_cache_hit hit;
    static const struct {
        uint64_t at;  /* ms after the puts */
        int pos, neg; /* hit expected */
    } steps[] = {
        {0, 1, 1}, {499, 1, 1}, {500, 1, 0}, {999, 1, 0}, {1000, 0, 0}};
    uint64_t start;
    size_t i;

    (void)state;
    make_key(c, 1, "a@example.org", "pw", kp);
    make_key(c, 1, "a@example.org", "bad", kn);
    start = fake_now_ms;
    auth_cache_put(c, kp, 5, 1, "ok", NULL, NULL);
    auth_cache_put(c, kn, 5, 0, "bad password", NULL, NULL);
    for (i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        int p, n;
        fake_now_ms = start + steps[i].at;
        p = auth_cache_get(c, kp, 5, &hit, NULL);
        n = auth_cache_get(c, kn, 5, &hit, NULL);
        if (p != steps[i].pos || n != steps[i].neg)
            fail_msg("at +%llums: got positive %d negative %d, want %d %d",
                     (unsigned long long)steps[i].at, p, n, steps[i].pos,
                     steps[i].neg);
    }
    if (auth_cache_count(c) != 0)
        fail_msg("expired entries: got %zu left, want 0", auth_cache_count(c));
    auth_cache_free(&c);
}

static void test_negative(void **state)
{
    struct auth_cache *c = new_cache(100, 1000, 1000);
    struct auth_cache *no_neg = new_cache(100, 1000, 0);
    unsigned char k[AUTH_CACHE_KEY_LEN], stamp[AUTH_CACHE_KEY_LEN];
    struct auth_cache_hit hit;

    (void)state;
    memset(stamp, 0xab, sizeof stamp);
    make_key(c, 1, "bob@example.org", "guess", k);
    auth_cache_put(c, k, 9, 0, "bad password", stamp, NULL);
    if (auth_cache_get(c, k, 9, &hit, NULL) != 1)
        fail_msg("negative entry: got a miss, want a hit");
    if (hit.verdict != 0 || strcmp(hit.reason, "bad password") != 0 ||
        memcmp(hit.stamp, stamp, sizeof stamp) != 0 || hit.has_member)
        fail_msg("negative hit: got verdict %d reason %s", hit.verdict,
                 hit.reason);
    /* Negative TTL 0: refused logins are not remembered. */
    make_key(no_neg, 1, "bob@example.org", "guess", k);
    auth_cache_put(no_neg, k, 9, 0, "bad password", NULL, NULL);
    if (auth_cache_count(no_neg) != 0)
        fail_msg("negative TTL 0: got %zu entries, want 0",
                 auth_cache_count(no_neg));
    auth_cache_free(&c);
    auth_cache_free(&no_neg);
}

static void test_eviction_bound(void **state)
{
    enum { MAX = 4, PUTS = 10 };
    struct auth_cache *c = new_cache(MAX, 60000, 60000);
    unsigned char k[PUTS + 1][AUTH_CACHE_KEY_LEN];
    struct auth_cache_hit hit;
    char login[32];
    int i;

    (void)state;
    for (i = 0; i <= PUTS; i++) {
        snprintf(login, sizeof login, "u%d@example.org", i);
        make_key(c, 1, login, "pw", k[i]);
    }
    for (i = 0; i < PUTS; i++) {
        auth_cache_put(c, k[i], 1, 1, "ok", NULL, NULL);
        if (auth_cache_count(c) > MAX)
            fail_msg("after %d puts: got %zu entries, bound %d", i + 1,
                     auth_cache_count(c), MAX);
    }
    for (i = 0; i < PUTS; i++) {
        int want = i >= PUTS - MAX;
        if (auth_cache_get(c, k[i], 1, &hit, NULL) != want)
            fail_msg("entry %d: got %s, want %s", i, want ? "miss" : "hit",
                     want ? "hit" : "miss");
    }
    /* Entries 6..9 are in; 6 was used longest ago... until it is used. */
    assert_int_equal(auth_cache_get(c, k[6], 1, &hit, NULL), 1);
    auth_cache_put(c, k[PUTS], 1, 1, "ok", NULL, NULL);
    if (auth_cache_get(c, k[7], 1, &hit, NULL) != 0 ||
        auth_cache_get(c, k[6], 1, &hit, NULL) != 1 ||
        auth_cache_get(c, k[PUTS], 1, &hit, NULL) != 1)
        fail_msg("least recently used: want 7 evicted, 6 and 10 kept");
    /* A second put of a key replaces its entry. */
    auth_cache_put(c, k[PUTS], 1, 0, "bad password", NULL, NULL);
    assert_int_equal(auth_cache_count(c), MAX);
    assert_int_equal(auth_cache_get(c, k[PUTS], 1, &hit, NULL), 1);
    assert_int_equal(hit.verdict, 0);
    auth_cache_drop(c, k[PUTS]);
    assert_int_equal(auth_cache_get(c, k[PUTS], 1, &hit, NULL), 0);
    auth_cache_free(&c);
}

static void test_size_zero_and_large_member(void **state)
{
    struct auth_cache *off = new_cache(0, 60000, 60000);
    struct auth_cache *c = new_cache(10, 60000, 60000);
    struct db_member *big = member_new(SG_MAX_MEMBER_ADDRS);
    struct db_member *small = member_new(1);
    unsigned char k[AUTH_CACHE_KEY_LEN];
    struct auth_cache_hit hit;

    (void)state;
    make_key(off, 1, "a", "b", k);
    auth_cache_put(off, k, 1, 1, "ok", NULL, small);
    assert_int_equal(auth_cache_get(off, k, 1, &hit, NULL), 0);
    /* Over AUTH_CACHE_MAX_MEMBER packed: not kept, asked again instead. */
    make_key(c, 1, "a", "b", k);
    auth_cache_put(c, k, 1, 1, "ok", NULL, big);
    if (auth_cache_count(c) != 0)
        fail_msg("member of %d addresses: got it cached, want not",
                 SG_MAX_MEMBER_ADDRS);
    free(big);
    free(small);
    auth_cache_free(&off);
    auth_cache_free(&c);
}

/* memmem for the key bytes. */
static int contains(const unsigned char *hay, size_t n, const char *needle)
{
    size_t len = strlen(needle), i;

    for (i = 0; i + len <= n; i++)
        if (memcmp(hay + i, needle, len) == 0)
            return 1;
    return 0;
}

static void test_keys(void **state)
{
    struct auth_cache *c = new_cache(10, 1, 1);
    struct auth_cache *other = new_cache(10, 1, 1);
    unsigned char a[AUTH_CACHE_KEY_LEN], b[AUTH_CACHE_KEY_LEN];
    static const struct {
        const char *name;
        long long tid;
        const char *login, *pw;
    } diff[] = {
        {"other password", 1, "alice", "Secret-1x"},
        {"other login", 1, "alicf", "Secret-1"},
        {"other tenant", 2, "alice", "Secret-1"},
        {"moved boundary", 1, "aliceS", "ecret-1"},
    };
    size_t i;

    (void)state;
    make_key(c, 1, "alice", "Secret-1", a);
    make_key(c, 1, "alice", "Secret-1", b);
    if (memcmp(a, b, sizeof a) != 0)
        fail_msg("same credentials: got two keys, want one");
    for (i = 0; i < sizeof diff / sizeof diff[0]; i++) {
        make_key(c, diff[i].tid, diff[i].login, diff[i].pw, b);
        if (memcmp(a, b, sizeof a) == 0)
            fail_msg("%s: got the same key, want another", diff[i].name);
    }
    /* The per-process secret: another cache, another key. */
    make_key(other, 1, "alice", "Secret-1", b);
    if (memcmp(a, b, sizeof a) == 0)
        fail_msg("two caches: got the same key, want a secret of each");
    /* No piece of the password in the key; the key is all an entry
     * keeps of the credentials. */
    if (contains(a, sizeof a, "Sec") || contains(a, sizeof a, "ret"))
        fail_msg("key holds part of the password");
    auth_cache_free(&c);
    auth_cache_free(&other);
}

static void test_stamps(void **state)
{
    struct auth_cache *c = new_cache(10, 1, 1);
    struct db_member *m = member_new(1);
    unsigned char base[AUTH_CACHE_KEY_LEN], s[AUTH_CACHE_KEY_LEN];
    char hash1[] = "$y$j9T$salt$hash1", hash2[] = "$y$j9T$salt$hash2";

    (void)state;
    m->id = 3;
    m->password_changed = 1700000000;
    m->password_hash = hash1;
    assert_int_equal(auth_cache_stamp(c, m, base), 0);
    assert_int_equal(auth_cache_stamp(c, m, s), 0);
    if (memcmp(base, s, sizeof s) != 0)
        fail_msg("same row: got two stamps");
    /* `member passwd` within the same second still changes the hash. */
    m->password_hash = hash2;
    assert_int_equal(auth_cache_stamp(c, m, s), 0);
    if (memcmp(base, s, sizeof s) == 0)
        fail_msg("new hash: got the same stamp");
    m->password_hash = hash1;
    m->password_changed++;
    assert_int_equal(auth_cache_stamp(c, m, s), 0);
    if (memcmp(base, s, sizeof s) == 0)
        fail_msg("new change time: got the same stamp");
    m->password_changed--;
    m->disabled = 1;
    assert_int_equal(auth_cache_stamp(c, m, s), 0);
    if (memcmp(base, s, sizeof s) == 0)
        fail_msg("disabled: got the same stamp");
    m->disabled = 0;
    m->password_hash = NULL;
    assert_int_equal(auth_cache_stamp(c, m, s), 0);
    if (memcmp(base, s, sizeof s) == 0)
        fail_msg("no password: got the same stamp");
    assert_int_equal(auth_cache_stamp(c, NULL, s), 0);
    if (memcmp(base, s, sizeof s) == 0)
        fail_msg("no member: got the member's stamp");
    free(m);
    auth_cache_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hit_and_miss),
        cmocka_unit_test(test_ttl_expiry),
        cmocka_unit_test(test_negative),
        cmocka_unit_test(test_eviction_bound),
        cmocka_unit_test(test_size_zero_and_large_member),
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_stamps),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
