-- subgate SQLite schema, version 1. Applied by `subgate init` and by any
-- program that opens a fresh database (common/db.c embeds this file).
-- Addresses compare case-insensitively (COLLATE NOCASE); domains are stored
-- lower-case.

CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- An organisation. name is its primary domain.
CREATE TABLE IF NOT EXISTS tenant (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE COLLATE NOCASE,
    -- envelope sender not owned by the member: reject (553 5.7.1) or
    -- rewrite to the member's primary address
    sender_policy TEXT NOT NULL DEFAULT 'reject'
                  CHECK (sender_policy IN ('reject', 'rewrite')),
    -- From: header not owned by the member: reject or rewrite
    from_policy   TEXT NOT NULL DEFAULT 'reject'
                  CHECK (from_policy IN ('reject', 'rewrite')),
    -- DKIM algorithms to sign with: 'rsa,ed25519' (default) or 'rsa'
    sign_algos    TEXT NOT NULL DEFAULT 'rsa,ed25519'
                  CHECK (sign_algos IN ('rsa,ed25519', 'rsa')),
    created       INTEGER NOT NULL
);

-- Domains a tenant owns (its primary domain included).
CREATE TABLE IF NOT EXISTS domain (
    name      TEXT PRIMARY KEY COLLATE NOCASE,
    tenant_id INTEGER NOT NULL REFERENCES tenant(id) ON DELETE CASCADE,
    created   INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS member (
    id              INTEGER PRIMARY KEY,
    address         TEXT NOT NULL UNIQUE COLLATE NOCASE, -- the login
    tenant_id       INTEGER NOT NULL REFERENCES tenant(id) ON DELETE CASCADE,
    password_hash   TEXT,                -- crypt(3) string, NULL = none
    disabled        INTEGER NOT NULL DEFAULT 0,
    pgp_fingerprint TEXT,
    created         INTEGER NOT NULL,
    password_changed INTEGER
);

-- Addresses a member may send as, beyond the primary one.
CREATE TABLE IF NOT EXISTS alias (
    address   TEXT PRIMARY KEY COLLATE NOCASE,
    member_id INTEGER NOT NULL REFERENCES member(id) ON DELETE CASCADE,
    created   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS alias_member ON alias(member_id);

-- A tenant whose members come from an LDAP directory (docs/ldap.md), set
-- with `subgate tenant ldap`. No row: the member table above is used.
CREATE TABLE IF NOT EXISTS tenant_ldap (
    tenant_id          INTEGER PRIMARY KEY
                       REFERENCES tenant(id) ON DELETE CASCADE,
    uris               TEXT NOT NULL,  -- comma-separated, tried in order
    -- dn: bind as dn_template with %u; search: find the entry with
    -- search_filter under search_base as bind_dn, then bind as it
    bind_mode          TEXT NOT NULL CHECK (bind_mode IN ('dn', 'search')),
    dn_template        TEXT,
    search_base        TEXT,
    search_filter      TEXT,
    bind_dn            TEXT,           -- service identity, or NULL
    bind_password_file TEXT,           -- its password, in a file
    submit_filter      TEXT,           -- who may submit, or NULL: all
    address_attrs      TEXT NOT NULL DEFAULT 'mail', -- comma-separated
    uid_domain         INTEGER NOT NULL DEFAULT 0, -- uid@each tenant domain
    fingerprint_attr   TEXT,           -- OpenPGP fingerprint, or NULL
    mail_password_attr TEXT,           -- {CRYPT} hash instead of a bind
    login_form         TEXT NOT NULL DEFAULT 'uid'
                       CHECK (login_form IN ('uid', 'address')),
    starttls           INTEGER NOT NULL DEFAULT 1, -- for ldap:// URIs
    timeout_ms         INTEGER,        -- NULL: ldap_timeout
    ca_file            TEXT,           -- NULL: libldap's default
    updated            INTEGER NOT NULL
);

-- DKIM keys: state pending -> published -> active -> retired -> revoked.
CREATE TABLE IF NOT EXISTS dkim_key (
    id         INTEGER PRIMARY KEY,
    domain     TEXT NOT NULL COLLATE NOCASE
               REFERENCES domain(name) ON DELETE CASCADE,
    selector   TEXT NOT NULL,
    algo       TEXT NOT NULL CHECK (algo IN ('rsa', 'ed25519')),
    bits       INTEGER NOT NULL,
    state      TEXT NOT NULL DEFAULT 'pending'
               CHECK (state IN ('pending', 'published', 'active', 'retired',
                                'revoked')),
    public_key TEXT NOT NULL,  -- base64, the p= value
    key_file   TEXT NOT NULL,  -- private key PEM, relative to key_dir
    created    INTEGER NOT NULL,
    published  INTEGER,
    activated  INTEGER,
    retired    INTEGER,
    revoked    INTEGER,
    UNIQUE (domain, selector)
);
CREATE INDEX IF NOT EXISTS dkim_key_domain ON dkim_key(domain, state);

-- Password reset by OpenPGP-signed mail (docs/password-reset.md).
-- A tenant's change-password address; accept_in_gateway 1: subgated
-- itself takes mail for it from any client.
CREATE TABLE IF NOT EXISTS tenant_reset (
    tenant_id         INTEGER PRIMARY KEY
                      REFERENCES tenant(id) ON DELETE CASCADE,
    address           TEXT NOT NULL UNIQUE COLLATE NOCASE,
    accept_in_gateway INTEGER NOT NULL DEFAULT 0
);

-- Signatures that changed a password: a request whose (primary key
-- fingerprint, signature creation time) is here is a replay. Also the
-- count behind the per-key rate limit. Rows older than the replay window
-- and a day are pruned.
CREATE TABLE IF NOT EXISTS pgp_replay (
    fingerprint TEXT NOT NULL COLLATE NOCASE,
    sig_time    INTEGER NOT NULL,
    seen        INTEGER NOT NULL,
    PRIMARY KEY (fingerprint, sig_time)
);

-- Refusal notices mailed to a member, for their rate limit.
CREATE TABLE IF NOT EXISTS reset_notice (
    member_id INTEGER NOT NULL REFERENCES member(id) ON DELETE CASCADE,
    sent      INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS reset_notice_member ON reset_notice(member_id, sent);

-- Where a domain's DKIM records are published (subgate dns set): the
-- primary server that takes RFC 2136 UPDATEs signed with a TSIG key, the
-- zone they go to, and, in delegated mode, the operator's DKIM zone that
-- holds SEL.DOMAIN-WITH-DASHES.DELEGATE (the tenant CNAMEs to it).
CREATE TABLE IF NOT EXISTS dns_setting (
    domain      TEXT PRIMARY KEY COLLATE NOCASE
                REFERENCES domain(name) ON DELETE CASCADE,
    server      TEXT NOT NULL,      -- host name or address of the primary
    port        INTEGER NOT NULL DEFAULT 53,
    zone        TEXT NOT NULL,      -- zone named in the UPDATE
    tsig_name   TEXT NOT NULL,
    tsig_alg    TEXT NOT NULL DEFAULT 'hmac-sha256',
    secret_file TEXT NOT NULL,      -- base64 TSIG secret, mode 0600
    delegate    TEXT,               -- delegated DKIM zone, NULL = none
    check_servers TEXT,             -- HOST[:PORT],... NULL = the zone's NS
    slots       INTEGER NOT NULL DEFAULT 4, -- delegated: selectors per algo
    updated     INTEGER NOT NULL
);

-- What `subgate dns publish` last put into DNS, one row per owner name:
-- what is here and no longer wanted (a deleted key) is removed from the
-- zone by the next publish. No reference to dkim_key on purpose.
CREATE TABLE IF NOT EXISTS dns_published (
    domain    TEXT NOT NULL COLLATE NOCASE
              REFERENCES domain(name) ON DELETE CASCADE,
    name      TEXT NOT NULL COLLATE NOCASE, -- owner, no trailing dot
    zone      TEXT NOT NULL,
    value     TEXT NOT NULL,                -- TXT text as published
    published INTEGER NOT NULL,
    PRIMARY KEY (domain, name)
);

-- SCRAM-SHA-256 keys (RFC 5802) of a member, written with the password by
-- `subgate member add|passwd`. Valid only while password_hash equals the
-- member's current member.password_hash: any other way of changing the
-- password (a reset) makes them stale, and SCRAM is then refused.
CREATE TABLE IF NOT EXISTS member_scram (
    member_id     INTEGER PRIMARY KEY REFERENCES member(id) ON DELETE CASCADE,
    iterations    INTEGER NOT NULL,
    salt          BLOB NOT NULL,
    stored_key    BLOB NOT NULL,
    server_key    BLOB NOT NULL,
    password_hash TEXT NOT NULL
);

-- Per-device submission passwords. The secret given to the member is
-- "sgt_<id>_<random>"; only a passwd_hash of the whole string is kept.
CREATE TABLE IF NOT EXISTS member_token (
    id        INTEGER PRIMARY KEY,
    member_id INTEGER NOT NULL REFERENCES member(id) ON DELETE CASCADE,
    label     TEXT NOT NULL,
    hash      TEXT NOT NULL,
    created   INTEGER NOT NULL,
    last_used INTEGER,            -- Unix time of the last AUTH, NULL never
    last_ip   TEXT,               -- client address of that AUTH
    UNIQUE (member_id, label)
);

-- TLS client certificates (SASL EXTERNAL): SHA-256 of the DER, lower-case
-- hex without separators.
CREATE TABLE IF NOT EXISTS member_cert (
    member_id INTEGER NOT NULL REFERENCES member(id) ON DELETE CASCADE,
    sha256    TEXT NOT NULL UNIQUE COLLATE NOCASE,
    created   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS member_cert_member ON member_cert(member_id);

-- Per-tenant AUTH policy; no row: the defaults (0).
CREATE TABLE IF NOT EXISTS tenant_auth_policy (
    tenant_id      INTEGER PRIMARY KEY REFERENCES tenant(id) ON DELETE CASCADE,
    require_tokens INTEGER NOT NULL DEFAULT 0 -- 1: the account password
                                              -- is refused for AUTH
);

-- A tenant's administrator, set with `subgate tenant notify`: subgated
-- mails it a report when a member or the tenant reaches an outbound
-- budget (budget_report_interval). No row: no reports.
CREATE TABLE IF NOT EXISTS tenant_notify (
    tenant_id     INTEGER PRIMARY KEY REFERENCES tenant(id) ON DELETE CASCADE,
    admin_address TEXT NOT NULL
);

INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', '1');
