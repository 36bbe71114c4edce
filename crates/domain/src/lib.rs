//! Leeway's domain: the security-exception record, its lifecycle, the risk model and the
//! approval policy.
//!
//! Everything here is pure: no I/O, no clock, no randomness. Time (`now`) and fresh
//! identifiers are parameters, so every rule can be tested by moving values, not by waiting.
//!
//! The modules form floors; each uses only the ones below it:
//! 1. [`text`], [`ids`], [`kinds`], [`time`]: field errors, bounded text, identifiers, the
//!    closed lists of wire names, moments and their checked arithmetic;
//! 2. [`error`], [`lifecycle`] (the table), [`risk`] (scores and levels);
//! 3. [`record`]: the exception, whose status changes only through the table;
//! 4. [`policy`], [`audit`];
//! 5. [`access`]: the caller, visibility, and the guard every action passes;
//! 6. [`workflow`]: the operations, behind one entry point.

pub mod access;
pub mod audit;
pub mod error;
pub mod ids;
pub mod kinds;
pub mod lifecycle;
pub mod policy;
pub mod record;
pub mod risk;
pub mod text;
pub mod time;
pub mod workflow;

pub use access::Actor;
pub use error::DomainError;
pub use ids::{ControlId, ExceptionId, ExceptionKey, ExceptionRef, Subject};
pub use kinds::{Action, Level, Role, Status};
pub use policy::ApprovalPolicy;
pub use record::Exception;
pub use text::FieldError;
