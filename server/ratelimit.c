/* ratelimit: in-memory abuse counters of the SMTP worker; see
 * ratelimit.h. A chained hash table of entries, one struct for every kind,
 * keyed by kind and text; SipHash-2-4 with a random key spreads them. */
#include "ratelimit.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "../common/limits.h"
#include "../common/xalloc.h"

/* Buckets of the hash table (a power of two). */
#define RL_BUCKETS (1U << 15)
/* Every this many new entries, idle ones are swept. */
#define RL_SWEEP_EVERY 4096
/* Key text: an address key, '\n', and an account cut to SG_MAX_PATH. */
#define RL_IP_KEY 64
#define RL_KEY_MAX (RL_IP_KEY + 1 + SG_MAX_PATH)
#define RL_HOUR_MS 3600000ULL
#define RL_DAY_MS 86400000ULL
#define RL_MINUTE_MS 60000ULL

enum rl_kind {
    RL_IP,
    RL_PAIR, /* account and address */
    RL_MEMBER,
    RL_TENANT,
};

struct rl_entry {
    struct rl_entry *next; /* owned: the rest of the chain */
    uint64_t used_us;      /* last touched, for eviction */
    uint64_t tat[2];       /* GCRA arrival times: conn rate; msg, rcpt */
    uint64_t fail_us;      /* last AUTH failure */
    uint64_t block_us;     /* AUTH blocked until */
    unsigned conns;        /* open connections (RL_IP) */
    unsigned fails;        /* AUTH failures within the window */
    enum rl_kind kind;
    char key[]; /* NUL-terminated */
};

struct ratelimit {
    struct ratelimit_limits lim;
    size_t max, count, inserts;
    uint64_t sip[2];                     /* SipHash key */
    struct rl_entry *bucket[RL_BUCKETS]; /* owned chains */
};

/* ---- SipHash-2-4 (Aumasson, Bernstein) ------------------------------- */

#define RL_ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

static void rl_sipround(uint64_t v[4])
{
    v[0] += v[1];
    v[1] = RL_ROTL(v[1], 13);
    v[1] ^= v[0];
    v[0] = RL_ROTL(v[0], 32);
    v[2] += v[3];
    v[3] = RL_ROTL(v[3], 16);
    v[3] ^= v[2];
    v[0] += v[3];
    v[3] = RL_ROTL(v[3], 21);
    v[3] ^= v[0];
    v[2] += v[1];
    v[1] = RL_ROTL(v[1], 17);
    v[1] ^= v[2];
    v[2] = RL_ROTL(v[2], 32);
}

static uint64_t rl_siphash(const uint64_t k[2], const unsigned char *in,
                           size_t len)
{
    uint64_t v[4] = {k[0] ^ 0x736f6d6570736575ULL, k[1] ^ 0x646f72616e646f6dULL,
                     k[0] ^ 0x6c7967656e657261ULL,
                     k[1] ^ 0x7465646279746573ULL};
    uint64_t m, b = (uint64_t)len << 56;
    size_t i, j;

    for (i = 0; i + 8 <= len; i += 8) {
        for (m = 0, j = 0; j < 8; j++)
            m |= (uint64_t)in[i + j] << (8 * j);
        v[3] ^= m;
        rl_sipround(v);
        rl_sipround(v);
        v[0] ^= m;
    }
    for (j = 0; i + j < len; j++)
        b |= (uint64_t)in[i + j] << (8 * j);
    v[3] ^= b;
    rl_sipround(v);
    rl_sipround(v);
    v[0] ^= b;
    v[2] ^= 0xff;
    for (j = 0; j < 4; j++)
        rl_sipround(v);
    return v[0] ^ v[1] ^ v[2] ^ v[3];
}

/* ---- the table ------------------------------------------------------- */

void ratelimit_limits_from_cfg(const struct cfg *cfg,
                               struct ratelimit_limits *l)
{
    memset(l, 0, sizeof(*l));
    l->max_conn_per_ip = cfg->max_conn_per_ip;
    l->conn_rate_per_ip = cfg->conn_rate_per_ip;
    l->auth_fail_limit_ip = cfg->auth_fail_limit_ip;
    l->auth_fail_limit_account = cfg->auth_fail_limit_account;
    l->auth_block_ms = cfg->auth_block_time_ms;
    l->auth_fail_delay_ms = cfg->auth_fail_delay_ms;
    l->member_msg_per_hour = cfg->member_msg_per_hour;
    l->member_rcpt_per_day = cfg->member_rcpt_per_day;
    l->tenant_msg_per_hour = cfg->tenant_msg_per_hour;
}

