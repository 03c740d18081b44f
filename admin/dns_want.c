/* dns_want: see dns_want.h. */
#include "dns_want.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/xalloc.h"

int dnswant_txt(const char *algo, const char *state, const char *pub, char *out,
                size_t outlen)
{
    int n = snprintf(out, outlen, "v=DKIM1; k=%s; p=%s", algo,
                     strcmp(state, "revoked") == 0 ? "" : pub);

    return n < 0 || (size_t)n >= outlen ? -1 : 0;
}

int dnswant_slot(const char *algo, const char *node, unsigned k, char *out)
{
    char buf[3 * (DNSCONF_LABEL_MAX + 1)];
    size_t n;

    n = (size_t)snprintf(buf, sizeof buf, "%s-%s-%u", algo, node, k);
    if (n > DNSCONF_LABEL_MAX)
        return -1;
    for (size_t i = 0; i <= n; i++)
        out[i] = (char)tolower((unsigned char)buf[i]);
    return 0;
}

int dnswant_algo_listed(const char *list, const char *algo)
{
    size_t n = strlen(algo);

    for (const char *p = list; p != NULL; p = strchr(p, ',')) {
        if (*p == ',')
            p++;
        if (strncmp(p, algo, n) == 0 && (p[n] == ',' || p[n] == '\0'))
            return 1;
    }
    return 0;
}

void dnswant_free(struct dnswant *w)
{
    free(w->recs);
    w->recs = NULL;
    w->n = 0;
}

/* Appends a record; NULL when the table is full. */
static struct dnswant_rec *dnswant_add(struct dnswant *w, size_t cap)
{
    if (w->n >= cap)
        return NULL;
    return memset(&w->recs[w->n++], 0, sizeof w->recs[0]);
}

/* One key row (id, selector, algo, state, public_key) as a TXT record. */
static int dnswant_key(const char *domain, const struct dnsconf *c,
                       sqlite3_stmt *st, struct dnswant_rec *r)
{
    const char *sel = (const char *)sqlite3_column_text(st, 1);

    r->type = DNSWANT_TXT;
    r->key_id = sqlite3_column_int64(st, 0);
    snprintf(r->sel, sizeof r->sel, "%s", sel);
    snprintf(r->algo, sizeof r->algo, "%s", sqlite3_column_text(st, 2));
    snprintf(r->state, sizeof r->state, "%s", sqlite3_column_text(st, 3));
    if (dnsconf_owner(c, domain, sel, r->name, sizeof r->name) != 0)
        return admin_fail("record name of selector %s of %s is too long", sel,
                          domain);
    if (dnswant_txt(r->algo, r->state, (const char *)sqlite3_column_text(st, 4),
                    r->value, sizeof r->value) != 0)
        return admin_fail("public key of %s is too long", sel);
    return ADMIN_OK;
}

/* 1 if w already has a CNAME owned by name. */
static int dnswant_has_cname(const struct dnswant *w, const char *name)
{
    for (size_t i = 0; i < w->n; i++)
        if (w->recs[i].type == DNSWANT_CNAME &&
            strcmp(w->recs[i].name, name) == 0)
            return 1;
    return 0;
}

/* Adds the tenant's CNAME for selector sel (once). */
static int dnswant_cname(struct dnswant *w, size_t cap, const char *domain,
                         const struct dnsconf *c, const char *sel,
                         const char *algo, long long key_id)
{
    struct dnswant_rec *r;
    char name[DNSCONF_NAME_MAX + 1];

    if (dnsconf_tenant_name(domain, sel, name, sizeof name) != 0)
        return admin_fail("selector %s of %s: name too long", sel, domain);
    if (dnswant_has_cname(w, name))
        return ADMIN_OK;
    r = dnswant_add(w, cap);
    if (r == NULL)
        return admin_fail("domain %s has more than %d keys", domain,
                          DNSWANT_MAX_KEYS);
    r->type = DNSWANT_CNAME;
    r->key_id = key_id;
    snprintf(r->name, sizeof r->name, "%s", name);
    snprintf(r->sel, sizeof r->sel, "%s", sel);
    snprintf(r->algo, sizeof r->algo, "%s", algo);
    if (dnsconf_owner(c, domain, sel, r->value, sizeof r->value) != 0)
        return admin_fail("selector %s of %s: name too long", sel, domain);
    return ADMIN_OK;
}

