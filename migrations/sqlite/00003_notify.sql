-- +goose Up
-- PostgreSQL's version of this migration adds change notifications for
-- replicas. SQLite serves one process, which needs none; the version is
-- kept so both engines share their numbering.
SELECT 1;

-- +goose Down
SELECT 1;
