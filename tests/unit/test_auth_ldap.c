/* Unit tests for the pure parts of server/auth_ldap: RFC 4515 filter and
 * RFC 4514 DN escaping of logins (so that a login cannot change the
 * filter or the DN it is put into), template expansion, the login forms,
 * addresses and fingerprints read from attribute values. Outputs go to
 * heap blocks of the exact size allowed, so that AddressSanitizer reports
 * a write past the end. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../server/auth_ldap.h"

struct esc_case {
    const char *name;
    const char *in;
    const char *want; /* NULL: must fail */
};

static const struct esc_case filter_cases[] = {
    {"plain", "alice", "alice"},
    {"star", "*", "\\2a"},
    {"injection", "*)(uid=*", "\\2a\\29\\28uid=\\2a"},
    {"or injection", "alice)(|(uid=*", "alice\\29\\28|\\28uid=\\2a"},
    {"backslash", "a\\2a", "a\\5c2a"},
    {"dn specials stay", "a,b+c=d", "a,b+c=d"},
    {"utf-8 stays", "j\xc3\xb6rg", "j\xc3\xb6rg"},
    {"empty", "", ""},
};

static const struct esc_case dn_cases[] = {
    {"plain", "alice", "alice"},
    {"comma", "a,ou=admins", "a\\,ou\\=admins"},
    {"plus", "a+cn=x", "a\\+cn\\=x"},
    {"quote and angles", "\"<a>;\"", "\\\"\\<a\\>\\;\\\""},
    {"backslash", "a\\b", "a\\\\b"},
    {"leading space", " a", "\\ a"},
    {"leading hash", "#a", "\\#a"},
    {"inner hash and space", "a# b", "a# b"},
    {"trailing space", "a ", "a\\ "},
    {"one space", " ", "\\ "},
    {"control octet", "a\x01z", "a\\01z"},
    {"filter specials stay", "a*(b)", "a*(b)"},
    {"utf-8 stays", "j\xc3\xb6rg", "j\xc3\xb6rg"},
};

/* Runs fn into a buffer of exactly the room needed, then one octet less,
 * which must fail without writing past it. */
static int check_escape(const struct esc_case *tc,
                        int (*fn)(const char *, char *, size_t))
{
    size_t need = tc->want != NULL ? strlen(tc->want) + 1 : 64;
    char *out = malloc(need);
    int rc, ok = 1;

    assert_non_null(out);
    rc = fn(tc->in, out, need);
    if (tc->want == NULL ? rc == 0 : rc != 0 || strcmp(out, tc->want) != 0) {
        print_error("%s: got rc %d '%s', want '%s'\n", tc->name, rc,
                    rc == 0 ? out : "", tc->want ? tc->want : "(fail)");
        ok = 0;
    }
    if (tc->want != NULL && need > 1 && fn(tc->in, out, need - 1) == 0) {
        print_error("%s: room for %zu octets: got success, want -1\n", tc->name,
                    need - 1);
        ok = 0;
    }
    free(out);
    return ok;
}

static void test_escape_filter(void **state)
{
    size_t i;
    int failed = 0;

    (void)state;
    for (i = 0; i < sizeof filter_cases / sizeof filter_cases[0]; i++)
        failed += !check_escape(&filter_cases[i], auth_ldap_escape_filter);
    if (failed)
        fail_msg("%d filter case(s) failed", failed);
}

static void test_escape_dn(void **state)
{
    size_t i;
    int failed = 0;

    (void)state;
    for (i = 0; i < sizeof dn_cases / sizeof dn_cases[0]; i++)
        failed += !check_escape(&dn_cases[i], auth_ldap_escape_dn);
    if (failed)
        fail_msg("%d DN case(s) failed", failed);
}

struct expand_case {
    const char *name;
    const char *tmpl;
    const char *value;
    int dn;
    const char *want; /* NULL: must fail */
};

