/* auth_ldap: the LDAP backend of AUTH, for tenants whose members live in a
 * directory (settings in struct db_tenant_ldap, docs/ldap.md). One check:
 *
 *   1. take a connection from the pool (or open one: each URI in order,
 *      StartTLS for ldap:// unless turned off, certificates verified,
 *      then the service bind when the tenant has a bind DN);
 *   2. find the member's entry: the DN template with the login's uid
 *      (RFC 4514-escaped), or a search with the filter (RFC 4515-escaped)
 *      as the service;
 *   3. the submit filter, when set, must match the entry;
 *   4. the password: a simple bind as the entry, or, with a mail password
 *      attribute, a crypt(3) comparison with its {CRYPT} value, so that
 *      the account password never reaches the gateway;
 *   5. the member's addresses (from the address attributes, kept only in
 *      the tenant's domains, and uid@domain for each tenant domain when
 *      uid_domain is set) and OpenPGP fingerprint.
 *
 * Blocking: runs in a pool thread, never on the event loop. Every network
 * step is bounded by the timeout (connect, TLS, each operation). A
 * pooled connection that turns out dead (the server restarted) is replaced
 * once within the same check. The pool holds at most its size in
 * connections, each used by one check at a time; the caller makes sure
 * that no more than that many checks run at once (auth.c).
 *
 * The helpers below the check (escaping, login form, address and
 * fingerprint parsing) are pure and any thread; they are exposed for the
 * unit tests. */
#ifndef SG_AUTH_LDAP_H
#define SG_AUTH_LDAP_H

#include <stddef.h>

#include "../common/db.h"

/* Octets of a settings digest (SHA-256), which tells pooled connections
 * made with other settings apart. */
#define AUTH_LDAP_SIG_LEN 32

struct auth_ldap_pool;

/* A pool of at most size connections (size >= 1). */
struct auth_ldap_pool *auth_ldap_pool_new(unsigned size);
/* Unbinds and frees every connection; no check may be running. Sets *pp
 * to NULL. */
void auth_ldap_pool_free(struct auth_ldap_pool **pp);

/* Checks login/password against tenant t's directory. sig is a digest of
 * t's settings; timeout_ms bounds each network step; logid starts the log
 * lines about directory errors. 1: accepted, *m filled (tenant, policies,
 * addresses with the primary first, fingerprint; no password hash). 0:
 * refused (unknown uid, bad password, not allowed by the submit filter,
 * no usable address, ...). -1: the directory could not be asked (every
 * URI down, timeout, TLS failure, service bind refused, other errors):
 * the client must try again later, never be told its password is wrong.
 * *reason_r: static text for the log. m is overwritten in any case. */
int auth_ldap_verify(struct auth_ldap_pool *pool,
                     const struct db_tenant_auth *t,
                     const unsigned char sig[AUTH_LDAP_SIG_LEN],
                     unsigned timeout_ms, const char *logid, const char *login,
                     const char *password, struct db_member *m,
                     const char **reason_r);

/* RFC 4515 3: in escapes '*', '(', ')' and '\' as \2a, \28, \29, \5c for
 * use as a value in a search filter. 0, or -1 if out is too small. */
int auth_ldap_escape_filter(const char *in, char *out, size_t outlen);

/* RFC 4514 2.4: in escapes '"', '+', ',', ';', '<', '>', '=', '\', a
 * leading ' ' or '#' and a trailing ' ' with a backslash, and control
 * octets as \HH, for use as an attribute value in a DN. 0 or -1. */
int auth_ldap_escape_dn(const char *in, char *out, size_t outlen);

/* Expands a DN template (dn 1) or filter template (dn 0): each "%u"
 * becomes value escaped for that use, "%%" a '%'. 0, or -1 for another
 * '%' sequence or when out is too small. */
int auth_ldap_expand(const char *tmpl, const char *value, int dn, char *out,
                     size_t outlen);

/* The value of %u for login under t's login form: the login's local part
 * (or the bare login) for DB_LDAP_LOGIN_UID; the login itself, or
 * login@tenant for a bare one, for DB_LDAP_LOGIN_ADDRESS. 1, or 0 when
 * the login cannot name an entry (empty uid, control octets, too long). */
int auth_ldap_uid(const struct db_tenant_auth *t, const char *login, char *out,
                  size_t outlen);

/* Adds one attribute value (len octets, not NUL-terminated) to m's
 * addresses: an "smtp:" prefix (Active Directory proxyAddresses) is
 * removed, other "type:" values are skipped, the address must be valid
 * and new to m, and its domain is lower-cased and must be one of domains
 * (space-separated, lower-case). 1 added, 0 skipped, -1 skipped because
 * its domain is not the tenant's. */
int auth_ldap_add_address(struct db_member *m, const char *domains,
                          const char *value, size_t len);

/* An OpenPGP fingerprint from an attribute value: 40 or 64 hex digits,
 * spaces ignored, into out upper-case. 1, or 0 if it is not one. */
int auth_ldap_fingerprint(const char *value, size_t len, char *out,
                          size_t outlen);

#endif
