/* Fuzzes the configuration reader (common/cfg.c) with whole files. The
 * input is written to an anonymous memory file and loaded by its
 * /proc/self/fd path, as a file on disk would be. Checks: a file that
 * loads prints (cfg_print) a configuration that loads again to the same
 * printout; a refused one has a "file:line: message" error. The unit
 * parsers get the same octets as a value. */
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../common/cfg.h"
#include "fuzz.h"

/* The configuration as cfg_print() writes it, in a heap string. */
static char *print_cfg(const struct cfg *c, size_t *len_r)
{
    char *buf = NULL;
    FILE *f = open_memstream(&buf, len_r);

    if (f == NULL)
        abort();
    cfg_print(c, f);
    fclose(f);
    return buf;
}

/* Loads text through a memory file; 0 with *c_r, or -1 with err. */
static int load_text(const char *text, size_t len, struct cfg **c_r, char *err,
                     size_t errlen)
{
    char path[64];
    int fd = memfd_create("fuzz-cfg", 0), rc;

    if (fd < 0)
        abort();
    if (len > 0 && write(fd, text, len) != (ssize_t)len)
        abort();
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    rc = cfg_load(path, c_r, err, errlen);
    close(fd);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[1024];
    struct cfg *c = NULL, *c2 = NULL;
    char *s = fuzz_cstr(data, size);
    size_t sz;
    unsigned long long ms;

    (void)cfg_parse_size(s, &sz);
    (void)cfg_parse_duration_ms(s, &ms);
    free(s);
    if (load_text((const char *)data, size, &c, err, sizeof(err)) == 0) {
        size_t len1, len2;
        char *p1 = print_cfg(c, &len1), *p2;

        /* What subgated -n prints is a configuration file itself; its
         * derived paths are written out, so it reads back the same. */
        if (load_text(p1, len1, &c2, err, sizeof(err)) != 0) {
            fprintf(stderr, "printed configuration refused: %s\n", err);
            fuzz_fail("cfg_print output does not load");
        }
        p2 = print_cfg(c2, &len2);
        FUZZ_CHECK(len1 == len2 && memcmp(p1, p2, len1) == 0);
        free(p1);
        free(p2);
        cfg_free(&c2);
        cfg_free(&c);
        FUZZ_CHECK(c == NULL);
    } else {
        FUZZ_CHECK(strncmp(err, "/proc/self/fd/", 14) == 0);
        FUZZ_CHECK(strchr(err, '\n') == NULL);
    }
    return 0;
}
