/* Unit tests for signer_keys: a key is served from the cache until its
 * file changes on disk (even to the same size), bad names and files are
 * refused, the key type is learnt from the file, and the cache never holds
 * more than SIGNER_KEYS_MAX keys. Keys are made with OpenSSL. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "../../signer/signer_keys.h"

struct fixture {
    char dir[64];
    char *ed_a, *ed_b; /* two Ed25519 keys: same PEM size */
    char *rsa;         /* RSA-2048 */
    char *rsa512;      /* too small to sign with, but a key */
    char *encrypted;   /* Ed25519 under a passphrase */
};

static char *pem_of(EVP_PKEY *pk, const char *pass)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *data, *out;
    long n;
    int rc;

    assert_non_null(pk);
    assert_non_null(bio);
    if (pass != NULL)
        rc = PEM_write_bio_PKCS8PrivateKey(bio, pk, EVP_aes_128_cbc(), NULL, 0,
                                           NULL, (void *)(uintptr_t)pass);
    else
        rc = PEM_write_bio_PrivateKey(bio, pk, NULL, NULL, 0, NULL, NULL);
    assert_int_equal(rc, 1);
    n = BIO_get_mem_data(bio, &data);
    out = strndup(data, (size_t)n);
    assert_non_null(out);
    BIO_free(bio);
    EVP_PKEY_free(pk);
    return out;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));

    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/test_signer_keys.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    f->ed_a = pem_of(EVP_PKEY_Q_keygen(NULL, NULL, "ED25519"), NULL);
    f->ed_b = pem_of(EVP_PKEY_Q_keygen(NULL, NULL, "ED25519"), NULL);
    f->rsa = pem_of(EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048), NULL);
    f->rsa512 = pem_of(EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)512), NULL);
    f->encrypted = pem_of(EVP_PKEY_Q_keygen(NULL, NULL, "ED25519"), "pw");
    assert_int_equal(strlen(f->ed_a), strlen(f->ed_b));
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[128];

    snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f->ed_a);
    free(f->ed_b);
    free(f->rsa);
    free(f->rsa512);
    free(f->encrypted);
    free(f);
    return 0;
}

static void write_at(const struct fixture *f, const char *name,
                     const char *data, size_t len)
{
    char path[256];
    FILE *fp;

    snprintf(path, sizeof(path), "%s/%s", f->dir, name);
    fp = fopen(path, "w");
    assert_non_null(fp);
    assert_int_equal(fwrite(data, 1, len, fp), len);
    assert_int_equal(fclose(fp), 0);
}

static void put(const struct fixture *f, const char *name, const char *pem)
{
    write_at(f, name, pem, strlen(pem));
}

static void expect_key(struct signer_keys *k, const char *name,
                       const char *want, int want_type, int want_bits)
{
    struct signer_keys_info info = {0, 0, NULL};
    const char *pem = NULL;
    size_t len = 0;
    int rc = signer_keys_get(k, name, &pem, &len, &info);

    if (rc != 0)
        fail_msg("%s: got %s, want the key", name, strerror(-rc));
    if (strcmp(pem, want) != 0 || len != strlen(want))
        fail_msg("%s: got another key than the file holds", name);
    if (info.type != want_type || info.bits != want_bits)
        fail_msg("%s: got type %d bits %d, want %d %d", name, info.type,
                 info.bits, want_type, want_bits);
    /* The parsed key comes with the text, for the signing threads. */
    if (info.pkey == NULL || EVP_PKEY_get_base_id(info.pkey) != want_type ||
        EVP_PKEY_get_bits(info.pkey) != want_bits)
        fail_msg("%s: got no parsed key or another one, want the file's", name);
}

static void expect_error(struct signer_keys *k, const char *name, int want)
{
    struct signer_keys_info info;
    const char *pem = NULL;
    size_t len = 0;
    int rc = signer_keys_get(k, name, &pem, &len, &info);

    if (rc != want)
        fail_msg("%s: got %d (%s), want %d (%s)", name, rc,
                 rc < 0 ? strerror(-rc) : "ok", want, strerror(-want));
}

