/* db: the SQLite store. See db.h. */
#include "db.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "addr.h"
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

struct db_member *db_member_shrink(struct db_member *m)
{
    size_t size =
        offsetof(struct db_member, addrs) + m->naddrs * sizeof(m->addrs[0]);
    struct db_member *r = realloc(m, size);

    /* A smaller block cannot really fail; if it does, m is still valid. */
    // cppcheck-suppress memleak
    return r != NULL ? r : m;
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
        " t.sender_policy, t.from_policy, m.password_hash,"
        " coalesce(m.password_changed, 0), m.pgp_fingerprint"
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
    m->password_changed = sqlite3_column_int64(st, 8);
    /* A fingerprint that does not fit is not one; the member has none. */
    if (db_copy_text(m->pgp_fingerprint, sizeof m->pgp_fingerprint,
                     sqlite3_column_text(st, 9)) != 0)
        m->pgp_fingerprint[0] = '\0';
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

/* The tenant_ldap columns, in the order db_tenant_ldap_row reads them. */
#define DB_TENANT_LDAP_COLS                                                    \
    " l.uris, l.bind_mode, l.dn_template, l.search_base, l.search_filter,"     \
    " l.bind_dn, l.bind_password_file, l.submit_filter, l.address_attrs,"      \
    " l.uid_domain, l.fingerprint_attr, l.mail_password_attr, l.login_form,"   \
    " l.starttls, coalesce(l.timeout_ms, 0), l.ca_file"

/* Reads the tenant_ldap columns starting at column col. 0, or -1 when a
 * value does not fit. */
static int db_tenant_ldap_row(sqlite3_stmt *st, int col,
                              struct db_tenant_ldap *l)
{
    /* The text columns, by their place after col. */
    const struct {
        int off;
        char *out;
    } text[] = {
        {0, l->uris},
        {2, l->dn_template},
        {3, l->search_base},
        {4, l->search_filter},
        {5, l->bind_dn},
        {6, l->bind_password_file},
        {7, l->submit_filter},
        {8, l->address_attrs},
        {10, l->fingerprint_attr},
        {11, l->mail_password_attr},
        {15, l->ca_file},
    };
    const unsigned char *v;
    size_t i;

    for (i = 0; i < sizeof text / sizeof text[0]; i++)
        if (db_copy_text(text[i].out, SG_MAX_LDAP_SETTING,
                         sqlite3_column_text(st, col + text[i].off)) != 0)
            return -1;
    v = sqlite3_column_text(st, col + 1);
    l->bind_mode = v != NULL && strcmp((const char *)v, "search") == 0
                       ? DB_LDAP_BIND_SEARCH
                       : DB_LDAP_BIND_DN;
    l->uid_domain = sqlite3_column_int(st, col + 9) != 0;
    v = sqlite3_column_text(st, col + 12);
    l->login_form = v != NULL && strcmp((const char *)v, "address") == 0
                        ? DB_LDAP_LOGIN_ADDRESS
                        : DB_LDAP_LOGIN_UID;
    l->starttls = sqlite3_column_int(st, col + 13) != 0;
    l->timeout_ms = (unsigned)sqlite3_column_int64(st, col + 14);
    return 0;
}

/* The tenant's domains into t->domains, primary first. 0 or -1. */
static int db_tenant_domains(sqlite3 *db, struct db_tenant_auth *t)
{
    static const char sql[] = "SELECT name FROM domain WHERE tenant_id = ?1"
                              " ORDER BY name <> ?2, name";
    sqlite3_stmt *st = NULL;
    size_t len = 0;
    int rc = SQLITE_ERROR;

    t->domains[0] = '\0';
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK ||
        sqlite3_bind_int64(st, 1, t->tenant_id) != SQLITE_OK ||
        sqlite3_bind_text(st, 2, t->tenant, -1, SQLITE_STATIC) != SQLITE_OK)
        goto out;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *d = (const char *)sqlite3_column_text(st, 0);
        size_t n = d != NULL ? strlen(d) : 0;

