/* mx: where mail for a domain goes (RFC 5321 5.1), looked up with ldns.
 * The MX records of the domain, ordered by preference with equal
 * preferences shuffled; no MX record means the domain itself (the
 * implicit MX); a lone MX of "." is a null MX (RFC 7505): the domain
 * takes no mail. Each host's IPv4 then IPv6 addresses come from A and
 * AAAA queries. A domain literal ("[192.0.2.1]", "[IPv6:2001:db8::1]")
 * is its own only host.
 *
 * The resolver is cfg->dns_resolver ("HOST" or "HOST:PORT", an IPv6
 * address in brackets) or, when empty, the name servers of
 * /etc/resolv.conf. One struct mx_resolver belongs to one thread; a
 * lookup waits at most the timeout given to mx_resolver_new() per query
 * and try, MX_TRIES tries. */
#ifndef SG_MX_H
#define SG_MX_H

#include <stddef.h>
#include <sys/socket.h>

#include "../common/limits.h"

/* MX hosts tried for one domain (RFC 5321 5.1 leaves the number to the
 * client; a few are plenty and bound the work a hostile zone causes). */
#define MX_MAX_HOSTS 10
/* Addresses kept per host. */
#define MX_MAX_ADDRS 4
/* Tries per query: one lost UDP datagram is not a failure. */
#define MX_TRIES 2

struct mx_host {
    char name[SG_MAX_DOMAIN + 1]; /* without the final dot */
    unsigned pref;
    size_t naddr;
    struct sockaddr_storage addr[MX_MAX_ADDRS]; /* port filled in */
    socklen_t addrlen[MX_MAX_ADDRS];
};

struct mx_list {
    size_t n;
    struct mx_host host[MX_MAX_HOSTS];
};

struct mx_resolver;

/* A resolver for spec (see above; "" = /etc/resolv.conf), waiting
 * timeout_ms for each answer. A host name in spec is looked up once,
 * here, with the system resolver. NULL with a reason in err when spec is
 * malformed, its host has no address, or resolv.conf is unusable. */
struct mx_resolver *mx_resolver_new(const char *spec, unsigned timeout_ms,
                                    char *err, size_t errlen);
/* Frees; sets *rp to NULL. */
void mx_resolver_free(struct mx_resolver **rp);

/* Checks a resolver spec and splits it: the host (an address or a name,
 * without brackets) into host and the port (53 if none). 0 ok, -1
 * malformed. */
int mx_parse_resolver(const char *spec, char *host, size_t hostlen,
                      unsigned *port_r);

/* Looks up the hosts of domain, each address with port. 1: out holds
 * at least one host with at least one address; 0: the domain takes no
 * mail, for good (does not exist, null MX, no address): RFC 3463 code in
 * dsn, reason in why; -1: temporary failure (DNS timeout, SERVFAIL),
 * code and reason likewise. */
int mx_lookup(struct mx_resolver *r, const char *domain, unsigned port,
              struct mx_list *out, char *dsn, size_t dsnlen, char *why,
              size_t whylen);

/* Sorts hosts by preference and shuffles each run of equal preference
 * with rnd(arg) (a uniform random number), as RFC 5321 5.1 asks.
 * Exposed for tests. */
void mx_sort(struct mx_host *h, size_t n, unsigned (*rnd)(void *), void *arg);

#endif
