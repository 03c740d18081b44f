/* signer_dkim: DKIM signing (RFC 6376, RFC 8463) with libopendkim. One
 * library handle per process, created at start with subgate's signing
 * policy: relaxed/relaxed canonicalisation, no l= tag, a fixed list of
 * signed header fields, From and Subject over-signed. A parsed message
 * (struct signer_dkim_msg) borrows the caller's octets and can be signed
 * with several keys. The library handle may be shared by threads: each
 * signature uses its own libopendkim handle; a message and its parse belong
 * to one thread at a time. */
#ifndef SG_SIGNER_DKIM_H
#define SG_SIGNER_DKIM_H

#include <stddef.h>

#include <openssl/evp.h>

/* Signature algorithms; the names are the a= tag values. */
enum signer_dkim_algo {
    SIGNER_DKIM_RSA_SHA256,
    SIGNER_DKIM_ED25519_SHA256,
};

/* One header field of a parsed message: its octets from the name to the
 * end of the last continuation line, without the final CRLF. */
struct signer_dkim_field {
    size_t off;
    size_t len;
};

/* A message split into header fields and body. */
struct signer_dkim_msg {
    const char *data;                 /* borrowed: the whole message */
    size_t len;                       /* octets at data */
    struct signer_dkim_field *fields; /* owned, nfields entries */
    size_t nfields;                   /* 1..SG_MAX_HEADER_COUNT */
    size_t body_off; /* first body octet (len when there is no body) */
};

/* A private key to sign with. */
struct signer_dkim_key {
    const char *selector;       /* borrowed, the s= tag */
    enum signer_dkim_algo algo; /* must match the key type */
    const char *pem;            /* borrowed, NUL-terminated PEM text */
    /* Borrowed: pem already parsed, handed to libopendkim instead of
     * parsing pem again for the signature (signer_pkey.h); NULL lets
     * libopendkim parse pem. */
    EVP_PKEY *pkey;
};

struct signer_dkim;

/* Creates the library handle with the signing options set. NULL with a
 * message in err when libopendkim refuses (start-up failure). */
struct signer_dkim *signer_dkim_new(char *err, size_t errlen);
/* Frees the handle; no signature may be in progress. Sets *dp to NULL. */
void signer_dkim_free(struct signer_dkim **dp);
/* 1 if libopendkim signs with the parsed keys it is handed (struct
 * signer_dkim_key's pkey, see signer_pkey.h), as found by a test signature
 * when the handle was made; 0 if it parses every key itself. */
int signer_dkim_handoff(const struct signer_dkim *d);

/* Maps a database algorithm name ("rsa", "ed25519") to the algorithm.
 * 0, or -1 for an unknown name. */
int signer_dkim_algo_parse(const char *name, enum signer_dkim_algo *algo_r);
/* The a= tag value: "rsa-sha256" or "ed25519-sha256". */
const char *signer_dkim_algo_name(enum signer_dkim_algo algo);

/* Whether a private key of OpenSSL type (EVP_PKEY_RSA, EVP_PKEY_ED25519,
 * as signer_keys reports it) and size can sign with algo: RSA of at least
 * SG_MIN_RSA_BITS for rsa-sha256, Ed25519 for ed25519-sha256. 0, or -1
 * with the reason ("key unusable: ...") in err. */
int signer_dkim_key_check(enum signer_dkim_algo algo, int type, int bits,
                          char *err, size_t errlen);

/* Splits data (CRLF line ends) into header fields and body: a field is a
 * line that does not start with SP or HTAB plus its continuation lines;
 * the header section ends at the first empty line or at the end of data.
 * Bounded by SG_MAX_HEADER_COUNT, SG_MAX_HEADER_FIELD and
 * SG_MAX_HEADER_SECTION. 0 and *m filled (free with _msg_clear), or -1
 * with *err_r set to a static reason ("no header", "too many header
 * fields", "malformed header") and *m left empty. */
int signer_dkim_msg_parse(struct signer_dkim_msg *m, const char *data,
                          size_t len, const char **err_r);
/* Frees the field list; *m becomes empty. Safe on an empty message. */
void signer_dkim_msg_clear(struct signer_dkim_msg *m);

/* Signs m with key for domain (the d= tag); id names the message in
 * libopendkim's own diagnostics (the queue id). The key must have passed
 * signer_dkim_key_check(): libopendkim signs with whatever key it gets and
 * labels the result with the algorithm asked for. 0 and *sig_r set to a
 * heap string (free()) holding one header field "DKIM-Signature: ...",
 * folded with CRLF HTAB and ending in CRLF, length in *siglen_r; -1 with a
 * reason in err (bad key, message refused by the library). */
int signer_dkim_sign(struct signer_dkim *d, const char *id, const char *domain,
                     const struct signer_dkim_key *key,
                     const struct signer_dkim_msg *m, char **sig_r,
                     size_t *siglen_r, char *err, size_t errlen);

#endif
