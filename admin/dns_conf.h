/* dns_conf: where a domain's DKIM records live in DNS. Reads and writes
 * the per-domain settings of `subgate dns set` (table dns_setting), names
 * the records (SEL._domainkey.DOMAIN, or SEL.DOMAIN-WITH-DASHES.DELEGATE
 * in delegated mode) and reads the TSIG secret file. Single-threaded. */
#ifndef SG_ADMIN_DNS_CONF_H
#define SG_ADMIN_DNS_CONF_H

#include <stddef.h>

#include "../common/limits.h"
#include "admin.h"

/* RFC 1035 2.3.4: a name is at most 253 octets as text without the root
 * dot; a label at most 63. */
#define DNSCONF_NAME_MAX 253
#define DNSCONF_LABEL_MAX 63
/* A path in the settings (the TSIG secret file). */
#define DNSCONF_PATH_MAX 4096
/* --check: a few HOST[:PORT] items. */
#define DNSCONF_CHECK_MAX 1024
/* RFC 8945 6: a TSIG key of hmac-sha256 should be at least 32 octets;
 * 512 octets of base64 hold any HMAC key worth using. */
#define DNSCONF_SECRET_MAX 512
/* Delegated mode: selectors per algorithm that tenants CNAME once. */
#define DNSCONF_SLOTS_DEF 4
#define DNSCONF_SLOTS_MAX 16

/* One row of dns_setting. Strings are "" when unset. */
struct dnsconf {
    char domain[DNSCONF_NAME_MAX + 1];
    char server[DNSCONF_NAME_MAX + 1]; /* primary: host name or address */
    unsigned port;
    char zone[DNSCONF_NAME_MAX + 1]; /* the zone of the UPDATE */
    char tsig_name[DNSCONF_NAME_MAX + 1];
    char tsig_alg[32];
    char secret_file[DNSCONF_PATH_MAX];
    char delegate[DNSCONF_NAME_MAX + 1]; /* "" = not delegated */
    char check[DNSCONF_CHECK_MAX];       /* "" = the zone's NS */
    unsigned slots;
};

/* Reads the settings of domain (normalised): 1 found, 0 none, -1 error
 * (printed). */
int dnsconf_get(struct admin_ctx *ctx, const char *domain, struct dnsconf *c);
/* Inserts or replaces c's row. ADMIN_OK or ADMIN_FAIL (printed). */
int dnsconf_put(struct admin_ctx *ctx, const struct dnsconf *c);

/* The label that stands for domain under a delegated zone: its dots
 * turned into '-' ("tenant.org" -> "tenant-org"). 0, or -1 when it is
 * longer than a label. out has DNSCONF_LABEL_MAX + 1 octets. */
int dnsconf_label(const char *domain, char *out);

/* The owner name (no trailing dot) of the record of selector sel of
 * domain: SEL._domainkey.DOMAIN, or with c delegated SEL.LABEL.DELEGATE.
 * c may be NULL. 0, or -1 when it is longer than a name. */
int dnsconf_owner(const struct dnsconf *c, const char *domain, const char *sel,
                  char *out, size_t outlen);

/* The name a tenant publishes: SEL._domainkey.DOMAIN. 0 or -1. */
int dnsconf_tenant_name(const char *domain, const char *sel, char *out,
                        size_t outlen);

/* 1 if name is zone or below it (case-insensitive, no trailing dots). */
int dnsconf_in_zone(const char *name, const char *zone);

/* Reads the TSIG secret: one line of base64 in a regular file that
 * neither group nor others may read (RFC 8945 keeps the secret shared by
 * two parties only). The base64 must decode to at least 16 octets. 0 with
 * out set (the caller wipes it), or -1 with a message in err. */
int dnsconf_secret_read(const char *path, char *out, size_t outlen, char *err,
                        size_t errlen);

/* Splits "HOST[:PORT]" or "[ADDR]:PORT" into host (DNSCONF_NAME_MAX + 1)
 * and *port_r (def_port when absent). 0 or -1. */
int dnsconf_hostport(const char *in, unsigned def_port, char *host,
                     unsigned *port_r);

#endif
