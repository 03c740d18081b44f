/* keygen: DKIM key pairs for `subgate key generate` with OpenSSL EVP: RSA
 * (RFC 6376 3.3.1) and Ed25519 (RFC 8463). Private keys go to disk as
 * PKCS#8 PEM, mode 0600, written to a temporary file, fsync'd and renamed
 * into place. Single-threaded. */
#ifndef SG_ADMIN_KEYGEN_H
#define SG_ADMIN_KEYGEN_H

#include <stddef.h>

#include <openssl/evp.h>

/* Generates a key of algo ("rsa" with bits, or "ed25519"). 0 and *pkey_r
 * (free with EVP_PKEY_free), or -1 with a message in err. */
int keygen_new(const char *algo, unsigned bits, EVP_PKEY **pkey_r, char *err,
               size_t errlen);

/* The DNS p= value (RFC 6376 3.6.1) into out: for rsa the base64 of the
 * DER SubjectPublicKeyInfo, for ed25519 the base64 of the raw 32-octet
 * public key (RFC 8463 4.2). 0, or -1 when it does not fit or OpenSSL
 * fails. */
int keygen_public_b64(EVP_PKEY *pkey, const char *algo, char *out,
                      size_t outlen);

/* Writes the private key to path (dir must exist): a temporary file in
 * dir, mode 0600, fsync, rename to path, fsync of dir. Nothing is left
 * behind on failure. 0 or -1 with a message in err. */
int keygen_write_pem(EVP_PKEY *pkey, const char *dir, const char *path,
                     char *err, size_t errlen);

#endif
