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
    IF TG_OP = 'INSERT' OR OLD.assets IS DISTINCT FROM NEW.assets OR OLD.control_ids IS DISTINCT FROM NEW.control_ids THEN
        IF TG_OP = 'UPDATE' THEN DELETE FROM exception_pairs WHERE exception_id = NEW.id; END IF;
        INSERT INTO exception_pairs (asset, control_id, key_num, exception_id)
            SELECT DISTINCT a, c, NEW.key_num, NEW.id
            FROM json_array_elements_text(NEW.assets::JSON) a, json_array_elements_text(NEW.control_ids::JSON) c;
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

-- each selective list filter with the default order, so that a filtered page is one index
-- range; every write maintains each index, so there is no index a list does not need
DROP INDEX exceptions_status_id;
CREATE INDEX exceptions_status_created ON exceptions (status, created_at, id);
CREATE INDEX exceptions_status_expires ON exceptions (status, expires_at);
-- the live rows (covering, or approved to cover) in the default order: `status=active` and
-- `covering=true` pages walk it instead of sorting every live row; old rows are mostly
-- finished, so the order's own index would first pass over years of them
CREATE INDEX exceptions_live_created ON exceptions (created_at, id)
    WHERE status IN ('approved', 'active', 'renewal_pending');
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

-- The places under the covering limits around one exception (see `facts.rs`), read after its
-- assets, and its business unit when that has a limit, are locked for the transaction. One
-- function, so that locking and reading are one round trip while the read still sees every
-- change committed before the locks were granted: under READ COMMITTED each statement of a
-- volatile function takes a fresh snapshot. The caller passes the lock keys sorted, so two
-- writers never wait on each other crosswise.
--
-- Every part starts from the request's own few assets and walks indexes from there, so the
-- function tells the planner exactly that: one generic plan per session (no call is planned
-- again), nested loops over index scans. A plan made while the table was still small would
-- otherwise stay a sequential scan for the life of the connection.
CREATE FUNCTION leeway_places(p_me TEXT, p_locks BIGINT[], p_assets TEXT[], p_control_ids TEXT[],
                              p_business_unit TEXT, p_business_unit_limited BOOLEAN, p_at TIMESTAMP,
                              p_created TIMESTAMP)
RETURNS TABLE (place_kind TEXT, place_name TEXT, place_key BIGINT) LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_hashjoin = off
SET enable_mergejoin = off AS $$
DECLARE
    v_lock BIGINT;
BEGIN
    FOREACH v_lock IN ARRAY p_locks LOOP
        PERFORM pg_advisory_xact_lock(v_lock);
    END LOOP;
    RETURN QUERY
        SELECT 'asset'::TEXT, a.asset, held.key_num
        FROM unnest(p_assets) a (asset)
        CROSS JOIN LATERAL (
            SELECT e.key_num FROM exception_assets x JOIN exceptions e ON e.id = x.exception_id
            WHERE x.asset = a.asset AND e.id <> p_me
              AND e.status IN ('approved', 'active', 'renewal_pending') AND e.expires_at > p_at
            OFFSET 0) held
        UNION ALL
        SELECT 'business_unit'::TEXT, e.business_unit, e.key_num
        FROM exceptions e
        WHERE p_business_unit_limited AND e.business_unit = p_business_unit AND e.id <> p_me
          AND e.status IN ('approved', 'active', 'renewal_pending') AND e.expires_at > p_at
        UNION ALL
        (SELECT DISTINCT 'earlier'::TEXT, ''::TEXT, sharing.key_num
        FROM unnest(p_assets) a (asset)
        CROSS JOIN unnest(p_control_ids) c (control_id)
        CROSS JOIN LATERAL (
            SELECT p.key_num FROM exception_pairs p JOIN exceptions e ON e.id = p.exception_id
            WHERE p.asset = a.asset AND p.control_id = c.control_id AND e.id <> p_me
              AND e.created_at <= p_created AND e.status NOT IN ('draft', 'withdrawn')
            ORDER BY p.key_num LIMIT 50) sharing
        ORDER BY sharing.key_num LIMIT 50);
END $$;

-- Canonical text of the places around one exception (as `facts.rs` renders them): what a
-- write compares with what its rules were judged on.
CREATE FUNCTION leeway_places_seen(p_me TEXT, p_assets TEXT[], p_control_ids TEXT[], p_business_unit TEXT,
                                   p_business_unit_limited BOOLEAN, p_at TIMESTAMP, p_created TIMESTAMP)
