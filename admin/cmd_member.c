/* cmd_member: `subgate member add|passwd|list|show|del|disable|enable`.
 * A member belongs to the tenant that owns the domain of its primary
 * address, which is also its login. Passwords come from standard input
 * (--password-stdin) or are generated (--random) and printed once; only
 * their yescrypt hash is stored. `member alias` lives in cmd_alias.c. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "../common/limits.h"
#include "../common/passwd.h"
#include "admin.h"
#include "member_scram.h"

/* Room for a crypt(3) string (libxcrypt's CRYPT_OUTPUT_SIZE is 384). */
#define MEMBER_HASH_MAX 512

/* The password options of add and passwd. */
enum { MEMBER_OPT_STDIN, MEMBER_OPT_RANDOM };

/* Obtains the new password as the options say and hashes it into hash,
 * and derives its SCRAM keys (scram_iterations) into k. For --random the
 * password stays in pw to be printed after the change is committed.
 * Returns ADMIN_OK, ADMIN_FAIL or ADMIN_USAGE (printed). */
static int member_secret(struct admin_ctx *ctx, const struct admin_opt *opts,
                         char *pw, size_t pwlen, char *hash, size_t hashlen,
                         struct scram_keys *k)
{
    int ret;

    if (opts[MEMBER_OPT_STDIN].set && opts[MEMBER_OPT_RANDOM].set)
        return admin_badarg("--password-stdin and --random exclude each "
                            "other");
    if (opts[MEMBER_OPT_STDIN].set)
        ret = admin_read_password(pw, pwlen);
    else if (passwd_random(pw, pwlen, ADMIN_RANDOM_PASSWORD_LEN) != 0)
        ret = admin_fail("no random bytes for a password");
    else
        ret = ADMIN_OK;
    if (ret != ADMIN_OK)
        return ret;
    if (passwd_hash(pw, hash, hashlen) != 0)
        return admin_fail("hashing the password failed");
    if (scram_keys_new(pw, ctx->cfg->scram_iterations, k) != 0)
        return admin_fail("deriving the SCRAM keys failed");
    if (opts[MEMBER_OPT_STDIN].set)
        explicit_bzero(pw, pwlen);
    return ADMIN_OK;
}

/* Ends a command that set a password: prints a --random one once the
 * change is committed (ret ADMIN_OK), then wipes the secrets. Returns
 * ret. */
static int member_secret_end(int ret, const struct admin_opt *opts, char *pw,
                             size_t pwlen, char *hash, size_t hashlen,
                             struct scram_keys *k)
{
    if (ret == ADMIN_OK && opts[MEMBER_OPT_RANDOM].set)
        printf("%s\n", pw);
    explicit_bzero(pw, pwlen);
    explicit_bzero(hash, hashlen);
    explicit_bzero(k, sizeof *k);
    return ret;
}

/* Inserts the member row (in a transaction). */
static int member_insert(struct admin_ctx *ctx, const char *addr,
                         const char *domain, const char *hash,
                         const struct scram_keys *k)
{
    sqlite3_stmt *st;
    long long tid, now = (long long)time(NULL);
    int used;

    tid = admin_domain_tenant(ctx, domain);
    if (tid < 0)
        return ADMIN_FAIL;
    if (tid == 0)
        return admin_fail("no tenant owns domain %s", domain);
    used = admin_addr_in_use(ctx, addr);
    if (used != 0)
        return used < 0 ? ADMIN_FAIL
                        : admin_fail("address %s is already in use", addr);
    if (admin_prepare(ctx,
                      "INSERT INTO member(address, tenant_id, password_hash,"
                      " created, password_changed) VALUES (?1, ?2, ?3, ?4, "
                      "?5)",
                      &st) != 0)
        return ADMIN_FAIL;
    sqlite3_bind_text(st, 1, addr, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, tid);
    sqlite3_bind_int64(st, 4, now);
    if (hash[0] != '\0') {
        sqlite3_bind_text(st, 3, hash, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, now);
    }
    if (admin_step_done(ctx, st, "adding member") != ADMIN_OK)
        return ADMIN_FAIL;
    return hash[0] != '\0' ? member_scram_store(ctx, addr, k, hash) : ADMIN_OK;
}

