/* smtpd: the SMTP submission worker. Runs the libuv loop that serves the
 * listening sockets the master bound (STARTTLS on submission, implicit TLS
 * on submissions), one struct smtp_session per client. Runs in its own
 * process; returns when SIGTERM has been handled and sessions are closed. */
#ifndef SG_SMTPD_H
#define SG_SMTPD_H

#include <stddef.h>

#include "../common/cfg.h"

struct smtpd_listener {
    int fd;           /* bound, listening, non-blocking; owned by smtpd */
    int implicit_tls; /* 1: TLS from the first byte (port 465) */
    char name[80];    /* "127.0.0.1:587", for logs */
};

/* Serves until SIGTERM. 0 on a clean stop, 1 on a start-up failure (bad
 * certificate, ...) which it has logged. */
int smtpd_main(const struct cfg *cfg, const struct smtpd_listener *ls,
               size_t nls);

#endif
