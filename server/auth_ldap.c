/* auth_ldap: members from an LDAP directory; see auth_ldap.h. */
#include "auth_ldap.h"

#include <errno.h>
#include <fcntl.h>
#include <ldap.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/addr.h"
#include "../common/log.h"
#include "../common/passwd.h"
#include "../common/xalloc.h"

/* The service password file holds one line; anything longer is not a
 * password file. */
#define AUTH_LDAP_MAX_SECRET 512
/* A {CRYPT} value: libxcrypt's hashes are at most 384 octets
 * (CRYPT_OUTPUT_SIZE); the prefix comes on top. */
#define AUTH_LDAP_MAX_CRYPT 512
#define AUTH_LDAP_CRYPT_PREFIX "{CRYPT}"
/* A password sent in a bind: SMTP AUTH gives at most 1024 octets
 * (SMTP_AUTH_MAX_FIELD), a service password file less. */
#define AUTH_LDAP_MAX_PASSWORD 1024

/* Outcomes of one step, beyond 1 (go on), 0 (refused), -1 (temporary). */
#define AUTH_LDAP_LOST (-2) /* the connection died: retry on a new one */

struct auth_ldap_conn {
    LDAP *ld; /* owned, NULL: not connected */
    long long tenant_id;
    unsigned char sig[AUTH_LDAP_SIG_LEN];
    int busy;          /* taken by a check */
    int service_bound; /* bound as the service (or fresh, when none) */
    char uri[SG_MAX_LDAP_SETTING]; /* connected to, for logs */
};

struct auth_ldap_pool {
    pthread_mutex_t lock; /* guards busy and the choice of a slot */
    unsigned size;
    struct auth_ldap_conn *conns; /* owned array of size */
};

/* One check in progress (the pool thread's stack). */
struct auth_ldap_check {
    struct auth_ldap_conn *conn;        /* borrowed from the pool */
    const struct db_tenant_auth *t;     /* borrowed */
    const struct db_tenant_ldap *l;     /* &t->ldap */
    const char *logid;                  /* borrowed */
    struct timeval tv;                  /* each network step */
    char uid[SG_MAX_PATH + 1];          /* the value of %u */
    char dn[SG_MAX_LDAP_DN];            /* the member's entry */
    char names[SG_MAX_LDAP_SETTING];    /* attribute names, NUL-separated */
    char *attrs[SG_MAX_LDAP_ATTRS + 3]; /* into names; NULL-ended */
    size_t naddr_attrs;                 /* attrs[0..naddr_attrs) */
    char mailpw[AUTH_LDAP_MAX_CRYPT];   /* the {CRYPT} value; wiped */
    int have_mailpw;
    unsigned outside; /* addresses skipped: not the tenant's domains */
    struct db_member *m;
    const char *reason;
};

/* ---- pure helpers ------------------------------------------------------ */

int auth_ldap_escape_filter(const char *in, char *out, size_t outlen)
{
    size_t o = 0;

    for (; *in != '\0'; in++) {
        unsigned char c = (unsigned char)*in;
        int esc = c == '*' || c == '(' || c == ')' || c == '\\';
        size_t need = esc ? 3 : 1;

        if (o + need >= outlen)
            return -1;
        if (esc)
            o += (size_t)snprintf(out + o, outlen - o, "\\%02x", c);
        else
            out[o++] = (char)c;
    }
    if (o >= outlen)
        return -1;
    out[o] = '\0';
    return 0;
}

int auth_ldap_escape_dn(const char *in, char *out, size_t outlen)
{
    size_t n = strlen(in), o = 0, i;

    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)in[i];
        int hex = c < 0x20 || c == 0x7f;
        int esc = strchr("\"+,;<>=\\", c) != NULL ||
                  (i == 0 && (c == ' ' || c == '#')) ||
                  (i == n - 1 && c == ' ');
        size_t need = hex ? 3 : esc ? 2 : 1;

        if (o + need >= outlen)
            return -1;
        if (hex)
            o += (size_t)snprintf(out + o, outlen - o, "\\%02x", c);
        else {
            if (esc)
                out[o++] = '\\';
            out[o++] = (char)c;
        }
    }
    if (o >= outlen)
        return -1;
    out[o] = '\0';
    return 0;
}

