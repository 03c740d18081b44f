/* signer_keys: private key file cache; see signer_keys.h. */
#include "signer_keys.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "../common/xalloc.h"

/* What tells that a file on disk is still the one we read. */
struct signer_keys_id {
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
    struct timespec ctime;
};

struct signer_keys_entry {
    struct signer_keys_entry *prev, *next; /* LRU list, most recent first */
    char *path;                            /* owned */
    struct signer_keys_id id;
    char *pem;  /* owned, NUL-terminated; wiped before free */
    size_t len; /* octets at pem without the NUL */
    /* info.pkey is owned: one reference. */
    struct signer_keys_info info;
};

struct signer_keys {
    char *key_dir; /* owned */
    struct signer_keys_entry *head, *tail;
    size_t count;
};

struct signer_keys *signer_keys_new(const char *key_dir)
{
    struct signer_keys *k = xcalloc(1, sizeof(*k));

    k->key_dir = xstrdup(key_dir);
    return k;
}

static void signer_keys_unlink(struct signer_keys *k,
                               struct signer_keys_entry *e)
{
    if (e->prev != NULL)
        e->prev->next = e->next;
    else
        k->head = e->next;
    if (e->next != NULL)
        e->next->prev = e->prev;
    else
        k->tail = e->prev;
    e->prev = e->next = NULL;
    k->count--;
}

static void signer_keys_push(struct signer_keys *k, struct signer_keys_entry *e)
{
    e->prev = NULL;
    e->next = k->head;
    if (k->head != NULL)
        k->head->prev = e;
    k->head = e;
    if (k->tail == NULL)
        k->tail = e;
    k->count++;
}

static void signer_keys_drop_pem(struct signer_keys_entry *e)
{
    if (e->pem != NULL) {
        explicit_bzero(e->pem, e->len);
        free(e->pem);
        e->pem = NULL;
    }
    e->len = 0;
    /* Signing threads that still use the key hold their own references. */
    EVP_PKEY_free(e->info.pkey);
    e->info.pkey = NULL;
}

static void signer_keys_entry_free(struct signer_keys_entry *e)
{
    signer_keys_drop_pem(e);
    free(e->path);
    free(e);
}

void signer_keys_free(struct signer_keys **kp)
{
    struct signer_keys *k = *kp;
    struct signer_keys_entry *e;

    if (k == NULL)
        return;
    while ((e = k->head) != NULL) {
        signer_keys_unlink(k, e);
        signer_keys_entry_free(e);
    }
    free(k->key_dir);
    free(k);
    *kp = NULL;
}

size_t signer_keys_count(const struct signer_keys *k)
{
    return k->count;
}

static void signer_keys_id_of(const struct stat *st, struct signer_keys_id *id)
{
    memset(id, 0, sizeof(*id));
    id->dev = st->st_dev;
    id->ino = st->st_ino;
    id->size = st->st_size;
    id->mtime = st->st_mtim;
    id->ctime = st->st_ctim;
}

static int signer_keys_id_eq(const struct signer_keys_id *a,
                             const struct signer_keys_id *b)
{
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime.tv_sec == b->mtime.tv_sec &&
           a->mtime.tv_nsec == b->mtime.tv_nsec &&
           a->ctime.tv_sec == b->ctime.tv_sec &&
           a->ctime.tv_nsec == b->ctime.tv_nsec;
}

/* A name from the database must stay under key_dir. */
static int signer_keys_name_ok(const char *name)
{
    const char *p = name;

    if (*name == '\0')
        return 0;
    while ((p = strstr(p, "..")) != NULL) {
        if ((p == name || p[-1] == '/') && (p[2] == '\0' || p[2] == '/'))
            return 0;
        p += 2;
    }
    return 1;
}

/* Reads the whole file at path into buf (cap octets, NUL added), its
 * identity into *id. Returns the length or a negative errno. */