static const struct expand_case expand_cases[] = {
    {"dn template", "uid=%u,ou=people,dc=example,dc=org", "alice", 1,
     "uid=alice,ou=people,dc=example,dc=org"},
    {"dn injection", "uid=%u,ou=people,dc=example,dc=org",
     "x,ou=admins,dc=example,dc=org", 1,
     "uid=x\\,ou\\=admins\\,dc\\=example\\,dc\\=org,ou=people,dc=example,"
     "dc=org"},
    {"filter", "(&(uid=%u)(objectClass=posixAccount))", "bob", 0,
     "(&(uid=bob)(objectClass=posixAccount))"},
    {"filter injection", "(uid=%u)", "*)(uid=*", 0,
     "(uid=\\2a\\29\\28uid=\\2a)"},
    {"twice", "(|(uid=%u)(mail=%u))", "a*", 0, "(|(uid=a\\2a)(mail=a\\2a))"},
    {"percent", "(uid=%u)(x=100%%)", "a", 0, "(uid=a)(x=100%)"},
    {"other sequence", "(uid=%s)", "a", 0, NULL},
    {"lone percent at end", "(uid=%u)%", "a", 0, NULL},
};

static void test_expand(void **state)
{
    size_t i;
    int failed = 0;

    (void)state;
    for (i = 0; i < sizeof expand_cases / sizeof expand_cases[0]; i++) {
        const struct expand_case *tc = &expand_cases[i];
        size_t need = tc->want != NULL ? strlen(tc->want) + 1 : 256;
        char *out = malloc(need);
        int rc;

        assert_non_null(out);
        rc = auth_ldap_expand(tc->tmpl, tc->value, tc->dn, out, need);
        if (tc->want == NULL ? rc == 0
                             : rc != 0 || strcmp(out, tc->want) != 0) {
            print_error("%s: got rc %d '%s', want '%s'\n", tc->name, rc,
                        rc == 0 ? out : "", tc->want ? tc->want : "(fail)");
            failed++;
        } else if (tc->want != NULL &&
                   auth_ldap_expand(tc->tmpl, tc->value, tc->dn, out,
                                    need - 1) == 0) {
            print_error("%s: one octet short: got success\n", tc->name);
            failed++;
        }
        free(out);
    }
    if (failed)
        fail_msg("%d expansion case(s) failed", failed);
}

static void test_uid(void **state)
{
    static const struct {
        const char *name;
        enum db_ldap_login form;
        const char *login;
        const char *want; /* NULL: not a usable login */
    } cases[] = {
        {"bare uid", DB_LDAP_LOGIN_UID, "alice", "alice"},
        {"address to uid", DB_LDAP_LOGIN_UID, "alice@ldap.example", "alice"},
        {"last at sign", DB_LDAP_LOGIN_UID, "\"a@b\"@ldap.example", "\"a@b\""},
        {"address kept", DB_LDAP_LOGIN_ADDRESS, "Alice@ldap.example",
         "Alice@ldap.example"},
        {"bare to address", DB_LDAP_LOGIN_ADDRESS, "alice",
         "alice@ldap.example"},
        {"empty", DB_LDAP_LOGIN_UID, "", NULL},
        {"empty local part", DB_LDAP_LOGIN_UID, "@ldap.example", NULL},
        {"control octet", DB_LDAP_LOGIN_UID, "al\nice", NULL},
        {"delete octet", DB_LDAP_LOGIN_ADDRESS,
         "al\x7f"
         "ice",
         NULL},
    };
    struct db_tenant_auth *t = calloc(1, sizeof(*t));
    char out[SG_MAX_PATH + 1];
    size_t i;
    int failed = 0;

    (void)state;
    assert_non_null(t);
    snprintf(t->tenant, sizeof t->tenant, "ldap.example");
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc;
        t->ldap.login_form = cases[i].form;
        rc = auth_ldap_uid(t, cases[i].login, out, sizeof out);
        if (cases[i].want == NULL
                ? rc != 0
                : rc != 1 || strcmp(out, cases[i].want) != 0) {
            print_error("%s: got %d '%s', want '%s'\n", cases[i].name, rc,
                        rc == 1 ? out : "",
                        cases[i].want ? cases[i].want : "(refused)");
            failed++;
        }
    }
    /* One octet over the room given: refused, not cut. */
    t->ldap.login_form = DB_LDAP_LOGIN_UID;
    if (auth_ldap_uid(t, "abcd", out, 4) != 0 ||
        auth_ldap_uid(t, "abc", out, 4) != 1) {
        print_error("bound: want 'abc' in 4 octets, 'abcd' refused\n");
        failed++;
    }
    free(t);
    if (failed)
        fail_msg("%d login case(s) failed", failed);
}

