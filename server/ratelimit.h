/* ratelimit: the SMTP worker's abuse counters, kept in memory for this
 * node (a restart forgets them). Four kinds of entry:
 *
 * - a client address: open connections, the connection rate, and failed
 *   AUTH from that address (a growing delay, then a temporary block);
 * - an (account, client address) pair: failed AUTH for that login from
 *   that address, blocked on its own, so that someone guessing a member's
 *   password from one address does not lock the member out from others;
 * - a member: messages per hour and recipients per day;
 * - a tenant: messages per hour.
 *
 * IPv4 clients are counted per address, IPv6 clients per /64 (a host
 * usually holds a whole /64). Rates are token buckets of L per period P
 * (L may be used at once, then they come back at L/P), kept as a single
 * "theoretical arrival time" per bucket (GCRA). The table holds at most
 * the max_entries given to _new(): entries that have returned to idle are
 * swept, and when the table is still full the entry without open
 * connections that was used longest ago is forgotten. Keys are hashed with
 * a random per-process seed, so a client cannot pick colliding keys.
 *
 * Times are passed in by the caller as milliseconds of a monotonic clock
 * (uv_now()), so tests drive the clock. Loop thread only. */
#ifndef SG_RATELIMIT_H
#define SG_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>

#include "../common/cfg.h"

/* Entries kept at most: above max_sessions (100000 at most), so that an
 * entry without open connections can always be evicted. */
#define RATELIMIT_MAX_ENTRIES 200000
/* Longest delay before a refused AUTH is answered, however many failures
 * came before it. */
#define RATELIMIT_MAX_AUTH_DELAY_MS 30000

/* The limits; 0 switches a limit off. Filled from the configuration by
 * ratelimit_limits_from_cfg(). */
struct ratelimit_limits {
    unsigned max_conn_per_ip;         /* open connections per address */
    unsigned conn_rate_per_ip;        /* new connections per minute */
    unsigned auth_fail_limit_ip;      /* failures per address, then block */
    unsigned auth_fail_limit_account; /* per (account, address) */
    unsigned auth_block_ms;           /* block time; failure memory */
    unsigned auth_fail_delay_ms;      /* first delay; doubles per failure */
    unsigned member_msg_per_hour;
    unsigned member_rcpt_per_day;
    unsigned tenant_msg_per_hour;
};

enum ratelimit_verdict {
    RATELIMIT_OK = 0,
    RATELIMIT_CONN_COUNT,      /* max_conn_per_ip reached */
    RATELIMIT_CONN_RATE,       /* conn_rate_per_ip exceeded */
    RATELIMIT_IP_BLOCKED,      /* auth_fail_limit_ip reached */
    RATELIMIT_ACCOUNT_BLOCKED, /* auth_fail_limit_account reached */
    RATELIMIT_MEMBER_MSG,      /* member_msg_per_hour exceeded */
    RATELIMIT_MEMBER_RCPT,     /* member_rcpt_per_day exceeded */
    RATELIMIT_TENANT_MSG,      /* tenant_msg_per_hour exceeded */
};

struct ratelimit;

void ratelimit_limits_from_cfg(const struct cfg *cfg,
                               struct ratelimit_limits *l);
/* An empty table with a copy of the limits; max_entries is clamped to 1
 * .. RATELIMIT_MAX_ENTRIES. */
struct ratelimit *ratelimit_new(const struct ratelimit_limits *l,
                                size_t max_entries);
void ratelimit_free(struct ratelimit **rp); /* sets *rp to NULL */

/* The reason of a verdict for log lines ("connections per address"). */
const char *ratelimit_verdict_text(enum ratelimit_verdict v);

/* The counting key of a client address (text form): the address itself
 * for IPv4, "prefix::/64" for IPv6, the text as given otherwise. out has
 * room for outlen (>= 48) octets. */
void ratelimit_ip_key(const char *ip, char *out, size_t outlen);

/* A connection from ip: RATELIMIT_OK (counted: call _conn_close() when it
 * ends), RATELIMIT_IP_BLOCKED, RATELIMIT_CONN_COUNT or
 * RATELIMIT_CONN_RATE (not counted). A refused attempt uses up no rate. */
enum ratelimit_verdict ratelimit_conn_open(struct ratelimit *rl, const char *ip,
                                           uint64_t now_ms);
void ratelimit_conn_close(struct ratelimit *rl, const char *ip,
                          uint64_t now_ms);

/* Before a password is checked: RATELIMIT_OK, RATELIMIT_IP_BLOCKED or
 * RATELIMIT_ACCOUNT_BLOCKED (then the password must not be checked).
 * Accounts compare case-insensitively; *until_ms_r (if not NULL) gets the
 * end of the block. */
enum ratelimit_verdict ratelimit_auth_check(struct ratelimit *rl,
                                            const char *ip, const char *account,
                                            uint64_t now_ms,
                                            uint64_t *until_ms_r);
/* A refused login: counts it for the address and the pair, blocks either
 * once its limit is reached, and returns the delay before the refusal is
 * answered: auth_fail_delay doubled for each earlier failure from the
 * address (within auth_block_time), at most RATELIMIT_MAX_AUTH_DELAY_MS. */
unsigned ratelimit_auth_fail(struct ratelimit *rl, const char *ip,
                             const char *account, uint64_t now_ms);
/* A successful login forgets the pair's failures (not the address's: a
 * guesser with one valid account must not reset its own count). */
void ratelimit_auth_ok(struct ratelimit *rl, const char *ip,
                       const char *account, uint64_t now_ms);

/* Would one more message with nrcpt recipients fit the member's and the
 * tenant's budgets? RATELIMIT_OK or the first budget it exceeds. Takes
 * nothing. */
enum ratelimit_verdict ratelimit_msg_check(struct ratelimit *rl,
                                           const char *member,
                                           const char *tenant, size_t nrcpt,
                                           uint64_t now_ms);
/* The same, and on RATELIMIT_OK the message is counted in all three
 * budgets at once (none of them when one is exceeded). */
enum ratelimit_verdict ratelimit_msg_take(struct ratelimit *rl,
                                          const char *member,
                                          const char *tenant, size_t nrcpt,
                                          uint64_t now_ms);

/* Entries in the table (tests, status). */
size_t ratelimit_count(const struct ratelimit *rl);

#endif
