/* cmd_dns: `subgate dns records DOMAIN` prints the DKIM TXT records
 * (RFC 6376 3.6.2) of a domain as zone-file lines, for an operator who
 * publishes them by hand. Every key that verifiers may still meet is
 * listed: pending and published (about to sign), active, retired (mail in
 * flight) and revoked (with an empty p=, RFC 6376 3.6.1). */
#include <stdio.h>
#include <string.h>

#include "../common/limits.h"
#include "admin.h"

/* RFC 1035 3.3.14: a TXT record is a sequence of character-strings of at
 * most 255 octets each; RFC 6376 3.6.2.2 joins them without spaces. */
#define DNS_TXT_CHUNK 255
/* The TTL of the printed records: one hour lets a rotation settle soon. */
#define DNS_TTL 3600

/* Prints value as quoted character-strings of at most DNS_TXT_CHUNK
 * octets. The value holds only base64 and tag text: nothing to escape. */
static void dns_print_txt(const char *value)
{
    size_t len = strlen(value), off = 0, n;

    do {
        n = len - off > DNS_TXT_CHUNK ? DNS_TXT_CHUNK : len - off;
        printf(" \"%.*s\"", (int)n, value + off);
        off += n;
    } while (off < len);
}

/* Prints one record line. */
static void dns_print_key(const char *domain, const unsigned char *sel,
                          const unsigned char *algo, const unsigned char *state,
                          const unsigned char *pub)
{
    char value[4096];
    int revoked = strcmp((const char *)state, "revoked") == 0;

    snprintf(value, sizeof value, "v=DKIM1; k=%s; p=%s", algo,
             revoked ? "" : (const char *)pub);
    printf("%s._domainkey.%s. %d IN TXT", sel, domain, DNS_TTL);
    dns_print_txt(value);
    printf("\n");
}

static int dns_records(struct admin_ctx *ctx, int argc, char **argv)
{
    char domain[SG_MAX_DOMAIN + 1];
    const char *pos[1] = {0};
    sqlite3_stmt *st;
    long long tid;
    size_t npos;
    int rc;

    if (admin_args(argc, argv, NULL, 0, pos, 1, 1, &npos,
                   "dns records DOMAIN") != ADMIN_OK)
        return ADMIN_USAGE;
    if (!admin_domain_norm(pos[0], domain))
        return admin_fail("invalid domain %s", pos[0]);
    tid = admin_domain_tenant(ctx, domain);
    if (tid <= 0)
        return tid < 0 ? ADMIN_FAIL
                       : admin_fail("no tenant owns domain %s", domain);
    if (admin_prepare(ctx,
                      "SELECT selector, algo, state, public_key"
                      " FROM dkim_key WHERE domain = ?1 AND state IN"
                      " ('pending', 'published', 'active', 'retired',"
                      "  'revoked')"
                      " ORDER BY created, id",
                      &st) != 0)
        return ADMIN_FAIL;
    sqlite3_bind_text(st, 1, domain, -1, SQLITE_STATIC);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        dns_print_key(domain, sqlite3_column_text(st, 0),
                      sqlite3_column_text(st, 1), sqlite3_column_text(st, 2),
                      sqlite3_column_text(st, 3));
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return admin_db_fail(ctx, "listing keys");
    return ADMIN_OK;
}

int cmd_dns(struct admin_ctx *ctx, int argc, char **argv)
{
    static const struct admin_cmd cmds[] = {
        {"records", dns_records},
    };

    return admin_dispatch(ctx, cmds, sizeof cmds / sizeof cmds[0], "dns", argc,
                          argv);
}
