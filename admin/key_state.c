/* key_state: see key_state.h. */
#include "key_state.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "../common/log.h"
#include "dns_check.h"

/* A revealed key: at most the size the signer accepts (16 KiB). */
#define KEYSTATE_PEM_MAX (16 * 1024)

void keystate_log(struct admin_ctx *ctx, const char *fmt, ...)
{
    char line[1024];
    va_list ap;

    if (!ctx->cfg->log_syslog)
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    openlog("subgate", LOG_PID, LOG_MAIL);
    syslog(LOG_INFO, "%s", line);
    closelog();
}

int keystate_load(struct admin_ctx *ctx, const char *domain,
                  struct keystate_key *keys, size_t max, size_t *n_r)
{
    sqlite3_stmt *st;
    size_t n = 0;
    int rc;

    if (admin_prepare(ctx,
                      "SELECT id, selector, algo, state, key_file, created,"
                      " ifnull(published, 0), ifnull(activated, 0),"
                      " ifnull(retired, 0), ifnull(revoked, 0)"
                      " FROM dkim_key WHERE domain = ?1 ORDER BY created, id",
                      &st) != 0)
        return ADMIN_FAIL;
    sqlite3_bind_text(st, 1, domain, -1, SQLITE_STATIC);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct keystate_key *k = &keys[n];
        if (n == max) {
            sqlite3_finalize(st);
            return admin_fail("domain %s has more than %zu keys", domain, max);
        }
        k->id = sqlite3_column_int64(st, 0);
        snprintf(k->sel, sizeof k->sel, "%s", sqlite3_column_text(st, 1));
        snprintf(k->algo, sizeof k->algo, "%s", sqlite3_column_text(st, 2));
        snprintf(k->state, sizeof k->state, "%s", sqlite3_column_text(st, 3));
        snprintf(k->key_file, sizeof k->key_file, "%s",
                 sqlite3_column_text(st, 4));
        k->created = sqlite3_column_int64(st, 5);
        k->published = sqlite3_column_int64(st, 6);
        k->activated = sqlite3_column_int64(st, 7);
        k->retired = sqlite3_column_int64(st, 8);
        k->revoked = sqlite3_column_int64(st, 9);
        n++;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return admin_db_fail(ctx, "reading keys");
    *n_r = n;
    return ADMIN_OK;
}

int keystate_set(struct admin_ctx *ctx, long long id, const char *state)
{
    static const struct {
        const char *state;
        const char *sql;
    } moves[] = {
        {"published", "UPDATE dkim_key SET state = 'published',"
                      " published = ?2 WHERE id = ?1"},
        {"retired", "UPDATE dkim_key SET state = 'retired', retired = ?2"
                    " WHERE id = ?1"},
        {"revoked", "UPDATE dkim_key SET state = 'revoked', revoked = ?2"
                    " WHERE id = ?1"},
        {"active", "UPDATE dkim_key SET state = 'active', activated = ?2"
                   " WHERE id = ?1"},
    };
    sqlite3_stmt *st;

    for (size_t i = 0; i < sizeof moves / sizeof moves[0]; i++) {
        if (strcmp(moves[i].state, state) != 0)
            continue;
        if (admin_prepare(ctx, moves[i].sql, &st) != 0)
            return ADMIN_FAIL;
        sqlite3_bind_int64(st, 1, id);
        sqlite3_bind_int64(st, 2, (long long)time(NULL));
        return admin_step_done(ctx, st, "changing key state");
    }
    log_panic("keystate_set: no move to %s", state);
}

int keystate_activate(struct admin_ctx *ctx, const char *domain,
                      const struct keystate_key *k, int forced,
                      const char *prefix, FILE *out)
{
    sqlite3_stmt *st;
    int rc;

    fprintf(out, "%s%s\t%s\tactive%s\n", prefix, k->sel, k->algo,
            forced ? "\tforced" : "");
    keystate_log(ctx, "%s: key s=%s a=%s state=active%s", domain, k->sel,
                 k->algo, forced ? " dns_check=skipped(--force)" : "");
    if (admin_prepare(ctx,
                      "UPDATE dkim_key SET state = 'retired', retired = ?4"
                      " WHERE domain = ?1 AND algo = ?2 AND state = 'active'"
                      " AND id <> ?3 RETURNING selector",
                      &st) != 0)
        return ADMIN_FAIL;
    sqlite3_bind_text(st, 1, domain, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, k->algo, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, k->id);
    sqlite3_bind_int64(st, 4, (long long)time(NULL));
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        fprintf(out, "%s%s\t%s\tretired\n", prefix, sqlite3_column_text(st, 0),
                k->algo);
        keystate_log(ctx, "%s: key s=%s a=%s state=retired", domain,
                     sqlite3_column_text(st, 0), k->algo);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return admin_db_fail(ctx, "retiring key");
    return keystate_set(ctx, k->id, "active");
}

int keystate_delete_row(struct admin_ctx *ctx, const struct keystate_key *k)
{
    sqlite3_stmt *st;

    if (admin_prepare(ctx, "DELETE FROM dkim_key WHERE id = ?1", &st) != 0)
        return ADMIN_FAIL;
    sqlite3_bind_int64(st, 1, k->id);
    return admin_step_done(ctx, st, "deleting key");
}

