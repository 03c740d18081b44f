/* cmd_key: `subgate key generate|list|activate|retire|revoke|delete|
 * rotate`. A DKIM key belongs to a domain and an algorithm and moves
 * pending -> published -> active -> retired -> revoked -> deleted
 * (key_state); `rotate` is in key_rotate.c. Private keys live in
 * key_dir/DOMAIN/SELECTOR.pem; the database holds the selector, state and
 * public key. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../common/limits.h"
#include "../common/log.h"
#include "admin.h"
#include "dns_conf.h"
#include "dns_want.h"
#include "key_rotate.h"
#include "key_state.h"
#include "keygen.h"

#define KEY_GENERATE_USAGE                                                     \
    "key generate DOMAIN [--algo rsa|ed25519] [--bits N] [--selector S]"

/* RFC 6376 3.1: a selector is one or more labels; ours is one label. */
#define KEY_SELECTOR_MAX 63
/* base64 of a 4096-bit SubjectPublicKeyInfo is about 740 octets. */
#define KEY_PUB_MAX 2048
/* How many "-N" suffixes are tried for a selector already in use. */
#define KEY_MAX_SUFFIX 99

enum { KEY_OPT_ALGO, KEY_OPT_BITS, KEY_OPT_SELECTOR };

/* Appends src to out at *len, bounded by KEY_SELECTOR_MAX. 0 or -1. */
static int key_sel_put(char *out, size_t *len, const char *src, size_t n)
{
    if (*len + n > KEY_SELECTOR_MAX)
        return -1;
    memcpy(out + *len, src, n);
    *len += n;
    return 0;
}

/* A node name character in a selector: ASCII letters lower-cased, digits
 * and '-' kept, anything else '-'. */
static char key_sel_char(char c)
{
    if (c >= 'A' && c <= 'Z')
        return (char)(c - 'A' + 'a');
    if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
        return c;
    return '-';
}

/* Expands the selector template: %Y %m %d (UTC date), %n (node name,
 * lower-cased, other than [a-z0-9-] mapped to '-'), %a (algorithm), %%.
 * out has KEY_SELECTOR_MAX + 1 octets. ADMIN_OK or ADMIN_FAIL. */
static int key_sel_expand(const char *tmpl, const char *node, const char *algo,
                          char *out)
{
    char date[16], name[KEY_SELECTOR_MAX + 1];
    time_t now = time(NULL);
    struct tm tm;
    size_t len = 0, n;
    const char *p;

    if (gmtime_r(&now, &tm) == NULL)
        return admin_fail("cannot read the date");
    for (p = tmpl; *p != '\0'; p++) {
        const char *src = p;
        n = 1;
        if (*p == '%') {
            switch (*++p) {
            case 'Y':
                n = (size_t)snprintf(date, sizeof date, "%04d",
                                     tm.tm_year + 1900);
                src = date;
                break;
            case 'm':
                n = (size_t)snprintf(date, sizeof date, "%02d", tm.tm_mon + 1);
                src = date;
                break;
            case 'd':
                n = (size_t)snprintf(date, sizeof date, "%02d", tm.tm_mday);
                src = date;
                break;
            case 'n':
                n = strnlen(node, KEY_SELECTOR_MAX + 1);
                if (n > KEY_SELECTOR_MAX)
                    goto too_long;
                for (size_t i = 0; i < n; i++)
                    name[i] = key_sel_char(node[i]);
                src = name;
                break;
            case 'a':
                src = algo;
                n = strlen(algo);
                break;
            case '%':
                break;
            default:
                return admin_fail("selector_template %s: unknown %%%c", tmpl,
                                  *p != '\0' ? *p : ' ');
            }
        }
        if (key_sel_put(out, &len, src, n) != 0)
            goto too_long;
    }
    out[len] = '\0';
    /* DNS names compare case-insensitively; selectors are stored lower. */
    for (char *q = out; *q != '\0'; q++)
        if (*q >= 'A' && *q <= 'Z')
            *q = (char)(*q - 'A' + 'a');
    if (!admin_label_valid(out))
        return admin_fail("selector %s from selector_template %s is not a "
                          "DNS label of [a-z0-9-]",
                          out, tmpl);
    return ADMIN_OK;
too_long:
    return admin_fail("selector_template %s gives more than %d octets", tmpl,
                      KEY_SELECTOR_MAX);
}