static int member_add(struct admin_ctx *ctx, int argc, char **argv)
{
    struct admin_opt opts[] = {
        [MEMBER_OPT_STDIN] = {.name = "password-stdin"},
        [MEMBER_OPT_RANDOM] = {.name = "random"},
    };
    char addr[SG_MAX_PATH + 1], pw[ADMIN_PASSWORD_BUF];
    char hash[MEMBER_HASH_MAX] = "";
    struct scram_keys keys = {0};
    const char *pos[1] = {0}, *domain;
    size_t npos;
    int ret;

    if (admin_args(argc, argv, opts, 2, pos, 1, 1, &npos,
                   "member add ADDRESS [--password-stdin|--random]") !=
        ADMIN_OK)
        return ADMIN_USAGE;
    if (!admin_addr_norm(pos[0], addr, &domain))
        return admin_fail("invalid address %s", pos[0]);
    if (opts[0].set || opts[1].set) {
        /* Before the transaction: no lock is held while stdin is read. */
        ret = member_secret(ctx, opts, pw, sizeof pw, hash, sizeof hash, &keys);
        if (ret != ADMIN_OK)
            return ret;
    }
    if (admin_begin(ctx) != ADMIN_OK ||
        member_insert(ctx, addr, domain, hash, &keys) != ADMIN_OK) {
        admin_rollback(ctx);
        ret = ADMIN_FAIL;
    } else {
        ret = admin_commit(ctx);
    }
    return member_secret_end(ret, opts, pw, sizeof pw, hash, sizeof hash,
                             &keys);
}

static int member_passwd(struct admin_ctx *ctx, int argc, char **argv)
{
    static const char usage[] =
        "member passwd ADDRESS --password-stdin|--random";
    struct admin_opt opts[] = {
        [MEMBER_OPT_STDIN] = {.name = "password-stdin"},
        [MEMBER_OPT_RANDOM] = {.name = "random"},
    };
    char pw[ADMIN_PASSWORD_BUF], hash[MEMBER_HASH_MAX];
    struct scram_keys keys;
    const char *pos[1] = {0};
    sqlite3_stmt *st;
    size_t npos;
    int ret;

    if (admin_args(argc, argv, opts, 2, pos, 1, 1, &npos, usage) != ADMIN_OK)
        return ADMIN_USAGE;
    if (!opts[0].set && !opts[1].set)
        return admin_usage(usage);
    ret = member_secret(ctx, opts, pw, sizeof pw, hash, sizeof hash, &keys);
    if (ret != ADMIN_OK)
        return ret;
    ret = ADMIN_FAIL;
    if (admin_begin(ctx) == ADMIN_OK &&
        admin_prepare(ctx,
                      "UPDATE member SET password_hash = ?2,"
                      " password_changed = ?3 WHERE address = ?1",
                      &st) == 0) {
        sqlite3_bind_text(st, 1, pos[0], -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, hash, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, (long long)time(NULL));
        ret = admin_step_done(ctx, st, "setting password");
        if (ret == ADMIN_OK && sqlite3_changes(ctx->db) == 0)
            ret = admin_fail("no member %s", pos[0]);
        if (ret == ADMIN_OK)
            ret = member_scram_store(ctx, pos[0], &keys, hash);
        if (ret == ADMIN_OK)
            ret = admin_commit(ctx);
    }
    if (ret != ADMIN_OK)
        admin_rollback(ctx);
    return member_secret_end(ret, opts, pw, sizeof pw, hash, sizeof hash,
                             &keys);
}

static int member_list(struct admin_ctx *ctx, int argc, char **argv)
{
    /* Aliases sorted inside each member's line. */
    static const char sql[] =
        "SELECT m.address, m.disabled,"
        " (SELECT group_concat(address, ',') FROM"
        "  (SELECT address FROM alias WHERE member_id = m.id"
        "   ORDER BY address))"
        " FROM member m JOIN tenant t ON t.id = m.tenant_id"
        " WHERE ?1 IS NULL OR t.name = ?1 ORDER BY m.address";
    const char *pos[1] = {0};
    const unsigned char *aliases;
    sqlite3_stmt *st;
    size_t npos;
    long long tid;
    int rc;

    if (admin_args(argc, argv, NULL, 0, pos, 0, 1, &npos,
                   "member list [TENANT]") != ADMIN_OK)
        return ADMIN_USAGE;
    if (npos == 1) {
        tid = admin_tenant_id(ctx, pos[0]);
        if (tid <= 0)
            return tid < 0 ? ADMIN_FAIL : admin_fail("no tenant %s", pos[0]);
    }
    if (admin_prepare(ctx, sql, &st) != 0)
        return ADMIN_FAIL;
    if (npos == 1)
        sqlite3_bind_text(st, 1, pos[0], -1, SQLITE_STATIC);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        aliases = sqlite3_column_text(st, 2);
        printf("%s\t%s\taliases=%s\n", sqlite3_column_text(st, 0),
               sqlite3_column_int(st, 1) ? "disabled" : "enabled",
               aliases != NULL ? (const char *)aliases : "");
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return admin_db_fail(ctx, "listing members");
    return ADMIN_OK;
}

