/* signer_lookup: per-domain key answers; see signer_lookup.h. */
#include "signer_lookup.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "../common/xalloc.h"

/* Hash buckets: a power of two above SIGNER_LOOKUP_MAX / 2. */
#define SIGNER_LOOKUP_BUCKETS 1024

struct signer_lookup_entry {
    struct signer_lookup_entry *next; /* in its bucket */
    char *domain;                     /* owned */
    struct db_sign_key *keys;         /* owned, n entries */
    size_t n;
};

struct signer_lookup {
    sqlite3_stmt *version_st; /* owned: PRAGMA data_version */
    sqlite3 *db;              /* borrowed: what version_st belongs to */
    int64_t version;          /* data_version the answers are from */
    struct signer_lookup_entry *bucket[SIGNER_LOOKUP_BUCKETS];
    size_t count;
};

struct signer_lookup *signer_lookup_new(void)
{
    return xcalloc(1, sizeof(struct signer_lookup));
}

static void signer_lookup_drop_all(struct signer_lookup *l)
{
    size_t i;

    for (i = 0; i < SIGNER_LOOKUP_BUCKETS; i++) {
        struct signer_lookup_entry *e, *next;

        for (e = l->bucket[i]; e != NULL; e = next) {
            next = e->next;
            free(e->domain);
            free(e->keys);
            free(e);
        }
        l->bucket[i] = NULL;
    }
    l->count = 0;
}

void signer_lookup_forget(struct signer_lookup *l)
{
    signer_lookup_drop_all(l);
    sqlite3_finalize(l->version_st);
    l->version_st = NULL;
    l->db = NULL;
}

void signer_lookup_free(struct signer_lookup **lp)
{
    if (*lp == NULL)
        return;
    signer_lookup_forget(*lp);
    free(*lp);
    *lp = NULL;
}

size_t signer_lookup_count(const struct signer_lookup *l)
{
    return l->count;
}

/* FNV-1a over the domain (already lower case). */
static size_t signer_lookup_hash(const char *s)
{
    uint32_t h = 2166136261u;

    while (*s != '\0')
        h = (h ^ (unsigned char)*s++) * 16777619u;
    return h & (SIGNER_LOOKUP_BUCKETS - 1);
}

/* The database's data_version, or -1 on error. */
static int64_t signer_lookup_version(struct signer_lookup *l, sqlite3 *db)
{
    int64_t v = -1;

    if (l->db != db) {
        signer_lookup_forget(l);
        if (sqlite3_prepare_v2(db, "PRAGMA data_version", -1, &l->version_st,
                               NULL) != SQLITE_OK) {
            log_error("signer: data_version: %s", sqlite3_errmsg(db));
            sqlite3_finalize(l->version_st);
            l->version_st = NULL;
            return -1;
        }
        l->db = db;
    }
    if (sqlite3_step(l->version_st) == SQLITE_ROW)
        v = sqlite3_column_int64(l->version_st, 0);
    sqlite3_reset(l->version_st);
    return v;
}

static void signer_lookup_put(struct signer_lookup *l, const char *domain,
                              size_t h, const struct db_sign_key *keys,
                              size_t n)
{
    struct signer_lookup_entry *e = xcalloc(1, sizeof(*e));

    if (l->count >= SIGNER_LOOKUP_MAX)
        signer_lookup_drop_all(l);
    e->domain = xstrdup(domain);
    if (n > 0) {
        e->keys = xmalloc(n * sizeof(*keys));
        memcpy(e->keys, keys, n * sizeof(*keys));
    }
    e->n = n;
    e->next = l->bucket[h];
    l->bucket[h] = e;
    l->count++;
}

int signer_lookup_keys(struct signer_lookup *l, sqlite3 *db, const char *domain,
                       struct db_sign_key *keys, size_t max, size_t *n_r)
{
    struct signer_lookup_entry *e;
    int64_t v = signer_lookup_version(l, db);
    size_t h = signer_lookup_hash(domain);
    int rc;

    *n_r = 0;
    if (v < 0)
        return db_sign_keys(db, domain, keys, max, n_r);
    if (v != l->version) {
        signer_lookup_drop_all(l);
        l->version = v;
    }
    for (e = l->bucket[h]; e != NULL; e = e->next) {
        if (strcmp(e->domain, domain) == 0) {
            *n_r = e->n < max ? e->n : max;
            if (*n_r > 0)
                memcpy(keys, e->keys, *n_r * sizeof(*keys));
            return *n_r > 0 ? 1 : 0;
        }
    }
    rc = db_sign_keys(db, domain, keys, max, n_r);
    if (rc >= 0)
        signer_lookup_put(l, domain, h, keys, *n_r);
    return rc;
}
