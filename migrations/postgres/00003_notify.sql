-- +goose Up
-- Replicas cache connections, tokens and API keys in memory; these triggers
-- tell every replica (LISTEN connmgr_changes) when one changes elsewhere.
-- Status updates do not change a connection's version and notify nobody.

-- +goose StatementBegin
CREATE FUNCTION connmgr_notify_change() RETURNS trigger AS $$
DECLARE
    rec RECORD;
BEGIN
    IF TG_OP = 'DELETE' THEN rec := OLD; ELSE rec := NEW; END IF;
    IF TG_TABLE_NAME = 'connections' THEN
        PERFORM pg_notify('connmgr_changes', json_build_object('kind', 'connection', 'id', rec.id, 'name', rec.name)::text);
    ELSIF TG_TABLE_NAME = 'tokens' THEN
        PERFORM pg_notify('connmgr_changes', json_build_object('kind', 'token', 'id', rec.connection_id)::text);
    ELSE
        PERFORM pg_notify('connmgr_changes', json_build_object('kind', 'apikey', 'name', rec.id)::text);
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
-- +goose StatementEnd

CREATE TRIGGER connections_notify AFTER INSERT OR DELETE ON connections
    FOR EACH ROW EXECUTE FUNCTION connmgr_notify_change();
CREATE TRIGGER connections_notify_update AFTER UPDATE ON connections
    FOR EACH ROW WHEN (OLD.version IS DISTINCT FROM NEW.version) EXECUTE FUNCTION connmgr_notify_change();
CREATE TRIGGER tokens_notify AFTER UPDATE ON tokens
    FOR EACH ROW WHEN (OLD.version IS DISTINCT FROM NEW.version OR OLD.expires_at IS DISTINCT FROM NEW.expires_at)
    EXECUTE FUNCTION connmgr_notify_change();
CREATE TRIGGER tokens_notify_delete AFTER DELETE ON tokens
    FOR EACH ROW EXECUTE FUNCTION connmgr_notify_change();
CREATE TRIGGER api_keys_notify AFTER UPDATE OR DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION connmgr_notify_change();

-- +goose Down
DROP TRIGGER api_keys_notify ON api_keys;
DROP TRIGGER tokens_notify_delete ON tokens;
DROP TRIGGER tokens_notify ON tokens;
DROP TRIGGER connections_notify_update ON connections;
DROP TRIGGER connections_notify ON connections;
DROP FUNCTION connmgr_notify_change();
