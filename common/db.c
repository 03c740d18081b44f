/* db: the SQLite store. See db.h. */
#include "db.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "log.h"
#include "xalloc.h"

/* The schema text, generated from schema/schema.sql by the Makefile. */
extern const char db_schema_sql[];

/* The schema version this program was written for (meta.schema_version). */
#define DB_SCHEMA_VERSION 1

/* Copies a column value into a fixed field. 0, or -1 when it does not fit
 * (the database was written by something else than subgate). */
static int db_copy_text(char *out, size_t outlen, const unsigned char *s)
{
    size_t n;

    if (s == NULL) {
        out[0] = '\0';
        return 0;
    }
    n = strlen((const char *)s);
    if (n >= outlen)
        return -1;
    memcpy(out, s, n + 1);
    return 0;
}

/* Reads meta.schema_version: the version, 0 when missing, -1 on error. */
static int db_schema_version(sqlite3 *db, char *err, size_t errlen)
{
    sqlite3_stmt *st = NULL;
    int rc, version = 0;

    rc = sqlite3_prepare_v2(db,
                            "SELECT value FROM meta "
                            "WHERE key = 'schema_version'",
                            -1, &st, NULL);
    if (rc != SQLITE_OK) {
        /* A database without our meta table is not ours. */
        snprintf(err, errlen, "not a subgate database: %s", sqlite3_errmsg(db));
        return -1;
    }
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        version = sqlite3_column_int(st, 0);
    else if (rc != SQLITE_DONE) {
        snprintf(err, errlen, "reading schema version: %s", sqlite3_errmsg(db));
        version = -1;
    }
    sqlite3_finalize(st);
    return version;
}

int db_migrate(sqlite3 *db, char *err, size_t errlen)
{
    char *msg = NULL;
    int version;

    /* BEGIN IMMEDIATE so that two programs creating the same database at
     * once apply the schema one after the other. */
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, &msg) != SQLITE_OK)
        goto fail;
    if (sqlite3_exec(db, db_schema_sql, NULL, NULL, &msg) != SQLITE_OK) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        goto fail;
    }
    /* Version 1 is the first schema: there are no migrations yet. A newer
     * database than this program knows is refused rather than misread. */
    version = db_schema_version(db, err, errlen);
    if (version != DB_SCHEMA_VERSION) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        if (version >= 0)
            snprintf(err, errlen,
                     "database schema version %d, this program knows %d",
                     version, DB_SCHEMA_VERSION);
        return -1;
    }
    if (sqlite3_exec(db, "COMMIT", NULL, NULL, &msg) != SQLITE_OK) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        goto fail;
    }
    return 0;
fail:
    snprintf(err, errlen, "applying schema: %s",
             msg != NULL ? msg : sqlite3_errmsg(db));
    sqlite3_free(msg);
    return -1;
}

