//! The approval policy (spec section 3) as data, with the spec's defaults.

use chrono::{DateTime, Duration, Utc};

use crate::ids::Subject;
use crate::kinds::{Level, Priority, Role};
use crate::record::Record;
use crate::time;

/// What one residual level demands.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LevelPolicy {
    /// Roles that must each approve, by distinct people, in this order.
    pub approvals: Vec<Role>,
    /// Longest allowed lifetime, in days.
    pub max_duration_days: u32,
    /// Review interval, in days.
    pub review_every_days: u32,
}

/// The approval policy in force. Every number is configuration; [`Default`] is the spec's,
/// and a policy file may leave out any member to keep its default.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalPolicy {
    /// Residual level low.
    pub low: LevelPolicy,
    /// Residual level medium.
    pub medium: LevelPolicy,
    /// Residual level high.
    pub high: LevelPolicy,
    /// Residual level critical.
    pub critical: LevelPolicy,
    /// Approval SLA for `urgent`, hours from submit.
    pub sla_urgent_hours: u32,
    /// Approval SLA for `standard`, hours from submit.
    pub sla_standard_hours: u32,
    /// Automatic rejection for `urgent`, hours from submit.
    pub timeout_urgent_hours: u32,
    /// Automatic rejection for `standard`, hours from submit.
    pub timeout_standard_hours: u32,
    /// Most covering exceptions per asset.
    pub max_covering_per_asset: u32,
    /// Earlier exceptions on the same asset and control that make a request chronic.
    pub chronic_threshold: u32,
    /// Role added to the approvals of a chronic exception.
    pub chronic_approver: Role,
    /// Longest life of an unratified emergency exception, hours.
    pub emergency_max_hours: u32,
    /// A review overdue by more than this many days revokes the exception.
    pub review_grace_days: u32,
    /// Expiry reminders, in days before `expires_at`.
    pub reminder_days_before: Vec<u32>,
    /// Expiry reminder at this percentage of the lifetime.
    pub reminder_lifetime_percent: u32,
    /// Days a round opened by failed controls has to collect its approvals before the
    /// exception is revoked (`controls_failed`).
    pub controls_failed_grace_days: u32,
    /// Most covering exceptions per business unit; none by default.
    pub business_unit_limits: std::collections::BTreeMap<String, u32>,
    /// Seconds between a failed webhook delivery's attempts: one retry per entry, then the
    /// delivery is `failed`. The default spans more than 24 hours.
    pub webhook_retry_schedule_seconds: Vec<u32>,
}

impl Default for ApprovalPolicy {
    fn default() -> Self {
        use Role::*;
        let lp = |approvals: Vec<Role>, max_duration_days, review_every_days| LevelPolicy {
            approvals,
            max_duration_days,
            review_every_days,
        };
        Self {
            low: lp(vec![SecurityOfficer], 365, 180),
            medium: lp(vec![SecurityOfficer, AssetOwner], 180, 90),
            high: lp(vec![SecurityOfficer, Ciso], 90, 30),
            critical: lp(vec![SecurityOfficer, Ciso, Compliance], 30, 14),
            sla_urgent_hours: 24,
            sla_standard_hours: 5 * 24,
            timeout_urgent_hours: 3 * 24,
            timeout_standard_hours: 14 * 24,
            max_covering_per_asset: 5,
            chronic_threshold: 2,
            chronic_approver: Ciso,
            emergency_max_hours: 72,
            review_grace_days: 14,
            reminder_days_before: vec![30, 14],
            reminder_lifetime_percent: 75,
            controls_failed_grace_days: 14,
            business_unit_limits: std::collections::BTreeMap::new(),
            webhook_retry_schedule_seconds: vec![5, 300, 1800, 7200, 18_000, 36_000, 36_000],
        }
    }
}

/// One approval the exception needs, why, and who gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequiredApproval {
    /// The role that must sign.
    pub role: Role,
    /// Why: `residual level high`, `chronic`.
    pub reason: String,
    /// Who satisfied it in the current round, if anyone.
    pub satisfied_by: Option<Subject>,
}

impl ApprovalPolicy {
    /// The policy of one level.
    pub fn level(&self, level: Level) -> &LevelPolicy {
        match level {
            Level::Low => &self.low,
            Level::Medium => &self.medium,
            Level::High => &self.high,
            Level::Critical => &self.critical,
        }
    }

    /// The longest lifetime a level allows.
    pub fn max_duration(&self, level: Level) -> Duration {
        time::days(self.level(level).max_duration_days)
    }

    /// The review interval of a level.
    pub fn review_interval(&self, level: Level) -> Duration {
        time::days(self.level(level).review_every_days)
    }

    /// When a request submitted at `submitted_at` is rejected for want of a decision (`None`:
    /// beyond the calendar, never).
    pub fn timeout_deadline(&self, priority: Priority, submitted_at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let h = match priority {
            Priority::Urgent => self.timeout_urgent_hours,
            Priority::Standard => self.timeout_standard_hours,
        };
        time::add(submitted_at, time::hours(h))
    }

