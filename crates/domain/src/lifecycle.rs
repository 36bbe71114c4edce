//! The lifecycle table (spec section 5): which action may lead from which state to which.
//!
//! Every (state, action) pair is matched explicitly, with no catch-all arm, so adding a state
//! or an action fails to compile until the table says what it means. Time-driven moves
//! (activation, expiry, automatic rejection and revocation, a round opened by failed
//! controls) are rows like the others; [`crate::record::Exception::enter`] is the only way
//! to change a status, and it consults this table every time.

use crate::kinds::{Action, Status};

/// The states `action` may lead to from `from`; empty when the table has no such row.
pub fn leads_to(from: Status, action: Action) -> &'static [Status] {
    use Action::*;
    use Status::*;
    match from {
        Draft => match action {
            Update | AddControl | ChangeControl => &[Draft],
            Submit => &[Submitted],
            Withdraw => &[Withdrawn],
            Emergency => &[Active],
            Create | Return | Assess | Approve | Reject | RequestRenewal | Review | Revoke | Close | Activate
            | Expire | AutoReject | OpenRound => &[],
        },
        Submitted => match action {
            Update | AddControl | ChangeControl => &[Submitted],
            Return => &[Draft],
            Assess => &[PendingApproval],
            Reject | AutoReject => &[Rejected],
            Withdraw => &[Withdrawn],
            Create | Submit | Approve | RequestRenewal | Review | Revoke | Close | Emergency | Activate | Expire
            | OpenRound => &[],
        },
        PendingApproval => match action {
            Update | AddControl | ChangeControl | Assess => &[PendingApproval],
            Return => &[Draft],
            Approve => &[PendingApproval, Approved],
            Reject | AutoReject => &[Rejected],
            Withdraw => &[Withdrawn],
            Create | Submit | RequestRenewal | Review | Revoke | Close | Emergency | Activate | Expire | OpenRound => {
                &[]
            }
        },
        Approved => match action {
            Update | AddControl | ChangeControl => &[Approved],
            Withdraw => &[Withdrawn],
            Revoke => &[Revoked],
            Activate => &[Active],
            Expire => &[Expired],
            Create | Submit | Return | Assess | Approve | Reject | RequestRenewal | Review | Close | Emergency
            | AutoReject | OpenRound => &[],
        },
        Active => match action {
            // assessing and approving in `active` ratify an emergency; the workflow narrows them
            Update | AddControl | ChangeControl | Assess | Approve => &[Active],
            RequestRenewal | OpenRound => &[RenewalPending],
            Review => &[Active, Revoked],
            Revoke => &[Revoked],
            Close => &[Closed],
            Expire => &[Expired],
            Create | Submit | Return | Reject | Withdraw | Emergency | Activate | AutoReject => &[],
        },
        RenewalPending => match action {
            Update | AddControl | ChangeControl | Assess => &[RenewalPending],
            Approve => &[RenewalPending, Active],
            // a requested round rejected keeps the old expiry; a round opened by failed
            // controls rejected leaves nothing that covers the higher risk
            Reject => &[Active, Revoked],
            Review => &[RenewalPending, Revoked],
            Revoke => &[Revoked],
            Close => &[Closed],
            Expire => &[Expired],
            Create | Submit | Return | Withdraw | RequestRenewal | Emergency | Activate | AutoReject | OpenRound => &[],
        },
        Rejected => ended(action, &[Rejected]),
        Withdrawn => ended(action, &[Withdrawn]),
        Expired => ended(action, &[Expired]),
        Revoked => ended(action, &[Revoked]),
        Closed => ended(action, &[Closed]),
    }
}

/// The rows of a terminal state: remediation tickets may still be linked to an ended
/// exception, nothing else happens to it.
fn ended(action: Action, same: &'static [Status]) -> &'static [Status] {
    use Action::*;
    match action {
        Update => same,
        Create | Submit | Return | Assess | Approve | Reject | Withdraw | RequestRenewal | Review | Revoke | Close
        | AddControl | ChangeControl | Emergency | Activate | Expire | AutoReject | OpenRound => &[],
    }
}

/// Whether the table has a row for `action` from `from`.
pub fn permits(from: Status, action: Action) -> bool {
    !leads_to(from, action).is_empty()
}

/// The actions people may take from `from`, in declaration order.
pub fn human_actions(from: Status) -> Vec<Action> {
    Action::ALL.iter().copied().filter(|a| a.is_human() && permits(from, *a)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_states_permit_only_field_updates() {
        for s in Status::ALL.iter().copied().filter(|s| s.is_terminal()) {
            assert_eq!(human_actions(s), vec![Action::Update], "{s}");
            let reachable: Vec<&Status> = Action::ALL.iter().flat_map(|a| leads_to(s, *a)).collect();
            assert!(reachable.iter().all(|t| **t == s), "{s} never moves");
        }
    }

    #[test]
    fn spec_rows_are_present() {
        use Action::*;
        use Status::*;
        let rows: &[(Action, &[Status])] = &[
            (Submit, &[Draft]),
            (Return, &[Submitted, PendingApproval]),
            (Assess, &[Submitted, PendingApproval, Active, RenewalPending]),
            (Approve, &[PendingApproval, Active, RenewalPending]),
            (Reject, &[Submitted, PendingApproval, RenewalPending]),
            (Withdraw, &[Draft, Submitted, PendingApproval, Approved]),
            (RequestRenewal, &[Active]),
            (Review, &[Active, RenewalPending]),
            (Revoke, &[Approved, Active, RenewalPending]),
            (Close, &[Active, RenewalPending]),
            (Activate, &[Approved]),
            (Expire, &[Approved, Active, RenewalPending]),
            (AutoReject, &[Submitted, PendingApproval]),
            (OpenRound, &[Active]),
            (Emergency, &[Draft]),
        ];
        for (action, from) in rows {
            let got: Vec<Status> = Status::ALL.iter().copied().filter(|s| permits(*s, *action)).collect();
            assert_eq!(&got, from, "{action}");
        }
    }

    #[test]
    fn ending_rows_lead_where_the_spec_says() {
        assert_eq!(leads_to(Status::Approved, Action::Activate), &[Status::Active]);
        assert_eq!(leads_to(Status::Submitted, Action::AutoReject), &[Status::Rejected]);
        assert_eq!(leads_to(Status::Active, Action::Close), &[Status::Closed]);
        assert_eq!(leads_to(Status::RenewalPending, Action::Reject), &[Status::Active, Status::Revoked]);
    }
}