/* The pragmas every connection needs. 0 or -1. */
static int db_setup(sqlite3 *db, const char *path, char *err, size_t errlen)
{
    char *msg = NULL;

    if (sqlite3_busy_timeout(db, DB_BUSY_TIMEOUT_MS) != SQLITE_OK ||
        sqlite3_exec(db, "PRAGMA foreign_keys = ON", NULL, NULL, &msg) !=
            SQLITE_OK ||
        sqlite3_exec(db, "PRAGMA journal_mode = WAL", NULL, NULL, &msg) !=
            SQLITE_OK) {
        snprintf(err, errlen, "%s: %s", path,
                 msg != NULL ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

int db_open(const char *path, int create, sqlite3 **db_r, char *err,
            size_t errlen)
{
    sqlite3 *db = NULL;
    struct stat st;
    int flags = SQLITE_OPEN_READWRITE;
    int version;

    *db_r = NULL;
    if (create)
        flags |= SQLITE_OPEN_CREATE;
    else if (stat(path, &st) != 0) {
        /* SQLite would only say "unable to open database file". */
        int e = errno;
        if (e == ENOENT)
            snprintf(err, errlen,
                     "%s: database does not exist (run subgate init)", path);
        else
            snprintf(err, errlen, "%s: %s", path, strerror(e));
        return -1;
    }
    if (sqlite3_open_v2(path, &db, flags, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "%s: %s", path,
                 db != NULL ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close(db);
        return -1;
    }
    if (db_setup(db, path, err, errlen) != 0)
        goto fail;
    if (create) {
        char why[512];
        if (db_migrate(db, why, sizeof why) != 0) {
            snprintf(err, errlen, "%s: %s", path, why);
            goto fail;
        }
    } else {
        char why[512];
        version = db_schema_version(db, why, sizeof why);
        if (version != DB_SCHEMA_VERSION) {
            if (version >= 0)
                snprintf(why, sizeof why,
                         "database schema version %d, this program knows "
                         "%d",
                         version, DB_SCHEMA_VERSION);
            snprintf(err, errlen, "%s: %s", path, why);
            goto fail;
        }
    }
    *db_r = db;
    return 0;
fail:
    sqlite3_close(db);
    return -1;
}

void db_close(sqlite3 **dbp)
{
    if (*dbp == NULL)
        return;
    sqlite3_close(*dbp);
    *dbp = NULL;
}

void db_member_clear(struct db_member *m)
{
    if (m->password_hash != NULL) {
        explicit_bzero(m->password_hash, strlen(m->password_hash));
        free(m->password_hash);
        m->password_hash = NULL;
    }
}

static enum db_policy db_policy_parse(const unsigned char *s)
{
    if (s != NULL && strcmp((const char *)s, "rewrite") == 0)
        return DB_POLICY_REWRITE;
    return DB_POLICY_REJECT;
}

/* Fills the member row of m from the first query. 1, 0, -1. */
static int db_member_row(sqlite3 *db, const char *login, struct db_member *m)
{
    static const char sql[] =
        "SELECT m.id, m.tenant_id, m.disabled, m.address, t.name,"
        " t.sender_policy, t.from_policy, m.password_hash"
        " FROM member m JOIN tenant t ON t.id = m.tenant_id"
        " WHERE m.address = ?1";
    sqlite3_stmt *st = NULL;
    const unsigned char *hash;
    int rc, ret = -1;

    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK ||
        sqlite3_bind_text(st, 1, login, -1, SQLITE_STATIC) != SQLITE_OK)
        goto out;
    rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        ret = 0;
        goto out;
    }
    if (rc != SQLITE_ROW)
        goto out;
    m->id = sqlite3_column_int64(st, 0);
    m->tenant_id = sqlite3_column_int64(st, 1);
    m->disabled = sqlite3_column_int(st, 2) != 0;
    if (db_copy_text(m->address, sizeof m->address,
                     sqlite3_column_text(st, 3)) != 0 ||
        db_copy_text(m->tenant, sizeof m->tenant, sqlite3_column_text(st, 4)) !=
            0) {
        log_error("db: member %s: stored name too long", login);
        sqlite3_finalize(st);
        return -1;
    }
    m->sender_policy = db_policy_parse(sqlite3_column_text(st, 5));
    m->from_policy = db_policy_parse(sqlite3_column_text(st, 6));
    hash = sqlite3_column_text(st, 7);
    if (hash != NULL)
        m->password_hash = xstrdup((const char *)hash);
    memcpy(m->addrs[0], m->address, sizeof m->addrs[0]);
    m->naddrs = 1;
    ret = 1;
out:
    if (ret < 0)
        log_error("db: member lookup: %s", sqlite3_errmsg(db));
    sqlite3_finalize(st);
    return ret;
}

/* Appends the member's aliases to m->addrs. 0 or -1. */
static int db_member_aliases(sqlite3 *db, struct db_member *m)
{
    static const char sql[] = "SELECT address FROM alias WHERE member_id = ?1"
                              " ORDER BY address LIMIT ?2";
    sqlite3_stmt *st = NULL;
    int rc = SQLITE_ERROR;

    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK ||
        sqlite3_bind_int64(st, 1, m->id) != SQLITE_OK ||
        sqlite3_bind_int(st, 2, SG_MAX_MEMBER_ADDRS - 1) != SQLITE_OK)
        goto out;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW &&
           m->naddrs < SG_MAX_MEMBER_ADDRS) {
        if (db_copy_text(m->addrs[m->naddrs], sizeof m->addrs[0],
                         sqlite3_column_text(st, 0)) != 0)
            continue; /* cannot be an address we accept; skip it */
        m->naddrs++;
    }
out:
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        log_error("db: alias lookup: %s", sqlite3_errmsg(db));
    sqlite3_finalize(st);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : -1;
}

int db_member_lookup(sqlite3 *db, const char *login, struct db_member *m)
{
    int ret;

    memset(m, 0, sizeof *m);
    if (strlen(login) > SG_MAX_PATH)
        return 0;
    /* One read transaction: member and aliases from the same snapshot. */
    if (sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
        log_error("db: member lookup: %s", sqlite3_errmsg(db));
        return -1;
    }
    ret = db_member_row(db, login, m);
    if (ret == 1 && db_member_aliases(db, m) != 0)
        ret = -1;
    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    if (ret != 1)
        db_member_clear(m);
    return ret;
}

int db_sign_keys(sqlite3 *db, const char *domain, struct db_sign_key *keys,
                 size_t max, size_t *n_r)
{
    /* sign_algos is a comma-separated list: match whole items. */
    static const char sql[] =
        "SELECT k.selector, k.algo, k.key_file"
        " FROM dkim_key k JOIN domain d ON d.name = k.domain"
        " JOIN tenant t ON t.id = d.tenant_id"
        " WHERE k.domain = ?1 AND k.state = 'active'"
        " AND instr(',' || t.sign_algos || ',', ',' || k.algo || ',') > 0"
        " ORDER BY k.algo <> 'rsa', k.activated DESC, k.id DESC";
    sqlite3_stmt *st = NULL;
    size_t n = 0;
    int rc = SQLITE_ERROR;

    *n_r = 0;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK ||
        sqlite3_bind_text(st, 1, domain, -1, SQLITE_STATIC) != SQLITE_OK)
        goto out;
    while (n < max && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct db_sign_key *k = &keys[n];
        if (db_copy_text(k->selector, sizeof k->selector,
                         sqlite3_column_text(st, 0)) != 0 ||
            db_copy_text(k->algo, sizeof k->algo, sqlite3_column_text(st, 1)) !=
                0 ||
            db_copy_text(k->key_file, sizeof k->key_file,
                         sqlite3_column_text(st, 2)) != 0) {
            log_error("db: key of %s: stored field too long", domain);
            continue;
        }
        n++;
    }
    if (n == max)
        rc = SQLITE_DONE;
out:
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        log_error("db: keys of %s: %s", domain, sqlite3_errmsg(db));
        sqlite3_finalize(st);
        return -1;
    }
    sqlite3_finalize(st);
    *n_r = n;
    return n > 0 ? 1 : 0;
}
