/* cfg: see cfg.h. Every key is one row of cfg_keys[] below: its name, type,
 * place in struct cfg, default, bounds and documentation. cfg_defaults()
 * runs each default text through the same parser as the file does, so a
 * default can never be a value the file could not hold. */
#include "cfg.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "jail.h"
#include "limits.h"
#include "log.h"
#include "xalloc.h"

/* A configuration line is written by an administrator; this bound only
 * keeps a corrupt or binary file from being read as one huge line. */
#define CFG_MAX_LINE 4096
/* Room for a reason text built while checking one value. */
#define CFG_MAX_WHY 640
/* RFC 1035 2.3.4: a label is at most 63 octets, a name at most 253 as
 * text. */
#define CFG_MAX_LABEL 63
#define CFG_MAX_HOSTNAME 253

#define CFG_K 1024ULL
#define CFG_SEC 1000ULL
#define CFG_MIN (60 * CFG_SEC)
#define CFG_HOUR (60 * CFG_MIN)
#define CFG_DAY (24 * CFG_HOUR)

enum cfg_type {
    CFG_T_STRING,
    CFG_T_PATH,
    CFG_T_LISTEN,      /* host:port list, stored space-separated */
    CFG_T_ENUM,        /* stored as enum cfg_relay_tls */
    CFG_T_SIZE,        /* size_t, octets */
    CFG_T_UINT,        /* unsigned */
    CFG_T_DURATION_MS, /* unsigned, milliseconds */
    CFG_T_DURATION_S,  /* unsigned, seconds; the value must be whole */
    CFG_T_BOOL,        /* int, 0 or 1 */
};

/* Per type: its name in the documentation and the hint in "bad value"
 * messages. */
static const struct {
    const char *name;
    const char *hint;
} cfg_types[] = {
    [CFG_T_STRING] = {"string", "bad syntax"},
    [CFG_T_PATH] = {"path", "bad syntax"},
    [CFG_T_LISTEN] = {"address list", "bad syntax"},
    [CFG_T_ENUM] = {"one of none, may, encrypt, verify",
                    "expected none, may, encrypt or verify"},
    [CFG_T_SIZE] = {"size",
                    "expected a number of octets, optionally with K, M or G"},
    [CFG_T_UINT] = {"integer", "expected a decimal number"},
    [CFG_T_DURATION_MS] = {"duration",
                           "expected a number with a unit: ms, s, m, h or d"},
    [CFG_T_DURATION_S] = {"duration",
                          "expected a number with a unit: ms, s, m, h or d"},
    [CFG_T_BOOL] = {"boolean", "expected yes or no"},
};

/* The default is computed rather than written in the table. */
#define CFG_F_HOST_SHORT 0x1  /* gethostname() up to the first '.' */
#define CFG_F_HOST_FULL 0x2   /* gethostname() as is */
#define CFG_F_UNDER_STATE 0x4 /* "<state_dir>/" + def, unless set */

/* Extra syntax check for a string value: 0 ok, -1 with a reason. */
typedef int (*cfg_check_fn)(const char *v, const char **why_r);

struct cfg_key {
    const char *name;
    enum cfg_type type;
    size_t off; /* offsetof(struct cfg, field) */
    const char *def;
    /* Bounds in octets, milliseconds or a count; for strings, the length
     * (max 0: no bound beyond the line length). */
    unsigned long long min;
    unsigned long long max;
    unsigned flags;
    cfg_check_fn check;
    const char *const *names; /* CFG_T_ENUM: value names, NULL-ended */
    const char *doc;
};

static int cfg_check_label(const char *v, const char **why_r);
static int cfg_check_hostname(const char *v, const char **why_r);
static int cfg_check_relay_host(const char *v, const char **why_r);
static int cfg_check_selector(const char *v, const char **why_r);
static int cfg_check_user(const char *v, const char **why_r);
static int cfg_check_chroot(const char *v, const char **why_r);

/* Same order as enum cfg_relay_tls. */
static const char *const cfg_relay_tls_names[] = {"none", "may", "encrypt",
                                                  "verify", NULL};

#define CFG_OFF(f) offsetof(struct cfg, f)

