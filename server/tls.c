/* tls: OpenSSL server context and memory-BIO connections; see tls.h. */
#include "tls.h"

#include <limits.h>
#include <openssl/err.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "../common/xalloc.h"

#define TLS_ERR_MAX 256
/* TLS 1.2 suites: forward secrecy (ECDHE) and AEAD (AES-GCM, ChaCha20-
 * Poly1305) only, as current guidance for servers lists them; no CBC, no
 * RSA key exchange, no DHE. TLS 1.3 keeps OpenSSL's suites, all AEAD. */
#define TLS_CIPHERS_12                                                         \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"               \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"               \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

struct tls_conn {
    SSL *ssl;  /* owned; owns the two BIOs */
    BIO *rbio; /* borrowed from ssl: ciphertext from the peer */
    BIO *wbio; /* borrowed from ssl: ciphertext to the peer */
    char err[TLS_ERR_MAX];
};

/* Accepts every client certificate: trust is the fingerprint's, checked
 * at AUTH EXTERNAL against the member's registered ones. */
static int tls_verify_any(int ok, X509_STORE_CTX *store)
{
    (void)ok;
    (void)store;
    return 1;
}

/* The first queued OpenSSL error as text, or fallback. Clears the queue. */
static void tls_error_text(char *out, size_t outlen, const char *fallback)
{
    unsigned long e = ERR_get_error();

    if (e == 0)
        snprintf(out, outlen, "%s", fallback);
    else
        ERR_error_string_n(e, out, outlen);
    ERR_clear_error();
}

static int tls_ctx_load(SSL_CTX *ctx, const char *cert_file,
                        const char *key_file, char *err, size_t errlen)
{
    char why[TLS_ERR_MAX];

    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        tls_error_text(why, sizeof(why), "unreadable");
        snprintf(err, errlen, "tls_cert %s: %s", cert_file, why);
        return -1;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
        tls_error_text(why, sizeof(why), "unreadable");
        snprintf(err, errlen, "tls_key %s: %s", key_file, why);
        return -1;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        tls_error_text(why, sizeof(why), "mismatch");
        snprintf(err, errlen, "tls_key %s does not match tls_cert %s: %s",
                 key_file, cert_file, why);
        return -1;
    }
    return 0;
}

SSL_CTX *tls_server_ctx_new(const char *cert_file, const char *key_file,
                            char *err, size_t errlen)
{
    static const unsigned char sid_ctx[] = "subgate";
    char why[TLS_ERR_MAX];
    SSL_CTX *ctx;

    ERR_clear_error();
    ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        tls_error_text(why, sizeof(why), "SSL_CTX_new failed");
        snprintf(err, errlen, "TLS context: %s", why);
        return NULL;
    }
    /* Older protocols have known weaknesses and every client that submits
     * mail today speaks TLS 1.2. Compression leaks plaintext (CRIME);
     * client-initiated renegotiation costs us CPU for nothing. Tickets
     * stay on (the default) so returning clients resume cheaply; ECDHE
     * group selection is automatic in OpenSSL 3, the list just orders
     * it. */
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
        SSL_CTX_set_cipher_list(ctx, TLS_CIPHERS_12) != 1 ||
        SSL_CTX_set1_groups_list(ctx, "X25519:P-256:P-384") != 1 ||
        SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1) !=
            1) {
        tls_error_text(why, sizeof(why), "setting options failed");
        snprintf(err, errlen, "TLS context: %s", why);
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    /* Idle sessions (the common case) give their record buffers back. */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    /* Ask for a client certificate without requiring one (SASL
     * EXTERNAL): members are known by the certificate's fingerprint, so
     * any certificate is accepted here, whoever issued it. */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, tls_verify_any);
    if (tls_ctx_load(ctx, cert_file, key_file, err, errlen) != 0) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

void tls_server_ctx_free(SSL_CTX **ctxp)
{
    SSL_CTX_free(*ctxp);
    *ctxp = NULL;
}

struct tls_conn *tls_conn_new(SSL_CTX *ctx)
{
    struct tls_conn *t = xcalloc(1, sizeof(*t));

    t->ssl = SSL_new(ctx);
    t->rbio = BIO_new(BIO_s_mem());
    t->wbio = BIO_new(BIO_s_mem());
    if (t->ssl == NULL || t->rbio == NULL || t->wbio == NULL)
        log_panic("out of memory creating a TLS connection");
    /* An empty read BIO means "wait for more", not end of file. */
    BIO_set_mem_eof_return(t->rbio, -1);
    SSL_set_bio(t->ssl, t->rbio, t->wbio);
    SSL_set_accept_state(t->ssl);
    return t;
}

void tls_conn_free(struct tls_conn **tp)
{
    struct tls_conn *t = *tp;

    if (t == NULL)
        return;
    SSL_free(t->ssl);
    free(t);
    *tp = NULL;
}