struct ratelimit *ratelimit_new(const struct ratelimit_limits *l,
                                size_t max_entries)
{
    struct ratelimit *rl = xcalloc(1, sizeof(*rl));

    rl->lim = *l;
    if (max_entries < 1)
        max_entries = 1;
    rl->max = max_entries < RATELIMIT_MAX_ENTRIES ? max_entries
                                                  : RATELIMIT_MAX_ENTRIES;
    /* Without random bytes the table still works; only its resistance to
     * chosen collisions is weaker. */
    if (getrandom(rl->sip, sizeof(rl->sip), 0) != (ssize_t)sizeof(rl->sip)) {
        rl->sip[0] = (uint64_t)time(NULL);
        rl->sip[1] = (uint64_t)(uintptr_t)rl;
    }
    return rl;
}

void ratelimit_free(struct ratelimit **rp)
{
    struct ratelimit *rl = *rp;
    size_t i;

    if (rl == NULL)
        return;
    for (i = 0; i < RL_BUCKETS; i++) {
        struct rl_entry *e = rl->bucket[i], *next;
        for (; e != NULL; e = next) {
            next = e->next;
            free(e);
        }
    }
    free(rl);
    *rp = NULL;
}

size_t ratelimit_count(const struct ratelimit *rl)
{
    return rl->count;
}

/* 1 if e holds nothing that the defaults would not give back. */
static int rl_idle(const struct ratelimit *rl, const struct rl_entry *e,
                   uint64_t now_us)
{
    uint64_t window = (uint64_t)rl->lim.auth_block_ms * 1000;

    return e->conns == 0 && e->tat[0] <= now_us && e->tat[1] <= now_us &&
           e->block_us <= now_us &&
           (e->fails == 0 || now_us - e->fail_us >= window);
}

static void rl_sweep(struct ratelimit *rl, uint64_t now_us)
{
    size_t i;

    for (i = 0; i < RL_BUCKETS; i++) {
        struct rl_entry **pp = &rl->bucket[i];
        while (*pp != NULL) {
            struct rl_entry *e = *pp;
            if (rl_idle(rl, e, now_us)) {
                *pp = e->next;
                free(e);
                rl->count--;
            } else {
                pp = &e->next;
            }
        }
    }
}

/* The table is full of live entries: forgets the one without open
 * connections that was used longest ago. There is one, since there are
 * more entries than connections. */
static void rl_evict(struct ratelimit *rl)
{
    struct rl_entry **best = NULL, *e;
    size_t i;

    for (i = 0; i < RL_BUCKETS; i++) {
        struct rl_entry **pp;
        for (pp = &rl->bucket[i]; *pp != NULL; pp = &(*pp)->next) {
            if ((*pp)->conns == 0 &&
                (best == NULL || (*pp)->used_us < (*best)->used_us))
                best = pp;
        }
    }
    if (best == NULL)
        return;
    e = *best;
    *best = e->next;
    free(e);
    rl->count--;
}

static size_t rl_bucket(const struct ratelimit *rl, enum rl_kind kind,
                        const char *key, size_t len)
{
    unsigned char buf[RL_KEY_MAX + 1];

    buf[0] = (unsigned char)kind;
    memcpy(buf + 1, key, len);
    return (size_t)(rl_siphash(rl->sip, buf, len + 1) & (RL_BUCKETS - 1));
}

/* The entry of (kind, key); made when create is 1 and there is none,
 * else NULL. */
static struct rl_entry *rl_get(struct ratelimit *rl, enum rl_kind kind,
                               const char *key, uint64_t now_us, int create)
{
    size_t len = strlen(key), b;
    struct rl_entry *e;

    if (len > RL_KEY_MAX)
        len = RL_KEY_MAX;
    b = rl_bucket(rl, kind, key, len);
    for (e = rl->bucket[b]; e != NULL; e = e->next) {
        if (e->kind == kind && strncmp(e->key, key, len) == 0 &&
            e->key[len] == '\0') {
            e->used_us = now_us;
            return e;
        }
    }
    if (!create)
        return NULL;
    if (++rl->inserts % RL_SWEEP_EVERY == 0 || rl->count >= rl->max)
        rl_sweep(rl, now_us);
    if (rl->count >= rl->max)
        rl_evict(rl);
    e = xcalloc(1, sizeof(*e) + len + 1);
    e->kind = kind;
    e->used_us = now_us;
    memcpy(e->key, key, len);
    e->key[len] = '\0';
    e->next = rl->bucket[b];
    rl->bucket[b] = e;
    rl->count++;
    return e;
}

/* GCRA: a bucket of limit per period_ms whose state is *tat. 0 if cost
 * more fits at now_us (the new state in *next_r), -1 if not. A limit of 0
 * is no limit. */
static int rl_gcra(uint64_t tat, unsigned limit, uint64_t period_ms,
                   uint64_t cost, uint64_t now_us, uint64_t *next_r)
{
    uint64_t period = period_ms * 1000, interval, t;

    *next_r = tat;
    if (limit == 0)
        return 0;
    if (cost > limit)
        return -1;
    interval = period / limit > 0 ? period / limit : 1;
    t = (tat > now_us ? tat : now_us) + cost * interval;
    if (t - now_us > period)
        return -1;
    *next_r = t;
    return 0;
}

