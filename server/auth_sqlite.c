/* auth_sqlite: the member table as an AUTH backend; see auth_sqlite.h. */
#include "auth_sqlite.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "../common/log.h"
#include "../common/passwd.h"

/* The calling pool thread's database handle. Thread-local on purpose: one
 * handle per pool thread, reused across checks; see auth_sqlite.h. */
struct auth_sqlite_handle {
    sqlite3 *db;
    char path[PATH_MAX];
};

static _Thread_local struct auth_sqlite_handle auth_sqlite_tl;

sqlite3 *auth_sqlite_db(const char *path)
{
    struct auth_sqlite_handle *h = &auth_sqlite_tl;
    char err[256];

    if (h->db != NULL && strcmp(h->path, path) != 0)
        db_close(&h->db);
    if (h->db != NULL)
        return h->db;
    if (strlen(path) >= sizeof(h->path)) {
        log_error("auth: database path too long: %s", path);
        return NULL;
    }
    if (db_open(path, 0, &h->db, err, sizeof(err)) != 0) {
        log_error("auth: cannot open database %s: %s", path, err);
        h->db = NULL;
        return NULL;
    }
    snprintf(h->path, sizeof(h->path), "%s", path);
    return h->db;
}

void auth_sqlite_db_reset(void)
{
    db_close(&auth_sqlite_tl.db);
}

int auth_sqlite_verify(const struct db_member *m, const char *password,
                       const char **reason_r)
{
    /* The hash runs whatever the outcome, so that an unknown login or a
     * member without a password costs as much as a wrong password. */
    int ok = passwd_verify(password, m != NULL ? m->password_hash : NULL);

    if (m == NULL)
        *reason_r = "unknown member";
    else if (m->password_hash == NULL)
        *reason_r = "no password set";
    else if (!ok)
        *reason_r = "bad password";
    else if (m->disabled)
        *reason_r = "disabled";
    else {
        *reason_r = "ok";
        return 1;
    }
    return 0;
}
