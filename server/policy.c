/* policy: sender and From: checks for authenticated members. */
#include "policy.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "../common/addr.h"

static const char policy_reply_null[] = "553 5.7.1 Null sender not allowed";
static const char policy_reply_one_from[] =
    "550 5.7.1 Message must have exactly one From: header with one address";

int policy_owns(const struct db_member *m, const char *addr)
{
    size_t i;

    for (i = 0; i < m->naddrs; i++) {
        if (addr_equal(m->addrs[i], addr))
            return 1;
    }
    return 0;
}

const char *policy_check_sender(const struct db_member *m, const char *sender,
                                const char **use_r, int *rewritten_r,
                                char *reply, size_t replylen)
{
    *use_r = sender;
    *rewritten_r = 0;
    if (sender[0] == '\0')
        return policy_reply_null;
    if (policy_owns(m, sender))
        return NULL;
    if (m->sender_policy == DB_POLICY_REWRITE) {
        *use_r = m->address;
        *rewritten_r = 1;
        return NULL;
    }
    snprintf(reply, replylen,
             "553 5.7.1 Sender address <%s> not owned by user <%s>", sender,
             m->address);
    return reply;
}

/* 1 if header h is a From: field. */
static int policy_is_from(const char *msg, const struct smtp_header *h)
{
    return h->name_len == 4 && strncasecmp(msg + h->off, "From", 4) == 0;
}

const char *policy_check_from(const struct db_member *m, const char *msg,
                              size_t msglen, const struct smtp_header *hdr,
                              size_t nhdr, struct policy_from *r, char *reply,
                              size_t replylen)
{
    const struct smtp_header *h = NULL;
    char found[SG_MAX_PATH + 1];
    const char *err, *foreign = NULL;
    size_t i, nfrom = 0;

    memset(r, 0, sizeof(*r));
    for (i = 0; i < nhdr; i++) {
        if (hdr[i].off + hdr[i].len > msglen || hdr[i].name_len >= hdr[i].len)
            continue; /* not a field of this message: cannot happen */
        if (policy_is_from(msg, &hdr[i])) {
            nfrom++;
            h = &hdr[i];
            r->hdr_index = i;
        }
    }
    /* RFC 5322 3.6: exactly one From:; one mailbox, since a list would
     * need a Sender: and leaves no single domain to align with. */
    if (nfrom != 1 ||
        addr_parse_from(msg + h->off + h->name_len + 1,
                        h->len - h->name_len - 1, r->addr, &err) != 1)
        return policy_reply_one_from;
    r->use = r->addr;
    if (!policy_owns(m, r->addr))
        foreign = r->addr;
    else if (policy_text_foreign(m, msg + h->off + h->name_len + 1,
                                 h->len - h->name_len - 1, found,
                                 sizeof(found)))
        foreign = found;
    if (foreign == NULL)
        return NULL;
    if (m->from_policy == DB_POLICY_REWRITE) {
        r->rewritten = 1;
        r->use = m->address;
        snprintf(r->new_field, sizeof(r->new_field), "From: <%s>", m->address);
        return NULL;
    }
    snprintf(reply, replylen,
             "550 5.7.1 From: address <%s> not owned by user <%s>", foreign,
             m->address);
    return reply;
}

int policy_sign_domain(const struct db_member *m, const char *addr, char *out,
                       size_t outlen)
{
    /* An accepted From: is owned and a rewritten one is the primary
     * address; checked again here so that no later change to the From:
     * rules can sign for a domain the member has no address in. */
    if (!policy_owns(m, addr))
        return -1;
    return policy_dkim_domain(addr, out, outlen);
}

int policy_dkim_domain(const char *addr, char *out, size_t outlen)
{
    const char *d = addr_domain(addr);

    if (d == NULL || d[0] == '\0' || d[0] == '[' || strlen(d) >= outlen ||
        strlen(d) > SG_MAX_DOMAIN)
        return -1;
    addr_domain_lower(d, out, outlen);
    return 0;
}
