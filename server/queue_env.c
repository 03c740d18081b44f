/* queue_env: the envelope block of a queue file (format in queue.h and
 * docs/queue.md): parsing, with every bound checked, for the runner, the
 * admin tool and the tests. Any thread. */
#include "queue.h"

#include <stdlib.h>
#include <string.h>

#include "../common/xalloc.h"

/* The envelope keys, each with where its value goes. */
enum queue_key {
    QK_ID,
    QK_TIME,
    QK_SESSION,
    QK_MEMBER,
    QK_SENDER,
    QK_ATTEMPTS,
    QK_NEXT,
    QK_RCPT,
    QK_SIGN,
    QK_WARNED,
    QK_COUNT
};

static const char *const queue_keys[QK_COUNT] = {
    "id",       "time", "session", "member", "sender",
    "attempts", "next", "rcpt",    "sign",   "warned",
};

/* Keys that older files lack; all others must appear. */
static int queue_key_optional(int k)
{
    return k == QK_SIGN || k == QK_WARNED;
}

/* Parses a decimal number of at most max, no sign, no leading zeros
 * beyond "0". 0 ok, -1 bad. */
static int queue_parse_num(const char *s, size_t len, long long max,
                           long long *r)
{
    long long v = 0;

    if (len == 0 || len > 19 || (len > 1 && s[0] == '0'))
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        long long d = s[i] - '0';
        /* The second test catches a digit alone over a small max. */
        if (v > (max - d) / 10 || v * 10 + d > max)
            return -1;
        v = v * 10 + d;
    }
    *r = v;
    return 0;
}

/* Copies a value of len octets into out (room for max + 1). 0 ok, -1 over
 * the bound or with a control character. */
static int queue_copy_value(const char *v, size_t len, char *out, size_t max)
{
    if (len > max)
        return -1;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c < 0x20 || c == 0x7f)
            return -1;
    }
    memcpy(out, v, len);
    out[len] = '\0';
    return 0;
}

/* Sets *err_r to why a file is refused; returns -1. */
static int queue_bad(const char **err_r, const char *why)
{
    *err_r = why;
    return -1;
}

/* Stores one "key value" line into env. 0 ok, -1 with *err_r. */
static int queue_env_line(struct queue_env *env, enum queue_key k,
                          const char *v, size_t vlen, size_t *rcap,
                          const char **err_r)
{
    long long num;

    switch (k) {
    case QK_ID:
        if (vlen != QUEUE_ID_LEN ||
            queue_copy_value(v, vlen, env->id, QUEUE_ID_LEN) < 0 ||
            !queue_id_valid(env->id))
            return queue_bad(err_r, "bad id");
        return 0;
    case QK_TIME:
    case QK_NEXT:
        if (queue_parse_num(v, vlen, QUEUE_MAX_TIME, &num) < 0)
            return queue_bad(err_r, "bad time");
        *(k == QK_TIME ? &env->time : &env->next) = num;
        return 0;
    case QK_ATTEMPTS:
        if (queue_parse_num(v, vlen, QUEUE_MAX_ATTEMPTS, &num) < 0)
            return queue_bad(err_r, "bad attempts");
        env->attempts = (unsigned)num;
        return 0;
    case QK_SESSION:
        if (queue_copy_value(v, vlen, env->session, sizeof(env->session) - 1) <
            0)
            return queue_bad(err_r, "bad session");
        return 0;
    case QK_MEMBER:
    case QK_SENDER:
        if (queue_copy_value(v, vlen,
                             k == QK_MEMBER ? env->member : env->sender,
                             SG_MAX_PATH) < 0)
            return queue_bad(err_r, "bad address");
        return 0;
    case QK_SIGN:
        if (vlen == 0 ||
            queue_copy_value(v, vlen, env->sign, SG_MAX_DOMAIN) < 0)
            return queue_bad(err_r, "bad sign domain");
        return 0;
    case QK_WARNED:
        if (queue_parse_num(v, vlen, 1, &num) < 0)
            return queue_bad(err_r, "bad warned");
        env->warned = (unsigned)num;
        return 0;
    case QK_RCPT:
        break;
    default:
        return queue_bad(err_r, "bad key");
    }
    if (env->nrcpt >= SG_MAX_RECIPIENTS)
        return queue_bad(err_r, "too many recipients");
    if (vlen == 0 || vlen > SG_MAX_PATH)
        return queue_bad(err_r, "bad recipient");
    if (env->nrcpt == *rcap) {
        *rcap = *rcap ? *rcap * 2 : 8;
        env->rcpt = xrealloc(env->rcpt, *rcap * sizeof(*env->rcpt));
    }
    env->rcpt[env->nrcpt] = xmalloc(vlen + 1);
    if (queue_copy_value(v, vlen, env->rcpt[env->nrcpt], SG_MAX_PATH) < 0) {
        free(env->rcpt[env->nrcpt]);
        return queue_bad(err_r, "bad recipient");
    }
    env->nrcpt++;
    return 0;
}

