/* test_mailgate_spool: the spool of change-password requests taken over
 * SMTP. Write and read back, the null sender, refusal of bad envelopes
 * and names, no overwriting, and nothing left behind. Each test works in
 * its own mkdtemp directory. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../server/mailgate_spool.h"

struct fixture {
    char dir[64];
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/test_mailgate_spool.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    assert_int_equal(mailgate_spool_init(f->dir), 0);
    assert_int_equal(mailgate_spool_init(f->dir), 0); /* idempotent */
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[PATH_MAX + 16];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

/* Names in <dir>/mailgate, files only, joined by spaces, into out. */
static void list_spool(const struct fixture *f, char *out, size_t outlen)
{
    char path[PATH_MAX];
    struct dirent *de;
    DIR *d;

    snprintf(path, sizeof(path), "%s/%s", f->dir, MAILGATE_SPOOL_DIR);
    d = opendir(path);
    assert_non_null(d);
    out[0] = '\0';
    while ((de = readdir(d)) != NULL) {
        if (de->d_type == DT_DIR)
            continue;
        strncat(out, de->d_name, outlen - strlen(out) - 2);
        strncat(out, " ", outlen - strlen(out) - 1);
    }
    closedir(d);
}

static int open_spool(const struct fixture *f, const char *id)
{
    char path[PATH_MAX];

    snprintf(path, sizeof(path), "%s/%s/%s", f->dir, MAILGATE_SPOOL_DIR, id);
    return open(path, O_RDONLY);
}

static void test_write_read(void **state)
{
    struct fixture *f = *state;
    static const char msg[] = "Subject: x\r\n\r\nsigned text\r\n";
    char sender[SG_MAX_PATH + 1], rcpt[SG_MAX_PATH + 1], body[64], names[256];
    ssize_t n;
    int fd;

    assert_int_equal(
        mailgate_spool_write(f->dir, "AAAAAAAAAAAA", "a@example.net",
                             "chpasswd@example.org", msg, strlen(msg)),
        0);
    list_spool(f, names, sizeof(names));
    assert_string_equal(names, "AAAAAAAAAAAA "); /* no temporary file */
    fd = open_spool(f, "AAAAAAAAAAAA");
    assert_true(fd >= 0);
    assert_int_equal(mailgate_spool_read_env(fd, sender, rcpt), 0);
    assert_string_equal(sender, "a@example.net");
    assert_string_equal(rcpt, "chpasswd@example.org");
    n = read(fd, body, sizeof(body));
    assert_int_equal(n, (ssize_t)strlen(msg));
    assert_memory_equal(body, msg, strlen(msg));
    close(fd);
    /* The same id again never replaces the first request. */
    assert_int_equal(mailgate_spool_write(f->dir, "AAAAAAAAAAAA",
                                          "b@example.net",
                                          "chpasswd@example.org", "x", 1),
                     -EEXIST);
    list_spool(f, names, sizeof(names));
    assert_string_equal(names, "AAAAAAAAAAAA ");
}

static void test_null_sender(void **state)
{
    struct fixture *f = *state;
    char sender[SG_MAX_PATH + 1], rcpt[SG_MAX_PATH + 1];
    int fd;

    assert_int_equal(mailgate_spool_write(f->dir, "BBBBBBBBBBBB", "",
                                          "chpasswd@example.org", "", 0),
                     0);
    fd = open_spool(f, "BBBBBBBBBBBB");
    assert_true(fd >= 0);
    assert_int_equal(mailgate_spool_read_env(fd, sender, rcpt), 0);
    assert_string_equal(sender, "");
    assert_string_equal(rcpt, "chpasswd@example.org");
    close(fd);
}

static void test_refused(void **state)
{
    struct fixture *f = *state;
    char names[256];

    assert_int_equal(mailgate_spool_write(f->dir, "CCCCCCCCCCCC",
                                          "a@example.net\nrecipient x",
                                          "chpasswd@example.org", "", 0),
                     -EINVAL);
    assert_int_equal(mailgate_spool_write(f->dir, "../CCCCCCCCCC", "",
                                          "chpasswd@example.org", "", 0),
                     -EINVAL);
    list_spool(f, names, sizeof(names));
    assert_string_equal(names, "");
}

/* Writes raw as a spool file and reads its envelope: the result. */
static int read_raw(const struct fixture *f, const char *raw)
{
    char path[PATH_MAX], sender[SG_MAX_PATH + 1], rcpt[SG_MAX_PATH + 1];
    int fd, rc;
    FILE *fp;

    snprintf(path, sizeof(path), "%s/%s/raw", f->dir, MAILGATE_SPOOL_DIR);
    fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(raw, fp);
    fclose(fp);
    fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    rc = mailgate_spool_read_env(fd, sender, rcpt);
    close(fd);
    unlink(path);
    return rc;
}

static void test_malformed(void **state)
{
    struct fixture *f = *state;
    char big[SG_MAX_PATH + 64];

    assert_int_equal(read_raw(f, "sender a@b\nrecipient c@d\n\nmsg"), 0);
    assert_int_equal(read_raw(f, ""), -1);
    assert_int_equal(read_raw(f, "no envelope here\n"), -1);
    assert_int_equal(read_raw(f, "sender a@b\nrecipient c@d\nmsg"), -1);
    assert_int_equal(read_raw(f, "sender a@b\nrecipient \n\nmsg"), -1);
    assert_int_equal(read_raw(f, "recipient c@d\nsender a@b\n\nmsg"), -1);
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    memcpy(big, "sender ", 7);
    assert_int_equal(read_raw(f, big), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_write_read, setup, teardown),
        cmocka_unit_test_setup_teardown(test_null_sender, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
