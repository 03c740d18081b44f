/* cmd_tenant: `subgate tenant add|list|show|del` and `subgate domain
 * add|del`. A tenant is named after its primary domain and owns one or
 * more domains; members and DKIM keys hang off those. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "../common/limits.h"
#include "admin.h"

#define TENANT_ADD_USAGE                                                       \
    "tenant add DOMAIN [--sender-policy reject|rewrite] "                      \
    "[--from-policy reject|rewrite] [--sign rsa|rsa,ed25519]"

static int tenant_policy_ok(const struct admin_opt *o)
{
    return !o->set || strcmp(o->value, "reject") == 0 ||
           strcmp(o->value, "rewrite") == 0;
}

/* Prints "no tenant NAME", with the owner when NAME is a secondary
 * domain of some tenant. Returns ADMIN_FAIL. */
static int tenant_missing(struct admin_ctx *ctx, const char *name)
{
    sqlite3_stmt *st;
    int ret;

    if (admin_prepare(ctx,
                      "SELECT t.name FROM domain d"
                      " JOIN tenant t ON t.id = d.tenant_id"
                      " WHERE d.name = ?1",
                      &st) != 0)
        return ADMIN_FAIL;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW)
        ret = admin_fail("no tenant %s (domain %s belongs to tenant %s)", name,
                         name, sqlite3_column_text(st, 0));
    else
        ret = admin_fail("no tenant %s", name);
    sqlite3_finalize(st);
    return ret;
}

/* Prints which tenant already owns domain. Returns ADMIN_FAIL. */
static int domain_taken(struct admin_ctx *ctx, const char *domain)
{
    sqlite3_stmt *st;
    int ret;

    if (admin_prepare(ctx,
                      "SELECT t.name FROM domain d"
                      " JOIN tenant t ON t.id = d.tenant_id"
                      " WHERE d.name = ?1",
                      &st) != 0)
        return ADMIN_FAIL;
    sqlite3_bind_text(st, 1, domain, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_ROW)
        ret = admin_fail("domain %s already exists", domain);
    else if (sqlite3_stricmp((const char *)sqlite3_column_text(st, 0),
                             domain) == 0)
        ret = admin_fail("tenant %s already exists", domain);
    else
        ret = admin_fail("domain %s already belongs to tenant %s", domain,
                         sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return ret;
}

/* Inserts the tenant and its primary domain (inside a transaction). */
static int tenant_insert(struct admin_ctx *ctx, const char *name,
                         const char *sender, const char *from, const char *sign)
{
    sqlite3_stmt *st;
    long long now = (long long)time(NULL), owner;

    owner = admin_domain_tenant(ctx, name);
    if (owner < 0)
        return ADMIN_FAIL;
    if (owner > 0)
        return domain_taken(ctx, name);
    if (admin_prepare(ctx,
                      "INSERT INTO tenant(name, sender_policy, from_policy,"
                      " sign_algos, created) VALUES (?1, ?2, ?3, ?4, ?5)",
                      &st) != 0)
        return ADMIN_FAIL;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, sender, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, from, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, sign, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, now);
    if (admin_step_done(ctx, st, "adding tenant") != ADMIN_OK)
        return ADMIN_FAIL;
    if (admin_prepare(ctx,
                      "INSERT INTO domain(name, tenant_id, created)"
                      " VALUES (?1, ?2, ?3)",
                      &st) != 0)
        return ADMIN_FAIL;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, sqlite3_last_insert_rowid(ctx->db));
    sqlite3_bind_int64(st, 3, now);
    return admin_step_done(ctx, st, "adding domain");
}

