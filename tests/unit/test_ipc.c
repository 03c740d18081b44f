/* Unit tests for common/ipc: the incremental frame reader (whole, byte by
 * byte, split at every point, several frames per buffer, one octet over
 * the payload limit) and the blocking helpers over a socketpair and a
 * pipe, including EOF in the middle of a frame. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../common/ipc.h"

struct frame_case {
    const char *name;
    uint32_t type;
    size_t len;
};

static const struct frame_case frame_cases[] = {
    {"empty", 3, 0},
    {"one octet", 1, 1},
    {"small", 2, 37},
    {"type max", UINT32_MAX, 5},
    {"max payload", 4, SG_IPC_MAX_PAYLOAD},
};

#define NCASES (sizeof(frame_cases) / sizeof(frame_cases[0]))

/* Payload octet i of a frame: varies with the position and the type. */
static uint8_t payload_octet(uint32_t type, size_t i)
{
    return (uint8_t)(i * 7 + type);
}

/* Encodes a frame into a new heap block of exactly its size. */
static uint8_t *encode(const struct frame_case *tc, size_t *len_r)
{
    size_t i, n = IPC_HDR_LEN + tc->len;
    uint8_t *buf = malloc(n);

    assert_non_null(buf);
    ipc_hdr_encode(buf, tc->type, (uint32_t)tc->len);
    for (i = 0; i < tc->len; i++)
        buf[IPC_HDR_LEN + i] = payload_octet(tc->type, i);
    *len_r = n;
    return buf;
}

/* 0 if the frame read matches the case, else prints got/want. */
static int check_frame(const char *how, const struct frame_case *tc,
                       uint32_t type, const uint8_t *payload, uint32_t len)
{
    size_t i;

    if (type != tc->type || len != tc->len) {
        print_error("%s %s: got type %u len %u, want type %u len %zu\n", how,
                    tc->name, type, len, tc->type, tc->len);
        return -1;
    }
    for (i = 0; i < len; i++) {
        if (payload[i] != payload_octet(tc->type, i)) {
            print_error("%s %s: payload octet %zu: got %u, want %u\n", how,
                        tc->name, i, payload[i], payload_octet(tc->type, i));
            return -1;
        }
    }
    return 0;
}

static struct ipc_reader *reader_new(void)
{
    struct ipc_reader *r = malloc(sizeof(*r));

    assert_non_null(r);
    ipc_reader_init(r);
    return r;
}

static void test_header_encoding(void **state)
{
    uint8_t hdr[IPC_HDR_LEN];
    static const uint8_t want[IPC_HDR_LEN] = {0x01, 0x02, 0x03, 0x04,
                                              0x00, 0x01, 0x00, 0x00};

    (void)state;
    ipc_hdr_encode(hdr, 0x01020304, 0x10000);
    assert_memory_equal(hdr, want, IPC_HDR_LEN);
}

static void test_reader_whole(void **state)
{
    struct ipc_reader *r = reader_new();
    size_t i;
    int failed = 0;

    (void)state;
    for (i = 0; i < NCASES; i++) {
        const struct frame_case *tc = &frame_cases[i];
        size_t n, used = 0;
        uint8_t *buf = encode(tc, &n);
        const uint8_t *payload = NULL;
        uint32_t type = 0, len = 0;
        int rc = ipc_reader_feed(r, buf, n, &used, &type, &payload, &len);

        if (rc != 1 || used != n) {
            print_error("whole %s: got rc %d used %zu, want 1 used %zu\n",
                        tc->name, rc, used, n);
            failed++;
        } else if (check_frame("whole", tc, type, payload, len) < 0) {
            failed++;
        }
        free(buf);
    }
    free(r);
    if (failed)
        fail_msg("%d case(s) failed", failed);
}