static const struct cfg_key cfg_keys[] = {
    {"node_name", CFG_T_STRING, CFG_OFF(node_name), NULL, 1, CFG_MAX_LABEL,
     CFG_F_HOST_SHORT, cfg_check_label, NULL,
     "This node's name. It goes into DKIM selectors (%n in "
     "selector_template) and log lines, so nodes that share a "
     "domain must have different names. Letters, digits and '-'."},
    {"hostname", CFG_T_STRING, CFG_OFF(hostname), NULL, 1, CFG_MAX_HOSTNAME,
     CFG_F_HOST_FULL, cfg_check_hostname, NULL,
     "The name subgated gives in its SMTP greeting and EHLO reply. Set "
     "it to the fully qualified name that clients connect to."},
    {"state_dir", CFG_T_PATH, CFG_OFF(state_dir), "/var/lib/subgate", 1, 0, 0,
     NULL, NULL,
     "Directory that holds the database, keys, queue and run-time "
     "files, unless those are set one by one."},
    {"database", CFG_T_PATH, CFG_OFF(database), "subgate.db", 1, 0,
     CFG_F_UNDER_STATE, NULL, NULL,
     "SQLite database with tenants, domains, members and keys."},
    {"queue_dir", CFG_T_PATH, CFG_OFF(queue_dir), "queue", 1, 0,
     CFG_F_UNDER_STATE, NULL, NULL, "Signed messages waiting for delivery."},
    {"key_dir", CFG_T_PATH, CFG_OFF(key_dir), "keys", 1, 0, CFG_F_UNDER_STATE,
     NULL, NULL, "Private DKIM keys. Only the signer reads this directory."},
    {"run_dir", CFG_T_PATH, CFG_OFF(run_dir), "run", 1, 0, CFG_F_UNDER_STATE,
     NULL, NULL, "Sockets between subgate's processes and the pid file."},
    {"pgp_dir", CFG_T_PATH, CFG_OFF(pgp_dir), "pgp", 1, 0, CFG_F_UNDER_STATE,
     NULL, NULL,
     "OpenPGP keyrings of the members' public keys, one directory per "
     "tenant (pgp_dir/TENANT), for password reset by signed mail."},
    {"submission_listen", CFG_T_LISTEN, CFG_OFF(submission_listen),
     "0.0.0.0:587 [::]:587", 0, 0, 0, NULL, NULL,
     "Addresses for message submission with STARTTLS (RFC 6409), "
     "as host:port separated by spaces or commas; IPv6 addresses "
     "in brackets ([::1]:587). Empty: no such listener."},
    {"submissions_listen", CFG_T_LISTEN, CFG_OFF(submissions_listen),
     "0.0.0.0:465 [::]:465", 0, 0, 0, NULL, NULL,
     "Addresses for submission over implicit TLS (RFC 8314), in "
     "the same form. Empty: no such listener."},
    {"metrics_listen", CFG_T_LISTEN, CFG_OFF(metrics_listen), "", 0, 0, 0, NULL,
     NULL,
     "Addresses where the SMTP worker serves its counters in the "
     "Prometheus text format (GET /metrics, plain HTTP), in the same "
     "form, for example 127.0.0.1:9587. The worker binds them after it "
     "has switched to user, so ports below 1024 do not work there. Keep "
     "them local or firewalled: the page has no access control. Empty: "
     "no endpoint."},
    {"tls_cert", CFG_T_PATH, CFG_OFF(tls_cert), "", 0, 0, 0, NULL, NULL,
     "Server certificate chain (PEM). subgated does not start "
     "without it."},
    {"tls_key", CFG_T_PATH, CFG_OFF(tls_key), "", 0, 0, 0, NULL, NULL,
     "Private key of the server certificate (PEM). subgated does "
     "not start without it."},
    {"relay_host", CFG_T_STRING, CFG_OFF(relay_host), "", 0, 0, 0,
     cfg_check_relay_host, NULL,
     "Smarthost that receives all outgoing mail: host, host:port, [host] "
     "or [host]:port, where an IPv6 address must be in brackets; the "
     "port is 25 if not given. Empty: deliver to the MX hosts of each "
     "recipient's domain."},
    {"relay_tls", CFG_T_ENUM, CFG_OFF(relay_tls), "may", 0, 0, 0, NULL,
     cfg_relay_tls_names,
     "TLS towards the next hop. none: never; may: STARTTLS when "
     "offered, certificate not checked, plaintext when the handshake "
     "fails; encrypt: STARTTLS required; verify: STARTTLS required and "
     "the certificate must verify and match the host name."},
    {"relay_ca_file", CFG_T_PATH, CFG_OFF(relay_ca_file), "", 0, 0, 0, NULL,
     NULL,
     "CA certificates (PEM) for relay_tls = verify. Empty: the "
     "system trust store."},
    {"relay_port", CFG_T_UINT, CFG_OFF(relay_port), "25", 1, 65535, 0, NULL,
     NULL,
     "Port of the MX hosts when relay_host is empty. Only tests and "
     "special set-ups change it."},
    {"relay_concurrency", CFG_T_UINT, CFG_OFF(relay_concurrency), "5", 1, 100,
     0, NULL, NULL,
     "Connections open at once to one destination: one recipient domain "
     "in MX delivery, or relay_host. Idle connections kept for reuse "
     "count too."},
    {"relay_auth_user", CFG_T_STRING, CFG_OFF(relay_auth_user), "", 0,
     SG_MAX_PATH, 0, NULL, NULL,
     "User name for SMTP AUTH (PLAIN, else LOGIN) to relay_host. Sent "
     "only inside TLS, so relay_tls must not be none. Empty: no AUTH."},
    {"relay_auth_password_file", CFG_T_PATH, CFG_OFF(relay_auth_password_file),
     "", 0, 0, 0, NULL, NULL,
     "File whose first line is the password for relay_auth_user (mode "
     "0600 or 0640, readable by user). Read when the queue runner "
     "starts."},
    {"max_message_size", CFG_T_SIZE, CFG_OFF(max_message_size), "25M",
     SG_MIN_MESSAGE_SIZE, SG_MAX_MESSAGE_SIZE, 0, NULL, NULL,
     "Largest message accepted, announced with the SIZE extension "
     "(RFC 1870)."},
    {"max_recipients", CFG_T_UINT, CFG_OFF(max_recipients), "100",
     SG_MIN_RECIPIENTS, SG_MAX_RECIPIENTS, 0, NULL, NULL,
     "Recipients accepted for one message. RFC 5321 4.5.3.1.8 "
     "requires at least 100."},
    {"max_sessions", CFG_T_UINT, CFG_OFF(max_sessions), "1000", 1, 100000, 0,
     NULL, NULL, "Concurrent SMTP sessions this node serves."},
    {"auth_fail_delay", CFG_T_DURATION_MS, CFG_OFF(auth_fail_delay_ms), "1s", 0,
     30 * CFG_SEC, 0, NULL, NULL,
     "Wait before answering a failed AUTH, to slow down password "
     "guessing."},
    {"auth_cache_ttl", CFG_T_DURATION_MS, CFG_OFF(auth_cache_ttl_ms), "5m", 0,
     CFG_DAY, 0, NULL, NULL,
     "How long an accepted login is remembered, so that the next one "
     "with the same password costs neither a password hash nor a "
     "directory query. A password changed with subgate member passwd "
     "takes effect at once; for a tenant whose members are in LDAP, a "
     "change in the directory takes effect within this time. 0: not "
     "remembered."},
    {"auth_cache_negative_ttl", CFG_T_DURATION_MS,
     CFG_OFF(auth_cache_negative_ttl_ms), "30s", 0, CFG_HOUR, 0, NULL, NULL,
     "How long a refused login (the same login and password) is "
     "remembered. 0: not remembered."},
    {"auth_cache_size", CFG_T_UINT, CFG_OFF(auth_cache_size), "10000", 0,
     1000000, 0, NULL, NULL,
     "Logins remembered at most, the least recently used forgotten "
     "first. Only a keyed hash of login and password is kept, never the "
     "password. 0: no cache."},
    {"scram_iterations", CFG_T_UINT, CFG_OFF(scram_iterations), "8192", 4096,
     1000000, 0, NULL, NULL,
     "PBKDF2 iterations of the SCRAM-SHA-256 keys that subgate member add "
     "and passwd store with a new password. Keys already stored keep "
     "theirs."},
    {"ldap_timeout", CFG_T_DURATION_MS, CFG_OFF(ldap_timeout_ms), "5s", 100,
     5 * CFG_MIN, 0, NULL, NULL,
     "Longest wait for each step towards an LDAP directory: connecting, "
     "TLS, each bind and search. A tenant may set its own (subgate "
     "tenant ldap --timeout). A directory that does not answer in time "
     "gives the client a temporary failure (454 4.7.0)."},
    {"ldap_pool_size", CFG_T_UINT, CFG_OFF(ldap_pool_size), "4", 1, 64, 0, NULL,
     NULL,
     "Connections to LDAP directories kept open and reused; also the "
     "most directory checks that run at once, others wait their turn."},
    {"smtp_timeout", CFG_T_DURATION_MS, CFG_OFF(smtp_timeout_ms), "300s",
     10 * CFG_SEC, CFG_HOUR, 0, NULL, NULL,
     "After AUTH, a client that does not complete a command line for "
     "this long after the previous one is closed (421 4.4.2)."},
    {"command_timeout", CFG_T_DURATION_MS, CFG_OFF(command_timeout_ms), "1m",
     CFG_SEC, CFG_HOUR, 0, NULL, NULL,
     "Before AUTH has succeeded, a client must complete a command line "
     "(the TLS handshake included) within this time after the previous "
     "one, or the session is closed; octets that dribble in do not extend "
     "it. After AUTH, smtp_timeout applies to each command line."},
    {"data_timeout", CFG_T_DURATION_MS, CFG_OFF(data_timeout_ms), "2m", CFG_SEC,
     CFG_HOUR, 0, NULL, NULL,
     "During DATA, a client that sends nothing for this long is closed "
     "with 421 4.4.2."},
    {"min_data_rate", CFG_T_SIZE, CFG_OFF(min_data_rate), "512", 0,
     100ULL * 1024 * 1024, 0, NULL, NULL,
     "Octets per second that a client must average during DATA, counted "
     "from the 354 reply once 10 seconds have passed; slower clients are "
     "closed with 421 4.4.2. 0: no minimum."},
    {"max_conn_per_ip", CFG_T_UINT, CFG_OFF(max_conn_per_ip), "20", 0, 100000,
     0, NULL, NULL,
     "Concurrent connections from one client address (IPv6: one /64). "
     "Over it a connection is answered 421 4.7.0 and closed. 0: no "
     "limit."},
    {"conn_rate_per_ip", CFG_T_UINT, CFG_OFF(conn_rate_per_ip), "300", 0,
     100000, 0, NULL, NULL,
     "New connections per minute from one client address (IPv6: one "
     "/64), as a bucket that refills over the minute. Over it a "
     "connection is answered 421 4.7.0 and closed. 0: no limit."},
    {"auth_fail_limit_ip", CFG_T_UINT, CFG_OFF(auth_fail_limit_ip), "20", 0,
     100000, 0, NULL, NULL,
     "Failed AUTH from one client address, whatever the login, after "
     "which that address is blocked for auth_block_time: new connections "
     "get 421 4.7.0. 0: never block an address."},
    {"auth_fail_limit_account", CFG_T_UINT, CFG_OFF(auth_fail_limit_account),
     "5", 0, 100000, 0, NULL, NULL,
     "Failed AUTH for one login from one client address, after which "
     "that login is refused from that address (454 4.7.0, the password "
     "is not checked) for auth_block_time. The member can still log in "
     "from other addresses. 0: never block a login."},
    {"auth_block_time", CFG_T_DURATION_MS, CFG_OFF(auth_block_time_ms), "15m",
     CFG_SEC, CFG_DAY, 0, NULL, NULL,
     "How long a block lasts, and how long a failed AUTH counts towards "
     "the limits and the growing delay (auth_fail_delay doubles with each "
     "failure from the address, up to 30s)."},
    {"member_msg_per_hour", CFG_T_UINT, CFG_OFF(member_msg_per_hour), "500", 0,
     10000000, 0, NULL, NULL,
     "Messages one member may send per hour (a bucket that refills over "
     "the hour). Over it MAIL and the end of DATA are answered 451 4.7.1. "
     "0: no limit."},
    {"member_rcpt_per_day", CFG_T_UINT, CFG_OFF(member_rcpt_per_day), "2000", 0,
     100000000, 0, NULL, NULL,
     "Recipients one member may send to per day, counted per message. "
     "Over it RCPT and the end of DATA are answered 451 4.7.1. 0: no "
     "limit."},
    {"tenant_msg_per_hour", CFG_T_UINT, CFG_OFF(tenant_msg_per_hour), "10000",
     0, 100000000, 0, NULL, NULL,
     "Messages all members of one tenant together may send per hour. "
     "Over it MAIL and the end of DATA are answered 451 4.7.1. 0: no "
     "limit."},
    {"budget_report_interval", CFG_T_DURATION_S,
     CFG_OFF(budget_report_interval_s), "1h", 0, 7 * CFG_DAY, 0, NULL, NULL,
     "When member_msg_per_hour, member_rcpt_per_day or tenant_msg_per_hour "
     "refuses a member, the tenant's administrator (subgate tenant notify) "
     "is mailed one report, and then no other about the same member (the "
     "same tenant, for tenant_msg_per_hour) and limit for this long. "
     "Tenants without an administrator address get none. 0s: never "
     "report. Whole seconds."},
    {"remove_foreign_sender", CFG_T_BOOL, CFG_OFF(remove_foreign_sender), "no",
     0, 0, 0, NULL, NULL,
     "Sender:, Resent-From: and Resent-Sender: fields must name one "
     "address of the member. no: a message with another one is refused "
     "(550 5.7.1); yes: such fields are removed before signing."},
    {"signer_timeout", CFG_T_DURATION_MS, CFG_OFF(signer_timeout_ms), "10s",
     CFG_SEC, 5 * CFG_MIN, 0, NULL, NULL,
     "Longest wait for the signer to sign one message; after it "
     "the client is answered with a temporary failure."},
    {"retry_min", CFG_T_DURATION_S, CFG_OFF(retry_min_s), "5m", CFG_SEC,
     CFG_DAY, 0, NULL, NULL,
     "Delay before the first retry of a delivery that failed "
     "temporarily. Whole seconds."},
    {"retry_max", CFG_T_DURATION_S, CFG_OFF(retry_max_s), "1h", CFG_SEC,
     7 * CFG_DAY, 0, NULL, NULL,
     "Longest delay between retries; must not be less than "
     "retry_min. Whole seconds."},
    {"max_queue_lifetime", CFG_T_DURATION_S, CFG_OFF(max_queue_lifetime_s),
     "5d", CFG_MIN, 30 * CFG_DAY, 0, NULL, NULL,
     "How long a message is retried before it is returned to its "
     "sender as undeliverable. Whole seconds."},
    {"delay_warning", CFG_T_DURATION_S, CFG_OFF(delay_warning_s), "0s", 0,
     30 * CFG_DAY, 0, NULL, NULL,
     "Once a message has waited this long for some recipient, its sender "
     "gets one delay notice (a DSN with Action: delayed). 0s: never."},
    {"relay_timeout", CFG_T_DURATION_MS, CFG_OFF(relay_timeout_ms), "300s",
     CFG_SEC, CFG_HOUR, 0, NULL, NULL,
     "Timeout for each step towards the next hop: connecting, the "
     "TLS handshake and each SMTP reply."},
    {"selector_template", CFG_T_STRING, CFG_OFF(selector_template),
     "%Y%m%d-%a-%n", 1, CFG_MAX_LABEL, 0, cfg_check_selector, NULL,
     "Name of new DKIM selectors. %Y, %m and %d are the year, month "
     "and day the key is generated, %a its algorithm and %n "
     "node_name; other characters must be letters, digits or '-'."},
    {"rotate_after", CFG_T_DURATION_S, CFG_OFF(rotate_after_s), "30d", CFG_SEC,
     3650 * CFG_DAY, 0, NULL, NULL,
     "`subgate key rotate --due` starts a new key once the active one "
     "has signed for this long. Whole seconds."},
    {"publish_lead", CFG_T_DURATION_S, CFG_OFF(publish_lead_s), "1d", CFG_SEC,
     365 * CFG_DAY, 0, NULL, NULL,
     "How long a new key's record is served before the key signs, so "
     "that caches and secondary servers have it; must not be less "
     "than dkim_ttl. Whole seconds."},
    {"retire_for", CFG_T_DURATION_S, CFG_OFF(retire_for_s), "7d", 0,
     365 * CFG_DAY, 0, NULL, NULL,
     "How long a retired key stays published, so that mail it signed "
     "and that is still on its way verifies. Then it is revoked. "
     "Whole seconds."},
    {"revoke_for", CFG_T_DURATION_S, CFG_OFF(revoke_for_s), "7d", 0,
     365 * CFG_DAY, 0, NULL, NULL,
     "How long a revoked key's record stays in DNS with an empty p= "
     "before the key and its record are deleted. Whole seconds."},
    {"reveal_after", CFG_T_DURATION_S, CFG_OFF(reveal_after_s), "0s", 0,
     3650 * CFG_DAY, 0, NULL, NULL,
     "Time after a key's retirement when its private key is revealed "
     "in <state_dir>/revealed/, once the key is revoked, so that old "
     "signatures prove nothing any more. 0s: never."},
    {"dkim_ttl", CFG_T_DURATION_S, CFG_OFF(dkim_ttl_s), "1h", CFG_SEC, CFG_DAY,
     0, NULL, NULL,
     "TTL of the DKIM records that `subgate dns publish` and `dns "
     "records` write. Whole seconds."},
    {"dns_timeout", CFG_T_DURATION_MS, CFG_OFF(dns_timeout_ms), "10s", 100,
     5 * CFG_MIN, 0, NULL, NULL,
     "Longest wait for one answer from a DNS server (UPDATE or "
     "query)."},
    {"dns_resolver", CFG_T_STRING, CFG_OFF(dns_resolver), "", 0, 0, 0,
     cfg_check_relay_host, NULL,
     "Resolver that `subgate dns check` asks for name server "
     "addresses and tenants' CNAMEs, and the queue runner for MX, A and "
     "AAAA records when relay_host is empty: address or address:port "
     "([address]:port for IPv6), port 53 if not given. Empty: the "
     "servers of /etc/resolv.conf."},
    {"user", CFG_T_STRING, CFG_OFF(user), "", 0, 0, 0, cfg_check_user, NULL,
     "When subgated starts as root, the SMTP and queue workers run "
     "as this user. Empty: they keep the user subgated started "
     "as."},
    {"chroot", CFG_T_PATH, CFG_OFF(chroot), "", 0, 0, 0, cfg_check_chroot, NULL,
     "Directory that the SMTP worker, the process that reads what "
     "clients send, is locked into with chroot(2) before it becomes user; "
     "usually state_dir. database, queue_dir, run_dir, tls_cert and "
     "tls_key must lie inside it: the worker opens them by their names "
     "inside. Needs subgated to start as root, and user. subgated keeps "
     "copies of /etc/hosts, /etc/resolv.conf and LDAP's CA bundle in its "
     "etc/ (docs/security.md, Chroot). Empty: no chroot."},
    {"signer_user", CFG_T_STRING, CFG_OFF(signer_user), "", 0, 0, 0,
     cfg_check_user, NULL,
     "When subgated starts as root, the signer runs as this user, "
     "the only one that needs to read key_dir. Empty: the same as "
     "user."},
    {"signer_program", CFG_T_PATH, CFG_OFF(signer_program), "", 0, 0, 0, NULL,
     NULL,
     "The signer executable. Empty: subgate-signer in the directory "
     "that holds the subgated program."},
    {"reset_window", CFG_T_DURATION_S, CFG_OFF(reset_window_s), "1h", CFG_MIN,
     7 * CFG_DAY, 0, NULL, NULL,
     "A signed change-password request is accepted only when its "
     "signature was made at most this long before, or after, the "
     "time it is processed. Whole seconds."},
    {"reset_rate", CFG_T_UINT, CFG_OFF(reset_rate), "3", 1, 100, 0, NULL, NULL,
     "Password changes by signed mail per member key in 24 hours; also "
     "the number of refusal notices a member gets in 24 hours."},
    {"log_syslog", CFG_T_BOOL, CFG_OFF(log_syslog), "no", 0, 0, 0, NULL, NULL,
     "Log to syslog (facility mail) instead of standard error."},
};

