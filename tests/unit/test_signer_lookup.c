/* Unit tests for signer_lookup: answers come from the database once per
 * domain and are kept while nothing else writes to it (a change made on
 * the same connection is not seen, which shows the answer was kept); a
 * commit by another connection (the admin tool's role) is seen by the very
 * next lookup; a domain without keys is remembered too; the table never
 * grows past SIGNER_LOOKUP_MAX; forget drops everything. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "../../common/db.h"
#include "../../signer/signer_lookup.h"

struct fixture {
    char dir[64];
    char path[128];
    sqlite3 *db;    /* the signer's connection */
    sqlite3 *admin; /* another writer */
    struct signer_lookup *l;
};

static void exec(sqlite3 *db, const char *sql)
{
    char *msg = NULL;

    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s: %s", sql, msg ? msg : "?");
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    char err[256];

    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/test_signer_lookup.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/subgate.db", f->dir);
    if (db_open(f->path, 1, &f->db, err, sizeof(err)) != 0)
        fail_msg("db_open: %s", err);
    if (db_open(f->path, 0, &f->admin, err, sizeof(err)) != 0)
        fail_msg("db_open: %s", err);
    exec(f->admin, "INSERT INTO tenant (id, name, sign_algos, created)"
                   " VALUES (1, 'a.example', 'rsa,ed25519', 0),"
                   " (2, 'b.example', 'rsa', 0);"
                   "INSERT INTO domain (name, tenant_id, created)"
                   " VALUES ('a.example', 1, 0), ('b.example', 2, 0);"
                   "INSERT INTO dkim_key (domain, selector, algo, bits, state,"
                   " public_key, key_file, created, activated) VALUES"
                   " ('a.example', 'r1', 'rsa', 2048, 'active', 'x',"
                   "  'a.example/r1.pem', 0, 1),"
                   " ('a.example', 'e1', 'ed25519', 256, 'active', 'x',"
                   "  'a.example/e1.pem', 0, 1),"
                   " ('b.example', 'r2', 'rsa', 2048, 'pending', 'x',"
                   "  'b.example/r2.pem', 0, NULL);");
    f->l = signer_lookup_new();
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char path[160];

    signer_lookup_free(&f->l);
    assert_null(f->l);
    db_close(&f->db);
    db_close(&f->admin);
    unlink(f->path);
    snprintf(path, sizeof(path), "%s-wal", f->path);
    unlink(path);
    snprintf(path, sizeof(path), "%s-shm", f->path);
    unlink(path);
    rmdir(f->dir);
    free(f);
    return 0;
}

/* Looks domain up and compares with want: the selectors in order, joined
 * by commas ("" for none). */
static void expect(struct fixture *f, const char *domain, const char *want)
{
    struct db_sign_key keys[8];
    char got[256] = "";
    size_t n = 99, i;
    int rc = signer_lookup_keys(f->l, f->db, domain, keys, 8, &n);

    for (i = 0; rc > 0 && i < n; i++) {
        if (i > 0)
            strcat(got, ",");
        strcat(got, keys[i].selector);
    }
    if (rc != (want[0] != '\0') || strcmp(got, want) != 0)
        fail_msg("%s: got rc=%d keys \"%s\", want \"%s\"", domain, rc, got,
                 want);
}

static void test_kept_until_changed(void **state)
{
    struct fixture *f = *state;

    expect(f, "a.example", "r1,e1");
    expect(f, "b.example", "");
    assert_int_equal(signer_lookup_count(f->l), 2);

    /* The signer's own connection never writes; if it did, the change
     * would not count as one, so the kept answers still come back. */
    exec(f->db, "UPDATE dkim_key SET state = 'active' WHERE selector = 'r2'");
    expect(f, "b.example", "");
    expect(f, "a.example", "r1,e1");

    /* Another connection commits: the next lookup sees it. */
    exec(f->admin, "UPDATE dkim_key SET state = 'retired' WHERE "
                   "selector = 'e1'");
    expect(f, "a.example", "r1");
    expect(f, "b.example", "r2");
    exec(f->admin, "UPDATE tenant SET sign_algos = 'rsa' WHERE id = 1;"
                   "UPDATE dkim_key SET state = 'active' WHERE "
                   "selector = 'e1'");
    expect(f, "a.example", "r1");

    signer_lookup_forget(f->l);
    assert_int_equal(signer_lookup_count(f->l), 0);
    expect(f, "a.example", "r1");
}

static void test_bound(void **state)
{
    struct fixture *f = *state;
    char domain[64];
    int i;

    for (i = 0; i < SIGNER_LOOKUP_MAX + 10; i++) {
        snprintf(domain, sizeof(domain), "d%d.example", i);
        expect(f, domain, "");
        if (signer_lookup_count(f->l) > SIGNER_LOOKUP_MAX)
            fail_msg("after %d domains: %zu kept, want at most %d", i + 1,
                     signer_lookup_count(f->l), SIGNER_LOOKUP_MAX);
    }
    expect(f, "a.example", "r1,e1");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_kept_until_changed, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_bound, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
