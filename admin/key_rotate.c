/* key_rotate: see key_rotate.h. */
#include "key_rotate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/xalloc.h"
#include "dns_check.h"
#include "dns_conf.h"
#include "dns_publish.h"
#include "dns_want.h"
#include "key_state.h"

/* Domains handled by one --due run are read in batches of this many. */
#define KEYROT_DOMAIN_BATCH 64

/* One domain's run. */
struct keyrot {
    struct admin_ctx *ctx;
    const char *domain;
    char prefix[SG_MAX_DOMAIN + 2]; /* "DOMAIN\t" */
    int due;                        /* --due, else rotate DOMAIN */
    int force;                      /* activate without check and lead */
    long long now;
    struct keystate_key keys[KEYSTATE_MAX];
    size_t n;
};

static int keyrot_reload(struct keyrot *r)
{
    return keystate_load(r->ctx, r->domain, r->keys, KEYSTATE_MAX, &r->n);
}

static void keyrot_report(struct keyrot *r, const struct keystate_key *k,
                          const char *state)
{
    printf("%s%s\t%s\t%s\n", r->prefix, k->sel, k->algo, state);
    keystate_log(r->ctx, "%s: key s=%s a=%s state=%s", r->domain, k->sel,
                 k->algo, state);
}

/* When a time of t plus d seconds has come (t == 0: never). */
static int keyrot_passed(const struct keyrot *r, long long t, unsigned d)
{
    return t > 0 && t + (long long)d <= r->now;
}

/* retired -> revoked -> (revealed) -> deleted, as the timers say. */
static int keyrot_age(struct keyrot *r)
{
    const struct cfg *c = r->ctx->cfg;
    int gone[KEYSTATE_MAX] = {0};
    int ret;

    if (admin_begin(r->ctx) != ADMIN_OK)
        return ADMIN_FAIL;
    ret = ADMIN_OK;
    for (size_t i = 0; i < r->n && ret == ADMIN_OK; i++) {
        struct keystate_key *k = &r->keys[i];
        long long base = k->retired > 0 ? k->retired : k->revoked;
        if (strcmp(k->state, "retired") == 0 &&
            keyrot_passed(r, k->retired, c->retire_for_s)) {
            ret = keystate_set(r->ctx, k->id, "revoked");
            keyrot_report(r, k, "revoked");
            continue;
        }
        if (strcmp(k->state, "revoked") != 0)
            continue;
        /* Revealed only once its record no longer verifies anything. */
        if (c->reveal_after_s > 0 &&
            keyrot_passed(r, base, c->reveal_after_s) &&
            !keystate_revealed(r->ctx, r->domain, k)) {
            ret = keystate_reveal(r->ctx, r->domain, k);
            if (ret == ADMIN_OK)
                keyrot_report(r, k, "revealed");
        }
        if (ret == ADMIN_OK && keyrot_passed(r, k->revoked, c->revoke_for_s) &&
            (c->reveal_after_s == 0 ||
             keystate_revealed(r->ctx, r->domain, k))) {
            ret = keystate_delete_row(r->ctx, k);
            gone[i] = 1;
        }
    }
    if (ret == ADMIN_OK)
        ret = admin_commit(r->ctx);
    else
        admin_rollback(r->ctx);
    for (size_t i = 0; ret == ADMIN_OK && i < r->n; i++)
        if (gone[i]) {
            keyrot_report(r, &r->keys[i], "deleted");
            ret = keystate_unlink(r->ctx, &r->keys[i]);
        }
    return ret;
}

/* The newest key of algo in one of two states (NULL for none). */
static struct keystate_key *keyrot_newest(struct keyrot *r, const char *algo,
                                          const char *s1, const char *s2)
{
    struct keystate_key *best = NULL;

    for (size_t i = 0; i < r->n; i++) {
        struct keystate_key *k = &r->keys[i];
        if (strcmp(k->algo, algo) == 0 &&
            (strcmp(k->state, s1) == 0 ||
             (s2 != NULL && strcmp(k->state, s2) == 0)))
            best = k; /* keys are loaded oldest first */
    }
    return best;
}

