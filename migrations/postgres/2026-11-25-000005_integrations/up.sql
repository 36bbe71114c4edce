-- Integrations (issue 8): the change feed, webhook subscriptions and their deliveries, and
-- coverage periods for as-of questions.

-- The change feed. An integration event gets its feed position (`feed_seq`) after it
-- commits, not when it is written: `seq` is taken mid-transaction, so a transaction that took
-- seq 10 may commit after one that took seq 11 was read, and a reader paging by seq would skip
-- 10. The sequencer numbers the events it can see, oldest seq first, while it holds
-- `feed_state`'s one row (other nodes skip their turn): one numbering commits before the next
-- starts, so every reader sees a prefix of the positions, and an event that commits late gets
-- a position after every one already handed out. A reader paging by `feed_seq` never skips.
ALTER TABLE audit_events ADD COLUMN feed_seq BIGINT, ADD COLUMN snapshot TEXT;
UPDATE audit_events SET feed_seq = seq WHERE event_type IS NOT NULL;
DROP INDEX audit_events_feed;
CREATE UNIQUE INDEX audit_events_feed ON audit_events (feed_seq) WHERE feed_seq IS NOT NULL;
CREATE INDEX audit_events_unnumbered ON audit_events (seq) WHERE event_type IS NOT NULL AND feed_seq IS NULL;
CREATE TABLE feed_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    numbered BIGINT NOT NULL
);
INSERT INTO feed_state (id, numbered) SELECT 1, COALESCE(MAX(feed_seq), 0) FROM audit_events;

-- Numbers up to p_limit committed events, oldest first; answers them, or nothing when another
-- node is numbering. Every statement of the function sees what committed before it began,
-- so the events are read after the row is held: none numbered by the previous holder is
-- numbered again.
CREATE FUNCTION leeway_number_feed(p_limit INTEGER)
RETURNS TABLE (n_feed_seq BIGINT, n_seq BIGINT, n_event_type TEXT, n_exception_id TEXT)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_base BIGINT;
BEGIN
    -- an idle pass locks nothing and writes nothing
    IF NOT EXISTS (SELECT 1 FROM audit_events WHERE event_type IS NOT NULL AND feed_seq IS NULL) THEN
        RETURN;
    END IF;
    SELECT numbered INTO v_base FROM feed_state WHERE id = 1 FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    RETURN QUERY
        WITH ready AS (
            SELECT a.seq, row_number() OVER (ORDER BY a.seq) AS rn
            FROM audit_events a
            WHERE a.event_type IS NOT NULL AND a.feed_seq IS NULL
            ORDER BY a.seq LIMIT p_limit
        ), numbered AS (
            UPDATE audit_events a SET feed_seq = v_base + r.rn FROM ready r WHERE a.seq = r.seq
            RETURNING a.feed_seq, a.seq, a.event_type, a.exception_id
        ), moved AS (
            UPDATE feed_state SET numbered = v_base + (SELECT count(*) FROM ready)
            WHERE id = 1 AND EXISTS (SELECT 1 FROM ready)
        )
        SELECT * FROM numbered ORDER BY 1;
END $$;

-- the global audit log filtered by who acted, for auditors (`GET /v1/audit/events?actor=`)
CREATE INDEX audit_events_actor ON audit_events (actor_subject, seq);

-- every approval policy a server ran with, by fingerprint: an approval records the
-- fingerprint of the policy in force, and the audit package shows that policy
CREATE TABLE policies (
    fingerprint TEXT PRIMARY KEY,
    document TEXT NOT NULL,
    first_seen TIMESTAMP NOT NULL
);

-- Webhook subscriptions. `event_types` is a JSON array, NULL for every type.
CREATE TABLE webhooks (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    event_types TEXT,
    description TEXT,
    enabled BOOLEAN NOT NULL,
    disabled_reason TEXT,
    secret TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);

-- One delivery per (subscription, event), made when the event is numbered. `tries` counts
-- attempts since it was (re)queued; `attempts` is the JSON log of every attempt. A worker
-- leases what it sends, so two nodes never send the same attempt.
CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY,
    webhook_id TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_seq BIGINT NOT NULL,
    audit_seq BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    exception_id TEXT NOT NULL,
    status TEXT NOT NULL,
    tries INTEGER NOT NULL,
    attempts TEXT NOT NULL,
    next_attempt_at TIMESTAMP NOT NULL,
    lease_until TIMESTAMP,
    lease_owner TEXT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    UNIQUE (webhook_id, event_seq)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_order ON webhook_deliveries (webhook_id, exception_id, event_seq)
    WHERE status = 'pending';
