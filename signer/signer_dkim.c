/* signer_dkim: DKIM signatures through libopendkim; see signer_dkim.h. */
#include "signer_dkim.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <opendkim/dkim.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "../common/limits.h"
#include "../common/xalloc.h"
#include "signer_pkey.h"

/* Header fields that carry what a reader sees or what threading relies on
 * (RFC 6376 5.4.1 lists them as the ones that should be signed). Fields
 * added on the way (Received, Return-Path) are left out so that later hops
 * do not break the signature. */
static const char *const signer_dkim_signed[] = {
    "from",         "subject",
    "date",         "to",
    "cc",           "reply-to",
    "message-id",   "in-reply-to",
    "references",   "mime-version",
    "content-type", "content-transfer-encoding",
    "content-id",   "content-description",
};
#define SIGNER_DKIM_NSIGNED                                                    \
    (sizeof(signer_dkim_signed) / sizeof(signer_dkim_signed[0]))

/* Over-signing (RFC 6376 8.15): h= names each of these once more than
 * present, so that an added second From or Subject breaks the signature. */
static const char *const signer_dkim_oversigned[] = {
    "from",
    "subject",
};
#define SIGNER_DKIM_NOVERSIGNED                                                \
    (sizeof(signer_dkim_oversigned) / sizeof(signer_dkim_oversigned[0]))

/* The body goes to libopendkim in pieces of this size. */
#define SIGNER_DKIM_BODY_CHUNK (64 * 1024)

#define SIGNER_DKIM_HDR_NAME "DKIM-Signature"

#if defined(__SANITIZE_ADDRESS__)
/* libopendkim 2.11.0~beta2 (Debian 12) never frees what it loads for an
 * ed25519-sha256 signature (dkim_free() lacks that case; fixed upstream
 * after 2.11.0): the key it parses (about 600 octets; a key handed over by
 * signer_pkey is released by signer_dkim_sign() instead) and its own small
 * buffers (about 80 octets). Sanitized builds name it a known leak; full
 * unwinding lets the rule match allocations made deep
 * inside OpenSSL. */
const char *__asan_default_options(void);
const char *__lsan_default_suppressions(void);

const char *__asan_default_options(void)
{
    return "fast_unwind_on_malloc=0";
}

const char *__lsan_default_suppressions(void)
{
    return "leak:dkim_privkey_load\n";
}
#endif

struct signer_dkim {
    DKIM_LIB *lib; /* owned */
    /* libopendkim took a parsed key from signer_pkey at the start-up
     * probe (signer_dkim_probe). */
    int handoff;
    /* libopendkim keeps the reference of an ed25519 key it was handed:
     * signer_dkim_sign() drops it after each such signature. */
    int ed25519_kept;
    /* NULL-terminated name lists handed to libopendkim, which may keep
     * pointers to them for the life of the library handle. */
    const char *signhdrs[SIGNER_DKIM_NSIGNED + 1];
    const char *oversignhdrs[SIGNER_DKIM_NOVERSIGNED + 1];
};

/* libopendkim's prototypes take unsigned char pointers without const for
 * input it only reads; this one place converts. */
static unsigned char *signer_dkim_uc(const char *s)
{
    return (unsigned char *)(uintptr_t)s;
}

static const char *signer_dkim_errstr(DKIM *h, DKIM_STAT st)
{
    const char *e = h != NULL ? dkim_geterror(h) : NULL;

    if (e != NULL && *e != '\0')
        return e;
    return dkim_getresultstr(st);
}

static int signer_dkim_setopt(struct signer_dkim *d, int opt, void *val,
                              size_t len, const char *name, char *err,
                              size_t errlen)
{
    DKIM_STAT st = dkim_options(d->lib, DKIM_OP_SETOPT, opt, val, len);

    if (st != DKIM_STAT_OK) {
        snprintf(err, errlen, "libopendkim: cannot set %s: %s", name,
                 dkim_getresultstr(st));
        return -1;
    }
    return 0;
}