int auth_ldap_expand(const char *tmpl, const char *value, int dn, char *out,
                     size_t outlen)
{
    size_t o = 0, n;

    if (outlen == 0)
        return -1;
    for (; *tmpl != '\0'; tmpl++) {
        if (*tmpl == '%' && tmpl[1] == 'u') {
            if ((dn ? auth_ldap_escape_dn(value, out + o, outlen - o)
                    : auth_ldap_escape_filter(value, out + o, outlen - o)) != 0)
                return -1;
            n = strlen(out + o);
            o += n;
            tmpl++;
            continue;
        }
        if (*tmpl == '%' && tmpl[1] != '%')
            return -1;
        if (*tmpl == '%')
            tmpl++;
        if (o + 1 >= outlen)
            return -1;
        out[o++] = *tmpl;
    }
    out[o] = '\0';
    return 0;
}

int auth_ldap_uid(const struct db_tenant_auth *t, const char *login, char *out,
                  size_t outlen)
{
    const char *at = strrchr(login, '@');
    size_t n, i;

    if (t->ldap.login_form == DB_LDAP_LOGIN_ADDRESS && at == NULL) {
        if (login[0] == '\0' ||
            snprintf(out, outlen, "%s@%s", login, t->tenant) >= (int)outlen)
            return 0;
    } else {
        n = t->ldap.login_form == DB_LDAP_LOGIN_UID && at != NULL
                ? (size_t)(at - login)
                : strlen(login);
        if (n == 0 || n >= outlen)
            return 0;
        memcpy(out, login, n);
        out[n] = '\0';
    }
    for (i = 0; out[i] != '\0'; i++)
        if ((unsigned char)out[i] < 0x20 || out[i] == 0x7f)
            return 0;
    return 1;
}

/* 1 if domain (lower-case) is one of the space-separated domains. */
static int auth_ldap_domain_in(const char *domains, const char *domain)
{
    size_t n = strlen(domain);
    const char *p = domains;

    while (*p != '\0') {
        size_t len = strcspn(p, " ");
        if (len == n && memcmp(p, domain, n) == 0)
            return 1;
        p += len;
        p += strspn(p, " ");
    }
    return 0;
}

int auth_ldap_add_address(struct db_member *m, const char *domains,
                          const char *value, size_t len)
{
    char buf[SG_MAX_PATH + 8];
    const char *a = buf, *d;
    char *domain;
    size_t i;

    if (len >= sizeof buf || memchr(value, '\0', len) != NULL)
        return 0;
    memcpy(buf, value, len);
    buf[len] = '\0';
    /* Active Directory's proxyAddresses: "SMTP:primary", "smtp:alias",
     * and other types (X500:, SIP:) that are no mail address. */
    if (strncasecmp(buf, "smtp:", 5) == 0)
        a += 5;
    if (strchr(a, ':') != NULL || strlen(a) > SG_MAX_PATH || !addr_is_valid(a))
        return 0;
    d = addr_domain(a);
    if (d == NULL)
        return 0;
    domain = buf + (d - buf);
    addr_domain_lower(domain, domain, strlen(domain) + 1);
    if (!auth_ldap_domain_in(domains, domain))
        return -1;
    if (m->naddrs >= SG_MAX_MEMBER_ADDRS)
        return 0;
    for (i = 0; i < m->naddrs; i++)
        if (addr_equal(m->addrs[i], a))
            return 0;
    memcpy(m->addrs[m->naddrs++], a, strlen(a) + 1); /* <= SG_MAX_PATH */
    return 1;
}

int auth_ldap_fingerprint(const char *value, size_t len, char *out,
                          size_t outlen)
{
    static const char hexdig[] = "0123456789ABCDEF";
    size_t o = 0, i;

    for (i = 0; i < len; i++) {
        char c = value[i];
        const char *h;

        if (c == ' ')
            continue;
        if (c >= 'a' && c <= 'f')
            c = (char)(c - 'a' + 'A');
        h = c != '\0' ? strchr(hexdig, c) : NULL;
        if (h == NULL || o + 1 >= outlen || o >= SG_MAX_FINGERPRINT)
            return 0;
        out[o++] = c;
    }
    if (o != 40 && o != 64)
        return 0;
    out[o] = '\0';
    return 1;
}

