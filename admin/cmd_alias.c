/* cmd_alias: `subgate member alias add|del ADDRESS ALIAS`. An alias is an
 * address a member may send as beyond its primary one; its domain must
 * belong to the member's tenant, and no address belongs to two members. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "../common/limits.h"
#include "admin.h"

/* Checks that the alias may be given to member of tenant tid. */
static int alias_check(struct admin_ctx *ctx, const char *member, long long tid,
                       const char *alias, const char *domain)
{
    long long owner, n;
    int used;

    owner = admin_domain_tenant(ctx, domain);
    if (owner < 0)
        return ADMIN_FAIL;
    if (owner != tid)
        return admin_fail("domain %s of alias %s does not belong to the "
                          "tenant of %s",
                          domain, alias, member);
    used = admin_addr_in_use(ctx, alias);
    if (used != 0)
        return used < 0 ? ADMIN_FAIL
                        : admin_fail("address %s is already in use", alias);
    n = admin_query_int(ctx,
                        "SELECT count(*) FROM alias WHERE member_id ="
                        " (SELECT id FROM member WHERE address = ?1)",
                        member);
    if (n < 0)
        return ADMIN_FAIL;
    /* The primary address counts as one of SG_MAX_MEMBER_ADDRS. */
    if (n + 1 >= SG_MAX_MEMBER_ADDRS)
        return admin_fail("member %s already has %d addresses", member,
                          SG_MAX_MEMBER_ADDRS);
    return ADMIN_OK;
}

static int alias_insert(struct admin_ctx *ctx, const char *member,
                        const char *alias, const char *domain)
{
    sqlite3_stmt *st;
    long long mid, tid;
    int found;

    found = admin_member_find(ctx, member, &mid, &tid);
    if (found <= 0)
        return found < 0 ? ADMIN_FAIL : admin_fail("no member %s", member);
    if (alias_check(ctx, member, tid, alias, domain) != ADMIN_OK)
        return ADMIN_FAIL;
    if (admin_prepare(ctx,
                      "INSERT INTO alias(address, member_id, created)"
                      " VALUES (?1, ?2, ?3)",
                      &st) != 0)
        return ADMIN_FAIL;
    sqlite3_bind_text(st, 1, alias, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, mid);
    sqlite3_bind_int64(st, 3, (long long)time(NULL));
    return admin_step_done(ctx, st, "adding alias");
}

static int alias_add(struct admin_ctx *ctx, int argc, char **argv)
{
    char alias[SG_MAX_PATH + 1];
    const char *pos[2] = {0}, *domain;
    size_t npos;

    if (admin_args(argc, argv, NULL, 0, pos, 2, 2, &npos,
                   "member alias add ADDRESS ALIAS") != ADMIN_OK)
        return ADMIN_USAGE;
    if (!admin_addr_norm(pos[1], alias, &domain))
        return admin_fail("invalid address %s", pos[1]);
    if (admin_begin(ctx) != ADMIN_OK)
        return ADMIN_FAIL;
    if (alias_insert(ctx, pos[0], alias, domain) != ADMIN_OK) {
        admin_rollback(ctx);
        return ADMIN_FAIL;
    }
    return admin_commit(ctx);
}

static int alias_del(struct admin_ctx *ctx, int argc, char **argv)
{
    const char *pos[2] = {0};
    sqlite3_stmt *st;
    size_t npos;
    long long mid;
    int found;

    if (admin_args(argc, argv, NULL, 0, pos, 2, 2, &npos,
                   "member alias del ADDRESS ALIAS") != ADMIN_OK)
        return ADMIN_USAGE;
    found = admin_member_find(ctx, pos[0], &mid, NULL);
    if (found <= 0)
        return found < 0 ? ADMIN_FAIL : admin_fail("no member %s", pos[0]);
    if (admin_prepare(ctx,
                      "DELETE FROM alias WHERE address = ?1"
                      " AND member_id = ?2",
                      &st) != 0)
        return ADMIN_FAIL;
    sqlite3_bind_text(st, 1, pos[1], -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, mid);
    if (admin_step_done(ctx, st, "deleting alias") != ADMIN_OK)
        return ADMIN_FAIL;
    if (sqlite3_changes(ctx->db) == 0)
        return admin_fail("%s is not an alias of %s", pos[1], pos[0]);
    return ADMIN_OK;
}

int cmd_member_alias(struct admin_ctx *ctx, int argc, char **argv)
{
    static const struct admin_cmd cmds[] = {
        {"add", alias_add},
        {"del", alias_del},
    };

    return admin_dispatch(ctx, cmds, sizeof cmds / sizeof cmds[0],
                          "member alias", argc, argv);
}
