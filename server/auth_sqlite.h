/* auth_sqlite: the SQLite backend of AUTH, for tenants whose members live
 * in the member table. Blocking on purpose: the dispatcher (auth.c) calls
 * it from libuv's thread pool, never from the event loop, since the hash
 * is slow by design and a read may wait for a writer.
 *
 * Each pool thread keeps its own database handle (a thread-local, opened
 * on first use and again after an error; SQLite handles must not be
 * shared between threads that run at the same time, and opening one per
 * check would cost more than the lookup). Those handles live until the
 * process exits. */
#ifndef SG_AUTH_SQLITE_H
#define SG_AUTH_SQLITE_H

#include <sqlite3.h>

#include "../common/db.h"

/* The calling thread's handle on the database at path, opened if needed;
 * NULL if it cannot be opened (logged). Pool threads only. */
sqlite3 *auth_sqlite_db(const char *path);

/* Closes the calling thread's handle after a failed query (file replaced,
 * I/O error), so that the next auth_sqlite_db() opens a fresh one. */
void auth_sqlite_db_reset(void);

/* The verdict on password for member m (as db_member_lookup filled it,
 * hash included; m itself is not changed). m NULL: an unknown login, for
 * which a dummy hash of the same cost runs, so that timing does not tell
 * which logins exist. 1: right password and the member is enabled; 0:
 * refused, with *reason_r "unknown member", "no password set", "bad
 * password" or "disabled" (static text). */
int auth_sqlite_verify(const struct db_member *m, const char *password,
                       const char **reason_r);

#endif
