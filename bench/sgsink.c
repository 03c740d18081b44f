/* sgsink: the next hop in subgate's benchmark. Accepts every message over
 * plain ESMTP (PIPELINING, 8BITMIME, SIZE, ENHANCEDSTATUSCODES), counts
 * messages and octets, and keeps a stats file current so that a driver can
 * wait for delivery without talking to it:
 *
 *   sgsink -l HOST:PORT -s STATSFILE [-d DIR -k N] [-P PIDFILE]
 *
 * The stats file (rewritten at most every 100 ms, atomically by rename)
 * holds one line "messages=N bytes=N sessions=N active=N". With -d the
 * first N messages are saved as DIR/NNNNNNNN.eml, dot-stuffing removed and
 * otherwise octet for octet, beside DIR/NNNNNNNN.env (MAIL FROM and RCPT TO
 * lines), for signature checks. "ready" goes to stdout once the socket
 * listens; SIGTERM or SIGINT ends it with status 0. One thread, epoll,
 * non-blocking sockets; far faster than any gateway it measures. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SINK_INBUF (64 * 1024) /* unparsed input per connection */
#define SINK_OUTBUF 8192       /* replies not yet written */
#define SINK_MAX_LINE 4096     /* a command line; longer is refused */
#define SINK_STATS_MS 100      /* stats file refresh */
#define SINK_MAX_CONNS 100000

enum sink_data_state {
    SINK_D_BOL,   /* at the start of a line */
    SINK_D_DOT,   /* a line started with "." */
    SINK_D_DOTCR, /* ".\r" at the start of a line */
    SINK_D_MID,   /* inside a line */
};

struct sink_conn {
    int fd;
    int in_data; /* reading the message after 354 */
    int closing; /* close once the output is written */
    enum sink_data_state dstate;
    FILE *save;     /* owned: the .eml being written, or NULL */
    FILE *env;      /* owned: the .env being written, or NULL */
    long long size; /* octets of the current message */
    char *in;       /* owned, SINK_INBUF */
    size_t inlen;
    char out[SINK_OUTBUF];
    size_t outlen;
};

