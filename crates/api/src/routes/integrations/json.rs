//! Wire types of webhooks, the change feed and coverage.

use chrono::{DateTime, Datelike, Utc};
use leeway_domain::FieldError;
use leeway_persistence::{Attempt, Delivery, Webhook};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::body::Wire;
use crate::routes::exceptions::json::present;

/// An integration event type (domain spec, section 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum EventTypeName {
    #[serde(rename = "exception.created")]
    #[allow(missing_docs)]
    Created,
    #[serde(rename = "exception.submitted")]
    #[allow(missing_docs)]
    Submitted,
    #[serde(rename = "exception.returned")]
    #[allow(missing_docs)]
    Returned,
    #[serde(rename = "exception.assessed")]
    #[allow(missing_docs)]
    Assessed,
    #[serde(rename = "exception.approval_recorded")]
    #[allow(missing_docs)]
    ApprovalRecorded,
    #[serde(rename = "exception.approved")]
    #[allow(missing_docs)]
    Approved,
    #[serde(rename = "exception.activated")]
    #[allow(missing_docs)]
    Activated,
    #[serde(rename = "exception.rejected")]
    #[allow(missing_docs)]
    Rejected,
    #[serde(rename = "exception.withdrawn")]
    #[allow(missing_docs)]
    Withdrawn,
    #[serde(rename = "exception.revoked")]
    #[allow(missing_docs)]
    Revoked,
    #[serde(rename = "exception.closed")]
    #[allow(missing_docs)]
    Closed,
    #[serde(rename = "exception.expired")]
    #[allow(missing_docs)]
    Expired,
    #[serde(rename = "exception.expiring")]
    #[allow(missing_docs)]
    Expiring,
    #[serde(rename = "exception.escalated")]
    #[allow(missing_docs)]
    Escalated,
    #[serde(rename = "exception.review_due")]
    #[allow(missing_docs)]
    ReviewDue,
    #[serde(rename = "exception.reviewed")]
    #[allow(missing_docs)]
    Reviewed,
    #[serde(rename = "exception.renewal_requested")]
    #[allow(missing_docs)]
    RenewalRequested,
    #[serde(rename = "exception.renewed")]
    #[allow(missing_docs)]
    Renewed,
    #[serde(rename = "exception.updated")]
    #[allow(missing_docs)]
    Updated,
    #[serde(rename = "exception.imported")]
    #[allow(missing_docs)]
    Imported,
    #[serde(rename = "exception.at_risk")]
    #[allow(missing_docs)]
    AtRisk,
}

impl EventTypeName {
    /// The type as sent.
    pub fn as_str(self) -> &'static str {
        match self {
            EventTypeName::Created => "exception.created",
            EventTypeName::Submitted => "exception.submitted",
            EventTypeName::Returned => "exception.returned",
            EventTypeName::Assessed => "exception.assessed",
            EventTypeName::ApprovalRecorded => "exception.approval_recorded",
            EventTypeName::Approved => "exception.approved",
            EventTypeName::Activated => "exception.activated",
            EventTypeName::Rejected => "exception.rejected",
            EventTypeName::Withdrawn => "exception.withdrawn",
            EventTypeName::Revoked => "exception.revoked",
            EventTypeName::Closed => "exception.closed",
            EventTypeName::Expired => "exception.expired",
            EventTypeName::Expiring => "exception.expiring",
            EventTypeName::Escalated => "exception.escalated",
            EventTypeName::ReviewDue => "exception.review_due",
            EventTypeName::Reviewed => "exception.reviewed",
            EventTypeName::RenewalRequested => "exception.renewal_requested",
            EventTypeName::Renewed => "exception.renewed",
            EventTypeName::Updated => "exception.updated",
            EventTypeName::Imported => "exception.imported",
            EventTypeName::AtRisk => "exception.at_risk",
        }
    }
}

