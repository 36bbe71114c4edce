//! OSCAL 1.1.3 Plan of Action and Milestones (POA&M): each exception a `risk` (status,
//! likelihood and impact facets, compensating controls as mitigating factors, expiry as
//! deadline, status changes in its risk log) and a `poam-item` linked to it.
//!
//! OSCAL wants version 4 or 5 UUIDs: each object's is a version 5 UUID of what it stands for
//! (the exception's id, the control's, the event's number), so the same exception keeps the
//! same UUIDs from one export to the next.

use chrono::{DateTime, Datelike, SecondsFormat, Utc};
use leeway_domain::audit::Event;
use leeway_domain::kinds::Status;
use leeway_domain::record::Exception;
use leeway_domain::risk::Method;
use serde_json::{Value, json};
use uuid::Uuid;

/// The OSCAL version the document follows.
pub const OSCAL_VERSION: &str = "1.1.3";
/// The namespace of Leeway's own properties.
pub const NS: &str = "https://github.com/leeway-grc/leeway/ns/oscal";
/// The facet system of NIST SP 800-30's qualitative scale.
const NIST_800_30: &str = "https://doi.org/10.6028/NIST.SP.800-30r1";
/// The namespace of every UUID the export derives.
const UUIDS: Uuid = Uuid::from_u128(0x6c65_6577_6179_5000_8000_6f73_6361_6c00);

fn uuid(what: &str, of: &str) -> String {
    Uuid::new_v5(&UUIDS, format!("{what}:{of}").as_bytes()).to_string()
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A moment OSCAL can carry: its date-time type stops at the year 2999 (Leeway's at 9999).
fn oscal_time(t: DateTime<Utc>) -> Option<String> {
    (t.year() < 3000).then(|| time(t))
}

/// An exception's status as an OSCAL risk status: waiting for a decision is
/// `deviation-requested`, approved or covering is `deviation-approved`, ended is `closed`.
pub fn risk_status(s: Status) -> &'static str {
    match s {
        Status::Draft | Status::Submitted | Status::PendingApproval => "deviation-requested",
        Status::Approved | Status::Active | Status::RenewalPending => "deviation-approved",
        Status::Rejected | Status::Withdrawn | Status::Expired | Status::Revoked | Status::Closed => "closed",
    }
}

/// The document up to its first list (the caller writes the lists and closes it with
/// [`TAIL`]).
pub fn head(id: Uuid, now: DateTime<Utc>) -> String {
    let metadata = json!({
        "title": "Leeway security exceptions: plan of action and milestones",
        "last-modified": time(now),
        "version": time(now),
        "oscal-version": OSCAL_VERSION,
        "remarks": "Each accepted or requested deviation from policy is a risk with a POA&M item. Exported by Leeway.",
    });
    let system = json!({"identifier-type": "http://ietf.org/rfc/rfc4122", "id": uuid("system", "leeway")});
    format!("{{\"plan-of-action-and-milestones\":{{\"uuid\":\"{id}\",\"metadata\":{metadata},\"system-id\":{system}")
}

/// What closes the document.
pub const TAIL: &str = "]}}";

fn prop(name: &str, value: &str) -> Value {
    json!({"name": name, "ns": NS, "value": value})
}

/// NIST SP 800-30's qualitative value for a 1..5 score.
fn qualitative(v: u8) -> &'static str {
    match v {
        0 | 1 => "very-low",
        2 => "low",
        3 => "moderate",
        4 => "high",
        _ => "very-high",
    }
}

fn title(e: &Exception) -> String {
    format!("{}: {}", e.key, e.fields.title)
}