/* ---- the pool ----------------------------------------------------------- */

struct auth_ldap_pool *auth_ldap_pool_new(unsigned size)
{
    struct auth_ldap_pool *p = xcalloc(1, sizeof(*p));

    SG_ASSERT(size >= 1);
    p->size = size;
    p->conns = xcalloc(size, sizeof(*p->conns));
    pthread_mutex_init(&p->lock, NULL);
    return p;
}

static void auth_ldap_close(struct auth_ldap_conn *c)
{
    if (c->ld != NULL)
        ldap_unbind_ext_s(c->ld, NULL, NULL);
    c->ld = NULL;
    c->service_bound = 0;
    c->uri[0] = '\0';
}

void auth_ldap_pool_free(struct auth_ldap_pool **pp)
{
    struct auth_ldap_pool *p = *pp;
    unsigned i;

    if (p == NULL)
        return;
    for (i = 0; i < p->size; i++)
        auth_ldap_close(&p->conns[i]);
    pthread_mutex_destroy(&p->lock);
    free(p->conns);
    free(p);
    *pp = NULL;
}

/* A free connection, preferring one already open with the same settings;
 * another tenant's is closed for reuse. NULL if all are busy. */
static struct auth_ldap_conn *auth_ldap_acquire(struct auth_ldap_pool *p,
                                                long long tenant_id,
                                                const unsigned char *sig)
{
    struct auth_ldap_conn *best = NULL;
    unsigned i;

    pthread_mutex_lock(&p->lock);
    for (i = 0; i < p->size; i++) {
        struct auth_ldap_conn *c = &p->conns[i];
        if (c->busy)
            continue;
        if (c->ld != NULL && c->tenant_id == tenant_id &&
            memcmp(c->sig, sig, AUTH_LDAP_SIG_LEN) == 0) {
            best = c;
            break;
        }
        if (best == NULL || (best->ld != NULL && c->ld == NULL))
            best = c;
    }
    if (best != NULL)
        best->busy = 1;
    pthread_mutex_unlock(&p->lock);
    if (best != NULL && (best->ld == NULL || best->tenant_id != tenant_id ||
                         memcmp(best->sig, sig, AUTH_LDAP_SIG_LEN) != 0)) {
        auth_ldap_close(best);
        best->tenant_id = tenant_id;
        memcpy(best->sig, sig, AUTH_LDAP_SIG_LEN);
    }
    return best;
}

/* Gives c back; keep 0 closes it first (after an error its state is not
 * known). */
static void auth_ldap_release(struct auth_ldap_pool *p,
                              struct auth_ldap_conn *c, int keep)
{
    if (!keep)
        auth_ldap_close(c);
    pthread_mutex_lock(&p->lock);
    c->busy = 0;
    pthread_mutex_unlock(&p->lock);
}

/* ---- talking to the directory -------------------------------------------- */

/* Logs a failed step: the library's text and the server's diagnostic
 * message (escaped: it comes from the network). */
static void auth_ldap_log(const struct auth_ldap_check *x, LDAP *ld,
                          const char *uri, const char *step, int rc)
{
    char *diag = NULL;
    char esc[4 * SG_LOG_MAX_PEER_TEXT + 4] = "";

    if (ld != NULL &&
        ldap_get_option(ld, LDAP_OPT_DIAGNOSTIC_MESSAGE, &diag) ==
            LDAP_OPT_SUCCESS &&
        diag != NULL)
        log_escape(diag, strlen(diag), esc, sizeof esc);
    ldap_memfree(diag);
    log_warn("%s: ldap tenant=%s uri=%s step=%s error=\"%s\"%s%s%s", x->logid,
             x->t->tenant, uri, step, ldap_err2string(rc),
             esc[0] != '\0' ? " diagnostic=\"" : "", esc,
             esc[0] != '\0' ? "\"" : "");
}

/* The outcome of a failed operation on a pooled connection. */
static int auth_ldap_failed(struct auth_ldap_check *x, const char *step, int rc)
{
    auth_ldap_log(x, x->conn->ld, x->conn->uri, step, rc);
    x->reason =
        rc == LDAP_TIMEOUT ? "directory timeout" : "directory unavailable";
    if (rc == LDAP_SERVER_DOWN || rc == LDAP_CONNECT_ERROR)
        return AUTH_LDAP_LOST;
    return -1;
}