#[cfg(test)]
const ALL_NAMES: &[&str] = &[
    "exception.created",
    "exception.submitted",
    "exception.returned",
    "exception.assessed",
    "exception.approval_recorded",
    "exception.approved",
    "exception.activated",
    "exception.rejected",
    "exception.withdrawn",
    "exception.revoked",
    "exception.closed",
    "exception.expired",
    "exception.expiring",
    "exception.escalated",
    "exception.review_due",
    "exception.reviewed",
    "exception.renewal_requested",
    "exception.renewed",
    "exception.updated",
    "exception.imported",
    "exception.at_risk",
];

fn url_problem(url: &str) -> Option<FieldError> {
    (url.trim() != url || url.is_empty() || url.len() > 2048)
        .then(|| FieldError::new("url", "invalid_value", "1..2048 characters without surrounding spaces"))
}

fn types(v: &[EventTypeName], errors: &mut Vec<FieldError>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(v.len());
    for t in v {
        if out.iter().any(|x| x == t.as_str()) {
            errors.push(FieldError::new("event_types", "duplicate", format!("{} is listed twice", t.as_str())));
        }
        out.push(t.as_str().to_owned());
    }
    out
}

/// Subscribe a receiver.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// `http(s)://...`, 1..2048 characters; refused when it resolves to a loopback, private,
    /// link-local or metadata address (`webhook_url_refused`).
    #[schema(min_length = 1, max_length = 2048)]
    pub url: String,
    /// The types to receive, 1..21 distinct; absent: every type.
    #[serde(default)]
    #[schema(min_items = 1, max_items = 21)]
    pub event_types: Option<Vec<EventTypeName>>,
    /// What it is for; at most 500 characters.
    #[serde(default)]
    #[schema(max_length = 500)]
    pub description: Option<String>,
}

/// A parsed subscription request.
#[derive(Debug, Clone)]
pub struct NewWebhook {
    /// URL (checked for SSRF when saved).
    pub url: String,
    /// Types, `None`: all.
    pub event_types: Option<Vec<String>>,
    /// Description.
    pub description: Option<String>,
}

impl Wire for CreateWebhook {
    type Parsed = NewWebhook;
    fn parse(self) -> Result<NewWebhook, Vec<FieldError>> {
        let mut errors: Vec<FieldError> = url_problem(&self.url).into_iter().collect();
        let event_types = self.event_types.as_deref().map(|t| types(t, &mut errors));
        if errors.is_empty() {
            Ok(NewWebhook { url: self.url, event_types, description: self.description })
        } else {
            Err(errors)
        }
    }
}

/// Change a subscription (JSON merge patch).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookPatch {
    /// New URL, checked as on create.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 2048)]
    pub url: Option<String>,
    /// New filter; `null`: every type.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<EventTypeName>>, min_items = 1, max_items = 21)]
    pub event_types: Option<Option<Vec<EventTypeName>>>,
    /// Enable or disable. Enabling one Leeway disabled (a 410) clears `disabled_reason`.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// New description; `null` clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 500)]
    pub description: Option<Option<String>>,
}

impl Wire for WebhookPatch {
    type Parsed = leeway_persistence::WebhookChange;
    fn parse(self) -> Result<Self::Parsed, Vec<FieldError>> {
        let mut errors: Vec<FieldError> = self.url.as_deref().and_then(url_problem).into_iter().collect();
        let event_types = self.event_types.map(|t| t.map(|t| types(&t, &mut errors)));
        if errors.is_empty() {
            Ok(leeway_persistence::WebhookChange {
                url: self.url,
                event_types,
                enabled: self.enabled,
                description: self.description,
            })
        } else {
            Err(errors)
        }
    }
}

