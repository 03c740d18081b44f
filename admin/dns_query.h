/* dns_query: plain DNS questions through ldns for `subgate dns check`:
 * one server at a time, one try within a timeout, TCP when an answer is
 * truncated. Answers are bounded (DNSQ_MAX_RR records of at most
 * DNSQ_VALUE_MAX octets) whatever the server sends. Single-threaded. */
#ifndef SG_ADMIN_DNS_QUERY_H
#define SG_ADMIN_DNS_QUERY_H

#include <stddef.h>

#include "dns_conf.h"

/* Records of one RRset kept from an answer; more are ignored. */
#define DNSQ_MAX_RR 16
/* A TXT record's joined strings: a DKIM record is well under 2 KiB. */
#define DNSQ_VALUE_MAX 2048
/* Servers of one zone that are checked. */
#define DNSQ_MAX_SERVERS 16
/* "[IPv6]:port" and the NUL. */
#define DNSQ_LABEL_MAX 64

enum dnsq_type {
    DNSQ_TXT,
    DNSQ_CNAME,
    DNSQ_NS,
    DNSQ_A,
    DNSQ_AAAA,
};

/* A server to ask. addr is numeric; an empty addr stands for the servers
 * of /etc/resolv.conf. */
struct dnsq_server {
    char addr[48];
    unsigned port;
    int recurse;                /* set RD and accept non-authoritative */
    char label[DNSQ_LABEL_MAX]; /* "ADDR:PORT" for reports */
};

struct dnsq_answer {
    size_t n;
    char rr[DNSQ_MAX_RR][DNSQ_VALUE_MAX]; /* TXT text, names lower-case
                                             without the dot, addresses */
};

/* Fills s for a numeric address (IPv4 or IPv6) and port. 0, or -1 when
 * addr is not an address. */
int dnsq_server_addr(struct dnsq_server *s, const char *addr, unsigned port,
                     int recurse);
/* The resolver of the configuration: dns_resolver ("" = resolv.conf). 0
 * or -1 with a message in err. */
int dnsq_server_resolver(struct dnsq_server *s, const char *cfg_value,
                         char *err, size_t errlen);
/* Every address of host (a name, through getaddrinfo, or an address)
 * on port, appended to srv[*n_r..max). 0, or -1 with a message in err. */
int dnsq_server_host(const char *host, unsigned port, struct dnsq_server *srv,
                     size_t max, size_t *n_r, char *err, size_t errlen);

/* Asks s for the type records of name (no trailing dot needed). 1 with
 * the records in *a (only those owned by name and of that type), 0 when
 * the name or the records do not exist (NXDOMAIN, NODATA), -1 on a
 * failure (no answer, REFUSED, SERVFAIL, a non-authoritative answer from
 * a server that is not recursive) with a message in err. */
int dnsq_lookup(const struct dnsq_server *s, unsigned timeout_ms,
                const char *name, enum dnsq_type type, struct dnsq_answer *a,
                char *err, size_t errlen);

#endif
