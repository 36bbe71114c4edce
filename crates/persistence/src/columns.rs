//! Typed columns: the domain's closed lists, ids and subjects stored as text, and JSON
//! documents, each converted by diesel's `FromSql`/`ToSql` on both backends. A stored value
//! that does not parse is an error, never a default.

use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::pg::Pg;
use diesel::serialize::{self, IsNull, Output, ToSql};
use diesel::sql_types::Text;
use diesel::sqlite::Sqlite;
use leeway_domain::ids::{ExceptionId, Subject};
use leeway_domain::kinds::{Category, Level, Priority, Reason, Status};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::io::Write;

use crate::connection::MultiBackend;

/// A value stored as text.
pub(crate) trait TextValue: Sized {
    /// What it is, for the error when a stored value does not parse.
    const WHAT: &'static str;
    /// Its stored form.
    fn to_text(&self) -> Cow<'_, str>;
    /// Parses a stored form.
    fn from_text(s: &str) -> Option<Self>;
}

macro_rules! text_enums {
    ($($t:ty = $what:literal),+ $(,)?) => {$(
        impl TextValue for $t {
            const WHAT: &'static str = $what;
            fn to_text(&self) -> Cow<'_, str> {
                Cow::Borrowed(self.as_str())
            }
            fn from_text(s: &str) -> Option<Self> {
                <$t>::parse(s)
            }
        }
    )+};
}
text_enums!(Status = "status", Category = "category", Priority = "priority", Level = "level", Reason = "status reason");

impl TextValue for ExceptionId {
    const WHAT: &'static str = "exception id";
    fn to_text(&self) -> Cow<'_, str> {
        Cow::Owned(self.0.to_string())
    }
    fn from_text(s: &str) -> Option<Self> {
        uuid::Uuid::parse_str(s).ok().map(ExceptionId)
    }
}

impl TextValue for Subject {
    const WHAT: &'static str = "subject";
    fn to_text(&self) -> Cow<'_, str> {
        Cow::Borrowed(self.as_str())
    }
    fn from_text(s: &str) -> Option<Self> {
        Subject::parse("subject", s).ok()
    }
}

/// A domain value in a text column.
#[derive(Debug, Clone, PartialEq, AsExpression, FromSqlRow)]
#[diesel(sql_type = Text)]
pub(crate) struct Stored<T: TextValue>(pub T);

fn parse_text<T: TextValue>(s: &str) -> deserialize::Result<Stored<T>> {
    T::from_text(s).map(Stored).ok_or_else(|| format!("stored {} {s:?} does not parse", T::WHAT).into())
}

impl<T: TextValue> FromSql<Text, Pg> for Stored<T> {
    fn from_sql(bytes: <Pg as diesel::backend::Backend>::RawValue<'_>) -> deserialize::Result<Self> {
        parse_text(&<String as FromSql<Text, Pg>>::from_sql(bytes)?)
    }
}

impl<T: TextValue> FromSql<Text, Sqlite> for Stored<T> {
    fn from_sql(bytes: <Sqlite as diesel::backend::Backend>::RawValue<'_>) -> deserialize::Result<Self> {
        parse_text(&<String as FromSql<Text, Sqlite>>::from_sql(bytes)?)
    }
}

impl<T: TextValue> FromSql<Text, MultiBackend> for Stored<T> {
    fn from_sql(bytes: <MultiBackend as diesel::backend::Backend>::RawValue<'_>) -> deserialize::Result<Self> {
        bytes.from_sql::<Self, Text>()
    }
}

impl<T: TextValue + std::fmt::Debug> ToSql<Text, Pg> for Stored<T> {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        out.write_all(self.0.to_text().as_bytes())?;
        Ok(IsNull::No)
    }
}

impl<T: TextValue + std::fmt::Debug> ToSql<Text, Sqlite> for Stored<T> {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Sqlite>) -> serialize::Result {
        out.set_value(self.0.to_text().into_owned());
        Ok(IsNull::No)
    }
}

impl<T: TextValue + std::fmt::Debug + Send + Sync + 'static> ToSql<Text, MultiBackend> for Stored<T> {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, MultiBackend>) -> serialize::Result {
        out.set_value((Text, self));
        Ok(IsNull::No)
    }
}

/// A JSON document in a text column.
#[derive(Debug, Clone, PartialEq, AsExpression, FromSqlRow)]
#[diesel(sql_type = Text)]
pub(crate) struct Json<T: Serialize + DeserializeOwned>(pub T);

fn parse_json<T: Serialize + DeserializeOwned>(s: &str) -> deserialize::Result<Json<T>> {
    serde_json::from_str(s).map(Json).map_err(|e| format!("a stored JSON document does not parse: {e}").into())
}

impl<T: Serialize + DeserializeOwned> FromSql<Text, Pg> for Json<T> {
    fn from_sql(bytes: <Pg as diesel::backend::Backend>::RawValue<'_>) -> deserialize::Result<Self> {
        parse_json(&<String as FromSql<Text, Pg>>::from_sql(bytes)?)
    }
}

impl<T: Serialize + DeserializeOwned> FromSql<Text, Sqlite> for Json<T> {
    fn from_sql(bytes: <Sqlite as diesel::backend::Backend>::RawValue<'_>) -> deserialize::Result<Self> {
        parse_json(&<String as FromSql<Text, Sqlite>>::from_sql(bytes)?)
    }
}

impl<T: Serialize + DeserializeOwned> FromSql<Text, MultiBackend> for Json<T> {
    fn from_sql(bytes: <MultiBackend as diesel::backend::Backend>::RawValue<'_>) -> deserialize::Result<Self> {
        bytes.from_sql::<Self, Text>()
    }
}

impl<T: Serialize + DeserializeOwned + std::fmt::Debug> ToSql<Text, Pg> for Json<T> {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        serde_json::to_writer(out, &self.0)?;
        Ok(IsNull::No)
    }
}

impl<T: Serialize + DeserializeOwned + std::fmt::Debug> ToSql<Text, Sqlite> for Json<T> {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Sqlite>) -> serialize::Result {
        out.set_value(serde_json::to_string(&self.0)?);
        Ok(IsNull::No)
    }
}

impl<T: Serialize + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static> ToSql<Text, MultiBackend> for Json<T> {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, MultiBackend>) -> serialize::Result {
        out.set_value((Text, self));
        Ok(IsNull::No)
    }
}

/// As text, the way the column holds it (for the JSON a PostgreSQL function writes from).
impl<T: TextValue> Serialize for Stored<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_text())
    }
}

/// As the text of the document, the way the column holds it.
impl<T: Serialize + DeserializeOwned> Serialize for Json<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = serde_json::to_string(&self.0).map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }
}

/// From the text the column holds (an exception's snapshot in the audit trail).
impl<'de, T: TextValue> Deserialize<'de> for Stored<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = Cow::<'de, str>::deserialize(d)?;
        T::from_text(&text)
            .map(Stored)
            .ok_or_else(|| serde::de::Error::custom(format!("not a stored {}: {text:?}", T::WHAT)))
    }
}

/// From the text of the document.
impl<'de, T: Serialize + DeserializeOwned> Deserialize<'de> for Json<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = Cow::<'de, str>::deserialize(d)?;
        serde_json::from_str(&text).map(Json).map_err(serde::de::Error::custom)
    }
}