#define CFG_NKEYS (sizeof(cfg_keys) / sizeof(cfg_keys[0]))

/* ---- field access ---------------------------------------------------- */

static char **cfg_str(struct cfg *c, const struct cfg_key *k)
{
    return (char **)((char *)c + k->off);
}

static const char *cfg_cstr(const struct cfg *c, const struct cfg_key *k)
{
    return *(char *const *)((const char *)c + k->off);
}

static void cfg_set_str(struct cfg *c, const struct cfg_key *k, char *v)
{
    char **f = cfg_str(c, k);

    free(*f);
    *f = v;
}

/* The value of a numeric key in its table unit (octets, ms, count). */
static unsigned long long cfg_num(const struct cfg *c, const struct cfg_key *k)
{
    const char *f = (const char *)c + k->off;

    switch (k->type) {
    case CFG_T_SIZE:
        return *(const size_t *)f;
    case CFG_T_DURATION_S:
        return *(const unsigned *)f * CFG_SEC;
    case CFG_T_UINT:
    case CFG_T_DURATION_MS:
        return *(const unsigned *)f;
    case CFG_T_BOOL:
        return (unsigned long long)*(const int *)f;
    case CFG_T_ENUM:
        return *(const enum cfg_relay_tls *)f;
    default:
        return 0;
    }
}

