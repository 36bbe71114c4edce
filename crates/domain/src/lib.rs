//! Leeway's domain: the security-exception record, its lifecycle, the risk model and the
//! approval policy.
//!
//! Everything here is pure: no I/O, no clock, no randomness. Time (`now`) and fresh
//! identifiers are parameters, so every rule can be tested by moving values, not by waiting.

pub mod audit;
pub mod error;
pub mod governance;
pub mod lifecycle;
pub mod policy;
pub mod record;
pub mod risk;
pub mod role;
pub mod workflow;

pub use error::{DomainError, FieldError};
pub use lifecycle::{Action, Status};
pub use policy::ApprovalPolicy;
pub use record::{Exception, ExceptionId, ExceptionKey, Subject};
pub use risk::{Level, Score};
pub use role::{Actor, Role};
