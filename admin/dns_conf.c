/* dns_conf: see dns_conf.h. */
#include "dns_conf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

/* Shortest TSIG secret accepted, in octets: RFC 8945 6 asks for keys no
 * shorter than the HMAC output is long; 16 refuses only typing mistakes. */
#define DNSCONF_SECRET_MIN_OCTETS 16

/* Copies column i (NULL as "") into out. */
static void dnsconf_col(sqlite3_stmt *st, int i, char *out, size_t outlen)
{
    const unsigned char *v = sqlite3_column_text(st, i);

    snprintf(out, outlen, "%s", v != NULL ? (const char *)v : "");
}

int dnsconf_get(struct admin_ctx *ctx, const char *domain, struct dnsconf *c)
{
    sqlite3_stmt *st;
    int rc;

    memset(c, 0, sizeof *c);
    if (admin_prepare(ctx,
                      "SELECT domain, server, port, zone, tsig_name,"
                      " tsig_alg, secret_file, delegate, check_servers,"
                      " slots FROM dns_setting WHERE domain = ?1",
                      &st) != 0)
        return -1;
    sqlite3_bind_text(st, 1, domain, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        dnsconf_col(st, 0, c->domain, sizeof c->domain);
        dnsconf_col(st, 1, c->server, sizeof c->server);
        c->port = (unsigned)sqlite3_column_int(st, 2);
        dnsconf_col(st, 3, c->zone, sizeof c->zone);
        dnsconf_col(st, 4, c->tsig_name, sizeof c->tsig_name);
        dnsconf_col(st, 5, c->tsig_alg, sizeof c->tsig_alg);
        dnsconf_col(st, 6, c->secret_file, sizeof c->secret_file);
        dnsconf_col(st, 7, c->delegate, sizeof c->delegate);
        dnsconf_col(st, 8, c->check, sizeof c->check);
        c->slots = (unsigned)sqlite3_column_int(st, 9);
    } else if (rc != SQLITE_DONE) {
        admin_db_fail(ctx, "reading DNS settings");
    }
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}

/* Binds s as text, or NULL when empty. */
static void dnsconf_bind_opt(sqlite3_stmt *st, int i, const char *s)
{
    if (*s == '\0')
        sqlite3_bind_null(st, i);
    else
        sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
}

int dnsconf_put(struct admin_ctx *ctx, const struct dnsconf *c)
{
    sqlite3_stmt *st;

    if (admin_prepare(ctx,
                      "INSERT OR REPLACE INTO dns_setting(domain, server,"
                      " port, zone, tsig_name, tsig_alg, secret_file,"
                      " delegate, check_servers, slots, updated)"
                      " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10,"
                      " ?11)",
                      &st) != 0)
        return ADMIN_FAIL;
    sqlite3_bind_text(st, 1, c->domain, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, c->server, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, (int)c->port);
    sqlite3_bind_text(st, 4, c->zone, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, c->tsig_name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, c->tsig_alg, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 7, c->secret_file, -1, SQLITE_STATIC);
    dnsconf_bind_opt(st, 8, c->delegate);
    dnsconf_bind_opt(st, 9, c->check);
    sqlite3_bind_int(st, 10, (int)c->slots);
    sqlite3_bind_int64(st, 11, (long long)time(NULL));
    return admin_step_done(ctx, st, "saving DNS settings");
}

int dnsconf_label(const char *domain, char *out)
{
    size_t n = strlen(domain);

    if (n == 0 || n > DNSCONF_LABEL_MAX)
        return -1;
    for (size_t i = 0; i <= n; i++)
        out[i] = domain[i] == '.' ? '-' : domain[i];
    return 0;
}

int dnsconf_owner(const struct dnsconf *c, const char *domain, const char *sel,
                  char *out, size_t outlen)
{
    char label[DNSCONF_LABEL_MAX + 1];
    int n;

    if (c == NULL || c->delegate[0] == '\0')
        return dnsconf_tenant_name(domain, sel, out, outlen);
    if (dnsconf_label(domain, label) != 0)
        return -1;
    n = snprintf(out, outlen, "%s.%s.%s", sel, label, c->delegate);
    return n < 0 || (size_t)n >= outlen || n > DNSCONF_NAME_MAX ? -1 : 0;
}

int dnsconf_tenant_name(const char *domain, const char *sel, char *out,
                        size_t outlen)
{
    int n = snprintf(out, outlen, "%s._domainkey.%s", sel, domain);

    return n < 0 || (size_t)n >= outlen || n > DNSCONF_NAME_MAX ? -1 : 0;
}