        if (n == 0)
            continue;
        if (len + n + 2 > sizeof t->domains) {
            log_error("db: tenant %s has too many domains for the LDAP "
                      "backend",
                      t->tenant);
            sqlite3_finalize(st);
            return -1;
        }
        if (len > 0)
            t->domains[len++] = ' ';
        addr_domain_lower(d, t->domains + len, sizeof t->domains - len);
        len += n;
    }
out:
    if (rc != SQLITE_DONE)
        log_error("db: domains of %s: %s", t->tenant, sqlite3_errmsg(db));
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

/* Runs the prepared tenant query: 1 (exactly one row, read into t), 0
 * (none, or several for a bare login), -1. */
static int db_tenant_auth_row(sqlite3 *db, sqlite3_stmt *st,
                              struct db_tenant_auth *t)
{
    int rc = sqlite3_step(st);

    if (rc == SQLITE_DONE)
        return 0;
    if (rc != SQLITE_ROW) {
        log_error("db: tenant lookup: %s", sqlite3_errmsg(db));
        return -1;
    }
    t->tenant_id = sqlite3_column_int64(st, 0);
    if (db_copy_text(t->tenant, sizeof t->tenant, sqlite3_column_text(st, 1)) !=
        0) {
        log_error("db: tenant lookup: stored name too long");
        return -1;
    }
    t->sender_policy = db_policy_parse(sqlite3_column_text(st, 2));
    t->from_policy = db_policy_parse(sqlite3_column_text(st, 3));
    t->backend = sqlite3_column_type(st, 4) == SQLITE_NULL ? DB_AUTH_SQLITE
                                                           : DB_AUTH_LDAP;
    if (t->backend == DB_AUTH_LDAP &&
        db_tenant_ldap_row(st, 4, &t->ldap) != 0) {
        log_error("db: tenant %s: stored LDAP setting too long", t->tenant);
        return -1;
    }
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        return 0; /* a bare login and several LDAP tenants: ambiguous */
    if (rc != SQLITE_DONE) {
        log_error("db: tenant lookup: %s", sqlite3_errmsg(db));
        return -1;
    }
    return 1;
}

int db_tenant_auth_lookup(sqlite3 *db, const char *login,
                          struct db_tenant_auth *t)
{
    static const char by_domain[] =
        "SELECT t.id, t.name, t.sender_policy, "
        "t.from_policy," DB_TENANT_LDAP_COLS
        " FROM domain d JOIN tenant t ON t.id = d.tenant_id"
        " LEFT JOIN tenant_ldap l ON l.tenant_id = t.id"
        " WHERE d.name = ?1";
    static const char bare[] =
        "SELECT t.id, t.name, t.sender_policy, "
        "t.from_policy," DB_TENANT_LDAP_COLS
        " FROM tenant t JOIN tenant_ldap l ON l.tenant_id = t.id"
        " ORDER BY t.id LIMIT 2";
    const char *domain = addr_domain(login);
    sqlite3_stmt *st = NULL;
    int ret = -1;

    memset(t, 0, sizeof *t);
    if (strlen(login) > SG_MAX_PATH || (domain != NULL && *domain == '\0'))
        return 0;
    /* One read transaction: tenant, settings and domains agree. */
    if (sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
        log_error("db: tenant lookup: %s", sqlite3_errmsg(db));
        return -1;
    }
    if (sqlite3_prepare_v2(db, domain != NULL ? by_domain : bare, -1, &st,
                           NULL) != SQLITE_OK ||
        (domain != NULL &&
         sqlite3_bind_text(st, 1, domain, -1, SQLITE_STATIC) != SQLITE_OK))
        log_error("db: tenant lookup: %s", sqlite3_errmsg(db));
    else
        ret = db_tenant_auth_row(db, st, t);
    sqlite3_finalize(st);
    if (ret == 1 && t->backend == DB_AUTH_LDAP && db_tenant_domains(db, t) != 0)
        ret = -1;
    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
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
