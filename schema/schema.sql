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

INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', '1');