static int tenant_add(struct admin_ctx *ctx, int argc, char **argv)
{
    struct admin_opt opts[] = {
        {.name = "sender-policy", .has_arg = 1},
        {.name = "from-policy", .has_arg = 1},
        {.name = "sign", .has_arg = 1},
    };
    const char *pos[1] = {0};
    char name[SG_MAX_DOMAIN + 1];
    size_t npos;

    if (admin_args(argc, argv, opts, 3, pos, 1, 1, &npos, TENANT_ADD_USAGE) !=
        ADMIN_OK)
        return ADMIN_USAGE;
    if (!tenant_policy_ok(&opts[0]))
        return admin_badarg("--sender-policy must be reject or rewrite");
    if (!tenant_policy_ok(&opts[1]))
        return admin_badarg("--from-policy must be reject or rewrite");
    if (opts[2].set && strcmp(opts[2].value, "rsa") != 0 &&
        strcmp(opts[2].value, "rsa,ed25519") != 0)
        return admin_badarg("--sign must be rsa or rsa,ed25519");
    if (!admin_domain_norm(pos[0], name))
        return admin_fail("invalid domain %s", pos[0]);
    if (admin_begin(ctx) != ADMIN_OK)
        return ADMIN_FAIL;
    if (tenant_insert(ctx, name, opts[0].set ? opts[0].value : "reject",
                      opts[1].set ? opts[1].value : "reject",
                      opts[2].set ? opts[2].value : "rsa,ed25519") !=
        ADMIN_OK) {
        admin_rollback(ctx);
        return ADMIN_FAIL;
    }
    return admin_commit(ctx);
}

static int tenant_list(struct admin_ctx *ctx, int argc, char **argv)
{
    sqlite3_stmt *st;
    const char *pos[1] = {0};
    size_t npos;
    int rc;

    if (admin_args(argc, argv, NULL, 0, pos, 0, 0, &npos, "tenant list") !=
        ADMIN_OK)
        return ADMIN_USAGE;
    if (admin_prepare(
            ctx,
            "SELECT t.name, t.sender_policy, t.from_policy, t.sign_algos,"
            " (SELECT count(*) FROM domain d WHERE d.tenant_id = t.id),"
            " (SELECT count(*) FROM member m WHERE m.tenant_id = t.id)"
            " FROM tenant t ORDER BY t.name",
            &st) != 0)
        return ADMIN_FAIL;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        printf("%s\tsender_policy=%s\tfrom_policy=%s\tsign=%s\tdomains=%lld"
               "\tmembers=%lld\n",
               sqlite3_column_text(st, 0), sqlite3_column_text(st, 1),
               sqlite3_column_text(st, 2), sqlite3_column_text(st, 3),
               sqlite3_column_int64(st, 4), sqlite3_column_int64(st, 5));
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return admin_db_fail(ctx, "listing tenants");
    return ADMIN_OK;
}

/* Prints "domains: a b c" for tenant id. */
static int tenant_show_domains(struct admin_ctx *ctx, long long id)
{
    return admin_print_names(ctx, "domains",
                             "SELECT name FROM domain WHERE tenant_id = ?1"
                             " ORDER BY name",
                             id, "listing domains");
}

static int tenant_show(struct admin_ctx *ctx, int argc, char **argv)
{
    sqlite3_stmt *st;
    const char *pos[1] = {0};
    char when[32];
    size_t npos;
    long long id;
    int rc;

    if (admin_args(argc, argv, NULL, 0, pos, 1, 1, &npos,
                   "tenant show DOMAIN") != ADMIN_OK)
        return ADMIN_USAGE;
    if (admin_prepare(
            ctx,
            "SELECT t.id, t.name, t.sender_policy, t.from_policy,"
            " t.sign_algos, t.created,"
            " (SELECT count(*) FROM member m WHERE m.tenant_id = t.id)"
            " FROM tenant t WHERE t.name = ?1",
            &st) != 0)
        return ADMIN_FAIL;
    sqlite3_bind_text(st, 1, pos[0], -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE)
            return admin_db_fail(ctx, "reading tenant");
        return tenant_missing(ctx, pos[0]);
    }
    id = sqlite3_column_int64(st, 0);
    printf("name: %s\nsender_policy: %s\nfrom_policy: %s\nsign: %s\n",
           sqlite3_column_text(st, 1), sqlite3_column_text(st, 2),
           sqlite3_column_text(st, 3), sqlite3_column_text(st, 4));
    if (tenant_show_domains(ctx, id) != ADMIN_OK) {
        sqlite3_finalize(st);
        return ADMIN_FAIL;
    }
    printf("members: %lld\ncreated: %s\n", sqlite3_column_int64(st, 6),
           admin_iso_time(sqlite3_column_int64(st, 5), when, sizeof when));
    sqlite3_finalize(st);
    if (tenant_notify_show(ctx, id) != ADMIN_OK)
        return ADMIN_FAIL;
    return tenant_ldap_show(ctx, id);
}

