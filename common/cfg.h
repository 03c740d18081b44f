/* cfg: the node's configuration file, "key = value" lines, '#' comments,
 * explicit units (30s, 5m, 2h, 1d; 64K, 25M, 1G). One table in cfg.c holds
 * every key with its type, default, bounds and documentation; it is the only
 * home of defaults. Unknown keys and bad values fail as "file:line: message".
 * The struct is immutable once loaded; a reload builds a new one. */
#ifndef SG_CFG_H
#define SG_CFG_H

#include <stddef.h>
#include <stdio.h>

#define SG_DEFAULT_CONFIG "/etc/subgate/subgate.conf"

enum cfg_relay_tls {
    CFG_RELAY_TLS_NONE,
    CFG_RELAY_TLS_MAY,
    CFG_RELAY_TLS_ENCRYPT,
    CFG_RELAY_TLS_VERIFY,
};

/* All strings owned; an unset optional string is "" (never NULL). Paths
 * derived from state_dir are filled in by cfg_load(). */
struct cfg {
    char *path;               /* the file this came from */
    char *node_name;          /* default: short host name */
    char *hostname;           /* banner/EHLO name; default: FQDN of host */
    char *state_dir;          /* default /var/lib/subgate */
    char *database;           /* default <state_dir>/subgate.db */
    char *queue_dir;          /* default <state_dir>/queue */
    char *key_dir;            /* default <state_dir>/keys */
    char *run_dir;            /* sockets, pid; default <state_dir>/run */
    char *pgp_dir;            /* OpenPGP keyrings; <state_dir>/pgp */
    char *submission_listen;  /* space-separated host:port list */
    char *submissions_listen; /* same, implicit TLS */
    char *metrics_listen;     /* same, Prometheus endpoint; "" = off */
    char *tls_cert;           /* PEM chain */
    char *tls_key;            /* PEM key */
    char *relay_host;         /* "[host]:port", "host:port", or "" (MX) */
    enum cfg_relay_tls relay_tls;
    char *relay_ca_file;            /* "" = system trust store */
    unsigned relay_port;            /* MX hosts' SMTP port (25) */
    unsigned relay_concurrency;     /* connections per destination */
    char *relay_auth_user;          /* AUTH to relay_host; "" = none */
    char *relay_auth_password_file; /* its password, first line */
    size_t max_message_size;        /* octets */
    unsigned max_recipients;
    unsigned max_sessions;       /* concurrent SMTP sessions */
    unsigned auth_fail_delay_ms; /* delay before a 535 */

    /* AUTH cache and LDAP directories (server/auth*.c) */
    unsigned auth_cache_ttl_ms;          /* accepted logins kept */
    unsigned auth_cache_negative_ttl_ms; /* refused logins kept */
    unsigned auth_cache_size;            /* entries; 0 = no cache */
    unsigned scram_iterations;           /* PBKDF2 rounds of new keys */
    unsigned ldap_timeout_ms;            /* each step towards a directory */
    unsigned ldap_pool_size;             /* directory connections */

    unsigned smtp_timeout_ms; /* idle client */

    /* Abuse limits (server/ratelimit.c, smtp_limit.c); 0: no limit. */
    unsigned command_timeout_ms;      /* before AUTH: time per command line */
    unsigned data_timeout_ms;         /* DATA: no octet for this long */
    size_t min_data_rate;             /* DATA: octets per second */
    unsigned max_conn_per_ip;         /* connections at once per address */
    unsigned conn_rate_per_ip;        /* new connections per minute */
    unsigned auth_fail_limit_ip;      /* failed AUTH per address */
    unsigned auth_fail_limit_account; /* per (login, address) */
    unsigned auth_block_time_ms;      /* and how long failures count */
    unsigned member_msg_per_hour;
    unsigned member_rcpt_per_day;
    unsigned tenant_msg_per_hour;
    unsigned budget_report_interval_s; /* 0: no reports to tenant admins */
    int remove_foreign_sender; /* Sender:/Resent-*: 1 remove, 0 refuse */

    unsigned signer_timeout_ms; /* one signing request */
    unsigned retry_min_s;       /* first retry after a 4xx */
    unsigned retry_max_s;       /* backoff ceiling */
    unsigned max_queue_lifetime_s;
    unsigned delay_warning_s;  /* warn the sender once; 0 = never */
    unsigned relay_timeout_ms; /* each step towards the next hop */
    char *selector_template;   /* %Y %m %d %n(node) %a(algo) */
    unsigned rotate_after_s;   /* key rotate --due: age of the active key */
    unsigned publish_lead_s;   /* record served before a key signs */
    unsigned retire_for_s;     /* retired -> revoked */
    unsigned revoke_for_s;     /* revoked -> deleted */
    unsigned reveal_after_s;   /* retired key revealed; 0 = never */
    unsigned dkim_ttl_s;       /* TTL of published DKIM records */
    unsigned dns_timeout_ms;   /* one DNS answer */
    char *dns_resolver;        /* "" = /etc/resolv.conf */
    char *user;                /* run workers as (when root); "" = no */
    char *chroot;              /* SMTP worker's; "" = none (smtpd_jail.h) */
    char *signer_user;         /* run the signer as; "" = user */
    char *signer_program;      /* "" = subgate-signer beside subgated */
    unsigned reset_window_s;   /* signed request age, past or future */
    unsigned reset_rate;       /* password resets per key per day */
    int log_syslog;            /* 0 stderr, 1 syslog */
};

/* Reads path (NULL: SG_DEFAULT_CONFIG). 0 and *cfg_r set, or -1 with a
 * "file:line: message" (or "file: strerror") in err. */
int cfg_load(const char *path, struct cfg **cfg_r, char *err, size_t errlen);
/* Defaults only, as if from an empty file (tests, `subgated -n` base). */
struct cfg *cfg_defaults(void);
void cfg_free(struct cfg **cp);
/* Prints every key with its effective value, "key = value" per line, in
 * table order (what `subgated -n` shows). */
void cfg_print(const struct cfg *c, FILE *f);
/* Prints the table as documentation: key, type, default, bounds, text. */
void cfg_print_doc(FILE *f);

/* Unit parsers, exposed for tests and the admin tool. 0 ok, -1 bad. */
int cfg_parse_size(const char *s, size_t *r); /* 25M, 1024, 64K, 1G */
int cfg_parse_duration_ms(const char *s, unsigned long long *ms_r); /* 30s */

#endif
