/* dns_query: see dns_query.h. */
#include "dns_query.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <ldns/ldns.h>

int dnsq_server_addr(struct dnsq_server *s, const char *addr, unsigned port,
                     int recurse)
{
    unsigned char bin[16];
    int v6 = strchr(addr, ':') != NULL;

    if (strlen(addr) >= sizeof s->addr ||
        inet_pton(v6 ? AF_INET6 : AF_INET, addr, bin) != 1)
        return -1;
    memset(s, 0, sizeof *s);
    snprintf(s->addr, sizeof s->addr, "%s", addr);
    s->port = port;
    s->recurse = recurse;
    snprintf(s->label, sizeof s->label, v6 ? "[%s]:%u" : "%s:%u", addr, port);
    return 0;
}

int dnsq_server_resolver(struct dnsq_server *s, const char *cfg_value,
                         char *err, size_t errlen)
{
    char host[DNSCONF_NAME_MAX + 1];
    unsigned port;

    if (cfg_value[0] == '\0') {
        memset(s, 0, sizeof *s);
        s->recurse = 1;
        snprintf(s->label, sizeof s->label, "resolv.conf");
        return 0;
    }
    if (dnsconf_hostport(cfg_value, 53, host, &port) != 0 ||
        dnsq_server_addr(s, host, port, 1) != 0) {
        snprintf(err, errlen, "dns_resolver %s: want ADDRESS[:PORT]",
                 cfg_value);
        return -1;
    }
    return 0;
}

int dnsq_server_host(const char *host, unsigned port, struct dnsq_server *srv,
                     size_t max, size_t *n_r, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_socktype = SOCK_DGRAM}, *res, *ai;
    char addr[INET6_ADDRSTRLEN];
    int rc;

    rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve %s: %s", host, gai_strerror(rc));
        return -1;
    }
    for (ai = res; ai != NULL && *n_r < max; ai = ai->ai_next) {
        const void *a =
            ai->ai_family == AF_INET
                ? (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr
                : (const void *)&((struct sockaddr_in6 *)ai->ai_addr)
                      ->sin6_addr;
        if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
            inet_ntop(ai->ai_family, a, addr, sizeof addr) == NULL)
            continue;
        int dup = 0;
        for (size_t i = 0; i < *n_r; i++)
            dup |= strcmp(srv[i].addr, addr) == 0 && srv[i].port == port;
        if (!dup && dnsq_server_addr(&srv[*n_r], addr, port, 0) == 0)
            (*n_r)++;
    }
    freeaddrinfo(res);
    return 0;
}

/* A resolver for s with the timeout, one try, no search list. */
static ldns_resolver *dnsq_resolver(const struct dnsq_server *s,
                                    unsigned timeout_ms, char *err,
                                    size_t errlen)
{
    struct timeval tv = {.tv_sec = timeout_ms / 1000,
                         .tv_usec = (timeout_ms % 1000) * 1000};
    ldns_resolver *r = NULL;
    ldns_status st;

    if (s->addr[0] == '\0') {
        st = ldns_resolver_new_frm_file(&r, NULL);
        if (st != LDNS_STATUS_OK) {
            snprintf(err, errlen, "/etc/resolv.conf: %s",
                     ldns_get_errorstr_by_id(st));
            return NULL;
        }
    } else {
        ldns_rdf *ns = ldns_rdf_new_frm_str(
            strchr(s->addr, ':') != NULL ? LDNS_RDF_TYPE_AAAA : LDNS_RDF_TYPE_A,
            s->addr);
        r = ldns_resolver_new();
        if (r == NULL || ns == NULL ||
            ldns_resolver_push_nameserver(r, ns) != LDNS_STATUS_OK) {
            ldns_rdf_deep_free(ns);
            ldns_resolver_deep_free(r);
            snprintf(err, errlen, "%s: cannot set up a query", s->label);
            return NULL;
        }
        ldns_rdf_deep_free(ns);
        ldns_resolver_set_port(r, (uint16_t)s->port);
    }
    ldns_resolver_set_recursive(r, s->recurse != 0);
    ldns_resolver_set_timeout(r, tv);
    ldns_resolver_set_retry(r, 1);
    ldns_resolver_set_retrans(r, 0);
    ldns_resolver_set_random(r, false);
    ldns_resolver_set_defnames(r, false);
    ldns_resolver_set_dnsrch(r, false);
    ldns_resolver_set_fallback(r, true);
    return r;
}

/* The ldns type of t. */
static ldns_rr_type dnsq_rr_type(enum dnsq_type t)
{
    switch (t) {
    case DNSQ_TXT:
        return LDNS_RR_TYPE_TXT;
    case DNSQ_CNAME:
        return LDNS_RR_TYPE_CNAME;
    case DNSQ_NS:
        return LDNS_RR_TYPE_NS;
    case DNSQ_A:
        return LDNS_RR_TYPE_A;
    case DNSQ_AAAA:
        return LDNS_RR_TYPE_AAAA;
    }
    return LDNS_RR_TYPE_TXT;
}

