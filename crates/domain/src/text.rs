//! The ground floor: field errors, bounded text, and the macro behind every closed list of
//! wire names. Nothing here knows about exceptions.

/// One invalid field of a request, named by its JSON path (`assets[3]`, `risk.likelihood`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    /// The field's path in the request body, dotted, with `[i]` for array items.
    pub field: String,
    /// A stable machine token: `too_short`, `too_long`, `required`, `out_of_range`, ...
    pub code: &'static str,
    /// A sentence a person can act on.
    pub message: String,
}

impl FieldError {
    /// A field error.
    pub fn new(field: impl Into<String>, code: &'static str, message: impl Into<String>) -> Self {
        Self { field: field.into(), code, message: message.into() }
    }

    /// The same error under a parent path: `description` under `controls[0]` is
    /// `controls[0].description`.
    pub fn under(self, parent: &str) -> Self {
        let field = match (parent.is_empty(), self.field.starts_with('[')) {
            (true, _) => self.field,
            (false, true) => format!("{parent}{}", self.field),
            (false, false) => format!("{parent}.{}", self.field),
        };
        Self { field, ..self }
    }
}

/// Collects field errors while parsing a request, so that every bad field is reported at once.
#[derive(Debug, Default)]
pub struct Errors(Vec<FieldError>);

impl Errors {
    /// Records a failed parse and returns its value when it succeeded.
    pub fn take<T>(&mut self, result: Result<T, FieldError>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.0.push(e);
                None
            }
        }
    }

    /// Records the errors of a nested parse and returns its value when it succeeded.
    pub fn take_all<T>(&mut self, result: Result<T, Vec<FieldError>>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.0.extend(e);
                None
            }
        }
    }

    /// Records a field error.
    pub fn push(&mut self, e: FieldError) {
        self.0.push(e);
    }

    /// The value when nothing was recorded; every error otherwise. A parse that found an error
    /// never returns a value, even one it could build.
    pub fn finish<T>(self, value: Option<T>) -> Result<T, Vec<FieldError>> {
        match value {
            Some(v) if self.0.is_empty() => Ok(v),
            Some(_) => Err(self.0),
            None if self.0.is_empty() => Err(vec![FieldError::new("body", "invalid", "the request is incomplete")]),
            None => Err(self.0),
        }
    }
}

/// Trims `raw` and checks its length in characters; NUL characters are refused everywhere, as
/// PostgreSQL cannot store them and no legitimate text holds one.
pub fn bounded(field: &str, raw: &str, min: usize, max: usize) -> Result<String, FieldError> {
    if raw.contains('\0') {
        return Err(FieldError::new(field, "invalid_character", "must not contain NUL (\\u0000) characters"));
    }
    let s = raw.trim();
    let n = s.chars().count();
    if n < min {
        if n == 0 {
            return Err(FieldError::new(field, "blank", "holds only white space"));
        }
        return Err(FieldError::new(field, "too_short", format!("must be at least {min} characters")));
    }
    if n > max {
        return Err(FieldError::new(field, "too_long", format!("must be at most {max} characters")));
    }
    Ok(s.to_owned())
}

/// Declares a closed list of wire names: the enum, its names both ways, and serde as strings.
macro_rules! enum_str {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vm])* $v),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$v),+];
            /// The wire name.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$v => $s),+ }
            }
            /// Parses the wire name.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($s => Some($name::$v),)+ _ => None }
            }
            /// Parses the wire name, or names the field and the allowed values.
            pub fn parse_field(field: &str, s: &str) -> Result<Self, $crate::text::FieldError> {
                Self::parse(s).ok_or_else(|| $crate::text::FieldError::new(field, "invalid_value", format!(
                    "must be one of: {}", Self::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", "))))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&s).ok_or_else(|| serde::de::Error::unknown_variant(&s, &[$($s),+]))
            }
        }
    };
}
pub(crate) use enum_str;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_trims_counts_characters_and_refuses_nul() {
        assert_eq!(bounded("t", "  héllo ", 3, 5).unwrap(), "héllo");
        assert_eq!(bounded("t", "  ", 1, 5).unwrap_err().code, "blank");
        assert_eq!(bounded("t", "ab", 3, 5).unwrap_err().code, "too_short");
        assert_eq!(bounded("t", "abcdef", 3, 5).unwrap_err().code, "too_long");
        assert_eq!(bounded("t", "ab\0cd", 3, 5).unwrap_err().code, "invalid_character");
    }

    #[test]
    fn a_parse_with_errors_returns_no_value() {
        let mut e = Errors::default();
        e.push(FieldError::new("x", "bad", "bad"));
        assert!(e.finish(Some(1)).is_err());
        assert_eq!(Errors::default().finish(Some(1)), Ok(1));
    }

    #[test]
    fn errors_move_under_their_parent() {
        assert_eq!(FieldError::new("kind", "c", "m").under("controls[0]").field, "controls[0].kind");
        assert_eq!(FieldError::new("[2]", "c", "m").under("assets").field, "assets[2]");
        assert_eq!(FieldError::new("kind", "c", "m").under("").field, "kind");
    }
}
