/* xalloc: see xalloc.h. Running out of memory is not a condition subgate
 * recovers from: a process that cannot allocate aborts with a log line and
 * is restarted by the master. */
#include "xalloc.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

static void xalloc_fail(size_t n) __attribute__((noreturn));

static void xalloc_fail(size_t n)
{
    log_panic("out of memory allocating %zu octets", n);
}

void *xmalloc(size_t n)
{
    /* malloc(0) may return NULL; callers expect a pointer they can free. */
    void *p = malloc(n ? n : 1);

    if (p == NULL)
        xalloc_fail(n);
    return p;
}

void *xcalloc(size_t n, size_t size)
{
    void *p;

    if (size != 0 && n > SIZE_MAX / size)
        log_panic("allocation overflow: %zu * %zu octets", n, size);
    p = calloc(n ? n : 1, size ? size : 1);
    if (p == NULL)
        xalloc_fail(n * size);
    return p;
}

void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);

    if (q == NULL)
        xalloc_fail(n);
    return q;
}

char *xstrdup(const char *s)
{
    return xstrndup(s, strlen(s));
}

char *xstrndup(const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    char *d = xmalloc(len + 1);

    memcpy(d, s, len);
    d[len] = '\0';
    return d;
}

char *xasprintf(const char *fmt, ...)
{
    va_list ap;
    char *s;
    int n;

    va_start(ap, fmt);
    n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0)
        xalloc_fail(0);
    return s;
}