/* The character-strings of a TXT record joined (RFC 6376 3.6.2.2),
 * bounded by DNSQ_VALUE_MAX. */
static void dnsq_txt_join(const ldns_rr *rr, char *out)
{
    size_t len = 0;

    for (size_t i = 0; i < ldns_rr_rd_count(rr); i++) {
        const ldns_rdf *f = ldns_rr_rdf(rr, i);
        const uint8_t *d = ldns_rdf_data(f);
        size_t n = ldns_rdf_size(f) > 0 ? d[0] : 0;
        if (n + 1 > ldns_rdf_size(f))
            n = ldns_rdf_size(f) - 1;
        if (len + n >= DNSQ_VALUE_MAX)
            n = DNSQ_VALUE_MAX - 1 - len;
        memcpy(out + len, d + 1, n);
        len += n;
    }
    out[len] = '\0';
}

/* The presentation form of a name or address rdf: lower-case, no
 * trailing dot. */
static void dnsq_rdf_text(const ldns_rdf *f, char *out)
{
    char *s = ldns_rdf2str(f);
    size_t n;

    snprintf(out, DNSQ_VALUE_MAX, "%s", s != NULL ? s : "");
    free(s);
    n = strlen(out);
    if (n > 1 && out[n - 1] == '.')
        out[n - 1] = '\0';
    for (char *p = out; *p != '\0'; p++)
        *p = (char)tolower((unsigned char)*p);
}

/* Keeps the answer records owned by qname of the asked type. */
static void dnsq_collect(const ldns_pkt *p, const ldns_rdf *qname,
                         ldns_rr_type t, struct dnsq_answer *a)
{
    const ldns_rr_list *ans = ldns_pkt_answer(p);

    a->n = 0;
    for (size_t i = 0; ans != NULL && i < ldns_rr_list_rr_count(ans); i++) {
        const ldns_rr *rr = ldns_rr_list_rr(ans, i);
        if (a->n >= DNSQ_MAX_RR || ldns_rr_get_type(rr) != t ||
            ldns_rr_rd_count(rr) < 1 ||
            ldns_dname_compare(ldns_rr_owner(rr), qname) != 0)
            continue;
        if (t == LDNS_RR_TYPE_TXT)
            dnsq_txt_join(rr, a->rr[a->n]);
        else
            dnsq_rdf_text(ldns_rr_rdf(rr, 0), a->rr[a->n]);
        a->n++;
    }
}

/* Judges a reply: 1, 0 or -1 as dnsq_lookup. */
static int dnsq_judge(const struct dnsq_server *s, const ldns_pkt *p,
                      const ldns_rdf *qname, ldns_rr_type t,
                      struct dnsq_answer *a, char *err, size_t errlen)
{
    ldns_pkt_rcode rc = ldns_pkt_get_rcode(p);

    if (rc != LDNS_RCODE_NOERROR && rc != LDNS_RCODE_NXDOMAIN) {
        char *name = ldns_pkt_rcode2str(rc);
        snprintf(err, errlen, "%s answered %s", s->label,
                 name != NULL ? name : "an error");
        free(name);
        return -1;
    }
    if (!s->recurse && !ldns_pkt_aa(p)) {
        snprintf(err, errlen, "%s is not authoritative for the name", s->label);
        return -1;
    }
    if (rc == LDNS_RCODE_NXDOMAIN)
        return 0;
    dnsq_collect(p, qname, t, a);
    return a->n > 0;
}

int dnsq_lookup(const struct dnsq_server *s, unsigned timeout_ms,
                const char *name, enum dnsq_type type, struct dnsq_answer *a,
                char *err, size_t errlen)
{
    char fqdn[DNSCONF_NAME_MAX + 2];
    ldns_rr_type t = dnsq_rr_type(type);
    ldns_resolver *r;
    ldns_rdf *qname;
    ldns_pkt *p = NULL;
    ldns_status st;
    int ret;

    a->n = 0;
    snprintf(fqdn, sizeof fqdn, "%s.", name);
    qname = ldns_dname_new_frm_str(fqdn);
    if (qname == NULL) {
        snprintf(err, errlen, "%s: not a domain name", name);
        return -1;
    }
    r = dnsq_resolver(s, timeout_ms, err, errlen);
    if (r == NULL) {
        ldns_rdf_deep_free(qname);
        return -1;
    }
    st = ldns_resolver_send(&p, r, qname, t, LDNS_RR_CLASS_IN,
                            s->recurse ? LDNS_RD : 0);
    if (st != LDNS_STATUS_OK || p == NULL) {
        snprintf(err, errlen, "no answer from %s: %s", s->label,
                 ldns_get_errorstr_by_id(st));
        ret = -1;
    } else {
        ret = dnsq_judge(s, p, qname, t, a, err, errlen);
    }
    ldns_pkt_free(p);
    ldns_rdf_deep_free(qname);
    ldns_resolver_deep_free(r);
    return ret;
}
