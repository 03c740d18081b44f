/* cmd_init: `subgate init` creates the state directory, the database with
 * its schema, the queue, key and run directories. Running it again only
 * creates what is missing and applies pending schema migrations. */
#include <stdio.h>
#include <string.h>

#include "../common/db.h"
#include "admin.h"

/* Creates the parent directory of a file path. */
static int init_parent(const char *file)
{
    char dir[4096];
    const char *slash = strrchr(file, '/');
    size_t len;

    if (slash == NULL || slash == file)
        return ADMIN_OK;
    len = (size_t)(slash - file);
    if (len >= sizeof dir)
        return admin_fail("%s: path too long", file);
    memcpy(dir, file, len);
    dir[len] = '\0';
    return admin_mkdir(dir, 0755);
}

static int init_queue(const char *queue_dir)
{
    /* The layout server/queue.h describes: tmp/ while written, active/
     * once committed. Only the gateway's user may read queued mail. */
    static const char *const subs[] = {"tmp", "active"};
    char path[4096];

    if (admin_mkdir(queue_dir, 0700) != ADMIN_OK)
        return ADMIN_FAIL;
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) {
        if ((size_t)snprintf(path, sizeof path, "%s/%s", queue_dir, subs[i]) >=
            sizeof path)
            return admin_fail("%s: path too long", queue_dir);
        if (admin_mkdir(path, 0700) != ADMIN_OK)
            return ADMIN_FAIL;
    }
    return ADMIN_OK;
}

int cmd_init(struct admin_ctx *ctx, int argc, char **argv)
{
    const struct cfg *c = ctx->cfg;
    const char *pos[1] = {0};
    size_t npos;
    char err[1024];
    sqlite3 *db = NULL;

    if (admin_args(argc, argv, NULL, 0, pos, 0, 0, &npos, "init") != ADMIN_OK)
        return ADMIN_USAGE;
    if (admin_mkdir(c->state_dir, 0755) != ADMIN_OK ||
        init_parent(c->database) != ADMIN_OK)
        return ADMIN_FAIL;
    if (db_open(c->database, 1, &db, err, sizeof err) != 0)
        return admin_fail("%s", err);
    db_close(&db);
    if (init_queue(c->queue_dir) != ADMIN_OK ||
        admin_mkdir(c->key_dir, 0700) != ADMIN_OK ||
        admin_mkdir(c->run_dir, 0755) != ADMIN_OK)
        return ADMIN_FAIL;
    printf("initialised %s\n", c->state_dir);
    return ADMIN_OK;
}
