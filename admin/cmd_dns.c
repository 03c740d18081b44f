/* cmd_dns: `subgate dns records|publish|check|set|show|del`. The DKIM
 * records (RFC 6376 3.6.2) of a domain as zone-file lines for an operator
 * who publishes them by hand; their publication by RFC 2136 UPDATE with
 * TSIG (dns_publish); the check that they are served (dns_check); and the
 * per-domain settings these use (dns_conf). Every key that verifiers may
 * still meet has a record: pending and published (about to sign), active,
 * retired (mail in flight) and revoked (with an empty p=, RFC 6376
 * 3.6.1). */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../common/limits.h"
#include "admin.h"
#include "dns_check.h"
#include "dns_conf.h"
#include "dns_publish.h"
#include "dns_update.h"
#include "dns_want.h"

/* RFC 1035 3.3.14: a TXT record is a sequence of character-strings of at
 * most 255 octets each; RFC 6376 3.6.2.2 joins them without spaces. */
#define DNS_TXT_CHUNK 255

#define DNS_SET_USAGE                                                          \
    "dns set DOMAIN --server HOST[:PORT] --tsig-name NAME "                    \
    "--tsig-secret-file PATH [--tsig-alg hmac-sha256|hmac-sha512] "            \
    "[--zone ZONE] [--delegate ZONE] [--check ns|HOST[:PORT],...] "            \
    "[--slots N]"

/* Prints value as quoted character-strings of at most DNS_TXT_CHUNK
 * octets. The value holds only base64 and tag text: nothing to escape. */
static void dns_print_txt(const char *value)
{
    size_t len = strlen(value), off = 0, n;

    do {
        n = len - off > DNS_TXT_CHUNK ? DNS_TXT_CHUNK : len - off;
        printf(" \"%.*s\"", (int)n, value + off);
        off += n;
    } while (off < len);
}

/* Normalises DOMAIN and checks that a tenant owns it. */
static int dns_domain(struct admin_ctx *ctx, const char *arg, char *domain)
{
    long long tid;

    if (!admin_domain_norm(arg, domain))
        return admin_fail("invalid domain %s", arg);
    tid = admin_domain_tenant(ctx, domain);
    if (tid <= 0)
        return tid < 0 ? ADMIN_FAIL
                       : admin_fail("no tenant owns domain %s", domain);
    return ADMIN_OK;
}

static int dns_records(struct admin_ctx *ctx, int argc, char **argv)
{
    char domain[SG_MAX_DOMAIN + 1];
    const char *pos[1] = {0};
    struct dnswant w;
    struct dnsconf c;
    size_t npos;
    int have;

    if (admin_args(argc, argv, NULL, 0, pos, 1, 1, &npos,
                   "dns records DOMAIN") != ADMIN_OK)
        return ADMIN_USAGE;
    if (dns_domain(ctx, pos[0], domain) != ADMIN_OK)
        return ADMIN_FAIL;
    have = dnsconf_get(ctx, domain, &c);
    if (have < 0 || dnswant_load(ctx, domain, have ? &c : NULL, DNSWANT_CNAMES,
                                 &w) != ADMIN_OK)
        return ADMIN_FAIL;
    /* The tenant's CNAMEs first: they are added once, by hand. */
    for (size_t i = 0; i < w.n; i++)
        if (w.recs[i].type == DNSWANT_CNAME)
            printf("%s. %u IN CNAME %s.\n", w.recs[i].name,
                   ctx->cfg->dkim_ttl_s, w.recs[i].value);
    for (size_t i = 0; i < w.n; i++) {
        if (w.recs[i].type != DNSWANT_TXT)
            continue;
        printf("%s. %u IN TXT", w.recs[i].name, ctx->cfg->dkim_ttl_s);
        dns_print_txt(w.recs[i].value);
        printf("\n");
    }
    dnswant_free(&w);
    return ADMIN_OK;
}

