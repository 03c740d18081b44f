/* signer_sync: a blocking client of subgate-signer, for processes without
 * an event loop (the queue runner's bounces, the admin tool's password
 * replies). One connection per request, as signer_proto.h describes. Any
 * thread. */
#ifndef SG_SIGNER_SYNC_H
#define SG_SIGNER_SYNC_H

#include <stddef.h>

/* Sends msg (CRLF lines, unstuffed) for signing with the keys of domain.
 * Send and receive each time out after timeout_ms. 0: *sig_r holds the
 * DKIM-Signature fields (malloc'd, NUL-terminated, siglen octets, caller
 * frees); -1: temporary failure, reason in err. */
int signer_sync_sign(const char *sock_path, const char *qid, const char *domain,
                     const char *msg, size_t len, unsigned timeout_ms,
                     char **sig_r, size_t *siglen_r, char *err, size_t errlen);

#endif
