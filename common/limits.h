/* limits: every bound that subgate applies to untrusted input, each with the
 * reason for its value. Configuration may move a limit only between the MIN
 * and MAX given here. Included by any module; no code. */
#ifndef SG_LIMITS_H
#define SG_LIMITS_H

/* RFC 5321 4.5.3.1.4 allows 512 octets per command line including CRLF;
 * extensions (SIZE=, BODY=, AUTH=) may add to it, RFC 1869 4.1 says 512 more
 * per extension is enough. */
#define SG_MAX_CMD_LINE 2048
/* Before AUTH succeeds a client may only greet, start TLS and authenticate:
 * a tighter bound keeps unauthenticated memory small. */
#define SG_MAX_PREAUTH_LINE 512
/* RFC 4954 4: an AUTH command or response line may be up to 12288 octets. */
#define SG_MAX_AUTH_LINE 12288
/* RFC 5322 2.1.1 / RFC 5321 4.5.3.1.6: 998 octets plus CRLF. A longer line
 * would have to be re-folded by a later hop and break the signature, so it
 * is refused at submission. */
#define SG_MAX_TEXT_LINE 1000
/* RFC 5321 4.5.3.1.8 requires accepting at least 100 recipients. */
#define SG_DEF_RECIPIENTS 100
#define SG_MIN_RECIPIENTS 100
#define SG_MAX_RECIPIENTS 10000
/* Header section: no legitimate submitted message comes near these; they cap
 * the work of parsing and signing headers. One folded field may span many
 * lines. */
#define SG_MAX_HEADER_COUNT 1000
#define SG_MAX_HEADER_FIELD (64 * 1024)
#define SG_MAX_HEADER_SECTION (1024 * 1024)
/* Message size (SIZE, RFC 1870): default 25 MiB as common submission
 * services use; config may move it between 64 KiB and 1 GiB. */
#define SG_DEF_MESSAGE_SIZE (25UL * 1024 * 1024)
#define SG_MIN_MESSAGE_SIZE (64UL * 1024)
#define SG_MAX_MESSAGE_SIZE (1024UL * 1024 * 1024)
/* A client that keeps sending bad commands is broken or probing: after this
 * many the session ends with 421 (Postfix smtpd_hard_error_limit style). */
#define SG_MAX_BAD_COMMANDS 20
/* Failed AUTH attempts per session before it is closed. */
#define SG_MAX_AUTH_FAILURES 3
/* Addresses (primary plus aliases) one member may own. */
#define SG_MAX_MEMBER_ADDRS 256
/* An OpenPGP fingerprint as hex: 40 digits for v4 keys (RFC 4880 12.2),
 * 64 for v5/v6 keys (RFC 9580 5.5.4). */
#define SG_MAX_FINGERPRINT 64
/* LDAP (server/auth_ldap.c): a DN or search filter built from a tenant's
 * template and an escaped login, and one setting of a tenant (URI list,
 * DN, filter, path). Directories allow far more; these bound what one
 * check builds from untrusted logins. */
#define SG_MAX_LDAP_DN 2048
#define SG_MAX_LDAP_FILTER 2048
#define SG_MAX_LDAP_SETTING 1024
/* Attribute names in a tenant's address list (mail, mailAlternateAddress,
 * proxyAddresses, ...). */
#define SG_MAX_LDAP_ATTRS 8
/* The domains of an LDAP tenant, space-separated: addresses read from the
 * directory are kept only in these. Room for hundreds of domains. */
#define SG_MAX_TENANT_DOMAINS_TEXT (16 * 1024)
/* RFC 5321 4.5.3.1.3: path up to 256 octets; 4.5.3.1.1/2: local part 64,
 * domain 255. */
#define SG_MAX_PATH 256
#define SG_MAX_LOCAL_PART 64
#define SG_MAX_DOMAIN 255
/* Inter-process frames: the payload of one frame; larger data is sent as
 * several frames. */
#define SG_IPC_MAX_PAYLOAD (64 * 1024)
/* DKIM keys: RSA sizes accepted by `key generate`. */
#define SG_MIN_RSA_BITS 1024
#define SG_DEF_RSA_BITS 2048
#define SG_MAX_RSA_BITS 4096
/* Logged network bytes are escaped and cut to this many octets. */
#define SG_LOG_MAX_PEER_TEXT 100
/* The metrics endpoint (server/metrics_http.c): a scraper's GET with its
 * headers. Prometheus sends a few hundred octets; nothing else needs to
 * be read from a client there. */
#define SG_MAX_METRICS_REQUEST 4096
/* Queue file envelope: the text before the message, bounded so that a
 * corrupt file cannot make the queue runner allocate without limit. */
#define SG_MAX_QUEUE_ENVELOPE (SG_MAX_RECIPIENTS * (SG_MAX_PATH + 32) + 4096)

/* Password reset: a change-password request is one short signed text;
 * 1 MiB leaves room for long headers and a large key in the signature
 * while keeping gpg's work and our copies small. The same bound applies
 * to a member's public key given to `subgate member pgpkey`. */
#define SG_MAX_MAILGATE_MESSAGE (1024 * 1024)
#define SG_MAX_PGP_KEY (1024 * 1024)

/* A submission token's label (a device name) and the secret handed out:
 * "sgt_" ID "_" SECRET with a 64-bit decimal row id and 24 random
 * characters. A client certificate given to `subgate member cert add`
 * (PEM, chain included). */
#define SG_MAX_TOKEN_LABEL 64
#define SG_TOKEN_SECRET_LEN 24
#define SG_MAX_TOKEN (4 + 20 + 1 + SG_TOKEN_SECRET_LEN)
#define SG_MAX_CLIENT_CERT (64 * 1024)

#endif
