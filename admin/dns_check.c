/* dns_check: see dns_check.h. */
#include "dns_check.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "../common/xalloc.h"

/* The servers to ask and the resolver. */
struct dnschk_servers {
    struct dnsq_server s[DNSQ_MAX_SERVERS];
    size_t n;
    struct dnsq_server resolver;
};

const char *dnschk_status_name(enum dnschk_status s)
{
    switch (s) {
    case DNSCHK_OK:
        return "ok";
    case DNSCHK_MISSING:
        return "missing";
    case DNSCHK_DIFFERENT:
        return "different";
    case DNSCHK_ERROR:
        return "error";
    }
    return "error";
}

/* --check: HOST[:PORT] items separated by commas or spaces. */
static int dnschk_list(const char *list, struct dnschk_servers *sv, char *err,
                       size_t errlen)
{
    char item[DNSCONF_NAME_MAX + 16], host[DNSCONF_NAME_MAX + 1];
    const char *p = list;
    unsigned port;

    while (*p != '\0') {
        size_t n = strcspn(p, ", ");
        if (n > 0) {
            if (n >= sizeof item) {
                snprintf(err, errlen, "check server list: item too long");
                return -1;
            }
            memcpy(item, p, n);
            item[n] = '\0';
            if (dnsconf_hostport(item, 53, host, &port) != 0) {
                snprintf(err, errlen, "check server %s: want HOST[:PORT]",
                         item);
                return -1;
            }
            if (dnsq_server_host(host, port, sv->s, DNSQ_MAX_SERVERS, &sv->n,
                                 err, errlen) != 0)
                return -1;
        }
        p += n;
        p += strspn(p, ", ");
    }
    return 0;
}

/* Adds the addresses of name server ns on port: asked of ask first (the
 * zone's own server knows in-zone names and glue), then of the
 * resolver. */
static int dnschk_ns_addrs(const char *ns, const struct dnsq_server *ask,
                           unsigned port, unsigned timeout,
                           struct dnschk_servers *sv, struct dnsq_answer *a,
                           char *err, size_t errlen)
{
    static const enum dnsq_type types[] = {DNSQ_A, DNSQ_AAAA};
    const struct dnsq_server *from[2] = {ask, &sv->resolver};
    size_t before = sv->n;
    char e[256];

    for (size_t f = 0; f < 2 && sv->n == before; f++) {
        if (from[f] == NULL)
            continue;
        for (size_t t = 0; t < 2; t++) {
            if (dnsq_lookup(from[f], timeout, ns, types[t], a, e, sizeof e) < 1)
                continue;
            for (size_t i = 0; i < a->n && sv->n < DNSQ_MAX_SERVERS; i++)
                if (dnsq_server_addr(&sv->s[sv->n], a->rr[i], port, 0) == 0)
                    sv->n++;
        }
    }
    if (sv->n == before) {
        snprintf(err, errlen, "no address found for name server %s", ns);
        return -1;
    }
    return 0;
}

/* The servers of zone's NS records, asked of ask (NULL: the resolver). */
static int dnschk_ns(const char *zone, const struct dnsq_server *ask,
                     unsigned port, unsigned timeout, struct dnschk_servers *sv,
                     char *err, size_t errlen)
{
    struct dnsq_answer *ns = xmalloc(sizeof *ns), *a = xmalloc(sizeof *a);
    int rc, ret = -1;

    rc = dnsq_lookup(ask != NULL ? ask : &sv->resolver, timeout, zone, DNSQ_NS,
                     ns, err, errlen);
    if (rc == 0)
        snprintf(err, errlen, "zone %s has no NS records", zone);
    if (rc == 1) {
        ret = 0;
        for (size_t i = 0; i < ns->n && ret == 0; i++)
            ret = dnschk_ns_addrs(ns->rr[i], ask, port, timeout, sv, a, err,
                                  errlen);
    }
    free(ns);
    free(a);
    return ret;
}

/* The zone holding domain, for a domain without settings: the closest
 * enclosing name with NS records, through the resolver. */
static int dnschk_find_zone(const char *domain, unsigned timeout,
                            struct dnschk_servers *sv, char *zone, char *err,
                            size_t errlen)
{
    struct dnsq_answer *a = xmalloc(sizeof *a);
    const char *p = domain;
    int rc = 0;

    while (p != NULL && *p != '\0') {
        rc = dnsq_lookup(&sv->resolver, timeout, p, DNSQ_NS, a, err, errlen);
        if (rc != 0)
            break;
        p = strchr(p, '.');
        if (p != NULL)
            p++;
    }
    free(a);
    if (rc == 1) {
        snprintf(zone, DNSCONF_NAME_MAX + 1, "%s", p);
        return 0;
    }
    if (rc == 0)
        snprintf(err, errlen, "no zone found for %s", domain);
    return -1;
}

/* Fills sv with the servers that must serve domain's records. */
static int dnschk_servers(struct admin_ctx *ctx, const char *domain,
                          const struct dnsconf *c, int have_conf,
                          struct dnschk_servers *sv, char *err, size_t errlen)
{
    unsigned timeout = ctx->cfg->dns_timeout_ms;
    struct dnsq_server primary[1];
    char zone[DNSCONF_NAME_MAX + 1];
    size_t n = 0;

    sv->n = 0;
    if (dnsq_server_resolver(&sv->resolver, ctx->cfg->dns_resolver, err,
                             errlen) != 0)
        return -1;
    if (have_conf && c->check[0] != '\0')
        return dnschk_list(c->check, sv, err, errlen);
    if (have_conf) {
        if (dnsq_server_host(c->server, c->port, primary, 1, &n, err, errlen) !=
            0)
            return -1;
        if (n == 0) {
            snprintf(err, errlen, "no address for server %s", c->server);
            return -1;
        }
        return dnschk_ns(c->zone, primary, c->port, timeout, sv, err, errlen);
    }
    if (dnschk_find_zone(domain, timeout, sv, zone, err, errlen) != 0)
        return -1;
    return dnschk_ns(zone, NULL, 53, timeout, sv, err, errlen);
}

