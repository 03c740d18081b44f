/* metrics: see metrics.h. The registry, the exposition text, the queue
 * scan and qmgr.stats; the HTTP endpoint is in metrics_http.c. */
#include "metrics.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../common/log.h"
#include "queue.h"

/* The process's counters: the one piece of file-scope mutable state here
 * (metrics.h). The queue runner's delivery threads count with atomic
 * operations; everything else is touched by one thread only. */
static struct metrics_registry {
    uint64_t counter[METRIC_COUNT];
    uint64_t sig[METRICS_SIG_COUNT];
    uint64_t accepted;
    struct metrics_code refused[METRICS_MAX_CODES + 1];
    size_t nrefused;
    uint64_t bucket[METRICS_NBUCKETS + 1];
    uint64_t latency_count;
    uint64_t latency_sum_ns;
    /* queue runner: qmgr.stats */
    int stats_loaded;
    int stats_dirty;  /* atomic: set by delivery threads */
    int stats_failed; /* a write failed and was logged */
    uint64_t stats_written_ms;
} metrics_reg;

/* Histogram bounds in milliseconds and as printed. The step includes a
 * signer round trip and an fsync'd queue write: milliseconds on a quiet
 * host, seconds on an overloaded disk. */
static const struct {
    unsigned ms;
    const char *le;
} metrics_buckets[METRICS_NBUCKETS] = {
    {1, "0.001"},  {2, "0.002"}, {5, "0.005"},  {10, "0.01"},
    {25, "0.025"}, {50, "0.05"}, {100, "0.1"},  {250, "0.25"},
    {500, "0.5"},  {1000, "1"},  {2500, "2.5"}, {10000, "10"},
};

static const char *const metrics_sig_names[METRICS_SIG_COUNT] = {
    "rsa-sha256", "ed25519-sha256", "other"};

/* qmgr.stats: one "word count" line per delivery outcome. */
static const struct {
    const char *word;
    enum metrics_counter c;
} metrics_deliveries[] = {
    {"sent", METRIC_DELIVERY_SENT},
    {"deferred", METRIC_DELIVERY_DEFERRED},
    {"bounced", METRIC_DELIVERY_BOUNCED},
    {"expired", METRIC_DELIVERY_EXPIRED},
};
#define METRICS_NDELIVERIES                                                    \
    (sizeof(metrics_deliveries) / sizeof(metrics_deliveries[0]))

/* ---- counting ------------------------------------------------------------ */

void metrics_inc(enum metrics_counter c)
{
    if (c < METRIC_COUNT)
        metrics_reg.counter[c]++;
}

void metrics_reset(void)
{
    memset(&metrics_reg, 0, sizeof(metrics_reg));
}

/* The row for a refusal's codes, added when new; the overflow row when
 * the table is full. */
static struct metrics_code *metrics_code_row(const char *code,
                                             const char *enhanced)
{
    struct metrics_registry *r = &metrics_reg;
    size_t i;

    for (i = 0; i < r->nrefused; i++) {
        if (strcmp(r->refused[i].code, code) == 0 &&
            strcmp(r->refused[i].enhanced, enhanced) == 0)
            return &r->refused[i];
    }
    if (r->nrefused == METRICS_MAX_CODES)
        return &r->refused[METRICS_MAX_CODES];
    memcpy(r->refused[i].code, code, sizeof(r->refused[i].code));
    memcpy(r->refused[i].enhanced, enhanced, sizeof(r->refused[i].enhanced));
    r->nrefused++;
    return &r->refused[i];
}

/* "451 4.7.0 text": the three digits and, when one follows, the enhanced
 * code (RFC 3463: class.subject.detail, 1-3 digits each). 0, or -1 when
 * the reply does not start with a code. */
