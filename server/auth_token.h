/* auth_token: per-device submission passwords ("tokens", table
 * member_token) and the tenant policy that requires them, for the SQLite
 * AUTH backend. A token is "sgt_<id>_<secret>": the id names the one row
 * whose hash is checked, so a token costs one slow hash like a password.
 * Blocking (SQLite, passwd_verify): pool threads only, on the handle of
 * auth_sqlite_db(). */
#ifndef SG_AUTH_TOKEN_H
#define SG_AUTH_TOKEN_H

#include <sqlite3.h>

#include "../common/db.h"

/* 1 if password has the form of a token, with its row id in *id_r; 0 if
 * it is an ordinary password. */
int auth_token_parse(const char *password, long long *id_r);

/* Checks token (whose row is id) for member m (as db_member_lookup filled
 * it; NULL: unknown login, a dummy hash runs). On success records the
 * time and client_ip in the row and sets m->auth_via to "token=LABEL".
 * 1 accepted, 0 refused (*reason_r: "unknown member", "unknown token",
 * "bad token", "disabled"), -1 database error. */
int auth_token_verify(sqlite3 *db, struct db_member *m, long long id,
                      const char *token, const char *client_ip,
                      const char **reason_r);

/* 1 if the tenant refuses account passwords (tokens only), 0 if not, -1
 * database error. */
int auth_token_required(sqlite3 *db, long long tenant_id);

#endif
