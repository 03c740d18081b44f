/* pgp: the OpenPGP operations of password reset, over gpgme: importing a
 * member's public key into a tenant's keyring, verifying a signed
 * change-password request against that keyring, encrypting a reply to
 * exactly one key of it. A keyring is a GnuPG home directory holding
 * public keys only (pgp_dir/TENANT); no secret key is ever imported and
 * gpg is kept offline (no key servers, no key retrieval).
 *
 * Fingerprints are the primary key's, upper-case hex without spaces (40
 * digits for v4 keys, 64 for v5). Every call runs gpg as a child process
 * and blocks. Single-threaded: call pgp_init() once first. */
#ifndef SG_PGP_H
#define SG_PGP_H

#include <stddef.h>

/* Hex digits of the longest fingerprint (v5, SHA-256). */
#define PGP_FPR_MAX 64

/* What a signature check found. Only PGP_SIG_GOOD lets a request on. */
enum pgp_verdict {
    PGP_SIG_GOOD,        /* valid, by a usable key of the keyring */
    PGP_SIG_NONE,        /* no signature in the data */
    PGP_SIG_MANY,        /* more than one signature */
    PGP_SIG_BAD,         /* does not match the signed data */
    PGP_SIG_UNKNOWN_KEY, /* the key is not in the keyring */
    PGP_SIG_KEY_EXPIRED, /* the key (or signing subkey) has expired */
    PGP_SIG_KEY_REVOKED, /* the key (or signing subkey) is revoked */
    PGP_SIG_EXPIRED,     /* the signature itself has expired */
    PGP_SIG_WRONG_KEY,   /* good, but not by the registered key */
};

/* The outcome of a verification. */
struct pgp_sig {
    enum pgp_verdict verdict;
    char fpr[PGP_FPR_MAX + 1];     /* primary key; "" when unknown */
    char sig_fpr[PGP_FPR_MAX + 1]; /* the signing (sub)key or its id */
    long long time;                /* signature creation, Unix time */
};

/* Initialises gpgme (version check, locale). 0, or -1 with err. */
int pgp_init(char *err, size_t errlen);

/* The keyring directory of tenant: pgp_dir/TENANT into out. 0, or -1 when
 * it does not fit. */
int pgp_keyring_path(const char *pgp_dir, const char *tenant, char *out,
                     size_t outlen);

/* A short name for a verdict, for log lines ("good", "unknown-key"). */
const char *pgp_verdict_name(enum pgp_verdict v);

/* 1 if s is a fingerprint (40 or 64 hex digits, spaces allowed between
 * groups); its normal form goes into out (PGP_FPR_MAX + 1). 0 if not. */
int pgp_fpr_norm(const char *s, char *out);

/* Imports the one public key in data (armored or binary, len octets) into
 * keyring, which is created (0700) if missing. Refuses secret keys, more
 * or fewer than one key, and keys that are revoked, expired, invalid or
 * without a usable encryption subkey or signing capability. 1 imported,
 * fingerprint in fpr_r (PGP_FPR_MAX + 1); 0 refused, reason in err; -1
 * failure (gpg could not run), reason in err. */
int pgp_import(const char *keyring, const char *data, size_t len, char *fpr_r,
               char *err, size_t errlen);

/* Removes the public key fpr from keyring (after a member's key was
 * replaced). 0, or -1 with err; a key that is not there is 0. */
int pgp_delete(const char *keyring, const char *fpr, char *err, size_t errlen);

/* Checks that fpr names a key of keyring that can be encrypted to now:
 * present, not revoked, expired, disabled or invalid. 1 usable, 0 not
 * (reason in err), -1 failure. */
int pgp_key_usable(const char *keyring, const char *fpr, char *err,
                   size_t errlen);

/* Verifies an inline clear-signed text ("-----BEGIN PGP SIGNED
 * MESSAGE-----" to "-----END PGP SIGNATURE-----"). *sig_r gets the
 * verdict; on PGP_SIG_GOOD *plain_r holds the signed text (malloc'd,
 * NUL-terminated, *plainlen_r octets). 0 when the verification ran, -1
 * failure (reason in err). */
int pgp_verify_clear(const char *keyring, const char *data, size_t len,
                     struct pgp_sig *sig_r, char **plain_r, size_t *plainlen_r,
                     char *err, size_t errlen);

/* Verifies a detached signature sig over signed (RFC 3156 multipart/
 * signed: the first part, CRLF line ends). 0 ran (*sig_r), -1 failure. */
int pgp_verify_detached(const char *keyring, const char *signed_data,
                        size_t signed_len, const char *sig, size_t siglen,
                        struct pgp_sig *sig_r, char *err, size_t errlen);

/* Holds a verified signature against the fingerprint registered for the
 * member (from the database or a directory attribute): a good signature
 * by another key becomes PGP_SIG_WRONG_KEY. registered NULL or "" means
 * none registered. Returns the final verdict (also stored in sig). */
enum pgp_verdict pgp_sig_check(struct pgp_sig *sig, const char *registered);

/* Encrypts plain to the key fpr of keyring only (trusted for this call as
 * the registered key, whatever the keyring's trust says), ASCII-armored.
 * 0 and *out_r (malloc'd, NUL-terminated, *outlen_r octets), or -1 with
 * err. */
int pgp_encrypt(const char *keyring, const char *fpr, const char *plain,
                size_t len, char **out_r, size_t *outlen_r, char *err,
                size_t errlen);

#endif
