//! The audit trail's hash chain (spec section 7).
//!
//! `hash = SHA-256(prev_hash || "\n" || canonical JSON of the event)`, hex-encoded. The
//! canonical form is JSON with object keys sorted and no insignificant white space, which is
//! what `serde_json::Value` prints; the chain is per exception and starts from 64 zeros.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The `prev_hash` of an exception's first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The hash of an event whose body (everything but `seq`, `prev_hash` and `hash`) is `body`.
pub fn chain_hash(prev_hash: &str, body: &Value) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(body.to_string().as_bytes());
    hex::encode(h.finalize())
}

/// Verifies a chain given as `(prev_hash, body, hash)` in order; returns the index of the
/// first event that does not match, if any.
pub fn first_broken<'a>(events: impl IntoIterator<Item = (&'a str, &'a Value, &'a str)>) -> Option<usize> {
    let mut expected_prev = GENESIS.to_owned();
    for (i, (prev, body, hash)) in events.into_iter().enumerate() {
        if prev != expected_prev || chain_hash(prev, body) != hash {
            return Some(i);
        }
        expected_prev = hash.to_owned();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chain_detects_a_changed_event() {
        let a = json!({"action": "created", "at": "2026-01-01T00:00:00Z"});
        let b = json!({"action": "submitted", "at": "2026-01-01T00:01:00Z"});
        let ha = chain_hash(GENESIS, &a);
        let hb = chain_hash(&ha, &b);
        assert_eq!(first_broken([(GENESIS, &a, ha.as_str()), (ha.as_str(), &b, hb.as_str())]), None);
        let forged = json!({"action": "submitted", "at": "2026-01-01T00:02:00Z"});
        assert_eq!(first_broken([(GENESIS, &a, ha.as_str()), (ha.as_str(), &forged, hb.as_str())]), Some(1));
    }

    #[test]
    fn canonical_form_sorts_keys() {
        let x: Value = serde_json::from_str(r#"{"b":1,"a":2}"#).unwrap();
        assert_eq!(x.to_string(), r#"{"a":2,"b":1}"#);
    }
}
