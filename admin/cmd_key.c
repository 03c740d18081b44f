/* cmd_key: `subgate key generate|list|activate`. A DKIM key belongs to a
 * domain and an algorithm and moves pending -> published -> active ->
 * retired -> revoked. Private keys live in key_dir/DOMAIN/SELECTOR.pem;
 * the database holds the selector, state and public key. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../common/limits.h"
#include "admin.h"
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
 * inside the transaction, so the next key sees this one as taken. */
static int key_store(struct admin_ctx *ctx, const char *domain, const char *dir,
                     struct key_new *k)
{
    char err[512];

    if (key_sel_pick(ctx, domain, k->base, k->sel, k->path, sizeof k->path) !=
        ADMIN_OK)
        return ADMIN_FAIL;
    if (keygen_write_pem(k->pkey, dir, k->path, err, sizeof err) != 0)
        return admin_fail("%s", err);
    k->written = 1;
    return key_insert(ctx, domain, k->sel, k->algo, k->bits, k->pub);
}

/* Stores all keys in one transaction: all of them or none. */
static int key_store_all(struct admin_ctx *ctx, const char *domain,
                         struct key_new *keys, size_t n)
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
        if (key_store(ctx, domain, dir, &keys[i]) != ADMIN_OK)
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
 * may take seconds). */
static int key_prepare(struct admin_ctx *ctx, struct key_new *k,
                       const char *selector)
{
    char err[512];

    if (selector != NULL)
        snprintf(k->base, sizeof k->base, "%s", selector);
    else if (key_sel_expand(ctx->cfg->selector_template, ctx->cfg->node_name,
                            k->algo, k->base) != ADMIN_OK)
        return ADMIN_FAIL;
    if (keygen_new(k->algo, k->bits, &k->pkey, err, sizeof err) != 0)
        return admin_fail("%s", err);
    if (keygen_public_b64(k->pkey, k->algo, k->pub, sizeof k->pub) != 0)
        return admin_fail("cannot encode the public key");
    return ADMIN_OK;
}

/* 1 if algo is an item of the comma-separated list (sign_algos). */
static int key_algo_listed(const char *list, const char *algo)
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

static int key_generate(struct admin_ctx *ctx, int argc, char **argv)
{
    struct admin_opt opts[] = {
        [KEY_OPT_ALGO] = {.name = "algo", .has_arg = 1},
        [KEY_OPT_BITS] = {.name = "bits", .has_arg = 1},
        [KEY_OPT_SELECTOR] = {.name = "selector", .has_arg = 1},
    };
    static const char *const all[] = {"rsa", "ed25519"};
    struct key_new keys[sizeof all / sizeof all[0]];
    char domain[SG_MAX_DOMAIN + 1], algos[32] = "";
    const char *pos[1] = {0}, *sel;
    unsigned bits = SG_DEF_RSA_BITS;
    size_t npos, n = 0;
    int ret = ADMIN_FAIL;

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
    if (key_domain(ctx, pos[0], domain, algos, sizeof algos) != ADMIN_OK)
        return ADMIN_FAIL;
    memset(keys, 0, sizeof keys);
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        /* --algo names one; else each one the tenant signs with. */
        if (opts[KEY_OPT_ALGO].set
                ? strcmp(all[i], opts[KEY_OPT_ALGO].value) != 0
                : !key_algo_listed(algos, all[i]))
            continue;
        keys[n].algo = all[i];
        /* RFC 8463: an Ed25519 key has 256 bits whatever --bits says. */
        keys[n].bits = strcmp(all[i], "rsa") == 0 ? bits : 256;
        if (key_prepare(ctx, &keys[n++], sel) != ADMIN_OK)
            goto out;
    }
    ret = n > 0 ? key_store_all(ctx, domain, keys, n)
                : admin_fail("tenant of %s signs with no known algorithm",
                             domain);
    if (ret == ADMIN_OK)
        for (size_t i = 0; i < n; i++)
            printf("%s\t%s\t%u\n", keys[i].sel, keys[i].algo, keys[i].bits);
out:
    for (size_t i = 0; i < n; i++)
        EVP_PKEY_free(keys[i].pkey);
    return ret;
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

/* Makes key id active and retires the domain's other active key of the
 * same algorithm, reporting both to out. */
static int key_activate_one(struct admin_ctx *ctx, const char *domain,
                            long long id, const char *sel, const char *algo,
                            FILE *out)
{
    long long now = (long long)time(NULL);
    sqlite3_stmt *st;
    int rc;

    fprintf(out, "%s\t%s\tactive\n", sel, algo);
    if (admin_prepare(ctx,
                      "UPDATE dkim_key SET state = 'retired', retired = ?4"
                      " WHERE domain = ?1 AND algo = ?2 AND state = 'active'"
                      " AND id <> ?3 RETURNING selector",
                      &st) != 0)
        return ADMIN_FAIL;
    sqlite3_bind_text(st, 1, domain, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, algo, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, id);
    sqlite3_bind_int64(st, 4, now);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        fprintf(out, "%s\t%s\tretired\n", sqlite3_column_text(st, 0), algo);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return admin_db_fail(ctx, "retiring key");
    if (admin_prepare(ctx,
                      "UPDATE dkim_key SET state = 'active', activated = ?2"
                      " WHERE id = ?1",
                      &st) != 0)
        return ADMIN_FAIL;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_int64(st, 2, now);
    return admin_step_done(ctx, st, "activating key");
}

