/* fuzz: what the libFuzzer harnesses share. Each harness checks the
 * invariants its module promises and calls fuzz_fail() (an abort that
 * libFuzzer reports as a crash, with the input saved) when one breaks. */
#ifndef SG_FUZZ_H
#define SG_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define fuzz_fail(what)                                                        \
    do {                                                                       \
        fprintf(stderr, "invariant broken: %s (%s:%d)\n", what, __FILE__,      \
                __LINE__);                                                     \
        abort();                                                               \
    } while (0)

#define FUZZ_CHECK(c)                                                          \
    do {                                                                       \
        if (!(c))                                                              \
            fuzz_fail(#c);                                                     \
    } while (0)

/* A NUL-terminated heap copy of data (the caller frees it). */
static inline char *fuzz_cstr(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);

    if (s == NULL)
        abort();
    for (size_t i = 0; i < size; i++)
        s[i] = (char)data[i];
    s[size] = '\0';
    return s;
}

#endif