-- what the scheduler forgets 30 days after a delivery ended
CREATE INDEX webhook_deliveries_ended ON webhook_deliveries (updated_at) WHERE status <> 'pending';

-- Coverage periods: while an exception holds a place (approved, active, renewal pending), one
-- row per (asset, control id) with the bounds in force. Any change to the status, assets,
-- control ids, dates or level closes the open rows (`held_until`) and opens new ones, so an
-- as-of question reads the past exactly as it was, whatever is edited later.
CREATE TABLE coverage_periods (
    id BIGSERIAL PRIMARY KEY,
    asset TEXT NOT NULL,
    control_id TEXT NOT NULL,
    exception_id TEXT NOT NULL,
    key_num BIGINT NOT NULL,
    status TEXT NOT NULL,
    residual_level TEXT,
    starts_at TIMESTAMP,
    expires_at TIMESTAMP,
    held_from TIMESTAMP NOT NULL,
    held_until TIMESTAMP
);
CREATE INDEX coverage_periods_asset ON coverage_periods (asset, control_id, held_from);
CREATE INDEX coverage_periods_open ON coverage_periods (exception_id) WHERE held_until IS NULL;

CREATE FUNCTION exceptions_coverage() RETURNS TRIGGER LANGUAGE plpgsql AS $$
DECLARE
    v_was BOOLEAN := TG_OP = 'UPDATE' AND OLD.status IN ('approved', 'active', 'renewal_pending');
    v_is BOOLEAN := NEW.status IN ('approved', 'active', 'renewal_pending');
    v_moved BOOLEAN := TG_OP = 'INSERT' OR OLD.status IS DISTINCT FROM NEW.status
        OR OLD.assets IS DISTINCT FROM NEW.assets OR OLD.control_ids IS DISTINCT FROM NEW.control_ids
        OR OLD.starts_at IS DISTINCT FROM NEW.starts_at OR OLD.expires_at IS DISTINCT FROM NEW.expires_at
        OR OLD.residual_level IS DISTINCT FROM NEW.residual_level;
BEGIN
    IF v_was AND v_moved THEN
        UPDATE coverage_periods SET held_until = NEW.updated_at WHERE exception_id = NEW.id AND held_until IS NULL;
    END IF;
    IF v_is AND v_moved THEN
        INSERT INTO coverage_periods (asset, control_id, exception_id, key_num, status, residual_level, starts_at,
                                      expires_at, held_from)
            SELECT DISTINCT a, c, NEW.id, NEW.key_num, NEW.status, NEW.residual_level, NEW.starts_at, NEW.expires_at,
                   NEW.updated_at
            FROM json_array_elements_text(NEW.assets::JSON) a, json_array_elements_text(NEW.control_ids::JSON) c;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER exceptions_coverage AFTER INSERT OR UPDATE OF status, assets, control_ids, starts_at, expires_at,
    residual_level ON exceptions FOR EACH ROW EXECUTE FUNCTION exceptions_coverage();

-- what holds a place today held it since its approval (the history before this upgrade was
-- not recorded)
INSERT INTO coverage_periods (asset, control_id, exception_id, key_num, status, residual_level, starts_at, expires_at,
                              held_from)
    SELECT DISTINCT a, c, e.id, e.key_num, e.status, e.residual_level, e.starts_at, e.expires_at,
           COALESCE(e.approved_at, e.updated_at)
    FROM exceptions e, json_array_elements_text(e.assets::JSON) a, json_array_elements_text(e.control_ids::JSON) c
    WHERE e.status IN ('approved', 'active', 'renewal_pending');

-- the write keeps each integration event's snapshot of the exception (what webhooks and the feed show)
CREATE OR REPLACE FUNCTION leeway_write(p_row JSON, p_insert BOOLEAN, p_version BIGINT, p_events JSON, p_idempotency JSON,
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
        changes, request_id, prev_hash, hash, event_type, event_id, snapshot
    )
    SELECT
        exception_id, action, actor_subject, actor_roles, on_behalf_of, at, from_status, to_status,
        changes, request_id, prev_hash, hash, event_type, event_id, snapshot
    FROM json_populate_recordset(NULL::audit_events, p_events);
    IF p_idempotency IS NOT NULL THEN
        INSERT INTO idempotency_keys SELECT * FROM json_populate_record(NULL::idempotency_keys, p_idempotency);
    END IF;
    RETURN 'ok';
END $$;
