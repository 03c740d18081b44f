/* tls: the server side of TLS for the SMTP worker. One SSL_CTX per worker
 * (certificate chain and key loaded once), and per connection a struct
 * tls_conn: an SSL object between two memory BIOs, so that the session
 * moves the ciphertext itself with libuv. The session feeds what it read
 * from the socket with tls_conn_feed(), pulls plaintext with
 * tls_conn_read() (which runs the handshake first), pushes replies with
 * tls_conn_write(), and after each of these sends what
 * tls_conn_output_read() hands it (handshake messages, TLS 1.3 tickets,
 * alerts, records). Loop thread only; nothing here blocks. */
#ifndef SG_TLS_H
#define SG_TLS_H

#include <openssl/ssl.h>
#include <stddef.h>

/* tls_conn_read() results besides a positive byte count. */
#define TLS_CONN_AGAIN 0  /* needs more ciphertext from the peer */
#define TLS_CONN_EOF (-1) /* the peer sent close_notify */
#define TLS_CONN_ERR (-2) /* fatal: handshake failure, bad record, ... */

/* Builds the server context: TLS 1.2 minimum, no compression, no
 * renegotiation, session tickets on, ECDHE groups X25519/P-256/P-384,
 * certificate chain from cert_file and the private key from key_file (both
 * PEM), checked against each other. NULL on failure with the reason
 * (file name and OpenSSL error) in err. */
SSL_CTX *tls_server_ctx_new(const char *cert_file, const char *key_file,
                            char *err, size_t errlen);
/* Sets *ctxp to NULL. Connections hold their own references. */
void tls_server_ctx_free(SSL_CTX **ctxp);

struct tls_conn;

/* A server-side connection in accept state; aborts on out of memory. */
struct tls_conn *tls_conn_new(SSL_CTX *ctx);
/* Sets *tp to NULL. Sends nothing: call tls_conn_shutdown() first for a
 * clean close. */
void tls_conn_free(struct tls_conn **tp);

/* Hands ciphertext read from the peer to the TLS engine (copied). */
void tls_conn_feed(struct tls_conn *t, const char *buf, size_t len);
/* Runs the handshake until done, then decrypts into out. Returns the
 * number of plaintext octets (> 0), TLS_CONN_AGAIN, TLS_CONN_EOF or
 * TLS_CONN_ERR (reason from tls_conn_error()). Output may be pending
 * afterwards in every case. */
int tls_conn_read(struct tls_conn *t, char *out, size_t cap);
/* Encrypts len octets (handshake must be done). 0, or -1 (fatal). */
int tls_conn_write(struct tls_conn *t, const char *buf, size_t len);
/* Queues a close_notify alert. */
void tls_conn_shutdown(struct tls_conn *t);

/* Octets of ciphertext waiting to be sent. */
size_t tls_conn_output_pending(const struct tls_conn *t);
/* Moves up to cap octets of that ciphertext into out; returns the count. */
size_t tls_conn_output_read(struct tls_conn *t, char *out, size_t cap);

/* 1 once the handshake has completed. */
int tls_conn_handshake_done(const struct tls_conn *t);
/* Negotiated protocol ("TLSv1.3") and cipher suite, for the log. */
const char *tls_conn_version(const struct tls_conn *t);
const char *tls_conn_cipher(const struct tls_conn *t);
/* The client's certificate, if it presented one: its SHA-256 (of the
 * DER) as lower-case hex into hex (cap >= 65), 1; 0 when there is none.
 * Any certificate is accepted at the handshake (requested, not required,
 * whoever issued it): AUTH EXTERNAL authorizes by this fingerprint. */
int tls_conn_peer_sha256(const struct tls_conn *t, char *hex, size_t cap);
/* Channel binding data of type "tls-server-end-point" (RFC 5929) or
 * "tls-exporter" (RFC 9266, TLS 1.3 only) into out (cap >=
 * EVP_MAX_MD_SIZE): its length, or -1 (unknown type, not available on
 * this connection, handshake not done). */
long tls_conn_channel_binding(const struct tls_conn *t, const char *type,
                              unsigned char *out, size_t cap);

/* The reason of the last TLS_CONN_ERR / -1 (never NULL). */
const char *tls_conn_error(const struct tls_conn *t);

#endif