static int tenant_del(struct admin_ctx *ctx, int argc, char **argv)
{
    struct admin_opt opts[] = {{.name = "force"}};
    sqlite3_stmt *st;
    const char *pos[1] = {0};
    size_t npos;
    long long id, members;

    if (admin_args(argc, argv, opts, 1, pos, 1, 1, &npos,
                   "tenant del DOMAIN [--force]") != ADMIN_OK)
        return ADMIN_USAGE;
    if (admin_begin(ctx) != ADMIN_OK)
        return ADMIN_FAIL;
    id = admin_tenant_id(ctx, pos[0]);
    if (id <= 0) {
        admin_rollback(ctx);
        return id < 0 ? ADMIN_FAIL : tenant_missing(ctx, pos[0]);
    }
    members = admin_query_int(ctx,
                              "SELECT count(*) FROM member m"
                              " JOIN tenant t ON t.id = m.tenant_id"
                              " WHERE t.name = ?1",
                              pos[0]);
    if (members < 0) {
        admin_rollback(ctx);
        return ADMIN_FAIL;
    }
    if (members > 0 && !opts[0].set) {
        admin_rollback(ctx);
        return admin_fail("tenant %s has %lld members (--force deletes "
                          "them too)",
                          pos[0], members);
    }
    /* Domains, members, aliases and keys go with it (ON DELETE CASCADE). */
    if (admin_prepare(ctx, "DELETE FROM tenant WHERE id = ?1", &st) != 0) {
        admin_rollback(ctx);
        return ADMIN_FAIL;
    }
    sqlite3_bind_int64(st, 1, id);
    if (admin_step_done(ctx, st, "deleting tenant") != ADMIN_OK) {
        admin_rollback(ctx);
        return ADMIN_FAIL;
    }
    return admin_commit(ctx);
}

int cmd_tenant(struct admin_ctx *ctx, int argc, char **argv)
{
    static const struct admin_cmd cmds[] = {
        {"add", tenant_add},
        {"list", tenant_list},
        {"show", tenant_show},
        {"del", tenant_del},
        {"ldap", cmd_tenant_ldap},
        {"reset", cmd_tenant_reset},
        {"require-tokens", cmd_tenant_require_tokens},
        {"notify", cmd_tenant_notify},
    };

    return admin_dispatch(ctx, cmds, sizeof cmds / sizeof cmds[0], "tenant",
                          argc, argv);
}

/* Starts `domain add|del TENANT DOMAIN`: parses argv into pos, opens a
 * transaction, checks both names and fills *tid_r, the normalised domain
 * and *owner_r (the tenant that has it now, 0 none). ADMIN_OK inside the
 * transaction; ADMIN_USAGE, or ADMIN_FAIL (printed, rolled back). */
