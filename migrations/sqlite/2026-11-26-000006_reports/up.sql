-- KPIs and the audit log filter by action over a time window: approvals, renewals,
-- expiries in a month are read from this index, not from a scan of the trail.
CREATE INDEX audit_events_action_at ON audit_events (action, at);
