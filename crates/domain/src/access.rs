//! Who may do what (spec sections 3 and 6): the caller, visibility, and the guard every
//! action passes before it changes anything: role, state, ownership, separation of duties.

use chrono::{DateTime, Utc};

use crate::error::DomainError;
use crate::ids::Subject;
use crate::kinds::{Action, Role, Status};
use crate::lifecycle;
use crate::policy::ApprovalPolicy;
use crate::record::{Exception, Record};

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
    /// Time, acting through the scheduler.
    pub fn system() -> Self {
        Self { subject: Subject::system(), roles: Vec::new(), business_unit: None }
    }

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
    pub fn can_see(&self, e: &Record) -> bool {
        if self.roles.is_empty() {
            return false;
        }
        !self.is_restricted()
            || e.is_requester(&self.subject)
            || e.fields.risk_owner == self.subject
            || self.business_unit.as_deref() == Some(e.fields.business_unit.as_str())
    }
}

/// Roles that may take `action` at all (before ownership and separation of duties).
pub fn roles_for(action: Action) -> &'static [Role] {
    use Role::*;
    match action {
        Action::Create => &[Requester, Integration],
        Action::Update | Action::AddControl => &[Requester, Integration, Analyst],
        Action::Submit | Action::Withdraw => &[Requester, Integration],
        Action::Return | Action::Reject => &[Analyst, SecurityOfficer, AssetOwner, Ciso, Compliance],
        Action::Assess => &[Analyst],
        Action::ChangeControl => &[Analyst, Requester, Integration],
        Action::Approve => &[SecurityOfficer, AssetOwner, Ciso, Compliance],
        Action::RequestRenewal => &[Requester, Integration],
        Action::Review => &[Analyst, Requester],
        Action::Revoke => &[SecurityOfficer, Ciso, Admin],
        Action::Close => &[Requester, Analyst, Integration],
        Action::Emergency => &[SecurityOfficer, Ciso],
        Action::Activate | Action::Expire | Action::AutoReject | Action::OpenRound => &[],
    }
}

/// A caller whose only filing role is `requester` and whose token names a business unit
/// files and keeps exceptions in that unit; analysts and integrations file for anyone.
pub(crate) fn within_business_unit(actor: &Actor, unit: &str) -> Result<(), DomainError> {
    match &actor.business_unit {
        Some(own)
            if actor.has(Role::Requester) && !actor.has_any(&[Role::Analyst, Role::Integration]) && own != unit =>
        {
            Err(DomainError::OutsideBusinessUnit { unit: own.clone() })
        }
        _ => Ok(()),
    }
}

/// The requester side: the requester (an integration only on what it created itself), or the
/// person an integration asked for.
pub(crate) fn is_requester_side(e: &Record, a: &Actor) -> bool {
    (a.has(Role::Integration) && e.requester == a.subject) || (a.has(Role::Requester) && e.is_requester(&a.subject))
}

/// The table, narrowed by the conditions it states: in `active`, assessing and approving are
/// only for an emergency exception awaiting ratification, which cannot be renewed.
fn state_allows(e: &Exception, status: Status, action: Action) -> bool {
    lifecycle::permits(status, action)
        && match (status, action) {
            (Status::Active, Action::Assess | Action::Approve) => awaiting_ratification(e),
            (Status::Active, Action::RequestRenewal) => !awaiting_ratification(e),
            _ => true,
        }
}

/// An emergency exception whose approvals have not come in yet.
pub(crate) fn awaiting_ratification(e: &Record) -> bool {
    e.emergency && e.approved_at.is_none()
}

/// Required roles of the current round that no counting approval satisfies yet.
pub fn missing_roles(e: &Record, policy: &ApprovalPolicy) -> Vec<Role> {
    policy.required_approvals(e).into_iter().filter(|r| r.satisfied_by.is_none()).map(|r| r.role).collect()
}

/// Checks everything but the body of a request, in the order a caller can act on: roles that
/// can never take the action (403), then the state (409), then ownership (403), then
/// separation of duties.
pub fn guard(
    e: &Exception,
    actor: &Actor,
    policy: &ApprovalPolicy,
    now: DateTime<Utc>,
    action: Action,
) -> Result<(), DomainError> {
    let forbidden = || DomainError::Forbidden { action, needs: roles_for(action).to_vec() };
    // the risk owner reviews, closes and asks for renewal whatever roles their token holds
    let owner = e.fields.risk_owner == actor.subject;
    let as_owner = owner && matches!(action, Action::Review | Action::Close | Action::RequestRenewal);
    if !actor.has_any(roles_for(action)) && !as_owner {
        return Err(forbidden());
    }
    let status = e.effective_status(now);
    if !action.is_human() || !state_allows(e, status, action) {
        return Err(DomainError::InvalidTransition {
            action,
            current: status,
            allowed: Action::ALL.iter().copied().filter(|a| a.is_human() && state_allows(e, status, *a)).collect(),
        });
    }
    let analyst = actor.has(Role::Analyst);
    let requester_side = is_requester_side(e, actor);
    let ok = match action {
        Action::Update | Action::AddControl => requester_side || (analyst && status != Status::Draft),
        Action::Submit | Action::Withdraw => requester_side,
        Action::RequestRenewal => requester_side || owner,
        Action::Close => requester_side || owner || analyst,
        Action::Review => owner || analyst,
        Action::ChangeControl => requester_side || analyst,
        Action::Return | Action::Reject | Action::Revoke | Action::Approve | Action::Assess => true,
        Action::Create
        | Action::Emergency
        | Action::Activate
        | Action::Expire
        | Action::AutoReject
        | Action::OpenRound => false,
    };
    if !ok {
        return Err(forbidden());
    }
    match action {
        Action::Assess | Action::Approve => {
            if e.is_requester(&actor.subject) {
                return Err(DomainError::SeparationOfDuties(format!(
                    "the requester may not {} their own exception",
                    if action == Action::Assess { "assess" } else { "approve" }
                )));
            }
            if e.fields.expires_at.is_some_and(|x| x <= now) {
                return Err(DomainError::field(
                    "expires_at",
                    "in_past",
                    "the requested expiry has passed; return the exception so the requester can set a new one",
                ));
            }
        }
        Action::Update
        | Action::Submit
        | Action::Return
        | Action::Reject
        | Action::Withdraw
        | Action::RequestRenewal
        | Action::Review
        | Action::Revoke
        | Action::Close
        | Action::AddControl
        | Action::ChangeControl
        | Action::Create
        | Action::Emergency
        | Action::Activate
        | Action::Expire
        | Action::AutoReject
        | Action::OpenRound => {}
    }
    if action == Action::Approve {
        if matches!(status, Status::Active | Status::RenewalPending) && e.risk().is_none_or(|r| r.round != e.round) {
            return Err(DomainError::field(
                "risk",
                "assessment_required",
                "this round needs a fresh assessment before any approval",
            ));
        }
        if e.current_approvals().any(|x| x.approver == actor.subject) {
            return Err(DomainError::SeparationOfDuties(
                "one person satisfies at most one required approval in a round".into(),
            ));
        }
        let missing = missing_roles(e, policy);
        if !missing.iter().any(|r| actor.has(*r)) {
            return Err(DomainError::Forbidden { action, needs: missing });
        }
    }
    Ok(())
}

/// The human actions the caller may take now.
pub fn allowed_actions(e: &Exception, actor: &Actor, policy: &ApprovalPolicy, now: DateTime<Utc>) -> Vec<Action> {
    Action::ALL.iter().copied().filter(|a| a.is_human() && guard(e, actor, policy, now, *a).is_ok()).collect()
}
