/* Unit tests for scram: the RFC 7677 3 exchange (user "user", password
 * "pencil", the RFC's nonces and salt, 4096 iterations) must produce the
 * RFC's server-first and server-final byte for byte and accept its proof;
 * then wrong proofs, nonces and channel bindings, the gs2 flags n/y/p
 * against the mechanism, malformed messages, and a -PLUS exchange whose
 * client side is computed here from the RFC 5802 3 formulas. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include "../../server/scram.h"
#include "../../server/smtp_auth.h"

#define RFC_CNONCE "rOprNGfwEbeRWgbNEkqO"
#define RFC_SNONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define RFC_SALT64 "W22ZaJ0SNY7soEsUEjb6gQ=="
#define RFC_FIRST "n,,n=user,r=" RFC_CNONCE
#define RFC_SFIRST "r=" RFC_CNONCE RFC_SNONCE ",s=" RFC_SALT64 ",i=4096"
#define RFC_FINAL                                                              \
    "c=biws,r=" RFC_CNONCE RFC_SNONCE                                          \
    ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
#define RFC_SFINAL "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

static struct scram_keys rfc_keys;

static int setup_keys(void **state)
{
    unsigned char salt[32];
    long n =
        smtp_auth_b64_decode(RFC_SALT64, strlen(RFC_SALT64), salt, sizeof salt);

    (void)state;
    if (n <= 0 ||
        scram_keys_derive("pencil", salt, (size_t)n, 4096, &rfc_keys) != 0)
        return -1;
    return 0;
}

/* Runs client-first and server-first of the RFC exchange on s. */
static void rfc_first(struct scram *s, int plus, int offered, const char *msg)
{
    char out[SCRAM_MAX_MSG + 1];
    const char *err = NULL;

    scram_init(s, plus, offered);
    assert_int_equal(scram_client_first(s, msg, strlen(msg), &err), 0);
    assert_string_equal(s->user, "user");
    assert_int_equal(
        scram_server_first(s, &rfc_keys, RFC_SNONCE, out, sizeof out, &err), 0);
    assert_string_equal(out, RFC_SFIRST);
}

static int final(struct scram *s, const char *msg, const unsigned char *cb,
                 size_t cblen, char *out, const char **err)
{
    return scram_client_final(s, msg, strlen(msg), cb, cblen, out,
                              SCRAM_MAX_MSG + 1, err);
}

static void test_rfc7677_vector(void **state)
{
    struct scram s;
    char out[SCRAM_MAX_MSG + 1];
    const char *err = NULL;

    (void)state;
    rfc_first(&s, 0, 0, RFC_FIRST);
    assert_int_equal(final(&s, RFC_FINAL, NULL, 0, out, &err), 1);
    assert_string_equal(out, RFC_SFINAL);
    /* a second client-final in the same exchange is out of sequence */
    assert_int_equal(final(&s, RFC_FINAL, NULL, 0, out, &err), -1);
    scram_clear(&s);
}

static void test_wrong_proof_and_nonce(void **state)
{
    struct scram s;
    char out[SCRAM_MAX_MSG + 1];
    const char *err = NULL;
    struct scram_keys other;

    (void)state;
    rfc_first(&s, 0, 0, RFC_FIRST);
    assert_int_equal(final(&s,
                           "c=biws,r=" RFC_CNONCE RFC_SNONCE
                           ",p=eHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
                           NULL, 0, out, &err),
                     0);
    assert_string_equal(err, "wrong proof");

    /* the RFC's proof against another server nonce: a replay */
    scram_init(&s, 0, 0);
    assert_int_equal(scram_client_first(&s, RFC_FIRST, strlen(RFC_FIRST), &err),
                     0);
    assert_int_equal(
        scram_server_first(&s, &rfc_keys, "fresh+nonce", out, sizeof out, &err),
        0);
    assert_int_equal(final(&s, RFC_FINAL, NULL, 0, out, &err), 0);
    assert_string_equal(err, "nonce mismatch");

    /* another password's keys: the RFC's proof fails */
    assert_int_equal(scram_keys_derive("pencil2", rfc_keys.salt,
                                       rfc_keys.salt_len, 4096, &other),
                     0);
    scram_init(&s, 0, 0);
    assert_int_equal(scram_client_first(&s, RFC_FIRST, strlen(RFC_FIRST), &err),
                     0);
    assert_int_equal(
        scram_server_first(&s, &other, RFC_SNONCE, out, sizeof out, &err), 0);
    assert_int_equal(final(&s, RFC_FINAL, NULL, 0, out, &err), 0);
    assert_string_equal(err, "wrong proof");
}

