/* auth_sqlite: checks a member's login and password against the SQLite
 * store without blocking the event loop. The lookup and the (deliberately
 * slow) password hash run in the libuv thread pool on copies of the
 * inputs; the result comes back on the loop thread. Each pool thread keeps
 * its own database handle (a thread-local, opened on first use and again
 * after an error; SQLite handles must not be shared between threads that
 * run at the same time, and opening one per check would cost more than the
 * lookup). Those handles live until the process exits. Start and cancel
 * from the loop thread only. */
#ifndef SG_AUTH_SQLITE_H
#define SG_AUTH_SQLITE_H

#include <uv.h>

#include "../common/cfg.h"
#include "../common/db.h"

/* The verdict of one check, on the loop thread. result 1: login and
 * password are right and the member is enabled; m is the member record
 * (heap, password hash already wiped and freed), owned by the callee from
 * now on (free()). result 0: refused (unknown member, wrong password, no
 * password set, disabled), m is NULL. result -1: the database is
 * unavailable, m is NULL. reason is a short text for the log ("ok", "bad
 * password", "unknown member", "disabled", "database unavailable"), valid
 * during the call. */
typedef void (*auth_sqlite_done_cb)(void *arg, int result, const char *reason,
                                    struct db_member *m);

struct auth_sqlite_req;

/* Starts a check of login/password (both copied; the copy of the password
 * is wiped as soon as it has been hashed). cfg is borrowed for the call
 * only. Returns the request, whose callback runs exactly once unless it is
 * cancelled, or NULL if the work could not be queued (then no callback). */
struct auth_sqlite_req *
auth_sqlite_check(uv_loop_t *loop, const struct cfg *cfg, const char *login,
                  const char *password, auth_sqlite_done_cb cb, void *arg);

/* The owner goes away: the callback will not run. The request frees
 * itself once the worker thread is done with it. */
void auth_sqlite_cancel(struct auth_sqlite_req *req);

#endif
