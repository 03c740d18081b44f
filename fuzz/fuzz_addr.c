/* Fuzzes the address parsers (common/addr.c) and the display text check
 * (server/policy_ident.c). Checks: a parsed envelope path is a valid
 * mailbox (or the null path) and within its length, the parameters point
 * into the input; a From: mailbox is a valid RFC 5321 mailbox; a domain
 * is lower-cased within its bound; the text check is deterministic. */
#include <string.h>

#include "../common/addr.h"
#include "../server/policy.h"
#include "fuzz.h"

static struct db_member fuzz_member = {
    .address = "alice@example.org",
    .naddrs = 2,
    .addrs = {"alice@example.org", "webmaster@example.net"},
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char addr[SG_MAX_PATH + 1], found[SG_MAX_PATH + 1], found2[SG_MAX_PATH + 1];
    char dom[SG_MAX_DOMAIN + 1];
    char *s = fuzz_cstr(data, size);
    const char *params = NULL, *err = NULL;
    int f1, f2;

    if (addr_parse_path(s, addr, &params, &err) == 0) {
        FUZZ_CHECK(strlen(addr) <= SG_MAX_PATH);
        FUZZ_CHECK(addr[0] == '\0' || addr_is_valid(addr));
        FUZZ_CHECK(params >= s && params <= s + strlen(s));
        if (addr[0] != '\0' && policy_dkim_domain(addr, dom, sizeof(dom)) == 0)
            FUZZ_CHECK(strlen(dom) <= SG_MAX_DOMAIN);
    } else {
        FUZZ_CHECK(err != NULL);
    }
    if (addr_is_valid(s))
        FUZZ_CHECK(strlen(s) <= SG_MAX_PATH);
    if (addr_parse_from((const char *)data, size, addr, &err) == 1) {
        FUZZ_CHECK(addr_is_valid(addr));
        FUZZ_CHECK(addr_equal(addr, addr));
    } else {
        FUZZ_CHECK(addr[0] == '\0' && err != NULL);
    }
    f1 = policy_text_foreign(&fuzz_member, (const char *)data, size, found,
                             sizeof(found));
    f2 = policy_text_foreign(&fuzz_member, (const char *)data, size, found2,
                             sizeof(found2));
    FUZZ_CHECK(f1 == f2 && (!f1 || strcmp(found, found2) == 0));
    FUZZ_CHECK(!f1 || !policy_owns(&fuzz_member, found) ||
               strlen(found) == SG_MAX_PATH);
    free(s);
    return 0;
}