/* Activates the key named sel, which must be pending or published. */
static int key_activate_named(struct admin_ctx *ctx, const char *domain,
                              const char *sel, FILE *out)
{
    char algo[16], state[16];
    sqlite3_stmt *st;
    long long id = 0;
    int rc;

    if (admin_prepare(ctx,
                      "SELECT id, algo, state FROM dkim_key"
                      " WHERE domain = ?1 AND selector = ?2",
                      &st) != 0)
        return ADMIN_FAIL;
    sqlite3_bind_text(st, 1, domain, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, sel, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        id = sqlite3_column_int64(st, 0);
        snprintf(algo, sizeof algo, "%s", sqlite3_column_text(st, 1));
        snprintf(state, sizeof state, "%s", sqlite3_column_text(st, 2));
    }
    sqlite3_finalize(st);
    if (rc == SQLITE_DONE)
        return admin_fail("no key %s for domain %s", sel, domain);
    if (rc != SQLITE_ROW)
        return admin_db_fail(ctx, "reading key");
    if (strcmp(state, "pending") != 0 && strcmp(state, "published") != 0)
        return admin_fail("key %s is %s; only pending or published keys "
                          "can be activated",
                          sel, state);
    return key_activate_one(ctx, domain, id, sel, algo, out);
}

/* One pending or published key found by key_activate_all. */
struct key_cand {
    long long id;
    char sel[KEY_SELECTOR_MAX + 1];
    char algo[16];
};

/* Activates every pending or published key of domain: at most one per
 * algorithm, or which one should sign would be a guess. */
static int key_activate_all(struct admin_ctx *ctx, const char *domain,
                            FILE *out)
{
    struct key_cand c[3];
    sqlite3_stmt *st;
    size_t n = 0;
    int rc = SQLITE_DONE;

    if (admin_prepare(ctx,
                      "SELECT id, selector, algo FROM dkim_key"
                      " WHERE domain = ?1"
                      " AND state IN ('pending', 'published')"
                      " ORDER BY algo <> 'rsa', created, id",
                      &st) != 0)
        return ADMIN_FAIL;
    sqlite3_bind_text(st, 1, domain, -1, SQLITE_STATIC);
    while (n < sizeof c / sizeof c[0] &&
           (rc = sqlite3_step(st)) == SQLITE_ROW) {
        c[n].id = sqlite3_column_int64(st, 0);
        snprintf(c[n].sel, sizeof c[n].sel, "%s", sqlite3_column_text(st, 1));
        snprintf(c[n].algo, sizeof c[n].algo, "%s", sqlite3_column_text(st, 2));
        if (n > 0 && strcmp(c[n].algo, c[n - 1].algo) == 0) {
            sqlite3_finalize(st);
            return admin_fail("domain %s has several pending or published "
                              "%s keys (%s, %s); name the selector",
                              domain, c[n].algo, c[n - 1].sel, c[n].sel);
        }
        n++;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return admin_db_fail(ctx, "reading keys");
    if (n == 0)
        return admin_fail("domain %s has no pending or published key", domain);
    for (size_t i = 0; i < n; i++)
        if (key_activate_one(ctx, domain, c[i].id, c[i].sel, c[i].algo, out) !=
            ADMIN_OK)
            return ADMIN_FAIL;
    return ADMIN_OK;
}

/* --force is accepted for the DNS check that will precede activation; no
 * check runs yet. */
static int key_activate(struct admin_ctx *ctx, int argc, char **argv)
{
    struct admin_opt opts[] = {{.name = "force"}};
    char domain[SG_MAX_DOMAIN + 1], *report = NULL;
    const char *pos[2] = {0};
    size_t npos, len = 0;
    FILE *out;
    int ret;

    if (admin_args(argc, argv, opts, 1, pos, 1, 2, &npos,
                   "key activate DOMAIN [SELECTOR] [--force]") != ADMIN_OK)
        return ADMIN_USAGE;
    if (key_domain(ctx, pos[0], domain, NULL, 0) != ADMIN_OK)
        return ADMIN_FAIL;
    /* The report is printed only once the change is committed. */
    out = open_memstream(&report, &len);
    if (out == NULL)
        return admin_fail("open_memstream: %s", strerror(errno));
    ret = admin_begin(ctx);
    if (ret == ADMIN_OK) {
        ret = npos == 2 ? key_activate_named(ctx, domain, pos[1], out)
                        : key_activate_all(ctx, domain, out);
        if (ret == ADMIN_OK)
            ret = admin_commit(ctx);
        else
            admin_rollback(ctx);
    }
    fclose(out);
    if (ret == ADMIN_OK)
        fwrite(report, 1, len, stdout);
    free(report);
    return ret;
}

int cmd_key(struct admin_ctx *ctx, int argc, char **argv)
{
    static const struct admin_cmd cmds[] = {
        {"generate", key_generate},
        {"list", key_list},
        {"activate", key_activate},
    };

    return admin_dispatch(ctx, cmds, sizeof cmds / sizeof cmds[0], "key", argc,
                          argv);
}