static int dns_publish(struct admin_ctx *ctx, int argc, char **argv)
{
    struct admin_opt opts[] = {{.name = "dry-run"}, {.name = "all"}};
    char domain[SG_MAX_DOMAIN + 1];
    const char *pos[1] = {0};
    size_t npos;

    if (admin_args(argc, argv, opts, 2, pos, 1, 1, &npos,
                   "dns publish DOMAIN [--dry-run] [--all]") != ADMIN_OK)
        return ADMIN_USAGE;
    if (dns_domain(ctx, pos[0], domain) != ADMIN_OK)
        return ADMIN_FAIL;
    return dnspub_run(ctx, domain,
                      (opts[0].set ? DNSPUB_DRY_RUN : 0) |
                          (opts[1].set ? DNSPUB_ALL : 0),
                      stdout);
}

static int dns_check(struct admin_ctx *ctx, int argc, char **argv)
{
    char domain[SG_MAX_DOMAIN + 1];
    const char *pos[1] = {0};
    struct dnschk chk;
    size_t npos;
    int ret;

    if (admin_args(argc, argv, NULL, 0, pos, 1, 1, &npos, "dns check DOMAIN") !=
        ADMIN_OK)
        return ADMIN_USAGE;
    if (dns_domain(ctx, pos[0], domain) != ADMIN_OK)
        return ADMIN_FAIL;
    ret = dnschk_run(ctx, domain, stdout, &chk);
    if (ret == ADMIN_OK)
        ret = dnschk_mark(ctx, &chk, "", NULL);
    if (ret == ADMIN_OK && !dnschk_all_ok(&chk)) {
        /* The lines above say what is wrong; the exit status says so. */
        fflush(stdout);
        ret = ADMIN_FAIL;
    }
    dnschk_free(&chk);
    return ret;
}

enum {
    DNS_OPT_SERVER,
    DNS_OPT_ZONE,
    DNS_OPT_TSIG_NAME,
    DNS_OPT_TSIG_ALG,
    DNS_OPT_SECRET,
    DNS_OPT_DELEGATE,
    DNS_OPT_CHECK,
    DNS_OPT_SLOTS,
    DNS_NOPTS
};

/* A TSIG key name: a domain name; '_' is common in key names. */
static int dns_keyname_ok(const char *s)
{
    size_t n = strlen(s);

    return n > 0 && n <= DNSCONF_NAME_MAX && s[0] != '.' &&
           strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                     "0123456789-_.") == n;
}

/* Another domain delegated into the same zone under the same label
 * would share its records. */
static int dns_label_free(struct admin_ctx *ctx, const struct dnsconf *c)
{
    char label[DNSCONF_LABEL_MAX + 1], other[DNSCONF_LABEL_MAX + 1];
    sqlite3_stmt *st;
    int rc;

    if (dnsconf_label(c->domain, label) != 0)
        return admin_fail("%s is too long for one label under %s "
                          "(at most %d octets)",
                          c->domain, c->delegate, DNSCONF_LABEL_MAX);
    if (admin_prepare(ctx,
                      "SELECT domain FROM dns_setting WHERE delegate = ?1"
                      " COLLATE NOCASE AND domain <> ?2",
                      &st) != 0)
        return ADMIN_FAIL;
    sqlite3_bind_text(st, 1, c->delegate, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, c->domain, -1, SQLITE_STATIC);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *d = (const char *)sqlite3_column_text(st, 0);
        if (dnsconf_label(d, other) == 0 && strcmp(other, label) == 0) {
            admin_fail("%s and %s would both be %s.%s", c->domain, d, label,
                       c->delegate);
            sqlite3_finalize(st);
            return ADMIN_FAIL;
        }
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? ADMIN_OK : admin_db_fail(ctx, "reading");
}

/* Checks the secret file now rather than at the first publish. */
static int dns_set_secret(const char *arg, struct dnsconf *c)
{
    char secret[DNSCONF_SECRET_MAX + 1], err[640];
    char *abs = realpath(arg, NULL);
    int rc;

    if (abs == NULL)
        return admin_fail("TSIG secret %s: %s", arg, strerror(errno));
    if (strlen(abs) >= sizeof c->secret_file) {
        free(abs);
        return admin_fail("TSIG secret %s: path too long", arg);
    }
    snprintf(c->secret_file, sizeof c->secret_file, "%s", abs);
    free(abs);
    rc = dnsconf_secret_read(c->secret_file, secret, sizeof secret, err,
                             sizeof err);
    explicit_bzero(secret, sizeof secret);
    return rc == 0 ? ADMIN_OK : admin_fail("%s", err);
}

