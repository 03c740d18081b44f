/* Unit tests for signer_client, against the real signer server
 * (signer_conn) running on the same event loop with a temporary database
 * and an Ed25519 key, and against stand-ins that misbehave: no listener,
 * a listener that never answers, one that hangs up. Checks that the
 * callback runs exactly once, never from inside signer_client_sign(), and
 * never after signer_client_cancel(); ASan checks that everything is
 * freed. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sqlite3.h>
#include <uv.h>

#include "../../common/cfg.h"
#include "../../common/db.h"
#include "../../server/signer_client.h"
#include "../../signer/signer_conn.h"

#define TIMEOUT_MS 20000

struct fixture {
    char dir[64];
    char key_dir[128];
    char database[128];
    char run_dir[128];
    char sock[160];
    uv_loop_t loop;
    struct signer_conn_srv srv;
};

/* What a callback saw. */
struct result {
    int calls;
    int status;
    char sig[4096];
    char err[256];
};

static void done_cb(void *arg, int status, const char *sig, size_t siglen,
                    const char *err)
{
    struct result *r = arg;

    r->calls++;
    r->status = status;
    if (sig != NULL)
        snprintf(r->sig, sizeof(r->sig), "%.*s", (int)siglen, sig);
    if (err != NULL)
        snprintf(r->err, sizeof(r->err), "%s", err);
}

static void sh(const char *cmd)
{
    assert_int_equal(system(cmd), 0);
}

static void write_key(const char *path)
{
    EVP_PKEY *pk = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    BIO *bio = BIO_new_file(path, "w");

    assert_non_null(pk);
    assert_non_null(bio);
    assert_int_equal(
        PEM_write_bio_PrivateKey(bio, pk, NULL, NULL, 0, NULL, NULL), 1);
    BIO_free(bio);
    EVP_PKEY_free(pk);
    assert_int_equal(chmod(path, 0600), 0);
}

