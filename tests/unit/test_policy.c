/* Unit tests for server/policy: the envelope sender and From: checks
 * against a member's addresses, with both tenant policies, and the DKIM
 * signing domain. Messages are copied into heap blocks of their exact size
 * so that AddressSanitizer reports a read past the end. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../server/policy.h"

#define MAX_TEST_HEADERS 16

/* alice@example.org with two aliases; policies as given. */
static struct db_member *member_new(enum db_policy sender, enum db_policy from)
{
    struct db_member *m = calloc(1, sizeof(*m));

    assert_non_null(m);
    snprintf(m->address, sizeof(m->address), "alice@example.org");
    snprintf(m->tenant, sizeof(m->tenant), "example.org");
    m->sender_policy = sender;
    m->from_policy = from;
    snprintf(m->addrs[0], sizeof(m->addrs[0]), "alice@example.org");
    snprintf(m->addrs[1], sizeof(m->addrs[1]), "Alice.Smith@Example.org");
    snprintf(m->addrs[2], sizeof(m->addrs[2]), "webmaster@example.net");
    m->naddrs = 3;
    return m;
}

/* ---- envelope sender ------------------------------------------------- */

struct sender_case {
    const char *name;
    enum db_policy policy;
    const char *sender;
    const char *reply; /* NULL: accepted */
    const char *use;   /* accepted: the address to use */
    int rewritten;
};

static const struct sender_case sender_cases[] = {
    {"primary", DB_POLICY_REJECT, "alice@example.org", NULL,
     "alice@example.org", 0},
    {"alias", DB_POLICY_REJECT, "alice.smith@example.org", NULL,
     "alice.smith@example.org", 0},
    {"other domain alias", DB_POLICY_REJECT, "webmaster@example.net", NULL,
     "webmaster@example.net", 0},
    {"case-insensitive", DB_POLICY_REJECT, "ALICE@Example.ORG", NULL,
     "ALICE@Example.ORG", 0},
    {"not owned reject", DB_POLICY_REJECT, "bob@example.org",
     "553 5.7.1 Sender address <bob@example.org> not owned by user "
     "<alice@example.org>",
     NULL, 0},
    {"lookalike reject", DB_POLICY_REJECT, "alice@example.org.evil.example",
     "553 5.7.1 Sender address <alice@example.org.evil.example> not owned "
     "by user <alice@example.org>",
     NULL, 0},
    {"not owned rewrite", DB_POLICY_REWRITE, "bob@example.org", NULL,
     "alice@example.org", 1},
    {"owned under rewrite", DB_POLICY_REWRITE, "alice.smith@example.org", NULL,
     "alice.smith@example.org", 0},
    {"null sender reject", DB_POLICY_REJECT, "",
     "553 5.7.1 Null sender not allowed", NULL, 0},
    {"null sender rewrite", DB_POLICY_REWRITE, "",
     "553 5.7.1 Null sender not allowed", NULL, 0},
};

static void test_sender(void **state)
{
    char reply[POLICY_REPLY_MAX];
    size_t i;
    int failed = 0;

    (void)state;
    for (i = 0; i < sizeof(sender_cases) / sizeof(sender_cases[0]); i++) {
        const struct sender_case *tc = &sender_cases[i];
        struct db_member *m = member_new(tc->policy, DB_POLICY_REJECT);
        const char *use = NULL, *r;
        int rewritten = -1;

        r = policy_check_sender(m, tc->sender, &use, &rewritten, reply,
                                sizeof(reply));
        if (tc->reply != NULL) {
            if (r == NULL || strcmp(r, tc->reply) != 0) {
                print_error("sender %s: got reply '%s', want '%s'\n", tc->name,
                            r ? r : "(accepted)", tc->reply);
                failed++;
            }
        } else if (r != NULL) {
            print_error("sender %s: got reply '%s', want accepted\n", tc->name,
                        r);
            failed++;
        } else if (use == NULL || strcmp(use, tc->use) != 0 ||
                   rewritten != tc->rewritten) {
            print_error("sender %s: got use <%s> rewritten %d, want <%s> "
                        "%d\n",
                        tc->name, use ? use : "(null)", rewritten, tc->use,
                        tc->rewritten);
            failed++;
        }
        free(m);
    }
    if (failed)
        fail_msg("%d sender case(s) failed", failed);
}