void tls_conn_feed(struct tls_conn *t, const char *buf, size_t len)
{
    while (len > 0) {
        int chunk = len > INT_MAX ? INT_MAX : (int)len;
        int n = BIO_write(t->rbio, buf, chunk);

        if (n <= 0)
            log_panic("out of memory buffering TLS input");
        buf += n;
        len -= (size_t)n;
    }
}

/* Maps the result r of an SSL call to a TLS_CONN_* code. */
static int tls_conn_status(struct tls_conn *t, int r)
{
    switch (SSL_get_error(t->ssl, r)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE: /* a memory BIO always takes all */
        return TLS_CONN_AGAIN;
    case SSL_ERROR_ZERO_RETURN:
        return TLS_CONN_EOF;
    default:
        tls_error_text(t->err, sizeof(t->err), "protocol error");
        return TLS_CONN_ERR;
    }
}

int tls_conn_read(struct tls_conn *t, char *out, size_t cap)
{
    int r;

    ERR_clear_error();
    if (!SSL_is_init_finished(t->ssl)) {
        r = SSL_do_handshake(t->ssl);
        if (r != 1)
            return tls_conn_status(t, r);
    }
    r = SSL_read(t->ssl, out, cap > INT_MAX ? INT_MAX : (int)cap);
    if (r > 0)
        return r;
    return tls_conn_status(t, r);
}

int tls_conn_write(struct tls_conn *t, const char *buf, size_t len)
{
    int r;

    ERR_clear_error();
    while (len > 0) {
        int chunk = len > INT_MAX ? INT_MAX : (int)len;

        r = SSL_write(t->ssl, buf, chunk);
        if (r <= 0) {
            tls_error_text(t->err, sizeof(t->err), "write failed");
            return -1;
        }
        buf += r;
        len -= (size_t)r;
    }
    return 0;
}

void tls_conn_shutdown(struct tls_conn *t)
{
    ERR_clear_error();
    if (SSL_is_init_finished(t->ssl))
        (void)SSL_shutdown(t->ssl);
    ERR_clear_error();
}

size_t tls_conn_output_pending(const struct tls_conn *t)
{
    return BIO_ctrl_pending(t->wbio);
}

size_t tls_conn_output_read(struct tls_conn *t, char *out, size_t cap)
{
    int n = BIO_read(t->wbio, out, cap > INT_MAX ? INT_MAX : (int)cap);

    return n > 0 ? (size_t)n : 0;
}

int tls_conn_handshake_done(const struct tls_conn *t)
{
    return SSL_is_init_finished(t->ssl);
}

const char *tls_conn_version(const struct tls_conn *t)
{
    return SSL_get_version(t->ssl);
}

const char *tls_conn_cipher(const struct tls_conn *t)
{
    const char *c = SSL_get_cipher_name(t->ssl);

    return c != NULL ? c : "none";
}

const char *tls_conn_error(const struct tls_conn *t)
{
    return t->err[0] != '\0' ? t->err : "unknown error";
}

int tls_conn_peer_sha256(const struct tls_conn *t, char *hex, size_t cap)
{
    X509 *x = SSL_get0_peer_certificate(t->ssl);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0, i;

    if (x == NULL || cap < 2 * 32 + 1 ||
        X509_digest(x, EVP_sha256(), md, &n) != 1 || n != 32)
        return 0;
    for (i = 0; i < n; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    return 1;
}

/* RFC 5929 4.1: the hash of our certificate, with the hash function of
 * its signature, MD5 and SHA-1 replaced by SHA-256. */
static long tls_end_point(const struct tls_conn *t, unsigned char *out,
                          size_t cap)
{
    X509 *x = SSL_get_certificate(t->ssl);
    const EVP_MD *md = EVP_sha256();
    unsigned int n = 0;
    int md_nid = NID_undef;

    if (x == NULL || cap < EVP_MAX_MD_SIZE)
        return -1;
    if (OBJ_find_sigid_algs(X509_get_signature_nid(x), &md_nid, NULL) == 1 &&
        md_nid != NID_md5 && md_nid != NID_sha1 && md_nid != NID_undef &&
        EVP_get_digestbynid(md_nid) != NULL)
        md = EVP_get_digestbynid(md_nid);
    if (X509_digest(x, md, out, &n) != 1)
        return -1;
    return (long)n;
}

long tls_conn_channel_binding(const struct tls_conn *t, const char *type,
                              unsigned char *out, size_t cap)
{
    static const char label[] = "EXPORTER-Channel-Binding";

    if (!SSL_is_init_finished(t->ssl))
        return -1;
    if (strcmp(type, "tls-server-end-point") == 0)
        return tls_end_point(t, out, cap);
    /* RFC 9266: TLS 1.3 only (earlier versions need extended master
     * secret, which we do not check). */
    if (strcmp(type, "tls-exporter") == 0 &&
        SSL_version(t->ssl) == TLS1_3_VERSION && cap >= 32 &&
        SSL_export_keying_material(t->ssl, out, 32, label, sizeof label - 1,
                                   NULL, 0, 0) == 1)
        return 32;
    return -1;
}
