//! Roles and visibility (spec section 6).

use crate::record::{Exception, Subject, enum_str};

enum_str!(
    /// A role resolved from the caller's token.
    Role {
        /// Asks for exceptions.
        Requester = "requester",
        /// Assesses risk, verifies controls, processes requests.
        Analyst = "analyst",
        /// Approves every level.
        SecurityOfficer = "security_officer",
        /// Approves medium risk on their assets.
        AssetOwner = "asset_owner",
        /// Approves high and critical risk.
        Ciso = "ciso",
        /// Approves critical risk.
        Compliance = "compliance",
        /// Reads everything, including the audit log.
        Auditor = "auditor",
        /// Policy, webhooks, imports.
        Admin = "admin",
        /// A service account acting for named people.
        Integration = "integration",
    }
);

impl Role {
    /// Whether the role can sign a required approval.
    pub fn is_approver(self) -> bool {
        match self {
            Role::SecurityOfficer | Role::AssetOwner | Role::Ciso | Role::Compliance => true,
            Role::Requester | Role::Analyst | Role::Auditor | Role::Admin | Role::Integration => false,
        }
    }
}

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The token's subject.
    pub subject: Subject,
    /// Roles resolved from the token; unknown role names are dropped.
    pub roles: Vec<Role>,
    /// The caller's business unit, if the token names one.
    pub business_unit: Option<String>,
}

impl Actor {
    /// Whether the caller holds `role`.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Whether the caller holds any of `roles`.
    pub fn has_any(&self, roles: &[Role]) -> bool {
        roles.iter().any(|r| self.has(*r))
    }

    /// A caller whose only role is `requester` (or who has none) sees a restricted set.
    pub fn is_restricted(&self) -> bool {
        self.roles.iter().all(|r| *r == Role::Requester)
    }

    /// Whether the caller may see this exception at all.
    pub fn can_see(&self, e: &Exception) -> bool {
        if self.roles.is_empty() {
            return false;
        }
        !self.is_restricted()
            || e.is_requester(&self.subject)
            || e.fields.risk_owner == self.subject
            || self.business_unit.as_deref() == Some(e.fields.business_unit.as_str())
    }
}
