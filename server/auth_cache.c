/* auth_cache: verdicts by HMAC of the credentials; see auth_cache.h. */
#include "auth_cache.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/log.h"
#include "../common/xalloc.h"

/* The per-process HMAC key. */
#define AUTH_CACHE_SECRET_LEN 32
/* Smallest hash table. */
#define AUTH_CACHE_MIN_BUCKETS 16

struct auth_cache_entry {
    unsigned char key[AUTH_CACHE_KEY_LEN];
    unsigned char stamp[AUTH_CACHE_KEY_LEN];
    uint64_t gen;
    uint64_t expires_ms;
    int verdict;
    const char *reason;    /* static */
    unsigned char *member; /* owned, packed (positive only), or NULL */
    size_t member_len;
    struct auth_cache_entry *hnext;       /* bucket chain */
    struct auth_cache_entry *prev, *next; /* LRU list, most recent first */
};

struct auth_cache {
    pthread_mutex_t lock;
    EVP_MAC *mac; /* owned; HMAC, fetched once */
    unsigned char secret[AUTH_CACHE_SECRET_LEN];
    size_t max_entries;
    uint64_t pos_ttl_ms, neg_ttl_ms;
    auth_cache_clock_fn clock;
    void *clock_arg;
    struct auth_cache_entry **buckets; /* owned array, nbuckets long */
    size_t nbuckets;                   /* a power of two */
    size_t count;
    struct auth_cache_entry *head, *tail; /* LRU ends */
};

/* The fixed part of a packed member; its strings follow, each ending in
 * NUL: address, tenant, fingerprint, then naddrs addresses. */
struct auth_cache_packed {
    long long tenant_id;
    uint32_t sender_policy;
    uint32_t from_policy;
    uint32_t naddrs;
};

static uint64_t auth_cache_monotonic(void *arg)
{
    struct timespec ts;

    (void)arg;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

struct auth_cache *auth_cache_new(size_t max_entries, uint64_t pos_ttl_ms,
                                  uint64_t neg_ttl_ms,
                                  auth_cache_clock_fn clock, void *clock_arg)
{
    struct auth_cache *c = xcalloc(1, sizeof(*c));

    c->max_entries = max_entries;
    c->pos_ttl_ms = pos_ttl_ms;
    c->neg_ttl_ms = neg_ttl_ms;
    c->clock = clock != NULL ? clock : auth_cache_monotonic;
    c->clock_arg = clock_arg;
    c->nbuckets = AUTH_CACHE_MIN_BUCKETS;
    while (c->nbuckets < max_entries)
        c->nbuckets *= 2;
    c->buckets = xcalloc(c->nbuckets, sizeof(*c->buckets));
    c->mac = EVP_MAC_fetch(NULL, OSSL_MAC_NAME_HMAC, NULL);
    if (c->mac == NULL || RAND_bytes(c->secret, sizeof c->secret) != 1) {
        log_error("auth cache: cannot set up HMAC-SHA256");
        EVP_MAC_free(c->mac);
        free(c->buckets);
        free(c);
        return NULL;
    }
    pthread_mutex_init(&c->lock, NULL);
    return c;
}

static void auth_cache_entry_free(struct auth_cache_entry *e)
{
    if (e->member != NULL) {
        OPENSSL_cleanse(e->member, e->member_len);
        free(e->member);
    }
    OPENSSL_cleanse(e, sizeof(*e));
    free(e);
}

void auth_cache_free(struct auth_cache **cp)
{
    struct auth_cache *c = *cp;
    struct auth_cache_entry *e, *next;

    if (c == NULL)
        return;
    for (e = c->head; e != NULL; e = next) {
        next = e->next;
        auth_cache_entry_free(e);
    }
    pthread_mutex_destroy(&c->lock);
    EVP_MAC_free(c->mac);
    OPENSSL_cleanse(c->secret, sizeof c->secret);
    free(c->buckets);
    free(c);
    *cp = NULL;
}

/* ---- keys -------------------------------------------------------------- */

static void auth_cache_be64(unsigned char *out, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        out[i] = (unsigned char)(v & 0xff);
        v >>= 8;
    }
}

