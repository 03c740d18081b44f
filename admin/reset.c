/* reset: a member's password reset with its encrypted reply. See reset.h
 * for the order of the steps and why it is safe. */
#include "reset.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/db.h"
#include "../common/passwd.h"
#include "outmail.h"

/* Room for a crypt(3) string (libxcrypt's CRYPT_OUTPUT_SIZE is 384). */
#define RESET_HASH_MAX 512
/* The text encrypted to the member: fixed words, the address and the
 * password. */
#define RESET_TEXT_MAX 2048

static const char reset_member_cols[] =
    "SELECT m.id, m.tenant_id, m.disabled, m.address, t.name,"
    " coalesce(m.pgp_fingerprint, ''),"
    " coalesce(r.address, 'postmaster@' || t.name)"
    " FROM member m JOIN tenant t ON t.id = m.tenant_id"
    " LEFT JOIN tenant_reset r ON r.tenant_id = t.id ";

int reset_schema(struct admin_ctx *ctx)
{
    char err[512];

    if (db_migrate(ctx->db, err, sizeof err) != 0)
        return admin_fail("%s", err);
    return ADMIN_OK;
}

/* Copies column i as text into out (outlen); "" when it does not fit. */
static void reset_col(sqlite3_stmt *st, int i, char *out, size_t outlen)
{
    const unsigned char *s = sqlite3_column_text(st, i);
    size_t n = s != NULL ? strlen((const char *)s) : 0;

    if (n >= outlen)
        n = 0;
    if (n > 0)
        memcpy(out, s, n);
    out[n] = '\0';
}

/* Runs a member query (reset_member_cols + where, parameters ?1 text and
 * ?2 tenant id unless 0). Fills m from the first row; *nrows_r counts up
 * to two rows. 0, or -1 (printed). */
static int reset_member_query(struct admin_ctx *ctx, const char *where,
                              const char *text, long long tenant_id,
                              struct reset_member *m, int *nrows_r)
{
    char sql[1024];
    sqlite3_stmt *st;
    int rc, n = 0;

    memset(m, 0, sizeof *m);
    snprintf(sql, sizeof sql, "%s%s", reset_member_cols, where);
    if (admin_prepare(ctx, sql, &st) != 0)
        return -1;
    sqlite3_bind_text(st, 1, text, -1, SQLITE_STATIC);
    if (tenant_id != 0)
        sqlite3_bind_int64(st, 2, tenant_id);
    while (n < 2 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (n++ > 0)
            continue;
        m->id = sqlite3_column_int64(st, 0);
        m->tenant_id = sqlite3_column_int64(st, 1);
        m->disabled = sqlite3_column_int(st, 2);
        reset_col(st, 3, m->address, sizeof m->address);
        reset_col(st, 4, m->tenant, sizeof m->tenant);
        reset_col(st, 5, m->fpr, sizeof m->fpr);
        reset_col(st, 6, m->reply_from, sizeof m->reply_from);
    }
    if (n < 2 && rc != SQLITE_DONE) {
        sqlite3_finalize(st);
        admin_db_fail(ctx, "reading member");
        return -1;
    }
    sqlite3_finalize(st);
    *nrows_r = n;
    return 0;
}

int reset_member_by_address(struct admin_ctx *ctx, const char *address,
                            struct reset_member *m)
{
    int n;

    if (reset_member_query(ctx, "WHERE m.address = ?1", address, 0, m, &n) != 0)
        return -1;
    return n > 0;
}

int reset_member_by_any_address(struct admin_ctx *ctx, long long tenant_id,
                                const char *address, struct reset_member *m)
{
    int n;

    if (reset_member_query(ctx,
                           "WHERE m.tenant_id = ?2 AND (m.address = ?1 OR"
                           " m.id IN (SELECT member_id FROM alias"
                           "  WHERE address = ?1))",
                           address, tenant_id, m, &n) != 0)
        return -1;
    return n > 0;
}

int reset_member_by_fpr(struct admin_ctx *ctx, long long tenant_id,
                        const char *fpr, struct reset_member *m)
{
    int n;

    if (fpr[0] == '\0')
        return 0;
    if (reset_member_query(ctx,
                           "WHERE m.tenant_id = ?2 AND m.pgp_fingerprint = ?1"
                           " COLLATE NOCASE",
                           fpr, tenant_id, m, &n) != 0)
        return -1;
    return n;
}

