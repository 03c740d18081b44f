/* smtp_session: one SMTP submission client, from accept to close (RFC
 * 5321 with STARTTLS 3207, AUTH 4954, PIPELINING 2920, SIZE 1870,
 * ENHANCEDSTATUSCODES 2034/3463). The session reads the socket (through
 * struct tls_conn once TLS is on), feeds the command parser or the DATA
 * reader, dispatches verbs through a table (smtp_cmd.c, AUTH in
 * smtp_cmd_auth.c), and hands a finished message to policy, signer and
 * queue (smtp_txn.c). Replies of a pipelined group are collected and sent
 * in one write when the session runs out of input or has to wait.
 *
 * While an AUTH check, the delay after a failed AUTH, signing or queueing
 * runs, the session is in SMTP_STATE_WAIT: it stops reading and leaves any
 * input it already holds for later, so pipelined commands are answered in
 * order. A session is freed once its libuv handles are closed and no
 * signer request or queue work refers to it any more.
 *
 * The first part of this header is the interface for smtpd.c; the rest is
 * shared by the session's own files only. Loop thread only. */
#ifndef SG_SMTP_SESSION_H
#define SG_SMTP_SESSION_H

#include <openssl/ssl.h>
#include <stddef.h>
#include <uv.h>

#include "../common/cfg.h"
#include "../common/db.h"
#include "../common/limits.h"
#include "queue.h"
#include "smtp_auth.h"
#include "smtp_limit.h"
#include "smtp_parse.h"

struct smtp_session;

/* What all sessions of one worker share. Owned by smtpd. */
struct smtp_server {
    uv_loop_t *loop;               /* borrowed */
    const struct cfg *cfg;         /* borrowed */
    SSL_CTX *tls_ctx;              /* borrowed; replaced on SIGHUP */
    struct ratelimit *rl;          /* owned by smtpd: abuse counters */
    struct smtp_report *report;    /* owned by smtpd: budget reports */
    char *signer_sock;             /* owned by smtpd: <run_dir>/signer.sock */
    struct queue_group *qgroup;    /* owned by smtpd: shared queue fsyncs */
    struct auth *auth;             /* owned by smtpd: AUTH checks, cache */
    struct smtp_gate *gate;        /* owned by smtpd: change-password
                                      addresses taken without AUTH */
    struct smtp_session *sessions; /* live sessions (list head) */
    unsigned nsessions;            /* length of that list */
    int stopping;                  /* 1 after SIGTERM */
    /* Owned by smtpd: SMTP_INBUF_SIZE octets into which every TLS session
     * reads ciphertext; libuv runs the read callback, which hands it to
     * the TLS engine, right after it got the buffer. */
    char *tls_rbuf;
};

/* Accepts the pending connection of listener (named listener_name, which
 * must outlive the session) and greets it; with implicit_tls the TLS
 * handshake comes first (port 465). 0, or a negative libuv error (logged;
 * nothing is left behind). */
int smtp_session_start(struct smtp_server *srv, uv_stream_t *listener,
                       const char *listener_name, int implicit_tls);

/* SIGTERM: an idle session gets "421 4.3.2 Service shutting down" and is
 * closed; one whose AUTH check, signing or queueing is running finishes
 * that and its reply first. */
void smtp_session_stop(struct smtp_session *s);

/* ---- shared by smtp_session.c, smtp_cmd.c, smtp_cmd_auth.c, smtp_txn.c */

/* Plaintext input buffer and TLS ciphertext read buffer. */
#define SMTP_INBUF_SIZE (16 * 1024)
/* Replies collected before one write (a pipelined group's answers). */
#define SMTP_OUTBUF_SIZE 4096
/* A client that sends commands but does not read the replies: above this
 * many octets waiting in the socket, stop reading until they drain. */
#define SMTP_MAX_WRITE_QUEUE (256 * 1024)
/* How long a closing session may take to get its last reply out. */
#define SMTP_CLOSE_WAIT_MS 5000
/* The EHLO/HELO argument kept for the Received: field. */
#define SMTP_HELO_MAX 255

enum smtp_state {
    SMTP_STATE_CMD,     /* reading commands */
    SMTP_STATE_AUTH,    /* reading a response line of an AUTH exchange */
    SMTP_STATE_DATA,    /* reading the message after 354 */
    SMTP_STATE_WAIT,    /* an async step runs; input waits */
    SMTP_STATE_CLOSING, /* last reply on its way or connection gone */
};

enum smtp_greeting {
    SMTP_GREET_NONE,
    SMTP_GREET_HELO,
    SMTP_GREET_EHLO,
};