/* ---- From: header ---------------------------------------------------- */

/* Splits the header section of msg into fields as smtp_data does: a line
 * starting with space or tab continues the previous field; the first
 * empty line ends the section. Returns the count. */
static size_t split_headers(const char *msg, size_t len, struct smtp_header *h,
                            size_t max)
{
    size_t off = 0, n = 0;

    while (off < len) {
        const char *eol = strstr(msg + off, "\r\n");
        size_t llen = eol != NULL ? (size_t)(eol - (msg + off)) : len - off;
        const char *colon;

        if (llen == 0)
            break;
        if ((msg[off] == ' ' || msg[off] == '\t') && n > 0) {
            h[n - 1].len = off + llen - h[n - 1].off;
        } else {
            colon = memchr(msg + off, ':', llen);
            assert_non_null(colon);
            assert_true(n < max);
            h[n].off = off;
            h[n].len = llen;
            h[n].name_len = (size_t)(colon - (msg + off));
            n++;
        }
        off += llen + 2;
    }
    return n;
}

struct from_case {
    const char *name;
    enum db_policy policy;
    const char *msg;
    const char *reply;     /* NULL: accepted */
    const char *addr;      /* accepted: address found */
    const char *use;       /* accepted: address to sign for */
    const char *new_field; /* accepted: "" or the rewritten field */
    size_t hdr_index;      /* accepted: index of the From: field */
};

#define ONE_FROM                                                               \
    "550 5.7.1 Message must have exactly one From: header with one address"
#define NOT_OWNED(a)                                                           \
    "550 5.7.1 From: address <" a "> not owned by user <alice@example.org>"

