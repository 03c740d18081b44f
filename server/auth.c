/* auth: the AUTH dispatcher; see auth.h. */
#include "auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/jail.h"
#include "../common/log.h"
#include "../common/xalloc.h"
#include "auth_cache.h"
#include "auth_ldap.h"
#include "auth_sqlite.h"
#include "auth_token.h"

/* libuv's own default; the threads that SQLite checks, password hashes
 * and queue writes keep besides the directory checks. */
#define AUTH_POOL_OTHER_THREADS 4

enum auth_stage {
    AUTH_STAGE_LOOKUP, /* tenant, cache, SQLite backend: in the pool */
    AUTH_STAGE_WAIT,   /* waiting for a directory slot: on a list */
    AUTH_STAGE_LDAP,   /* the directory check: in the pool */
};

struct auth {
    uv_loop_t *loop;             /* borrowed */
    const struct cfg *cfg;       /* borrowed */
    struct auth_cache *cache;    /* owned; NULL: no cache */
    struct auth_ldap_pool *ldap; /* owned */
    unsigned ldap_max;           /* directory checks at once */
    unsigned ldap_running;       /* directory checks in the pool */
    struct auth_req *wait_head;  /* waiting for a slot, oldest first */
    struct auth_req *wait_tail;
};

struct auth_req {
    uv_work_t work;  /* work.data = this */
    struct auth *a;  /* borrowed */
    auth_done_cb cb; /* NULL once cancelled */
    void *arg;       /* borrowed, passed to cb */
    enum auth_stage stage;
    struct auth_req *next; /* on the wait list */
    char logid[16];
    char client_ip[48]; /* recorded with a token's use */
    char *login;        /* owned */
    char *password;     /* owned; wiped and freed once used */
    size_t password_len;
    struct db_tenant_auth *tenant;        /* owned */
    unsigned char sig[AUTH_LDAP_SIG_LEN]; /* digest of the settings */
    uint64_t gen;                         /* cache generation, from sig */
    unsigned char key[AUTH_CACHE_KEY_LEN];
    int have_key;  /* key is set: the cache is used */
    int need_ldap; /* the lookup left the verdict to the directory */
    int result;
    const char *reason; /* static text or reason_buf */
    char reason_buf[80];
    struct db_member *m; /* owned until handed to cb */
};

struct auth *auth_new(uv_loop_t *loop, const struct cfg *cfg)
{
    struct auth *a = xcalloc(1, sizeof(*a));
    char n[16];

    a->loop = loop;
    a->cfg = cfg;
    a->ldap_max = cfg->ldap_pool_size;
    a->ldap = auth_ldap_pool_new(a->ldap_max);
    /* Without a cache (no entropy, or size 0) every login is checked in
     * full: slower, never wrong. */
    if (cfg->auth_cache_size > 0)
        a->cache = auth_cache_new(cfg->auth_cache_size, cfg->auth_cache_ttl_ms,
                                  cfg->auth_cache_negative_ttl_ms, NULL, NULL);
    /* libuv reads this once, when its pool starts. */
    snprintf(n, sizeof n, "%u", AUTH_POOL_OTHER_THREADS + a->ldap_max);
    setenv("UV_THREADPOOL_SIZE", n, 0);
    return a;
}

static void auth_wipe_password(struct auth_req *r)
{
    if (r->password == NULL)
        return;
    explicit_bzero(r->password, r->password_len);
    free(r->password);
    r->password = NULL;
}

static void auth_req_free(struct auth_req *r)
{
    auth_wipe_password(r);
    if (r->m != NULL) {
        db_member_clear(r->m);
        free(r->m);
    }
    free(r->tenant);
    free(r->login);
    free(r);
}

void auth_free(struct auth **ap)
{
    struct auth *a = *ap;
    struct auth_req *r, *next;

    if (a == NULL)
        return;
    for (r = a->wait_head; r != NULL; r = next) {
        next = r->next;
        auth_req_free(r);
    }
    auth_ldap_pool_free(&a->ldap);
    auth_cache_free(&a->cache);
    free(a);
    *ap = NULL;
}

/* ---- in the pool ----------------------------------------------------------
 */

