-- +goose Up
-- See the PostgreSQL version: health, credential fingerprints, list and
-- refresh indexes, key checks and instance secrets.
ALTER TABLE connections ADD COLUMN fingerprint TEXT NOT NULL DEFAULT '';
ALTER TABLE connections ADD COLUMN status_reason TEXT NOT NULL DEFAULT '';
ALTER TABLE connections ADD COLUMN status_since DATETIME;
ALTER TABLE connections ADD COLUMN search TEXT NOT NULL DEFAULT '';
-- search is what the store writes: name and keywords, one per line.
UPDATE connections SET status_since = updated_at,
    search = lower(name || COALESCE(char(10) || (SELECT group_concat(value, char(10))
        FROM (SELECT value FROM json_each(connections.keywords) ORDER BY key)), ''));
CREATE INDEX connections_role_name ON connections (role, name);
CREATE INDEX connections_policy_name ON connections (policy, name);
CREATE INDEX connections_status_name ON connections (status, name);
CREATE INDEX connections_role_policy_name ON connections (role, policy, name);
CREATE INDEX connections_role_status_name ON connections (role, status, name);
CREATE INDEX connections_policy_status_name ON connections (policy, status, name);
CREATE INDEX connections_role_policy_status_name ON connections (role, policy, status, name);

ALTER TABLE tokens ADD COLUMN fingerprint TEXT NOT NULL DEFAULT '';
ALTER TABLE tokens ADD COLUMN refresh_at DATETIME;
ALTER TABLE tokens ADD COLUMN last_refresh_at DATETIME;
ALTER TABLE tokens ADD COLUMN needs_consent BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE tokens SET last_refresh_at = obtained_at;
CREATE INDEX tokens_due ON tokens (refresh_at) WHERE NOT blocked;

ALTER TABLE oauth_states ADD COLUMN fingerprint TEXT NOT NULL DEFAULT '';
ALTER TABLE oauth_states ADD COLUMN nonce TEXT NOT NULL DEFAULT '';

CREATE TABLE key_checks (
    key_id     TEXT PRIMARY KEY,
    ciphertext BLOB      NOT NULL,
    created_at DATETIME  NOT NULL
);

CREATE TABLE instance_secrets (
    name       TEXT PRIMARY KEY,
    ciphertext BLOB      NOT NULL,
    created_at DATETIME  NOT NULL
);

-- +goose Down
DROP TABLE instance_secrets;
DROP TABLE key_checks;
DROP INDEX tokens_due;
DROP INDEX connections_role_policy_status_name;
DROP INDEX connections_policy_status_name;
DROP INDEX connections_role_status_name;
DROP INDEX connections_role_policy_name;
DROP INDEX connections_status_name;
DROP INDEX connections_policy_name;
DROP INDEX connections_role_name;
ALTER TABLE oauth_states DROP COLUMN nonce;
ALTER TABLE oauth_states DROP COLUMN fingerprint;
ALTER TABLE tokens DROP COLUMN needs_consent;
ALTER TABLE tokens DROP COLUMN last_refresh_at;
ALTER TABLE tokens DROP COLUMN refresh_at;
ALTER TABLE tokens DROP COLUMN fingerprint;
ALTER TABLE connections DROP COLUMN search;
ALTER TABLE connections DROP COLUMN status_since;
ALTER TABLE connections DROP COLUMN status_reason;
ALTER TABLE connections DROP COLUMN fingerprint;
