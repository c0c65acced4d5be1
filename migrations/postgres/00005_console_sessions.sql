-- +goose Up
-- Sessions of the admin console (/console/): the cookie holds a random id,
-- this table only its SHA-256. A session acts as the API key it was signed
-- in with (key_id; "env" for CONNMGR_ADMIN_TOKEN, which has no row), and
-- ends at expires_at, or at idle_until when it is not used. Replicas share
-- the table, so a browser may be served by any of them.
CREATE TABLE console_sessions (
    hash       TEXT PRIMARY KEY,
    key_id     TEXT        NOT NULL,
    key_check  TEXT        NOT NULL DEFAULT '',
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    idle_until TIMESTAMPTZ NOT NULL
);
CREATE INDEX console_sessions_expires ON console_sessions (expires_at);

-- +goose Down
DROP TABLE console_sessions;
