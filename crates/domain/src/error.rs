//! The errors the domain refuses with, each carrying what a caller needs to fix the request.

use crate::lifecycle::{Action, Status};
use crate::role::Role;

/// One invalid field of a request, named by its JSON path (`assets[3]`, `risk.likelihood`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    /// The field's path in the request body, dotted, with `[i]` for array items.
    pub field: String,
    /// A stable machine token: `too_short`, `too_long`, `required`, `out_of_range`, ...
    pub code: &'static str,
    /// A sentence a person can act on.
    pub message: String,
}

impl FieldError {
    /// A field error.
    pub fn new(field: impl Into<String>, code: &'static str, message: impl Into<String>) -> Self {
        Self { field: field.into(), code, message: message.into() }
    }
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
    /// The caller's roles do not permit the action.
    #[error("the caller's roles do not permit {action}")]
    Forbidden {
        /// What was attempted.
        action: Action,
        /// Roles, any of which would permit it.
        needs: Vec<Role>,
    },
    /// The action would break separation of duties.
    #[error("separation of duties: {0}")]
    SeparationOfDuties(String),
    /// The requested expiry is longer than the residual level allows.
    #[error("expires_at exceeds the maximum duration of {max_days} days for residual level {level}")]
    DurationExceedsPolicy {
        /// The residual level that decides the maximum.
        level: crate::risk::Level,
        /// The maximum, in days.
        max_days: u32,
        /// The latest allowed expiry.
        latest_expires_at: chrono::DateTime<chrono::Utc>,
    },
    /// A submit would make an asset (or a business unit) exceed its covering-exception limit.
    #[error("{scope} {name} already has {} covering exception(s); the limit is {limit}", holders.len())]
    LimitExceeded {
        /// `asset` or `business_unit`.
        scope: &'static str,
        /// The asset or business unit.
        name: String,
        /// The limit.
        limit: u32,
        /// Keys of the covering exceptions that hold it.
        holders: Vec<String>,
    },
    /// A compensating control id that the exception does not have.
    #[error("no compensating control {0}")]
    NoSuchControl(String),
}

impl DomainError {
    /// A refusal for a single invalid field.
    pub fn field(field: impl Into<String>, code: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldError::new(field, code, message)])
    }
}

/// Collects field errors while parsing a request, so that every bad field is reported at once.
#[derive(Debug, Default)]
pub struct Errors(Vec<FieldError>);

impl Errors {
    /// Records a failed parse and returns its value when it succeeded.
    pub fn take<T>(&mut self, result: Result<T, FieldError>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.0.push(e);
                None
            }
        }
    }

    /// Records a field error.
    pub fn push(&mut self, e: FieldError) {
        self.0.push(e);
    }

    /// Appends the errors of a nested parse.
    pub fn extend(&mut self, errors: Vec<FieldError>) {
        self.0.extend(errors);
    }

    /// `Ok(())` when nothing was recorded.
    pub fn finish(self) -> Result<(), DomainError> {
        if self.0.is_empty() { Ok(()) } else { Err(DomainError::Invalid(self.0)) }
    }

    /// Whether anything was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
