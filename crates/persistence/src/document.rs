//! The stored form of an exception's children: JSON arrays on its row, so that the whole
//! aggregate is read by one index lookup and written by one statement. Each shape names its
//! members (a migration builds the same shapes from the tables they replace) and converts to
//! and from the domain with every value checked.

use chrono::{DateTime, Utc};
use leeway_domain::ids::{ControlId, Subject};
use leeway_domain::kinds::{
    CheckResult, ControlKind, ControlStatus, Effectiveness, Level, MethodKind, ReviewOutcome, Role,
};
use leeway_domain::record::{Approval, CheckInterval, Control, ControlCheck, Review};
use leeway_domain::risk::{Assessment, Method, RiskSnapshot, Score};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::StoreError;

fn subject(field: &str, v: &str) -> Result<Subject, StoreError> {
    Subject::parse(field, v).map_err(|e| StoreError::corrupt(format!("{field}: {}", e.message)))
}

fn score(v: u32) -> Score {
    Score(v)
}

/// A compensating control.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredControl {
    id: Uuid,
    description: String,
    kind: ControlKind,
    effectiveness: Effectiveness,
    status: ControlStatus,
    evidence: Option<String>,
    verified_by: Option<String>,
    verified_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    check_every: Option<u16>,
    last_checked_at: Option<DateTime<Utc>>,
}

impl StoredControl {
    pub(crate) fn from_domain(c: &Control) -> Self {
        Self {
            id: c.id.0,
            description: c.description.clone(),
            kind: c.kind,
            effectiveness: c.effectiveness,
            status: c.status,
            evidence: c.evidence.clone(),
            verified_by: c.verified_by.as_ref().map(ToString::to_string),
            verified_at: c.verified_at,
            created_at: c.created_at,
            check_every: c.check_every.map(CheckInterval::days),
            last_checked_at: c.last_checked_at,
        }
    }

    pub(crate) fn into_domain(self) -> Result<Control, StoreError> {
        Ok(Control {
            id: ControlId(self.id),
            description: self.description,
            kind: self.kind,
            effectiveness: self.effectiveness,
            status: self.status,
            evidence: self.evidence,
            verified_by: self.verified_by.map(|s| subject("verified_by", &s)).transpose()?,
            verified_at: self.verified_at,
            created_at: self.created_at,
            check_every: self
                .check_every
                .map(|d| CheckInterval::parse("check_every", i64::from(d)).map_err(|e| StoreError::corrupt(e.message)))
                .transpose()?,
            last_checked_at: self.last_checked_at,
        })
    }
}

/// An assessment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredAssessment {
    id: Uuid,
    round: u32,
    method: MethodKind,
    likelihood: Option<i64>,
    impact: Option<i64>,
    vector: Option<String>,
    inherent_score: u32,
    residual_score: u32,
    rationale: String,
    threat_vectors: Vec<String>,
    assessed_by: String,
    assessed_at: DateTime<Utc>,
}

impl StoredAssessment {
    pub(crate) fn from_domain(a: &Assessment) -> Self {
        let (likelihood, impact, vector) = match &a.method {
            Method::Matrix { likelihood, impact } => (Some(i64::from(*likelihood)), Some(i64::from(*impact)), None),
            Method::Cvss { vector, .. } => (None, None, Some(vector.clone())),
        };
        Self {
            id: a.id,
            round: a.round,
            method: a.method.kind(),
            likelihood,
            impact,
            vector,
            inherent_score: a.inherent_score.0,
            residual_score: a.residual_score.0,
            rationale: a.rationale.clone(),
            threat_vectors: a.threat_vectors.clone(),
            assessed_by: a.assessed_by.to_string(),
            assessed_at: a.assessed_at,
        }
    }

    pub(crate) fn into_domain(self) -> Result<Assessment, StoreError> {
        let method = match (self.method, self.likelihood, self.impact, self.vector) {
            (MethodKind::Matrix, Some(l), Some(i), _) => Method::matrix(l, i)
                .map_err(|_| StoreError::corrupt(format!("assessment {} likelihood {l} impact {i}", self.id)))?,
            // the score computed when the vector was assessed stands: a later library version
            // never silently rescores what was accepted
            (MethodKind::Cvss, _, _, Some(vector)) => Method::Cvss { vector, score: score(self.inherent_score) },
            _ => return Err(StoreError::corrupt(format!("assessment {} has no method values", self.id))),
        };
        Ok(Assessment {
            id: self.id,
            round: self.round,
            method,
            inherent_score: score(self.inherent_score),
            residual_score: score(self.residual_score),
            rationale: self.rationale,
            threat_vectors: self.threat_vectors,
            assessed_by: subject("assessed_by", &self.assessed_by)?,
            assessed_at: self.assessed_at,
        })
    }
}