/* Reads the service password file into out (NUL-terminated, without the
 * line end). 0, or -1 (logged). */
static int auth_ldap_read_secret(const struct auth_ldap_check *x, char *out,
                                 size_t outlen)
{
    const char *path = x->l->bind_password_file;
    struct stat st;
    ssize_t n;
    int fd, err;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        err = errno;
        log_error("%s: ldap tenant=%s bind_password_file %s: %s", x->logid,
                  x->t->tenant, path, strerror(err));
        return -1;
    }
    n = -1;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
        (size_t)st.st_size < outlen)
        n = read(fd, out, outlen - 1);
    close(fd);
    while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r'))
        n--;
    if (n <= 0 || memchr(out, '\0', (size_t)n) != NULL) {
        log_error("%s: ldap tenant=%s bind_password_file %s: not one "
                  "non-empty line of at most %d octets",
                  x->logid, x->t->tenant, path, AUTH_LDAP_MAX_SECRET - 1);
        explicit_bzero(out, outlen);
        return -1;
    }
    out[n] = '\0';
    return 0;
}

/* A simple bind (RFC 4513 5.1.3). The password must not be empty: that
 * would be an unauthenticated bind, which "succeeds" (RFC 4513 5.1.2). */
static int auth_ldap_simple_bind(LDAP *ld, const char *dn, const char *pw)
{
    char buf[AUTH_LDAP_MAX_PASSWORD + 1]; /* berval wants it writable */
    struct berval cred;
    size_t n = strlen(pw);
    int rc;

    if (n == 0)
        return LDAP_INAPPROPRIATE_AUTH;
    if (n >= sizeof buf)
        return LDAP_INVALID_CREDENTIALS;
    memcpy(buf, pw, n + 1);
    cred.bv_val = buf;
    cred.bv_len = n;
    rc = ldap_sasl_bind_s(ld, dn, LDAP_SASL_SIMPLE, &cred, NULL, NULL, NULL);
    explicit_bzero(buf, sizeof buf);
    return rc;
}

/* Binds as the service when the tenant has one. 1, -1, AUTH_LDAP_LOST. */
static int auth_ldap_service_bind(struct auth_ldap_check *x, LDAP *ld,
                                  const char *uri)
{
    char secret[AUTH_LDAP_MAX_SECRET];
    int rc;

    if (x->l->bind_dn[0] == '\0')
        return 1;
    if (auth_ldap_read_secret(x, secret, sizeof secret) != 0) {
        x->reason = "directory unavailable";
        return -1;
    }
    rc = auth_ldap_simple_bind(ld, x->l->bind_dn, secret);
    explicit_bzero(secret, sizeof secret);
    if (rc == LDAP_SUCCESS)
        return 1;
    auth_ldap_log(x, ld, uri, "service bind", rc);
    x->reason =
        rc == LDAP_TIMEOUT ? "directory timeout" : "directory unavailable";
    return rc == LDAP_SERVER_DOWN || rc == LDAP_CONNECT_ERROR ? AUTH_LDAP_LOST
                                                              : -1;
}

/* Options of a new handle: LDAPv3, no referral chasing, timeouts, TLS 1.2
 * or later with the certificate verified. 0 or the failing code. */
static int auth_ldap_options(const struct auth_ldap_check *x, LDAP *ld)
{
    int v3 = LDAP_VERSION3, demand = LDAP_OPT_X_TLS_DEMAND;
    int tls12 = LDAP_OPT_X_TLS_PROTOCOL_TLS1_2, newctx = 0;
    int rc;

    if ((rc = ldap_set_option(ld, LDAP_OPT_PROTOCOL_VERSION, &v3)) != 0 ||
        (rc = ldap_set_option(ld, LDAP_OPT_REFERRALS, LDAP_OPT_OFF)) != 0 ||
        (rc = ldap_set_option(ld, LDAP_OPT_NETWORK_TIMEOUT, &x->tv)) != 0 ||
        (rc = ldap_set_option(ld, LDAP_OPT_TIMEOUT, &x->tv)) != 0 ||
        (rc = ldap_set_option(ld, LDAP_OPT_X_TLS_REQUIRE_CERT, &demand)) != 0 ||
        (rc = ldap_set_option(ld, LDAP_OPT_X_TLS_PROTOCOL_MIN, &tls12)) != 0)
        return rc;
    if (x->l->ca_file[0] != '\0' &&
        (rc = ldap_set_option(ld, LDAP_OPT_X_TLS_CACERTFILE, x->l->ca_file)) !=
            0)
        return rc;
    /* The TLS settings above belong to this handle only. */
    return ldap_set_option(ld, LDAP_OPT_X_TLS_NEWCTX, &newctx);
}