/// The risk of exception `e` (at `now`), with `changes`, the events that moved its status.
pub fn risk(e: &Exception, changes: &[&Event], now: DateTime<Utc>) -> Value {
    let f = &e.fields;
    let status = e.effective_status(now);
    let mut description = format!(
        "{} deviates from {} ({}) on {} in business unit {}.",
        e.key,
        f.policy_id,
        f.control_ids.join(", "),
        f.assets.join(", "),
        f.business_unit
    );
    if let Some(impact) = &f.business_impact {
        description.push_str(&format!(" Business impact: {impact}"));
    }
    let mut r = json!({
        "uuid": uuid("risk", &e.id.0.to_string()),
        "title": title(e),
        "description": description,
        "statement": f.justification,
        "props": [
            prop("exception-key", &e.key.to_string()),
            prop("exception-status", status.as_str()),
            prop("category", f.category.as_str()),
            prop("risk-owner", &f.risk_owner.to_string()),
        ],
        "status": risk_status(status),
    });
    if let Some(a) = e.risk() {
        let mut facets = match &a.method {
            Method::Matrix { likelihood, impact } => vec![
                json!({"name": "likelihood", "system": NIST_800_30, "value": qualitative(*likelihood)}),
                json!({"name": "impact", "system": NIST_800_30, "value": qualitative(*impact)}),
            ],
            Method::Cvss { vector, score } => vec![
                json!({"name": "cvss-vector", "system": NS, "value": vector}),
                json!({"name": "cvss-base-score", "system": NS, "value": format!("{:.1}", score.value())}),
            ],
        };
        facets.push(json!({"name": "residual-risk", "system": NS, "value": a.residual_level().as_str()}));
        r["characterizations"] = json!([{
            "origin": {"actors": [{"type": "party", "actor-uuid": uuid("party", &a.assessed_by.to_string())}]},
            "facets": facets,
        }]);
    }
    if !e.controls.is_empty() {
        r["mitigating-factors"] = e
            .controls
            .iter()
            .map(|c| {
                json!({
                    "uuid": uuid("control", &c.id.0.to_string()),
                    "description": format!(
                        "{} ({}, {} effectiveness, {})",
                        c.description,
                        c.kind.as_str(),
                        c.effectiveness.as_str(),
                        c.status.as_str()
                    ),
                })
            })
            .collect();
    }
    if let Some(x) = f.expires_at.and_then(oscal_time) {
        r["deadline"] = json!(x);
    }
    if let Some(plan) = &f.remediation_plan {
        let mut remediation = json!({
            "uuid": uuid("remediation", &e.id.0.to_string()),
            "lifecycle": "planned",
            "title": "Remediation plan",
            "description": plan,
        });
        if let Some(due) = f.remediation_due.and_then(|d| d.and_hms_opt(0, 0, 0)).and_then(|d| oscal_time(d.and_utc()))
        {
            remediation["tasks"] = json!([{
                "uuid": uuid("remediation-due", &e.id.0.to_string()),
                "type": "milestone",
                "title": "Remediation due",
                "description": "The underlying gap is fixed.",
                "timing": {"on-date": {"date": due}},
            }]);
        }
        r["remediations"] = json!([remediation]);
    }
    if !changes.is_empty() {
        r["risk-log"] = json!({"entries": changes.iter().map(|ev| {
            let to = Status::parse(&ev.entry.to_status).map_or("open", risk_status);
            json!({
                "uuid": uuid("event", &ev.seq.to_string()),
                "title": format!("{} -> {}", ev.entry.from_status.as_deref().unwrap_or("new"), ev.entry.to_status),
                "description": format!("{} by {}", ev.entry.action, ev.entry.actor),
                "start": time(ev.entry.at),
                "status-change": to,
            })
        }).collect::<Vec<_>>()});
    }
    r
}

/// The POA&M item of exception `e`, linked to its risk.
pub fn item(e: &Exception) -> Value {
    let f = &e.fields;
    json!({
        "uuid": uuid("poam-item", &e.id.0.to_string()),
        "title": title(e),
        "description": format!("Time-boxed exception to {} on {}.", f.policy_id, f.assets.join(", ")),
        "props": [prop("exception-key", &e.key.to_string())],
        "related-risks": [{"risk-uuid": uuid("risk", &e.id.0.to_string())}],
    })
}

/// The one item of a document no exception matched (OSCAL wants at least one).
pub fn no_item(now: DateTime<Utc>) -> Value {
    json!({
        "uuid": uuid("no-exceptions", &time(now)),
        "title": "No exceptions",
        "description": format!("No exception matched the export's filters at {}.", time(now)),
    })
}
