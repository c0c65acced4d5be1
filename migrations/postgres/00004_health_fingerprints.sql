-- +goose Up
-- Connections carry their health (status reason and since when) and the
-- fingerprint of their credential configuration; tokens and pending
-- consents record the fingerprint they were obtained under, so one from an
-- older configuration is never stored or served.
ALTER TABLE connections ADD COLUMN fingerprint TEXT NOT NULL DEFAULT '';
ALTER TABLE connections ADD COLUMN status_reason TEXT NOT NULL DEFAULT '';
ALTER TABLE connections ADD COLUMN status_since TIMESTAMPTZ;
-- search: the lower-cased name and keywords, one per line, for q.
ALTER TABLE connections ADD COLUMN search TEXT NOT NULL DEFAULT '';
UPDATE connections SET status_since = updated_at,
    search = lower(name || COALESCE(E'\n' || (SELECT string_agg(k, E'\n' ORDER BY n)
        FROM json_array_elements_text(keywords::json) WITH ORDINALITY AS kw(k, n)), ''));

-- Lists order by name in byte order and filter by any of role, policy and
-- status: an index per combination answers a page without a sort, read
-- from its first match. Each carries search, so that a search reads a
-- stretch of names from the index alone (see store.Connections.List).
CREATE INDEX connections_name_bytes ON connections (name COLLATE "C") INCLUDE (search);
CREATE INDEX connections_role_name ON connections (role, name COLLATE "C") INCLUDE (search);
CREATE INDEX connections_policy_name ON connections (policy, name COLLATE "C") INCLUDE (search);
CREATE INDEX connections_status_name ON connections (status, name COLLATE "C") INCLUDE (search);
CREATE INDEX connections_role_policy_name ON connections (role, policy, name COLLATE "C") INCLUDE (search);
CREATE INDEX connections_role_status_name ON connections (role, status, name COLLATE "C") INCLUDE (search);
CREATE INDEX connections_policy_status_name ON connections (policy, status, name COLLATE "C") INCLUDE (search);
CREATE INDEX connections_role_policy_status_name ON connections (role, policy, status, name COLLATE "C") INCLUDE (search);

-- q is a substring match; with pg_trgm (trusted since PostgreSQL 13, so a
-- database owner may create it) a trigram index answers it. Without the
-- extension the search still works, by scanning.
-- +goose StatementBegin
DO $$
BEGIN
    BEGIN
        CREATE EXTENSION IF NOT EXISTS pg_trgm;
    EXCEPTION WHEN insufficient_privilege OR feature_not_supported OR undefined_file THEN
        RAISE NOTICE 'pg_trgm is not available: connection search (q) scans';
    END;
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
        EXECUTE 'CREATE INDEX connections_search_trgm ON connections USING gin (search gin_trgm_ops)';
    END IF;
END
$$;
-- +goose StatementEnd

ALTER TABLE tokens ADD COLUMN fingerprint TEXT NOT NULL DEFAULT '';
ALTER TABLE tokens ADD COLUMN refresh_at TIMESTAMPTZ;
ALTER TABLE tokens ADD COLUMN last_refresh_at TIMESTAMPTZ;
ALTER TABLE tokens ADD COLUMN needs_consent BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE tokens SET refresh_at = expires_at - GREATEST((expires_at - obtained_at) / 5,
    LEAST(interval '60 seconds', (expires_at - obtained_at) / 2)), last_refresh_at = obtained_at
    WHERE expires_at IS NOT NULL AND obtained_at IS NOT NULL;
-- The scheduler asks for the tokens due soonest.
CREATE INDEX tokens_due ON tokens (refresh_at) WHERE NOT blocked;

ALTER TABLE oauth_states ADD COLUMN fingerprint TEXT NOT NULL DEFAULT '';
ALTER TABLE oauth_states ADD COLUMN nonce TEXT NOT NULL DEFAULT '';

-- One key-check value per encryption key id: a known plaintext sealed with
-- that key, so that a start with the wrong keys fails at once.
CREATE TABLE key_checks (
    key_id     TEXT PRIMARY KEY,
    ciphertext BYTEA       NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);

-- Instance secrets, sealed with the key ring: the key that fingerprints,
-- cursor signatures and audit fingerprints derive from. Rotation re-seals
-- it and its value stays, so derived values survive rotation.
CREATE TABLE instance_secrets (
    name       TEXT PRIMARY KEY,
    ciphertext BYTEA       NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);

-- +goose Down
DROP TABLE instance_secrets;
DROP TABLE key_checks;
ALTER TABLE oauth_states DROP COLUMN nonce;
ALTER TABLE oauth_states DROP COLUMN fingerprint;
DROP INDEX tokens_due;
ALTER TABLE tokens DROP COLUMN needs_consent;
ALTER TABLE tokens DROP COLUMN last_refresh_at;
ALTER TABLE tokens DROP COLUMN refresh_at;
ALTER TABLE tokens DROP COLUMN fingerprint;
DROP INDEX IF EXISTS connections_search_trgm;
DROP INDEX connections_role_policy_status_name;
DROP INDEX connections_policy_status_name;
DROP INDEX connections_role_status_name;
DROP INDEX connections_role_policy_name;
DROP INDEX connections_status_name;
DROP INDEX connections_policy_name;
DROP INDEX connections_role_name;
DROP INDEX connections_name_bytes;
ALTER TABLE connections DROP COLUMN search;
ALTER TABLE connections DROP COLUMN status_since;
ALTER TABLE connections DROP COLUMN status_reason;
ALTER TABLE connections DROP COLUMN fingerprint;