/* Compares what s serves for record r. */
static enum dnschk_status dnschk_one(const struct dnsq_server *s,
                                     unsigned timeout,
                                     const struct dnswant_rec *r,
                                     struct dnsq_answer *a)
{
    char err[256];
    int rc;

    rc = dnsq_lookup(s, timeout, r->name,
                     r->type == DNSWANT_CNAME ? DNSQ_CNAME : DNSQ_TXT, a, err,
                     sizeof err);
    if (rc < 0)
        return DNSCHK_ERROR;
    if (rc == 0)
        return DNSCHK_MISSING;
    /* RFC 6376 3.6.2.2: more than one TXT record makes the key unusable. */
    if (a->n != 1)
        return DNSCHK_DIFFERENT;
    if (r->type == DNSWANT_CNAME)
        return strcasecmp(a->rr[0], r->value) == 0 ? DNSCHK_OK
                                                   : DNSCHK_DIFFERENT;
    return strcmp(a->rr[0], r->value) == 0 ? DNSCHK_OK : DNSCHK_DIFFERENT;
}

/* Records what server s said about record i. */
static void dnschk_note(struct dnschk *chk, size_t i,
                        const struct dnsq_server *s, enum dnschk_status st,
                        FILE *out)
{
    struct dnschk_verdict *v = &chk->verdicts[i];

    if (out != NULL)
        fprintf(out, "%s\t%s\t%s\n", chk->want.recs[i].name,
                dnschk_status_name(st), s->label);
    if (st != DNSCHK_OK && v->status == DNSCHK_OK) {
        v->status = st;
        snprintf(v->server, sizeof v->server, "%s", s->label);
    }
}

int dnschk_run(struct admin_ctx *ctx, const char *domain, FILE *out,
               struct dnschk *chk)
{
    struct dnschk_servers *sv = xcalloc(1, sizeof *sv);
    struct dnsq_answer *a = xmalloc(sizeof *a);
    unsigned timeout = ctx->cfg->dns_timeout_ms;
    struct dnsconf c;
    char err[512];
    int have, ret = ADMIN_FAIL;

    memset(chk, 0, sizeof *chk);
    have = dnsconf_get(ctx, domain, &c);
    if (have < 0 || dnswant_load(ctx, domain, have ? &c : NULL, DNSWANT_CNAMES,
                                 &chk->want) != ADMIN_OK)
        goto out;
    chk->verdicts = xcalloc(chk->want.n + 1, sizeof chk->verdicts[0]);
    if (dnschk_servers(ctx, domain, &c, have, sv, err, sizeof err) != 0) {
        admin_fail("cannot check DNS of %s: %s", domain, err);
        goto out;
    }
    if (sv->n == 0) {
        admin_fail("cannot check DNS of %s: no server address found", domain);
        goto out;
    }
    chk->nservers = sv->n;
    for (size_t i = 0; i < chk->want.n; i++) {
        const struct dnswant_rec *r = &chk->want.recs[i];
        if (r->type == DNSWANT_CNAME) {
            dnschk_note(chk, i, &sv->resolver,
                        dnschk_one(&sv->resolver, timeout, r, a), out);
            continue;
        }
        for (size_t k = 0; k < sv->n; k++)
            dnschk_note(chk, i, &sv->s[k], dnschk_one(&sv->s[k], timeout, r, a),
                        out);
    }
    ret = ADMIN_OK;
out:
    free(sv);
    free(a);
    return ret;
}

void dnschk_free(struct dnschk *chk)
{
    dnswant_free(&chk->want);
    free(chk->verdicts);
    chk->verdicts = NULL;
}

int dnschk_all_ok(const struct dnschk *chk)
{
    for (size_t i = 0; i < chk->want.n; i++)
        if (chk->verdicts[i].status != DNSCHK_OK)
            return 0;
    return 1;
}

int dnschk_key_ok(const struct dnschk *chk, long long key_id,
                  const struct dnschk_verdict **bad_r)
{
    int found = 0;

    *bad_r = NULL;
    for (size_t i = 0; i < chk->want.n; i++) {
        if (chk->want.recs[i].key_id != key_id)
            continue;
        found = 1;
        if (chk->verdicts[i].status != DNSCHK_OK) {
            *bad_r = &chk->verdicts[i];
            return 0;
        }
    }
    return found;
}

int dnschk_mark(struct admin_ctx *ctx, const struct dnschk *chk,
                const char *prefix, FILE *out)
{
    const struct dnschk_verdict *bad;
    sqlite3_stmt *st;

    for (size_t i = 0; i < chk->want.n; i++) {
        const struct dnswant_rec *r = &chk->want.recs[i];
        if (r->type != DNSWANT_TXT || strcmp(r->state, "pending") != 0 ||
            !dnschk_key_ok(chk, r->key_id, &bad))
            continue;
        if (admin_prepare(ctx,
                          "UPDATE dkim_key SET state = 'published',"
                          " published = ?2 WHERE id = ?1"
                          " AND state = 'pending'",
                          &st) != 0)
            return ADMIN_FAIL;
        sqlite3_bind_int64(st, 1, r->key_id);
        sqlite3_bind_int64(st, 2, (long long)time(NULL));
        if (admin_step_done(ctx, st, "marking key published") != ADMIN_OK)
            return ADMIN_FAIL;
        if (out != NULL)
            fprintf(out, "%s%s\t%s\tpublished\n", prefix, r->sel, r->algo);
    }
    return ADMIN_OK;
}