/* 1 if selector is taken for domain (row or key file), 0 free, -1. */
static int key_sel_taken(struct admin_ctx *ctx, const char *domain,
                         const char *sel, const char *file)
{
    sqlite3_stmt *st;
    struct stat sb;
    int rc;

    if (admin_prepare(ctx,
                      "SELECT 1 FROM dkim_key WHERE domain = ?1"
                      " AND selector = ?2",
                      &st) != 0)
        return -1;
    sqlite3_bind_text(st, 1, domain, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, sel, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc == SQLITE_ROW)
        return 1;
    if (rc != SQLITE_DONE) {
        admin_db_fail(ctx, "reading keys");
        return -1;
    }
    /* A file without a row is left over from a deleted domain: never
     * overwrite a private key. */
    return lstat(file, &sb) == 0 || errno != ENOENT;
}

/* Picks base, or base-2, base-3, ... whichever is free; fills sel and the
 * key file path. */
static int key_sel_pick(struct admin_ctx *ctx, const char *domain,
                        const char *base, char *sel, char *path, size_t pathlen)
{
    int taken;

    for (int i = 1; i <= KEY_MAX_SUFFIX; i++) {
        if (i == 1)
            snprintf(sel, KEY_SELECTOR_MAX + 1, "%s", base);
        else if ((size_t)snprintf(sel, KEY_SELECTOR_MAX + 1, "%s-%d", base, i) >
                 KEY_SELECTOR_MAX)
            return admin_fail("selector %s is taken and too long for a "
                              "suffix",
                              base);
        if ((size_t)snprintf(path, pathlen, "%s/%s/%s.pem", ctx->cfg->key_dir,
                             domain, sel) >= pathlen)
            return admin_fail("%s: path too long", ctx->cfg->key_dir);
        taken = key_sel_taken(ctx, domain, sel, path);
        if (taken < 0)
            return ADMIN_FAIL;
        if (!taken)
            return ADMIN_OK;
    }
    return admin_fail("selectors %s to %s-%d are all taken", base, base,
                      KEY_MAX_SUFFIX);
}

/* 1 if the record name of sel is still in DNS (a deleted key whose
 * record a publish has yet to remove), 0 if not, -1 on error. */
static int key_name_published(struct admin_ctx *ctx, const char *domain,
                              const struct dnsconf *dc, const char *sel)
{
    char name[DNSCONF_NAME_MAX + 1];
    sqlite3_stmt *st;
    int rc;

    if (dnsconf_owner(dc, domain, sel, name, sizeof name) != 0)
        return 1;
    if (admin_prepare(ctx,
                      "SELECT 1 FROM dns_published WHERE domain = ?1"
                      " AND name = ?2",
                      &st) != 0)
        return -1;
    sqlite3_bind_text(st, 1, domain, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        admin_db_fail(ctx, "reading published records");
        return -1;
    }
    return rc == SQLITE_ROW;
}

/* Delegated mode: the first free selector of the fixed set, so that the
 * tenant's CNAMEs (added once) cover every key. A slot is free once its
 * last key is deleted and that key's record is gone from DNS. */
static int key_slot_pick(struct admin_ctx *ctx, const char *domain,
                         const struct dnsconf *dc, const char *algo, char *sel,
                         char *path, size_t pathlen)
{
    int taken;

    for (unsigned k = 1; k <= dc->slots; k++) {
        if (dnswant_slot(algo, ctx->cfg->node_name, k, sel) != 0)
            return admin_fail("node_name %s is too long for a selector",
                              ctx->cfg->node_name);
        if ((size_t)snprintf(path, pathlen, "%s/%s/%s.pem", ctx->cfg->key_dir,
                             domain, sel) >= pathlen)
            return admin_fail("%s: path too long", ctx->cfg->key_dir);
        taken = key_sel_taken(ctx, domain, sel, path);
        if (taken == 0)
            taken = key_name_published(ctx, domain, dc, sel);
        if (taken < 0)
            return ADMIN_FAIL;
        if (!taken)
            return ADMIN_OK;
    }
    return admin_fail("all %u %s selectors of delegated domain %s are in "
                      "use; wait for old keys to be deleted or raise --slots "
                      "(subgate dns set)",
                      dc->slots, algo, domain);
}