/* The gs2 flag against the mechanism and what the server offered. */
static void test_cbind_flags(void **state)
{
    static const struct {
        const char *msg;
        int plus, offered, want;
    } cases[] = {
        {"n,,n=user,r=abc", 0, 0, 0},
        {"n,,n=user,r=abc", 0, 1, 0},
        {"y,,n=user,r=abc", 0, 0, 0},
        {"y,,n=user,r=abc", 0, 1, -1}, /* downgrade */
        {"p=tls-server-end-point,,n=user,r=abc", 0, 1, -1},
        {"p=tls-server-end-point,,n=user,r=abc", 1, 1, 0},
        {"p=tls-exporter,,n=user,r=abc", 1, 1, 0},
        {"p=tls-unique,,n=user,r=abc", 1, 1, -1},
        {"n,,n=user,r=abc", 1, 1, -1},
        {"y,,n=user,r=abc", 1, 1, -1},
    };
    struct scram s;
    const char *err;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        scram_init(&s, cases[i].plus, cases[i].offered);
        err = NULL;
        if (scram_client_first(&s, cases[i].msg, strlen(cases[i].msg), &err) !=
            cases[i].want) {
            print_error("case %zu (%s plus=%d offered=%d): %s\n", i,
                        cases[i].msg, cases[i].plus, cases[i].offered,
                        err != NULL ? err : "accepted");
            fail();
        }
    }
}

static void test_malformed(void **state)
{
    static const char *const bad_first[] = {
        "",
        "n",
        "n,",
        "x,,n=user,r=abc",
        "n,,r=abc",
        "n,,n=user",
        "n,,n=,r=abc",
        "n,,n=us=3Xer,r=abc",
        "n,,n=user,r=",
        "n,,n=user,r=a\x01",
        "n,,m=ext,n=user,r=abc",
        "n,a=other,n=user,r=abc",
        "n,b=user,n=user,r=abc",
        "n,,n=user,r=abc\0",
    };
    static const char *const bad_final[] = {
        "",
        "r=" RFC_CNONCE RFC_SNONCE ",p=AAAA",
        "c=biws,r=" RFC_CNONCE RFC_SNONCE,
        "c=biws,r=" RFC_CNONCE RFC_SNONCE ",p=!!!!",
        "c=biws,r=" RFC_CNONCE RFC_SNONCE ",p=AAAA",
        "c=biws,r=" RFC_CNONCE RFC_SNONCE
        ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=,x=1",
        "c=bi,r=" RFC_CNONCE RFC_SNONCE
        ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    };
    char big[SCRAM_MAX_MSG + 2];
    char out[SCRAM_MAX_MSG + 1];
    struct scram s;
    const char *err;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof bad_first / sizeof bad_first[0]; i++) {
        size_t len = strlen(bad_first[i]) + (i == 13 ? 1 : 0);

        scram_init(&s, 0, 0);
        if (scram_client_first(&s, bad_first[i], len, &err) != -1) {
            print_error("first %zu accepted\n", i);
            fail();
        }
    }
    memset(big, 'a', sizeof big);
    memcpy(big, "n,,n=user,r=", 12);
    scram_init(&s, 0, 0);
    assert_int_equal(scram_client_first(&s, big, sizeof big, &err), -1);
    /* = escapes decode */
    scram_init(&s, 0, 0);
    assert_int_equal(
        scram_client_first(&s, "n,a=a=2Cb=3D,n=a=2Cb=3D,r=x", 27, &err), 0);
    assert_string_equal(s.user, "a,b=");

    for (i = 0; i < sizeof bad_final / sizeof bad_final[0]; i++) {
        int rc;

        rfc_first(&s, 0, 0, RFC_FIRST);
        rc = final(&s, bad_final[i], NULL, 0, out, &err);
        if (rc == 1) {
            print_error("final %zu accepted\n", i);
            fail();
        }
    }
}

