/* cmd_queue: `subgate queue list|show|flush|delete|hold|release`. Safe
 * while subgated runs: every change is one rename or unlink of a queue
 * file (queue.h), so the queue runner either has the file or does not,
 * and a delivery in progress notices at its end that its file was taken.
 * Output formats are documented in docs/queue.md and docs/admin.md. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/limits.h"
#include "../common/xalloc.h"
#include "../server/queue.h"
#include "admin.h"

/* Slack beyond max_message_size for what a queue file may hold besides
 * the message (as the queue runner allows). */
#define QUEUE_CMD_SLACK (1024 * 1024)

/* One queue file found by a listing. */
struct qc_item {
    char id[QUEUE_ID_LEN + 1];
    enum queue_where w;
};

static int qc_cmp(const void *a, const void *b)
{
    return strcmp(((const struct qc_item *)a)->id,
                  ((const struct qc_item *)b)->id);
}

/* Adds the ids in <w> to *items. ADMIN_OK or ADMIN_FAIL (printed). */
static int qc_scan(struct admin_ctx *ctx, enum queue_where w,
                   struct qc_item **items, size_t *n, size_t *cap)
{
    char path[4096];
    struct dirent *de;
    DIR *d;

    if ((size_t)snprintf(path, sizeof path, "%s/%s", ctx->cfg->queue_dir,
                         queue_dir_name(w)) >= sizeof path)
        return admin_fail("%s: path too long", ctx->cfg->queue_dir);
    d = opendir(path);
    if (d == NULL) {
        if (errno == ENOENT)
            return ADMIN_OK;
        return admin_fail("%s: %s", path, strerror(errno));
    }
    while ((de = readdir(d)) != NULL) {
        if (!queue_id_valid(de->d_name))
            continue;
        if (*n == *cap) {
            *cap = *cap ? *cap * 2 : 64;
            *items = xrealloc(*items, *cap * sizeof(**items));
        }
        memcpy((*items)[*n].id, de->d_name, QUEUE_ID_LEN + 1);
        (*items)[*n].w = w;
        (*n)++;
    }
    closedir(d);
    return ADMIN_OK;
}

/* Every queue file, sorted by id (arrival), each id once. */
static int qc_all(struct admin_ctx *ctx, struct qc_item **items_r, size_t *n_r)
{
    static const enum queue_where ws[] = {QUEUE_ACTIVE, QUEUE_BUSY, QUEUE_HOLD};
    struct qc_item *items = NULL;
    size_t n = 0, cap = 0, k = 0;

    for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++) {
        if (qc_scan(ctx, ws[i], &items, &n, &cap) != ADMIN_OK) {
            free(items);
            return ADMIN_FAIL;
        }
    }
    if (n > 0)
        qsort(items, n, sizeof(*items), qc_cmp);
    /* A file that moved while the directories were read shows twice. */
    for (size_t i = 0; i < n; i++) {
        if (k == 0 || strcmp(items[k - 1].id, items[i].id) != 0)
            items[k++] = items[i];
    }
    *items_r = items;
    *n_r = k;
    return ADMIN_OK;
}

static const char *qc_state(enum queue_where w, const struct queue_env *env)
{
    if (w == QUEUE_HOLD)
        return "hold";
    if (w == QUEUE_ACTIVE && env->next > (long long)time(NULL))
        return "deferred";
    return "active";
}

/* Reads the envelope of id wherever it is now. 1 read, 0 gone, -1
 * corrupt (*why_r), -2 other error (printed). */
static int qc_env(struct admin_ctx *ctx, const char *id, enum queue_where *w,
                  struct queue_env *env, long long *size_r, const char **why_r)
{
    for (int tries = 0; tries < 3; tries++) {
        int rc =
            queue_read_env(ctx->cfg->queue_dir, *w, id, env, size_r, why_r);
        if (rc == 0)
            return 1;
        if (rc == -EINVAL)
            return -1;
        if (rc != -ENOENT) {
            admin_fail("%s: %s", id, strerror(-rc));
            return -2;
        }
        /* Moved meanwhile (a delivery began or ended). */
        rc = queue_locate(ctx->cfg->queue_dir, id, w);
        if (rc <= 0)
            return 0;
    }
    return 0;
}