/* Opens a connection to one URI: connect (TLS for ldaps://), StartTLS for
 * ldap:// when wanted, the service bind. 1 with *ld_r, or -1 (logged). */
static int auth_ldap_open(struct auth_ldap_check *x, const char *uri,
                          LDAP **ld_r)
{
    LDAP *ld = NULL;
    const char *step = "init";
    int rc;

    *ld_r = NULL;
    rc = ldap_initialize(&ld, uri);
    if (rc == LDAP_SUCCESS) {
        step = "options";
        rc = auth_ldap_options(x, ld);
    }
    if (rc == LDAP_SUCCESS) {
        step = "connect";
        rc = ldap_connect(ld);
    }
    if (rc == LDAP_SUCCESS && x->l->starttls && ldap_is_ldap_url(uri) &&
        !ldap_is_ldaps_url(uri) && !ldap_is_ldapi_url(uri)) {
        step = "starttls";
        rc = ldap_start_tls_s(ld, NULL, NULL);
    }
    if (rc != LDAP_SUCCESS) {
        auth_ldap_log(x, ld, uri, step, rc);
        x->reason =
            rc == LDAP_TIMEOUT ? "directory timeout" : "directory unavailable";
        if (ld != NULL)
            ldap_unbind_ext_s(ld, NULL, NULL);
        return -1;
    }
    if (auth_ldap_service_bind(x, ld, uri) != 1) {
        ldap_unbind_ext_s(ld, NULL, NULL);
        return -1;
    }
    *ld_r = ld;
    return 1;
}

/* Connects the check's connection: the URIs in order until one works.
 * 1 or -1. */
static int auth_ldap_connect(struct auth_ldap_check *x)
{
    const char *p = x->l->uris;
    char uri[SG_MAX_LDAP_SETTING];

    while (*p != '\0') {
        size_t n = strcspn(p, ", ");
        LDAP *ld;

        if (n > 0 && n < sizeof uri) {
            memcpy(uri, p, n);
            uri[n] = '\0';
            if (auth_ldap_open(x, uri, &ld) == 1) {
                x->conn->ld = ld;
                x->conn->service_bound = 1;
                snprintf(x->conn->uri, sizeof x->conn->uri, "%s", uri);
                return 1;
            }
        }
        p += n;
        p += strspn(p, ", ");
    }
    if (x->reason == NULL)
        x->reason = "directory unavailable";
    return -1;
}

/* Keeps what the entry says: addresses, fingerprint, mail password. */
static void auth_ldap_take(struct auth_ldap_check *x, LDAP *ld, LDAPMessage *e)
{
    struct berval **v;
    size_t i, j;

    for (i = 0; i < x->naddr_attrs; i++) {
        v = ldap_get_values_len(ld, e, x->attrs[i]);
        for (j = 0; v != NULL && v[j] != NULL; j++)
            if (auth_ldap_add_address(x->m, x->t->domains, v[j]->bv_val,
                                      v[j]->bv_len) < 0)
                x->outside++;
        ldap_value_free_len(v);
    }
    if (x->l->fingerprint_attr[0] != '\0' && x->m->pgp_fingerprint[0] == '\0') {
        v = ldap_get_values_len(ld, e, x->l->fingerprint_attr);
        for (j = 0; v != NULL && v[j] != NULL; j++)
            if (auth_ldap_fingerprint(v[j]->bv_val, v[j]->bv_len,
                                      x->m->pgp_fingerprint,
                                      sizeof x->m->pgp_fingerprint))
                break;
        ldap_value_free_len(v);
    }
    if (x->l->mail_password_attr[0] != '\0' && !x->have_mailpw) {
        const size_t plen = sizeof AUTH_LDAP_CRYPT_PREFIX - 1;

        v = ldap_get_values_len(ld, e, x->l->mail_password_attr);
        for (j = 0; v != NULL && v[j] != NULL; j++) {
            struct berval *b = v[j];
            if (b->bv_len > plen && b->bv_len - plen < sizeof x->mailpw &&
                strncasecmp(b->bv_val, AUTH_LDAP_CRYPT_PREFIX, plen) == 0 &&
                memchr(b->bv_val, '\0', b->bv_len) == NULL) {
                memcpy(x->mailpw, b->bv_val + plen, b->bv_len - plen);
                x->mailpw[b->bv_len - plen] = '\0';
                x->have_mailpw = 1;
                break;
            }
        }
        for (j = 0; v != NULL && v[j] != NULL; j++)
            explicit_bzero(v[j]->bv_val, v[j]->bv_len);
        ldap_value_free_len(v);
    }
}