static const struct from_case from_cases[] = {
    {"one owned", DB_POLICY_REJECT,
     "From: Alice <alice@example.org>\r\nTo: bob@example.net\r\n\r\nhi\r\n",
     NULL, "alice@example.org", "alice@example.org", "", 0},
    {"bare address", DB_POLICY_REJECT,
     "Subject: x\r\nFrom: alice@example.org\r\n\r\nhi\r\n", NULL,
     "alice@example.org", "alice@example.org", "", 1},
    {"alias any case", DB_POLICY_REJECT,
     "FROM: \"Smith, Alice\" <ALICE.SMITH@example.ORG>\r\n\r\nhi\r\n", NULL,
     "ALICE.SMITH@example.ORG", "ALICE.SMITH@example.ORG", "", 0},
    {"lower-case name", DB_POLICY_REJECT, "from: webmaster@example.net\r\n\r\n",
     NULL, "webmaster@example.net", "webmaster@example.net", "", 0},
    {"folded", DB_POLICY_REJECT,
     "To: b@example.net\r\nFrom: Alice\r\n <alice@example.org>\r\n\r\nx\r\n",
     NULL, "alice@example.org", "alice@example.org", "", 1},
    {"no body", DB_POLICY_REJECT, "From: alice@example.org\r\n", NULL,
     "alice@example.org", "alice@example.org", "", 0},
    {"none", DB_POLICY_REJECT, "To: bob@example.net\r\n\r\nFrom: x\r\n",
     ONE_FROM, NULL, NULL, NULL, 0},
    {"none rewrite", DB_POLICY_REWRITE, "Subject: hi\r\n\r\nbody\r\n", ONE_FROM,
     NULL, NULL, NULL, 0},
    {"two headers", DB_POLICY_REJECT,
     "From: alice@example.org\r\nFrom: alice@example.org\r\n\r\n", ONE_FROM,
     NULL, NULL, NULL, 0},
    {"two headers rewrite", DB_POLICY_REWRITE,
     "From: alice@example.org\r\nfrom: bob@example.org\r\n\r\n", ONE_FROM, NULL,
     NULL, NULL, 0},
    {"two mailboxes", DB_POLICY_REJECT,
     "From: alice@example.org, alice.smith@example.org\r\n\r\n", ONE_FROM, NULL,
     NULL, NULL, 0},
    {"group", DB_POLICY_REJECT, "From: team: alice@example.org;\r\n\r\n",
     ONE_FROM, NULL, NULL, NULL, 0},
    {"empty", DB_POLICY_REJECT, "From: \r\n\r\n", ONE_FROM, NULL, NULL, NULL,
     0},
    {"resent-from is not from", DB_POLICY_REJECT,
     "Resent-From: alice@example.org\r\n\r\n", ONE_FROM, NULL, NULL, NULL, 0},
    {"not owned reject", DB_POLICY_REJECT,
     "From: Bob <bob@example.org>\r\n\r\nhi\r\n",
     "550 5.7.1 From: address <bob@example.org> not owned by user "
     "<alice@example.org>",
     NULL, NULL, NULL, 0},
    {"not owned rewrite", DB_POLICY_REWRITE,
     "To: x@example.net\r\nFrom: \"Bob\" <bob@example.org>\r\n\r\nhi\r\n", NULL,
     "bob@example.org", "alice@example.org", "From: <alice@example.org>", 1},
    {"owned under rewrite", DB_POLICY_REWRITE,
     "From: alice.smith@example.org\r\n\r\n", NULL, "alice.smith@example.org",
     "alice.smith@example.org", "", 0},
    /* Smuggling another address into what a reader shows. */
    {"unquoted address as display name", DB_POLICY_REJECT,
     "From: alice@example.org <alice@example.org>\r\n\r\n", ONE_FROM, NULL,
     NULL, NULL, 0},
    {"quoted own address as display name", DB_POLICY_REJECT,
     "From: \"alice@example.org\" <alice@example.org>\r\n\r\n", NULL,
     "alice@example.org", "alice@example.org", "", 0},
    {"quoted other address as display name", DB_POLICY_REJECT,
     "From: \"bob@example.org\" <alice@example.org>\r\n\r\n",
     NOT_OWNED("bob@example.org"), NULL, NULL, NULL, 0},
    {"other address in a comment", DB_POLICY_REJECT,
     "From: alice@example.org (bob@example.org)\r\n\r\n",
     NOT_OWNED("bob@example.org"), NULL, NULL, NULL, 0},
    {"encoded word Q", DB_POLICY_REJECT,
     "From: =?utf-8?q?bob=40example=2Eorg?= <alice@example.org>\r\n\r\n",
     NOT_OWNED("bob@example.org"), NULL, NULL, NULL, 0},
    {"encoded word B", DB_POLICY_REJECT,
     "From: =?UTF-8?B?Ym9iQGV4YW1wbGUub3Jn?= <alice@example.org>\r\n\r\n",
     NOT_OWNED("bob@example.org"), NULL, NULL, NULL, 0},
    {"split encoded words", DB_POLICY_REJECT,
     "From: =?utf-8?q?bob?=\r\n =?utf-8?q?=40evil.example?= "
     "<alice@example.org>\r\n\r\n",
     NOT_OWNED("bob@evil.example"), NULL, NULL, NULL, 0},
    {"full-width at", DB_POLICY_REJECT,
     "From: \"bob\xef\xbc\xa0"
     "example.org\" <alice@example.org>\r\n\r\n",
     NOT_OWNED("bob@example.org"), NULL, NULL, NULL, 0},
    {"quoted pair", DB_POLICY_REJECT,
     "From: \"bob\\@example.org\" <alice@example.org>\r\n\r\n",
     NOT_OWNED("bob@example.org"), NULL, NULL, NULL, 0},
    {"folded comment", DB_POLICY_REJECT,
     "From: Alice\r\n <alice@example.org> (via\r\n\tbob@example.org)\r\n\r\n",
     NOT_OWNED("bob@example.org"), NULL, NULL, NULL, 0},
    {"folding splits no address", DB_POLICY_REJECT,
     "From: \"bob@exam\r\n ple\" <alice@example.org>\r\n\r\n", NULL,
     "alice@example.org", "alice@example.org", "", 0},
    {"display smuggling rewritten", DB_POLICY_REWRITE,
     "From: \"bob@example.org\" <alice@example.org>\r\n\r\n", NULL,
     "alice@example.org", "alice@example.org", "From: <alice@example.org>", 0},
    {"harmless at signs", DB_POLICY_REJECT,
     "From: \"Alice @ home (@alice)\" <alice@example.org>\r\n\r\n", NULL,
     "alice@example.org", "alice@example.org", "", 0},
    {"plain words", DB_POLICY_REJECT,
     "From: =?utf-8?q?Alice_Liddell?= <alice@example.org>\r\n\r\n", NULL,
     "alice@example.org", "alice@example.org", "", 0},
};

