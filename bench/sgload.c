/* sgload: subgate's SMTP submission load generator.
 *
 *   sgload -s HOST:PORT (-n TOTAL | -d SECONDS) [options]
 *
 * Runs C parallel sessions ("slots"); a slot whose session ends opens the
 * next one at once. A session greets, starts TLS (-S), authenticates (AUTH
 * PLAIN), sends M messages (MAIL, RCPT and DATA in one write when the
 * server offers PIPELINING) and quits. Every message is unique (sequence
 * number in Message-ID, Subject and the first body line); the rest of the
 * body is shared text of 78-octet lines that never need dot-stuffing.
 *
 * With --idle the slots authenticate and then stay connected without a
 * word until -d seconds have passed: the server's memory per idle session
 * can be measured meanwhile. "IDLE ready=N failed=F" goes to stdout once
 * every slot is idle or has failed.
 *
 * The last line on stdout is one "RESULT key=value ..." line (bench/run
 * reads it); a human summary goes to stderr. Exit status: 0 every message
 * accepted, 2 some refused or lost, 1 usage or set-up error.
 *
 * Each worker thread (-j) runs its own epoll loop over its share of the
 * slots; nothing blocks. Percentiles are nearest-rank over every accepted
 * message counted in the rate. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define LOAD_INBUF 8192       /* server replies not yet parsed */
#define LOAD_CMDBUF 4096      /* commands and the message header */
#define LOAD_MAX_RCPT 100     /* recipients per message (-r) */
#define LOAD_MAX_USERS 100000 /* lines of an -A file */
#define LOAD_MAX_THREADS 64
#define LOAD_MAX_SLOTS 100000
#define LOAD_TICK_MS 50    /* timeout and deadline checks */
#define LOAD_MAX_ERRORS 10 /* error lines printed without -v */
#define LOAD_DEF_RAMP 200  /* --idle: sessions in set-up at once */
#define LOAD_BODY_LINE 76  /* printable octets per body line */

enum load_state {
    ST_FREE,       /* slot without a session */
    ST_CONNECTING, /* non-blocking connect() */
    ST_BANNER,     /* waiting for 220 */
    ST_EHLO,       /* first EHLO */
    ST_STARTTLS,   /* waiting for 220 to STARTTLS */
    ST_HANDSHAKE,  /* TLS handshake */
    ST_EHLO_TLS,   /* EHLO inside TLS */
    ST_AUTH,       /* waiting for 235 */
    ST_TXN,        /* replies to MAIL, RCPT, DATA */
    ST_BODY,       /* message on its way, then the final reply */
    ST_RSET,       /* after a refused transaction */
    ST_QUIT,       /* waiting for 221 */
    ST_IDLE,       /* --idle: authenticated, silent */
};

struct load_opts {
    char host[256];
    char port[16];
    unsigned conc, per_session, nrcpt, threads, ramp;
    long total;       /* -n, or -1 */
    double duration;  /* -d seconds, or 0 */
    double warmup;    /* -w seconds */
    double timeout;   /* -T seconds per step */
    size_t body_size; /* -b */
    int tls, tls_resume, tls12, pipelining, idle, verbose;
    const char *auth_user, *auth_pass, *auth_file, *from, *rcpt;
};

struct load_user {
    char *name; /* owned */
    char *pass; /* owned */
};

/* A growable array of latencies in milliseconds. */
struct load_samples {
    double *v; /* owned */
    size_t n, cap;
};

struct load_worker;

struct load_sess {
    struct load_worker *w; /* borrowed */
    unsigned used;         /* --idle: sessions this slot has opened */
    /* Everything from here to "in" is reset for each session. */
    enum load_state state;
    int fd;
    SSL *ssl;       /* owned while the session lives */
    int registered; /* fd in epoll */
    int want_out;   /* EPOLLOUT wanted */
    int pipelining; /* the server offers PIPELINING */
    int setup;      /* counted in w->in_setup */
    unsigned user;  /* index into the user list */
    unsigned msgs;  /* messages started in this session */
    int in_msg;     /* a message is claimed and not finished */
    unsigned step;  /* replies so far: MAIL, each RCPT, DATA */
    int txn_bad;    /* MAIL refused */
    int rcpt_ok;    /* recipients accepted in this group */
    int data_code;  /* reply to DATA */
    double t_conn, t_data, t_eod, deadline;
    long seq; /* sequence number of the message */
    char in[LOAD_INBUF];
    size_t inlen;
    char out[LOAD_CMDBUF]; /* commands / header waiting to be written */
    size_t outlen, outoff;
    size_t bodyoff; /* ST_BODY: shared body octets written */
    int body_phase; /* 0 header in out, 1 body, 2 final dot, 3 done */
};

struct load_worker {
    pthread_t tid;
    unsigned index;
    int ep;
    struct load_sess *slots; /* owned, nslots entries */
    unsigned nslots;
    unsigned in_setup;   /* --idle: sessions not yet idle */
    SSL_SESSION *resume; /* owned: last session ticket (--tls-resume) */
    /* results, read by main after join */
    long ok, rej, err, sessions, sess_fail, resumed, idle_ready, idle_fail;
    long ok_window;
    struct load_samples data_lat, eod_lat, sess_lat;
};

