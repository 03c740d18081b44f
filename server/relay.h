/* relay: a blocking SMTP client (RFC 5321) towards the next hop: the
 * smarthost cfg->relay_host, or the MX hosts of a recipient domain (a
 * struct mx_list from mx.h). It speaks STARTTLS (RFC 3207) as
 * cfg->relay_tls asks, PIPELINING (RFC 2920), SIZE (RFC 1870), 8BITMIME
 * (RFC 6152), SMTPUTF8 (RFC 6531), and AUTH PLAIN or LOGIN (RFC 4954) to
 * the smarthost when relay_auth_user is set, inside TLS only.
 *
 * A struct relay_conf holds what every connection shares (the parsed
 * smarthost, the TLS context, the AUTH secret); it is read-only once made
 * and may be used by any number of threads. A struct relay is one
 * connection towards one destination, kept open across messages by its
 * owner and closed with QUIT; one thread at a time. Every step (connect,
 * each reply, each write that makes progress) is bounded by
 * cfg->relay_timeout_ms, a connect by RELAY_CONNECT_MS at most. The
 * process must ignore SIGPIPE. Log lines start with the queue id of the
 * message being sent. */
#ifndef SG_RELAY_H
#define SG_RELAY_H

#include <stddef.h>

#include "../common/cfg.h"
#include "mx.h"

/* An idle connection is closed after this many seconds. */
#define RELAY_IDLE_S 10
/* Messages sent over one connection before it is closed and reopened. */
#define RELAY_MAX_MSGS 100
/* Reply text kept per recipient (the log escapes and cuts it further). */
#define RELAY_MAX_TEXT 512
/* A TCP connect gives up after this long, or relay_timeout if shorter:
 * with several MX hosts, one that is down must not hold the message for
 * the full relay_timeout before the next is tried. */
#define RELAY_CONNECT_MS 30000
/* Addresses tried for one connection, over all hosts of a destination:
 * bounds the time a destination of dead hosts costs. */
#define RELAY_MAX_ADDRS 10

/* The outcome for one recipient. */
struct relay_rcpt {
    int code;                  /* SMTP reply code; 0: no reply (network,
                                  TLS or protocol failure): temporary */
    int remote;                /* 1: text is the next hop's reply; 0: ours */
    char dsn[16];              /* enhanced status code, "2.0.0" */
    char text[RELAY_MAX_TEXT]; /* the reply ("250 2.0.0 Ok") or, when not
                                  remote, what went wrong; raw, escape to
                                  log */
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

/* Where a transaction goes. Borrowed for the call. */
struct relay_dest {
    const char *name;         /* the destination, for logs: a domain or
                                 relay_host */
    const struct mx_list *mx; /* MX delivery: the hosts in order; NULL:
                                 relay_host */
};

struct relay_conf;
struct relay;

/* The shared set-up for cfg (borrowed; must outlive it): parses
 * relay_host, makes the TLS context (CA file for relay_tls = verify) and
 * reads relay_auth_password_file. NULL after logging an error. */
struct relay_conf *relay_conf_new(const struct cfg *cfg);
/* Frees (the password is wiped); sets *cp to NULL. */
void relay_conf_free(struct relay_conf **cp);

/* A connection object, not yet connected. */
struct relay *relay_new(const struct relay_conf *conf);
/* Closes the connection (QUIT) if open and frees; sets *rp to NULL. */
void relay_free(struct relay **rp);

/* Sends one message to d, connecting first if needed (an open
 * connection is taken to lead to d), and fills res (m->nrcpt entries)
 * with one outcome per recipient. A recipient counts as delivered only
 * with a 2xx reply to the end of DATA. A message the next hop cannot
 * take unchanged fails with a local 5xx: 8-bit octets without 8BITMIME
 * (5.6.3; the signature forbids converting them), a non-ASCII address
 * without SMTPUTF8 (5.6.7). Returns the number of recipients that got a
 * 2xx. */
size_t relay_send(struct relay *r, const struct relay_dest *d,
                  const struct relay_msg *m, struct relay_rcpt *res);

/* "host[ip]:port" of the current or last connection ("host:port" or "-"
 * before any), the host name alone (for Remote-MTA), and the TLS in use
 * on it: "TLSv1.3/TLS_AES_256_GCM_SHA384" or "none"; relay_verified() is
 * 1 when the peer's certificate was verified (relay_tls = verify). Valid
 * until the next call on r. */
const char *relay_peer(const struct relay *r);
const char *relay_mta(const struct relay *r);
const char *relay_tls(const struct relay *r);
int relay_verified(const struct relay *r);

/* 1 while a connection is open. */
int relay_connected(const struct relay *r);
/* 1 when an open connection may carry another message: under
 * RELAY_MAX_MSGS and not idle for RELAY_IDLE_S. */
int relay_reusable(const struct relay *r);
/* Milliseconds until an open connection reaches its idle limit (0 when it
 * has), or -1 when none is open. */
int relay_idle_ms(const struct relay *r);
/* Closes the connection (QUIT) now, if one is open. */
void relay_close(struct relay *r);

#endif