/* HMAC-SHA256 under the cache's secret of the n parts, each preceded by
 * its length so that no two part lists give the same input. 0 or -1. */
static int auth_cache_mac(const struct auth_cache *c, const void *const *part,
                          const size_t *len, size_t n,
                          unsigned char out[AUTH_CACHE_KEY_LEN])
{
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
        OSSL_PARAM_construct_end(),
    };
    EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(c->mac);
    unsigned char lenbuf[8];
    size_t outl = 0, i;
    int ok = ctx != NULL &&
             EVP_MAC_init(ctx, c->secret, sizeof c->secret, params) == 1;

    for (i = 0; ok && i < n; i++) {
        auth_cache_be64(lenbuf, len[i]);
        ok = EVP_MAC_update(ctx, lenbuf, sizeof lenbuf) == 1 &&
             EVP_MAC_update(ctx, part[i], len[i]) == 1;
    }
    ok = ok && EVP_MAC_final(ctx, out, &outl, AUTH_CACHE_KEY_LEN) == 1 &&
         outl == AUTH_CACHE_KEY_LEN;
    EVP_MAC_CTX_free(ctx);
    if (!ok) {
        OPENSSL_cleanse(out, AUTH_CACHE_KEY_LEN);
        log_error("auth cache: HMAC failed");
        return -1;
    }
    return 0;
}

int auth_cache_key(const struct auth_cache *c, long long tenant_id,
                   const char *login, const char *password,
                   unsigned char key_r[AUTH_CACHE_KEY_LEN])
{
    unsigned char tid[8];
    const void *part[] = {"key", tid, login, password};
    size_t len[] = {3, sizeof tid, strlen(login), strlen(password)};

    auth_cache_be64(tid, (uint64_t)tenant_id);
    return auth_cache_mac(c, part, len, 4, key_r);
}

int auth_cache_stamp(const struct auth_cache *c, const struct db_member *m,
                     unsigned char stamp_r[AUTH_CACHE_KEY_LEN])
{
    unsigned char id[8], changed[8], disabled;
    const char *hash =
        m != NULL && m->password_hash != NULL ? m->password_hash : "";
    const void *part[] = {"stamp", id, changed, &disabled, hash};
    size_t len[] = {5, sizeof id, sizeof changed, 1, strlen(hash)};

    if (m == NULL) {
        const void *none[] = {"no member"};
        size_t nlen[] = {9};
        return auth_cache_mac(c, none, nlen, 1, stamp_r);
    }
    auth_cache_be64(id, (uint64_t)m->id);
    auth_cache_be64(changed, (uint64_t)m->password_changed);
    disabled = m->disabled != 0;
    return auth_cache_mac(c, part, len, 5, stamp_r);
}

/* ---- member records ----------------------------------------------------- */

/* Packs m into a new buffer; NULL when over AUTH_CACHE_MAX_MEMBER. */
static unsigned char *auth_cache_pack(const struct db_member *m, size_t *len_r)
{
    struct auth_cache_packed head = {
        .tenant_id = m->tenant_id,
        .sender_policy = (uint32_t)m->sender_policy,
        .from_policy = (uint32_t)m->from_policy,
        .naddrs = (uint32_t)m->naddrs,
    };
    const char *fixed[] = {m->address, m->tenant, m->pgp_fingerprint};
    size_t len = sizeof head, off, i, n;
    unsigned char *buf;

    for (i = 0; i < 3; i++)
        len += strlen(fixed[i]) + 1;
    for (i = 0; i < m->naddrs && len <= AUTH_CACHE_MAX_MEMBER; i++)
        len += strlen(m->addrs[i]) + 1;
    if (len > AUTH_CACHE_MAX_MEMBER)
        return NULL;
    buf = xmalloc(len);
    memcpy(buf, &head, sizeof head);
    off = sizeof head;
    for (i = 0; i < 3 + m->naddrs; i++) {
        const char *s = i < 3 ? fixed[i] : m->addrs[i - 3];
        n = strlen(s) + 1;
        memcpy(buf + off, s, n);
        off += n;
    }
    *len_r = len;
    return buf;
}