static int from_case_check(const struct from_case *tc, const char *r,
                           const struct policy_from *pf)
{
    if (tc->reply != NULL) {
        if (r == NULL || strcmp(r, tc->reply) != 0) {
            print_error("from %s: got reply '%s', want '%s'\n", tc->name,
                        r ? r : "(accepted)", tc->reply);
            return 1;
        }
        return 0;
    }
    if (r != NULL) {
        print_error("from %s: got reply '%s', want accepted\n", tc->name, r);
        return 1;
    }
    if (strcmp(pf->addr, tc->addr) != 0 || pf->use == NULL ||
        strcmp(pf->use, tc->use) != 0 || pf->hdr_index != tc->hdr_index) {
        print_error("from %s: got addr <%s> use <%s> index %zu, want <%s> "
                    "<%s> %zu\n",
                    tc->name, pf->addr, pf->use ? pf->use : "(null)",
                    pf->hdr_index, tc->addr, tc->use, tc->hdr_index);
        return 1;
    }
    if (pf->rewritten != (tc->new_field[0] != '\0') ||
        strcmp(pf->new_field, tc->new_field) != 0) {
        print_error("from %s: got rewritten %d field '%s', want '%s'\n",
                    tc->name, pf->rewritten, pf->new_field, tc->new_field);
        return 1;
    }
    return 0;
}

static void test_from(void **state)
{
    struct smtp_header h[MAX_TEST_HEADERS];
    char reply[POLICY_REPLY_MAX];
    size_t i;
    int failed = 0;

    (void)state;
    for (i = 0; i < sizeof(from_cases) / sizeof(from_cases[0]); i++) {
        const struct from_case *tc = &from_cases[i];
        struct db_member *m = member_new(DB_POLICY_REJECT, tc->policy);
        size_t len = strlen(tc->msg), nh;
        char *msg = malloc(len);
        struct policy_from pf;
        const char *r;

        assert_non_null(msg);
        memcpy(msg, tc->msg, len);
        nh = split_headers(tc->msg, len, h, MAX_TEST_HEADERS);
        r = policy_check_from(m, msg, len, h, nh, &pf, reply, sizeof(reply));
        failed += from_case_check(tc, r, &pf);
        free(msg);
        free(m);
    }
    if (failed)
        fail_msg("%d From: case(s) failed", failed);
}

/* ---- signing domain -------------------------------------------------- */

struct domain_case {
    const char *name;
    const char *addr;
    int rc;
    const char *domain;
};

static const struct domain_case domain_cases[] = {
    {"lower", "alice@example.org", 0, "example.org"},
    {"mixed case", "Alice@Mail.Example.ORG", 0, "mail.example.org"},
    {"quoted local with at", "\"a@b\"@Example.net", 0, "example.net"},
    {"literal", "alice@[192.0.2.1]", -1, NULL},
    {"no at", "alice", -1, NULL},
    {"empty domain", "alice@", -1, NULL},
};

static void test_dkim_domain(void **state)
{
    char out[SG_MAX_DOMAIN + 1];
    size_t i;
    int failed = 0;

    (void)state;
    for (i = 0; i < sizeof(domain_cases) / sizeof(domain_cases[0]); i++) {
        const struct domain_case *tc = &domain_cases[i];
        int rc;

        out[0] = '\0';
        rc = policy_dkim_domain(tc->addr, out, sizeof(out));
        if (rc != tc->rc || (rc == 0 && strcmp(out, tc->domain) != 0)) {
            print_error("domain %s: got %d '%s', want %d '%s'\n", tc->name, rc,
                        out, tc->rc, tc->domain ? tc->domain : "");
            failed++;
        }
    }
    if (failed)
        fail_msg("%d domain case(s) failed", failed);
}

/* policy_sign_domain(): the domain of an address the member owns only. */
static void test_sign_domain(void **state)
{
    struct db_member *m = member_new(DB_POLICY_REJECT, DB_POLICY_REJECT);
    char out[SG_MAX_DOMAIN + 1];

    (void)state;
    assert_int_equal(
        policy_sign_domain(m, "Alice.Smith@Example.ORG", out, sizeof(out)), 0);
    assert_string_equal(out, "example.org");
    assert_int_equal(
        policy_sign_domain(m, "webmaster@example.net", out, sizeof(out)), 0);
    assert_string_equal(out, "example.net");
    assert_int_equal(policy_sign_domain(m, "bob@example.org", out, sizeof(out)),
                     -1);
    assert_int_equal(
        policy_sign_domain(m, "alice@evil.example", out, sizeof(out)), -1);
    free(m);
}

