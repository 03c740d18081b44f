/* Unit tests for signer_dkim. Keys (RSA-2048, Ed25519) are
 * made with OpenSSL at start; every signature is checked by libopendkim in
 * verify mode against a key record built from the public key, as a
 * receiver would find it in DNS. The message parser runs on table cases,
 * each at and one over its bound. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <opendkim/dkim.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "../../common/limits.h"
#include "../../signer/signer_dkim.h"
#include "../../signer/signer_pkey.h"
#include "testutil.h"

#define DOMAIN "example.org"

/* A test key: private PEM for the signer, key record for the verifier. */
struct tkey {
    const char *selector;
    enum signer_dkim_algo algo;
    char *pem;    /* PKCS#8 PEM */
    char *record; /* "v=DKIM1; k=...; p=..." */
};

struct fixture {
    struct signer_dkim *dkim;
    DKIM_LIB *vlib; /* verify mode */
    struct tkey rsa, ed;
};

/* libopendkim's input pointers lack const; it only reads them. */
static unsigned char *uc(const char *s)
{
    return (unsigned char *)(uintptr_t)s;
}

static char *b64(const unsigned char *in, size_t len)
{
    char *out = malloc(4 * ((len + 2) / 3) + 1);

    assert_non_null(out);
    EVP_EncodeBlock((unsigned char *)out, in, (int)len);
    return out;
}

static char *pem_of(EVP_PKEY *pk)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *data, *out;
    long n;

    assert_non_null(bio);
    assert_int_equal(
        PEM_write_bio_PrivateKey(bio, pk, NULL, NULL, 0, NULL, NULL), 1);
    n = BIO_get_mem_data(bio, &data);
    out = strndup(data, (size_t)n);
    assert_non_null(out);
    BIO_free(bio);
    return out;
}

/* RFC 6376 3.6.1: p= is the DER SubjectPublicKeyInfo for RSA; RFC 8463 4:
 * the raw 32-octet public key for Ed25519. */
static char *record_of(EVP_PKEY *pk, enum signer_dkim_algo algo)
{
    unsigned char raw[64], *der = NULL;
    size_t rawlen = sizeof(raw);
    char *p, *rec;
    int n;

    if (algo == SIGNER_DKIM_ED25519_SHA256) {
        assert_int_equal(EVP_PKEY_get_raw_public_key(pk, raw, &rawlen), 1);
        p = b64(raw, rawlen);
    } else {
        n = i2d_PUBKEY(pk, &der);
        assert_true(n > 0);
        p = b64(der, (size_t)n);
        OPENSSL_free(der);
    }
    assert_true(asprintf(&rec, "v=DKIM1; k=%s; p=%s",
                         algo == SIGNER_DKIM_ED25519_SHA256 ? "ed25519" : "rsa",
                         p) > 0);
    free(p);
    return rec;
}

static void tkey_make(struct tkey *k, const char *sel,
                      enum signer_dkim_algo algo)
{
    EVP_PKEY *pk = algo == SIGNER_DKIM_ED25519_SHA256
                       ? EVP_PKEY_Q_keygen(NULL, NULL, "ED25519")
                       : EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);

    assert_non_null(pk);
    k->selector = sel;
    k->algo = algo;
    k->pem = pem_of(pk);
    k->record = record_of(pk, algo);
    EVP_PKEY_free(pk);
}

/* Key lookup for the verifier: the records of the fixture, by selector. */
static DKIM_CBSTAT lookup_cb(DKIM *d, DKIM_SIGINFO *sig, unsigned char *buf,
                             size_t buflen)
{
    const struct fixture *f = dkim_get_user_context(d);
    const char *sel = (const char *)dkim_sig_getselector(sig);
    const struct tkey *k = NULL;

    if (strcmp(sel, f->rsa.selector) == 0)
        k = &f->rsa;
    else if (strcmp(sel, f->ed.selector) == 0)
        k = &f->ed;
    if (k == NULL || strlen(k->record) >= buflen)
        return DKIM_CBSTAT_NOTFOUND;
    memcpy(buf, k->record, strlen(k->record) + 1);
    return DKIM_CBSTAT_CONTINUE;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    char err[256] = "";

    assert_non_null(f);
    f->dkim = signer_dkim_new(err, sizeof(err));
    if (f->dkim == NULL)
        fail_msg("signer_dkim_new: %s", err);
    f->vlib = dkim_init(NULL, NULL);
    assert_non_null(f->vlib);
    assert_int_equal(dkim_set_key_lookup(f->vlib, lookup_cb), DKIM_STAT_OK);
    tkey_make(&f->rsa, "rsa2026", SIGNER_DKIM_RSA_SHA256);
    tkey_make(&f->ed, "ed2026", SIGNER_DKIM_ED25519_SHA256);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    signer_dkim_free(&f->dkim);
    assert_null(f->dkim);
    dkim_close(f->vlib);
    free(f->rsa.pem);
    free(f->rsa.record);
    free(f->ed.pem);
    free(f->ed.record);
    free(f);
    return 0;
}