/* Inserts the key row. */
static int key_insert(struct admin_ctx *ctx, const char *domain,
                      const char *sel, const char *algo, unsigned bits,
                      const char *pub)
{
    char rel[SG_MAX_DOMAIN + KEY_SELECTOR_MAX + 8];
    sqlite3_stmt *st;

    snprintf(rel, sizeof rel, "%s/%s.pem", domain, sel);
    if (admin_prepare(ctx,
                      "INSERT INTO dkim_key(domain, selector, algo, bits,"
                      " state, public_key, key_file, created)"
                      " VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?6, ?7)",
                      &st) != 0)
        return ADMIN_FAIL;
    sqlite3_bind_text(st, 1, domain, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, sel, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, algo, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 4, (int)bits);
    sqlite3_bind_text(st, 5, pub, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, rel, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 7, (long long)time(NULL));
    return admin_step_done(ctx, st, "adding key");
}

/* A key being generated. */
struct key_new {
    const char *algo; /* borrowed: a string constant */
    unsigned bits;
    EVP_PKEY *pkey;                  /* owned */
    char base[KEY_SELECTOR_MAX + 1]; /* selector before any suffix */
    char sel[KEY_SELECTOR_MAX + 1];
    char pub[KEY_PUB_MAX];
    char path[4096];
    int written; /* path exists and must go if the change fails */
};

/* Picks the key's selector, writes its file and inserts its row. Runs
 * inside the transaction, so the next key sees this one as taken. dc is
 * the domain's settings when it is delegated and no selector was given. */
static int key_store(struct admin_ctx *ctx, const char *domain, const char *dir,
                     const struct dnsconf *dc, struct key_new *k)
{
    char err[512];

    if ((dc != NULL ? key_slot_pick(ctx, domain, dc, k->algo, k->sel, k->path,
                                    sizeof k->path)
                    : key_sel_pick(ctx, domain, k->base, k->sel, k->path,
                                   sizeof k->path)) != ADMIN_OK)
        return ADMIN_FAIL;
    if (keygen_write_pem(k->pkey, dir, k->path, err, sizeof err) != 0)
        return admin_fail("%s", err);
    k->written = 1;
    return key_insert(ctx, domain, k->sel, k->algo, k->bits, k->pub);
}

/* Stores all keys in one transaction: all of them or none. */
static int key_store_all(struct admin_ctx *ctx, const char *domain,
                         const struct dnsconf *dc, struct key_new *keys,
                         size_t n)
{
    char dir[4096];
    size_t i;

    if ((size_t)snprintf(dir, sizeof dir, "%s/%s", ctx->cfg->key_dir, domain) >=
        sizeof dir)
        return admin_fail("%s: path too long", ctx->cfg->key_dir);
    if (admin_mkdir(ctx->cfg->key_dir, 0700) != ADMIN_OK ||
        admin_mkdir(dir, 0700) != ADMIN_OK)
        return ADMIN_FAIL;
    if (admin_begin(ctx) != ADMIN_OK)
        return ADMIN_FAIL;
    for (i = 0; i < n; i++)
        if (key_store(ctx, domain, dir, dc, &keys[i]) != ADMIN_OK)
            break;
    if (i == n && admin_commit(ctx) == ADMIN_OK)
        return ADMIN_OK;
    admin_rollback(ctx);
    for (i = 0; i < n; i++)
        if (keys[i].written)
            unlink(keys[i].path);
    return ADMIN_FAIL;
}

/* Names and generates one key (outside any transaction: RSA generation
 * may take seconds). A delegated domain's selector is picked when the key
 * is stored. */
static int key_prepare(struct admin_ctx *ctx, struct key_new *k,
                       const char *selector, int delegated)
{
    char err[512];

    if (selector != NULL)
        snprintf(k->base, sizeof k->base, "%s", selector);
    else if (!delegated &&
             key_sel_expand(ctx->cfg->selector_template, ctx->cfg->node_name,
                            k->algo, k->base) != ADMIN_OK)
        return ADMIN_FAIL;
    if (keygen_new(k->algo, k->bits, &k->pkey, err, sizeof err) != 0)
        return admin_fail("%s", err);
    if (keygen_public_b64(k->pkey, k->algo, k->pub, sizeof k->pub) != 0)
        return admin_fail("cannot encode the public key");
    return ADMIN_OK;
}

