//! Tenants' credentials from AWS Secrets Manager: the secret's JSON is one tenant
//! (`{"name", "username", "password", "profile"?, "services"?}`, the shape the SAM template generates) or
//! `{"tenants": [...]}`. Read once at cold start; the password never reaches a log or an error message.

use crate::tenants::TenantConfig;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(untagged)]
enum SecretShape {
    Many { tenants: Vec<TenantConfig> },
    One(TenantConfig),
}

#[derive(Debug, thiserror::Error)]
pub enum TenantSecretError {
    #[error("cannot read the {0} secret: {1}")]
    Read(&'static str, String),
    #[error("the {0} secret has no string value")]
    NotAString(&'static str),
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
    parse(&load_text(client, secret_id, "tenants").await?)
}

/// A secret's text (`what`: which secret, for errors; the text is never in one).
pub async fn load_text(
    client: &Client,
    secret_id: &str,
    what: &'static str,
) -> Result<String, TenantSecretError> {
    let out = client
        .get_secret_value()
        .secret_id(secret_id)
        .send()
        .await
        .map_err(|e| {
            TenantSecretError::Read(
                what,
                e.as_service_error()
                    .and_then(|s| s.code())
                    .unwrap_or("request failed")
                    .to_owned(),
            )
        })?;
    Ok(out
        .secret_string()
        .ok_or(TenantSecretError::NotAString(what))?
        .to_owned())
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
