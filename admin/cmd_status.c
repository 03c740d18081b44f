/* cmd_status: `subgate status` prints what this node holds, as
 * "key: value" lines: configuration and database paths, counts of
 * tenants, domains, members and keys by state, and the queue length. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "admin.h"

static const char *const status_states[] = {
    "pending", "published", "active", "retired", "revoked",
};

/* Files in queue_dir/active: committed messages waiting for delivery. -1
 * after printing an error. A missing directory counts as empty. */
static long long status_queue_len(const char *queue_dir)
{
    char path[4096];
    struct dirent *de;
    long long n = 0;
    DIR *d;

    if ((size_t)snprintf(path, sizeof path, "%s/active", queue_dir) >=
        sizeof path) {
        admin_fail("%s: path too long", queue_dir);
        return -1;
    }
    d = opendir(path);
    if (d == NULL) {
        if (errno == ENOENT)
            return 0;
        admin_fail("%s: %s", path, strerror(errno));
        return -1;
    }
    while ((de = readdir(d)) != NULL)
        if (de->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

/* Prints "keys: pending=N published=N ...". */
static int status_keys(struct admin_ctx *ctx)
{
    long long n;

    printf("keys:");
    for (size_t i = 0; i < sizeof status_states / sizeof status_states[0];
         i++) {
        n = admin_query_int(ctx,
                            "SELECT count(*) FROM dkim_key WHERE state = ?1",
                            status_states[i]);
        if (n < 0)
            return ADMIN_FAIL;
        printf(" %s=%lld", status_states[i], n);
    }
    printf("\n");
    return ADMIN_OK;
}

int cmd_status(struct admin_ctx *ctx, int argc, char **argv)
{
    static const struct {
        const char *name;
        const char *sql;
    } counts[] = {
        {"tenants", "SELECT count(*) FROM tenant"},
        {"domains", "SELECT count(*) FROM domain"},
        {"members", "SELECT count(*) FROM member"},
        {"members_disabled", "SELECT count(*) FROM member WHERE disabled"},
        {"aliases", "SELECT count(*) FROM alias"},
    };
    const char *pos[1] = {0};
    size_t npos;
    long long n;

    if (admin_args(argc, argv, NULL, 0, pos, 0, 0, &npos, "status") != ADMIN_OK)
        return ADMIN_USAGE;
    printf("config: %s\n", ctx->cfg_path);
    printf("node: %s\n", ctx->cfg->node_name);
    printf("database: %s\n", ctx->cfg->database);
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        n = admin_query_int(ctx, counts[i].sql, NULL);
        if (n < 0)
            return ADMIN_FAIL;
        printf("%s: %lld\n", counts[i].name, n);
    }
    if (status_keys(ctx) != ADMIN_OK)
        return ADMIN_FAIL;
    n = status_queue_len(ctx->cfg->queue_dir);
    if (n < 0)
        return ADMIN_FAIL;
    printf("queue: %lld\n", n);
    return ADMIN_OK;
}
