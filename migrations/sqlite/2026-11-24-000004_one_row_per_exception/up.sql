-- One row per exception, written and read in one statement (issue 7).
--
-- * Controls, assessments, approvals, reviews and control checks become JSON arrays on the
--   exception's row: the aggregate is loaded by one index lookup and saved by one UPDATE.
-- * The tables queries need (assets, control ids, external references) are derived from the
--   row by triggers, so they can never disagree with it and cost the writer no statement.
-- * Integration events are audit events with a type: one multi-row INSERT writes both.
-- * Index-backed text search (FTS5, trigram) and the indexes each list filter and sort needs.
-- SQLite has a single writer, so keys stay on their counter row.

ALTER TABLE exceptions ADD COLUMN controls TEXT NOT NULL DEFAULT '[]';
ALTER TABLE exceptions ADD COLUMN assessments TEXT NOT NULL DEFAULT '[]';
ALTER TABLE exceptions ADD COLUMN approvals TEXT NOT NULL DEFAULT '[]';
ALTER TABLE exceptions ADD COLUMN reviews TEXT NOT NULL DEFAULT '[]';
ALTER TABLE exceptions ADD COLUMN control_checks TEXT NOT NULL DEFAULT '[]';

-- stored times are 'YYYY-MM-DD HH:MM:SS[.ffffff]'; in JSON they are RFC 3339
UPDATE exceptions SET
    controls = COALESCE((SELECT json_group_array(json_object(
        'id', c.id, 'description', c.description, 'kind', c.kind, 'effectiveness', c.effectiveness,
        'status', c.status, 'evidence', c.evidence, 'verified_by', c.verified_by,
        'verified_at', replace(c.verified_at, ' ', 'T') || 'Z', 'created_at', replace(c.created_at, ' ', 'T') || 'Z',
        'check_every', c.check_every_days, 'last_checked_at', replace(c.last_checked_at, ' ', 'T') || 'Z')
        ORDER BY c.position) FROM controls c WHERE c.exception_id = exceptions.id), '[]'),
    assessments = COALESCE((SELECT json_group_array(json_object(
        'id', a.id, 'round', a.round, 'method', a.method, 'likelihood', a.likelihood, 'impact', a.impact,
        'vector', a.vector, 'inherent_score', a.inherent_score, 'residual_score', a.residual_score,
        'rationale', a.rationale, 'threat_vectors', json(a.threat_vectors), 'assessed_by', a.assessed_by,
        'assessed_at', replace(a.assessed_at, ' ', 'T') || 'Z')
        ORDER BY a.assessed_at, a.id) FROM assessments a WHERE a.exception_id = exceptions.id), '[]'),
    approvals = COALESCE((SELECT json_group_array(json_object(
        'id', p.id, 'round', p.round, 'role', p.role, 'approver', p.approver, 'comment', p.comment,
        'at', replace(p.approved_at, ' ', 'T') || 'Z', 'assessment_id', p.assessment_id, 'method', p.method,
        'inherent_score', p.inherent_score, 'inherent_level', p.inherent_level,
        'residual_score', p.residual_score, 'residual_level', p.residual_level,
        'superseded', json(CASE WHEN p.superseded THEN 'true' ELSE 'false' END))
        ORDER BY p.approved_at, p.id) FROM approvals p WHERE p.exception_id = exceptions.id), '[]'),
    reviews = COALESCE((SELECT json_group_array(json_object(
        'id', r.id, 'round', r.round, 'reviewer', r.reviewer, 'at', replace(r.reviewed_at, ' ', 'T') || 'Z',
        'controls_effective', json(CASE WHEN r.controls_effective THEN 'true' ELSE 'false' END),
        'justification_valid', json(CASE WHEN r.justification_valid THEN 'true' ELSE 'false' END),
        'better_option_available', json(CASE WHEN r.better_option_available THEN 'true' ELSE 'false' END),
        'outcome', r.outcome, 'comment', r.comment)
        ORDER BY r.reviewed_at, r.id) FROM reviews r WHERE r.exception_id = exceptions.id), '[]'),
    control_checks = COALESCE((SELECT json_group_array(json_object(
        'id', k.id, 'control_id', k.control_id, 'result', k.result, 'evidence', k.evidence,
        'checker', k.checker, 'at', replace(k.checked_at, ' ', 'T') || 'Z')
        ORDER BY k.checked_at, k.id) FROM control_checks k WHERE k.exception_id = exceptions.id), '[]');

DROP TABLE control_checks;
DROP TABLE controls;
DROP TABLE assessments;
DROP TABLE approvals;
DROP TABLE reviews;

-- the tables queries need, kept from the row: assets, control ids, references, and each
-- (asset, control id) pair in key order, which finds the earlier exceptions a request repeats
-- by index ranges, however many exceptions an asset has seen
CREATE TABLE exception_pairs (
    asset TEXT NOT NULL,
    control_id TEXT NOT NULL,
    key_num BIGINT NOT NULL,
    exception_id TEXT NOT NULL,
    PRIMARY KEY (asset, control_id, key_num)
);
CREATE INDEX exception_pairs_exception ON exception_pairs (exception_id);
INSERT INTO exception_pairs (asset, control_id, key_num, exception_id)
    SELECT a.asset, c.control_id, e.key_num, e.id
    FROM exceptions e
    JOIN exception_assets a ON a.exception_id = e.id
    JOIN exception_control_ids c ON c.exception_id = e.id;

