/* test_mx: MX host ordering (preference, shuffling of equal ones), the
 * resolver spec parser, domain literals, and lookups against a scripted
 * DNS server in a thread (UDP on loopback): preference order, the
 * implicit MX, the null MX, NXDOMAIN, SERVFAIL, a host without address,
 * and the bound on hosts kept from a large answer. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <ldns/ldns.h>

#include "../../server/mx.h"
#include "testutil.h"

/* A counter as "random" source: deterministic orders. */
static unsigned seq_rnd(void *arg)
{
    unsigned *n = arg;

    return (*n)++;
}

static void set_hosts(struct mx_host *h, const unsigned *prefs, size_t n)
{
    memset(h, 0, n * sizeof(*h));
    for (size_t i = 0; i < n; i++) {
        snprintf(h[i].name, sizeof(h[i].name), "h%zu", i);
        h[i].pref = prefs[i];
    }
}

static void test_sort_preference(void **state)
{
    static const unsigned prefs[] = {30, 10, 20, 10, 0};
    struct mx_host h[5];
    unsigned n = 0;

    (void)state;
    set_hosts(h, prefs, 5);
    mx_sort(h, 5, seq_rnd, &n);
    for (size_t i = 1; i < 5; i++) {
        if (h[i - 1].pref > h[i].pref)
            fail_msg("position %zu: pref %u after %u", i, h[i].pref,
                     h[i - 1].pref);
    }
    CHECK_STR(h[0].name, "h4", "lowest preference first");
    CHECK_STR(h[3].name, "h2", "then 20");
    CHECK_STR(h[4].name, "h0", "then 30");
}

/* Among equal preferences every order comes up, never one alone: the
 * shuffle spreads load over equal MX hosts (RFC 5321 5.1). */
static void test_sort_shuffles_equals(void **state)
{
    static const unsigned prefs[] = {10, 10, 10};
    int seen_first[3] = {0};

    (void)state;
    for (unsigned seed = 0; seed < 30; seed++) {
        struct mx_host h[3];
        unsigned n = seed;

        set_hosts(h, prefs, 3);
        mx_sort(h, 3, seq_rnd, &n);
        seen_first[h[0].name[1] - '0']++;
        /* All three still there. */
        CHECK_INT(h[0].name[1] + h[1].name[1] + h[2].name[1], '0' + '1' + '2',
                  "a permutation");
    }
    for (int i = 0; i < 3; i++) {
        if (seen_first[i] == 0)
            fail_msg("host h%d never came first", i);
    }
}

static void test_parse_resolver(void **state)
{
    static const struct {
        const char *spec;
        const char *host;
        unsigned port;
    } cases[] = {
        {"127.0.0.1", "127.0.0.1", 53},
        {"127.0.0.1:5353", "127.0.0.1", 5353},
        {"[::1]:5300", "::1", 5300},
        {"[::1]", "::1", 53},
        {"ns.example.net:53", "ns.example.net", 53},
        {"::1", NULL, 0},
        {"127.0.0.1:", NULL, 0},
        {"127.0.0.1:0", NULL, 0},
        {"127.0.0.1:65536", NULL, 0},
        {"127.0.0.1:5x", NULL, 0},
        {"[::1", NULL, 0},
        {"[::1]x", NULL, 0},
        {":53", NULL, 0},
        {"a b:53", NULL, 0},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char host[256] = "";
        unsigned port = 0;
        int rc = mx_parse_resolver(cases[i].spec, host, sizeof(host), &port);

        if (cases[i].host == NULL) {
            if (rc != -1)
                fail_msg("%s: accepted, want refused", cases[i].spec);
            continue;
        }
        if (rc != 0)
            fail_msg("%s: refused, want accepted", cases[i].spec);
        CHECK_STR(host, cases[i].host, cases[i].spec);
        CHECK_INT(port, cases[i].port, cases[i].spec);
    }
}

/* ---- a scripted DNS server ------------------------------------------ */

struct dns_srv {
    int fd;
    unsigned port;
    pthread_t tid;
    int stop;
};