/* `queue list`: one line per message, tab-separated. */
static int qc_list(struct admin_ctx *ctx, int argc, char **argv)
{
    const char *pos[1];
    struct qc_item *items = NULL;
    size_t npos, n = 0;
    int ret = ADMIN_OK;

    if (admin_args(argc, argv, NULL, 0, pos, 0, 0, &npos, "queue list") !=
        ADMIN_OK)
        return ADMIN_USAGE;
    if (qc_all(ctx, &items, &n) != ADMIN_OK)
        return ADMIN_FAIL;
    for (size_t i = 0; i < n && ret == ADMIN_OK; i++) {
        struct queue_env env;
        const char *why = NULL;
        long long size = 0;
        char t1[32], t2[32];
        int rc = qc_env(ctx, items[i].id, &items[i].w, &env, &size, &why);

        if (rc == 0)
            continue;
        if (rc == -2) {
            ret = ADMIN_FAIL;
            break;
        }
        if (rc < 0) {
            printf("%s\t-\t-\t-\tcorrupt\t-\t-\t-\n", items[i].id);
            continue;
        }
        printf("%s\t%s\t%lld\t%s\t%s\t%u\t%s\t%zu\n", env.id,
               admin_iso_time(env.time, t1, sizeof t1), size,
               env.sender[0] ? env.sender : "<>", qc_state(items[i].w, &env),
               env.attempts, admin_iso_time(env.next, t2, sizeof t2),
               env.nrcpt);
        queue_env_clear(&env);
    }
    free(items);
    return ret;
}

/* Checks a queue id argument. */
static int qc_id_arg(const char *id)
{
    if (queue_id_valid(id))
        return ADMIN_OK;
    return admin_badarg("%s is not a queue id (12 characters 0-9A-Z)", id);
}

/* Prints the header section of the message, LF line ends. */
static void qc_headers(const char *msg, size_t len)
{
    size_t pos = 0;

    while (pos < len) {
        const char *nl = memchr(msg + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - msg) : len;
        size_t n = end - pos;

        if (n > 0 && msg[end - 1] == '\r')
            n--;
        if (n == 0)
            break;
        fwrite(msg + pos, 1, n, stdout);
        fputc('\n', stdout);
        pos = end + 1;
    }
}

/* `queue show ID`: the envelope as "key: value" lines, an empty line,
 * the header section of the message. */
static int qc_show(struct admin_ctx *ctx, int argc, char **argv)
{
    const char *pos[1], *why = NULL;
    size_t npos, len = 0, off = 0;
    size_t max =
        ctx->cfg->max_message_size + SG_MAX_QUEUE_ENVELOPE + QUEUE_CMD_SLACK;
    struct queue_env env;
    enum queue_where w;
    char t[32], *buf = NULL;
    int rc = 0;

    if (admin_args(argc, argv, NULL, 0, pos, 1, 1, &npos, "queue show ID") !=
            ADMIN_OK ||
        qc_id_arg(pos[0]) != ADMIN_OK)
        return ADMIN_USAGE;
    /* The file may move between active/ and busy/ while we look. */
    for (int tries = 0; tries < 3; tries++) {
        rc = queue_locate(ctx->cfg->queue_dir, pos[0], &w);
        if (rc <= 0) {
            rc = rc == 0 ? -ENOENT : rc;
            break;
        }
        rc = queue_read(ctx->cfg->queue_dir, w, pos[0], max, &buf, &len);
        if (rc != -ENOENT)
            break;
    }
    if (rc == -ENOENT)
        return admin_fail("no message %s in the queue", pos[0]);
    if (rc < 0)
        return admin_fail("%s: %s", pos[0], strerror(-rc));
    if (queue_env_parse(buf, len, &env, &off, &why) < 0) {
        free(buf);
        return admin_fail("%s: corrupt queue file (%s)", pos[0], why);
    }
    printf("id: %s\nstate: %s\narrival: %s\nsize: %zu\n", env.id,
           qc_state(w, &env), admin_iso_time(env.time, t, sizeof t), len - off);
    printf("session: %s\nmember: %s\nsender: %s\nattempts: %u\n",
           env.session[0] ? env.session : "-", env.member[0] ? env.member : "-",
           env.sender[0] ? env.sender : "<>", env.attempts);
    printf("next: %s\n", admin_iso_time(env.next, t, sizeof t));
    if (env.sign[0] != '\0')
        printf("sign: %s\n", env.sign);
    printf("warned: %s\n", env.warned ? "yes" : "no");
    for (size_t i = 0; i < env.nrcpt; i++)
        printf("rcpt: %s\n", env.rcpt[i]);
    printf("\n");
    qc_headers(buf + off, len - off);
    queue_env_clear(&env);
    free(buf);
    return ADMIN_OK;
}

/* The one-line error for a failed change of id. */
static int qc_fail(const char *id, int rc, const char *what)
{
    switch (rc) {
    case -ENOENT:
        return admin_fail("no message %s %s", id, what);
    case -EBUSY:
        return admin_fail("%s is being delivered; try again when the "
                          "attempt is over",
                          id);
    case -EPERM:
        return admin_fail("%s is on hold (subgate queue release %s)", id, id);
    case -EEXIST:
        return admin_fail("%s is already in the queue it should go to", id);
    default:
        return admin_fail("%s: %s", id, strerror(-rc));
    }
}

