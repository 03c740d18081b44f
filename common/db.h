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
    char *password_hash;        /* owned, NULL if no password set; wipe+free */
    long long password_changed; /* Unix time, 0 never (LDAP members: 0) */
    char pgp_fingerprint[SG_MAX_FINGERPRINT + 1]; /* upper-case hex or "" */
    /* Set by AUTH for its log line: how the member authenticated beyond
     * a password ("token=LABEL", "mech=EXTERNAL", ...), "" otherwise. */
    char auth_via[SG_MAX_TOKEN_LABEL + 32];
    size_t naddrs; /* primary first, then aliases */
    /* Last, so that db_member_shrink() can give back the unused rows. */
    char addrs[SG_MAX_MEMBER_ADDRS][SG_MAX_PATH + 1];
};

/* Looks up a member by login (primary address, case-insensitive). Fills
 * *m (caller storage; free with db_member_clear). 1, 0, -1. */
int db_member_lookup(sqlite3 *db, const char *login, struct db_member *m);
/* Wipes and frees the password hash. */
void db_member_clear(struct db_member *m);
/* The full address table is 66 KiB, which an SMTP session would hold for
 * its whole life: returns heap-allocated m reallocated to its first
 * m->naddrs addresses (it may move; free() it as before). The result is
 * read like any member, but is never copied by sizeof nor given more
 * addresses. */
struct db_member *db_member_shrink(struct db_member *m);

/* Where a tenant's members authenticate (table tenant_ldap). */
enum db_auth_backend {
    DB_AUTH_SQLITE, /* the member table */
    DB_AUTH_LDAP,   /* a directory, settings in struct db_tenant_ldap */
};

enum db_ldap_bind {
    DB_LDAP_BIND_DN,     /* bind as dn_template with %u */
    DB_LDAP_BIND_SEARCH, /* search as bind_dn, then bind as the entry */
};

enum db_ldap_login {
    DB_LDAP_LOGIN_UID,     /* %u is the login's local part (or bare uid) */
    DB_LDAP_LOGIN_ADDRESS, /* %u is the full address */
};

/* A tenant's directory settings; "" for an unset text. */
struct db_tenant_ldap {
    char uris[SG_MAX_LDAP_SETTING]; /* comma-separated, tried in order */
    enum db_ldap_bind bind_mode;
    char dn_template[SG_MAX_LDAP_SETTING];
    char search_base[SG_MAX_LDAP_SETTING];
    char search_filter[SG_MAX_LDAP_SETTING];
    char bind_dn[SG_MAX_LDAP_SETTING];
    char bind_password_file[SG_MAX_LDAP_SETTING];
    char submit_filter[SG_MAX_LDAP_SETTING];
    char address_attrs[SG_MAX_LDAP_SETTING]; /* comma-separated */
    int uid_domain;
    char fingerprint_attr[SG_MAX_LDAP_SETTING];
    char mail_password_attr[SG_MAX_LDAP_SETTING];
    enum db_ldap_login login_form;
    int starttls;
    unsigned timeout_ms; /* 0: the ldap_timeout setting */
    char ca_file[SG_MAX_LDAP_SETTING];
};

/* What AUTH needs to know about the tenant of a login. */
struct db_tenant_auth {
    long long tenant_id;
    char tenant[SG_MAX_DOMAIN + 1];
    enum db_policy sender_policy;
    enum db_policy from_policy;
    enum db_auth_backend backend;
    struct db_tenant_ldap ldap; /* backend DB_AUTH_LDAP only */
    /* backend DB_AUTH_LDAP only: the tenant's domains, lower-case,
     * space-separated, the primary one first */
    char domains[SG_MAX_TENANT_DOMAINS_TEXT];
};

/* Finds the tenant of a login and its AUTH settings: the tenant owning the
 * login's domain, or for a login without '@' the one tenant whose backend
 * is LDAP (0 when there is none or more than one). Fills *t (caller
 * storage). 1, 0 (no such tenant), -1. */
int db_tenant_auth_lookup(sqlite3 *db, const char *login,
                          struct db_tenant_auth *t);

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
