/* dns_check: is what a domain should have in DNS (dns_want) served? Asks
 * every authoritative server of the zone that holds the records: the
 * servers named with `dns set --check`, else those of the zone's NS
 * records (asked at the primary, on the primary's port), else, for a
 * domain without settings, the NS of the domain's zone through the
 * resolver on port 53. In delegated mode the tenant's CNAMEs are asked of
 * the resolver (dns_resolver). Marks pending keys whose records are
 * served everywhere published. Single-threaded. */
#ifndef SG_ADMIN_DNS_CHECK_H
#define SG_ADMIN_DNS_CHECK_H

#include <stdio.h>

#include "dns_query.h"
#include "dns_want.h"

enum dnschk_status {
    DNSCHK_OK,
    DNSCHK_MISSING,
    DNSCHK_DIFFERENT,
    DNSCHK_ERROR, /* the server did not answer, or refused */
};

/* The verdict on one record: ok only if ok at every server asked. */
struct dnschk_verdict {
    enum dnschk_status status;   /* the worst seen */
    char server[DNSQ_LABEL_MAX]; /* the first server not ok */
};

struct dnschk {
    struct dnswant want;             /* owned: the records checked */
    struct dnschk_verdict *verdicts; /* owned: one per record */
    size_t nservers;
};

/* "ok", "missing", "different", "error". */
const char *dnschk_status_name(enum dnschk_status s);

/* Checks every record of domain. With out, prints one line per record
 * and server: "NAME<TAB>STATUS<TAB>SERVER". ADMIN_OK when the check ran
 * (whatever it found), ADMIN_FAIL (printed) when no server to ask could
 * be found. Free chk with dnschk_free either way. */
int dnschk_run(struct admin_ctx *ctx, const char *domain, FILE *out,
               struct dnschk *chk);
void dnschk_free(struct dnschk *chk);

/* 1 if every record checked is ok. */
int dnschk_all_ok(const struct dnschk *chk);

/* 1 if every record of key key_id (its TXT, and its CNAME in delegated
 * mode) is ok; else 0 with *bad_r the verdict of the first that is not
 * (NULL when the key has no record). */
int dnschk_key_ok(const struct dnschk *chk, long long key_id,
                  const struct dnschk_verdict **bad_r);

/* Marks the pending keys whose records are all ok published (state and
 * timestamp). ADMIN_OK or ADMIN_FAIL (printed). The ids marked are
 * reported to out as "SELECTOR<TAB>ALGO<TAB>published" when out is set. */
int dnschk_mark(struct admin_ctx *ctx, const struct dnschk *chk,
                const char *prefix, FILE *out);

#endif