static void make_db(const char *path)
{
    static const char sql[] =
        "INSERT INTO tenant(name, created) VALUES ('example.org', 0);"
        "INSERT INTO domain(name, tenant_id, created)"
        " SELECT 'example.org', id, 0 FROM tenant;"
        "INSERT INTO dkim_key(domain, selector, algo, bits, state,"
        " public_key, key_file, created) VALUES ('example.org', 'ed1',"
        " 'ed25519', 256, 'active', 'x', 'example.org/ed1.pem', 0);";
    char err[256];
    sqlite3 *db = NULL;

    if (db_open(path, 1, &db, err, sizeof(err)) < 0)
        fail_msg("db_open: %s", err);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    db_close(&db);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    char path[256], err[256];
    struct cfg c;

    assert_non_null(f);
    /* As in subgated: a peer that hangs up gives EPIPE, not a signal. */
    signal(SIGPIPE, SIG_IGN);
    snprintf(f->dir, sizeof(f->dir), "/tmp/test_signer_client.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->key_dir, sizeof(f->key_dir), "%s/keys", f->dir);
    snprintf(f->database, sizeof(f->database), "%s/subgate.db", f->dir);
    snprintf(f->run_dir, sizeof(f->run_dir), "%s/run", f->dir);
    snprintf(f->sock, sizeof(f->sock), "%s/signer.sock", f->run_dir);
    snprintf(path, sizeof(path), "%s/example.org", f->key_dir);
    assert_int_equal(mkdir(f->key_dir, 0700), 0);
    assert_int_equal(mkdir(path, 0700), 0);
    snprintf(path, sizeof(path), "%s/example.org/ed1.pem", f->key_dir);
    write_key(path);
    make_db(f->database);

    memset(&c, 0, sizeof(c));
    c.key_dir = f->key_dir;
    c.database = f->database;
    c.run_dir = f->run_dir;
    c.max_message_size = 64 * 1024;
    assert_int_equal(uv_loop_init(&f->loop), 0);
    if (signer_conn_srv_init(&f->srv, &f->loop, &c, err, sizeof(err)) < 0)
        fail_msg("signer_conn_srv_init: %s", err);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[128];

    signer_conn_srv_stop(&f->srv);
    assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
    signer_conn_srv_close(&f->srv);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
    sh(cmd);
    free(f);
    return 0;
}

/* Turns the loop until the callback ran; the request's timer bounds it. */
static void run_until_done(struct fixture *f, const struct result *r)
{
    while (r->calls == 0)
        uv_run(&f->loop, UV_RUN_ONCE);
}

/* A few idle turns, for close callbacks and anything left pending. */
static void settle(struct fixture *f)
{
    int i;

    for (i = 0; i < 20; i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
}

static struct signer_req *start(struct fixture *f, const char *sock,
                                const char *domain, const char *msg, size_t len,
                                unsigned timeout_ms, struct result *r)
{
    struct signer_req *req;

    memset(r, 0, sizeof(*r));
    req = signer_client_sign(&f->loop, sock, "TESTQID1", domain, msg, len,
                             timeout_ms, done_cb, r);
    assert_non_null(req);
    if (r->calls != 0)
        fail_msg("callback ran inside signer_client_sign()");
    return req;
}

static const char msg[] = "From: alice@example.org\r\n"
                          "Subject: client test\r\n"
                          "\r\n"
                          "Hello.\r\n";

static void expect_failure(const char *name, const struct result *r,
                           const char *want)
{
    if (r->calls != 1 || r->status != -1 || strcmp(r->err, want) != 0)
        fail_msg("%s: got calls=%d status=%d err=\"%s\", want one call, -1, "
                 "\"%s\"",
                 name, r->calls, r->status, r->err, want);
}

static void test_sign_ok(void **state)
{
    struct fixture *f = *state;
    struct result r;
    char *big;
    size_t len = 120 * 1024, i;

    start(f, f->sock, "example.org", msg, sizeof(msg) - 1, TIMEOUT_MS, &r);
    run_until_done(f, &r);
    if (r.calls != 1 || r.status != 0)
        fail_msg("got calls=%d status=%d err=%s, want one success", r.calls,
                 r.status, r.err);
    assert_true(strncmp(r.sig, "DKIM-Signature: ", 16) == 0);
    assert_non_null(strstr(r.sig, "a=ed25519-sha256"));
    assert_non_null(strstr(r.sig, "s=ed1"));
    assert_string_equal(r.sig + strlen(r.sig) - 2, "\r\n");

    /* A message of several DATA frames (64 KiB each). */
    big = malloc(3 * 64 * 1024);
    assert_non_null(big);
    memcpy(big, msg, sizeof(msg) - 1);
    for (i = sizeof(msg) - 1; i + 80 <= len; i += 80) {
        memset(big + i, 'a', 78);
        memcpy(big + i + 78, "\r\n", 2);
    }
    start(f, f->sock, "example.org", big, i, TIMEOUT_MS, &r);
    run_until_done(f, &r);
    if (r.calls != 1 || r.status != 0)
        fail_msg("big: got calls=%d status=%d err=%s, want success", r.calls,
                 r.status, r.err);
    settle(f);
    assert_int_equal(r.calls, 1);
    free(big);
}

static void test_signer_refuses(void **state)
{
    struct fixture *f = *state;
    struct result r;
    size_t len = 200 * 1024;
    char *big = malloc(len);

    start(f, f->sock, "unknown.example", msg, sizeof(msg) - 1, TIMEOUT_MS, &r);
    run_until_done(f, &r);
    expect_failure("unknown domain", &r, "no active key for unknown.example");

    /* Over 64K + headroom: the signer answers early and hangs up while
     * the client is still writing. */
    assert_non_null(big);
    memset(big, 'x', len);
    memcpy(big, msg, sizeof(msg) - 1);
    start(f, f->sock, "example.org", big, len, TIMEOUT_MS, &r);
    run_until_done(f, &r);
    expect_failure("too big", &r, "message too big");
    settle(f);
    assert_int_equal(r.calls, 1);
    free(big);
}

static void test_unavailable(void **state)
{
    struct fixture *f = *state;
    struct sockaddr_un sun;
    struct result r;
    char path[200];
    int fd;

    snprintf(path, sizeof(path), "%s/none.sock", f->dir);
    start(f, path, "example.org", msg, sizeof(msg) - 1, TIMEOUT_MS, &r);
    run_until_done(f, &r);
    expect_failure("no socket", &r,
                   "signer unavailable: no such file or directory");

    /* A socket file nobody listens on. */
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/dead.sock", f->dir);
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
    close(fd);
    start(f, sun.sun_path, "example.org", msg, sizeof(msg) - 1, TIMEOUT_MS, &r);
    run_until_done(f, &r);
    expect_failure("no listener", &r, "signer unavailable: connection refused");
    settle(f);
}

/* A listener that accepts (kernel backlog) but never reads or answers. */
static void test_timeout(void **state)
{
    struct fixture *f = *state;
    struct sockaddr_un sun;
    struct result r;
    int fd;

    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/mute.sock", f->dir);
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
    assert_int_equal(listen(fd, 4), 0);
    start(f, sun.sun_path, "example.org", msg, sizeof(msg) - 1, 50, &r);
    run_until_done(f, &r);
    expect_failure("mute signer", &r, "signer timeout");
    settle(f);
    assert_int_equal(r.calls, 1);
    close(fd);
}

static void hangup_close_cb(uv_handle_t *h)
{
    free(h);
}

/* Accepts and hangs up at once. */
static void hangup_accept_cb(uv_stream_t *server, int status)
{
    uv_pipe_t *p = malloc(sizeof(*p));

    assert_int_equal(status, 0);
    assert_non_null(p);
    uv_pipe_init(server->loop, p, 0);
    assert_int_equal(uv_accept(server, (uv_stream_t *)p), 0);
    uv_close((uv_handle_t *)p, hangup_close_cb);
}

static void test_hangup(void **state)
{
    struct fixture *f = *state;
    uv_pipe_t listener;
    struct result r;
    char path[200];

    snprintf(path, sizeof(path), "%s/rude.sock", f->dir);
    uv_pipe_init(&f->loop, &listener, 0);
    assert_int_equal(uv_pipe_bind(&listener, path), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&listener, 4, hangup_accept_cb),
                     0);
    start(f, path, "example.org", msg, sizeof(msg) - 1, TIMEOUT_MS, &r);
    run_until_done(f, &r);
    if (r.calls != 1 || r.status != -1 ||
        (strcmp(r.err, "signer closed the connection") != 0 &&
         strncmp(r.err, "signer unavailable: ", 20) != 0))
        fail_msg("got calls=%d status=%d err=%s, want a hang-up failure",
                 r.calls, r.status, r.err);
    uv_close((uv_handle_t *)&listener, NULL);
    settle(f);
}

/* Cancelled at any point: before connecting, and while the signer works;
 * the callback never runs and the request is freed (ASan). */
static void test_cancel(void **state)
{
    struct fixture *f = *state;
    struct signer_req *req;
    struct result r;
    int turns;

    req =
        start(f, f->sock, "example.org", msg, sizeof(msg) - 1, TIMEOUT_MS, &r);
    signer_client_cancel(req);
    settle(f);
    assert_int_equal(r.calls, 0);

    for (turns = 1; turns <= 6; turns++) {
        int i;

        req = start(f, f->sock, "example.org", msg, sizeof(msg) - 1, TIMEOUT_MS,
                    &r);
        for (i = 0; i < turns && r.calls == 0; i++)
            uv_run(&f->loop, UV_RUN_NOWAIT);
        if (r.calls == 0)
            signer_client_cancel(req);
        settle(f);
        assert_true(r.calls <= 1);
    }
    /* The server side is fine afterwards. */
    start(f, f->sock, "example.org", msg, sizeof(msg) - 1, TIMEOUT_MS, &r);
    run_until_done(f, &r);
    assert_int_equal(r.status, 0);
}

/* Arguments that cannot make a request: NULL, no callback. */
static void test_bad_arguments(void **state)
{
    struct fixture *f = *state;
    struct result r;
    char longsock[200];

    memset(&r, 0, sizeof(r));
    memset(longsock, 'a', sizeof(longsock) - 1);
    longsock[sizeof(longsock) - 1] = '\0';
    assert_null(signer_client_sign(&f->loop, longsock, "Q", "example.org", msg,
                                   sizeof(msg) - 1, 10, done_cb, &r));
    assert_null(signer_client_sign(&f->loop, f->sock, "", "example.org", msg,
                                   sizeof(msg) - 1, 10, done_cb, &r));
    assert_null(signer_client_sign(&f->loop, f->sock, "Q", "", msg,
                                   sizeof(msg) - 1, 10, done_cb, &r));
    settle(f);
    assert_int_equal(r.calls, 0);
    signer_client_cancel(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sign_ok),
        cmocka_unit_test(test_signer_refuses),
        cmocka_unit_test(test_unavailable),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_hangup),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_bad_arguments),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
