/* Unit tests for server/metrics: reply codes, signature counting, the
 * latency histogram, the exposition text, the queue scan and the queue id
 * time, qmgr.stats, and the HTTP request reader of the endpoint. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../common/cfg.h"
#include "../../server/metrics.h"
#include "../../server/queue.h"

/* The exposition of the registry (and of sn's disk fields). */
static char *render(struct metrics_snapshot *sn)
{
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);

    assert_non_null(f);
    metrics_snapshot_take(sn);
    metrics_render(sn, f);
    assert_int_equal(fclose(f), 0);
    return out;
}

/* Fails unless text holds line as a whole line. */
static void assert_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    const char *p = text;

    while ((p = strstr(p, line)) != NULL) {
        if ((p == text || p[-1] == '\n') && p[n] == '\n')
            return;
        p++;
    }
    fail_msg("got no line '%s' in:\n%s", line, text);
}

/* ---- messages ----------------------------------------------------------- */

struct reply_case {
    const char *name;
    const char *reply;
    const char *line; /* expected series line after one such reply */
};

static const struct reply_case reply_cases[] = {
    {"queued", "250 2.0.0 Ok: queued as 0ABCDEFGHIJK",
     "subgate_messages_accepted_total 1"},
    {"sender not owned",
     "553 5.7.1 Sender address <b@x.org> not owned by user <a@x.org>",
     "subgate_messages_refused_total{code=\"553\",enhanced=\"5.7.1\"} 1"},
    {"signing down", "451 4.7.0 Signing temporarily unavailable",
     "subgate_messages_refused_total{code=\"451\",enhanced=\"4.7.0\"} 1"},
    {"queue write", "451 4.3.0 Queue write failed, try again later",
     "subgate_messages_refused_total{code=\"451\",enhanced=\"4.3.0\"} 1"},
    {"no enhanced code", "554 Transaction failed",
     "subgate_messages_refused_total{code=\"554\",enhanced=\"\"} 1"},
    {"enhanced class differs", "554 4.0.0 odd",
     "subgate_messages_refused_total{code=\"554\",enhanced=\"\"} 1"},
    {"bare code", "552",
     "subgate_messages_refused_total{code=\"552\",enhanced=\"\"} 1"},
    {"not a reply", "hello",
     "subgate_messages_refused_total{code=\"other\",enhanced=\"\"} 1"},
    {"two digits", "55 5.0.0 x",
     "subgate_messages_refused_total{code=\"other\",enhanced=\"\"} 1"},
};

static void test_message_codes(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(reply_cases) / sizeof(reply_cases[0]); i++) {
        const struct reply_case *c = &reply_cases[i];
        struct metrics_snapshot sn;
        char *out;

        memset(&sn, 0, sizeof(sn));
        metrics_reset();
        metrics_message(c->reply, 0);
        out = render(&sn);
        if (strstr(out, c->line) == NULL)
            fail_msg("case '%s': got no '%s' in:\n%s", c->name, c->line, out);
        free(out);
    }
}

/* More distinct refusals than the table holds end up under "other". */
static void test_message_overflow(void **state)
{
    struct metrics_snapshot sn;
    char reply[64], *out;
    unsigned i;

    (void)state;
    memset(&sn, 0, sizeof(sn));
    metrics_reset();
    for (i = 0; i < METRICS_MAX_CODES + 3; i++) {
        snprintf(reply, sizeof(reply), "5%02u 5.0.%u x", i, i);
        metrics_message(reply, 0);
    }
    metrics_message("500 5.0.0 again", 0);
    out = render(&sn);
    assert_line(out, "subgate_messages_refused_total{code=\"500\","
                     "enhanced=\"5.0.0\"} 2");
    assert_line(out, "subgate_messages_refused_total{code=\"other\","
                     "enhanced=\"\"} 3");
    free(out);
}

/* ---- signatures --------------------------------------------------------- */

struct sig_case {
    const char *name;
    const char *fields;
    unsigned rsa, ed25519, other;
};

