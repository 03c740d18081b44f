/* auth_sqlite: login checks in the thread pool; see auth_sqlite.h. */
#include "auth_sqlite.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "../common/passwd.h"
#include "../common/xalloc.h"

struct auth_sqlite_req {
    uv_work_t work;         /* work.data = this */
    auth_sqlite_done_cb cb; /* NULL once cancelled */
    void *arg;              /* borrowed, passed to cb */
    char *db_path;          /* owned */
    char *login;            /* owned */
    char *password;         /* owned; wiped and freed in the worker */
    size_t password_len;
    int result;          /* 1, 0, -1 (set by the worker) */
    const char *reason;  /* static text (set by the worker) */
    struct db_member *m; /* owned until handed to cb */
};

/* The calling pool thread's database handle. Thread-local on purpose: one
 * handle per pool thread, reused across checks; see auth_sqlite.h. */
struct auth_sqlite_handle {
    sqlite3 *db;
    char path[PATH_MAX];
};

static _Thread_local struct auth_sqlite_handle auth_sqlite_tl;

/* The thread's handle for path, opened if needed; NULL if the database
 * cannot be opened (logged). */
static sqlite3 *auth_sqlite_db(const char *path)
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

static void auth_sqlite_wipe_password(struct auth_sqlite_req *r)
{
    if (r->password == NULL)
        return;
    explicit_bzero(r->password, r->password_len);
    free(r->password);
    r->password = NULL;
}

/* Pool thread: lookup, hash, verdict. Touches only r and the thread's
 * handle. */
static void auth_sqlite_work(uv_work_t *w)
{
    struct auth_sqlite_req *r = w->data;
    sqlite3 *db = auth_sqlite_db(r->db_path);
    int found, ok;

    r->result = -1;
    r->reason = "database unavailable";
    if (db == NULL) {
        auth_sqlite_wipe_password(r);
        return;
    }
    r->m = xcalloc(1, sizeof(*r->m));
    found = db_member_lookup(db, r->login, r->m);
    if (found < 0) {
        /* The handle may be broken (file replaced, I/O error): the next
         * check opens a fresh one. */
        db_close(&auth_sqlite_tl.db);
        auth_sqlite_wipe_password(r);
        return;
    }
    /* An unknown login costs a full hash too, so that timing does not
     * tell which logins exist. */
    ok = passwd_verify(r->password, found == 1 ? r->m->password_hash : NULL);
    auth_sqlite_wipe_password(r);
    r->result = 0;
    if (found == 0)
        r->reason = "unknown member";
    else if (r->m->password_hash == NULL)
        r->reason = "no password set";
    else if (!ok)
        r->reason = "bad password";
    else if (r->m->disabled)
        r->reason = "disabled";
    else {
        r->result = 1;
        r->reason = "ok";
    }
    db_member_clear(r->m);
}

static void auth_sqlite_free(struct auth_sqlite_req *r)
{
    auth_sqlite_wipe_password(r);
    if (r->m != NULL) {
        db_member_clear(r->m);
        free(r->m);
    }
    free(r->db_path);
    free(r->login);
    free(r);
}

/* Loop thread: hands the verdict over, unless the owner went away. */
static void auth_sqlite_after(uv_work_t *w, int status)
{
    struct auth_sqlite_req *r = w->data;
    struct db_member *m = NULL;

    if (status != 0) {
        r->result = -1;
        r->reason = "database unavailable";
    }
    if (r->cb != NULL) {
        if (r->result == 1) {
            m = r->m;
            r->m = NULL;
        }
        r->cb(r->arg, r->result, r->reason, m);
    }
    auth_sqlite_free(r);
}

struct auth_sqlite_req *
auth_sqlite_check(uv_loop_t *loop, const struct cfg *cfg, const char *login,
                  const char *password, auth_sqlite_done_cb cb, void *arg)
{
    struct auth_sqlite_req *r = xcalloc(1, sizeof(*r));
    int rc;

    r->work.data = r;
    r->cb = cb;
    r->arg = arg;
    r->db_path = xstrdup(cfg->database);
    r->login = xstrdup(login);
    r->password_len = strlen(password);
    r->password = xstrndup(password, r->password_len);
    rc = uv_queue_work(loop, &r->work, auth_sqlite_work, auth_sqlite_after);
    if (rc != 0) {
        log_error("auth: cannot queue check: %s", uv_strerror(rc));
        auth_sqlite_free(r);
        return NULL;
    }
    return r;
}

void auth_sqlite_cancel(struct auth_sqlite_req *req)
{
    req->cb = NULL;
    req->arg = NULL;
}