static void test_reader_byte_by_byte(void **state)
{
    struct ipc_reader *r = reader_new();
    size_t i, k;
    int failed = 0;

    (void)state;
    for (i = 0; i < NCASES; i++) {
        const struct frame_case *tc = &frame_cases[i];
        size_t n;
        uint8_t *buf = encode(tc, &n);
        const uint8_t *payload = NULL;
        uint32_t type = 0, len = 0;

        for (k = 0; k < n; k++) {
            size_t used = 0;
            int want = k == n - 1 ? 1 : 0;
            int rc =
                ipc_reader_feed(r, buf + k, 1, &used, &type, &payload, &len);
            if (rc != want || used != 1) {
                print_error("bytes %s at %zu: got rc %d used %zu, "
                            "want %d used 1\n",
                            tc->name, k, rc, used, want);
                failed++;
                ipc_reader_init(r);
                break;
            }
        }
        if (k == n && check_frame("bytes", tc, type, payload, len) < 0)
            failed++;
        free(buf);
    }
    free(r);
    if (failed)
        fail_msg("%d case(s) failed", failed);
}

/* A small frame split into two reads at every possible point. */
static void test_reader_split(void **state)
{
    const struct frame_case *tc = &frame_cases[2];
    struct ipc_reader *r = reader_new();
    size_t n, cut;
    uint8_t *buf = encode(tc, &n);
    int failed = 0;

    (void)state;
    for (cut = 1; cut < n; cut++) {
        const uint8_t *payload = NULL;
        uint32_t type = 0, len = 0;
        size_t u1 = 0, u2 = 0;
        int rc1 = ipc_reader_feed(r, buf, cut, &u1, &type, &payload, &len);
        int rc2 =
            ipc_reader_feed(r, buf + cut, n - cut, &u2, &type, &payload, &len);

        if (rc1 != 0 || u1 != cut || rc2 != 1 || u2 != n - cut) {
            print_error("split at %zu: got %d/%zu %d/%zu, want 0/%zu 1/%zu\n",
                        cut, rc1, u1, rc2, u2, cut, n - cut);
            failed++;
            ipc_reader_init(r);
        } else if (check_frame("split", tc, type, payload, len) < 0) {
            failed++;
        }
    }
    free(buf);
    free(r);
    if (failed)
        fail_msg("%d split point(s) failed", failed);
}

/* Every case's frame back to back in one buffer: each call returns one
 * frame and reports exactly its octets as used. */
static void test_reader_several(void **state)
{
    struct ipc_reader *r = reader_new();
    uint8_t *all = NULL;
    size_t total = 0, off = 0, i;

    (void)state;
    for (i = 0; i < NCASES; i++) {
        size_t n;
        uint8_t *buf = encode(&frame_cases[i], &n);
        all = realloc(all, total + n);
        assert_non_null(all);
        memcpy(all + total, buf, n);
        total += n;
        free(buf);
    }
    for (i = 0; i < NCASES; i++) {
        const uint8_t *payload = NULL;
        uint32_t type = 0, len = 0;
        size_t used = 0;
        int rc = ipc_reader_feed(r, all + off, total - off, &used, &type,
                                 &payload, &len);
        if (rc != 1)
            fail_msg("several #%zu: got rc %d, want 1", i, rc);
        if (used != IPC_HDR_LEN + frame_cases[i].len)
            fail_msg("several #%zu: got used %zu, want %zu", i, used,
                     IPC_HDR_LEN + frame_cases[i].len);
        if (check_frame("several", &frame_cases[i], type, payload, len) < 0)
            fail_msg("several #%zu: frame differs", i);
        off += used;
    }
    assert_int_equal(off, total);
    free(all);
    free(r);
}

/* A length one over the limit is refused as soon as the header is in,
 * whether it comes whole or octet by octet; the limit itself passes (see
 * the "max payload" case). */
static void test_reader_over_limit(void **state)
{
    struct ipc_reader *r = reader_new();
    uint8_t buf[IPC_HDR_LEN + 4] = {0};
    const uint8_t *payload = NULL;
    uint32_t type = 0, len = 0;
    size_t used = 0, k;
    int rc;

    (void)state;
    ipc_hdr_encode(buf, 1, SG_IPC_MAX_PAYLOAD + 1);
    rc = ipc_reader_feed(r, buf, sizeof(buf), &used, &type, &payload, &len);
    if (rc != -1 || used != IPC_HDR_LEN)
        fail_msg("over whole: got rc %d used %zu, want -1 used %d", rc, used,
                 IPC_HDR_LEN);
    ipc_reader_init(r);
    for (k = 0; k < IPC_HDR_LEN; k++) {
        int want = k == IPC_HDR_LEN - 1 ? -1 : 0;
        rc = ipc_reader_feed(r, buf + k, 1, &used, &type, &payload, &len);
        if (rc != want)
            fail_msg("over bytes at %zu: got rc %d, want %d", k, rc, want);
    }
    ipc_hdr_encode(buf, 1, UINT32_MAX);
    ipc_reader_init(r);
    rc = ipc_reader_feed(r, buf, sizeof(buf), &used, &type, &payload, &len);
    assert_int_equal(rc, -1);
    free(r);
}

