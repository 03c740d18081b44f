/* signer_pkey: hands libopendkim a private key that is parsed already.
 *
 * libopendkim 2.11 (Debian 12) takes a signing key only as text: dkim_sign()
 * copies it with strlen(), so DER, which holds zero octets, cannot pass, and
 * there is no call that accepts a parsed key. For every signature it parses
 * the text again with PEM_read_bio_PrivateKey(), which in OpenSSL 3 costs
 * about 0.33 ms, more than the RSA-2048 signature itself; a freshly parsed
 * RSA key then costs another 0.3 ms at its first use (blinding and
 * Montgomery set-up that a long-lived key keeps).
 *
 * This module defines PEM_read_bio_PrivateKey() in the signer program. The
 * dynamic linker binds libopendkim's call to the program's definition before
 * libcrypto's (ordinary ELF symbol interposition). While the calling thread
 * has offered a key with signer_pkey_offer(), a read from a memory BIO that
 * holds exactly the offered PEM text returns the offered key with one more
 * reference, which libopendkim drops with EVP_PKEY_free() like a key it
 * parsed itself. Any other call is passed to OpenSSL's parser
 * (PEM_read_bio_PrivateKey_ex(), which is what libcrypto's own
 * PEM_read_bio_PrivateKey() calls), so nothing else changes.
 *
 * The offer is per thread (thread-local storage), because the hand-off
 * crosses a library call that carries no context of ours: signer_dkim
 * offers the key just before libopendkim may parse it and withdraws it right
 * after, on the same thread. */
#ifndef SG_SIGNER_PKEY_H
#define SG_SIGNER_PKEY_H

#include <stddef.h>

#include <openssl/evp.h>

/* Offers pkey, the parsed form of the len octets of PEM text at pem, to the
 * next PEM_read_bio_PrivateKey() call of this thread that reads that text.
 * Both are borrowed until signer_pkey_withdraw(); pkey may be NULL (nothing
 * offered). Replaces an earlier offer of this thread. */
void signer_pkey_offer(const char *pem, size_t len, EVP_PKEY *pkey);

/* Ends this thread's offer. Returns how many times the key was handed out
 * since signer_pkey_offer() (0: every read parsed the text). */
unsigned signer_pkey_withdraw(void);

/* Makes *freed_r 1 once pkey is freed for good (its last reference
 * dropped), so that a caller can learn whether a library released the
 * references it was given. 0, or -1 if OpenSSL refuses. Loop thread, at
 * start. */
int signer_pkey_watch(EVP_PKEY *pkey, int *freed_r);

#endif
