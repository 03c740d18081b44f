/* relay_pool: the queue runner's connections, per destination (a
 * recipient domain, or relay_host). A destination has at most `limit`
 * connections at once, counting those in use, those being opened and
 * the idle ones kept for reuse; an idle connection is handed to the next
 * message for the same destination and closed (QUIT) after RELAY_IDLE_S.
 * Thread-safe: one mutex inside; QUIT and connect happen outside it. */
#ifndef SG_RELAY_POOL_H
#define SG_RELAY_POOL_H

#include <stdint.h>

#include "relay.h"

struct relay_pool;

/* A pool for connections made with conf (borrowed; must outlive it),
 * limit per destination (1 or more). */
struct relay_pool *relay_pool_new(const struct relay_conf *conf,
                                  unsigned limit);
/* Closes every idle connection (QUIT) and frees; no connection may be
 * out. Sets *pp to NULL. */
void relay_pool_free(struct relay_pool **pp);

/* The hash that names a destination key in relay_pool_full(); never 0. */
uint64_t relay_pool_hash(const char *key);

/* A connection for key into *r_r: 1 an idle, open one; 2 a new,
 * unconnected one that holds a place under the limit; 0 none, the
 * destination is at its limit. */
int relay_pool_get(struct relay_pool *p, const char *key, struct relay **r_r);
/* Gives back what relay_pool_get() returned: kept for reuse when still
 * open and reusable, else closed (QUIT) and freed. *r_r becomes NULL. */
void relay_pool_put(struct relay_pool *p, const char *key, struct relay **r_r);

/* 1 when the destination with this hash is at its limit with no idle
 * connection (a message for it would wait), 0 otherwise. */
int relay_pool_full(struct relay_pool *p, uint64_t hash);

/* Closes idle connections past RELAY_IDLE_S. Returns how many it closed
 * (each freed a place under a limit). */
unsigned relay_pool_reap(struct relay_pool *p);

#endif
