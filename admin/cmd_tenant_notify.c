/* cmd_tenant_notify: `subgate tenant notify DOMAIN [--admin ADDRESS|none]`,
 * the tenant's administrator address (table tenant_notify), to which
 * subgated mails a report when a member or the tenant reaches an
 * outbound budget (docs/security.md, "Abuse limits"); and its line in
 * `tenant show`. */
#include <stdio.h>
#include <string.h>

#include "../common/db.h"
#include "../common/limits.h"
#include "admin.h"

#define NOTIFY_USAGE "tenant notify DOMAIN [--admin ADDRESS|none]"

/* Applies the schema, so that a database made before the table existed
 * gets it (db_migrate is idempotent). */
static int notify_schema(struct admin_ctx *ctx)
{
    char err[512];

    if (db_migrate(ctx->db, err, sizeof err) != 0)
        return admin_fail("%s", err);
    return ADMIN_OK;
}

int tenant_notify_show(struct admin_ctx *ctx, long long tenant_id)
{
    sqlite3_stmt *st;
    long long have;
    int rc;

    /* `tenant show` does not change the database: one made before the
     * table existed simply has no address yet. */
    have = admin_query_int(ctx,
                           "SELECT count(*) FROM sqlite_master"
                           " WHERE type = 'table' AND name = ?1",
                           "tenant_notify");
    if (have < 0)
        return ADMIN_FAIL;
    if (have == 0) {
        printf("admin_address: -\n");
        return ADMIN_OK;
    }
    if (admin_prepare(ctx,
                      "SELECT admin_address FROM tenant_notify"
                      " WHERE tenant_id = ?1",
                      &st) != 0)
        return ADMIN_FAIL;
    sqlite3_bind_int64(st, 1, tenant_id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        printf("admin_address: %s\n", sqlite3_column_text(st, 0));
    else if (rc == SQLITE_DONE)
        printf("admin_address: -\n");
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return admin_db_fail(ctx, "reading the administrator address");
    return ADMIN_OK;
}

/* Stores value as the administrator address of tenant tid, or with
 * "none" removes it. Any domain will do: the administrator need not
 * have a mailbox in the tenant. */
static int notify_set(struct admin_ctx *ctx, long long tid, const char *value)
{
    char addr[SG_MAX_PATH + 1];
    const char *domain;
    sqlite3_stmt *st;

    if (strcmp(value, "none") == 0) {
        if (admin_prepare(ctx, "DELETE FROM tenant_notify WHERE tenant_id = ?1",
                          &st) != 0)
            return ADMIN_FAIL;
        sqlite3_bind_int64(st, 1, tid);
        return admin_step_done(ctx, st, "removing the administrator address");
    }
    if (!admin_addr_norm(value, addr, &domain))
        return admin_fail("invalid address %s", value);
    if (admin_prepare(ctx,
                      "INSERT INTO tenant_notify(tenant_id, admin_address)"
                      " VALUES (?1, ?2) ON CONFLICT(tenant_id) DO UPDATE"
                      " SET admin_address = excluded.admin_address",
                      &st) != 0)
        return ADMIN_FAIL;
    sqlite3_bind_int64(st, 1, tid);
    sqlite3_bind_text(st, 2, addr, -1, SQLITE_STATIC);
    return admin_step_done(ctx, st, "setting the administrator address");
}

int cmd_tenant_notify(struct admin_ctx *ctx, int argc, char **argv)
{
    struct admin_opt opts[] = {{.name = "admin", .has_arg = 1}};
    const char *pos[1] = {0};
    long long tid;
    size_t npos;

    if (admin_args(argc, argv, opts, 1, pos, 1, 1, &npos, NOTIFY_USAGE) !=
        ADMIN_OK)
        return ADMIN_USAGE;
    if (notify_schema(ctx) != ADMIN_OK)
        return ADMIN_FAIL;
    tid = admin_tenant_id(ctx, pos[0]);
    if (tid <= 0)
        return tid < 0 ? ADMIN_FAIL : admin_fail("no tenant %s", pos[0]);
    if (!opts[0].set)
        return tenant_notify_show(ctx, tid);
    return notify_set(ctx, tid, opts[0].value);
}