/* Splits one line "key value" (or "key" with an empty value) and hands it
 * to queue_env_line(); seen counts each key. 0 ok, -1 with *err_r. */
static int queue_parse_line(struct queue_env *env, const char *line, size_t len,
                            unsigned seen[QK_COUNT], size_t *rcap,
                            const char **err_r)
{
    const char *sp = memchr(line, ' ', len);
    size_t klen = sp ? (size_t)(sp - line) : len;
    const char *v = sp ? sp + 1 : line + len;
    size_t vlen = sp ? len - klen - 1 : 0;
    int k;

    for (k = 0; k < QK_COUNT; k++) {
        if (strlen(queue_keys[k]) == klen &&
            memcmp(queue_keys[k], line, klen) == 0)
            break;
    }
    if (k == QK_COUNT)
        return queue_bad(err_r, "unknown key");
    if (k != QK_RCPT && seen[k] > 0)
        return queue_bad(err_r, "duplicate key");
    seen[k]++;
    return queue_env_line(env, (enum queue_key)k, v, vlen, rcap, err_r);
}

int queue_env_parse(const char *buf, size_t len, struct queue_env *env,
                    size_t *body_off_r, const char **err_r)
{
    size_t magic = sizeof(QUEUE_MAGIC) - 1, pos, rcap = 0;
    size_t lim = len < SG_MAX_QUEUE_ENVELOPE ? len : SG_MAX_QUEUE_ENVELOPE;
    unsigned seen[QK_COUNT] = {0};

    memset(env, 0, sizeof(*env));
    if (len < magic || memcmp(buf, QUEUE_MAGIC, magic) != 0) {
        *err_r = "not a queue file";
        return -1;
    }
    for (pos = magic;;) {
        const char *nl = memchr(buf + pos, '\n', lim - pos);
        size_t ll;

        if (nl == NULL) {
            *err_r = lim < len ? "envelope too long" : "no end of envelope";
            goto bad;
        }
        ll = (size_t)(nl - (buf + pos));
        if (ll == 0) {
            pos++;
            break;
        }
        if (queue_parse_line(env, buf + pos, ll, seen, &rcap, err_r) < 0)
            goto bad;
        pos += ll + 1;
    }
    for (int k = 0; k < QK_COUNT; k++) {
        if (seen[k] == 0 && !queue_key_optional(k)) {
            *err_r = k == QK_RCPT ? "no recipients" : "missing key";
            goto bad;
        }
    }
    *body_off_r = pos;
    return 0;
bad:
    queue_env_clear(env);
    return -1;
}

void queue_env_clear(struct queue_env *env)
{
    for (size_t i = 0; i < env->nrcpt; i++)
        free(env->rcpt[i]);
    free(env->rcpt);
    env->rcpt = NULL;
    env->nrcpt = 0;
}
