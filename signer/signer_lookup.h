/* signer_lookup: which keys sign for a domain, remembered until the
 * database changes. db_sign_keys() prepares and runs a three-table query;
 * for a 2 KiB message that was the largest cost on the signer's loop
 * thread. The answers (keys found, or none) are kept per domain and all
 * dropped as soon as SQLite's data_version changes, which it does when any
 * other connection (the admin tool) commits: activating, retiring or
 * replacing a key, or changing a tenant's sign_algos, still takes effect
 * with the next message. The check is one prepared statement per request.
 * At most SIGNER_LOOKUP_MAX domains are remembered; past it the table
 * starts afresh. Loop thread only. */
#ifndef SG_SIGNER_LOOKUP_H
#define SG_SIGNER_LOOKUP_H

#include <stddef.h>
#include <sqlite3.h>

#include "../common/db.h"

/* Domains remembered at once: more than one node signs for in practice. */
#define SIGNER_LOOKUP_MAX 1024

struct signer_lookup;

struct signer_lookup *signer_lookup_new(void);
/* Drops every answer and the prepared statement; sets *lp to NULL. */
void signer_lookup_free(struct signer_lookup **lp);

/* As db_sign_keys(db, domain, keys, max, n_r): 1 with keys (*n_r of
 * them), 0 none, -1 database error (not remembered). db must stay the
 * same handle between calls until signer_lookup_forget(). */
int signer_lookup_keys(struct signer_lookup *l, sqlite3 *db, const char *domain,
                       struct db_sign_key *keys, size_t max, size_t *n_r);

/* Forgets every answer and finalizes the statement: call before the
 * database handle is closed. */
void signer_lookup_forget(struct signer_lookup *l);

/* Answers remembered (tests). */
size_t signer_lookup_count(const struct signer_lookup *l);

#endif
