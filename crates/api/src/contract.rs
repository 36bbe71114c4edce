//! The published contract as the validator of request bodies.
//!
//! Every request body is checked against the JSON Schema that `openapi/openapi.json` states
//! for its operation, compiled once at start-up. So the document and the check cannot drift
//! apart: a generated client that satisfies the document is never refused by the structure
//! check, and whatever the document forbids (a missing required member, an unknown one, a
//! string too long, a value outside an enum, a date that is not RFC 3339) the server refuses,
//! all problems at once, each naming its field. Rules a schema cannot state (trimmed lengths,
//! one date after another, the state of the exception) are the domain's.

use jsonschema::error::{TypeKind, ValidationErrorKind};
use leeway_domain::FieldError;
use serde_json::{Value, json};
use std::collections::HashMap;

/// Members of the exception resource that only the server sets: refusing them says why.
const SERVER_CONTROLLED: &[&str] = &[
    "id",
    "key",
    "status",
    "status_reason",
    "covering",
    "round",
    "version",
    "risk",
    "assessments",
    "approvals",
    "required_approvals",
    "allowed_actions",
    "reviews",
    "control_checks",
    "requester",
    "chronic",
    "at_risk",
    "at_risk_since",
    "renewal",
    "escalated_at",
    "reminders_sent",
    "approval_sla_due_at",
    "created_at",
    "updated_at",
    "submitted_at",
    "approved_at",
    "closed_at",
    "next_review_at",
    "verified_by",
    "verified_at",
    "last_checked_at",
    "check_due_at",
    "reduces_risk",
];

/// The compiled request-body schemas of every operation, by method and path template.
pub struct Contract {
    bodies: HashMap<(String, String), Body>,
}

/// One operation's request body: whether it must be sent, and its schema.
struct Body {
    required: bool,
    schema: jsonschema::Validator,
}

impl std::fmt::Debug for Contract {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Contract").field("bodies", &self.bodies.len()).finish()
    }
}

impl Contract {
    /// Compiles the request-body schema of every operation of `doc`.
    pub fn from_openapi(doc: &utoipa::openapi::OpenApi) -> Result<Self, String> {
        let doc = serde_json::to_value(doc).map_err(|e| e.to_string())?;
        let components = doc.get("components").cloned().unwrap_or_else(|| json!({}));
        let mut bodies = HashMap::new();
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            for (method, op) in item.as_object().into_iter().flatten() {
                let Some(content) = op["requestBody"]["content"].as_object() else { continue };
                let Some(schema) = content.values().find_map(|c| c.get("schema")) else { continue };
                let mut root = match schema {
                    Value::Object(o) => Value::Object(o.clone()),
                    other => json!({"allOf": [other]}),
                };
                root["components"] = components.clone();
                let validator = jsonschema::options()
                    .with_draft(jsonschema::Draft::Draft202012)
                    .should_validate_formats(true)
                    .build(&root)
                    .map_err(|e| format!("the body schema of {method} {path} does not compile: {e}"))?;
                let required = op["requestBody"]["required"].as_bool().unwrap_or(false);
                bodies.insert((method.to_ascii_uppercase(), path.clone()), Body { required, schema: validator });
            }
        }
        Ok(Self { bodies })
    }

    /// Whether `method path` (a path template, as the router matched it) requires a body;
    /// `None` when it takes none.
    pub fn requires_body(&self, method: &str, path: &str) -> Option<bool> {
        self.bodies.get(&(method.to_owned(), path.to_owned())).map(|b| b.required)
    }

    /// Every way `body` breaks the schema of `method path`'s request body.
    pub fn check(&self, method: &str, path: &str, body: &Value) -> Option<Vec<FieldError>> {
        let validator = &self.bodies.get(&(method.to_owned(), path.to_owned()))?.schema;
        let mut out: Vec<FieldError> = Vec::new();
        for e in validator.iter_errors(body) {
            let at = field_path(e.instance_path().as_str());
            out.extend(describe(&at, e.kind()));
        }
        out.sort_by(|a, b| a.field.cmp(&b.field));
        out.dedup_by(|a, b| a.field == b.field);
        Some(out)
    }
}

