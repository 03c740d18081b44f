/* scram: SCRAM-SHA-256(-PLUS) server side; see scram.h. */
#include "scram.h"

#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "smtp_auth.h"

int scram_nonce_new(char *out, size_t cap)
{
    unsigned char raw[SCRAM_NONCE_RAW];

    if (RAND_bytes(raw, sizeof raw) != 1)
        return -1;
    /* base64 never contains ',' */
    return smtp_auth_b64_encode(raw, sizeof raw, out, cap) < 0 ? -1 : 0;
}

void scram_init(struct scram *s, int plus, int plus_offered)
{
    memset(s, 0, sizeof *s);
    s->step = SCRAM_STEP_FIRST;
    s->plus = plus;
    /* remembered in cb_flag's slot until the first message: 'y' is a
     * downgrade only if -PLUS was on offer */
    s->cb_name[0] = plus_offered ? '+' : '\0';
}

/* Printable ASCII except ',' (RFC 5802 7, "printable"). */
static int scram_nonce_ok(const char *p, size_t len)
{
    size_t i;

    if (len == 0)
        return 0;
    for (i = 0; i < len; i++)
        if ((unsigned char)p[i] < 0x21 || (unsigned char)p[i] > 0x7e ||
            p[i] == ',')
            return 0;
    return 1;
}

/* Undoes "=2C" and "=3D" (RFC 5802 5.1) from a saslname of len bytes.
 * 0 or -1 (bad escape, control character, too long). */
static int scram_name_decode(const char *p, size_t len, char *out, size_t cap)
{
    size_t i, o = 0;

    for (i = 0; i < len; i++) {
        char c = p[i];

        if (c == '=') {
            if (len - i >= 3 && p[i + 1] == '2' && p[i + 2] == 'C')
                c = ',';
            else if (len - i >= 3 && p[i + 1] == '3' && p[i + 2] == 'D')
                c = '=';
            else
                return -1;
            i += 2;
        } else if ((unsigned char)c < 0x20 || c == 0x7f) {
            return -1;
        }
        if (o + 1 >= cap)
            return -1;
        out[o++] = c;
    }
    out[o] = '\0';
    return o == 0 ? -1 : 0;
}

/* The next ','-separated field of [*pp, end): start and length; *pp moves
 * past the comma. 0, or -1 at the end. */
static int scram_field(const char **pp, const char *end, const char **f_r,
                       size_t *len_r)
{
    const char *p = *pp, *c;

    if (p > end)
        return -1;
    c = memchr(p, ',', (size_t)(end - p));
    if (c == NULL)
        c = end;
    *f_r = p;
    *len_r = (size_t)(c - p);
    *pp = c + 1;
    return 0;
}

/* The gs2 header: flag, channel binding name, authzid (checked later). */
static int scram_gs2(struct scram *s, const char **pp, const char *end,
                     const char **az_r, size_t *azlen_r, const char **err_r)
{
    int plus_offered = s->cb_name[0] == '+';
    const char *f;
    size_t n;

    s->cb_name[0] = '\0';
    if (scram_field(pp, end, &f, &n) != 0 || n == 0)
        return *err_r = "malformed gs2 header", -1;
    if (n == 1 && (f[0] == 'n' || f[0] == 'y')) {
        s->cb_flag = f[0];
    } else if (n > 2 && f[0] == 'p' && f[1] == '=' &&
               n - 2 <= SCRAM_MAX_CB_NAME) {
        s->cb_flag = 'p';
        memcpy(s->cb_name, f + 2, n - 2);
        s->cb_name[n - 2] = '\0';
    } else {
        return *err_r = "malformed gs2 header", -1;
    }
    if (s->plus && s->cb_flag != 'p')
        return *err_r = "PLUS mechanism without channel binding", -1;
    if (!s->plus && s->cb_flag == 'p')
        return *err_r = "channel binding requested without PLUS", -1;
    if (s->cb_flag == 'y' && plus_offered)
        return *err_r = "channel binding downgrade", -1;
    if (s->cb_flag == 'p' && strcmp(s->cb_name, "tls-server-end-point") != 0 &&
        strcmp(s->cb_name, "tls-exporter") != 0)
        return *err_r = "unsupported channel binding type", -1;
    if (*pp > end || scram_field(pp, end, az_r, azlen_r) != 0)
        return *err_r = "malformed gs2 header", -1;
    if (*azlen_r != 0 && (*azlen_r < 3 || memcmp(*az_r, "a=", 2) != 0))
        return *err_r = "malformed authzid", -1;
    return 0;
}

