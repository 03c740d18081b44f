/* passwd: yescrypt password hashes with libxcrypt. See passwd.h. */
#include "passwd.h"

#include <crypt.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

/* yescrypt at libxcrypt's default cost (count 0). */
#define PASSWD_PREFIX "$y$"

/* No 0/O, 1/l/I: a password read aloud or from paper is typed right. */
static const char passwd_alphabet[] =
    "23456789abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ";

/* Runs crypt_rn(pw, setting) and copies the result into out. 0, or -1 when
 * libxcrypt refuses the setting (malformed hash) or out is too small. The
 * work area is large (~32 KiB): it comes from the heap so that threads
 * with small stacks can call this. */
static int passwd_crypt(const char *pw, const char *setting, char *out,
                        size_t outlen)
{
    struct crypt_data *cd;
    const char *h;
    size_t n;
    int ret = -1;

    cd = calloc(1, sizeof *cd);
    if (cd == NULL)
        return -1;
    h = crypt_rn(pw, setting, cd, sizeof *cd);
    /* Failure is NULL or, in some versions, a string starting with '*'. */
    if (h != NULL && h[0] != '*') {
        n = strlen(h);
        if (n < outlen) {
            memcpy(out, h, n + 1);
            ret = 0;
        }
    }
    explicit_bzero(cd, sizeof *cd);
    free(cd);
    return ret;
}

int passwd_hash(const char *pw, char *out, size_t outlen)
{
    char salt[CRYPT_GENSALT_OUTPUT_SIZE];

    /* NULL random bytes: libxcrypt takes them from getrandom(2). */
    if (crypt_gensalt_rn(PASSWD_PREFIX, 0, NULL, 0, salt, sizeof salt) == NULL)
        return -1;
    return passwd_crypt(pw, salt, out, outlen);
}

/* Hashes pw with a fixed salt at the same cost as passwd_hash, so that an
 * unknown login costs as much time as a known one. */
static void passwd_dummy(const char *pw)
{
    static const char zeros[16] = {0};
    char salt[CRYPT_GENSALT_OUTPUT_SIZE];
    char out[CRYPT_OUTPUT_SIZE];

    if (crypt_gensalt_rn(PASSWD_PREFIX, 0, zeros, sizeof zeros, salt,
                         sizeof salt) == NULL)
        return;
    (void)passwd_crypt(pw, salt, out, sizeof out);
    explicit_bzero(out, sizeof out);
}

int passwd_verify(const char *pw, const char *hash)
{
    char out[CRYPT_OUTPUT_SIZE];
    size_t n;
    int ok;

    if (hash == NULL) {
        passwd_dummy(pw);
        return 0;
    }
    /* Only modular crypt formats ("$id$..."): traditional DES hashes look
     * at 8 characters of the password, and "" or "*" mean "no password". */
    n = strlen(hash);
    if (hash[0] != '$' || n >= sizeof out)
        return 0;
    if (passwd_crypt(pw, hash, out, sizeof out) != 0)
        return 0;
    ok = strlen(out) == n && CRYPTO_memcmp(out, hash, n) == 0;
    explicit_bzero(out, sizeof out);
    return ok;
}

int passwd_random(char *out, size_t outlen, size_t len)
{
    /* Bytes at or above the largest multiple of the alphabet size are
     * dropped so that every character is equally likely. */
    const size_t asize = sizeof passwd_alphabet - 1;
    const unsigned limit = 256 - 256 % asize;
    unsigned char rnd[64];
    size_t i = 0, j;

    if (len == 0 || outlen <= len)
        return -1;
    while (i < len) {
        if (RAND_bytes(rnd, sizeof rnd) != 1) {
            explicit_bzero(out, outlen);
            return -1;
        }
        for (j = 0; j < sizeof rnd && i < len; j++)
            if (rnd[j] < limit)
                out[i++] = passwd_alphabet[rnd[j] % asize];
    }
    out[len] = '\0';
    OPENSSL_cleanse(rnd, sizeof rnd);
    return 0;
}
