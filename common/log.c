/* log: see log.h. The tag and destination are the only mutable file-scope
 * state in the library: they are set by log_init() before any thread starts
 * (or right after fork()) and only read afterwards. */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "limits.h"

/* One line, prefix included. PIPE_BUF (4096 on Linux) keeps a write(2) to a
 * pipe atomic, so lines from several processes sharing stderr never mix. */
#define LOG_LINE_MAX 4096
#define LOG_TAG_MAX 32

static char log_tag[LOG_TAG_MAX] = "subgate";
static int log_to_syslog;

void log_init(const char *tag, int use_syslog)
{
    if (log_to_syslog)
        closelog();
    snprintf(log_tag, sizeof(log_tag), "%s", tag);
    log_to_syslog = use_syslog;
    /* openlog() keeps the pointer: log_tag has static storage. */
    if (use_syslog)
        openlog(log_tag, LOG_PID | LOG_NDELAY, LOG_MAIL);
}

/* Writes all of buf, retrying on EINTR and short writes. Errors are
 * ignored: there is nowhere left to report them. */
static void log_write_all(const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(STDERR_FILENO, buf, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        buf += n;
        len -= (size_t)n;
    }
}

/* Formats one line and sends it. err != 0 appends ": strerror(err)". */
static void log_vemit(int prio, int err, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

static void log_vemit(int prio, int err, const char *fmt, va_list ap)
{
    char line[LOG_LINE_MAX];
    char ebuf[128];
    size_t pre = 0;
    size_t len;
    int n;

    if (!log_to_syslog) {
        n = snprintf(line, sizeof(line), "%s[%ld]: ", log_tag, (long)getpid());
        pre = n > 0 ? (size_t)n : 0;
    }
    n = vsnprintf(line + pre, sizeof(line) - pre, fmt, ap);
    len = n < 0 ? pre : pre + (size_t)n;
    if (len > sizeof(line) - 1)
        len = sizeof(line) - 1;
    if (err != 0) {
        const char *es = strerror_r(err < 0 ? -err : err, ebuf, sizeof(ebuf));
        n = snprintf(line + len, sizeof(line) - len, ": %s", es);
        len = n < 0 ? len : len + (size_t)n;
        if (len > sizeof(line) - 1)
            len = sizeof(line) - 1;
    }
    if (log_to_syslog) {
        syslog(prio, "%s", line);
        return;
    }
    /* Room for the newline: a cut line loses its last character. */
    if (len == sizeof(line) - 1)
        len--;
    line[len++] = '\n';
    log_write_all(line, len);
}

void log_info(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    log_vemit(LOG_INFO, 0, fmt, ap);
    va_end(ap);
}

void log_warn(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    log_vemit(LOG_WARNING, 0, fmt, ap);
    va_end(ap);
}

void log_error(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    log_vemit(LOG_ERR, 0, fmt, ap);
    va_end(ap);
}

void log_error_errno(int err, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    log_vemit(LOG_ERR, err, fmt, ap);
    va_end(ap);
}

void log_fatal(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    log_vemit(LOG_CRIT, 0, fmt, ap);
    va_end(ap);
    exit(1);
}

void log_fatal_errno(int err, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    log_vemit(LOG_CRIT, err, fmt, ap);
    va_end(ap);
    exit(1);
}

void log_panic(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    log_vemit(LOG_CRIT, 0, fmt, ap);
    va_end(ap);
    abort();
}

char *log_escape(const char *in, size_t inlen, char *out, size_t outlen)
{
    static const char hex[] = "0123456789abcdef";
    size_t take = inlen < SG_LOG_MAX_PEER_TEXT ? inlen : SG_LOG_MAX_PEER_TEXT;
    int cut = inlen > take;
    size_t i, o = 0;

    if (outlen == 0)
        return out;
    for (i = 0; i < take; i++) {
        unsigned char c = (unsigned char)in[i];
        int plain = c >= 0x20 && c < 0x7f && c != '\\';
        size_t need = plain ? 1 : 4;

        /* Keep room for "..." and the terminating NUL. */
        if (o + need + 4 > outlen) {
            cut = 1;
            break;
        }
        if (plain) {
            out[o++] = (char)c;
        } else {
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 0xf];
        }
    }
    if (cut && o + 4 <= outlen) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
    return out;
}