static const struct tkey *key_of(const struct fixture *f,
                                 enum signer_dkim_algo algo)
{
    return algo == SIGNER_DKIM_ED25519_SHA256 ? &f->ed : &f->rsa;
}

/* Signs msg; fails the test on error. Returns the signature field. */
static char *sign_ok(struct fixture *f, const struct tkey *k, const char *msg,
                     size_t len)
{
    struct signer_dkim_key key = {k->selector, k->algo, k->pem, NULL};
    struct signer_dkim_msg m;
    const char *perr = NULL;
    char err[512] = "", *sig = NULL;
    size_t siglen = 0;

    if (signer_dkim_msg_parse(&m, msg, len, &perr) < 0)
        fail_msg("parse: got %s, want success", perr);
    if (signer_dkim_sign(f->dkim, "TESTQID", DOMAIN, &key, &m, &sig, &siglen,
                         err, sizeof(err)) < 0)
        fail_msg("sign with %s: got error %s, want success", k->selector, err);
    signer_dkim_msg_clear(&m);
    assert_int_equal(siglen, strlen(sig));
    return sig;
}

/* Feeds header field by field (split independently of the code under
 * test: a line that starts with SP/HTAB continues the field), then the
 * body. Returns dkim_eom()'s status, DKIM_STAT_OK for a good signature. */
static DKIM_STAT verify(struct fixture *f, const char *msg, size_t len)
{
    DKIM_STAT st = DKIM_STAT_OK;
    DKIM *d = dkim_verify(f->vlib, (const unsigned char *)"V", NULL, &st);
    const char *p = msg, *end = msg + len, *field, *eol = NULL;
    DKIM_SIGINFO *sig;

    assert_non_null(d);
    dkim_set_user_context(d, f);
    while (p < end) {
        if (end - p >= 2 && p[0] == '\r' && p[1] == '\n') {
            p += 2; /* the blank line */
            break;
        }
        field = p;
        do {
            eol = memmem(p, (size_t)(end - p), "\r\n", 2);
            assert_non_null(eol);
            p = eol + 2;
        } while (p < end && (*p == ' ' || *p == '\t'));
        dkim_header(d, uc(field), (size_t)(eol - field));
    }
    dkim_eoh(d);
    if (p < end)
        dkim_body(d, uc(p), (size_t)(end - p));
    st = dkim_eom(d, NULL);
    sig = dkim_getsignature(d);
    if (st == DKIM_STAT_OK && (sig == NULL || !DKIM_SIG_CHECK(sig)))
        st = DKIM_STAT_BADSIG;
    dkim_free(d);
    return st;
}

/* The message as it leaves the gateway: signature field on top. */
static void signed_msg(struct sb *out, const char *sig, const char *msg,
                       size_t len)
{
    sb_add(out, sig);
    sb_addn(out, msg, len);
}

/* Value of tag in the signature field ("" if absent), white space and
 * folding removed. */
static void tag_value(const char *sig, const char *tag, char *out,
                      size_t outlen)
{
    const char *p = strchr(sig, ':') + 1;
    size_t tl = strlen(tag), o = 0;

    out[0] = '\0';
    while (p != NULL && *p != '\0') {
        while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
            p++;
        if (strncmp(p, tag, tl) == 0 && p[tl] == '=') {
            for (p += tl + 1; *p != '\0' && *p != ';'; p++)
                if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n' &&
                    o + 1 < outlen)
                    out[o++] = *p;
            out[o] = '\0';
            return;
        }
        p = strchr(p, ';');
        if (p != NULL)
            p++;
    }
}