int reset_keyring(const struct admin_ctx *ctx, const char *tenant, char *out,
                  size_t outlen)
{
    return pgp_keyring_path(ctx->cfg->pgp_dir, tenant, out, outlen);
}

int reset_seen(struct admin_ctx *ctx, const struct reset_sig *sig)
{
    sqlite3_stmt *st;
    int rc;

    if (admin_prepare(ctx,
                      "SELECT 1 FROM pgp_replay WHERE fingerprint = ?1"
                      " AND sig_time = ?2",
                      &st) != 0)
        return -1;
    sqlite3_bind_text(st, 1, sig->fpr, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, sig->time);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc == SQLITE_ROW)
        return 1;
    if (rc == SQLITE_DONE)
        return 0;
    admin_db_fail(ctx, "reading replay records");
    return -1;
}

long long reset_count(struct admin_ctx *ctx, const char *fpr)
{
    sqlite3_stmt *st;
    long long n = -1;

    if (admin_prepare(ctx,
                      "SELECT count(*) FROM pgp_replay WHERE fingerprint = ?1"
                      " AND seen > ?2",
                      &st) != 0)
        return -1;
    sqlite3_bind_text(st, 1, fpr, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (long long)time(NULL) - RESET_RATE_PERIOD);
    if (sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int64(st, 0);
    else
        admin_db_fail(ctx, "counting resets");
    sqlite3_finalize(st);
    return n;
}

/* Runs one statement with err set from the database on failure. 0, -1. */
static int reset_sql(struct admin_ctx *ctx, const char *sql, char *err,
                     size_t errlen)
{
    if (sqlite3_exec(ctx->db, sql, NULL, NULL, NULL) == SQLITE_OK)
        return 0;
    snprintf(err, errlen, "database: %s", sqlite3_errmsg(ctx->db));
    return -1;
}

/* In the transaction: refuses a replay or a key over its rate, records
 * the signature and prunes records that can no longer matter (a
 * signature older than reset_window is refused for its age anyway). */
static enum reset_result reset_record(struct admin_ctx *ctx,
                                      const struct reset_sig *sig, char *err,
                                      size_t errlen)
{
    long long now = (long long)time(NULL), n;
    sqlite3_stmt *st;
    int rc;

    rc = reset_seen(ctx, sig);
    if (rc != 0)
        return rc > 0 ? RESET_REPLAY : RESET_TEMP;
    n = reset_count(ctx, sig->fpr);
    if (n < 0)
        return RESET_TEMP;
    if (n >= (long long)ctx->cfg->reset_rate)
        return RESET_RATE;
    if (admin_prepare(ctx,
                      "INSERT INTO pgp_replay(fingerprint, sig_time, seen)"
                      " VALUES (?1, ?2, ?3)",
                      &st) != 0)
        return RESET_TEMP;
    sqlite3_bind_text(st, 1, sig->fpr, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, sig->time);
    sqlite3_bind_int64(st, 3, now);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        snprintf(err, errlen, "recording the signature: %s",
                 sqlite3_errmsg(ctx->db));
        return RESET_TEMP;
    }
    if (admin_prepare(ctx,
                      "DELETE FROM pgp_replay WHERE seen < ?1 AND sig_time"
                      " < ?2",
                      &st) != 0)
        return RESET_TEMP;
    sqlite3_bind_int64(st, 1, now - RESET_RATE_PERIOD);
    sqlite3_bind_int64(
        st, 2, now - (long long)ctx->cfg->reset_window_s - RESET_RATE_PERIOD);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        snprintf(err, errlen, "pruning replay records: %s",
                 sqlite3_errmsg(ctx->db));
        return RESET_TEMP;
    }
    return RESET_OK;
}

/* In the transaction: stores the hash, provided the member still has the
 * key the reply is encrypted to. */
static enum reset_result reset_update(struct admin_ctx *ctx,
                                      const struct reset_member *m,
                                      const char *hash, char *err,
                                      size_t errlen)
{
    sqlite3_stmt *st;
    int rc;

    if (admin_prepare(ctx,
                      "UPDATE member SET password_hash = ?1,"
                      " password_changed = ?2 WHERE id = ?3 AND"
                      " coalesce(pgp_fingerprint, '') = ?4 COLLATE NOCASE",
                      &st) != 0)
        return RESET_TEMP;
    sqlite3_bind_text(st, 1, hash, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (long long)time(NULL));
    sqlite3_bind_int64(st, 3, m->id);
    sqlite3_bind_text(st, 4, m->fpr, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        snprintf(err, errlen, "setting password: %s", sqlite3_errmsg(ctx->db));
        return RESET_TEMP;
    }
    if (sqlite3_changes(ctx->db) == 0) {
        snprintf(err, errlen, "member %s or its key changed meanwhile",
                 m->address);
        return RESET_FAIL;
    }
    return RESET_OK;
}

