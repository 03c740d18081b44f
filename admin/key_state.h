/* key_state: the moves of a DKIM key through its states, shared by `key
 * activate|retire|revoke|delete` (cmd_key.c) and `key rotate`
 * (key_rotate.c):
 *
 *   pending -> published -> active -> retired -> revoked -> deleted
 *
 * Each move sets the state and its timestamp. Activating a key retires the
 * domain's other active key of the same algorithm. Deleting removes the
 * row and then unlinks the private key file. Revealing copies a revoked
 * key's private key to <state_dir>/revealed/DOMAIN/SELECTOR.pem for
 * publication (deniability, see docs/keys.md). Single-threaded; callers
 * hold the transaction where one is needed. */
#ifndef SG_ADMIN_KEY_STATE_H
#define SG_ADMIN_KEY_STATE_H

#include <stdio.h>

#include "admin.h"
#include "dns_conf.h"

/* Keys of one domain handled at once (dns_want bounds the same). */
#define KEYSTATE_MAX 64

struct keystate_key {
    long long id;
    char sel[DNSCONF_LABEL_MAX + 1];
    char algo[16];
    char state[16];
    char key_file[512]; /* relative to key_dir */
    long long created, published, activated, retired, revoked;
};

/* Loads the keys of domain, oldest first. ADMIN_OK with *n_r, or
 * ADMIN_FAIL (printed; also when there are more than max). */
int keystate_load(struct admin_ctx *ctx, const char *domain,
                  struct keystate_key *keys, size_t max, size_t *n_r);

/* Sets key id to state and its timestamp column (named as the state:
 * published, activated for active, retired, revoked) to now. */
int keystate_set(struct admin_ctx *ctx, long long id, const char *state);

/* Makes k active and retires the domain's other active key of its
 * algorithm. Reports "PREFIXSEL<TAB>ALGO<TAB>active[<TAB>forced]" and
 * "PREFIXOLD<TAB>ALGO<TAB>retired" to out. */
int keystate_activate(struct admin_ctx *ctx, const char *domain,
                      const struct keystate_key *k, int forced,
                      const char *prefix, FILE *out);

/* Deletes k's row (inside the caller's transaction). Its key file is
 * unlinked by keystate_unlink once the transaction is committed. */
int keystate_delete_row(struct admin_ctx *ctx, const struct keystate_key *k);
/* Unlinks k's private key file and syncs its directory. ADMIN_OK, also
 * when the file is gone already, or ADMIN_FAIL (printed). */
int keystate_unlink(struct admin_ctx *ctx, const struct keystate_key *k);

/* 1 if k's private key has been revealed, 0 if not. */
int keystate_revealed(struct admin_ctx *ctx, const char *domain,
                      const struct keystate_key *k);
/* Copies k's private key to <state_dir>/revealed/DOMAIN/SEL.pem (mode
 * 0644, directories 0755). ADMIN_OK or ADMIN_FAIL (printed). */
int keystate_reveal(struct admin_ctx *ctx, const char *domain,
                    const struct keystate_key *k);

/* Checks that the records of the keys (ids) are served by every server
 * that dns_check asks, marking pending ones published. ADMIN_OK, or
 * ADMIN_FAIL after one line naming the first key and server that fail. */
int keystate_gate(struct admin_ctx *ctx, const char *domain,
                  const long long *ids, const char *const *sels, size_t n);

/* Logs one line to syslog when the configuration logs there (an admin
 * command's stderr is for its errors only). */
void keystate_log(struct admin_ctx *ctx, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Generates one pending key per algorithm in algos (a selector from
 * selector_template, or from the slots of a delegated domain), storing
 * all or none; reports "PREFIXSEL<TAB>ALGO<TAB>pending" to out.
 * Implemented in cmd_key.c with `key generate`. */
int cmd_key_generate_algos(struct admin_ctx *ctx, const char *domain,
                           const char *const *algos, size_t n,
                           const char *prefix, FILE *out);

#endif