/* ---- Sender:, Resent-From:, Resent-Sender: ---------------------------- */

struct ident_case {
    const char *name;
    const char *field; /* one header field, no CRLF */
    const char *reply; /* NULL: fine */
    const char *found;
};

static const struct ident_case ident_cases[] = {
    {"not an identity field", "Reply-To: bob@example.org", NULL, ""},
    {"own sender", "Sender: Alice <alice@example.org>", NULL, ""},
    {"own alias resent-from", "resent-from: webmaster@example.net", NULL, ""},
    {"own resent-sender", "RESENT-SENDER: alice.smith@example.org", NULL, ""},
    {"other sender", "Sender: bob@example.org",
     "550 5.7.1 Sender: address <bob@example.org> not owned by user "
     "<alice@example.org>",
     "bob@example.org"},
    {"other resent-from", "Resent-From: Bob <bob@other.example>",
     "550 5.7.1 Resent-From: address <bob@other.example> not owned by user "
     "<alice@example.org>",
     "bob@other.example"},
    {"smuggled in display name",
     "Sender: \"bob@example.org\" "
     "<alice@example.org>",
     "550 5.7.1 Sender: address <bob@example.org> not owned by user "
     "<alice@example.org>",
     "bob@example.org"},
    {"list", "Resent-From: alice@example.org, bob@example.org",
     "550 5.7.1 Resent-From: header must hold one address of user "
     "<alice@example.org>",
     ""},
    {"empty", "Sender:",
     "550 5.7.1 Sender: header must hold one address of user "
     "<alice@example.org>",
     ""},
};

static void test_ident(void **state)
{
    char reply[POLICY_REPLY_MAX], found[SG_MAX_PATH + 1];
    size_t i;
    int failed = 0;

    (void)state;
    for (i = 0; i < sizeof(ident_cases) / sizeof(ident_cases[0]); i++) {
        const struct ident_case *tc = &ident_cases[i];
        struct db_member *m = member_new(DB_POLICY_REJECT, DB_POLICY_REJECT);
        size_t len = strlen(tc->field);
        char *msg = malloc(len + 2);
        struct smtp_header h;
        const char *r;

        assert_non_null(msg);
        memcpy(msg, tc->field, len);
        memcpy(msg + len, "\r\n", 2);
        h.off = 0;
        h.len = len;
        h.name_len = strcspn(tc->field, ":");
        r = policy_check_ident_field(m, msg, len + 2, &h, found, sizeof(found),
                                     reply, sizeof(reply));
        if ((r == NULL) != (tc->reply == NULL) ||
            (r != NULL && strcmp(r, tc->reply) != 0) ||
            strcmp(found, tc->found) != 0) {
            print_error("ident %s: got '%s' <%s>, want '%s' <%s>\n", tc->name,
                        r ? r : "(fine)", found,
                        tc->reply ? tc->reply : "(fine)", tc->found);
            failed++;
        }
        free(msg);
        free(m);
    }
    if (failed)
        fail_msg("%d identity case(s) failed", failed);
}

/* policy_owns() is what both checks rest on: no prefix or suffix match. */
static void test_owns(void **state)
{
    struct db_member *m = member_new(DB_POLICY_REJECT, DB_POLICY_REJECT);

    (void)state;
    assert_int_equal(policy_owns(m, "alice@example.org"), 1);
    assert_int_equal(policy_owns(m, "ALICE.smith@EXAMPLE.org"), 1);
    assert_int_equal(policy_owns(m, "alice@example.or"), 0);
    assert_int_equal(policy_owns(m, "xalice@example.org"), 0);
    assert_int_equal(policy_owns(m, ""), 0);
    m->naddrs = 0;
    assert_int_equal(policy_owns(m, "alice@example.org"), 0);
    free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sender),      cmocka_unit_test(test_from),
        cmocka_unit_test(test_dkim_domain), cmocka_unit_test(test_sign_domain),
        cmocka_unit_test(test_ident),       cmocka_unit_test(test_owns),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
