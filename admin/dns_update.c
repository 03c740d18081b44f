/* dns_update: see dns_update.h. */
#include "dns_update.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <ldns/ldns.h>

/* RFC 1035 3.3.14: one character-string holds at most 255 octets. */
#define DNSUP_TXT_CHUNK 255
/* A record in presentation form: name, TTL, class, type and the quoted
 * strings of a DKIM value. */
#define DNSUP_RR_TEXT (DNSCONF_NAME_MAX + 3 * DNSQ_VALUE_MAX)
/* RFC 8945 5.2.3: TSIG error codes in the TSIG RR of an answer. */
#define DNSUP_BADSIG 16
#define DNSUP_BADKEY 17
#define DNSUP_BADTIME 18

int dnsup_alg_ok(const char *alg)
{
    /* RFC 8945 6: hmac-sha256 is mandatory; sha512 is widely offered. */
    return strcasecmp(alg, "hmac-sha256") == 0 ||
           strcasecmp(alg, "hmac-sha512") == 0;
}

/* "NAME. TTL IN TXT "s1" "s2"" into out. The value holds only tag text
 * and base64: nothing to escape. 0 or -1. */
static int dnsup_txt_text(const char *name, const char *txt, unsigned ttl,
                          char *out, size_t outlen)
{
    size_t len, off = 0, vlen = strlen(txt), n;
    int w;

    w = snprintf(out, outlen, "%s. %u IN TXT", name, ttl);
    if (w < 0 || (size_t)w >= outlen)
        return -1;
    len = (size_t)w;
    do {
        n = vlen - off > DNSUP_TXT_CHUNK ? DNSUP_TXT_CHUNK : vlen - off;
        w = snprintf(out + len, outlen - len, " \"%.*s\"", (int)n, txt + off);
        if (w < 0 || (size_t)w >= outlen - len)
            return -1;
        len += (size_t)w;
        off += n;
    } while (off < vlen);
    return 0;
}

/* RFC 2136 2.5.2: "delete an RRset" is class ANY, TTL 0, no RDATA. */
static ldns_rr *dnsup_delete_rr(const char *name)
{
    char fqdn[DNSCONF_NAME_MAX + 2];
    ldns_rdf *owner;
    ldns_rr *rr;

    snprintf(fqdn, sizeof fqdn, "%s.", name);
    owner = ldns_dname_new_frm_str(fqdn);
    rr = owner != NULL ? ldns_rr_new() : NULL;
    if (rr == NULL) {
        ldns_rdf_deep_free(owner);
        return NULL;
    }
    ldns_rr_set_owner(rr, owner);
    ldns_rr_set_ttl(rr, 0);
    ldns_rr_set_class(rr, LDNS_RR_CLASS_ANY);
    ldns_rr_set_type(rr, LDNS_RR_TYPE_TXT);
    return rr;
}

/* The update section: per change, delete the RRset, then add the new
 * record (RFC 2136 2.5.1). NULL with err on failure. */
static ldns_rr_list *dnsup_list(const struct dnsup_change *ch, size_t n,
                                unsigned ttl, char *err, size_t errlen)
{
    char text[DNSUP_RR_TEXT];
    ldns_rr_list *list = ldns_rr_list_new();
    ldns_rr *rr;

    for (size_t i = 0; list != NULL && i < n; i++) {
        rr = dnsup_delete_rr(ch[i].name);
        if (rr == NULL || !ldns_rr_list_push_rr(list, rr)) {
            ldns_rr_free(rr);
            snprintf(err, errlen, "%s: not a domain name", ch[i].name);
            goto fail;
        }
        if (ch[i].txt == NULL)
            continue;
        rr = NULL;
        if (dnsup_txt_text(ch[i].name, ch[i].txt, ttl, text, sizeof text) !=
                0 ||
            ldns_rr_new_frm_str(&rr, text, ttl, NULL, NULL) != LDNS_STATUS_OK ||
            !ldns_rr_list_push_rr(list, rr)) {
            ldns_rr_free(rr);
            snprintf(err, errlen, "%s: cannot build the TXT record",
                     ch[i].name);
            goto fail;
        }
    }
    if (list == NULL)
        snprintf(err, errlen, "out of memory");
    return list;
fail:
    ldns_rr_list_deep_free(list);
    return NULL;
}