/* Parses --bits. 0 ok, -1 bad. */
static int key_parse_bits(const char *s, unsigned *bits_r)
{
    char *end;
    unsigned long v;

    if (s[0] < '0' || s[0] > '9')
        return -1;
    errno = 0;
    v = strtoul(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < SG_MIN_RSA_BITS ||
        v > SG_MAX_RSA_BITS)
        return -1;
    *bits_r = (unsigned)v;
    return 0;
}

/* The sign_algos of the tenant owning domain into out (16 octets): 1
 * found, 0 no such domain, -1 error (printed). */
static int key_domain_algos(struct admin_ctx *ctx, const char *domain,
                            char *out, size_t outlen)
{
    sqlite3_stmt *st;
    int rc;

    if (admin_prepare(ctx,
                      "SELECT t.sign_algos FROM domain d"
                      " JOIN tenant t ON t.id = d.tenant_id"
                      " WHERE d.name = ?1",
                      &st) != 0)
        return -1;
    sqlite3_bind_text(st, 1, domain, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        snprintf(out, outlen, "%s", sqlite3_column_text(st, 0));
    else if (rc != SQLITE_DONE)
        admin_db_fail(ctx, "reading domain");
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}

/* Normalises DOMAIN and checks that a tenant owns it; algos (may be NULL)
 * gets the tenant's sign_algos. */
static int key_domain(struct admin_ctx *ctx, const char *arg, char *domain,
                      char *algos, size_t algoslen)
{
    char buf[32];
    int found;

    if (!admin_domain_norm(arg, domain))
        return admin_fail("invalid domain %s", arg);
    if (algos == NULL) {
        algos = buf;
        algoslen = sizeof buf;
    }
    found = key_domain_algos(ctx, domain, algos, algoslen);
    if (found == 0)
        return admin_fail("no tenant owns domain %s", domain);
    return found < 0 ? ADMIN_FAIL : ADMIN_OK;
}

/* The domain's settings when it is delegated: 1 (dc filled), 0 not
 * delegated, -1 error. */
static int key_delegated(struct admin_ctx *ctx, const char *domain,
                         struct dnsconf *dc)
{
    int have = dnsconf_get(ctx, domain, dc);

    return have < 0 ? -1 : have == 1 && dc->delegate[0] != '\0';
}

/* Generates and stores one key per algorithm of algos (all or none). With
 * print, reports "SEL<TAB>ALGO<TAB>BITS" (key generate); else
 * "PREFIXSEL<TAB>ALGO<TAB>pending" to out. */
static int key_make(struct admin_ctx *ctx, const char *domain,
                    const char *const *algos, size_t n, unsigned bits,
                    const char *sel, int print, const char *prefix, FILE *out)
{
    struct key_new keys[2];
    struct dnsconf dc;
    int deleg, ret = ADMIN_FAIL;
    size_t i;

    SG_ASSERT(n <= sizeof keys / sizeof keys[0]);
    deleg = sel == NULL ? key_delegated(ctx, domain, &dc) : 0;
    if (deleg < 0)
        return ADMIN_FAIL;
    if (n == 0)
        return admin_fail("tenant of %s signs with no known algorithm", domain);
    memset(keys, 0, sizeof keys);
    for (i = 0; i < n; i++) {
        keys[i].algo = algos[i];
        /* RFC 8463: an Ed25519 key has 256 bits whatever --bits says. */
        keys[i].bits = strcmp(algos[i], "rsa") == 0 ? bits : 256;
        if (key_prepare(ctx, &keys[i], sel, deleg) != ADMIN_OK)
            goto out;
    }
    ret = key_store_all(ctx, domain, deleg ? &dc : NULL, keys, n);
    for (i = 0; ret == ADMIN_OK && i < n; i++) {
        if (print)
            printf("%s\t%s\t%u\n", keys[i].sel, keys[i].algo, keys[i].bits);
        else
            fprintf(out, "%s%s\t%s\tpending\n", prefix, keys[i].sel,
                    keys[i].algo);
        keystate_log(ctx, "%s: key s=%s a=%s state=pending", domain,
                     keys[i].sel, keys[i].algo);
    }
out:
    for (i = 0; i < n; i++)
        EVP_PKEY_free(keys[i].pkey);
    return ret;
}

int cmd_key_generate_algos(struct admin_ctx *ctx, const char *domain,
                           const char *const *algos, size_t n,
                           const char *prefix, FILE *out)
{
    return key_make(ctx, domain, algos, n, SG_DEF_RSA_BITS, NULL, 0, prefix,
                    out);
}

static int key_generate(struct admin_ctx *ctx, int argc, char **argv)
{
    struct admin_opt opts[] = {
        [KEY_OPT_ALGO] = {.name = "algo", .has_arg = 1},
        [KEY_OPT_BITS] = {.name = "bits", .has_arg = 1},
        [KEY_OPT_SELECTOR] = {.name = "selector", .has_arg = 1},
    };
    static const char *const all[] = {"rsa", "ed25519"};
    const char *algos[2];
    char domain[SG_MAX_DOMAIN + 1], list[32] = "";
    const char *pos[1] = {0}, *sel;
    unsigned bits = SG_DEF_RSA_BITS;
    size_t npos, n = 0;

    if (admin_args(argc, argv, opts, 3, pos, 1, 1, &npos, KEY_GENERATE_USAGE) !=
        ADMIN_OK)
        return ADMIN_USAGE;
    if (opts[KEY_OPT_ALGO].set &&
        strcmp(opts[KEY_OPT_ALGO].value, "rsa") != 0 &&
        strcmp(opts[KEY_OPT_ALGO].value, "ed25519") != 0)
        return admin_badarg("--algo must be rsa or ed25519");
    if (opts[KEY_OPT_BITS].set &&
        key_parse_bits(opts[KEY_OPT_BITS].value, &bits) != 0)
        return admin_badarg("--bits must be a number from %d to %d",
                            SG_MIN_RSA_BITS, SG_MAX_RSA_BITS);
    sel = opts[KEY_OPT_SELECTOR].set ? opts[KEY_OPT_SELECTOR].value : NULL;
    if (sel != NULL && !admin_label_valid(sel))
        return admin_badarg("--selector %s: want 1 to 63 of [a-z0-9-], "
                            "not starting or ending with '-'",
                            sel);
    if (key_domain(ctx, pos[0], domain, list, sizeof list) != ADMIN_OK)
        return ADMIN_FAIL;
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        /* --algo names one; else each one the tenant signs with. */
        if (opts[KEY_OPT_ALGO].set
                ? strcmp(all[i], opts[KEY_OPT_ALGO].value) == 0
                : dnswant_algo_listed(list, all[i]))
            algos[n++] = all[i];
    return key_make(ctx, domain, algos, n, bits, sel, 1, "", stdout);
}

static int key_list(struct admin_ctx *ctx, int argc, char **argv)
{
    char domain[SG_MAX_DOMAIN + 1], when[32];
    const char *pos[1] = {0};
    sqlite3_stmt *st;
    size_t npos;
    int rc;

    if (admin_args(argc, argv, NULL, 0, pos, 1, 1, &npos, "key list DOMAIN") !=
        ADMIN_OK)
        return ADMIN_USAGE;
    if (key_domain(ctx, pos[0], domain, NULL, 0) != ADMIN_OK)
        return ADMIN_FAIL;
    if (admin_prepare(ctx,
                      "SELECT selector, algo, bits, state, created"
                      " FROM dkim_key WHERE domain = ?1"
                      " ORDER BY created, id",
                      &st) != 0)
        return ADMIN_FAIL;
    sqlite3_bind_text(st, 1, domain, -1, SQLITE_STATIC);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        printf("%s\t%s\t%d\t%s\t%s\n", sqlite3_column_text(st, 0),
               sqlite3_column_text(st, 1), sqlite3_column_int(st, 2),
               sqlite3_column_text(st, 3),
               admin_iso_time(sqlite3_column_int64(st, 4), when, sizeof when));
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return admin_db_fail(ctx, "listing keys");
    return ADMIN_OK;
}

/* The index of the key named sel in keys, or -1 after printing "no key". */
static int key_find(const struct keystate_key *keys, size_t n,
                    const char *domain, const char *sel)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(keys[i].sel, sel) == 0)
            return (int)i;
    admin_fail("no key %s for domain %s", sel, domain);
    return -1;
}