/* ---- unit parsers and printers ---------------------------------------- */

/* Decimal digits only, no sign or space. Returns the end, or NULL. */
static const char *cfg_parse_digits(const char *s, unsigned long long *r)
{
    unsigned long long v = 0;
    const char *p = s;

    for (; *p >= '0' && *p <= '9'; p++) {
        unsigned d = (unsigned)(*p - '0');
        if (v > (ULLONG_MAX - d) / 10)
            return NULL;
        v = v * 10 + d;
    }
    if (p == s)
        return NULL;
    *r = v;
    return p;
}

int cfg_parse_size(const char *s, size_t *r)
{
    unsigned long long v, mult = 1;
    const char *p = cfg_parse_digits(s, &v);

    if (p == NULL)
        return -1;
    if (*p == 'K' || *p == 'k')
        mult = CFG_K;
    else if (*p == 'M' || *p == 'm')
        mult = CFG_K * CFG_K;
    else if (*p == 'G' || *p == 'g')
        mult = CFG_K * CFG_K * CFG_K;
    else if (*p != '\0')
        return -1;
    if (mult > 1)
        p++;
    if (*p != '\0' || v > SIZE_MAX / mult)
        return -1;
    *r = (size_t)(v * mult);
    return 0;
}

int cfg_parse_duration_ms(const char *s, unsigned long long *ms_r)
{
    static const struct {
        const char *unit;
        unsigned long long ms;
    } units[] = {{"ms", 1},
                 {"s", CFG_SEC},
                 {"m", CFG_MIN},
                 {"h", CFG_HOUR},
                 {"d", CFG_DAY}};
    unsigned long long v;
    const char *p = cfg_parse_digits(s, &v);
    size_t i;

    if (p == NULL)
        return -1;
    for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(p, units[i].unit) == 0) {
            if (v > ULLONG_MAX / units[i].ms)
                return -1;
            *ms_r = v * units[i].ms;
            return 0;
        }
    }
    return -1; /* a bare number too: units are explicit */
}

