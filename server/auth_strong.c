/* auth_strong: SCRAM keys and client certificates; see auth_strong.h. */
#include "auth_strong.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "../common/log.h"
#include "../common/xalloc.h"
#include "auth_sqlite.h"
#include "auth_token.h"

struct auth_strong_req {
    uv_work_t work; /* work.data = this */
    const struct cfg *cfg;
    auth_strong_cb cb; /* NULL once cancelled */
    void *arg;
    enum auth_strong_kind kind;
    char logid[16];
    char key[SG_MAX_PATH + 1];
    int result;
    const char *reason;
    struct db_member *m; /* owned until handed over */
    struct scram_keys keys;
};

/* The SCRAM keys of m, valid only if derived from its current password. */
static int auth_strong_keys(sqlite3 *db, const struct db_member *m,
                            struct scram_keys *k)
{
    sqlite3_stmt *st;
    int rc, found = 0;

    if (sqlite3_prepare_v2(db,
                           "SELECT iterations, salt, stored_key, server_key,"
                           " password_hash FROM member_scram"
                           " WHERE member_id = ?1",
                           -1, &st, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_int64(st, 1, m->id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        long long it = sqlite3_column_int64(st, 0);
        int sl = sqlite3_column_bytes(st, 1);
        const void *salt = sqlite3_column_blob(st, 1);
        const void *sk = sqlite3_column_blob(st, 2);
        const void *vk = sqlite3_column_blob(st, 3);
        const char *ph = (const char *)sqlite3_column_text(st, 4);

        if (it >= 1 && it <= 0x7fffffff && sl > 0 &&
            (size_t)sl <= sizeof k->salt && salt != NULL && sk != NULL &&
            vk != NULL && sqlite3_column_bytes(st, 2) == SCRAM_KEY_LEN &&
            sqlite3_column_bytes(st, 3) == SCRAM_KEY_LEN && ph != NULL &&
            m->password_hash != NULL && strcmp(ph, m->password_hash) == 0) {
            k->iterations = (unsigned)it;
            k->salt_len = (size_t)sl;
            memcpy(k->salt, salt, (size_t)sl);
            memcpy(k->stored_key, sk, SCRAM_KEY_LEN);
            memcpy(k->server_key, vk, SCRAM_KEY_LEN);
            found = 1;
        }
    }
    sqlite3_finalize(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? found : -1;
}

/* The primary address of the member holding certificate fp into out. */
static int auth_strong_cert_owner(sqlite3 *db, const char *fp, char *out,
                                  size_t cap)
{
    sqlite3_stmt *st;
    int rc;

    if (sqlite3_prepare_v2(db,
                           "SELECT m.address FROM member_cert c JOIN member m"
                           " ON m.id = c.member_id WHERE c.sha256 = ?1",
                           -1, &st, NULL) != SQLITE_OK)
        return -1;
    sqlite3_bind_text(st, 1, fp, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        snprintf(out, cap, "%s",
                 (const char *)sqlite3_column_text(st, 0) != NULL
                     ? (const char *)sqlite3_column_text(st, 0)
                     : "");
    sqlite3_finalize(st);
    if (rc == SQLITE_ROW)
        return out[0] != '\0';
    return rc == SQLITE_DONE ? 0 : -1;
}

/* Pool thread: 1, 0 (r->reason) or -1. */
static int auth_strong_find(struct auth_strong_req *r, sqlite3 *db)
{
    struct db_tenant_auth *t;
    char login[SG_MAX_PATH + 1];
    int found;

    snprintf(login, sizeof login, "%s", r->key);
    if (r->kind == AUTH_STRONG_CERT) {
        found = auth_strong_cert_owner(db, r->key, login, sizeof login);
        if (found <= 0)
            return r->reason = "unknown certificate", found;
    }
    t = xmalloc(sizeof *t);
    found = db_tenant_auth_lookup(db, login, t);
    if (found == 1 && t->backend != DB_AUTH_SQLITE) {
        r->reason = "tenant uses a directory";
        found = 0;
    }
    free(t);
    if (found <= 0) {
        if (r->reason == NULL)
            r->reason = "unknown member";
        return found;
    }
    r->m = xcalloc(1, sizeof *r->m);
    found = db_member_lookup(db, login, r->m);
    if (found <= 0)
        return r->reason = "unknown member", found;
    if (r->m->disabled)
        return r->reason = "disabled", 0;
    if (r->kind == AUTH_STRONG_CERT) {
        snprintf(r->m->auth_via, sizeof r->m->auth_via, "mech=EXTERNAL");
        return 1;
    }
    /* SCRAM proves the account password, which such a tenant refuses. */
    found = auth_token_required(db, r->m->tenant_id);
    if (found != 0)
        return r->reason = "account password refused, tokens required",
               found < 0 ? -1 : 0;
    found = auth_strong_keys(db, r->m, &r->keys);
    if (found == 0)
        r->reason = "no SCRAM keys for the current password";
    return found;
}

static void auth_strong_work(uv_work_t *w)
{
    struct auth_strong_req *r = w->data;
    sqlite3 *db = auth_sqlite_db(r->cfg->database);

    r->reason = NULL;
    r->result = db != NULL ? auth_strong_find(r, db) : -1;
    if (r->result < 0) {
        if (db != NULL)
            auth_sqlite_db_reset();
        r->reason = "database unavailable";
    }
    if (r->m != NULL)
        db_member_clear(r->m);
    if (r->result != 1) {
        free(r->m);
        r->m = NULL;
    }
}

static void auth_strong_after(uv_work_t *w, int status)
{
    struct auth_strong_req *r = w->data;
    struct db_member *m = r->m;

    if (status != 0) {
        r->result = -1;
        r->reason = "database unavailable";
    }
    r->m = NULL;
    if (r->cb != NULL && r->result == 1)
        r->cb(r->arg, 1, "ok", m, &r->keys);
    else if (r->cb != NULL)
        r->cb(r->arg, r->result, r->reason, NULL, NULL);
    if (r->result != 1 || r->cb == NULL)
        free(m);
    OPENSSL_cleanse(&r->keys, sizeof r->keys);
    free(r);
}

struct auth_strong_req *
auth_strong_lookup(uv_loop_t *loop, const struct cfg *cfg, const char *logid,
                   enum auth_strong_kind kind, const char *key,
                   auth_strong_cb cb, void *arg)
{
    struct auth_strong_req *r = xcalloc(1, sizeof *r);
    int rc;

    r->work.data = r;
    r->cfg = cfg;
    r->cb = cb;
    r->arg = arg;
    r->kind = kind;
    snprintf(r->logid, sizeof r->logid, "%s", logid);
    snprintf(r->key, sizeof r->key, "%s", key);
    rc = uv_queue_work(loop, &r->work, auth_strong_work, auth_strong_after);
    if (rc != 0) {
        log_error("%s: auth: cannot queue lookup: %s", logid, uv_strerror(rc));
        free(r);
        return NULL;
    }
    return r;
}

void auth_strong_cancel(struct auth_strong_req *req)
{
    req->cb = NULL;
    req->arg = NULL;
}
