/* scram: the server side of SASL SCRAM-SHA-256 and SCRAM-SHA-256-PLUS
 * (RFC 5802, RFC 7677). A pure state machine: no I/O, no allocation, no
 * database; the caller looks up the member's stored keys between the two
 * client messages, supplies the server nonce and, for -PLUS, the channel
 * binding data of its TLS connection. Messages are the decoded SASL
 * payloads (the caller does the base64 of RFC 4954). Any thread; one
 * struct scram per exchange, in caller storage; wipe it with
 * scram_clear() when done. */
#ifndef SG_SCRAM_H
#define SG_SCRAM_H

#include <stddef.h>

#include "../common/scram_keys.h"

#define SCRAM_MAX_MSG 1024   /* longest client message accepted */
#define SCRAM_MAX_USER 320   /* decoded user name (an address) */
#define SCRAM_MAX_NONCE 128  /* client or server nonce part */
#define SCRAM_MAX_CB_NAME 32 /* channel binding type name */
#define SCRAM_MAX_CB 64      /* channel binding data (a digest) */

enum scram_step {
    SCRAM_STEP_FIRST, /* waiting for client-first */
    SCRAM_STEP_KEYS,  /* client-first parsed; waiting for the keys */
    SCRAM_STEP_FINAL, /* server-first sent; waiting for client-final */
    SCRAM_STEP_DONE,  /* verified or refused */
};

struct scram {
    enum scram_step step;
    int plus;     /* the -PLUS mechanism was chosen */
    char cb_flag; /* 'n', 'y' or 'p' */
    char cb_name[SCRAM_MAX_CB_NAME + 1];
    char user[SCRAM_MAX_USER + 1];        /* decoded (=2C =3D undone) */
    size_t gs2_len;                       /* length of the gs2 header */
    char client_first[SCRAM_MAX_MSG + 1]; /* whole message, header first */
    char nonce[2 * SCRAM_MAX_NONCE + 1];  /* client nonce + server nonce */
    char server_first[SCRAM_MAX_MSG + 1];
    struct scram_keys keys;
};

/* Fills out (cap >= 2 * SCRAM_NONCE_RAW + 1) with a fresh random server
 * nonce (printable, no ','). 0 or -1. */
#define SCRAM_NONCE_RAW 18
int scram_nonce_new(char *out, size_t cap);

/* Starts an exchange. plus: the client chose SCRAM-SHA-256-PLUS;
 * plus_offered: the server offered -PLUS on this connection (TLS), which
 * makes a client flag 'y' a downgrade (RFC 5802 6). */
void scram_init(struct scram *s, int plus, int plus_offered);

/* Parses client-first (len bytes, no NUL needed). 0: s->user holds the
 * login to look up. -1: refused, *err_r a static reason (malformed,
 * authzid given, channel binding flag wrong for the mechanism, unsupported
 * extension). */
int scram_client_first(struct scram *s, const char *msg, size_t len,
                       const char **err_r);

/* The member's keys are known (k copied): writes server-first into out
 * (NUL-terminated; cap > SCRAM_MAX_MSG), using snonce as the server's part
 * of the nonce. 0 or -1 (*err_r). */
int scram_server_first(struct scram *s, const struct scram_keys *k,
                       const char *snonce, char *out, size_t cap,
                       const char **err_r);

/* Checks client-final. cb, cb_len: the connection's channel binding data
 * of type s->cb_name (only read when the client used flag 'p'; NULL when
 * the connection has none). 1: proof verified, server-final in out
 * (NUL-terminated); 0: refused (wrong proof, nonce or channel binding),
 * *err_r says which; -1: malformed, *err_r. */
int scram_client_final(struct scram *s, const char *msg, size_t len,
                       const unsigned char *cb, size_t cb_len, char *out,
                       size_t cap, const char **err_r);

/* Wipes the state (keys included). */
void scram_clear(struct scram *s);

#endif