static int domain_begin(struct admin_ctx *ctx, int argc, char **argv,
                        const char *usage, const char **pos, long long *tid_r,
                        char *name, long long *owner_r)
{
    size_t npos;

    if (admin_args(argc, argv, NULL, 0, pos, 2, 2, &npos, usage) != ADMIN_OK)
        return ADMIN_USAGE;
    if (admin_begin(ctx) != ADMIN_OK)
        return ADMIN_FAIL;
    if (!admin_domain_norm(pos[1], name)) {
        admin_fail("invalid domain %s", pos[1]);
        goto fail;
    }
    *tid_r = admin_tenant_id(ctx, pos[0]);
    if (*tid_r < 0)
        goto fail;
    if (*tid_r == 0) {
        tenant_missing(ctx, pos[0]);
        goto fail;
    }
    *owner_r = admin_domain_tenant(ctx, name);
    if (*owner_r < 0)
        goto fail;
    return ADMIN_OK;
fail:
    admin_rollback(ctx);
    return ADMIN_FAIL;
}

static int domain_add(struct admin_ctx *ctx, int argc, char **argv)
{
    sqlite3_stmt *st;
    const char *pos[2] = {0};
    char name[SG_MAX_DOMAIN + 1];
    long long tid = 0, owner = 0;
    int ret;

    ret = domain_begin(ctx, argc, argv, "domain add TENANT DOMAIN", pos, &tid,
                       name, &owner);
    if (ret != ADMIN_OK)
        return ret;
    if (owner > 0) {
        domain_taken(ctx, name);
        goto fail;
    }
    if (admin_prepare(ctx,
                      "INSERT INTO domain(name, tenant_id, created)"
                      " VALUES (?1, ?2, ?3)",
                      &st) != 0)
        goto fail;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, tid);
    sqlite3_bind_int64(st, 3, (long long)time(NULL));
    if (admin_step_done(ctx, st, "adding domain") != ADMIN_OK)
        goto fail;
    return admin_commit(ctx);
fail:
    admin_rollback(ctx);
    return ADMIN_FAIL;
}

/* Refuses to delete a domain that a member address or alias uses: those
 * members would keep addresses their tenant no longer owns. */
static int domain_in_use(struct admin_ctx *ctx, const char *name)
{
    long long n;

    n = admin_query_int(ctx,
                        "SELECT (SELECT count(*) FROM member"
                        "  WHERE address LIKE '%@' || ?1)"
                        " + (SELECT count(*) FROM alias"
                        "  WHERE address LIKE '%@' || ?1)",
                        name);
    if (n < 0)
        return ADMIN_FAIL;
    if (n > 0)
        return admin_fail("domain %s is used by %lld member addresses or "
                          "aliases; delete those first",
                          name, n);
    return ADMIN_OK;
}

static int domain_del(struct admin_ctx *ctx, int argc, char **argv)
{
    sqlite3_stmt *st;
    const char *pos[2] = {0};
    char name[SG_MAX_DOMAIN + 1];
    long long tid = 0, owner = 0;
    int ret;

    ret = domain_begin(ctx, argc, argv, "domain del TENANT DOMAIN", pos, &tid,
                       name, &owner);
    if (ret != ADMIN_OK)
        return ret;
    if (owner != tid) {
        admin_fail("domain %s does not belong to tenant %s", name, pos[0]);
        goto fail;
    }
    owner = admin_tenant_id(ctx, name);
    if (owner < 0)
        goto fail;
    if (owner == tid) {
        admin_fail("domain %s is the tenant's primary domain; use tenant "
                   "del",
                   name);
        goto fail;
    }
    if (domain_in_use(ctx, name) != ADMIN_OK)
        goto fail;
    /* Its DKIM keys go with it (ON DELETE CASCADE). */
    if (admin_prepare(ctx, "DELETE FROM domain WHERE name = ?1", &st) != 0)
        goto fail;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    if (admin_step_done(ctx, st, "deleting domain") != ADMIN_OK)
        goto fail;
    return admin_commit(ctx);
fail:
    admin_rollback(ctx);
    return ADMIN_FAIL;
}

int cmd_domain(struct admin_ctx *ctx, int argc, char **argv)
{
    static const struct admin_cmd cmds[] = {
        {"add", domain_add},
        {"del", domain_del},
    };

    return admin_dispatch(ctx, cmds, sizeof cmds / sizeof cmds[0], "domain",
                          argc, argv);
}
