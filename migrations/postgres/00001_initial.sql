-- +goose Up
CREATE TABLE connections (
    id           BIGSERIAL PRIMARY KEY,
    name         TEXT        NOT NULL,
    identifier   TEXT        NOT NULL,
    description  TEXT        NOT NULL DEFAULT '',
    keywords     TEXT        NOT NULL DEFAULT '[]',
    role         TEXT        NOT NULL,
    base_url     TEXT        NOT NULL,
    policy       TEXT        NOT NULL,
    security     TEXT        NOT NULL DEFAULT '{}',
    headers      TEXT        NOT NULL DEFAULT '{}',
    settings     TEXT        NOT NULL DEFAULT '{}',
    status       TEXT        NOT NULL,
    last_test    TEXT,
    version      BIGINT      NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    created_by   TEXT        NOT NULL DEFAULT '',
    updated_by   TEXT        NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX connections_name_key ON connections (name);
CREATE UNIQUE INDEX connections_identifier_key ON connections (identifier);

-- Secrets are AES-256-GCM ciphertexts whose associated data names the row and field.
CREATE TABLE connection_secrets (
    connection_id BIGINT NOT NULL REFERENCES connections (id) ON DELETE CASCADE,
    field         TEXT   NOT NULL,
    ciphertext    BYTEA  NOT NULL,
    PRIMARY KEY (connection_id, field)
);

CREATE TABLE tokens (
    connection_id    BIGINT PRIMARY KEY REFERENCES connections (id) ON DELETE CASCADE,
    access_token     BYTEA,
    refresh_token    BYTEA,
    token_type       TEXT        NOT NULL DEFAULT '',
    scopes           TEXT        NOT NULL DEFAULT '',
    obtained_at      TIMESTAMPTZ,
    expires_at       TIMESTAMPTZ,
    version          BIGINT      NOT NULL DEFAULT 0,
    lease_owner      TEXT        NOT NULL DEFAULT '',
    lease_until      TIMESTAMPTZ,
    last_error       TEXT        NOT NULL DEFAULT '',
    failures         INTEGER     NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ,
    blocked          BOOLEAN     NOT NULL DEFAULT FALSE,
    updated_at       TIMESTAMPTZ NOT NULL
);

CREATE TABLE oauth_states (
    state_hash    TEXT PRIMARY KEY,
    connection_id BIGINT      NOT NULL REFERENCES connections (id) ON DELETE CASCADE,
    verifier      BYTEA       NOT NULL,
    redirect_uri  TEXT        NOT NULL,
    created_by    TEXT        NOT NULL DEFAULT '',
    created_at    TIMESTAMPTZ NOT NULL,
    expires_at    TIMESTAMPTZ NOT NULL,
    used_at       TIMESTAMPTZ
);

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    name        TEXT        NOT NULL,
    role        TEXT        NOT NULL,
    connections TEXT        NOT NULL DEFAULT '[]',
    hash        TEXT        NOT NULL,
    prefix      TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    created_by  TEXT        NOT NULL DEFAULT '',
    expires_at  TIMESTAMPTZ,
    revoked_at  TIMESTAMPTZ
);
CREATE UNIQUE INDEX api_keys_hash_key ON api_keys (hash);

-- +goose Down
DROP TABLE api_keys;
DROP TABLE oauth_states;
DROP TABLE tokens;
DROP TABLE connection_secrets;
DROP TABLE connections;