static const struct sig_case sig_cases[] = {
    {"rsa and ed25519 as the signer returns them",
     "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.org;\r\n"
     "\ts=sel-rsa; h=from:to; bh=abc=; b=AAAA\r\n"
     "\tBBBB\r\n"
     "DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;\r\n"
     " d=example.org; s=sel-ed; b=CCCC\r\n",
     1, 1, 0},
    {"a= folded and spaced",
     "DKIM-Signature: v=1;\r\n a\r\n = rsa-sha256 ;\r\n d=x.org; b=A\r\n", 1, 0,
     0},
    {"a= last, no CRLF at the end",
     "dkim-signature: v=1; d=x.org; a=rsa-sha256", 1, 0, 0},
    {"unknown algorithm", "DKIM-Signature: v=1; a=rsa-sha1; b=x\r\n", 0, 0, 1},
    {"no a= tag", "DKIM-Signature: v=1; b=x\r\n", 0, 0, 1},
    {"b= value that contains a=",
     "DKIM-Signature: v=1; b=xa=rsa-sha256; a=ed25519-sha256\r\n", 0, 1, 0},
    {"other fields are not counted",
     "X-DKIM-Signature: v=1; a=rsa-sha256\r\n"
     "Received: from x (a=rsa-sha256)\r\n"
     "\tDKIM-Signature: a=rsa-sha256\r\n",
     0, 0, 0},
    {"empty", "", 0, 0, 0},
};

static void test_signatures(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(sig_cases) / sizeof(sig_cases[0]); i++) {
        const struct sig_case *c = &sig_cases[i];
        struct metrics_snapshot sn;
        size_t len = strlen(c->fields);
        /* An exact-size copy: ASan reports any read past the end. */
        char *copy = malloc(len > 0 ? len : 1);

        assert_non_null(copy);
        memcpy(copy, c->fields, len);
        memset(&sn, 0, sizeof(sn));
        metrics_reset();
        metrics_signatures(copy, len);
        metrics_snapshot_take(&sn);
        free(copy);
        if (sn.sig[METRICS_SIG_RSA_SHA256] != c->rsa ||
            sn.sig[METRICS_SIG_ED25519_SHA256] != c->ed25519 ||
            sn.sig[METRICS_SIG_OTHER] != c->other)
            fail_msg("case '%s': got rsa=%llu ed25519=%llu other=%llu, want "
                     "%u %u %u",
                     c->name,
                     (unsigned long long)sn.sig[METRICS_SIG_RSA_SHA256],
                     (unsigned long long)sn.sig[METRICS_SIG_ED25519_SHA256],
                     (unsigned long long)sn.sig[METRICS_SIG_OTHER], c->rsa,
                     c->ed25519, c->other);
    }
}

/* ---- histogram and exposition ------------------------------------------- */

static void test_histogram(void **state)
{
    struct metrics_snapshot sn;
    uint64_t now = uv_hrtime();
    char *out;

    (void)state;
    memset(&sn, 0, sizeof(sn));
    metrics_reset();
    /* 20 s ago: past the last bound; 30 ms ago: at most 0.05. */
    metrics_message("250 2.0.0 Ok", now - 20000000000ULL);
    metrics_message("451 4.7.0 x", now - 30000000ULL);
    metrics_message("553 5.7.1 x", 0); /* not timed */
    out = render(&sn);
    assert_line(out,
                "subgate_data_end_duration_seconds_bucket{le=\"0.025\"} 0");
    assert_line(out, "subgate_data_end_duration_seconds_bucket{le=\"10\"} 1");
    assert_line(out, "subgate_data_end_duration_seconds_bucket{le=\"+Inf\"} 2");
    assert_line(out, "subgate_data_end_duration_seconds_count 2");
    assert_non_null(strstr(out, "subgate_data_end_duration_seconds_sum 20."));
    assert_line(out, "subgate_messages_accepted_total 1");
    free(out);
}