RETURNS TEXT LANGUAGE SQL VOLATILE AS $$
    SELECT COALESCE(string_agg(place_kind || '|' || place_name || '|' || place_key, E'\n'
                               ORDER BY place_kind COLLATE "C", place_name COLLATE "C", place_key), '')
    FROM leeway_places(p_me, '{}', p_assets, p_control_ids, p_business_unit, p_business_unit_limited, p_at, p_created)
$$;

-- One change, written in one statement (see `write.rs`): the exception's row, inserted or
-- updated only if it is still at the version the change was made from; its audit events;
-- the idempotency record. When the change read the places under the covering limits, their
-- locks are taken first and the places read again: if they moved, nothing is written and the
-- caller judges again ('stale'). Errors (a reference or an idempotency key already taken)
-- abort the whole statement.
CREATE FUNCTION leeway_write(p_row JSON, p_insert BOOLEAN, p_version BIGINT, p_events JSON, p_idempotency JSON,
                             p_locks BIGINT[], p_places TEXT, p_me TEXT, p_assets TEXT[], p_control_ids TEXT[],
                             p_business_unit TEXT, p_business_unit_limited BOOLEAN, p_at TIMESTAMP,
                             p_created TIMESTAMP)
RETURNS TEXT LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off AS $$
DECLARE
    v_lock BIGINT;
BEGIN
    IF p_places IS NOT NULL THEN
        FOREACH v_lock IN ARRAY p_locks LOOP
            PERFORM pg_advisory_xact_lock(v_lock);
        END LOOP;
        IF leeway_places_seen(p_me, p_assets, p_control_ids, p_business_unit, p_business_unit_limited, p_at,
                              p_created) IS DISTINCT FROM p_places THEN
            RETURN 'stale';
        END IF;
    END IF;
    IF p_row IS NOT NULL AND p_insert THEN
        INSERT INTO exceptions SELECT * FROM json_populate_record(NULL::exceptions, p_row);
    ELSIF p_row IS NOT NULL THEN
        UPDATE exceptions SET (
            title, category, policy_id, control_ids, assets, business_unit, justification,
            business_impact, requester, on_behalf_of, risk_owner, priority, starts_at, expires_at,
            remediation_plan, remediation_due, external_refs, tags, status, status_reason, round,
            version, chronic, emergency, at_risk, residual_level, search_text, created_at, updated_at,
            submitted_at, approved_at, closed_at, next_review_at, next_due_at, escalated_at,
            review_notified_at, reminders_sent, at_risk_since, pending_expires_at,
            renewal_justification, approved_level, controls, assessments, approvals, reviews,
            control_checks, audit_head
        ) = (SELECT
            r.title, r.category, r.policy_id, r.control_ids, r.assets, r.business_unit,
            r.justification, r.business_impact, r.requester, r.on_behalf_of, r.risk_owner,
            r.priority, r.starts_at, r.expires_at, r.remediation_plan, r.remediation_due,
            r.external_refs, r.tags, r.status, r.status_reason, r.round, r.version, r.chronic,
            r.emergency, r.at_risk, r.residual_level, r.search_text, r.created_at, r.updated_at,
            r.submitted_at, r.approved_at, r.closed_at, r.next_review_at, r.next_due_at,
            r.escalated_at, r.review_notified_at, r.reminders_sent, r.at_risk_since,
            r.pending_expires_at, r.renewal_justification, r.approved_level, r.controls,
            r.assessments, r.approvals, r.reviews, r.control_checks, r.audit_head
            FROM json_populate_record(NULL::exceptions, p_row) r)
        WHERE id = p_row->>'id' AND version = p_version;
        IF NOT FOUND THEN
            RETURN 'stale';
        END IF;
    END IF;
    INSERT INTO audit_events (
        exception_id, action, actor_subject, actor_roles, on_behalf_of, at, from_status, to_status,
        changes, request_id, prev_hash, hash, event_type, event_id
    )
    SELECT
        exception_id, action, actor_subject, actor_roles, on_behalf_of, at, from_status, to_status,
        changes, request_id, prev_hash, hash, event_type, event_id
    FROM json_populate_recordset(NULL::audit_events, p_events);
    IF p_idempotency IS NOT NULL THEN
        INSERT INTO idempotency_keys SELECT * FROM json_populate_record(NULL::idempotency_keys, p_idempotency);
    END IF;
    RETURN 'ok';
END $$;
