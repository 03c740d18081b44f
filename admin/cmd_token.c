/* cmd_token: `subgate member token add|list|del` (per-device submission
 * passwords) and `subgate tenant require-tokens` (tokens only, no account
 * password, for AUTH). A token is "sgt_<id>_<secret>": <id> is its row,
 * so that the server verifies one hash per AUTH, <secret> 24 random
 * characters. Only a passwd_hash of the whole token is stored; it is
 * printed once, by add. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "../common/limits.h"
#include "../common/passwd.h"
#include "admin.h"

#define TOKEN_HASH_MAX 512

/* 1..SG_MAX_TOKEN_LABEL of [A-Za-z0-9._-]. */
static int token_label_valid(const char *s)
{
    size_t n = strlen(s);

    return n >= 1 && n <= SG_MAX_TOKEN_LABEL &&
           strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                     "0123456789._-") == n;
}

/* ADMIN_OK if the member has no token labelled label, else ADMIN_FAIL. */
static int token_label_free(struct admin_ctx *ctx, long long mid,
                            const char *address, const char *label)
{
    sqlite3_stmt *st;
    int rc;

    if (admin_prepare(ctx,
                      "SELECT 1 FROM member_token WHERE member_id = ?1"
                      " AND label = ?2",
                      &st) != 0)
        return ADMIN_FAIL;
    sqlite3_bind_int64(st, 1, mid);
    sqlite3_bind_text(st, 2, label, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc == SQLITE_ROW)
        return admin_fail("%s already has a token %s", address, label);
    return rc == SQLITE_DONE ? ADMIN_OK : admin_db_fail(ctx, "finding token");
}

/* Inserts the row, then sets its hash: the token names its own row id. */
static int token_insert(struct admin_ctx *ctx, long long mid, const char *label,
                        char *token, size_t cap)
{
    char secret[SG_TOKEN_SECRET_LEN + 1], hash[TOKEN_HASH_MAX];
    sqlite3_stmt *st;
    long long id;
    int ret = ADMIN_FAIL;

    if (passwd_random(secret, sizeof secret, SG_TOKEN_SECRET_LEN) != 0)
        return admin_fail("no random bytes for a token");
    if (admin_prepare(ctx,
                      "INSERT INTO member_token(member_id, label, hash,"
                      " created) VALUES (?1, ?2, '', ?3)",
                      &st) != 0)
        goto out;
    sqlite3_bind_int64(st, 1, mid);
    sqlite3_bind_text(st, 2, label, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, (long long)time(NULL));
    if (admin_step_done(ctx, st, "adding token") != ADMIN_OK)
        goto out;
    id = sqlite3_last_insert_rowid(ctx->db);
    snprintf(token, cap, "sgt_%lld_%s", id, secret);
    if (passwd_hash(token, hash, sizeof hash) != 0) {
        ret = admin_fail("hashing the token failed");
        goto out;
    }
    if (admin_prepare(ctx, "UPDATE member_token SET hash = ?2 WHERE id = ?1",
                      &st) != 0)
        goto out;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_text(st, 2, hash, -1, SQLITE_STATIC);
    ret = admin_step_done(ctx, st, "storing token");
out:
    explicit_bzero(secret, sizeof secret);
    explicit_bzero(hash, sizeof hash);
    return ret;
}

static int token_add(struct admin_ctx *ctx, int argc, char **argv)
{
    static const char usage[] = "member token add ADDRESS --label LABEL";
    struct admin_opt opts[] = {{.name = "label", .has_arg = 1}};
    char token[SG_MAX_TOKEN + 1];
    const char *pos[1] = {0};
    long long mid;
    size_t npos;
    int ret;

    if (admin_args(argc, argv, opts, 1, pos, 1, 1, &npos, usage) != ADMIN_OK)
        return ADMIN_USAGE;
    if (!opts[0].set)
        return admin_usage(usage);
    if (!token_label_valid(opts[0].value))
        return admin_badarg("invalid label %s (1 to %d of A-Z a-z 0-9 . _ -)",
                            opts[0].value, SG_MAX_TOKEN_LABEL);
    if (admin_begin(ctx) != ADMIN_OK)
        return ADMIN_FAIL;
    ret = admin_member_id(ctx, pos[0], &mid);
    if (ret == ADMIN_OK)
        ret = token_label_free(ctx, mid, pos[0], opts[0].value);
    if (ret == ADMIN_OK)
        ret = token_insert(ctx, mid, opts[0].value, token, sizeof token);
    if (ret == ADMIN_OK)
        ret = admin_commit(ctx);
    else
        admin_rollback(ctx);
    if (ret == ADMIN_OK)
        printf("%s\n", token);
    explicit_bzero(token, sizeof token);
    return ret;
}

