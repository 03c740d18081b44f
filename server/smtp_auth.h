/* smtp_auth: SASL PLAIN (RFC 4616) and LOGIN decoding for AUTH (RFC
 * 4954). Pure functions, no allocation beyond caller buffers; secrets are
 * left in caller buffers, which the caller wipes. Any thread. */
#ifndef SG_SMTP_AUTH_H
#define SG_SMTP_AUTH_H

#include <stddef.h>

#include "../common/limits.h"

/* Largest decoded credential we accept (login or password). */
#define SMTP_AUTH_MAX_FIELD 1024

struct smtp_auth_creds {
    char authzid[SMTP_AUTH_MAX_FIELD + 1];
    char login[SMTP_AUTH_MAX_FIELD + 1];
    char password[SMTP_AUTH_MAX_FIELD + 1];
};

/* Value of base64 octet c (RFC 4648 4 alphabet), or -1 if c is not in it. */
int smtp_auth_b64_digit(unsigned char c);
/* Decodes base64 (RFC 4648, padding required, no whitespace) into out.
 * Returns the decoded length, or -1 on bad input or if out is too small.
 * "=" alone (RFC 4954 4: empty initial response) decodes to length 0. */
long smtp_auth_b64_decode(const char *in, size_t inlen, unsigned char *out,
                          size_t outcap);
/* Encodes into out (NUL-terminated); returns length or -1 if too small. */
long smtp_auth_b64_encode(const unsigned char *in, size_t inlen, char *out,
                          size_t outcap);

/* Decodes a PLAIN response (base64 "authzid\0authcid\0passwd"). 0 ok; -1
 * malformed (reply 501 5.5.2); c is filled and must be wiped by caller. */
int smtp_auth_plain_decode(const char *b64, size_t len,
                           struct smtp_auth_creds *c);
/* Decodes one base64 LOGIN response into out (field of c). 0 / -1. */
int smtp_auth_login_decode(const char *b64, size_t len, char *out,
                           size_t outcap);
/* Wipes c. */
void smtp_auth_creds_wipe(struct smtp_auth_creds *c);

#endif
