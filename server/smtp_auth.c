/* smtp_auth: SASL PLAIN and LOGIN decoding. See smtp_auth.h.
 *
 * The base64 decoder is strict (RFC 4648 4): the input is whole 4-octet
 * groups, '=' only as padding at the end, no whitespace, and the bits that
 * padding leaves over must be zero (RFC 4648 3.5), so that each credential
 * has exactly one encoding. Decoded secrets only ever sit in caller buffers
 * and in one local buffer that is wiped before returning. */
#include "smtp_auth.h"

#include <string.h>

static const char smtp_auth_b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int smtp_auth_b64_digit(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Checks in[0..inlen) and returns the decoded length, or -1. */
static long smtp_auth_b64_check(const char *in, size_t inlen)
{
    size_t pad = 0, i;

    if (inlen == 1 && in[0] == '=')
        return 0; /* RFC 4954 4: empty initial response */
    if (inlen % 4 != 0)
        return -1;
    if (inlen > 0 && in[inlen - 1] == '=')
        pad = in[inlen - 2] == '=' ? 2 : 1;
    for (i = 0; i < inlen - pad; i++) {
        if (smtp_auth_b64_digit((unsigned char)in[i]) < 0)
            return -1;
    }
    /* The last digit before the padding may not carry leftover bits. */
    if (pad == 1 && (smtp_auth_b64_digit((unsigned char)in[i - 1]) & 0x03))
        return -1;
    if (pad == 2 && (smtp_auth_b64_digit((unsigned char)in[i - 1]) & 0x0f))
        return -1;
    return (long)(inlen / 4 * 3 - pad);
}

long smtp_auth_b64_decode(const char *in, size_t inlen, unsigned char *out,
                          size_t outcap)
{
    long n = smtp_auth_b64_check(in, inlen);
    unsigned long acc = 0;
    size_t i, o = 0, bits = 0;

    if (n < 0 || (size_t)n > outcap)
        return -1;
    for (i = 0; i < inlen && in[i] != '='; i++) {
        acc = (acc << 6) |
              (unsigned long)smtp_auth_b64_digit((unsigned char)in[i]);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
            acc &= (1UL << bits) - 1;
        }
    }
    return n;
}

long smtp_auth_b64_encode(const unsigned char *in, size_t inlen, char *out,
                          size_t outcap)
{
    size_t need, i, o = 0;

    if (inlen > ((size_t)-1) / 2)
        return -1;
    need = (inlen + 2) / 3 * 4;
    if (need + 1 > outcap)
        return -1;
    for (i = 0; i + 2 < inlen; i += 3) {
        unsigned long v = (unsigned long)in[i] << 16 |
                          (unsigned long)in[i + 1] << 8 | in[i + 2];

        out[o++] = smtp_auth_b64_alphabet[v >> 18];
        out[o++] = smtp_auth_b64_alphabet[(v >> 12) & 0x3f];
        out[o++] = smtp_auth_b64_alphabet[(v >> 6) & 0x3f];
        out[o++] = smtp_auth_b64_alphabet[v & 0x3f];
    }
    if (i < inlen) {
        unsigned long v = (unsigned long)in[i] << 16;

        if (i + 1 < inlen)
            v |= (unsigned long)in[i + 1] << 8;
        out[o++] = smtp_auth_b64_alphabet[v >> 18];
        out[o++] = smtp_auth_b64_alphabet[(v >> 12) & 0x3f];
        if (i + 1 < inlen)
            out[o++] = smtp_auth_b64_alphabet[(v >> 6) & 0x3f];
        else
            out[o++] = '=';
        out[o++] = '=';
    }
    out[o] = '\0';
    return (long)o;
}

/* Copies the field s[0..n) into out (SMTP_AUTH_MAX_FIELD + 1 octets). */
static int smtp_auth_field(char *out, const unsigned char *s, size_t n)
{
    if (n > SMTP_AUTH_MAX_FIELD)
        return -1;
    memcpy(out, s, n);
    out[n] = '\0';
    return 0;
}

int smtp_auth_plain_decode(const char *b64, size_t len,
                           struct smtp_auth_creds *c)
{
    /* Three maximal fields and their two separators. */
    unsigned char buf[3 * SMTP_AUTH_MAX_FIELD + 2];
    const unsigned char *nul1, *nul2, *end;
    long n;
    int rc = -1;

    smtp_auth_creds_wipe(c);
    n = smtp_auth_b64_decode(b64, len, buf, sizeof(buf));
    if (n < 0)
        return -1;
    end = buf + n;
    /* RFC 4616 2: message = [authzid] NUL authcid NUL passwd, and no
     * field may hold a NUL. */
    nul1 = memchr(buf, '\0', (size_t)n);
    nul2 =
        nul1 != NULL ? memchr(nul1 + 1, '\0', (size_t)(end - nul1 - 1)) : NULL;
    if (nul2 == NULL ||
        memchr(nul2 + 1, '\0', (size_t)(end - nul2 - 1)) != NULL)
        goto out;
    if (nul2 == nul1 + 1 || nul2 + 1 == end)
        goto out; /* empty authcid or passwd */
    if (smtp_auth_field(c->authzid, buf, (size_t)(nul1 - buf)) < 0 ||
        smtp_auth_field(c->login, nul1 + 1, (size_t)(nul2 - nul1 - 1)) < 0 ||
        smtp_auth_field(c->password, nul2 + 1, (size_t)(end - nul2 - 1)) < 0)
        goto out;
    rc = 0;
out:
    explicit_bzero(buf, sizeof(buf));
    if (rc < 0)
        smtp_auth_creds_wipe(c);
    return rc;
}

int smtp_auth_login_decode(const char *b64, size_t len, char *out,
                           size_t outcap)
{
    size_t cap;
    long n;

    if (outcap == 0)
        return -1;
    cap = outcap - 1 < SMTP_AUTH_MAX_FIELD ? outcap - 1 : SMTP_AUTH_MAX_FIELD;
    n = smtp_auth_b64_decode(b64, len, (unsigned char *)out, cap);
    /* An empty or NUL-holding user name or password is never valid. */
    if (n <= 0 || memchr(out, '\0', (size_t)n) != NULL) {
        explicit_bzero(out, outcap);
        return -1;
    }
    out[n] = '\0';
    return 0;
}

void smtp_auth_creds_wipe(struct smtp_auth_creds *c)
{
    explicit_bzero(c, sizeof(*c));
}