static long signer_keys_read(const char *path, char *buf, size_t cap,
                             struct signer_keys_id *id)
{
    struct stat st;
    size_t have = 0;
    ssize_t n;
    int fd, err;

    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) < 0) {
        err = errno;
        close(fd);
        return -err;
    }
    signer_keys_id_of(&st, id);
    if (!S_ISREG(st.st_mode) || st.st_size > (off_t)(cap - 1)) {
        close(fd);
        return S_ISREG(st.st_mode) ? -EFBIG : -EINVAL;
    }
    for (;;) {
        n = read(fd, buf + have, cap - 1 - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        have += (size_t)n;
        if (have == cap - 1)
            break;
    }
    err = n < 0 ? errno : 0;
    close(fd);
    if (err != 0)
        return -err;
    if (have == 0)
        return -EINVAL;
    buf[have] = '\0';
    return (long)have;
}

static struct signer_keys_entry *signer_keys_find(struct signer_keys *k,
                                                  const char *path)
{
    struct signer_keys_entry *e;

    for (e = k->head; e != NULL; e = e->next)
        if (strcmp(e->path, path) == 0)
            return e;
    return NULL;
}

/* Whether e still holds what is on disk at its path. */
static int signer_keys_fresh(const struct signer_keys_entry *e)
{
    struct signer_keys_id now;
    struct stat st;

    if (e->pem == NULL || stat(e->path, &st) < 0)
        return 0;
    signer_keys_id_of(&st, &now);
    return signer_keys_id_eq(&now, &e->id);
}

/* An encrypted key must fail here, not prompt on a terminal. */
static int signer_keys_no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

/* Parses the key in pem into info (type, size, the key itself, owned by
 * the caller). 0, or -EBADMSG. */
static int signer_keys_parse(const char *pem, size_t len,
                             struct signer_keys_info *info)
{
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    EVP_PKEY *pk = NULL;

    if (bio != NULL)
        pk =
            PEM_read_bio_PrivateKey(bio, NULL, signer_keys_no_passphrase, NULL);
    ERR_clear_error();
    BIO_free(bio);
    if (pk == NULL)
        return -EBADMSG;
    info->type = EVP_PKEY_get_base_id(pk);
    info->bits = EVP_PKEY_get_bits(pk);
    info->pkey = pk;
    return 0;
}

/* (Re)reads e's file. On failure e holds no key: a stale key is never
 * used once its file changed. */
static int signer_keys_load(struct signer_keys_entry *e)
{
    char buf[SIGNER_KEYS_MAX_FILE + 1];
    struct signer_keys_id id;
    long n;

    signer_keys_drop_pem(e);
    n = signer_keys_read(e->path, buf, sizeof(buf), &id);
    if (n >= 0)
        n = signer_keys_parse(buf, (size_t)n, &e->info) < 0 ? -EBADMSG : n;
    if (n >= 0) {
        e->pem = xmalloc((size_t)n + 1);
        memcpy(e->pem, buf, (size_t)n + 1);
        e->len = (size_t)n;
        e->id = id;
    }
    explicit_bzero(buf, sizeof(buf));
    return n < 0 ? (int)n : 0;
}

int signer_keys_get(struct signer_keys *k, const char *key_file,
                    const char **pem_r, size_t *len_r,
                    struct signer_keys_info *info_r)
{
    char path[PATH_MAX];
    struct signer_keys_entry *e;
    int n, rc;

    if (!signer_keys_name_ok(key_file))
        return -EINVAL;
    if (key_file[0] == '/')
        n = snprintf(path, sizeof(path), "%s", key_file);
    else
        n = snprintf(path, sizeof(path), "%s/%s", k->key_dir, key_file);
    if (n < 0 || (size_t)n >= sizeof(path))
        return -ENAMETOOLONG;

    e = signer_keys_find(k, path);
    if (e != NULL) {
        signer_keys_unlink(k, e);
    } else {
        e = xcalloc(1, sizeof(*e));
        e->path = xstrdup(path);
    }
    if (!signer_keys_fresh(e)) {
        rc = signer_keys_load(e);
        if (rc < 0) {
            signer_keys_entry_free(e);
            return rc;
        }
    }
    signer_keys_push(k, e);
    while (k->count > SIGNER_KEYS_MAX && k->tail != e) {
        struct signer_keys_entry *old = k->tail;

        signer_keys_unlink(k, old);
        signer_keys_entry_free(old);
    }
    *pem_r = e->pem;
    *len_r = e->len;
    *info_r = e->info;
    return 0;
}
