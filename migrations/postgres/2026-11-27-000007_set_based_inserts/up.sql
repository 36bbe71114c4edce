-- New exceptions fill their derived tables a statement at a time: an import writes a batch
-- of drafts with a few multi-row INSERTs, and one set-based INSERT per derived table beats a
-- trigger call per row. Updates keep the row trigger (it deletes and refills what moved).
CREATE FUNCTION exceptions_sync_index_inserted() RETURNS TRIGGER LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO exception_assets (asset, exception_id)
        SELECT DISTINCT a, n.id FROM new_rows n, json_array_elements_text(n.assets::JSON) a;
    INSERT INTO exception_control_ids (control_id, exception_id)
        SELECT DISTINCT c, n.id FROM new_rows n, json_array_elements_text(n.control_ids::JSON) c;
    INSERT INTO exception_pairs (asset, control_id, key_num, exception_id)
        SELECT DISTINCT a, c, n.key_num, n.id
        FROM new_rows n, json_array_elements_text(n.assets::JSON) a, json_array_elements_text(n.control_ids::JSON) c;
    INSERT INTO external_refs (system, ext_id, exception_id)
        SELECT r->>'system', r->>'id', n.id FROM new_rows n, json_array_elements(n.external_refs::JSON) r;
    RETURN NULL;
END $$;
DROP TRIGGER exceptions_sync_index ON exceptions;
CREATE TRIGGER exceptions_sync_index AFTER UPDATE OF assets, control_ids, external_refs
    ON exceptions FOR EACH ROW EXECUTE FUNCTION exceptions_sync_index();
CREATE TRIGGER exceptions_sync_index_inserted AFTER INSERT ON exceptions
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION exceptions_sync_index_inserted();
