//! Validated identifiers: instance and binding ids chosen by the platform, operation ids chosen by the broker.
//! Ids are checked once at the HTTP edge; everything past it holds these newtypes.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest id accepted in a URL path (CF and Kubernetes send GUIDs of 36 characters).
pub const MAX_ID_LEN: usize = 255;

/// Why an id was refused. The message never repeats the id itself beyond its length.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("{0} must not be empty")]
    Empty(&'static str),
    #[error("{0} is longer than {MAX_ID_LEN} characters")]
    TooLong(&'static str),
    #[error("{0} may only contain letters, digits and '-', '.', '_', '~'")]
    InvalidChar(&'static str),
}

fn check(kind: &'static str, s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty(kind));
    }
    if s.len() > MAX_ID_LEN {
        return Err(IdError::TooLong(kind));
    }
    // RFC 3986 unreserved characters, as the OSB spec recommends for ids in URLs.
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
    {
        return Err(IdError::InvalidChar(kind));
    }
    Ok(())
}

macro_rules! id_type {
    ($name:ident, $kind:literal) => {
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, IdError> {
                check($kind, s)?;
                Ok(Self(s.to_owned()))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
            /// For ids the broker generated itself from valid characters only.
            #[allow(dead_code)]
            pub(crate) fn from_generated(s: String) -> Self {
                debug_assert!(check($kind, &s).is_ok());
                Self(s)
            }
        }
        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                check($kind, &s)?;
                Ok(Self(s))
            }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }
    };
}

id_type!(InstanceId, "instance_id");
id_type!(BindingId, "binding_id");
id_type!(OperationId, "operation");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_guids_and_unreserved_characters() {
        assert!(InstanceId::parse("0d3a8f3e-5e6a-4b43-9d1e-0c2c8b3c9a11").is_ok());
        assert!(BindingId::parse("a.b_c~d-1").is_ok());
    }

    #[test]
    fn refuses_empty_long_and_reserved_characters() {
        assert_eq!(InstanceId::parse(""), Err(IdError::Empty("instance_id")));
        assert_eq!(
            InstanceId::parse(&"a".repeat(256)),
            Err(IdError::TooLong("instance_id"))
        );
        assert_eq!(
            BindingId::parse("a/b"),
            Err(IdError::InvalidChar("binding_id"))
        );
        assert_eq!(
            OperationId::parse("x y"),
            Err(IdError::InvalidChar("operation"))
        );
    }

    #[test]
    fn deserializing_validates() {
        let bad: Result<InstanceId, _> = serde_json::from_str("\"a b\"");
        assert!(bad.is_err());
        let good: InstanceId = serde_json::from_str("\"abc\"").expect("valid id");
        assert_eq!(good.as_str(), "abc");
    }
}
