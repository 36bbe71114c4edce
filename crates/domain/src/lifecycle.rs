//! The lifecycle table (spec section 5): which action may happen in which state.
//!
//! Every (state, action) pair is matched explicitly, with no catch-all arm, so adding a state
//! or an action fails to compile until the table says what it means.

use crate::record::enum_str;

enum_str!(
    /// Where an exception stands.
    Status {
        /// Being written by the requester.
        Draft = "draft",
        /// Waiting for assessment.
        Submitted = "submitted",
        /// Assessed; waiting for approvals.
        PendingApproval = "pending_approval",
        /// Approved; coverage starts at `starts_at`.
        Approved = "approved",
        /// Covering.
        Active = "active",
        /// Covering while a renewal round runs.
        RenewalPending = "renewal_pending",
        /// Refused (terminal).
        Rejected = "rejected",
        /// Taken back by the requester (terminal).
        Withdrawn = "withdrawn",
        /// Past `expires_at` (terminal).
        Expired = "expired",
        /// Ended early by an officer or a rule (terminal).
        Revoked = "revoked",
        /// Ended because the gap was remediated (terminal).
        Closed = "closed",
    }
);

enum_str!(
    /// Something that changes an exception: a person's action or the passing of time.
    Action {
        /// Change fields (all in draft; tags, references and remediation afterwards).
        Update = "update",
        /// Send for assessment.
        Submit = "submit",
        /// Send back to the requester for more information.
        Return = "return",
        /// Score the risk.
        Assess = "assess",
        /// Sign one required approval.
        Approve = "approve",
        /// Refuse.
        Reject = "reject",
        /// Take back.
        Withdraw = "withdraw",
        /// Ask for a new expiry.
        RequestRenewal = "request_renewal",
        /// Record a periodic review.
        Review = "review",
        /// End early.
        Revoke = "revoke",
        /// End because remediated.
        Close = "close",
        /// Add a compensating control.
        AddControl = "add_control",
        /// Change or verify a compensating control.
        ChangeControl = "change_control",
        /// Time: `starts_at` has come.
        Activate = "activate",
        /// Time: `expires_at` has come.
        Expire = "expire",
        /// Time: the approval timeout has passed.
        AutoReject = "auto_reject",
    }
);

impl Status {
    /// The last five states: nothing but field updates happens after them.
    pub fn is_terminal(self) -> bool {
        match self {
            Status::Rejected | Status::Withdrawn | Status::Expired | Status::Revoked | Status::Closed => true,
            Status::Draft
            | Status::Submitted
            | Status::PendingApproval
            | Status::Approved
            | Status::Active
            | Status::RenewalPending => false,
        }
    }

    /// Whether the table lists `action` from this state. Conditions beyond the state (an
    /// emergency awaiting ratification, a renewal round's fresh assessment) are checked by
    /// the workflow.
    pub fn permits(self, action: Action) -> bool {
        use Action::*;
        match self {
            Status::Draft => match action {
                Update | Submit | Withdraw | AddControl | ChangeControl => true,
                Return | Assess | Approve | Reject | RequestRenewal | Review | Revoke | Close | Activate | Expire
                | AutoReject => false,
            },
            Status::Submitted => match action {
                Update | Return | Assess | Reject | Withdraw | AddControl | ChangeControl | AutoReject => true,
                Submit | Approve | RequestRenewal | Review | Revoke | Close | Activate | Expire => false,
            },
            Status::PendingApproval => match action {
                Update | Return | Assess | Approve | Reject | Withdraw | AddControl | ChangeControl | AutoReject => {
                    true
                }
                Submit | RequestRenewal | Review | Revoke | Close | Activate | Expire => false,
            },
            Status::Approved => match action {
                Update | Withdraw | Revoke | Activate | AddControl | ChangeControl => true,
                Submit | Return | Assess | Approve | Reject | RequestRenewal | Review | Close | Expire | AutoReject => {
                    false
                }
            },
            Status::Active => match action {
                Update | Assess | Approve | RequestRenewal | Review | Revoke | Close | Expire | AddControl
                | ChangeControl => true,
                Submit | Return | Reject | Withdraw | Activate | AutoReject => false,
            },
            Status::RenewalPending => match action {
                Update | Assess | Approve | Reject | Review | Revoke | Close | Expire | AddControl | ChangeControl => {
                    true
                }
                Submit | Return | Withdraw | RequestRenewal | Activate | AutoReject => false,
            },
            Status::Rejected | Status::Withdrawn | Status::Expired | Status::Revoked | Status::Closed => match action {
                Update => true,
                Submit | Return | Assess | Approve | Reject | Withdraw | RequestRenewal | Review | Revoke | Close
                | AddControl | ChangeControl | Activate | Expire | AutoReject => false,
            },
        }
    }

    /// The actions the table lists from this state, in declaration order.
    pub fn permitted(self) -> Vec<Action> {
        Action::ALL.iter().copied().filter(|a| self.permits(*a)).collect()
    }
}

impl Action {
    /// Actions people take (the others happen by time).
    pub fn is_human(self) -> bool {
        match self {
            Action::Activate | Action::Expire | Action::AutoReject => false,
            Action::Update
            | Action::Submit
            | Action::Return
            | Action::Assess
            | Action::Approve
            | Action::Reject
            | Action::Withdraw
            | Action::RequestRenewal
            | Action::Review
            | Action::Revoke
            | Action::Close
            | Action::AddControl
            | Action::ChangeControl => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_states_permit_only_field_updates() {
        for s in Status::ALL.iter().filter(|s| s.is_terminal()) {
            assert_eq!(s.permitted(), vec![Action::Update], "{s}");
        }
    }

    #[test]
    fn time_actions_follow_the_table() {
        assert!(Status::Approved.permits(Action::Activate));
        assert!(Status::Active.permits(Action::Expire) && Status::RenewalPending.permits(Action::Expire));
        assert!(Status::Submitted.permits(Action::AutoReject) && Status::PendingApproval.permits(Action::AutoReject));
        let activate_from: Vec<_> = Status::ALL.iter().filter(|s| s.permits(Action::Activate)).collect();
        assert_eq!(activate_from, [&Status::Approved]);
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
        ];
        for (action, from) in rows {
            let got: Vec<Status> = Status::ALL.iter().copied().filter(|s| s.permits(*action)).collect();
            assert_eq!(&got, from, "{action}");
        }
    }
}