/* The UPDATE message for zone (unsigned). NULL with err. */
static ldns_pkt *dnsup_packet(const char *zone, const struct dnsup_change *ch,
                              size_t n, unsigned ttl, char *err, size_t errlen)
{
    char fqdn[DNSCONF_NAME_MAX + 2];
    ldns_rr_list *list = dnsup_list(ch, n, ttl, err, errlen);
    ldns_rdf *zrdf;
    ldns_pkt *p;

    if (list == NULL)
        return NULL;
    snprintf(fqdn, sizeof fqdn, "%s.", zone);
    zrdf = ldns_dname_new_frm_str(fqdn);
    /* The zone rdf becomes the packet's; the list is copied. */
    p = zrdf != NULL
            ? ldns_update_pkt_new(zrdf, LDNS_RR_CLASS_IN, NULL, list, NULL)
            : NULL;
    ldns_rr_list_deep_free(list);
    if (p == NULL) {
        if (zrdf == NULL)
            snprintf(err, errlen, "zone %s: not a domain name", zone);
        else
            snprintf(err, errlen, "cannot build the update for %s", zone);
        return NULL;
    }
    /* RFC 2136 2.2: the bits after the opcode are zero in an UPDATE. */
    ldns_pkt_set_rd(p, false);
    ldns_pkt_set_random_id(p);
    return p;
}

int dnsup_print(FILE *out, const struct dnsq_server *s, const char *zone,
                const struct dnsup_key *key, const struct dnsup_change *ch,
                size_t n, unsigned ttl, char *err, size_t errlen)
{
    ldns_pkt *p = dnsup_packet(zone, ch, n, ttl, err, errlen);
    const ldns_rr_list *up;

    if (p == NULL)
        return -1;
    fprintf(out, "server %s %u\nzone %s.\n", s->addr, s->port, zone);
    fprintf(out, "; TSIG %s key %s (secret not shown)\n", key->alg, key->name);
    up = ldns_pkt_authority(p);
    for (size_t i = 0; i < ldns_rr_list_rr_count(up); i++) {
        const ldns_rr *rr = ldns_rr_list_rr(up, i);
        char *owner = ldns_rdf2str(ldns_rr_owner(rr));
        if (ldns_rr_get_class(rr) == LDNS_RR_CLASS_ANY) {
            fprintf(out, "update delete %s TXT\n", owner ? owner : "?");
        } else {
            char *text = ldns_rr2str(rr);
            /* ldns_rr2str ends the record with a newline. */
            fprintf(out, "update add %s", text ? text : "?\n");
            free(text);
        }
        free(owner);
    }
    fprintf(out, "send\n");
    ldns_pkt_free(p);
    return 0;
}

/* The TSIG error of an answer, 0 if none. */
static unsigned dnsup_tsig_error(const ldns_pkt *reply)
{
    const ldns_rr *t = ldns_pkt_tsig(reply);

    if (t == NULL || ldns_rr_rd_count(t) < 6)
        return 0;
    return ldns_rdf2native_int16(ldns_rr_rdf(t, 5));
}

/* Explains a refused update in err. */
static void dnsup_refused(const struct dnsq_server *s, const char *zone,
                          const struct dnsup_key *key, const ldns_pkt *reply,
                          char *err, size_t errlen)
{
    ldns_pkt_rcode rc = ldns_pkt_get_rcode(reply);
    unsigned terr = dnsup_tsig_error(reply);
    char *name = ldns_pkt_rcode2str(rc);
    const char *rname = name != NULL ? name : "an error";

    if (rc == LDNS_RCODE_NOTAUTH || terr != 0)
        snprintf(err, errlen,
                 "%s refused the TSIG key %s for zone %s (%s%s): check the "
                 "key name, algorithm and secret",
                 s->label, key->name, zone, rname,
                 terr == DNSUP_BADSIG    ? ", BADSIG"
                 : terr == DNSUP_BADKEY  ? ", BADKEY"
                 : terr == DNSUP_BADTIME ? ", BADTIME: is the clock right?"
                                         : "");
    else if (rc == LDNS_RCODE_REFUSED)
        snprintf(err, errlen,
                 "%s refused the update of zone %s (REFUSED): may key %s "
                 "update it?",
                 s->label, zone, key->name);
    else if (rc == LDNS_RCODE_NOTZONE)
        snprintf(err, errlen, "%s: a record is outside zone %s (NOTZONE)",
                 s->label, zone);
    else
        snprintf(err, errlen, "%s answered the update of zone %s with %s",
                 s->label, zone, rname);
    free(name);
}