/* Copies the next NUL-ended string of buf[*off..len) into out. 0 or -1. */
static int auth_cache_unpack_str(const unsigned char *buf, size_t len,
                                 size_t *off, char *out, size_t outlen)
{
    const unsigned char *end = memchr(buf + *off, '\0', len - *off);
    size_t n;

    if (end == NULL)
        return -1;
    n = (size_t)(end - (buf + *off));
    if (n >= outlen)
        return -1;
    memcpy(out, buf + *off, n + 1);
    *off += n + 1;
    return 0;
}

/* Unpacks into m (cleared first). 0, or -1 for a damaged record. */
static int auth_cache_unpack(const unsigned char *buf, size_t len,
                             struct db_member *m)
{
    struct auth_cache_packed head;
    size_t off = sizeof head, i;

    memset(m, 0, sizeof(*m));
    if (len < sizeof head)
        return -1;
    memcpy(&head, buf, sizeof head);
    if (head.naddrs > SG_MAX_MEMBER_ADDRS)
        return -1;
    m->tenant_id = head.tenant_id;
    m->sender_policy = head.sender_policy == DB_POLICY_REWRITE
                           ? DB_POLICY_REWRITE
                           : DB_POLICY_REJECT;
    m->from_policy = head.from_policy == DB_POLICY_REWRITE ? DB_POLICY_REWRITE
                                                           : DB_POLICY_REJECT;
    if (auth_cache_unpack_str(buf, len, &off, m->address, sizeof m->address) !=
            0 ||
        auth_cache_unpack_str(buf, len, &off, m->tenant, sizeof m->tenant) !=
            0 ||
        auth_cache_unpack_str(buf, len, &off, m->pgp_fingerprint,
                              sizeof m->pgp_fingerprint) != 0)
        return -1;
    for (i = 0; i < head.naddrs; i++)
        if (auth_cache_unpack_str(buf, len, &off, m->addrs[i],
                                  sizeof m->addrs[i]) != 0)
            return -1;
    m->naddrs = head.naddrs;
    return off == len ? 0 : -1;
}

/* ---- the table (lock held) ---------------------------------------------- */

static size_t auth_cache_bucket(const struct auth_cache *c,
                                const unsigned char *key)
{
    uint64_t h = 0;

    /* The key is an HMAC output: any of its bits are as good as a hash. */
    memcpy(&h, key, sizeof h);
    return (size_t)(h & (c->nbuckets - 1));
}

static struct auth_cache_entry *auth_cache_find(struct auth_cache *c,
                                                const unsigned char *key)
{
    struct auth_cache_entry *e = c->buckets[auth_cache_bucket(c, key)];

    while (e != NULL && CRYPTO_memcmp(e->key, key, AUTH_CACHE_KEY_LEN) != 0)
        e = e->hnext;
    return e;
}

static void auth_cache_unlink_lru(struct auth_cache *c,
                                  struct auth_cache_entry *e)
{
    if (e->prev != NULL)
        e->prev->next = e->next;
    else
        c->head = e->next;
    if (e->next != NULL)
        e->next->prev = e->prev;
    else
        c->tail = e->prev;
    e->prev = e->next = NULL;
}

static void auth_cache_push_lru(struct auth_cache *c,
                                struct auth_cache_entry *e)
{
    e->prev = NULL;
    e->next = c->head;
    if (c->head != NULL)
        c->head->prev = e;
    c->head = e;
    if (c->tail == NULL)
        c->tail = e;
}