/* The answers: "name type" -> rcode and records (zone-file lines). */
static const struct {
    const char *qname; /* lower case, with the final dot */
    ldns_rr_type type;
    ldns_pkt_rcode rcode;
    const char *rrs[16];
} dns_script[] = {
    {"two.test.",
     LDNS_RR_TYPE_MX,
     LDNS_RCODE_NOERROR,
     {"two.test. 60 IN MX 20 mx2.two.test.",
      "two.test. 60 IN MX 10 mx1.two.test."}},
    {"mx1.two.test.",
     LDNS_RR_TYPE_A,
     LDNS_RCODE_NOERROR,
     {"mx1.two.test. 60 IN A 192.0.2.1", "mx1.two.test. 60 IN A 192.0.2.2"}},
    {"mx1.two.test.",
     LDNS_RR_TYPE_AAAA,
     LDNS_RCODE_NOERROR,
     {"mx1.two.test. 60 IN AAAA 2001:db8::1"}},
    {"mx2.two.test.",
     LDNS_RR_TYPE_A,
     LDNS_RCODE_NOERROR,
     {"mx2.two.test. 60 IN A 192.0.2.3"}},
    {"implicit.test.",
     LDNS_RR_TYPE_A,
     LDNS_RCODE_NOERROR,
     {"implicit.test. 60 IN A 192.0.2.9"}},
    {"null.test.",
     LDNS_RR_TYPE_MX,
     LDNS_RCODE_NOERROR,
     {"null.test. 60 IN MX 0 ."}},
    /* A null MX beside a real one: a broken zone; the real one counts. */
    {"mixed.test.",
     LDNS_RR_TYPE_MX,
     LDNS_RCODE_NOERROR,
     {"mixed.test. 60 IN MX 0 .", "mixed.test. 60 IN MX 10 mx2.two.test."}},
    {"nx.test.", LDNS_RR_TYPE_MX, LDNS_RCODE_NXDOMAIN, {NULL}},
    {"fail.test.", LDNS_RR_TYPE_MX, LDNS_RCODE_SERVFAIL, {NULL}},
    {"noaddr.test.",
     LDNS_RR_TYPE_MX,
     LDNS_RCODE_NOERROR,
     {"noaddr.test. 60 IN MX 10 ghost.noaddr.test."}},
    {"many.test.",
     LDNS_RR_TYPE_MX,
     LDNS_RCODE_NOERROR,
     {"many.test. 60 IN MX 1 mx2.two.test.",
      "many.test. 60 IN MX 2 mx2.two.test.",
      "many.test. 60 IN MX 3 mx2.two.test.",
      "many.test. 60 IN MX 4 mx2.two.test.",
      "many.test. 60 IN MX 5 mx2.two.test.",
      "many.test. 60 IN MX 6 mx2.two.test.",
      "many.test. 60 IN MX 7 mx2.two.test.",
      "many.test. 60 IN MX 8 mx2.two.test.",
      "many.test. 60 IN MX 9 mx2.two.test.",
      "many.test. 60 IN MX 10 mx2.two.test.",
      "many.test. 60 IN MX 11 mx2.two.test.",
      "many.test. 60 IN MX 12 mx2.two.test."}},
};

/* The answer to one question: scripted, or NOERROR without records. */
static ldns_pkt *dns_answer(const ldns_pkt *q)
{
    const ldns_rr *question = ldns_rr_list_rr(ldns_pkt_question(q), 0);
    char *name = ldns_rdf2str(ldns_rr_owner(question));
    ldns_rr_type type = ldns_rr_get_type(question);
    ldns_pkt *a = ldns_pkt_new();

    ldns_pkt_set_id(a, ldns_pkt_id(q));
    ldns_pkt_set_qr(a, true);
    ldns_pkt_set_aa(a, true);
    ldns_pkt_push_rr(a, LDNS_SECTION_QUESTION, ldns_rr_clone(question));
    for (char *p = name; *p; p++)
        *p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
    for (size_t i = 0; i < sizeof(dns_script) / sizeof(dns_script[0]); i++) {
        if (strcmp(dns_script[i].qname, name) != 0 ||
            dns_script[i].type != type)
            continue;
        ldns_pkt_set_rcode(a, (uint8_t)dns_script[i].rcode);
        for (size_t k = 0; dns_script[i].rrs[k] != NULL; k++) {
            ldns_rr *rr = NULL;
            assert_int_equal(
                ldns_rr_new_frm_str(&rr, dns_script[i].rrs[k], 0, NULL, NULL),
                LDNS_STATUS_OK);
            ldns_pkt_push_rr(a, LDNS_SECTION_ANSWER, rr);
        }
    }
    free(name);
    return a;
}

