/* dns_publish: brings a domain's DKIM records in DNS in line with its keys
 * by one RFC 2136 UPDATE to the primary of its settings (dns_conf). What
 * was published is kept in table dns_published, so that the record of a
 * deleted key is removed from the zone too. The table changes only after
 * the server applied the update. Single-threaded. */
#ifndef SG_ADMIN_DNS_PUBLISH_H
#define SG_ADMIN_DNS_PUBLISH_H

#include <stdio.h>

#include "admin.h"

/* Print the update instead of sending it; change nothing. */
#define DNSPUB_DRY_RUN 0x1
/* Send every record, also those published unchanged before. */
#define DNSPUB_ALL 0x2

/* Publishes domain's records. With out, reports one line per record
 * changed, "NAME<TAB>added|replaced|deleted" (or, for a dry run, the
 * update). ADMIN_OK (also when nothing had to change) or ADMIN_FAIL with
 * one line printed, the database unchanged. */
int dnspub_run(struct admin_ctx *ctx, const char *domain, unsigned flags,
               FILE *out);

#endif
