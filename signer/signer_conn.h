/* signer_conn: the signer's socket server. Listens on
 * <run_dir>/signer.sock (mode 0660) and serves one request per connection
 * as common/signer_proto.h describes: BEGIN, DATA..., END, then one OK
 * (DKIM-Signature fields) or TEMPFAIL (reason) and the connection closes.
 * On END the active keys of the domain come from the database and the key
 * cache, on the loop thread; the signing itself runs in libuv's thread
 * pool with copies of the keys. A frame out of order, an unknown type or a
 * byte after END is a bug in the client: logged, connection closed. Loop
 * thread only, except the signing work. */
#ifndef SG_SIGNER_CONN_H
#define SG_SIGNER_CONN_H

#include <stddef.h>
#include <sqlite3.h>
#include <uv.h>

#include "../common/cfg.h"
#include "signer_dkim.h"
#include "signer_keys.h"
#include "signer_lookup.h"

/* Keys one domain signs with at once: an rsa and an ed25519 key, and
 * room for a rollover overlap of each. */
#define SIGNER_CONN_MAX_KEYS 8
/* Queue ids are short base32-like strings; longer is not ours. */
#define SIGNER_CONN_MAX_QID 32
/* Room for the header fields that a later hop adds on top of the size
 * subgated accepted: the DKIM-Signature fields themselves and a margin. */
#define SIGNER_CONN_HEADROOM (64 * 1024)
/* Open connections at once. Past it the signer takes no new connection
 * until one closes: clients wait in the listen backlog, within their
 * signer_timeout, instead of being refused. */
#define SIGNER_CONN_MAX_CONNS 1024
/* Listen backlog: a burst of sessions ending DATA at the same time (1000
 * sessions at once fill 128 slots; the kernel caps it at somaxconn). */
#define SIGNER_CONN_BACKLOG 4096

struct signer_conn;

struct signer_conn_srv {
    uv_loop_t *loop; /* borrowed */
    uv_pipe_t listener;
    int listening;             /* listener open, socket file ours */
    char *sock_path;           /* owned */
    char *db_path;             /* owned */
    sqlite3 *db;               /* owned; NULL while unavailable */
    struct signer_dkim *dkim;  /* owned */
    struct signer_keys *keys;  /* owned */
    size_t max_message;        /* octets buffered per request */
    struct signer_conn *conns; /* open connections, owned (list) */
    size_t nconns;
    /* Owned: the keys of each domain, kept until the database changes. */
    struct signer_lookup *lookup;
    /* Owned: SG_IPC_MAX_PAYLOAD octets that every connection reads into. */
    char *rbuf;
    /* libuv holds an accepted connection for us until a slot frees. */
    int accept_waiting;
};

/* Sets up s: libopendkim, the key cache and the listening socket
 * (run_dir is created when missing; a stale socket file is removed, a live
 * one is an error). Does not open the database (see _open_db). 0, or -1
 * with a message in err (start-up failure; s needs no _close then). */
int signer_conn_srv_init(struct signer_conn_srv *s, uv_loop_t *loop,
                         const struct cfg *cfg, char *err, size_t errlen);
/* Opens the database if it is not open. 0, or -1 (logged); requests get
 * TEMPFAIL "database unavailable" and retry until it opens. */
int signer_conn_srv_open_db(struct signer_conn_srv *s);
/* Stops serving: closes the listener, removes the socket file and closes
 * every connection. uv_run() returns once signing in progress has
 * finished. Idempotent. */
void signer_conn_srv_stop(struct signer_conn_srv *s);
/* After uv_run() has returned: frees what _init made. */
void signer_conn_srv_close(struct signer_conn_srv *s);

#endif
