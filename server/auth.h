/* auth: the AUTH verdict on a login and password, whatever backend the
 * login's tenant uses. The SMTP session calls only this module.
 *
 * A check runs off the event loop, in libuv's thread pool: it finds the
 * login's tenant (the owner of the login's domain; for a login without
 * '@', the only tenant with an LDAP backend) and its settings, asks the
 * auth cache (auth_cache.h), and on a miss the tenant's backend:
 * auth_sqlite (the member table, a slow hash) or auth_ldap (the
 * directory). A cached verdict of an SQLite member is checked against the
 * member row again (one indexed read, no hash), so that a password change
 * or a disabled member takes effect at once; an LDAP member's cached
 * verdict stands until its TTL ends.
 *
 * At most ldap_pool_size directory checks run at once, each on its own
 * pooled connection; more wait in order on the loop, so that a slow
 * directory ties up a bounded part of the thread pool and never the loop.
 * Refused logins are cached too (auth_cache_negative_ttl); a directory or
 * database that cannot be asked (result -1) is never cached.
 *
 * Loop thread only, apart from what it runs in the pool itself. */
#ifndef SG_AUTH_H
#define SG_AUTH_H

#include <uv.h>

#include "../common/cfg.h"
#include "../common/db.h"

/* The verdict of one check, on the loop thread. result 1: login and
 * password are right and the member may submit; m is the member record
 * (heap, without password hash), owned by the callee from now on
 * (free()). result 0: refused (unknown member, wrong password, no
 * password, disabled, not allowed by the directory), m NULL. result -1:
 * the database or the directory could not be asked, m NULL: answer with
 * a temporary failure, never as for a wrong password. reason is a short
 * text for the log, valid during the call. */
typedef void (*auth_done_cb)(void *arg, int result, const char *reason,
                             struct db_member *m);

struct auth;
struct auth_req;

/* The checker of one SMTP worker: its cache and directory connections.
 * cfg is borrowed and must outlive it. Call before the loop runs any
 * thread-pool work: it sizes libuv's pool (UV_THREADPOOL_SIZE, unless set
 * already) so that ldap_pool_size directory checks leave four threads to
 * the rest. */
struct auth *auth_new(uv_loop_t *loop, const struct cfg *cfg);
/* Once no check is running (the loop has ended): closes the directory
 * connections and wipes the cache. Sets *ap to NULL. */
void auth_free(struct auth **ap);

/* Starts a check of login/password (both copied; the copy of the password
 * is wiped as soon as the check no longer needs it). logid (copied)
 * starts the log lines about backend errors; client_ip (copied) is
 * recorded when a submission token is used. For SQLite tenants the
 * password may be one of the member's tokens (auth_token.h; never
 * cached), and a tenant that requires tokens refuses the account
 * password; on success with a token m->auth_via names its label. Returns
 * the request, whose callback runs exactly once unless it is cancelled,
 * or NULL if the work could not be queued (logged; no callback). */
struct auth_req *auth_check(struct auth *a, const char *logid,
                            const char *client_ip, const char *login,
                            const char *password, auth_done_cb cb, void *arg);

/* The owner goes away: the callback will not run. The request frees
 * itself once no thread works on it any more. */
void auth_cancel(struct auth_req *req);

#endif