static int count_name(const char *hlist, const char *name)
{
    char buf[1024], *save = NULL, *tok;
    int n = 0;

    snprintf(buf, sizeof(buf), "%s", hlist);
    for (tok = strtok_r(buf, ":", &save); tok != NULL;
         tok = strtok_r(NULL, ":", &save))
        if (strcasecmp(tok, name) == 0)
            n++;
    return n;
}

/* The field is one valid wire header: name, folds as CRLF + WSP, CRLF at
 * the end and nowhere else bare. */
static void check_field(const char *sig)
{
    size_t len = strlen(sig), i;

    assert_true(strncmp(sig, "DKIM-Signature: ", 16) == 0);
    assert_true(len > 2 && sig[len - 2] == '\r' && sig[len - 1] == '\n');
    for (i = 0; i < len; i++) {
        if (sig[i] == '\n' && (i == 0 || sig[i - 1] != '\r'))
            fail_msg("bare LF at %zu in %s", i, sig);
        if (sig[i] == '\r' && sig[i + 1] != '\n')
            fail_msg("bare CR at %zu in %s", i, sig);
        if (sig[i] == '\n' && i + 1 < len && sig[i + 1] != '\t' &&
            sig[i + 1] != ' ')
            fail_msg("line at %zu is not a continuation in %s", i, sig);
    }
}

struct sign_case {
    const char *name;
    const char *msg; /* NULL: built by the case's builder */
    void (*build)(struct sb *b);
};

static void build_big_body(struct sb *b)
{
    int i;

    sb_add(b, "From: <alice@example.org>\r\nSubject: big\r\n\r\n");
    /* Over two body chunks of 64 KiB. */
    for (i = 0; i < 3000; i++)
        sb_add(b, "Lorem ipsum dolor sit amet, consectetur adipiscing "
                  "elit, sed do.\r\n");
}

static const struct sign_case sign_cases[] = {
    {"simple",
     "From: Alice <alice@example.org>\r\n"
     "To: bob@example.net\r\n"
     "Subject: hello\r\n"
     "Date: Thu, 26 Nov 2026 15:00:00 +0000\r\n"
     "Message-ID: <1@example.org>\r\n"
     "\r\n"
     "Hello Bob.\r\n",
     NULL},
    {"folded and unsigned fields",
     "Received: from x by y;\r\n\tThu, 26 Nov 2026 15:00:00 +0000\r\n"
     "From: Alice\r\n <alice@example.org>\r\n"
     "Subject: a long\r\n\tsubject   with  spaces \r\n"
     "X-Mailer: test\r\n"
     "MIME-Version: 1.0\r\n"
     "Content-Type: text/plain;\r\n charset=utf-8\r\n"
     "\r\n"
     "line one  \r\n\r\nline three\r\n\r\n\r\n",
     NULL},
    {"empty body", "From: alice@example.org\r\nSubject: x\r\n\r\n", NULL},
    {"no body, no blank line", "From: alice@example.org\r\nSubject: x\r\n",
     NULL},
    {"no subject", "From: alice@example.org\r\n\r\nbody\r\n", NULL},
    {"big body", NULL, build_big_body},
};