static int metrics_parse_reply(const char *reply, char *code, char *enhanced,
                               size_t enhlen)
{
    size_t n = strspn(reply, "0123456789"), e;
    int dots = 0;

    if (n != 3 || (reply[3] != ' ' && reply[3] != '-' && reply[3] != '\0'))
        return -1;
    memcpy(code, reply, 3);
    code[3] = '\0';
    enhanced[0] = '\0';
    if (reply[3] == '\0')
        return 0;
    reply += 4;
    for (e = 0; reply[e] != '\0' && reply[e] != ' '; e++) {
        if (reply[e] == '.')
            dots++;
        else if (reply[e] < '0' || reply[e] > '9')
            return 0;
    }
    if (dots == 2 && e >= 5 && e < enhlen && reply[0] == code[0]) {
        memcpy(enhanced, reply, e);
        enhanced[e] = '\0';
    }
    return 0;
}

void metrics_message(const char *reply, uint64_t t0_ns)
{
    struct metrics_registry *r = &metrics_reg;
    char code[4], enhanced[12];

    if (t0_ns != 0) {
        uint64_t ns = uv_hrtime() - t0_ns;
        size_t b;

        for (b = 0; b < METRICS_NBUCKETS; b++) {
            if (ns <= (uint64_t)metrics_buckets[b].ms * 1000000u)
                break;
        }
        r->bucket[b]++;
        r->latency_count++;
        r->latency_sum_ns += ns;
    }
    if (metrics_parse_reply(reply, code, enhanced, sizeof(enhanced)) < 0) {
        r->refused[METRICS_MAX_CODES].n++; /* "other" */
        return;
    }
    if (code[0] == '2')
        r->accepted++;
    else
        metrics_code_row(code, enhanced)->n++;
}

/* Moves p past folding white space (RFC 5322 3.2.2) up to end. */
static const char *metrics_skip_fws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
        p++;
    return p;
}

/* The a= tag of one DKIM-Signature field's tag list, [p, end). */
static enum metrics_sig_algo metrics_sig_algo(const char *p, const char *end)
{
    while (p < end) {
        const char *semi = memchr(p, ';', (size_t)(end - p));
        const char *tend = semi != NULL ? semi : end;

        p = metrics_skip_fws(p, tend);
        if (tend - p >= 2 && p[0] == 'a' &&
            metrics_skip_fws(p + 1, tend) < tend &&
            *metrics_skip_fws(p + 1, tend) == '=') {
            const char *v =
                metrics_skip_fws(metrics_skip_fws(p + 1, tend) + 1, tend);
            const char *ve = tend;
            size_t i;

            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t' ||
                              ve[-1] == '\r' || ve[-1] == '\n'))
                ve--;
            for (i = 0; i < METRICS_SIG_OTHER; i++) {
                if ((size_t)(ve - v) == strlen(metrics_sig_names[i]) &&
                    strncasecmp(v, metrics_sig_names[i], (size_t)(ve - v)) == 0)
                    return (enum metrics_sig_algo)i;
            }
            return METRICS_SIG_OTHER;
        }
        p = semi != NULL ? semi + 1 : end;
    }
    return METRICS_SIG_OTHER;
}

void metrics_signatures(const char *fields, size_t len)
{
    static const char name[] = "DKIM-Signature:";
    const size_t nlen = sizeof(name) - 1;
    const char *end = fields + len, *p = fields;

    while (p < end) {
        /* A field starts at the beginning of a line; it ends before the
         * next line that does not start with white space. */
        const char *fend = p;

        do {
            const char *nl = memchr(fend, '\n', (size_t)(end - fend));
            fend = nl != NULL ? nl + 1 : end;
        } while (fend < end && (*fend == ' ' || *fend == '\t'));
        if ((size_t)(fend - p) > nlen && strncasecmp(p, name, nlen) == 0)
            metrics_reg.sig[metrics_sig_algo(p + nlen, fend)]++;
        p = fend;
    }
}

void metrics_delivery(const char *status)
{
    size_t i;

    for (i = 0; i < METRICS_NDELIVERIES; i++) {
        if (strcmp(status, metrics_deliveries[i].word) == 0) {
            __atomic_fetch_add(&metrics_reg.counter[metrics_deliveries[i].c], 1,
                               __ATOMIC_RELAXED);
            __atomic_store_n(&metrics_reg.stats_dirty, 1, __ATOMIC_RELEASE);
            return;
        }
    }
}

