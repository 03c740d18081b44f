/* Unit tests for passwd: yescrypt hashing and verification, refusal of
 * malformed or foreign hashes, the dummy path for unknown logins, and
 * random passwords (length, alphabet, bounds). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../common/passwd.h"

#define HASH_MAX 512

/* What passwd_random may produce: no 0/O, 1/l/I. */
#define ALPHABET "23456789abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ"

struct pw_case {
    const char *name;
    const char *pw;
};

static const struct pw_case pw_cases[] = {
    {"plain", "correct horse battery staple"},
    {"short", "x"},
    {"empty", ""},
    {"utf8", "p\xc3\xa4ssw\xc3\xb6rd"},
    {"symbols", "$y$:!*\"'\\ \t"},
};

static void check_roundtrip(const char *name, const char *pw)
{
    char hash[HASH_MAX], hash2[HASH_MAX], wrong[2048];
    int got;

    if (passwd_hash(pw, hash, sizeof hash) != 0)
        fail_msg("%s: passwd_hash failed", name);
    if (strncmp(hash, "$y$", 3) != 0)
        fail_msg("%s: hash %s: got prefix %.3s, want $y$", name, hash, hash);
    got = passwd_verify(pw, hash);
    if (got != 1)
        fail_msg("%s: verify right password: got %d, want 1", name, got);
    snprintf(wrong, sizeof wrong, "%sx", pw);
    got = passwd_verify(wrong, hash);
    if (got != 0)
        fail_msg("%s: verify wrong password: got %d, want 0", name, got);
    /* A fresh salt each time: equal passwords give different hashes. */
    if (passwd_hash(pw, hash2, sizeof hash2) != 0)
        fail_msg("%s: second passwd_hash failed", name);
    if (strcmp(hash, hash2) == 0)
        fail_msg("%s: two hashes are equal (%s): salt not fresh", name, hash);
}

static void test_roundtrip(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof pw_cases / sizeof pw_cases[0]; i++)
        check_roundtrip(pw_cases[i].name, pw_cases[i].pw);
}

/* libxcrypt takes passphrases up to 511 octets (CRYPT_MAX_PASSPHRASE_SIZE
 * with its NUL); one more fails to hash and never verifies. */
static void test_long_password(void **state)
{
    char pw[513], hash[HASH_MAX];
    int got;

    (void)state;
    memset(pw, 'a', sizeof pw - 1);
    pw[512] = '\0';
    pw[511] = '\0';
    check_roundtrip("511 octets", pw);
    if (passwd_hash(pw, hash, sizeof hash) != 0)
        fail_msg("511 octets: passwd_hash failed");
    pw[511] = 'a';
    got = passwd_verify(pw, hash);
    if (got != 0)
        fail_msg("512 octets against the 511 hash: got %d, want 0", got);
    got = passwd_hash(pw, hash, sizeof hash);
    if (got != -1)
        fail_msg("512 octets: passwd_hash got %d, want -1", got);
}

struct bad_case {
    const char *name;
    const char *hash;
};

static const struct bad_case bad_cases[] = {
    {"empty", ""},
    {"locked", "*"},
    {"disabled", "!"},
    {"prefix only", "$y$"},
    {"garbage params", "$y$garbage"},
    {"unknown scheme", "$zz$abc$def"},
    /* crypt("pw", "ab"): valid traditional DES, refused on purpose. */
    {"traditional DES", "abzlUXK5ed5rs"},
    {"truncated yescrypt", "$y$j9T$AVSYiLQlmKeiR/QpC86C.1$"},
    {"no dollar", "y$j9T$AVSYiLQlmKeiR/QpC86C.1$x"},
};

static void test_malformed(void **state)
{
    int got;

    (void)state;
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        got = passwd_verify("pw", bad_cases[i].hash);
        if (got != 0)
            fail_msg("%s (%s): got %d, want 0", bad_cases[i].name,
                     bad_cases[i].hash, got);
    }
}

static void test_overlong_hash(void **state)
{
    char hash[4096];
    int got;

    (void)state;
    memset(hash, 'a', sizeof hash - 1);
    memcpy(hash, "$y$j9T$", 7);
    hash[sizeof hash - 1] = '\0';
    got = passwd_verify("pw", hash);
    if (got != 0)
        fail_msg("4095-octet hash: got %d, want 0", got);
}

static void test_null_hash(void **state)
{
    int got;

    (void)state;
    got = passwd_verify("anything", NULL);
    if (got != 0)
        fail_msg("NULL hash: got %d, want 0", got);
}

static void test_hash_out_too_small(void **state)
{
    char out[16];
    int got;

    (void)state;
    got = passwd_hash("pw", out, sizeof out);
    if (got != -1)
        fail_msg("16-octet buffer: got %d, want -1", got);
}

struct rand_case {
    size_t len;
    size_t outlen;
    int want; /* return value */
};

static const struct rand_case rand_cases[] = {
    {1, 2, 0},     {20, 21, 0},  {20, 64, 0}, {64, 65, 0},
    {200, 201, 0}, {20, 20, -1}, {0, 8, -1},  {8, 1, -1},
};

static void check_random(const struct rand_case *c)
{
    char out[256];
    int got;

    memset(out, '#', sizeof out);
    got = passwd_random(out, c->outlen, c->len);
    if (got != c->want)
        fail_msg("len %zu outlen %zu: got %d, want %d", c->len, c->outlen, got,
                 c->want);
    if (got != 0)
        return;
    if (strlen(out) != c->len)
        fail_msg("len %zu: got length %zu", c->len, strlen(out));
    for (size_t i = 0; i < c->len; i++)
        if (strchr(ALPHABET, out[i]) == NULL)
            fail_msg("len %zu: character %zu is %c, not in the alphabet",
                     c->len, i, out[i]);
}

static void test_random(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof rand_cases / sizeof rand_cases[0]; i++)
        check_random(&rand_cases[i]);
}

/* Over many draws every character of the alphabet shows up and none of
 * the ambiguous ones does. */
static void test_random_alphabet(void **state)
{
    char out[4097];
    int seen[256] = {0};

    (void)state;
    if (passwd_random(out, sizeof out, sizeof out - 1) != 0)
        fail_msg("passwd_random 4096 failed");
    for (size_t i = 0; i < sizeof out - 1; i++)
        seen[(unsigned char)out[i]]++;
    for (const char *p = "0O1lI"; *p != '\0'; p++)
        if (seen[(unsigned char)*p] != 0)
            fail_msg("ambiguous %c drawn %d times", *p,
                     seen[(unsigned char)*p]);
    for (const char *p = ALPHABET; *p != '\0'; p++)
        if (seen[(unsigned char)*p] == 0)
            fail_msg("%c never drawn in 4096 characters", *p);
}

static void test_random_differs(void **state)
{
    char a[21], b[21];

    (void)state;
    if (passwd_random(a, sizeof a, 20) != 0 ||
        passwd_random(b, sizeof b, 20) != 0)
        fail_msg("passwd_random failed");
    if (strcmp(a, b) == 0)
        fail_msg("two random passwords are equal: %s", a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_long_password),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_overlong_hash),
        cmocka_unit_test(test_null_hash),
        cmocka_unit_test(test_hash_out_too_small),
        cmocka_unit_test(test_random),
        cmocka_unit_test(test_random_alphabet),
        cmocka_unit_test(test_random_differs),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
