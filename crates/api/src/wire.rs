//! The domain's closed lists as the contract shows them: each a wire enum with its schema,
//! converted to and from the domain's type (never through a string).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Declares a wire enum mirroring a domain enum, with conversions both ways.
macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident => $domain:path { $($v:ident),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $(#[allow(missing_docs)] $v),+ }

        impl From<$domain> for $name {
            fn from(v: $domain) -> Self {
                use $domain as D;
                match v { $(D::$v => $name::$v),+ }
            }
        }

        impl From<$name> for $domain {
            fn from(v: $name) -> Self {
                use $domain as D;
                match v { $($name::$v => D::$v),+ }
            }
        }

    };
}

wire_enum!(
    /// The kind of deviation.
    Category => leeway_domain::kinds::Category { MfaBypass, FirewallRule, PatchDeferral, Encryption, LegacySoftware,
        ElevatedAccess, VendorAccess, Configuration, DataHandling, Other }
);
wire_enum!(
    /// Drives the approval SLA: `urgent` 24 hours, `standard` 5 days.
    Priority => leeway_domain::kinds::Priority { Standard, Urgent }
);
wire_enum!(
    /// Lifecycle state, as effective now (time-driven transitions are applied on read).
    Status => leeway_domain::kinds::Status { Draft, Submitted, PendingApproval, Approved, Active, RenewalPending,
        Rejected, Withdrawn, Expired, Revoked, Closed }
);
/// An action a person may take on an exception.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[expect(missing_docs, reason = "the names are the actions of the lifecycle table")]
pub enum Action {
    Update,
    Submit,
    Return,
    Assess,
    Approve,
    Reject,
    Withdraw,
    RequestRenewal,
    Review,
    Revoke,
    Close,
    AddControl,
    ChangeControl,
}

impl Action {
    /// The wire form of a person's action; `None` for what only time or creation does.
    pub fn of(a: leeway_domain::Action) -> Option<Self> {
        use leeway_domain::Action as D;
        Some(match a {
            D::Update => Self::Update,
            D::Submit => Self::Submit,
            D::Return => Self::Return,
            D::Assess => Self::Assess,
            D::Approve => Self::Approve,
            D::Reject => Self::Reject,
            D::Withdraw => Self::Withdraw,
            D::RequestRenewal => Self::RequestRenewal,
            D::Review => Self::Review,
            D::Revoke => Self::Revoke,
            D::Close => Self::Close,
            D::AddControl => Self::AddControl,
            D::ChangeControl => Self::ChangeControl,
            D::Create | D::Emergency | D::Activate | D::Expire | D::AutoReject | D::OpenRound => return None,
        })
    }
}
wire_enum!(
    /// A risk level.
    Level => leeway_domain::kinds::Level { Low, Medium, High, Critical }
);
wire_enum!(
    /// A role resolved from the token.
    Role => leeway_domain::kinds::Role { Requester, Analyst, SecurityOfficer, AssetOwner, Ciso, Compliance, Auditor,
        Admin, Integration }
);
wire_enum!(
    /// How a compensating control acts.
    ControlKind => leeway_domain::kinds::ControlKind { Preventive, Detective, Corrective }
);
wire_enum!(
    /// Risk reduction of a verified control: low 10%, medium 25%, high 40%.
    Effectiveness => leeway_domain::kinds::Effectiveness { Low, Medium, High }
);
wire_enum!(
    /// Where a control stands; only `verified` reduces risk.
    ControlStatus => leeway_domain::kinds::ControlStatus { Proposed, Implemented, Verified, Failed }
);
wire_enum!(
    /// What a periodic review concluded.
    ReviewOutcome => leeway_domain::kinds::ReviewOutcome { Continue, Revoke }
);
wire_enum!(
    /// The result of a control check.
    CheckResult => leeway_domain::kinds::CheckResult { Pass, Fail }
);
wire_enum!(
    /// The scoring method.
    MethodKind => leeway_domain::kinds::MethodKind { Matrix, Cvss }
);
