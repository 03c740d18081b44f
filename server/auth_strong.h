/* auth_strong: the database side of AUTH mechanisms that send no password:
 * SCRAM-SHA-256 (the member's stored keys) and EXTERNAL (the member whose
 * registered client certificate the TLS peer presented). Both are for
 * SQLite tenants only: a directory holds no SCRAM keys and no
 * certificates. The lookup runs in libuv's thread pool on the pool
 * thread's handle (auth_sqlite_db()); the verdict on a SCRAM proof is
 * scram.h's, on the loop. Loop thread only, apart from the pool work. */
#ifndef SG_AUTH_STRONG_H
#define SG_AUTH_STRONG_H

#include <uv.h>

#include "../common/cfg.h"
#include "../common/db.h"
#include "../common/scram_keys.h"

enum auth_strong_kind {
    AUTH_STRONG_SCRAM, /* key: the login; keys filled */
    AUTH_STRONG_CERT,  /* key: the certificate's SHA-256, lower-case hex */
};

/* result 1: the member (heap, no password hash; the callee's, free())
 * with, for SCRAM, its keys in *k (valid during the call). 0: refused
 * (unknown login or certificate, no SCRAM keys or stale ones, LDAP
 * tenant, tokens required, disabled), m NULL, reason for the log. -1: the
 * database could not be asked. */
typedef void (*auth_strong_cb)(void *arg, int result, const char *reason,
                               struct db_member *m, const struct scram_keys *k);

struct auth_strong_req;

/* Starts a lookup (key copied). NULL if it could not be queued (logged;
 * no callback); else the callback runs once unless cancelled. */
struct auth_strong_req *
auth_strong_lookup(uv_loop_t *loop, const struct cfg *cfg, const char *logid,
                   enum auth_strong_kind kind, const char *key,
                   auth_strong_cb cb, void *arg);
/* The owner goes away: the callback will not run. */
void auth_strong_cancel(struct auth_strong_req *req);

#endif
