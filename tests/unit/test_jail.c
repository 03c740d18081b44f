/* Unit tests for common/jail: which names may be a chroot, and the name a
 * file has inside one: inside, the root itself, outside (also a sibling
 * whose name starts the same), relative names, "." and "..", repeated and
 * trailing slashes, and an output buffer of exactly the size needed and
 * one octet less. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../common/jail.h"

#define OUTSIDE "is outside the chroot directory"
#define RELATIVE "is not an absolute path"
#define DOTS "has a '.' or '..' component"
#define BAD_ROOT "cannot be placed: the chroot directory is not valid"
#define TOO_LONG "is too long"

struct root_case {
    const char *root;
    const char *why; /* NULL: accepted */
};

static const struct root_case root_cases[] = {
    {"/var/lib/subgate", NULL},
    {"/var/lib/subgate/", NULL},
    {"//srv", NULL},
    {"/srv/.hidden", NULL},
    {"/srv/..x", NULL},
    {"/", "is the root of the file system"},
    {"///", "is the root of the file system"},
    {"", RELATIVE},
    {"var/lib/subgate", RELATIVE},
    {"./srv", RELATIVE},
    {"/srv/.", DOTS},
    {"/srv/../etc", DOTS},
    {"/..", DOTS},
};

struct path_case {
    const char *root;
    const char *path;
    const char *want; /* the name inside, or the reason */
    int rc;
};

static const struct path_case path_cases[] = {
    {"/var/lib/subgate", "/var/lib/subgate/queue", "/queue", 0},
    {"/var/lib/subgate", "/var/lib/subgate/tls/cert.pem", "/tls/cert.pem", 0},
    {"/var/lib/subgate", "/var/lib/subgate", "/", 0},
    {"/var/lib/subgate", "/var/lib/subgate/", "/", 0},
    {"/var/lib/subgate", "//var//lib/subgate//run/", "/run", 0},
    {"/var/lib/subgate/", "/var/lib/subgate/subgate.db", "/subgate.db", 0},
    {"//var/lib//subgate//", "/var/lib/subgate/run", "/run", 0},
    {"/var/lib/subgate", "/var/lib/subgate/.hidden", "/.hidden", 0},
    {"/var/lib/subgate", "/var/lib/subgate/..x/y", "/..x/y", 0},
    {"/srv", "/srv/a b/c", "/a b/c", 0},
    {"/var/lib/subgate", "/var/lib/subgate2/queue", OUTSIDE, -1},
    {"/var/lib/subgate", "/var/lib/subgat", OUTSIDE, -1},
    {"/var/lib/subgate", "/var/lib", OUTSIDE, -1},
    {"/var/lib/subgate", "/", OUTSIDE, -1},
    {"/var/lib/subgate", "/etc/ssl/private/key.pem", OUTSIDE, -1},
    {"/var/lib/subgate", "/var/lib/Subgate/queue", OUTSIDE, -1},
    {"/var/lib/subgate", "queue", RELATIVE, -1},
    {"/var/lib/subgate", "var/lib/subgate/queue", RELATIVE, -1},
    {"/var/lib/subgate", "", RELATIVE, -1},
    {"/var/lib/subgate", "/var/lib/subgate/../../etc/passwd", DOTS, -1},
    {"/var/lib/subgate", "/var/lib/subgate/./queue", DOTS, -1},
    {"/var/lib/subgate", "/var/lib/subgate/queue/..", DOTS, -1},
    {"/var/lib/other/../subgate", "/var/lib/subgate/queue", BAD_ROOT, -1},
    {"/", "/var/lib/subgate/queue", BAD_ROOT, -1},
    {"relative", "/relative/queue", BAD_ROOT, -1},
};

static void test_root_check(void **state)
{
    size_t i;
    int failed = 0;

    (void)state;
    for (i = 0; i < sizeof(root_cases) / sizeof(root_cases[0]); i++) {
        const struct root_case *tc = &root_cases[i];
        const char *why = NULL;
        int rc = jail_root_check(tc->root, &why);
        int want_rc = tc->why == NULL ? 0 : -1;

        if (rc != want_rc || (rc != 0 && strcmp(why, tc->why) != 0)) {
            print_error("root '%s': got %d (%s), want %d (%s)\n", tc->root, rc,
                        rc != 0 ? why : "", want_rc,
                        tc->why != NULL ? tc->why : "");
            failed++;
        }
    }
    if (failed)
        fail_msg("%d case(s) failed", failed);
}

static void test_path(void **state)
{
    size_t i;
    int failed = 0;

    (void)state;
    for (i = 0; i < sizeof(path_cases) / sizeof(path_cases[0]); i++) {
        const struct path_case *tc = &path_cases[i];
        char out[256] = "untouched";
        const char *why = NULL;
        int rc = jail_path(tc->root, tc->path, out, sizeof(out), &why);
        const char *got = rc == 0 ? out : why;

        if (rc != tc->rc || got == NULL || strcmp(got, tc->want) != 0) {
            print_error("'%s' under '%s': got %d '%s', want %d '%s'\n",
                        tc->path, tc->root, rc, got != NULL ? got : "(null)",
                        tc->rc, tc->want);
            failed++;
        }
    }
    if (failed)
        fail_msg("%d case(s) failed", failed);
}

/* The output is cut nowhere: exactly its size fits, one octet less is an
 * error, for a name inside and for the root itself. */
static void test_out_size(void **state)
{
    char out[16];
    const char *why = NULL;

    (void)state;
    memset(out, 'x', sizeof(out));
    assert_int_equal(jail_path("/srv", "/srv/queue", out, 7, &why), 0);
    assert_string_equal(out, "/queue");
    assert_int_equal(jail_path("/srv", "/srv/queue", out, 6, &why), -1);
    assert_string_equal(why, TOO_LONG);
    assert_int_equal(jail_path("/srv", "/srv//", out, 2, &why), 0);
    assert_string_equal(out, "/");
    assert_int_equal(jail_path("/srv", "/srv", out, 1, &why), -1);
    assert_string_equal(why, TOO_LONG);
    assert_int_equal(jail_path("/srv", "/srv/a/b", out, 5, &why), 0);
    assert_string_equal(out, "/a/b");
    assert_int_equal(jail_path("/srv", "/srv/a/b", out, 4, &why), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_root_check),
        cmocka_unit_test(test_path),
        cmocka_unit_test(test_out_size),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
