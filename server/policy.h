/* policy: what an authenticated member may send as. Two checks: the
 * envelope sender (MAIL FROM) and the From: header field of the message,
 * each against the member's addresses (primary plus aliases), with the
 * tenant's choice of reject or rewrite to the primary address; the other
 * fields that name an author or sender (Sender:, Resent-From:,
 * Resent-Sender:, in policy_ident.c); and the text a mail reader shows
 * around those addresses (display names, comments, RFC 2047 encoded
 * words), which must not show an address the member does not own. Also
 * the DKIM signing domain, which is the domain of the (final) From:
 * address, itself one of the member's. Pure functions on caller data (the
 * text checks use one temporary buffer), any thread. */
#ifndef SG_POLICY_H
#define SG_POLICY_H

#include <stddef.h>

#include "../common/db.h"
#include "../common/limits.h"
#include "smtp_data.h"

/* Room for any reply text the checks produce. */
#define POLICY_REPLY_MAX (2 * SG_MAX_PATH + 128)

/* 1 if addr is one of m's addresses (compared with addr_equal), else 0. */
int policy_owns(const struct db_member *m, const char *addr);

/* Checks the envelope sender (a bare address, "" for the null path).
 * NULL: accepted; *use_r is the address to put in the envelope: sender
 * itself, or m->address when the tenant's sender policy rewrote it (then
 * *rewritten_r is 1). Otherwise returns the reply to send (a 553 formatted
 * into reply, replylen >= POLICY_REPLY_MAX); the null sender is always
 * refused, since a member's submission is never a bounce we may relay. */
const char *policy_check_sender(const struct db_member *m, const char *sender,
                                const char **use_r, int *rewritten_r,
                                char *reply, size_t replylen);

/* What policy_check_from() decided about an accepted message. */
struct policy_from {
    size_t hdr_index;                /* the From: field among the headers */
    char addr[SG_MAX_PATH + 1];      /* the address as found in the field */
    int rewritten;                   /* 1: replace the field by new_field */
    char new_field[SG_MAX_PATH + 9]; /* "From: <primary>" when rewritten */
    const char *use;                 /* addr, or m->address when rewritten */
};

/* Checks the From: header of msg (the message as stored, hdr its fields
 * as smtp_data found them): exactly one From: field (names compared
 * case-insensitively) holding exactly one mailbox, owned by m, and no
 * other address than m's in its display name or comments (as
 * policy_text_foreign() sees them). With the
 * tenant's from policy "rewrite", a mailbox that m does not own is
 * accepted and r->new_field is set for the caller to put in place. NULL:
 * accepted, *r filled; otherwise the 550 reply, formatted into reply
 * (replylen >= POLICY_REPLY_MAX). */
const char *policy_check_from(const struct db_member *m, const char *msg,
                              size_t msglen, const struct smtp_header *hdr,
                              size_t nhdr, struct policy_from *r, char *reply,
                              size_t replylen);

/* 1 if the text of a header field value, as a mail reader shows it —
 * folding removed, RFC 2047 encoded words decoded, quotes and quoted-pair
 * backslashes dropped, full-width '@' taken as '@' — holds something
 * shaped like an address (atext@dotted.domain) that m does not own; the
 * first one (cut to foundlen) goes to found. 0 if every such address is
 * m's. The field's real addr-spec is part of the text, so it must be m's
 * too. */
int policy_text_foreign(const struct db_member *m, const char *value,
                        size_t len, char *found, size_t foundlen);

/* Checks one header field of msg: NULL if it is not Sender:, Resent-From:
 * or Resent-Sender:, or if it holds exactly one mailbox that m owns and no
 * other address in its text. Otherwise the 550 reply, formatted into
 * reply (replylen >= POLICY_REPLY_MAX), and the offending address in
 * found ("" when the field holds no single mailbox). The caller refuses
 * the message or removes the field (remove_foreign_sender). */
const char *policy_check_ident_field(const struct db_member *m, const char *msg,
                                     size_t msglen, const struct smtp_header *h,
                                     char *found, size_t foundlen, char *reply,
                                     size_t replylen);

/* The DKIM signing domain of addr: its domain part, lower-cased, into out
 * (outlen >= SG_MAX_DOMAIN + 1). 0 ok; -1 if addr has no domain or the
 * domain is an address literal (nothing to sign for). */
int policy_dkim_domain(const char *addr, char *out, size_t outlen);
/* The signing domain for a message of m whose From: address is addr: as
 * policy_dkim_domain(), and -1 as well when addr is not one of m's
 * addresses, so that d= is always the domain of an address the member
 * owns (the admin tool gives a member addresses in its tenant's domains
 * only). */
int policy_sign_domain(const struct db_member *m, const char *addr, char *out,
                       size_t outlen);

#endif