void metrics_snapshot_take(struct metrics_snapshot *sn)
{
    const struct metrics_registry *r = &metrics_reg;

    memcpy(sn->counter, r->counter, sizeof(sn->counter));
    memcpy(sn->sig, r->sig, sizeof(sn->sig));
    sn->accepted = r->accepted;
    memcpy(sn->refused, r->refused, sizeof(sn->refused));
    sn->nrefused = r->nrefused;
    memcpy(sn->bucket, r->bucket, sizeof(sn->bucket));
    sn->latency_count = r->latency_count;
    sn->latency_sum_ns = r->latency_sum_ns;
}

/* ---- qmgr.stats -----------------------------------------------------------
 */

int metrics_stats_read(const char *path, uint64_t *counter)
{
    char buf[METRICS_MAX_STATS_FILE + 1], *line, *save = NULL;
    uint64_t got[METRICS_NDELIVERIES] = {0};
    ssize_t n;
    size_t len = 0, i;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

    if (fd < 0)
        return -1;
    while (len < sizeof(buf) &&
           (n = read(fd, buf + len, sizeof(buf) - len)) != 0) {
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    if (len == 0 || len > METRICS_MAX_STATS_FILE)
        return -1;
    buf[len] = '\0';
    for (line = strtok_r(buf, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        char word[16];
        unsigned long long v;
        int used = 0;

        if (line[0] == '#')
            continue;
        if (sscanf(line, "%15s %llu%n", word, &v, &used) != 2 ||
            line[used] != '\0')
            return -1;
        for (i = 0; i < METRICS_NDELIVERIES; i++) {
            if (strcmp(word, metrics_deliveries[i].word) == 0)
                got[i] = v;
        }
    }
    for (i = 0; i < METRICS_NDELIVERIES; i++)
        counter[metrics_deliveries[i].c] = got[i];
    return 0;
}

static uint64_t metrics_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Writes the counts to path through path.tmp. 0 or -errno. */
static int metrics_stats_write(const char *path)
{
    char tmp[PATH_MAX], text[512];
    size_t len = 0, i;
    int fd, rc = 0;

    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp))
        return -ENAMETOOLONG;
    len += (size_t)snprintf(text, sizeof(text),
                            "# subgate queue runner: deliveries per "
                            "recipient since the first start\n");
    for (i = 0; i < METRICS_NDELIVERIES; i++)
        len +=
            (size_t)snprintf(text + len, sizeof(text) - len, "%s %llu\n",
                             metrics_deliveries[i].word,
                             (unsigned long long)__atomic_load_n(
                                 &metrics_reg.counter[metrics_deliveries[i].c],
                                 __ATOMIC_RELAXED));
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0640);
    if (fd < 0)
        return -errno;
    if (write(fd, text, len) != (ssize_t)len)
        rc = errno != 0 ? -errno : -EIO;
    if (close(fd) != 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, path) != 0)
        rc = -errno;
    if (rc != 0)
        unlink(tmp);
    return rc;
}

void metrics_qmgr_flush(const struct cfg *cfg, int force)
{
    struct metrics_registry *r = &metrics_reg;
    char path[PATH_MAX];
    uint64_t now = metrics_now_ms();
    int rc;

    if ((size_t)snprintf(path, sizeof(path), "%s/%s", cfg->run_dir,
                         METRICS_STATS_FILE) >= sizeof(path))
        return;
    if (!r->stats_loaded) {
        uint64_t old[METRIC_COUNT] = {0};
        size_t i;

        r->stats_loaded = 1;
        if (metrics_stats_read(path, old) == 0) {
            for (i = 0; i < METRICS_NDELIVERIES; i++)
                __atomic_fetch_add(&r->counter[metrics_deliveries[i].c],
                                   old[metrics_deliveries[i].c],
                                   __ATOMIC_RELAXED);
        }
        __atomic_store_n(&r->stats_dirty, 1, __ATOMIC_RELEASE);
    }
    if (!__atomic_load_n(&r->stats_dirty, __ATOMIC_ACQUIRE) ||
        (!force && now - r->stats_written_ms < METRICS_FLUSH_MS))
        return;
    /* Cleared before the counts are read: a delivery counted meanwhile
     * sets it again and is written next time. */
    __atomic_store_n(&r->stats_dirty, 0, __ATOMIC_RELEASE);
    rc = metrics_stats_write(path);
    r->stats_written_ms = now;
    if (rc == 0) {
        r->stats_failed = 0;
    } else if (!r->stats_failed) {
        r->stats_failed = 1;
        log_error_errno(rc, "queue: cannot write %s", path);
    }
    if (rc != 0)
        __atomic_store_n(&r->stats_dirty, 1, __ATOMIC_RELEASE);
}