/* Served from the cache until the file changes, then re-read. */
static void test_reload(void **state)
{
    struct fixture *f = *state;
    struct signer_keys *k = signer_keys_new(f->dir);
    char sub[128], from[256], to[256];
    const char *p1, *p2;
    struct signer_keys_info info;
    size_t len;

    snprintf(sub, sizeof(sub), "%s/example.org", f->dir);
    assert_int_equal(mkdir(sub, 0700), 0);
    put(f, "example.org/s1.pem", f->ed_a);
    expect_key(k, "example.org/s1.pem", f->ed_a, EVP_PKEY_ED25519, 256);
    /* Unchanged: the same cached bytes. */
    assert_int_equal(signer_keys_get(k, "example.org/s1.pem", &p1, &len, &info),
                     0);
    assert_int_equal(signer_keys_get(k, "example.org/s1.pem", &p2, &len, &info),
                     0);
    assert_ptr_equal(p1, p2);
    assert_int_equal(signer_keys_count(k), 1);

    /* Same size, new key, as a new file renamed into place. */
    put(f, "example.org/s1.new", f->ed_b);
    snprintf(from, sizeof(from), "%s/example.org/s1.new", f->dir);
    snprintf(to, sizeof(to), "%s/example.org/s1.pem", f->dir);
    assert_int_equal(rename(from, to), 0);
    expect_key(k, "example.org/s1.pem", f->ed_b, EVP_PKEY_ED25519, 256);
    /* Rewritten in place, another type. */
    put(f, "example.org/s1.pem", f->rsa);
    expect_key(k, "example.org/s1.pem", f->rsa, EVP_PKEY_RSA, 2048);
    expect_key(k, to, f->rsa, EVP_PKEY_RSA, 2048); /* absolute name */
    assert_int_equal(signer_keys_count(k), 1);

    /* Removed: the cached key is no longer used. */
    assert_int_equal(unlink(to), 0);
    expect_error(k, "example.org/s1.pem", -ENOENT);
    assert_int_equal(signer_keys_count(k), 0);
    signer_keys_free(&k);
    assert_null(k);
}

/* Names outside key_dir and files that are no key are refused. */
static void test_refused(void **state)
{
    struct fixture *f = *state;
    struct signer_keys *k = signer_keys_new(f->dir);
    static const char junk[] = "-----BEGIN PRIVATE KEY-----\nAAAA\n"
                               "-----END PRIVATE KEY-----\n";
    char *big = malloc(SIGNER_KEYS_MAX_FILE + 2), path[128];
    size_t n;

    assert_non_null(big);
    expect_error(k, "none.pem", -ENOENT);
    expect_error(k, "../etc/passwd", -EINVAL);
    expect_error(k, "a/../b.pem", -EINVAL);
    expect_error(k, "..", -EINVAL);
    expect_error(k, "", -EINVAL);
    snprintf(path, sizeof(path), "%s/d.pem", f->dir);
    assert_int_equal(mkdir(path, 0700), 0);
    expect_error(k, "d.pem", -EINVAL); /* a directory */
    /* "..x" is a plain name, not a way up. */
    put(f, "..x.pem", f->ed_a);
    expect_key(k, "..x.pem", f->ed_a, EVP_PKEY_ED25519, 256);

    put(f, "empty.pem", "");
    expect_error(k, "empty.pem", -EINVAL);
    put(f, "junk.pem", junk);
    expect_error(k, "junk.pem", -EBADMSG);
    put(f, "enc.pem", f->encrypted);
    expect_error(k, "enc.pem", -EBADMSG);
    put(f, "small.pem", f->rsa512);
    expect_key(k, "small.pem", f->rsa512, EVP_PKEY_RSA, 512);

    /* A key padded with trailing text up to the bound is read; one octet
     * more and the file is refused unread. */
    n = strlen(f->ed_a);
    memcpy(big, f->ed_a, n);
    memset(big + n, '\n', SIGNER_KEYS_MAX_FILE + 1 - n);
    write_at(f, "max.pem", big, SIGNER_KEYS_MAX_FILE);
    big[SIGNER_KEYS_MAX_FILE] = '\0';
    expect_key(k, "max.pem", big, EVP_PKEY_ED25519, 256);
    write_at(f, "max.pem", big, SIGNER_KEYS_MAX_FILE + 1);
    expect_error(k, "max.pem", -EFBIG);
    free(big);
    signer_keys_free(&k);
}

/* Past SIGNER_KEYS_MAX files the least recently used is dropped. */
static void test_bound(void **state)
{
    struct fixture *f = *state;
    struct signer_keys *k = signer_keys_new(f->dir);
    char name[32];
    int i;

    for (i = 0; i <= SIGNER_KEYS_MAX; i++) {
        snprintf(name, sizeof(name), "k%d.pem", i);
        put(f, name, f->ed_a);
        expect_key(k, name, f->ed_a, EVP_PKEY_ED25519, 256);
    }
    assert_int_equal(signer_keys_count(k), SIGNER_KEYS_MAX);
    signer_keys_free(&k);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reload),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_bound),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