/* Feeds one field, preceded by its length, to the digest. */
static int auth_digest_field(EVP_MD_CTX *ctx, const void *p, size_t len)
{
    uint64_t n = len;

    return EVP_DigestUpdate(ctx, &n, sizeof n) == 1 &&
           EVP_DigestUpdate(ctx, p, len) == 1;
}

/* A digest of everything that decides a verdict of tenant t: cache
 * entries and pooled connections made under other settings are not
 * used. 0 or -1. */
static int auth_settings_digest(const struct db_tenant_auth *t,
                                unsigned char out[AUTH_LDAP_SIG_LEN])
{
    const struct db_tenant_ldap *l = &t->ldap;
    const char *text[] = {t->tenant,
                          t->domains,
                          l->uris,
                          l->dn_template,
                          l->search_base,
                          l->search_filter,
                          l->bind_dn,
                          l->bind_password_file,
                          l->submit_filter,
                          l->address_attrs,
                          l->fingerprint_attr,
                          l->mail_password_attr,
                          l->ca_file};
    const long long num[] = {t->tenant_id,  t->sender_policy, t->from_policy,
                             t->backend,    l->bind_mode,     l->uid_domain,
                             l->login_form, l->starttls,      l->timeout_ms};
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned outl = 0;
    size_t i;
    int ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1;

    for (i = 0; ok && i < sizeof num / sizeof num[0]; i++)
        ok = auth_digest_field(ctx, &num[i], sizeof num[i]);
    for (i = 0; ok && i < sizeof text / sizeof text[0]; i++)
        ok = auth_digest_field(ctx, text[i], strlen(text[i]));
    ok = ok && EVP_DigestFinal_ex(ctx, out, &outl) == 1 &&
         outl == AUTH_LDAP_SIG_LEN;
    EVP_MD_CTX_free(ctx);
    return ok ? 0 : -1;
}

/* A cached verdict: its reason marked as such for the log. */
static void auth_from_cache(struct auth_req *r,
                            const struct auth_cache_hit *hit)
{
    r->result = hit->verdict;
    if (hit->verdict == 1)
        r->reason = "ok";
    else {
        snprintf(r->reason_buf, sizeof r->reason_buf, "%s (cached)",
                 hit->reason != NULL ? hit->reason : "refused");
        r->reason = r->reason_buf;
    }
}

/* The SQLite backend, with the cache in front: a cached verdict stands
 * only while the member row has the stamp it was decided on. */
static void auth_sqlite_step(struct auth_req *r, sqlite3 *db)
{
    struct auth_cache *cache = r->a->cache;
    unsigned char stamp[AUTH_CACHE_KEY_LEN];
    struct auth_cache_hit hit;
    int found, stamped;
    long long token_id;

    r->m = xcalloc(1, sizeof(*r->m));
    found = db_member_lookup(db, r->login, r->m);
    if (found < 0) {
        auth_sqlite_db_reset(); /* the next check opens a fresh handle */
        return;                 /* -1, "database unavailable" */
    }
    if (auth_token_parse(r->password, &token_id)) {
        /* Tokens skip the cache: each use is recorded, and a revoked one
         * fails at once. */
        r->result = auth_token_verify(db, found == 1 ? r->m : NULL, token_id,
                                      r->password, r->client_ip, &r->reason);
        if (r->result < 0) {
            auth_sqlite_db_reset();
            r->reason = "database unavailable";
        }
        db_member_clear(r->m);
        return;
    }
    if (found == 1) {
        int req = auth_token_required(db, r->m->tenant_id);

        if (req != 0) {
            if (req < 0)
                auth_sqlite_db_reset();
            else
                r->result = auth_sqlite_verify(NULL, r->password, &r->reason);
            r->reason = req < 0 ? "database unavailable"
                                : "account password refused, tokens required";
            db_member_clear(r->m);
            return;
        }
    }
    stamped = r->have_key &&
              auth_cache_stamp(cache, found == 1 ? r->m : NULL, stamp) == 0;
    if (stamped && auth_cache_get(cache, r->key, r->gen, &hit, NULL) == 1) {
        if (CRYPTO_memcmp(hit.stamp, stamp, sizeof stamp) == 0) {
            auth_from_cache(r, &hit);
            db_member_clear(r->m);
            return;
        }
        auth_cache_drop(cache, r->key); /* password or member changed */
    }
    r->result =
        auth_sqlite_verify(found == 1 ? r->m : NULL, r->password, &r->reason);
    if (stamped)
        auth_cache_put(cache, r->key, r->gen, r->result, r->reason, stamp,
                       NULL);
    db_member_clear(r->m);
}

