//! The strings commands take, each checked as it is decoded, with the same rule stated in the
//! OpenAPI document: what the document allows, the server takes, and nothing else.

use serde::{Deserialize, Serialize};
use std::ops::Deref;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

macro_rules! text {
    ($(#[$doc:meta])* $name:ident, pattern = $pattern:literal, $check:expr, $why:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(try_from = "String")]
        pub struct $name(String);

        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                ObjectBuilder::new().schema_type(Type::String).pattern(Some($pattern)).into()
            }
        }

        impl ToSchema for $name {}

        impl TryFrom<String> for $name {
            type Error = String;

            fn try_from(s: String) -> Result<Self, String> {
                let check: fn(&str) -> bool = $check;
                if check(&s) {
                    Ok($name(s))
                } else {
                    Err(format!("{:?}: {}", s.chars().take(40).collect::<String>(), $why))
                }
            }
        }

        impl Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }
    };
}

text!(
    /// A client_id: 20 hex digits (the gateway's address, port and connection).
    ClientIdText,
    pattern = "^[0-9a-fA-F]{20}$",
    |s| s.len() == 20 && s.bytes().all(|b| b.is_ascii_hexdigit()),
    "a client_id is 20 hex digits"
);

text!(
    /// A uid or group: 1 to 256 characters, not "0" (which GatewayWorker treats as empty).
    Name,
    pattern = "^(?!0$)[\\s\\S]{1,256}$",
    |s| s != "0" && (1..=256).contains(&s.chars().count()),
    "a uid or group is 1 to 256 characters, and not \"0\""
);

text!(
    /// A bot, conversation, agent or room id, or a cid: 1 to 128 characters.
    Id,
    pattern = "^[\\s\\S]{1,128}$",
    |s| (1..=128).contains(&s.chars().count()),
    "ids are 1 to 128 characters"
);

text!(
    /// An agent id to filter by, or "" for none: 0 to 128 characters.
    Filter,
    pattern = "^[\\s\\S]{0,128}$",
    |s| s.chars().count() <= 128,
    "a filter is at most 128 characters"
);

text!(
    /// A display name: 1 to 64 characters.
    DisplayName,
    pattern = "^[\\s\\S]{1,64}$",
    |s| (1..=64).contains(&s.chars().count()),
    "a name is 1 to 64 characters"
);

text!(
    /// Message content: at least one character (the chat's `max_content`, 4 000 by default,
    /// bounds it above: the served document says the configured figure).
    Content,
    pattern = "^[\\s\\S]+$",
    |s| !s.is_empty(),
    "content is empty"
);

/// A page size: 1 to 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "serde_json::Number")]
pub struct Limit(pub u32);

/// An integer as JSON Schema counts them: `2.0` is one, as `2` is.
fn integer(n: &serde_json::Number) -> Option<i64> {
    n.as_i64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18).map(|f| f as i64))
}

impl TryFrom<serde_json::Number> for Limit {
    type Error = String;

    fn try_from(n: serde_json::Number) -> Result<Self, String> {
        match integer(&n) {
            Some(i @ 1..=100) => Ok(Limit(i as u32)),
            _ => Err(format!("limit {n}: a page is 1 to 100")),
        }
    }
}

impl PartialSchema for Limit {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1)).maximum(Some(100)).into()
    }
}

impl ToSchema for Limit {}

/// A message id to page from: 0 or more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "serde_json::Number")]
pub struct MessageId(pub i64);

impl TryFrom<serde_json::Number> for MessageId {
    type Error = String;

    fn try_from(n: serde_json::Number) -> Result<Self, String> {
        match integer(&n) {
            Some(i) if i >= 0 => Ok(MessageId(i)),
            _ => Err(format!("message id {n}: ids are integers, 0 or more")),
        }
    }
}

impl PartialSchema for MessageId {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::Int64)))
            .minimum(Some(0))
            .into()
    }
}

impl ToSchema for MessageId {}