    /// When the approval SLA of a request submitted at `submitted_at` runs out.
    pub fn sla_deadline(&self, priority: Priority, submitted_at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let h = match priority {
            Priority::Urgent => self.sla_urgent_hours,
            Priority::Standard => self.sla_standard_hours,
        };
        time::add(submitted_at, time::hours(h))
    }

    /// The approvals an exception needs in its current round, with their reasons, and who
    /// satisfied each. Empty until the exception has been assessed.
    pub fn required_approvals(&self, e: &Record) -> Vec<RequiredApproval> {
        let Some(risk) = e.risk() else { return Vec::new() };
        let level = risk.residual_level();
        let mut out: Vec<RequiredApproval> = self
            .level(level)
            .approvals
            .iter()
            .map(|r| RequiredApproval { role: *r, reason: format!("residual level {level}"), satisfied_by: None })
            .collect();
        if e.chronic && !out.iter().any(|r| r.role == self.chronic_approver) {
            out.push(RequiredApproval {
                role: self.chronic_approver,
                reason: "chronic".to_owned(),
                satisfied_by: None,
            });
        }
        for req in &mut out {
            req.satisfied_by = e
                .current_approvals()
                .find(|a| a.role == req.role && a.risk.residual_level >= level)
                .map(|a| a.approver.clone());
        }
        out
    }

    /// The approval rules as a canonical JSON document (keys sorted, no white space): every
    /// member but the webhook retry schedule, which governs deliveries, not approvals.
    pub fn rules_document(&self) -> String {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(m) = v.as_object_mut() {
            m.remove("webhook_retry_schedule_seconds");
        }
        crate::audit::canonical(&v)
    }

    /// The fingerprint of the approval rules: SHA-256 (hex) of [`Self::rules_document`]. An
    /// approval records it, so an audit package can show the rules it was given under.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(self.rules_document().as_bytes()))
    }

    /// Checks the policy read from configuration: each level names at least one approver
    /// role; durations and intervals are positive and at most a hundred years, so that date
    /// arithmetic on any record's moments stays within the calendar.
    pub fn check(&self) -> Result<(), String> {
        const MAX_DAYS: u32 = 36_500;
        const MAX_HOURS: u32 = MAX_DAYS * 24;
        for (name, l) in
            [("low", &self.low), ("medium", &self.medium), ("high", &self.high), ("critical", &self.critical)]
        {
            if l.approvals.is_empty() {
                return Err(format!("policy level {name} names no approver"));
            }
            if let Some(r) = l.approvals.iter().find(|r| !r.is_approver()) {
                return Err(format!("policy level {name}: {r} cannot approve"));
            }
            for (what, v) in [("max_duration_days", l.max_duration_days), ("review_every_days", l.review_every_days)] {
                if !(1..=MAX_DAYS).contains(&v) {
                    return Err(format!("policy level {name}: {what} must be 1..{MAX_DAYS}"));
                }
            }
        }
        if self.webhook_retry_schedule_seconds.len() > 50
            || self.webhook_retry_schedule_seconds.iter().any(|s| !(1..=7 * 86_400).contains(s))
        {
            return Err("policy webhook_retry_schedule_seconds: at most 50 retries, each 1..604800 seconds".into());
        }
        let hours = [
            ("sla_urgent_hours", self.sla_urgent_hours),
            ("sla_standard_hours", self.sla_standard_hours),
            ("timeout_urgent_hours", self.timeout_urgent_hours),
            ("timeout_standard_hours", self.timeout_standard_hours),
            ("emergency_max_hours", self.emergency_max_hours),
        ];
        for (what, v) in hours {
            if !(1..=MAX_HOURS).contains(&v) {
                return Err(format!("policy {what} must be 1..{MAX_HOURS}"));
            }
        }
        let days = [
            ("review_grace_days", self.review_grace_days),
            ("controls_failed_grace_days", self.controls_failed_grace_days),
        ];
        for (what, v) in days.into_iter().chain(self.reminder_days_before.iter().map(|d| ("reminder_days_before", *d)))
        {
            if v > MAX_DAYS {
                return Err(format!("policy {what} must be at most {MAX_DAYS}"));
            }
        }
        if self.reminder_lifetime_percent > 100 {
            return Err("policy reminder_lifetime_percent must be at most 100".to_owned());
        }
        if !self.chronic_approver.is_approver() {
            return Err(format!("policy chronic_approver: {} cannot approve", self.chronic_approver));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_covers_the_approval_rules_only() {
        let base = ApprovalPolicy::default();
        let retries = ApprovalPolicy { webhook_retry_schedule_seconds: vec![1, 1, 2], ..base.clone() };
        assert_eq!(base.fingerprint(), retries.fingerprint(), "delivery settings are not approval rules");
        let limit = ApprovalPolicy { max_covering_per_asset: 6, ..base.clone() };
        assert_ne!(base.fingerprint(), limit.fingerprint());
        assert_eq!(base.fingerprint().len(), 64);
        assert!(!base.rules_document().contains("webhook"));
    }
}
