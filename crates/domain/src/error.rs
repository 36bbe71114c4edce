//! The errors the domain refuses with, each carrying what a caller needs to fix the request.

use chrono::{DateTime, Utc};

use crate::kinds::{Action, Level, Role, Status};
use crate::text::FieldError;

/// The longest lifetime the policy allows, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxDuration {
    /// The residual level's maximum.
    Level {
        /// The residual level that decides it.
        level: Level,
        /// The maximum, in days.
        days: u32,
    },
    /// An emergency exception awaiting ratification.
    Emergency {
        /// The maximum, in hours.
        hours: u32,
    },
}

/// Why the domain refused an operation.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DomainError {
    /// One or more fields are invalid; every one is listed.
    #[error("{} invalid field(s)", .0.len())]
    Invalid(Vec<FieldError>),
    /// The action is not allowed from the current state.
    #[error("cannot {action} an exception in state {current}")]
    InvalidTransition {
        /// What was attempted.
        action: Action,
        /// The state the exception is in.
        current: Status,
        /// What may be done from that state.
        allowed: Vec<Action>,
    },
    /// The caller's roles (or their relation to the exception) do not permit the action.
    #[error("the caller's roles do not permit {action}")]
    Forbidden {
        /// What was attempted.
        action: Action,
        /// Roles, any of which would permit it.
        needs: Vec<Role>,
    },
    /// A requester may only file exceptions in their own business unit.
    #[error("a requester may only create exceptions in their own business unit, {unit}")]
    OutsideBusinessUnit {
        /// The caller's business unit.
        unit: String,
    },
    /// The action would break separation of duties.
    #[error("separation of duties: {0}")]
    SeparationOfDuties(String),
    /// The requested expiry is later than the policy allows.
    #[error("expires_at is later than the policy allows")]
    DurationExceedsPolicy {
        /// The maximum that applies.
        max: MaxDuration,
        /// The latest allowed expiry.
        latest_expires_at: DateTime<Utc>,
    },
    /// An asset (or a business unit) would hold more covering exceptions than its limit.
    #[error("{scope} {name} already has {held} covering exception(s); the limit is {limit}")]
    LimitExceeded {
        /// `asset` or `business_unit`.
        scope: &'static str,
        /// The asset or business unit.
        name: String,
        /// The limit.
        limit: u32,
        /// How many exceptions hold its places.
        held: usize,
        /// Their keys, when the caller may see every exception (else empty).
        holders: Vec<String>,
    },
    /// A compensating control id that the exception does not have.
    #[error("no compensating control {0}")]
    NoSuchControl(String),
    /// Arithmetic on stored values left the representable range (a moment beyond the calendar,
    /// a version beyond 2^63): stored data is damaged, as input is bounded and cannot cause it.
    #[error("arithmetic overflowed computing {0}")]
    Overflow(&'static str),
    /// The facts a rule needs could not be read; the reader keeps the cause.
    #[error("the facts for {0} could not be read")]
    FactsUnavailable(&'static str),
}

impl DomainError {
    /// A refusal for a single invalid field.
    pub fn field(field: impl Into<String>, code: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldError::new(field, code, message)])
    }
}

impl From<Vec<FieldError>> for DomainError {
    fn from(errors: Vec<FieldError>) -> Self {
        Self::Invalid(errors)
    }
}

impl From<FieldError> for DomainError {
    fn from(error: FieldError) -> Self {
        Self::Invalid(vec![error])
    }
}
