/* cmd_cert: `subgate member cert add|list|del`: the TLS client
 * certificates with which a member authenticates by SASL EXTERNAL. Only
 * the SHA-256 fingerprint of the certificate (its DER form) is stored:
 * the gateway authorizes by fingerprint, not by CA. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "../common/limits.h"
#include "admin.h"

/* Lower-case hex of SHA-256. */
#define CERT_FP_LEN 64

/* Reads one PEM certificate (the first of a chain) from standard input
 * and writes its fingerprint into fp (CERT_FP_LEN + 1). ADMIN_OK or
 * ADMIN_FAIL (printed). */
static int cert_read_stdin(char *fp)
{
    static char pem[SG_MAX_CLIENT_CERT + 1];
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0, i;
    size_t len = fread(pem, 1, sizeof pem, stdin);
    X509 *x = NULL;
    BIO *b;

    if (ferror(stdin))
        return admin_fail("cannot read the certificate from standard input");
    if (len > SG_MAX_CLIENT_CERT)
        return admin_fail("certificate longer than %d octets",
                          SG_MAX_CLIENT_CERT);
    b = BIO_new_mem_buf(pem, (int)len);
    if (b != NULL)
        x = PEM_read_bio_X509(b, NULL, NULL, NULL);
    BIO_free(b);
    if (x == NULL)
        return admin_fail("standard input holds no PEM certificate");
    if (X509_digest(x, EVP_sha256(), md, &mdlen) != 1 || mdlen != 32) {
        X509_free(x);
        return admin_fail("cannot compute the certificate's fingerprint");
    }
    X509_free(x);
    for (i = 0; i < mdlen; i++)
        snprintf(fp + 2 * i, 3, "%02x", md[i]);
    return ADMIN_OK;
}

static int cert_add(struct admin_ctx *ctx, int argc, char **argv)
{
    static const char usage[] = "member cert add ADDRESS < cert.pem";
    char fp[CERT_FP_LEN + 1];
    const char *pos[1] = {0};
    sqlite3_stmt *st;
    long long mid;
    size_t npos;
    int ret;

    if (admin_args(argc, argv, NULL, 0, pos, 1, 1, &npos, usage) != ADMIN_OK)
        return ADMIN_USAGE;
    if (cert_read_stdin(fp) != ADMIN_OK ||
        admin_member_id(ctx, pos[0], &mid) != ADMIN_OK)
        return ADMIN_FAIL;
    if (admin_query_int(
            ctx, "SELECT count(*) FROM member_cert WHERE sha256 = ?1", fp) != 0)
        return admin_fail("certificate %s is already registered", fp);
    if (admin_prepare(ctx,
                      "INSERT INTO member_cert(member_id, sha256, created)"
                      " VALUES (?1, ?2, ?3)",
                      &st) != 0)
        return ADMIN_FAIL;
    sqlite3_bind_int64(st, 1, mid);
    sqlite3_bind_text(st, 2, fp, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, (long long)time(NULL));
    ret = admin_step_done(ctx, st, "adding certificate");
    if (ret == ADMIN_OK)
        printf("%s\n", fp);
    return ret;
}

static int cert_list(struct admin_ctx *ctx, int argc, char **argv)
{
    static const char usage[] = "member cert list ADDRESS";
    const char *pos[1] = {0};
    sqlite3_stmt *st;
    long long mid;
    char c[32];
    size_t npos;
    int rc;

    if (admin_args(argc, argv, NULL, 0, pos, 1, 1, &npos, usage) != ADMIN_OK)
        return ADMIN_USAGE;
    if (admin_member_id(ctx, pos[0], &mid) != ADMIN_OK)
        return ADMIN_FAIL;
    if (admin_prepare(ctx,
                      "SELECT sha256, created FROM member_cert"
                      " WHERE member_id = ?1 ORDER BY created, sha256",
                      &st) != 0)
        return ADMIN_FAIL;
    sqlite3_bind_int64(st, 1, mid);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        printf("%s %s\n", sqlite3_column_text(st, 0),
               admin_iso_time(sqlite3_column_int64(st, 1), c, sizeof c));
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? ADMIN_OK
                             : admin_db_fail(ctx, "listing certificates");
}

static int cert_del(struct admin_ctx *ctx, int argc, char **argv)
{
    static const struct admin_row_del del = {
        "member cert del ADDRESS SHA256",
        "DELETE FROM member_cert WHERE member_id = ?1 AND sha256 = ?2",
        "deleting certificate",
        "certificate",
    };

    return admin_member_row_del(ctx, argc, argv, &del);
}

int cmd_member_cert(struct admin_ctx *ctx, int argc, char **argv)
{
    static const struct admin_cmd cmds[] = {
        {"add", cert_add},
        {"list", cert_list},
        {"del", cert_del},
    };

    return admin_dispatch(ctx, cmds, sizeof cmds / sizeof cmds[0],
                          "member cert", argc, argv);
}