/* Wipes the secret that ldns copied into the resolver. */
static void dnsup_wipe(ldns_resolver *r)
{
    const char *kd = ldns_resolver_tsig_keydata(r);

    if (kd != NULL)
        explicit_bzero((void *)(uintptr_t)kd, strlen(kd));
}

/* A TCP resolver for s holding the key. */
static ldns_resolver *dnsup_resolver(const struct dnsq_server *s,
                                     const struct dnsup_key *key,
                                     unsigned timeout_ms)
{
    struct timeval tv = {.tv_sec = timeout_ms / 1000,
                         .tv_usec = (timeout_ms % 1000) * 1000};
    char alg[40];
    ldns_resolver *r = ldns_resolver_new();
    ldns_rdf *ns = ldns_rdf_new_frm_str(
        strchr(s->addr, ':') != NULL ? LDNS_RDF_TYPE_AAAA : LDNS_RDF_TYPE_A,
        s->addr);

    if (r == NULL || ns == NULL ||
        ldns_resolver_push_nameserver(r, ns) != LDNS_STATUS_OK) {
        ldns_rdf_deep_free(ns);
        ldns_resolver_deep_free(r);
        return NULL;
    }
    ldns_rdf_deep_free(ns);
    ldns_resolver_set_port(r, (uint16_t)s->port);
    ldns_resolver_set_timeout(r, tv);
    ldns_resolver_set_retry(r, 1);
    ldns_resolver_set_usevc(r, true);
    ldns_resolver_set_random(r, false);
    /* ldns names algorithms as domain names, with the final dot. */
    snprintf(alg, sizeof alg, "%s.", key->alg);
    for (char *c = alg; *c != '\0'; c++)
        if (*c >= 'A' && *c <= 'Z')
            *c = (char)(*c - 'A' + 'a');
    ldns_resolver_set_tsig_keyname(r, key->name);
    ldns_resolver_set_tsig_algorithm(r, alg);
    ldns_resolver_set_tsig_keydata(r, key->secret);
    return r;
}

int dnsup_send(const struct dnsq_server *s, const char *zone,
               const struct dnsup_key *key, const struct dnsup_change *ch,
               size_t n, unsigned ttl, unsigned timeout_ms, char *err,
               size_t errlen)
{
    ldns_pkt *p = dnsup_packet(zone, ch, n, ttl, err, errlen), *reply = NULL;
    ldns_resolver *r;
    ldns_status st;
    int ret = -1;

    if (p == NULL)
        return -1;
    r = dnsup_resolver(s, key, timeout_ms);
    if (r == NULL) {
        snprintf(err, errlen, "%s: cannot set up the update", s->label);
        ldns_pkt_free(p);
        return -1;
    }
    st = ldns_update_pkt_tsig_add(p, r);
    if (st != LDNS_STATUS_OK) {
        snprintf(err, errlen, "cannot sign the update with key %s (%s): %s",
                 key->name, key->alg, ldns_get_errorstr_by_id(st));
        goto out;
    }
    st = ldns_send(&reply, r, p);
    if (reply == NULL)
        snprintf(err, errlen, "no answer from %s to the update of zone %s: %s",
                 s->label, zone,
                 st != LDNS_STATUS_OK ? ldns_get_errorstr_by_id(st)
                                      : "timeout");
    else if (ldns_pkt_id(reply) != ldns_pkt_id(p))
        snprintf(err, errlen, "%s answered another message", s->label);
    else if (ldns_pkt_get_rcode(reply) != LDNS_RCODE_NOERROR)
        dnsup_refused(s, zone, key, reply, err, errlen);
    else if (st != LDNS_STATUS_OK)
        snprintf(err, errlen,
                 "the answer of %s to the update carries no valid TSIG "
                 "signature (%s)",
                 s->label, ldns_get_errorstr_by_id(st));
    else
        ret = 0;
out:
    dnsup_wipe(r);
    ldns_pkt_free(reply);
    ldns_pkt_free(p);
    ldns_resolver_deep_free(r);
    return ret;
}
