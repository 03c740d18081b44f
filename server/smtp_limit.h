/* smtp_limit: the SMTP session's side of the abuse limits. The counters
 * live in server/ratelimit.c (one table per worker, in struct
 * smtp_server); this file asks it at the points where a session must
 * decide, logs the decision and picks the reply:
 *
 * - accept: connections and connection rate per client address, and
 *   addresses blocked after failed logins (421 4.7.0, then close);
 * - AUTH: a blocked login or address is refused before the password is
 *   checked; a refusal is answered after a delay that grows with the
 *   address's failures;
 * - MAIL, RCPT, end of DATA: the member's and the tenant's message and
 *   recipient budgets (451 4.7.1), reported to the tenant's administrator
 *   by smtp_report.h;
 * - timers: before AUTH a command line must be complete within
 *   command_timeout of the previous one, after AUTH within smtp_timeout;
 *   during DATA the client must send something every data_timeout and
 *   average min_data_rate octets per second.
 *
 * Loop thread only. */
#ifndef SG_SMTP_LIMIT_H
#define SG_SMTP_LIMIT_H

#include <stddef.h>
#include <stdint.h>

#include "../common/limits.h"

/* During DATA the timer looks at the client this often. */
#define SMTP_LIMIT_DATA_TICK_MS 1000
/* min_data_rate is judged once DATA has lasted this long: the first
 * packets of a message may be slow while TCP opens its window. */
#define SMTP_LIMIT_RATE_GRACE_MS 10000
/* A client that goes on sending this far past max_message_size without
 * ending DATA is not going to end it: the session is closed. */
#define SMTP_LIMIT_DATA_OVERRUN (1024 * 1024)

struct smtp_session;

/* Per session; zeroed with the session. */
struct smtp_limit_state {
    int counted;                   /* counted by ratelimit_conn_open() */
    char account[SG_MAX_PATH + 1]; /* login of the last AUTH, cut */
    uint64_t data_start_ms;        /* 354 sent */
    uint64_t data_last_ms;         /* last octet during DATA */
    uint64_t data_octets;          /* octets read during DATA */
};

/* A new connection (client address known, nothing sent yet): 0 to go on,
 * or -1 when it is refused; the session is then closing (a 421 on the
 * STARTTLS port; nothing on the implicit-TLS port, whose client expects a
 * handshake). */
int smtp_limit_connect(struct smtp_session *s, int implicit_tls);
/* The session ends: its connection is no longer counted. */
void smtp_limit_disconnect(struct smtp_session *s);
/* How long the session may take for its next command line. */
unsigned smtp_limit_cmd_timeout(const struct smtp_session *s);

/* Before login's password is checked: 0 to check it, or -1 when the
 * login or the address is blocked and the session has been answered
 * (454 4.7.0, or 421 and close for a blocked address). */
int smtp_limit_auth_check(struct smtp_session *s, const char *login);
/* The login of the last smtp_limit_auth_check() was refused: counts it
 * and returns the delay before the 535 in milliseconds. */
unsigned smtp_limit_auth_failed(struct smtp_session *s);
/* It succeeded: forgets its failures from this address. */
void smtp_limit_auth_ok(struct smtp_session *s);

/* NULL to go on, or the 451 reply to send (logged) when the member's or
 * the tenant's budget is used up: for MAIL, for one more RCPT, and at the
 * end of DATA, where the message is counted when it is NULL. A session
 * without a member (no AUTH) has no budget: NULL. */
const char *smtp_limit_mail(struct smtp_session *s);
const char *smtp_limit_rcpt(struct smtp_session *s);
const char *smtp_limit_data_end(struct smtp_session *s);

/* 354 was sent: the timer now watches data_timeout and min_data_rate. */
void smtp_limit_data_start(struct smtp_session *s);
/* n octets (as read from the socket) arrived during DATA; may close the
 * session when the client sends far beyond max_message_size. */
void smtp_limit_data_read(struct smtp_session *s, size_t n);
/* The DATA timer fired: may close the session with 421 4.4.2. */
void smtp_limit_data_tick(struct smtp_session *s);

#endif
