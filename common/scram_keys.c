/* scram_keys: SCRAM-SHA-256 key derivation; see scram_keys.h. */
#include "scram_keys.h"

#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

int scram_keys_derive(const char *password, const unsigned char *salt,
                      size_t salt_len, unsigned iterations,
                      struct scram_keys *k)
{
    unsigned char salted[SCRAM_KEY_LEN], client_key[SCRAM_KEY_LEN];
    unsigned int n = 0;
    int rc = -1;

    if (salt_len == 0 || salt_len > sizeof k->salt || iterations == 0 ||
        iterations > 0x7fffffffU || strlen(password) > 0x7fffffffU)
        return -1;
    memset(k, 0, sizeof *k);
    if (PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, (int)salt_len,
                          (int)iterations, EVP_sha256(), sizeof salted,
                          salted) != 1)
        goto out;
    if (HMAC(EVP_sha256(), salted, sizeof salted,
             (const unsigned char *)"Client Key", 10, client_key, &n) == NULL ||
        n != SCRAM_KEY_LEN)
        goto out;
    SHA256(client_key, sizeof client_key, k->stored_key);
    if (HMAC(EVP_sha256(), salted, sizeof salted,
             (const unsigned char *)"Server Key", 10, k->server_key,
             &n) == NULL ||
        n != SCRAM_KEY_LEN)
        goto out;
    memcpy(k->salt, salt, salt_len);
    k->salt_len = salt_len;
    k->iterations = iterations;
    rc = 0;
out:
    OPENSSL_cleanse(salted, sizeof salted);
    OPENSSL_cleanse(client_key, sizeof client_key);
    return rc;
}

int scram_keys_new(const char *password, unsigned iterations,
                   struct scram_keys *k)
{
    unsigned char salt[SCRAM_SALT_LEN];

    if (RAND_bytes(salt, sizeof salt) != 1)
        return -1;
    return scram_keys_derive(password, salt, sizeof salt, iterations, k);
}