static void test_render(void **state)
{
    struct metrics_snapshot sn;
    char *out;

    (void)state;
    memset(&sn, 0, sizeof(sn));
    metrics_reset();
    metrics_inc(METRIC_CONNECTIONS);
    metrics_inc(METRIC_CONNECTIONS);
    metrics_inc(METRIC_AUTH_OK);
    metrics_inc(METRIC_AUTH_FAIL);
    metrics_inc(METRIC_AUTH_FAIL);
    metrics_inc(METRIC_AUTH_TEMPFAIL);
    metrics_inc(METRIC_COUNT); /* out of range: ignored */
    sn.sessions = 7;
    sn.queue_len = 3;
    sn.queue_held = 1;
    sn.queue_oldest = 42;
    sn.qmgr_ok = 1;
    sn.counter[METRIC_DELIVERY_SENT] = 5;
    sn.node = "gw1";
    out = render(&sn);
    /* render() took the registry's snapshot, which has no deliveries. */
    assert_line(out, "subgate_deliveries_total{status=\"sent\"} 0");
    free(out);
    out = NULL;
    {
        size_t len = 0;
        FILE *f = open_memstream(&out, &len);

        assert_non_null(f);
        sn.counter[METRIC_DELIVERY_SENT] = 5;
        metrics_render(&sn, f);
        assert_int_equal(fclose(f), 0);
    }
    assert_line(out, "subgate_node_info{node=\"gw1\"} 1");
    assert_line(out, "subgate_connections_total 2");
    assert_line(out, "subgate_sessions 7");
    assert_line(out, "subgate_auth_total{result=\"ok\"} 1");
    assert_line(out, "subgate_auth_total{result=\"fail\"} 2");
    assert_line(out, "subgate_auth_total{result=\"tempfail\"} 1");
    assert_line(out, "subgate_queue_messages 3");
    assert_line(out, "subgate_queue_held_messages 1");
    assert_line(out, "subgate_queue_oldest_seconds 42");
    assert_line(out, "subgate_deliveries_total{status=\"sent\"} 5");
    assert_line(out, "subgate_qmgr_stats_up 1");
    assert_line(out, "# TYPE subgate_signatures_total counter");
    assert_line(out, "# TYPE subgate_data_end_duration_seconds histogram");
    free(out);
}

/* ---- the queue ---------------------------------------------------------- */

static void test_queue_id_time(void **state)
{
    char id[QUEUE_ID_LEN + 1];
    long long t, now = (long long)time(NULL);

    (void)state;
    queue_id_new(id);
    t = metrics_queue_id_time(id);
    if (t < now - 1 || t > now + 1)
        fail_msg("id %s: got time %lld, want about %lld", id, t, now);
    assert_int_equal(metrics_queue_id_time("0000000000000"), -1);
    assert_int_equal(metrics_queue_id_time("00000000000"), -1);
    assert_int_equal(metrics_queue_id_time("00000000000a"), -1);
    assert_int_equal(metrics_queue_id_time("."), -1);
    assert_int_equal(metrics_queue_id_time("000000000000"), 0);
}

static void touch(const char *dir, const char *name)
{
    char path[512];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "w");
    assert_non_null(f);
    fclose(f);
}

static void test_queue_scan(void **state)
{
    char root[] = "/tmp/test_metrics.XXXXXX", active[256], hold[256];
    char id[QUEUE_ID_LEN + 1], old[QUEUE_ID_LEN + 1];
    struct metrics_snapshot sn;
    long long now;
    int rc;

    (void)state;
    assert_non_null(mkdtemp(root));
    memset(&sn, 0, sizeof(sn));
    assert_int_equal(metrics_queue_scan(root, 0, &sn), -ENOENT);
    snprintf(active, sizeof(active), "%s/active", root);
    snprintf(hold, sizeof(hold), "%s/hold", root);
    assert_int_equal(mkdir(active, 0700), 0);
    assert_int_equal(metrics_queue_scan(root, 100, &sn), 0);
    assert_int_equal(sn.queue_len, 0);
    assert_int_equal(sn.queue_oldest, 0);
    queue_id_new(old);
    queue_id_new(id);
    touch(active, id);
    touch(active, old);
    touch(active, "not-an-id");
    touch(active, "ABCDEFGHIJK"); /* 11 characters */
    assert_int_equal(mkdir(hold, 0700), 0);
    queue_id_new(id);
    touch(hold, id);
    now = metrics_queue_id_time(old) + 90;
    rc = metrics_queue_scan(root, now, &sn);
    assert_int_equal(rc, 0);
    assert_int_equal(sn.queue_len, 2);
    assert_int_equal(sn.queue_held, 1);
    assert_int_equal(sn.queue_oldest, 90);
    {
        char cmd[600];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
        assert_int_equal(system(cmd), 0);
    }
}

