/* mx: see mx.h. DNS answers are untrusted input: names are copied only
 * when they fit, the number of records used is bounded, and nothing but
 * MX, A and AAAA records of the answer section is read. */
#include "mx.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/time.h>

#include <ldns/ldns.h>

#include "../common/xalloc.h"

struct mx_resolver {
    ldns_resolver *res; /* owned */
};

int mx_parse_resolver(const char *spec, char *host, size_t hostlen,
                      unsigned *port_r)
{
    const char *h = spec, *port = NULL;
    size_t hlen;

    if (spec[0] == '[') {
        const char *end = strchr(spec, ']');
        if (end == NULL || (end[1] != '\0' && end[1] != ':'))
            return -1;
        h = spec + 1;
        hlen = (size_t)(end - h);
        if (end[1] == ':')
            port = end + 2;
    } else {
        const char *colon = strchr(spec, ':');
        hlen = colon ? (size_t)(colon - spec) : strlen(spec);
        if (colon != NULL && strchr(colon + 1, ':') != NULL)
            return -1; /* an IPv6 address with a port needs brackets */
        if (colon != NULL)
            port = colon + 1;
    }
    if (hlen == 0 || hlen >= hostlen || memchr(h, ' ', hlen) != NULL)
        return -1;
    *port_r = 53;
    if (port != NULL) {
        char *end;
        unsigned long p;
        if (port[0] < '0' || port[0] > '9' || strlen(port) > 5)
            return -1;
        p = strtoul(port, &end, 10);
        if (*end != '\0' || p < 1 || p > 65535)
            return -1;
        *port_r = (unsigned)p;
    }
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    return 0;
}

/* The name server address of host (an address, or a name looked up
 * once with the system resolver) as an ldns rdf. NULL if none. */
static ldns_rdf *mx_server_rdf(const char *host)
{
    struct addrinfo hints = {.ai_socktype = SOCK_DGRAM}, *res = NULL;
    char ip[INET6_ADDRSTRLEN];
    ldns_rdf *rdf = NULL;

    if (getaddrinfo(host, NULL, &hints, &res) != 0 || res == NULL)
        return NULL;
    if (getnameinfo(res->ai_addr, res->ai_addrlen, ip, sizeof(ip), NULL, 0,
                    NI_NUMERICHOST) == 0)
        rdf = ldns_rdf_new_frm_str(
            res->ai_family == AF_INET6 ? LDNS_RDF_TYPE_AAAA : LDNS_RDF_TYPE_A,
            ip);
    freeaddrinfo(res);
    return rdf;
}

struct mx_resolver *mx_resolver_new(const char *spec, unsigned timeout_ms,
                                    char *err, size_t errlen)
{
    struct timeval tv = {.tv_sec = (time_t)(timeout_ms / 1000),
                         .tv_usec = (suseconds_t)(timeout_ms % 1000) * 1000};
    struct mx_resolver *r;
    ldns_resolver *res = NULL;
    ldns_status st;

    if (spec[0] == '\0') {
        st = ldns_resolver_new_frm_file(&res, NULL);
        if (st != LDNS_STATUS_OK) {
            snprintf(err, errlen, "cannot read /etc/resolv.conf: %s",
                     ldns_get_errorstr_by_id(st));
            return NULL;
        }
    } else {
        char host[SG_MAX_DOMAIN + 1];
        unsigned port;
        ldns_rdf *ns;

        if (mx_parse_resolver(spec, host, sizeof(host), &port) < 0) {
            snprintf(err, errlen,
                     "dns_resolver %s: expected address or address:port", spec);
            return NULL;
        }
        ns = mx_server_rdf(host);
        res = ldns_resolver_new();
        if (ns == NULL || res == NULL ||
            ldns_resolver_push_nameserver(res, ns) != LDNS_STATUS_OK) {
            snprintf(err, errlen, "dns_resolver %s: no usable address", spec);
            ldns_rdf_deep_free(ns);
            if (res != NULL)
                ldns_resolver_deep_free(res);
            return NULL;
        }
        ldns_rdf_deep_free(ns);
        ldns_resolver_set_port(res, (uint16_t)port);
    }
    ldns_resolver_set_recursive(res, true);
    ldns_resolver_set_timeout(res, tv);
    ldns_resolver_set_retry(res, MX_TRIES);
    /* A truncated answer (many MX records) is asked again over TCP. */
    ldns_resolver_set_fallback(res, true);
    r = xcalloc(1, sizeof(*r));
    r->res = res;
    return r;
}