/* Reads the entry at x->dn if it matches filter, taking its attributes
 * when take is 1 (else asking for none). 1, 0 (no such entry, or filter
 * does not match: why), -1, AUTH_LDAP_LOST. */
static int auth_ldap_read(struct auth_ldap_check *x, const char *filter,
                          int take, const char *why)
{
    char none[] = LDAP_NO_ATTRS;
    char *no_attrs[] = {none, NULL};
    LDAP *ld = x->conn->ld;
    LDAPMessage *res = NULL, *e;
    int rc, ret;

    rc = ldap_search_ext_s(ld, x->dn, LDAP_SCOPE_BASE, filter,
                           take ? x->attrs : no_attrs, 0, NULL, NULL, &x->tv, 1,
                           &res);
    if (rc == LDAP_NO_SUCH_OBJECT) {
        x->reason = "unknown member";
        ret = 0;
    } else if (rc != LDAP_SUCCESS) {
        ret = auth_ldap_failed(x, "read entry", rc);
    } else if ((e = ldap_first_entry(ld, res)) == NULL) {
        x->reason = why;
        ret = 0;
    } else {
        if (take)
            auth_ldap_take(x, ld, e);
        ret = 1;
    }
    ldap_msgfree(res);
    return ret;
}

/* Search mode: finds the one entry that the filter names, as the service.
 * 1 with x->dn, 0, -1, AUTH_LDAP_LOST. */
static int auth_ldap_search(struct auth_ldap_check *x)
{
    char filter[SG_MAX_LDAP_FILTER];
    LDAP *ld = x->conn->ld;
    LDAPMessage *res = NULL, *e;
    char *dn;
    int rc, ret = 0;

    if (auth_ldap_expand(x->l->search_filter, x->uid, 0, filter,
                         sizeof filter) != 0) {
        x->reason = "login too long";
        return 0;
    }
    /* Two at most: a second entry makes the login ambiguous. */
    rc = ldap_search_ext_s(ld, x->l->search_base, LDAP_SCOPE_SUBTREE, filter,
                           x->attrs, 0, NULL, NULL, &x->tv, 2, &res);
    if (rc != LDAP_SUCCESS && rc != LDAP_SIZELIMIT_EXCEEDED) {
        ldap_msgfree(res);
        return auth_ldap_failed(x, "search", rc);
    }
    e = ldap_first_entry(ld, res);
    if (e == NULL)
        x->reason = "unknown member";
    else if (rc == LDAP_SIZELIMIT_EXCEEDED || ldap_next_entry(ld, e) != NULL) {
        log_warn("%s: ldap tenant=%s search matches several entries", x->logid,
                 x->t->tenant);
        x->reason = "ambiguous login";
    } else if ((dn = ldap_get_dn(ld, e)) == NULL ||
               strlen(dn) >= sizeof x->dn) {
        ldap_memfree(dn);
        x->reason = "entry name too long";
    } else {
        snprintf(x->dn, sizeof x->dn, "%s", dn);
        ldap_memfree(dn);
        auth_ldap_take(x, ld, e);
        ret = 1;
    }
    ldap_msgfree(res);
    return ret;
}

/* The password: the mail password attribute's hash, or a bind as the
 * entry. 1, 0, -1, AUTH_LDAP_LOST. */
