-- One row per exception, written and read in one statement (issue 7).
--
-- * Controls, assessments, approvals, reviews and control checks become JSON arrays on the
--   exception's row: the aggregate is loaded by one index lookup and saved by one UPDATE.
-- * The tables queries need (assets, control ids, external references) are derived from the
--   row by a trigger, so they can never disagree with it and cost the writer no statement.
-- * Integration events are audit events with a type: one multi-row INSERT writes both.
-- * Keys come from a sequence: creates no longer queue on one counter row (gaps are fine).
-- * Index-backed text search (pg_trgm) and the indexes each list filter and sort needs.

ALTER TABLE exceptions
    ADD COLUMN controls TEXT NOT NULL DEFAULT '[]',
    ADD COLUMN assessments TEXT NOT NULL DEFAULT '[]',
    ADD COLUMN approvals TEXT NOT NULL DEFAULT '[]',
    ADD COLUMN reviews TEXT NOT NULL DEFAULT '[]',
    ADD COLUMN control_checks TEXT NOT NULL DEFAULT '[]';

CREATE FUNCTION leeway_ts(t TIMESTAMP) RETURNS TEXT LANGUAGE SQL IMMUTABLE AS
$$ SELECT to_char(t, 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') $$;

UPDATE exceptions e SET
    controls = COALESCE((SELECT json_agg(json_build_object(
        'id', c.id, 'description', c.description, 'kind', c.kind, 'effectiveness', c.effectiveness,
        'status', c.status, 'evidence', c.evidence, 'verified_by', c.verified_by,
        'verified_at', leeway_ts(c.verified_at), 'created_at', leeway_ts(c.created_at),
        'check_every', c.check_every_days, 'last_checked_at', leeway_ts(c.last_checked_at))
        ORDER BY c.position)::TEXT FROM controls c WHERE c.exception_id = e.id), '[]'),
    assessments = COALESCE((SELECT json_agg(json_build_object(
        'id', a.id, 'round', a.round, 'method', a.method, 'likelihood', a.likelihood, 'impact', a.impact,
        'vector', a.vector, 'inherent_score', a.inherent_score, 'residual_score', a.residual_score,
        'rationale', a.rationale, 'threat_vectors', a.threat_vectors::JSON, 'assessed_by', a.assessed_by,
        'assessed_at', leeway_ts(a.assessed_at))
        ORDER BY a.assessed_at, a.id)::TEXT FROM assessments a WHERE a.exception_id = e.id), '[]'),
    approvals = COALESCE((SELECT json_agg(json_build_object(
        'id', p.id, 'round', p.round, 'role', p.role, 'approver', p.approver, 'comment', p.comment,
        'at', leeway_ts(p.approved_at), 'assessment_id', p.assessment_id, 'method', p.method,
        'inherent_score', p.inherent_score, 'inherent_level', p.inherent_level,
        'residual_score', p.residual_score, 'residual_level', p.residual_level, 'superseded', p.superseded)
        ORDER BY p.approved_at, p.id)::TEXT FROM approvals p WHERE p.exception_id = e.id), '[]'),
    reviews = COALESCE((SELECT json_agg(json_build_object(
        'id', r.id, 'round', r.round, 'reviewer', r.reviewer, 'at', leeway_ts(r.reviewed_at),
        'controls_effective', r.controls_effective, 'justification_valid', r.justification_valid,
        'better_option_available', r.better_option_available, 'outcome', r.outcome, 'comment', r.comment)
        ORDER BY r.reviewed_at, r.id)::TEXT FROM reviews r WHERE r.exception_id = e.id), '[]'),
    control_checks = COALESCE((SELECT json_agg(json_build_object(
        'id', k.id, 'control_id', k.control_id, 'result', k.result, 'evidence', k.evidence,
        'checker', k.checker, 'at', leeway_ts(k.checked_at))
        ORDER BY k.checked_at, k.id)::TEXT FROM control_checks k WHERE k.exception_id = e.id), '[]');

DROP FUNCTION leeway_ts(TIMESTAMP);
DROP TABLE control_checks;
DROP TABLE controls;
DROP TABLE assessments;
DROP TABLE approvals;
DROP TABLE reviews;

-- the tables queries need, kept from the row
CREATE FUNCTION exceptions_sync_index() RETURNS TRIGGER LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR OLD.assets IS DISTINCT FROM NEW.assets THEN
        IF TG_OP = 'UPDATE' THEN DELETE FROM exception_assets WHERE exception_id = NEW.id; END IF;
        INSERT INTO exception_assets (asset, exception_id)
            SELECT DISTINCT a, NEW.id FROM json_array_elements_text(NEW.assets::JSON) a;
    END IF;
    IF TG_OP = 'INSERT' OR OLD.control_ids IS DISTINCT FROM NEW.control_ids THEN
        IF TG_OP = 'UPDATE' THEN DELETE FROM exception_control_ids WHERE exception_id = NEW.id; END IF;
        INSERT INTO exception_control_ids (control_id, exception_id)
            SELECT DISTINCT c, NEW.id FROM json_array_elements_text(NEW.control_ids::JSON) c;
    END IF;
    IF TG_OP = 'INSERT' OR OLD.external_refs IS DISTINCT FROM NEW.external_refs THEN
        IF TG_OP = 'UPDATE' THEN DELETE FROM external_refs WHERE exception_id = NEW.id; END IF;
        INSERT INTO external_refs (system, ext_id, exception_id)
            SELECT r->>'system', r->>'id', NEW.id FROM json_array_elements(NEW.external_refs::JSON) r;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER exceptions_sync_index AFTER INSERT OR UPDATE OF assets, control_ids, external_refs
    ON exceptions FOR EACH ROW EXECUTE FUNCTION exceptions_sync_index();

-- integration events are audit events with a type
ALTER TABLE audit_events ADD COLUMN event_type TEXT, ADD COLUMN event_id TEXT;
UPDATE audit_events a SET event_type = o.event_type, event_id = o.id FROM outbox o WHERE o.audit_seq = a.seq;
CREATE UNIQUE INDEX audit_events_event_id ON audit_events (event_id);
CREATE INDEX audit_events_feed ON audit_events (seq) WHERE event_type IS NOT NULL;
DROP TABLE outbox;

-- keys from a sequence, starting after the last key handed out
CREATE SEQUENCE exception_keys;
SELECT setval('exception_keys', GREATEST((SELECT value FROM counters WHERE name = 'exception_key'), 1),
              (SELECT value > 0 FROM counters WHERE name = 'exception_key'));
DROP TABLE counters;

-- text search backed by a trigram index; the extension lives in `public`, where every schema
-- of the database reaches it
CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public;
CREATE INDEX exceptions_search ON exceptions USING GIN (search_text public.gin_trgm_ops);

-- the head of each exception's audit chain, on its row: the statement that locks the row for
-- a change reads the previous hash with it, always of the version it locked
ALTER TABLE exceptions ADD COLUMN audit_head TEXT NOT NULL
    DEFAULT '0000000000000000000000000000000000000000000000000000000000000000';
UPDATE exceptions e SET audit_head = a.hash
    FROM (SELECT DISTINCT ON (exception_id) exception_id, hash FROM audit_events ORDER BY exception_id, seq DESC) a
    WHERE a.exception_id = e.id;

-- each list filter with the default order, so that a filtered page is one index range
DROP INDEX exceptions_status_id;
CREATE INDEX exceptions_status_created ON exceptions (status, created_at, id);
CREATE INDEX exceptions_status_updated ON exceptions (status, updated_at, id);
CREATE INDEX exceptions_status_expires ON exceptions (status, expires_at);
DROP INDEX exceptions_bu_id;
CREATE INDEX exceptions_bu_created ON exceptions (business_unit, created_at, id);
DROP INDEX exceptions_requester_id;
CREATE INDEX exceptions_requester_created ON exceptions (requester, created_at, id);
DROP INDEX exceptions_owner_id;
CREATE INDEX exceptions_owner_created ON exceptions (risk_owner, created_at, id);
DROP INDEX exceptions_on_behalf_of_id;
CREATE INDEX exceptions_on_behalf_of_created ON exceptions (on_behalf_of, created_at, id);
DROP INDEX exceptions_category_id;
CREATE INDEX exceptions_category_created ON exceptions (category, created_at, id);
DROP INDEX exceptions_level_id;
CREATE INDEX exceptions_level_created ON exceptions (residual_level, created_at, id);

-- The places under the covering limits around one exception (see `facts.rs`), read after its
-- assets, and its business unit when that has a limit, are locked for the transaction. One
-- function, so that locking and reading are one round trip while the read still sees every
-- change committed before the locks were granted: under READ COMMITTED each statement of a
-- volatile function takes a fresh snapshot. Locks are taken in one order (by hash), so two
-- writers never wait on each other crosswise.
CREATE FUNCTION leeway_places(p_me TEXT, p_assets TEXT[], p_control_ids TEXT[], p_business_unit TEXT,
                              p_business_unit_limited BOOLEAN, p_at TIMESTAMP, p_created TIMESTAMP)
RETURNS TABLE (place_kind TEXT, place_name TEXT, place_key BIGINT) LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(h) FROM (
        SELECT DISTINCT hashtextextended(k, 0) AS h FROM unnest(
            ARRAY(SELECT 'asset:' || a FROM unnest(p_assets) a)
            || CASE WHEN p_business_unit_limited THEN ARRAY['bu:' || p_business_unit] ELSE ARRAY[]::TEXT[] END) k
        ORDER BY h OFFSET 0) ordered;
    RETURN QUERY
        SELECT 'asset'::TEXT, x.asset, e.key_num
        FROM exception_assets x JOIN exceptions e ON e.id = x.exception_id
        WHERE x.asset = ANY (p_assets) AND e.id <> p_me
          AND e.status IN ('approved', 'active', 'renewal_pending') AND e.expires_at > p_at
        UNION ALL
        SELECT 'business_unit'::TEXT, e.business_unit, e.key_num
        FROM exceptions e
        WHERE p_business_unit_limited AND e.business_unit = p_business_unit AND e.id <> p_me
          AND e.status IN ('approved', 'active', 'renewal_pending') AND e.expires_at > p_at
        UNION ALL
        (SELECT 'earlier'::TEXT, ''::TEXT, e.key_num
        FROM exceptions e
        WHERE e.id IN (SELECT x.exception_id FROM exception_assets x WHERE x.asset = ANY (p_assets))
          AND e.id IN (SELECT c.exception_id FROM exception_control_ids c WHERE c.control_id = ANY (p_control_ids))
          AND e.status NOT IN ('draft', 'withdrawn') AND e.id <> p_me AND e.created_at <= p_created
        ORDER BY e.key_num LIMIT 50);
END $$;
