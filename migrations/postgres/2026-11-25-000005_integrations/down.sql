DROP TRIGGER exceptions_coverage ON exceptions;
DROP FUNCTION exceptions_coverage();
DROP TABLE coverage_periods;
DROP TABLE webhook_deliveries;
DROP TABLE webhooks;
DROP FUNCTION leeway_number_feed(INTEGER);
DROP TABLE feed_state;
DROP TABLE policies;
DROP INDEX audit_events_actor;
DROP INDEX audit_events_unnumbered;
DROP INDEX audit_events_feed;
CREATE INDEX audit_events_feed ON audit_events (seq) WHERE event_type IS NOT NULL;
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
ALTER TABLE audit_events DROP COLUMN feed_seq, DROP COLUMN snapshot;
