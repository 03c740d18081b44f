/* cmd_reset: the administrator's side of password reset.
 *
 *   subgate member pgpkey ADDRESS [--remove] < key.asc
 *   subgate member reset ADDRESS [--print]
 *   subgate tenant reset DOMAIN [--address ADDR] [--accept-in-gateway
 *       yes|no] [--off]
 *
 * pgpkey registers the member's OpenPGP public key: it goes into the
 * tenant's keyring (pgp_dir/TENANT) and its fingerprint onto the member.
 * reset gives the member a new random password and mails it encrypted to
 * that key (reset.c), or prints it with --print. tenant reset sets the
 * tenant's change-password address, from which replies are sent and to
 * which members send signed requests (docs/password-reset.md). */
#include <dirent.h>
#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "../common/passwd.h"
#include "outmail.h"
#include "reset.h"

/* Room for a crypt(3) string. */
#define CMD_RESET_HASH_MAX 512

/* Reads all of stdin, at most max octets, into a new buffer. ADMIN_OK
 * with *buf_r and *len_r, or ADMIN_FAIL (printed). */
static int cmd_reset_read_stdin(size_t max, char **buf_r, size_t *len_r)
{
    char *buf = malloc(max + 1);
    size_t len = 0;
    ssize_t n;

    if (buf == NULL)
        return admin_fail("out of memory");
    for (;;) {
        n = read(STDIN_FILENO, buf + len, max + 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            free(buf);
            return admin_fail("reading standard input: %s", strerror(errno));
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len > max) {
            free(buf);
            return admin_fail("key on standard input longer than %zu octets",
                              max);
        }
    }
    if (len == 0) {
        free(buf);
        return admin_fail("no key on standard input");
    }
    buf[len] = '\0';
    *buf_r = buf;
    *len_r = len;
    return ADMIN_OK;
}

/* As root with `user` set, gives the keyring (pgp_dir, the tenant's
 * directory and the files gpg made in it) to that user, who runs
 * `subgate mailgate` and the queue runner. A failure is a warning: the
 * administrator can still chown by hand (docs/password-reset.md). */
static void cmd_reset_chown(const struct admin_ctx *ctx, const char *keyring)
{
    char path[4096];
    struct passwd *pw;
    struct dirent *de;
    DIR *d;
    int bad = 0;

    if (geteuid() != 0 || ctx->cfg->user[0] == '\0')
        return;
    pw = getpwnam(ctx->cfg->user);
    if (pw == NULL) {
        fprintf(stderr, "subgate: warning: unknown user %s\n", ctx->cfg->user);
        return;
    }
    bad |= chown(ctx->cfg->pgp_dir, pw->pw_uid, pw->pw_gid) != 0;
    bad |= chown(keyring, pw->pw_uid, pw->pw_gid) != 0;
    d = opendir(keyring);
    while (d != NULL && (de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.' ||
            (size_t)snprintf(path, sizeof path, "%s/%s", keyring, de->d_name) >=
                sizeof path)
            continue;
        bad |= lchown(path, pw->pw_uid, pw->pw_gid) != 0;
    }
    if (d != NULL)
        closedir(d);
    if (bad || d == NULL)
        fprintf(stderr, "subgate: warning: cannot give %s to user %s\n",
                keyring, ctx->cfg->user);
}

/* Members of tenant_id other than id whose registered key is fpr; -1 on
 * error (printed). */