/* ---- qmgr.stats ------------------------------------------------------- */

struct stats_case {
    const char *name;
    const char *text; /* NULL: no file */
    int rc;
    unsigned long long sent, bounced;
};

static const struct stats_case stats_cases[] = {
    {"written by us", "# comment\nsent 12\ndeferred 3\nbounced 1\nexpired 0\n",
     0, 12, 1},
    {"unknown words are skipped", "sent 1\nlater 5\n", 0, 1, 0},
    {"missing", NULL, -1, 99, 99},
    {"empty", "", -1, 99, 99},
    {"not a number", "sent x\n", -1, 99, 99},
    {"trailing text", "sent 1 2\n", -1, 99, 99},
};

static void test_stats_read(void **state)
{
    char dir[] = "/tmp/test_metrics.XXXXXX", path[256];
    size_t i;

    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/%s", dir, METRICS_STATS_FILE);
    for (i = 0; i < sizeof(stats_cases) / sizeof(stats_cases[0]); i++) {
        const struct stats_case *c = &stats_cases[i];
        uint64_t counter[METRIC_COUNT];
        int rc;

        counter[METRIC_DELIVERY_SENT] = counter[METRIC_DELIVERY_BOUNCED] = 99;
        unlink(path);
        if (c->text != NULL) {
            FILE *f = fopen(path, "w");
            assert_non_null(f);
            fputs(c->text, f);
            fclose(f);
        }
        rc = metrics_stats_read(path, counter);
        if (rc != c->rc || counter[METRIC_DELIVERY_SENT] != c->sent ||
            counter[METRIC_DELIVERY_BOUNCED] != c->bounced)
            fail_msg("case '%s': got rc=%d sent=%llu bounced=%llu, want "
                     "%d %llu %llu",
                     c->name, rc,
                     (unsigned long long)counter[METRIC_DELIVERY_SENT],
                     (unsigned long long)counter[METRIC_DELIVERY_BOUNCED],
                     c->rc, c->sent, c->bounced);
    }
    /* One octet over the limit is not read. */
    {
        uint64_t counter[METRIC_COUNT] = {0};
        FILE *f = fopen(path, "w");
        size_t n;

        assert_non_null(f);
        fputs("sent 1\n", f);
        for (n = strlen("sent 1\n"); n < METRICS_MAX_STATS_FILE + 1; n++)
            fputc('#', f);
        fclose(f);
        assert_int_equal(metrics_stats_read(path, counter), -1);
    }
    unlink(path);
    rmdir(dir);
}

