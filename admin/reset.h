/* reset: the core of a member's password reset, shared by `subgate member
 * reset` and `subgate mailgate`: who the member is (address, tenant,
 * registered key, reply address), and the reset itself, in which the
 * new password's hash and the durable queueing of the reply encrypted to
 * the member's key happen together or not at all:
 *
 *   1. new password (uniform, >= 128 bits), its yescrypt hash, the reply
 *      encrypted to the registered key and signed by the signer: no lock
 *      is held, nothing is changed yet;
 *   2. BEGIN IMMEDIATE; (mailgate: the signature is recorded against
 *      replays and counted against the rate limit); UPDATE member;
 *   3. queue_commit: the reply is written to tmp/, fsync'd, renamed into
 *      active/ and the directory fsync'd, with the transaction still open;
 *   4. COMMIT. Should COMMIT fail, the queued reply is removed again.
 *
 * A crash or failure before 3 completes leaves the old password and no
 * reply; between 3 and 4 it leaves the old password and a reply that may
 * go out announcing a password that was never set. That is the safe
 * side: the member keeps a working password and can ask again, whereas
 * the opposite order could change the password with no reply ever sent.
 * See docs/password-reset.md. Single-threaded. */
#ifndef SG_RESET_H
#define SG_RESET_H

#include <stddef.h>

#include "../common/limits.h"
#include "admin.h"
#include "pgp.h"

/* Characters of a reset password from passwd_random's 57-letter alphabet:
 * 24 * log2(57) = 140 bits, above the 128 asked for. */
#define RESET_PASSWORD_LEN 24
/* The text a request must sign (compared case-insensitively, whitespace
 * runs as one space, a final full stop allowed). */
#define RESET_PHRASE "Please change my mail password"
/* Seconds in the rate limits' period. */
#define RESET_RATE_PERIOD 86400

/* Outcomes of reset_run() and of the checks before it. */
enum reset_result {
    RESET_OK,
    RESET_TEMP,   /* try again later: database busy, signer down, disk */
    RESET_FAIL,   /* cannot be done: no usable key, member changed */
    RESET_REPLAY, /* this signature changed a password before */
    RESET_RATE,   /* the key's resets in 24 hours are used up */
};

struct reset_member {
    long long id;
    long long tenant_id;
    int disabled;
    char address[SG_MAX_PATH + 1];
    char tenant[SG_MAX_DOMAIN + 1];
    char fpr[PGP_FPR_MAX + 1];        /* registered key; "" none */
    char reply_from[SG_MAX_PATH + 1]; /* change-password address or
                                         postmaster@TENANT */
};

/* A verified request's signature, for the replay record and the rate. */
struct reset_sig {
    const char *fpr; /* primary key fingerprint */
    long long time;  /* signature creation time */
};

/* Creates the tables of password reset in a database made by an older
 * subgate (schema/schema.sql is idempotent). ADMIN_OK or ADMIN_FAIL. */
int reset_schema(struct admin_ctx *ctx);

/* Looks up the member whose primary address is address. 1 found (*m), 0
 * none, -1 error (printed). */
int reset_member_by_address(struct admin_ctx *ctx, const char *address,
                            struct reset_member *m);
/* The member of tenant tenant_id whose primary address or alias is
 * address. 1, 0, -1. */
int reset_member_by_any_address(struct admin_ctx *ctx, long long tenant_id,
                                const char *address, struct reset_member *m);
/* The member of tenant tenant_id with registered fingerprint fpr. 1, 0
 * none, -1 error; 2 when several members share it (refused). */
int reset_member_by_fpr(struct admin_ctx *ctx, long long tenant_id,
                        const char *fpr, struct reset_member *m);

/* The keyring directory of tenant into out (PATH_MAX). 0 or -1. */
int reset_keyring(const struct admin_ctx *ctx, const char *tenant, char *out,
                  size_t outlen);

/* 1 when (fpr, time) changed a password before, 0 not, -1 error. */
int reset_seen(struct admin_ctx *ctx, const struct reset_sig *sig);
/* Resets by mail with key fpr in the last 24 hours; -1 on error. */
long long reset_count(struct admin_ctx *ctx, const char *fpr);

/* Resets m's password and queues the reply encrypted to m->fpr, as the
 * header comment describes. sig: the request's signature (mailgate), or
 * NULL (command). auto_submitted: OUTMAIL_AUTO_*. On RESET_OK the reply's
 * queue id is in qid_r (QUEUE_ID_LEN + 1). Otherwise err says why, for a
 * log line or an administrator, never for the member. */
enum reset_result reset_run(struct admin_ctx *ctx, const struct reset_member *m,
                            const struct reset_sig *sig,
                            const char *auto_submitted, const char *session,
                            char *qid_r, char *err, size_t errlen);

/* Mails m a short plain notice that a request was refused, unless m got
 * reset_rate notices in the last 24 hours. text is the reason for the
 * member. 1 queued (qid_r), 0 not sent (rate limit), -1 failure (err). */
int reset_notice(struct admin_ctx *ctx, const struct reset_member *m,
                 const char *text, char *qid_r, char *err, size_t errlen);

#endif