static int token_list(struct admin_ctx *ctx, int argc, char **argv)
{
    static const char usage[] = "member token list ADDRESS";
    char c[32], u[32];
    const char *pos[1] = {0};
    sqlite3_stmt *st;
    long long mid;
    size_t npos;
    int rc;

    if (admin_args(argc, argv, NULL, 0, pos, 1, 1, &npos, usage) != ADMIN_OK)
        return ADMIN_USAGE;
    if (admin_member_id(ctx, pos[0], &mid) != ADMIN_OK)
        return ADMIN_FAIL;
    if (admin_prepare(ctx,
                      "SELECT label, created, coalesce(last_used, 0),"
                      " coalesce(last_ip, '-') FROM member_token"
                      " WHERE member_id = ?1 ORDER BY label",
                      &st) != 0)
        return ADMIN_FAIL;
    sqlite3_bind_int64(st, 1, mid);
    printf("%-20s %-20s %-20s %s\n", "LABEL", "CREATED", "LAST USED",
           "LAST CLIENT");
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        printf("%-20s %-20s %-20s %s\n", sqlite3_column_text(st, 0),
               admin_iso_time(sqlite3_column_int64(st, 1), c, sizeof c),
               admin_iso_time(sqlite3_column_int64(st, 2), u, sizeof u),
               sqlite3_column_text(st, 3));
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? ADMIN_OK : admin_db_fail(ctx, "listing tokens");
}

static int token_del(struct admin_ctx *ctx, int argc, char **argv)
{
    static const struct admin_row_del del = {
        "member token del ADDRESS LABEL",
        "DELETE FROM member_token WHERE member_id = ?1 AND label = ?2",
        "deleting token",
        "token",
    };

    return admin_member_row_del(ctx, argc, argv, &del);
}

int cmd_member_token(struct admin_ctx *ctx, int argc, char **argv)
{
    static const struct admin_cmd cmds[] = {
        {"add", token_add},
        {"list", token_list},
        {"del", token_del},
    };

    return admin_dispatch(ctx, cmds, sizeof cmds / sizeof cmds[0],
                          "member token", argc, argv);
}

int cmd_tenant_require_tokens(struct admin_ctx *ctx, int argc, char **argv)
{
    static const char usage[] = "tenant require-tokens DOMAIN yes|no";
    const char *pos[2] = {0};
    sqlite3_stmt *st;
    long long tid;
    size_t npos;
    int on;

    if (admin_args(argc, argv, NULL, 0, pos, 2, 2, &npos, usage) != ADMIN_OK)
        return ADMIN_USAGE;
    if (strcmp(pos[1], "yes") != 0 && strcmp(pos[1], "no") != 0)
        return admin_usage(usage);
    on = strcmp(pos[1], "yes") == 0;
    tid = admin_tenant_id(ctx, pos[0]);
    if (tid < 0)
        return ADMIN_FAIL;
    if (tid == 0)
        return admin_fail("no tenant %s", pos[0]);
    if (admin_prepare(ctx,
                      "INSERT INTO tenant_auth_policy(tenant_id,"
                      " require_tokens) VALUES (?1, ?2) ON CONFLICT(tenant_id)"
                      " DO UPDATE SET require_tokens = ?2",
                      &st) != 0)
        return ADMIN_FAIL;
    sqlite3_bind_int64(st, 1, tid);
    sqlite3_bind_int(st, 2, on);
    return admin_step_done(ctx, st, "setting the AUTH policy");
}