static void test_sign_verify(void **state)
{
    struct fixture *f = *state;
    enum signer_dkim_algo algos[] = {SIGNER_DKIM_RSA_SHA256,
                                     SIGNER_DKIM_ED25519_SHA256};
    char h[1024], v[1024];
    size_t i, a;

    for (i = 0; i < sizeof(sign_cases) / sizeof(sign_cases[0]); i++) {
        const struct sign_case *c = &sign_cases[i];
        struct sb msg = {0}, out = {0};

        if (c->msg != NULL)
            sb_add(&msg, c->msg);
        else
            c->build(&msg);
        for (a = 0; a < 2; a++) {
            const struct tkey *k = key_of(f, algos[a]);
            char *sig = sign_ok(f, k, msg.s, msg.len);
            DKIM_STAT st;

            check_field(sig);
            tag_value(sig, "a", v, sizeof(v));
            if (strcmp(v, signer_dkim_algo_name(k->algo)) != 0)
                fail_msg("%s/%s: a= got %s, want %s", c->name, k->selector, v,
                         signer_dkim_algo_name(k->algo));
            tag_value(sig, "d", v, sizeof(v));
            assert_string_equal(v, DOMAIN);
            tag_value(sig, "s", v, sizeof(v));
            assert_string_equal(v, k->selector);
            tag_value(sig, "c", v, sizeof(v));
            assert_string_equal(v, "relaxed/relaxed");
            tag_value(sig, "l", v, sizeof(v));
            if (v[0] != '\0' || strstr(sig, " l=") != NULL)
                fail_msg("%s: got l=%s, want no l= tag", c->name, v);
            tag_value(sig, "h", h, sizeof(h));
            /* Over-signed: once more than present, so an absent Subject
             * is still listed once. */
            if (count_name(h, "from") != 2 ||
                count_name(h, "subject") !=
                    (strstr(msg.s, "\r\nSubject:") != NULL ? 2 : 1))
                fail_msg("%s: h=%s, want from and subject over-signed", c->name,
                         h);
            if (count_name(h, "received") != 0 ||
                count_name(h, "x-mailer") != 0)
                fail_msg("%s: h=%s signs a trace field", c->name, h);

            signed_msg(&out, sig, msg.s, msg.len);
            st = verify(f, out.s, out.len);
            if (st != DKIM_STAT_OK)
                fail_msg("%s/%s: verify got %s, want pass", c->name,
                         k->selector, dkim_getresultstr(st));
            sb_free(&out);
            free(sig);
        }
        sb_free(&msg);
    }
}

/* A changed body, a changed subject and a second From added on top all
 * break the signature of either algorithm. */
static void test_tamper(void **state)
{
    static const char msg[] = "From: alice@example.org\r\n"
                              "Subject: pay 10 EUR\r\n"
                              "\r\n"
                              "Pay 10 EUR to account 1.\r\n";
    static const struct {
        const char *name, *from, *to; /* replace from by to */
    } cases[] = {
        {"body", "account 1.", "account 7."},
        {"subject", "pay 10 EUR", "pay 99 EUR"},
        {"second from", "From: alice",
         "From: mallory@evil.example\r\nFrom: alice"},
    };
    struct fixture *f = *state;
    enum signer_dkim_algo algos[] = {SIGNER_DKIM_RSA_SHA256,
                                     SIGNER_DKIM_ED25519_SHA256};
    size_t i, a;

    for (a = 0; a < 2; a++) {
        const struct tkey *k = key_of(f, algos[a]);
        char *sig = sign_ok(f, k, msg, sizeof(msg) - 1);

        for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
            struct sb out = {0};
            const char *at = strstr(msg, cases[i].from);
            DKIM_STAT st;

            assert_non_null(at);
            sb_add(&out, sig);
            sb_addn(&out, msg, (size_t)(at - msg));
            sb_add(&out, cases[i].to);
            sb_add(&out, at + strlen(cases[i].from));
            st = verify(f, out.s, out.len);
            if (st == DKIM_STAT_OK)
                fail_msg("%s/%s: tampered message verifies, want fail",
                         cases[i].name, k->selector);
            sb_free(&out);
        }
        free(sig);
    }
}

struct parse_case {
    const char *name;
    const char *msg;
    size_t nfields;     /* want on success */
    long body_off;      /* want on success; -1: end of message */
    const char *reason; /* NULL: success wanted */
};

static const struct parse_case parse_cases[] = {
    {"two fields", "A: 1\r\nB: 2\r\n\r\nbody\r\n", 2, 14, NULL},
    {"folded", "A: 1\r\n 2\r\n\t3\r\nB: x\r\n\r\n", 2, 22, NULL},
    {"no blank line", "A: 1\r\nB: 2\r\n", 2, -1, NULL},
    {"space before colon", "A : 1\r\n\r\n", 1, 9, NULL},
    {"body keeps bare LF", "A: 1\r\n\r\nx\ny\r\n", 1, 8, NULL},
    {"empty", "", 0, 0, "no header"},
    {"body only", "\r\nbody\r\n", 0, 0, "no header"},
    {"continuation first", " A: 1\r\n\r\n", 0, 0, "malformed header"},
    {"no colon", "From alice\r\n\r\n", 0, 0, "malformed header"},
    {"empty name", ": x\r\n\r\n", 0, 0, "malformed header"},
    {"semicolon in name", "A;B: x\r\n\r\n", 0, 0, "malformed header"},
    {"bare LF", "A: 1\nB: 2\r\n\r\n", 0, 0, "malformed header"},
    {"bare CR", "A: 1\rB: 2\r\n\r\n", 0, 0, "malformed header"},
    {"unterminated", "A: 1\r\nB: 2", 0, 0, "malformed header"},
};

