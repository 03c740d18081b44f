/* pgp: OpenPGP over gpgme for password reset. See pgp.h. */
#include "pgp.h"

#include <ctype.h>
#include <errno.h>
#include <gpgme.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "../common/xalloc.h"

static const char *const pgp_verdict_names[] = {
    [PGP_SIG_GOOD] = "good",
    [PGP_SIG_NONE] = "unsigned",
    [PGP_SIG_MANY] = "several-signatures",
    [PGP_SIG_BAD] = "bad-signature",
    [PGP_SIG_UNKNOWN_KEY] = "unknown-key",
    [PGP_SIG_KEY_EXPIRED] = "key-expired",
    [PGP_SIG_KEY_REVOKED] = "key-revoked",
    [PGP_SIG_EXPIRED] = "signature-expired",
    [PGP_SIG_WRONG_KEY] = "not-registered-key",
};

const char *pgp_verdict_name(enum pgp_verdict v)
{
    if ((size_t)v >= sizeof pgp_verdict_names / sizeof pgp_verdict_names[0])
        return "unknown";
    return pgp_verdict_names[v];
}

int pgp_init(char *err, size_t errlen)
{
    gpgme_error_t e;

    if (gpgme_check_version(NULL) == NULL) {
        snprintf(err, errlen, "gpgme: library initialisation failed");
        return -1;
    }
    e = gpgme_engine_check_version(GPGME_PROTOCOL_OpenPGP);
    if (e != 0) {
        snprintf(err, errlen, "gpgme: no usable gpg: %s", gpgme_strerror(e));
        return -1;
    }
    return 0;
}

int pgp_keyring_path(const char *pgp_dir, const char *tenant, char *out,
                     size_t outlen)
{
    int n = snprintf(out, outlen, "%s/%s", pgp_dir, tenant);

    return n < 0 || (size_t)n >= outlen ? -1 : 0;
}

int pgp_fpr_norm(const char *s, char *out)
{
    size_t n = 0;

    for (; *s != '\0'; s++) {
        if (*s == ' ')
            continue;
        if (!isxdigit((unsigned char)*s) || n >= PGP_FPR_MAX)
            return 0;
        out[n++] = (char)toupper((unsigned char)*s);
    }
    out[n] = '\0';
    return n == 40 || n == 64;
}

/* Errors of gpgme that mean gpg could not do its work at all (missing,
 * out of resources), as opposed to an answer about the data. */
static int pgp_err_temporary(gpgme_error_t e)
{
    switch (gpgme_err_code(e)) {
    case GPG_ERR_INV_ENGINE:
    case GPG_ERR_ENGINE_TOO_OLD:
    case GPG_ERR_ENOENT:
    case GPG_ERR_ENOMEM:
    case GPG_ERR_EAGAIN:
    case GPG_ERR_EMFILE:
    case GPG_ERR_ENFILE:
    case GPG_ERR_ENOSPC:
    case GPG_ERR_EIO:
    case GPG_ERR_EPIPE:
    case GPG_ERR_LOCKED:
        return 1;
    default:
        return 0;
    }
}

/* Creates dir with mode 0700 unless it exists; its parent too. 0 or -1. */
static int pgp_mkdir(const char *dir, char *err, size_t errlen)
{
    char parent[4096];
    char *slash;
    size_t len = strlen(dir);

    if (len >= sizeof parent) {
        snprintf(err, errlen, "%s: path too long", dir);
        return -1;
    }
    memcpy(parent, dir, len + 1);
    slash = strrchr(parent, '/');
    if (slash != NULL && slash != parent) {
        *slash = '\0';
        if (mkdir(parent, 0700) != 0 && errno != EEXIST) {
            snprintf(err, errlen, "mkdir %s: %s", parent, strerror(errno));
            return -1;
        }
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "mkdir %s: %s", dir, strerror(errno));
        return -1;
    }
    return 0;
}