/// `/controls/0/kind` -> `controls[0].kind`.
pub fn field_path(pointer: &str) -> String {
    let mut out = String::new();
    for part in pointer.split('/').skip(1) {
        let part = part.replace("~1", "/").replace("~0", "~");
        if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&part);
        }
    }
    out
}

fn join(at: &str, member: &str) -> String {
    if at.is_empty() { member.to_owned() } else { format!("{at}.{member}") }
}

fn field(at: &str) -> String {
    if at.is_empty() { "body".to_owned() } else { at.to_owned() }
}

fn type_name(kind: &TypeKind) -> String {
    let one = |t: jsonschema::JsonType| match t.to_string().as_str() {
        "object" => "an object".to_owned(),
        "array" => "an array".to_owned(),
        "integer" => "a whole number".to_owned(),
        "null" => "null".to_owned(),
        other => format!("a {other}"),
    };
    match kind {
        TypeKind::Single(t) => one(*t),
        TypeKind::Multiple(ts) => ts.iter().map(one).collect::<Vec<_>>().join(" or "),
    }
}

/// The field errors one schema violation stands for.
fn describe(at: &str, kind: &ValidationErrorKind) -> Vec<FieldError> {
    use ValidationErrorKind as K;
    let one = |code: &'static str, message: String| vec![FieldError::new(field(at), code, message)];
    match kind {
        K::Required { property } => {
            vec![FieldError::new(join(at, property.as_str().unwrap_or_default()), "required", "is required")]
        }
        K::AdditionalProperties { unexpected } | K::UnevaluatedProperties { unexpected } => unexpected
            .iter()
            .map(|name| {
                if SERVER_CONTROLLED.contains(&name.as_str()) {
                    FieldError::new(
                        join(at, name),
                        "server_controlled",
                        format!("`{name}` is set by the server and cannot be sent"),
                    )
                } else {
                    FieldError::new(join(at, name), "unknown_field", format!("unknown field `{name}`"))
                }
            })
            .collect(),
        K::Type { kind } => one("invalid_type", format!("must be {}", type_name(kind))),
        K::Enum { options } => one(
            "invalid_value",
            format!(
                "must be one of: {}",
                options.as_array().map_or_else(String::new, |o| o
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", "))
            ),
        ),
        K::Format { format } => one(
            "invalid_format",
            match format.as_str() {
                "date-time" => "must be an RFC 3339 date-time with a time zone, e.g. 2026-01-31T09:00:00Z".to_owned(),
                "date" => "must be an RFC 3339 full-date, e.g. 2026-01-31".to_owned(),
                other => format!("must be a valid {other}"),
            },
        ),
        K::MinLength { limit } => one("too_short", format!("must be at least {limit} characters")),
        K::MaxLength { limit } => one("too_long", format!("must be at most {limit} characters")),
        K::MinItems { limit } => one("too_few", format!("needs at least {limit} item(s)")),
        K::MaxItems { limit } => one("too_many", format!("allows at most {limit} items")),
        K::Minimum { limit } | K::ExclusiveMinimum { limit } => {
            one("out_of_range", format!("must be at least {limit}"))
        }
        K::Maximum { limit } | K::ExclusiveMaximum { limit } => one("out_of_range", format!("must be at most {limit}")),
        K::Pattern { pattern } => one("invalid_value", format!("must match the pattern {pattern}")),
        K::OneOfNotValid { context } | K::AnyOf { context } => {
            // `null` or a value: report why the value branch failed, not that it is not null
            let branch = context.iter().filter(|errs| !errs.iter().all(is_null_type_error)).min_by_key(|e| e.len());
            match branch {
                Some(errors) => {
                    errors.iter().flat_map(|e| describe(&field_path(e.instance_path().as_str()), e.kind())).collect()
                }
                None => one("invalid_value", "matches none of the allowed forms".to_owned()),
            }
        }
        other => one("invalid_value", format!("is invalid ({})", other.keyword())),
    }
}

fn is_null_type_error(e: &jsonschema::ValidationError<'_>) -> bool {
    matches!(e.kind(), ValidationErrorKind::Type { kind: TypeKind::Single(t) } if t.to_string() == "null")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_become_field_paths() {
        assert_eq!(field_path(""), "");
        assert_eq!(field_path("/title"), "title");
        assert_eq!(field_path("/controls/0/kind"), "controls[0].kind");
        assert_eq!(field_path("/assets/12"), "assets[12]");
    }
}
