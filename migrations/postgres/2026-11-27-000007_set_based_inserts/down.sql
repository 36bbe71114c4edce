DROP TRIGGER exceptions_sync_index_inserted ON exceptions;
DROP FUNCTION exceptions_sync_index_inserted();
DROP TRIGGER exceptions_sync_index ON exceptions;
CREATE TRIGGER exceptions_sync_index AFTER INSERT OR UPDATE OF assets, control_ids, external_refs
    ON exceptions FOR EACH ROW EXECUTE FUNCTION exceptions_sync_index();