/* The queue runner's file adds up across restarts of the runner. */
static void test_qmgr_flush(void **state)
{
    char dir[] = "/tmp/test_metrics.XXXXXX", path[256];
    struct cfg *cfg = cfg_defaults();
    uint64_t counter[METRIC_COUNT] = {0};

    (void)state;
    assert_non_null(mkdtemp(dir));
    free(cfg->run_dir);
    cfg->run_dir = strdup(dir);
    snprintf(path, sizeof(path), "%s/%s", dir, METRICS_STATS_FILE);
    metrics_reset();
    metrics_delivery("sent");
    metrics_delivery("sent");
    metrics_delivery("nonsense");
    metrics_qmgr_flush(cfg, 1);
    assert_int_equal(metrics_stats_read(path, counter), 0);
    assert_int_equal(counter[METRIC_DELIVERY_SENT], 2);
    /* A new runner: starts from the file. */
    metrics_reset();
    metrics_delivery("bounced");
    metrics_qmgr_flush(cfg, 1);
    assert_int_equal(metrics_stats_read(path, counter), 0);
    assert_int_equal(counter[METRIC_DELIVERY_SENT], 2);
    assert_int_equal(counter[METRIC_DELIVERY_BOUNCED], 1);
    /* Within METRICS_FLUSH_MS an unforced flush waits. */
    metrics_delivery("deferred");
    metrics_qmgr_flush(cfg, 0);
    assert_int_equal(metrics_stats_read(path, counter), 0);
    assert_int_equal(counter[METRIC_DELIVERY_DEFERRED], 0);
    metrics_qmgr_flush(cfg, 1);
    assert_int_equal(metrics_stats_read(path, counter), 0);
    assert_int_equal(counter[METRIC_DELIVERY_DEFERRED], 1);
    unlink(path);
    rmdir(dir);
    cfg_free(&cfg);
}

/* ---- HTTP requests --------------------------------------------------------
 */

struct http_case {
    const char *name;
    const char *req;
    enum metrics_req want;
    int head;
};

static const struct http_case http_cases[] = {
    {"prometheus",
     "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9587\r\n"
     "Accept: text/plain\r\n\r\n",
     METRICS_REQ_METRICS, 0},
    {"query string, bare LF", "GET /metrics?x=1 HTTP/1.0\n\n",
     METRICS_REQ_METRICS, 0},
    {"head", "HEAD /metrics HTTP/1.1\r\n\r\n", METRICS_REQ_METRICS, 1},
    {"post", "POST /metrics HTTP/1.1\r\n\r\n", METRICS_REQ_BAD_METHOD, 0},
    {"root", "GET / HTTP/1.1\r\n\r\n", METRICS_REQ_NOT_FOUND, 0},
    {"longer path", "GET /metricsx HTTP/1.1\r\n\r\n", METRICS_REQ_NOT_FOUND, 0},
    {"not http", "hello there\r\n\r\n", METRICS_REQ_BAD, 0},
    {"http/0.9", "GET /metrics\r\n\r\n", METRICS_REQ_BAD, 0},
    {"http/2 preface", "PRI * HTTP/2.0\r\n\r\n", METRICS_REQ_BAD, 0},
};

static void test_http_parse(void **state)
{
    size_t i, n;

    (void)state;
    for (i = 0; i < sizeof(http_cases) / sizeof(http_cases[0]); i++) {
        const struct http_case *c = &http_cases[i];
        size_t len = strlen(c->req);
        char *copy = malloc(len);
        enum metrics_req r;
        int head;

        assert_non_null(copy);
        memcpy(copy, c->req, len);
        /* Every proper prefix is incomplete; the whole gives the verdict. */
        for (n = 0; n < len; n++) {
            r = metrics_http_parse(copy, n, &head);
            if (r != METRICS_REQ_INCOMPLETE)
                fail_msg("case '%s': prefix of %zu octets: got %d, want "
                         "incomplete",
                         c->name, n, (int)r);
        }
        r = metrics_http_parse(copy, len, &head);
        if (r != c->want || head != c->head)
            fail_msg("case '%s': got %d head=%d, want %d head=%d", c->name,
                     (int)r, head, (int)c->want, c->head);
        free(copy);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_message_codes),
        cmocka_unit_test(test_message_overflow),
        cmocka_unit_test(test_signatures),
        cmocka_unit_test(test_histogram),
        cmocka_unit_test(test_render),
        cmocka_unit_test(test_queue_id_time),
        cmocka_unit_test(test_queue_scan),
        cmocka_unit_test(test_stats_read),
        cmocka_unit_test(test_qmgr_flush),
        cmocka_unit_test(test_http_parse),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