/* `queue flush [ID]`: due now, for the running queue runner. */
static int qc_flush(struct admin_ctx *ctx, int argc, char **argv)
{
    const char *pos[1];
    struct qc_item *items = NULL;
    size_t npos, n = 0, cap = 0;
    int ret = ADMIN_OK;

    if (admin_args(argc, argv, NULL, 0, pos, 0, 1, &npos, "queue flush [ID]") !=
            ADMIN_OK ||
        (npos == 1 && qc_id_arg(pos[0]) != ADMIN_OK))
        return ADMIN_USAGE;
    if (npos == 1) {
        int rc = queue_flush(ctx->cfg->queue_dir, pos[0]);
        return rc < 0 ? qc_fail(pos[0], rc, "in the queue") : ADMIN_OK;
    }
    if (qc_scan(ctx, QUEUE_ACTIVE, &items, &n, &cap) != ADMIN_OK)
        return ADMIN_FAIL;
    for (size_t i = 0; i < n; i++) {
        int rc = queue_flush(ctx->cfg->queue_dir, items[i].id);
        /* Gone or held meanwhile: nothing to flush. */
        if (rc < 0 && rc != -ENOENT && rc != -EPERM) {
            ret = qc_fail(items[i].id, rc, "in the queue");
            break;
        }
    }
    free(items);
    return ret;
}

/* `queue delete ID|--all`. */
static int qc_delete(struct admin_ctx *ctx, int argc, char **argv)
{
    struct admin_opt opts[] = {{"all", 0, 0, NULL}};
    const char *pos[1];
    struct qc_item *items = NULL;
    size_t npos, n = 0, deleted = 0;
    int rc;

    if (admin_args(argc, argv, opts, 1, pos, 0, 1, &npos,
                   "queue delete ID|--all") != ADMIN_OK)
        return ADMIN_USAGE;
    if (opts[0].set == (npos == 1))
        return admin_usage("queue delete ID|--all");
    if (npos == 1) {
        if (qc_id_arg(pos[0]) != ADMIN_OK)
            return ADMIN_USAGE;
        rc = queue_delete(ctx->cfg->queue_dir, pos[0]);
        return rc < 0 ? qc_fail(pos[0], rc, "in the queue") : ADMIN_OK;
    }
    if (qc_all(ctx, &items, &n) != ADMIN_OK)
        return ADMIN_FAIL;
    for (size_t i = 0; i < n; i++) {
        rc = queue_delete(ctx->cfg->queue_dir, items[i].id);
        if (rc == 0)
            deleted++;
        else if (rc != -ENOENT) {
            int ret = qc_fail(items[i].id, rc, "in the queue");
            free(items);
            return ret;
        }
    }
    free(items);
    printf("%zu\n", deleted);
    return ADMIN_OK;
}

static int qc_hold(struct admin_ctx *ctx, int argc, char **argv)
{
    const char *pos[1];
    size_t npos;
    int rc;

    if (admin_args(argc, argv, NULL, 0, pos, 1, 1, &npos, "queue hold ID") !=
            ADMIN_OK ||
        qc_id_arg(pos[0]) != ADMIN_OK)
        return ADMIN_USAGE;
    rc = queue_hold(ctx->cfg->queue_dir, pos[0]);
    return rc < 0 ? qc_fail(pos[0], rc, "in the queue") : ADMIN_OK;
}

static int qc_release(struct admin_ctx *ctx, int argc, char **argv)
{
    const char *pos[1];
    size_t npos;
    int rc;

    if (admin_args(argc, argv, NULL, 0, pos, 1, 1, &npos, "queue release ID") !=
            ADMIN_OK ||
        qc_id_arg(pos[0]) != ADMIN_OK)
        return ADMIN_USAGE;
    rc = queue_release(ctx->cfg->queue_dir, pos[0]);
    if (rc == -ENOENT) {
        enum queue_where w;
        if (queue_locate(ctx->cfg->queue_dir, pos[0], &w) > 0)
            return admin_fail("%s is not on hold", pos[0]);
    }
    return rc < 0 ? qc_fail(pos[0], rc, "in the queue") : ADMIN_OK;
}

int cmd_queue(struct admin_ctx *ctx, int argc, char **argv)
{
    static const struct admin_cmd cmds[] = {
        {"list", qc_list},     {"show", qc_show}, {"flush", qc_flush},
        {"delete", qc_delete}, {"hold", qc_hold}, {"release", qc_release},
    };

    return admin_dispatch(ctx, cmds, sizeof cmds / sizeof cmds[0], "queue",
                          argc, argv);
}