/* ---- the queue ------------------------------------------------------------
 */

long long metrics_queue_id_time(const char *id)
{
    /* queue.c: an id is the microsecond of its creation times 1024 plus
     * 10 random bits, as 12 base-36 digits. */
    unsigned long long v = 0;
    size_t i;

    for (i = 0; i < QUEUE_ID_LEN; i++) {
        char c = id[i];
        unsigned d;

        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (c >= 'A' && c <= 'Z')
            d = (unsigned)(c - 'A') + 10;
        else
            return -1;
        v = v * 36u + d;
    }
    if (id[QUEUE_ID_LEN] != '\0')
        return -1;
    return (long long)(v / 1024u / 1000000u);
}

/* Counts the queue files in queue_dir/sub; keeps the smallest id (the
 * oldest) in oldest when count_oldest. 0 or -errno. */
static int metrics_queue_dir(const char *queue_dir, const char *sub,
                             long long *n_r, char *oldest, int count_oldest)
{
    char path[PATH_MAX];
    struct dirent *de;
    DIR *d;

    if ((size_t)snprintf(path, sizeof(path), "%s/%s", queue_dir, sub) >=
        sizeof(path))
        return -ENAMETOOLONG;
    d = opendir(path);
    if (d == NULL)
        return -errno;
    while ((de = readdir(d)) != NULL) {
        if (metrics_queue_id_time(de->d_name) < 0)
            continue;
        (*n_r)++;
        /* Ids sort by time as strings. */
        if (count_oldest &&
            (oldest[0] == '\0' || strcmp(de->d_name, oldest) < 0))
            memcpy(oldest, de->d_name, QUEUE_ID_LEN + 1);
    }
    closedir(d);
    return 0;
}

int metrics_queue_scan(const char *queue_dir, long long now,
                       struct metrics_snapshot *sn)
{
    char oldest[QUEUE_ID_LEN + 1] = "";
    long long t;
    int rc;

    sn->queue_len = sn->queue_held = sn->queue_oldest = 0;
    rc = metrics_queue_dir(queue_dir, "active", &sn->queue_len, oldest, 1);
    if (rc != 0)
        return rc;
    rc = metrics_queue_dir(queue_dir, "busy", &sn->queue_len, oldest, 1);
    if (rc != 0 && rc != -ENOENT)
        return rc;
    rc = metrics_queue_dir(queue_dir, "hold", &sn->queue_held, oldest, 0);
    if (rc != 0 && rc != -ENOENT)
        return rc;
    if (oldest[0] != '\0' && (t = metrics_queue_id_time(oldest)) >= 0 &&
        now > t)
        sn->queue_oldest = now - t;
    return 0;
}

/* ---- exposition -------------------------------------------------------------
 */