/* 1 if state is one of the NULL-ended list. */
static int key_state_in(const char *state, const char *const *list)
{
    for (; *list != NULL; list++)
        if (strcmp(state, *list) == 0)
            return 1;
    return 0;
}

/* The keys `key activate` acts on: the one named, which must be pending
 * or published, or, for each algorithm, the only pending or published
 * key. Indexes into pick, count in *n_r. */
static int key_activate_pick(const struct keystate_key *keys, size_t n,
                             const char *domain, const char *sel, size_t *pick,
                             size_t *n_r)
{
    static const char *const ok[] = {"pending", "published", NULL};
    static const char *const algos[] = {"rsa", "ed25519"};
    int i;

    *n_r = 0;
    if (sel != NULL) {
        if ((i = key_find(keys, n, domain, sel)) < 0)
            return ADMIN_FAIL;
        if (!key_state_in(keys[i].state, ok))
            return admin_fail("key %s is %s; only pending or published "
                              "keys can be activated",
                              sel, keys[i].state);
        pick[(*n_r)++] = (size_t)i;
        return ADMIN_OK;
    }
    for (size_t a = 0; a < 2; a++) {
        int found = -1;
        for (size_t k = 0; k < n; k++) {
            if (strcmp(keys[k].algo, algos[a]) != 0 ||
                !key_state_in(keys[k].state, ok))
                continue;
            if (found >= 0)
                /* Which one should sign would be a guess. */
                return admin_fail("domain %s has several pending or "
                                  "published %s keys (%s, %s); name the "
                                  "selector",
                                  domain, algos[a], keys[found].sel,
                                  keys[k].sel);
            found = (int)k;
        }
        if (found >= 0)
            pick[(*n_r)++] = (size_t)found;
    }
    if (*n_r == 0)
        return admin_fail("domain %s has no pending or published key", domain);
    return ADMIN_OK;
}