/* Fills c from the options; ADMIN_OK, ADMIN_USAGE or ADMIN_FAIL. */
static int dns_set_fill(const struct admin_opt *o, struct dnsconf *c)
{
    char *end;
    unsigned long n;

    if (!o[DNS_OPT_SERVER].set || !o[DNS_OPT_TSIG_NAME].set ||
        !o[DNS_OPT_SECRET].set)
        return admin_usage(DNS_SET_USAGE);
    if (dnsconf_hostport(o[DNS_OPT_SERVER].value, 53, c->server, &c->port) != 0)
        return admin_badarg("--server %s: want HOST[:PORT]",
                            o[DNS_OPT_SERVER].value);
    if (!dns_keyname_ok(o[DNS_OPT_TSIG_NAME].value))
        return admin_badarg("--tsig-name %s: not a key name",
                            o[DNS_OPT_TSIG_NAME].value);
    snprintf(c->tsig_name, sizeof c->tsig_name, "%s",
             o[DNS_OPT_TSIG_NAME].value);
    snprintf(c->tsig_alg, sizeof c->tsig_alg, "%s",
             o[DNS_OPT_TSIG_ALG].set ? o[DNS_OPT_TSIG_ALG].value
                                     : "hmac-sha256");
    if (!dnsup_alg_ok(c->tsig_alg))
        return admin_badarg("--tsig-alg must be hmac-sha256 or hmac-sha512");
    if (o[DNS_OPT_DELEGATE].set &&
        !admin_domain_norm(o[DNS_OPT_DELEGATE].value, c->delegate))
        return admin_badarg("--delegate %s: not a domain name",
                            o[DNS_OPT_DELEGATE].value);
    if (o[DNS_OPT_ZONE].set) {
        if (!admin_domain_norm(o[DNS_OPT_ZONE].value, c->zone))
            return admin_badarg("--zone %s: not a domain name",
                                o[DNS_OPT_ZONE].value);
    } else {
        snprintf(c->zone, sizeof c->zone, "%s",
                 c->delegate[0] != '\0' ? c->delegate : c->domain);
    }
    if (o[DNS_OPT_CHECK].set && strcmp(o[DNS_OPT_CHECK].value, "ns") != 0) {
        if (strlen(o[DNS_OPT_CHECK].value) >= sizeof c->check)
            return admin_badarg("--check: list too long");
        snprintf(c->check, sizeof c->check, "%s", o[DNS_OPT_CHECK].value);
    }
    c->slots = DNSCONF_SLOTS_DEF;
    if (o[DNS_OPT_SLOTS].set) {
        errno = 0;
        n = strtoul(o[DNS_OPT_SLOTS].value, &end, 10);
        if (errno != 0 || *end != '\0' || n < 2 || n > DNSCONF_SLOTS_MAX)
            return admin_badarg("--slots must be a number from 2 to %d",
                                DNSCONF_SLOTS_MAX);
        c->slots = (unsigned)n;
    }
    return ADMIN_OK;
}