static int auth_ldap_password(struct auth_ldap_check *x, const char *password)
{
    int rc;

    if (x->l->mail_password_attr[0] != '\0') {
        if (!x->have_mailpw) {
            passwd_verify(password, NULL); /* same cost as a wrong one */
            x->reason = "no mail password";
            return 0;
        }
        if (!passwd_verify(password, x->mailpw)) {
            x->reason = "bad password";
            return 0;
        }
        return 1;
    }
    rc = auth_ldap_simple_bind(x->conn->ld, x->dn, password);
    /* Whatever the outcome, the connection is no longer the service's. */
    x->conn->service_bound = x->l->bind_dn[0] == '\0';
    if (rc == LDAP_SUCCESS)
        return 1;
    if (rc == LDAP_INVALID_CREDENTIALS) {
        x->reason = "bad password";
        return 0;
    }
    return auth_ldap_failed(x, "bind", rc);
}

/* Finds the entry, applies the submit filter and checks the password,
 * in the order the bind mode allows. 1, 0, -1, AUTH_LDAP_LOST. */
static int auth_ldap_steps(struct auth_ldap_check *x, const char *password)
{
    const char *allowed = "not allowed by submit filter";
    const char *submit =
        x->l->submit_filter[0] != '\0' ? x->l->submit_filter : NULL;
    int service = x->l->bind_dn[0] != '\0';
    int rc;

    if (x->l->bind_mode == DB_LDAP_BIND_SEARCH) {
        rc = auth_ldap_search(x);
        /* The attributes came with the search. */
        if (rc == 1 && submit != NULL)
            rc = auth_ldap_read(x, submit, 0, allowed);
        return rc == 1 ? auth_ldap_password(x, password) : rc;
    }
    if (auth_ldap_expand(x->l->dn_template, x->uid, 1, x->dn, sizeof x->dn) !=
        0) {
        x->reason = "login too long";
        return 0;
    }
    if (service) {
        /* Read as the service, then the password. */
        rc = auth_ldap_read(x, submit != NULL ? submit : "(objectClass=*)", 1,
                            allowed);
        return rc == 1 ? auth_ldap_password(x, password) : rc;
    }
    /* No service identity: bind as the member, then read as the member. */
    rc = auth_ldap_password(x, password);
    if (rc != 1)
        return rc;
    return auth_ldap_read(x, submit != NULL ? submit : "(objectClass=*)", 1,
                          allowed);
}

/* One attempt on one connection. 1, 0, -1, AUTH_LDAP_LOST. */
static int auth_ldap_once(struct auth_ldap_check *x, const char *password)
{
    int rc;

    if (x->conn->ld == NULL) {
        if (auth_ldap_connect(x) != 1)
            return -1;
    } else if (!x->conn->service_bound) {
        rc = auth_ldap_service_bind(x, x->conn->ld, x->conn->uri);
        if (rc != 1)
            return rc;
        x->conn->service_bound = 1;
    }
    /* A retry starts from a clean slate. */
    x->m->naddrs = 0;
    x->m->pgp_fingerprint[0] = '\0';
    explicit_bzero(x->mailpw, sizeof x->mailpw);
    x->have_mailpw = 0;
    x->outside = 0;
    return auth_ldap_steps(x, password);
}

/* Splits the attribute names the searches ask for into x->attrs: the
 * address attributes, then the fingerprint and mail password ones. */
static void auth_ldap_attrs(struct auth_ldap_check *x)
{
    const char *extra[] = {x->l->fingerprint_attr, x->l->mail_password_attr};
    char *p = x->names, *end = x->names + sizeof x->names;
    const char *s = x->l->address_attrs;
    size_t n = 0, i, len;

    while (*s != '\0' && n < SG_MAX_LDAP_ATTRS) {
        s += strspn(s, ", ");
        len = strcspn(s, ", ");
        if (len == 0 || len >= (size_t)(end - p))
            break;
        memcpy(p, s, len);
        p[len] = '\0';
        x->attrs[n++] = p;
        p += len + 1;
        s += len;
    }
    x->naddr_attrs = n;
    for (i = 0; i < 2; i++) {
        len = strlen(extra[i]);
        if (len == 0 || len >= (size_t)(end - p))
            continue;
        memcpy(p, extra[i], len + 1);
        x->attrs[n++] = p;
        p += len + 1;
    }
    x->attrs[n] = NULL;
}

