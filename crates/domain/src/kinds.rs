//! The closed lists of the domain: states, actions, roles, levels, categories and the rest.
//! Each is a wire name as well as a type, so a value is parsed once, at the edge, and never
//! turned back into a string to be parsed again.

use crate::text::enum_str;

enum_str!(
    /// Where an exception stands (spec section 5).
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
}

enum_str!(
    /// A row of the lifecycle table: something that changes an exception, done by a person or
    /// by the passing of time.
    Action {
        /// Create a request (no state before it: it enters `draft`).
        Create = "create",
        /// Change fields (all in draft; tags, references and remediation afterwards).
        Update = "update",
        /// Send for assessment.
        Submit = "submit",
        /// Send back to the requester for more information.
        Return = "return",
        /// Score the risk.
        Assess = "assess",
        /// Sign one required approval; the last one approves, renews or ratifies.
        Approve = "approve",
        /// Refuse.
        Reject = "reject",
        /// Take back.
        Withdraw = "withdraw",
        /// Ask for a new expiry.
        RequestRenewal = "request_renewal",
        /// Record a periodic review.
        Review = "review",
        /// End early: an officer, or time (a review long overdue, controls failed, an
        /// emergency never ratified).
        Revoke = "revoke",
        /// End because remediated.
        Close = "close",
        /// Add a compensating control.
        AddControl = "add_control",
        /// Change, verify or check a compensating control.
        ChangeControl = "change_control",
        /// Break-glass: a new emergency exception covers at once.
        Emergency = "emergency",
        /// Time: `starts_at` has come (or the last approval came after it).
        Activate = "activate",
        /// Time: `expires_at` has come.
        Expire = "expire",
        /// Time: the approval timeout has passed.
        AutoReject = "auto_reject",
        /// A control failed or its check fell overdue and the residual rose above what was
        /// approved: a new round opens by itself.
        OpenRound = "open_round",
    }
);

