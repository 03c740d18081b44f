/* relay: a blocking SMTP client (RFC 5321) towards the next hop named by
 * cfg->relay_host, with STARTTLS (RFC 3207) as cfg->relay_tls asks,
 * PIPELINING (RFC 2920), SIZE (RFC 1870) and 8BITMIME (RFC 6152). One
 * struct relay is one delivery worker's connection: it is kept open across
 * messages and closed (with QUIT) after RELAY_IDLE_S seconds without use or
 * after RELAY_MAX_MSGS messages. Not thread-safe: one thread per relay.
 * Every step (connect, each reply, each write that makes progress) is
 * bounded by cfg->relay_timeout_ms. The process must ignore SIGPIPE (TLS
 * writes go through write(2)). Log lines start with the queue id of the
 * message being sent. */
#ifndef SG_RELAY_H
#define SG_RELAY_H

#include <stddef.h>

#include "../common/cfg.h"

/* An idle connection is closed after this many seconds. */
#define RELAY_IDLE_S 10
/* Messages sent over one connection before it is closed and reopened. */
#define RELAY_MAX_MSGS 100
/* Reply text kept per recipient (the log escapes and cuts it further). */
#define RELAY_MAX_TEXT 512

/* The outcome for one recipient. */
struct relay_rcpt {
    int code;                  /* SMTP reply code; 0: no reply (network,
                                  TLS or protocol failure): temporary */
    char dsn[16];              /* enhanced status code, "2.0.0" */
    char text[RELAY_MAX_TEXT]; /* the reply ("250 2.0.0 Ok") or, with code
                                  0, what went wrong; raw, escape to log */
};

/* One message to send. All pointers borrowed for the call. */
struct relay_msg {
    const char *qid;    /* for log lines */
    const char *sender; /* "" = null sender */
    char *const *rcpt;
    size_t nrcpt;
    const char *data; /* the message, CRLF lines, not dot-stuffed */
    size_t len;
};

struct relay;

/* A relay for cfg (borrowed; must outlive the relay). Parses relay_host
 * and sets up TLS (CA file for relay_tls = verify). NULL after logging an
 * error when relay_host is malformed or the TLS set-up fails. An empty
 * relay_host is accepted; relay_send() then fails every recipient with a
 * temporary error. */
struct relay *relay_new(const struct cfg *cfg);
/* Closes the connection (QUIT) if open and frees; sets *rp to NULL. */
void relay_free(struct relay **rp);

/* Sends one message, connecting first if needed, and fills res (m->nrcpt
 * entries) with one outcome per recipient. A recipient counts as
 * delivered only with a 2xx reply to the end of DATA. Returns the number
 * of recipients that got a 2xx. */
size_t relay_send(struct relay *r, const struct relay_msg *m,
                  struct relay_rcpt *res);

/* "host[ip]:port" of the current or last connection ("host:port" before
 * any), and the TLS in use on it: "TLSv1.3/TLS_AES_256_GCM_SHA384" or
 * "none". Valid until the next call on r. */
const char *relay_peer(const struct relay *r);
const char *relay_tls(const struct relay *r);

/* Milliseconds until an open connection reaches its idle limit (0 when it
 * has), or -1 when none is open: a bound for the caller's poll(). */
int relay_idle_ms(const struct relay *r);
/* Closes the connection (QUIT) if it has been idle for RELAY_IDLE_S. */
void relay_tick(struct relay *r);
/* Closes the connection (QUIT) now, if one is open. */
void relay_close(struct relay *r);

#endif