/* The client side, from RFC 5802 3, for a -PLUS exchange. */
static void client_proof(const char *pw, const struct scram_keys *k,
                         const char *authmsg, char *proof64, size_t cap)
{
    unsigned char salted[32], ckey[32], stored[32], sig[32], proof[32];
    unsigned int n;
    size_t i;

    assert_int_equal(PKCS5_PBKDF2_HMAC(pw, (int)strlen(pw), k->salt,
                                       (int)k->salt_len, (int)k->iterations,
                                       EVP_sha256(), 32, salted),
                     1);
    HMAC(EVP_sha256(), salted, 32, (const unsigned char *)"Client Key", 10,
         ckey, &n);
    SHA256(ckey, 32, stored);
    HMAC(EVP_sha256(), stored, 32, (const unsigned char *)authmsg,
         strlen(authmsg), sig, &n);
    for (i = 0; i < 32; i++)
        proof[i] = ckey[i] ^ sig[i];
    assert_true(smtp_auth_b64_encode(proof, 32, proof64, cap) > 0);
}

static void test_plus(void **state)
{
    static const char first[] = "p=tls-server-end-point,,n=user,r=cnonce";
    static const unsigned char cb[] = {1, 2, 3, 4, 5, 6, 7, 8};
    unsigned char header_cb[64];
    char sfirst[SCRAM_MAX_MSG + 1], out[SCRAM_MAX_MSG + 1];
    char c64[128], proof64[64], wop[512], am[2048], msg[600];
    size_t hlen = strlen("p=tls-server-end-point,,");
    struct scram s;
    const char *err;
    int pass;

    (void)state;
    memcpy(header_cb, first, hlen);
    memcpy(header_cb + hlen, cb, sizeof cb);
    assert_true(
        smtp_auth_b64_encode(header_cb, hlen + sizeof cb, c64, sizeof c64) > 0);
    for (pass = 0; pass < 2; pass++) {
        static const unsigned char other_cb[] = {9, 9, 9, 9};

        scram_init(&s, 1, 1);
        assert_int_equal(scram_client_first(&s, first, strlen(first), &err), 0);
        assert_int_equal(scram_server_first(&s, &rfc_keys, "snonce", sfirst,
                                            sizeof sfirst, &err),
                         0);
        snprintf(wop, sizeof wop, "c=%s,r=cnoncesnonce", c64);
        snprintf(am, sizeof am, "%s,%s,%s", first + hlen, sfirst, wop);
        client_proof("pencil", &rfc_keys, am, proof64, sizeof proof64);
        snprintf(msg, sizeof msg, "%s,p=%s", wop, proof64);
        if (pass == 0) {
            assert_int_equal(final(&s, msg, cb, sizeof cb, out, &err), 1);
            assert_memory_equal(out, "v=", 2);
        } else {
            /* the connection's binding differs from the client's */
            assert_int_equal(
                final(&s, msg, other_cb, sizeof other_cb, out, &err), 0);
            assert_string_equal(err, "channel binding mismatch");
        }
    }
    /* no binding data on the connection at all */
    scram_init(&s, 1, 1);
    assert_int_equal(scram_client_first(&s, first, strlen(first), &err), 0);
    assert_int_equal(scram_server_first(&s, &rfc_keys, "snonce", sfirst,
                                        sizeof sfirst, &err),
                     0);
    assert_int_equal(final(&s, msg, NULL, 0, out, &err), 0);
}

static void test_derive_bounds(void **state)
{
    struct scram_keys k;
    unsigned char salt[SCRAM_MAX_SALT + 1] = {0};
    char nonce[2 * SCRAM_NONCE_RAW + 1];

    (void)state;
    assert_int_equal(scram_keys_derive("x", salt, 0, 4096, &k), -1);
    assert_int_equal(scram_keys_derive("x", salt, sizeof salt, 4096, &k), -1);
    assert_int_equal(scram_keys_derive("x", salt, 16, 0, &k), -1);
    assert_int_equal(scram_nonce_new(nonce, sizeof nonce), 0);
    assert_true(strlen(nonce) >= SCRAM_NONCE_RAW);
    assert_null(strchr(nonce, ','));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc7677_vector),
        cmocka_unit_test(test_wrong_proof_and_nonce),
        cmocka_unit_test(test_cbind_flags),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_plus),
        cmocka_unit_test(test_derive_bounds),
    };

    return cmocka_run_group_tests(tests, setup_keys, NULL);
}