/* New pending keys for the algorithms that are due. */
static int keyrot_start(struct keyrot *r)
{
    static const char *const all[] = {"rsa", "ed25519"};
    const char *algos[2];
    char list[32] = "";
    sqlite3_stmt *st;
    size_t n = 0;

    if (admin_prepare(r->ctx,
                      "SELECT t.sign_algos FROM domain d JOIN tenant t"
                      " ON t.id = d.tenant_id WHERE d.name = ?1",
                      &st) != 0)
        return ADMIN_FAIL;
    sqlite3_bind_text(st, 1, r->domain, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW)
        snprintf(list, sizeof list, "%s", sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    for (size_t a = 0; a < 2; a++) {
        const struct keystate_key *active;
        if (!dnswant_algo_listed(list, all[a]) ||
            keyrot_newest(r, all[a], "pending", "published") != NULL)
            continue; /* a rotation is under way: go on with it */
        active = keyrot_newest(r, all[a], "active", NULL);
        if (r->due &&
            (active == NULL ||
             !keyrot_passed(r, active->activated, r->ctx->cfg->rotate_after_s)))
            continue;
        algos[n++] = all[a];
    }
    if (n == 0)
        return ADMIN_OK;
    return cmd_key_generate_algos(r->ctx, r->domain, algos, n, r->prefix,
                                  stdout);
}

/* Activates k (and retires the old key of its algorithm). */
static int keyrot_activate(struct keyrot *r, const struct keystate_key *k)
{
    int ret;

    if (admin_begin(r->ctx) != ADMIN_OK)
        return ADMIN_FAIL;
    ret = keystate_activate(r->ctx, r->domain, k, r->force, r->prefix, stdout);
    if (ret == ADMIN_OK)
        return admin_commit(r->ctx);
    admin_rollback(r->ctx);
    return ret;
}

/* pending -> published -> active, as DNS and publish_lead allow. */
static int keyrot_advance(struct keyrot *r)
{
    static const char *const algos[] = {"rsa", "ed25519"};
    const struct dnschk_verdict *bad;
    struct dnschk chk = {0};
    int ret = ADMIN_OK, checked = 0;

    if (!r->force) {
        if (dnschk_run(r->ctx, r->domain, NULL, &chk) != ADMIN_OK ||
            dnschk_mark(r->ctx, &chk, r->prefix, stdout) != ADMIN_OK ||
            keyrot_reload(r) != ADMIN_OK) {
            dnschk_free(&chk);
            return ADMIN_FAIL;
        }
        checked = 1;
    }
    for (size_t a = 0; a < 2 && ret == ADMIN_OK; a++) {
        const struct keystate_key *k =
            r->force ? keyrot_newest(r, algos[a], "pending", "published")
                     : keyrot_newest(r, algos[a], "published", NULL);
        if (k == NULL)
            continue;
        /* The lead lets caches and secondaries catch up (RFC 6376 3.6.2
         * lookups may be cached for the TTL); the key must still be
         * served now. */
        if (!r->force &&
            (!keyrot_passed(r, k->published, r->ctx->cfg->publish_lead_s) ||
             !dnschk_key_ok(&chk, k->id, &bad)))
            continue;
        ret = keyrot_activate(r, k);
    }
    if (checked)
        dnschk_free(&chk);
    return ret;
}

/* One domain: age, start, publish, advance. Failures are printed. */
static int keyrot_domain(struct keyrot *r)
{
    struct dnsconf c;
    int have, ret = ADMIN_OK;

    r->now = (long long)time(NULL);
    snprintf(r->prefix, sizeof r->prefix, "%s\t", r->domain);
    if (keyrot_reload(r) != ADMIN_OK)
        return ADMIN_FAIL;
    if (r->due && (keyrot_age(r) != ADMIN_OK || keyrot_reload(r) != ADMIN_OK))
        return ADMIN_FAIL;
    if (keyrot_start(r) != ADMIN_OK || keyrot_reload(r) != ADMIN_OK)
        return ADMIN_FAIL;
    have = dnsconf_get(r->ctx, r->domain, &c);
    if (have < 0)
        return ADMIN_FAIL;
    /* A failed publish is reported; the keys wait for the next run. */
    if (have == 1 && dnspub_run(r->ctx, r->domain, 0, NULL) != ADMIN_OK)
        ret = ADMIN_FAIL;
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->keys[i].state, "pending") == 0 ||
            strcmp(r->keys[i].state, "published") == 0)
            return keyrot_advance(r) == ADMIN_OK ? ret : ADMIN_FAIL;
    return ret;
}

/* --due: every domain, in name order; a failing one does not stop the
 * others. */
static int keyrot_due(struct admin_ctx *ctx)
{
    struct keyrot *r = xcalloc(1, sizeof *r);
    char after[SG_MAX_DOMAIN + 1] = "";
    char names[KEYROT_DOMAIN_BATCH][SG_MAX_DOMAIN + 1];
    sqlite3_stmt *st;
    size_t n;
    int ret = ADMIN_OK, rc;

    do {
        n = 0;
        if (admin_prepare(ctx,
                          "SELECT name FROM domain WHERE name > ?1"
                          " ORDER BY name LIMIT ?2",
                          &st) != 0) {
            ret = ADMIN_FAIL;
            break;
        }
        sqlite3_bind_text(st, 1, after, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 2, KEYROT_DOMAIN_BATCH);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW)
            snprintf(names[n++], sizeof names[0], "%s",
                     sqlite3_column_text(st, 0));
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE) {
            ret = admin_db_fail(ctx, "reading domains");
            break;
        }
        for (size_t i = 0; i < n; i++) {
            memset(r, 0, sizeof *r);
            *r = (struct keyrot){.ctx = ctx, .domain = names[i], .due = 1};
            if (keyrot_domain(r) != ADMIN_OK)
                ret = ADMIN_FAIL;
        }
        if (n > 0)
            memcpy(after, names[n - 1], sizeof after);
    } while (n == KEYROT_DOMAIN_BATCH);
    free(r);
    return ret;
}

int keyrot_cmd(struct admin_ctx *ctx, int argc, char **argv)
{
    static const char usage[] =
        "key rotate DOMAIN [--force] | key rotate --due";
    struct admin_opt opts[] = {{.name = "force"}, {.name = "due"}};
    char domain[SG_MAX_DOMAIN + 1];
    const char *pos[1] = {0};
    struct keyrot *r;
    size_t npos;
    int ret;

    if (admin_args(argc, argv, opts, 2, pos, 0, 1, &npos, usage) != ADMIN_OK)
        return ADMIN_USAGE;
    if (opts[1].set)
        return npos == 0 && !opts[0].set ? keyrot_due(ctx) : admin_usage(usage);
    if (npos != 1)
        return admin_usage(usage);
    if (!admin_domain_norm(pos[0], domain))
        return admin_fail("invalid domain %s", pos[0]);
    if (admin_domain_tenant(ctx, domain) <= 0)
        return admin_fail("no tenant owns domain %s", domain);
    r = xcalloc(1, sizeof *r);
    *r = (struct keyrot){.ctx = ctx, .domain = domain, .force = opts[0].set};
    ret = keyrot_domain(r);
    free(r);
    return ret;
}