static int signer_dkim_configure(struct signer_dkim *d, char *err,
                                 size_t errlen)
{
    unsigned int flags = 0;
    size_t i;

    if (!dkim_libfeature(d->lib, DKIM_FEATURE_ED25519) ||
        !dkim_libfeature(d->lib, DKIM_FEATURE_OVERSIGN)) {
        snprintf(err, errlen,
                 "libopendkim lacks ed25519 or over-signing support");
        return -1;
    }
    for (i = 0; i < SIGNER_DKIM_NSIGNED; i++)
        d->signhdrs[i] = signer_dkim_signed[i];
    d->signhdrs[i] = NULL;
    for (i = 0; i < SIGNER_DKIM_NOVERSIGNED; i++)
        d->oversignhdrs[i] = signer_dkim_oversigned[i];
    d->oversignhdrs[i] = NULL;

    /* The queued message has CRLF line ends already; the library must not
     * rewrite them. */
    if (dkim_options(d->lib, DKIM_OP_GETOPT, DKIM_OPTS_FLAGS, &flags,
                     sizeof(flags)) != DKIM_STAT_OK)
        flags = DKIM_LIBFLAGS_DEFAULT;
    flags &= ~(unsigned int)(DKIM_LIBFLAGS_FIXCRLF | DKIM_LIBFLAGS_SIGNLEN);
    if (signer_dkim_setopt(d, DKIM_OPTS_FLAGS, &flags, sizeof(flags), "flags",
                           err, errlen) < 0)
        return -1;
    /* For these two options libopendkim wants the size of the pointer to
     * the list, not of the list. */
    if (signer_dkim_setopt(d, DKIM_OPTS_SIGNHDRS, d->signhdrs, sizeof(char **),
                           "signed headers", err, errlen) < 0)
        return -1;
    return signer_dkim_setopt(d, DKIM_OPTS_OVERSIGNHDRS, d->oversignhdrs,
                              sizeof(char **), "over-signed headers", err,
                              errlen);
}

static void signer_dkim_probe(struct signer_dkim *d);

struct signer_dkim *signer_dkim_new(char *err, size_t errlen)
{
    struct signer_dkim *d = xcalloc(1, sizeof(*d));

    d->lib = dkim_init(NULL, NULL);
    if (d->lib == NULL) {
        snprintf(err, errlen, "libopendkim: dkim_init failed");
        free(d);
        return NULL;
    }
    if (signer_dkim_configure(d, err, errlen) < 0) {
        signer_dkim_free(&d);
        return NULL;
    }
    signer_dkim_probe(d);
    return d;
}

void signer_dkim_free(struct signer_dkim **dp)
{
    struct signer_dkim *d = *dp;

    if (d == NULL)
        return;
    if (d->lib != NULL)
        dkim_close(d->lib);
    free(d);
    *dp = NULL;
}

int signer_dkim_algo_parse(const char *name, enum signer_dkim_algo *algo_r)
{
    if (strcmp(name, "rsa") == 0) {
        *algo_r = SIGNER_DKIM_RSA_SHA256;
        return 0;
    }
    if (strcmp(name, "ed25519") == 0) {
        *algo_r = SIGNER_DKIM_ED25519_SHA256;
        return 0;
    }
    return -1;
}

const char *signer_dkim_algo_name(enum signer_dkim_algo algo)
{
    return algo == SIGNER_DKIM_ED25519_SHA256 ? "ed25519-sha256" : "rsa-sha256";
}

/* A field name (RFC 5322 2.2: printable ASCII but colon) followed by
 * optional white space (obsolete syntax, 4.5.3) and a colon. A semicolon
 * could not be listed in h= and is refused too. */
static int signer_dkim_name_ok(const char *line, size_t len)
{
    size_t i = 0;

    while (i < len && line[i] > ' ' && line[i] < 127 && line[i] != ':' &&
           line[i] != ';')
        i++;
    if (i == 0)
        return 0;
    while (i < len && (line[i] == ' ' || line[i] == '\t'))
        i++;
    return i < len && line[i] == ':';
}

