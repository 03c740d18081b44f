/* addr: e-mail address syntax for the SMTP envelope (RFC 5321 4.1.2) and
 * the From: header (RFC 5322 3.4). Pure functions, any thread, no
 * allocation: results go into caller buffers of the given sizes. */
#ifndef SG_ADDR_H
#define SG_ADDR_H

#include <stddef.h>

#include "limits.h"

/* Parses the argument of MAIL FROM:/RCPT TO: after the colon, e.g.
 * "<a@b.org> SIZE=100 BODY=8BITMIME". The path goes to addr (without angle
 * brackets, "" for the null path "<>"), the rest (parameters, leading
 * spaces skipped) is pointed to by *params_r. A source route (@a,@b:) is
 * accepted and dropped (RFC 5321 C). 0 ok; -1 syntax error or a part over
 * its RFC length, with a short reason in *err_r. addr must have room for
 * SG_MAX_PATH + 1 octets. */
int addr_parse_path(const char *arg, char *addr, const char **params_r,
                    const char **err_r);

/* Checks one bare mailbox "local@domain": dot-atom or quoted local part,
 * domain of LDH labels or an address literal. 1 valid, 0 not. */
int addr_is_valid(const char *addr);

/* Returns a pointer to the domain part (after the last '@'), or NULL. */
const char *addr_domain(const char *addr);

/* Lower-cases an ASCII domain into out (outlen > strlen). */
void addr_domain_lower(const char *domain, char *out, size_t outlen);

/* Case-insensitive address equality, as subgate compares owned addresses:
 * the domain per RFC 5321 2.4, and, as every major provider does, the
 * local part too. 1 equal, 0 not. */
int addr_equal(const char *a, const char *b);

/* Parses the body of a From: header field (after "From:", unfolded or
 * folded, CRLFs allowed) and extracts the single mailbox's addr-spec into
 * addr (room for SG_MAX_PATH + 1). Handles display names, quoted strings,
 * comments and angle addresses. 1: exactly one mailbox; 0: none or more
 * than one (group syntax, lists), or a syntax error, with a reason in
 * *err_r. */
int addr_parse_from(const char *value, size_t len, char *addr,
                    const char **err_r);

#endif