static void check_parse(const char *name, const char *msg, size_t len,
                        const char *want_reason, size_t want_n,
                        size_t want_body)
{
    struct signer_dkim_msg m;
    const char *reason = NULL;
    int rc = signer_dkim_msg_parse(&m, msg, len, &reason);

    if (want_reason != NULL) {
        if (rc != -1 || reason == NULL || strcmp(reason, want_reason) != 0)
            fail_msg("%s: got rc=%d reason=%s, want -1 %s", name, rc,
                     reason ? reason : "(none)", want_reason);
        assert_null(m.fields);
        assert_int_equal(m.nfields, 0);
        return;
    }
    if (rc != 0)
        fail_msg("%s: got %s, want success", name, reason);
    if (m.nfields != want_n || m.body_off != want_body)
        fail_msg("%s: got %zu fields body at %zu, want %zu at %zu", name,
                 m.nfields, m.body_off, want_n, want_body);
    /* No field carries its final CRLF. */
    assert_int_equal(
        m.data[m.fields[m.nfields - 1].off + m.fields[m.nfields - 1].len],
        '\r');
    signer_dkim_msg_clear(&m);
}

static void test_parse(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(parse_cases) / sizeof(parse_cases[0]); i++) {
        const struct parse_case *c = &parse_cases[i];
        size_t len = strlen(c->msg);

        check_parse(c->name, c->msg, len, c->reason, c->nfields,
                    c->body_off < 0 ? len : (size_t)c->body_off);
    }
}

/* Exactly at each bound is fine, one over is refused. */
static void test_parse_limits(void **state)
{
    struct sb b = {0};
    size_t i, n;

    (void)state;
    for (i = 0; i < SG_MAX_HEADER_COUNT; i++)
        sb_add(&b, "X-A: 1\r\n");
    n = b.len;
    sb_add(&b, "\r\n");
    check_parse("count at bound", b.s, b.len, NULL, SG_MAX_HEADER_COUNT, n + 2);
    b.len = n;
    sb_add(&b, "X-B: 2\r\n\r\n");
    check_parse("count over bound", b.s, b.len, "too many header fields", 0, 0);
    sb_free(&b);

    /* One folded field of exactly SG_MAX_HEADER_FIELD octets (100-octet
     * continuation lines), then one octet more. */
    sb_add(&b, "X-Long: ");
    while (b.len + 100 <= SG_MAX_HEADER_FIELD) {
        sb_add(&b, "\r\n ");
        for (i = 0; i < 97; i++)
            sb_add(&b, "a");
    }
    while (b.len < SG_MAX_HEADER_FIELD)
        sb_add(&b, "a");
    n = b.len;
    sb_add(&b, "\r\n\r\n");
    check_parse("field at bound", b.s, b.len, NULL, 1, n + 4);
    b.len = n;
    sb_add(&b, "a\r\n\r\n");
    check_parse("field over bound", b.s, b.len, "header field too long", 0, 0);
    sb_free(&b);

    /* Header section over SG_MAX_HEADER_SECTION in fields under the
     * field bound, without ever finding the blank line. */
    while (b.len <= SG_MAX_HEADER_SECTION) {
        sb_add(&b, "X-Fill: ");
        for (i = 0; i < 60; i++)
            sb_add(&b, "\r\n bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
                       "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb");
        sb_add(&b, "\r\n");
    }
    sb_add(&b, "\r\nbody\r\n");
    check_parse("section over bound", b.s, b.len, "header section too large", 0,
                0);
    sb_free(&b);
}

/* A bad key or a message the library refuses give -1 and a reason, no
 * signature. */