static void metrics_head(FILE *f, const char *name, const char *type,
                         const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void metrics_one(FILE *f, const char *name, const char *type,
                        const char *help, unsigned long long v)
{
    metrics_head(f, name, type, help);
    fprintf(f, "%s %llu\n", name, v);
}

static void metrics_render_code(const struct metrics_code *c, FILE *f)
{
    fprintf(f,
            "subgate_messages_refused_total{code=\"%s\",enhanced=\"%s\"} "
            "%llu\n",
            c->code[0] != '\0' ? c->code : "other", c->enhanced,
            (unsigned long long)c->n);
}

static void metrics_render_refused(const struct metrics_snapshot *sn, FILE *f)
{
    size_t i;

    metrics_head(f, "subgate_messages_refused_total", "counter",
                 "Messages refused at MAIL or at the end of DATA, by reply "
                 "code and enhanced status code.");
    for (i = 0; i < sn->nrefused && i < METRICS_MAX_CODES; i++)
        metrics_render_code(&sn->refused[i], f);
    if (sn->refused[METRICS_MAX_CODES].n > 0)
        metrics_render_code(&sn->refused[METRICS_MAX_CODES], f);
}

static void metrics_render_latency(const struct metrics_snapshot *sn, FILE *f)
{
    const char *name = "subgate_data_end_duration_seconds";
    unsigned long long cum = 0;
    size_t b;

    metrics_head(f, name, "histogram",
                 "Time from the end of DATA to the reply, for messages "
                 "handed to the signer: signing and the queue write.");
    for (b = 0; b < METRICS_NBUCKETS; b++) {
        cum += sn->bucket[b];
        fprintf(f, "%s_bucket{le=\"%s\"} %llu\n", name, metrics_buckets[b].le,
                cum);
    }
    cum += sn->bucket[METRICS_NBUCKETS];
    fprintf(f, "%s_bucket{le=\"+Inf\"} %llu\n", name, cum);
    fprintf(f, "%s_sum %llu.%09llu\n", name,
            (unsigned long long)(sn->latency_sum_ns / 1000000000u),
            (unsigned long long)(sn->latency_sum_ns % 1000000000u));
    fprintf(f, "%s_count %llu\n", name, (unsigned long long)sn->latency_count);
}

void metrics_render(const struct metrics_snapshot *sn, FILE *f)
{
    static const char *const auth_names[] = {"ok", "fail", "tempfail"};
    size_t i;

    metrics_head(f, "subgate_node_info", "gauge",
                 "This node's name (node_name) as a label.");
    fprintf(f, "subgate_node_info{node=\"%s\"} 1\n",
            sn->node != NULL ? sn->node : "");
    metrics_one(f, "subgate_connections_total", "counter",
                "SMTP connections taken on since the SMTP worker started.",
                sn->counter[METRIC_CONNECTIONS]);
    metrics_one(f, "subgate_connections_refused_total", "counter",
                "Connections turned away because max_sessions were open.",
                sn->counter[METRIC_CONNECTIONS_REFUSED]);
    metrics_one(f, "subgate_sessions", "gauge", "SMTP sessions open now.",
                sn->sessions);
    metrics_head(f, "subgate_auth_total", "counter",
                 "AUTH results: ok (235), fail (535), tempfail (454).");
    for (i = 0; i < 3; i++)
        fprintf(f, "subgate_auth_total{result=\"%s\"} %llu\n", auth_names[i],
                (unsigned long long)sn->counter[METRIC_AUTH_OK + i]);
    metrics_one(f, "subgate_messages_accepted_total", "counter",
                "Messages signed, queued and answered 250.", sn->accepted);
    metrics_render_refused(sn, f);
    metrics_head(f, "subgate_signatures_total", "counter",
                 "DKIM signatures added, by algorithm.");
    for (i = 0; i < METRICS_SIG_COUNT; i++)
        fprintf(f, "subgate_signatures_total{algorithm=\"%s\"} %llu\n",
                metrics_sig_names[i], (unsigned long long)sn->sig[i]);
    metrics_render_latency(sn, f);
    if (sn->queue_len >= 0) {
        metrics_one(f, "subgate_queue_messages", "gauge",
                    "Messages in the queue waiting for delivery.",
                    (unsigned long long)sn->queue_len);
        metrics_one(f, "subgate_queue_held_messages", "gauge",
                    "Messages put on hold by the administrator.",
                    (unsigned long long)sn->queue_held);
        metrics_one(f, "subgate_queue_oldest_seconds", "gauge",
                    "Age of the oldest message waiting for delivery; 0 "
                    "when there is none.",
                    (unsigned long long)sn->queue_oldest);
    }
    metrics_head(f, "subgate_deliveries_total", "counter",
                 "Delivery outcomes per recipient, from the queue runner.");
    for (i = 0; i < METRICS_NDELIVERIES; i++)
        fprintf(f, "subgate_deliveries_total{status=\"%s\"} %llu\n",
                metrics_deliveries[i].word,
                (unsigned long long)sn->counter[metrics_deliveries[i].c]);
    metrics_one(f, "subgate_qmgr_stats_up", "gauge",
                "1 when the queue runner's counters could be read.",
                (unsigned long long)sn->qmgr_ok);
}
