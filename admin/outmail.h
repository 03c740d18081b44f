/* outmail: messages the admin tool sends itself (the encrypted password of
 * a reset, the notice that a request was refused). A message is built as
 * RFC 5322 text with CRLF line ends, signed by subgate-signer with the
 * keys of its From: domain (signer_sync, like any mail of the gateway),
 * and committed to the queue (queue_commit), from where the queue runner
 * of the running subgated relays it. Nothing leaves unsigned: a signer
 * that is down is a temporary failure of the caller.
 *
 * Order of use: outmail_plain() or outmail_encrypted(), outmail_sign(),
 * outmail_commit() (and outmail_withdraw() should what the message
 * announces not take effect), outmail_clear(). Single-threaded. */
#ifndef SG_OUTMAIL_H
#define SG_OUTMAIL_H

#include <stddef.h>

#include "../common/cfg.h"
#include "../common/limits.h"
#include "../server/queue.h"

/* RFC 3834 Auto-Submitted values. */
#define OUTMAIL_AUTO_GENERATED "auto-generated"
#define OUTMAIL_AUTO_REPLIED "auto-replied"

struct outmail {
    char qid[QUEUE_ID_LEN + 1];
    char from[SG_MAX_PATH + 1]; /* From: and the envelope sender */
    char to[SG_MAX_PATH + 1];   /* To: and the one recipient */
    char *msg;                  /* owned: the message, CRLF lines */
    size_t msglen;
    char *sig; /* owned: DKIM-Signature fields, CRLF-ended */
    size_t siglen;
    int committed; /* 1 once in queue_dir/active */
};

/* A text/plain (UTF-8) message from -> to with subject and text (LF or
 * CRLF lines, each under 998 octets). auto_submitted is one of the
 * OUTMAIL_AUTO_ values; hostname goes into the Message-ID. Fills m (a new
 * queue id). 0, or -1 when an address or line is unusable. */
int outmail_plain(struct outmail *m, const char *hostname, const char *from,
                  const char *to, const char *subject,
                  const char *auto_submitted, const char *text);

/* A PGP/MIME encrypted message (RFC 3156 4): armored is the
 * ASCII-armored OpenPGP message of alen octets. 0 or -1 as above. */
int outmail_encrypted(struct outmail *m, const char *hostname, const char *from,
                      const char *to, const char *subject,
                      const char *auto_submitted, const char *armored,
                      size_t alen);

/* Has the message signed for the domain of m->from over the signer's
 * socket (run_dir/signer.sock). 0, or -1 with the reason in err (a
 * temporary failure: signer down, no active key). */
int outmail_sign(struct outmail *m, const struct cfg *cfg, char *err,
                 size_t errlen);

/* Writes the signed message to the queue durably (queue_commit: tmp,
 * fsync, rename into active, directory fsync). session names the origin
 * in the queue file and logs ("reset", "mailgate"); member the member it
 * concerns ("" for none). 0 or -errno. */
int outmail_commit(struct outmail *m, const struct cfg *cfg,
                   const char *session, const char *member);

/* Takes a committed message back out of the queue (the change it
 * announced did not happen). The queue runner may have sent it already;
 * see docs/password-reset.md for why that is the safe side. 0 or -errno. */
int outmail_withdraw(struct outmail *m, const struct cfg *cfg);

/* Wipes and frees what m holds. */
void outmail_clear(struct outmail *m);

#endif
