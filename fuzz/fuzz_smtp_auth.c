/* Fuzzes the SASL decoding of AUTH (server/smtp_auth.c). Checks: base64
 * is canonical (what decodes encodes back to the same text), PLAIN gives
 * three fields without NUL within their bounds or wipes everything, LOGIN
 * gives a non-empty field without NUL or an empty buffer. */
#include <string.h>

#include "../server/smtp_auth.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static unsigned char bin[3 * SMTP_AUTH_MAX_FIELD + 8];
    static char text[4 * sizeof(bin) + 8];
    static struct smtp_auth_creds c;
    char field[SMTP_AUTH_MAX_FIELD + 1];
    const char *in = (const char *)data;
    long n;

    n = smtp_auth_b64_decode(in, size, bin, sizeof(bin));
    if (n > 0) {
        long m = smtp_auth_b64_encode(bin, (size_t)n, text, sizeof(text));
        FUZZ_CHECK(m == (long)size);
        FUZZ_CHECK(memcmp(text, in, size) == 0);
    }
    if (smtp_auth_plain_decode(in, size, &c) == 0) {
        FUZZ_CHECK(strlen(c.login) > 0 && strlen(c.password) > 0);
        FUZZ_CHECK(strlen(c.authzid) <= SMTP_AUTH_MAX_FIELD);
        FUZZ_CHECK(strlen(c.login) <= SMTP_AUTH_MAX_FIELD);
        FUZZ_CHECK(strlen(c.password) <= SMTP_AUTH_MAX_FIELD);
    } else {
        FUZZ_CHECK(c.login[0] == '\0' && c.password[0] == '\0');
    }
    smtp_auth_creds_wipe(&c);
    if (smtp_auth_login_decode(in, size, field, sizeof(field)) == 0)
        FUZZ_CHECK(strlen(field) > 0 && strlen(field) <= SMTP_AUTH_MAX_FIELD);
    else
        FUZZ_CHECK(field[0] == '\0');
    return 0;
}
