/* relay_pool: see relay_pool.h. Destinations live in a small hash table
 * and are freed as soon as they hold no connection, so the table grows
 * with the destinations in use, not with all ever seen. */
#include "relay_pool.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "../common/limits.h"
#include "../common/log.h"
#include "../common/xalloc.h"

#define RELAY_POOL_BUCKETS 256

struct relay_pool_dest {
    char key[SG_MAX_DOMAIN + 1];
    uint64_t hash;
    unsigned count; /* connections in use, being opened or idle */
    unsigned nidle;
    struct relay **idle; /* owned: limit slots; the first nidle used */
    struct relay_pool_dest *next;
};

struct relay_pool {
    const struct relay_conf *conf; /* borrowed */
    unsigned limit;
    pthread_mutex_t mu;
    struct relay_pool_dest *bucket[RELAY_POOL_BUCKETS];
};

uint64_t relay_pool_hash(const char *key)
{
    /* FNV-1a, 64 bits. */
    uint64_t h = 14695981039346656037ULL;

    for (; *key != '\0'; key++) {
        h ^= (unsigned char)*key;
        h *= 1099511628211ULL;
    }
    return h != 0 ? h : 1;
}

struct relay_pool *relay_pool_new(const struct relay_conf *conf, unsigned limit)
{
    struct relay_pool *p = xcalloc(1, sizeof(*p));

    SG_ASSERT(limit >= 1);
    p->conf = conf;
    p->limit = limit;
    pthread_mutex_init(&p->mu, NULL);
    return p;
}

/* The destination for key; created when create. Under the mutex. */
static struct relay_pool_dest *relay_pool_find(struct relay_pool *p,
                                               const char *key, int create)
{
    uint64_t h = relay_pool_hash(key);
    struct relay_pool_dest **slot = &p->bucket[h % RELAY_POOL_BUCKETS], *d;

    for (d = *slot; d != NULL; d = d->next) {
        if (d->hash == h && strcmp(d->key, key) == 0)
            return d;
    }
    if (!create)
        return NULL;
    d = xcalloc(1, sizeof(*d));
    /* Keys are domains or relay_host: both fit. */
    SG_ASSERT(strlen(key) < sizeof(d->key));
    memcpy(d->key, key, strlen(key) + 1);
    d->hash = h;
    d->idle = xcalloc(p->limit, sizeof(*d->idle));
    d->next = *slot;
    *slot = d;
    return d;
}

/* Frees d once it holds no connection. Under the mutex. */
static void relay_pool_drop_empty(struct relay_pool *p,
                                  struct relay_pool_dest *d)
{
    struct relay_pool_dest **pp = &p->bucket[d->hash % RELAY_POOL_BUCKETS];

    if (d->count > 0)
        return;
    while (*pp != d)
        pp = &(*pp)->next;
    *pp = d->next;
    free(d->idle);
    free(d);
}

int relay_pool_get(struct relay_pool *p, const char *key, struct relay **r_r)
{
    struct relay_pool_dest *d;
    int rc = 0;

    pthread_mutex_lock(&p->mu);
    d = relay_pool_find(p, key, 1);
    if (d->nidle > 0) {
        *r_r = d->idle[--d->nidle];
        rc = 1;
    } else if (d->count < p->limit) {
        d->count++;
        rc = 2;
    } else {
        relay_pool_drop_empty(p, d);
    }
    pthread_mutex_unlock(&p->mu);
    if (rc == 2)
        *r_r = relay_new(p->conf);
    return rc;
}

void relay_pool_put(struct relay_pool *p, const char *key, struct relay **r_r)
{
    struct relay *r = *r_r;
    int keep = relay_reusable(r);
    struct relay_pool_dest *d;

    *r_r = NULL;
    pthread_mutex_lock(&p->mu);
    d = relay_pool_find(p, key, 0);
    SG_ASSERT(d != NULL && d->count > 0);
    if (keep && d->nidle < p->limit) {
        d->idle[d->nidle++] = r;
        r = NULL;
    } else {
        d->count--;
        relay_pool_drop_empty(p, d);
    }
    pthread_mutex_unlock(&p->mu);
    relay_free(&r); /* QUIT if still open */
}

int relay_pool_full(struct relay_pool *p, uint64_t hash)
{
    struct relay_pool_dest *d;
    int full = 0;

    pthread_mutex_lock(&p->mu);
    for (d = p->bucket[hash % RELAY_POOL_BUCKETS]; d != NULL; d = d->next) {
        if (d->hash == hash) {
            full = d->count >= p->limit && d->nidle == 0;
            break;
        }
    }
    pthread_mutex_unlock(&p->mu);
    return full;
}

/* Takes the idle connections out (all, or only those past their idle
 * time) into a new list; *n_r how many. Under the mutex. */
static struct relay **relay_pool_take(struct relay_pool *p, int all,
                                      size_t *n_r)
{
    struct relay **out = NULL;
    size_t n = 0, cap = 0;

    for (size_t b = 0; b < RELAY_POOL_BUCKETS; b++) {
        struct relay_pool_dest *d = p->bucket[b], *next;
        for (; d != NULL; d = next) {
            next = d->next;
            for (unsigned i = 0; i < d->nidle;) {
                if (!all && relay_reusable(d->idle[i])) {
                    i++;
                    continue;
                }
                if (n == cap) {
                    cap = cap ? cap * 2 : 16;
                    out = xrealloc(out, cap * sizeof(*out));
                }
                out[n++] = d->idle[i];
                d->idle[i] = d->idle[--d->nidle];
                d->count--;
            }
            relay_pool_drop_empty(p, d);
        }
    }
    *n_r = n;
    return out;
}

unsigned relay_pool_reap(struct relay_pool *p)
{
    struct relay **list;
    size_t n;

    pthread_mutex_lock(&p->mu);
    list = relay_pool_take(p, 0, &n);
    pthread_mutex_unlock(&p->mu);
    for (size_t i = 0; i < n; i++)
        relay_free(&list[i]);
    free(list);
    return (unsigned)n;
}

void relay_pool_free(struct relay_pool **pp)
{
    struct relay_pool *p = *pp;
    struct relay **list;
    size_t n;

    if (p == NULL)
        return;
    pthread_mutex_lock(&p->mu);
    list = relay_pool_take(p, 1, &n);
    pthread_mutex_unlock(&p->mu);
    for (size_t i = 0; i < n; i++)
        relay_free(&list[i]);
    free(list);
    for (size_t b = 0; b < RELAY_POOL_BUCKETS; b++)
        SG_ASSERT(p->bucket[b] == NULL);
    pthread_mutex_destroy(&p->mu);
    free(p);
    *pp = NULL;
}
