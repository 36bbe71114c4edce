-- The foundation: exceptions with their searchable assets and control ids, compensating
-- controls, assessments, approvals with the risk they accepted, unique external references,
-- the hash-chained audit trail, the integration-event outbox and idempotency keys.

CREATE TABLE counters (
    name TEXT PRIMARY KEY NOT NULL,
    value BIGINT NOT NULL
);
INSERT INTO counters (name, value) VALUES ('exception_key', 0);

CREATE TABLE exceptions (
    id TEXT PRIMARY KEY NOT NULL,
    key_num BIGINT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    category TEXT NOT NULL,
    policy_id TEXT NOT NULL,
    control_ids TEXT NOT NULL,
    assets TEXT NOT NULL,
    business_unit TEXT NOT NULL,
    justification TEXT NOT NULL,
    business_impact TEXT,
    requester TEXT NOT NULL,
    on_behalf_of TEXT,
    risk_owner TEXT NOT NULL,
    priority TEXT NOT NULL,
    starts_at TIMESTAMP,
    expires_at TIMESTAMP,
    remediation_plan TEXT,
    remediation_due DATE,
    external_refs TEXT NOT NULL,
    tags TEXT NOT NULL,
    status TEXT NOT NULL,
    status_reason TEXT,
    round INTEGER NOT NULL,
    version BIGINT NOT NULL,
    chronic BOOLEAN NOT NULL,
    emergency BOOLEAN NOT NULL,
    at_risk BOOLEAN NOT NULL,
    residual_level TEXT,
    search_text TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    submitted_at TIMESTAMP,
    approved_at TIMESTAMP,
    closed_at TIMESTAMP,
    next_review_at TIMESTAMP
);
CREATE INDEX exceptions_status_id ON exceptions (status, id);
CREATE INDEX exceptions_updated_id ON exceptions (updated_at, id);
CREATE INDEX exceptions_created_id ON exceptions (created_at, id);
CREATE INDEX exceptions_expires_id ON exceptions (expires_at, id);
CREATE INDEX exceptions_bu_id ON exceptions (business_unit, id);
CREATE INDEX exceptions_requester_id ON exceptions (requester, id);
CREATE INDEX exceptions_owner_id ON exceptions (risk_owner, id);
CREATE INDEX exceptions_on_behalf_of_id ON exceptions (on_behalf_of, id);
CREATE INDEX exceptions_category_id ON exceptions (category, id);
CREATE INDEX exceptions_level_id ON exceptions (residual_level, id);

CREATE TABLE exception_assets (
    asset TEXT NOT NULL,
    exception_id TEXT NOT NULL REFERENCES exceptions (id),
    PRIMARY KEY (asset, exception_id)
);
CREATE INDEX exception_assets_exception ON exception_assets (exception_id);

CREATE TABLE exception_control_ids (
    control_id TEXT NOT NULL,
    exception_id TEXT NOT NULL REFERENCES exceptions (id),
    PRIMARY KEY (control_id, exception_id)
);
CREATE INDEX exception_control_ids_exception ON exception_control_ids (exception_id);

CREATE TABLE external_refs (
    system TEXT NOT NULL,
    ext_id TEXT NOT NULL,
    exception_id TEXT NOT NULL REFERENCES exceptions (id),
    PRIMARY KEY (system, ext_id)
);
CREATE INDEX external_refs_exception ON external_refs (exception_id);

CREATE TABLE controls (
    id TEXT PRIMARY KEY NOT NULL,
    exception_id TEXT NOT NULL REFERENCES exceptions (id),
    position INTEGER NOT NULL,
    description TEXT NOT NULL,
    kind TEXT NOT NULL,
    effectiveness TEXT NOT NULL,
    status TEXT NOT NULL,
    evidence TEXT,
    verified_by TEXT,
    verified_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX controls_exception ON controls (exception_id, position);

CREATE TABLE assessments (
    id TEXT PRIMARY KEY NOT NULL,
    exception_id TEXT NOT NULL REFERENCES exceptions (id),
    round INTEGER NOT NULL,
    method TEXT NOT NULL,
    likelihood INTEGER,
    impact INTEGER,
    vector TEXT,
    inherent_score INTEGER NOT NULL,
    residual_score INTEGER NOT NULL,
    rationale TEXT NOT NULL,
    threat_vectors TEXT NOT NULL,
    assessed_by TEXT NOT NULL,
    assessed_at TIMESTAMP NOT NULL
);
CREATE INDEX assessments_exception ON assessments (exception_id, assessed_at);

CREATE TABLE approvals (
    id TEXT PRIMARY KEY NOT NULL,
    exception_id TEXT NOT NULL REFERENCES exceptions (id),
    round INTEGER NOT NULL,
    role TEXT NOT NULL,
    approver TEXT NOT NULL,
    comment TEXT,
    approved_at TIMESTAMP NOT NULL,
    assessment_id TEXT NOT NULL,
    method TEXT NOT NULL,
    inherent_score INTEGER NOT NULL,
    inherent_level TEXT NOT NULL,
    residual_score INTEGER NOT NULL,
    residual_level TEXT NOT NULL,
    superseded BOOLEAN NOT NULL
);
CREATE INDEX approvals_exception ON approvals (exception_id, approved_at);

CREATE TABLE audit_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    exception_id TEXT NOT NULL REFERENCES exceptions (id),
    action TEXT NOT NULL,
    actor_subject TEXT NOT NULL,
    actor_roles TEXT NOT NULL,
    on_behalf_of TEXT,
    at TIMESTAMP NOT NULL,
    from_status TEXT,
    to_status TEXT NOT NULL,
    changes TEXT NOT NULL,
    request_id TEXT,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX audit_events_exception ON audit_events (exception_id, seq);

CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    exception_id TEXT NOT NULL REFERENCES exceptions (id),
    audit_seq BIGINT NOT NULL,
    payload TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL
);

CREATE TABLE idempotency_keys (
    subject TEXT NOT NULL,
    idem_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status INTEGER NOT NULL,
    body TEXT NOT NULL,
    location TEXT,
    etag TEXT,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (subject, idem_key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
