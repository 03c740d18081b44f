/* log: one line per event, to stderr (default) or syslog (facility mail).
 * A line reads "TAG[PID]: TEXT"; callers start TEXT with the queue id or the
 * session id ("7KQ2M4XJ9A: to=<...> status=sent"). Safe from any thread of a
 * process: each line is formatted into a local buffer and written with one
 * write(2). */
#ifndef SG_LOG_H
#define SG_LOG_H

#include <stddef.h>

/* Sets the program tag ("subgated", "signer") and the destination. May be
 * called again after fork() to change the tag. */
void log_init(const char *tag, int use_syslog);

/* An event worth one line. */
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A peer's or tenant's fault (bad command, refused sender). */
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Our fault: the session gets a 4xx. */
void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* As log_error, with ": strerror(err)" appended; err is a positive errno or
 * a negative one (libuv style). */
void log_error_errno(int err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Bad configuration or start-up failure: logs and exits with status 1. */
void log_fatal(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));
void log_fatal_errno(int err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));
/* A broken invariant: logs and aborts (core dump). */
void log_panic(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));

/* Copies at most SG_LOG_MAX_PEER_TEXT bytes of untrusted text into out
 * (outlen >= 4 * SG_LOG_MAX_PEER_TEXT + 4 is always enough), escaping
 * control characters, non-ASCII bytes and backslash as \xHH, and appending
 * "..." when cut. Returns out. */
char *log_escape(const char *in, size_t inlen, char *out, size_t outlen);

/* Never compiled out; for invariants only, never for input checks. */
#define SG_ASSERT(c)                                                           \
    do {                                                                       \
        if (!(c))                                                              \
            log_panic("assertion failed: %s (%s:%d)", #c, __FILE__, __LINE__); \
    } while (0)

#endif
