/* signer_client: asks subgate-signer to sign one message, from the event
 * loop. Each request opens its own connection to <run_dir>/signer.sock,
 * streams the message in frames and waits for the reply with a timeout.
 * Loop thread only. */
#ifndef SG_SIGNER_CLIENT_H
#define SG_SIGNER_CLIENT_H

#include <stddef.h>
#include <uv.h>

/* status 0: sig holds the DKIM-Signature header fields (siglen octets,
 * valid only during the callback); status -1: temporary failure (signer
 * down, timeout, no active key), err says why. */
typedef void (*signer_done_cb)(void *arg, int status, const char *sig,
                               size_t siglen, const char *err);

struct signer_req;

/* Starts a request. msg is borrowed until the callback has run. The
 * callback runs exactly once, never from inside this call. Returns the
 * request (for cancelling) or NULL if it could not start (then no
 * callback). */
struct signer_req *signer_client_sign(uv_loop_t *loop, const char *sock_path,
                                      const char *qid, const char *domain,
                                      const char *msg, size_t len,
                                      unsigned timeout_ms, signer_done_cb cb,
                                      void *arg);
/* The owner goes away: the callback will not run; resources are freed
 * once libuv has closed the handles. */
void signer_client_cancel(struct signer_req *req);

#endif