enum smtp_auth_step {
    SMTP_AUTH_NONE,
    SMTP_AUTH_PLAIN,      /* sent "334 ", waiting for the PLAIN response */
    SMTP_AUTH_LOGIN_USER, /* sent the Username: prompt */
    SMTP_AUTH_LOGIN_PASS, /* sent the Password: prompt */
    SMTP_AUTH_STRONG,     /* SCRAM or EXTERNAL: smtp_cmd_scram.c */
};

enum smtp_timer_use {
    SMTP_TIMER_IDLE,       /* client idle timeout */
    SMTP_TIMER_AUTH_DELAY, /* before answering a failed AUTH */
    SMTP_TIMER_CLOSE,      /* bound on getting the last reply out */
    SMTP_TIMER_DATA,       /* DATA: data_timeout and min_data_rate */
};

struct signer_req;

/* One mail transaction, MAIL to the reply after DATA. Everything in it
 * belongs to the transaction and is freed by smtp_txn_reset(). */
struct smtp_txn {
    char qid[QUEUE_ID_LEN + 1];   /* "" until MAIL is accepted */
    char sender[SG_MAX_PATH + 1]; /* envelope sender as it will be used */
    char **rcpt;                  /* owned array of owned strings */
    size_t nrcpt, rcpt_cap;
    char *msg; /* owned after the end of DATA */
    size_t msglen;
    char *hdr; /* owned: DKIM-Signature + Received */
    size_t hdrlen;
    struct signer_req *sign_req; /* in flight, borrowed */
    uv_work_t work;              /* queue_commit in the pool */
    struct queue_env env;        /* env.rcpt borrows rcpt */
    int commit_rc;               /* queue_commit's result */
    uint64_t metrics_t0;         /* uv_hrtime() when signing was asked */
    /* 1: MAIL came before AUTH; only a change-password request may follow
     * (one RCPT, smtp_gate.h), spooled for `subgate mailgate`. */
    int gate;
};

struct smtp_session {
    struct smtp_server *srv;          /* borrowed */
    struct smtp_session *prev, *next; /* in srv->sessions */
    uv_tcp_t tcp;                     /* data = this */
    uv_timer_t timer;                 /* data = this */
    uv_shutdown_t shutdown_req;
    int open_handles;     /* tcp, timer until closed */
    int pending;          /* signer request / queue work */
    char id[10];          /* "s" + 8 hex digits */
    char client[64];      /* "[ip]:port" */
    char client_ip[48];   /* "ip" */
    const char *listener; /* borrowed from smtpd */
    enum smtp_state state;
    enum smtp_greeting greeting;
    enum smtp_auth_step auth_step;
    enum smtp_timer_use timer_use;
    int reading;              /* uv_read_start is in effect */
    int out_blocked;          /* too much unsent output */
    int closed;               /* handles are being closed */
    int tls_logged;           /* handshake done and logged */
    struct tls_conn *tls;     /* owned, NULL until TLS starts */
    struct smtp_parse *parse; /* owned */
    struct smtp_data *data;   /* owned, made at the first DATA */
    size_t data_max;          /* the size bound data was made with */
    /* Owned: plaintext not yet processed, SMTP_INBUF_SIZE octets; freed
     * once all of it is processed, so that an idle session holds none. */
    char *inbuf;
    size_t inoff, inlen;
    char out[SMTP_OUTBUF_SIZE]; /* replies not yet written */
    size_t outlen;
    unsigned ncmds, nmsgs, nbad, nauthfail;
    char helo[SMTP_HELO_MAX + 1];  /* sanitized greeting argument */
    struct db_member *member;      /* owned, NULL until AUTH succeeds */
    struct auth_req *auth_req;     /* in flight, borrowed (cancel) */
    struct smtp_auth_creds *creds; /* owned during an AUTH exchange */
    struct smtp_strong *strong;    /* owned during SCRAM / EXTERNAL */
    char auth_login[4 * SG_LOG_MAX_PEER_TEXT + 4]; /* escaped, for logs */
    struct smtp_txn txn;
    struct smtp_limit_state lim; /* smtp_limit.c */
};

/* The id to start a log line with: the queue id once the transaction has
 * one, else the session id. */
