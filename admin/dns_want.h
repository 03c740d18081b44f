/* dns_want: the DKIM records a domain should have in DNS, computed from
 * its keys (table dkim_key) and settings (dns_conf): a TXT record
 * (RFC 6376 3.6.1) for every key in state pending, published, active or
 * retired, and one with an empty p= for a revoked key. In delegated mode
 * also the CNAMEs the tenant adds once, one per selector slot.
 * Single-threaded. */
#ifndef SG_ADMIN_DNS_WANT_H
#define SG_ADMIN_DNS_WANT_H

#include <stddef.h>

#include "admin.h"
#include "dns_conf.h"

/* The TXT text of a 4096-bit RSA key is about 760 octets. */
#define DNSWANT_VALUE_MAX 2048
/* Keys of one domain at once: a few per algorithm and rotation. */
#define DNSWANT_MAX_KEYS 64
/* Delegated mode: load the tenant's CNAMEs too. */
#define DNSWANT_CNAMES 0x1

enum dnswant_type {
    DNSWANT_TXT,
    DNSWANT_CNAME,
};

struct dnswant_rec {
    enum dnswant_type type;
    char name[DNSCONF_NAME_MAX + 1]; /* owner, no trailing dot */
    char value[DNSWANT_VALUE_MAX];   /* TXT text, or CNAME target */
    long long key_id;                /* 0: a CNAME of an unused slot */
    char sel[DNSCONF_LABEL_MAX + 1]; /* the key's (or slot's) selector */
    char algo[16];
    char state[16]; /* the key's state, "" for slots */
};

struct dnswant {
    struct dnswant_rec *recs; /* owned */
    size_t n;
};

/* Loads domain's records, keys in order of creation (CNAMEs after the
 * TXT records). c may be NULL (no settings: records in the domain's own
 * zone). ADMIN_OK or ADMIN_FAIL (printed). */
int dnswant_load(struct admin_ctx *ctx, const char *domain,
                 const struct dnsconf *c, unsigned flags, struct dnswant *w);
void dnswant_free(struct dnswant *w);

/* The TXT text of a key: "v=DKIM1; k=ALGO; p=PUB", p= empty when state is
 * "revoked". 0 or -1 when it does not fit. */
int dnswant_txt(const char *algo, const char *state, const char *pub, char *out,
                size_t outlen);

/* Selector k (1-based) of the fixed set that delegated domains use for
 * algo on this node: "ALGO-NODE-K". out has DNSCONF_LABEL_MAX + 1
 * octets. 0, or -1 when it would be longer than a label. */
int dnswant_slot(const char *algo, const char *node, unsigned k, char *out);

/* 1 if algo is an item of the comma-separated list (sign_algos). */
int dnswant_algo_listed(const char *list, const char *algo);

#endif