/* A keyring holds public keys only, so gpg must never start gpg-agent for
 * it (a daemon per tenant left running after each command): gpg.conf in
 * the keyring says so (--no-autostart), whoever made the directory. Trust
 * is the registered fingerprint, never the web of trust, so gpg need not
 * keep a trust database either. 0 or -1 with err. */
static int pgp_conf(const char *keyring, char *err, size_t errlen)
{
    static const char conf[] = "# written by subgate: public keys only\n"
                               "no-autostart\n"
                               "no-auto-key-retrieve\n"
                               "trust-model always\n";
    char path[4096], have[sizeof conf];
    size_t n = 0;
    FILE *f;

    if ((size_t)snprintf(path, sizeof path, "%s/gpg.conf", keyring) >=
        sizeof path) {
        snprintf(err, errlen, "%s: path too long", keyring);
        return -1;
    }
    f = fopen(path, "r");
    if (f != NULL) {
        n = fread(have, 1, sizeof have, f);
        fclose(f);
        if (n == sizeof conf - 1 && memcmp(have, conf, n) == 0)
            return 0;
    }
    f = fopen(path, "w");
    if (f != NULL) {
        int bad = fputs(conf, f) == EOF;
        if (fclose(f) == 0 && !bad)
            return 0;
    }
    snprintf(err, errlen, "writing %s: %s", path, strerror(errno));
    return -1;
}

/* A context for keyring: OpenPGP, offline, local key listings only. 0 or
 * -1 with err. */
static int pgp_ctx(const char *keyring, gpgme_ctx_t *ctx_r, char *err,
                   size_t errlen)
{
    gpgme_ctx_t ctx;
    gpgme_error_t e;

    if (pgp_conf(keyring, err, errlen) != 0)
        return -1;
    e = gpgme_new(&ctx);
    if (e != 0) {
        snprintf(err, errlen, "gpgme: %s", gpgme_strerror(e));
        return -1;
    }
    e = gpgme_set_protocol(ctx, GPGME_PROTOCOL_OpenPGP);
    if (e == 0)
        e = gpgme_ctx_set_engine_info(ctx, GPGME_PROTOCOL_OpenPGP, NULL,
                                      keyring);
    if (e == 0)
        e = gpgme_set_keylist_mode(ctx, GPGME_KEYLIST_MODE_LOCAL);
    /* Never ask a key server or the network for keys. */
    if (e == 0)
        e = gpgme_set_ctx_flag(ctx, "auto-key-retrieve", "0");
    if (e != 0) {
        snprintf(err, errlen, "gpgme: %s", gpgme_strerror(e));
        gpgme_release(ctx);
        return -1;
    }
    gpgme_set_offline(ctx, 1);
    *ctx_r = ctx;
    return 0;
}

/* 1 if sub can be used now (not revoked, expired, disabled, invalid). */
static int pgp_subkey_live(gpgme_subkey_t sub)
{
    return !sub->revoked && !sub->expired && !sub->disabled && !sub->invalid;
}

/* Checks that key can be relied on now: the primary key live, one live
 * subkey (or the primary) for each of encryption and signing. 1, or 0
 * with the reason in err. */
static int pgp_key_ok(gpgme_key_t key, char *err, size_t errlen)
{
    gpgme_subkey_t sub;
    int enc = 0, sign = 0;

    if (key->revoked || (key->subkeys != NULL && key->subkeys->revoked)) {
        snprintf(err, errlen, "the key is revoked");
        return 0;
    }
    if (key->expired || (key->subkeys != NULL && key->subkeys->expired)) {
        snprintf(err, errlen, "the key has expired");
        return 0;
    }
    if (key->invalid || key->disabled || key->subkeys == NULL) {
        snprintf(err, errlen, "the key is not usable");
        return 0;
    }
    for (sub = key->subkeys; sub != NULL; sub = sub->next) {
        if (!pgp_subkey_live(sub))
            continue;
        enc |= sub->can_encrypt;
        sign |= sub->can_sign;
    }
    if (!enc) {
        snprintf(err, errlen, "the key has no usable encryption subkey");
        return 0;
    }
    if (!sign) {
        snprintf(err, errlen, "the key cannot sign");
        return 0;
    }
    return 1;
}

