//! The `X-Broker-API-Originating-Identity` header: `<platform> <base64 of a JSON object>`.
//! Cloud Foundry sends `{"user_id": …}`, Kubernetes `{"username", "uid", "groups", "extra"}`.

use base64::Engine;
use serde::{Deserialize, Serialize};

/// A parsed originating identity, kept with each operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OriginatingIdentity {
    pub platform: String,
    pub value: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("X-Broker-API-Originating-Identity must be '<platform> <base64-encoded JSON object>': {0}")]
pub struct IdentityError(&'static str);

impl OriginatingIdentity {
    pub fn parse(header: &str) -> Result<Self, IdentityError> {
        let header = header.trim();
        let (platform, encoded) = header.split_once(' ').ok_or(IdentityError(
            "missing the space between platform and value",
        ))?;
        if platform.is_empty() {
            return Err(IdentityError("empty platform"));
        }
        let encoded = encoded.trim();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(encoded))
            .map_err(|_| IdentityError("value is not base64"))?;
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|_| IdentityError("value is not JSON"))?;
        let serde_json::Value::Object(value) = value else {
            return Err(IdentityError("value is not a JSON object"));
        };
        Ok(OriginatingIdentity {
            platform: platform.to_owned(),
            value,
        })
    }

    /// Cloud Foundry `user_id`, or Kubernetes `username`.
    pub fn user(&self) -> Option<&str> {
        self.value
            .get("user_id")
            .or_else(|| self.value.get("username"))
            .and_then(|v| v.as_str())
    }

    /// Kubernetes `groups`.
    pub fn groups(&self) -> Vec<&str> {
        self.value
            .get("groups")
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|g| g.as_str()).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;

    #[test]
    fn parses_cloud_foundry_and_kubernetes_identities() {
        let cf = format!(
            "cloudfoundry {}",
            STANDARD.encode(r#"{"user_id":"683ea748-3092-4ff4-b656-39cacc4d5360"}"#)
        );
        let id = OriginatingIdentity::parse(&cf).expect("cf identity");
        assert_eq!(id.platform, "cloudfoundry");
        assert_eq!(id.user(), Some("683ea748-3092-4ff4-b656-39cacc4d5360"));

        let k8s = format!(
            "kubernetes {}",
            STANDARD.encode(r#"{"username":"duke","uid":"c2dde242","groups":["admin","dev"],"extra":{"mydata":["a"]}}"#)
        );
        let id = OriginatingIdentity::parse(&k8s).expect("k8s identity");
        assert_eq!(id.user(), Some("duke"));
        assert_eq!(id.groups(), vec!["admin", "dev"]);
    }

    #[test]
    fn refuses_malformed_values() {
        assert!(OriginatingIdentity::parse("cloudfoundry").is_err());
        assert!(OriginatingIdentity::parse("cloudfoundry !!!").is_err());
        assert!(OriginatingIdentity::parse(&format!("cf {}", STANDARD.encode("[1]"))).is_err());
        assert!(OriginatingIdentity::parse(&format!("cf {}", STANDARD.encode("nope"))).is_err());
    }
}