/* Prints "aliases: a b c" for member id. */
static int member_show_aliases(struct admin_ctx *ctx, long long id)
{
    return admin_print_names(ctx, "aliases",
                             "SELECT address FROM alias WHERE member_id = ?1"
                             " ORDER BY address",
                             id, "listing aliases");
}

static int member_show(struct admin_ctx *ctx, int argc, char **argv)
{
    static const char sql[] =
        "SELECT m.id, m.address, t.name, m.disabled,"
        " m.password_hash IS NOT NULL, coalesce(m.pgp_fingerprint, ''),"
        " m.created, coalesce(m.password_changed, 0)"
        " FROM member m JOIN tenant t ON t.id = m.tenant_id"
        " WHERE m.address = ?1";
    const char *pos[1] = {0};
    sqlite3_stmt *st;
    char when[32];
    size_t npos;
    int rc, ret;

    if (admin_args(argc, argv, NULL, 0, pos, 1, 1, &npos,
                   "member show ADDRESS") != ADMIN_OK)
        return ADMIN_USAGE;
    if (admin_prepare(ctx, sql, &st) != 0)
        return ADMIN_FAIL;
    sqlite3_bind_text(st, 1, pos[0], -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE)
            return admin_db_fail(ctx, "reading member");
        return admin_fail("no member %s", pos[0]);
    }
    printf("address: %s\ntenant: %s\nstatus: %s\n", sqlite3_column_text(st, 1),
           sqlite3_column_text(st, 2),
           sqlite3_column_int(st, 3) ? "disabled" : "enabled");
    ret = member_show_aliases(ctx, sqlite3_column_int64(st, 0));
    if (ret == ADMIN_OK) {
        printf("password_set: %s\npgp_fingerprint: %s\n",
               sqlite3_column_int(st, 4) ? "yes" : "no",
               sqlite3_column_text(st, 5));
        printf("created: %s\n",
               admin_iso_time(sqlite3_column_int64(st, 6), when, sizeof when));
        printf("password_changed: %s\n",
               admin_iso_time(sqlite3_column_int64(st, 7), when, sizeof when));
    }
    sqlite3_finalize(st);
    return ret;
}

/* del, disable, enable: one statement on the member row. */
static int member_change(struct admin_ctx *ctx, int argc, char **argv,
                         const char *sql, const char *usage)
{
    const char *pos[1] = {0};
    sqlite3_stmt *st;
    size_t npos;

    if (admin_args(argc, argv, NULL, 0, pos, 1, 1, &npos, usage) != ADMIN_OK)
        return ADMIN_USAGE;
    if (admin_prepare(ctx, sql, &st) != 0)
        return ADMIN_FAIL;
    sqlite3_bind_text(st, 1, pos[0], -1, SQLITE_STATIC);
    if (admin_step_done(ctx, st, "changing member") != ADMIN_OK)
        return ADMIN_FAIL;
    if (sqlite3_changes(ctx->db) == 0)
        return admin_fail("no member %s", pos[0]);
    return ADMIN_OK;
}

static int member_del(struct admin_ctx *ctx, int argc, char **argv)
{
    /* Aliases go with the member (ON DELETE CASCADE). */
    return member_change(ctx, argc, argv,
                         "DELETE FROM member WHERE address = ?1",
                         "member del ADDRESS");
}

static int member_disable(struct admin_ctx *ctx, int argc, char **argv)
{
    return member_change(ctx, argc, argv,
                         "UPDATE member SET disabled = 1 WHERE address = ?1",
                         "member disable ADDRESS");
}

static int member_enable(struct admin_ctx *ctx, int argc, char **argv)
{
    return member_change(ctx, argc, argv,
                         "UPDATE member SET disabled = 0 WHERE address = ?1",
                         "member enable ADDRESS");
}

int cmd_member(struct admin_ctx *ctx, int argc, char **argv)
{
    static const struct admin_cmd cmds[] = {
        {"add", member_add},           {"passwd", member_passwd},
        {"list", member_list},         {"show", member_show},
        {"del", member_del},           {"disable", member_disable},
        {"enable", member_enable},     {"alias", cmd_member_alias},
        {"pgpkey", cmd_member_pgpkey}, {"reset", cmd_member_reset},
        {"token", cmd_member_token},   {"cert", cmd_member_cert},
    };

    return admin_dispatch(ctx, cmds, sizeof cmds / sizeof cmds[0], "member",
                          argc, argv);
}