/* Runs the transaction of a state command: the report is printed only
 * once the change is committed. */
struct key_txn {
    char *report; /* owned */
    size_t len;
    FILE *out;
};

static int key_txn_begin(struct admin_ctx *ctx, struct key_txn *t)
{
    t->report = NULL;
    t->out = open_memstream(&t->report, &t->len);
    if (t->out == NULL)
        return admin_fail("open_memstream: %s", strerror(errno));
    if (admin_begin(ctx) != ADMIN_OK) {
        fclose(t->out);
        free(t->report);
        return ADMIN_FAIL;
    }
    return ADMIN_OK;
}

static int key_txn_end(struct admin_ctx *ctx, struct key_txn *t, int ret)
{
    if (ret == ADMIN_OK)
        ret = admin_commit(ctx);
    else
        admin_rollback(ctx);
    fclose(t->out);
    if (ret == ADMIN_OK)
        fwrite(t->report, 1, t->len, stdout);
    free(t->report);
    return ret;
}

/* Parses DOMAIN [SELECTOR] [--force] and loads the domain's keys. */
static int key_state_args(struct admin_ctx *ctx, int argc, char **argv,
                          const char *usage, char *domain, const char **sel_r,
                          int *force_r, struct keystate_key *keys, size_t *n_r)
{
    struct admin_opt opts[] = {{.name = "force"}};
    const char *pos[2] = {0};
    size_t npos;

    if (admin_args(argc, argv, opts, 1, pos, 1, 2, &npos, usage) != ADMIN_OK)
        return ADMIN_USAGE;
    if (key_domain(ctx, pos[0], domain, NULL, 0) != ADMIN_OK ||
        keystate_load(ctx, domain, keys, KEYSTATE_MAX, n_r) != ADMIN_OK)
        return ADMIN_FAIL;
    *sel_r = npos == 2 ? pos[1] : NULL;
    *force_r = opts[0].set;
    return ADMIN_OK;
}

/* Activation gate (SPEC "Keys and DNS"): a key signs only once its record
 * is served by every server checked; --force skips the check. */