/// A subscription, without its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookView {
    /// Its id.
    pub id: String,
    /// Where deliveries go.
    pub url: String,
    /// The types it receives; `null`: every type.
    pub event_types: Option<Vec<String>>,
    /// What it is for.
    pub description: Option<String>,
    /// Whether deliveries are made and sent.
    pub enabled: bool,
    /// Why Leeway disabled it: `gone` (the receiver answered 410).
    pub disabled_reason: Option<String>,
    /// Who created it.
    pub created_by: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<&Webhook> for WebhookView {
    fn from(w: &Webhook) -> Self {
        Self {
            id: w.id.clone(),
            url: w.url.clone(),
            event_types: w.types(),
            description: w.description.clone(),
            enabled: w.enabled,
            disabled_reason: w.disabled_reason.clone(),
            created_by: w.created_by.clone(),
            created_at: w.created_at.and_utc(),
            updated_at: w.updated_at.and_utc(),
        }
    }
}

/// A subscription with its signing secret: shown on create and on rotation only.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookWithSecret {
    /// The subscription.
    #[serde(flatten)]
    pub webhook: WebhookView,
    /// `whsec_` + base64 of 32 random bytes: the Standard Webhooks signing key.
    pub secret: String,
}

/// A page of subscriptions.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookPage {
    /// Subscriptions, by id.
    pub items: Vec<WebhookView>,
    /// Pass as `after` for the next page; `null` on the last.
    pub next_after: Option<String>,
}

/// One attempt to send a delivery.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptView {
    /// When it was sent.
    pub at: DateTime<Utc>,
    /// The receiver's HTTP status; `null` when it did not answer.
    pub response_status: Option<u16>,
    /// What went wrong, with up to 64 KiB of the receiver's answer.
    pub error: Option<String>,
    /// How long it took.
    pub duration_ms: u64,
}

impl From<Attempt> for AttemptView {
    fn from(a: Attempt) -> Self {
        Self { at: a.at, response_status: a.response_status, error: a.error, duration_ms: a.duration_ms }
    }
}

/// A delivery status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting to be sent, or to be sent again.
    Pending,
    /// A 2xx came back.
    Succeeded,
    /// Given up: every attempt of the schedule failed, or the receiver answered 410.
    Failed,
}

/// One event for one subscription.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    /// Its id.
    pub id: String,
    /// The event's type.
    pub event_type: String,
    /// The event's position in the change feed.
    pub event_seq: i64,
    /// The event's id: the `webhook-id` header.
    pub event_id: String,
    /// The exception.
    pub exception_id: String,
    /// `pending`, `succeeded` or `failed`.
    pub status: String,
    /// When it is next sent, while pending; `null` while its subscription is disabled.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Every attempt, oldest first.
    pub attempts: Vec<AttemptView>,
}

impl From<&Delivery> for DeliveryView {
    fn from(d: &Delivery) -> Self {
        Self {
            id: d.id.clone(),
            event_type: d.event_type.clone(),
            event_seq: d.event_seq,
            event_id: d.event_id.clone(),
            exception_id: d.exception_id.clone(),
            status: d.status.clone(),
            // a disabled subscription's deliveries wait with no time (kept as the far future)
            next_attempt_at: (d.status == "pending" && d.next_attempt_at.and_utc().year() < 9999)
                .then(|| d.next_attempt_at.and_utc()),
            attempts: d.attempt_log().into_iter().map(AttemptView::from).collect(),
        }
    }
}

/// A page of deliveries.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryPage {
    /// Deliveries in feed order.
    pub items: Vec<DeliveryView>,
    /// Pass as `after` for the next page; `null` on the last.
    pub next_after: Option<i64>,
}

/// `data` of a webhook delivery and of a feed item: the exception as an auditor read it at the
/// event, plus the event's feed position.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventData {
    /// The exception at the event.
    #[serde(flatten)]
    pub exception: crate::routes::exceptions::json::ExceptionView,
    /// The event's position in the change feed.
    pub event_seq: i64,
}

/// What a subscription's URL receives (Standard Webhooks).
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookEvent {
    /// The event type.
    #[serde(rename = "type")]
    pub type_: EventTypeName,
    /// When it happened.
    pub timestamp: DateTime<Utc>,
    /// The exception at the event.
    pub data: EventData,
}