void mx_resolver_free(struct mx_resolver **rp)
{
    if (*rp == NULL)
        return;
    ldns_resolver_deep_free((*rp)->res);
    free(*rp);
    *rp = NULL;
}

static unsigned mx_random(void *arg)
{
    unsigned v = 0;

    (void)arg;
    /* Only an unseeded pool at boot fails; then the order of equal hosts
     * is the order of the answer, which is still a valid order. */
    if (getrandom(&v, sizeof(v), GRND_NONBLOCK) != (ssize_t)sizeof(v))
        v = 0;
    return v;
}

void mx_sort(struct mx_host *h, size_t n, unsigned (*rnd)(void *), void *arg)
{
    struct mx_host tmp;

    /* Insertion sort: at most MX_MAX_HOSTS entries. */
    for (size_t i = 1; i < n; i++) {
        size_t j = i;
        tmp = h[i];
        while (j > 0 && h[j - 1].pref > tmp.pref) {
            h[j] = h[j - 1];
            j--;
        }
        h[j] = tmp;
    }
    /* Fisher-Yates within each run of equal preference. */
    for (size_t start = 0; start < n;) {
        size_t end = start + 1;
        while (end < n && h[end].pref == h[start].pref)
            end++;
        for (size_t i = end - 1; i > start; i--) {
            size_t k = start + rnd(arg) % (i - start + 1);
            tmp = h[i];
            h[i] = h[k];
            h[k] = tmp;
        }
        start = end;
    }
}

enum mx_query_rc {
    MX_Q_OK, /* NOERROR (records may be none) */
    MX_Q_NXDOMAIN,
    MX_Q_TEMP, /* no answer, SERVFAIL, REFUSED, ... */
};

/* One query; *pkt_r owned by the caller on MX_Q_OK. */
static enum mx_query_rc mx_query(struct mx_resolver *r, const char *name,
                                 ldns_rr_type type, ldns_pkt **pkt_r, char *why,
                                 size_t whylen)
{
    char fqdn[SG_MAX_DOMAIN + 2];
    ldns_rdf *dn;
    ldns_pkt *p = NULL;
    ldns_status st;
    ldns_pkt_rcode rc;
    size_t n = strlen(name);

    /* Absolute, so that no search list applies. */
    if (n == 0 || n > SG_MAX_DOMAIN) {
        snprintf(why, whylen, "bad domain name");
        return MX_Q_NXDOMAIN;
    }
    snprintf(fqdn, sizeof(fqdn), "%s%s", name, name[n - 1] == '.' ? "" : ".");
    dn = ldns_dname_new_frm_str(fqdn);
    if (dn == NULL) {
        snprintf(why, whylen, "bad domain name");
        return MX_Q_NXDOMAIN;
    }
    st = ldns_resolver_query_status(&p, r->res, dn, type, LDNS_RR_CLASS_IN,
                                    LDNS_RD);
    ldns_rdf_deep_free(dn);
    if (st != LDNS_STATUS_OK || p == NULL) {
        snprintf(why, whylen, "DNS lookup of %s failed: %s", name,
                 ldns_get_errorstr_by_id(st));
        ldns_pkt_free(p);
        return MX_Q_TEMP;
    }
    rc = ldns_pkt_get_rcode(p);
    if (rc == LDNS_RCODE_NOERROR) {
        *pkt_r = p;
        return MX_Q_OK;
    }
    ldns_pkt_free(p);
    if (rc == LDNS_RCODE_NXDOMAIN) {
        snprintf(why, whylen, "domain %s does not exist", name);
        return MX_Q_NXDOMAIN;
    }
    snprintf(why, whylen, "DNS lookup of %s failed: rcode %d", name, (int)rc);
    return MX_Q_TEMP;
}

