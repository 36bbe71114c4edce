-- Integrations (issue 8): the change feed, webhook subscriptions and their deliveries, and
-- coverage periods for as-of questions.

-- The change feed: an integration event gets its feed position (`feed_seq`) from a sequencer
-- after it commits. On SQLite writers take the database's one write lock in turn, so events
-- commit in `seq` order and the sequencer numbers them by it; PostgreSQL needs more (see its
-- migration).
ALTER TABLE audit_events ADD COLUMN feed_seq BIGINT;
ALTER TABLE audit_events ADD COLUMN snapshot TEXT;
UPDATE audit_events SET feed_seq = seq WHERE event_type IS NOT NULL;
DROP INDEX audit_events_feed;
CREATE UNIQUE INDEX audit_events_feed ON audit_events (feed_seq) WHERE feed_seq IS NOT NULL;
CREATE INDEX audit_events_unnumbered ON audit_events (seq) WHERE event_type IS NOT NULL AND feed_seq IS NULL;
CREATE TABLE feed_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    numbered BIGINT NOT NULL
);
INSERT INTO feed_state (id, numbered) SELECT 1, COALESCE(MAX(feed_seq), 0) FROM audit_events;

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

-- One delivery per (subscription, event), made when the event is numbered.
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

-- Coverage periods (see the PostgreSQL migration): one trigger closes the open rows and opens
-- new ones, in that order, whenever what coverage depends on moves.
CREATE TABLE coverage_periods (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
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

CREATE TRIGGER exceptions_coverage_insert AFTER INSERT ON exceptions
    WHEN NEW.status IN ('approved', 'active', 'renewal_pending') BEGIN
    INSERT INTO coverage_periods (asset, control_id, exception_id, key_num, status, residual_level, starts_at,
                                  expires_at, held_from)
        SELECT DISTINCT a.value, c.value, NEW.id, NEW.key_num, NEW.status, NEW.residual_level, NEW.starts_at,
               NEW.expires_at, NEW.updated_at
        FROM json_each(NEW.assets) a, json_each(NEW.control_ids) c;
END;
CREATE TRIGGER exceptions_coverage_update
    AFTER UPDATE OF status, assets, control_ids, starts_at, expires_at, residual_level ON exceptions
    WHEN OLD.status IS NOT NEW.status OR OLD.assets IS NOT NEW.assets OR OLD.control_ids IS NOT NEW.control_ids
        OR OLD.starts_at IS NOT NEW.starts_at OR OLD.expires_at IS NOT NEW.expires_at
        OR OLD.residual_level IS NOT NEW.residual_level BEGIN
    UPDATE coverage_periods SET held_until = NEW.updated_at
        WHERE exception_id = NEW.id AND held_until IS NULL
          AND OLD.status IN ('approved', 'active', 'renewal_pending');
    INSERT INTO coverage_periods (asset, control_id, exception_id, key_num, status, residual_level, starts_at,
                                  expires_at, held_from)
        SELECT DISTINCT a.value, c.value, NEW.id, NEW.key_num, NEW.status, NEW.residual_level, NEW.starts_at,
               NEW.expires_at, NEW.updated_at
        FROM json_each(NEW.assets) a, json_each(NEW.control_ids) c
        WHERE NEW.status IN ('approved', 'active', 'renewal_pending');
END;

-- what holds a place today held it since its approval (the history before this upgrade was
-- not recorded)
INSERT INTO coverage_periods (asset, control_id, exception_id, key_num, status, residual_level, starts_at, expires_at,
                              held_from)
    SELECT DISTINCT a.value, c.value, e.id, e.key_num, e.status, e.residual_level, e.starts_at, e.expires_at,
           COALESCE(e.approved_at, e.updated_at)
    FROM exceptions e, json_each(e.assets) a, json_each(e.control_ids) c
    WHERE e.status IN ('approved', 'active', 'renewal_pending');