static void test_sign_refused(void **state)
{
    static const char good[] = "From: alice@example.org\r\n\r\nhi\r\n";
    static const char nofrom[] = "Subject: x\r\n\r\nhi\r\n";
    struct fixture *f = *state;
    struct {
        const char *name;
        const char *pem;
        enum signer_dkim_algo algo;
        const char *msg;
    } cases[] = {
        {"garbage key",
         "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
         SIGNER_DKIM_RSA_SHA256, good},
        {"empty key", "", SIGNER_DKIM_ED25519_SHA256, good},
        {"no From", f->rsa.pem, SIGNER_DKIM_RSA_SHA256, nofrom},
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct signer_dkim_key key = {"sel", cases[i].algo, cases[i].pem, NULL};
        struct signer_dkim_msg m;
        const char *perr = NULL;
        char err[512] = "", *sig = NULL;
        size_t siglen = 0;
        int rc;

        assert_int_equal(signer_dkim_msg_parse(&m, cases[i].msg,
                                               strlen(cases[i].msg), &perr),
                         0);
        rc = signer_dkim_sign(f->dkim, "Q", DOMAIN, &key, &m, &sig, &siglen,
                              err, sizeof(err));
        if (rc != -1 || sig != NULL || strncmp(err, "signing failed: ", 16))
            fail_msg("%s: got rc=%d sig=%s err=%s, want -1 and a reason",
                     cases[i].name, rc, sig ? sig : "(none)", err);
        signer_dkim_msg_clear(&m);
    }
}

/* Which key may sign with which algorithm (libopendkim would sign with
 * any and mislabel the result). */
static void test_key_check(void **state)
{
    static const struct {
        enum signer_dkim_algo algo;
        int type, bits;
        const char *want; /* NULL: fits */
    } cases[] = {
        {SIGNER_DKIM_RSA_SHA256, EVP_PKEY_RSA, 2048, NULL},
        {SIGNER_DKIM_RSA_SHA256, EVP_PKEY_RSA, SG_MIN_RSA_BITS, NULL},
        {SIGNER_DKIM_RSA_SHA256, EVP_PKEY_RSA, SG_MIN_RSA_BITS - 1,
         "key unusable: RSA key under 1024 bits"},
        {SIGNER_DKIM_RSA_SHA256, EVP_PKEY_ED25519, 256,
         "key unusable: not an rsa-sha256 key"},
        {SIGNER_DKIM_ED25519_SHA256, EVP_PKEY_ED25519, 256, NULL},
        {SIGNER_DKIM_ED25519_SHA256, EVP_PKEY_RSA, 2048,
         "key unusable: not an ed25519-sha256 key"},
        {SIGNER_DKIM_ED25519_SHA256, EVP_PKEY_EC, 256,
         "key unusable: not an ed25519-sha256 key"},
    };
    char err[256];
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc;

        err[0] = '\0';
        rc = signer_dkim_key_check(cases[i].algo, cases[i].type, cases[i].bits,
                                   err, sizeof(err));
        if (cases[i].want == NULL ? rc != 0
                                  : rc != -1 || strcmp(err, cases[i].want))
            fail_msg("case %zu: got rc=%d err=\"%s\", want %s", i, rc, err,
                     cases[i].want ? cases[i].want : "0");
    }
}

static EVP_PKEY *parse_pem(const char *pem)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    EVP_PKEY *pk;

    assert_non_null(bio);
    pk = PEM_read_bio_PrivateKey_ex(bio, NULL, NULL, NULL, NULL, NULL);
    BIO_free(bio);
    assert_non_null(pk);
    return pk;
}

/* The program's PEM_read_bio_PrivateKey() hands out the offered key only
 * for exactly the offered text, on the offering thread, until withdrawn;
 * every other read parses. */
