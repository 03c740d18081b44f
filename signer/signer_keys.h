/* signer_keys: cache of private key files (PEM) under key_dir. An entry is
 * keyed by its path and remembers the file's identity (device, inode,
 * size, modification and change time); a lookup re-reads the file when any
 * of them changed, so that a key replaced on disk is used without a
 * restart. Parsing a key costs more than signing with it, so it is done
 * once per read, and the parsed key is kept for the signing threads. At
 * most SIGNER_KEYS_MAX entries, least recently used evicted; key bytes are
 * wiped before they are freed. Loop thread only. */
#ifndef SG_SIGNER_KEYS_H
#define SG_SIGNER_KEYS_H

#include <stddef.h>

#include <openssl/evp.h>

/* A PEM private key is under 4 KiB even for RSA-4096 (SG_MAX_RSA_BITS); a
 * larger file is not a key we made and is refused unread. */
#define SIGNER_KEYS_MAX_FILE (16 * 1024)
/* Keys cached at once: a few per domain, more domains than one node
 * serves in practice; past it the least recently used is dropped. */
#define SIGNER_KEYS_MAX 256

/* What a key file holds, learnt once when it is read. */
struct signer_keys_info {
    int type; /* OpenSSL key type: EVP_PKEY_RSA, EVP_PKEY_ED25519, ... */
    int bits; /* key size */
    /* Borrowed: the parsed key, valid like the PEM text; a signing thread
     * takes its own reference (EVP_PKEY_up_ref) before it leaves the loop
     * thread. */
    EVP_PKEY *pkey;
};

struct signer_keys;

/* key_dir is copied; relative key file names are resolved against it. */
struct signer_keys *signer_keys_new(const char *key_dir);
/* Wipes and frees every cached key. Sets *kp to NULL. */
void signer_keys_free(struct signer_keys **kp);

/* The PEM text of key_file (relative to key_dir, or absolute), read and
 * parsed now or taken from the cache when the file is unchanged. 0 with
 * *pem_r (NUL-terminated, borrowed: valid until the next call or _free),
 * *len_r and *info_r; or a negative errno: -EFBIG for a file over
 * SIGNER_KEYS_MAX_FILE, -EINVAL for an empty one, not a regular file or a
 * name with ".." in it, -EBADMSG for a file that holds no unencrypted PEM
 * private key. */
int signer_keys_get(struct signer_keys *k, const char *key_file,
                    const char **pem_r, size_t *len_r,
                    struct signer_keys_info *info_r);

/* Keys currently cached (tests). */
size_t signer_keys_count(const struct signer_keys *k);

#endif
