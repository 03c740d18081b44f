/* dns_update: RFC 2136 DNS UPDATE messages for DKIM TXT records, signed
 * with TSIG (RFC 8945) through ldns. One message per call: the changes are
 * applied by the server all together or not at all (RFC 2136 3.4.2).
 * Single-threaded. */
#ifndef SG_ADMIN_DNS_UPDATE_H
#define SG_ADMIN_DNS_UPDATE_H

#include <stddef.h>
#include <stdio.h>

#include "dns_query.h"

/* One change: the TXT RRset of name is deleted, and, when txt is set,
 * replaced by one record holding txt (split into character-strings of at
 * most 255 octets, RFC 1035 3.3.14). */
struct dnsup_change {
    const char *name; /* borrowed; no trailing dot */
    const char *txt;  /* borrowed; NULL: delete only */
};

/* The TSIG key: name, algorithm ("hmac-sha256", "hmac-sha512") and the
 * base64 secret (borrowed; wiped by the caller). */
struct dnsup_key {
    const char *name;
    const char *alg;
    const char *secret;
};

/* 1 if alg is a TSIG algorithm we sign with. */
int dnsup_alg_ok(const char *alg);

/* Prints the update that dnsup_send would send, in the input syntax of
 * nsupdate/knsupdate (server, zone, update delete/add, send), the secret
 * left out. 0, or -1 with a message in err when the update cannot be
 * built. */
int dnsup_print(FILE *out, const struct dnsq_server *s, const char *zone,
                const struct dnsup_key *key, const struct dnsup_change *ch,
                size_t n, unsigned ttl, char *err, size_t errlen);

/* Sends the update to s over TCP and waits up to timeout_ms for the
 * answer, whose TSIG signature must verify. 0 when the server applied it
 * (NOERROR); -1 with one line in err otherwise (no answer, NOTAUTH with
 * the TSIG error, REFUSED, NOTZONE, ...). */
int dnsup_send(const struct dnsq_server *s, const char *zone,
               const struct dnsup_key *key, const struct dnsup_change *ch,
               size_t n, unsigned ttl, unsigned timeout_ms, char *err,
               size_t errlen);

#endif