/* Looks fpr up in the keyring of ctx. 1 found (*key_r, release with
 * gpgme_key_unref), 0 not there, -1 failure. The key found must have
 * exactly that primary fingerprint. */
static int pgp_find(gpgme_ctx_t ctx, const char *fpr, gpgme_key_t *key_r,
                    char *err, size_t errlen)
{
    gpgme_key_t key = NULL;
    gpgme_error_t e;

    e = gpgme_get_key(ctx, fpr, &key, 0);
    if (gpgme_err_code(e) == GPG_ERR_EOF ||
        gpgme_err_code(e) == GPG_ERR_AMBIGUOUS_NAME ||
        (e != 0 && !pgp_err_temporary(e)))
        return 0;
    if (e != 0) {
        snprintf(err, errlen, "gpg key lookup: %s", gpgme_strerror(e));
        return -1;
    }
    if (key->subkeys == NULL || key->subkeys->fpr == NULL ||
        strcasecmp(key->subkeys->fpr, fpr) != 0) {
        gpgme_key_unref(key);
        return 0;
    }
    *key_r = key;
    return 1;
}

/* Copies a fingerprint (or key id) from gpgme into out (PGP_FPR_MAX + 1),
 * upper-cased; "" for NULL or an over-long value. */
static void pgp_copy_fpr(char *out, const char *fpr)
{
    size_t n = fpr != NULL ? strlen(fpr) : 0;

    if (n > PGP_FPR_MAX)
        n = 0;
    for (size_t i = 0; i < n; i++)
        out[i] = (char)toupper((unsigned char)fpr[i]);
    out[n] = '\0';
}

/* Checks the key of a good signature: the primary key and the subkey
 * that signed must be live and the subkey a signing one. */
static enum pgp_verdict pgp_sig_key(gpgme_key_t key, const char *sig_fpr)
{
    gpgme_subkey_t sub;

    if (key->revoked || key->subkeys->revoked)
        return PGP_SIG_KEY_REVOKED;
    if (key->expired || key->subkeys->expired)
        return PGP_SIG_KEY_EXPIRED;
    if (key->invalid || key->disabled)
        return PGP_SIG_BAD;
    for (sub = key->subkeys; sub != NULL; sub = sub->next) {
        if (sub->fpr == NULL || strcasecmp(sub->fpr, sig_fpr) != 0)
            continue;
        if (sub->revoked)
            return PGP_SIG_KEY_REVOKED;
        if (sub->expired)
            return PGP_SIG_KEY_EXPIRED;
        if (sub->invalid || sub->disabled || !sub->can_sign)
            return PGP_SIG_BAD;
        return PGP_SIG_GOOD;
    }
    /* A good signature whose subkey the key does not list. */
    return PGP_SIG_BAD;
}

/* Maps the status gpg gave one signature to a verdict. */
static enum pgp_verdict pgp_sig_status(const struct _gpgme_signature *s)
{
    if (s->summary & GPGME_SIGSUM_KEY_REVOKED)
        return PGP_SIG_KEY_REVOKED;
    if (s->summary & GPGME_SIGSUM_KEY_EXPIRED)
        return PGP_SIG_KEY_EXPIRED;
    if (s->summary & GPGME_SIGSUM_SIG_EXPIRED)
        return PGP_SIG_EXPIRED;
    switch (gpgme_err_code(s->status)) {
    case GPG_ERR_NO_ERROR:
        break;
    case GPG_ERR_NO_PUBKEY:
        return PGP_SIG_UNKNOWN_KEY;
    case GPG_ERR_KEY_EXPIRED:
        return PGP_SIG_KEY_EXPIRED;
    case GPG_ERR_CERT_REVOKED:
        return PGP_SIG_KEY_REVOKED;
    case GPG_ERR_SIG_EXPIRED:
        return PGP_SIG_EXPIRED;
    default:
        return PGP_SIG_BAD;
    }
    if (s->summary & (GPGME_SIGSUM_KEY_MISSING))
        return PGP_SIG_UNKNOWN_KEY;
    if ((s->summary & (GPGME_SIGSUM_RED | GPGME_SIGSUM_SYS_ERROR |
                       GPGME_SIGSUM_BAD_POLICY)) ||
        s->wrong_key_usage)
        return PGP_SIG_BAD;
    return PGP_SIG_GOOD;
}

