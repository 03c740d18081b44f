/* jail: see jail.h. Names are compared component by component, so that
 * /var/lib/subgate2 is not inside /var/lib/subgate. */
#include "jail.h"

#include <string.h>

/* The next component of the name at *pp, without slashes: its start, its
 * length in *len_r, and *pp moved past it. NULL when none is left. */
static const char *jail_next(const char **pp, size_t *len_r)
{
    const char *p = *pp, *start;

    while (*p == '/')
        p++;
    if (*p == '\0') {
        *pp = p;
        return NULL;
    }
    start = p;
    while (*p != '\0' && *p != '/')
        p++;
    *len_r = (size_t)(p - start);
    *pp = p;
    return start;
}

static int jail_is_dot(const char *c, size_t n)
{
    return (n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.');
}

/* 0 when name is absolute and has no "." or ".." component: only then
 * does its text say where it is. */
static int jail_name_check(const char *name, const char **why_r)
{
    const char *p = name, *c;
    size_t n;

    if (name[0] != '/') {
        *why_r = "is not an absolute path";
        return -1;
    }
    while ((c = jail_next(&p, &n)) != NULL) {
        if (jail_is_dot(c, n)) {
            *why_r = "has a '.' or '..' component";
            return -1;
        }
    }
    return 0;
}

int jail_root_check(const char *root, const char **why_r)
{
    const char *p = root;
    size_t n;

    if (jail_name_check(root, why_r) != 0)
        return -1;
    if (jail_next(&p, &n) == NULL) {
        *why_r = "is the root of the file system";
        return -1;
    }
    return 0;
}

int jail_path(const char *root, const char *path, char *out, size_t outlen,
              const char **why_r)
{
    const char *r = root, *p = path, *rc, *pc;
    size_t rn, pn, o = 0;

    if (jail_root_check(root, why_r) != 0) {
        *why_r = "cannot be placed: the chroot directory is not valid";
        return -1;
    }
    if (jail_name_check(path, why_r) != 0)
        return -1;
    while ((rc = jail_next(&r, &rn)) != NULL) {
        pc = jail_next(&p, &pn);
        if (pc == NULL || pn != rn || memcmp(pc, rc, rn) != 0) {
            *why_r = "is outside the chroot directory";
            return -1;
        }
    }
    while ((pc = jail_next(&p, &pn)) != NULL) {
        if (o + 1 + pn >= outlen)
            goto too_long;
        out[o++] = '/';
        memcpy(out + o, pc, pn);
        o += pn;
    }
    if (o == 0) {
        if (outlen < 2)
            goto too_long;
        out[o++] = '/';
    }
    out[o] = '\0';
    return 0;
too_long:
    *why_r = "is too long";
    return -1;
}
