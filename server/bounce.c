/* bounce: see bounce.h. The report is written into one growing buffer;
 * every piece of text that did not come from us is cleaned first. */
#include "bounce.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/limits.h"
#include "../common/log.h"
#include "../common/xalloc.h"

/* A cleaned diagnostic: BOUNCE_MAX_DIAG octets, "..." and the NUL. */
#define BOUNCE_DIAG_BUF (BOUNCE_MAX_DIAG + 4)

struct bounce_buf {
    char *p; /* owned */
    size_t len, cap;
};

static void bounce_put(struct bounce_buf *b, const char *s, size_t n)
{
    if (b->cap - b->len < n + 1) {
        while (b->cap - b->len < n + 1)
            b->cap = b->cap ? b->cap * 2 : 4096;
        b->p = xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void bounce_printf(struct bounce_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void bounce_printf(struct bounce_buf *b, const char *fmt, ...)
{
    char line[2048];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    /* Every caller's pieces are bounded well below the buffer. */
    SG_ASSERT(n >= 0 && (size_t)n < sizeof(line));
    bounce_put(b, line, (size_t)n);
}

const char *bounce_domain(const char *sender)
{
    const char *at;

    if (sender == NULL || sender[0] == '\0')
        return NULL;
    at = strrchr(sender, '@');
    if (at == NULL || at[1] == '\0')
        return NULL;
    return at + 1;
}

/* RFC 5322 3.3 date-time in UTC, independent of the locale. */
static void bounce_date(long long t, char *out, size_t len)
{
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed",
                                       "Thu", "Fri", "Sat"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr",
                                         "May", "Jun", "Jul", "Aug",
                                         "Sep", "Oct", "Nov", "Dec"};
    time_t tt = (time_t)t;
    struct tm tm;

    if (gmtime_r(&tt, &tm) == NULL) {
        snprintf(out, len, "Thu, 01 Jan 1970 00:00:00 +0000");
        return;
    }
    snprintf(out, len, "%s, %02d %s %04d %02d:%02d:%02d +0000",
             days[tm.tm_wday % 7], tm.tm_mday, months[tm.tm_mon % 12],
             tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* Copies untrusted text for a header-like line: printable ASCII only
 * (others become '?'), at most BOUNCE_MAX_DIAG octets, "..." when cut. */
static void bounce_clean(const char *in, char *out)
{
    size_t i = 0;

    for (; i < BOUNCE_MAX_DIAG && in[i] != '\0'; i++) {
        unsigned char c = (unsigned char)in[i];
        out[i] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    if (in[i] != '\0') {
        memcpy(out + i, "...", 3);
        i += 3;
    }
    out[i] = '\0';
}

static int bounce_ascii(const char *s)
{
    for (; *s != '\0'; s++) {
        if ((unsigned char)*s >= 0x80)
            return 0;
    }
    return 1;
}

static int bounce_ascii_n(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)s[i] >= 0x80)
            return 0;
    }
    return 1;
}

/* The header section of msg, cut at a line end after at most
 * BOUNCE_MAX_HEADERS octets; *len_r its length including the last CRLF. */
static const char *bounce_headers(const char *msg, size_t len, size_t *len_r)
{
    size_t end = 0;

    while (end < len) {
        const char *nl = memchr(msg + end, '\n', len - end);
        size_t next = nl ? (size_t)(nl - msg) + 1 : len;
        size_t linelen = next - end;

        /* The empty line ends the header section (RFC 5322 2.1). */
        if ((linelen == 2 && msg[end] == '\r') ||
            (linelen == 1 && msg[end] == '\n'))
            break;
        if (next > BOUNCE_MAX_HEADERS)
            break;
        end = next;
    }
    *len_r = end;
    return msg;
}

/* A boundary (RFC 2046 5.1.1) that does not occur in the returned
 * headers: the notification's queue id and a counter. */
static void bounce_boundary(const struct bounce_info *b, const char *hdr,
                            size_t hlen, char *out, size_t len)
{
    for (unsigned n = 0;; n++) {
        snprintf(out, len, "=_subgate_%s_%u", b->dsn_qid, n);
        if (memmem(hdr, hlen, out, strlen(out)) == NULL)
            return;
    }
}

static void bounce_head(struct bounce_buf *o, const struct bounce_info *b,
                        const char *domain, const char *boundary, int global)
{
    char date[64];

    bounce_date(b->now, date, sizeof(date));
    bounce_printf(o, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n",
                  domain);
    bounce_printf(o, "To: <%s>\r\n", b->sender);
    bounce_printf(o, "Subject: %s\r\n",
                  b->action == BOUNCE_FAILED
                      ? "Undelivered Mail Returned to Sender"
                      : "Delayed Mail (still being retried)");
    bounce_printf(o, "Date: %s\r\n", date);
    bounce_printf(o, "Message-ID: <%s.dsn@%s>\r\n", b->dsn_qid, b->hostname);
    /* RFC 3834 5: automatic responses say so, and are never answered. */
    bounce_printf(o, "Auto-Submitted: auto-replied\r\n");
    bounce_printf(o, "MIME-Version: 1.0\r\n");
    bounce_printf(o,
                  "Content-Type: multipart/report; report-type=%s;\r\n"
                  "\tboundary=\"%s\"\r\n",
                  global ? "global-delivery-status" : "delivery-status",
                  boundary);
    bounce_printf(o, "\r\nThis is a MIME-encapsulated message.\r\n\r\n");
}

/* The part for people (RFC 3464 2.1: the first part). */
static void bounce_text(struct bounce_buf *o, const struct bounce_info *b,
                        const char *boundary, int utf8)
{
    char until[64], diag[BOUNCE_DIAG_BUF];

    bounce_printf(o, "--%s\r\n", boundary);
    bounce_printf(o, "Content-Description: Notification\r\n");
    bounce_printf(o, "Content-Type: text/plain; charset=%s\r\n",
                  utf8 ? "utf-8" : "us-ascii");
    if (utf8)
        bounce_printf(o, "Content-Transfer-Encoding: 8bit\r\n");
    bounce_printf(o, "\r\nThis is the mail system at host %s.\r\n\r\n",
                  b->hostname);
    if (b->action == BOUNCE_FAILED) {
        bounce_printf(o,
                      "Your message with queue id %s could not be "
                      "delivered to one or\r\nmore recipients. It has "
                      "been given up for them; details follow.\r\n",
                      b->qid);
    } else {
        bounce_date(b->until, until, sizeof(until));
        bounce_printf(o,
                      "Your message with queue id %s has not yet been "
                      "delivered to the\r\nrecipients below. The mail "
                      "system keeps trying until\r\n%s;\r\nyou need not "
                      "send it again.\r\n",
                      b->qid, until);
    }
    bounce_printf(o, "\r\n");
    for (size_t i = 0; i < b->nrcpt; i++) {
        const struct bounce_rcpt *r = &b->rcpt[i];
        bounce_clean(r->diag ? r->diag : "", diag);
        bounce_printf(o, "<%s>: %s%s%s%s\r\n", r->addr,
                      r->remote_mta ? "host " : "",
                      r->remote_mta ? r->remote_mta : "",
                      r->remote_mta ? (r->diag_smtp ? " said: " : ": ") : "",
                      diag[0] ? diag : r->status);
    }
    bounce_printf(o, "\r\n");
}

/* The machine-readable part (RFC 3464 2.2, 2.3). */
static void bounce_status(struct bounce_buf *o, const struct bounce_info *b,
                          const char *boundary, int global)
{
    char date[64], diag[BOUNCE_DIAG_BUF];

    bounce_printf(o, "--%s\r\n", boundary);
    bounce_printf(o, "Content-Description: Delivery report\r\n");
    bounce_printf(o, "Content-Type: message/%s\r\n\r\n",
                  global ? "global-delivery-status" : "delivery-status");
    bounce_printf(o, "Reporting-MTA: dns; %s\r\n", b->hostname);
    bounce_printf(o, "X-Subgate-Queue-ID: %s\r\n", b->qid);
    bounce_date(b->arrival, date, sizeof(date));
    bounce_printf(o, "Arrival-Date: %s\r\n", date);
    for (size_t i = 0; i < b->nrcpt; i++) {
        const struct bounce_rcpt *r = &b->rcpt[i];

        bounce_printf(o, "\r\nFinal-Recipient: %s; %s\r\n",
                      bounce_ascii(r->addr) ? "rfc822" : "utf-8", r->addr);
        bounce_printf(o, "Action: %s\r\n",
                      b->action == BOUNCE_FAILED ? "failed" : "delayed");
        bounce_printf(o, "Status: %s\r\n", r->status);
        if (r->remote_mta != NULL && r->remote_mta[0] != '\0')
            bounce_printf(o, "Remote-MTA: dns; %s\r\n", r->remote_mta);
        if (r->diag != NULL && r->diag[0] != '\0') {
            bounce_clean(r->diag, diag);
            bounce_printf(o, "Diagnostic-Code: %s; %s\r\n",
                          r->diag_smtp ? "smtp" : "x-subgate", diag);
        }
        bounce_date(b->now, date, sizeof(date));
        bounce_printf(o, "Last-Attempt-Date: %s\r\n", date);
        if (b->action == BOUNCE_DELAYED) {
            bounce_date(b->until, date, sizeof(date));
            bounce_printf(o, "Will-Retry-Until: %s\r\n", date);
        }
    }
    bounce_printf(o, "\r\n");
}

char *bounce_build(const struct bounce_info *b, size_t *len_r)
{
    const char *domain = bounce_domain(b->sender), *hdr;
    struct bounce_buf o = {0};
    char boundary[64];
    size_t hlen;
    int global, utf8;

    if (domain == NULL || b->nrcpt == 0)
        return NULL;
    hdr = bounce_headers(b->msg, b->msglen, &hlen);
    global = !bounce_ascii(b->sender);
    for (size_t i = 0; i < b->nrcpt; i++)
        global = global || !bounce_ascii(b->rcpt[i].addr);
    utf8 = global;
    bounce_boundary(b, hdr, hlen, boundary, sizeof(boundary));
    bounce_head(&o, b, domain, boundary, global);
    bounce_text(&o, b, boundary, utf8);
    bounce_status(&o, b, boundary, global);
    bounce_printf(&o, "--%s\r\n", boundary);
    bounce_printf(&o, "Content-Description: Undelivered message headers\r\n");
    /* RFC 6533 3.4: header fields with UTF-8 are message/global-headers. */
    bounce_printf(&o, "Content-Type: %s\r\n\r\n",
                  bounce_ascii_n(hdr, hlen) ? "text/rfc822-headers"
                                            : "message/global-headers");
    bounce_put(&o, hdr, hlen);
    if (hlen > 0 && hdr[hlen - 1] != '\n')
        bounce_printf(&o, "\r\n");
    bounce_printf(&o, "\r\n--%s--\r\n", boundary);
    *len_r = o.len;
    return o.p;
}