static int ep;
static const char *stats_path, *save_dir;
static long save_max;
static long long n_messages, n_bytes, n_sessions, n_active, n_saved;
static int stats_dirty = 1;
static volatile sig_atomic_t stop;

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void die(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "sgsink: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

static void write_stats(void)
{
    char tmp[4096];
    FILE *f;

    if (stats_path == NULL || !stats_dirty)
        return;
    stats_dirty = 0;
    snprintf(tmp, sizeof(tmp), "%s.tmp", stats_path);
    f = fopen(tmp, "w");
    if (f == NULL)
        die("%s: %s", tmp, strerror(errno));
    fprintf(f, "messages=%lld bytes=%lld sessions=%lld active=%lld\n",
            n_messages, n_bytes, n_sessions, n_active);
    if (fclose(f) != 0 || rename(tmp, stats_path) != 0)
        die("%s: %s", stats_path, strerror(errno));
}

static void conn_watch(struct sink_conn *c, int op)
{
    struct epoll_event ev;

    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLIN | (c->outlen > 0 ? EPOLLOUT : 0);
    ev.data.ptr = c;
    if (epoll_ctl(ep, op, c->fd, &ev) != 0)
        die("epoll_ctl: %s", strerror(errno));
}

static void conn_free(struct sink_conn *c)
{
    if (c->save != NULL)
        fclose(c->save);
    if (c->env != NULL)
        fclose(c->env);
    close(c->fd);
    n_active--;
    stats_dirty = 1;
    free(c->in);
    free(c);
}

/* Writes pending replies. 0, or -1 if the connection is gone. */
static int conn_flush(struct sink_conn *c)
{
    size_t off = 0;

    while (off < c->outlen) {
        ssize_t n = send(c->fd, c->out + off, c->outlen - off, MSG_NOSIGNAL);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break;
        if (n <= 0) {
            conn_free(c);
            return -1;
        }
        off += (size_t)n;
    }
    memmove(c->out, c->out + off, c->outlen - off);
    c->outlen -= off;
    if (c->outlen == 0 && c->closing) {
        conn_free(c);
        return -1;
    }
    conn_watch(c, EPOLL_CTL_MOD);
    return 0;
}

static void reply(struct sink_conn *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void reply(struct sink_conn *c, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(c->out + c->outlen, sizeof(c->out) - c->outlen, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(c->out) - c->outlen)
        c->closing = 1; /* a client that never reads its replies */
    else
        c->outlen += (size_t)n;
}

static void save_open(struct sink_conn *c)
{
    char path[4096];

    if (save_dir == NULL || n_saved >= save_max)
        return;
    n_saved++;
    snprintf(path, sizeof(path), "%s/%08lld.eml", save_dir, n_saved);
    c->save = fopen(path, "w");
    if (c->save == NULL)
        die("%s: %s", path, strerror(errno));
}

static void save_env(struct sink_conn *c, const char *line)
{
    char path[4096];

    if (save_dir == NULL || n_saved >= save_max)
        return;
    if (c->env == NULL) {
        snprintf(path, sizeof(path), "%s/%08lld.env", save_dir, n_saved + 1);
        c->env = fopen(path, "w");
        if (c->env == NULL)
            die("%s: %s", path, strerror(errno));
    }
    fprintf(c->env, "%s\n", line);
}

static void data_out(struct sink_conn *c, const char *p, size_t n)
{
    c->size += (long long)n;
    if (c->save != NULL && fwrite(p, 1, n, c->save) != n)
        die("cannot save a message: %s", strerror(errno));
}

static void data_end(struct sink_conn *c)
{
    c->in_data = 0;
    n_messages++;
    n_bytes += c->size;
    stats_dirty = 1;
    if (c->save != NULL) {
        fclose(c->save);
        c->save = NULL;
    }
    if (c->env != NULL) {
        fclose(c->env);
        c->env = NULL;
    }
    reply(c, "250 2.0.0 Ok: queued as %lld\r\n", n_messages);
}

/* Consumes message octets; returns how many were used (less than len only
 * when the end of data was seen). */
static size_t data_feed(struct sink_conn *c, const char *p, size_t len)
{
    const char *s = p, *end = p + len, *lf;

    while (s < end) {
        switch (c->dstate) {
        case SINK_D_BOL:
            if (*s == '.') {
                c->dstate = SINK_D_DOT;
                s++;
            } else {
                c->dstate = SINK_D_MID;
            }
            break;
        case SINK_D_DOT:
            if (*s == '\r') {
                c->dstate = SINK_D_DOTCR;
                s++;
            } else {
                c->dstate = SINK_D_MID; /* stuffed dot: dropped */
            }
            break;
        case SINK_D_DOTCR:
            if (*s == '\n') {
                data_end(c);
                return (size_t)(s + 1 - p);
            }
            data_out(c, "\r", 1);
            c->dstate = SINK_D_MID;
            break;
        case SINK_D_MID:
            lf = memchr(s, '\n', (size_t)(end - s));
            if (lf == NULL) {
                data_out(c, s, (size_t)(end - s));
                s = end;
            } else {
                data_out(c, s, (size_t)(lf + 1 - s));
                s = lf + 1;
                c->dstate = SINK_D_BOL;
            }
            break;
        }
    }
    return len;
}

static void command(struct sink_conn *c, char *line)
{
    if (strncasecmp(line, "EHLO", 4) == 0) {
        reply(c, "250-sgsink\r\n250-PIPELINING\r\n250-SIZE 1073741824\r\n"
                 "250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n");
    } else if (strncasecmp(line, "HELO", 4) == 0) {
        reply(c, "250 sgsink\r\n");
    } else if (strncasecmp(line, "MAIL", 4) == 0 ||
               strncasecmp(line, "RCPT", 4) == 0) {
        save_env(c, line);
        reply(c, "250 2.1.0 Ok\r\n");
    } else if (strncasecmp(line, "DATA", 4) == 0) {
        c->in_data = 1;
        c->dstate = SINK_D_BOL;
        c->size = 0;
        save_open(c);
        reply(c, "354 End data with <CR><LF>.<CR><LF>\r\n");
    } else if (strncasecmp(line, "RSET", 4) == 0 ||
               strncasecmp(line, "NOOP", 4) == 0) {
        if (c->env != NULL) {
            fclose(c->env);
            c->env = NULL;
        }
        reply(c, "250 2.0.0 Ok\r\n");
    } else if (strncasecmp(line, "QUIT", 4) == 0) {
        reply(c, "221 2.0.0 Bye\r\n");
        c->closing = 1;
    } else {
        reply(c, "502 5.5.1 Command not implemented\r\n");
    }
}

/* Runs everything in the input buffer. */
static void conn_process(struct sink_conn *c)
{
    size_t off = 0;

    while (off < c->inlen && !c->closing) {
        char *line, *lf;
        size_t len;

        if (c->in_data) {
            off += data_feed(c, c->in + off, c->inlen - off);
            continue;
        }
        line = c->in + off;
        lf = memchr(line, '\n', c->inlen - off);
        if (lf == NULL) {
            if (c->inlen - off > SINK_MAX_LINE) {
                reply(c, "500 5.5.2 Line too long\r\n");
                c->closing = 1;
            }
            break;
        }
        len = (size_t)(lf - line);
        off += len + 1;
        if (len > 0 && line[len - 1] == '\r')
            len--;
        line[len] = '\0';
        command(c, line);
    }
    memmove(c->in, c->in + off, c->inlen - off);
    c->inlen -= off;
}

static void conn_read(struct sink_conn *c)
{
    for (;;) {
        ssize_t n = recv(c->fd, c->in + c->inlen, SINK_INBUF - c->inlen, 0);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break;
        if (n <= 0) {
            conn_free(c);
            return;
        }
        c->inlen += (size_t)n;
        conn_process(c);
        if (c->closing || c->inlen == SINK_INBUF)
            break;
    }
    conn_flush(c);
}

static void accept_all(int lfd)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        struct sink_conn *c;

        if (fd < 0) {
            if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                fprintf(stderr, "sgsink: accept: %s\n", strerror(errno));
            return;
        }
        c = calloc(1, sizeof(*c));
        if (c == NULL || (c->in = malloc(SINK_INBUF)) == NULL)
            die("out of memory");
        c->fd = fd;
        n_sessions++;
        n_active++;
        stats_dirty = 1;
        reply(c, "220 sgsink ESMTP\r\n");
        conn_watch(c, EPOLL_CTL_ADD);
        conn_flush(c);
    }
}

