/* auth_cache: remembers recent AUTH verdicts so that repeated logins cost
 * neither a slow password hash nor a directory round trip. Used by the
 * dispatcher (auth.c) for both backends.
 *
 * An entry is found by a key that is an HMAC-SHA256, under a random key
 * made when the cache is created, of (tenant id, login, password): the
 * cache never holds a password or anything from which one could be
 * checked without that per-process secret, which lives only in this
 * process's memory. Entries expire after the positive or the negative TTL
 * of their verdict; at most max_entries are kept, the least recently used
 * going first.
 *
 * An entry also carries the "generation" of its tenant's settings (a
 * digest of backend and policies: changing them drops the tenant's
 * entries on their next use) and a "stamp" of the member row it was
 * decided on (SQLite members: id, password hash, password change time,
 * disabled flag, as auth_cache_stamp() computes it). The caller compares
 * the stamp with the row it reads again, one indexed SELECT without
 * hashing, so that `subgate member passwd` takes effect at once. Positive
 * entries of LDAP members hold the member record itself (addresses,
 * fingerprint), as the directory is not asked again before the TTL ends.
 *
 * Any thread: one mutex guards the table. */
#ifndef SG_AUTH_CACHE_H
#define SG_AUTH_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "../common/db.h"

/* Octets of a key and of a stamp (HMAC-SHA256). */
#define AUTH_CACHE_KEY_LEN 32
/* A member record larger than this (packed: its addresses and names) is
 * not kept; its logins go to the directory each time. Bounds the memory
 * of a full cache at about max_entries times this. */
#define AUTH_CACHE_MAX_MEMBER 4096

/* Monotonic milliseconds; the cache asks it for "now". */
typedef uint64_t (*auth_cache_clock_fn)(void *arg);

struct auth_cache;

/* What a hit tells. */
struct auth_cache_hit {
    int verdict;        /* 1 accepted, 0 refused */
    const char *reason; /* static text given to auth_cache_put */
    unsigned char stamp[AUTH_CACHE_KEY_LEN];
    int has_member; /* 1: the entry held a member, copied out */
};

/* A cache of at most max_entries verdicts; positive ones live pos_ttl_ms,
 * negative ones neg_ttl_ms (0: not kept). max_entries 0 makes a cache
 * that keeps nothing. clock NULL: CLOCK_MONOTONIC; tests pass their own.
 * NULL if no random key could be made (logged). */
struct auth_cache *auth_cache_new(size_t max_entries, uint64_t pos_ttl_ms,
                                  uint64_t neg_ttl_ms,
                                  auth_cache_clock_fn clock, void *clock_arg);
/* Wipes the secret and every entry; sets *cp to NULL. */
void auth_cache_free(struct auth_cache **cp);

/* The key of one login attempt into key_r. 0, or -1 if HMAC failed (then
 * the caller does without the cache). */
int auth_cache_key(const struct auth_cache *c, long long tenant_id,
                   const char *login, const char *password,
                   unsigned char key_r[AUTH_CACHE_KEY_LEN]);

/* The stamp of a member row as the SQLite backend read it (id, password
 * hash, password_changed, disabled), keyed like auth_cache_key; m NULL
 * (no such member) has a stamp of its own. 0 or -1. */
int auth_cache_stamp(const struct auth_cache *c, const struct db_member *m,
                     unsigned char stamp_r[AUTH_CACHE_KEY_LEN]);

/* Looks key up. 1: a live entry of generation gen, *hit_r filled, and
 * when it holds a member and m_r is not NULL, *m_r too (password_hash
 * NULL). 0: none (an expired entry, or one of another generation, is
 * dropped on the way). */
int auth_cache_get(struct auth_cache *c,
                   const unsigned char key[AUTH_CACHE_KEY_LEN], uint64_t gen,
                   struct auth_cache_hit *hit_r, struct db_member *m_r);

/* Stores a verdict (replacing any entry of key), evicting the least
 * recently used entry when full. reason must be static text. stamp may be
 * NULL (all zero); m (positive verdicts only, may be NULL) is copied
 * without its password hash; a verdict whose TTL is 0 is not kept, nor a
 * positive one whose member is over AUTH_CACHE_MAX_MEMBER. */
void auth_cache_put(struct auth_cache *c,
                    const unsigned char key[AUTH_CACHE_KEY_LEN], uint64_t gen,
                    int verdict, const char *reason, const unsigned char *stamp,
                    const struct db_member *m);

/* Forgets key, if present. */
void auth_cache_drop(struct auth_cache *c,
                     const unsigned char key[AUTH_CACHE_KEY_LEN]);

/* Live and expired entries held now (for tests and status). */
size_t auth_cache_count(struct auth_cache *c);

#endif
