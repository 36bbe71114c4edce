-- Governance: what the scheduler needs to act exactly once (next_due_at and the flags of what
-- was already done), renewal rounds, periodic reviews and control checks.
ALTER TABLE exceptions ADD COLUMN next_due_at TIMESTAMP;
ALTER TABLE exceptions ADD COLUMN escalated_at TIMESTAMP;
ALTER TABLE exceptions ADD COLUMN review_notified_at TIMESTAMP;
ALTER TABLE exceptions ADD COLUMN reminders_sent TEXT NOT NULL DEFAULT '[]';
ALTER TABLE exceptions ADD COLUMN at_risk_since TIMESTAMP;
ALTER TABLE exceptions ADD COLUMN pending_expires_at TIMESTAMP;
ALTER TABLE exceptions ADD COLUMN renewal_justification TEXT;
ALTER TABLE exceptions ADD COLUMN approved_level TEXT;
CREATE INDEX exceptions_next_due ON exceptions (next_due_at);
-- live exceptions from before the scheduler: due now, so the first run computes their moment
UPDATE exceptions SET next_due_at = CURRENT_TIMESTAMP
    WHERE status IN ('submitted', 'pending_approval', 'approved', 'active', 'renewal_pending');

ALTER TABLE controls ADD COLUMN check_every_days INTEGER;
ALTER TABLE controls ADD COLUMN last_checked_at TIMESTAMP;

CREATE TABLE reviews (
    id TEXT PRIMARY KEY NOT NULL,
    exception_id TEXT NOT NULL REFERENCES exceptions (id),
    round INTEGER NOT NULL,
    reviewer TEXT NOT NULL,
    reviewed_at TIMESTAMP NOT NULL,
    controls_effective BOOLEAN NOT NULL,
    justification_valid BOOLEAN NOT NULL,
    better_option_available BOOLEAN NOT NULL,
    outcome TEXT NOT NULL,
    comment TEXT
);
CREATE INDEX reviews_exception ON reviews (exception_id, reviewed_at);

CREATE TABLE control_checks (
    id TEXT PRIMARY KEY NOT NULL,
    exception_id TEXT NOT NULL REFERENCES exceptions (id),
    control_id TEXT NOT NULL REFERENCES controls (id),
    result TEXT NOT NULL,
    evidence TEXT NOT NULL,
    checker TEXT NOT NULL,
    checked_at TIMESTAMP NOT NULL
);
CREATE INDEX control_checks_exception ON control_checks (exception_id, checked_at);