/* The absolute path of a file under key_dir. */
static int keystate_path(struct admin_ctx *ctx, const char *rel, char *out,
                         size_t outlen)
{
    if (strstr(rel, "..") != NULL || rel[0] == '/')
        return admin_fail("key file %s is not under key_dir", rel);
    if ((size_t)snprintf(out, outlen, "%s/%s", ctx->cfg->key_dir, rel) >=
        outlen)
        return admin_fail("%s: path too long", ctx->cfg->key_dir);
    return ADMIN_OK;
}

/* fsync of the directory holding path, so that a rename or unlink lasts. */
static void keystate_sync_dir(const char *path)
{
    char dir[4096];
    char *slash;
    int fd;

    snprintf(dir, sizeof dir, "%s", path);
    slash = strrchr(dir, '/');
    if (slash == NULL)
        return;
    *slash = '\0';
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

int keystate_unlink(struct admin_ctx *ctx, const struct keystate_key *k)
{
    char path[4096];

    if (keystate_path(ctx, k->key_file, path, sizeof path) != ADMIN_OK)
        return ADMIN_FAIL;
    /* Overwriting first would not reach the blocks a journaling file
     * system or an SSD keeps: removing the only name is what counts; see
     * docs/keys.md. */
    if (unlink(path) != 0 && errno != ENOENT)
        return admin_fail("unlink %s: %s", path, strerror(errno));
    keystate_sync_dir(path);
    return ADMIN_OK;
}

/* <state_dir>/revealed/DOMAIN[/SEL.pem] */
static int keystate_reveal_path(struct admin_ctx *ctx, const char *domain,
                                const char *sel, char *out, size_t outlen)
{
    int n = sel != NULL ? snprintf(out, outlen, "%s/revealed/%s/%s.pem",
                                   ctx->cfg->state_dir, domain, sel)
                        : snprintf(out, outlen, "%s/revealed/%s",
                                   ctx->cfg->state_dir, domain);

    if (n < 0 || (size_t)n >= outlen)
        return admin_fail("%s: path too long", ctx->cfg->state_dir);
    return ADMIN_OK;
}

int keystate_revealed(struct admin_ctx *ctx, const char *domain,
                      const struct keystate_key *k)
{
    char path[4096];
    struct stat sb;

    if (keystate_reveal_path(ctx, domain, k->sel, path, sizeof path) !=
        ADMIN_OK)
        return 0;
    return stat(path, &sb) == 0;
}

/* Reads the key file into buf. Length, or -1 (printed). */
static ssize_t keystate_read_pem(struct admin_ctx *ctx,
                                 const struct keystate_key *k, char *buf,
                                 size_t buflen)
{
    char path[4096];
    ssize_t n;
    int fd;

    if (keystate_path(ctx, k->key_file, path, sizeof path) != ADMIN_OK)
        return -1;
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        admin_fail("%s: %s", path, strerror(errno));
        return -1;
    }
    n = read(fd, buf, buflen);
    close(fd);
    if (n <= 0 || (size_t)n == buflen) {
        admin_fail("%s: cannot read the key", path);
        return -1;
    }
    return n;
}

int keystate_reveal(struct admin_ctx *ctx, const char *domain,
                    const struct keystate_key *k)
{
    char pem[KEYSTATE_PEM_MAX], dir[4096], path[4096], tmp[4200];
    ssize_t n = keystate_read_pem(ctx, k, pem, sizeof pem);
    int fd, ok;

    if (n < 0 ||
        keystate_reveal_path(ctx, domain, NULL, dir, sizeof dir) != ADMIN_OK ||
        keystate_reveal_path(ctx, domain, k->sel, path, sizeof path) !=
            ADMIN_OK ||
        admin_mkdir(dir, 0755) != ADMIN_OK)
        goto fail;
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    /* Published on purpose: readable by everyone. */
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) {
        admin_fail("%s: %s", tmp, strerror(errno));
        goto fail;
    }
    ok = write(fd, pem, (size_t)n) == n && fchmod(fd, 0644) == 0 &&
         fsync(fd) == 0;
    ok = close(fd) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        admin_fail("%s: %s", path, strerror(errno));
        unlink(tmp);
        goto fail;
    }
    keystate_sync_dir(path);
    explicit_bzero(pem, sizeof pem);
    keystate_log(ctx, "%s: key s=%s a=%s revealed=%s", domain, k->sel, k->algo,
                 path);
    return ADMIN_OK;
fail:
    explicit_bzero(pem, sizeof pem);
    return ADMIN_FAIL;
}

int keystate_gate(struct admin_ctx *ctx, const char *domain,
                  const long long *ids, const char *const *sels, size_t n)
{
    const struct dnschk_verdict *bad;
    struct dnschk chk;
    int ret;

    if (dnschk_run(ctx, domain, NULL, &chk) != ADMIN_OK) {
        dnschk_free(&chk);
        return ADMIN_FAIL;
    }
    ret = dnschk_mark(ctx, &chk, "", NULL);
    for (size_t i = 0; ret == ADMIN_OK && i < n; i++) {
        if (dnschk_key_ok(&chk, ids[i], &bad))
            continue;
        ret = admin_fail(
            "key %s of %s is not served by %s (%s): publish it first "
            "(subgate dns publish, or dns records for a zone edited by "
            "hand) or activate with --force",
            sels[i], domain, bad != NULL ? bad->server : "any server",
            bad != NULL ? dnschk_status_name(bad->status) : "no record");
    }
    dnschk_free(&chk);
    return ret;
}
