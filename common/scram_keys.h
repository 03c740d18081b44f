/* scram_keys: the keys a SCRAM-SHA-256 server stores for a member instead
 * of the password (RFC 5802 3): StoredKey and ServerKey, derived from the
 * password with PBKDF2-HMAC-SHA256 over a salt. Written by `subgate
 * member add|passwd`, read by the submission server (scram.h). Slow by
 * design: never on the event loop. Any thread. */
#ifndef SG_SCRAM_KEYS_H
#define SG_SCRAM_KEYS_H

#include <stddef.h>

#define SCRAM_KEY_LEN 32          /* SHA-256 output */
#define SCRAM_MAX_SALT 64         /* raw salt octets kept at most */
#define SCRAM_SALT_LEN 16         /* salt of newly derived keys */
#define SCRAM_MIN_ITERATIONS 4096 /* RFC 7677 4 */

struct scram_keys {
    unsigned iterations;
    size_t salt_len;
    unsigned char salt[SCRAM_MAX_SALT];
    unsigned char stored_key[SCRAM_KEY_LEN];
    unsigned char server_key[SCRAM_KEY_LEN];
};

/* Derives k from password, salt and iterations. The password is used as
 * given (SASLprep is not applied; it leaves ASCII passwords unchanged).
 * 0, or -1 (empty or oversized salt, iterations 0 or above INT_MAX,
 * OpenSSL failure). */
int scram_keys_derive(const char *password, const unsigned char *salt,
                      size_t salt_len, unsigned iterations,
                      struct scram_keys *k);
/* The same with a fresh random salt of SCRAM_SALT_LEN octets. 0 or -1. */
int scram_keys_new(const char *password, unsigned iterations,
                   struct scram_keys *k);

#endif
