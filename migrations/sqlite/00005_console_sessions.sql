-- +goose Up
-- See the PostgreSQL version: console sessions, by the hash of their id.
CREATE TABLE console_sessions (
    hash       TEXT PRIMARY KEY,
    key_id     TEXT      NOT NULL,
    key_check  TEXT      NOT NULL DEFAULT '',
    created_at DATETIME  NOT NULL,
    expires_at DATETIME  NOT NULL,
    idle_until DATETIME  NOT NULL
);
CREATE INDEX console_sessions_expires ON console_sessions (expires_at);

-- +goose Down
DROP TABLE console_sessions;
