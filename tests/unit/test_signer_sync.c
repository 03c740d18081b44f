/* test_signer_sync: the blocking signer client against a stand-in signer
 * in a thread: the frames it sends (BEGIN "qid\0domain\0", the message in
 * frames of at most SG_IPC_MAX_PAYLOAD, END), a signature, a refusal, an
 * unexpected frame, a peer that hangs up, one that never answers (the
 * timeout), no socket at all, and arguments over their bounds. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../common/ipc.h"
#include "../../common/limits.h"
#include "../../common/signer_proto.h"
#include "../../common/signer_sync.h"

enum behaviour {
    B_SIGN,   /* SIGNER_OK with a signature */
    B_REFUSE, /* SIGNER_TEMPFAIL */
    B_WRONG,  /* a frame type that is no answer */
    B_HANGUP, /* closes without an answer */
    B_SILENT, /* reads everything, never answers */
};

struct fake {
    char dir[64];
    char sock[128];
    int lfd;
    enum behaviour b;
    pthread_t tid;
    /* What the client sent. */
    char begin[512];
    size_t beginlen;
    size_t datalen, nframes, maxframe;
    int ended;
    unsigned char *data;
};

static void *fake_main(void *arg)
{
    struct fake *f = arg;
    uint8_t *buf = malloc(SG_IPC_MAX_PAYLOAD);
    int fd = accept(f->lfd, NULL, NULL);

    if (fd < 0 || buf == NULL) {
        free(buf);
        return NULL;
    }
    for (;;) {
        uint32_t type, len;
        if (ipc_read_frame(fd, &type, buf, SG_IPC_MAX_PAYLOAD, &len) != 0)
            break;
        if (type == SIGNER_BEGIN && len <= sizeof(f->begin)) {
            memcpy(f->begin, buf, len);
            f->beginlen = len;
        } else if (type == SIGNER_DATA) {
            f->data = realloc(f->data, f->datalen + len);
            memcpy(f->data + f->datalen, buf, len);
            f->datalen += len;
            f->nframes++;
            if (len > f->maxframe)
                f->maxframe = len;
        } else if (type == SIGNER_END) {
            f->ended = 1;
            break;
        }
    }
    switch (f->b) {
    case B_SIGN:
        ipc_write_frame(fd, SIGNER_OK, "DKIM-Signature: v=1; d=x\r\n", 26);
        break;
    case B_REFUSE:
        ipc_write_frame(fd, SIGNER_TEMPFAIL, "no active key for x", 19);
        break;
    case B_WRONG:
        ipc_write_frame(fd, SIGNER_BEGIN, "x", 1);
        break;
    case B_HANGUP:
        break;
    case B_SILENT:
        /* Until the client gives up and closes. */
        while (read(fd, buf, 1) > 0) {
        }
        break;
    }
    close(fd);
    free(buf);
    return NULL;
}

static int setup(void **state)
{
    struct fake *f = calloc(1, sizeof(*f));
    struct sockaddr_un sun = {.sun_family = AF_UNIX};

    if (f == NULL)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/test_signer_sync.XXXXXX");
    snprintf(f->sock, sizeof(f->sock), "%s/signer.sock", f->dir);
    if (mkdtemp(f->dir) == NULL || strlen(f->sock) >= sizeof(sun.sun_path))
        goto fail;
    snprintf(f->sock, sizeof(f->sock), "%s/signer.sock", f->dir);
    memcpy(sun.sun_path, f->sock, strlen(f->sock) + 1);
    f->lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (f->lfd < 0 || bind(f->lfd, (struct sockaddr *)&sun, sizeof(sun)) < 0 ||
        listen(f->lfd, 1) < 0)
        goto fail;
    *state = f;
    return 0;
fail:
    free(f);
    return -1;
}

static int teardown(void **state)
{
    struct fake *f = *state;

    close(f->lfd);
    unlink(f->sock);
    rmdir(f->dir);
    free(f->data);
    free(f);
    return 0;
}

static void run(struct fake *f, enum behaviour b)
{
    f->b = b;
    assert_int_equal(pthread_create(&f->tid, NULL, fake_main, f), 0);
}