static long long cmd_reset_fpr_users(struct admin_ctx *ctx, long long tenant_id,
                                     long long id, const char *fpr)
{
    sqlite3_stmt *st;
    long long n = -1;

    if (admin_prepare(ctx,
                      "SELECT count(*) FROM member WHERE tenant_id = ?1 AND"
                      " id != ?2 AND pgp_fingerprint = ?3 COLLATE NOCASE",
                      &st) != 0)
        return -1;
    sqlite3_bind_int64(st, 1, tenant_id);
    sqlite3_bind_int64(st, 2, id);
    sqlite3_bind_text(st, 3, fpr, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int64(st, 0);
    else
        admin_db_fail(ctx, "reading members");
    sqlite3_finalize(st);
    return n;
}

/* Sets (fpr) or clears (NULL) the member's registered fingerprint. */
static int cmd_reset_set_fpr(struct admin_ctx *ctx, long long id,
                             const char *fpr)
{
    sqlite3_stmt *st;

    if (admin_prepare(ctx,
                      "UPDATE member SET pgp_fingerprint = ?1 WHERE id = ?2",
                      &st) != 0)
        return ADMIN_FAIL;
    if (fpr != NULL)
        sqlite3_bind_text(st, 1, fpr, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, id);
    return admin_step_done(ctx, st, "setting the key");
}

/* Removes a key that no member of the tenant is registered with any more
 * from the keyring, so that it cannot be used by mistake later. */
static void cmd_reset_drop_old(struct admin_ctx *ctx,
                               const struct reset_member *m,
                               const char *keyring)
{
    char err[512];

    if (m->fpr[0] == '\0' ||
        cmd_reset_fpr_users(ctx, m->tenant_id, m->id, m->fpr) != 0)
        return;
    if (pgp_delete(keyring, m->fpr, err, sizeof err) != 0)
        fprintf(stderr, "subgate: warning: old key %s stays in %s: %s\n",
                m->fpr, keyring, err);
}

int cmd_member_pgpkey(struct admin_ctx *ctx, int argc, char **argv)
{
    static const char usage[] = "member pgpkey ADDRESS [--remove] < key.asc";
    struct admin_opt opts[] = {{.name = "remove"}};
    char keyring[4096], fpr[PGP_FPR_MAX + 1], err[512];
    const char *pos[1] = {0};
    struct reset_member m;
    char *data = NULL;
    size_t npos, len = 0;
    long long users;
    int rc;

    if (admin_args(argc, argv, opts, 1, pos, 1, 1, &npos, usage) != ADMIN_OK)
        return ADMIN_USAGE;
    rc = reset_member_by_address(ctx, pos[0], &m);
    if (rc <= 0)
        return rc < 0 ? ADMIN_FAIL : admin_fail("no member %s", pos[0]);
    if (reset_keyring(ctx, m.tenant, keyring, sizeof keyring) != 0)
        return admin_fail("pgp_dir too long");
    if (opts[0].set) {
        if (cmd_reset_set_fpr(ctx, m.id, NULL) != ADMIN_OK)
            return ADMIN_FAIL;
        cmd_reset_drop_old(ctx, &m, keyring);
        return ADMIN_OK;
    }
    if (cmd_reset_read_stdin(SG_MAX_PGP_KEY, &data, &len) != ADMIN_OK)
        return ADMIN_FAIL;
    if (pgp_init(err, sizeof err) != 0) {
        free(data);
        return admin_fail("%s", err);
    }
    rc = pgp_import(keyring, data, len, fpr, err, sizeof err);
    free(data);
    cmd_reset_chown(ctx, keyring);
    if (rc <= 0)
        return admin_fail("key for %s refused: %s", m.address, err);
    users = cmd_reset_fpr_users(ctx, m.tenant_id, m.id, fpr);
    if (users != 0)
        return users < 0 ? ADMIN_FAIL
                         : admin_fail("key %s is registered to another member "
                                      "of %s",
                                      fpr, m.tenant);
    if (cmd_reset_set_fpr(ctx, m.id, fpr) != ADMIN_OK)
        return ADMIN_FAIL;
    if (strcasecmp(m.fpr, fpr) != 0)
        cmd_reset_drop_old(ctx, &m, keyring);
    printf("%s\t%s\n", m.address, fpr);
    return ADMIN_OK;
}

/* --print: a new password set and shown, nothing mailed. */
static int member_reset_print(struct admin_ctx *ctx,
                              const struct reset_member *m)
{
    char pw[RESET_PASSWORD_LEN + 1], hash[CMD_RESET_HASH_MAX];
    sqlite3_stmt *st;
    int ret = ADMIN_FAIL;

    if (passwd_random(pw, sizeof pw, RESET_PASSWORD_LEN) != 0 ||
        passwd_hash(pw, hash, sizeof hash) != 0) {
        explicit_bzero(pw, sizeof pw);
        return admin_fail("no random bytes or hash for a password");
    }
    if (admin_prepare(ctx,
                      "UPDATE member SET password_hash = ?1,"
                      " password_changed = ?2 WHERE id = ?3",
                      &st) == 0) {
        sqlite3_bind_text(st, 1, hash, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, (long long)time(NULL));
        sqlite3_bind_int64(st, 3, m->id);
        ret = admin_step_done(ctx, st, "setting password");
    }
    if (ret == ADMIN_OK)
        printf("%s\n", pw);
    explicit_bzero(pw, sizeof pw);
    explicit_bzero(hash, sizeof hash);
    return ret;
}

int cmd_member_reset(struct admin_ctx *ctx, int argc, char **argv)
{
    static const char usage[] = "member reset ADDRESS [--print]";
    struct admin_opt opts[] = {{.name = "print"}};
    char qid[QUEUE_ID_LEN + 1], err[1024];
    const char *pos[1] = {0};
    struct reset_member m;
    enum reset_result r;
    size_t npos;
    int rc;

    if (admin_args(argc, argv, opts, 1, pos, 1, 1, &npos, usage) != ADMIN_OK)
        return ADMIN_USAGE;
    if (reset_schema(ctx) != ADMIN_OK)
        return ADMIN_FAIL;
    rc = reset_member_by_address(ctx, pos[0], &m);
    if (rc <= 0)
        return rc < 0 ? ADMIN_FAIL : admin_fail("no member %s", pos[0]);
    if (opts[0].set)
        return member_reset_print(ctx, &m);
    if (m.fpr[0] == '\0')
        return admin_fail("member %s has no OpenPGP key (subgate member "
                          "pgpkey, or --print)",
                          m.address);
    if (pgp_init(err, sizeof err) != 0)
        return admin_fail("%s", err);
    r = reset_run(ctx, &m, NULL, OUTMAIL_AUTO_GENERATED, "reset", qid, err,
                  sizeof err);
    if (r != RESET_OK)
        return admin_fail("password of %s not changed: %s", m.address, err);
    printf("%s\tqueued as %s\n", m.address, qid);
    return ADMIN_OK;
}

/* Prints the tenant's settings: "address: A" and "accept_in_gateway:". */
static int tenant_reset_show(struct admin_ctx *ctx, long long tid)
{
    sqlite3_stmt *st;
    int rc;

    if (admin_prepare(ctx,
                      "SELECT address, accept_in_gateway FROM tenant_reset"
                      " WHERE tenant_id = ?1",
                      &st) != 0)
        return ADMIN_FAIL;
    sqlite3_bind_int64(st, 1, tid);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        printf("address: %s\naccept_in_gateway: %s\n",
               sqlite3_column_text(st, 0),
               sqlite3_column_int(st, 1) ? "yes" : "no");
    else if (rc == SQLITE_DONE)
        printf("address: -\naccept_in_gateway: no\n");
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return admin_db_fail(ctx, "reading the reset settings");
    return ADMIN_OK;
}

/* Stores the change-password address of tenant tid: its domain must be
 * one of the tenant's (the reply is signed with that domain's keys) and
 * it must not be a member's address. */
static int tenant_reset_set(struct admin_ctx *ctx, long long tid,
                            const char *value, const char *accept)
{
    char addr[SG_MAX_PATH + 1];
    const char *domain;
    sqlite3_stmt *st;
    int on, used;

    if (!admin_addr_norm(value, addr, &domain))
        return admin_fail("invalid address %s", value);
    if (accept == NULL || strcmp(accept, "no") == 0)
        on = 0;
    else if (strcmp(accept, "yes") == 0)
        on = 1;
    else
        return admin_badarg("--accept-in-gateway takes yes or no");
    if (admin_domain_tenant(ctx, domain) != tid)
        return admin_fail("domain %s is not the tenant's", domain);
    used = admin_addr_in_use(ctx, addr);
    if (used != 0)
        return used < 0 ? ADMIN_FAIL
                        : admin_fail("%s is a member's address", addr);
    if (admin_prepare(ctx,
                      "INSERT INTO tenant_reset(tenant_id, address,"
                      " accept_in_gateway) VALUES (?1, ?2, ?3)"
                      " ON CONFLICT(tenant_id) DO UPDATE SET"
                      " address = excluded.address,"
                      " accept_in_gateway = excluded.accept_in_gateway",
                      &st) != 0)
        return ADMIN_FAIL;
    sqlite3_bind_int64(st, 1, tid);
    sqlite3_bind_text(st, 2, addr, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, on);
    return admin_step_done(ctx, st, "setting the change-password address");
}

int cmd_tenant_reset(struct admin_ctx *ctx, int argc, char **argv)
{
    static const char usage[] =
        "tenant reset DOMAIN [--address ADDR] [--accept-in-gateway yes|no] "
        "[--off]";
    struct admin_opt opts[] = {
        {.name = "address", .has_arg = 1},
        {.name = "accept-in-gateway", .has_arg = 1},
        {.name = "off"},
    };
    const char *pos[1] = {0};
    sqlite3_stmt *st;
    long long tid;
    size_t npos;

    if (admin_args(argc, argv, opts, 3, pos, 1, 1, &npos, usage) != ADMIN_OK)
        return ADMIN_USAGE;
    if (reset_schema(ctx) != ADMIN_OK)
        return ADMIN_FAIL;
    tid = admin_tenant_id(ctx, pos[0]);
    if (tid <= 0)
        return tid < 0 ? ADMIN_FAIL : admin_fail("no tenant %s", pos[0]);
    if (opts[2].set) {
        if (opts[0].set || opts[1].set)
            return admin_badarg("--off takes no other option");
        if (admin_prepare(ctx, "DELETE FROM tenant_reset WHERE tenant_id = ?1",
                          &st) != 0)
            return ADMIN_FAIL;
        sqlite3_bind_int64(st, 1, tid);
        return admin_step_done(ctx, st, "removing the reset settings");
    }
    if (!opts[0].set) {
        if (opts[1].set)
            return admin_badarg("--accept-in-gateway needs --address");
        return tenant_reset_show(ctx, tid);
    }
    return tenant_reset_set(ctx, tid, opts[0].value, opts[1].value);
}