static void make_pair(int sv[2])
{
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
}

/* Reads one frame on another thread, so that a writer may block. */
struct reader_arg {
    int fd;
    int rc;
    uint32_t type;
    uint32_t len;
    uint8_t *buf;
};

static void *reader_main(void *arg)
{
    struct reader_arg *a = arg;

    a->rc =
        ipc_read_frame(a->fd, &a->type, a->buf, SG_IPC_MAX_PAYLOAD, &a->len);
    return NULL;
}

static void test_blocking_roundtrip(void **state)
{
    uint8_t *out = malloc(SG_IPC_MAX_PAYLOAD);
    struct reader_arg a = {.buf = malloc(SG_IPC_MAX_PAYLOAD)};
    size_t i, k;
    int sv[2];

    (void)state;
    assert_non_null(out);
    assert_non_null(a.buf);
    make_pair(sv);
    a.fd = sv[1];
    for (i = 0; i < NCASES; i++) {
        const struct frame_case *tc = &frame_cases[i];
        pthread_t th;
        int rc;

        for (k = 0; k < tc->len; k++)
            out[k] = payload_octet(tc->type, k);
        assert_int_equal(pthread_create(&th, NULL, reader_main, &a), 0);
        rc = ipc_write_frame(sv[0], tc->type, out, tc->len);
        assert_int_equal(pthread_join(th, NULL), 0);
        if (rc != 0)
            fail_msg("write %s: got %d, want 0", tc->name, rc);
        if (a.rc != 0)
            fail_msg("read %s: got %d, want 0", tc->name, a.rc);
        if (check_frame("blocking", tc, a.type, a.buf, a.len) < 0)
            fail_msg("blocking %s: frame differs", tc->name);
    }
    assert_int_equal(ipc_write_frame(sv[0], 1, out, SG_IPC_MAX_PAYLOAD + 1),
                     -EMSGSIZE);
    close(sv[0]);
    close(sv[1]);
    free(out);
    free(a.buf);
}

/* The writer sends octet by octet, so the reader sees short reads. */
struct trickle {
    int fd;
    const uint8_t *buf;
    size_t len;
};

static void *trickle_main(void *arg)
{
    struct trickle *t = arg;
    size_t i;

    for (i = 0; i < t->len; i++) {
        if (write(t->fd, t->buf + i, 1) != 1)
            break;
        if (i % 64 == 0)
            sched_yield();
    }
    return NULL;
}

static void test_blocking_short_reads(void **state)
{
    const struct frame_case *tc = &frame_cases[2];
    uint8_t in[64];
    struct trickle t;
    pthread_t th;
    uint32_t type = 0, len = 0;
    size_t n;
    uint8_t *buf = encode(tc, &n);
    int sv[2], rc;

    (void)state;
    make_pair(sv);
    t.fd = sv[0];
    t.buf = buf;
    t.len = n;
    assert_int_equal(pthread_create(&th, NULL, trickle_main, &t), 0);
    rc = ipc_read_frame(sv[1], &type, in, sizeof(in), &len);
    assert_int_equal(pthread_join(th, NULL), 0);
    if (rc != 0)
        fail_msg("short reads: got %d, want 0", rc);
    if (check_frame("short reads", tc, type, in, len) < 0)
        fail_msg("short reads: frame differs");
    close(sv[0]);
    close(sv[1]);
    free(buf);
}

/* A maximum frame through a small socket buffer: the writer has to go
 * round its loop. */