static void *dns_main(void *arg)
{
    struct dns_srv *s = arg;

    while (!s->stop) {
        uint8_t buf[4096];
        struct sockaddr_storage from;
        socklen_t fl = sizeof(from);
        ssize_t n =
            recvfrom(s->fd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &fl);
        ldns_pkt *q = NULL, *a;
        uint8_t *wire = NULL;
        size_t wlen = 0;

        if (n <= 0)
            continue;
        if (ldns_wire2pkt(&q, buf, (size_t)n) != LDNS_STATUS_OK)
            continue;
        a = dns_answer(q);
        if (ldns_pkt2wire(&wire, a, &wlen) == LDNS_STATUS_OK)
            (void)sendto(s->fd, wire, wlen, 0, (struct sockaddr *)&from, fl);
        free(wire);
        ldns_pkt_free(a);
        ldns_pkt_free(q);
    }
    return NULL;
}

static int dns_setup(void **state)
{
    struct dns_srv *s = calloc(1, sizeof(*s));
    struct sockaddr_in sin = {.sin_family = AF_INET};
    struct timeval tv = {.tv_usec = 100000};
    socklen_t len = sizeof(sin);

    if (s == NULL)
        return -1;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    s->fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (s->fd < 0 || bind(s->fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 ||
        getsockname(s->fd, (struct sockaddr *)&sin, &len) < 0) {
        free(s);
        return -1;
    }
    /* The thread looks at stop between reads. */
    setsockopt(s->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    s->port = ntohs(sin.sin_port);
    if (pthread_create(&s->tid, NULL, dns_main, s) != 0) {
        close(s->fd);
        free(s);
        return -1;
    }
    *state = s;
    return 0;
}

static int dns_teardown(void **state)
{
    struct dns_srv *s = *state;

    s->stop = 1;
    pthread_join(s->tid, NULL);
    close(s->fd);
    free(s);
    return 0;
}

static struct mx_resolver *resolver(const struct dns_srv *s)
{
    char spec[64], err[256] = "";
    struct mx_resolver *r;

    snprintf(spec, sizeof(spec), "127.0.0.1:%u", s->port);
    r = mx_resolver_new(spec, 2000, err, sizeof(err));
    if (r == NULL)
        fail_msg("mx_resolver_new: %s", err);
    return r;
}

static const char *addr_str(const struct mx_host *h, size_t i, char *buf,
                            size_t len)
{
    const struct sockaddr_storage *ss = &h->addr[i];
    const void *a =
        ss->ss_family == AF_INET
            ? (const void *)&((const struct sockaddr_in *)ss)->sin_addr
            : (const void *)&((const struct sockaddr_in6 *)ss)->sin6_addr;

    return inet_ntop(ss->ss_family, a, buf, (socklen_t)len);
}

static void test_lookup_cases(void **state)
{
    static const struct {
        const char *domain;
        int rc;
        const char *dsn;
        const char *hosts; /* "name=addr,addr name=addr" */
    } cases[] = {
        {"two.test", 1, "",
         "mx1.two.test=192.0.2.1,192.0.2.2,2001:db8::1 "
         "mx2.two.test=192.0.2.3"},
        {"TWO.test", 1, "",
         "mx1.two.test=192.0.2.1,192.0.2.2,2001:db8::1 "
         "mx2.two.test=192.0.2.3"},
        {"implicit.test", 1, "", "implicit.test=192.0.2.9"},
        {"mixed.test", 1, "", "mx2.two.test=192.0.2.3"},
        {"null.test", 0, "5.1.10", ""},
        {"nx.test", 0, "5.1.2", ""},
        {"fail.test", -1, "4.4.3", ""},
        {"noaddr.test", 0, "5.4.4", ""},
        {"[192.0.2.7]", 1, "", "[192.0.2.7]=192.0.2.7"},
        {"[IPv6:2001:db8::7]", 1, "", "[IPv6:2001:db8::7]=2001:db8::7"},
        {"[not an address]", 0, "5.1.2", ""},
    };
    struct mx_resolver *r = resolver(*state);

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct mx_list *l = calloc(1, sizeof(*l));
        char dsn[16] = "", why[256] = "", got[1024] = "";
        size_t len = 0;
        int rc;

        assert_non_null(l);
        rc = mx_lookup(r, cases[i].domain, 2525, l, dsn, sizeof(dsn), why,
                       sizeof(why));
        if (rc != cases[i].rc)
            fail_msg("%s: got %d (%s %s), want %d", cases[i].domain, rc, dsn,
                     why, cases[i].rc);
        if (rc != 1) {
            CHECK_STR(dsn, cases[i].dsn, cases[i].domain);
            if (why[0] == '\0')
                fail_msg("%s: no reason", cases[i].domain);
            free(l);
            continue;
        }
        for (size_t h = 0; h < l->n; h++) {
            len += (size_t)snprintf(got + len, sizeof(got) - len,
                                    "%s%s=", h ? " " : "", l->host[h].name);
            for (size_t a = 0; a < l->host[h].naddr; a++) {
                char buf[64];
                const struct sockaddr_in *sin =
                    (const struct sockaddr_in *)&l->host[h].addr[a];
                CHECK_INT(ntohs(sin->sin_port), 2525, "port");
                len += (size_t)snprintf(
                    got + len, sizeof(got) - len, "%s%s", a ? "," : "",
                    addr_str(&l->host[h], a, buf, sizeof(buf)));
            }
        }
        /* Names compare without case: a server may answer in the case
         * of the question (name compression keeps it). */
        if (strcasecmp(got, cases[i].hosts) != 0)
            fail_msg("%s: got \"%s\", want \"%s\"", cases[i].domain, got,
                     cases[i].hosts);
        free(l);
    }
    mx_resolver_free(&r);
    assert_null(r);
}

/* Twelve MX records: MX_MAX_HOSTS kept, the lowest preferences. */
static void test_lookup_bounded(void **state)
{
    struct mx_resolver *r = resolver(*state);
    struct mx_list *l = calloc(1, sizeof(*l));
    char dsn[16], why[256];

    assert_non_null(l);
    CHECK_INT(
        mx_lookup(r, "many.test", 25, l, dsn, sizeof(dsn), why, sizeof(why)), 1,
        "many.test");
    CHECK_INT(l->n, MX_MAX_HOSTS, "hosts kept");
    for (size_t i = 0; i < l->n; i++)
        CHECK_INT(l->host[i].pref, i + 1, "preference order");
    free(l);
    mx_resolver_free(&r);
}

static void test_resolver_errors(void **state)
{
    static const char *const bad[] = {"::1", "127.0.0.1:0", "[::1",
                                      "127.0.0.1:99999"};
    char err[256];

    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct mx_resolver *r = mx_resolver_new(bad[i], 1000, err, sizeof(err));
        if (r != NULL) {
            mx_resolver_free(&r);
            fail_msg("%s: accepted", bad[i]);
        }
        if (strstr(err, "dns_resolver") == NULL)
            fail_msg("%s: reason \"%s\" does not name the key", bad[i], err);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sort_preference),
        cmocka_unit_test(test_sort_shuffles_equals),
        cmocka_unit_test(test_parse_resolver),
        cmocka_unit_test_setup_teardown(test_lookup_cases, dns_setup,
                                        dns_teardown),
        cmocka_unit_test_setup_teardown(test_lookup_bounded, dns_setup,
                                        dns_teardown),
        cmocka_unit_test(test_resolver_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
