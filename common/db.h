/* db: the SQLite store (schema in schema/schema.sql, compiled in). Opens
 * the database with WAL, foreign keys and a busy timeout. A handle belongs
 * to one thread at a time. Lookups return 1 found, 0 not found, -1
 * temporary failure (database unavailable or busy past the timeout). */
#ifndef SG_DB_H
#define SG_DB_H

#include <sqlite3.h>
#include <stddef.h>

#include "limits.h"

#define DB_BUSY_TIMEOUT_MS 5000

enum db_policy {
    DB_POLICY_REJECT,
    DB_POLICY_REWRITE,
};

/* Opens (read-write; create only when create is 1, then also applies the
 * schema and migrations). 0 and *db_r, or -1 with a message in err. */
int db_open(const char *path, int create, sqlite3 **db_r, char *err,
            size_t errlen);
/* Applies the schema and pending migrations (idempotent). 0 or -1. */
int db_migrate(sqlite3 *db, char *err, size_t errlen);
void db_close(sqlite3 **dbp);

/* What the submission server learns about a member at AUTH. */
struct db_member {
    long long id;
    long long tenant_id;
    int disabled;
    char address[SG_MAX_PATH + 1]; /* primary, the login */
    char tenant[SG_MAX_DOMAIN + 1];
    enum db_policy sender_policy;
    enum db_policy from_policy;
    char *password_hash; /* owned, NULL if no password set; wipe+free */
    size_t naddrs;       /* primary first, then aliases */
    char addrs[SG_MAX_MEMBER_ADDRS][SG_MAX_PATH + 1];
};

/* Looks up a member by login (primary address, case-insensitive). Fills
 * *m (caller storage; free with db_member_clear). 1, 0, -1. */
int db_member_lookup(sqlite3 *db, const char *login, struct db_member *m);
/* Wipes and frees the password hash. */
void db_member_clear(struct db_member *m);

/* An active signing key of a domain. */
struct db_sign_key {
    char selector[64];
    char algo[16];      /* "rsa" or "ed25519" */
    char key_file[512]; /* path relative to key_dir */
};

/* Active keys of domain that its tenant's sign_algos allows, rsa first.
 * Fills up to max entries; *n_r the count. 1 (some), 0 (none), -1. */
int db_sign_keys(sqlite3 *db, const char *domain, struct db_sign_key *keys,
                 size_t max, size_t *n_r);

#endif