static void test_pkey_offer(void **state)
{
    struct fixture *f = *state;
    EVP_PKEY *pk = parse_pem(f->rsa.pem), *got;
    size_t len = strlen(f->rsa.pem);
    struct {
        const char *name;
        const char *text; /* what the BIO holds */
        size_t len;
        int offered, want_offered;
    } cases[] = {
        {"offered text", f->rsa.pem, len, 1, 1},
        {"one octet short", f->rsa.pem, len - 1, 1, 0},
        {"other key", f->ed.pem, strlen(f->ed.pem), 1, 0},
        {"no offer", f->rsa.pem, len, 0, 0},
    };
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        BIO *bio = BIO_new_mem_buf(cases[i].text, (int)cases[i].len);
        unsigned handed;

        assert_non_null(bio);
        if (cases[i].offered)
            signer_pkey_offer(f->rsa.pem, len, pk);
        got = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
        BIO_free(bio);
        handed = signer_pkey_withdraw();
        if ((got == pk) != cases[i].want_offered ||
            handed != (unsigned)cases[i].want_offered)
            fail_msg("%s: got %s key, handed %u; want %s", cases[i].name,
                     got == pk ? "the offered" : "a parsed", handed,
                     cases[i].want_offered ? "the offered" : "a parsed");
        if (cases[i].len == len && got == NULL)
            fail_msg("%s: got no key, want one", cases[i].name);
        EVP_PKEY_free(got);
    }
    EVP_PKEY_free(pk);
}

/* signer_dkim_sign() signs with the parsed key it is given instead of
 * parsing the text again: with the right key the signature verifies; a
 * different parsed key under the same text proves which one signed, as
 * its signature fails against the text's public key. */
static void test_sign_preparsed(void **state)
{
    static const char msg[] = "From: alice@example.org\r\nSubject: p\r\n"
                              "\r\nbody\r\n";
    struct fixture *f = *state;
    struct tkey other;
    size_t i;

    if (!signer_dkim_handoff(f->dkim))
        fail_msg("libopendkim got no parsed key at start, want it to");
    tkey_make(&other, "other", SIGNER_DKIM_RSA_SHA256);
    for (i = 0; i < 4; i++) {
        const struct tkey *k = i % 2 ? &f->ed : &f->rsa;
        int decoy = i >= 2 && k->algo == SIGNER_DKIM_RSA_SHA256;
        EVP_PKEY *pk = parse_pem(decoy ? other.pem : k->pem);
        struct signer_dkim_key key = {k->selector, k->algo, k->pem, pk};
        struct signer_dkim_msg m;
        struct sb out = {0};
        const char *perr = NULL;
        char err[512] = "", *sig = NULL;
        size_t siglen = 0;
        DKIM_STAT st;

        assert_int_equal(signer_dkim_msg_parse(&m, msg, strlen(msg), &perr), 0);
        if (signer_dkim_sign(f->dkim, "Q", DOMAIN, &key, &m, &sig, &siglen, err,
                             sizeof(err)) != 0)
            fail_msg("%s: sign got %s, want success", k->selector, err);
        signer_dkim_msg_clear(&m);
        signed_msg(&out, sig, msg, strlen(msg));
        st = verify(f, out.s, out.len);
        if ((st == DKIM_STAT_OK) == decoy)
            fail_msg("%s%s: verify got %s, want %s", k->selector,
                     decoy ? " (other parsed key)" : "", dkim_getresultstr(st),
                     decoy ? "a failure" : "pass");
        sb_free(&out);
        free(sig);
        EVP_PKEY_free(pk);
    }
    free(other.pem);
    free(other.record);
}

static void test_algo_names(void **state)
{
    static const struct {
        const char *db;
        int rc;
        enum signer_dkim_algo algo;
        const char *tag;
    } cases[] = {
        {"rsa", 0, SIGNER_DKIM_RSA_SHA256, "rsa-sha256"},
        {"ed25519", 0, SIGNER_DKIM_ED25519_SHA256, "ed25519-sha256"},
        {"RSA", -1, SIGNER_DKIM_RSA_SHA256, NULL},
        {"dsa", -1, SIGNER_DKIM_RSA_SHA256, NULL},
        {"", -1, SIGNER_DKIM_RSA_SHA256, NULL},
    };
    enum signer_dkim_algo got;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc = signer_dkim_algo_parse(cases[i].db, &got);

        if (rc != cases[i].rc)
            fail_msg("%s: got %d, want %d", cases[i].db, rc, cases[i].rc);
        if (rc == 0)
            assert_string_equal(signer_dkim_algo_name(got), cases[i].tag);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sign_verify),
        cmocka_unit_test(test_tamper),
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_parse_limits),
        cmocka_unit_test(test_sign_refused),
        cmocka_unit_test(test_key_check),
        cmocka_unit_test(test_algo_names),
        cmocka_unit_test(test_pkey_offer),
        cmocka_unit_test(test_sign_preparsed),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