/* Steps 1: the password, its hash and the signed, encrypted reply in
 * *om. RESET_OK, or why not with err. */
static enum reset_result reset_prepare(struct admin_ctx *ctx,
                                       const struct reset_member *m,
                                       const char *auto_submitted,
                                       struct outmail *om, char *hash,
                                       size_t hashlen, char *err, size_t errlen)
{
    char pw[RESET_PASSWORD_LEN + 1], text[RESET_TEXT_MAX], keyring[4096];
    char *armored = NULL;
    size_t alen = 0;
    int n, rc;

    if (m->fpr[0] == '\0') {
        snprintf(err, errlen, "member %s has no OpenPGP key", m->address);
        return RESET_FAIL;
    }
    if (reset_keyring(ctx, m->tenant, keyring, sizeof keyring) != 0) {
        snprintf(err, errlen, "pgp_dir too long");
        return RESET_FAIL;
    }
    if (passwd_random(pw, sizeof pw, RESET_PASSWORD_LEN) != 0 ||
        passwd_hash(pw, hash, hashlen) != 0) {
        explicit_bzero(pw, sizeof pw);
        snprintf(err, errlen, "no random bytes or hash for a password");
        return RESET_TEMP;
    }
    /* RFC 3156 4: what is encrypted is a MIME entity. */
    n = snprintf(text, sizeof text,
                 "Content-Type: text/plain; charset=us-ascii\r\n"
                 "\r\n"
                 "Your new mail password for %s is:\r\n"
                 "\r\n"
                 "    %s\r\n"
                 "\r\n"
                 "It replaces your old password, which no longer works.\r\n"
                 "Use it to log in to the mail gateway (SMTP AUTH).\r\n",
                 m->address, pw);
    explicit_bzero(pw, sizeof pw);
    if (n < 0 || (size_t)n >= sizeof text) {
        explicit_bzero(text, sizeof text);
        snprintf(err, errlen, "reply text too long");
        return RESET_FAIL;
    }
    rc = pgp_encrypt(keyring, m->fpr, text, (size_t)n, &armored, &alen, err,
                     errlen);
    explicit_bzero(text, sizeof text);
    if (rc != 0)
        return RESET_FAIL;
    rc = outmail_encrypted(om, ctx->cfg->hostname, m->reply_from, m->address,
                           "Your new mail password", auto_submitted, armored,
                           alen);
    free(armored);
    if (rc != 0) {
        snprintf(err, errlen, "cannot build a reply from %s to %s",
                 m->reply_from, m->address);
        return RESET_FAIL;
    }
    if (outmail_sign(om, ctx->cfg, err, errlen) != 0)
        return RESET_TEMP;
    return RESET_OK;
}

/* Steps 2 to 4, see reset.h. */
static enum reset_result
reset_commit(struct admin_ctx *ctx, const struct reset_member *m,
             const struct reset_sig *sig, const char *session,
             struct outmail *om, const char *hash, char *err, size_t errlen)
{
    enum reset_result r = RESET_OK;
    int rc;

    if (reset_sql(ctx, "BEGIN IMMEDIATE", err, errlen) != 0)
        return RESET_TEMP;
    if (sig != NULL)
        r = reset_record(ctx, sig, err, errlen);
    if (r == RESET_OK)
        r = reset_update(ctx, m, hash, err, errlen);
    if (r == RESET_OK) {
        rc = outmail_commit(om, ctx->cfg, session, m->address);
        if (rc != 0) {
            snprintf(err, errlen, "queue write failed: %s", strerror(-rc));
            r = RESET_TEMP;
        }
    }
    if (r != RESET_OK) {
        admin_rollback(ctx);
        return r;
    }
    if (reset_sql(ctx, "COMMIT", err, errlen) != 0) {
        admin_rollback(ctx);
        rc = outmail_withdraw(om, ctx->cfg);
        if (rc != 0)
            snprintf(err + strlen(err), errlen - strlen(err),
                     "; removing queued reply %s: %s", om->qid, strerror(-rc));
        return RESET_TEMP;
    }
    return RESET_OK;
}