/// One event of the change feed.
#[derive(Debug, Serialize, ToSchema)]
pub struct FeedItem {
    /// Its position: pass the last one seen as `after`.
    pub seq: i64,
    /// `exception.approved`, ...
    #[serde(rename = "type")]
    pub type_: String,
    /// The event's stable id (the `webhook-id` of its deliveries).
    pub id: String,
    /// The exception.
    pub exception_id: String,
    /// Its key; `null` only when the stored exception does not read (see `error`).
    pub exception_key: Option<String>,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// The exception as an auditor read it at that event, plus `event_seq`: the same as a
    /// webhook's `data`. `null` only when the stored exception does not read.
    #[schema(value_type = Option<EventData>)]
    pub data: Option<Value>,
    /// Why `data` is missing; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A page of the change feed.
#[derive(Debug, Serialize, ToSchema)]
pub struct FeedPage {
    /// Events in feed order.
    pub items: Vec<FeedItem>,
    /// Pass as `after` next time: the last item's `seq`, or the `after` given when the page
    /// is empty.
    pub next_after: i64,
}

/// An exception that covers an asset; no free text.
#[derive(Debug, Serialize, ToSchema)]
pub struct CoveringView {
    /// Its id.
    pub id: String,
    /// Its key.
    pub key: String,
    /// Its status at that moment: `active` or `renewal_pending`.
    pub status: String,
    /// Its residual risk level then.
    pub risk_level: Option<String>,
    /// When its coverage ends (as it stood then).
    pub expires_at: Option<DateTime<Utc>>,
}

/// Whether an asset is covered for a control at a moment.
#[derive(Debug, Serialize, ToSchema)]
pub struct CoverageView {
    /// The asset asked about.
    pub asset: String,
    /// The control asked about; `null`: any control.
    pub control_id: Option<String>,
    /// The moment asked about.
    pub at: DateTime<Utc>,
    /// Whether any exception covered it.
    pub covered: bool,
    /// The exceptions that did, by key.
    pub exceptions: Vec<CoveringView>,
}

/// One question of a batch.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CoverageQuestion {
    /// The asset; 1..200 characters.
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\u0000]*$")]
    pub asset: String,
    /// The control; absent: any control. 1..200 characters.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\u0000]*$")]
    pub control_id: Option<String>,
}

/// Up to 1,000 coverage questions at one moment.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CoverageBatch {
    /// The moment (1970..9999); default now.
    #[serde(default)]
    #[schema(pattern = "^(19[7-9][0-9]|[2-9][0-9]{3})-")]
    pub at: Option<DateTime<Utc>>,
    /// The questions, 1..1000.
    #[schema(min_items = 1, max_items = 1000)]
    pub items: Vec<CoverageQuestion>,
}

impl Wire for CoverageBatch {
    type Parsed = CoverageBatch;
    fn parse(self) -> Result<CoverageBatch, Vec<FieldError>> {
        let mut errors = Vec::new();
        if let Some(at) = self.at
            && let Err(e) = leeway_domain::time::moment("at", at)
        {
            errors.push(e);
        }
        for (i, q) in self.items.iter().enumerate() {
            for (name, v) in [("asset", Some(&q.asset)), ("control_id", q.control_id.as_ref())] {
                if let Some(v) = v
                    && (v.is_empty() || v.chars().count() > 200)
                {
                    errors.push(FieldError::new(format!("items[{i}].{name}"), "invalid_value", "1..200 characters"));
                }
            }
        }
        if errors.is_empty() { Ok(self) } else { Err(errors) }
    }
}

/// Answers to a batch, in the order asked.
#[derive(Debug, Serialize, ToSchema)]
pub struct CoverageAnswers {
    /// The moment asked about.
    pub at: DateTime<Utc>,
    /// One answer per question.
    pub items: Vec<CoverageView>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_domain_event_type_has_a_wire_name() {
        for t in leeway_domain::kinds::EventType::ALL {
            assert!(ALL_NAMES.contains(&t.as_str()), "{} has no wire name", t.as_str());
        }
        assert_eq!(ALL_NAMES.len(), leeway_domain::kinds::EventType::ALL.len());
    }
}
