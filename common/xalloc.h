/* xalloc: allocators that abort on out of memory (never return NULL).
 * Callers check peer-controlled sizes before asking. Any thread. */
#ifndef SG_XALLOC_H
#define SG_XALLOC_H

#include <stddef.h>

void *xmalloc(size_t n);
/* Zeroed; aborts on overflow of n * size as well. */
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
/* Formats into a new string. */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