static void test_blocking_small_buffer(void **state)
{
    const struct frame_case *tc = &frame_cases[NCASES - 1];
    uint8_t *out = malloc(SG_IPC_MAX_PAYLOAD);
    struct reader_arg a = {.buf = malloc(SG_IPC_MAX_PAYLOAD)};
    int sv[2], small = 4096;
    pthread_t th;
    size_t k;

    (void)state;
    assert_non_null(out);
    assert_non_null(a.buf);
    make_pair(sv);
    assert_int_equal(
        setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
    a.fd = sv[1];
    for (k = 0; k < tc->len; k++)
        out[k] = payload_octet(tc->type, k);
    assert_int_equal(pthread_create(&th, NULL, reader_main, &a), 0);
    assert_int_equal(ipc_write_frame(sv[0], tc->type, out, tc->len), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    if (a.rc != 0)
        fail_msg("small buffer: got %d, want 0", a.rc);
    if (check_frame("small buffer", tc, a.type, a.buf, a.len) < 0)
        fail_msg("small buffer: frame differs");
    close(sv[0]);
    close(sv[1]);
    free(out);
    free(a.buf);
}

/* What the peer sends before it closes, and what the reader must say. */
struct eof_case {
    const char *name;
    uint32_t hdr_len; /* length field written */
    size_t send;      /* octets of header + payload actually sent */
    size_t cap;       /* reader's buffer */
    int want;
};

static const struct eof_case eof_cases[] = {
    {"clean eof", 10, 0, 64, -ECONNRESET},
    {"eof in header", 10, 3, 64, -EPIPE},
    {"eof after header", 10, IPC_HDR_LEN, 64, -EPIPE},
    {"eof in payload", 10, IPC_HDR_LEN + 4, 64, -EPIPE},
    {"whole", 10, IPC_HDR_LEN + 10, 64, 0},
    {"over limit", SG_IPC_MAX_PAYLOAD + 1, IPC_HDR_LEN, 64, -EPROTO},
    {"over cap", 10, IPC_HDR_LEN + 10, 9, -EMSGSIZE},
};

static void test_blocking_eof(void **state)
{
    uint8_t frame[IPC_HDR_LEN + 10], in[64];
    size_t i;
    int failed = 0;

    (void)state;
    memset(frame, 'x', sizeof(frame));
    for (i = 0; i < sizeof(eof_cases) / sizeof(eof_cases[0]); i++) {
        const struct eof_case *tc = &eof_cases[i];
        uint32_t type = 0, len = 0;
        int sv[2], rc;

        make_pair(sv);
        ipc_hdr_encode(frame, 7, tc->hdr_len);
        assert_int_equal(write(sv[0], frame, tc->send), (ssize_t)tc->send);
        close(sv[0]);
        rc = ipc_read_frame(sv[1], &type, in, tc->cap, &len);
        if (rc != tc->want) {
            print_error("eof %s: got %d (%s), want %d (%s)\n", tc->name, rc,
                        strerror(-rc), tc->want, strerror(-tc->want));
            failed++;
        }
        close(sv[1]);
    }
    if (failed)
        fail_msg("%d case(s) failed", failed);
}

/* Writing to a closed peer is -EPIPE, not a SIGPIPE that kills us. */
static void test_write_closed_peer(void **state)
{
    int sv[2];

    (void)state;
    make_pair(sv);
    close(sv[1]);
    assert_int_equal(ipc_write_frame(sv[0], 1, "abc", 3), -EPIPE);
    close(sv[0]);
}

/* A descriptor that is not a socket (a pipe) works through writev(). */
static void test_pipe(void **state)
{
    uint8_t in[16];
    uint32_t type = 0, len = 0;
    int p[2];

    (void)state;
    assert_int_equal(pipe(p), 0);
    assert_int_equal(ipc_write_frame(p[1], 9, "hello", 5), 0);
    assert_int_equal(ipc_read_frame(p[0], &type, in, sizeof(in), &len), 0);
    assert_int_equal(type, 9);
    assert_int_equal(len, 5);
    assert_memory_equal(in, "hello", 5);
    close(p[0]);
    close(p[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_encoding),
        cmocka_unit_test(test_reader_whole),
        cmocka_unit_test(test_reader_byte_by_byte),
        cmocka_unit_test(test_reader_split),
        cmocka_unit_test(test_reader_several),
        cmocka_unit_test(test_reader_over_limit),
        cmocka_unit_test(test_blocking_roundtrip),
        cmocka_unit_test(test_blocking_short_reads),
        cmocka_unit_test(test_blocking_small_buffer),
        cmocka_unit_test(test_blocking_eof),
        cmocka_unit_test(test_write_closed_peer),
        cmocka_unit_test(test_pipe),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