enum reset_result reset_run(struct admin_ctx *ctx, const struct reset_member *m,
                            const struct reset_sig *sig,
                            const char *auto_submitted, const char *session,
                            char *qid_r, char *err, size_t errlen)
{
    char hash[RESET_HASH_MAX];
    struct outmail om;
    enum reset_result r;

    memset(&om, 0, sizeof om);
    err[0] = '\0';
    r = reset_prepare(ctx, m, auto_submitted, &om, hash, sizeof hash, err,
                      errlen);
    if (r == RESET_OK)
        r = reset_commit(ctx, m, sig, session, &om, hash, err, errlen);
    if (r == RESET_OK)
        memcpy(qid_r, om.qid, sizeof om.qid);
    explicit_bzero(hash, sizeof hash);
    outmail_clear(&om);
    return r;
}

/* Notices sent to member id in the last 24 hours, -1 on error. */
static long long reset_notices(struct admin_ctx *ctx, long long id)
{
    sqlite3_stmt *st;
    long long n = -1;

    if (admin_prepare(ctx,
                      "SELECT count(*) FROM reset_notice WHERE member_id = ?1"
                      " AND sent > ?2",
                      &st) != 0)
        return -1;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_int64(st, 2, (long long)time(NULL) - RESET_RATE_PERIOD);
    if (sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return n;
}

/* In a transaction: checks and records one notice for member id. 1 may
 * send, 0 over the limit, -1 error. */
static int reset_notice_take(struct admin_ctx *ctx, long long id)
{
    long long now = (long long)time(NULL), n = reset_notices(ctx, id);
    sqlite3_stmt *st;
    int rc;

    if (n < 0)
        return -1;
    if (n >= (long long)ctx->cfg->reset_rate)
        return 0;
    if (admin_prepare(ctx,
                      "INSERT INTO reset_notice(member_id, sent)"
                      " VALUES (?1, ?2)",
                      &st) != 0)
        return -1;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_int64(st, 2, now);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return -1;
    if (admin_prepare(ctx, "DELETE FROM reset_notice WHERE sent < ?1", &st) !=
        0)
        return -1;
    sqlite3_bind_int64(st, 1, now - RESET_RATE_PERIOD);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 1 : -1;
}

int reset_notice(struct admin_ctx *ctx, const struct reset_member *m,
                 const char *text, char *qid_r, char *err, size_t errlen)
{
    char body[1024];
    struct outmail om;
    long long sent;
    int rc, n;

    err[0] = '\0';
    sent = reset_notices(ctx, m->id);
    if (sent < 0) {
        snprintf(err, errlen, "database: %s", sqlite3_errmsg(ctx->db));
        return -1;
    }
    if (sent >= (long long)ctx->cfg->reset_rate)
        return 0;
    n = snprintf(body, sizeof body,
                 "Your request to change the mail password of %s was not\n"
                 "carried out: %s.\n"
                 "\n"
                 "It changed nothing. If you did not send such a request,\n"
                 "you can ignore this message.\n",
                 m->address, text);
    if (n < 0 || (size_t)n >= sizeof body ||
        outmail_plain(&om, ctx->cfg->hostname, m->reply_from, m->address,
                      "Your mail password was not changed",
                      OUTMAIL_AUTO_REPLIED, body) != 0) {
        snprintf(err, errlen, "cannot build a notice from %s to %s",
                 m->reply_from, m->address);
        return -1;
    }
    rc = outmail_sign(&om, ctx->cfg, err, errlen);
    if (rc == 0 && reset_sql(ctx, "BEGIN IMMEDIATE", err, errlen) != 0)
        rc = -1;
    if (rc == 0) {
        n = reset_notice_take(ctx, m->id);
        if (n == 1 &&
            outmail_commit(&om, ctx->cfg, "mailgate", m->address) == 0 &&
            reset_sql(ctx, "COMMIT", err, errlen) == 0) {
            memcpy(qid_r, om.qid, sizeof om.qid);
            rc = 1;
        } else {
            if (n != 0 && err[0] == '\0')
                snprintf(err, errlen, "recording the notice failed");
            admin_rollback(ctx);
            outmail_withdraw(&om, ctx->cfg);
            rc = n == 0 ? 0 : -1;
        }
    }
    outmail_clear(&om);
    return rc;
}