/* The most compact exact form: 25M, 64K, 1000. */
static void cfg_fmt_size(unsigned long long v, char *buf, size_t len)
{
    static const char suffix[] = "GMK";
    unsigned long long m = CFG_K * CFG_K * CFG_K;
    int i;

    for (i = 0; i < 3; i++, m /= CFG_K) {
        if (v != 0 && v % m == 0) {
            snprintf(buf, len, "%llu%c", v / m, suffix[i]);
            return;
        }
    }
    snprintf(buf, len, "%llu", v);
}

/* The largest exact unit: 5m, 1d, 1500ms; 0 is "0s". */
static void cfg_fmt_duration(unsigned long long ms, char *buf, size_t len)
{
    static const struct {
        const char *unit;
        unsigned long long ms;
    } units[] = {
        {"d", CFG_DAY}, {"h", CFG_HOUR}, {"m", CFG_MIN}, {"s", CFG_SEC}};
    size_t i;

    if (ms == 0) {
        snprintf(buf, len, "0s");
        return;
    }
    for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (ms % units[i].ms == 0) {
            snprintf(buf, len, "%llu%s", ms / units[i].ms, units[i].unit);
            return;
        }
    }
    snprintf(buf, len, "%llums", ms);
}

/* A bound or value of a numeric key, with its unit. */
static void cfg_fmt_num(const struct cfg_key *k, unsigned long long v,
                        char *buf, size_t len)
{
    if (k->type == CFG_T_SIZE)
        cfg_fmt_size(v, buf, len);
    else if (k->type == CFG_T_DURATION_MS || k->type == CFG_T_DURATION_S)
        cfg_fmt_duration(v, buf, len);
    else
        snprintf(buf, len, "%llu", v);
}

/* ---- syntax checks ----------------------------------------------------- */

static int cfg_is_ldh(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '-';
}

/* One DNS label of n octets: LDH, not starting or ending with '-'. */
static int cfg_label_ok(const char *s, size_t n)
{
    size_t i;

    if (n == 0 || n > CFG_MAX_LABEL || s[0] == '-' || s[n - 1] == '-')
        return 0;
    for (i = 0; i < n; i++)
        if (!cfg_is_ldh((unsigned char)s[i]))
            return 0;
    return 1;
}

/* A host name of n octets: LDH labels separated by dots. A name whose
 * last label is all digits is a mistyped IPv4 address, not a name. */
static int cfg_hostname_ok(const char *s, size_t n)
{
    size_t i = 0, start = 0;
    int digits = 1;

    if (n == 0 || n > CFG_MAX_HOSTNAME)
        return 0;
    for (i = 0; i <= n; i++) {
        if (i < n && s[i] != '.') {
            digits = digits && s[i] >= '0' && s[i] <= '9';
            continue;
        }
        if (!cfg_label_ok(s + start, i - start))
            return 0;
        start = i + 1;
        if (i < n)
            digits = 1;
    }
    return !digits;
}

/* Copies n octets of s into buf as a C string (0 if they do not fit). */
static int cfg_copy(char *buf, size_t len, const char *s, size_t n)
{
    if (n >= len)
        return 0;
    memcpy(buf, s, n);
    buf[n] = '\0';
    return 1;
}

static int cfg_ipv4_ok(const char *s, size_t n)
{
    char buf[INET_ADDRSTRLEN];
    unsigned char bin[4];

    return cfg_copy(buf, sizeof(buf), s, n) &&
           inet_pton(AF_INET, buf, bin) == 1;
}

static int cfg_ipv6_ok(const char *s, size_t n)
{
    char buf[INET6_ADDRSTRLEN];
    unsigned char bin[16];

    return cfg_copy(buf, sizeof(buf), s, n) &&
           inet_pton(AF_INET6, buf, bin) == 1;
}

/* A listen address: "host:port" (host a name or IPv4 address) or
 * "[IPv6]:port". The relay also takes a name or IPv4 address in brackets
 * and no port (25). s has n octets. */
static int cfg_hostport_ok(const char *s, size_t n, int relay,
                           const char **why_r)
{
    const char *colon, *host = s, *end;
    size_t hlen;
    unsigned long long port;
    char pbuf[8];

    if (n > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', n);
        if (close == NULL) {
            *why_r = "missing ']'";
            return -1;
        }
        host = s + 1;
        hlen = (size_t)(close - host);
        colon = close + 1 < s + n ? close + 1 : NULL;
        if (!cfg_ipv6_ok(host, hlen) &&
            !(relay &&
              (cfg_ipv4_ok(host, hlen) || cfg_hostname_ok(host, hlen)))) {
            *why_r = relay ? "bad host in brackets"
                           : "brackets must hold an IPv6 address";
            return -1;
        }
        if (colon != NULL && *colon != ':') {
            *why_r = "expected :port after ']'";
            return -1;
        }
    } else {
        colon = memchr(s, ':', n);
        hlen = colon != NULL ? (size_t)(colon - s) : n;
        if (colon != NULL &&
            memchr(colon + 1, ':', (size_t)(s + n - colon - 1))) {
            *why_r = "an IPv6 address must be in brackets";
            return -1;
        }
        if (!cfg_ipv4_ok(host, hlen) && !cfg_hostname_ok(host, hlen)) {
            *why_r = "bad host name or address";
            return -1;
        }
    }
    if (colon == NULL) {
        if (relay)
            return 0;
        *why_r = "missing :port";
        return -1;
    }
    colon++;
    if (!cfg_copy(pbuf, sizeof(pbuf), colon, (size_t)(s + n - colon)) ||
        (end = cfg_parse_digits(pbuf, &port)) == NULL || *end != '\0' ||
        port < 1 || port > 65535) {
        *why_r = "port must be a number from 1 to 65535";
        return -1;
    }
    return 0;
}

static int cfg_check_label(const char *v, const char **why_r)
{
    if (!cfg_label_ok(v, strlen(v))) {
        *why_r = "letters, digits and '-' only, not first or last";
        return -1;
    }
    return 0;
}

static int cfg_check_hostname(const char *v, const char **why_r)
{
    if (!cfg_hostname_ok(v, strlen(v))) {
        *why_r = "not a host name";
        return -1;
    }
    return 0;
}

static int cfg_check_relay_host(const char *v, const char **why_r)
{
    if (*v == '\0')
        return 0;
    return cfg_hostport_ok(v, strlen(v), 1, why_r);
}

/* A selector is a DNS label (RFC 6376 3.1): letters, digits, '-'. The
 * escapes expand to such characters; "%%" would give a '%' and is
 * refused for that reason. */
static int cfg_check_selector(const char *v, const char **why_r)
{
    for (; *v != '\0'; v++) {
        if (*v == '%') {
            v++;
            if (*v == '\0' || strchr("Ymdna", *v) == NULL) {
                *why_r = "only %Y, %m, %d, %n and %a may follow '%'";
                return -1;
            }
        } else if (!cfg_is_ldh((unsigned char)*v)) {
            *why_r = "letters, digits, '-' and %-escapes only";
            return -1;
        }
    }
    return 0;
}