/* Adds one address to h (no more than MX_MAX_ADDRS). */
static void mx_add_addr(struct mx_host *h, int family, const void *bin,
                        unsigned port)
{
    struct sockaddr_storage *ss = &h->addr[h->naddr];

    if (h->naddr >= MX_MAX_ADDRS)
        return;
    memset(ss, 0, sizeof(*ss));
    if (family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)ss;
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
        memcpy(&sin->sin_addr, bin, 4);
        h->addrlen[h->naddr] = sizeof(*sin);
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        memcpy(&sin6->sin6_addr, bin, 16);
        h->addrlen[h->naddr] = sizeof(*sin6);
    }
    h->naddr++;
}

/* A and AAAA of h->name. 0 ok (maybe no address), -1 temporary failure
 * (reason in why), -2 the name does not exist. */
static int mx_addrs(struct mx_resolver *r, struct mx_host *h, unsigned port,
                    char *why, size_t whylen)
{
    static const ldns_rr_type types[] = {LDNS_RR_TYPE_A, LDNS_RR_TYPE_AAAA};
    int temp = 0, nx = 0;

    for (size_t t = 0; t < 2; t++) {
        ldns_pkt *p = NULL;
        ldns_rr_list *l;
        enum mx_query_rc rc = mx_query(r, h->name, types[t], &p, why, whylen);

        if (rc != MX_Q_OK) {
            temp += rc == MX_Q_TEMP;
            nx += rc == MX_Q_NXDOMAIN;
            continue;
        }
        l = ldns_pkt_rr_list_by_type(p, types[t], LDNS_SECTION_ANSWER);
        for (size_t i = 0; l != NULL && i < ldns_rr_list_rr_count(l); i++) {
            const ldns_rdf *a = ldns_rr_rdf(ldns_rr_list_rr(l, i), 0);
            size_t want = types[t] == LDNS_RR_TYPE_A ? 4 : 16;
            if (a != NULL && ldns_rdf_size(a) == want)
                mx_add_addr(h, want == 4 ? AF_INET : AF_INET6, ldns_rdf_data(a),
                            port);
        }
        ldns_rr_list_deep_free(l);
        ldns_pkt_free(p);
    }
    if (h->naddr > 0)
        return 0;
    if (temp > 0)
        return -1;
    return nx == 2 ? -2 : 0;
}

/* A domain literal (RFC 5321 4.1.3): one host, its address. 1, or 0 for
 * a malformed literal. */
static int mx_literal(const char *domain, unsigned port, struct mx_list *out)
{
    char buf[INET6_ADDRSTRLEN + 8];
    size_t n = strlen(domain);
    const char *ip = buf;
    unsigned char bin[16];
    struct mx_host *h = &out->host[0];

    if (n < 3 || n - 2 >= sizeof(buf) || domain[n - 1] != ']')
        return 0;
    memcpy(buf, domain + 1, n - 2);
    buf[n - 2] = '\0';
    memset(h, 0, sizeof(*h));
    snprintf(h->name, sizeof(h->name), "%s", domain);
    if (strncasecmp(buf, "IPv6:", 5) == 0) {
        ip = buf + 5;
        if (inet_pton(AF_INET6, ip, bin) != 1)
            return 0;
        mx_add_addr(h, AF_INET6, bin, port);
    } else {
        if (inet_pton(AF_INET, ip, bin) != 1)
            return 0;
        mx_add_addr(h, AF_INET, bin, port);
    }
    out->n = 1;
    return 1;
}

/* Reads the MX records of the answer into out (names and preferences).
 * Returns 1 for a null MX, 0 otherwise. */