static void test_addresses(void **state)
{
    static const struct {
        const char *value;
        int rc;
        const char *added;
    } cases[] = {
        {"alice@Ldap.Example", 1, "alice@ldap.example"},
        {"ALICE@ldap.example", 0, NULL}, /* the same address again */
        {"SMTP:al@ldap.example", 1, "al@ldap.example"},
        {"smtp:alice.smith@alias.example", 1, "alice.smith@alias.example"},
        {"X500:/o=Example/ou=Users/cn=alice", 0, NULL},
        {"sip:alice@ldap.example", 0, NULL},
        {"alice@other.example", -1, NULL},
        {"alice@ldap.example.evil", -1, NULL},
        {"not an address", 0, NULL},
        {"alice@", 0, NULL},
        {"", 0, NULL},
    };
    struct db_member *m = calloc(1, sizeof(*m));
    const char *domains = "ldap.example alias.example";
    char big[SG_MAX_PATH + 16];
    size_t i, n = 0;
    int failed = 0, rc;

    (void)state;
    assert_non_null(m);
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rc = auth_ldap_add_address(m, domains, cases[i].value,
                                   strlen(cases[i].value));
        if (rc != cases[i].rc ||
            (rc == 1 && strcmp(m->addrs[n], cases[i].added) != 0)) {
            print_error("'%s': got %d '%s', want %d '%s'\n", cases[i].value, rc,
                        rc == 1 ? m->addrs[n] : "", cases[i].rc,
                        cases[i].added ? cases[i].added : "");
            failed++;
        }
        n += rc == 1;
    }
    if (m->naddrs != n)
        fail_msg("got %zu addresses, want %zu", m->naddrs, n);
    /* A value holding a NUL, and one over SG_MAX_PATH, are not addresses. */
    if (auth_ldap_add_address(m, domains, "x@ldap.example\0y", 16) != 0) {
        print_error("NUL inside: got it added\n");
        failed++;
    }
    memset(big, 'a', sizeof big);
    memcpy(big + sizeof big - 14, "@ldap.example", 13);
    if (auth_ldap_add_address(m, domains, big, sizeof big - 1) != 0) {
        print_error("over SG_MAX_PATH: got it added\n");
        failed++;
    }
    free(m);
    if (failed)
        fail_msg("%d address case(s) failed", failed);
}

static void test_fingerprint(void **state)
{
    static const struct {
        const char *value;
        const char *want; /* NULL: not a fingerprint */
    } cases[] = {
        {"0123456789abcdef0123456789ABCDEF01234567",
         "0123456789ABCDEF0123456789ABCDEF01234567"},
        {"0123 4567 89AB CDEF 0123  4567 89AB CDEF 0123 4567",
         "0123456789ABCDEF0123456789ABCDEF01234567"},
        {"0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF",
         "0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF"},
        {"0123456789ABCDEF0123456789ABCDEF0123456", NULL},   /* 39 */
        {"0123456789ABCDEF0123456789ABCDEF012345678", NULL}, /* 41 */
        {"0123456789ABCDEF0123456789ABCDEF0123456G", NULL},
        {"0x0123456789ABCDEF0123456789ABCDEF01234567", NULL},
        {"", NULL},
    };
    char out[SG_MAX_FINGERPRINT + 1];
    size_t i;
    int failed = 0, rc;

    (void)state;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rc = auth_ldap_fingerprint(cases[i].value, strlen(cases[i].value), out,
                                   sizeof out);
        if (cases[i].want == NULL
                ? rc != 0
                : rc != 1 || strcmp(out, cases[i].want) != 0) {
            print_error("'%s': got %d '%s'\n", cases[i].value, rc,
                        rc == 1 ? out : "");
            failed++;
        }
    }
    if (failed)
        fail_msg("%d fingerprint case(s) failed", failed);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escape_filter),
        cmocka_unit_test(test_escape_dn),
        cmocka_unit_test(test_expand),
        cmocka_unit_test(test_uid),
        cmocka_unit_test(test_addresses),
        cmocka_unit_test(test_fingerprint),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
