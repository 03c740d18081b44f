/* dns_publish: see dns_publish.h. */
#include "dns_publish.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/crypto.h>

#include "../common/xalloc.h"
#include "dns_conf.h"
#include "dns_update.h"
#include "dns_want.h"

/* Rows of dns_published for one domain: the wanted records and those of
 * keys deleted since the last publish. */
#define DNSPUB_MAX_ROWS (2 * DNSWANT_MAX_KEYS)

enum dnspub_kind {
    DNSPUB_ADDED,
    DNSPUB_REPLACED,
    DNSPUB_DELETED,
    DNSPUB_LEFT, /* outside the zone now: forgotten, not deleted */
};

static const char *const dnspub_kinds[] = {"added", "replaced", "deleted",
                                           "left outside zone"};

struct dnspub_row {
    char name[DNSCONF_NAME_MAX + 1];
    char value[DNSWANT_VALUE_MAX];
};

/* What one publish does. */
struct dnspub_plan {
    struct dnspub_row *rows; /* owned: dns_published as it was */
    size_t nrows;
    struct dnsup_change ch[DNSPUB_MAX_ROWS + DNSWANT_MAX_KEYS];
    enum dnspub_kind kind[DNSPUB_MAX_ROWS + DNSWANT_MAX_KEYS];
    size_t nch; /* changes sent */
    const char *left[DNSPUB_MAX_ROWS];
    size_t nleft;
};

/* Loads the published rows of domain. */
static int dnspub_rows(struct admin_ctx *ctx, const char *domain,
                       struct dnspub_plan *pl)
{
    sqlite3_stmt *st;
    int rc;

    pl->rows = xcalloc(DNSPUB_MAX_ROWS, sizeof pl->rows[0]);
    if (admin_prepare(ctx,
                      "SELECT name, value FROM dns_published"
                      " WHERE domain = ?1 ORDER BY published, name",
                      &st) != 0)
        return ADMIN_FAIL;
    sqlite3_bind_text(st, 1, domain, -1, SQLITE_STATIC);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW &&
           pl->nrows < DNSPUB_MAX_ROWS) {
        struct dnspub_row *r = &pl->rows[pl->nrows++];
        snprintf(r->name, sizeof r->name, "%s", sqlite3_column_text(st, 0));
        snprintf(r->value, sizeof r->value, "%s", sqlite3_column_text(st, 1));
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        return admin_db_fail(ctx, "reading published records");
    return ADMIN_OK;
}

/* The published row named name, or NULL. */
static const struct dnspub_row *dnspub_find(const struct dnspub_plan *pl,
                                            const char *name)
{
    for (size_t i = 0; i < pl->nrows; i++)
        if (strcasecmp(pl->rows[i].name, name) == 0)
            return &pl->rows[i];
    return NULL;
}

/* 1 if w wants a TXT record named name. */
static int dnspub_wanted(const struct dnswant *w, const char *name)
{
    for (size_t i = 0; i < w->n; i++)
        if (w->recs[i].type == DNSWANT_TXT &&
            strcasecmp(w->recs[i].name, name) == 0)
            return 1;
    return 0;
}

/* Works out the changes. */
static int dnspub_plan(const struct dnsconf *c, const struct dnswant *w,
                       unsigned flags, struct dnspub_plan *pl)
{
    for (size_t i = 0; i < w->n; i++) {
        const struct dnswant_rec *r = &w->recs[i];
        const struct dnspub_row *old = dnspub_find(pl, r->name);
        if (r->type != DNSWANT_TXT)
            continue;
        if (!dnsconf_in_zone(r->name, c->zone))
            return admin_fail("record %s is outside zone %s", r->name, c->zone);
        if (old != NULL && strcmp(old->value, r->value) == 0 &&
            !(flags & DNSPUB_ALL))
            continue;
        pl->ch[pl->nch] = (struct dnsup_change){r->name, r->value};
        pl->kind[pl->nch++] = old != NULL ? DNSPUB_REPLACED : DNSPUB_ADDED;
    }
    for (size_t i = 0; i < pl->nrows; i++) {
        const char *name = pl->rows[i].name;
        if (dnspub_wanted(w, name))
            continue;
        if (!dnsconf_in_zone(name, c->zone)) {
            pl->left[pl->nleft++] = name;
            continue;
        }
        pl->ch[pl->nch] = (struct dnsup_change){name, NULL};
        pl->kind[pl->nch++] = DNSPUB_DELETED;
    }
    return ADMIN_OK;
}