/* The member record once the password is right. 1, or 0 without an
 * address to send as. */
static int auth_ldap_member(struct auth_ldap_check *x)
{
    struct db_member *m = x->m;
    const char *d = x->t->domains;
    char addr[SG_MAX_PATH + 1];
    char local[SG_MAX_PATH + 1];
    size_t i, n;

    if (x->l->uid_domain) {
        const char *at = strrchr(x->uid, '@');
        n = at != NULL ? (size_t)(at - x->uid) : strlen(x->uid);
        for (i = 0; i < n && i < sizeof local - 1; i++)
            local[i] = (char)(x->uid[i] >= 'A' && x->uid[i] <= 'Z'
                                  ? x->uid[i] - 'A' + 'a'
                                  : x->uid[i]);
        local[i] = '\0';
        while (*d != '\0') {
            size_t len = strcspn(d, " ");
            if (snprintf(addr, sizeof addr, "%s@%.*s", local, (int)len, d) <
                (int)sizeof addr)
                auth_ldap_add_address(m, x->t->domains, addr, strlen(addr));
            d += len;
            d += strspn(d, " ");
        }
    }
    if (x->outside > 0) {
        char esc[4 * SG_LOG_MAX_PEER_TEXT + 4];

        /* The DN holds the login, or comes from the directory. */
        log_warn("%s: ldap tenant=%s entry=\"%s\" addresses outside the "
                 "tenant's domains ignored=%u",
                 x->logid, x->t->tenant,
                 log_escape(x->dn, strlen(x->dn), esc, sizeof esc), x->outside);
    }
    if (m->naddrs == 0) {
        x->reason = "no address in directory";
        return 0;
    }
    snprintf(m->address, sizeof m->address, "%s", m->addrs[0]);
    snprintf(m->tenant, sizeof m->tenant, "%s", x->t->tenant);
    m->tenant_id = x->t->tenant_id;
    m->sender_policy = x->t->sender_policy;
    m->from_policy = x->t->from_policy;
    return 1;
}

int auth_ldap_verify(struct auth_ldap_pool *pool,
                     const struct db_tenant_auth *t,
                     const unsigned char sig[AUTH_LDAP_SIG_LEN],
                     unsigned timeout_ms, const char *logid, const char *login,
                     const char *password, struct db_member *m,
                     const char **reason_r)
{
    struct auth_ldap_check *x = xcalloc(1, sizeof(*x));
    int rc = -1, attempt, reused;

    memset(m, 0, sizeof(*m));
    x->t = t;
    x->l = &t->ldap;
    x->logid = logid;
    x->m = m;
    x->tv.tv_sec = (time_t)(timeout_ms / 1000);
    x->tv.tv_usec = (suseconds_t)(timeout_ms % 1000) * 1000;
    if (!auth_ldap_uid(t, login, x->uid, sizeof x->uid)) {
        *reason_r = "unknown member";
        free(x);
        return 0;
    }
    if (password[0] == '\0') {
        *reason_r = "empty password";
        free(x);
        return 0;
    }
    auth_ldap_attrs(x);
    /* A pooled connection may have died since its last use (idle timeout,
     * server restart): then one more try, on a fresh connection. */
    for (attempt = 0; attempt < 2; attempt++) {
        x->reason = NULL;
        x->conn = auth_ldap_acquire(pool, t->tenant_id, sig);
        if (x->conn == NULL) {
            log_error("%s: ldap tenant=%s no free connection in the pool",
                      logid, t->tenant);
            x->reason = "directory busy";
            rc = -1;
            break;
        }
        reused = x->conn->ld != NULL;
        rc = auth_ldap_once(x, password);
        auth_ldap_release(pool, x->conn, rc >= 0);
        if (rc != AUTH_LDAP_LOST || !reused)
            break;
    }
    if (rc == AUTH_LDAP_LOST)
        rc = -1;
    if (rc == 1)
        rc = auth_ldap_member(x);
    *reason_r = rc == 1 ? "ok" : x->reason != NULL ? x->reason : "refused";
    if (rc != 1)
        memset(m, 0, sizeof(*m));
    explicit_bzero(x->mailpw, sizeof x->mailpw);
    free(x);
    return rc;
}