/* Appends a field, growing the list by doubling up to the bound. */
static int signer_dkim_add_field(struct signer_dkim_msg *m, size_t *cap,
                                 size_t off, size_t len)
{
    if (m->nfields == SG_MAX_HEADER_COUNT)
        return -1;
    if (m->nfields == *cap) {
        *cap = *cap == 0 ? 32 : *cap * 2;
        if (*cap > SG_MAX_HEADER_COUNT)
            *cap = SG_MAX_HEADER_COUNT;
        m->fields = xrealloc(m->fields, *cap * sizeof(*m->fields));
    }
    m->fields[m->nfields].off = off;
    m->fields[m->nfields].len = len;
    m->nfields++;
    return 0;
}

/* Handles one header line (without its CRLF) at data + pos. 0, or -1 with
 * the reason in *err_r. */
static int signer_dkim_header_line(struct signer_dkim_msg *m, size_t *cap,
                                   size_t pos, size_t linelen,
                                   const char **err_r)
{
    const char *line = m->data + pos;
    struct signer_dkim_field *f;

    if (memchr(line, '\r', linelen) != NULL) {
        *err_r = "malformed header";
        return -1;
    }
    if (line[0] == ' ' || line[0] == '\t') {
        if (m->nfields == 0) {
            *err_r = "malformed header";
            return -1;
        }
        f = &m->fields[m->nfields - 1];
        f->len = pos + linelen - f->off;
        if (f->len > SG_MAX_HEADER_FIELD) {
            *err_r = "header field too long";
            return -1;
        }
        return 0;
    }
    if (!signer_dkim_name_ok(line, linelen)) {
        *err_r = "malformed header";
        return -1;
    }
    if (linelen > SG_MAX_HEADER_FIELD) {
        *err_r = "header field too long";
        return -1;
    }
    if (signer_dkim_add_field(m, cap, pos, linelen) < 0) {
        *err_r = "too many header fields";
        return -1;
    }
    return 0;
}

static int signer_dkim_split(struct signer_dkim_msg *m, const char **err_r)
{
    size_t pos = 0, cap = 0, room, linelen;
    const char *lf;

    m->body_off = m->len;
    while (pos < m->len) {
        /* Search no further than the section may reach. */
        room = m->len - pos;
        if (room > SG_MAX_HEADER_SECTION - pos + 2)
            room = SG_MAX_HEADER_SECTION - pos + 2;
        lf = memchr(m->data + pos, '\n', room);
        if (lf == NULL) {
            *err_r = room < m->len - pos ? "header section too large"
                                         : "malformed header";
            return -1;
        }
        linelen = (size_t)(lf - (m->data + pos));
        if (linelen == 0 || m->data[pos + linelen - 1] != '\r') {
            *err_r = "malformed header"; /* bare LF */
            return -1;
        }
        linelen--; /* without CR */
        if (linelen == 0) {
            m->body_off = pos + 2;
            break;
        }
        if (signer_dkim_header_line(m, &cap, pos, linelen, err_r) < 0)
            return -1;
        pos += linelen + 2;
        if (pos > SG_MAX_HEADER_SECTION) {
            *err_r = "header section too large";
            return -1;
        }
    }
    if (m->nfields == 0) {
        *err_r = "no header";
        return -1;
    }
    return 0;
}

int signer_dkim_msg_parse(struct signer_dkim_msg *m, const char *data,
                          size_t len, const char **err_r)
{
    memset(m, 0, sizeof(*m));
    m->data = data;
    m->len = len;
    if (signer_dkim_split(m, err_r) < 0) {
        signer_dkim_msg_clear(m);
        return -1;
    }
    return 0;
}

void signer_dkim_msg_clear(struct signer_dkim_msg *m)
{
    free(m->fields);
    memset(m, 0, sizeof(*m));
}