/* A user name as getpwnam() takes it: no white space, no ':'. */
static int cfg_check_user(const char *v, const char **why_r)
{
    if (strpbrk(v, " \t:") != NULL) {
        *why_r = "not a user name";
        return -1;
    }
    return 0;
}

/* Empty, or a directory name that can be a chroot (common/jail.h). */
static int cfg_check_chroot(const char *v, const char **why_r)
{
    return *v == '\0' ? 0 : jail_root_check(v, why_r);
}

/* Splits a listen list on spaces and commas, checks each entry and
 * stores them separated by one space. */
static int cfg_set_listen(struct cfg *c, const struct cfg_key *k, const char *v,
                          const char **why_r)
{
    char *out = xmalloc(strlen(v) + 1);
    size_t o = 0;

    while (*v != '\0') {
        size_t n;

        v += strspn(v, " \t,");
        n = strcspn(v, " \t,");
        if (n == 0)
            break;
        if (cfg_hostport_ok(v, n, 0, why_r) < 0) {
            free(out);
            return -1;
        }
        if (o > 0)
            out[o++] = ' ';
        memcpy(out + o, v, n);
        o += n;
        v += n;
    }
    out[o] = '\0';
    cfg_set_str(c, k, out);
    return 0;
}

/* ---- setting one value ------------------------------------------------- */

static int cfg_parse_bool(const char *v, int *r)
{
    static const char *const yes[] = {"yes", "true", "on", "1"};
    static const char *const no[] = {"no", "false", "off", "0"};
    size_t i;

    for (i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (strcasecmp(v, yes[i]) == 0 || strcasecmp(v, no[i]) == 0) {
            *r = strcasecmp(v, yes[i]) == 0;
            return 0;
        }
    }
    return -1;
}

/* Parses a number-like value into table units; -1 with *why_r set. */
static int cfg_parse_num(const struct cfg_key *k, const char *v,
                         unsigned long long *r, const char **why_r)
{
    size_t sz;
    const char *end;
    int b;

    *why_r = cfg_types[k->type].hint;
    switch (k->type) {
    case CFG_T_SIZE:
        if (cfg_parse_size(v, &sz) < 0)
            return -1;
        *r = sz;
        return 0;
    case CFG_T_UINT:
        end = cfg_parse_digits(v, r);
        return end != NULL && *end == '\0' ? 0 : -1;
    case CFG_T_DURATION_MS:
    case CFG_T_DURATION_S:
        if (cfg_parse_duration_ms(v, r) < 0)
            return -1;
        if (k->type == CFG_T_DURATION_S && *r % CFG_SEC != 0) {
            *why_r = "must be whole seconds";
            return -1;
        }
        return 0;
    case CFG_T_BOOL:
        if (cfg_parse_bool(v, &b) < 0)
            return -1;
        *r = (unsigned long long)b;
        return 0;
    case CFG_T_ENUM:
        for (*r = 0; k->names[*r] != NULL; (*r)++)
            if (strcmp(v, k->names[*r]) == 0)
                return 0;
        return -1;
    default:
        return -1;
    }
}

static void cfg_store_num(struct cfg *c, const struct cfg_key *k,
                          unsigned long long v)
{
    char *f = (char *)c + k->off;

    switch (k->type) {
    case CFG_T_SIZE:
        *(size_t *)f = (size_t)v;
        break;
    case CFG_T_DURATION_S:
        *(unsigned *)f = (unsigned)(v / CFG_SEC);
        break;
    case CFG_T_BOOL:
        *(int *)f = (int)v;
        break;
    case CFG_T_ENUM:
        *(enum cfg_relay_tls *)f = (enum cfg_relay_tls)v;
        break;
    default:
        *(unsigned *)f = (unsigned)v;
        break;
    }
}

static int cfg_is_string(const struct cfg_key *k)
{
    return k->type == CFG_T_STRING || k->type == CFG_T_PATH ||
           k->type == CFG_T_LISTEN;
}

/* Sets one key from its text. 0 ok; -1 with the message (without
 * "file:line: ") in msg. */
static int cfg_set(struct cfg *c, const struct cfg_key *k, const char *v,
                   char *msg, size_t msglen)
{
    char esc[4 * SG_LOG_MAX_PEER_TEXT + 4];
    const char *why = NULL;
    const char *p;
    unsigned long long n;
    size_t len = strlen(v);

    for (p = v; *p != '\0'; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f) {
            why = "control character";
            goto bad;
        }
    }
    if (cfg_is_string(k)) {
        if (len < k->min) {
            why = "must not be empty";
            goto bad;
        }
        if (k->max != 0 && len > k->max) {
            snprintf(msg, msglen, "%s is longer than %llu octets", k->name,
                     k->max);
            return -1;
        }
        if (k->type == CFG_T_LISTEN) {
            if (cfg_set_listen(c, k, v, &why) < 0)
                goto bad;
            return 0;
        }
        if (k->check != NULL && k->check(v, &why) < 0)
            goto bad;
        cfg_set_str(c, k, xstrdup(v));
        return 0;
    }
    if (cfg_parse_num(k, v, &n, &why) < 0)
        goto bad;
    if ((k->min != 0 || k->max != 0) && (n < k->min || n > k->max)) {
        char lo[32], hi[32];
        cfg_fmt_num(k, k->min, lo, sizeof(lo));
        cfg_fmt_num(k, k->max, hi, sizeof(hi));
        snprintf(msg, msglen, "%s must be between %s and %s", k->name, lo, hi);
        return -1;
    }
    cfg_store_num(c, k, n);
    return 0;
bad:
    snprintf(msg, msglen, "bad value for %s: '%s' (%s)", k->name,
             log_escape(v, len, esc, sizeof(esc)), why);
    return -1;
}

/* ---- defaults ---------------------------------------------------------- */

static char *cfg_host_default(int short_name)
{
    char buf[256];

    if (gethostname(buf, sizeof(buf)) < 0)
        buf[0] = '\0';
    buf[sizeof(buf) - 1] = '\0';
    if (short_name)
        buf[strcspn(buf, ".")] = '\0';
    return xstrdup(buf[0] != '\0' ? buf : "localhost");
}

/* "<state_dir>/" + the key's default name. */
static void cfg_derive(struct cfg *c, const struct cfg_key *k)
{
    size_t n = strlen(c->state_dir);

    while (n > 0 && c->state_dir[n - 1] == '/')
        n--;
    cfg_set_str(c, k, xasprintf("%.*s/%s", (int)n, c->state_dir, k->def));
}

struct cfg *cfg_defaults(void)
{
    struct cfg *c = xcalloc(1, sizeof(*c));
    char msg[CFG_MAX_WHY];
    size_t i;

    c->path = xstrdup("");
    for (i = 0; i < CFG_NKEYS; i++) {
        const struct cfg_key *k = &cfg_keys[i];
        if (k->flags & (CFG_F_HOST_SHORT | CFG_F_HOST_FULL))
            cfg_set_str(c, k,
                        cfg_host_default((k->flags & CFG_F_HOST_SHORT) != 0));
        else if (!(k->flags & CFG_F_UNDER_STATE) &&
                 cfg_set(c, k, k->def, msg, sizeof(msg)) < 0)
            log_panic("cfg: bad default in table: %s", msg);
    }
    for (i = 0; i < CFG_NKEYS; i++)
        if (cfg_keys[i].flags & CFG_F_UNDER_STATE)
            cfg_derive(c, &cfg_keys[i]);
    return c;
}