/// An approval, with the risk it accepted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredApproval {
    id: Uuid,
    round: u32,
    role: Role,
    approver: String,
    comment: Option<String>,
    at: DateTime<Utc>,
    assessment_id: Uuid,
    method: MethodKind,
    inherent_score: u32,
    inherent_level: Level,
    residual_score: u32,
    residual_level: Level,
    superseded: bool,
    /// The policy's fingerprint; absent in approvals stored before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    policy: Option<String>,
}

impl StoredApproval {
    pub(crate) fn from_domain(a: &Approval) -> Self {
        Self {
            id: a.id,
            round: a.round,
            role: a.role,
            approver: a.approver.to_string(),
            comment: a.comment.clone(),
            at: a.at,
            assessment_id: a.risk.assessment_id,
            method: a.risk.method,
            inherent_score: a.risk.inherent_score.0,
            inherent_level: a.risk.inherent_level,
            residual_score: a.risk.residual_score.0,
            residual_level: a.risk.residual_level,
            superseded: a.superseded,
            policy: a.policy.clone(),
        }
    }

    pub(crate) fn into_domain(self) -> Result<Approval, StoreError> {
        Ok(Approval {
            id: self.id,
            round: self.round,
            role: self.role,
            approver: subject("approver", &self.approver)?,
            comment: self.comment,
            at: self.at,
            risk: RiskSnapshot {
                assessment_id: self.assessment_id,
                method: self.method,
                inherent_score: score(self.inherent_score),
                inherent_level: self.inherent_level,
                residual_score: score(self.residual_score),
                residual_level: self.residual_level,
            },
            superseded: self.superseded,
            policy: self.policy,
        })
    }
}

/// A periodic review.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredReview {
    id: Uuid,
    round: u32,
    reviewer: String,
    at: DateTime<Utc>,
    controls_effective: bool,
    justification_valid: bool,
    better_option_available: bool,
    outcome: ReviewOutcome,
    comment: Option<String>,
}

impl StoredReview {
    pub(crate) fn from_domain(r: &Review) -> Self {
        Self {
            id: r.id,
            round: r.round,
            reviewer: r.reviewer.to_string(),
            at: r.at,
            controls_effective: r.controls_effective,
            justification_valid: r.justification_valid,
            better_option_available: r.better_option_available,
            outcome: r.outcome,
            comment: r.comment.clone(),
        }
    }

    pub(crate) fn into_domain(self) -> Result<Review, StoreError> {
        Ok(Review {
            id: self.id,
            round: self.round,
            reviewer: subject("reviewer", &self.reviewer)?,
            at: self.at,
            controls_effective: self.controls_effective,
            justification_valid: self.justification_valid,
            better_option_available: self.better_option_available,
            outcome: self.outcome,
            comment: self.comment,
        })
    }
}

/// A check of a control.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredCheck {
    id: Uuid,
    control_id: Uuid,
    result: CheckResult,
    evidence: String,
    checker: String,
    at: DateTime<Utc>,
}

impl StoredCheck {
    pub(crate) fn from_domain(c: &ControlCheck) -> Self {
        Self {
            id: c.id,
            control_id: c.control_id.0,
            result: c.result,
            evidence: c.evidence.clone(),
            checker: c.checker.to_string(),
            at: c.at,
        }
    }

    pub(crate) fn into_domain(self) -> Result<ControlCheck, StoreError> {
        Ok(ControlCheck {
            id: self.id,
            control_id: ControlId(self.control_id),
            result: self.result,
            evidence: self.evidence,
            checker: subject("checker", &self.checker)?,
            at: self.at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape the migrations build from the old tables, on both backends, parses.
    #[test]
    fn migrated_shapes_parse() {
        let control = r#"{"id":"01a2063b-d320-7196-8a58-951c1a3913b3","description":"Allow-list","kind":"preventive",
            "effectiveness":"high","status":"verified","evidence":"seen","verified_by":"bob",
            "verified_at":"2026-11-23T03:02:31.12545Z","created_at":"2026-11-23T03:02:31Z","check_every":30,
            "last_checked_at":null}"#;
        let c: StoredControl = serde_json::from_str(control).unwrap();
        assert_eq!(c.into_domain().unwrap().check_every.map(CheckInterval::days), Some(30));
        let approval = r#"{"id":"01a2063b-d320-7196-8a58-951c1a3913b3","round":1,"role":"ciso","approver":"dave",
            "comment":null,"at":"2026-11-23T03:02:31.125450Z","assessment_id":"01a2063b-d320-7196-8a58-951c1a3913b4",
            "method":"matrix","inherent_score":160,"inherent_level":"high","residual_score":96,
            "residual_level":"medium","superseded":false}"#;
        let a: StoredApproval = serde_json::from_str(approval).unwrap();
        assert_eq!(a.into_domain().unwrap().risk.residual_level, Level::Medium);
        let bad = control.replace("\"check_every\":30", "\"check_every\":0");
        let c: StoredControl = serde_json::from_str(&bad).unwrap();
        assert!(c.into_domain().is_err(), "an interval out of range is an error, not a default");
    }
}