CREATE TRIGGER exceptions_index_insert AFTER INSERT ON exceptions BEGIN
    INSERT INTO exception_assets (asset, exception_id) SELECT DISTINCT value, NEW.id FROM json_each(NEW.assets);
    INSERT INTO exception_control_ids (control_id, exception_id) SELECT DISTINCT value, NEW.id FROM json_each(NEW.control_ids);
    INSERT INTO exception_pairs (asset, control_id, key_num, exception_id)
        SELECT DISTINCT a.value, c.value, NEW.key_num, NEW.id FROM json_each(NEW.assets) a, json_each(NEW.control_ids) c;
    INSERT INTO external_refs (system, ext_id, exception_id)
        SELECT json_extract(value, '$.system'), json_extract(value, '$.id'), NEW.id FROM json_each(NEW.external_refs);
END;
CREATE TRIGGER exceptions_index_assets AFTER UPDATE OF assets ON exceptions WHEN OLD.assets IS NOT NEW.assets BEGIN
    DELETE FROM exception_assets WHERE exception_id = NEW.id;
    INSERT INTO exception_assets (asset, exception_id) SELECT DISTINCT value, NEW.id FROM json_each(NEW.assets);
END;
CREATE TRIGGER exceptions_index_control_ids AFTER UPDATE OF control_ids ON exceptions
    WHEN OLD.control_ids IS NOT NEW.control_ids BEGIN
    DELETE FROM exception_control_ids WHERE exception_id = NEW.id;
    INSERT INTO exception_control_ids (control_id, exception_id) SELECT DISTINCT value, NEW.id FROM json_each(NEW.control_ids);
END;
CREATE TRIGGER exceptions_index_pairs AFTER UPDATE OF assets, control_ids ON exceptions
    WHEN OLD.assets IS NOT NEW.assets OR OLD.control_ids IS NOT NEW.control_ids BEGIN
    DELETE FROM exception_pairs WHERE exception_id = NEW.id;
    INSERT INTO exception_pairs (asset, control_id, key_num, exception_id)
        SELECT DISTINCT a.value, c.value, NEW.key_num, NEW.id FROM json_each(NEW.assets) a, json_each(NEW.control_ids) c;
END;
CREATE TRIGGER exceptions_index_external_refs AFTER UPDATE OF external_refs ON exceptions
    WHEN OLD.external_refs IS NOT NEW.external_refs BEGIN
    DELETE FROM external_refs WHERE exception_id = NEW.id;
    INSERT INTO external_refs (system, ext_id, exception_id)
        SELECT json_extract(value, '$.system'), json_extract(value, '$.id'), NEW.id FROM json_each(NEW.external_refs);
END;

-- integration events are audit events with a type
ALTER TABLE audit_events ADD COLUMN event_type TEXT;
ALTER TABLE audit_events ADD COLUMN event_id TEXT;
UPDATE audit_events SET
    event_type = (SELECT o.event_type FROM outbox o WHERE o.audit_seq = audit_events.seq),
    event_id = (SELECT o.id FROM outbox o WHERE o.audit_seq = audit_events.seq);
CREATE UNIQUE INDEX audit_events_event_id ON audit_events (event_id);
CREATE INDEX audit_events_feed ON audit_events (seq) WHERE event_type IS NOT NULL;
DROP TABLE outbox;

-- text search backed by a trigram index over the row's lower-cased title and justification;
-- the index keeps its own copy, under the exception's key (a rowid VACUUM never renumbers)
CREATE VIRTUAL TABLE exceptions_search USING fts5(search_text, tokenize='trigram');
INSERT INTO exceptions_search (rowid, search_text) SELECT key_num, search_text FROM exceptions;
CREATE TRIGGER exceptions_search_insert AFTER INSERT ON exceptions BEGIN
    INSERT INTO exceptions_search (rowid, search_text) VALUES (NEW.key_num, NEW.search_text);
END;
CREATE TRIGGER exceptions_search_update AFTER UPDATE OF search_text ON exceptions
    WHEN OLD.search_text IS NOT NEW.search_text BEGIN
    UPDATE exceptions_search SET search_text = NEW.search_text WHERE rowid = NEW.key_num;
END;

-- the head of each exception's audit chain, on its row: the read that loads the row for a
-- change has the previous hash with it
ALTER TABLE exceptions ADD COLUMN audit_head TEXT NOT NULL
    DEFAULT '0000000000000000000000000000000000000000000000000000000000000000';
UPDATE exceptions SET audit_head = COALESCE(
    (SELECT a.hash FROM audit_events a WHERE a.exception_id = exceptions.id ORDER BY a.seq DESC LIMIT 1), audit_head);

-- each selective list filter with the default order, so that a filtered page is one index
-- range; every write maintains each index, so there is no index a list does not need
DROP INDEX exceptions_status_id;
CREATE INDEX exceptions_status_created ON exceptions (status, created_at, id);
CREATE INDEX exceptions_status_expires ON exceptions (status, expires_at);
DROP INDEX exceptions_bu_id;
CREATE INDEX exceptions_bu_created ON exceptions (business_unit, created_at, id);
DROP INDEX exceptions_requester_id;
CREATE INDEX exceptions_requester_created ON exceptions (requester, created_at, id);
DROP INDEX exceptions_owner_id;
CREATE INDEX exceptions_owner_created ON exceptions (risk_owner, created_at, id);
DROP INDEX exceptions_on_behalf_of_id;
CREATE INDEX exceptions_on_behalf_of_created ON exceptions (on_behalf_of, created_at, id);
-- category (ten values) and residual level (four) select too little to pay for an index on
-- every write: their lists walk the order's index and filter
DROP INDEX exceptions_category_id;
DROP INDEX exceptions_level_id;
