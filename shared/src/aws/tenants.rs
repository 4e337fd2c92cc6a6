//! Tenants' credentials from AWS Secrets Manager: the secret's JSON is one tenant
//! (`{"name", "username", "password", "profile"?, "services"?}`, the shape the SAM template generates) or
//! `{"tenants": [...]}`. Read once at cold start; the password never reaches a log or an error message.

use crate::tenants::TenantConfig;
use aws_sdk_secretsmanager::Client;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(untagged)]
enum SecretShape {
    Many { tenants: Vec<TenantConfig> },
    One(TenantConfig),
}

#[derive(Debug, thiserror::Error)]
pub enum TenantSecretError {
    #[error(transparent)]
    Load(#[from] super::secrets::SecretReadError),
    #[error(
        "the tenants secret is not a tenant object or {{\"tenants\": [...]}} (fields: name, username, password, profile, services, accept_leases_from)"
    )]
    Shape,
}

/// Parses the secret's text. The error never includes the text.
pub fn parse(secret: &str) -> Result<Vec<TenantConfig>, TenantSecretError> {
    match serde_json::from_str::<SecretShape>(secret) {
        Ok(SecretShape::Many { tenants }) => Ok(tenants),
        Ok(SecretShape::One(t)) => Ok(vec![t]),
        Err(_) => Err(TenantSecretError::Shape),
    }
}

pub async fn load(
    client: &Client,
    secret_id: &str,
) -> Result<Vec<TenantConfig>, TenantSecretError> {
    parse(&super::secrets::load_text(client, secret_id, "tenants").await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_one_tenant_or_a_list_and_never_echoes_the_secret() {
        let one = parse(r#"{"name":"cf","username":"u","password":"p4ss"}"#).expect("one");
        assert_eq!(one.len(), 1);
        let many = parse(r#"{"tenants":[{"name":"a","username":"u","password":"p"},{"name":"b","username":"v","password":"q","profile":"kubernetes"}]}"#).expect("many");
        assert_eq!(many.len(), 2);
        let err = parse(r#"{"name":"cf","password":"hunter2"}"#).expect_err("missing username");
        assert!(!err.to_string().contains("hunter2"));
    }
}
