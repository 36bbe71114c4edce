//! Wire types of the caller, the policy and health.

use leeway_domain::policy::ApprovalPolicy;
use serde::Serialize;
use utoipa::ToSchema;

use crate::wire::{Level, Role};

/// The caller as Leeway sees them.
#[derive(Debug, Serialize, ToSchema)]
pub struct MeView {
    /// The token's subject.
    pub subject: String,
    /// Roles resolved from the token (unknown names dropped).
    pub roles: Vec<Role>,
    /// Business unit from the token.
    pub business_unit: Option<String>,
    /// True when only `requester`: the caller sees their own exceptions, those they own as
    /// risk owner, and those of their business unit.
    pub restricted: bool,
}

/// What one residual level demands.
#[derive(Debug, Serialize, ToSchema)]
pub struct LevelPolicyView {
    /// The level.
    pub level: Level,
    /// Roles that must each approve, by distinct people.
    pub approvals: Vec<Role>,
    /// Longest lifetime, days.
    pub max_duration_days: u32,
    /// Review interval, days.
    pub review_every_days: u32,
}

/// The approval policy in force.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyView {
    /// Per residual level, low to critical.
    pub levels: Vec<LevelPolicyView>,
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
    /// Role added to a chronic exception's approvals.
    pub chronic_approver: Role,
    /// Longest life of an unratified emergency exception, hours.
    pub emergency_max_hours: u32,
    /// Days a review may be overdue before the exception is revoked.
    pub review_grace_days: u32,
    /// Expiry reminders, days before `expires_at`.
    pub reminder_days_before: Vec<u32>,
    /// Expiry reminder at this percentage of the lifetime.
    pub reminder_lifetime_percent: u32,
    /// Days a round opened by failed controls has before `controls_failed` revokes.
    pub controls_failed_grace_days: u32,
    /// Covering-exception limits per business unit.
    pub business_unit_limits: std::collections::BTreeMap<String, u32>,
    /// Seconds between a failed webhook delivery's retries; after the last, it is `failed`.
    pub webhook_retry_schedule_seconds: Vec<u32>,
    /// Only verified controls reduce risk: effectiveness -> reduction, and the floor of the
    /// remaining fraction.
    pub control_reduction: std::collections::BTreeMap<String, f64>,
}

impl From<&ApprovalPolicy> for PolicyView {
    fn from(p: &ApprovalPolicy) -> Self {
        use leeway_domain::kinds::Level as L;
        Self {
            levels: [L::Low, L::Medium, L::High, L::Critical]
                .into_iter()
                .map(|l| {
                    let lp = p.level(l);
                    LevelPolicyView {
                        level: l.into(),
                        approvals: lp.approvals.iter().map(|r| Role::from(*r)).collect(),
                        max_duration_days: lp.max_duration_days,
                        review_every_days: lp.review_every_days,
                    }
                })
                .collect(),
            sla_urgent_hours: p.sla_urgent_hours,
            sla_standard_hours: p.sla_standard_hours,
            timeout_urgent_hours: p.timeout_urgent_hours,
            timeout_standard_hours: p.timeout_standard_hours,
            max_covering_per_asset: p.max_covering_per_asset,
            chronic_threshold: p.chronic_threshold,
            chronic_approver: p.chronic_approver.into(),
            emergency_max_hours: p.emergency_max_hours,
            review_grace_days: p.review_grace_days,
            reminder_days_before: p.reminder_days_before.clone(),
            reminder_lifetime_percent: p.reminder_lifetime_percent,
            controls_failed_grace_days: p.controls_failed_grace_days,
            business_unit_limits: p.business_unit_limits.clone(),
            webhook_retry_schedule_seconds: p.webhook_retry_schedule_seconds.clone(),
            control_reduction: leeway_domain::kinds::Effectiveness::ALL
                .iter()
                .map(|e| (e.as_str().to_owned(), f64::from(e.reduction_percent()) / 100.0))
                .chain([("floor".to_owned(), f64::from(leeway_domain::risk::RESIDUAL_FLOOR_PERCENT) / 100.0)])
                .collect(),
        }
    }
}

/// Liveness or readiness.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthView {
    /// `ok`, or what is wrong.
    pub status: String,
    /// `sqlite` or `postgres`.
    pub database: String,
}