static int sign(struct fake *f, const char *msg, size_t len, unsigned ms,
                char **sig, size_t *siglen, char *err, size_t errlen)
{
    int rc = signer_sync_sign(f->sock, "DYXL5X46HGXY", "example.org", msg, len,
                              ms, sig, siglen, err, errlen);

    pthread_join(f->tid, NULL);
    return rc;
}

static void test_sign_frames(void **state)
{
    struct fake *f = *state;
    size_t len = 2 * SG_IPC_MAX_PAYLOAD + 1000;
    char *msg = malloc(len), *sig = NULL, err[256] = "";
    size_t siglen = 0;

    assert_non_null(msg);
    for (size_t i = 0; i < len; i++)
        msg[i] = (char)('a' + i % 26);
    run(f, B_SIGN);
    assert_int_equal(sign(f, msg, len, 5000, &sig, &siglen, err, sizeof(err)),
                     0);
    assert_int_equal(siglen, 26);
    assert_string_equal(sig, "DKIM-Signature: v=1; d=x\r\n");
    /* BEGIN carries "qid\0domain\0". */
    assert_int_equal(f->beginlen, 12 + 1 + 11 + 1);
    assert_memory_equal(f->begin, "DYXL5X46HGXY\0example.org\0", 25);
    assert_int_equal(f->datalen, len);
    assert_memory_equal(f->data, msg, len);
    assert_int_equal(f->nframes, 3);
    assert_int_equal(f->maxframe, SG_IPC_MAX_PAYLOAD);
    assert_true(f->ended);
    free(sig);
    free(msg);
}

static void test_failures(void **state)
{
    static const struct {
        enum behaviour b;
        const char *want;
    } cases[] = {
        {B_REFUSE, "no active key for x"},
        {B_WRONG, "unexpected frame type"},
        {B_HANGUP, "signer read:"},
        {B_SILENT, "timeout"},
    };
    struct fake *f = *state;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *sig = NULL, err[256] = "";
        size_t siglen = 0;
        int rc;

        free(f->data);
        f->data = NULL;
        f->datalen = f->nframes = 0;
        run(f, cases[i].b);
        rc = sign(f, "Subject: x\r\n\r\nhi\r\n", 18, 300, &sig, &siglen, err,
                  sizeof(err));
        if (rc != -1 || sig != NULL)
            fail_msg("case %zu: got %d, want -1 and no signature", i, rc);
        if (strstr(err, cases[i].want) == NULL)
            fail_msg("case %zu: got \"%s\", want \"%s\"", i, err,
                     cases[i].want);
    }
}

static void test_no_signer(void **state)
{
    char *sig = NULL, err[256] = "", path[200];
    size_t siglen = 0;
    char longpath[300];

    (void)state;
    snprintf(path, sizeof(path), "/tmp/no-such-dir-%d/signer.sock",
             (int)getpid());
    assert_int_equal(signer_sync_sign(path, "Q", "example.org", "x", 1, 100,
                                      &sig, &siglen, err, sizeof(err)),
                     -1);
    assert_non_null(strstr(err, "signer unavailable"));
    memset(longpath, 'a', sizeof(longpath) - 1);
    longpath[sizeof(longpath) - 1] = '\0';
    assert_int_equal(signer_sync_sign(longpath, "Q", "example.org", "x", 1, 100,
                                      &sig, &siglen, err, sizeof(err)),
                     -1);
    assert_non_null(strstr(err, "too long"));
    assert_null(sig);
}

/* A domain over the bound is refused before anything is sent. */
static void test_bad_domain(void **state)
{
    struct fake *f = *state;
    char dom[SG_MAX_DOMAIN + 200], *sig = NULL, err[256] = "";
    size_t siglen = 0;

    memset(dom, 'd', sizeof(dom) - 1);
    dom[sizeof(dom) - 1] = '\0';
    run(f, B_HANGUP);
    assert_int_equal(signer_sync_sign(f->sock, "Q", dom, "x", 1, 1000, &sig,
                                      &siglen, err, sizeof(err)),
                     -1);
    pthread_join(f->tid, NULL);
    assert_non_null(strstr(err, "signer write"));
    assert_int_equal(f->beginlen, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sign_frames, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failures, setup, teardown),
        cmocka_unit_test(test_no_signer),
        cmocka_unit_test_setup_teardown(test_bad_domain, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