/* In a chrooted worker (cfg chroot), the tenant's directory files are
 * named as outside: takes them to their names inside. 0, or -1 when one
 * lies outside the chroot (logged; subgated checks this at start, a
 * tenant changed since then may still do it). */
static int auth_jail_ldap_files(struct auth_req *r)
{
    struct db_tenant_ldap *l = &r->tenant->ldap;
    char *files[] = {l->ca_file, l->bind_password_file};
    const char *names[] = {"ca_file", "bind_password_file"};
    const char *root = r->a->cfg->chroot, *why;
    char inside[SG_MAX_LDAP_SETTING];
    size_t i;

    for (i = 0; root[0] != '\0' && i < sizeof files / sizeof files[0]; i++) {
        if (files[i][0] == '\0')
            continue;
        if (jail_path(root, files[i], inside, sizeof inside, &why) != 0) {
            log_error("%s: ldap tenant=%s %s %s %s (chroot = %s)", r->logid,
                      r->tenant->tenant, names[i], files[i], why, root);
            r->reason = "directory files outside the chroot";
            return -1;
        }
        /* Never longer than the name outside, which fitted. */
        memcpy(files[i], inside, strlen(inside) + 1);
    }
    return 0;
}

/* Pool thread, first stage: the tenant, the cache, the SQLite backend. */
static void auth_work_lookup(uv_work_t *w)
{
    struct auth_req *r = w->data;
    struct auth *a = r->a;
    struct auth_cache_hit hit;
    sqlite3 *db = auth_sqlite_db(a->cfg->database);
    int found;

    r->result = -1;
    r->reason = "database unavailable";
    if (db == NULL)
        goto out;
    r->tenant = xmalloc(sizeof(*r->tenant));
    found = db_tenant_auth_lookup(db, r->login, r->tenant);
    if (found < 0) {
        auth_sqlite_db_reset();
        goto out;
    }
    if (found == 0) {
        r->result = auth_sqlite_verify(NULL, r->password, &r->reason);
        goto out;
    }
    if (auth_settings_digest(r->tenant, r->sig) != 0)
        goto out;
    memcpy(&r->gen, r->sig, sizeof r->gen);
    r->have_key =
        a->cache != NULL && auth_cache_key(a->cache, r->tenant->tenant_id,
                                           r->login, r->password, r->key) == 0;
    if (r->tenant->backend == DB_AUTH_SQLITE) {
        auth_sqlite_step(r, db);
        goto out;
    }
    if (auth_jail_ldap_files(r) != 0)
        goto out;
    r->m = xcalloc(1, sizeof(*r->m));
    if (r->have_key && auth_cache_get(a->cache, r->key, r->gen, &hit, r->m)) {
        auth_from_cache(r, &hit);
        if (r->result == 1 && !hit.has_member)
            r->result = 0; /* cannot happen: positive LDAP entries hold one */
        goto out;
    }
    r->need_ldap = 1;
    return; /* the password is still needed */
out:
    auth_wipe_password(r);
}

/* Pool thread, second stage: the directory. */
static void auth_work_ldap(uv_work_t *w)
{
    struct auth_req *r = w->data;
    struct auth *a = r->a;
    unsigned timeout = r->tenant->ldap.timeout_ms != 0
                           ? r->tenant->ldap.timeout_ms
                           : a->cfg->ldap_timeout_ms;

    r->result = auth_ldap_verify(a->ldap, r->tenant, r->sig, timeout, r->logid,
                                 r->login, r->password, r->m, &r->reason);
    auth_wipe_password(r);
    if (r->result >= 0 && r->have_key)
        auth_cache_put(a->cache, r->key, r->gen, r->result, r->reason, NULL,
                       r->result == 1 ? r->m : NULL);
}