void cfg_free(struct cfg **cp)
{
    struct cfg *c = *cp;
    size_t i;

    if (c == NULL)
        return;
    for (i = 0; i < CFG_NKEYS; i++)
        if (cfg_is_string(&cfg_keys[i]))
            free(*cfg_str(c, &cfg_keys[i]));
    free(c->path);
    free(c);
    *cp = NULL;
}

/* ---- reading a file ---------------------------------------------------- */

enum cfg_line_rc {
    CFG_LINE_EOF = 0,
    CFG_LINE_OK = 1,
    CFG_LINE_TOO_LONG = -1,
    CFG_LINE_NUL = -2,
    CFG_LINE_ERROR = -3,
};

/* Reads one line without its '\n' into buf (CFG_MAX_LINE + 1 octets). */
static enum cfg_line_rc cfg_read_line(FILE *f, char *buf)
{
    size_t n = 0;
    int ch;

    while ((ch = getc(f)) != EOF && ch != '\n') {
        if (ch == '\0')
            return CFG_LINE_NUL;
        if (n >= CFG_MAX_LINE)
            return CFG_LINE_TOO_LONG;
        buf[n++] = (char)ch;
    }
    if (ferror(f))
        return CFG_LINE_ERROR;
    if (ch == EOF && n == 0)
        return CFG_LINE_EOF;
    buf[n] = '\0';
    return CFG_LINE_OK;
}

static int cfg_is_space(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\r';
}

/* Trims white space at both ends, in place. */
static char *cfg_trim(char *s)
{
    size_t n;

    while (cfg_is_space(*s))
        s++;
    n = strlen(s);
    while (n > 0 && cfg_is_space(s[n - 1]))
        s[--n] = '\0';
    return s;
}

static const struct cfg_key *cfg_find(const char *name, size_t *idx_r)
{
    size_t i;

    for (i = 0; i < CFG_NKEYS; i++) {
        if (strcmp(cfg_keys[i].name, name) == 0) {
            *idx_r = i;
            return &cfg_keys[i];
        }
    }
    return NULL;
}

/* One line: blank, "# comment" or "key = value". seen[] holds the line
 * each key was set on (0: not yet). */
static int cfg_parse_line(struct cfg *c, char *line, unsigned lineno,
                          unsigned *seen, char *msg, size_t msglen)
{
    char esc[4 * SG_LOG_MAX_PEER_TEXT + 4];
    const struct cfg_key *k;
    char *key, *val, *eq;
    size_t i;

    key = cfg_trim(line);
    if (*key == '\0' || *key == '#')
        return 0;
    eq = strchr(key, '=');
    if (eq == NULL) {
        snprintf(msg, msglen, "expected 'key = value'");
        return -1;
    }
    *eq = '\0';
    key = cfg_trim(key);
    val = cfg_trim(eq + 1);
    if (*key == '\0') {
        snprintf(msg, msglen, "missing key before '='");
        return -1;
    }
    /* "" is the explicit way to write an empty value. */
    if (strcmp(val, "\"\"") == 0)
        *val = '\0';
    k = cfg_find(key, &i);
    if (k == NULL) {
        snprintf(msg, msglen, "unknown key '%s'",
                 log_escape(key, strlen(key), esc, sizeof(esc)));
        return -1;
    }
    if (seen[i] != 0) {
        snprintf(msg, msglen, "duplicate key '%s' (first set on line %u)",
                 k->name, seen[i]);
        return -1;
    }
    seen[i] = lineno;
    return cfg_set(c, k, val, msg, msglen);
}

/* "HI (v) must not be less than LO (v)" for two duration keys in seconds,
 * blaming the later of their lines. Returns -1. */
static int cfg_fail_pair(const struct cfg *c, const unsigned *seen,
                         const char *hi_name, const char *lo_name,
                         unsigned *lineno_r, char *msg, size_t msglen)
{
    const struct cfg_key *hi_k, *lo_k;
    size_t ihi, ilo;
    char lo[32], hi[32];

    hi_k = cfg_find(hi_name, &ihi);
    lo_k = cfg_find(lo_name, &ilo);
    if (hi_k == NULL || lo_k == NULL)
        log_panic("cfg: %s or %s missing from the table", hi_name, lo_name);
    cfg_fmt_duration(cfg_num(c, hi_k), hi, sizeof(hi));
    cfg_fmt_duration(cfg_num(c, lo_k), lo, sizeof(lo));
    snprintf(msg, msglen, "%s (%s) must not be less than %s (%s)", hi_name, hi,
             lo_name, lo);
    *lineno_r = seen[ihi] > seen[ilo] ? seen[ihi] : seen[ilo];
    return -1;
}

/* With chroot set: user is set, and every file the SMTP worker opens lies
 * inside the chroot (server/smtpd_jail.c). 0, or -1 with msg and the line
 * to blame: the later of chroot's and the path's (state_dir's for a path
 * derived from it). */
static int cfg_check_jail(const struct cfg *c, const unsigned *seen,
                          unsigned *lineno_r, char *msg, size_t msglen)
{
    static const char *const inside[] = {"database", "queue_dir", "run_dir",
                                         "tls_cert", "tls_key"};
    char buf[PATH_MAX];
    const char *why, *v;
    size_t ir, ist, i, j;

    if (c->chroot[0] == '\0')
        return 0;
    if (cfg_find("chroot", &ir) == NULL || cfg_find("state_dir", &ist) == NULL)
        log_panic("cfg: chroot or state_dir missing from the table");
    *lineno_r = seen[ir];
    if (c->user[0] == '\0') {
        snprintf(msg, msglen,
                 "chroot needs user: a process that stays root can leave "
                 "a chroot");
        return -1;
    }
    for (i = 0; i < sizeof(inside) / sizeof(inside[0]); i++) {
        const struct cfg_key *k = cfg_find(inside[i], &j);
        unsigned line;

        if (k == NULL)
            log_panic("cfg: %s missing from the table", inside[i]);
        v = cfg_cstr(c, k);
        if (*v == '\0' || jail_path(c->chroot, v, buf, sizeof(buf), &why) == 0)
            continue;
        line = seen[j] != 0 || !(k->flags & CFG_F_UNDER_STATE) ? seen[j]
                                                               : seen[ist];
        if (line > *lineno_r)
            *lineno_r = line;
        snprintf(msg, msglen,
                 "%s %s %s (chroot = %s): the SMTP worker opens it from "
                 "inside the chroot",
                 inside[i], v, why, c->chroot);
        return -1;
    }
    return 0;
}

/* Fills in what depends on the whole file. 0 ok; -1 with msg and the
 * line to blame in *lineno_r. */