static int key_activate(struct admin_ctx *ctx, int argc, char **argv)
{
    struct keystate_key keys[KEYSTATE_MAX];
    char domain[SG_MAX_DOMAIN + 1];
    const char *sel, *sels[2];
    size_t n, pick[2], npick;
    long long ids[2];
    struct key_txn t;
    int force, ret;

    ret = key_state_args(ctx, argc, argv,
                         "key activate DOMAIN [SELECTOR] [--force]", domain,
                         &sel, &force, keys, &n);
    if (ret != ADMIN_OK)
        return ret;
    if (key_activate_pick(keys, n, domain, sel, pick, &npick) != ADMIN_OK)
        return ADMIN_FAIL;
    for (size_t i = 0; i < npick; i++) {
        ids[i] = keys[pick[i]].id;
        sels[i] = keys[pick[i]].sel;
    }
    if (!force && keystate_gate(ctx, domain, ids, sels, npick) != ADMIN_OK)
        return ADMIN_FAIL;
    if (key_txn_begin(ctx, &t) != ADMIN_OK)
        return ADMIN_FAIL;
    ret = ADMIN_OK;
    for (size_t i = 0; i < npick && ret == ADMIN_OK; i++)
        ret = keystate_activate(ctx, domain, &keys[pick[i]], force, "", t.out);
    return key_txn_end(ctx, &t, ret);
}

/* The number of active keys of algo. */
static size_t key_count_active(const struct keystate_key *keys, size_t n,
                               const char *algo)
{
    size_t c = 0;

    for (size_t i = 0; i < n; i++)
        c += strcmp(keys[i].state, "active") == 0 &&
             strcmp(keys[i].algo, algo) == 0;
    return c;
}

/* Puts the index of every key of keys[0..n) in state into pick (*npick_r
 * of them). ADMIN_FAIL (printed) if domain has none. */
static int key_pick_state(const struct keystate_key *keys, size_t n,
                          const char *state, const char *domain, size_t *pick,
                          size_t *npick_r)
{
    *npick_r = 0;
    for (size_t k = 0; k < n; k++)
        if (strcmp(keys[k].state, state) == 0)
            pick[(*npick_r)++] = k;
    if (*npick_r == 0)
        return admin_fail("domain %s has no %s key", domain, state);
    return ADMIN_OK;
}

/* A retired key stays in DNS for mail in flight; retiring the last active
 * key of an algorithm leaves the domain without a signature of it. */
static int key_retire(struct admin_ctx *ctx, int argc, char **argv)
{
    struct keystate_key keys[KEYSTATE_MAX];
    char domain[SG_MAX_DOMAIN + 1];
    size_t n, pick[KEYSTATE_MAX], npick = 0;
    const char *sel;
    struct key_txn t;
    int force, ret, i;

    ret = key_state_args(ctx, argc, argv,
                         "key retire DOMAIN [SELECTOR] [--force]", domain, &sel,
                         &force, keys, &n);
    if (ret != ADMIN_OK)
        return ret;
    if (sel != NULL) {
        if ((i = key_find(keys, n, domain, sel)) < 0)
            return ADMIN_FAIL;
        if (strcmp(keys[i].state, "active") != 0)
            return admin_fail("key %s is %s; only active keys can be "
                              "retired",
                              sel, keys[i].state);
        pick[npick++] = (size_t)i;
    } else if (key_pick_state(keys, n, "active", domain, pick, &npick) !=
               ADMIN_OK) {
        return ADMIN_FAIL;
    }
    for (size_t k = 0; k < npick && !force; k++)
        if (key_count_active(keys, n, keys[pick[k]].algo) == 1)
            return admin_fail("key %s is the only active %s key of %s: "
                              "without it mail is not signed with %s; "
                              "--force to retire it anyway",
                              keys[pick[k]].sel, keys[pick[k]].algo, domain,
                              keys[pick[k]].algo);
    if (key_txn_begin(ctx, &t) != ADMIN_OK)
        return ADMIN_FAIL;
    ret = ADMIN_OK;
    for (size_t k = 0; k < npick && ret == ADMIN_OK; k++) {
        ret = keystate_set(ctx, keys[pick[k]].id, "retired");
        fprintf(t.out, "%s\t%s\tretired\n", keys[pick[k]].sel,
                keys[pick[k]].algo);
        keystate_log(ctx, "%s: key s=%s a=%s state=retired", domain,
                     keys[pick[k]].sel, keys[pick[k]].algo);
    }
    return key_txn_end(ctx, &t, ret);
}

/* Revoking publishes an empty p= (RFC 6376 3.6.1) at the next `dns
 * publish`. A key in another state than retired is revoked only with
 * --force: a compromised active key must go at once. */