static int mx_records(ldns_pkt *p, struct mx_list *out)
{
    ldns_rr_list *l =
        ldns_pkt_rr_list_by_type(p, LDNS_RR_TYPE_MX, LDNS_SECTION_ANSWER);
    size_t count = l ? ldns_rr_list_rr_count(l) : 0;
    int null_mx = 0;

    out->n = 0;
    for (size_t i = 0; i < count && out->n < MX_MAX_HOSTS; i++) {
        const ldns_rr *rr = ldns_rr_list_rr(l, i);
        const ldns_rdf *pref = ldns_rr_rdf(rr, 0), *target = ldns_rr_rdf(rr, 1);
        struct mx_host *h = &out->host[out->n];
        char *name;
        size_t len;

        if (pref == NULL || target == NULL)
            continue;
        name = ldns_rdf2str(target);
        if (name == NULL)
            continue;
        len = strlen(name);
        if (len > 0 && name[len - 1] == '.')
            name[--len] = '\0';
        /* RFC 7505 3: the target "." means no mail at all. */
        if (len == 0) {
            null_mx = 1;
        } else if (len <= SG_MAX_DOMAIN) {
            memset(h, 0, sizeof(*h));
            memcpy(h->name, name, len + 1);
            h->pref = ldns_rdf2native_int16(pref);
            out->n++;
        }
        free(name);
    }
    ldns_rr_list_deep_free(l);
    /* A null MX alongside real ones is a broken zone: use the others. */
    return null_mx && out->n == 0;
}

/* Resolves the addresses of every host in out, dropping hosts without
 * any. 1 some left; 0 none, for good; -1 none, temporarily. */
static int mx_resolve_hosts(struct mx_resolver *r, struct mx_list *out,
                            unsigned port, char *why, size_t whylen)
{
    size_t keep = 0;
    int temp = 0;
    char last[256] = "";

    for (size_t i = 0; i < out->n; i++) {
        int rc = mx_addrs(r, &out->host[i], port, last, sizeof(last));
        if (rc == -1)
            temp++;
        if (out->host[i].naddr > 0) {
            if (keep != i)
                out->host[keep] = out->host[i];
            keep++;
        }
    }
    out->n = keep;
    if (keep > 0)
        return 1;
    if (temp > 0) {
        snprintf(why, whylen, "%s", last);
        return -1;
    }
    return 0;
}

int mx_lookup(struct mx_resolver *r, const char *domain, unsigned port,
              struct mx_list *out, char *dsn, size_t dsnlen, char *why,
              size_t whylen)
{
    ldns_pkt *p = NULL;
    enum mx_query_rc q;
    int implicit, rc;

    out->n = 0;
    if (domain[0] == '[') {
        if (mx_literal(domain, port, out))
            return 1;
        snprintf(dsn, dsnlen, "5.1.2");
        snprintf(why, whylen, "bad address literal %s", domain);
        return 0;
    }
    q = mx_query(r, domain, LDNS_RR_TYPE_MX, &p, why, whylen);
    if (q != MX_Q_OK) {
        snprintf(dsn, dsnlen, q == MX_Q_TEMP ? "4.4.3" : "5.1.2");
        return q == MX_Q_TEMP ? -1 : 0;
    }
    if (mx_records(p, out)) {
        ldns_pkt_free(p);
        snprintf(dsn, dsnlen, "5.1.10");
        snprintf(why, whylen, "domain %s accepts no mail (null MX)", domain);
        return 0;
    }
    ldns_pkt_free(p);
    implicit = out->n == 0;
    if (implicit) {
        /* RFC 5321 5.1: no MX, so the domain is its own host. */
        memset(&out->host[0], 0, sizeof(out->host[0]));
        snprintf(out->host[0].name, sizeof(out->host[0].name), "%s", domain);
        out->n = 1;
    }
    mx_sort(out->host, out->n, mx_random, NULL);
    rc = mx_resolve_hosts(r, out, port, why, whylen);
    if (rc == 1)
        return 1;
    if (rc < 0) {
        snprintf(dsn, dsnlen, "4.4.3");
        return -1;
    }
    snprintf(dsn, dsnlen, implicit ? "5.1.2" : "5.4.4");
    snprintf(why, whylen,
             implicit ? "domain %s has no MX and no address"
                      : "no MX host of %s has an address",
             domain);
    return 0;
}