/* Records the applied changes in dns_published. */
static int dnspub_record(struct admin_ctx *ctx, const char *domain,
                         const struct dnsconf *c, const struct dnspub_plan *pl)
{
    long long now = (long long)time(NULL);
    sqlite3_stmt *st;
    int ret = ADMIN_FAIL;

    if (admin_begin(ctx) != ADMIN_OK)
        return ADMIN_FAIL;
    for (size_t i = 0; i < pl->nch + pl->nleft; i++) {
        int del = i >= pl->nch || pl->ch[i].txt == NULL;
        const char *name = i < pl->nch ? pl->ch[i].name : pl->left[i - pl->nch];
        if (admin_prepare(ctx,
                          del ? "DELETE FROM dns_published WHERE domain = ?1"
                                " AND name = ?2"
                              : "INSERT OR REPLACE INTO dns_published(domain,"
                                " name, zone, value, published)"
                                " VALUES (?1, ?2, ?3, ?4, ?5)",
                          &st) != 0)
            goto out;
        sqlite3_bind_text(st, 1, domain, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
        if (!del) {
            sqlite3_bind_text(st, 3, c->zone, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 4, pl->ch[i].txt, -1, SQLITE_STATIC);
            sqlite3_bind_int64(st, 5, now);
        }
        if (admin_step_done(ctx, st, "recording published records") != ADMIN_OK)
            goto out;
    }
    ret = admin_commit(ctx);
out:
    if (ret != ADMIN_OK)
        admin_rollback(ctx);
    return ret;
}

/* Sends the plan to the primary. */
static int dnspub_send(struct admin_ctx *ctx, const struct dnsconf *c,
                       const struct dnsq_server *s,
                       const struct dnspub_plan *pl)
{
    char secret[DNSCONF_SECRET_MAX + 1], err[640];
    struct dnsup_key key = {c->tsig_name, c->tsig_alg, secret};
    int rc;

    if (dnsconf_secret_read(c->secret_file, secret, sizeof secret, err,
                            sizeof err) != 0)
        return admin_fail("%s", err);
    rc = dnsup_send(s, c->zone, &key, pl->ch, pl->nch, ctx->cfg->dkim_ttl_s,
                    ctx->cfg->dns_timeout_ms, err, sizeof err);
    OPENSSL_cleanse(secret, sizeof secret);
    return rc == 0 ? ADMIN_OK : admin_fail("%s", err);
}

/* Runs the plan: print, or send and record. */
static int dnspub_apply(struct admin_ctx *ctx, const char *domain,
                        const struct dnsconf *c, unsigned flags,
                        const struct dnspub_plan *pl, FILE *out)
{
    struct dnsq_server s;
    char err[640];
    size_t n = 0;

    if (dnsq_server_host(c->server, c->port, &s, 1, &n, err, sizeof err) != 0 ||
        n == 0)
        return admin_fail("DNS server of %s: %s", domain,
                          n == 0 ? "no address" : err);
    if (flags & DNSPUB_DRY_RUN) {
        struct dnsup_key key = {c->tsig_name, c->tsig_alg, ""};
        if (pl->nch > 0 &&
            dnsup_print(out, &s, c->zone, &key, pl->ch, pl->nch,
                        ctx->cfg->dkim_ttl_s, err, sizeof err) != 0)
            return admin_fail("%s", err);
        return ADMIN_OK;
    }
    if (pl->nch > 0 && dnspub_send(ctx, c, &s, pl) != ADMIN_OK)
        return ADMIN_FAIL;
    if (dnspub_record(ctx, domain, c, pl) != ADMIN_OK)
        return ADMIN_FAIL;
    for (size_t i = 0; out != NULL && i < pl->nch; i++)
        fprintf(out, "%s\t%s\n", pl->ch[i].name, dnspub_kinds[pl->kind[i]]);
    for (size_t i = 0; out != NULL && i < pl->nleft; i++)
        fprintf(out, "%s\t%s\n", pl->left[i], dnspub_kinds[DNSPUB_LEFT]);
    return ADMIN_OK;
}

int dnspub_run(struct admin_ctx *ctx, const char *domain, unsigned flags,
               FILE *out)
{
    struct dnspub_plan *pl = xcalloc(1, sizeof *pl);
    struct dnswant w = {0};
    struct dnsconf c;
    int have, ret = ADMIN_FAIL;

    have = dnsconf_get(ctx, domain, &c);
    if (have == 0)
        admin_fail("domain %s has no DNS settings (subgate dns set)", domain);
    if (have != 1 || dnswant_load(ctx, domain, &c, 0, &w) != ADMIN_OK ||
        dnspub_rows(ctx, domain, pl) != ADMIN_OK ||
        dnspub_plan(&c, &w, flags, pl) != ADMIN_OK)
        goto out;
    ret = pl->nch + pl->nleft > 0
              ? dnspub_apply(ctx, domain, &c, flags, pl, out)
              : ADMIN_OK;
out:
    dnswant_free(&w);
    free(pl->rows);
    free(pl);
    return ret;
}