/* The CNAMEs of delegated mode: every slot of every algorithm the tenant
 * signs with, then the selectors of keys outside the slots. */
static int dnswant_cnames(struct admin_ctx *ctx, const char *domain,
                          const struct dnsconf *c, struct dnswant *w,
                          size_t cap, size_t ntxt)
{
    static const char *const algos[] = {"rsa", "ed25519"};
    char sel[DNSCONF_LABEL_MAX + 1], list[32] = "";
    sqlite3_stmt *st;

    if (admin_prepare(ctx,
                      "SELECT t.sign_algos FROM domain d JOIN tenant t"
                      " ON t.id = d.tenant_id WHERE d.name = ?1",
                      &st) != 0)
        return ADMIN_FAIL;
    sqlite3_bind_text(st, 1, domain, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW)
        snprintf(list, sizeof list, "%s", sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    for (size_t a = 0; a < sizeof algos / sizeof algos[0]; a++) {
        if (!dnswant_algo_listed(list, algos[a]))
            continue;
        for (unsigned k = 1; k <= c->slots; k++) {
            if (dnswant_slot(algos[a], ctx->cfg->node_name, k, sel) != 0)
                return admin_fail("node_name %s is too long for a "
                                  "selector",
                                  ctx->cfg->node_name);
            if (dnswant_cname(w, cap, domain, c, sel, algos[a], 0) != ADMIN_OK)
                return ADMIN_FAIL;
        }
    }
    for (size_t i = 0; i < ntxt; i++) {
        struct dnswant_rec t = w->recs[i];
        if (dnswant_cname(w, cap, domain, c, t.sel, t.algo, t.key_id) !=
            ADMIN_OK)
            return ADMIN_FAIL;
    }
    /* A slot CNAME of a key in use names that key. */
    for (size_t i = ntxt; i < w->n; i++)
        for (size_t j = 0; j < ntxt; j++)
            if (strcmp(w->recs[i].sel, w->recs[j].sel) == 0) {
                w->recs[i].key_id = w->recs[j].key_id;
                memcpy(w->recs[i].state, w->recs[j].state,
                       sizeof w->recs[i].state);
            }
    return ADMIN_OK;
}

int dnswant_load(struct admin_ctx *ctx, const char *domain,
                 const struct dnsconf *c, unsigned flags, struct dnswant *w)
{
    size_t cap = 2 * DNSWANT_MAX_KEYS + 2 * DNSCONF_SLOTS_MAX;
    sqlite3_stmt *st;
    int rc;

    w->recs = xcalloc(cap, sizeof w->recs[0]);
    w->n = 0;
    if (admin_prepare(ctx,
                      "SELECT id, selector, algo, state, public_key"
                      " FROM dkim_key WHERE domain = ?1"
                      " ORDER BY created, id",
                      &st) != 0)
        goto fail;
    sqlite3_bind_text(st, 1, domain, -1, SQLITE_STATIC);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct dnswant_rec *r = dnswant_add(w, DNSWANT_MAX_KEYS);
        if (r == NULL) {
            sqlite3_finalize(st);
            admin_fail("domain %s has more than %d keys", domain,
                       DNSWANT_MAX_KEYS);
            goto fail;
        }
        if (dnswant_key(domain, c, st, r) != ADMIN_OK) {
            sqlite3_finalize(st);
            goto fail;
        }
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        admin_db_fail(ctx, "reading keys");
        goto fail;
    }
    if ((flags & DNSWANT_CNAMES) && c != NULL && c->delegate[0] != '\0' &&
        dnswant_cnames(ctx, domain, c, w, cap, w->n) != ADMIN_OK)
        goto fail;
    return ADMIN_OK;
fail:
    dnswant_free(w);
    return ADMIN_FAIL;
}
