/* auth_token: submission tokens; see auth_token.h. */
#include "auth_token.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/limits.h"
#include "../common/log.h"
#include "../common/passwd.h"

int auth_token_parse(const char *password, long long *id_r)
{
    const char *p = password + 4;
    long long id = 0;
    size_t digits = 0;

    if (strncmp(password, "sgt_", 4) != 0 || strlen(password) > SG_MAX_TOKEN)
        return 0;
    for (; *p >= '0' && *p <= '9' && digits < 18; p++, digits++)
        id = id * 10 + (*p - '0');
    if (digits == 0 || *p != '_' || p[1] == '\0')
        return 0;
    *id_r = id;
    return 1;
}

int auth_token_verify(sqlite3 *db, struct db_member *m, long long id,
                      const char *token, const char *client_ip,
                      const char **reason_r)
{
    sqlite3_stmt *st = NULL;
    char *hash = NULL, label[SG_MAX_TOKEN_LABEL + 1] = "";
    int rc, ok;

    if (m != NULL && sqlite3_prepare_v2(db,
                                        "SELECT hash, label FROM member_token"
                                        " WHERE id = ?1 AND member_id = ?2",
                                        -1, &st, NULL) != SQLITE_OK)
        return -1;
    if (st != NULL) {
        sqlite3_bind_int64(st, 1, id);
        sqlite3_bind_int64(st, 2, m->id);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            const char *h = (const char *)sqlite3_column_text(st, 0);
            const char *l = (const char *)sqlite3_column_text(st, 1);

            hash = strdup(h != NULL ? h : "");
            snprintf(label, sizeof label, "%s", l != NULL ? l : "");
        }
        sqlite3_finalize(st);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE)
            return -1;
    }
    /* The hash runs whatever was found, as for passwords. */
    ok = passwd_verify(token, hash);
    if (hash != NULL) {
        explicit_bzero(hash, strlen(hash));
        free(hash);
    }
    if (m == NULL)
        return *reason_r = "unknown member", 0;
    if (label[0] == '\0')
        return *reason_r = "unknown token", 0;
    if (!ok)
        return *reason_r = "bad token", 0;
    if (m->disabled)
        return *reason_r = "disabled", 0;
    snprintf(m->auth_via, sizeof m->auth_via, "token=%s", label);
    if (sqlite3_prepare_v2(db,
                           "UPDATE member_token SET last_used = ?2,"
                           " last_ip = ?3 WHERE id = ?1",
                           -1, &st, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_int64(st, 2, (long long)time(NULL));
    sqlite3_bind_text(st, 3, client_ip, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        /* the verdict stands; only the bookkeeping is lost */
        log_error("auth: cannot record use of token %lld: %s", id,
                  sqlite3_errmsg(db));
    *reason_r = "ok";
    return 1;
}

int auth_token_required(sqlite3 *db, long long tenant_id)
{
    sqlite3_stmt *st;
    int rc, req = 0;

    if (sqlite3_prepare_v2(db,
                           "SELECT require_tokens FROM tenant_auth_policy"
                           " WHERE tenant_id = ?1",
                           -1, &st, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_int64(st, 1, tenant_id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        req = sqlite3_column_int(st, 0) != 0;
    sqlite3_finalize(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? req : -1;
}