int signer_dkim_key_check(enum signer_dkim_algo algo, int type, int bits,
                          char *err, size_t errlen)
{
    int want =
        algo == SIGNER_DKIM_ED25519_SHA256 ? EVP_PKEY_ED25519 : EVP_PKEY_RSA;

    if (type != want) {
        snprintf(err, errlen, "key unusable: not an %s key",
                 signer_dkim_algo_name(algo));
        return -1;
    }
    if (want == EVP_PKEY_RSA && bits < SG_MIN_RSA_BITS) {
        snprintf(err, errlen, "key unusable: RSA key under %d bits",
                 SG_MIN_RSA_BITS);
        return -1;
    }
    return 0;
}

/* Feeds the parsed message to a signing handle. */
static DKIM_STAT signer_dkim_feed(DKIM *h, const struct signer_dkim_msg *m)
{
    DKIM_STAT st = DKIM_STAT_OK;
    size_t i, off, n;

    for (i = 0; i < m->nfields && st == DKIM_STAT_OK; i++)
        st = dkim_header(h, signer_dkim_uc(m->data + m->fields[i].off),
                         m->fields[i].len);
    if (st == DKIM_STAT_OK)
        st = dkim_eoh(h);
    for (off = m->body_off; off < m->len && st == DKIM_STAT_OK; off += n) {
        n = m->len - off;
        if (n > SIGNER_DKIM_BODY_CHUNK)
            n = SIGNER_DKIM_BODY_CHUNK;
        st = dkim_body(h, signer_dkim_uc(m->data + off), n);
    }
    if (st == DKIM_STAT_OK)
        st = dkim_eom(h, NULL);
    return st;
}

/* Builds "DKIM-Signature: VALUE\r\n" with every fold as CRLF HTAB, whatever
 * line end the library used between the folded lines. */
static char *signer_dkim_field(const unsigned char *val, size_t len,
                               size_t *len_r)
{
    static const char name[] = SIGNER_DKIM_HDR_NAME ": ";
    char *out = xmalloc(sizeof(name) - 1 + 2 * len + 3);
    size_t o = sizeof(name) - 1, i;

    memcpy(out, name, o);
    while (len > 0 && (val[len - 1] == '\r' || val[len - 1] == '\n'))
        len--;
    for (i = 0; i < len; i++) {
        if (val[i] == '\r')
            continue;
        if (val[i] == '\n')
            out[o++] = '\r';
        out[o++] = (char)val[i];
    }
    out[o++] = '\r';
    out[o++] = '\n';
    out[o] = '\0';
    *len_r = o;
    return out;
}

/* signer_dkim_sign() without the reference bookkeeping: *handed_r says
 * how many references to key->pkey libopendkim was given. */
static int signer_dkim_sign1(struct signer_dkim *d, const char *id,
                             const char *domain,
                             const struct signer_dkim_key *key,
                             const struct signer_dkim_msg *m, char **sig_r,
                             size_t *siglen_r, char *err, size_t errlen,
                             unsigned *handed_r)
{
    DKIM_STAT st = DKIM_STAT_OK;
    DKIM *h;
    unsigned char *val = NULL;
    size_t vlen = 0;
    dkim_alg_t alg = key->algo == SIGNER_DKIM_ED25519_SHA256
                         ? DKIM_SIGN_ED25519SHA256
                         : DKIM_SIGN_RSASHA256;

    if (key->pkey != NULL)
        signer_pkey_offer(key->pem, strlen(key->pem), key->pkey);
    h = dkim_sign(d->lib, signer_dkim_uc(id), NULL, signer_dkim_uc(key->pem),
                  signer_dkim_uc(key->selector), signer_dkim_uc(domain),
                  DKIM_CANON_RELAXED, DKIM_CANON_RELAXED, alg, -1, &st);
    if (h == NULL) {
        *handed_r = signer_pkey_withdraw();
        snprintf(err, errlen, "cannot start signature: %s",
                 dkim_getresultstr(st));
        return -1;
    }
    st = signer_dkim_feed(h, m);
    if (st == DKIM_STAT_OK)
        st = dkim_getsighdr_d(h, sizeof(SIGNER_DKIM_HDR_NAME ": ") - 1, &val,
                              &vlen);
    if (st != DKIM_STAT_OK || val == NULL) {
        snprintf(err, errlen, "signing failed: %s", signer_dkim_errstr(h, st));
        dkim_free(h);
        *handed_r = signer_pkey_withdraw();
        return -1;
    }
    *sig_r = signer_dkim_field(val, vlen, siglen_r);
    dkim_free(h);
    *handed_r = signer_pkey_withdraw();
    return 0;
}