const char *smtp_session_logid(const struct smtp_session *s);
/* Appends one reply line (CRLF added) to the pending output. */
void smtp_reply(struct smtp_session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* As smtp_reply, for a client error (bad syntax, sequence, unknown verb):
 * counts it, and after SG_MAX_BAD_COMMANDS ends the session with "421
 * 4.7.0 Too many errors". */
void smtp_reply_error(struct smtp_session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Sends reply (if not NULL) and all pending output, then closes the
 * connection (TLS close_notify, FIN). */
void smtp_session_close(struct smtp_session *s, const char *reply);
/* Enters SMTP_STATE_WAIT: no input is read or processed, the idle timer
 * stops. */
void smtp_session_wait(struct smtp_session *s);
/* The same, with the timer set to call smtp_cmd_auth_delay_done() after
 * delay_ms (no other command is processed meanwhile). */
void smtp_session_wait_auth_delay(struct smtp_session *s, unsigned delay_ms);
/* Leaves SMTP_STATE_WAIT (or ends an AUTH exchange) back to reading
 * commands and processes any input held meanwhile; during a shutdown it
 * closes with 421 instead. Call from a callback, not from a handler. */
void smtp_session_resume(struct smtp_session *s);
/* STARTTLS accepted: discards any plaintext pipelined after the command
 * (RFC 3207 4.2 / 5), sends 220, forgets the greeting and starts TLS. */
void smtp_session_start_tls(struct smtp_session *s);
/* A signer request or queue work that refers to s ended: frees s if it is
 * closed and nothing else refers to it. 1 if s was freed. */
int smtp_session_release(struct smtp_session *s);
/* (Re)starts the session timer for use: first after ms, then every
 * repeat ms (0: once). */
void smtp_session_set_timer(struct smtp_session *s, enum smtp_timer_use use,
                            unsigned ms, unsigned repeat);
/* Sets the parser for the next line: raw AUTH response lines up to
 * SG_MAX_AUTH_LINE (raw = 1), or commands with the bound for the
 * session's authentication state (raw = 0). */
void smtp_session_parse_mode(struct smtp_session *s, int raw);

/* smtp_cmd.c: runs one command line. */
void smtp_cmd_dispatch(struct smtp_session *s, const struct smtp_cmd *cmd);

/* smtp_cmd_auth.c */
void smtp_cmd_auth(struct smtp_session *s, const struct smtp_cmd *cmd);
/* A response line in SMTP_STATE_AUTH. */
void smtp_cmd_auth_line(struct smtp_session *s, const struct smtp_cmd *cmd);
/* The delay after a failed AUTH is over: answer 535 (and maybe close). */
void smtp_cmd_auth_delay_done(struct smtp_session *s);
/* The session closes: cancels a running check and wipes credentials. */
void smtp_cmd_auth_abort(struct smtp_session *s);
/* For mechanisms handled elsewhere (smtp_cmd_scram.c), once their
 * exchange is over (auth_step SMTP_AUTH_NONE). _accept: the member (m,
 * taken) is authenticated: logged (with m->auth_via), counted, 235 sent;
 * the caller resumes the session if it waited. _refuse: as a wrong
 * password (counted, logged, 535 after the delay; the session waits).
 * _tempfail: the member database could not answer (logged, 454). */
void smtp_cmd_auth_accept(struct smtp_session *s, struct db_member *m);
void smtp_cmd_auth_refuse(struct smtp_session *s, const char *reason);
void smtp_cmd_auth_tempfail(struct smtp_session *s, const char *reason);

/* smtp_cmd_scram.c: AUTH SCRAM-SHA-256[-PLUS] and EXTERNAL */
struct smtp_strong;
/* The AUTH keyword's mechanisms for EHLO (static text). */
const char *smtp_cmd_scram_mechs(const struct smtp_session *s);
/* AUTH SCRAM-SHA-256 (plus 0) or SCRAM-SHA-256-PLUS (plus 1); ir is the
 * initial response or NULL. */
void smtp_cmd_scram(struct smtp_session *s, int plus, const char *ir);
/* AUTH EXTERNAL with initial response ir or NULL. */
void smtp_cmd_external(struct smtp_session *s, const char *ir);
/* A response line while auth_step is SMTP_AUTH_STRONG. */
void smtp_cmd_scram_line(struct smtp_session *s, const char *line, size_t len);
/* Ends the exchange: cancels its lookup, wipes its state. Idempotent. */
void smtp_cmd_scram_abort(struct smtp_session *s);

/* smtp_txn.c */
/* Adds a recipient (copied). */
void smtp_txn_add_rcpt(struct smtp_txn *t, const char *addr);
/* Forgets the transaction and frees what it holds. Not while a signer
 * request or queue work of it runs. */
void smtp_txn_reset(struct smtp_txn *t);
/* The DATA reader saw the end of data: check, sign, queue, reply. Leaves
 * the session in SMTP_STATE_CMD or SMTP_STATE_WAIT. */
void smtp_txn_data_end(struct smtp_session *s);
/* smtp_txn_gate.c: the same for a change-password request (txn.gate):
 * spooled to <queue_dir>/mailgate/ (mailgate_spool.h), not signed. */
void smtp_txn_gate_end(struct smtp_session *s);

#endif