/* ---- keys ------------------------------------------------------------ */

void ratelimit_ip_key(const char *ip, char *out, size_t outlen)
{
    unsigned char a[16];
    char text[INET6_ADDRSTRLEN];

    if (inet_pton(AF_INET6, ip, a) == 1) {
        static const unsigned char mapped[12] = {0, 0, 0, 0, 0,    0,
                                                 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(a, mapped, sizeof(mapped)) == 0 &&
            inet_ntop(AF_INET, a + 12, text, sizeof(text)) != NULL) {
            snprintf(out, outlen, "%s", text);
            return;
        }
        memset(a + 8, 0, 8);
        if (inet_ntop(AF_INET6, a, text, sizeof(text)) != NULL) {
            snprintf(out, outlen, "%s/64", text);
            return;
        }
    }
    snprintf(out, outlen, "%.*s", RL_IP_KEY - 1, ip);
}

/* "ipkey\naccount", the account lower-cased and cut to SG_MAX_PATH. */
static void rl_pair_key(const char *ip, const char *account, char *out)
{
    size_t n, i;

    ratelimit_ip_key(ip, out, RL_IP_KEY);
    n = strlen(out);
    out[n++] = '\n';
    for (i = 0; i < SG_MAX_PATH && account[i] != '\0'; i++) {
        char c = account[i];
        out[n++] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
    }
    out[n] = '\0';
}

/* A member or tenant name, lower-cased and cut to SG_MAX_PATH. */
static void rl_name_key(const char *name, char *out)
{
    size_t i;

    for (i = 0; i < SG_MAX_PATH && name[i] != '\0'; i++) {
        char c = name[i];
        out[i] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
    }
    out[i] = '\0';
}

const char *ratelimit_verdict_text(enum ratelimit_verdict v)
{
    switch (v) {
    case RATELIMIT_OK:
        return "ok";
    case RATELIMIT_CONN_COUNT:
        return "connections per address";
    case RATELIMIT_CONN_RATE:
        return "connection rate per address";
    case RATELIMIT_IP_BLOCKED:
        return "address blocked after failed logins";
    case RATELIMIT_ACCOUNT_BLOCKED:
        return "login blocked from this address after failed logins";
    case RATELIMIT_MEMBER_MSG:
        return "member messages per hour";
    case RATELIMIT_MEMBER_RCPT:
        return "member recipients per day";
    case RATELIMIT_TENANT_MSG:
        return "tenant messages per hour";
    }
    return "unknown";
}

/* ---- connections ----------------------------------------------------- */

enum ratelimit_verdict ratelimit_conn_open(struct ratelimit *rl, const char *ip,
                                           uint64_t now_ms)
{
    uint64_t now = now_ms * 1000, next;
    char key[RL_IP_KEY];
    struct rl_entry *e;

    ratelimit_ip_key(ip, key, sizeof(key));
    e = rl_get(rl, RL_IP, key, now, 1);
    if (e->block_us > now)
        return RATELIMIT_IP_BLOCKED;
    if (rl->lim.max_conn_per_ip != 0 && e->conns >= rl->lim.max_conn_per_ip)
        return RATELIMIT_CONN_COUNT;
    if (rl_gcra(e->tat[0], rl->lim.conn_rate_per_ip, RL_MINUTE_MS, 1, now,
                &next) != 0)
        return RATELIMIT_CONN_RATE;
    e->tat[0] = next;
    e->conns++;
    return RATELIMIT_OK;
}

void ratelimit_conn_close(struct ratelimit *rl, const char *ip, uint64_t now_ms)
{
    char key[RL_IP_KEY];
    struct rl_entry *e;

    ratelimit_ip_key(ip, key, sizeof(key));
    e = rl_get(rl, RL_IP, key, now_ms * 1000, 0);
    if (e != NULL && e->conns > 0)
        e->conns--;
}

/* ---- AUTH ------------------------------------------------------------ */

enum ratelimit_verdict ratelimit_auth_check(struct ratelimit *rl,
                                            const char *ip, const char *account,
                                            uint64_t now_ms,
                                            uint64_t *until_ms_r)
{
    uint64_t now = now_ms * 1000;
    char key[RL_KEY_MAX + 1];
    struct rl_entry *e;

    ratelimit_ip_key(ip, key, RL_IP_KEY);
    e = rl_get(rl, RL_IP, key, now, 0);
    if (e != NULL && e->block_us > now) {
        if (until_ms_r != NULL)
            *until_ms_r = e->block_us / 1000;
        return RATELIMIT_IP_BLOCKED;
    }
    rl_pair_key(ip, account, key);
    e = rl_get(rl, RL_PAIR, key, now, 0);
    if (e != NULL && e->block_us > now) {
        if (until_ms_r != NULL)
            *until_ms_r = e->block_us / 1000;
        return RATELIMIT_ACCOUNT_BLOCKED;
    }
    return RATELIMIT_OK;
}