int signer_dkim_sign(struct signer_dkim *d, const char *id, const char *domain,
                     const struct signer_dkim_key *key,
                     const struct signer_dkim_msg *m, char **sig_r,
                     size_t *siglen_r, char *err, size_t errlen)
{
    unsigned handed = 0;
    int rc = signer_dkim_sign1(d, id, domain, key, m, sig_r, siglen_r, err,
                               errlen, &handed);

    /* The handle is freed: what libopendkim kept is ours to drop. */
    if (key->algo == SIGNER_DKIM_ED25519_SHA256 && d->ed25519_kept)
        while (handed-- > 0)
            EVP_PKEY_free(key->pkey);
    return rc;
}

int signer_dkim_handoff(const struct signer_dkim *d)
{
    return d->handoff;
}

/* The PEM text of pk (heap string), or NULL. */
static char *signer_dkim_pem_of(EVP_PKEY *pk)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *data = NULL, *out = NULL;
    long n;

    if (bio != NULL &&
        PEM_write_bio_PrivateKey(bio, pk, NULL, NULL, 0, NULL, NULL) == 1) {
        n = BIO_get_mem_data(bio, &data);
        if (n > 0 && data != NULL)
            out = xstrndup(data, (size_t)n);
    }
    BIO_free(bio);
    return out;
}

/* libopendkim 2.11.0~beta2 never releases the key it loads for an
 * ed25519-sha256 signature (see the leak note above). Signs one line with
 * a throw-away Ed25519 key handed over through signer_pkey and watches
 * whether the key object outlives our own reference: if so, the library
 * kept one, and signer_dkim_sign() drops it for the library after each
 * ed25519 signature from then on; a library that releases its keys is
 * left alone. Also learns whether the hand-over works at all. */
static void signer_dkim_probe(struct signer_dkim *d)
{
    static const char msg[] = "From: probe@example.org\r\n\r\nprobe\r\n";
    EVP_PKEY *pk = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    struct signer_dkim_key key = {"probe", SIGNER_DKIM_ED25519_SHA256, NULL,
                                  pk};
    struct signer_dkim_msg m;
    const char *perr = NULL;
    char *pem = NULL, *sig = NULL, err[256];
    size_t siglen = 0;
    unsigned handed = 0;
    int freed = 0;

    ERR_clear_error();
    if (pk == NULL)
        return;
    pem = signer_dkim_pem_of(pk);
    key.pem = pem;
    if (pem != NULL && signer_pkey_watch(pk, &freed) == 0 &&
        signer_dkim_msg_parse(&m, msg, sizeof(msg) - 1, &perr) == 0) {
        if (signer_dkim_sign1(d, "probe", "example.org", &key, &m, &sig,
                              &siglen, err, sizeof(err), &handed) == 0)
            d->handoff = handed > 0;
        signer_dkim_msg_clear(&m);
        free(sig);
    }
    EVP_PKEY_free(pk);
    if (handed > 0 && !freed) {
        d->ed25519_kept = 1;
        while (handed-- > 0 && !freed)
            EVP_PKEY_free(pk);
    }
    if (pem != NULL) {
        explicit_bzero(pem, strlen(pem));
        free(pem);
    }
    ERR_clear_error();
}