/* Fills *sig from the verify result of ctx. */
static void pgp_verdict_of(gpgme_ctx_t ctx, struct pgp_sig *sig)
{
    gpgme_verify_result_t r = gpgme_op_verify_result(ctx);
    const struct _gpgme_signature *s;
    gpgme_key_t key = NULL;

    if (r == NULL || r->signatures == NULL) {
        sig->verdict = PGP_SIG_NONE;
        return;
    }
    if (r->signatures->next != NULL) {
        sig->verdict = PGP_SIG_MANY;
        return;
    }
    s = r->signatures;
    sig->time = (long long)s->timestamp;
    pgp_copy_fpr(sig->sig_fpr, s->fpr);
    sig->verdict = pgp_sig_status(s);
    if (sig->sig_fpr[0] == '\0') {
        if (sig->verdict == PGP_SIG_GOOD)
            sig->verdict = PGP_SIG_BAD;
        return;
    }
    /* The primary key of the signing (sub)key: gpg finds a key by any of
     * its subkeys' fingerprints. */
    if (gpgme_get_key(ctx, sig->sig_fpr, &key, 0) != 0 || key == NULL ||
        key->subkeys == NULL) {
        if (key != NULL)
            gpgme_key_unref(key);
        if (sig->verdict == PGP_SIG_GOOD)
            sig->verdict = PGP_SIG_UNKNOWN_KEY;
        return;
    }
    pgp_copy_fpr(sig->fpr, key->subkeys->fpr);
    if (sig->verdict == PGP_SIG_GOOD)
        sig->verdict = pgp_sig_key(key, sig->sig_fpr);
    gpgme_key_unref(key);
}

/* Copies and frees the contents of a gpgme data object into a new
 * NUL-terminated buffer. 0, or -1 with err. */
static int pgp_take(gpgme_data_t d, char **out_r, size_t *len_r, char *err,
                    size_t errlen)
{
    size_t n = 0;
    char *mem = gpgme_data_release_and_get_mem(d, &n);

    if (mem == NULL && n != 0) {
        snprintf(err, errlen, "gpgme: no output");
        return -1;
    }
    *out_r = xmalloc(n + 1);
    if (n > 0)
        memcpy(*out_r, mem, n);
    (*out_r)[n] = '\0';
    *len_r = n;
    if (mem != NULL) {
        explicit_bzero(mem, n);
        gpgme_free(mem);
    }
    return 0;
}

/* Runs gpgme_op_verify and classifies its outcome. 0 ran, -1 failure. */
static int pgp_verify(const char *keyring, gpgme_data_t sigdata,
                      gpgme_data_t signed_text, gpgme_data_t plain,
                      gpgme_ctx_t ctx, struct pgp_sig *sig, char *err,
                      size_t errlen)
{
    gpgme_error_t e;

    memset(sig, 0, sizeof *sig);
    e = gpgme_op_verify(ctx, sigdata, signed_text, plain);
    if (e != 0 && pgp_err_temporary(e)) {
        snprintf(err, errlen, "gpg verify in %s: %s", keyring,
                 gpgme_strerror(e));
        return -1;
    }
    if (e != 0) {
        /* Not OpenPGP data, a broken armor, no signature: an answer about
         * the request, not a failure of ours. */
        sig->verdict =
            gpgme_err_code(e) == GPG_ERR_NO_DATA ? PGP_SIG_NONE : PGP_SIG_BAD;
        return 0;
    }
    pgp_verdict_of(ctx, sig);
    return 0;
}