int dnsconf_in_zone(const char *name, const char *zone)
{
    size_t n = strlen(name), z = strlen(zone);

    if (z == 0)
        return 0;
    if (n == z)
        return strcasecmp(name, zone) == 0;
    return n > z && name[n - z - 1] == '.' &&
           strcasecmp(name + n - z, zone) == 0;
}

/* 0 if the file's mode lets neither group nor others read or write it. */
static int dnsconf_secret_mode(int fd, const char *path, char *err,
                               size_t errlen)
{
    struct stat sb;

    if (fstat(fd, &sb) != 0) {
        int e = errno;
        snprintf(err, errlen, "%s: %s", path, strerror(e));
        return -1;
    }
    if (!S_ISREG(sb.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", path);
        return -1;
    }
    if (sb.st_mode & 077) {
        snprintf(err, errlen,
                 "%s: mode %03o lets others read the TSIG secret; "
                 "chmod 600 it",
                 path, (unsigned)(sb.st_mode & 0777));
        return -1;
    }
    return 0;
}

/* Reads at most outlen - 1 octets of fd into out, NUL-terminated. Returns
 * the length, or -1 when the file is larger or cannot be read. */
static ssize_t dnsconf_read_all(int fd, char *out, size_t outlen)
{
    size_t len = 0;
    ssize_t r;

    for (;;) {
        r = read(fd, out + len, outlen - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0)
            break;
        len += (size_t)r;
        if (len == outlen)
            return -1;
    }
    out[len] = '\0';
    return (ssize_t)len;
}

int dnsconf_secret_read(const char *path, char *out, size_t outlen, char *err,
                        size_t errlen)
{
    unsigned char raw[DNSCONF_SECRET_MAX];
    ssize_t len;
    int fd, n;

    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "TSIG secret %s: %s", path, strerror(e));
        return -1;
    }
    if (dnsconf_secret_mode(fd, path, err, errlen) != 0) {
        close(fd);
        return -1;
    }
    len = dnsconf_read_all(fd, out, outlen);
    close(fd);
    if (len < 0) {
        explicit_bzero(out, outlen);
        snprintf(err, errlen,
                 "TSIG secret %s: unreadable or longer than %zu "
                 "octets",
                 path, outlen - 1);
        return -1;
    }
    while (len > 0 && (out[len - 1] == '\n' || out[len - 1] == '\r' ||
                       out[len - 1] == ' '))
        out[--len] = '\0';
    /* One base64 token: the form ldns and the name servers take. */
    n = len > 0 && (size_t)len % 4 == 0 && (size_t)len / 4 * 3 <= sizeof raw
            ? EVP_DecodeBlock(raw, (const unsigned char *)out, (int)len)
            : -1;
    OPENSSL_cleanse(raw, sizeof raw);
    if (n < DNSCONF_SECRET_MIN_OCTETS ||
        strspn(out, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                    "0123456789+/=") != (size_t)len) {
        explicit_bzero(out, outlen);
        snprintf(err, errlen,
                 "TSIG secret %s: want one line of base64 (at least %d "
                 "octets of key)",
                 path, DNSCONF_SECRET_MIN_OCTETS);
        return -1;
    }
    return 0;
}

int dnsconf_hostport(const char *in, unsigned def_port, char *host,
                     unsigned *port_r)
{
    const char *colon, *end;
    size_t hlen;
    char *pend;
    unsigned long port = def_port;

    if (in[0] == '[') {
        end = strchr(in, ']');
        if (end == NULL)
            return -1;
        hlen = (size_t)(end - in - 1);
        in++;
        colon = end[1] == ':' ? end + 1 : NULL;
        if (colon == NULL && end[1] != '\0')
            return -1;
    } else {
        colon = strchr(in, ':');
        if (colon != NULL && strchr(colon + 1, ':') != NULL)
            return -1; /* bare IPv6: needs brackets to take a port */
        hlen = colon != NULL ? (size_t)(colon - in) : strlen(in);
    }
    if (hlen == 0 || hlen > DNSCONF_NAME_MAX)
        return -1;
    if (colon != NULL) {
        if (colon[1] < '0' || colon[1] > '9')
            return -1;
        errno = 0;
        port = strtoul(colon + 1, &pend, 10);
        if (errno != 0 || *pend != '\0' || port == 0 || port > 65535)
            return -1;
    }
    memcpy(host, in, hlen);
    host[hlen] = '\0';
    *port_r = (unsigned)port;
    return 0;
}