int scram_client_first(struct scram *s, const char *msg, size_t len,
                       const char **err_r)
{
    const char *p = msg, *end = msg + len, *az, *f;
    size_t azlen, n;
    char authz[SCRAM_MAX_USER + 1];

    if (s->step != SCRAM_STEP_FIRST)
        return *err_r = "out of sequence", -1;
    s->step = SCRAM_STEP_DONE; /* until it parses */
    if (len == 0 || len > SCRAM_MAX_MSG || memchr(msg, '\0', len) != NULL)
        return *err_r = "bad client-first length", -1;
    if (scram_gs2(s, &p, end, &az, &azlen, err_r) != 0)
        return -1;
    s->gs2_len = (size_t)(p - msg);
    if (p >= end || scram_field(&p, end, &f, &n) != 0)
        return *err_r = "missing user name", -1;
    if (n >= 2 && f[0] == 'm' && f[1] == '=')
        return *err_r = "unsupported mandatory extension", -1;
    if (n < 3 || memcmp(f, "n=", 2) != 0 ||
        scram_name_decode(f + 2, n - 2, s->user, sizeof s->user) != 0)
        return *err_r = "malformed user name", -1;
    if (azlen != 0 &&
        (scram_name_decode(az + 2, azlen - 2, authz, sizeof authz) != 0 ||
         strcmp(authz, s->user) != 0))
        return *err_r = "authorization identity differs", -1;
    if (p > end || scram_field(&p, end, &f, &n) != 0 || n < 3 ||
        memcmp(f, "r=", 2) != 0 || n - 2 > SCRAM_MAX_NONCE ||
        !scram_nonce_ok(f + 2, n - 2))
        return *err_r = "malformed nonce", -1;
    memcpy(s->nonce, f + 2, n - 2);
    s->nonce[n - 2] = '\0';
    /* optional extensions after the nonce are ignored (RFC 5802 5.1) */
    memcpy(s->client_first, msg, len);
    s->client_first[len] = '\0';
    s->step = SCRAM_STEP_KEYS;
    return 0;
}

int scram_server_first(struct scram *s, const struct scram_keys *k,
                       const char *snonce, char *out, size_t cap,
                       const char **err_r)
{
    char salt64[2 * SCRAM_MAX_SALT + 4];
    size_t cl = strlen(s->nonce), sl = strlen(snonce);
    int n;

    if (s->step != SCRAM_STEP_KEYS)
        return *err_r = "out of sequence", -1;
    s->step = SCRAM_STEP_DONE;
    if (sl == 0 || sl > SCRAM_MAX_NONCE || !scram_nonce_ok(snonce, sl))
        return *err_r = "bad server nonce", -1;
    if (k->salt_len == 0 || k->salt_len > sizeof k->salt ||
        smtp_auth_b64_encode(k->salt, k->salt_len, salt64, sizeof salt64) < 0)
        return *err_r = "bad stored salt", -1;
    memcpy(s->nonce + cl, snonce, sl + 1);
    n = snprintf(s->server_first, sizeof s->server_first, "r=%s,s=%s,i=%u",
                 s->nonce, salt64, k->iterations);
    if (n < 0 || (size_t)n >= sizeof s->server_first || (size_t)n >= cap)
        return *err_r = "server-first too long", -1;
    memcpy(out, s->server_first, (size_t)n + 1);
    s->keys = *k;
    s->step = SCRAM_STEP_FINAL;
    return 0;
}

/* c=: base64 of the gs2 header, plus the binding data for flag 'p'. */
static int scram_cbind_check(const struct scram *s, const char *f, size_t n,
                             const unsigned char *cb, size_t cb_len,
                             const char **err_r)
{
    unsigned char want[SCRAM_MAX_MSG + SCRAM_MAX_CB],
        got[SCRAM_MAX_MSG + SCRAM_MAX_CB];
    size_t wlen = s->gs2_len;
    long glen;

    if (s->cb_flag == 'p') {
        if (cb == NULL || cb_len == 0 || cb_len > SCRAM_MAX_CB)
            return *err_r = "no channel binding data on this connection", 0;
        memcpy(want + wlen, cb, cb_len);
        wlen += cb_len;
    }
    memcpy(want, s->client_first, s->gs2_len);
    glen = smtp_auth_b64_decode(f, n, got, sizeof got);
    if (glen < 0)
        return *err_r = "malformed channel binding", -1;
    if ((size_t)glen != wlen || CRYPTO_memcmp(got, want, wlen) != 0)
        return *err_r = "channel binding mismatch", 0;
    return 1;
}