/* ---- on the loop ------------------------------------------------------------
 */

/* Hands the verdict over, unless the owner went away, and frees r. */
static void auth_finish(struct auth_req *r)
{
    struct db_member *m = NULL;

    if (r->cb != NULL) {
        if (r->result == 1) {
            m = r->m;
            r->m = NULL;
        }
        r->cb(r->arg, r->result, r->result == 1 ? "ok" : r->reason, m);
    }
    auth_req_free(r);
}

static void auth_after_ldap(uv_work_t *w, int status);

/* Queues r's directory check; when that fails, r is answered with -1. */
static void auth_start_ldap(struct auth_req *r)
{
    struct auth *a = r->a;
    int rc;

    r->stage = AUTH_STAGE_LDAP;
    rc = uv_queue_work(a->loop, &r->work, auth_work_ldap, auth_after_ldap);
    if (rc != 0) {
        log_error("%s: auth: cannot queue directory check: %s", r->logid,
                  uv_strerror(rc));
        r->result = -1;
        r->reason = "cannot start check";
        auth_finish(r);
        return;
    }
    a->ldap_running++;
}

/* Starts waiting directory checks while there are free slots. */
static void auth_start_waiting(struct auth *a)
{
    while (a->wait_head != NULL && a->ldap_running < a->ldap_max) {
        struct auth_req *r = a->wait_head;

        a->wait_head = r->next;
        if (a->wait_head == NULL)
            a->wait_tail = NULL;
        r->next = NULL;
        auth_start_ldap(r);
    }
}

static void auth_after_ldap(uv_work_t *w, int status)
{
    struct auth_req *r = w->data;
    struct auth *a = r->a;

    a->ldap_running--;
    if (status != 0) {
        r->result = -1;
        r->reason = "directory unavailable";
    }
    auth_finish(r);
    auth_start_waiting(a);
}

static void auth_after_lookup(uv_work_t *w, int status)
{
    struct auth_req *r = w->data;
    struct auth *a = r->a;

    if (status != 0) {
        r->result = -1;
        r->reason = "database unavailable";
        r->need_ldap = 0;
    }
    if (!r->need_ldap || r->cb == NULL) {
        auth_finish(r);
        return;
    }
    r->stage = AUTH_STAGE_WAIT;
    if (a->wait_tail != NULL)
        a->wait_tail->next = r;
    else
        a->wait_head = r;
    a->wait_tail = r;
    auth_start_waiting(a);
}

struct auth_req *auth_check(struct auth *a, const char *logid,
                            const char *client_ip, const char *login,
                            const char *password, auth_done_cb cb, void *arg)
{
    struct auth_req *r = xcalloc(1, sizeof(*r));
    int rc;

    r->work.data = r;
    r->a = a;
    r->cb = cb;
    r->arg = arg;
    snprintf(r->logid, sizeof r->logid, "%s", logid);
    snprintf(r->client_ip, sizeof r->client_ip, "%s", client_ip);
    r->login = xstrdup(login);
    r->password_len = strlen(password);
    r->password = xstrndup(password, r->password_len);
    r->stage = AUTH_STAGE_LOOKUP;
    rc = uv_queue_work(a->loop, &r->work, auth_work_lookup, auth_after_lookup);
    if (rc != 0) {
        log_error("%s: auth: cannot queue check: %s", logid, uv_strerror(rc));
        auth_req_free(r);
        return NULL;
    }
    return r;
}

void auth_cancel(struct auth_req *req)
{
    struct auth *a = req->a;
    struct auth_req **pp;

    req->cb = NULL;
    req->arg = NULL;
    if (req->stage != AUTH_STAGE_WAIT)
        return; /* a pool thread has it; its after-callback frees it */
    for (pp = &a->wait_head; *pp != NULL; pp = &(*pp)->next) {
        if (*pp != req)
            continue;
        *pp = req->next;
        if (a->wait_tail == req) {
            struct auth_req *t = a->wait_head;
            while (t != NULL && t->next != NULL)
                t = t->next;
            a->wait_tail = t;
        }
        auth_req_free(req);
        return;
    }
}
