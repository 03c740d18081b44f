/* signer_pkey: parsed keys for libopendkim; see signer_pkey.h. */
#include "signer_pkey.h"

#include <string.h>

#include <openssl/bio.h>
#include <openssl/pem.h>

/* This thread's offer: the PEM text libopendkim will read and its parsed
 * form. */
struct signer_pkey_offer {
    const char *pem; /* borrowed */
    size_t len;
    EVP_PKEY *pkey; /* borrowed; NULL: no offer */
    unsigned handed;
};

static _Thread_local struct signer_pkey_offer signer_pkey_cur;

void signer_pkey_offer(const char *pem, size_t len, EVP_PKEY *pkey)
{
    signer_pkey_cur.pem = pem;
    signer_pkey_cur.len = len;
    signer_pkey_cur.pkey = pkey;
    signer_pkey_cur.handed = 0;
}

unsigned signer_pkey_withdraw(void)
{
    unsigned n = signer_pkey_cur.handed;

    memset(&signer_pkey_cur, 0, sizeof(signer_pkey_cur));
    return n;
}

/* ex_data free callback: pkey is being freed; ptr is what
 * signer_pkey_watch() stored (NULL for every other key). */
static void signer_pkey_freed(void *parent, void *ptr, CRYPTO_EX_DATA *ad,
                              int idx, long argl, void *argp)
{
    (void)parent;
    (void)ad;
    (void)idx;
    (void)argl;
    (void)argp;
    if (ptr != NULL)
        *(int *)ptr = 1;
}

int signer_pkey_watch(EVP_PKEY *pkey, int *freed_r)
{
    int idx = EVP_PKEY_get_ex_new_index(0, NULL, NULL, NULL, signer_pkey_freed);

    *freed_r = 0;
    if (idx < 0 || EVP_PKEY_set_ex_data(pkey, idx, freed_r) != 1)
        return -1;
    return 0;
}

/* Replaces libcrypto's function of this name for the whole program (see
 * signer_pkey.h); the prototype is OpenSSL's, from <openssl/pem.h>. Only a
 * plain read into a new key (x NULL) from a memory BIO is answered from
 * the offer; the BIO is left as it is, since the caller frees it next. */
EVP_PKEY *PEM_read_bio_PrivateKey(BIO *bp, EVP_PKEY **x, pem_password_cb *cb,
                                  void *u)
{
    struct signer_pkey_offer *o = &signer_pkey_cur;
    char *data = NULL;
    long n;

    if (o->pkey != NULL && x == NULL && bp != NULL &&
        BIO_method_type(bp) == BIO_TYPE_MEM) {
        n = BIO_get_mem_data(bp, &data);
        if (n >= 0 && (size_t)n == o->len && data != NULL &&
            memcmp(data, o->pem, o->len) == 0 && EVP_PKEY_up_ref(o->pkey)) {
            o->handed++;
            return o->pkey;
        }
    }
    return PEM_read_bio_PrivateKey_ex(bp, x, cb, u, NULL, NULL);
}