static int listen_on(const char *spec)
{
    char host[256];
    const char *colon = strrchr(spec, ':');
    struct addrinfo hints, *ai;
    int fd, one = 1, rc;

    if (colon == NULL || (size_t)(colon - spec) >= sizeof(host))
        die("-l wants HOST:PORT");
    memcpy(host, spec, (size_t)(colon - spec));
    host[colon - spec] = '\0';
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    rc = getaddrinfo(host, colon + 1, &hints, &ai);
    if (rc != 0)
        die("%s: %s", spec, gai_strerror(rc));
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket: %s", strerror(errno));
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 1024) != 0)
        die("%s: %s", spec, strerror(errno));
    freeaddrinfo(ai);
    return fd;
}

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static void usage(void)
{
    fprintf(stderr, "usage: sgsink -l HOST:PORT [-s STATSFILE] [-d DIR -k N] "
                    "[-P PIDFILE]\n");
    exit(1);
}

int main(int argc, char **argv)
{
    const char *listen_spec = NULL, *pidfile = NULL;
    struct epoll_event evs[256], lev;
    struct rlimit rl;
    struct timespec last = {0, 0};
    int lfd, c;

    while ((c = getopt(argc, argv, "l:s:d:k:P:h")) != -1) {
        switch (c) {
        case 'l':
            listen_spec = optarg;
            break;
        case 's':
            stats_path = optarg;
            break;
        case 'd':
            save_dir = optarg;
            break;
        case 'k':
            save_max = atol(optarg);
            break;
        case 'P':
            pidfile = optarg;
            break;
        default:
            usage();
        }
    }
    if (listen_spec == NULL || optind != argc)
        usage();
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    lfd = listen_on(listen_spec);
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll: %s", strerror(errno));
    memset(&lev, 0, sizeof(lev));
    lev.events = EPOLLIN;
    lev.data.ptr = NULL;
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);
    if (pidfile != NULL) {
        FILE *f = fopen(pidfile, "w");

        if (f == NULL)
            die("%s: %s", pidfile, strerror(errno));
        fprintf(f, "%ld\n", (long)getpid());
        fclose(f);
    }
    write_stats();
    printf("ready\n");
    fflush(stdout);
    while (!stop) {
        struct timespec t;
        int n = epoll_wait(ep, evs, 256, SINK_STATS_MS), i;

        for (i = 0; i < n; i++) {
            struct sink_conn *conn = evs[i].data.ptr;

            if (conn == NULL) {
                accept_all(lfd);
            } else if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                conn_read(conn);
            } else {
                conn_flush(conn);
            }
        }
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((t.tv_sec - last.tv_sec) * 1000 +
                (t.tv_nsec - last.tv_nsec) / 1000000 >=
            SINK_STATS_MS) {
            write_stats();
            last = t;
        }
    }
    stats_dirty = 1;
    write_stats();
    if (pidfile != NULL)
        unlink(pidfile);
    return 0;
}