static int key_revoke(struct admin_ctx *ctx, int argc, char **argv)
{
    static const char *const forced[] = {"pending", "published", "active",
                                         NULL};
    struct keystate_key keys[KEYSTATE_MAX];
    char domain[SG_MAX_DOMAIN + 1];
    size_t n, pick[KEYSTATE_MAX], npick = 0;
    const char *sel;
    struct key_txn t;
    int force, ret, i;

    ret = key_state_args(ctx, argc, argv,
                         "key revoke DOMAIN [SELECTOR] [--force]", domain, &sel,
                         &force, keys, &n);
    if (ret != ADMIN_OK)
        return ret;
    if (sel != NULL) {
        if ((i = key_find(keys, n, domain, sel)) < 0)
            return ADMIN_FAIL;
        if (strcmp(keys[i].state, "retired") != 0 &&
            !(force && key_state_in(keys[i].state, forced)))
            return admin_fail("key %s is %s; only retired keys can be "
                              "revoked%s",
                              sel, keys[i].state,
                              key_state_in(keys[i].state, forced)
                                  ? " (--force revokes it at once)"
                                  : "");
        pick[npick++] = (size_t)i;
    } else if (key_pick_state(keys, n, "retired", domain, pick, &npick) !=
               ADMIN_OK) {
        return ADMIN_FAIL;
    }
    if (key_txn_begin(ctx, &t) != ADMIN_OK)
        return ADMIN_FAIL;
    ret = ADMIN_OK;
    for (size_t k = 0; k < npick && ret == ADMIN_OK; k++) {
        ret = keystate_set(ctx, keys[pick[k]].id, "revoked");
        fprintf(t.out, "%s\t%s\trevoked\n", keys[pick[k]].sel,
                keys[pick[k]].algo);
        keystate_log(ctx, "%s: key s=%s a=%s state=revoked%s", domain,
                     keys[pick[k]].sel, keys[pick[k]].algo,
                     strcmp(keys[pick[k]].state, "retired") != 0 ? " forced=yes"
                                                                 : "");
    }
    return key_txn_end(ctx, &t, ret);
}

/* Deletes a revoked key: its row, then its private key file. The record
 * leaves DNS at the next `dns publish`. */
static int key_delete(struct admin_ctx *ctx, int argc, char **argv)
{
    struct keystate_key keys[KEYSTATE_MAX];
    char domain[SG_MAX_DOMAIN + 1];
    const char *pos[2] = {0};
    size_t n, npos;
    struct key_txn t;
    int i, ret;

    if (admin_args(argc, argv, NULL, 0, pos, 2, 2, &npos,
                   "key delete DOMAIN SELECTOR") != ADMIN_OK)
        return ADMIN_USAGE;
    if (key_domain(ctx, pos[0], domain, NULL, 0) != ADMIN_OK ||
        keystate_load(ctx, domain, keys, KEYSTATE_MAX, &n) != ADMIN_OK ||
        (i = key_find(keys, n, domain, pos[1])) < 0)
        return ADMIN_FAIL;
    if (strcmp(keys[i].state, "revoked") != 0)
        return admin_fail("key %s is %s; only revoked keys can be deleted",
                          pos[1], keys[i].state);
    if (key_txn_begin(ctx, &t) != ADMIN_OK)
        return ADMIN_FAIL;
    ret = keystate_delete_row(ctx, &keys[i]);
    fprintf(t.out, "%s\t%s\tdeleted\n", keys[i].sel, keys[i].algo);
    ret = key_txn_end(ctx, &t, ret);
    if (ret != ADMIN_OK)
        return ret;
    keystate_log(ctx, "%s: key s=%s a=%s state=deleted", domain, keys[i].sel,
                 keys[i].algo);
    return keystate_unlink(ctx, &keys[i]);
}

int cmd_key(struct admin_ctx *ctx, int argc, char **argv)
{
    static const struct admin_cmd cmds[] = {
        {"generate", key_generate}, {"list", key_list},
        {"activate", key_activate}, {"retire", key_retire},
        {"revoke", key_revoke},     {"delete", key_delete},
        {"rotate", keyrot_cmd},
    };

    return admin_dispatch(ctx, cmds, sizeof cmds / sizeof cmds[0], "key", argc,
                          argv);
}
