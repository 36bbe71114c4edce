-- Back to one table per child. The JSON arrays are not split back into rows: restore a backup
-- taken before the upgrade to keep them.
DROP FUNCTION leeway_write(JSON, BOOLEAN, BIGINT, JSON, JSON, BIGINT[], TEXT, TEXT, TEXT[], TEXT[], TEXT, BOOLEAN, TIMESTAMP, TIMESTAMP);
DROP FUNCTION leeway_places_seen(TEXT, TEXT[], TEXT[], TEXT, BOOLEAN, TIMESTAMP, TIMESTAMP);
DROP FUNCTION leeway_places(TEXT, BIGINT[], TEXT[], TEXT[], TEXT, BOOLEAN, TIMESTAMP, TIMESTAMP);
CREATE INDEX exceptions_level_id ON exceptions (residual_level, id);
CREATE INDEX exceptions_category_id ON exceptions (category, id);
DROP INDEX exceptions_on_behalf_of_created;
CREATE INDEX exceptions_on_behalf_of_id ON exceptions (on_behalf_of, id);
DROP INDEX exceptions_owner_created;
CREATE INDEX exceptions_owner_id ON exceptions (risk_owner, id);
DROP INDEX exceptions_requester_created;
CREATE INDEX exceptions_requester_id ON exceptions (requester, id);
DROP INDEX exceptions_bu_created;
CREATE INDEX exceptions_bu_id ON exceptions (business_unit, id);
DROP INDEX exceptions_live_created;
DROP INDEX exceptions_status_expires;
DROP INDEX exceptions_status_created;
CREATE INDEX exceptions_status_id ON exceptions (status, id);
ALTER TABLE exceptions DROP COLUMN audit_head;
DROP INDEX exceptions_search;
CREATE TABLE counters (name TEXT PRIMARY KEY NOT NULL, value BIGINT NOT NULL);
INSERT INTO counters (name, value) SELECT 'exception_key', COALESCE(MAX(key_num), 0) FROM exceptions;
DROP SEQUENCE exception_keys;
CREATE TABLE outbox (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    exception_id TEXT NOT NULL REFERENCES exceptions (id),
    audit_seq BIGINT NOT NULL,
    payload TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);
DROP INDEX audit_events_feed;
DROP INDEX audit_events_event_id;
ALTER TABLE audit_events DROP COLUMN event_type, DROP COLUMN event_id;
DROP TRIGGER exceptions_sync_index ON exceptions;
DROP FUNCTION exceptions_sync_index();
DROP TABLE exception_pairs;
CREATE TABLE controls (id TEXT PRIMARY KEY NOT NULL, exception_id TEXT NOT NULL REFERENCES exceptions (id),
    position INTEGER NOT NULL, description TEXT NOT NULL, kind TEXT NOT NULL, effectiveness TEXT NOT NULL,
    status TEXT NOT NULL, evidence TEXT, verified_by TEXT, verified_at TIMESTAMP, created_at TIMESTAMP NOT NULL,
    check_every_days INTEGER, last_checked_at TIMESTAMP);
CREATE TABLE assessments (id TEXT PRIMARY KEY NOT NULL, exception_id TEXT NOT NULL REFERENCES exceptions (id),
    round INTEGER NOT NULL, method TEXT NOT NULL, likelihood INTEGER, impact INTEGER, vector TEXT,
    inherent_score INTEGER NOT NULL, residual_score INTEGER NOT NULL, rationale TEXT NOT NULL,
    threat_vectors TEXT NOT NULL, assessed_by TEXT NOT NULL, assessed_at TIMESTAMP NOT NULL);
CREATE TABLE approvals (id TEXT PRIMARY KEY NOT NULL, exception_id TEXT NOT NULL REFERENCES exceptions (id),
    round INTEGER NOT NULL, role TEXT NOT NULL, approver TEXT NOT NULL, comment TEXT, approved_at TIMESTAMP NOT NULL,
    assessment_id TEXT NOT NULL, method TEXT NOT NULL, inherent_score INTEGER NOT NULL, inherent_level TEXT NOT NULL,
    residual_score INTEGER NOT NULL, residual_level TEXT NOT NULL, superseded BOOLEAN NOT NULL);
CREATE TABLE reviews (id TEXT PRIMARY KEY NOT NULL, exception_id TEXT NOT NULL REFERENCES exceptions (id),
    round INTEGER NOT NULL, reviewer TEXT NOT NULL, reviewed_at TIMESTAMP NOT NULL, controls_effective BOOLEAN NOT NULL,
    justification_valid BOOLEAN NOT NULL, better_option_available BOOLEAN NOT NULL, outcome TEXT NOT NULL, comment TEXT);
CREATE TABLE control_checks (id TEXT PRIMARY KEY NOT NULL, exception_id TEXT NOT NULL REFERENCES exceptions (id),
    control_id TEXT NOT NULL REFERENCES controls (id), result TEXT NOT NULL, evidence TEXT NOT NULL,
    checker TEXT NOT NULL, checked_at TIMESTAMP NOT NULL);
ALTER TABLE exceptions DROP COLUMN controls, DROP COLUMN assessments, DROP COLUMN approvals,
    DROP COLUMN reviews, DROP COLUMN control_checks;