/* Shared by all threads; set up before they start. */
static struct load_opts opt;
static struct load_user *users;
static unsigned nusers;
static char *shared_body; /* the body after the unique first line */
static size_t shared_body_len;
static SSL_CTX *tls_ctx;
static struct addrinfo *server_ai;
static double t_start, t_window0, t_window1, t_stop;
static long budget;       /* -n: messages not yet claimed */
static long seq_counter;  /* message sequence numbers */
static int stop_flag;     /* no new sessions or messages */
static long errors_shown; /* error lines printed */
static long idle_ready_all, idle_fail_all;
static volatile sig_atomic_t got_signal;
static pthread_mutex_t err_lock = PTHREAD_MUTEX_INITIALIZER;

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void die(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "sgload: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n);

    if (p == NULL)
        die("out of memory");
    return p;
}

static void samples_add(struct load_samples *s, double ms)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 1024;
        s->v = realloc(s->v, s->cap * sizeof(*s->v));
        if (s->v == NULL)
            die("out of memory");
    }
    s->v[s->n++] = ms;
}

static void samples_merge(struct load_samples *to, const struct load_samples *s)
{
    size_t i;

    for (i = 0; i < s->n; i++)
        samples_add(to, s->v[i]);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

static void samples_sort(struct load_samples *s)
{
    if (s->n > 0)
        qsort(s->v, s->n, sizeof(*s->v), cmp_double);
}

/* Nearest-rank percentile of sorted samples; 0 when there are none. */
static double pct(const struct load_samples *s, double p)
{
    size_t rank;

    if (s->n == 0)
        return 0;
    rank = (size_t)ceil(p / 100.0 * (double)s->n);
    if (rank < 1)
        rank = 1;
    return s->v[rank - 1];
}

/* ---- errors and counting -------------------------------------------- */

static void sess_note(struct load_sess *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Prints an error line (the first LOAD_MAX_ERRORS unless -v). */
static void sess_note(struct load_sess *s, const char *fmt, ...)
{
    va_list ap;
    long n;

    pthread_mutex_lock(&err_lock);
    n = ++errors_shown;
    if (opt.verbose || n <= LOAD_MAX_ERRORS) {
        fprintf(stderr, "sgload: slot %u.%ld: ", s->w->index,
                (long)(s - s->w->slots));
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
    }
    pthread_mutex_unlock(&err_lock);
}

/* Claims one message of the fixed count. 1 if there is one. */
static int claim_message(void)
{
    if (__atomic_load_n(&stop_flag, __ATOMIC_RELAXED))
        return 0;
    if (opt.total < 0)
        return 1;
    return __atomic_sub_fetch(&budget, 1, __ATOMIC_RELAXED) >= 0;
}

static int budget_left(void)
{
    if (__atomic_load_n(&stop_flag, __ATOMIC_RELAXED))
        return 0;
    return opt.total < 0 || __atomic_load_n(&budget, __ATOMIC_RELAXED) > 0;
}

static int in_window(double t)
{
    return opt.total >= 0 || (t >= t_window0 && t <= t_window1);
}

/* ---- output ------------------------------------------------------------ */

static void sess_watch(struct load_sess *s, int want_out)
{
    struct epoll_event ev;

    if (s->registered && want_out == s->want_out)
        return;
    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLIN | (want_out ? EPOLLOUT : 0);
    ev.data.ptr = s;
    if (epoll_ctl(s->w->ep, s->registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD,
                  s->fd, &ev) != 0)
        die("epoll_ctl: %s", strerror(errno));
    s->registered = 1;
    s->want_out = want_out;
}

/* Writes up to len octets; returns the count, 0 if the socket is full, -1
 * on error. */
static ssize_t sess_send(struct load_sess *s, const char *p, size_t len)
{
    ssize_t n;
    int r;

    if (s->ssl == NULL) {
        n = send(s->fd, p, len, MSG_NOSIGNAL);
        if (n < 0)
            return errno == EAGAIN || errno == EINTR ? 0 : -1;
        return n;
    }
    ERR_clear_error();
    r = SSL_write(s->ssl, p, len > INT32_MAX ? INT32_MAX : (int)len);
    if (r > 0)
        return r;
    r = SSL_get_error(s->ssl, r);
    return r == SSL_ERROR_WANT_WRITE || r == SSL_ERROR_WANT_READ ? 0 : -1;
}

/* Sends what is pending: commands, then (in ST_BODY) the shared body and
 * the final dot. 0 done or waiting for the socket, -1 error. */
static int sess_flush(struct load_sess *s)
{
    static const char dot[] = ".\r\n";
    ssize_t n;

    for (;;) {
        const char *p;
        size_t left;

        if (s->outoff < s->outlen) {
            p = s->out + s->outoff;
            left = s->outlen - s->outoff;
        } else if (s->state == ST_BODY && s->body_phase == 1) {
            p = shared_body + s->bodyoff;
            left = shared_body_len - s->bodyoff;
            if (left == 0) {
                s->body_phase = 2;
                s->bodyoff = 0;
                continue;
            }
        } else if (s->state == ST_BODY && s->body_phase == 2) {
            p = dot + s->bodyoff;
            left = sizeof(dot) - 1 - s->bodyoff;
            if (left == 0) {
                s->body_phase = 3;
                s->t_eod = now();
                continue;
            }
        } else {
            s->outoff = s->outlen = 0;
            sess_watch(s, 0);
            return 0;
        }
        n = sess_send(s, p, left);
        if (n < 0)
            return -1;
        if (n == 0) {
            sess_watch(s, 1);
            return 0;
        }
        if (s->outoff < s->outlen) {
            s->outoff += (size_t)n;
            if (s->outoff == s->outlen && s->state == ST_BODY &&
                s->body_phase == 0)
                s->body_phase = 1;
        } else {
            s->bodyoff += (size_t)n;
        }
    }
}

static void sess_cmd(struct load_sess *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Appends a command line (CRLF added) to the output. */
static void sess_cmd(struct load_sess *s, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(s->out + s->outlen, sizeof(s->out) - s->outlen - 2, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(s->out) - s->outlen - 2)
        die("command too long");
    s->outlen += (size_t)n;
    memcpy(s->out + s->outlen, "\r\n", 2);
    s->outlen += 2;
}

/* ---- sessions ---------------------------------------------------------- */

static void sess_close(struct load_sess *s)
{
    if (s->ssl != NULL) {
        SSL_free(s->ssl);
        s->ssl = NULL;
    }
    if (s->fd >= 0) {
        close(s->fd); /* leaves the epoll set with it */
        s->fd = -1;
    }
    if (s->setup) {
        s->setup = 0;
        s->w->in_setup--;
    }
    s->registered = 0;
    s->want_out = 0;
    s->state = ST_FREE;
}

/* The session failed: its message (or, before the first one, one
 * message) is charged as lost. */
static void sess_fail(struct load_sess *s, const char *why)
{
    struct load_worker *w = s->w;

    if (s->state == ST_IDLE || (opt.idle && s->state != ST_FREE)) {
        w->idle_fail++;
    } else if (s->in_msg) {
        w->err++;
    } else if (s->msgs == 0 && claim_message()) {
        w->err++;
    }
    w->sess_fail++;
    sess_note(s, "%s", why);
    sess_close(s);
}

static void sess_start(struct load_sess *s);

/* The session ended with 221: count it, start the next one. */
static void sess_done(struct load_sess *s)
{
    struct load_worker *w = s->w;
    double t = now();

    w->sessions++;
    if (in_window(t) && s->msgs > 0)
        samples_add(&w->sess_lat, (t - s->t_conn) * 1000.0);
    sess_close(s);
}

static void sess_begin_tls(struct load_sess *s)
{
    s->ssl = SSL_new(tls_ctx);
    if (s->ssl == NULL)
        die("SSL_new failed");
    SSL_set_fd(s->ssl, s->fd);
    SSL_set_app_data(s->ssl, s->w);
    SSL_set_connect_state(s->ssl);
    if (opt.tls_resume && s->w->resume != NULL)
        SSL_set_session(s->ssl, s->w->resume);
    s->state = ST_HANDSHAKE;
}

/* The next message of the session, or QUIT. */
static void sess_next_txn(struct load_sess *s)
{
    const struct load_user *u = nusers ? &users[s->user] : NULL;
    char from[512];
    unsigned i;

    if (s->msgs >= opt.per_session || !claim_message()) {
        sess_cmd(s, "QUIT");
        s->state = ST_QUIT;
        return;
    }
    s->msgs++;
    s->in_msg = 1;
    s->seq = __atomic_add_fetch(&seq_counter, 1, __ATOMIC_RELAXED);
    snprintf(from, sizeof(from), "%s",
             opt.from ? opt.from : (u ? u->name : "sgload@example.org"));
    s->txn_bad = 0;
    s->rcpt_ok = 0;
    s->data_code = 0;
    s->step = 0;
    sess_cmd(s, "MAIL FROM:<%s>", from);
    if (s->pipelining) {
        for (i = 0; i < opt.nrcpt; i++)
            sess_cmd(s, "RCPT TO:<%s>", opt.rcpt);
        sess_cmd(s, "DATA");
    }
    s->state = ST_TXN;
    s->t_data = now();
}

/* After AUTH (or EHLO without AUTH): idle, or the first message. */
static void sess_ready(struct load_sess *s)
{
    if (opt.idle) {
        s->state = ST_IDLE;
        s->setup = 0;
        s->w->in_setup--;
        s->w->idle_ready++;
        return;
    }
    sess_next_txn(s);
}

static void sess_auth(struct load_sess *s)
{
    static const char b64[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const struct load_user *u = &users[s->user];
    unsigned char raw[1024];
    char enc[1400];
    size_t ul = strlen(u->name), pl = strlen(u->pass), n, i, o = 0;

    if (ul + pl + 2 > sizeof(raw))
        die("user name or password too long");
    raw[0] = '\0';
    memcpy(raw + 1, u->name, ul);
    raw[1 + ul] = '\0';
    memcpy(raw + 2 + ul, u->pass, pl);
    n = ul + pl + 2;
    for (i = 0; i < n; i += 3) {
        unsigned v = (unsigned)raw[i] << 16;

        if (i + 1 < n)
            v |= (unsigned)raw[i + 1] << 8;
        if (i + 2 < n)
            v |= raw[i + 2];
        enc[o++] = b64[(v >> 18) & 63];
        enc[o++] = b64[(v >> 12) & 63];
        enc[o++] = i + 1 < n ? b64[(v >> 6) & 63] : '=';
        enc[o++] = i + 2 < n ? b64[v & 63] : '=';
    }
    enc[o] = '\0';
    sess_cmd(s, "AUTH PLAIN %s", enc);
    s->state = ST_AUTH;
}

/* The unique header and first body line of message s->seq. */
static void sess_message_head(struct load_sess *s)
{
    const struct load_user *u = nusers ? &users[s->user] : NULL;
    const char *from =
        opt.from ? opt.from : (u ? u->name : "sgload@example.org");
    char date[64];
    struct tm tm;
    time_t t = time(NULL);
    int n;

    gmtime_r(&t, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm);
    n = snprintf(s->out, sizeof(s->out),
                 "From: <%s>\r\n"
                 "To: <%s>\r\n"
                 "Subject: sgload message %ld\r\n"
                 "Date: %s\r\n"
                 "Message-ID: <%ld.%ld@sgload.invalid>\r\n"
                 "MIME-Version: 1.0\r\n"
                 "Content-Type: text/plain; charset=us-ascii\r\n"
                 "\r\n"
                 "sgload body of message %ld\r\n",
                 from, opt.rcpt, s->seq, date, s->seq, (long)getpid(), s->seq);
    if (n < 0 || (size_t)n >= sizeof(s->out))
        die("message header too long");
    s->outlen = (size_t)n;
    s->outoff = 0;
    s->bodyoff = 0;
    s->body_phase = 0;
}

/* One reply to the transaction group: MAIL (step 0), each RCPT, DATA. */
static void sess_txn_reply(struct load_sess *s, int code)
{
    unsigned k = s->step++;
    int last = k == opt.nrcpt + 1;

    if (k == 0 && code / 100 != 2)
        s->txn_bad = 1;
    else if (k >= 1 && !last && code / 100 == 2)
        s->rcpt_ok++;
    if (last) {
        s->data_code = code;
    } else if (s->pipelining) {
        return; /* the rest of the group's replies follow */
    } else if (!s->txn_bad && k < opt.nrcpt) {
        sess_cmd(s, "RCPT TO:<%s>", opt.rcpt);
        return;
    } else if (!s->txn_bad && s->rcpt_ok > 0) {
        sess_cmd(s, "DATA");
        s->t_data = now();
        return;
    } else {
        s->data_code = code; /* refused before DATA */
    }
    if (s->data_code == 354) {
        sess_message_head(s);
        s->state = ST_BODY;
        return;
    }
    s->w->rej++;
    s->in_msg = 0;
    sess_cmd(s, "RSET");
    s->state = ST_RSET;
}

/* The final reply to a message. */
static void sess_eod_reply(struct load_sess *s, int code)
{
    struct load_worker *w = s->w;
    double t = now();

    s->in_msg = 0;
    if (code / 100 == 2) {
        w->ok++;
        if (in_window(t)) {
            w->ok_window++;
            samples_add(&w->data_lat, (t - s->t_data) * 1000.0);
            samples_add(&w->eod_lat, (t - s->t_eod) * 1000.0);
        }
    } else {
        w->rej++;
        if (opt.verbose)
            sess_note(s, "message refused with %d", code);
    }
    sess_next_txn(s);
}

/* Handles one complete reply (code of its last line). 0, or -1 after the
 * session failed. */
static int sess_reply(struct load_sess *s, int code, const char *text)
{
    char why[160];

    switch (s->state) {
    case ST_BANNER:
        if (code != 220)
            break;
        sess_cmd(s, "EHLO sgload.invalid");
        s->state = ST_EHLO;
        return 0;
    case ST_EHLO:
    case ST_EHLO_TLS:
        if (code != 250)
            break;
        if (opt.tls && s->ssl == NULL) {
            sess_cmd(s, "STARTTLS");
            s->state = ST_STARTTLS;
        } else if (nusers > 0) {
            sess_auth(s);
        } else {
            sess_ready(s);
        }
        return 0;
    case ST_STARTTLS:
        if (code != 220)
            break;
        sess_begin_tls(s);
        return 0;
    case ST_AUTH:
        if (code != 235)
            break;
        sess_ready(s);
        return 0;
    case ST_TXN:
        sess_txn_reply(s, code);
        return 0;
    case ST_BODY:
        if (s->body_phase != 3)
            break; /* a reply before the end of the message */
        sess_eod_reply(s, code);
        return 0;
    case ST_RSET:
        sess_next_txn(s);
        return 0;
    case ST_QUIT:
        sess_done(s);
        return -1;
    default:
        break;
    }
    snprintf(why, sizeof(why), "unexpected reply in state %d: %.120s",
             (int)s->state, text);
    sess_fail(s, why);
    return -1;
}

/* Parses complete replies out of s->in. 0, or -1 if the session ended. */
static int sess_parse(struct load_sess *s)
{
    size_t off = 0, start = 0;

    while (off < s->inlen) {
        char *lf = memchr(s->in + off, '\n', s->inlen - off);
        char *line = s->in + off;
        size_t len;

        if (lf == NULL)
            break;
        len = (size_t)(lf - line) + 1;
        off += len;
        if (len < 4) {
            sess_fail(s, "short reply line");
            return -1;
        }
        if ((s->state == ST_EHLO || s->state == ST_EHLO_TLS) && len >= 15 &&
            strncasecmp(line + 4, "PIPELINING", 10) == 0)
            s->pipelining = opt.pipelining;
        if (line[3] == '-')
            continue;
        *lf = '\0';
        if (sess_reply(s, atoi(line), line) != 0)
            return -1;
        start = off;
    }
    if (start > 0) {
        memmove(s->in, s->in + start, s->inlen - start);
        s->inlen -= start;
    } else if (s->inlen == sizeof(s->in)) {
        sess_fail(s, "reply too long");
        return -1;
    }
    return 0;
}

/* Drives the TLS handshake. 1 done, 0 waiting, -1 failed. */
static int sess_handshake(struct load_sess *s)
{
    int r, e;

    ERR_clear_error();
    r = SSL_do_handshake(s->ssl);
    if (r == 1) {
        if (SSL_session_reused(s->ssl))
            s->w->resumed++;
        sess_cmd(s, "EHLO sgload.invalid");
        s->state = ST_EHLO_TLS;
        return 1;
    }
    e = SSL_get_error(s->ssl, r);
    if (e == SSL_ERROR_WANT_READ) {
        sess_watch(s, 0);
        return 0;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        sess_watch(s, 1);
        return 0;
    }
    sess_fail(s, "TLS handshake failed");
    return -1;
}

/* Reads what is there. 1 got data, 0 nothing now, -1 session ended. */
static int sess_read(struct load_sess *s)
{
    size_t room = sizeof(s->in) - s->inlen;
    ssize_t n;
    int r;

    if (room == 0)
        return 0;
    if (s->ssl == NULL) {
        n = recv(s->fd, s->in + s->inlen, room, 0);
        if (n > 0) {
            s->inlen += (size_t)n;
            return 1;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return 0;
        sess_fail(s, n == 0 ? "connection closed by server" : strerror(errno));
        return -1;
    }
    ERR_clear_error();
    r = SSL_read(s->ssl, s->in + s->inlen, (int)room);
    if (r > 0) {
        s->inlen += (size_t)r;
        return 1;
    }
    r = SSL_get_error(s->ssl, r);
    if (r == SSL_ERROR_WANT_READ || r == SSL_ERROR_WANT_WRITE)
        return 0;
    sess_fail(s, r == SSL_ERROR_ZERO_RETURN ? "TLS closed by server"
                                            : "TLS read failed");
    return -1;
}

/* Everything an event allows: connect, handshake, write, read, parse. */
static void sess_event(struct load_sess *s)
{
    int r;

    if (s->state == ST_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof(err);

        getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0) {
            sess_fail(s, strerror(err));
            return;
        }
        s->state = ST_BANNER;
        sess_watch(s, 0);
    }
    for (;;) {
        if (s->state == ST_HANDSHAKE) {
            r = sess_handshake(s);
            if (r <= 0)
                return;
        }
        if (sess_flush(s) != 0) {
            sess_fail(s, "write failed");
            return;
        }
        if (s->state == ST_HANDSHAKE)
            continue;
        r = sess_read(s);
        if (r < 0)
            return;
        if (r == 0)
            return;
        if (sess_parse(s) != 0)
            return;
        if (s->state == ST_FREE)
            return;
    }
}

static void sess_start(struct load_sess *s)
{
    struct load_worker *w = s->w;
    int fd, one = 1;

    memset((char *)s + offsetof(struct load_sess, state), 0,
           offsetof(struct load_sess, in) - offsetof(struct load_sess, state));
    s->inlen = s->outlen = s->outoff = s->bodyoff = 0;
    s->body_phase = 0;
    s->fd = -1;
    fd = socket(server_ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0)
        die("socket: %s", strerror(errno));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    s->fd = fd;
    s->state = ST_CONNECTING;
    s->t_conn = now();
    s->deadline = s->t_conn + opt.timeout;
    if (nusers > 0) {
        static unsigned next_user;

        s->user = __atomic_fetch_add(&next_user, 1, __ATOMIC_RELAXED) % nusers;
    }
    if (opt.idle) {
        s->setup = 1;
        w->in_setup++;
    }
    if (connect(fd, server_ai->ai_addr, server_ai->ai_addrlen) != 0 &&
        errno != EINPROGRESS) {
        sess_fail(s, strerror(errno));
        return;
    }
    sess_watch(s, 1);
}

/* ---- worker threads ---------------------------------------------------- */

static int worker_busy(const struct load_worker *w)
{
    unsigned i;

    for (i = 0; i < w->nslots; i++)
        if (w->slots[i].state != ST_FREE)
            return 1;
    return 0;
}

/* Opens sessions in free slots while there is work; checks timeouts. */
static void worker_tick(struct load_worker *w, double t)
{
    unsigned i;

    for (i = 0; i < w->nslots; i++) {
        struct load_sess *s = &w->slots[i];

        if (s->state == ST_FREE) {
            if (opt.idle) {
                if (s->used == 0 && !got_signal &&
                    w->in_setup < opt.ramp / opt.threads + 1) {
                    s->used = 1; /* one session per slot */
                    sess_start(s);
                }
            } else if (budget_left()) {
                sess_start(s);
            }
            continue;
        }
        if (s->state == ST_IDLE) {
            s->deadline = t + 1e9;
            continue;
        }
        if (t > s->deadline)
            sess_fail(s, "timeout");
    }
}

static void worker_new_session_cb(struct load_worker *w, SSL *ssl)
{
    SSL_SESSION *old = w->resume;

    w->resume = SSL_get1_session(ssl);
    if (old != NULL)
        SSL_SESSION_free(old);
}

static int ctx_new_session(SSL *ssl, SSL_SESSION *sess)
{
    struct load_worker *w = SSL_get_app_data(ssl);

    (void)sess;
    if (w != NULL)
        worker_new_session_cb(w, ssl);
    return 0;
}

static void *worker_main(void *arg)
{
    struct load_worker *w = arg;
    struct epoll_event evs[256];
    double last_tick = 0;

    for (;;) {
        double t = now();
        int n, i;

        if (t - last_tick >= LOAD_TICK_MS / 1000.0 || last_tick == 0) {
            last_tick = t;
            worker_tick(w, t);
            if (opt.idle && __atomic_load_n(&stop_flag, __ATOMIC_RELAXED))
                break;
            if (!opt.idle && !budget_left() && !worker_busy(w))
                break;
        }
        n = epoll_wait(w->ep, evs, 256, LOAD_TICK_MS);
        for (i = 0; i < n; i++) {
            struct load_sess *s = evs[i].data.ptr;

            sess_event(s);
            /* A slot freed by a finished session is refilled at once. */
            if (s->state == ST_FREE && !opt.idle && budget_left())
                sess_start(s);
        }
    }
    return NULL;
}

/* ---- set-up ------------------------------------------------------------ */

static size_t parse_size(const char *s)
{
    char *end;
    double v = strtod(s, &end);

    if (end == s || v < 0)
        die("bad size %s", s);
    if (*end == 'k' || *end == 'K')
        v *= 1024;
    else if (*end == 'm' || *end == 'M')
        v *= 1024 * 1024;
    else if (*end != '\0')
        die("bad size %s", s);
    return (size_t)v;
}

static void load_users(void)
{
    char line[2048];
    FILE *f;

    if (opt.auth_user != NULL) {
        users = xmalloc(sizeof(*users));
        users[0].name = strdup(opt.auth_user);
        users[0].pass = strdup(opt.auth_pass);
        nusers = 1;
        return;
    }
    if (opt.auth_file == NULL)
        return;
    f = fopen(opt.auth_file, "r");
    if (f == NULL)
        die("%s: %s", opt.auth_file, strerror(errno));
    users = xmalloc(LOAD_MAX_USERS * sizeof(*users));
    while (fgets(line, sizeof(line), f) != NULL && nusers < LOAD_MAX_USERS) {
        char *u = strtok(line, " \t\r\n"), *p = strtok(NULL, " \t\r\n");

        if (u == NULL || *u == '#')
            continue;
        if (p == NULL)
            die("%s: line without password", opt.auth_file);
        users[nusers].name = strdup(u);
        users[nusers].pass = strdup(p);
        nusers++;
    }
    fclose(f);
    if (nusers == 0)
        die("%s: no users", opt.auth_file);
}

/* The shared part of every body: printable lines, none starting with a
 * dot, filling the requested size after the unique first line. */
static void make_body(void)
{
    static const char pattern[] =
        "The quick brown fox jumps over the lazy dog 0123456789 "
        "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ ";
    size_t size = opt.body_size, off = 0, k = 0;

    shared_body = xmalloc(size + LOAD_BODY_LINE + 3);
    while (off + 2 < size) {
        size_t n = size - off - 2, i;

        if (n > LOAD_BODY_LINE)
            n = LOAD_BODY_LINE;
        for (i = 0; i < n; i++)
            shared_body[off + i] = pattern[(k + i) % (sizeof(pattern) - 1)];
        if (shared_body[off] == '.' || shared_body[off] == ' ')
            shared_body[off] = 'x';
        off += n;
        memcpy(shared_body + off, "\r\n", 2);
        off += 2;
        k += 7;
    }
    shared_body_len = off;
}

static void setup_tls(void)
{
    tls_ctx = SSL_CTX_new(TLS_client_method());
    if (tls_ctx == NULL)
        die("SSL_CTX_new failed");
    SSL_CTX_set_verify(tls_ctx, SSL_VERIFY_NONE, NULL);
    if (opt.tls12)
        SSL_CTX_set_max_proto_version(tls_ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(tls_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                                  SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                  SSL_MODE_RELEASE_BUFFERS);
    if (opt.tls_resume) {
        SSL_CTX_set_session_cache_mode(tls_ctx, SSL_SESS_CACHE_CLIENT |
                                                    SSL_SESS_CACHE_NO_INTERNAL);
        SSL_CTX_sess_set_new_cb(tls_ctx, ctx_new_session);
    }
}

static void resolve(const char *server)
{
    struct addrinfo hints;
    const char *colon = strrchr(server, ':');
    size_t hl;
    int rc;

    if (colon == NULL)
        die("-s wants HOST:PORT");
    hl = (size_t)(colon - server);
    if (hl >= sizeof(opt.host) || strlen(colon + 1) >= sizeof(opt.port))
        die("bad -s %s", server);
    memcpy(opt.host, server, hl);
    opt.host[hl] = '\0';
    if (opt.host[0] == '[' && hl > 2 && opt.host[hl - 1] == ']') {
        memmove(opt.host, opt.host + 1, hl - 2);
        opt.host[hl - 2] = '\0';
    }
    snprintf(opt.port, sizeof(opt.port), "%s", colon + 1);
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    rc = getaddrinfo(opt.host, opt.port, &hints, &server_ai);
    if (rc != 0)
        die("%s: %s", server, gai_strerror(rc));
}

static void raise_fd_limit(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static void usage(void)
{
    fprintf(stderr,
            "usage: sgload -s HOST:PORT (-n TOTAL | -d SECONDS) [options]\n"
            "  -c N        parallel sessions (default 1)\n"
            "  -m N        messages per session (default 1)\n"
            "  -n N        send N messages in all\n"
            "  -d SEC      run SEC seconds (with --idle: hold that long)\n"
            "  -w SEC      warm-up: the first SEC seconds are not counted\n"
            "  -b SIZE     body size, k/M suffix (default 2k)\n"
            "  -S          STARTTLS (required)\n"
            "  --tls-resume  resume TLS sessions with tickets\n"
            "  --tls12     offer at most TLS 1.2\n"
            "  -a USER:PASS  AUTH PLAIN as this user\n"
            "  -A FILE     AUTH PLAIN users, 'user password' per line\n"
            "  -f ADDR     sender (default: the AUTH user)\n"
            "  -t ADDR     recipient (default bench@example.net)\n"
            "  -r N        recipients per message (default 1)\n"
            "  --no-pipelining  one command at a time\n"
            "  --idle      authenticate, then stay connected silently\n"
            "  --ramp N    --idle: sessions in set-up at once (default %d)\n"
            "  -j N        worker threads (default 1)\n"
            "  -T SEC      timeout per step (default 30)\n"
            "  -v          print every error\n",
            LOAD_DEF_RAMP);
    exit(1);
}

static void parse_args(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"tls-resume", no_argument, NULL, 'R'},
        {"tls12", no_argument, NULL, '2'},
        {"no-pipelining", no_argument, NULL, 'P'},
        {"idle", no_argument, NULL, 'I'},
        {"ramp", required_argument, NULL, 'p'},
        {NULL, 0, NULL, 0},
    };
    const char *server = NULL;
    char *colon;
    int c;

    opt.conc = opt.per_session = opt.nrcpt = opt.threads = 1;
    opt.total = -1;
    opt.timeout = 30;
    opt.body_size = 2048;
    opt.pipelining = 1;
    opt.ramp = LOAD_DEF_RAMP;
    opt.rcpt = "bench@example.net";
    while ((c = getopt_long(argc, argv, "s:c:m:n:d:w:b:Sa:A:f:t:r:j:T:vh",
                            longopts, NULL)) != -1) {
        switch (c) {
        case 's':
            server = optarg;
            break;
        case 'c':
            opt.conc = (unsigned)atoi(optarg);
            break;
        case 'm':
            opt.per_session = (unsigned)atoi(optarg);
            break;
        case 'n':
            opt.total = atol(optarg);
            break;
        case 'd':
            opt.duration = atof(optarg);
            break;
        case 'w':
            opt.warmup = atof(optarg);
            break;
        case 'b':
            opt.body_size = parse_size(optarg);
            break;
        case 'S':
            opt.tls = 1;
            break;
        case 'a':
            colon = strchr(optarg, ':');
            if (colon == NULL)
                die("-a wants USER:PASS");
            *colon = '\0';
            opt.auth_user = optarg;
            opt.auth_pass = colon + 1;
            break;
        case 'A':
            opt.auth_file = optarg;
            break;
        case 'f':
            opt.from = optarg;
            break;
        case 't':
            opt.rcpt = optarg;
            break;
        case 'r':
            opt.nrcpt = (unsigned)atoi(optarg);
            break;
        case 'j':
            opt.threads = (unsigned)atoi(optarg);
            break;
        case 'T':
            opt.timeout = atof(optarg);
            break;
        case 'v':
            opt.verbose = 1;
            break;
        case 'R':
            opt.tls_resume = 1;
            break;
        case '2':
            opt.tls12 = 1;
            break;
        case 'P':
            opt.pipelining = 0;
            break;
        case 'I':
            opt.idle = 1;
            break;
        case 'p':
            opt.ramp = (unsigned)atoi(optarg);
            break;
        default:
            usage();
        }
    }
    if (server == NULL || optind != argc)
        usage();
    if (opt.idle ? opt.duration <= 0 : (opt.total >= 0) == (opt.duration > 0))
        die("give exactly one of -n and -d (--idle: -d)");
    if (opt.conc < 1 || opt.conc > LOAD_MAX_SLOTS || opt.per_session < 1 ||
        opt.nrcpt < 1 || opt.nrcpt > LOAD_MAX_RCPT || opt.threads < 1 ||
        opt.threads > LOAD_MAX_THREADS || opt.timeout <= 0 || opt.ramp < 1)
        die("option out of range");
    if (opt.threads > opt.conc)
        opt.threads = opt.conc;
    if (opt.warmup >= opt.duration && opt.duration > 0)
        die("-w must be shorter than -d");
    resolve(server);
}

/* ---- main ---------------------------------------------------------------- */

static void on_signal(int sig)
{
    (void)sig;
    got_signal = 1;
}

/* --idle: reports once every slot is idle or failed, holds, then stops. */
static void idle_supervise(struct load_worker *ws)
{
    int reported = 0;
    double t_ready = 0;
    unsigned i;

    while (!got_signal) {
        long ready = 0, failed = 0;

        usleep(100 * 1000);
        for (i = 0; i < opt.threads; i++) {
            ready += __atomic_load_n(&ws[i].idle_ready, __ATOMIC_RELAXED);
            failed += __atomic_load_n(&ws[i].idle_fail, __ATOMIC_RELAXED);
        }
        idle_ready_all = ready;
        idle_fail_all = failed;
        if (!reported && ready + failed >= (long)opt.conc) {
            t_ready = now();
            printf("IDLE ready=%ld failed=%ld secs=%.2f\n", ready, failed,
                   t_ready - t_start);
            fflush(stdout);
            reported = 1;
        }
        if (reported && now() - t_ready >= opt.duration)
            break;
        if (!reported && now() - t_start > opt.timeout + opt.conc / 50.0)
            break; /* set-up never finished */
    }
    __atomic_store_n(&stop_flag, 1, __ATOMIC_RELAXED);
}

/* Frees what main and the workers made (a clean exit under LeakSanitizer). */
static void cleanup(struct load_worker *ws, struct load_samples *a,
                    struct load_samples *b, struct load_samples *c)
{
    unsigned i;

    for (i = 0; i < opt.threads; i++) {
        free(ws[i].slots);
        free(ws[i].data_lat.v);
        free(ws[i].eod_lat.v);
        free(ws[i].sess_lat.v);
        if (ws[i].resume != NULL)
            SSL_SESSION_free(ws[i].resume);
        close(ws[i].ep);
    }
    free(ws);
    free(a->v);
    free(b->v);
    free(c->v);
    for (i = 0; i < nusers; i++) {
        free(users[i].name);
        free(users[i].pass);
    }
    free(users);
    free(shared_body);
    SSL_CTX_free(tls_ctx);
    freeaddrinfo(server_ai);
}

int main(int argc, char **argv)
{
    struct load_worker *ws;
    struct load_samples data = {0}, eod = {0}, sess = {0};
    long ok = 0, rej = 0, err = 0, sessions = 0, sess_fail = 0, resumed = 0;
    long ok_window = 0;
    struct rusage ru;
    double secs, rate;
    unsigned i, j;

    parse_args(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    raise_fd_limit();
    load_users();
    make_body();
    setup_tls();
    budget = opt.total;

    ws = calloc(opt.threads, sizeof(*ws));
    if (ws == NULL)
        die("out of memory");
    t_start = now();
    t_window0 = t_start + opt.warmup;
    t_window1 = t_start + opt.duration;
    t_stop = opt.duration > 0 ? t_window1 : 0;
    for (i = 0; i < opt.threads; i++) {
        struct load_worker *w = &ws[i];

        w->index = i;
        w->nslots = opt.conc / opt.threads + (i < opt.conc % opt.threads);
        w->slots = calloc(w->nslots, sizeof(*w->slots));
        w->ep = epoll_create1(EPOLL_CLOEXEC);
        if (w->slots == NULL || w->ep < 0)
            die("out of memory");
        for (j = 0; j < w->nslots; j++) {
            w->slots[j].w = w;
            w->slots[j].fd = -1;
        }
        if (pthread_create(&w->tid, NULL, worker_main, w) != 0)
            die("pthread_create failed");
    }
    if (opt.idle) {
        idle_supervise(ws);
    } else {
        while (t_stop > 0 && now() < t_stop && !got_signal)
            usleep(20 * 1000);
        if (t_stop > 0 || got_signal)
            __atomic_store_n(&stop_flag, 1, __ATOMIC_RELAXED);
    }
    for (i = 0; i < opt.threads; i++) {
        struct load_worker *w = &ws[i];

        pthread_join(w->tid, NULL);
        for (j = 0; j < w->nslots; j++)
            if (w->slots[j].state != ST_FREE)
                sess_close(&w->slots[j]);
        ok += w->ok;
        rej += w->rej;
        err += w->err;
        sessions += w->sessions;
        sess_fail += w->sess_fail;
        resumed += w->resumed;
        ok_window += w->ok_window;
        samples_merge(&data, &w->data_lat);
        samples_merge(&eod, &w->eod_lat);
        samples_merge(&sess, &w->sess_lat);
    }
    secs = now() - t_start;
    if (opt.duration > 0 && !opt.idle)
        rate = ok_window / (opt.duration - opt.warmup);
    else
        rate = secs > 0 ? ok / secs : 0;
    samples_sort(&data);
    samples_sort(&eod);
    samples_sort(&sess);
    getrusage(RUSAGE_SELF, &ru);

    fprintf(stderr,
            "sgload: %ld messages: %ld accepted, %ld refused, %ld lost; "
            "%.1f msg/s\n"
            "  DATA ms: p50 %.2f p90 %.2f p99 %.2f max %.2f\n"
            "  session ms: p50 %.2f p99 %.2f (%ld sessions, %ld failed)\n",
            ok + rej + err, ok, rej, err, rate, pct(&data, 50), pct(&data, 90),
            pct(&data, 99), pct(&data, 100), pct(&sess, 50), pct(&sess, 99),
            sessions, sess_fail);
    printf("RESULT server=%s:%s conc=%u per_session=%u size=%zu tls=%d "
           "auth=%d pipelining=%d idle=%d msgs=%ld ok=%ld rej=%ld err=%ld "
           "fail=%ld sessions=%ld sess_fail=%ld tls_resumed=%ld "
           "idle_ready=%ld idle_failed=%ld secs=%.3f rate=%.2f "
           "p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f "
           "eod_p50_ms=%.3f eod_p90_ms=%.3f eod_p99_ms=%.3f "
           "sess_p50_ms=%.3f sess_p90_ms=%.3f sess_p99_ms=%.3f "
           "cpu_user=%.3f cpu_sys=%.3f\n",
           opt.host, opt.port, opt.conc, opt.per_session, opt.body_size,
           opt.tls, nusers > 0, opt.pipelining, opt.idle, ok + rej + err, ok,
           rej, err, rej + err, sessions, sess_fail, resumed, idle_ready_all,
           idle_fail_all, secs, rate, pct(&data, 50), pct(&data, 90),
           pct(&data, 99), pct(&data, 100), pct(&eod, 50), pct(&eod, 90),
           pct(&eod, 99), pct(&sess, 50), pct(&sess, 90), pct(&sess, 99),
           (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6,
           (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
    cleanup(ws, &data, &eod, &sess);
    if (opt.idle)
        return idle_fail_all > 0 || idle_ready_all < (long)opt.conc ? 2 : 0;
    return rej + err > 0 ? 2 : 0;
}