static int cfg_finish(struct cfg *c, const unsigned *seen, unsigned *lineno_r,
                      char *msg, size_t msglen)
{
    size_t i, imin, imax;
    char lo[32], hi[32];

    for (i = 0; i < CFG_NKEYS; i++)
        if ((cfg_keys[i].flags & CFG_F_UNDER_STATE) && seen[i] == 0)
            cfg_derive(c, &cfg_keys[i]);
    if (c->publish_lead_s < c->dkim_ttl_s)
        return cfg_fail_pair(c, seen, "publish_lead", "dkim_ttl", lineno_r, msg,
                             msglen);
    /* A password goes only to a smarthost, and only inside TLS. */
    if (c->relay_auth_user[0] != '\0' &&
        (c->relay_host[0] == '\0' || c->relay_auth_password_file[0] == '\0' ||
         c->relay_tls == CFG_RELAY_TLS_NONE)) {
        if (cfg_find("relay_auth_user", &i) == NULL)
            log_panic("cfg: relay_auth_user missing from the table");
        snprintf(msg, msglen,
                 "relay_auth_user needs relay_host, relay_auth_password_file "
                 "and a relay_tls other than none");
        *lineno_r = seen[i];
        return -1;
    }
    if (cfg_check_jail(c, seen, lineno_r, msg, msglen) != 0)
        return -1;
    if (c->retry_max_s >= c->retry_min_s)
        return 0;
    if (cfg_find("retry_min", &imin) == NULL ||
        cfg_find("retry_max", &imax) == NULL)
        log_panic("cfg: retry keys missing from the table");
    cfg_fmt_duration(c->retry_min_s * CFG_SEC, lo, sizeof(lo));
    cfg_fmt_duration(c->retry_max_s * CFG_SEC, hi, sizeof(hi));
    snprintf(msg, msglen, "retry_max (%s) must not be less than retry_min (%s)",
             hi, lo);
    *lineno_r = seen[imax] > seen[imin] ? seen[imax] : seen[imin];
    return -1;
}

int cfg_load(const char *path, struct cfg **cfg_r, char *err, size_t errlen)
{
    unsigned seen[CFG_NKEYS] = {0};
    char line[CFG_MAX_LINE + 1];
    char msg[CFG_MAX_WHY];
    unsigned lineno = 0;
    enum cfg_line_rc rc;
    struct cfg *c;
    FILE *f;

    if (path == NULL)
        path = SG_DEFAULT_CONFIG;
    f = fopen(path, "re");
    if (f == NULL) {
        int e = errno;
        snprintf(err, errlen, "%s: %s", path, strerror(e));
        return -1;
    }
    c = cfg_defaults();
    free(c->path);
    c->path = xstrdup(path);
    while ((rc = cfg_read_line(f, line)) != CFG_LINE_EOF) {
        lineno++;
        if (rc == CFG_LINE_ERROR) {
            int e = errno;
            snprintf(err, errlen, "%s: %s", path, strerror(e));
            goto fail;
        }
        if (rc == CFG_LINE_TOO_LONG || rc == CFG_LINE_NUL) {
            snprintf(msg, sizeof(msg), "%s",
                     rc == CFG_LINE_NUL ? "NUL octet in line"
                                        : "line longer than 4096 octets");
            goto fail_line;
        }
        if (cfg_parse_line(c, line, lineno, seen, msg, sizeof(msg)) < 0)
            goto fail_line;
    }
    if (cfg_finish(c, seen, &lineno, msg, sizeof(msg)) < 0)
        goto fail_line;
    fclose(f);
    *cfg_r = c;
    return 0;
fail_line:
    snprintf(err, errlen, "%s:%u: %s", path, lineno, msg);
fail:
    fclose(f);
    cfg_free(&c);
    return -1;
}

/* ---- printing ---------------------------------------------------------- */

/* The effective value of a key as the file would spell it. */
static const char *cfg_fmt_value(const struct cfg *c, const struct cfg_key *k,
                                 char *buf, size_t len)
{
    const char *s;

    switch (k->type) {
    case CFG_T_STRING:
    case CFG_T_PATH:
    case CFG_T_LISTEN:
        s = cfg_cstr(c, k);
        return *s != '\0' ? s : "\"\"";
    case CFG_T_ENUM:
        return k->names[cfg_num(c, k)];
    case CFG_T_BOOL:
        return cfg_num(c, k) ? "yes" : "no";
    default:
        cfg_fmt_num(k, cfg_num(c, k), buf, len);
        return buf;
    }
}

void cfg_print(const struct cfg *c, FILE *f)
{
    char buf[32];
    size_t i;

    for (i = 0; i < CFG_NKEYS; i++)
        fprintf(f, "%s = %s\n", cfg_keys[i].name,
                cfg_fmt_value(c, &cfg_keys[i], buf, sizeof(buf)));
}

/* Prints text wrapped at 76 columns, breaking at spaces. */
static void cfg_wrap(FILE *f, const char *text)
{
    const size_t width = 76;
    size_t col = 0;

    while (*text != '\0') {
        size_t n = strcspn(text, " ");
        if (col > 0 && col + 1 + n > width) {
            fputc('\n', f);
            col = 0;
        } else if (col > 0) {
            fputc(' ', f);
            col++;
        }
        fwrite(text, 1, n, f);
        col += n;
        text += n;
        text += strspn(text, " ");
    }
    fputc('\n', f);
}

/* "Type: size. Default: `25M`. Range: `64K` to `1G`." */
static void cfg_doc_summary(const struct cfg_key *k, char *buf, size_t len)
{
    char def[128], lo[32], hi[32], range[96] = "";
    size_t n;

    if (k->flags & CFG_F_HOST_SHORT)
        snprintf(def, sizeof(def), "the host name up to its first '.'");
    else if (k->flags & CFG_F_HOST_FULL)
        snprintf(def, sizeof(def), "the host name");
    else if (k->flags & CFG_F_UNDER_STATE)
        snprintf(def, sizeof(def), "`<state_dir>/%s`", k->def);
    else if (*k->def == '\0')
        snprintf(def, sizeof(def), "empty");
    else
        snprintf(def, sizeof(def), "`%s`", k->def);
    if (cfg_is_string(k)) {
        n = 0;
        if (k->min > 0)
            n += (size_t)snprintf(range, sizeof(range), " Must not be empty.");
        if (k->max > 0)
            snprintf(range + n, sizeof(range) - n, " At most %llu octets.",
                     k->max);
    } else if (k->min != 0 || k->max != 0) {
        cfg_fmt_num(k, k->min, lo, sizeof(lo));
        cfg_fmt_num(k, k->max, hi, sizeof(hi));
        snprintf(range, sizeof(range), " Range: `%s` to `%s`.", lo, hi);
    }
    snprintf(buf, len, "Type: %s. Default: %s.%s", cfg_types[k->type].name, def,
             range);
}

void cfg_print_doc(FILE *f)
{
    char summary[512];
    size_t i;

    for (i = 0; i < CFG_NKEYS; i++) {
        const struct cfg_key *k = &cfg_keys[i];
        cfg_doc_summary(k, summary, sizeof(summary));
        fprintf(f, "%s### %s\n\n", i > 0 ? "\n" : "", k->name);
        cfg_wrap(f, summary);
        fputc('\n', f);
        cfg_wrap(f, k->doc);
    }
}
