/* keygen: DKIM key pairs with OpenSSL. See keygen.h. */
#include "keygen.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "../common/fsutil.h"

/* RFC 8463 3: an Ed25519 public key is 32 octets. */
#define KEYGEN_ED25519_LEN 32

/* Formats what with OpenSSL's last error into err. */
static void keygen_ossl_err(const char *what, char *err, size_t errlen)
{
    char buf[256];
    unsigned long e = ERR_get_error();

    if (e != 0)
        ERR_error_string_n(e, buf, sizeof buf);
    else
        snprintf(buf, sizeof buf, "unknown error");
    snprintf(err, errlen, "%s: %s", what, buf);
    ERR_clear_error();
}

int keygen_new(const char *algo, unsigned bits, EVP_PKEY **pkey_r, char *err,
               size_t errlen)
{
    EVP_PKEY *pkey = NULL;

    if (strcmp(algo, "rsa") == 0)
        pkey = EVP_RSA_gen(bits);
    else if (strcmp(algo, "ed25519") == 0)
        pkey = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    else {
        snprintf(err, errlen, "unknown algorithm %s", algo);
        return -1;
    }
    if (pkey == NULL) {
        keygen_ossl_err("key generation", err, errlen);
        return -1;
    }
    *pkey_r = pkey;
    return 0;
}

/* Base64 (RFC 4648, no line breaks) of in into out. 0 or -1 if too
 * small. */
static int keygen_b64(const unsigned char *in, size_t len, char *out,
                      size_t outlen)
{
    if (len > 0xffffff || outlen < 4 * ((len + 2) / 3) + 1)
        return -1;
    EVP_EncodeBlock((unsigned char *)out, in, (int)len);
    return 0;
}

int keygen_public_b64(EVP_PKEY *pkey, const char *algo, char *out,
                      size_t outlen)
{
    unsigned char raw[KEYGEN_ED25519_LEN], *der = NULL;
    size_t rawlen = sizeof raw;
    int len, ret;

    if (strcmp(algo, "ed25519") == 0) {
        if (EVP_PKEY_get_raw_public_key(pkey, raw, &rawlen) != 1 ||
            rawlen != KEYGEN_ED25519_LEN)
            return -1;
        return keygen_b64(raw, rawlen, out, outlen);
    }
    len = i2d_PUBKEY(pkey, &der);
    if (len <= 0)
        return -1;
    ret = keygen_b64(der, (size_t)len, out, outlen);
    OPENSSL_free(der);
    return ret;
}

/* Writes the PEM to fd and syncs it. 0 or -1 with err. */
static int keygen_write_fd(EVP_PKEY *pkey, int fd, char *err, size_t errlen)
{
    BIO *bio = BIO_new_fd(fd, BIO_NOCLOSE);
    int ok;

    if (bio == NULL) {
        keygen_ossl_err("BIO_new_fd", err, errlen);
        return -1;
    }
    /* PKCS#8 (RFC 5208), unencrypted: the key directory's mode protects
     * it, and the signer must read it unattended. */
    ok = PEM_write_bio_PKCS8PrivateKey(bio, pkey, NULL, NULL, 0, NULL, NULL) ==
             1 &&
         BIO_flush(bio) == 1;
    BIO_free(bio);
    if (!ok) {
        keygen_ossl_err("writing key", err, errlen);
        return -1;
    }
    if (fsync(fd) != 0) {
        snprintf(err, errlen, "fsync: %s", strerror(errno));
        return -1;
    }
    return 0;
}

/* Makes the rename durable. */
static int keygen_sync_dir(const char *dir, char *err, size_t errlen)
{
    int rc = fsutil_sync_dir(dir);

    if (rc < 0) {
        snprintf(err, errlen, "%s: fsync: %s", dir, strerror(-rc));
        return -1;
    }
    return 0;
}

int keygen_write_pem(EVP_PKEY *pkey, const char *dir, const char *path,
                     char *err, size_t errlen)
{
    char tmp[4096];
    int fd;

    if ((size_t)snprintf(tmp, sizeof tmp, "%s/.keygen.XXXXXX", dir) >=
        sizeof tmp) {
        snprintf(err, errlen, "%s: path too long", dir);
        return -1;
    }
    /* mkstemp creates the file 0600; fchmod states it whatever the libc. */
    fd = mkstemp(tmp);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", tmp, strerror(errno));
        return -1;
    }
    if (fchmod(fd, 0600) != 0) {
        snprintf(err, errlen, "%s: chmod: %s", tmp, strerror(errno));
        goto fail;
    }
    if (keygen_write_fd(pkey, fd, err, errlen) != 0)
        goto fail;
    if (close(fd) != 0) {
        fd = -1;
        snprintf(err, errlen, "%s: close: %s", tmp, strerror(errno));
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        snprintf(err, errlen, "rename to %s: %s", path, strerror(errno));
        goto fail;
    }
    return keygen_sync_dir(dir, err, errlen);
fail:
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    return -1;
}
