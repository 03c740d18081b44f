/* cmd_status: `subgate status` prints what this node holds, as
 * "key: value" lines: configuration and database paths, counts of
 * tenants, domains, members and keys by state, the queue length, and
 * how the gateway is doing: whether it runs, the queue's oldest message,
 * the queue runner's delivery counts (run_dir/qmgr.stats). */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../server/metrics.h"
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

/* The master's pid from run_dir/subgated.pid if that process is a
 * subgated, else 0. */
static long status_master_pid(const struct cfg *cfg)
{
    char path[4096], comm[64] = "";
    long pid = 0;
    FILE *f;

    if ((size_t)snprintf(path, sizeof path, "%s/subgated.pid", cfg->run_dir) >=
        sizeof path)
        return 0;
    f = fopen(path, "re");
    if (f == NULL)
        return 0;
    if (fscanf(f, "%ld", &pid) != 1 || pid <= 0)
        pid = 0;
    fclose(f);
    if (pid == 0 || (kill((pid_t)pid, 0) != 0 && errno != EPERM))
        return 0;
    /* A stale file may name a pid that another program has now. */
    snprintf(path, sizeof path, "/proc/%ld/comm", pid);
    f = fopen(path, "re");
    if (f == NULL)
        return 0;
    if (fgets(comm, sizeof comm, f) == NULL)
        comm[0] = '\0';
    fclose(f);
    return strcmp(comm, "subgated\n") == 0 ? pid : 0;
}

/* "gateway: running pid=N", the queue's age and held messages, and the
 * delivery counts. What cannot be read is shown as "-". */
static void status_gateway(const struct cfg *cfg)
{
    static const char *const words[] = {"sent", "deferred", "bounced",
                                        "expired"};
    uint64_t counter[METRIC_COUNT] = {0};
    struct metrics_snapshot sn;
    char path[4096];
    long pid = status_master_pid(cfg);

    if (pid > 0)
        printf("gateway: running pid=%ld\n", pid);
    else
        printf("gateway: not running\n");
    memset(&sn, 0, sizeof sn);
    if (metrics_queue_scan(cfg->queue_dir, (long long)time(NULL), &sn) == 0)
        printf("queue_held: %lld\nqueue_oldest: %llds\n", sn.queue_held,
               sn.queue_oldest);
    else
        printf("queue_held: -\nqueue_oldest: -\n");
    snprintf(path, sizeof path, "%s/%s", cfg->run_dir, METRICS_STATS_FILE);
    if (metrics_stats_read(path, counter) != 0) {
        printf("deliveries: -\n");
        return;
    }
    printf("deliveries:");
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        printf(" %s=%llu", words[i],
               (unsigned long long)counter[METRIC_DELIVERY_SENT + i]);
    printf("\n");
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
    status_gateway(ctx->cfg);
    return ADMIN_OK;
}