static int dns_set(struct admin_ctx *ctx, int argc, char **argv)
{
    struct admin_opt o[DNS_NOPTS] = {
        [DNS_OPT_SERVER] = {.name = "server", .has_arg = 1},
        [DNS_OPT_ZONE] = {.name = "zone", .has_arg = 1},
        [DNS_OPT_TSIG_NAME] = {.name = "tsig-name", .has_arg = 1},
        [DNS_OPT_TSIG_ALG] = {.name = "tsig-alg", .has_arg = 1},
        [DNS_OPT_SECRET] = {.name = "tsig-secret-file", .has_arg = 1},
        [DNS_OPT_DELEGATE] = {.name = "delegate", .has_arg = 1},
        [DNS_OPT_CHECK] = {.name = "check", .has_arg = 1},
        [DNS_OPT_SLOTS] = {.name = "slots", .has_arg = 1},
    };
    const char *pos[1] = {0};
    struct dnsconf c = {0};
    size_t npos;
    int ret;

    if (admin_args(argc, argv, o, DNS_NOPTS, pos, 1, 1, &npos, DNS_SET_USAGE) !=
        ADMIN_OK)
        return ADMIN_USAGE;
    if (dns_domain(ctx, pos[0], c.domain) != ADMIN_OK)
        return ADMIN_FAIL;
    ret = dns_set_fill(o, &c);
    if (ret != ADMIN_OK)
        return ret;
    if (!dnsconf_in_zone(c.delegate[0] != '\0' ? c.delegate : c.domain, c.zone))
        return admin_fail("the records of %s would not be in zone %s", c.domain,
                          c.zone);
    if (dns_set_secret(o[DNS_OPT_SECRET].value, &c) != ADMIN_OK)
        return ADMIN_FAIL;
    if (c.delegate[0] != '\0' && dns_label_free(ctx, &c) != ADMIN_OK)
        return ADMIN_FAIL;
    return dnsconf_put(ctx, &c);
}

static int dns_show(struct admin_ctx *ctx, int argc, char **argv)
{
    char domain[SG_MAX_DOMAIN + 1];
    const char *pos[1] = {0};
    struct dnsconf c;
    size_t npos;
    int have;

    if (admin_args(argc, argv, NULL, 0, pos, 1, 1, &npos, "dns show DOMAIN") !=
        ADMIN_OK)
        return ADMIN_USAGE;
    if (dns_domain(ctx, pos[0], domain) != ADMIN_OK)
        return ADMIN_FAIL;
    have = dnsconf_get(ctx, domain, &c);
    if (have <= 0)
        return have < 0 ? ADMIN_FAIL
                        : admin_fail("domain %s has no DNS settings", domain);
    printf("domain: %s\nserver: %s\nport: %u\nzone: %s\ntsig_name: %s\n"
           "tsig_alg: %s\ntsig_secret_file: %s\ndelegate: %s\ncheck: %s\n"
           "slots: %u\n",
           c.domain, c.server, c.port, c.zone, c.tsig_name, c.tsig_alg,
           c.secret_file, c.delegate[0] != '\0' ? c.delegate : "-",
           c.check[0] != '\0' ? c.check : "ns", c.slots);
    return ADMIN_OK;
}

static int dns_del(struct admin_ctx *ctx, int argc, char **argv)
{
    char domain[SG_MAX_DOMAIN + 1];
    const char *pos[1] = {0};
    sqlite3_stmt *st;
    size_t npos;

    if (admin_args(argc, argv, NULL, 0, pos, 1, 1, &npos, "dns del DOMAIN") !=
        ADMIN_OK)
        return ADMIN_USAGE;
    if (dns_domain(ctx, pos[0], domain) != ADMIN_OK)
        return ADMIN_FAIL;
    if (admin_prepare(ctx, "DELETE FROM dns_setting WHERE domain = ?1", &st) !=
        0)
        return ADMIN_FAIL;
    sqlite3_bind_text(st, 1, domain, -1, SQLITE_STATIC);
    if (admin_step_done(ctx, st, "deleting DNS settings") != ADMIN_OK)
        return ADMIN_FAIL;
    if (sqlite3_changes(ctx->db) == 0)
        return admin_fail("domain %s has no DNS settings", domain);
    return ADMIN_OK;
}

int cmd_dns(struct admin_ctx *ctx, int argc, char **argv)
{
    static const struct admin_cmd cmds[] = {
        {"records", dns_records}, {"publish", dns_publish},
        {"check", dns_check},     {"set", dns_set},
        {"show", dns_show},       {"del", dns_del},
    };

    return admin_dispatch(ctx, cmds, sizeof cmds / sizeof cmds[0], "dns", argc,
                          argv);
}
