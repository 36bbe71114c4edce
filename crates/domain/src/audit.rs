//! The audit trail (spec section 7): one event type from the happening to the stored row to
//! the view, and its hash chain.
//!
//! An entry holds what was written, verbatim: the hash of a stored event is computed over the
//! stored values themselves, never over a parsed and re-printed copy, so any change to a
//! stored row, even one a parser would tolerate (white space, an unknown name), breaks the
//! chain at that event.
//!
//! `hash = SHA-256(prev_hash || "\n" || canonical JSON of the entry)`, hex-encoded. The
//! canonical form is JSON with object keys sorted and no insignificant white space; the chain
//! is per exception and starts from 64 zeros.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::access::Actor;
use crate::record::{Happening, Record};

/// The `prev_hash` of an exception's first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What an audit event says: everything its hash covers.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The exception's id.
    pub exception_id: String,
    /// What happened (an [`crate::kinds::AuditAction`] name).
    pub action: String,
    /// Who: the caller's subject, or `system` for what time did.
    pub actor: String,
    /// The actor's roles at the time (none for `system`).
    pub roles: Vec<String>,
    /// The person an integration acted for.
    pub on_behalf_of: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
    /// State before (none at creation).
    pub from_status: Option<String>,
    /// State after.
    pub to_status: String,
    /// What changed.
    pub changes: Value,
    /// The request that caused it.
    pub request_id: Option<String>,
}

impl Entry {
    /// The entry for a happening on `e`, caused by `actor` (or by time) at `at`.
    pub fn new(e: &Record, h: &Happening, actor: &Actor, at: DateTime<Utc>, request_id: Option<&str>) -> Self {
        let (who, roles) = if h.by_system {
            (crate::ids::Subject::system().to_string(), Vec::new())
        } else {
            (actor.subject.to_string(), actor.roles.iter().map(|r| r.as_str().to_owned()).collect())
        };
        let on_behalf_of = if !h.by_system && e.requester == actor.subject { e.on_behalf_of.as_ref() } else { None };
        Self {
            exception_id: e.id.to_string(),
            action: h.action.as_str().to_owned(),
            on_behalf_of: on_behalf_of.map(ToString::to_string),
            actor: who,
            roles,
            at,
            from_status: h.from.map(|s| s.as_str().to_owned()),
            to_status: h.to.as_str().to_owned(),
            changes: h.changes.clone(),
            request_id: request_id.map(str::to_owned),
        }
    }

    /// The canonical body the hash covers.
    pub fn body(&self) -> Value {
        json!({
            "exception_id": self.exception_id,
            "action": self.action,
            "actor": {"subject": self.actor, "roles": self.roles},
            "on_behalf_of": self.on_behalf_of,
            "at": self.at.to_rfc3339_opts(SecondsFormat::Micros, true),
            "from_status": self.from_status,
            "to_status": self.to_status,
            "changes": self.changes,
            "request_id": self.request_id,
        })
    }

    /// This entry's hash when it follows `prev_hash` in its chain.
    pub fn hash(&self, prev_hash: &str) -> String {
        let mut h = Sha256::new();
        h.update(prev_hash.as_bytes());
        h.update(b"\n");
        h.update(canonical(&self.body()).as_bytes());
        hex::encode(h.finalize())
    }
}

/// An audit event as stored: its entry, its place in the global order and in its chain.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Global order.
    pub seq: i64,
    /// What it says.
    pub entry: Entry,
    /// The previous event's hash in this exception's chain.
    pub prev_hash: String,
    /// SHA-256 over `prev_hash` and the entry.
    pub hash: String,
}

/// Verifies one exception's chain, oldest first: the index of the first event that does not
/// match its hash or does not link to its predecessor.
pub fn first_broken(events: &[Event]) -> Option<usize> {
    let mut expected_prev = GENESIS;
    for (i, e) in events.iter().enumerate() {
        if e.prev_hash != expected_prev || e.entry.hash(&e.prev_hash) != e.hash {
            return Some(i);
        }
        expected_prev = &e.hash;
    }
    None
}

/// JSON with object keys sorted and no white space, whatever order the map keeps.
pub fn canonical(v: &Value) -> String {
    fn write(v: &Value, out: &mut String) {
        match v {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    if let Some(item) = map.get(k) {
                        write(item, out);
                    }
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            scalar => out.push_str(&scalar.to_string()),
        }
    }
    let mut out = String::new();
    write(v, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn entry(action: &str, at: &str) -> Entry {
        Entry {
            exception_id: Uuid::nil().to_string(),
            action: action.to_owned(),
            actor: "system".to_owned(),
            roles: Vec::new(),
            on_behalf_of: None,
            at: at.parse().unwrap(),
            from_status: None,
            to_status: "draft".to_owned(),
            changes: json!({"b": 1, "a": [{"y": 2, "x": 1}]}),
            request_id: None,
        }
    }

    #[test]
    fn the_chain_detects_a_changed_event() {
        let a = entry("created", "2026-01-01T00:00:00Z");
        let b = entry("submitted", "2026-01-01T00:01:00Z");
        let ha = a.hash(GENESIS);
        let hb = b.hash(&ha);
        let mut events = vec![
            Event { seq: 1, entry: a, prev_hash: GENESIS.to_owned(), hash: ha.clone() },
            Event { seq: 2, entry: b, prev_hash: ha, hash: hb },
        ];
        assert_eq!(first_broken(&events), None);
        events[1].entry.at = "2026-01-01T00:02:00Z".parse().unwrap();
        assert_eq!(first_broken(&events), Some(1));
        // white space a parser would forgive still breaks the chain
        events[1].entry.at = "2026-01-01T00:01:00Z".parse().unwrap();
        events[0].entry.actor = "system ".to_owned();
        assert_eq!(first_broken(&events), Some(0));
    }

    #[test]
    fn the_canonical_form_sorts_keys_at_every_depth() {
        let v: Value = serde_json::from_str(r#"{"b":1,"a":{"d":[{"z":0,"y":"\n"}],"c":null}}"#).unwrap();
        assert_eq!(canonical(&v), r#"{"a":{"c":null,"d":[{"y":"\n","z":0}]},"b":1}"#);
    }
}