/* Verifies the proof p= over the auth message; 1 ok, 0 not. */
static int scram_proof_check(struct scram *s, const char *without_proof,
                             size_t wlen, const unsigned char *proof,
                             unsigned char *server_sig)
{
    unsigned char csig[SCRAM_KEY_LEN], ckey[SCRAM_KEY_LEN],
        stored[SCRAM_KEY_LEN];
    const char *bare = s->client_first + s->gs2_len;
    char am[3 * SCRAM_MAX_MSG + 3];
    unsigned int mlen = 0;
    size_t i;
    int n, ok = 0;

    n = snprintf(am, sizeof am, "%s,%s,%.*s", bare, s->server_first, (int)wlen,
                 without_proof);
    if (n < 0 || (size_t)n >= sizeof am)
        return 0;
    if (HMAC(EVP_sha256(), s->keys.stored_key, SCRAM_KEY_LEN,
             (const unsigned char *)am, (size_t)n, csig, &mlen) == NULL ||
        HMAC(EVP_sha256(), s->keys.server_key, SCRAM_KEY_LEN,
             (const unsigned char *)am, (size_t)n, server_sig, &mlen) == NULL)
        goto out;
    for (i = 0; i < SCRAM_KEY_LEN; i++)
        ckey[i] = proof[i] ^ csig[i];
    SHA256(ckey, sizeof ckey, stored);
    ok = CRYPTO_memcmp(stored, s->keys.stored_key, SCRAM_KEY_LEN) == 0;
out:
    OPENSSL_cleanse(ckey, sizeof ckey);
    OPENSSL_cleanse(am, sizeof am);
    return ok;
}

int scram_client_final(struct scram *s, const char *msg, size_t len,
                       const unsigned char *cb, size_t cb_len, char *out,
                       size_t cap, const char **err_r)
{
    const char *p = msg, *end = msg + len, *f, *cbf, *pf = NULL;
    unsigned char proof[SCRAM_KEY_LEN + 4], ssig[SCRAM_KEY_LEN];
    char sig64[64];
    size_t n, cbn;
    int rc;

    if (s->step != SCRAM_STEP_FINAL)
        return *err_r = "out of sequence", -1;
    s->step = SCRAM_STEP_DONE;
    if (len == 0 || len > SCRAM_MAX_MSG || memchr(msg, '\0', len) != NULL)
        return *err_r = "bad client-final length", -1;
    if (scram_field(&p, end, &cbf, &cbn) != 0 || cbn < 2 ||
        memcmp(cbf, "c=", 2) != 0)
        return *err_r = "malformed channel binding", -1;
    if (p > end || scram_field(&p, end, &f, &n) != 0 || n < 2 ||
        memcmp(f, "r=", 2) != 0)
        return *err_r = "malformed nonce", -1;
    if (n - 2 != strlen(s->nonce) || memcmp(f + 2, s->nonce, n - 2) != 0) {
        *err_r = "nonce mismatch";
        return 0;
    }
    /* extensions, then the proof, which must come last */
    while (p <= end && scram_field(&p, end, &f, &n) == 0) {
        if (n >= 2 && memcmp(f, "p=", 2) == 0) {
            if (p <= end)
                return *err_r = "proof not last", -1;
            pf = f;
            break;
        }
    }
    if (pf == NULL)
        return *err_r = "missing proof", -1;
    if (smtp_auth_b64_decode(pf + 2, n - 2, proof, sizeof proof) !=
        SCRAM_KEY_LEN)
        return *err_r = "malformed proof", -1;
    rc = scram_cbind_check(s, cbf + 2, cbn - 2, cb, cb_len, err_r);
    if (rc != 1)
        return rc;
    /* without-proof ends before ",p=" */
    if (!scram_proof_check(s, msg, (size_t)(pf - 1 - msg), proof, ssig)) {
        *err_r = "wrong proof";
        return 0;
    }
    if (smtp_auth_b64_encode(ssig, sizeof ssig, sig64, sizeof sig64) < 0 ||
        snprintf(out, cap, "v=%s", sig64) >= (int)cap)
        return *err_r = "server-final too long", -1;
    *err_r = "ok";
    return 1;
}

void scram_clear(struct scram *s)
{
    OPENSSL_cleanse(s, sizeof *s);
    s->step = SCRAM_STEP_DONE;
}