static void auth_cache_remove(struct auth_cache *c, struct auth_cache_entry *e)
{
    struct auth_cache_entry **pp = &c->buckets[auth_cache_bucket(c, e->key)];

    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    auth_cache_unlink_lru(c, e);
    c->count--;
    auth_cache_entry_free(e);
}

/* ---- the interface ------------------------------------------------------ */

int auth_cache_get(struct auth_cache *c,
                   const unsigned char key[AUTH_CACHE_KEY_LEN], uint64_t gen,
                   struct auth_cache_hit *hit_r, struct db_member *m_r)
{
    struct auth_cache_entry *e;
    int ret = 0;

    memset(hit_r, 0, sizeof(*hit_r));
    pthread_mutex_lock(&c->lock);
    e = auth_cache_find(c, key);
    if (e != NULL &&
        (e->gen != gen || c->clock(c->clock_arg) >= e->expires_ms)) {
        auth_cache_remove(c, e);
        e = NULL;
    }
    if (e != NULL && e->member != NULL && m_r != NULL &&
        auth_cache_unpack(e->member, e->member_len, m_r) != 0) {
        log_panic("auth cache: damaged member record");
    }
    if (e != NULL) {
        hit_r->verdict = e->verdict;
        hit_r->reason = e->reason;
        memcpy(hit_r->stamp, e->stamp, sizeof hit_r->stamp);
        hit_r->has_member = e->member != NULL && m_r != NULL;
        auth_cache_unlink_lru(c, e);
        auth_cache_push_lru(c, e);
        ret = 1;
    }
    pthread_mutex_unlock(&c->lock);
    return ret;
}

void auth_cache_put(struct auth_cache *c,
                    const unsigned char key[AUTH_CACHE_KEY_LEN], uint64_t gen,
                    int verdict, const char *reason, const unsigned char *stamp,
                    const struct db_member *m)
{
    uint64_t ttl = verdict == 1 ? c->pos_ttl_ms : c->neg_ttl_ms;
    struct auth_cache_entry *e, *old;
    unsigned char *packed = NULL;
    size_t packed_len = 0;
    size_t b;

    if (c->max_entries == 0 || ttl == 0)
        return;
    if (verdict == 1 && m != NULL) {
        packed = auth_cache_pack(m, &packed_len);
        if (packed == NULL)
            return; /* too large to keep; see AUTH_CACHE_MAX_MEMBER */
    }
    e = xcalloc(1, sizeof(*e));
    memcpy(e->key, key, AUTH_CACHE_KEY_LEN);
    if (stamp != NULL)
        memcpy(e->stamp, stamp, AUTH_CACHE_KEY_LEN);
    e->gen = gen;
    e->verdict = verdict == 1;
    e->reason = reason;
    e->member = packed;
    e->member_len = packed_len;
    pthread_mutex_lock(&c->lock);
    e->expires_ms = c->clock(c->clock_arg) + ttl;
    old = auth_cache_find(c, key);
    if (old != NULL)
        auth_cache_remove(c, old);
    while (c->count >= c->max_entries && c->tail != NULL)
        auth_cache_remove(c, c->tail);
    b = auth_cache_bucket(c, e->key);
    e->hnext = c->buckets[b];
    c->buckets[b] = e;
    auth_cache_push_lru(c, e);
    c->count++;
    pthread_mutex_unlock(&c->lock);
}

void auth_cache_drop(struct auth_cache *c,
                     const unsigned char key[AUTH_CACHE_KEY_LEN])
{
    struct auth_cache_entry *e;

    pthread_mutex_lock(&c->lock);
    e = auth_cache_find(c, key);
    if (e != NULL)
        auth_cache_remove(c, e);
    pthread_mutex_unlock(&c->lock);
}

size_t auth_cache_count(struct auth_cache *c)
{
    size_t n;

    pthread_mutex_lock(&c->lock);
    n = c->count;
    pthread_mutex_unlock(&c->lock);
    return n;
}