/* 1 if the keyring directory exists. A tenant without one has no keys. */
static int pgp_keyring_exists(const char *keyring)
{
    struct stat st;

    return stat(keyring, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Clears *sig_r and opens a context on keyring for a verification: 1 with
 * *ctx_r; 0 when the tenant has no keyring (verdict unknown key, nothing
 * to verify against); -1 with err. */
static int pgp_verify_begin(const char *keyring, struct pgp_sig *sig_r,
                            gpgme_ctx_t *ctx_r, char *err, size_t errlen)
{
    memset(sig_r, 0, sizeof *sig_r);
    if (!pgp_keyring_exists(keyring)) {
        sig_r->verdict = PGP_SIG_UNKNOWN_KEY;
        return 0;
    }
    return pgp_ctx(keyring, ctx_r, err, errlen) != 0 ? -1 : 1;
}

int pgp_verify_clear(const char *keyring, const char *data, size_t len,
                     struct pgp_sig *sig_r, char **plain_r, size_t *plainlen_r,
                     char *err, size_t errlen)
{
    gpgme_data_t in = NULL, out = NULL;
    gpgme_ctx_t ctx;
    int rc;

    *plain_r = NULL;
    *plainlen_r = 0;
    rc = pgp_verify_begin(keyring, sig_r, &ctx, err, errlen);
    if (rc <= 0)
        return rc;
    if (gpgme_data_new_from_mem(&in, data, len, 0) != 0 ||
        gpgme_data_new(&out) != 0) {
        snprintf(err, errlen, "gpgme: out of memory");
        gpgme_data_release(in);
        gpgme_release(ctx);
        return -1;
    }
    rc = pgp_verify(keyring, in, NULL, out, ctx, sig_r, err, errlen);
    gpgme_data_release(in);
    if (rc == 0 && sig_r->verdict == PGP_SIG_GOOD)
        rc = pgp_take(out, plain_r, plainlen_r, err, errlen);
    else
        gpgme_data_release(out);
    gpgme_release(ctx);
    return rc;
}

int pgp_verify_detached(const char *keyring, const char *signed_data,
                        size_t signed_len, const char *sig, size_t siglen,
                        struct pgp_sig *sig_r, char *err, size_t errlen)
{
    gpgme_data_t sd = NULL, td = NULL;
    gpgme_ctx_t ctx;
    int rc;

    rc = pgp_verify_begin(keyring, sig_r, &ctx, err, errlen);
    if (rc <= 0)
        return rc;
    if (gpgme_data_new_from_mem(&sd, sig, siglen, 0) != 0 ||
        gpgme_data_new_from_mem(&td, signed_data, signed_len, 0) != 0) {
        snprintf(err, errlen, "gpgme: out of memory");
        gpgme_data_release(sd);
        gpgme_release(ctx);
        return -1;
    }
    rc = pgp_verify(keyring, sd, td, NULL, ctx, sig_r, err, errlen);
    gpgme_data_release(sd);
    gpgme_data_release(td);
    gpgme_release(ctx);
    return rc;
}

enum pgp_verdict pgp_sig_check(struct pgp_sig *sig, const char *registered)
{
    if (sig->verdict == PGP_SIG_GOOD &&
        (registered == NULL || registered[0] == '\0' ||
         strcasecmp(sig->fpr, registered) != 0))
        sig->verdict = PGP_SIG_WRONG_KEY;
    return sig->verdict;
}

/* Lists the keys in data without importing them: exactly one public key
 * that pgp_key_ok() accepts. 1 with its fingerprint, 0 refused, -1. */
static int pgp_import_check(gpgme_ctx_t ctx, gpgme_data_t d, char *fpr,
                            char *err, size_t errlen)
{
    gpgme_key_t key, first = NULL;
    gpgme_error_t e;
    int n = 0, secret = 0, ok;

    e = gpgme_op_keylist_from_data_start(ctx, d, 0);
    while (e == 0) {
        e = gpgme_op_keylist_next(ctx, &key);
        if (e != 0)
            break;
        n++;
        secret |= key->secret;
        for (gpgme_subkey_t sub = key->subkeys; sub != NULL; sub = sub->next)
            secret |= sub->secret;
        if (first == NULL)
            first = key;
        else
            gpgme_key_unref(key);
    }
    gpgme_op_keylist_end(ctx);
    if (gpgme_err_code(e) != GPG_ERR_EOF && pgp_err_temporary(e)) {
        snprintf(err, errlen, "gpg: %s", gpgme_strerror(e));
        ok = -1;
    } else if (secret) {
        snprintf(err, errlen,
                 "the input holds a secret key; give the public "
                 "key only");
        ok = 0;
    } else if (n != 1) {
        snprintf(err, errlen,
                 n == 0 ? "no OpenPGP public key in the input"
                        : "more than one key in the input; give exactly one");
        ok = 0;
    } else if (first->subkeys == NULL || first->subkeys->fpr == NULL ||
               !pgp_fpr_norm(first->subkeys->fpr, fpr)) {
        snprintf(err, errlen, "the key has no usable fingerprint");
        ok = 0;
    } else {
        ok = pgp_key_ok(first, err, errlen);
    }
    if (first != NULL)
        gpgme_key_unref(first);
    return ok;
}

/* Imports d and checks that it brought the key fpr. 1, 0 or -1. */
static int pgp_import_do(gpgme_ctx_t ctx, gpgme_data_t d, const char *fpr,
                         char *err, size_t errlen)
{
    gpgme_import_result_t r;
    gpgme_import_status_t st;
    gpgme_error_t e;

    e = gpgme_op_import(ctx, d);
    if (e != 0) {
        snprintf(err, errlen, "gpg import: %s", gpgme_strerror(e));
        return pgp_err_temporary(e) ? -1 : 0;
    }
    r = gpgme_op_import_result(ctx);
    if (r == NULL || r->secret_read != 0) {
        snprintf(err, errlen,
                 "the input holds a secret key; give the public "
                 "key only");
        return 0;
    }
    for (st = r->imports; st != NULL; st = st->next)
        if (st->fpr != NULL && strcasecmp(st->fpr, fpr) == 0 && st->result == 0)
            return 1;
    snprintf(err, errlen, "gpg did not import the key");
    return 0;
}

int pgp_import(const char *keyring, const char *data, size_t len, char *fpr_r,
               char *err, size_t errlen)
{
    static const char secret_armor[] = "PRIVATE KEY BLOCK-----";
    gpgme_data_t d = NULL;
    gpgme_key_t key = NULL;
    gpgme_ctx_t ctx;
    int rc;

    if (memmem(data, len, secret_armor, sizeof secret_armor - 1) != NULL) {
        snprintf(err, errlen,
                 "the input holds a secret key; give the public "
                 "key only");
        return 0;
    }
    if (pgp_mkdir(keyring, err, errlen) != 0)
        return -1;
    if (pgp_ctx(keyring, &ctx, err, errlen) != 0)
        return -1;
    if (gpgme_data_new_from_mem(&d, data, len, 0) != 0) {
        snprintf(err, errlen, "gpgme: out of memory");
        gpgme_release(ctx);
        return -1;
    }
    rc = pgp_import_check(ctx, d, fpr_r, err, errlen);
    if (rc == 1 && gpgme_data_seek(d, 0, SEEK_SET) != 0) {
        snprintf(err, errlen, "gpgme: cannot rewind the key data");
        rc = -1;
    }
    if (rc == 1)
        rc = pgp_import_do(ctx, d, fpr_r, err, errlen);
    /* What the keyring now holds may carry an earlier revocation. */
    if (rc == 1) {
        rc = pgp_find(ctx, fpr_r, &key, err, errlen);
        if (rc == 0)
            snprintf(err, errlen,
                     "the key is not in the keyring after "
                     "import");
        else if (rc == 1)
            rc = pgp_key_ok(key, err, errlen);
        if (key != NULL)
            gpgme_key_unref(key);
    }
    gpgme_data_release(d);
    gpgme_release(ctx);
    return rc;
}

int pgp_delete(const char *keyring, const char *fpr, char *err, size_t errlen)
{
    gpgme_key_t key = NULL;
    gpgme_ctx_t ctx;
    gpgme_error_t e;
    int rc;

    if (!pgp_keyring_exists(keyring))
        return 0;
    if (pgp_ctx(keyring, &ctx, err, errlen) != 0)
        return -1;
    rc = pgp_find(ctx, fpr, &key, err, errlen);
    if (rc == 1) {
        e = gpgme_op_delete_ext(ctx, key, GPGME_DELETE_FORCE);
        rc = 0;
        if (e != 0) {
            snprintf(err, errlen, "gpg delete: %s", gpgme_strerror(e));
            rc = -1;
        }
        gpgme_key_unref(key);
    }
    gpgme_release(ctx);
    return rc < 0 ? -1 : 0;
}

/* Finds fpr in the keyring of ctx and checks it can be encrypted to. 1
 * with *key_r, 0 not usable (err), -1 failure. */
static int pgp_usable(gpgme_ctx_t ctx, const char *fpr, gpgme_key_t *key_r,
                      char *err, size_t errlen)
{
    gpgme_key_t key = NULL;
    int rc = pgp_find(ctx, fpr, &key, err, errlen);

    if (rc == 0)
        snprintf(err, errlen, "key %s is not in the keyring", fpr);
    if (rc != 1)
        return rc;
    if (!pgp_key_ok(key, err, errlen)) {
        gpgme_key_unref(key);
        return 0;
    }
    *key_r = key;
    return 1;
}

int pgp_key_usable(const char *keyring, const char *fpr, char *err,
                   size_t errlen)
{
    gpgme_key_t key = NULL;
    gpgme_ctx_t ctx;
    int rc;

    if (!pgp_keyring_exists(keyring)) {
        snprintf(err, errlen, "key %s is not in the keyring", fpr);
        return 0;
    }
    if (pgp_ctx(keyring, &ctx, err, errlen) != 0)
        return -1;
    rc = pgp_usable(ctx, fpr, &key, err, errlen);
    if (key != NULL)
        gpgme_key_unref(key);
    gpgme_release(ctx);
    return rc;
}

int pgp_encrypt(const char *keyring, const char *fpr, const char *plain,
                size_t len, char **out_r, size_t *outlen_r, char *err,
                size_t errlen)
{
    gpgme_key_t keys[2] = {NULL, NULL};
    gpgme_data_t in = NULL, out = NULL;
    gpgme_encrypt_result_t r;
    gpgme_ctx_t ctx;
    gpgme_error_t e;
    int rc;

    if (!pgp_keyring_exists(keyring)) {
        snprintf(err, errlen, "no keyring %s", keyring);
        return -1;
    }
    if (pgp_ctx(keyring, &ctx, err, errlen) != 0)
        return -1;
    rc = pgp_usable(ctx, fpr, &keys[0], err, errlen);
    if (rc != 1) {
        gpgme_release(ctx);
        return -1;
    }
    gpgme_set_armor(ctx, 1);
    rc = -1;
    if (gpgme_data_new_from_mem(&in, plain, len, 0) != 0 ||
        gpgme_data_new(&out) != 0) {
        snprintf(err, errlen, "gpgme: out of memory");
        goto out;
    }
    /* ALWAYS_TRUST covers the recipients given here, that is the one key
     * whose fingerprint the member registered: the registration is the
     * trust decision, the keyring's web of trust plays no part. */
    e = gpgme_op_encrypt(ctx, keys, GPGME_ENCRYPT_ALWAYS_TRUST, in, out);
    r = e == 0 ? gpgme_op_encrypt_result(ctx) : NULL;
    if (e != 0 || r == NULL || r->invalid_recipients != NULL) {
        snprintf(err, errlen, "gpg encrypt to %s: %s", fpr,
                 e != 0 ? gpgme_strerror(e) : "recipient refused");
        goto out;
    }
    rc = pgp_take(out, out_r, outlen_r, err, errlen);
    out = NULL;
out:
    gpgme_data_release(in);
    gpgme_data_release(out);
    gpgme_key_unref(keys[0]);
    gpgme_release(ctx);
    return rc;
}