impl Action {
    /// Actions a person takes on an existing exception (the others happen by time, as a
    /// consequence of another action, or at creation).
    pub fn is_human(self) -> bool {
        match self {
            Action::Create
            | Action::Activate
            | Action::Expire
            | Action::AutoReject
            | Action::OpenRound
            | Action::Emergency => false,
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

enum_str!(
    /// A role resolved from the caller's token (spec section 6).
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

enum_str!(
    /// A risk level; ordered from low to critical.
    Level {
        /// Low.
        Low = "low",
        /// Medium.
        Medium = "medium",
        /// High.
        High = "high",
        /// Critical.
        Critical = "critical",
    }
);

enum_str!(
    /// What kind of deviation the exception is.
    Category {
        /// Multi-factor authentication bypass.
        MfaBypass = "mfa_bypass",
        /// A firewall rule outside policy.
        FirewallRule = "firewall_rule",
        /// A deferred patch.
        PatchDeferral = "patch_deferral",
        /// Encryption below policy.
        Encryption = "encryption",
        /// Unsupported software.
        LegacySoftware = "legacy_software",
        /// Privileges beyond policy.
        ElevatedAccess = "elevated_access",
        /// Third-party access.
        VendorAccess = "vendor_access",
        /// A configuration deviation.
        Configuration = "configuration",
        /// Data handling outside policy.
        DataHandling = "data_handling",
        /// Anything else.
        Other = "other",
    }
);

enum_str!(
    /// Drives the approval SLA.
    Priority {
        /// 5-day SLA.
        Standard = "standard",
        /// 24-hour SLA.
        Urgent = "urgent",
    }
);

enum_str!(
    /// How a compensating control acts.
    ControlKind {
        /// Stops the threat.
        Preventive = "preventive",
        /// Notices the threat.
        Detective = "detective",
        /// Repairs after the threat.
        Corrective = "corrective",
    }
);

enum_str!(
    /// Where a compensating control stands; only `verified` reduces risk.
    ControlStatus {
        /// Planned.
        Proposed = "proposed",
        /// In place, not yet checked.
        Implemented = "implemented",
        /// Checked by an analyst who is not the requester.
        Verified = "verified",
        /// Checked and found not working.
        Failed = "failed",
    }
);

enum_str!(
    /// How much a verified compensating control reduces risk.
    Effectiveness {
        /// Reduces by 10%.
        Low = "low",
        /// Reduces by 25%.
        Medium = "medium",
        /// Reduces by 40%.
        High = "high",
    }
);

impl Effectiveness {
    /// The reduction in percent: 10, 25 or 40 (spec section 2).
    pub fn reduction_percent(self) -> u32 {
        match self {
            Effectiveness::Low => 10,
            Effectiveness::Medium => 25,
            Effectiveness::High => 40,
        }
    }
}

enum_str!(
    /// The scoring method of an assessment.
    MethodKind {
        /// Likelihood x impact, NIST SP 800-30 scales.
        Matrix = "matrix",
        /// A CVSS v3.1 or v4.0 base score.
        Cvss = "cvss",
    }
);

enum_str!(
    /// What a periodic review concluded.
    ReviewOutcome {
        /// The exception stays.
        Continue = "continue",
        /// The exception is revoked.
        Revoke = "revoke",
    }
);

enum_str!(
    /// The result of a control check.
    CheckResult {
        /// The control works.
        Pass = "pass",
        /// The control does not work.
        Fail = "fail",
    }
);

enum_str!(
    /// Why an exception ended by itself, or was revoked by a review.
    Reason {
        /// No decision before the approval timeout.
        ApprovalTimeout = "approval_timeout",
        /// The periodic review was overdue beyond its grace.
        ReviewOverdue = "review_overdue",
        /// A review concluded `revoke`.
        ReviewRevoked = "review_revoked",
        /// Failed controls raised the risk and the new round was not approved in time, or
        /// was rejected.
        ControlsFailed = "controls_failed",
        /// An emergency exception was not ratified within its maximum.
        EmergencyNotRatified = "emergency_not_ratified",
    }
);

enum_str!(
    /// What an audit event records (the `action` of spec section 7).
    AuditAction {
        /// Created.
        Created = "created",
        /// Submitted.
        Submitted = "submitted",
        /// Returned for more information.
        Returned = "returned",
        /// Assessed.
        Assessed = "assessed",
        /// One required approval given.
        ApprovalRecorded = "approval_recorded",
        /// Every required approval given.
        Approved = "approved",
        /// An emergency's approvals came in.
        Ratified = "ratified",
        /// Coverage started.
        Activated = "activated",
        /// Refused.
        Rejected = "rejected",
        /// Refused by time.
        AutoRejected = "auto_rejected",
        /// Withdrawn.
        Withdrawn = "withdrawn",
        /// Revoked.
        Revoked = "revoked",
        /// Closed.
        Closed = "closed",
        /// Expired.
        Expired = "expired",
        /// An expiry reminder.
        Expiring = "expiring",
        /// The approval SLA passed.
        Escalated = "escalated",
        /// A periodic review fell due.
        ReviewDue = "review_due",
        /// A periodic review was recorded.
        Reviewed = "reviewed",
        /// A renewal round opened.
        RenewalRequested = "renewal_requested",
        /// A renewal round was approved.
        Renewed = "renewed",
        /// Fields changed.
        Updated = "updated",
        /// A control was added.
        ControlAdded = "control_added",
        /// A control's status or evidence changed.
        ControlChanged = "control_changed",
        /// A control was checked.
        ControlChecked = "control_checked",
        /// The residual was recomputed as controls changed.
        RiskRecomputed = "risk_recomputed",
        /// A control stopped reducing risk on a covering exception.
        AtRisk = "at_risk",
        /// Every control works again.
        AtRiskCleared = "at_risk_cleared",
        /// Brought in by an import.
        Imported = "imported",
    }
);

enum_str!(
    /// An integration event type (spec section 8).
    EventType {
        /// `exception.created`.
        Created = "exception.created",
        /// `exception.submitted`.
        Submitted = "exception.submitted",
        /// `exception.returned`.
        Returned = "exception.returned",
        /// `exception.assessed`.
        Assessed = "exception.assessed",
        /// `exception.approval_recorded`.
        ApprovalRecorded = "exception.approval_recorded",
        /// `exception.approved`.
        Approved = "exception.approved",
        /// `exception.activated`.
        Activated = "exception.activated",
        /// `exception.rejected`.
        Rejected = "exception.rejected",
        /// `exception.withdrawn`.
        Withdrawn = "exception.withdrawn",
        /// `exception.revoked`.
        Revoked = "exception.revoked",
        /// `exception.closed`.
        Closed = "exception.closed",
        /// `exception.expired`.
        Expired = "exception.expired",
        /// `exception.expiring`.
        Expiring = "exception.expiring",
        /// `exception.escalated`.
        Escalated = "exception.escalated",
        /// `exception.review_due`.
        ReviewDue = "exception.review_due",
        /// `exception.reviewed`.
        Reviewed = "exception.reviewed",
        /// `exception.renewal_requested`.
        RenewalRequested = "exception.renewal_requested",
        /// `exception.renewed`.
        Renewed = "exception.renewed",
        /// `exception.updated`.
        Updated = "exception.updated",
        /// `exception.imported`.
        Imported = "exception.imported",
        /// `exception.at_risk`.
        AtRisk = "exception.at_risk",
    }
);