/* Counts one failure in e; blocks it when limit (not 0) is reached. */
static void rl_fail(const struct ratelimit *rl, struct rl_entry *e,
                    unsigned limit, uint64_t now)
{
    uint64_t window = (uint64_t)rl->lim.auth_block_ms * 1000;

    if (e->fails > 0 && now - e->fail_us >= window)
        e->fails = 0;
    if (e->fails < UINT32_MAX)
        e->fails++;
    e->fail_us = now;
    if (limit != 0 && e->fails >= limit)
        e->block_us = now + window;
}

unsigned ratelimit_auth_fail(struct ratelimit *rl, const char *ip,
                             const char *account, uint64_t now_ms)
{
    uint64_t now = now_ms * 1000, delay;
    char key[RL_KEY_MAX + 1];
    struct rl_entry *e;
    unsigned shift;

    rl_pair_key(ip, account, key);
    e = rl_get(rl, RL_PAIR, key, now, 1);
    rl_fail(rl, e, rl->lim.auth_fail_limit_account, now);
    ratelimit_ip_key(ip, key, RL_IP_KEY);
    e = rl_get(rl, RL_IP, key, now, 1);
    rl_fail(rl, e, rl->lim.auth_fail_limit_ip, now);
    shift = e->fails - 1 < 15 ? e->fails - 1 : 15;
    delay = (uint64_t)rl->lim.auth_fail_delay_ms << shift;
    return delay < RATELIMIT_MAX_AUTH_DELAY_MS ? (unsigned)delay
                                               : RATELIMIT_MAX_AUTH_DELAY_MS;
}

void ratelimit_auth_ok(struct ratelimit *rl, const char *ip,
                       const char *account, uint64_t now_ms)
{
    char key[RL_KEY_MAX + 1];
    struct rl_entry *e;

    rl_pair_key(ip, account, key);
    e = rl_get(rl, RL_PAIR, key, now_ms * 1000, 0);
    if (e != NULL) {
        e->fails = 0;
        e->block_us = 0;
    }
}

/* ---- outbound messages ----------------------------------------------- */

/* Checks (and with take, counts) one message of nrcpt recipients. An
 * entry is looked up again before it is written, since making one entry
 * may sweep away another that is idle. */
static enum ratelimit_verdict rl_msg(struct ratelimit *rl, const char *member,
                                     const char *tenant, size_t nrcpt,
                                     uint64_t now_ms, int take)
{
    const struct ratelimit_limits *l = &rl->lim;
    uint64_t now = now_ms * 1000, m0, m1, t0;
    char mkey[SG_MAX_PATH + 1], tkey[SG_MAX_PATH + 1];
    struct rl_entry *e;

    rl_name_key(member, mkey);
    rl_name_key(tenant, tkey);
    e = rl_get(rl, RL_MEMBER, mkey, now, 0);
    if (rl_gcra(e != NULL ? e->tat[0] : 0, l->member_msg_per_hour, RL_HOUR_MS,
                1, now, &m0) != 0)
        return RATELIMIT_MEMBER_MSG;
    if (rl_gcra(e != NULL ? e->tat[1] : 0, l->member_rcpt_per_day, RL_DAY_MS,
                nrcpt, now, &m1) != 0)
        return RATELIMIT_MEMBER_RCPT;
    e = rl_get(rl, RL_TENANT, tkey, now, 0);
    if (rl_gcra(e != NULL ? e->tat[0] : 0, l->tenant_msg_per_hour, RL_HOUR_MS,
                1, now, &t0) != 0)
        return RATELIMIT_TENANT_MSG;
    if (take) {
        e = rl_get(rl, RL_MEMBER, mkey, now, 1);
        e->tat[0] = m0;
        e->tat[1] = m1;
        e = rl_get(rl, RL_TENANT, tkey, now, 1);
        e->tat[0] = t0;
    }
    return RATELIMIT_OK;
}

enum ratelimit_verdict ratelimit_msg_check(struct ratelimit *rl,
                                           const char *member,
                                           const char *tenant, size_t nrcpt,
                                           uint64_t now_ms)
{
    return rl_msg(rl, member, tenant, nrcpt, now_ms, 0);
}

enum ratelimit_verdict ratelimit_msg_take(struct ratelimit *rl,
                                          const char *member,
                                          const char *tenant, size_t nrcpt,
                                          uint64_t now_ms)
{
    return rl_msg(rl, member, tenant, nrcpt, now_ms, 1);
}
