//! Identifiers: of exceptions, of their controls, and of the people who act on them.

use std::fmt;
use uuid::Uuid;

use crate::text::{FieldError, bounded};

/// An exception's immutable identifier (UUID v7, so ids sort by creation time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExceptionId(pub Uuid);

impl fmt::Display for ExceptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The human-friendly key, `EXC-000042`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExceptionKey(u64);

impl fmt::Display for ExceptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EXC-{:06}", self.0)
    }
}

impl ExceptionKey {
    /// The largest key: keys are stored as signed 64-bit integers.
    pub const MAX: u64 = i64::MAX as u64;

    /// The key numbered `n` (1 or more, at most [`Self::MAX`]).
    pub fn new(n: u64) -> Option<Self> {
        (1..=Self::MAX).contains(&n).then_some(Self(n))
    }

    /// The key's number.
    pub fn number(self) -> u64 {
        self.0
    }

    /// Parses `EXC-` followed by six or more digits.
    pub fn parse(s: &str) -> Option<Self> {
        let digits = s.strip_prefix("EXC-")?;
        if digits.len() < 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok().and_then(Self::new)
    }
}

/// Either form a caller may use to name an exception.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExceptionRef {
    /// By UUID.
    Id(ExceptionId),
    /// By `EXC-` key.
    Key(ExceptionKey),
}

impl ExceptionRef {
    /// Parses a path segment: a UUID or an `EXC-` key.
    pub fn parse(s: &str) -> Option<Self> {
        if let Some(k) = ExceptionKey::parse(s) {
            return Some(Self::Key(k));
        }
        Uuid::parse_str(s).ok().map(|u| Self::Id(ExceptionId(u)))
    }
}

/// A compensating control's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ControlId(pub Uuid);

impl fmt::Display for ControlId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A person or service account, as named by the `sub` claim of a token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct Subject(String);

impl Subject {
    /// Parses a subject: 1..200 characters after trimming.
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldError> {
        bounded(field, raw, 1, 200).map(Self)
    }

    /// The subject that stands for time: the scheduler's changes are recorded under it.
    pub fn system() -> Self {
        Self("system".to_owned())
    }

    /// The subject that signs what a legacy import replays without saying who did it (see
    /// `workflow::import_legacy`).
    pub fn legacy_import() -> Self {
        Self("legacy-import".to_owned())
    }

    /// The subject as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_only_in_their_form_and_range() {
        assert_eq!(ExceptionKey::parse("EXC-000042").map(ExceptionKey::number), Some(42));
        assert_eq!(ExceptionKey::parse("EXC-000042").unwrap().to_string(), "EXC-000042");
        for bad in ["EXC-42", "exc-000042", "EXC-000000", "EXC-99999999999999999999", "EXC-00004a"] {
            assert_eq!(ExceptionKey::parse(bad), None, "{bad}");
        }
        assert!(ExceptionKey::new(ExceptionKey::MAX).is_some());
        assert!(ExceptionKey::new(ExceptionKey::MAX + 1).is_none());
    }
}
